"""Dask integration on a LocalCluster of two worker processes (skipped without distributed)."""

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("distributed")

from distributed import Client, LocalCluster  # noqa: E402

import ssi_sparse  # noqa: E402
import ssi_sparse.dask  # noqa: E402,F401
from ssi_sparse.problems import diffusion_2d, elasticity_2d  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c


def _plan_builds(client):
    """Plans each worker built so far (cache misses of build_plan)."""
    def misses():
        from ssi_sparse._planning.plan import build_plan

        return build_plan.cache_info().misses

    return client.run(misses)


def test_solve_many_groups_layouts_and_builds_each_plan_once_per_worker(client):
    rng = np.random.default_rng(0)
    before = _plan_builds(client)
    grids = [diffusion_2d(30, 24, rng.uniform(0.5, 2.0, (30, 24))) for _ in range(12)]
    flows = [elasticity_2d(16, 18, lam=float(lam)) for lam in rng.uniform(0.5, 3.0, 6)]
    other = [sp.csr_array(sp.random(50, 50, density=0.1, random_state=1) + 10 * sp.eye(50))]  # not a grid
    matrices = grids + flows + other
    rng.shuffle(matrices)
    rhs = [rng.standard_normal(A.shape[0]) for A in matrices]
    xs = ssi_sparse.dask.solve_many(client, matrices, rhs)
    for A, x, b in zip(matrices, xs, rhs):
        assert np.linalg.norm(A @ x - b) <= 1e-10 * np.linalg.norm(b)
    # a second round of the same systems: its tasks find their plans in the workers' caches
    ssi_sparse.dask.solve_many(client, matrices, rhs)
    after = _plan_builds(client)
    # per worker, over both rounds (14 tasks): each layout's grid plan, its k-unknowns
    # expansion and its batch plan, at most once each; never one per task
    for worker in after:
        assert after[worker] - before.get(worker, 0) <= 6


def test_solve_many_same_answers_as_one_process(client):
    rng = np.random.default_rng(1)
    matrices = [diffusion_2d(20, 20, rng.uniform(0.5, 2.0, (20, 20))) for _ in range(8)]
    rhs = [rng.standard_normal((400, 2)) for _ in range(8)]
    xs = ssi_sparse.dask.solve_many(client, matrices, rhs, chunk=3)
    for A, x, b in zip(matrices, xs, rhs):
        np.testing.assert_allclose(x, ssi_sparse.factorize(A).solve(b), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="right-hand sides"):
        ssi_sparse.dask.solve_many(client, matrices, rhs[:3])


def test_solve_columns_of_a_dask_array(client):
    import dask.array as da

    A = diffusion_2d(40, 30)
    lu = ssi_sparse.factorize(A)
    B = np.random.default_rng(2).standard_normal((1200, 10))
    X = ssi_sparse.dask.solve_columns(client, lu, da.from_array(B, chunks=(400, 3))).compute()
    np.testing.assert_allclose(X, lu.solve(B), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="shape"):
        ssi_sparse.dask.solve_columns(client, lu, da.ones((5, 2)))


def test_factor_pickles_and_the_plan_travels_as_its_key():
    import pickle

    A = elasticity_2d(12, 13)
    lu = ssi_sparse.factorize(A)
    b = np.ones(A.shape[0])
    lu2 = pickle.loads(pickle.dumps(lu))
    np.testing.assert_array_equal(lu2.solve(b), lu.solve(b))
    assert lu2._numeric.plan is lu._numeric.plan  # the cached plan of this process
    assert lu2.slogdet() == lu.slogdet()
