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

from ._plan import STENCIL_OFFSETS
from ._stencil import stencil_to_csr

__all__ = [
    "diffusion_2d", "random_spd_9pt", "convection_diffusion_2d", "helmholtz_2d",
    "blob_mask", "ring_mask", "masked_laplacian",
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
