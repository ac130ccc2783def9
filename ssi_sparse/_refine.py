"""Iterative refinement against the exact stencil residual, and the refusal of unsolved systems.

Shared by the one-process factor (:mod:`._factor`) and the distributed one (:mod:`.mpi`):
they differ only in how a solve, a product and a column maximum are computed.
"""

from __future__ import annotations

import numpy as np

from ._errors import SingularMatrixError

__all__ = ["refine", "refuse_unsolved"]


def _column_max(xp, a):
    return xp.max(a, axis=0)


def refine(xp, solve, matvec, B, norm_inf: float, eps: float, max_steps: int, column_max=None):
    """``X = solve(B)``, then ``X += solve(B - matvec(X))`` until the normwise backward error
    ``|b - A x| / (|A| |x| + |b|)`` (infinity norms, per column) is below ``8 eps`` or
    ``max_steps`` corrections were made.  ``column_max(a)``: the maximum of every column of
    ``a`` over all of ``B``'s rows (for rows spread over processes).

    Returns ``(X, R, eta, steps)``: the answer, its last residual, its backward error.
    """
    column_max = column_max or (lambda a: _column_max(xp, a))
    X = solve(B)
    b_norm = column_max(xp.abs(B))
    for step in range(max_steps + 1):
        R = B - matvec(X)
        r_norm = column_max(xp.abs(R))
        denom = norm_inf * column_max(xp.abs(X)) + b_norm
        eta = float(xp.max(r_norm / xp.where(denom > 0, denom, 1.0)))
        if eta <= 8 * eps or step == max_steps:
            break
        X = X + solve(R)
    return X, R, eta, step


def refuse_unsolved(xp, R, B, inv_rows, dtype, steps: int, eta: float, column_max=None) -> None:
    """Raise :class:`SingularMatrixError` unless ``|D^-1 (b - A x)| <= eps**(1/4) |D^-1 b|``
    per column, ``D`` the row norms of ``op(A)`` (``inv_rows`` their reciprocals, (n, 1)).

    A singular system's garbage answer is huge, which keeps its normwise backward error
    tiny, so the backward error alone cannot tell; legitimately ill-conditioned systems
    (cond ~ 1e10, residual ~ 1e-8) still pass: at most half the digits may be lost in the
    residual itself.
    """
    column_max = column_max or (lambda a: _column_max(xp, a))
    eps = float(np.finfo(dtype).eps)
    r_rows = column_max(xp.abs(R) * inv_rows)
    b_rows = column_max(xp.abs(B) * inv_rows)
    relative = float(xp.max(r_rows / xp.where(b_rows > 0, b_rows, 1.0)))
    if not (relative <= eps**0.25):  # also NaN
        raise SingularMatrixError(
            f"matrix is numerically singular for {np.dtype(dtype)}: after {steps} refinement "
            f"steps |b - A x| / |b| = {relative:.2e} (backward error {eta:.2e})"
        )
