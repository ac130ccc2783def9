"""Grid structure: is a sparse matrix a 3x3-stencil operator on (some pixels of) a grid?

A column-major (``order='F'``) H x W grid is the row-major W x H grid with the two axes swapped,
so everything downstream (plan, engine) only knows row-major grids: :class:`GridSpec` keeps the
user's description and the engine's ``(height, width)``.

A *masked* grid has unknowns on a subset of the pixels only (an irregular domain, the pixels a
segmentation left unseeded): ``GridSpec.pixels`` gives the engine-grid pixel of each unknown
(:mod:`._mask` finds it from the pattern when no one says).  The engine solves the whole grid,
absent pixels being decoupled unknowns with zero right-hand side.

The stencil array ``V`` (H*W x 9) holds ``A[i, j]`` for pixel ``i`` and its neighbour ``j`` in
slot ``(dr + 1) * 3 + (dc + 1)`` of the engine's grid; duplicate entries are summed, explicit
zeros are ignored, rows of absent pixels are zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ._errors import NotGridStructuredError
from ._mask import embedding_fits, find_embedding
from ._tuning import MASK_MIN_COVERAGE

__all__ = ["GridSpec", "StencilPattern", "detect_grid", "grid_stencil"]


@dataclass(frozen=True)
class GridSpec:
    """How the unknowns of a matrix are laid out on a grid.

    Attributes
    ----------
    shape : tuple of int
        ``(H, W)``: the grid has H rows and W columns of pixels.
    order : {'C', 'F'}
        ``'C'``: pixel (r, c) is number ``r * W + c``; ``'F'``: number ``c * H + r``.
    stencil : {'5-point', '9-point'}
        Whether any diagonal neighbour is coupled.
    pixels : ndarray of int or None
        Masked grids: the pixel number (in ``order``) of each unknown; None when every pixel
        is an unknown, numbered as its pixel.
    """

    shape: tuple
    order: str = "C"
    stencil: str = "9-point"
    pixels: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def engine_shape(self) -> tuple:
        """Row-major ``(height, width)`` seen by the engine."""
        h, w = self.shape
        return (h, w) if self.order == "C" else (w, h)

    @property
    def n_pixels(self) -> int:
        """Pixels of the whole grid (present or not)."""
        return self.shape[0] * self.shape[1]

    @property
    def n_unknowns(self) -> int:
        """Unknowns of the matrix: the present pixels."""
        return self.n_pixels if self.pixels is None else len(self.pixels)

    @property
    def masked(self) -> bool:
        return self.pixels is not None

    def __eq__(self, other):
        if not isinstance(other, GridSpec):
            return NotImplemented
        same_mask = (self.pixels is None) == (other.pixels is None) and (
            self.pixels is None or np.array_equal(self.pixels, other.pixels)
        )
        return (self.shape, self.order, self.stencil) == (other.shape, other.order, other.stencil) and same_mask

    def __str__(self) -> str:
        where = f"{self.shape[0]}x{self.shape[1]} grid"
        if self.masked:
            where = f"{self.n_unknowns} of the {self.n_pixels} pixels of a {where}"
        return f"{where}, order={self.order!r}, {self.stencil} stencil"


def _coo_parts(A):
    """Rows, columns and values of the stored nonzeros (explicit zeros dropped)."""
    if not (sp.issparse(A)):
        raise TypeError(f"expected a SciPy sparse matrix or array, got {type(A).__name__}")
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"matrix must be square (has shape {A.shape})")
    coo = A.tocoo()
    keep = coo.data != 0
    if not keep.all():
        return coo.row[keep], coo.col[keep], coo.data[keep]
    return coo.row, coo.col, coo.data


def _grid_row(ids, width):
    # float division is exact here (ids < 2**52) and far faster than integer division
    return np.floor((ids + 0.5) / width).astype(np.int64)


def _fits(rows, cols, width):
    """Row/column offsets on a row-major grid of the given width, or None if not 3x3."""
    ri = _grid_row(rows, width)
    rj = _grid_row(cols, width)
    dr = rj - ri
    dc = (cols - rj * width) - (rows - ri * width)
    if dr.size and (np.abs(dr).max() > 1 or np.abs(dc).max() > 1):
        return None
    return dr, dc


def _candidate_widths(rows, cols, n):
    """Row-major widths that could hold every coupling, cheapest grid first."""
    if rows.size == 0:
        return [n]
    reach = int(np.abs(cols - rows).max())
    if reach <= 1:
        return [n]  # a 1 x n strip holds any tridiagonal matrix and costs O(n)
    widths = {w for w in (reach - 1, reach, reach + 1) if w >= 2 and n % w == 0}
    # a thin grid is cheap to solve: cost grows like n * min(H, W)^2
    return sorted(widths, key=lambda w: (min(w, n // w), w))


def _offsets(A, width):
    rows, cols, vals = _coo_parts(A)
    fit = _fits(rows.astype(np.int64), cols.astype(np.int64), width)
    return rows, fit, vals


def detect_grid(A, grid=None, order=None, *, pixels=None, mask=None):
    """Find the H x W grid on which ``A`` is a 3x3-stencil operator.

    Parameters
    ----------
    A : sparse matrix or array, shape (n, n)
        Any SciPy sparse format; duplicate entries are summed and explicit zeros ignored.
    grid : tuple of int, optional
        ``(H, W)`` to check instead of inferring one.
    order : {'C', 'F'}, optional
        Numbering of the pixels; ``'C'`` (row-major) unless given.
    pixels : array_like of int, optional
        With ``grid``: unknown ``i`` sits on pixel ``pixels[i]`` (numbered in ``order``); the
        others are not unknowns (a masked domain).
    mask : array_like of bool, shape (H, W), optional
        Instead of ``grid`` and ``pixels``: the unknowns are the ``True`` pixels, numbered in
        ``order`` (``np.flatnonzero(mask)`` for ``'C'``).

    Returns
    -------
    GridSpec or None
        The grid, or ``None`` when ``A`` does not couple only 3x3 neighbourhoods on any grid
        (or on the one given).  Without ``grid``, a masked grid numbered in row-major or
        column-major order of its pixels is found from the pattern alone (``pixels`` set).

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from ssi_sparse import detect_grid
    >>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(4, 4))
    >>> L = sp.kronsum(T, T)          # 5-point Laplacian of a 4 x 4 grid
    >>> detect_grid(L).shape
    (4, 4)
    """
    try:
        return _detect(A, grid, order, pixels, mask)[0]
    except NotGridStructuredError:
        return None


def _detect(A, grid, order, pixels=None, mask=None):
    """(GridSpec, pixel of each entry's row, dr, dc, vals) or raise NotGridStructuredError."""
    try:
        return _detect_entries(A, grid, order, pixels, mask)
    except NotGridStructuredError:
        if not _may_hold_duplicates(A):
            raise
        # duplicates that cancel are a stored zero, wherever they sit: sum them and retry
        # (only on this rare path, since summing duplicates sorts every entry)
        return _detect_entries(sp.csr_array(A.tocoo().tocsr()), grid, order, pixels, mask)


def _may_hold_duplicates(A) -> bool:
    if A.format in ("csr", "csc"):
        return not A.has_canonical_format
    return A.format in ("coo", "bsr")


def _given_pixels(n, grid, order, pixels, mask):
    """``(grid, pixels)`` from the caller's ``pixels`` or ``mask`` (validated)."""
    if mask is not None:
        if grid is not None or pixels is not None:
            raise ValueError("give either mask, or grid with pixels, not both")
        mask = np.asarray(mask)
        if mask.ndim != 2 or mask.dtype != bool:
            raise ValueError(f"mask must be a 2-D boolean array, got {mask.dtype} {mask.shape}")
        return mask.shape, np.flatnonzero(mask.ravel(order=order or "C"))
    if grid is None:
        raise ValueError("pixels needs grid=(H, W)")
    pixels = np.asarray(pixels)
    if pixels.shape != (n,) or pixels.dtype.kind not in "iu":
        raise ValueError(f"pixels must be {n} integer pixel numbers, got {pixels.dtype} {pixels.shape}")
    return grid, pixels.astype(np.int64)


def _more_than_9_per_line(A) -> bool:
    """Some row (CSR) or column (CSC) stores more than 9 nonzeros: no 3x3 stencil holds it.
    A quick answer from ``indptr`` for the many matrices that are plainly not grids."""
    if A.format not in ("csr", "csc") or not A.has_canonical_format:
        return False
    if np.diff(A.indptr).max(initial=0) <= 9:
        return False
    return bool(A.data.all())  # (stored zeros are dropped by detection: count them out)


def _detect_entries(A, grid, order, pixels, mask):
    if order not in (None, "C", "F"):
        raise ValueError(f"order must be 'C' or 'F', got {order!r}")
    if sp.issparse(A) and A.ndim == 2 and A.shape[0] == A.shape[1] and _more_than_9_per_line(A):
        raise NotGridStructuredError(
            "A is not a 3x3-stencil operator: some row or column couples more than 9 unknowns")
    rows, cols, vals = _coo_parts(A)
    rows = rows.astype(np.int64, copy=False)
    cols = cols.astype(np.int64, copy=False)
    n = A.shape[0]
    if n == 0:
        raise NotGridStructuredError("an empty matrix has no grid")
    if pixels is not None or mask is not None:
        grid, pixels = _given_pixels(n, grid, order, pixels, mask)
        if len(pixels) != n:
            raise ValueError(f"mask has {len(pixels)} pixels set, but A has {n} unknowns")
        order = order or "C"
        h, w = (int(v) for v in grid)
        eh, ew = (h, w) if order == "C" else (w, h)  # a column-major number is row-major on W x H
        if not embedding_fits(rows, cols, eh, ew, pixels):
            raise NotGridStructuredError(
                f"the pixels given are not distinct pixels of the {h}x{w} grid with every "
                f"coupling of A between 3x3 neighbours (order={order!r})"
            )
        return _masked_spec((h, w), order, pixels, rows, cols, vals)
    if grid is not None:
        h, w = (int(v) for v in grid)
        if h < 1 or w < 1 or h * w != n:
            raise ValueError(f"grid {grid} does not have {n} pixels (A has shape {A.shape})")
        order = order or "C"
        width = w if order == "C" else h
        fit = _fits(rows, cols, width)
        if fit is None:
            raise NotGridStructuredError(
                f"A couples pixels that are not 3x3 neighbours on the {h}x{w} grid "
                f"(order={order!r})"
            )
        spec_shape = (h, w)
    else:
        fit = None
        for width in _candidate_widths(rows, cols, n):
            fit = _fits(rows, cols, width)
            if fit is not None:
                break
        if fit is None:
            return _found_mask(rows, cols, vals, n)
        # column-major numbering of H x W is row-major W x H: report the user's order
        spec_shape = (n // width, width) if order != "F" else (width, n // width)
        order = order or "C"
    dr, dc = fit
    return _spec(spec_shape, order, None, dr, dc), rows, dr, dc, vals


def _spec(shape, order, pixels, dr, dc):
    diagonal = bool(np.any((dr != 0) & (dc != 0)))
    return GridSpec(tuple(shape), order, "9-point" if diagonal else "5-point", pixels)


def _masked_spec(shape, order, pixels, rows, cols, vals):
    h, w = shape
    width = w if order == "C" else h
    pr, pc = np.divmod(pixels, width)
    dr = pr[cols] - pr[rows]
    dc = pc[cols] - pc[rows]
    return _spec(shape, order, pixels, dr, dc), pixels[rows], dr, dc, vals


def _found_mask(rows, cols, vals, n):
    """Detection of a masked grid from the pattern (no full grid holds ``A``)."""
    found = find_embedding(rows, cols, n)
    if found is None or not embedding_fits(rows, cols, *found):
        raise NotGridStructuredError(
            "A is not a 3x3-stencil operator on any grid, nor on a masked grid found from its "
            f"pattern that its unknowns cover at least {MASK_MIN_COVERAGE:.0%} of (pass grid= "
            "with pixels= or mask= to use a sparser embedding)"
        )
    h, w, pixels = found
    return _masked_spec((h, w), "C", pixels, rows, cols, vals)


def grid_stencil(A, grid=None, order=None, *, pixels=None, mask=None):
    """Detect (or check) the grid and return ``(GridSpec, V)`` with ``V`` of shape (H*W, 9).

    Raises
    ------
    NotGridStructuredError
        If ``A`` is not a 3x3-stencil operator on the grid (given or any).
    """
    spec, pixel_rows, dr, dc, vals = _detect(A, grid, order, pixels, mask)
    slot = (dr + 1) * 3 + (dc + 1)
    return spec, _bincount_stencil(pixel_rows * 9 + slot, vals, spec.n_pixels)


def _bincount_stencil(flat, vals, n_pixels):
    """Sum ``vals`` into the flat stencil slots ``flat``: one vectorized pass (in float64,
    then rounded once), duplicates summed."""
    dtype = np.result_type(vals.dtype, np.float32)
    V = np.bincount(flat, weights=vals.real, minlength=n_pixels * 9)
    if np.iscomplexobj(vals):
        V = V + 1j * np.bincount(flat, weights=vals.imag, minlength=n_pixels * 9)
    return V.astype(dtype, copy=False).reshape(n_pixels, 9)


class StencilPattern:
    """Where each stored entry of a CSR/CSC matrix goes in the stencil array of its grid.

    Kept by a factorization so that new values on the same sparsity pattern (time stepping,
    Newton iterations) skip detection: ``stencil(A_new)`` is one ``bincount``.
    """

    def __init__(self, A, spec: GridSpec):
        self.format = A.format
        self.shape = A.shape
        self.indptr = A.indptr.copy()
        self.indices = A.indices.copy()
        self.width = spec.engine_shape[1]
        self.n_pixels = spec.n_pixels
        self.pixels = spec.pixels
        self._flat = None  # computed on the first refactorization, not at factorize time

    @property
    def flat(self):
        """Flat stencil index of each stored entry, -1 for (zero) entries off the stencil."""
        if self._flat is None:
            major = np.repeat(np.arange(self.shape[0], dtype=np.int64), np.diff(self.indptr))
            minor = self.indices.astype(np.int64)
            rows, cols = (major, minor) if self.format == "csr" else (minor, major)
            if self.pixels is not None:
                rows, cols = self.pixels[rows], self.pixels[cols]
            ri, rj = _grid_row(rows, self.width), _grid_row(cols, self.width)
            dr, dc = rj - ri, (cols - rj * self.width) - (rows - ri * self.width)
            ok = (np.abs(dr) <= 1) & (np.abs(dc) <= 1)
            self._flat = np.where(ok, rows * 9 + (dr + 1) * 3 + (dc + 1), -1)
        return self._flat

    def matches(self, A) -> bool:
        return (
            sp.issparse(A)
            and A.format == self.format
            and A.shape == self.shape
            and np.array_equal(A.indptr, self.indptr)
            and np.array_equal(A.indices, self.indices)
        )

    def stencil(self, A):
        """Stencil array of ``A`` (same pattern), or None if an off-stencil entry is nonzero."""
        data = A.data
        off = self.flat < 0
        if off.any() and np.any(data[off] != 0):
            return None
        return _bincount_stencil(self.flat[~off], data[~off], self.n_pixels)
