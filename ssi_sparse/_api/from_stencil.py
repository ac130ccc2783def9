"""The stencil-array front door: factorize a grid operator given by its coefficients.

For programs that hold their operator as per-pixel coefficients and never build a sparse
matrix (networks predicting a stencil, image filters, PDE codes): ``V[r, c, dr + 1, dc + 1]``
couples pixel ``(r, c)`` to ``(r + dr, c + dc)``; with ``k`` unknowns per pixel,
``V[r, c, a, b, dr + 1, dc + 1]`` couples component ``a`` of ``(r, c)`` to component ``b`` of
its neighbour.  The unknowns are numbered pixel-major in row-major pixel order,
``(r * W + c) * k + a``, which is the engine's own numbering: no detection, no permutation.
"""

from __future__ import annotations

import numpy as np

from .._backend import is_cupy_array, select_backend
from .._structure.grid import GridSpec
from .._planning.plan import STENCIL_OFFSETS
from .._structure.stencil import stencil_to_csr

__all__ = ["factorize_stencil", "stencil_spec", "to_csr"]


def _engine_rows(V):
    """``(GridSpec, rows)``: the caller's (H, W, [k, k,] 3, 3) array as the engine's
    (H*W*k*k, 9) stencil rows, couplings that leave the grid dropped."""
    if is_cupy_array(V):
        V = V.get()
    V = np.asarray(V)
    if V.ndim == 4 and V.shape[2:] == (3, 3):
        h, w = V.shape[:2]
        k = 1
    elif V.ndim == 6 and V.shape[4:] == (3, 3) and V.shape[2] == V.shape[3]:
        h, w, k = V.shape[:3]
    else:
        raise ValueError(
            f"stencil array must have shape (H, W, 3, 3) or (H, W, k, k, 3, 3), got {V.shape}"
        )
    if h < 1 or w < 1 or k < 1:
        raise ValueError(f"stencil array must not be empty, got shape {V.shape}")
    if V.dtype.kind not in "biufc":
        raise TypeError(f"unsupported stencil dtype {V.dtype}")
    rows = np.array(V.reshape(h, w, k, k, 9), copy=True)
    r, c = np.arange(h)[:, None], np.arange(w)[None, :]
    for slot, (dr, dc) in enumerate(STENCIL_OFFSETS.tolist()):
        outside = (r + dr < 0) | (r + dr >= h) | (c + dc < 0) | (c + dc >= w)
        rows[outside, :, :, slot] = 0  # zero Dirichlet data beyond the grid
    diagonal = bool(np.any(rows[..., [0, 2, 6, 8]] != 0))
    spec = GridSpec((h, w), "C", "9-point" if diagonal else "5-point", None, k, "pixel", 1)
    return spec, rows.reshape(h * w * k * k, 9)


def stencil_spec(V) -> GridSpec:
    """The :class:`GridSpec` a stencil array describes."""
    return _engine_rows(V)[0]


def to_csr(V):
    """The sparse matrix of a stencil array, as SciPy would see it.

    Parameters
    ----------
    V : array_like, shape (H, W, 3, 3) or (H, W, k, k, 3, 3)
        See :func:`factorize_stencil`.

    Returns
    -------
    scipy.sparse.csr_array, shape (H*W*k, H*W*k)
        Unknowns numbered ``(r * W + c) * k + a``; zero coefficients and couplings that leave
        the grid are not stored.

    Examples
    --------
    >>> import numpy as np
    >>> from ssi_sparse import to_csr
    >>> laplace = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=float)
    >>> A = to_csr(np.broadcast_to(laplace, (4, 5, 3, 3)))
    >>> A.shape, A.nnz
    ((20, 20), 82)
    """
    spec, rows = _engine_rows(V)
    return stencil_to_csr(rows, spec.engine_dims)


def factorize_stencil(V, *, backend=None, factor_dtype=None):
    """Factorize the grid operator given by its stencil coefficients.

    Parameters
    ----------
    V : array_like, shape (H, W, 3, 3) or (H, W, k, k, 3, 3)
        ``V[r, c, dr + 1, dc + 1]``: the coefficient coupling pixel ``(r, c)`` to
        ``(r + dr, c + dc)``; ``V[r, c, a, b, dr + 1, dc + 1]``: component ``a`` of pixel
        ``(r, c)`` to component ``b`` of ``(r + dr, c + dc)``.  Coefficients that reach
        outside the grid are ignored (zero Dirichlet values there), so a constant stencil
        can be broadcast over the image.  float32, float64, complex64 or complex128.
    backend, factor_dtype
        As for :func:`factorize`.

    Returns
    -------
    GridFactor
        Solves for unknowns numbered ``(r * W + c) * k + a`` (``b`` of shape (H*W*k,) or
        (H*W*k, m)); ``refactorize`` takes a new stencil array of the same shape.

    Examples
    --------
    >>> import numpy as np
    >>> from ssi_sparse import factorize_stencil, to_csr
    >>> laplace = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=float)
    >>> V = np.broadcast_to(laplace, (60, 80, 3, 3))
    >>> lu = factorize_stencil(V)
    >>> b = np.ones(60 * 80)
    >>> x = lu.solve(b)
    >>> bool(np.linalg.norm(to_csr(V) @ x - b) < 1e-10 * np.linalg.norm(b))
    True
    """
    from .factor import GridFactor, _engine_dtype

    spec, rows = _engine_rows(V)
    chosen = select_backend(backend, V if is_cupy_array(V) else rows)
    return GridFactor(spec, rows.astype(_engine_dtype(rows.dtype), copy=False), None, chosen, factor_dtype)
