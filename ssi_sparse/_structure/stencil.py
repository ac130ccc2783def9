"""Operations on the stencil array ``V`` of a row-major H x W grid with k unknowns per pixel.

Node ``p * k + a`` is component ``a`` of pixel ``p = r * W + c``.  ``V`` has ``H * W * k * k``
rows of 9 slots: ``V[(p * k + a) * k + b, (dr + 1) * 3 + (dc + 1)]`` couples node ``(p, a)`` to
node ``(p + (dr, dc), b)`` (for ``k = 1`` simply ``V[p, slot]``).  Everything here is a handful
of shifted, whole-grid array operations (no sparse matrix needed): the product ``A @ x`` for
residuals, the Hermitian test, symmetric equilibration.  ``shape`` is ``(H, W)`` or
``(H, W, k)``.
"""

from __future__ import annotations

import numpy as np

from .._engine import native
from .._planning.plan import STENCIL_OFFSETS
from .._engine.threads import parallel_map

__all__ = [
    "stencil_matvec",
    "transpose_stencil",
    "is_hermitian", "equilibrate", "scale_couplings", "stencil_max_abs", "stencil_norm_inf", "stencil_row_sums", "stencil_to_csr"]


def _dims(shape):
    h, w, *rest = shape
    return h, w, (rest[0] if rest else 1)


def _neighbour_views(xp, grid_values, shape):
    """For each slot, the values at (r + dr, c + dc) (zero outside), as (H, W, ...) arrays."""
    h, w = shape[:2]
    pad = xp.zeros((h + 2, w + 2) + tuple(grid_values.shape[2:]), dtype=grid_values.dtype)
    pad[1:-1, 1:-1, ...] = grid_values
    for dr, dc in STENCIL_OFFSETS.tolist():
        yield pad[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w, ...]


def _blocks(xp, V, shape):
    """``V`` as (H, W, k, k, 9): [pixel, row component, column component, slot]."""
    h, w, k = _dims(shape)
    return xp.reshape(V, (h, w, k, k, 9))


def stencil_matvec(xp, V, shape, x):
    """``A @ x`` for ``x`` of shape (n, m), n = H * W * k."""
    h, w, k = _dims(shape)
    if xp is np and (native_product := native.stencil_matvec(V, (h, w, k), x, *parallel_map())) is not None:
        return native_product
    m = x.shape[1]
    out = xp.zeros((h, w, k, m), dtype=xp.result_type(V.dtype, x.dtype))
    xg = xp.reshape(x, (h, w, k, m))
    Vg = _blocks(xp, V, shape)
    for slot, shifted in enumerate(_neighbour_views(xp, xg, shape)):
        if k == 1:  # a broadcast product beats a batch of 1 x 1 matrix products
            out += Vg[:, :, :, 0, slot : slot + 1] * shifted
        else:
            out += xp.matmul(Vg[..., slot], shifted)
    return xp.reshape(out, (h * w * k, m))


def _swap_components(xp, blocks):
    return blocks if blocks.shape[-1] == 1 else xp.permute_dims(blocks, (0, 1, 3, 2))


def transpose_stencil(xp, V, shape):
    """Stencil array of ``A^T``: ``A^T[(p, a), (q, b)] = A[(q, b), (p, a)]``, the neighbour's
    opposite slot with the components swapped."""
    Vg = _blocks(xp, V, shape)
    cols = [_swap_components(xp, shifted[..., 8 - slot]) for slot, shifted in enumerate(_neighbour_views(xp, Vg, shape))]
    return xp.reshape(xp.stack(cols, axis=-1), V.shape)


def is_hermitian(xp, V, shape) -> bool:
    """True when ``A[i, j] == conj(A[j, i])`` for every stored coupling, exactly.

    Slot ``s`` of pixel ``p`` and slot ``8 - s`` of its neighbour hold the pair, so five
    slots (the diagonal and one of each opposite pair) decide; stops at the first mismatch.
    """
    if xp is np and (native_answer := native.stencil_is_hermitian(V, _dims(shape), *parallel_map())) is not None:
        return native_answer
    Vg = _blocks(xp, V, shape)
    complex_ = xp.isdtype(V.dtype, "complex floating")
    for slot, shifted in enumerate(_neighbour_views(xp, Vg, shape)):
        if slot > 4:
            break
        # outside the grid the neighbour's slot reads zero, as A's missing entry does
        mirror = _swap_components(xp, shifted[..., 8 - slot])
        if not bool(xp.all(Vg[..., slot] == (xp.conj(mirror) if complex_ else mirror))):
            return False
    return True


def stencil_row_sums(xp, V, shape):
    """Absolute row sums of ``A``, one per node (n,)."""
    h, w, k = _dims(shape)
    if xp is np and (native_sums := native.node_reduce(V, (h, w, k), "sum", *parallel_map())) is not None:
        return native_sums
    return xp.sum(xp.reshape(xp.abs(V), (h * w * k, k * 9)), axis=1)


def stencil_max_abs(xp, V, shape) -> float:
    """``max |A_ij|`` over the whole stencil array (no temporary of its size on the CPU)."""
    h, w, k = _dims(shape)
    if xp is np and (native_max := native.node_reduce(V, (h, w, k), "max", *parallel_map())) is not None:
        return float(native_max.max(initial=0))
    return float(xp.max(xp.abs(V)))


def equilibrate(xp, V, shape):
    """Symmetric diagonal scaling ``S A S`` with ``S = diag(1 / sqrt(max_j |A_ij|))``.

    Keeps Hermitian matrices Hermitian and brings rows whose entries span many decades to a
    common scale, so block condition numbers measure the problem, not its units.  Returns
    ``(V_scaled, s)`` with ``s`` one scale per node, or ``(V, None)`` if a row is entirely
    zero (exactly singular).
    """
    h, w, k = _dims(shape)
    row_max = native.node_reduce(V, (h, w, k), "max", *parallel_map()) if xp is np else None
    if row_max is None:
        row_max = xp.max(xp.reshape(xp.abs(V), (h * w * k, k * 9)), axis=1)
    if not bool(xp.all(row_max > 0)):
        return V, None
    s = 1.0 / xp.sqrt(row_max)
    s = xp.astype(s, row_max.dtype)
    return xp.astype(scale_couplings(xp, V, s, shape), V.dtype, copy=False), s


def scale_couplings(xp, V, s, shape):
    """``diag(s) A diag(s)``: every coupling ``(i, j)`` times ``s_i s_j`` (``s`` one per node)."""
    h, w, k = _dims(shape)
    if xp is np and (native_scaled := native.scale_stencil(V, s, (h, w, k), *parallel_map())) is not None:
        return native_scaled
    sg = xp.reshape(s, (h, w, k))
    Vg = _blocks(xp, V, shape)
    out = xp.empty(Vg.shape, dtype=xp.result_type(V.dtype, s.dtype))
    for slot, s_nb in enumerate(_neighbour_views(xp, sg, shape)):
        # one product s_i * s_j per entry, so that entries (i, j) and (j, i) round
        # identically and an exactly Hermitian matrix stays exactly Hermitian
        pair = xp.reshape(sg, (h, w, k, 1)) * xp.reshape(s_nb, (h, w, 1, k))
        out[..., slot] = Vg[..., slot] * pair
    return xp.reshape(out, V.shape)


def stencil_norm_inf(xp, V, shape) -> float:
    return float(xp.max(stencil_row_sums(xp, V, shape)))


def stencil_to_csr(V, shape):
    """The CSR matrix of a stencil array, nodes numbered ``p * k + a`` (NumPy only)."""
    import scipy.sparse as sp

    h, w, k = _dims(shape)
    n = h * w * k
    row = np.arange(h * w * k * k)  # stencil row (p * k + a) * k + b
    node, b = np.divmod(row, k)
    p = node // k
    r, c = np.divmod(p, w)
    rows, cols, vals = [], [], []
    for slot, (dr, dc) in enumerate(STENCIL_OFFSETS.tolist()):
        ok = (r + dr >= 0) & (r + dr < h) & (c + dc >= 0) & (c + dc < w) & (V[:, slot] != 0)
        i = np.flatnonzero(ok)
        rows.append(node[i])
        cols.append(((r[i] + dr) * w + c[i] + dc) * k + b[i])
        vals.append(V[i, slot])
    return sp.csr_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
