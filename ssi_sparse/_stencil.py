"""Operations on the stencil array ``V`` (n x 9) of a row-major H x W grid.

``V[i, (dr + 1) * 3 + (dc + 1)]`` couples pixel ``i = (r, c)`` to ``(r + dr, c + dc)``.
Everything here is a handful of shifted, whole-grid array operations (no sparse matrix needed):
the product ``A @ x`` for residuals, the Hermitian test, and symmetric equilibration.
"""

from __future__ import annotations

import numpy as np

from ._plan import STENCIL_OFFSETS

__all__ = [
    "stencil_matvec",
    "transpose_stencil",
    "is_hermitian", "equilibrate", "stencil_norm_inf", "stencil_to_csr"]


def _neighbour_views(xp, grid_values, shape):
    """For each slot, the values at (r + dr, c + dc) (zero outside), as (H, W, ...) arrays."""
    h, w = shape
    pad = xp.zeros((h + 2, w + 2) + tuple(grid_values.shape[2:]), dtype=grid_values.dtype)
    pad[1:-1, 1:-1, ...] = grid_values
    for dr, dc in STENCIL_OFFSETS.tolist():
        yield pad[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w, ...]


def stencil_matvec(xp, V, shape, x):
    """``A @ x`` for ``x`` of shape (n, k)."""
    h, w = shape
    k = x.shape[1]
    xg = xp.reshape(x, (h, w, k))
    Vg = xp.reshape(V, (h, w, 9))
    out = xp.zeros((h, w, k), dtype=xp.result_type(V.dtype, x.dtype))
    for slot, shifted in enumerate(_neighbour_views(xp, xg, shape)):
        out += Vg[:, :, slot : slot + 1] * shifted
    return xp.reshape(out, (h * w, k))


def transpose_stencil(xp, V, shape):
    """Stencil array of ``A^T``: ``A^T[i, j] = A[j, i] = V[j, opposite slot]``."""
    h, w = shape
    Vg = xp.reshape(V, (h, w, 9))
    cols = [shifted[:, :, 8 - slot] for slot, shifted in enumerate(_neighbour_views(xp, Vg, shape))]
    return xp.reshape(xp.stack(cols, axis=2), (h * w, 9))


def is_hermitian(xp, V, shape) -> bool:
    """True when ``A[i, j] == conj(A[j, i])`` for every stored coupling, exactly.

    Slot ``k`` of pixel ``i`` and slot ``8 - k`` of its neighbour hold the pair, so five
    slots (the diagonal and one of each opposite pair) decide; stops at the first mismatch.
    """
    h, w = shape
    Vg = xp.reshape(V, (h, w, 9))
    for slot, shifted in enumerate(_neighbour_views(xp, Vg, shape)):
        if slot > 4:
            break
        # outside the grid the neighbour's slot reads zero, as A's missing entry does
        if not bool(xp.all(Vg[:, :, slot] == xp.conj(shifted[:, :, 8 - slot]))):
            return False
    return True


def equilibrate(xp, V, shape):
    """Symmetric diagonal scaling ``S A S`` with ``S = diag(1 / sqrt(max_j |A_ij|))``.

    Keeps Hermitian matrices Hermitian and brings rows whose entries span many decades to a
    common scale, so block condition numbers measure the problem, not its units.  Returns
    ``(V_scaled, s)``, or ``(V, None)`` if a row is entirely zero (exactly singular).
    """
    h, w = shape
    row_max = xp.max(xp.abs(V), axis=1)
    if not bool(xp.all(row_max > 0)):
        return V, None
    s = 1.0 / xp.sqrt(row_max)
    s = xp.astype(s, row_max.dtype)
    sg = xp.reshape(s, (h, w, 1))
    s_nb = xp.concat([v for v in _neighbour_views(xp, sg, shape)], axis=2)
    # one product s_i * s_j per entry, so that entries (i, j) and (j, i) round identically
    # and an exactly Hermitian matrix stays exactly Hermitian
    Vs = V * (xp.reshape(s, (-1, 1)) * xp.reshape(s_nb, (-1, 9)))
    return xp.astype(Vs, V.dtype), s


def stencil_norm_inf(xp, V) -> float:
    return float(xp.max(xp.sum(xp.abs(V), axis=1)))


def stencil_to_csr(V, shape):
    """The CSR matrix of a stencil array (NumPy only; for tests and the gradient code)."""
    import scipy.sparse as sp

    h, w = shape
    n = h * w
    r, c = np.divmod(np.arange(n), w)
    rows, cols, vals = [], [], []
    for slot, (dr, dc) in enumerate(STENCIL_OFFSETS.tolist()):
        ok = (r + dr >= 0) & (r + dr < h) & (c + dc >= 0) & (c + dc < w) & (V[:, slot] != 0)
        i = np.flatnonzero(ok)
        rows.append(i)
        cols.append((r[i] + dr) * w + c[i] + dc)
        vals.append(V[i, slot])
    return sp.csr_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
