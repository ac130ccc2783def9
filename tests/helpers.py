"""Shared test helpers: random grid-stencil matrices and residuals (imported by the test files)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = [
    "OFFSETS_5",
    "OFFSETS_9",
    "KINDS",
    "grid_index",
    "stencil_matrix",
    "laplacian_5pt",
    "rel_residual",
    "op",
    "magnetic_laplacian",
    "random_rhs",
    "wide",
    "reference_solve",
]

#: (dr, dc) offsets of the 3x3 stencil (centre included).
OFFSETS_9 = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)]
OFFSETS_5 = [(dr, dc) for dr, dc in OFFSETS_9 if dr == 0 or dc == 0]

KINDS = ("spd", "nonsym", "complex", "laplacian")


def grid_index(r, c, H, W, order="C"):
    """Unknown index of pixel (r, c) on an H x W grid numbered in ``order``."""
    if order == "C":
        return r * W + c
    if order == "F":
        return c * H + r
    raise ValueError(f"order must be 'C' or 'F', got {order!r}")


def _edges(H, W, dr, dc):
    """Row/col grid coordinates of every pixel whose neighbour (r+dr, c+dc) is inside."""
    r, c = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    r, c = r.ravel(), c.ravel()
    ok = (r + dr >= 0) & (r + dr < H) & (c + dc >= 0) & (c + dc < W)
    return r[ok], c[ok]


def _random(rng, size, complex_values):
    # values bounded away from zero so that no coupling is accidentally absent
    mag = rng.uniform(0.2, 1.0, size)
    if complex_values:
        return mag * np.exp(2j * np.pi * rng.uniform(0, 1, size))
    return mag * rng.choice([-1.0, 1.0], size)


def stencil_matrix(H, W, rng, kind, dtype, order="C", nine_point=True):
    """A random, spatially varying 3x3-stencil matrix on an H x W grid, as CSR.

    kind:
      'spd'       Hermitian (real symmetric for real dtypes) positive definite: random
                  symmetric couplings, real positive diagonal strictly dominating its row.
      'nonsym'    real nonsymmetric couplings, strictly diagonally dominant (random sign
                  diagonal), hence well conditioned.
      'complex'   complex non-Hermitian, strictly diagonally dominant (dtype must be complex).
      'laplacian' 5-point Dirichlet Laplacian: -1 couplings, 4 on the diagonal
                  (``nine_point`` is ignored).

    Generation is vectorized: a Python loop over the (at most 9) offsets only.
    """
    dtype = np.dtype(dtype)
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}")
    is_complex = dtype.kind == "c"
    if kind == "complex" and not is_complex:
        raise ValueError("kind 'complex' needs a complex dtype")
    if kind == "laplacian":
        nine_point = False
    offsets = [o for o in (OFFSETS_9 if nine_point else OFFSETS_5) if o != (0, 0)]
    n = H * W
    rows, cols, vals = [], [], []
    offdiag_abs = np.zeros(n)

    def add(i, j, v):
        rows.append(i)
        cols.append(j)
        vals.append(v)
        np.add.at(offdiag_abs, i, np.abs(v))

    if kind in ("spd", "laplacian"):
        # symmetric / Hermitian: draw each edge once (forward half), mirror it
        for dr, dc in offsets:
            if (dr, dc) <= (0, 0):
                continue
            r, c = _edges(H, W, dr, dc)
            i = grid_index(r, c, H, W, order)
            j = grid_index(r + dr, c + dc, H, W, order)
            if kind == "laplacian":
                v = -np.ones(i.size)
            else:
                v = _random(rng, i.size, is_complex)
            add(i, j, v)
            add(j, i, np.conj(v))
    else:
        for dr, dc in offsets:
            r, c = _edges(H, W, dr, dc)
            i = grid_index(r, c, H, W, order)
            j = grid_index(r + dr, c + dc, H, W, order)
            add(i, j, _random(rng, i.size, kind == "complex"))

    idx = np.arange(n)
    if kind == "laplacian":
        diag = np.full(n, 4.0)
    elif kind == "spd":
        diag = offdiag_abs * rng.uniform(1.2, 2.0, n) + rng.uniform(0.5, 1.5, n)
    else:
        mag = offdiag_abs * rng.uniform(1.2, 2.0, n) + rng.uniform(0.5, 1.5, n)
        if kind == "complex":
            diag = mag * np.exp(2j * np.pi * rng.uniform(0, 1, n))
        else:
            diag = mag * rng.choice([-1.0, 1.0], n)
    rows.append(idx)
    cols.append(idx)
    vals.append(diag)

    A = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    return A.tocsr().astype(dtype)


def laplacian_5pt(H, W, dtype=np.float64, fmt="csr"):
    """5-point Dirichlet Laplacian (row-major), via Kronecker sums."""
    Th = sp.diags_array([-1.0, 2.0, -1.0], offsets=[-1, 0, 1], shape=(H, H))
    Tw = sp.diags_array([-1.0, 2.0, -1.0], offsets=[-1, 0, 1], shape=(W, W))
    A = sp.kron(Th, sp.eye_array(W)) + sp.kron(sp.eye_array(H), Tw)
    return A.asformat(fmt).astype(dtype)


def op(A, trans="N"):
    """op(A) for trans in 'N', 'T', 'H'."""
    if trans == "N":
        return A
    if trans == "T":
        return A.T
    if trans == "H":
        return A.conj().T
    raise ValueError(trans)


def rel_residual(A, x, b):
    """||A x - b|| / ||b|| (Frobenius over all columns), evaluated in double precision."""
    wide = np.complex128 if (np.iscomplexobj(A.data) or np.iscomplexobj(x)
                             or np.iscomplexobj(b)) else np.float64
    A = sp.csr_array(A).astype(wide)
    x = np.asarray(x).astype(wide)
    b = np.asarray(b).astype(wide)
    r = A @ x - b
    nb = np.linalg.norm(b)
    return float(np.linalg.norm(r) / (nb if nb > 0 else 1.0))


def magnetic_laplacian(H, W, rng, dtype=np.complex128, shift=0.5):
    """Hermitian 5-point 'magnetic' Laplacian: couplings -exp(i theta), diagonal 4 + shift.

    Every row has the same largest entry, so (unlike random SPD matrices) a symmetric diagonal
    equilibration keeps it bit-for-bit Hermitian: it exercises the engine's Hermitian path.
    """
    L = laplacian_5pt(H, W).tocoo()
    up = L.row < L.col
    theta = rng.uniform(0, 2 * np.pi, int(up.sum()))
    U = sp.coo_array((-np.exp(1j * theta), (L.row[up], L.col[up])), shape=L.shape)
    A = U + U.conj().T + (4.0 + shift) * sp.eye_array(H * W)
    return sp.csr_array(A).astype(dtype)


def random_rhs(rng, n, k, dtype):
    """A random right-hand side of shape (n,) (k None) or (n, k), cast to dtype."""
    shape = (n,) if k is None else (n, k)
    b = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        b = b + 1j * rng.standard_normal(shape)
    return b.astype(dtype)


def wide(dtype):
    """The double-precision dtype of the same kind (float64 or complex128)."""
    return np.dtype(np.complex128 if np.dtype(dtype).kind == "c" else np.float64)


def reference_solve(A, b, trans="N"):
    """SciPy's spsolve of op(A) x = b, in double precision, with x shaped like b."""
    import scipy.sparse.linalg as spla

    dt = np.promote_types(wide(A.dtype), wide(np.asarray(b).dtype))
    M = sp.csc_array(op(sp.csr_array(A), trans)).astype(dt)
    x = spla.spsolve(M, np.asarray(b).astype(dt))
    return np.asarray(x).reshape(np.shape(b))


def assert_embedding_is_valid(A, spec):
    """Independent check of an accepted layout: distinct (pixel, component) pairs inside the
    grid, every stored coupling between pixels at most ``spec.radius`` apart (so ``A`` really
    is a stencil operator on that layout)."""
    H, W = spec.shape
    width = W if spec.order == "C" else H
    n, k = A.shape[0], spec.components
    m = n // k
    i = np.arange(n)
    pixel_no, comp = (i // k, i % k) if spec.numbering == "pixel" else (i % m, i // m)
    # a full grid (no pixel list) numbers its pixels in its own order
    pixels = np.arange(m) if spec.pixels is None else np.asarray(spec.pixels)
    assert pixels.shape == (m,) and m * k == n
    pixels = pixels[pixel_no]
    assert pixels.min() >= 0 and pixels.max() < H * W
    assert np.unique(pixels * k + comp).size == n
    coo = sp.coo_array(A)
    r, c = np.divmod(pixels, width)
    assert np.all(np.abs(r[coo.row] - r[coo.col]) <= spec.radius)
    assert np.all(np.abs(c[coo.row] - c[coo.col]) <= spec.radius)


def random_stencil(H, W, dtype, hermitian, seed):
    """A diagonally dominant random (H, W, 3, 3) stencil array, Hermitian if asked."""
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((H, W, 3, 3))
    if np.dtype(dtype).kind == "c":
        V = V + 1j * rng.standard_normal((H, W, 3, 3))
    V[:, :, 1, 1] += 12
    if hermitian:
        # V[r, c, dr, dc] pairs with conj(V[r + dr, c + dc, -dr, -dc])
        M = V.copy()
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                shifted = np.zeros_like(V[:, :, 0, 0])
                r0, r1 = max(0, -dr), H - max(0, dr)
                c0, c1 = max(0, -dc), W - max(0, dc)
                shifted[r0:r1, c0:c1] = np.conj(V[r0 + dr : r1 + dr, c0 + dc : c1 + dc, 1 - dr, 1 - dc])
                M[:, :, 1 + dr, 1 + dc] = (V[:, :, 1 + dr, 1 + dc] + shifted) / 2
        V = M
    return V.astype(dtype)
