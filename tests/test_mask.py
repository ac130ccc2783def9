"""Masked grids: unknowns on a subset of the pixels, found from the pattern or given.

Random masks (holes, several components, one-pixel parts, odd sizes) on random grids, 'C' and
'F' numbering of the present pixels (as ``np.flatnonzero`` gives them), four dtypes, vector
and matrix right-hand sides, the three ``trans`` modes; every accepted embedding is checked
independently of the detector, and matrices that are not masked grids must be refused.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from hypothesis import example, given, settings
from hypothesis import strategies as st

import ssi_sparse
from ssi_sparse import NotGridStructuredError, SingularMatrixError
from helpers import assert_embedding_is_valid, op, random_rhs, reference_solve, rel_residual, stencil_matrix

DTYPES = [np.dtype(c) for c in (np.float32, np.float64, np.complex64, np.complex128)]
RESIDUAL_TOL = {4: 1e-4, 8: 1e-12}
AGREE_TOL = {4: 1e-3, 8: 1e-9}


def _precision(dtype):
    dtype = np.dtype(dtype)
    return dtype.itemsize // (2 if dtype.kind == "c" else 1)


def masked_matrix(mask, rng, kind, dtype, order="C", nine_point=False):
    """The stencil matrix of ``mask``'s bounding grid restricted to the pixels set in
    ``mask``, numbered by ``np.flatnonzero(mask.ravel(order))``."""
    H, W = mask.shape
    A = stencil_matrix(H, W, rng, kind, dtype, order=order, nine_point=nine_point)
    idx = np.flatnonzero(mask.ravel(order=order))
    return sp.csr_array(A[idx][:, idx]), idx


@st.composite
def masks(draw, max_side=24):
    """A random mask: random holes in random rectangles, so components, holes, thin parts
    and single pixels all occur; at least one pixel is set."""
    H = draw(st.integers(1, max_side))
    W = draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    mask = np.zeros((H, W), dtype=bool)
    for _ in range(draw(st.integers(1, 4))):
        r0, c0 = rng.integers(0, H), rng.integers(0, W)
        mask[r0 : r0 + rng.integers(1, H + 1), c0 : c0 + rng.integers(1, W + 1)] = True
    mask &= rng.uniform(size=(H, W)) >= draw(st.sampled_from([0.0, 0.05, 0.3]))
    if not mask.any():
        mask[rng.integers(0, H), rng.integers(0, W)] = True
    return mask


KIND_DTYPE = st.sampled_from(
    [("spd", d) for d in DTYPES] + [("nonsym", d) for d in DTYPES[:2]]
    + [("complex", d) for d in DTYPES[2:]] + [("laplacian", DTYPES[1])]
)


#: A random masked problem: mask, matrix kind and dtype, stencil, numbering, columns of b.
masked_problems = dict(
    mask=masks(),
    case=KIND_DTYPE,
    nine_point=st.booleans(),
    order=st.sampled_from(["C", "F"]),
    k=st.one_of(st.none(), st.integers(1, 3)),
)


@settings(max_examples=60, deadline=None)
@given(
    **masked_problems,
    trans=st.sampled_from(["N", "T", "H"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_found_or_refused_never_wrong(mask, case, nine_point, order, k, trans, seed):
    """Without hints a masked grid is either found (and then solved to SciPy's answer on an
    embedding that really holds the matrix) or refused; ``spsolve`` always agrees with SciPy."""
    kind, dtype = case
    rng = np.random.default_rng(seed)
    A, _ = masked_matrix(mask, rng, kind, dtype, order, nine_point)
    b = random_rhs(rng, A.shape[0], k, dtype)
    prec = _precision(dtype)
    try:
        lu = ssi_sparse.factorize(A)
    except NotGridStructuredError:
        lu = None
    if lu is not None:
        assert_embedding_is_valid(A, lu.grid)
        x = lu.solve(b, trans=trans)
        assert x.shape == b.shape and x.dtype == dtype
        assert rel_residual(op(A, trans), x, b) <= RESIDUAL_TOL[prec]
        ref = reference_solve(A, b, trans)
        assert np.linalg.norm(x - ref) <= AGREE_TOL[prec] * max(np.linalg.norm(ref), 1e-300)
    x = ssi_sparse.spsolve(A, b)
    assert x.shape == spla.spsolve(A, b).shape  # SciPy returns 1-D for a one-column b
    assert rel_residual(A, x.reshape(b.shape), b) <= RESIDUAL_TOL[prec]


@settings(max_examples=40, deadline=None)
@given(
    **masked_problems,
    numbering=st.sampled_from(["raster", "shuffled"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_given_embedding_any_numbering(mask, case, nine_point, order, k, numbering, seed):
    """``grid=`` with ``pixels=`` (any numbering) or ``mask=`` always reaches the engine."""
    kind, dtype = case
    rng = np.random.default_rng(seed)
    A, idx = masked_matrix(mask, rng, kind, dtype, order, nine_point)
    if numbering == "shuffled":
        perm = rng.permutation(A.shape[0])
        A, idx = sp.csr_array(A[perm][:, perm]), idx[perm]
        lu = ssi_sparse.factorize(A, grid=mask.shape, order=order, pixels=idx)
    else:
        lu = ssi_sparse.factorize(A, mask=mask, order=order)
    assert lu.grid.shape == mask.shape and lu.grid.order == order and lu.grid.masked
    assert lu.grid.n_unknowns == mask.sum() and lu.grid.n_pixels == mask.size
    assert_embedding_is_valid(A, lu.grid)
    b = random_rhs(rng, A.shape[0], k, dtype)
    x = lu.solve(b)
    prec = _precision(dtype)
    assert rel_residual(A, x, b) <= RESIDUAL_TOL[prec]
    ref = reference_solve(A, b)
    assert np.linalg.norm(x - ref) <= AGREE_TOL[prec] * max(np.linalg.norm(ref), 1e-300)


@settings(max_examples=60, deadline=None)
@given(
    mask=masks(),
    nine_point=st.booleans(),
    order=st.sampled_from(["C", "F"]),
    n_links=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_non_grid_couplings_never_accepted(mask, nine_point, order, n_links, seed):
    """A masked grid plus couplings between far-apart pixels is not a masked-grid operator on
    the given embedding; found without hints, any embedding accepted must hold every coupling."""
    rng = np.random.default_rng(seed)
    A, idx = masked_matrix(mask, rng, "nonsym", np.float64, order, nine_point)
    n = A.shape[0]
    if n < 2:
        return
    H, W = mask.shape
    width = W if order == "C" else H
    r, c = np.divmod(idx, width)
    i = rng.integers(0, n, n_links)
    j = rng.integers(0, n, n_links)
    far = (np.abs(r[i] - r[j]) > 1) | (np.abs(c[i] - c[j]) > 1)
    if not far.any():
        return
    links = sp.csr_array((np.full(int(far.sum()), 0.1), (i[far], j[far])), shape=(n, n))
    B = sp.csr_array(A + links)
    with pytest.raises(NotGridStructuredError):
        ssi_sparse.factorize(B, grid=mask.shape, order=order, pixels=idx, radius=1)
    try:
        lu = ssi_sparse.factorize(B)
    except NotGridStructuredError:
        return
    assert_embedding_is_valid(B, lu.grid)


def _disk(H, W, cy, cx, radius):
    y, x = np.mgrid[:H, :W]
    return (y - cy) ** 2 + (x - cx) ** 2 <= radius**2


SHAPES = {
    "disk": lambda: _disk(41, 37, 20, 18, 15),
    "annulus": lambda: _disk(40, 40, 19.5, 19.5, 18) & ~_disk(40, 40, 19.5, 19.5, 7),
    "two blobs": lambda: _disk(30, 50, 14, 10, 9) | _disk(30, 50, 15, 38, 11),
    "L shape": lambda: ~((np.arange(25)[:, None] < 12) & (np.arange(27)[None, :] > 10)),
    "seeded photo": lambda: np.random.default_rng(3).uniform(size=(33, 29)) > 0.08,
    "single pixel": lambda: np.pad(np.ones((1, 1), bool), 3),
    "one row": lambda: np.pad(np.ones((1, 12), bool), ((2, 2), (0, 5))),
}


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("nine_point", [False, True])
def test_realistic_masks_are_found(name, order, nine_point):
    """Shapes programs build (discs, rings, several parts, seeded images) are found from the
    pattern alone, and solved."""
    mask = SHAPES[name]()
    rng = np.random.default_rng(0)
    A, _ = masked_matrix(mask, rng, "spd", np.float64, order, nine_point)
    spec = ssi_sparse.detect_grid(A)
    assert spec is not None
    assert_embedding_is_valid(A, spec)
    b = rng.standard_normal(A.shape[0])
    x = ssi_sparse.factorize(A).solve(b)
    assert rel_residual(A, x, b) <= 1e-12


def _random_walker_like(rng, H=40, W=44):
    """Random walker's 'bf' system: a weighted 5-point graph Laplacian with the seeded rows
    and columns deleted (unknowns: unseeded pixels in raster order), and its seed coupling."""
    img = rng.uniform(size=(H, W))
    n = H * W
    ids = np.arange(n).reshape(H, W)
    i = np.concatenate([ids[:, :-1].ravel(), ids[:-1, :].ravel()])
    j = np.concatenate([ids[:, 1:].ravel(), ids[1:, :].ravel()])
    w = np.exp(-130 * (img.ravel()[i] - img.ravel()[j]) ** 2) + 1e-6
    Wm = sp.coo_array((np.r_[w, w], (np.r_[i, j], np.r_[j, i])), shape=(n, n)).tocsr()
    L = sp.csr_array(sp.diags_array(Wm.sum(axis=1)) - Wm)
    seeds = np.zeros(n, dtype=bool)
    seeds[rng.choice(n, n // 10, replace=False)] = True
    seeds[ids[:, :3].ravel()] = True  # a scribble along the left edge
    free = np.flatnonzero(~seeds)
    return L[free][:, free], L[free][:, np.flatnonzero(seeds)]


def test_random_walker_system_is_found_and_reused():
    """The seeded Laplacian is detected; refactorize, trans, several columns, the inverse
    operator and the adjoint work on the masked factor as on a full grid."""
    rng = np.random.default_rng(1)
    A, B = _random_walker_like(rng)
    n = A.shape[0]
    lu = ssi_sparse.factorize(A)
    assert lu.grid.masked and lu.shape == (n, n)
    assert_embedding_is_valid(A, lu.grid)
    rhs = -(B @ rng.uniform(size=(B.shape[1], 2)))
    X = lu.solve(rhs)
    assert rel_residual(A, X, rhs) <= 1e-12
    np.testing.assert_allclose(X, spla.spsolve(sp.csc_array(A), rhs), rtol=1e-8, atol=1e-10)

    # new values on the same pattern
    A2 = A.copy()
    A2.data = A2.data * rng.uniform(0.5, 2.0, A2.nnz)
    A2 = sp.csr_array((A2 + A2.T) / 2 + 0.1 * sp.eye_array(n))
    A2.sort_indices()
    assert A2.nnz == A.nnz  # same pattern
    lu.refactorize(A2)
    b = rng.standard_normal(n)
    for trans in "NTH":
        assert rel_residual(op(A2, trans), lu.solve(b, trans=trans), b) <= 1e-12

    Ainv = lu.aslinearoperator()
    b = rng.standard_normal(n)
    np.testing.assert_allclose(A2 @ (Ainv @ b), b, atol=1e-9)
    np.testing.assert_allclose(A2.T @ (Ainv.T @ b), b, atol=1e-9)


def test_masked_nonsymmetric_trans_and_adjoint():
    mask = SHAPES["annulus"]()
    rng = np.random.default_rng(5)
    A, _ = masked_matrix(mask, rng, "complex", np.complex128, "C", True)
    lu = ssi_sparse.factorize(A)
    assert lu.grid.masked
    b = random_rhs(rng, A.shape[0], 2, np.complex128)
    for trans in "NTH":
        x = lu.solve(b, trans=trans)
        assert rel_residual(op(A, trans), x, b) <= 1e-12
    x = lu.solve(b)
    g = random_rhs(rng, A.shape[0], 2, np.complex128)
    grad_b, grad_A = ssi_sparse.solve_backward(lu, x, g, A)
    # dL/db = A^-H g; dL/dA_ij = -grad_b_i conj(x_j) summed over columns
    np.testing.assert_allclose(grad_b, spla.spsolve(sp.csc_array(A.conj().T), g), rtol=1e-8)
    coo = sp.coo_array(A)
    expect = -(grad_b[coo.row] * np.conj(x[coo.col])).sum(axis=1)
    np.testing.assert_allclose(grad_A.data, expect, rtol=1e-8, atol=1e-12)


def test_masked_singular_is_refused():
    """A Neumann (pure graph) Laplacian on a masked domain is singular: factorize refuses it,
    as on a full grid; an exactly zero row gets SciPy's warning and NaNs from spsolve."""
    mask = SHAPES["disk"]()
    A, _ = masked_matrix(mask, np.random.default_rng(0), "laplacian", np.float64)
    A = sp.csr_array(A - sp.diags_array(A.sum(axis=1)))  # rows sum to 0
    assert np.abs(A.sum(axis=1)).max() == 0
    b = np.random.default_rng(1).standard_normal(A.shape[0])
    with pytest.raises(SingularMatrixError):
        ssi_sparse.factorize(A).solve(b)
    Z = sp.lil_array(masked_matrix(mask, np.random.default_rng(0), "spd", np.float64)[0])
    Z[7, :] = 0
    Z = sp.csr_array(Z)
    Z.eliminate_zeros()
    with pytest.warns(spla.MatrixRankWarning):
        x = ssi_sparse.spsolve(Z, b)
    assert np.all(np.isnan(x))


def test_bad_embeddings_are_clear_errors():
    mask = SHAPES["disk"]()
    A, idx = masked_matrix(mask, np.random.default_rng(0), "spd", np.float64)
    with pytest.raises(ValueError, match="mask has"):
        ssi_sparse.factorize(A, mask=np.ones_like(mask))
    with pytest.raises(ValueError, match="2-D boolean"):
        ssi_sparse.factorize(A, mask=mask.astype(int))
    with pytest.raises(ValueError, match="pixels needs grid"):
        ssi_sparse.factorize(A, pixels=idx)
    with pytest.raises(ValueError, match="not both"):
        ssi_sparse.factorize(A, grid=mask.shape, mask=mask)
    dup = idx.copy()
    dup[1] = dup[0]
    with pytest.raises(NotGridStructuredError, match="not distinct pixels"):
        ssi_sparse.factorize(A, grid=mask.shape, pixels=dup)
    with pytest.raises(NotGridStructuredError):  # a random placement breaks the couplings
        ssi_sparse.factorize(A, grid=mask.shape, pixels=np.random.default_rng(1).permutation(idx))


def test_masked_torch_layer():
    torch = pytest.importorskip("torch")
    import ssi_sparse.torch as sst

    mask = SHAPES["annulus"]()[:20, :]  # a horseshoe
    A, _ = masked_matrix(mask, np.random.default_rng(2), "nonsym", np.float64, "C", True)
    n = A.shape[0]
    coo = sp.coo_array(A)
    idx = torch.tensor(np.vstack([coo.row, coo.col]), dtype=torch.int64)
    values = torch.tensor(coo.data, requires_grad=True)
    b = torch.randn(n, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v, rhs: sst.spsolve(torch.sparse_coo_tensor(idx, v, (n, n)), rhs), (values, b))


@pytest.mark.parametrize("case", [("spd", np.float64), ("nonsym", np.float64), ("spd", np.complex64),
                                  ("complex", np.complex128), ("nonsym", np.float32)])  # fmt: skip
@pytest.mark.parametrize("dense_from", [None, 1])  # the default kernels; LAPACK on every level
def test_boxes_factored_without_absent_pixels_store_the_same_factors(monkeypatch, case, dense_from):
    """Each box of a masked grid is factored without its absent pixels (decoupled nodes) and
    the results scattered back: the stored factors, X, W, pivots and determinants equal those
    of factoring the full frontals, and so do the solves."""
    from ssi_sparse._api import factor as _factor
    from ssi_sparse._engine import native as _native
    from ssi_sparse import _tuning
    from ssi_sparse._engine.dense import FactoredBlocks

    if not _native.available():
        pytest.skip("native kernel not built")
    if dense_from is not None:
        monkeypatch.setattr(_tuning, "DENSE_MIN_FRONT", dense_from)
    kind, dtype = case
    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[:45, :52]
    mask = ((yy - 22) ** 2 + (xx - 26) ** 2 < 21**2) & ((yy - 20) ** 2 + (xx - 30) ** 2 > 8**2)  # a ring
    mask[30:, 5:9] = True  # and a thin strip, partly outside it
    A, _ = masked_matrix(mask, rng, kind, dtype)
    b = random_rhs(rng, A.shape[0], 2, dtype)
    runs = []
    plain = _factor.factorize_values
    for compact in (True, False):
        monkeypatch.setattr(_factor, "factorize_values", lambda *a, compact=compact, **kw: plain(*a, **{**kw, "masked": compact}))
        lu = ssi_sparse.factorize(A, mask=mask)
        runs.append((lu, lu.solve(b)))
    (lu_c, x_c), (lu_f, x_f) = runs
    tol = AGREE_TOL[_precision(dtype)]
    for level_c, level_f in zip(lu_c._numeric.blocks, lu_f._numeric.blocks):
        for bc, bf in zip(level_c, level_f):
            assert isinstance(bc, FactoredBlocks) and bc.kind == bf.kind
            factor_c, factor_f = (np.tril(np.swapaxes(b.factor, 1, 2)) if b.kind == "cholesky" else b.factor
                                  for b in (bc, bf))  # fmt: skip
            for a, ref in [(factor_c, factor_f), (bc.w, bf.w), (bc.x, bf.x)]:
                if ref is not None:
                    np.testing.assert_allclose(a, ref, rtol=tol, atol=tol * max(1.0, np.abs(ref).max(initial=0)))
            if bf.perm is not None:
                np.testing.assert_array_equal(bc.perm, bf.perm)
            assert bf.min_rcond / 10 <= bc.min_rcond <= 10 * bf.min_rcond
    np.testing.assert_allclose(x_c, x_f, rtol=tol, atol=tol * np.abs(x_f).max())
    assert rel_residual(A, x_c, b) <= RESIDUAL_TOL[_precision(dtype)]


@pytest.mark.skipif(not ssi_sparse._engine.native.available(), reason="native kernel not built")
@settings(max_examples=60, deadline=None)
@given(mask=masks(), nine_point=st.booleans(), order=st.sampled_from(["C", "F"]), fmt=st.sampled_from(["csr", "csc"]),
       seed=st.integers(0, 2**31 - 1))
def test_native_runs_and_edges_match_numpy(mask, nine_point, order, fmt, seed):
    """The native pass over the pattern finds the same runs and run pairs as the NumPy path
    (or steps aside), so detection finds the same embedding either way."""
    from ssi_sparse._structure import mask as _mask
    from ssi_sparse._engine import native as _native

    A, _ = masked_matrix(mask, np.random.default_rng(seed), "nonsym", np.float64, order, nine_point)
    A = A.asformat(fmt)
    coo = A.tocoo()
    rows, cols = coo.row.astype(np.int64), coo.col.astype(np.int64)
    ours = _native.mask_runs_and_edges(A, 16)
    theirs = _mask._runs_and_edges(rows, cols, A.shape[0])
    assert ours is not NotImplemented  # (its table holds 4 run pairs per run: masks never fill it)
    assert (ours is None) == (theirs is None)
    if ours is not None:
        assert ours[2] == theirs[2]
        for a, b in zip(ours[:2] + ours[3:], theirs[:2] + theirs[3:]):
            np.testing.assert_array_equal(a, b)
    found, again = _mask.find_embedding(rows, cols, A.shape[0], A), _mask.find_embedding(rows, cols, A.shape[0])
    assert (found is None) == (again is None)
    if found is not None:
        assert found[:2] == again[:2] and np.array_equal(found[2], again[2])


def test_coverage_rule_hands_thin_masks_to_scipy():
    """Masks found from the pattern go to the engine only when their unknowns cover at least
    MASK_MIN_COVERAGE of the grid found; thinner ones (SciPy's fill is smaller) are not
    claimed, and a caller's mask= bypasses the rule."""
    from ssi_sparse._tuning import MASK_MIN_COVERAGE
    from ssi_sparse.problems import masked_laplacian, ring_mask

    for fill, claimed in ((MASK_MIN_COVERAGE - 0.12, False), (MASK_MIN_COVERAGE + 0.08, True)):
        mask = ring_mask(96, 96, fill=fill)
        A = masked_laplacian(mask)
        assert (ssi_sparse.detect_grid(A) is not None) == claimed
        assert ssi_sparse.factorize(A, mask=mask).grid.masked
