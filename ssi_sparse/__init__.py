"""ssi_sparse: fast direct solves of sparse linear systems on image grids.

A SciPy-compatible backend: matrices that are stencil operators on an H x W grid (3x3 or 5x5,
one or several unknowns per pixel, all pixels or a masked domain) are solved
by the Schwarz-Schur involution (batched dense eliminations of boxes and Schur-complement merges
of neighbouring boxes); anything else falls back to SciPy.
"""

from ._api.adjoint import solve_backward
from ._api.batch import factorize_batch
from ._errors import NotGridStructuredError, SingularMatrixError
from ._api.factor import GridFactor, factorize
from ._api.from_stencil import factorize_stencil, to_csr
from ._api.frontend import factorized, spsolve
from ._structure.grid import GridSpec, detect_grid
from ._api.patch import patch_scipy

__all__ = [
    "GridFactor",
    "GridSpec",
    "NotGridStructuredError",
    "SingularMatrixError",
    "detect_grid",
    "factorize",
    "factorize_batch",
    "factorize_stencil",
    "factorized",
    "patch_scipy",
    "solve_backward",
    "spsolve",
    "to_csr",
]

__version__ = "0.1.0"
