"""The native one-pass detection + stencil assembly against the general NumPy path.

``grid_stencil`` / ``detect_grid`` read a full or masked grid with one unknown per pixel
and a 3x3 stencil in the native pass alone; for the other layouts (several unknowns per
pixel in either numbering, 5x5 stencils on 2x2 cells, masked grids with components) the
general path finds the candidates and the native pass checks each and assembles its stencil.
Either way the answer (grid, order, stencil name, every stencil value) must be the general
NumPy path's, and matrices the pass cannot read take that path.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import stencil_matrix
from ssi_sparse._engine import native
from ssi_sparse._errors import NotGridStructuredError
from ssi_sparse._structure.grid import _detect, _Hints, detect_grid, grid_stencil

pytestmark = pytest.mark.skipif(not native.available(), reason="native kernel not built")


@pytest.fixture(scope="module", autouse=True, params=["whole", "split"])
def pass_parts(request):
    """Every test twice: each pass in one call, and cut over the engine's threads however
    small the matrix (parts that disagree, fail or flag a wide stencil must combine)."""
    from unittest import mock

    from ssi_sparse import _tuning
    from ssi_sparse._engine import threads

    if request.param == "whole":
        yield request.param
        return
    with mock.patch.object(_tuning, "PASS_PARALLEL_MIN_ENTRIES", 0), mock.patch.object(threads, "num_threads", lambda: 3):
        yield request.param

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]


def _general(A, **hints):
    """The NumPy path's answer (the native passes switched off), or None where it refuses."""
    from unittest import mock

    with mock.patch.object(native, "reads", lambda A: False), mock.patch.object(native, "grid_reach", lambda A: None):
        try:
            return _detect(A, _Hints(**hints))
        except NotGridStructuredError:
            return None


def _fast(A, **hints):
    try:
        return grid_stencil(A, **hints)
    except NotGridStructuredError:
        return None


def _assert_same(A, **hints):
    ours, theirs = _fast(A, **hints), _general(A, **hints)
    assert (ours is None) == (theirs is None)
    if ours is not None:
        assert ours[0] == theirs[0] and str(ours[0]) == str(theirs[0])
        assert ours[1].dtype == theirs[1].dtype
        np.testing.assert_array_equal(ours[1], theirs[1])
    assert detect_grid(A, **hints) == (None if theirs is None else theirs[0])


# the matrix's value type, numbering, format, index type and stencil
LAYOUTS = dict(dtype=st.sampled_from(DTYPES), order=st.sampled_from(["C", "F"]), fmt=st.sampled_from(["csr", "csc"]),
               index=st.sampled_from([np.int32, np.int64]), nine=st.booleans(), seed=st.integers(0, 2**31 - 1))


@settings(max_examples=80, deadline=None)
@given(H=st.integers(1, 14), W=st.integers(1, 14), hint=st.booleans(), **LAYOUTS)
def test_random_grids_agree_with_the_general_path(H, W, dtype, order, fmt, index, nine, hint, seed):
    rng = np.random.default_rng(seed)
    kind = "complex" if np.dtype(dtype).kind == "c" else "nonsym"
    A = stencil_matrix(H, W, rng, kind, dtype, order=order, nine_point=nine).asformat(fmt)
    A.indices = A.indices.astype(index)
    A.indptr = A.indptr.astype(index)
    hints = {"grid": (H, W), "order": order} if hint else {"order": order} if order == "F" else {}
    _assert_same(A, **hints)


@settings(max_examples=60, deadline=None)
@given(
    H=st.integers(2, 12),
    W=st.integers(2, 12),
    fmt=st.sampled_from(["csr", "csc"]),
    change=st.sampled_from(["far link", "explicit zero far", "duplicates", "cancelling duplicate", "zero row"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_edited_patterns_agree_with_the_general_path(H, W, fmt, change, seed):
    """Off-stencil links, explicit zeros, duplicates (summed, or cancelling to a stored
    zero), empty rows: found or refused exactly as the general path does."""
    rng = np.random.default_rng(seed)
    A = stencil_matrix(H, W, rng, "spd", np.float64).tocoo()
    n = H * W
    rows, cols, vals = list(A.row), list(A.col), list(A.data)
    i, j = int(rng.integers(n)), int(rng.integers(n))
    if change == "far link":
        rows, cols, vals = rows + [i], cols + [j], vals + [0.5]
    elif change == "explicit zero far":
        rows, cols, vals = rows + [i], cols + [j], vals + [0.0]
    elif change == "duplicates":
        e = int(rng.integers(len(rows)))
        rows, cols, vals = rows + [rows[e]], cols + [cols[e]], vals + [0.25]
    elif change == "cancelling duplicate":
        rows, cols, vals = rows + [i, i], cols + [j, j], vals + [0.5, -0.5]
    else:
        keep = [e for e in range(len(rows)) if rows[e] != i]
        rows, cols, vals = [rows[e] for e in keep], [cols[e] for e in keep], [vals[e] for e in keep]
    # built without summing, so duplicates stay stored
    B = sp.csr_array((vals, (rows, cols)), shape=(n, n)) if change not in ("duplicates", "cancelling duplicate") else (
        sp.coo_array((vals, (rows, cols)), shape=(n, n))
    )
    B = B.asformat(fmt) if B.format != "coo" else _unsummed(B, fmt)
    _assert_same(B)
    _assert_same(B, grid=(H, W))


def _unsummed(coo, fmt):
    """CSR/CSC with coo's duplicates kept (SciPy's conversion would sum them)."""
    major, minor = (coo.row, coo.col) if fmt == "csr" else (coo.col, coo.row)
    order = np.argsort(major, kind="stable")
    n = coo.shape[0]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(major, minlength=n))])
    cls = sp.csr_array if fmt == "csr" else sp.csc_array
    return cls((coo.data[order], minor[order], indptr), shape=coo.shape)


def test_the_native_pass_is_taken_for_plain_grids(monkeypatch):
    """A plain grid never reaches the general path (the speed this module is for)."""
    import ssi_sparse._structure.grid as grid_mod

    A = stencil_matrix(20, 30, np.random.default_rng(0), "spd", np.float64)

    def refuse(*args, **kwargs):
        raise AssertionError("the general path ran")

    monkeypatch.setattr(grid_mod, "_detect", refuse)
    spec, V = grid_stencil(A)
    assert spec.shape == (20, 30) and V.shape == (600, 9)


def test_the_native_pass_is_taken_for_given_masks(monkeypatch):
    """A masked grid whose mask the caller gives is read and checked in the one pass (no
    coordinates of every entry)."""
    import ssi_sparse._structure.grid as grid_mod

    mask = np.ones((20, 30), dtype=bool)
    mask[5:9, 4:20] = False
    keep = np.flatnonzero(mask)
    A = sp.csr_array(stencil_matrix(20, 30, np.random.default_rng(0), "spd", np.float64))[keep][:, keep]

    def refuse(*args, **kwargs):
        raise AssertionError("the general path ran")

    monkeypatch.setattr(grid_mod, "_coo_parts", refuse)
    spec, V = grid_stencil(A, mask=mask)
    assert spec.masked and spec.shape == (20, 30) and V.shape == (600, 9)
    # several unknowns per pixel, the layout given whole: the same single pass
    B = _block_matrix(20, 30, 2, "pixel", np.random.default_rng(1), np.float64, "C", True)
    unknowns = (keep[:, None] * 2 + np.arange(2)).reshape(-1)
    B = sp.csr_array(B)[unknowns][:, unknowns]
    spec, V = grid_stencil(B, mask=mask, components=2, numbering="pixel")
    assert spec.masked and spec.components == 2 and V.shape == (600 * 4, 9)


@settings(max_examples=80, deadline=None)
@given(H=st.integers(1, 12), W=st.integers(1, 12), hint=st.sampled_from([None, "mask", "pixels"]),
       fill=st.floats(0.3, 1.0), **LAYOUTS)
def test_random_masked_grids_agree_with_the_general_path(H, W, dtype, order, fmt, index, nine, hint, fill, seed):
    """Masked grids, found from the pattern or given (mask, or grid with pixels)."""
    rng = np.random.default_rng(seed)
    kind = "complex" if np.dtype(dtype).kind == "c" else "nonsym"
    mask = rng.random((H, W)) < fill
    mask.flat[int(rng.integers(H * W))] = True
    A = stencil_matrix(H, W, rng, kind, dtype, order=order, nine_point=nine)
    pixels = np.flatnonzero(mask.ravel(order=order))
    A = sp.csr_array(A)[pixels][:, pixels].asformat(fmt)
    A.indices = A.indices.astype(index)
    A.indptr = A.indptr.astype(index)
    hints = {"mask": mask, "order": order} if hint == "mask" else (
        {"grid": (H, W), "pixels": pixels, "order": order} if hint == "pixels" else {})
    _assert_same(A, **hints)


@pytest.mark.parametrize("change", ["same pixel twice", "pixel out of range", "far coupling", "zero far coupling"])
def test_masked_embeddings_are_checked(change):
    """A given embedding that does not hold is refused (or, for a stored zero, accepted)
    exactly as the general path does it."""
    rng = np.random.default_rng(3)
    mask = np.ones((9, 8), dtype=bool)
    mask[2:5, 3:6] = False
    pixels = np.flatnonzero(mask)
    A = sp.csr_array(stencil_matrix(9, 8, rng, "spd", np.float64))[pixels][:, pixels].tocoo()
    if change == "same pixel twice":
        pixels = pixels.copy()
        pixels[7] = pixels[8]
    elif change == "pixel out of range":
        pixels = pixels.copy()
        pixels[-1] = 72
    else:
        row, col = np.append(A.row, 0), np.append(A.col, len(pixels) - 1)
        A = sp.coo_array((np.append(A.data, 0.5 if change == "far coupling" else 0.0), (row, col)), shape=A.shape)
    A = sp.csr_array(A)
    if change == "zero far coupling":
        assert A.nnz > sp.csr_array(A.toarray()).nnz  # the zero is stored
    _assert_same(A, grid=(9, 8), pixels=pixels)


def test_other_layouts_agree_with_the_general_path():
    """Several unknowns per pixel, 5x5 stencils, value types the pass does not read."""
    rng = np.random.default_rng(1)
    A = stencil_matrix(12, 10, rng, "spd", np.float64)
    _assert_same(sp.kron(A, np.array([[2.0, 1.0], [1.0, 2.0]]), format="csr"))
    _assert_same((A @ A).tocsr())
    _assert_same(A.astype(np.int64))


def _block_matrix(H, W, k, numbering, rng, dtype, order, nine):
    """A random operator with ``k`` unknowns per pixel coupled over the 3x3 neighbourhood,
    numbered pixel- or component-major."""
    kind = "complex" if np.dtype(dtype).kind == "c" else "nonsym"
    A = stencil_matrix(H, W, rng, kind, dtype, order=order, nine_point=nine).tocoo()
    blocks = rng.standard_normal((A.nnz, k, k)) + (1 if k == 1 else 0)
    a, b = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    rows = (A.row[:, None, None] * k + a).reshape(-1)
    cols = (A.col[:, None, None] * k + b).reshape(-1)
    vals = (A.data[:, None, None] * blocks).reshape(-1).astype(dtype)
    if numbering == "component":
        m = H * W
        rows, cols = (rows % k) * m + rows // k, (cols % k) * m + cols // k
    return sp.csr_array((vals, (rows, cols)), shape=(H * W * k, H * W * k))


@settings(max_examples=60, deadline=None)
@given(H=st.integers(1, 9), W=st.integers(1, 9), k=st.integers(2, 4),
       numbering=st.sampled_from(["pixel", "component"]), hint=st.sampled_from([None, "components", "grid"]),
       **LAYOUTS)  # fmt: skip
def test_block_stencils_agree_with_the_general_path(H, W, k, numbering, hint, dtype, order, fmt, index, nine, seed):
    """Several unknowns per pixel, found or given, either numbering: the native pass checks
    each candidate and assembles the stencil exactly as the NumPy path does."""
    rng = np.random.default_rng(seed)
    A = _block_matrix(H, W, k, numbering, rng, dtype, order, nine).asformat(fmt)
    A.indices = A.indices.astype(index)
    A.indptr = A.indptr.astype(index)
    hints = {"order": order} if order == "F" else {}
    if hint == "components":
        hints.update(components=k, numbering=numbering)
    elif hint == "grid":
        hints.update(grid=(H, W), components=k, numbering=numbering, order=order)
    _assert_same(A, **hints)


@settings(max_examples=60, deadline=None)
@given(H=st.integers(1, 13), W=st.integers(1, 13), square=st.booleans(), hint=st.booleans(), **LAYOUTS)
def test_five_by_five_stencils_agree_with_the_general_path(H, W, square, hint, dtype, order, fmt, index, nine, seed):
    """Radius 2 on 2x2 cells, odd sides included: 13-point (the square of a 5-point
    operator) or 25-point (of a 9-point one), and a random 5x5 pattern."""
    rng = np.random.default_rng(seed)
    kind = "complex" if np.dtype(dtype).kind == "c" else "nonsym"
    A = stencil_matrix(H, W, rng, kind, dtype, order=order, nine_point=nine)
    if square:
        A = sp.csr_array(A @ A)
    else:  # couplings up to 2 pixels away in each direction, some of them only
        B = sp.csr_array(A @ A).tocoo()
        keep = rng.random(B.nnz) < 0.7
        keep |= B.row == B.col
        A = sp.csr_array((B.data[keep], (B.row[keep], B.col[keep])), shape=B.shape)
    A = A.asformat(fmt)
    A.indices = A.indices.astype(index)
    A.indptr = A.indptr.astype(index)
    hints = {"order": order, "radius": 2} | ({"grid": (H, W)} if hint else {})
    _assert_same(A, **hints)
    if not hint and order == "C":
        _assert_same(A)


@settings(max_examples=40, deadline=None)
@given(H=st.integers(1, 9), W=st.integers(1, 9), k=st.integers(2, 3), numbering=st.sampled_from(["pixel", "component"]),
       fill=st.floats(0.3, 1.0), **LAYOUTS)  # fmt: skip
def test_masked_block_stencils_agree_with_the_general_path(H, W, k, numbering, fill, dtype, order, fmt, index, nine,
                                                           seed):  # fmt: skip
    """A masked grid with several unknowns per pixel, its mask and components given."""
    rng = np.random.default_rng(seed)
    mask = rng.random((H, W)) < fill
    mask.flat[int(rng.integers(H * W))] = True
    A = _block_matrix(H, W, k, "pixel", rng, dtype, order, nine)
    pixels = np.flatnonzero(mask.ravel(order=order))
    unknowns = (pixels[:, None] * k + np.arange(k)).reshape(-1)
    if numbering == "component":
        unknowns = unknowns.reshape(-1, k).T.reshape(-1)
    A = sp.csr_array(A)[unknowns][:, unknowns].asformat(fmt)
    A.indices = A.indices.astype(index)
    A.indptr = A.indptr.astype(index)
    _assert_same(A, mask=mask, order=order, components=k, numbering=numbering)


@settings(max_examples=30, deadline=None)
@given(H=st.integers(1, 9), W=st.integers(1, 9), k=st.integers(2, 3), numbering=st.sampled_from(["pixel", "component"]),
       hint=st.booleans(), **LAYOUTS)  # fmt: skip
def test_five_by_five_block_stencils_agree_with_the_general_path(H, W, k, numbering, hint, dtype, order, fmt, index,
                                                                 nine, seed):  # fmt: skip
    """Several unknowns per pixel on a 5x5 stencil (given): the 2x2 cells carry 4 k nodes."""
    rng = np.random.default_rng(seed)
    kind = "complex" if np.dtype(dtype).kind == "c" else "nonsym"
    A = stencil_matrix(H, W, rng, kind, dtype, order=order, nine_point=nine)
    A = sp.kron(sp.csr_array(A @ A), rng.standard_normal((k, k)) + k * np.eye(k), format="csr").astype(dtype)
    if numbering == "component":
        n = H * W
        perm = (np.arange(n * k).reshape(n, k).T).reshape(-1)  # unknown t = pixel-major perm[t]
        A = sp.csr_array(A)[perm][:, perm]
    A = sp.csr_array(A).asformat(fmt)
    A.indices = A.indices.astype(index)
    A.indptr = A.indptr.astype(index)
    hints = {"order": order, "radius": 2, "components": k, "numbering": numbering} | ({"grid": (H, W)} if hint else {})
    assert _fast(A, **hints) is not None  # (a row holds up to 25 k couplings)
    _assert_same(A, **hints)


def test_layouts_that_do_not_fit_are_refused_in_the_pass():
    """A coupling three pixels away on the 2x2 cells' grid (inside their 3x3 neighbourhood,
    outside a 5x5 stencil), and a component coupled to a pixel two away: refused as the
    general path refuses them."""
    rng = np.random.default_rng(5)
    A = sp.csr_array(stencil_matrix(8, 8, rng, "spd", np.float64) @ stencil_matrix(8, 8, rng, "spd", np.float64))
    far = A.tolil()
    far[0, 3 * 8] = far[3 * 8, 0] = 0.5  # three rows down: same column of cells, next cell
    _assert_same(sp.csr_array(far), grid=(8, 8), radius=2)
    B = _block_matrix(6, 7, 2, "pixel", rng, np.float64, "C", True).tolil()
    B[0, 2 * 2] = 0.25  # pixel 0 to pixel 2
    _assert_same(sp.csr_array(B), grid=(6, 7), components=2)
    _assert_same(sp.csr_array(B), components=2)


def test_out_of_range_index_is_an_error():
    A = stencil_matrix(4, 4, np.random.default_rng(2), "spd", np.float64).tocsc()
    A.indices[3] = 99  # a corrupt matrix (SciPy would not check it either)
    with pytest.raises(ValueError, match="out of range"):
        grid_stencil(A, grid=(4, 4))
    with pytest.raises(ValueError, match="index"):
        grid_stencil(A)


def _numpy_only():
    """The NumPy versions of the whole-grid stencil passes (the native ones switched off)."""
    from unittest import mock

    off = lambda *args, **kwargs: None  # noqa: E731
    return mock.patch.multiple(native, node_reduce=off, scale_stencil=off, stencil_is_hermitian=off, stencil_matvec=off)


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    k=st.integers(1, 3),
    dtype=st.sampled_from(DTYPES),
    hermitian=st.booleans(),
    perturb=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
    m=st.integers(1, 3),  # one column and one unknown per pixel: the matvec's own loop
)
def test_whole_grid_passes_agree_with_numpy(h, w, k, dtype, hermitian, perturb, seed, m):
    """Row maxima and sums, equilibration and the exact Hermitian test: the native passes
    give the NumPy versions' answers (maxima and scaled values bit for bit)."""
    from ssi_sparse._structure.stencil import equilibrate, is_hermitian, stencil_matvec, stencil_row_sums, stencil_to_csr

    rng = np.random.default_rng(seed)
    n = h * w * k
    M = sp.random(n, n, density=0.6, random_state=rng, dtype=np.float64)
    if np.dtype(dtype).kind == "c":
        M = M + 1j * sp.random(n, n, density=0.6, random_state=rng)
    M = M + M.conj().T if hermitian else M
    M = (M + sp.eye(n)).astype(dtype).tocsr()
    # keep only couplings inside each node's 3x3 pixel neighbourhood: a stencil operator
    V = _stencil_of(M, h, w, k)
    if perturb and V.any():
        flat = V.reshape(-1)
        i = int(rng.choice(np.flatnonzero(flat)))
        flat[i] = flat[i] * (1 + 2 * np.finfo(dtype).eps)
    dims = (h, w, k)
    ours = stencil_row_sums(np, V, dims), equilibrate(np, V, dims), is_hermitian(np, V, dims)
    with _numpy_only():
        theirs = stencil_row_sums(np, V, dims), equilibrate(np, V, dims), is_hermitian(np, V, dims)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=8 * np.finfo(dtype).eps)
    (Vs, s), (Vs_ref, s_ref) = ours[1], theirs[1]
    assert (s is None) == (s_ref is None)
    if s is not None:
        assert Vs.dtype == Vs_ref.dtype and s.dtype == s_ref.dtype
        if np.dtype(dtype).kind == "f":  # |x| is exact: bit for bit
            np.testing.assert_array_equal(s, s_ref)
            np.testing.assert_array_equal(Vs, Vs_ref)
        else:  # NumPy's vectorized complex |z| is not correctly rounded (a few ulp apart)
            eps = np.finfo(dtype).eps
            np.testing.assert_allclose(s, s_ref, rtol=4 * eps)
            np.testing.assert_allclose(Vs, Vs_ref, rtol=16 * eps, atol=16 * eps * np.abs(Vs_ref).max())
        assert is_hermitian(np, Vs, dims) or not ours[2]  # scaling keeps an exactly Hermitian matrix so
    assert ours[2] == theirs[2]
    x = rng.standard_normal((n, m)).astype(dtype)
    with _numpy_only():
        reference = stencil_matvec(np, V, dims, x)
    product = stencil_matvec(np, V, dims, x)
    assert product.dtype == reference.dtype
    tol = 16 * np.finfo(dtype).eps * (np.abs(V).sum() + 1) * np.abs(x).max()
    np.testing.assert_allclose(product, reference, rtol=0, atol=tol)
    np.testing.assert_allclose(product, stencil_to_csr(V, dims) @ x, rtol=0, atol=tol)


def _stencil_of(M, h, w, k):
    """Stencil array of the part of ``M`` (nodes ``pixel * k + component``) that couples
    3x3 neighbours."""
    C = M.tocoo()
    pi, a = np.divmod(C.row, k)
    pj, b = np.divmod(C.col, k)
    dr = pj // w - pi // w
    dc = pj % w - pi % w
    keep = (np.abs(dr) <= 1) & (np.abs(dc) <= 1)
    V = np.zeros((h * w * k * k, 9), dtype=M.dtype)
    rows = (C.row[keep] * k + b[keep])
    np.add.at(V, (rows, (dr[keep] + 1) * 3 + dc[keep] + 1), C.data[keep])
    return V
