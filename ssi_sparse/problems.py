"""Grid problems people solve with ssi_sparse, as SciPy CSR matrices (row-major numbering).

Used by the demo, the benchmarks and the tests, and handy for trying the solver:

>>> from ssi_sparse.problems import diffusion_2d
>>> A = diffusion_2d(64, 48)                 # 5-point Dirichlet Laplacian on 64 x 48 pixels
>>> A.shape
(3072, 3072)
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._planning.plan import STENCIL_OFFSETS
from ._structure.stencil import stencil_to_csr

__all__ = [
    "diffusion_2d", "random_spd_9pt", "convection_diffusion_2d", "helmholtz_2d",
    "blob_mask", "ring_mask", "masked_laplacian",
    "horn_schunck", "elasticity_2d", "biharmonic_2d", "block_stencil_random",
]


def _edge_matrix(h, w, weight_right, weight_down, weight_diag=None, weight_anti=None, dirichlet=1.0):
    """Weighted graph Laplacian of the grid plus ``dirichlet`` x boundary-edge weights.

    ``weight_right[r, c]`` couples (r, c)-(r, c+1), ``weight_down`` (r, c)-(r+1, c),
    ``weight_diag`` (r, c)-(r+1, c+1), ``weight_anti`` (r, c+1)-(r+1, c).  The result is
    symmetric; ``dirichlet > 0`` ties the outer ring to zero (positive definite).
    """
    dtype = np.result_type(weight_right, weight_down, np.float64)
    V = np.zeros((h, w, 9), dtype=dtype)
    slot = {tuple(o): k for k, o in enumerate(STENCIL_OFFSETS.tolist())}
    pairs = [((0, 1), weight_right), ((1, 0), weight_down)]
    if weight_diag is not None:
        pairs += [((1, 1), weight_diag), ((1, -1), weight_anti)]
    for (dr, dc), wgt in pairs:
        # edge (r, c) -> (r + dr, c + dc); wgt is indexed by the edge's top-left pixel
        r0, c0 = 0, max(0, -dc)
        hh, ww = h - dr, w - abs(dc)
        if hh <= 0 or ww <= 0:
            continue
        wv = np.asarray(wgt, dtype=dtype)[:hh, :ww]
        src = (slice(r0, r0 + hh), slice(c0, c0 + ww))
        dst = (slice(r0 + dr, r0 + dr + hh), slice(c0 + dc, c0 + dc + ww))
        V[src + (slot[(dr, dc)],)] -= wv
        V[dst + (slot[(-dr, -dc)],)] -= wv
        V[src + (4,)] += wv
        V[dst + (4,)] += wv
    if dirichlet:
        # ghost neighbours outside the grid held at zero: add their weight to the diagonal
        ring = np.zeros((h, w))
        ring[0, :] += 1
        ring[-1, :] += 1
        ring[:, 0] += 1
        ring[:, -1] += 1
        V[:, :, 4] += dirichlet * ring
    return stencil_to_csr(V.reshape(h * w, 9), (h, w))


def diffusion_2d(h, w, coefficient=None, *, neumann=False):
    """5-point finite-difference diffusion operator ``-div(c grad u)`` on an h x w grid.

    Parameters
    ----------
    coefficient : array (h, w), optional
        Positive diffusion coefficient per pixel (edge weight = mean of its two pixels);
        constant 1 when omitted (the Dirichlet Laplacian with 4 on the diagonal).
    neumann : bool
        Pure Neumann boundary: row sums are zero and the matrix is singular.
    """
    c = np.ones((h, w)) if coefficient is None else np.asarray(coefficient, dtype=np.float64)
    right = np.zeros((h, w))
    down = np.zeros((h, w))
    right[:, :-1] = 0.5 * (c[:, :-1] + c[:, 1:])
    down[:-1, :] = 0.5 * (c[:-1, :] + c[1:, :])
    return _edge_matrix(h, w, right, down, dirichlet=0.0 if neumann else 1.0)


def random_spd_9pt(h, w, seed=0, *, spread=1e2):
    """9-point symmetric positive definite matrix with random edge weights.

    Weights on all 8 neighbour couplings are log-uniform in [1/spread, spread]; Dirichlet
    boundary (positive definite).
    """
    rng = np.random.default_rng(seed)
    draw = lambda: np.exp(rng.uniform(-np.log(spread), np.log(spread), (h, w)))  # noqa: E731
    return _edge_matrix(h, w, draw(), draw(), 0.5 * draw(), 0.5 * draw())


def convection_diffusion_2d(h, w, peclet=100.0):
    """Upwind finite differences of ``-lap(u) + b . grad(u)`` with cell Peclet numbers
    ``peclet`` along x and ``peclet / 2`` along y: strongly nonsymmetric when large."""
    bx, by = peclet, 0.5 * peclet
    V = np.zeros((h * w, 9))
    rr, cc = np.divmod(np.arange(h * w), w)
    V[:, 4] = bx + by
    V[:, 3] = np.where(cc > 0, -bx, 0.0)  # upwind: couple to the left neighbour
    V[:, 1] = np.where(rr > 0, -by, 0.0)  # and to the one above
    return (diffusion_2d(h, w) + stencil_to_csr(V, (h, w))).tocsr()


def helmholtz_2d(h, w, kh=0.5, dtype=np.float64):
    """``L - (kh)^2 I`` with the 5-point Dirichlet Laplacian: symmetric indefinite."""
    A = diffusion_2d(h, w) - (kh**2) * sp.identity(h * w, format="csr")
    return A.astype(dtype).tocsr()


def blob_mask(h, w, *, fill=0.42, lobes=5, wobble=0.15):
    """An irregular star-shaped region (a wobbly disc) covering about ``fill`` of h x w."""
    y, x = np.mgrid[:h, :w]
    dy, dx = y - (h - 1) / 2, x - (w - 1) / 2
    theta = np.arctan2(dy, dx)
    radius = np.sqrt(fill * h * w / (np.pi * (1 + wobble**2 / 2)))
    return np.hypot(dy, dx) <= radius * (1 + wobble * np.sin(lobes * theta))


def ring_mask(h, w, *, fill=0.25):
    """An annulus touching the sides of h x w that covers about ``fill`` of it."""
    y, x = np.mgrid[:h, :w]
    outer = min(h, w) / 2 - 0.5
    inner = outer * np.sqrt(max(0.0, 1 - 4 * fill * h * w / (np.pi * 4 * outer**2)))
    d = np.hypot(y - (h - 1) / 2, x - (w - 1) / 2)
    return (d <= outer) & (d > inner)


def masked_laplacian(mask):
    """5-point Dirichlet Laplacian on the pixels set in ``mask`` (numbered as
    ``np.flatnonzero(mask)``): 4 on the diagonal, -1 between present neighbours, what Poisson
    image editing and PDEs on irregular domains assemble.

    >>> import numpy as np
    >>> from ssi_sparse.problems import masked_laplacian, ring_mask
    >>> A = masked_laplacian(ring_mask(64, 64))
    >>> A.shape[0] < 64 * 64
    True
    """
    mask = np.asarray(mask, dtype=bool)
    ids = np.full(mask.shape, -1, dtype=np.int64)
    ids[mask] = np.arange(int(mask.sum()))
    rows, cols = [], []
    for a, b in ((ids[:, :-1], ids[:, 1:]), (ids[:-1, :], ids[1:, :])):
        both = (a >= 0) & (b >= 0)
        rows += [a[both], b[both]]
        cols += [b[both], a[both]]
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    n = int(mask.sum())
    off = sp.coo_array((-np.ones(rows.size), (rows, cols)), shape=(n, n))
    return sp.csr_matrix(off + 4.0 * sp.eye_array(n))


# --- several unknowns per pixel -------------------------------------------------------------
#
# "pixel" numbering: node ``p * k + a`` is component ``a`` of pixel ``p = r * w + c`` (the
# components of a pixel are consecutive); "component" numbering: node ``a * h * w + p`` (all of
# component 0, then all of component 1, ...).  The second is the symmetric permutation
# ``A[perm][:, perm]`` of the first, with ``perm`` from :func:`_component_order`.


def _component_order(n_pixels, k):
    """``perm[a * n_pixels + p] = p * k + a``: the pixel-numbered node of each component one."""
    return np.arange(n_pixels * k).reshape(n_pixels, k).T.ravel()


def _renumber(A, k, numbering):
    """``A`` (pixel numbering, k unknowns per pixel) in ``numbering``, as canonical CSR."""
    if numbering not in ("pixel", "component"):
        raise ValueError(f"numbering must be 'pixel' or 'component', got {numbering!r}")
    A = sp.csr_array(A)
    if numbering == "component":
        perm = _component_order(A.shape[0] // k, k)
        A = A[perm][:, perm]
    A.sum_duplicates()  # sorted indices, no duplicates
    return A


def _block_stencil_csr(B):
    """Pixel-numbered CSR of the block stencil ``B`` (h, w, k, k, 9): ``B[r, c, a, b, slot]``
    couples component ``a`` of pixel (r, c) to component ``b`` of its neighbour at
    ``STENCIL_OFFSETS[slot]``; couplings that leave the grid are dropped (Dirichlet)."""
    h, w, k = B.shape[:3]
    return stencil_to_csr(np.reshape(B, (h * w * k * k, 9)), (h, w, k))


def _derivative(I, axis):
    """Central differences along ``axis`` (one-sided at the ends), zero on an axis of length 1."""
    return np.gradient(I, axis=axis) if I.shape[axis] > 1 else np.zeros_like(I)


def horn_schunck(I0, I1, alpha=0.05, numbering="pixel"):
    """Horn-Schunck optical flow: the normal equations ``A x = b`` for the flow (u, v) from
    grey image ``I0`` to ``I1``, two unknowns per pixel.

    Minimises ``sum (Ix u + Iy v + It)^2 + alpha^2 (u^T L u + v^T L v)`` with ``L`` the 5-point
    Neumann graph Laplacian (``diffusion_2d(h, w, neumann=True)``), ``Ix``, ``Iy`` the central
    differences (:func:`numpy.gradient`, x along columns, y along rows) averaged over the two
    frames and ``It = I1 - I0``.  Per pixel ``A`` holds ``[[Ix^2 + alpha^2 L, Ix Iy],
    [Ix Iy, Iy^2 + alpha^2 L]]``; ``1e-6 alpha^2 I`` is added so that it is symmetric positive
    definite even where the images are flat.  ``b = -(Ix It, Iy It)``.

    Parameters
    ----------
    I0, I1 : array (h, w)
        The two frames (grey levels; ``alpha`` is in their units, so for images in [0, 1]
        values of 0.01 to 0.1 are usual).
    alpha : float
        Smoothness weight, positive.
    numbering : {"pixel", "component"}
        ``"pixel"``: unknowns ``[u0, v0, u1, v1, ...]`` (pixels row-major);
        ``"component"``: ``[u0, u1, ..., v0, v1, ...]``.  Applies to ``A`` and ``b``.

    Returns
    -------
    A : csr_array (2 h w, 2 h w), float64
    b : ndarray (2 h w,)

    >>> import numpy as np
    >>> from scipy.sparse.linalg import spsolve
    >>> from ssi_sparse.problems import horn_schunck
    >>> y, x = np.mgrid[:32, :40] / 8.0
    >>> I0 = np.sin(x) * np.cos(y)
    >>> I1 = np.sin(x - 0.1) * np.cos(y)         # the pattern moved 0.8 pixel right
    >>> A, b = horn_schunck(I0, I1, alpha=0.1)
    >>> u, v = spsolve(A, b).reshape(32, 40, 2).transpose(2, 0, 1)
    >>> bool(abs(np.median(u) - 0.8) < 0.1)
    True
    """
    I0 = np.asarray(I0, dtype=np.float64)
    I1 = np.asarray(I1, dtype=np.float64)
    if I0.ndim != 2 or I0.shape != I1.shape:
        raise ValueError(f"I0 and I1 must be 2-D of one shape, got {I0.shape} and {I1.shape}")
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    h, w = I0.shape
    Ix = 0.5 * (_derivative(I0, 1) + _derivative(I1, 1))
    Iy = 0.5 * (_derivative(I0, 0) + _derivative(I1, 0))
    It = I1 - I0
    a2 = float(alpha) ** 2
    B = np.zeros((h, w, 2, 2, 9))
    B[..., 4] = np.stack([Ix * Ix, Ix * Iy, Ix * Iy, Iy * Iy], axis=-1).reshape(h, w, 2, 2)
    B[..., 4] += 1e-6 * a2 * np.eye(2)
    smooth = sp.kron(diffusion_2d(h, w, neumann=True), a2 * sp.identity(2))
    A = _block_stencil_csr(B) + smooth
    b = -np.stack([Ix * It, Iy * It], axis=-1).reshape(h * w, 2)
    b = (b.T if numbering == "component" else b).ravel()
    return _renumber(A, 2, numbering), b


def elasticity_2d(h, w, lam=1.0, mu=1.0, numbering="pixel"):
    """2-D linear elasticity (plane strain), ``-div sigma(u)`` for the displacement
    (ux, uy) at every pixel of an h x w grid, unit spacing, ``u = 0`` outside the grid.

    ``sigma = lam tr(eps) I + 2 mu eps``: ``-(lam + 2 mu) ux_xx - mu ux_yy - (lam + mu) uy_xy``
    and the same with x and y swapped, collocated second differences, the mixed derivative
    ``d^2/dxdy`` from the 4 diagonal neighbours (``/4``); x runs along columns, y along rows.
    A 3 x 3 stencil of 2 x 2 blocks, symmetric positive definite for ``mu > 0`` and
    ``lam + mu >= 0``.

    ``numbering`` as for :func:`horn_schunck` (``"pixel"``: ``[ux0, uy0, ux1, ...]``).

    >>> from ssi_sparse.problems import elasticity_2d
    >>> A = elasticity_2d(5, 7, lam=2.0)
    >>> A.shape, bool(abs(A - A.T).max() == 0)
    ((70, 70), True)
    """
    c = lam + 2 * mu
    S = np.zeros((2, 2, 9))
    for slot, (dr, dc) in enumerate(STENCIL_OFFSETS.tolist()):
        if dr == dc == 0:
            S[..., slot] = 2 * (c + mu) * np.eye(2)
        elif dr == 0:  # x neighbours: ux_xx weighs lam + 2 mu, uy_xx mu
            S[..., slot] = -np.diag([c, mu])
        elif dc == 0:  # y neighbours
            S[..., slot] = -np.diag([mu, c])
        else:  # -(lam + mu) d^2/dxdy couples ux to uy: -1/4 on the (1, 1) diagonal, +1/4 across
            S[..., slot] = -dr * dc * (lam + mu) / 4 * (1 - np.eye(2))
    B = np.broadcast_to(S, (h, w, 2, 2, 9))
    return _renumber(_block_stencil_csr(B), 2, numbering)


def biharmonic_2d(h, w, dirichlet=True):
    """13-point biharmonic operator on an h x w grid (row-major): ``L @ L`` with ``L`` the
    5-point Laplacian of :func:`diffusion_2d`.

    In the interior the stencil is 20 at the centre, -8 at the 4 axis neighbours, 2 at the
    4 diagonal ones and 1 two pixels away along the axes.  With ``dirichlet`` (``L`` with
    ``u = 0`` outside, the "simply supported plate" boundary ``u = lap u = 0``) it is
    symmetric positive definite; otherwise ``L`` is the Neumann Laplacian and the result is
    symmetric positive semidefinite with the constants as null space (singular).

    >>> from ssi_sparse.problems import biharmonic_2d
    >>> A = biharmonic_2d(9, 9)
    >>> int(A[40, 40]), int(A[40].nnz)
    (20, 13)
    """
    L = diffusion_2d(h, w, neumann=not dirichlet)
    return _renumber(L @ L, 1, "pixel")


def block_stencil_random(h, w, k, seed=0, hermitian=True, dtype=np.float64, numbering="pixel"):
    """Random operator with k unknowns per pixel coupled to the 9 neighbours by full k x k blocks.

    Entries are standard normal (real and imaginary parts for complex ``dtype``); with
    ``hermitian`` the matrix is replaced by ``(A + A^H) / 2``.  The diagonal is then set to
    1 + the row's off-diagonal absolute sum: strictly diagonally dominant, hence nonsingular,
    and (Hermitian) positive definite when ``hermitian``; general nonsymmetric otherwise.

    Parameters
    ----------
    dtype : float32, float64, complex64 or complex128
        Built in double precision, rounded at the end (a Hermitian matrix stays exactly so).
    numbering : {"pixel", "component"}
        As for :func:`horn_schunck`: node ``p * k + a`` or ``a * h * w + p``.

    >>> import numpy as np
    >>> from ssi_sparse.problems import block_stencil_random
    >>> A = block_stencil_random(6, 5, 3, dtype=np.complex64)
    >>> A.shape, A.dtype, bool(abs(A - A.conj().T).max() == 0)
    ((90, 90), dtype('complex64'), True)
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "fc":
        raise ValueError(f"dtype must be a real or complex floating type, got {dtype}")
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((h, w, k, k, 9))
    if dtype.kind == "c":
        B = B + 1j * rng.standard_normal(B.shape)
    A = _block_stencil_csr(B)
    if hermitian:
        A = (A + A.conj().T) / 2
    A = sp.csr_array(A)
    diagonal = A.diagonal()
    A.setdiag(1 + abs(A).sum(axis=1) - abs(diagonal))
    return _renumber(A.astype(dtype), k, numbering)
