"""The dense kernel (``ssi_sparse/_engine/dense.py``: per-box LAPACK, factors instead of inverses).

On real problems it runs only on frontals wider than ``DENSE_MIN_FRONT`` (with the native box
loop; ``DENSE_MIN_FRONT_PYTHON_LOOP`` without it); here the thresholds are lowered so that every level of small grids goes through it, and its answers are compared
with SciPy's on every dtype, symmetric and not, definite and not, for every ``trans``.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from hypothesis import given, settings
from hypothesis import strategies as st

import ssi_sparse
import ssi_sparse.problems
from helpers import stencil_matrix
from ssi_sparse import SingularMatrixError, _tuning
from ssi_sparse._engine.dense import FactoredBlocks, NotPositiveDefinite, factor_class

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]


def _tol(dtype):
    return 1e-4 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-10


def _dense_from(mp, width):
    mp.setattr(_tuning, "DENSE_MIN_FRONT", width)
    mp.setattr(_tuning, "DENSE_MIN_FRONT_PYTHON_LOOP", width)


@pytest.fixture
def dense_everywhere(monkeypatch):
    _dense_from(monkeypatch, 1)


def _kinds(factor):
    return {b.kind for level in factor._numeric.blocks for b in level if isinstance(b, FactoredBlocks)}


def _helmholtz(H, W, dtype, shift=2.5):
    """Real symmetric indefinite: 5-point Laplacian minus a shift between its eigenvalues."""
    lap = sp.kronsum(sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(W, W)),
                     sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(H, H)))  # fmt: skip
    return (lap - shift * sp.eye(H * W)).astype(dtype).tocsr()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["spd", "nonsym", "complex"])
def test_dense_kernel_agrees_with_scipy(dense_everywhere, dtype, kind):
    if kind == "complex" and np.dtype(dtype).kind != "c":
        pytest.skip("complex values need a complex dtype")
    rng = np.random.default_rng(11)
    A = stencil_matrix(23, 31, rng, kind, np.dtype(dtype))
    lu = ssi_sparse.factorize(A)
    assert _kinds(lu) == ({"cholesky"} if kind == "spd" else {"lu"})
    b = rng.standard_normal((A.shape[0], 3)).astype(dtype)
    Ad = A.toarray().astype(np.complex128 if np.dtype(dtype).kind == "c" else np.float64)
    for trans, op in [("N", Ad), ("T", Ad.T), ("H", Ad.conj().T)]:
        x = lu.solve(b, trans=trans)
        ref = np.linalg.solve(op, b)
        tol = _tol(dtype)
        np.testing.assert_allclose(x, ref, rtol=tol, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_hermitian_indefinite_falls_back_to_lu(dense_everywhere, dtype):
    A = _helmholtz(17, 19, dtype)
    lu = ssi_sparse.factorize(A)
    assert lu.hermitian
    assert "lu" in _kinds(lu)  # potrf refused a block: that class and all later are LU
    b = np.random.default_rng(0).standard_normal(A.shape[0]).astype(dtype)
    x = lu.solve(b)
    np.testing.assert_allclose(x, spla.spsolve(A.tocsc(), b), rtol=1e-9, atol=1e-9 * np.abs(x).max())


def test_large_grid_uses_cholesky_on_spd():
    # the default threshold: a grid whose top frontals are wider than DENSE_MIN_FRONT
    A = stencil_matrix(260, 270, np.random.default_rng(3), "spd", np.dtype(np.float64))
    lu = ssi_sparse.factorize(A)
    assert "dense" in {k for level in lu._numeric.kernels for k in level}
    assert _kinds(lu) == {"cholesky"}
    b = np.random.default_rng(4).standard_normal(A.shape[0])
    assert np.linalg.norm(A @ lu.solve(b) - b) <= 1e-12 * np.linalg.norm(b)


@settings(max_examples=30, deadline=None)
@given(
    H=st.integers(1, 30),
    W=st.integers(1, 30),
    kind=st.sampled_from(["spd", "nonsym", "laplacian"]),
    dtype=st.sampled_from(DTYPES),
    k=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_dense_kernel_random_grids(H, W, kind, dtype, k, seed):
    with pytest.MonkeyPatch.context() as mp:
        _dense_from(mp, 1)
        rng = np.random.default_rng(seed)
        A = stencil_matrix(H, W, rng, kind, np.dtype(dtype))
        b = rng.standard_normal((H * W, k)).astype(dtype)
        x = ssi_sparse.factorize(A, grid=(H, W)).solve(b, trans="T")
    ref = np.linalg.solve(A.toarray().T.astype(np.promote_types(dtype, np.float64)), b)
    tol = _tol(dtype)
    np.testing.assert_allclose(x, ref, rtol=tol, atol=tol * max(1.0, np.abs(ref).max()))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_kernel_refuses_singular_blocks(dense_everywhere, dtype):
    A = stencil_matrix(20, 20, np.random.default_rng(0), "nonsym", np.dtype(dtype)).tolil()
    A[57, :] = 0  # a zero row: exactly singular, whatever the elimination order
    A = A.tocsr()
    with pytest.raises(SingularMatrixError):
        ssi_sparse.factorize(A)


def test_dense_kernel_refuses_neumann_laplacian(dense_everywhere):
    # rows sum to zero: numerically singular (the root block's rcond is ~eps)
    lap = sp.kronsum(sp.diags([-1.0, 1.0, -1.0], [-1, 0, 1], shape=(16, 16)),
                     sp.diags([-1.0, 1.0, -1.0], [-1, 0, 1], shape=(16, 16))).tolil()  # fmt: skip
    lap.setdiag(-np.asarray(lap.sum(axis=1)).ravel() + lap.diagonal())
    with pytest.raises(SingularMatrixError):
        ssi_sparse.factorize(lap.tocsr())


@pytest.mark.parametrize("dtype", DTYPES)
def test_factor_class_blocks(dtype):
    """One batch of frontals: the Schur complement and the solve against a dense reference."""
    rng = np.random.default_rng(5)
    P, f, s = 3, 12, 5
    M = rng.standard_normal((P, f, f)) + (1j * rng.standard_normal((P, f, f)) if np.dtype(dtype).kind == "c" else 0)
    herm = (M @ np.conj(np.swapaxes(M, 1, 2)) + f * np.eye(f)).astype(dtype)
    tol = 10 * _tol(dtype)
    for cholesky, F0 in [(True, herm), (False, herm), (False, (M + f * np.eye(f)).astype(dtype))]:
        F = np.array(F0)
        blk = factor_class(F, s, cholesky, 1.0, "test")
        S, S_R, R_S, R = F0[:, :s, :s], F0[:, :s, s:], F0[:, s:, :s], F0[:, s:, s:]
        D = R - R_S @ np.linalg.solve(S, S_R)
        np.testing.assert_allclose(F[:, s:, s:], D, rtol=tol, atol=tol * np.abs(D).max())
        # the frontal solve F u = g by up / down sweeps with u_R taken from the exact answer
        g = rng.standard_normal((P, f, 2)).astype(dtype)
        u = np.linalg.solve(F0, g)
        for trans, Fop, gg in [("N", F0, g)] + ([] if cholesky else [("T", np.swapaxes(F0, 1, 2), g)]):
            u = np.linalg.solve(Fop, gg)
            front = np.array(gg)
            blk.up(np, front, trans)  # boundary rows: the condensed system D u_R = g_R - ...
            DR = np.swapaxes(D, 1, 2) if trans == "T" else D
            np.testing.assert_allclose(DR @ u[:, s:], front[:, s:], rtol=tol, atol=tol * np.abs(gg).max())
            front[:, s:] = u[:, s:]
            blk.down(np, front, trans)
            np.testing.assert_allclose(front[:, :s], u[:, :s], rtol=tol, atol=tol * np.abs(u).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cholesky", [True, False])
@pytest.mark.parametrize("k", [1, 3])  # one column: the C sweeps' matrix-vector path
def test_native_box_loop_matches_python_loop(monkeypatch, dtype, cholesky, k):
    """The C loop over boxes (factors and both sweeps) against the same arithmetic from Python."""
    from ssi_sparse._engine import native as _native

    if not _native.available():
        pytest.skip("native kernel not built")
    rng = np.random.default_rng(9)
    P, f, s = 4, 30, 11
    M = rng.standard_normal((P, f, f)) + (1j * rng.standard_normal((P, f, f)) if np.dtype(dtype).kind == "c" else 0)
    F0 = (M @ np.conj(np.swapaxes(M, 1, 2)) + f * np.eye(f)).astype(dtype)
    g = (rng.standard_normal((P, f, k)) + (1j * rng.standard_normal((P, f, k)) if np.dtype(dtype).kind == "c" else 0)).astype(dtype)
    u_R = rng.standard_normal((P, f - s, k)).astype(dtype)
    results = []
    for on in (True, False):
        monkeypatch.setattr(_native, "supports_dtype", lambda xp, dt, on=on: on)
        F = np.array(F0)
        blk = factor_class(F, s, cholesky, 1.0, "test")
        sweeps = []
        for trans in ["N"] + ([] if cholesky else ["T"]):
            front = np.array(g)
            blk.up(np, front, trans)
            sweeps.append(front.copy())
            front[:, s:] = u_R
            blk.down(np, front, trans)
            sweeps.append(front)
        arrays = [F, blk.factor, blk.w] + ([] if cholesky else [blk.x, blk.perm])
        results.append((arrays, sweeps, blk.min_rcond))
    tol = 10 * _tol(dtype)
    for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1]):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))
    assert results[0][2] == pytest.approx(results[1][2], rel=1e-3)


def test_factor_class_not_positive_definite():
    F = np.stack([np.diag([1.0, -1.0, 2.0, 3.0])])
    with pytest.raises(NotPositiveDefinite):
        factor_class(F, 2, True, 1.0, "test")


@pytest.mark.parametrize("hermitian", [True, False])
def test_classes_side_by_side_agree_with_sequential(monkeypatch, hermitian):
    # two threads: a level's dense classes run side by side, box ranges in parallel
    A = stencil_matrix(40, 44, np.random.default_rng(1), "spd" if hermitian else "nonsym", np.dtype(np.float64))
    b = np.random.default_rng(2).standard_normal(A.shape[0])
    _dense_from(monkeypatch, 20)
    answers = []
    for threads in ("1", "2"):
        monkeypatch.setenv("SSI_SPARSE_NUM_THREADS", threads)
        lu = ssi_sparse.factorize(A)
        assert _kinds(lu) == {"cholesky" if hermitian else "lu"}
        answers.append(lu.solve(b))
    np.testing.assert_allclose(answers[0], answers[1], rtol=1e-12, atol=1e-12)


def test_indefinite_level_side_by_side_refactors_by_lu(monkeypatch):
    # potrf fails in one class of a level whose classes run side by side: the whole level
    # (and every later one) is refactored by LU, and the answer is right
    monkeypatch.setenv("SSI_SPARSE_NUM_THREADS", "2")
    _dense_from(monkeypatch, 1)
    A = _helmholtz(23, 29, np.float64)
    lu = ssi_sparse.factorize(A)
    assert "lu" in _kinds(lu)
    b = np.random.default_rng(0).standard_normal(A.shape[0])
    x = lu.solve(b)
    np.testing.assert_allclose(x, spla.spsolve(A.tocsc(), b), rtol=1e-9, atol=1e-9 * np.abs(x).max())


@pytest.mark.parametrize("case", ["indefinite, dense everywhere", "spd, default kernels"])
def test_factorization_leaves_no_reference_cycles(monkeypatch, case):
    # e.g. the failed Cholesky attempt's exception must not keep the level's arrays alive in
    # a frame -> future -> exception cycle (measured: 4 GB instead of 1.6 GB peak at 1025^2)
    import gc
    import inspect

    monkeypatch.setenv("SSI_SPARSE_NUM_THREADS", "2")
    if case.startswith("indefinite"):
        _dense_from(monkeypatch, 1)
        A = _helmholtz(23, 29, np.float64)
    else:
        A = stencil_matrix(70, 90, np.random.default_rng(0), "spd", np.dtype(np.float64))
    ssi_sparse.factorize(A)  # warm: imports, plan cache
    gc.collect()
    gc.disable()
    try:
        lu = ssi_sparse.factorize(A)
        assert ("lu" in _kinds(lu)) == case.startswith("indefinite")
        del lu
        # what only the cyclic collector would free; other threads' garbage (a Dask test's
        # event loop, say) may land here too, so look for ours: arrays, or our frames
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        ours = [o for o in gc.garbage if isinstance(o, np.ndarray)
                or (inspect.isframe(o) and "ssi_sparse" in o.f_code.co_filename)]  # fmt: skip
        assert ours == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.parametrize("native_on", ["1", "0"])
def test_tiny_schur_entries_flushed_without_losing_accuracy(monkeypatch, native_on):
    # strong upwind convection: Schur complements decay towards the subnormal range, which
    # the assembly flushes to zero (speed); refinement against the exact matrix keeps the
    # answer at full accuracy
    monkeypatch.setenv("SSI_SPARSE_NATIVE", native_on)
    _dense_from(monkeypatch, 40)
    A = ssi_sparse.problems.convection_diffusion_2d(60, 70, peclet=1e6)
    b = np.random.default_rng(0).standard_normal(A.shape[0])
    x = ssi_sparse.factorize(A).solve(b)
    ref = spla.spsolve(A.tocsc(), b)
    np.testing.assert_allclose(x, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())


def _class_frontals(rng, P, f, dtype, hermitian):
    cplx = np.dtype(dtype).kind == "c"
    M = rng.standard_normal((P, f, f)) + (1j * rng.standard_normal((P, f, f)) if cplx else 0)
    if hermitian:
        return (M @ np.conj(np.swapaxes(M, 1, 2)) + f * np.eye(f)).astype(dtype)
    return (M + 2 * np.sqrt(f) * np.eye(f)).astype(dtype)


def _run_job(F, s, cholesky, inline, finish=True):
    from ssi_sparse._engine.dense import DenseJob, run_jobs

    job = DenseJob(F, s, cholesky, 1.0, "test", inline=inline)
    run_jobs([job])
    return job.finish() if finish else job


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cholesky", [True, False])
@pytest.mark.parametrize("s", [1, 3, 4, 9, 13])  # panel widths 1..4 and their remainders
def test_inline_kernel_matches_lapack_kernel(dtype, cholesky, s):
    """The native inline loops and LAPACK/BLAS store the same factors, X, W and Schur
    complements (Cholesky is unique; these LU frontals pivot alike), and both estimate the
    blocks' conditioning by the same method."""
    from ssi_sparse._engine import native as _native

    if not _native.available():
        pytest.skip("native kernel not built")
    rng = np.random.default_rng(s)
    F0 = _class_frontals(rng, 5, 21, dtype, cholesky)
    results = []
    for inline in (True, False):
        F = np.array(F0)
        blk = _run_job(F, s, cholesky, inline)
        factor = np.tril(np.swapaxes(blk.factor, 1, 2)) if cholesky else blk.factor  # G's lower part
        arrays = [F[:, s:, s:], factor, blk.w] + ([] if cholesky else [blk.x, blk.perm])
        results.append((arrays, blk.min_rcond))
    tol = 10 * _tol(dtype)
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))
    assert results[1][1] / 2 <= results[0][1] <= 2 * results[1][1]


@pytest.mark.parametrize("dtype", DTYPES)
def test_inline_lu_pivots_do_not_depend_on_column_scaling(dtype):
    """Scaled partial pivoting: the columns of F (the unknowns' units) scaled by powers of two
    (exact) give the same pivots and the same factors, scaled back."""
    from ssi_sparse._engine import native as _native

    if not _native.available():
        pytest.skip("native kernel not built")
    rng = np.random.default_rng(3)
    P, f, s = 6, 19, 11
    cplx = np.dtype(dtype).kind == "c"
    F0 = (rng.standard_normal((P, f, f)) + (1j * rng.standard_normal((P, f, f)) if cplx else 0)).astype(dtype)
    d = 2.0 ** rng.integers(-20, 21, (P, 1, f))
    # (not finished: the scaled blocks' condition numbers are far beyond single precision's)
    plain = _run_job(np.array(F0), s, False, True, finish=False)
    scaled = _run_job(np.ascontiguousarray(F0 * d).astype(dtype), s, False, True, finish=False)
    np.testing.assert_array_equal(plain.perm, scaled.perm)
