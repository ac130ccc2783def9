"""Exceptions raised by ssi_sparse (stable names: the front end maps them to SciPy's behaviour)."""

import numpy as np

__all__ = ["NotGridStructuredError", "SingularMatrixError"]


class NotGridStructuredError(ValueError):
    """The matrix is not a 3x3-stencil operator on an H x W grid (or not on the grid given)."""


class SingularMatrixError(np.linalg.LinAlgError):
    """A block met during elimination is exactly or numerically singular.

    Attributes
    ----------
    exact : bool
        True for an exactly zero pivot (SciPy's "exactly singular"), False when the block is
        only numerically singular (reciprocal condition number below machine epsilon) or the
        solve could not reach a small residual.
    """

    def __init__(self, message, exact=False):
        super().__init__(message)
        self.exact = exact

    def __reduce__(self):  # keep ``exact`` across processes (MPI, Dask)
        return type(self), (str(self), self.exact)
