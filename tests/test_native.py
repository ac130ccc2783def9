"""The native CPU kernel (``ssi_sparse/_engine/_csrc``) against the portable NumPy kernel.

The native kernel stores factors, the portable one inverses: every eliminated block's
determinant and conditioning, the selected inverse and the solves must agree to rounding, on
real and complex, Hermitian and nonsymmetric frontals, and singular blocks must be refused in
the same way.  Skipped where the extension was not built, except
under ``SSI_SPARSE_REQUIRE_NATIVE=1`` (set by CI), where a missing build is a failure.
"""

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ssi_sparse
from helpers import rel_residual, stencil_matrix
from ssi_sparse._engine import native as _native
from ssi_sparse import SingularMatrixError, _tuning
from ssi_sparse._engine import walks
from ssi_sparse._engine.walks import factorize_values, selected_inverse, solve_values
from ssi_sparse._structure.grid import grid_stencil
from ssi_sparse._planning.plan import build_plan
from ssi_sparse._structure.stencil import equilibrate, is_hermitian


def test_native_kernel_built_where_required():
    if os.environ.get("SSI_SPARSE_REQUIRE_NATIVE") == "1":
        assert _native._library() is not None, "the native extension was not built"


needs_native = pytest.mark.skipif(_native._library() is None, reason="native extension not built")
DTYPES = [np.float32, np.float64, np.complex64, np.complex128]


def _tol(dtype):
    return 2e-4 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-11


def _factor(A, dtype, native_on, monkeypatch):
    monkeypatch.setenv("SSI_SPARSE_NATIVE", "1" if native_on else "0")
    # the same classes go to the dense kernel in both runs: the inline kernel is compared
    monkeypatch.setattr(_tuning, "DENSE_MIN_FRONT", _tuning.DENSE_MIN_FRONT_PYTHON_LOOP)
    spec, V = grid_stencil(A)
    V = V.astype(dtype)
    shape = spec.engine_shape
    Vs, _ = equilibrate(np, V, shape)
    hermitian = is_hermitian(np, Vs, shape)
    return factorize_values(build_plan(*shape, 5), Vs, hermitian, 10.0, np), spec


@needs_native
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["spd", "nonsym", "complex"])
# (200, 210) has frontals wider than 256: NumPy eliminates them, the native kernel assembles
@pytest.mark.parametrize("shape", [(37, 41), (1, 60), (2, 33), (64, 64), (200, 210)])
def test_native_blocks_match_portable(dtype, kind, shape, monkeypatch):
    if kind == "complex" and np.dtype(dtype).kind != "c":
        pytest.skip("complex values need a complex dtype")
    A = stencil_matrix(*shape, np.random.default_rng(7), kind, np.dtype(dtype))
    native, _ = _factor(A, dtype, True, monkeypatch)
    portable, _ = _factor(A, dtype, False, monkeypatch)
    assert native.hermitian == portable.hermitian
    if shape == (200, 210):
        assert max(c.n_front for level in native.plan.levels for c in level.classes) > 256
    tol = _tol(dtype)
    # the kernels store different things (factors; inverses): compare what both determine,
    # every eliminated block's determinant, its conditioning, and the inverse's entries
    if max(shape) < 100:
        assert all(kn == "native" and kp == "portable"
                   for ln, lp in zip(native.kernels, portable.kernels) for kn, kp in zip(ln, lp))  # fmt: skip
    _assert_blocks_agree(native, portable, tol)


def _assert_blocks_agree(native, portable, tol):
    """Every eliminated block's determinant and conditioning, and the selected inverse."""
    for level_n, level_p in zip(native.blocks, portable.blocks):
        for bn, bp in zip(level_n, level_p):
            (sign_n, log_n), (sign_p, log_p) = bn.slogdet(np), bp.slogdet(np)
            np.testing.assert_allclose(log_n, log_p, rtol=tol, atol=tol * max(1.0, np.abs(log_p).max(initial=0)))
            np.testing.assert_allclose(sign_n, sign_p, atol=100 * tol)
            # an estimate of ||S^-1|| (LAPACK's method) against the exact one: never smaller
            # than a tenth, never above it (beyond rounding)
            assert bp.min_rcond * (1 - 1e-3) <= bn.min_rcond <= 10 * bp.min_rcond
    Z_n, Z_p = selected_inverse(native, np), selected_inverse(portable, np)
    np.testing.assert_allclose(Z_n, Z_p, rtol=tol, atol=10 * tol * np.abs(Z_p).max())


@needs_native
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["spd", "nonsym"])
def test_decoupled_boxes_match_portable(dtype, kind, monkeypatch):
    """Boxes whose eliminated nodes are coupled to nothing (a masked grid's absent pixels, or
    identity rows) take the inline kernel's diagonal shortcut: the same determinants,
    conditioning and inverse as the portable kernel's full elimination."""
    import scipy.sparse as sp

    H, W = 40, 44
    rng = np.random.default_rng(3)
    A = stencil_matrix(H, W, rng, kind, np.dtype(dtype))
    rows, cols = np.divmod(np.arange(H * W), W)
    decoupled = ((rows < 22) & (cols >= 9) & (cols < 35)) | ((rows >= 30) & (cols < 12))
    keep = sp.diags((~decoupled).astype(A.dtype))
    d = rng.uniform(0.5, 4.0, H * W) * (1 if kind == "spd" else rng.choice([-1, 1], H * W))
    A = sp.csr_matrix(keep @ A @ keep + sp.diags(np.where(decoupled, d, 0).astype(A.dtype)))
    native, _ = _factor(A, dtype, True, monkeypatch)
    portable, _ = _factor(A, dtype, False, monkeypatch)
    tol = _tol(dtype)
    _assert_blocks_agree(native, portable, tol)
    b = rng.standard_normal(H * W).astype(dtype)
    x = ssi_sparse.factorize(A).solve(b)
    assert rel_residual(A, x, b) < 100 * tol


@needs_native
@settings(max_examples=40, deadline=None)
@given(
    H=st.integers(1, 48),
    W=st.integers(1, 48),
    kind=st.sampled_from(["spd", "nonsym", "laplacian"]),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**32 - 1),
)
def test_native_and_portable_solves_agree(H, W, kind, dtype, seed):
    A = stencil_matrix(H, W, np.random.default_rng(seed), kind, np.dtype(dtype))
    b = np.random.default_rng(seed + 1).standard_normal((H * W, 2)).astype(dtype)
    answers = []
    with pytest.MonkeyPatch.context() as mp:
        for native_on in (True, False):
            factor, _ = _factor(A, dtype, native_on, mp)
            answers.append([solve_values(factor, b, t, np) for t in "NT"])
    tol = 10 * _tol(dtype)
    for xn, xp_ in zip(*answers):
        np.testing.assert_allclose(xn, xp_, rtol=tol, atol=tol * max(1.0, float(np.abs(xp_).max())))


@needs_native
def test_native_path_solves_large_grid_to_full_accuracy(monkeypatch):
    monkeypatch.setenv("SSI_SPARSE_NATIVE", "1")
    A = stencil_matrix(150, 170, np.random.default_rng(3), "nonsym", np.dtype(np.float64))
    b = np.random.default_rng(4).standard_normal(A.shape[0])
    x = ssi_sparse.factorize(A).solve(b)
    assert rel_residual(A, x, b) < 1e-12


@needs_native
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("node", [0, 43, 210])
def test_native_refuses_exactly_singular_block(dtype, node, monkeypatch):
    # a node coupled to nothing, not even itself: the block that eliminates it has a zero row
    monkeypatch.setenv("SSI_SPARSE_NATIVE", "1")
    A = stencil_matrix(20, 20, np.random.default_rng(0), "nonsym", np.dtype(dtype))
    spec, V = grid_stencil(A)
    V[node, :] = 0
    with pytest.raises(SingularMatrixError) as info:
        factorize_values(build_plan(*spec.engine_shape, 5), V, False, 10.0, np)
    assert info.value.exact


@needs_native
def test_native_refuses_nan_block(monkeypatch):
    monkeypatch.setenv("SSI_SPARSE_NATIVE", "1")
    A = stencil_matrix(30, 30, np.random.default_rng(0), "spd", np.dtype(np.float64))
    spec, V = grid_stencil(A)
    V[100, 4] = np.nan  # the engine's front end refuses NaN; the kernel must too
    with pytest.raises(SingularMatrixError):
        factorize_values(build_plan(*spec.engine_shape, 5), V, False, 10.0, np)


@needs_native
def test_native_switch_off_uses_portable_path(monkeypatch):
    monkeypatch.setenv("SSI_SPARSE_NATIVE", "0")
    assert not _native.available()
    monkeypatch.setenv("SSI_SPARSE_NATIVE", "1")
    assert _native.available()


@needs_native
@pytest.mark.parametrize("dtype", DTYPES)
def test_native_run_adds_match_numpy(dtype):
    """The up sweep's right-hand-side assembly (``add_runs``: a child frontal's boundary rows,
    from ``first``) against NumPy slices."""
    rng = np.random.default_rng(7)
    P, f, first, r, k = 5, 17, 4, 9, 3
    runs = np.array([[0, 2, 3], [5, 0, 2], [9, 5, 4], [16, 8, 1]], dtype=np.int64)
    src = rng.standard_normal((P, first + r, k)).astype(dtype)
    dst = rng.standard_normal((P, f, k)).astype(dtype)
    want = dst.copy()
    for d, s, n in runs.tolist():
        want[:, d : d + n] += src[:, first + s : first + s + n]
    assert _native.add_runs(dst, src, first, runs)
    np.testing.assert_array_equal(dst, want)
    assert not _native.add_runs(dst[:, ::2], src, first, runs)  # strided: the caller's loop runs
    assert not _native.add_runs(dst, src, first, runs.astype(np.int32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 4])
def test_native_column_absmax_matches_numpy(dtype, k):
    """The refinement's column norms in one pass: plain and row-weighted, NaN kept."""
    rng = np.random.default_rng(11)
    a = rng.standard_normal((257, k)).astype(dtype)
    if np.dtype(dtype).kind == "c":
        a = (a + 1j * rng.standard_normal((257, k))).astype(dtype)
    w = rng.random((257, 1)).astype(np.float64)
    tol = 10 * np.finfo(np.dtype(dtype).char.lower() if np.dtype(dtype).kind == "c" else dtype).eps
    np.testing.assert_allclose(_native.column_absmax(a), np.abs(a).max(axis=0), rtol=tol)
    np.testing.assert_allclose(_native.column_absmax(a, w), (np.abs(a) * w).max(axis=0), rtol=tol)
    a[100, 0] = np.nan
    got = _native.column_absmax(a)
    assert np.isnan(got[0]) and np.all(np.isfinite(got[1:]))
    assert _native.column_absmax(a[:0]).tolist() == [0.0] * k
    assert _native.column_absmax(a[::2]) is None  # strided: NumPy's reduction runs


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 3])
def test_native_solve_moves_match_numpy(dtype, k):
    """The solve's moves between node order and the frontals against NumPy indexing."""
    rng = np.random.default_rng(13)
    P, s, f, n = 6, 4, 9, 40
    nodes = rng.permutation(n)[: P * s].reshape(P, s).astype(np.int64)
    b = rng.standard_normal((n, k)).astype(dtype)
    front = rng.standard_normal((P, f, k)).astype(dtype)
    assert _native.gather_nodes(front, b, nodes)
    np.testing.assert_array_equal(front[:, :s], b[nodes])
    assert not front[:, s:].any()
    x = np.zeros_like(b)
    assert _native.scatter_nodes(x, front, nodes)
    want = np.zeros_like(b)
    want[nodes] = front[:, :s]
    np.testing.assert_array_equal(x, want)
    parent = rng.standard_normal((P, 7, k)).astype(dtype)
    pos = np.array([6, 0, 3, 3, 1], dtype=np.int64)
    carried = np.array([True, False, True, True, True])
    child = np.zeros((P, s + len(pos), k), dtype=dtype)
    assert _native.gather_boundary(child, s, parent, pos, carried)
    np.testing.assert_array_equal(child[:, s:], np.where(carried[None, :, None], parent[:, pos], 0))
    assert not _native.gather_nodes(front, b, nodes.astype(np.int32))  # the caller's NumPy path runs
    assert not _native.gather_boundary(child[:, ::2], s, parent, pos, None)


def test_solve_reuses_its_workspace_safely():
    """Solves reuse the last solve's recorded program and its frontal right-hand sides: same
    answers, any number of columns, and threads sharing one factor still get their own
    answers."""
    from concurrent.futures import ThreadPoolExecutor

    A = stencil_matrix(97, 83, np.random.default_rng(3), "spd", np.float64)
    lu = ssi_sparse.factorize(A, grid=(97, 83))
    rng = np.random.default_rng(4)
    bs = [rng.standard_normal(A.shape[0]) for _ in range(6)]
    first = [lu.solve(b) for b in bs]
    assert lu._numeric.programs  # one column is small next to the factor: kept
    assert all(np.array_equal(lu.solve(b), x) for b, x in zip(bs, first))
    B = np.stack(bs, axis=1)
    np.testing.assert_allclose(lu.solve(B), np.stack(first, axis=1), rtol=1e-12, atol=1e-12)
    with ThreadPoolExecutor(3) as pool:
        again = list(pool.map(lu.solve, bs * 3))
    for x, y in zip(first * 3, again):
        np.testing.assert_array_equal(x, y)


@needs_native
@pytest.mark.parametrize("kind, dtype, masked, k", [("spd", np.float64, False, 1), ("complex", np.complex128, False, 3),
                                                     ("spd", np.float32, True, 2), ("nonsym", np.float64, True, 1)])
def test_solves_split_over_threads_answer_as_whole(kind, dtype, masked, k, monkeypatch):
    """The solve's moves, sweeps and norms cut into box (row) ranges on the engine's
    threads give bit for bit the answers of whole calls (every part does the same
    arithmetic on its own boxes)."""
    from ssi_sparse._engine import threads
    from ssi_sparse.problems import ring_mask

    rng = np.random.default_rng(7)
    H, W = 41, 37
    A = stencil_matrix(H, W, rng, kind, dtype)
    hints = {}
    if masked:
        mask = ring_mask(H, W, fill=0.5)
        keep = np.flatnonzero(mask.ravel())
        A = A.tocsr()[keep][:, keep]
        hints = dict(mask=mask)
    F = ssi_sparse.factorize(A, **hints)
    b = rng.standard_normal((A.shape[0], k)).astype(dtype)
    whole = {trans: F.solve(b, trans) for trans in ("N", "T")}
    monkeypatch.setattr(_tuning, "SWEEP_PARALLEL_MIN_ENTRIES", 0)
    monkeypatch.setattr(threads, "num_threads", lambda: 3)
    F._numeric.programs.clear()  # recorded again: every level cut over three threads
    for trans, x in whole.items():
        np.testing.assert_array_equal(F.solve(b, trans), x)
    assert any(len(tables) == 3 for kept in F._numeric.programs.values() for p in kept for tables in p.stages)
    monkeypatch.setattr(walks, "program_for", lambda *args: None)  # the step by step walk, also split
    for trans, x in whole.items():
        np.testing.assert_array_equal(F.solve(b, trans), x)
    assert rel_residual(A, whole["N"], b) < _tol(dtype)
