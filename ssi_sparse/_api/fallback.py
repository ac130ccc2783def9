"""Fallback: SciPy's own solvers, for matrices the engine does not take.

Calls go to ``scipy.sparse.linalg`` unchanged (same results, warnings and errors), except when
the engine has already found ``A`` singular: then SciPy's answer is checked, because SuperLU
returns finite garbage without a warning on numerically singular matrices (e.g. a pure-Neumann
Laplacian), and a large backward error is reported as SciPy reports exact singularity.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse.linalg as spla

__all__ = ["is_pydata", "spsolve", "factorized", "checked_spsolve", "checked_factorized"]

# SciPy's functions themselves, bound once: under ``patch_scipy`` the names in
# ``scipy.sparse.linalg`` resolve to ours, and the fallback must not call itself
scipy_spsolve = spla.spsolve
scipy_factorized = spla.factorized


def is_pydata(x) -> bool:
    """A pydata/sparse array (SciPy converts these itself)."""
    return type(x).__module__.split(".")[0] == "sparse" and hasattr(x, "to_scipy_sparse")


def spsolve(A, b, permc_spec=None, use_umfpack=True):
    return scipy_spsolve(A, b, permc_spec=permc_spec, use_umfpack=use_umfpack)


def factorized(A):
    return scipy_factorized(A)


def residual_ok(A, x, b) -> bool:
    """``|b - A x| <= sqrt(eps) |b|`` (max norms): ``x`` really solves the system.

    Used only after the engine met a numerically singular block.  The normwise backward
    error is no test there: a singular system's garbage answer is huge, which makes the
    backward error tiny while ``A x`` is nowhere near ``b``.
    """
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x)
    b = np.asarray(b.toarray() if hasattr(b, "toarray") else b).reshape(x.shape)
    if not np.all(np.isfinite(x)):
        return False
    eps = np.finfo(np.result_type(x.dtype, np.float32)).eps
    r = b - A @ x
    return bool(np.max(np.abs(r), initial=0.0) <= np.sqrt(eps) * np.max(np.abs(b), initial=0.0))


def _rank_warning(stacklevel):
    warnings.warn("Matrix is numerically singular", spla.MatrixRankWarning, stacklevel=stacklevel)


def checked_spsolve(A, b, permc_spec, use_umfpack, stacklevel):
    """SciPy's answer for a matrix the engine found singular, or NaN with a warning."""
    x = spsolve(A, b, permc_spec, use_umfpack)
    dense = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    if not np.all(np.isfinite(dense)) or residual_ok(A, x, b):
        return x  # SciPy found it exactly singular (and warned), or its answer holds
    _rank_warning(stacklevel)
    if hasattr(x, "toarray"):
        return x  # a sparse result has no NaN form; SciPy's warning semantics stop here
    return np.full_like(x, np.nan)


def checked_factorized(A):
    """SciPy's factorization of a matrix the engine found singular; every solve is checked."""
    solve = factorized(A)  # raises RuntimeError("Factor is exactly singular") as SciPy does

    def checked_solve(b):
        x = solve(b)
        if not np.all(np.isfinite(x)) or residual_ok(A, x, b):
            return x
        _rank_warning(3)  # the user's call of checked_solve
        return np.full_like(x, np.nan)

    return checked_solve
