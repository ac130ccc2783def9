"""Backend kernels: batched dense elimination of one class of frontal matrices.

A frontal matrix is ``F = [[S, S_R], [R_S, R]]`` with ``S`` (s x s) the block eliminated here.
``eliminate`` returns what the solve phase needs, ``(S^-1, X = S^-1 S_R, R_S)``, and the Schur
complement ``D = R - R_S X`` handed to the parent.  For Hermitian frontals ``R_S = S_R^H`` is
not stored (the up sweep uses ``X^H``).

Why explicit inverses: on the CPU a stacked LAPACK inverse followed by a stacked ``matmul``
measured as fast as ``gesv`` at every block size of the tree (9 x 9 to 1025 x 1025, see
``bench/``), and it turns every later solve into batched matrix products, the fastest thing
both NumPy and CuPy do.  Accuracy is guarded: every block's reciprocal condition number is
computed from the inverse, and a block with rcond below ``s * eps`` is refused as
numerically singular; the solve checks its residual and refines (see ``_engine``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._errors import SingularMatrixError
from .._tuning import CHUNK_BYTES

__all__ = [
    "EliminatedBlocks",
    "allocate_blocks",
    "check_rcond",
    "eliminate",
    "exactly_singular",
    "matrix_h",
    "matrix_t",
]


def matrix_t(xp, a):
    return xp.matrix_transpose(a)


def matrix_h(xp, a):
    t = xp.matrix_transpose(a)
    # conj copies even real arrays: only complex ones need it
    return xp.conj(t) if xp.isdtype(a.dtype, "complex floating") else t


@dataclass(eq=False)
class EliminatedBlocks:
    """Stored result of eliminating one class: what the up and down sweeps read."""

    s_inv: object  # (P, s, s)
    x: object  # (P, s, r)  S^-1 S_R
    r_s: object  # (P, r, s) or None when the frontal is Hermitian
    min_rcond: float

    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in (self.s_inv, self.x, self.r_s) if a is not None)

    def up(self, xp, front, trans):
        """Condense one class's right-hand sides in place, ``front`` (P, f, k): its eliminated
        rows ``[:, :s]`` become what :meth:`down` needs, its boundary rows ``[:, s:]`` lose
        the eliminated unknowns' contribution (``trans`` 'N' or 'T'; Hermitian blocks only
        'N')."""
        s = self.s_inv.shape[1]
        f_S = front[:, :s, :]
        if trans == "N":
            y = self.s_inv @ f_S
            upd = (matrix_h(xp, self.x) @ f_S) if self.r_s is None else (self.r_s @ y)
            front[:, :s, :] = y
        else:
            upd = matrix_t(xp, self.x) @ f_S
        front[:, s:, :] = front[:, s:, :] - upd

    def slogdet(self, xp):
        """``(sign, log|det|)`` (host arrays, one per box) of this class's eliminated blocks
        ``S``, from their stored inverses: det S = 1 / det S^-1."""
        sign, logabs = xp.linalg.slogdet(self.s_inv)
        to_host = getattr(xp, "asnumpy", np.asarray)
        return np.conj(to_host(sign)), -to_host(logabs).astype(np.float64)

    def inverse_frontal(self, xp, Z_RR):
        """The inverse of the matrix on this class's frontal nodes, ``[[Z_SS, Z_SR], [Z_RS,
        Z_RR]]`` (P, f, f), from its boundary part ``Z_RR`` (P, r, r): the eliminated nodes
        couple only to the boundary once the boxes below are gone, so ``Z_SR = -X Z_RR``,
        ``Z_RS = -Z_RR R_S S^-1``, ``Z_SS = S^-1 - X Z_RS`` (selected inversion)."""
        Y = matrix_h(xp, self.x) if self.r_s is None else self.r_s @ self.s_inv  # R_S S^-1
        Z_SR = -(self.x @ Z_RR)
        Z_RS = -(Z_RR @ Y)
        Z_SS = self.s_inv - self.x @ Z_RS
        return xp.concat([xp.concat([Z_SS, Z_SR], axis=2), xp.concat([Z_RS, Z_RR], axis=2)], axis=1)

    def down(self, xp, front, trans):
        """Back-substitute in place: ``front[:, s:]`` holds the boundary values, ``front[:, :s]``
        what :meth:`up` left there, which the eliminated unknowns' values replace."""
        s = self.s_inv.shape[1]
        kept, u_R = front[:, :s, :], front[:, s:, :]
        if trans == "N":
            front[:, :s, :] = kept - self.x @ u_R
            return
        rhs = kept - matrix_t(xp, self.r_s) @ u_R if u_R.shape[1] else kept
        front[:, :s, :] = matrix_t(xp, self.s_inv) @ rhs


def _rcond(xp, S, S_inv, a_norm):
    """Reciprocal infinity-norm condition number of every block, measured against ``A`` too.

    ``S^-1`` is a diagonal block of the inverse of a principal submatrix of ``A``, so
    ``|S^-1| |A|`` bounds that submatrix's condition number from below: a tiny pivot left
    after cancellation (a 1 x 1 block is always perfectly conditioned by itself) is caught.
    (Row sums: contiguous reductions, cheaper than the 1-norm's column sums.)
    """
    norm_s = xp.max(xp.sum(xp.abs(S), axis=-1), axis=-1)
    norm_inv = xp.max(xp.sum(xp.abs(S_inv), axis=-1), axis=-1)
    return 1.0 / (xp.maximum(norm_s, a_norm) * norm_inv)




def allocate_blocks(xp, P, s, r, dtype, hermitian) -> EliminatedBlocks:
    """Uninitialized storage for one class's eliminated blocks (filled chunk by chunk)."""
    return EliminatedBlocks(
        xp.empty((P, s, s), dtype=dtype),
        xp.empty((P, s, r), dtype=dtype),
        None if hermitian else xp.empty((P, r, s), dtype=dtype),
        1.0,
    )


def exactly_singular(where: str) -> SingularMatrixError:
    return SingularMatrixError(
        f"zero pivot in {where}: the matrix is exactly singular, or this fixed "
        "elimination order meets an exactly singular block",
        exact=True,
    )


def check_rcond(min_rcond: float, s: int, eps: float, where: str) -> None:
    """Refuse a class whose worst block is numerically singular.

    Numerical rank test as in ``numpy.linalg.matrix_rank``: a block closer than ``s * eps`` to
    singular has no reliable digits (a pure-Neumann Laplacian's root block lands here).
    """
    tol = s * eps
    if not (min_rcond >= tol):  # also catches NaN from an exactly singular block
        raise SingularMatrixError(
            f"matrix is numerically singular: a block of {where} has reciprocal condition "
            f"number {min_rcond:.2e} < {s} * eps = {tol:.2e} (relative to the matrix)",
            exact=min_rcond == 0.0,
        )


def eliminate(xp, F, s: int, hermitian: bool, a_norm: float, where: str, out=None):
    """Eliminate the leading ``s`` unknowns of every frontal in the batch ``F`` (P, f, f).

    ``F`` is overwritten in place: afterwards ``F[:, s:, s:]`` holds the Schur complement
    ``D`` handed to the parent.  Returns the stored blocks; raises :class:`SingularMatrixError` naming ``where``
    when a block is exactly or numerically singular.
    """
    P, f, _ = F.shape
    r = f - s
    S = F[:, :s, :s]
    S_R = F[:, :s, s:]
    try:
        S_inv = xp.linalg.inv(S)
    except np.linalg.LinAlgError:
        raise exactly_singular(where) from None
    rcond = _rcond(xp, S, S_inv, a_norm)
    min_rcond = float(xp.min(rcond)) if P else 1.0
    check_rcond(min_rcond, s, float(xp.finfo(F.dtype).eps), where)
    if out is None:
        X = S_inv @ S_R
        R_S = None if hermitian else xp.asarray(F[:, s:, :s], copy=True)
    else:
        out.s_inv[...] = S_inv
        S_inv, X, R_S = out.s_inv, out.x, out.r_s
        if xp is np:
            np.matmul(S_inv, S_R, out=X)
        else:
            X[...] = S_inv @ S_R
        if R_S is not None:
            R_S[...] = F[:, s:, :s]
    itemsize = xp.finfo(F.dtype).bits // 8 * (2 if xp.isdtype(F.dtype, "complex floating") else 1)
    step = max(1, CHUNK_BYTES // max(1, r * max(r, s) * itemsize))
    for c0 in range(0, P, step):
        c1 = min(P, c0 + step)
        left = matrix_h(xp, S_R[c0:c1, ...]) if hermitian else R_S[c0:c1, ...]
        F[c0:c1, s:, s:] -= left @ X[c0:c1, ...]
    return EliminatedBlocks(S_inv, X, R_S, min_rcond)
