"""ssi_sparse: fast direct solves of sparse linear systems on image grids.

A SciPy-compatible backend: matrices that are 3x3-stencil operators on an H x W grid are solved
by the Schwarz-Schur involution (batched dense eliminations of boxes and Schur-complement merges
of neighbouring boxes); anything else falls back to SciPy.
"""

from ._adjoint import solve_backward
from ._errors import NotGridStructuredError, SingularMatrixError
from ._factor import GridFactor, factorize
from ._frontend import factorized, spsolve
from ._grid import GridSpec, detect_grid
from ._patch import patch_scipy

__all__ = [
    "GridFactor",
    "GridSpec",
    "NotGridStructuredError",
    "SingularMatrixError",
    "detect_grid",
    "factorize",
    "factorized",
    "patch_scipy",
    "solve_backward",
    "spsolve",
]

__version__ = "0.1.0"
