"""Iterative refinement against the exact stencil residual, and the refusal of unsolved systems.

Shared by the one-process factor (:mod:`ssi_sparse._api.factor`) and the distributed one (:mod:`.mpi`):
they differ only in how a solve, a product and the maximum over all processes are computed.
"""

from __future__ import annotations

import numpy as np

from . import native
from .._errors import SingularMatrixError

__all__ = ["column_absmax", "refine", "refuse_unsolved"]


def column_absmax(xp, a, weights=None):
    """``max_i |a[i, j]| * weights[i]`` per column of ``a`` (n, k) over this process's rows
    (``weights`` (n, 1) or None); one native pass for NumPy arrays."""
    if xp is np and (out := native.column_absmax(a, weights)) is not None:
        return out
    if a.shape[0] == 0:
        return xp.zeros(a.shape[1])
    m = xp.abs(a) if weights is None else xp.abs(a) * weights
    return xp.max(m, axis=0)


def refine(xp, solve, matvec, B, norm_inf: float, eps: float, max_steps: int, combine=None):
    """``X = solve(B)``, then ``X += solve(B - matvec(X))`` until the normwise backward error
    ``|b - A x| / (|A| |x| + |b|)`` (infinity norms, per column) is below ``8 eps`` or
    ``max_steps`` corrections were made.  ``combine(m)``: the maximum over all processes
    of per-column maxima ``m`` (rows spread over processes); None for one process.

    Returns ``(X, R, eta, steps)``: the answer, its last residual, its backward error.
    """
    norm = _norm(xp, combine)
    X = solve(B)
    b_norm = norm(B)
    for step in range(max_steps + 1):
        R = matvec(X)
        if xp is np:  # in place: no fresh memory per step
            np.subtract(B, R, out=R)
        else:
            R = B - R
        denom = norm_inf * norm(X) + b_norm
        eta = float(xp.max(norm(R) / xp.where(denom > 0, denom, 1.0)))
        if eta <= 8 * eps or step == max_steps:
            break
        X += solve(R)  # X is the solves' own array
    return X, R, eta, step


def refuse_unsolved(xp, R, B, inv_rows, dtype, steps: int, eta: float, combine=None) -> None:
    """Raise :class:`SingularMatrixError` unless ``|D^-1 (b - A x)| <= eps**(1/4) |D^-1 b|``
    per column, ``D`` the row norms of ``op(A)`` (``inv_rows`` their reciprocals, (n, 1)).

    A singular system's garbage answer is huge, which keeps its normwise backward error
    tiny, so the backward error alone cannot tell; legitimately ill-conditioned systems
    (cond ~ 1e10, residual ~ 1e-8) still pass: at most half the digits may be lost in the
    residual itself.
    """
    norm = _norm(xp, combine)
    eps = float(np.finfo(dtype).eps)
    r_rows = norm(R, inv_rows)
    b_rows = norm(B, inv_rows)
    relative = float(xp.max(r_rows / xp.where(b_rows > 0, b_rows, 1.0)))
    if not (relative <= eps**0.25):  # also NaN
        raise SingularMatrixError(
            f"matrix is numerically singular for {np.dtype(dtype)}: after {steps} refinement "
            f"steps |b - A x| / |b| = {relative:.2e} (backward error {eta:.2e})"
        )


def _norm(xp, combine):
    if combine is None:
        return lambda a, weights=None: column_absmax(xp, a, weights)
    return lambda a, weights=None: combine(column_absmax(xp, a, weights))
