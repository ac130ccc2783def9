"""More problem kinds: several unknowns per pixel, 5x5 stencils, log-determinants.

Every kind is compared with SciPy (solves) or a dense NumPy computation (slogdet), on random
shapes including 1 x n strips and odd sides, all four dtypes, both numberings, vector and
matrix right-hand sides, and plain, transposed and adjoint solves.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import ssi_sparse
from ssi_sparse import NotGridStructuredError, detect_grid, factorize
from ssi_sparse.problems import biharmonic_2d, block_stencil_random, elasticity_2d, horn_schunck
from helpers import assert_embedding_is_valid, op, random_rhs, reference_solve, rel_residual

DTYPES = [np.float32, np.float64, np.complex64, np.complex128]
TOL = {np.dtype(np.float32): 2e-3, np.dtype(np.complex64): 2e-3,
       np.dtype(np.float64): 1e-9, np.dtype(np.complex128): 1e-9}  # fmt: skip


def radius2_matrix(H, W, rng, dtype, full=True, hermitian=False, order="C"):
    """A random, diagonally dominant 5x5-stencil matrix (13-point unless ``full``)."""
    n = H * W
    r, c = np.divmod(np.arange(n), W)
    number = (lambda rr, cc: rr * W + cc) if order == "C" else (lambda rr, cc: cc * H + rr)
    rows, cols = [], []
    for dr in range(-2, 3):
        for dc in range(-2, 3):
            if (dr, dc) == (0, 0) or (not full and abs(dr) + abs(dc) > 2):
                continue
            ok = (r + dr >= 0) & (r + dr < H) & (c + dc >= 0) & (c + dc < W)
            rows.append(number(r[ok], c[ok]))
            cols.append(number(r[ok] + dr, c[ok] + dc))
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    vals = rng.uniform(-1, 1, rows.size)
    if np.dtype(dtype).kind == "c":
        vals = vals + 1j * rng.uniform(-1, 1, rows.size)
    A = sp.csr_array((vals, (rows, cols)), shape=(n, n))
    if hermitian:
        A = (A + A.conj().T) / 2
    dominance = np.asarray(abs(A).sum(axis=1)).ravel() + 1.0
    return sp.csr_array(A + sp.diags_array(dominance)).astype(dtype)


def _check_solves(A, lu, rng, dtype, k_rhs):
    tol = TOL[np.dtype(dtype)]
    for trans in ("N", "T", "H"):
        b = random_rhs(rng, A.shape[0], k_rhs, dtype)
        x = lu.solve(b, trans=trans)
        assert x.shape == b.shape and x.dtype == np.dtype(dtype)
        assert rel_residual(op(A, trans), x, b) <= tol
        np.testing.assert_allclose(x, reference_solve(A, b, trans), rtol=50 * tol, atol=50 * tol)


# --- several unknowns per pixel ------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    H=st.integers(1, 9), W=st.integers(1, 9), k=st.integers(1, 4),
    numbering=st.sampled_from(["pixel", "component"]), dtype=st.sampled_from(DTYPES),
    hermitian=st.booleans(), k_rhs=st.sampled_from([None, 1, 3]), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_block_stencils_given_and_found(H, W, k, numbering, dtype, hermitian, k_rhs, seed):
    rng = np.random.default_rng(seed)
    A = block_stencil_random(H, W, k, seed=seed, hermitian=hermitian, dtype=dtype, numbering=numbering)
    lu = factorize(A, grid=(H, W), components=k, numbering=numbering)
    assert lu.grid.components == k and lu.shape == A.shape
    assert lu.hermitian == (abs(A - A.conj().T).max() == 0)
    assert lu.hermitian or not hermitian
    _check_solves(A, lu, rng, dtype, k_rhs)
    # found from the pattern alone: a true layout (small grids may fit several), solved right
    spec = detect_grid(A)
    assert spec is not None
    assert_embedding_is_valid(A, spec)
    _check_solves(A, factorize(A), rng, dtype, k_rhs)


@pytest.mark.parametrize("numbering", ["pixel", "component"])
@pytest.mark.parametrize("H,W", [(24, 17), (17, 24), (1, 40), (33, 2)])
def test_found_with_the_right_components(H, W, numbering):
    """Realistic sizes: the layout found is the one the matrix was built on."""
    A = elasticity_2d(H, W, numbering=numbering)
    spec = detect_grid(A)
    assert_embedding_is_valid(A, spec)
    if min(H, W) > 2:  # (a strip of pixel pairs is also a plain grid of width 2)
        assert (spec.shape, spec.components, spec.numbering) == ((H, W), 2, numbering)
    b = random_rhs(np.random.default_rng(0), A.shape[0], 2, np.float64)
    assert rel_residual(A, factorize(A).solve(b), b) <= 1e-10


@pytest.mark.parametrize("numbering", ["pixel", "component"])
def test_horn_schunck_flow_matches_scipy(numbering):
    rng = np.random.default_rng(3)
    from scipy import ndimage

    I0 = ndimage.gaussian_filter(rng.uniform(size=(40, 48)), 2.0)
    I1 = ndimage.shift(I0, (0.3, -0.2), mode="nearest")
    A, b = horn_schunck(I0, I1, alpha=0.02, numbering=numbering)
    lu = factorize(A)
    assert lu.grid.components == 2 and lu.grid.numbering == numbering and lu.hermitian
    np.testing.assert_allclose(lu.solve(b), reference_solve(A, b), rtol=1e-8, atol=1e-10)
    # new images, same pattern: refactorize reuses the layout
    A2, b2 = horn_schunck(I1, I0, alpha=0.02, numbering=numbering)
    if A2.nnz == A.nnz and np.array_equal(A2.indices, A.indices):
        lu.refactorize(A2)
        np.testing.assert_allclose(lu.solve(b2), reference_solve(A2, b2), rtol=1e-8, atol=1e-10)


def test_refactorize_block_stencil_same_and_new_pattern():
    rng = np.random.default_rng(1)
    A = block_stencil_random(9, 8, 3, seed=1, hermitian=False)
    lu = factorize(A)
    B = A.copy()
    B.data = B.data * rng.uniform(0.5, 1.5, B.nnz)
    B = sp.csr_array(B + 5 * sp.eye_array(B.shape[0]))
    lu.refactorize(B)
    _check_solves(B, lu, rng, np.float64, 2)


def test_masked_block_stencil_given():
    rng = np.random.default_rng(2)
    H, W, k = 11, 13, 2
    mask = np.ones((H, W), bool)
    mask[3:7, 4:9] = False
    mask[0, :3] = False
    full = block_stencil_random(H, W, k, seed=2, hermitian=True)
    keep = (np.flatnonzero(mask)[:, None] * k + np.arange(k)).ravel()
    A = sp.csr_array(full[keep][:, keep])
    lu = factorize(A, mask=mask, components=k)
    assert lu.grid.masked and lu.grid.components == k
    _check_solves(A, lu, rng, np.float64, None)
    assert lu.slogdet()[1] == pytest.approx(np.linalg.slogdet(A.toarray())[1], rel=1e-10)


def test_bad_components_are_refused():
    A = block_stencil_random(5, 4, 2, seed=0)
    with pytest.raises(ValueError, match="components"):
        factorize(A, components=0)
    with pytest.raises(ValueError, match="multiple of components"):
        factorize(A, components=3)
    with pytest.raises(ValueError, match="does not have"):
        factorize(A, grid=(5, 5), components=2)
    with pytest.raises(ValueError, match="numbering"):
        factorize(A, numbering="planar")
    with pytest.raises(NotGridStructuredError):
        factorize(A, grid=(4, 5), components=2)  # the transposed grid


# --- 5x5 stencils ---------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    H=st.integers(1, 12), W=st.integers(1, 12), full=st.booleans(), order=st.sampled_from(["C", "F"]),
    dtype=st.sampled_from(DTYPES), hermitian=st.booleans(), k_rhs=st.sampled_from([None, 2]),
    seed=st.integers(0, 2**16),
)  # fmt: skip
def test_radius2_given_and_found(H, W, full, order, dtype, hermitian, k_rhs, seed):
    rng = np.random.default_rng(seed)
    A = radius2_matrix(H, W, rng, dtype, full, hermitian, order)
    lu = factorize(A, grid=(H, W), order=order, radius=2)
    assert lu.grid.radius == 2 and lu.grid.shape == (H, W)
    _check_solves(A, lu, rng, dtype, k_rhs)
    spec = detect_grid(A, order=order)
    assert spec is not None
    assert_embedding_is_valid(A, spec)
    _check_solves(A, factorize(A, order=order), rng, dtype, k_rhs)


@pytest.mark.parametrize("H,W", [(30, 30), (31, 27), (27, 31), (5, 64), (3, 3)])
def test_biharmonic_found_as_13_point(H, W):
    A = biharmonic_2d(H, W)
    spec = detect_grid(A)
    assert (spec.shape, spec.radius, spec.stencil, spec.components) == ((H, W), 2, "13-point", 1)
    assert spec.engine_shape == (-(-H // 2), -(-W // 2)) and spec.engine_components == 4
    b = random_rhs(np.random.default_rng(0), H * W, None, np.float64)
    x = factorize(A).solve(b)
    np.testing.assert_allclose(x, reference_solve(A, b), rtol=1e-8, atol=1e-12)


def test_masked_radius2_given():
    """Biharmonic inpainting: the 13-point operator on the pixels of a mask."""
    rng = np.random.default_rng(4)
    H, W = 21, 18
    mask = np.zeros((H, W), bool)
    mask[4:15, 3:12] = True
    mask[8:10, 6:8] = False
    idx = np.flatnonzero(mask)
    A = sp.csr_array(biharmonic_2d(H, W)[idx][:, idx])
    lu = factorize(A, mask=mask, radius=2)
    assert lu.grid.radius == 2 and lu.grid.masked
    _check_solves(A, lu, rng, np.float64, 2)


# --- log-determinants ------------------------------------------------------------------------


def _dense_slogdet(A):
    return np.linalg.slogdet(A.toarray().astype(np.complex128 if np.iscomplexobj(A.data) else np.float64))


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["block", "radius2", "helmholtz"]), H=st.integers(1, 8), W=st.integers(1, 8),
    k=st.integers(1, 3), dtype=st.sampled_from([np.float64, np.complex128]), hermitian=st.booleans(),
    seed=st.integers(0, 2**16),
)  # fmt: skip
def test_slogdet_matches_dense(kind, H, W, k, dtype, hermitian, seed):
    rng = np.random.default_rng(seed)
    if kind == "block":
        A = block_stencil_random(H, W, k, seed=seed, hermitian=hermitian, dtype=dtype)
    elif kind == "radius2":
        A = radius2_matrix(H, W, rng, dtype, hermitian=hermitian)
    else:  # symmetric indefinite: negative determinants occur
        from ssi_sparse.problems import helmholtz_2d

        A = helmholtz_2d(H, W, kh=rng.uniform(0.5, 2.0), dtype=dtype)
    try:
        lu = factorize(A)
    except ssi_sparse.SingularMatrixError:
        return  # (Helmholtz: a resonance)
    sign, logdet = lu.slogdet()
    sign0, logdet0 = _dense_slogdet(A)
    assert isinstance(logdet, float) and np.asarray(sign).dtype == A.dtype
    assert logdet == pytest.approx(logdet0, rel=1e-10, abs=1e-10)
    assert sign == pytest.approx(sign0, abs=1e-9)


def test_slogdet_large_spd_against_cholesky_of_a_strip():
    """A 2 x n strip's determinant from a banded Cholesky (independent of the engine)."""
    from scipy.linalg import cholesky_banded

    from ssi_sparse.problems import diffusion_2d

    A = diffusion_2d(2, 3000)
    ab = np.zeros((3, A.shape[0]))  # upper form, bandwidth 2 (row-major 2 x n: offsets 1, n)
    lu = factorize(A)
    A_t = diffusion_2d(3000, 2)  # column-major numbering of the same grid: bandwidth 2
    dense_bands = A_t.todia()
    for off, data in zip(dense_bands.offsets, dense_bands.data):
        if off >= 0:
            ab[2 - off, off:] = data[off:]
    logdet0 = 2 * np.sum(np.log(cholesky_banded(ab)[-1]))
    assert lu.slogdet() == (1.0, pytest.approx(logdet0, rel=1e-12))


def test_slogdet_mixed_precision_is_full_precision():
    from ssi_sparse.problems import diffusion_2d

    A = diffusion_2d(40, 37)
    lu = factorize(A, factor_dtype=np.float32)
    assert lu.factor_dtype == np.float32
    assert lu.slogdet()[1] == pytest.approx(_dense_slogdet(A)[1], rel=1e-12)
    assert lu.factor_dtype == np.float32  # the single-precision factor is kept


@pytest.mark.parametrize("dtype", DTYPES)
def test_slogdet_dtypes(dtype):
    A = block_stencil_random(6, 7, 2, seed=5, hermitian=False, dtype=dtype)
    sign, logdet = factorize(A).slogdet()
    sign0, logdet0 = _dense_slogdet(A)
    rel = 1e-4 if np.dtype(dtype).itemsize in (4, 8) and np.dtype(dtype) != np.float64 else 1e-10
    assert np.asarray(sign).dtype == np.dtype(dtype)
    assert logdet == pytest.approx(logdet0, rel=rel)
    assert complex(sign) == pytest.approx(complex(sign0), abs=1e-3)


# --- batches and the stencil front door --------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    B=st.integers(1, 5), H=st.integers(1, 8), W=st.integers(1, 8), k=st.integers(1, 3),
    dtype=st.sampled_from(DTYPES), hermitian=st.booleans(), k_rhs=st.sampled_from([None, 2]),
    seed=st.integers(0, 2**16),
)  # fmt: skip
def test_batch_equals_one_by_one(B, H, W, k, dtype, hermitian, k_rhs, seed):
    rng = np.random.default_rng(seed)
    systems = [block_stencil_random(H, W, k, seed=seed + t, hermitian=hermitian, dtype=dtype) for t in range(B)]
    lu = ssi_sparse.factorize_batch(systems, grid=(H, W), components=k)
    assert lu.batch == B and lu.shape == systems[0].shape
    n = systems[0].shape[0]
    tol = TOL[np.dtype(dtype)]
    for trans in ("N", "T", "H"):
        b = random_rhs(rng, B * n, None if k_rhs is None else k_rhs, dtype)
        b = b.reshape((B, n) if k_rhs is None else (B, n, k_rhs))
        x = lu.solve(b, trans=trans)
        assert x.shape == b.shape
        for A, xt, bt in zip(systems, x, b):
            assert rel_residual(op(A, trans), xt, bt) <= tol
    signs, logdets = lu.slogdet()
    assert signs.shape == logdets.shape == (B,)
    for A, s, ld in zip(systems, signs, logdets):
        s0, ld0 = _dense_slogdet(A)
        assert ld == pytest.approx(ld0, rel=1e-4 if np.dtype(dtype).itemsize <= 8 and dtype != np.float64 else 1e-10)


def test_batch_refactorize_reuses_the_pattern_and_checks_it():
    rng = np.random.default_rng(7)
    from ssi_sparse.problems import diffusion_2d

    systems = [diffusion_2d(20, 24, rng.uniform(0.5, 2.0, (20, 24))) for _ in range(6)]
    lu = ssi_sparse.factorize_batch(systems)
    assert lu.grid.shape == (20, 24) and "batch of 6" in repr(lu)
    new = [diffusion_2d(20, 24, rng.uniform(0.5, 2.0, (20, 24))) for _ in range(6)]
    lu.refactorize_batch(new)
    b = rng.standard_normal((6, 480))
    for A, xt, bt in zip(new, lu.solve(b), b):
        assert rel_residual(A, xt, bt) <= 1e-12
    with pytest.raises(ValueError, match="holds 6 systems"):
        lu.refactorize_batch(new[:5])
    with pytest.raises(ValueError, match="refactorize_batch"):
        lu.refactorize(new[0])
    with pytest.raises(ValueError, match="shape"):
        lu.solve(np.ones(480))
    with pytest.raises(ValueError, match="laid out|not a"):
        ssi_sparse.factorize_batch([systems[0], diffusion_2d(24, 20)])
    with pytest.raises(ValueError, match="at least one"):
        ssi_sparse.factorize_batch([])


def test_batch_of_mixed_dtypes_and_patterns():
    """Systems of several dtypes factor in their common one (integers as float64, as a single
    factorization takes them); a system whose pattern differs from the first is detected on
    its own; anything but a sparse matrix is refused."""
    from ssi_sparse.problems import diffusion_2d

    rng = np.random.default_rng(11)
    A = sp.csr_array(diffusion_2d(9, 7, rng.uniform(0.5, 2.0, (9, 7))))
    B = sp.csr_array(A, dtype=np.float32)
    C = A.tolil()
    C[0, 1] = C[1, 0] = 0.0  # a coupling dropped: another pattern on the same grid
    C = sp.csr_array(C)
    C.eliminate_zeros()
    ints = sp.csr_array(diffusion_2d(9, 7) * 4).astype(np.int64)
    lu = ssi_sparse.factorize_batch([B, A, C, ints])
    assert lu.dtype == np.float64
    b = rng.standard_normal((4, 63))
    for M, xt, bt in zip([B, A, C, ints], lu.solve(b), b):
        assert rel_residual(M.astype(np.float64), xt, bt) <= 1e-12
    assert ssi_sparse.factorize_batch([sp.csr_array(diffusion_2d(9, 7)).astype(np.int8)] * 2).dtype == np.float64
    with pytest.raises(TypeError, match="system 1 is a ndarray"):
        ssi_sparse.factorize_batch([A, A.toarray()])


def test_batch_with_a_singular_system_raises():
    from ssi_sparse.problems import diffusion_2d

    good = diffusion_2d(10, 10)
    bad = sp.csr_array(diffusion_2d(10, 10, neumann=True))  # constants in its null space
    with pytest.raises(ssi_sparse.SingularMatrixError):
        lu = ssi_sparse.factorize_batch([good, bad, good])
        lu.solve(np.ones((3, 100)))


@pytest.mark.parametrize("k", [1, 2, 3])
def test_factorize_stencil_and_to_csr(k):
    rng = np.random.default_rng(k)
    H, W = 13, 11
    shape = (H, W, 3, 3) if k == 1 else (H, W, k, k, 3, 3)
    V = rng.uniform(-1, 1, shape)
    centre = (Ellipsis, 1, 1)
    V[centre] += (10 * k) * (np.eye(k) if k > 1 else 1.0)  # diagonally dominant
    A = ssi_sparse.to_csr(V)
    assert A.shape == (H * W * k, H * W * k)
    # independent assembly, coefficients that reach outside the grid left out
    Vk = V.reshape(H, W, k, k, 3, 3)
    dense = np.zeros(A.shape)
    for r in range(H):
        for c in range(W):
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    if 0 <= r + dr < H and 0 <= c + dc < W:
                        i, j = (r * W + c) * k, ((r + dr) * W + c + dc) * k
                        dense[i : i + k, j : j + k] = Vk[r, c, :, :, dr + 1, dc + 1]
    np.testing.assert_array_equal(A.toarray(), dense)
    lu = ssi_sparse.factorize_stencil(V)
    assert lu.grid.components == k and lu.shape == A.shape
    b = random_rhs(rng, A.shape[0], 2, np.float64)
    np.testing.assert_allclose(lu.solve(b), reference_solve(A, b), rtol=1e-10, atol=1e-12)
    # the same matrix through detection gives the same factorization
    np.testing.assert_allclose(factorize(A, grid=(H, W), components=k).solve(b), lu.solve(b), rtol=1e-12)
    lu.refactorize(2 * V)
    np.testing.assert_allclose(lu.solve(b), reference_solve(2 * A, b), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="does not fit"):
        lu.refactorize(V[:-1])
    batch = ssi_sparse.factorize_batch(np.stack([V, 2 * V]))
    x = batch.solve(np.stack([b, b]))
    np.testing.assert_allclose(x[1], reference_solve(2 * A, b), rtol=1e-10, atol=1e-12)


def test_factorize_stencil_refuses_bad_arrays():
    with pytest.raises(ValueError, match="shape"):
        ssi_sparse.factorize_stencil(np.ones((4, 4, 3, 4)))
    with pytest.raises(ValueError, match="shape"):
        ssi_sparse.factorize_stencil(np.ones((4, 4, 2, 3, 3, 3)))
    with pytest.raises(TypeError):
        ssi_sparse.factorize_stencil(np.full((4, 4, 3, 3), "a"))
    V = np.zeros((4, 4, 3, 3))
    V[..., 1, 1] = 1.0
    V[1, 1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ssi_sparse.factorize_stencil(V)


# --- selected inversion ---------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["block", "radius2", "masked"]), H=st.integers(1, 8), W=st.integers(1, 8),
    k=st.integers(1, 3), dtype=st.sampled_from(DTYPES), hermitian=st.booleans(), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_inverse_entries_match_the_dense_inverse(kind, H, W, k, dtype, hermitian, seed):
    rng = np.random.default_rng(seed)
    if kind == "block":
        A = block_stencil_random(H, W, k, seed=seed, hermitian=hermitian, dtype=dtype)
        lu = factorize(A, grid=(H, W), components=k)
    elif kind == "radius2":
        A = radius2_matrix(H, W, rng, dtype, hermitian=hermitian)
        lu = factorize(A, grid=(H, W), radius=2)
    else:
        mask = rng.random((H, W)) < 0.7
        if not mask.any():
            return
        idx = np.flatnonzero(mask)
        full = block_stencil_random(H, W, 1, seed=seed, hermitian=hermitian, dtype=dtype)
        A = sp.csr_array(full[idx][:, idx])
        lu = factorize(A, mask=mask)
    Z = np.linalg.inv(A.toarray().astype(np.complex128 if np.iscomplexobj(A.data) else np.float64))
    coo = A.tocoo()
    rows = np.concatenate([coo.row, coo.col, np.arange(A.shape[0])])
    cols = np.concatenate([coo.col, coo.row, np.arange(A.shape[0])])
    z = lu.inverse_entries(rows, cols)
    tol = 1e-4 if np.dtype(dtype).itemsize in (4, 8) and dtype != np.float64 else 1e-10
    np.testing.assert_allclose(z, Z[rows, cols], rtol=tol, atol=tol * np.abs(Z).max())


def test_inverse_entries_batch_mixed_precision_and_errors():
    from ssi_sparse.problems import diffusion_2d

    rng = np.random.default_rng(9)
    systems = [diffusion_2d(12, 10, rng.uniform(0.5, 2.0, (12, 10))) for _ in range(3)]
    i = np.arange(120)
    diag = ssi_sparse.factorize_batch(systems).inverse_entries(i, i)
    assert diag.shape == (3, 120)
    for A, d in zip(systems, diag):
        np.testing.assert_allclose(d, np.diag(np.linalg.inv(A.toarray())), rtol=1e-10)
    lu = factorize(systems[0], factor_dtype=np.float32)
    np.testing.assert_allclose(lu.inverse_entries(i, i), diag[0], rtol=1e-12)  # working precision
    with pytest.raises(ValueError, match="stencil neighbours"):
        lu.inverse_entries([0], [50])
    with pytest.raises(ValueError, match="lie in"):
        lu.inverse_entries([0], [120])
    # refactorization invalidates the cached inverse
    lu.refactorize(2 * systems[0])
    np.testing.assert_allclose(lu.inverse_entries(i, i), diag[0] / 2, rtol=1e-10)


@pytest.mark.parametrize("numbering", ["pixel", "component"])
def test_masked_block_grid_found_when_components_are_given(numbering):
    """With components=k, a masked grid of k-unknown pixels numbered in raster order of its
    pixels is found from the pattern (its bounding box need not divide anything)."""
    H, W, k = 23, 19, 2
    yy, xx = np.mgrid[:H, :W]
    mask = (yy - 11) ** 2 + (xx - 9) ** 2 <= 80
    full = block_stencil_random(H, W, k, seed=3, hermitian=True, numbering=numbering)
    m = int(mask.sum())
    idx = np.flatnonzero(mask)
    if numbering == "pixel":  # the unknowns of the masked pixels, in either numbering
        keep = (idx[:, None] * k + np.arange(k)).ravel()
    else:
        keep = (np.arange(k)[:, None] * (H * W) + idx[None, :]).ravel()
    A = sp.csr_array(full[keep][:, keep])
    lu = factorize(A, components=k, numbering=numbering)
    assert lu.grid.masked and lu.grid.components == k and len(lu.grid.pixels) == m
    assert_embedding_is_valid(A, lu.grid)
    b = random_rhs(np.random.default_rng(0), A.shape[0], None, np.float64)
    np.testing.assert_allclose(lu.solve(b), reference_solve(A, b), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kind", ["block", "radius2"])
def test_adjoint_gradients_on_new_kinds(kind):
    """solve_backward (dL/db = A^-H g, dL/dA on the stored entries) on a block and a 5x5
    stencil, against the dense formulas."""
    rng = np.random.default_rng(11)
    A = block_stencil_random(6, 5, 2, seed=11, hermitian=False) if kind == "block" else \
        radius2_matrix(7, 6, rng, np.float64)
    lu = factorize(A)
    b = rng.standard_normal(A.shape[0])
    x = lu.solve(b)
    g = rng.standard_normal(A.shape[0])
    grad_b, grad_A = ssi_sparse.solve_backward(lu, x, g, A)
    Ad = A.toarray()
    gb = np.linalg.solve(Ad.T, g)
    np.testing.assert_allclose(grad_b, gb, rtol=1e-9, atol=1e-12)
    coo = sp.coo_array(grad_A)
    np.testing.assert_allclose(coo.data, -gb[coo.row] * x[coo.col], rtol=1e-9, atol=1e-12)


def test_torch_layer_on_a_block_stencil():
    torch = pytest.importorskip("torch")
    import ssi_sparse.torch as sst

    A = block_stencil_random(4, 5, 2, seed=12, hermitian=False)
    coo = A.tocoo()
    idx = torch.tensor(np.vstack([coo.row, coo.col]), dtype=torch.int64)
    v = torch.tensor(coo.data, dtype=torch.float64, requires_grad=True)
    b = torch.randn(A.shape[0], dtype=torch.float64, requires_grad=True)
    layer = sst.SparseSolve(idx, A.shape, grid=(4, 5))
    assert torch.autograd.gradcheck(lambda vv, bb: layer(vv, bb), (v, b))
