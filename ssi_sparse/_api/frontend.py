"""SciPy-compatible front end: ``spsolve`` and ``factorized`` with SciPy's contract.

Validate and convert exactly as ``scipy.sparse.linalg`` does, then send grid-structured
matrices to the engine and everything else to SciPy (``_fallback``), unchanged.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict

import numpy as np
import scipy.sparse as sp
from scipy.sparse import SparseEfficiencyWarning

from . import fallback as _fallback
from .. import _tuning
from .._backend import is_cupy_array
from .._errors import NotGridStructuredError, SingularMatrixError
from .factor import factorize

__all__ = ["spsolve", "factorized"]

_ENGINE_DTYPES = frozenset(np.dtype(c) for c in "fdFD")


_SIZES_MET: OrderedDict = OrderedDict()  # (unknowns, stored entries) of recent small matrices
_SIZES_KEPT = 64
_SIZES_LOCK = threading.Lock()


def _large_enough(A) -> bool:
    """Whether a matrix with no grid given is worth the engine by its size: from
    ``ENGINE_MIN_SIZE_FIRST`` unknowns always, from ``ENGINE_MIN_SIZE`` once a matrix of its
    size came before (the first one pays the grid's plan; see :mod:`ssi_sparse._tuning`)."""
    n = A.shape[0]
    if n < _tuning.ENGINE_MIN_SIZE:
        return False
    if n >= _tuning.ENGINE_MIN_SIZE_FIRST:
        return True
    key = (n, A.nnz)
    with _SIZES_LOCK:
        met = key in _SIZES_MET
        _SIZES_MET[key] = None
        _SIZES_MET.move_to_end(key)
        while len(_SIZES_MET) > _SIZES_KEPT:
            _SIZES_MET.popitem(last=False)
    return met


def _engine_factor(A, grid, order="C"):
    """``(factor, found_singular)``: the engine's factorization of ``A``, or None when SciPy
    should answer instead (``found_singular`` says the engine met a singular block)."""
    if A.dtype not in _ENGINE_DTYPES or (grid is None and not _large_enough(A)):
        return None, False
    try:
        return factorize(A, grid=grid, order=order), False
    except NotGridStructuredError:
        if grid is not None:
            raise
        return None, False
    except SingularMatrixError:
        # the engine eliminates in a fixed order without pivoting across blocks: a singular
        # block does not prove A singular, so SciPy's pivoting LU decides (and is checked)
        return None, True


def spsolve(A, b, permc_spec=None, use_umfpack=True, *, grid=None, order="C"):
    """Solve the sparse linear system ``A x = b``; a drop-in for SciPy's ``spsolve``.

    Grid-structured ``A`` (a 3x3-stencil operator on an H x W grid, 5- or 9-point) of at
    least ``ENGINE_MIN_SIZE_FIRST`` unknowns, or of ``ENGINE_MIN_SIZE`` when a matrix of its
    size came before (:mod:`ssi_sparse._tuning`: the first one would pay the grid's plan), is
    solved by the Schwarz-Schur engine; anything else goes to
    :func:`scipy.sparse.linalg.spsolve` unchanged.

    Parameters
    ----------
    A : sparse matrix or array, or ndarray, shape (n, n)
        Converted to CSC (with SciPy's ``SparseEfficiencyWarning``) unless CSR or CSC.
    b : ndarray or sparse matrix or array, shape (n,) or (n, k)
        Right-hand side(s). A vector ``(n,)`` or ``(n, 1)`` gives a 1-D result.
    permc_spec, use_umfpack
        Passed to SciPy when it answers; ignored by the engine (its ordering is geometric).
    grid : tuple of int, optional
        ``(H, W)``: use the engine on this grid (skips detection and the size threshold).
    order : {'C', 'F'}
        Pixel numbering of ``grid``.

    Returns
    -------
    x : ndarray or sparse array or matrix
        As SciPy returns it: dtype ``np.promote_types(A.dtype, b.dtype)``; sparse ``b`` gives
        a sparse result of ``A``'s class.

    Warns
    -----
    MatrixRankWarning
        If ``A`` is singular (the result is all NaN).  Unlike SciPy, a numerically singular
        matrix whose answer would have a large residual is reported too.

    Examples
    --------
    >>> import numpy as np
    >>> from ssi_sparse import spsolve
    >>> from ssi_sparse.problems import diffusion_2d
    >>> A = diffusion_2d(100, 80)
    >>> b = np.ones(A.shape[0])
    >>> x = spsolve(A, b)
    >>> bool(np.linalg.norm(A @ x - b) <= 1e-10 * np.linalg.norm(b))
    True
    """
    if is_cupy_array(A) or is_cupy_array(b):
        return _spsolve_cupy(A, b, grid, order)
    if not (sp.issparse(A) and A.format in ("csr", "csc")) and not _fallback.is_pydata(A):
        if np.ndim(A) != 2 and not sp.issparse(A):
            return _fallback.spsolve(A, b, permc_spec, use_umfpack)
        A = sp.csc_array(A)
        warnings.warn(
            "spsolve requires A be CSC or CSR matrix format", SparseEfficiencyWarning, stacklevel=2
        )
    if _fallback.is_pydata(A) or _fallback.is_pydata(b):
        return _fallback.spsolve(A, b, permc_spec, use_umfpack)
    b_is_sparse = sp.issparse(b)
    b_arr = b if b_is_sparse else np.asarray(b)
    if A.ndim != 2 or A.shape[0] != A.shape[1] or b_arr.ndim not in (1, 2) or (
        A.shape[0] != b_arr.shape[0]
    ):
        return _fallback.spsolve(A, b, permc_spec, use_umfpack)  # SciPy's own errors
    result_dtype = np.promote_types(A.dtype, b_arr.dtype)
    factor, singular = _engine_factor(A.astype(result_dtype, copy=False), grid, order)
    if singular:
        return _fallback.checked_spsolve(A, b, permc_spec, use_umfpack, stacklevel=4)
    if factor is None:
        return _fallback.spsolve(A, b, permc_spec, use_umfpack)

    b_is_vector = b_arr.ndim == 1 or b_arr.shape[1] == 1
    dense_b = b_arr.toarray() if b_is_sparse else b_arr
    x = _solve_or_nan(factor, dense_b.astype(result_dtype, copy=False), stacklevel=3)
    if b_is_vector:
        return x.ravel()
    if b_is_sparse:
        rows, cols = np.nonzero(x)
        return A.__class__((x[rows, cols], (rows, cols)), shape=b_arr.shape, dtype=result_dtype)
    return x


def _spsolve_cupy(A, b, grid, order):
    """cupyx input stays on the GPU: the engine there, else cupyx's own spsolve."""
    try:
        factor = factorize(A, grid=grid, order=order, backend="gpu")
    except NotGridStructuredError:
        if grid is not None:
            raise
        import cupyx.scipy.sparse.linalg as cpla

        return cpla.spsolve(A, b)
    except SingularMatrixError as exc:
        import cupy
        from scipy.sparse.linalg import MatrixRankWarning

        warnings.warn(f"Matrix is singular: {exc}", MatrixRankWarning, stacklevel=3)
        return cupy.full(b.shape, cupy.nan, dtype=np.promote_types(A.dtype, b.dtype))
    x = _solve_or_nan(factor, b, stacklevel=4)
    return x.ravel() if x.ndim == 2 and x.shape[1] == 1 else x


def _solve_or_nan(factor, b, stacklevel):
    try:
        return factor.solve(b)
    except SingularMatrixError as exc:
        from scipy.sparse.linalg import MatrixRankWarning

        warnings.warn(f"Matrix is numerically singular: {exc}", MatrixRankWarning, stacklevel=stacklevel)
        full = factor.backend.xp.full if is_cupy_array(b) else np.full
        return full(b.shape, np.nan, dtype=np.promote_types(factor.dtype, b.dtype))


def factorized(A, *, grid=None, order="C"):
    """Return a function solving ``A x = b`` with ``A`` factorized once; a drop-in for
    :func:`scipy.sparse.linalg.factorized`.

    Grid-structured ``A`` (see :func:`spsolve`) uses the engine's factorization; anything else
    SciPy's.  The returned ``solve(b)`` takes an ndarray of shape ``(n,)`` or ``(n, k)``.

    Raises
    ------
    RuntimeError
        "Factor is exactly singular", as SciPy does.

    Examples
    --------
    >>> import numpy as np
    >>> from ssi_sparse import factorized
    >>> from ssi_sparse.problems import diffusion_2d
    >>> A = diffusion_2d(100, 80)
    >>> solve = factorized(A)
    >>> x = solve(np.ones(A.shape[0]))
    """
    if sp.issparse(A) and A.ndim == 2 and A.shape[0] == A.shape[1]:
        # SciPy upcasts integer matrices to double
        dtype = np.dtype(np.float64) if A.dtype.kind in "biu" else A.dtype
        factor, singular = _engine_factor(A.astype(dtype, copy=False), grid, order)
        if singular:
            return _fallback.checked_factorized(A)
        if factor is not None:
            return _FactorizedSolve(factor)
    return _fallback.factorized(A)


class _FactorizedSolve:
    """``solve(b)`` of a factorized grid matrix with SciPy's argument checks."""

    def __init__(self, factor):
        self.factor = factor

    def __call__(self, b):
        if not isinstance(b, np.ndarray):
            raise TypeError(f"argument 1 must be numpy.ndarray, not {type(b).__name__}")
        # SciPy's checks in SciPy's order, with its messages
        if not np.can_cast(b.dtype, self.factor.dtype, casting="safe"):
            raise TypeError(
                f"Cannot cast array data from {b.dtype!r} to {self.factor.dtype!r} "
                "according to the rule 'safe'"
            )
        if b.ndim > 2:
            raise ValueError("object too deep for desired array")
        if b.ndim not in (1, 2) or b.shape[0] != self.factor.shape[0]:
            raise ValueError("b is of incompatible size")
        return _solve_or_nan(self.factor, b.astype(self.factor.dtype), stacklevel=3)
