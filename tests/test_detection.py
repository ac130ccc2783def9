"""Grid detection: which sparse matrices are 3x3-stencil operators on which H x W grid."""

import numpy as np
import pytest
import scipy.sparse as sp

import ssi_sparse
from ssi_sparse import NotGridStructuredError, detect_grid, factorize
from helpers import (
    grid_index,
    laplacian_5pt,
    random_rhs,
    reference_solve,
    rel_residual,
    stencil_matrix,
)


def _with_entry(A, i, j, value=0.5):
    """A copy of A (CSR) with A[i, j] set to ``value``."""
    M = sp.lil_array(A)
    M[i, j] = value
    return sp.csr_array(M)


# --- shapes and stencils -------------------------------------------------------------------


@pytest.mark.parametrize(
    "H,W,expected",
    [((7), 5, (7, 5)), (1, 9, (1, 9)), (9, 1, (1, 9)), (30, 31, (30, 31)), (31, 30, (31, 30)),
     (2, 13, (2, 13)), (13, 2, (13, 2)), (5, 7, (5, 7))],
)
@pytest.mark.parametrize("nine_point", [False, True])
def test_detects_shape_and_stencil(H, W, expected, nine_point):
    A = stencil_matrix(H, W, np.random.default_rng(H * W), "nonsym", "d", nine_point=nine_point)
    spec = detect_grid(A)
    assert spec is not None
    assert spec.shape == expected
    assert spec.order == "C"
    diagonal_neighbours = nine_point and H >= 2 and W >= 2
    assert spec.stencil == ("9-point" if diagonal_neighbours else "5-point")
    # factorize reports the same grid and solves on it
    lu = factorize(A)
    assert lu.grid == spec
    b = random_rhs(np.random.default_rng(1), H * W, None, "d")
    assert rel_residual(A, lu.solve(b), b) <= 1e-12


@pytest.mark.parametrize("H,W", [(7, 5), (30, 31), (4, 9), (9, 1), (1, 9)])
@pytest.mark.parametrize("nine_point", [False, True])
def test_given_grid_in_F_order(H, W, nine_point):
    """A matrix numbered column-major is accepted with grid=(H, W), order='F'."""
    rng = np.random.default_rng(5)
    A = stencil_matrix(H, W, rng, "nonsym", "d", order="F", nine_point=nine_point)
    spec = detect_grid(A, grid=(H, W), order="F")
    assert spec is not None
    assert spec.shape == (H, W) and spec.order == "F"
    # inference with order='F' reports the column-major shape too (strips are 1 x n in C,
    # i.e. n x 1 in F)
    inferred = detect_grid(A, order="F")
    assert inferred is not None and inferred.order == "F"
    if H >= 2 and W >= 2:
        assert inferred.shape == (H, W)
        # a column-major H x W matrix is the row-major W x H one
        assert detect_grid(A).shape == (W, H)
    lu = factorize(A, grid=(H, W), order="F")
    b = random_rhs(rng, H * W, 2, "d")
    x = lu.solve(b)
    assert rel_residual(A, x, b) <= 1e-12
    np.testing.assert_allclose(x, reference_solve(A, b), rtol=1e-9, atol=1e-12)


def test_wrong_order_or_transposed_grid_rejected():
    A = stencil_matrix(7, 5, np.random.default_rng(0), "nonsym", "d", nine_point=False)
    assert detect_grid(A, grid=(7, 5)) is not None
    assert detect_grid(A, grid=(7, 5), order="F") is None
    assert detect_grid(A, grid=(5, 7)) is None
    with pytest.raises(NotGridStructuredError):
        factorize(A, grid=(5, 7))
    with pytest.raises(NotGridStructuredError):
        factorize(A, grid=(7, 5), order="F")


def test_invalid_order_argument():
    A = laplacian_5pt(3, 4)
    with pytest.raises(ValueError):
        detect_grid(A, order="K")
    with pytest.raises(ValueError):
        factorize(A, order="c")


# --- matrices that are not grid operators -------------------------------------------------


@pytest.mark.parametrize("nine_point", [False, True])
@pytest.mark.parametrize("H,W", [(6, 7), (8, 5), (20, 20)])
@pytest.mark.parametrize("where", ["row+2", "row-2", "col+2", "col-2", "knight"])
def test_one_entry_two_pixels_away_makes_a_5x5_stencil(H, W, nine_point, where):
    """Not a 3x3 operator any more, but a 5x5 one: found as such and solved."""
    rng = np.random.default_rng(0)
    A = stencil_matrix(H, W, rng, "nonsym", "d", nine_point=nine_point)
    assert detect_grid(A, grid=(H, W)) is not None
    r, c = H // 2, W // 2  # an interior pixel
    dr, dc = {"row+2": (0, 2), "row-2": (0, -2), "col+2": (2, 0), "col-2": (-2, 0),
              "knight": (2, 1)}[where]
    i, j = grid_index(r, c, H, W), grid_index(r + dr, c + dc, H, W)
    B = _with_entry(A, i, j)
    # (components=1: a small grid can also be read as a few pixels of 4 unknowns each)
    assert detect_grid(B, radius=1, components=1) is None
    assert detect_grid(B, grid=(H, W), radius=1) is None
    with pytest.raises(NotGridStructuredError):
        factorize(B, radius=1, components=1)
    with pytest.raises(NotGridStructuredError):
        factorize(B, grid=(H, W), radius=1)
    spec = detect_grid(B, components=1)
    assert spec is not None and spec.radius == 2 and spec.shape == (H, W)
    assert spec.stencil == ("25-point" if where == "knight" else "13-point")
    b = random_rhs(rng, H * W, None, "d")
    for lu in (factorize(B, components=1), factorize(B)):  # (unhinted: maybe pixel pairs)
        np.testing.assert_allclose(lu.solve(b), reference_solve(B, b), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("H,W", [(6, 7), (8, 5), (20, 20)])
@pytest.mark.parametrize("dr,dc", [(0, 3), (3, 0), (0, -3), (3, 1), (1, 3), (-3, -3)])
def test_one_entry_three_pixels_away_is_rejected(H, W, dr, dc):
    rng = np.random.default_rng(0)
    A = stencil_matrix(H, W, rng, "nonsym", "d", nine_point=True)
    r, c = max(0, -dr), max(0, -dc)  # both pixels on the grid
    i, j = grid_index(r, c, H, W), grid_index(r + dr, c + dc, H, W)
    B = _with_entry(A, i, j)
    assert detect_grid(B, components=1) is None
    assert detect_grid(B, grid=(H, W)) is None
    with pytest.raises(NotGridStructuredError):
        factorize(B, components=1)
    with pytest.raises(NotGridStructuredError):
        factorize(B, grid=(H, W))
    # NotGridStructuredError is a ValueError
    with pytest.raises(ValueError):
        factorize(B, components=1)
    _found_or_refused_never_wrong(B, rng)


def _found_or_refused_never_wrong(B, rng):
    """Without hints a small matrix may fit a layout of several unknowns per pixel (pixels
    pairs hold one far coupling): then it must be a true layout and solve right."""
    spec = detect_grid(B)
    if spec is not None:
        assert spec.components > 1
        b = random_rhs(rng, B.shape[0], None, "d")
        np.testing.assert_allclose(factorize(B).solve(b), reference_solve(B, b), rtol=1e-9, atol=1e-12)


def test_coupling_three_grid_rows_away_is_rejected():
    H, W = 9, 6
    A = laplacian_5pt(H, W)
    i = 3 * W + 2
    B = _with_entry(A, i, i + 3 * W)
    assert detect_grid(B, components=1) is None
    with pytest.raises(NotGridStructuredError):
        factorize(B, components=1)
    _found_or_refused_never_wrong(B, np.random.default_rng(0))


def test_random_permutation_is_not_detected():
    H = W = 20
    rng = np.random.default_rng(12)
    A = stencil_matrix(H, W, rng, "nonsym", "d", nine_point=True)
    assert detect_grid(A) is not None
    p = rng.permutation(H * W)
    P = sp.csr_array((np.ones(H * W), (np.arange(H * W), p)), shape=(H * W, H * W))
    B = sp.csr_array(P @ A @ P.T)
    assert abs(B).sum() == pytest.approx(abs(A).sum())  # same matrix, renumbered
    assert detect_grid(B) is None
    assert detect_grid(B, grid=(H, W)) is None
    with pytest.raises(NotGridStructuredError):
        factorize(B)


def test_row_wrap_coupling_rejected_for_true_width():
    """Offset +1 from the end of one grid row to the start of the next is not a neighbour."""
    H, W = 6, 7
    A = laplacian_5pt(H, W)
    i, j = grid_index(0, 6, H, W), grid_index(1, 0, H, W)
    assert j == i + 1
    B = _with_entry(A, i, j, -1.0)
    B = _with_entry(B, j, i, -1.0)
    assert detect_grid(A, grid=(H, W)) is not None
    assert detect_grid(B, grid=(H, W)) is None
    with pytest.raises(NotGridStructuredError):
        factorize(B, grid=(H, W))


def test_empty_matrix_has_no_grid():
    A = sp.csr_array((0, 0))
    assert detect_grid(A) is None
    with pytest.raises(NotGridStructuredError):
        factorize(A)


# --- 1 x n strips ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 50])
def test_tridiagonal_and_diagonal_are_strips(n):
    rng = np.random.default_rng(n)
    T = sp.diags_array(
        [rng.uniform(-1, 1, n - 1), 3 + rng.uniform(0, 1, n), rng.uniform(-1, 1, n - 1)],
        offsets=[-1, 0, 1], shape=(n, n), format="csr",
    )
    spec = detect_grid(T)
    assert spec is not None and spec.shape == (1, n) and spec.stencil == "5-point"
    D = sp.diags_array(1 + rng.uniform(0, 1, n), format="csr")
    assert detect_grid(D).shape == (1, n)
    for M in (T, D):
        lu = factorize(M)
        b = random_rhs(rng, n, 2, "d")
        x = lu.solve(b)
        assert rel_residual(M, x, b) <= 1e-12
        np.testing.assert_allclose(x, reference_solve(M, b), rtol=1e-10, atol=1e-14)


def test_grid_with_wrong_pixel_count_raises_value_error():
    A = laplacian_5pt(6, 7)
    for grid in [(6, 6), (7, 7), (42, 2), (0, 42), (-6, -7)]:
        with pytest.raises(ValueError):
            detect_grid(A, grid=grid)
        with pytest.raises(ValueError):
            factorize(A, grid=grid)
    # the right count in the other orientation is a grid question, not a count error
    assert detect_grid(A, grid=(42, 1)) is None
    assert detect_grid(A, grid=(6, 7)) is not None


# --- sparse formats, index dtypes, duplicates, explicit zeros ----------------------------


FORMATS = ["csr", "csc", "coo", "lil", "dok", "bsr", "dia"]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("container", ["matrix", "array"])
def test_all_sparse_formats(fmt, container):
    H, W = 8, 6
    rng = np.random.default_rng(3)
    A = stencil_matrix(H, W, rng, "nonsym", "d", nine_point=True)
    M = (sp.csr_matrix(A) if container == "matrix" else sp.csr_array(A)).asformat(fmt)
    assert M.format == fmt
    spec = detect_grid(M)
    assert spec is not None and spec.shape == (H, W) and spec.stencil == "9-point"
    b = random_rhs(rng, H * W, None, "d")
    x = factorize(M).solve(b)
    assert rel_residual(A, x, b) <= 1e-12
    np.testing.assert_allclose(x, reference_solve(A, b), rtol=1e-9, atol=0)


@pytest.mark.parametrize("blocksize", [(2, 2), (3, 3), (6, 6)])
def test_bsr_blocks_padding_zeros_are_ignored(blocksize):
    """BSR stores whole blocks: the zeros inside a block (some at non-neighbour positions)
    are explicit zeros and must not break detection."""
    H, W = 6, 6
    A = stencil_matrix(H, W, np.random.default_rng(4), "nonsym", "d", nine_point=False)
    M = sp.bsr_array(A, blocksize=blocksize)
    assert M.nnz > A.nnz  # padding zeros present
    spec = detect_grid(M)
    assert spec is not None and spec.shape == (H, W) and spec.stencil == "5-point"
    b = np.ones(H * W)
    assert rel_residual(A, factorize(M).solve(b), b) <= 1e-12


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_index_dtypes(index_dtype, fmt):
    H, W = 9, 7
    A = stencil_matrix(H, W, np.random.default_rng(6), "complex", "D").tocoo()
    n = H * W
    row, col = A.row.astype(index_dtype), A.col.astype(index_dtype)
    M = sp.coo_array((A.data, (row, col)), shape=(n, n))
    if fmt == "csr":
        M = sp.csr_array(M)
        M.indices, M.indptr = M.indices.astype(index_dtype), M.indptr.astype(index_dtype)
        assert M.indices.dtype == index_dtype
    elif fmt == "csc":
        M = sp.csc_array(M)
        M.indices, M.indptr = M.indices.astype(index_dtype), M.indptr.astype(index_dtype)
        assert M.indices.dtype == index_dtype
    else:
        assert M.coords[0].dtype == index_dtype
    spec = detect_grid(M)
    assert spec is not None and spec.shape == (H, W)
    b = random_rhs(np.random.default_rng(0), n, 2, "D")
    x = factorize(M).solve(b, trans="T")
    np.testing.assert_allclose(x, reference_solve(A, b, "T"), rtol=1e-9, atol=0)


def test_unsorted_indices():
    H, W = 10, 8
    rng = np.random.default_rng(8)
    A = sp.csr_array(stencil_matrix(H, W, rng, "nonsym", "d", nine_point=True))
    # reverse the column order inside every row
    indices, data = A.indices.copy(), A.data.copy()
    for r in range(A.shape[0]):
        s = slice(A.indptr[r], A.indptr[r + 1])
        indices[s], data[s] = indices[s][::-1], data[s][::-1]
    M = sp.csr_array((data, indices, A.indptr.copy()), shape=A.shape)
    M.has_sorted_indices = False
    assert not np.all(np.diff(M.indices[M.indptr[0]:M.indptr[1]]) > 0)
    assert detect_grid(M).shape == (H, W)
    b = random_rhs(rng, H * W, 3, "d")
    np.testing.assert_allclose(factorize(M).solve(b), reference_solve(A, b), rtol=1e-9, atol=0)


@pytest.mark.parametrize("fmt", ["coo", "csr"])
def test_duplicate_entries_are_summed(fmt):
    """Every entry split into random parts (duplicates): the solve is that of the summed matrix."""
    H, W = 11, 9
    n = H * W
    rng = np.random.default_rng(9)
    A = stencil_matrix(H, W, rng, "nonsym", "d", nine_point=True).tocoo()
    parts = 3
    w = rng.uniform(-1, 2, (parts, A.nnz))
    w[-1] = 1 - w[:-1].sum(axis=0)  # the parts of every entry sum to it
    rows, cols = np.tile(A.row, parts), np.tile(A.col, parts)
    data = (w * A.data).ravel()
    shuffle = rng.permutation(rows.size)
    rows, cols, data = rows[shuffle], cols[shuffle], data[shuffle]
    if fmt == "coo":
        M = sp.coo_array((data, (rows, cols)), shape=(n, n))
    else:  # a non-canonical CSR: duplicates and unsorted columns within rows
        by_row = np.argsort(rows, kind="stable")
        indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=n))]
        M = sp.csr_array((data[by_row], cols[by_row], indptr), shape=(n, n))
        assert not M.has_canonical_format
    assert M.nnz == parts * A.nnz
    summed = sp.csr_array(M.copy())
    summed.sum_duplicates()
    assert summed.nnz == A.nnz and abs(summed - A).max() < 1e-12
    assert detect_grid(M).shape == (H, W)
    b = random_rhs(rng, n, None, "d")
    x = factorize(M).solve(b)
    np.testing.assert_allclose(x, reference_solve(summed, b), rtol=1e-9, atol=0)
    assert rel_residual(summed, x, b) <= 1e-12
    # treating the parts as separate entries (e.g. keeping only the last) would be wrong
    assert np.linalg.norm(factorize(summed).solve(b) - x) <= 1e-12 * np.linalg.norm(x)


def test_explicit_zeros_are_ignored():
    H, W = 8, 9
    rng = np.random.default_rng(10)
    A = stencil_matrix(H, W, rng, "nonsym", "d", nine_point=False).tocoo()
    # explicit zeros far away from the diagonal (not neighbours on any grid)
    far_r = rng.integers(0, H * W, 20)
    far_c = (far_r + rng.integers(3 * W, 5 * W, 20)) % (H * W)
    M = sp.csr_array(sp.coo_array(
        (np.r_[A.data, np.zeros(20)], (np.r_[A.row, far_r], np.r_[A.col, far_c])), shape=A.shape
    ))
    assert M.nnz == A.nnz + 20  # zeros are stored
    spec = detect_grid(M)
    assert spec is not None and spec.shape == (H, W) and spec.stencil == "5-point"
    # an explicit zero at a diagonal-neighbour position does not make it a 9-point stencil
    i = grid_index(2, 2, H, W)
    Z = sp.csr_array(sp.coo_array(
        (np.r_[A.data, 0.0], (np.r_[A.row, i], np.r_[A.col, i + W + 1])), shape=A.shape))
    assert detect_grid(Z).stencil == "5-point"
    b = random_rhs(rng, H * W, None, "d")
    np.testing.assert_allclose(factorize(M).solve(b), reference_solve(A, b), rtol=1e-9, atol=0)
    # ... while the same position with a nonzero value is rejected
    Mbad = sp.lil_array(M)
    Mbad[far_r[0], far_c[0]] = 1e-300
    assert detect_grid(sp.csr_array(Mbad)) is None


def test_explicit_zero_only_matrix_rows():
    """Explicitly stored zeros do not count as couplings: a row holding only stored zeros is a
    zero row, so the matrix is exactly singular."""
    M = sp.csr_array(laplacian_5pt(5, 5))
    M.data[M.indptr[7]:M.indptr[8]] = 0.0  # keep the structure, zero the values
    assert M.indptr[8] > M.indptr[7]
    with pytest.raises(ssi_sparse.SingularMatrixError) as info:
        factorize(M)
    assert info.value.exact


def test_cancelling_duplicates_are_an_explicit_zero():
    A = laplacian_5pt(6, 7).tocoo()
    row = np.r_[A.row, 3, 3]
    col = np.r_[A.col, 30, 30]  # pixel (0, 3) and (4, 2): not neighbours
    M = sp.coo_array((np.r_[A.data, 1.0, -1.0], (row, col)), shape=A.shape)
    assert detect_grid(sp.csr_array(M)) is not None  # canonical CSR: an explicit zero
    assert detect_grid(M) is not None  # same matrix as COO with duplicates
