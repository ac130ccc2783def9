"""The factor object: reuse, refactorization with new values, inverse LinearOperator."""

import sys

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

import ssi_sparse
from ssi_sparse.problems import convection_diffusion_2d, diffusion_2d, random_spd_9pt


def rel_res(A, x, b):
    return np.linalg.norm(A @ x - b) / np.linalg.norm(b)


@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_refactorize_same_pattern_skips_detection(fmt, monkeypatch):
    A0 = random_spd_9pt(33, 21, seed=1).asformat(fmt)
    lu = ssi_sparse.factorize(A0)
    import ssi_sparse._api.factor as factor_mod

    def no_detection(*a, **k):
        raise AssertionError("detection must not run for the same sparsity pattern")

    monkeypatch.setattr(factor_mod, "grid_stencil", no_detection)
    b = np.random.default_rng(0).standard_normal(A0.shape[0])
    coo = A0.tocoo()  # same storage order as A0.data
    diagonal = coo.row == coo.col
    for t in (0.1, 1.0, 10.0):  # implicit time steps I + t L on one pattern
        A = A0.copy()
        A.data = t * A0.data + diagonal
        assert lu.refactorize(A) is lu
        assert rel_res(A, lu.solve(b), b) < 1e-12


def test_refactorize_new_pattern_same_grid():
    A = diffusion_2d(20, 30)
    lu = ssi_sparse.factorize(A)
    B = random_spd_9pt(20, 30, seed=4).tocoo()  # 9-point now, other format
    lu.refactorize(B)
    b = np.ones(600)
    assert lu.grid.stencil == "5-point"  # the grid object is kept; values changed
    assert rel_res(B.tocsr(), lu.solve(b), b) < 1e-12


def test_refactorize_rejects_other_grid_and_keeps_factor():
    A = diffusion_2d(20, 30)
    lu = ssi_sparse.factorize(A)
    with pytest.raises(ssi_sparse.NotGridStructuredError):
        lu.refactorize(diffusion_2d(30, 20) + sp.eye(600, k=25))
    b = np.ones(600)
    assert rel_res(A, lu.solve(b), b) < 1e-12  # failed refactorization left it intact
    with pytest.raises(ValueError, match="shape"):
        lu.refactorize(diffusion_2d(10, 10))


def test_refactorize_singular_values_keep_old_factor():
    A = diffusion_2d(12, 9)
    lu = ssi_sparse.factorize(A)
    bad = A.tolil()
    bad[3, :] = 0
    with pytest.raises(ssi_sparse.SingularMatrixError):
        lu.refactorize(bad.tocsr())
    b = np.ones(108)
    assert rel_res(A, lu.solve(b), b) < 1e-12


def test_inverse_operator_matvec_matmat_adjoint():
    A = convection_diffusion_2d(15, 17, peclet=20.0)
    Ainv = ssi_sparse.factorize(A).aslinearoperator()
    rng = np.random.default_rng(2)
    x, X = rng.standard_normal(255), rng.standard_normal((255, 3))
    assert rel_res(A, Ainv @ x, x) < 1e-12
    assert rel_res(A, Ainv.matmat(X), X) < 1e-12
    assert rel_res(A.T, Ainv.H @ x, x) < 1e-12  # adjoint is A^-H
    assert Ainv.shape == A.shape and Ainv.dtype == np.float64


def test_inverse_operator_as_preconditioner_and_shift_invert():
    A = random_spd_9pt(30, 30, seed=5)
    b = np.ones(900)
    # preconditioning CG with an exact inverse of a nearby matrix converges in a few steps
    M = ssi_sparse.factorize(A + 1e-3 * sp.identity(900)).aslinearoperator()
    iters = []
    x, info = spla.cg(A, b, M=M, rtol=1e-10, callback=lambda xk: iters.append(1))
    assert info == 0 and len(iters) <= 5 and rel_res(A, x, b) < 1e-9
    # shift-invert eigsh: smallest eigenvalues through OPinv
    vals = spla.eigsh(A, k=3, sigma=0, which="LM", OPinv=ssi_sparse.factorize(A).aslinearoperator(),
                      return_eigenvectors=False)
    ref = np.linalg.eigvalsh(A.toarray())[:3]
    np.testing.assert_allclose(np.sort(vals), ref, rtol=1e-8)


def test_too_little_memory_is_refused_before_allocating(monkeypatch):
    import ssi_sparse._api.factor as factor_mod

    A = diffusion_2d(64, 64)
    monkeypatch.setattr(factor_mod, "available_memory", lambda: 1 << 20)  # 1 MiB left
    with pytest.raises(MemoryError, match=r"needs about .* GiB, but only .* GiB"):
        ssi_sparse.factorize(A)
    monkeypatch.setattr(factor_mod, "available_memory", lambda: None)  # unknown: no check
    assert ssi_sparse.factorize(A).shape == A.shape


def test_memory_refusal_comes_before_detection_and_the_plan(monkeypatch):
    """A given grid is refused before the matrix is read; a found one before any plan."""
    import ssi_sparse._api.factor as factor_mod

    A = diffusion_2d(40, 30)
    monkeypatch.setattr(factor_mod, "available_memory", lambda: 1 << 20)

    def must_not_run(*args, **kwargs):
        raise AssertionError("ran before the memory check")

    monkeypatch.setattr(factor_mod, "build_plan", must_not_run)
    with pytest.raises(MemoryError, match="40x30 grid"):
        ssi_sparse.factorize(A)
    monkeypatch.setattr(factor_mod, "grid_stencil", must_not_run)
    with pytest.raises(MemoryError, match="40x30 grid"):
        ssi_sparse.factorize(A, grid=(40, 30))
    with pytest.raises(ValueError, match="does not have"):  # a wrong grid is still a wrong grid
        monkeypatch.undo()
        ssi_sparse.factorize(A, grid=(40, 31))


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (30, 41), (64, 64), (129, 33)])
@pytest.mark.parametrize("components, batch, radius", [(1, 1, 1), (2, 1, 1), (1, 3, 1), (3, 2, 1), (1, 1, 2)])
def test_memory_estimate_is_the_plans_without_building_it(shape, components, batch, radius):
    from ssi_sparse import GridSpec
    from ssi_sparse._planning.plan import build_plan

    spec = GridSpec(shape, components=components, radius=radius)
    h, w, k = spec.engine_dims
    plan = build_plan(h, w, 5, k, batch)
    stencils = 2 * batch * h * w * k * k * 9 * 8
    for hermitian in (False, True):
        assert spec.memory_estimate(np.float64, hermitian, batch) == plan.memory_bytes(8, hermitian) + stencils
    assert spec.memory_estimate(np.float64, True, batch, np.float32) < spec.memory_estimate(np.float64, True, batch)


def test_memory_estimate_of_huge_grids_needs_no_plan(monkeypatch):
    import ssi_sparse._planning.plan as plan_mod
    from ssi_sparse import GridSpec

    monkeypatch.setattr(plan_mod, "_plan_from_segments", None)  # a plan of 30000^2 would not fit
    need = GridSpec((30000, 30000)).memory_estimate(np.float64, hermitian=True)
    assert need > 900 * 2**30  # ~1.9 TiB: 900M unknowns, fill O(n log n)


def test_memory_estimate_bounds_the_stored_factor():
    from ssi_sparse._planning.plan import build_plan

    lu = ssi_sparse.factorize(random_spd_9pt(90, 70))
    plan = build_plan(90, 70, 5)
    assert lu.nbytes <= plan.memory_bytes(8, lu.hermitian) <= 4 * lu.nbytes


def _factorize_in_child(_):
    # large enough that the engine's thread pool takes row chunks
    A = random_spd_9pt(300, 300, seed=5)
    b = np.ones(A.shape[0])
    x = ssi_sparse.factorize(A).solve(b)
    return float(np.linalg.norm(A @ x - b) / np.linalg.norm(b))


@pytest.mark.skipif(
    "fork" not in __import__("multiprocessing").get_all_start_methods(), reason="needs fork"
)
def test_factorize_in_forked_child_after_parent():
    """Regression: a forked child inherited the engine's thread pool without its threads
    and hung on the first chunked level (multiprocessing with 'fork' is Linux's default)."""
    import multiprocessing

    assert _factorize_in_child(0) < 1e-9  # the parent creates the pool
    with multiprocessing.get_context("fork").Pool(1) as pool:
        (residual,) = pool.map_async(_factorize_in_child, [0]).get(timeout=120)
    assert residual < 1e-9


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise(MADV_DONTNEED) is Linux's")
def test_arena_tail_goes_back_to_the_system():
    # the engine hands back the pages of a level arena that no later level reaches
    from ssi_sparse._engine.walks import _release_tail

    arena = np.ones(1 << 20)  # 8 MiB
    keep = 300_001
    _release_tail(arena, keep)
    assert np.all(arena[:keep] == 1.0)  # the part still in use is untouched
    # whole pages past the kept part read back as zeros (the partial pages at both ends stay)
    assert np.all(arena[keep + 1024 : -1024] == 0.0)


def _stored_arrays(lu):
    return [a for level in lu._numeric.blocks for blk in level if blk is not None
            for a in (getattr(blk, "factor", None), getattr(blk, "w", None)) if a is not None]  # fmt: skip


def test_refactorize_writes_into_the_old_factors_storage():
    """New values go into the arrays of the factorization they replace (no fresh memory),
    with the factors a new factorization of those values has, bit for bit."""
    from ssi_sparse.problems import helmholtz_2d

    A = diffusion_2d(41, 37)
    lu = ssi_sparse.factorize(A)
    before = _stored_arrays(lu)
    b = np.random.default_rng(3).standard_normal((A.shape[0], 2))
    lu.solve(b)  # (its right-hand side buffers are handed on too)
    lu.refactorize(2.5 * A)
    after = _stored_arrays(lu)
    assert len(after) == len(before) and all(x is y for x, y in zip(before, after))
    np.testing.assert_array_equal(lu.solve(b), ssi_sparse.factorize(2.5 * A).solve(b))
    H = helmholtz_2d(41, 37, kh=0.9)  # same pattern, indefinite: LU from some level up
    lu.refactorize(H)
    assert not lu._numeric.cholesky
    np.testing.assert_array_equal(lu.solve(b), ssi_sparse.factorize(H).solve(b))
    assert rel_res(H, lu.solve(b), b) < 1e-10


def test_refactorize_failing_in_the_elimination_keeps_old_factor():
    """A refactorization that fails after it began overwriting the old factors (a
    numerically singular block) recomputes them: the factor answers as before, bit for bit."""
    A = diffusion_2d(40, 30)
    lu = ssi_sparse.factorize(A)
    b = np.ones(A.shape[0])
    x = lu.solve(b)
    with pytest.raises(ssi_sparse.SingularMatrixError, match="numerically singular"):
        lu.refactorize(diffusion_2d(40, 30, neumann=True))  # same pattern, singular
    np.testing.assert_array_equal(lu.solve(b), x)
    lu.refactorize(2.0 * A)
    assert rel_res(2.0 * A, lu.solve(b), b) < 1e-12
