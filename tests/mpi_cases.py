"""Checks run under ``mpiexec -n P python -m mpi4py tests/mpi_cases.py CASE`` by ``tests/test_mpi.py``.

Every rank builds the whole test problem (small), passes only its own rows to the slab API,
and compares its rows of the answer with the one-process engine.  Exit status 0 when every
check passed on this rank; a failing assertion prints and exits 1 (mpiexec then fails).
"""

import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).parent))
from helpers import random_stencil  # noqa: E402

import ssi_sparse
import ssi_sparse.mpi
from ssi_sparse import SingularMatrixError, factorize_stencil, to_csr
from ssi_sparse.mpi import factorize_slab, slab_rows

comm = MPI.COMM_WORLD
rank, size = comm.rank, comm.size
TOL = {np.float64: 1e-12, np.complex128: 1e-12, np.float32: 2e-5, np.complex64: 2e-5}


def rows_of(H, split):
    if split == "even":
        return slab_rows(H, size, rank)
    # uneven, the last rank holding nothing
    bounds = [0] + [int(v) for v in np.linspace(0, H, size)[1:]] + [H]
    return bounds[rank], bounds[rank + 1]


def check_solves():
    for H, W, dtype, hermitian, split in [
        (45, 38, np.float64, False, "even"),
        (45, 38, np.float64, True, "uneven"),
        (33, 64, np.complex128, True, "even"),
        (29, 31, np.complex128, False, "uneven"),
        (40, 40, np.float32, True, "even"),
        (7, 90, np.float64, False, "even"),
        (3, 5, np.float64, False, "even"),
    ]:
        V = random_stencil(H, W, dtype, hermitian, seed=H * W)
        a, b = rows_of(H, split)
        lu = factorize_slab(V[a:b], (H, W))
        one = factorize_stencil(V)
        assert lu.hermitian == one.hermitian, (H, W, dtype)
        rng = np.random.default_rng(1)
        for trans in "NTH":
            for B in (rng.standard_normal(H * W), rng.standard_normal((H * W, 3))):
                x = lu.solve(B[a * W : b * W], trans)
                ref = one.solve(B, trans)[a * W : b * W]
                err = np.max(np.abs(x - ref), initial=0) / max(np.max(np.abs(ref), initial=0), 1e-300)
                assert x.shape == ref.shape and x.dtype == ref.dtype, (x.shape, ref.shape, x.dtype, ref.dtype)
                assert err <= TOL[dtype], (H, W, dtype, hermitian, trans, err)
        # complex right-hand side on a real matrix
        Bc = rng.standard_normal(H * W) + 1j * rng.standard_normal(H * W)
        assert np.allclose(lu.solve(Bc[a * W : b * W]), one.solve(Bc)[a * W : b * W], rtol=0, atol=TOL[dtype] * 10)
        sign, logabs = lu.slogdet()
        sign1, logabs1 = one.slogdet()
        assert abs(logabs - logabs1) <= 1e-9 * abs(logabs1) * (1e5 if TOL[dtype] > 1e-9 else 1), (logabs, logabs1)
        assert abs(sign - sign1) < 1e-6, (sign, sign1)
        # measured traffic is what the plan's geometry says
        model = lu.traffic_model(sweeps=0, matvecs=0)
        assert tuple(lu.traffic["factorize"]) == model["factorize"], (lu.traffic, model)
        # a rank keeps its own stencil rows and one halo row on each side, nothing more
        assert lu._V_ext.shape[0] <= (b - a + 2) * W
    # refactorize on the same slabs
    H, W = 37, 41
    a, b = slab_rows(H, size, rank)
    V1, V2 = (random_stencil(H, W, np.float64, False, seed=s) for s in (1, 2))
    lu = factorize_slab(V1[a:b], (H, W))
    lu.refactorize(V2[a:b])
    B = np.arange(H * W, dtype=float)
    ref = factorize_stencil(V2).solve(B)[a * W : b * W]
    assert np.max(np.abs(lu.solve(B[a * W : b * W]) - ref), initial=0) <= 1e-12 * np.max(np.abs(ref), initial=1)


def check_traffic():
    H, W = 50, 47
    V = random_stencil(H, W, np.float64, False, seed=3)
    a, b = slab_rows(H, size, rank)
    lu = factorize_slab(V[a:b], (H, W))
    lu.solve(np.ones(((b - a) * W, 2)))
    model = lu.traffic_model(columns=2)
    assert tuple(lu.traffic["factorize"]) == model["factorize"], (lu.traffic, model)
    assert tuple(lu.traffic["solve"]) == model["solve"], (lu.traffic, model)


def expect_same_error(kind, fn):
    """``fn()`` must raise ``kind`` on every rank, with one message."""
    try:
        fn()
    except kind as exc:
        message = str(exc)
    else:
        message = None
    messages = comm.allgather(message)
    assert all(m is not None for m in messages), f"not raised everywhere: {messages}"
    assert len(set(messages)) == 1, messages
    return messages[0]


def check_errors():
    H, W = 30, 26
    a, b = slab_rows(H, size, rank)
    V = random_stencil(H, W, np.float64, False, seed=5)
    # an all-zero row on the last rank's slab only
    Vz = V.copy()
    Vz[H - 2, 3] = 0
    msg = expect_same_error(SingularMatrixError, lambda: factorize_slab(Vz[a:b], (H, W)))
    assert "all-zero row" in msg, msg
    # a singular matrix (pure Neumann Laplacian: constants in its null space)
    L = np.zeros((H, W, 3, 3))
    L[:, :, 0, 1] = L[:, :, 2, 1] = L[:, :, 1, 0] = L[:, :, 1, 2] = -1
    L[0, :, 0, 1] = L[-1, :, 2, 1] = L[:, 0, 1, 0] = L[:, -1, 1, 2] = 0
    L[:, :, 1, 1] = -L.sum(axis=(2, 3))

    def neumann():
        lu = factorize_slab(L[a:b], (H, W))
        lu.solve(np.random.default_rng(0).standard_normal((b - a) * W))

    expect_same_error(SingularMatrixError, neumann)
    Vn = V.copy()
    Vn[1, 1, 1, 1] = np.nan
    expect_same_error(ValueError, lambda: factorize_slab(Vn[a:b], (H, W)))
    # one rank with rows of the wrong width
    bad = V[a:b, :-1] if rank == size - 1 else V[a:b]
    expect_same_error(ValueError, lambda: factorize_slab(bad, (H, W)))
    # rows that do not add up to the grid
    expect_same_error(ValueError, lambda: factorize_slab(V[a:b], (H + 1, W)))
    lu = factorize_slab(V[a:b], (H, W))
    rhs = np.ones((b - a) * W + (1 if rank == 0 else 0))
    expect_same_error(ValueError, lambda: lu.solve(rhs))
    cols = np.ones(((b - a) * W, 1 + rank))
    expect_same_error(ValueError, lambda: lu.solve(cols))
    rhs = np.ones((b - a) * W)
    if rank == size - 1:
        rhs[0] = np.inf
    expect_same_error(ValueError, lambda: lu.solve(rhs))
    # the factor still works after the failed calls
    x = lu.solve(np.ones((b - a) * W))
    ref = factorize_stencil(V).solve(np.ones(H * W))[a * W : b * W]
    assert np.max(np.abs(x - ref), initial=0) <= 1e-12 * np.max(np.abs(ref), initial=1)


def check_spsolve():
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    H, W = 34, 29
    V = random_stencil(H, W, np.float64, False, seed=9)
    A = to_csr(V)
    # Fortran (column-major) numbering of the same grid: the root finds the transposed grid
    perm = np.arange(H * W).reshape(H, W).ravel(order="F")
    A_f = A[perm][:, perm]
    bb = np.random.default_rng(2).standard_normal((H * W, 2))
    for M in (A, A_f):
        x = ssi_sparse.mpi.spsolve(M if rank == 0 else None, bb if rank == 0 else None)
        if rank == 0:
            ref = spla.spsolve(sp.csc_matrix(M), bb)
            assert np.max(np.abs(x - ref)) <= 1e-11 * np.max(np.abs(ref))
        else:
            assert x is None
    # not a grid: solved by the root alone, as SciPy would
    R = sp.random(200, 200, density=0.05, random_state=1, format="csr") + 10 * sp.eye(200)
    x = ssi_sparse.mpi.spsolve(R if rank == 0 else None, np.ones(200) if rank == 0 else None)
    if rank == 0:
        assert np.allclose(R @ x, 1)


CASES = {"solves": check_solves, "traffic": check_traffic, "errors": check_errors, "spsolve": check_spsolve}

if __name__ == "__main__":
    for name in sys.argv[1:]:
        CASES[name]()
        comm.Barrier()
        if rank == 0:
            print(f"{name}: ok on {size} ranks", flush=True)
