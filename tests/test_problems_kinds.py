"""Problem generators with several unknowns per pixel and the 13-point biharmonic operator.

Each matrix is checked against an independent construction or property: symmetry and
definiteness (dense eigenvalues on small grids), the sparsity pattern (pixel couplings at
most one row / column apart; the biharmonic 13-point set), the "component" numbering as the
exact symmetric permutation of the "pixel" one, Horn-Schunck's right-hand side, and a SciPy
solve to a small residual.  Odd sizes and 1 x N grids throughout.
"""

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ssi_sparse.problems import biharmonic_2d, block_stencil_random, elasticity_2d, horn_schunck

SIZES = [(5, 7), (1, 6), (6, 1), (4, 4)]
DTYPES = [np.float32, np.float64, np.complex64, np.complex128]


def images(h, w, seed=0):
    rng = np.random.default_rng(seed)
    I0 = rng.uniform(0, 1, (h, w))
    return I0, I0 + 0.1 * rng.standard_normal((h, w))


def component_perm(h, w, k):
    """perm[a * h * w + p] = p * k + a, written out longhand."""
    return np.array([p * k + a for a in range(k) for p in range(h * w)])


def pixel_offsets(A, w, k):
    """(dr, dc) between the pixels of every stored entry of a pixel-numbered matrix."""
    coo = sp.coo_array(A)
    ri, ci = np.divmod(coo.row // k, w)
    rj, cj = np.divmod(coo.col // k, w)
    return rj - ri, cj - ci


def tol(dtype):
    return 1e-4 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-10


def assert_spd(A):
    D = A.toarray().astype(np.complex128 if np.iscomplexobj(A.data) else np.float64)
    assert np.array_equal(D, D.conj().T)
    np.linalg.cholesky(D)  # raises unless positive definite
    assert np.linalg.eigvalsh(D)[0] > 0


def assert_canonical_csr(A, n, dtype=np.float64):
    assert sp.issparse(A) and A.format == "csr"
    assert A.shape == (n, n) and A.dtype == dtype
    assert A.has_canonical_format


def assert_solves(A, tol=1e-10, seed=1):
    b = np.random.default_rng(seed).standard_normal(A.shape[0]).astype(A.dtype)
    x = spla.spsolve(sp.csc_array(A), b)
    assert np.linalg.norm(A @ x - b) <= tol * np.linalg.norm(b)


# --- generators by numbering, for the checks every one of them passes -------------------------

GENERATORS = {  # name: (unknowns per pixel, make(h, w, numbering))
    "horn_schunck": (2, lambda h, w, nb: horn_schunck(*images(h, w), alpha=0.3, numbering=nb)[0]),
    "elasticity": (2, lambda h, w, nb: elasticity_2d(h, w, lam=3.0, mu=0.5, numbering=nb)),
    "block_random_k3": (3, lambda h, w, nb: block_stencil_random(h, w, 3, seed=4, numbering=nb)),
    "block_random_k1": (1, lambda h, w, nb: block_stencil_random(h, w, 1, seed=4, numbering=nb)),
}


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("h, w", SIZES)
def test_shape_spd_pattern_and_solve(name, h, w):
    k, make = GENERATORS[name]
    A = make(h, w, "pixel")
    assert_canonical_csr(A, h * w * k)
    assert_spd(A)
    dr, dc = pixel_offsets(A, w, k)
    assert np.abs(dr).max() <= 1 and np.abs(dc).max() <= 1
    assert_solves(A)


@pytest.mark.parametrize("name", GENERATORS)
@pytest.mark.parametrize("h, w", [(5, 7), (1, 6)])
def test_component_numbering_is_the_symmetric_permutation(name, h, w):
    k, make = GENERATORS[name]
    P, C = make(h, w, "pixel"), make(h, w, "component")
    assert_canonical_csr(C, h * w * k)
    perm = component_perm(h, w, k)
    assert (P[perm][:, perm] != C).nnz == 0
    assert np.array_equal(P[perm][:, perm].toarray(), C.toarray())


@pytest.mark.parametrize("make", [
    lambda **kw: horn_schunck(*images(3, 3), **kw), lambda **kw: elasticity_2d(3, 3, **kw),
    lambda **kw: block_stencil_random(3, 3, 2, **kw)])
def test_unknown_numbering_is_refused(make):
    with pytest.raises(ValueError, match="numbering"):
        make(numbering="columns")


# --- Horn-Schunck ------------------------------------------------------------------------------


def neumann_laplacian_dense(h, w):
    n = h * w
    L = np.zeros((n, n))
    for r in range(h):
        for c in range(w):
            for rr, cc in ((r + 1, c), (r, c + 1)):
                if rr < h and cc < w:
                    i, j = r * w + c, rr * w + cc
                    L[i, j] = L[j, i] = -1
                    L[i, i] += 1
                    L[j, j] += 1
    return L


@pytest.mark.parametrize("h, w", [(5, 7), (1, 6), (4, 1)])
def test_horn_schunck_is_the_hessian_of_its_energy(h, w):
    """Component numbering against ``J^T J + alpha^2 blockdiag(L, L) + eps I``, ``b = -J^T It``
    with ``J = [diag Ix, diag Iy]`` (the energy's Hessian and gradient at 0), dense."""
    I0, I1 = images(h, w, seed=3)
    alpha = 0.2
    gx = lambda I: np.gradient(I, axis=1) if w > 1 else 0 * I  # noqa: E731
    gy = lambda I: np.gradient(I, axis=0) if h > 1 else 0 * I  # noqa: E731
    Ix, Iy, It = (gx(I0) + gx(I1)) / 2, (gy(I0) + gy(I1)) / 2, I1 - I0
    J = np.hstack([np.diag(Ix.ravel()), np.diag(Iy.ravel())])
    L = neumann_laplacian_dense(h, w)
    ref = J.T @ J + alpha**2 * np.kron(np.eye(2), L) + 1e-6 * alpha**2 * np.eye(2 * h * w)
    A, b = horn_schunck(I0, I1, alpha=alpha, numbering="component")
    np.testing.assert_allclose(A.toarray(), ref, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(b, -J.T @ It.ravel(), rtol=1e-14, atol=1e-15)
    # pixel numbering: [u0, v0, u1, v1, ...] for b as well
    Ap, bp = horn_schunck(I0, I1, alpha=alpha)
    perm = component_perm(h, w, 2)
    np.testing.assert_array_equal(bp[perm], b)
    np.testing.assert_array_equal(bp[0::2], -(Ix * It).ravel())
    np.testing.assert_array_equal(bp[1::2], -(Iy * It).ravel())


def test_horn_schunck_recovers_a_translation():
    y, x = np.mgrid[:31, :33] / 6.0
    pattern = lambda x, y: np.sin(x) * np.cos(0.7 * y) + 0.3 * np.cos(1.3 * x + y)  # noqa: E731
    A, b = horn_schunck(pattern(x, y), pattern(x - 0.05, y + 0.1), alpha=0.05)
    u, v = spla.spsolve(sp.csc_array(A), b).reshape(31, 33, 2).transpose(2, 0, 1)
    inner = (slice(5, -5), slice(5, -5))  # 0.3 pixel right, 0.6 pixel up
    assert abs(np.median(u[inner]) - 0.3) < 0.05 and abs(np.median(v[inner]) + 0.6) < 0.1


def test_horn_schunck_flat_images_are_still_definite():
    I = np.full((4, 5), 0.5)
    A, b = horn_schunck(I, I, alpha=0.1)
    assert_spd(A)
    assert not b.any()


def test_horn_schunck_refuses_bad_input():
    I0, I1 = images(4, 5)
    with pytest.raises(ValueError, match="alpha"):
        horn_schunck(I0, I1, alpha=0.0)
    with pytest.raises(ValueError, match="shape"):
        horn_schunck(I0, I1[:, :4])


# --- elasticity ----------------------------------------------------------------------------


@pytest.mark.parametrize("lam, mu", [(1.0, 1.0), (1e3, 1.0), (0.0, 2.0), (-0.5, 1.0)])
@pytest.mark.parametrize("h, w", [(5, 7), (1, 5), (6, 2)])
def test_elasticity_spd_for_any_admissible_lame_pair(lam, mu, h, w):
    assert_spd(elasticity_2d(h, w, lam=lam, mu=mu))


def test_elasticity_against_kronecker_products():
    """Component numbering: ``[[c Tx + mu Ty, -(lam+mu) Dxy], [-(lam+mu) Dxy, mu Tx + c Ty]]``,
    ``c = lam + 2 mu``, T = tridiag(-1, 2, -1), Dxy = Dy Dx with central differences."""
    h, w, lam, mu = 5, 7, 2.5, 0.75
    T = lambda m: sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(m, m))  # noqa: E731
    D = lambda m: sp.diags([-0.5, 0.5], [-1, 1], shape=(m, m))  # noqa: E731
    Tx, Ty = sp.kron(sp.eye(h), T(w)), sp.kron(T(h), sp.eye(w))
    Dxy = sp.kron(D(h), D(w))
    c = lam + 2 * mu
    ref = sp.bmat([[c * Tx + mu * Ty, -(lam + mu) * Dxy], [-(lam + mu) * Dxy, mu * Tx + c * Ty]])
    A = elasticity_2d(h, w, lam=lam, mu=mu, numbering="component")
    np.testing.assert_allclose(A.toarray(), ref.toarray(), rtol=1e-15, atol=0)


@pytest.mark.parametrize("field, expect", [
    # (ux, uy) as functions of (x, y) -> -div sigma at interior pixels (exact for quadratics)
    (lambda x, y: (x * x, 0 * x), lambda lam, mu: (-2 * (lam + 2 * mu), 0.0)),
    (lambda x, y: (y * y, 0 * x), lambda lam, mu: (-2 * mu, 0.0)),
    (lambda x, y: (0 * x, x * x), lambda lam, mu: (0.0, -2 * mu)),
    (lambda x, y: (x * y, 0 * x), lambda lam, mu: (0.0, -(lam + mu))),
    (lambda x, y: (0 * x, x * y), lambda lam, mu: (-(lam + mu), 0.0)),
    (lambda x, y: (3 + x - 2 * y, 1 + y), lambda lam, mu: (0.0, 0.0)),
])
def test_elasticity_interior_rows_are_minus_div_sigma(field, expect):
    h, w, lam, mu = 6, 7, 2.0, 0.5
    y, x = np.mgrid[:h, :w].astype(float)  # x along columns, y along rows
    ux, uy = field(x, y)
    out = (elasticity_2d(h, w, lam=lam, mu=mu) @ np.stack([ux, uy], -1).ravel()).reshape(h, w, 2)
    fx, fy = expect(lam, mu)
    np.testing.assert_allclose(out[1:-1, 1:-1, 0], fx, atol=1e-11)
    np.testing.assert_allclose(out[1:-1, 1:-1, 1], fy, atol=1e-11)


# --- biharmonic ----------------------------------------------------------------------------

THIRTEEN = {(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1),
            (2, 0), (-2, 0), (0, 2), (0, -2)}
INTERIOR_VALUES = {(0, 0): 20.0, (1, 0): -8.0, (0, 1): -8.0, (1, 1): 2.0, (1, -1): 2.0, (2, 0): 1.0,
                   (0, 2): 1.0}


@pytest.mark.parametrize("h, w", [(7, 9), (1, 8), (5, 2), (3, 3)])
def test_biharmonic_pattern_and_definiteness(h, w):
    A = biharmonic_2d(h, w)
    assert_canonical_csr(A, h * w)
    assert_spd(A)
    dr, dc = pixel_offsets(A, w, 1)
    assert np.all(np.abs(dr) + np.abs(dc) <= 2)
    assert set(zip(dr.tolist(), dc.tolist())) <= THIRTEEN
    L = sp.kronsum(sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(w, w)),
                   sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(h, h)))  # row-major 5-point
    np.testing.assert_array_equal(A.toarray(), (L @ L).toarray())
    assert_solves(A, tol=1e-9)


def test_biharmonic_interior_is_exactly_the_13_point_stencil():
    h, w = 9, 11
    A = sp.csr_array(biharmonic_2d(h, w))
    for r in range(2, h - 2):
        for c in range(2, w - 2):
            i = r * w + c
            cols, vals = A.indices[A.indptr[i]:A.indptr[i + 1]], A.data[A.indptr[i]:A.indptr[i + 1]]
            got = {(int(j) // w - r, int(j) % w - c): v for j, v in zip(cols, vals)}
            assert set(got) == THIRTEEN
            for (a, b), v in INTERIOR_VALUES.items():
                assert got[(a, b)] == got[(-a, -b)] == got[(b, a)] == v


@pytest.mark.parametrize("h, w", [(6, 5), (1, 7)])
def test_biharmonic_neumann_is_singular_with_constant_null_space(h, w):
    A = biharmonic_2d(h, w, dirichlet=False)
    D = A.toarray()
    assert np.array_equal(D, D.T)
    np.testing.assert_allclose(D.sum(axis=1), 0, atol=1e-12)
    ev = np.linalg.eigvalsh(D)
    assert abs(ev[0]) < 1e-10 and ev[1] > 1e-6


# --- block_stencil_random ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h, w, k", [(5, 7, 2), (1, 6, 3), (4, 3, 1)])
def test_block_random_hermitian_positive_definite(dtype, h, w, k):
    A = block_stencil_random(h, w, k, seed=2, dtype=dtype)
    assert_canonical_csr(A, h * w * k, np.dtype(dtype))
    assert_spd(A)
    assert_solves(A, tol=tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_block_random_general_is_nonsymmetric_and_dominant(dtype):
    h, w, k = 5, 6, 2
    A = block_stencil_random(h, w, k, seed=5, hermitian=False, dtype=dtype)
    assert_canonical_csr(A, h * w * k, np.dtype(dtype))
    D = A.toarray()
    assert not np.allclose(D, D.conj().T)
    off = np.abs(D).sum(axis=1) - np.abs(np.diag(D))
    assert np.all(np.abs(np.diag(D)) > off)  # strictly diagonally dominant: nonsingular
    assert_solves(A, tol=tol(dtype))
    C = block_stencil_random(h, w, k, seed=5, hermitian=False, dtype=dtype, numbering="component")
    perm = component_perm(h, w, k)
    assert np.array_equal(A[perm][:, perm].toarray(), C.toarray())


def test_block_random_blocks_are_full_and_seeded():
    h, w, k = 5, 6, 3
    A = block_stencil_random(h, w, k)
    row = A[(2 * w + 3) * k + 1]  # an interior pixel couples to all 9 neighbours' k components
    assert row.nnz == 9 * k
    assert (block_stencil_random(h, w, k) != A).nnz == 0
    assert (block_stencil_random(h, w, k, seed=1) != A).nnz > 0
    with pytest.raises(ValueError, match="dtype"):
        block_stencil_random(h, w, k, dtype=np.int64)
