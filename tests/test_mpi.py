"""One grid across MPI ranks: the distributed plan (no MPI needed), the distributed factor in
one process with several windows, and real ``mpiexec -n 2`` / ``-n 4`` runs."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import random_stencil
from ssi_sparse import factorize_stencil
from ssi_sparse._planning.plan import build_plan, build_window_plan, memory_of_sizes
from ssi_sparse._planning.tree import distributed_plan, n_windows_for, tree_sizes

HERE = Path(__file__).parent


def _by_sizes(levels):
    """Class sizes per level with equal (n_elim, n_boundary) classes pooled."""
    out = []
    for level in levels:
        pooled = {}
        for p, s, r in level:
            pooled[(s, r)] = pooled.get((s, r), 0) + p
        out.append(pooled)
    return out


@pytest.mark.parametrize("shape", [(7, 9), (1, 40), (2, 17), (37, 53), (101, 33), (129, 129), (64, 65)])
def test_tree_sizes_match_the_plan(shape):
    plan = build_plan(*shape)
    assert _by_sizes(tree_sizes(*shape)) == _by_sizes(plan.sizes())
    assert memory_of_sizes(tree_sizes(*shape), 8, True) == plan.memory_bytes(8, True)


@pytest.mark.parametrize("shape", [(37, 53), (129, 129), (6, 90), (64, 65)])
@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 8])
def test_windows_tile_the_grid_and_agree_with_their_plans(shape, ranks):
    H, W = shape
    dp = distributed_plan(H, W, ranks)
    covered = np.zeros((H, W), dtype=int)
    for w in dp.windows:
        plan = w.plan()
        boundary = [] if plan.boundary is None else plan.boundary
        assert np.array_equal(w.global_ids(boundary), w.boundary)
        assert _by_sizes(w.sizes()) == _by_sizes(plan.sizes())
        covered[w.rows[0] : w.rows[1], w.cols[0] : w.cols[1]] += 1  # cells, half-open
    assert np.all(covered[: H - 1, : W - 1] == 1) or (H == 1 or W == 1)
    # every merge: children are the previous round's boxes, the root has no boundary
    assert len(dp.root.boundary) == 0
    owners = [w.owner for w in dp.windows]
    assert owners == sorted(owners) and set(owners) <= set(range(ranks))
    merges_per_rank = np.bincount([m.owner for level in dp.merges for m in level], minlength=ranks)
    if len(dp.windows) == ranks:  # a power of two: at most one merge each
        assert merges_per_rank.max(initial=0) <= 1
    for level in dp.merges:
        for m in level:
            last = m.children[0]
            while hasattr(last, "children"):
                last = last.children[1]
            assert m.owner == last.owner
            front = np.concatenate([m.eliminated, m.boundary])
            for c, pos in zip(m.children, m.child_pos):
                assert np.array_equal(front[pos], c.boundary)


def test_window_plan_is_the_subtree_of_the_grid_plan():
    # the windows' nodes eliminated plus the merges' are every node once
    H, W = 45, 61
    dp = distributed_plan(H, W, 4)
    seen = np.zeros(H * W, dtype=int)
    for w in dp.windows:
        np.add.at(seen, w.global_ids(w.plan().order), 1)
    for level in dp.merges:
        for m in level:
            np.add.at(seen, m.eliminated, 1)
    assert np.all(seen == 1)


def test_windows_count():
    assert [n_windows_for(p, 20) for p in (1, 2, 3, 4, 5, 8, 12)] == [1, 2, 8, 4, 16, 8, 32]
    assert n_windows_for(64, 3) == 4  # capped by the tree's depth
    with pytest.raises(ValueError, match="power of two"):
        distributed_plan(20, 20, 2, windows=3)


def test_memory_model_is_cheap_at_any_size_and_shrinks_with_ranks():
    one = memory_of_sizes(tree_sizes(16385, 16385), 8, True)
    dp = distributed_plan(16385, 16385, 64)
    worst = max(dp.memory_bytes(r, 8, True) for r in range(64))
    assert worst < one / 20  # ideal 1/64; the owners of the top merges hold more
    assert sum(dp.flops(r) for r in range(64)) >= 0.99 * sum(
        p * (2 / 3 * s**3 + 2 * s * s * r + 2 * r * r * s) for level in tree_sizes(16385, 16385) for p, s, r in level
    )


# ------------------------------------------------------------------ the factor in one process

try:
    from mpi4py import MPI
except ImportError:  # pragma: no cover - the test extra installs it
    MPI = None

needs_mpi4py = pytest.mark.skipif(MPI is None, reason="mpi4py not installed")



@needs_mpi4py
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    H=st.integers(1, 30),
    W=st.integers(1, 30),
    windows=st.sampled_from([1, 2, 4, 8]),
    dtype=st.sampled_from([np.float32, np.float64, np.complex64, np.complex128]),
    hermitian=st.booleans(),
    columns=st.sampled_from([None, 1, 3]),
    trans=st.sampled_from("NTH"),
)
def test_windows_in_one_process_match_the_engine(H, W, windows, dtype, hermitian, columns, trans):
    from ssi_sparse.mpi import factorize_slab

    V = random_stencil(H, W, dtype, hermitian, seed=H * 31 + W)
    lu = factorize_slab(V, (H, W), comm=MPI.COMM_SELF, windows=windows)
    one = factorize_stencil(V)
    assert lu.hermitian == one.hermitian
    rng = np.random.default_rng(0)
    b = rng.standard_normal(H * W if columns is None else (H * W, columns))
    x, ref = lu.solve(b, trans), one.solve(b, trans)
    tol = 1e-12 if np.dtype(dtype).itemsize * (2 if np.dtype(dtype).kind == "f" else 1) >= 16 else 2e-5
    assert x.shape == ref.shape and x.dtype == ref.dtype
    assert np.max(np.abs(x - ref)) <= tol * np.max(np.abs(ref))
    assert np.isclose(lu.slogdet()[1], one.slogdet()[1], rtol=1e-10 if tol < 1e-9 else 1e-4)


@needs_mpi4py
def test_memory_refused_before_allocating(monkeypatch):
    import ssi_sparse.mpi as mpi

    monkeypatch.setattr(mpi, "available_memory", lambda: 1 << 20)
    V = random_stencil(200, 200, np.float64, True, seed=0)
    with pytest.raises(MemoryError, match="needs about"):
        mpi.factorize_slab(V, (200, 200), comm=MPI.COMM_SELF, windows=2)


# ------------------------------------------------------------------ real MPI jobs


def _mpiexec():
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


needs_mpiexec = pytest.mark.skipif(MPI is None or _mpiexec() is None, reason="mpi4py or mpiexec not available")


def _run(ranks, *args, timeout=240):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    # -m mpi4py: an uncaught exception on one rank aborts the job instead of hanging it
    cmd = [_mpiexec(), "-n", str(ranks), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=HERE.parent)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


@needs_mpiexec
@pytest.mark.parametrize("ranks", [2, 4])
def test_mpiexec_cases(ranks):
    out = _run(ranks, sys.executable, "-m", "mpi4py", str(HERE / "mpi_cases.py"), "solves", "traffic", "errors",
               "spsolve")  # fmt: skip
    for case in ("solves", "traffic", "errors", "spsolve"):
        assert f"{case}: ok on {ranks} ranks" in out


@needs_mpiexec
def test_mpiexec_command_line(tmp_path):
    import scipy.io

    from ssi_sparse import to_csr

    V = random_stencil(41, 37, np.float64, False, seed=4)
    A = to_csr(V)
    b = np.random.default_rng(3).standard_normal((A.shape[0], 2))
    scipy.io.mmwrite(tmp_path / "A.mtx", A)
    scipy.io.mmwrite(tmp_path / "b.mtx", b)
    _run(3, sys.executable, "-m", "ssi_sparse", "solve", str(tmp_path / "A.mtx"), str(tmp_path / "b.mtx"), "-o",
         str(tmp_path / "x.mtx"), "-q")  # fmt: skip
    x = scipy.io.mmread(tmp_path / "x.mtx")
    assert np.max(np.abs(x - factorize_stencil(V).solve(b))) <= 1e-12 * np.max(np.abs(x))
