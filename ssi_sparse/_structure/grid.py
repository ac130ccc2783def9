"""Grid structure: is a sparse matrix a stencil operator on (some pixels of) a grid?

The engine knows one kind of matrix: a row-major grid whose nodes (``k`` per pixel) couple
only to the nodes of the 3x3 neighbourhood of their pixel.  Everything else users bring is
mapped onto it here, by a permutation of the unknowns (:attr:`GridSpec.nodes`) and nodes
that are not unknowns (decoupled in the engine):

* a column-major (``order='F'``) H x W grid is the row-major W x H grid;
* a *masked* grid has unknowns on a subset of the pixels only (an irregular domain, the
  pixels a segmentation left unseeded): ``GridSpec.pixels`` (:mod:`ssi_sparse._structure.mask` finds it from
  the pattern when no one says);
* ``components=k`` unknowns per pixel (optical flow's u and v, elasticity's displacement)
  numbered pixel-major ``[u0, v0, u1, v1, ...]`` or component-major ``[u0, u1, ..., v0, ...]``;
* a 5x5 stencil (``radius=2``: biharmonic, fourth-order differences) is a 3x3 stencil of
  2x2 cells with 4 unknowns each, on a grid of half the size (odd sides: a half-empty cell).

The stencil array ``V`` (``H*W*k*k`` rows of 9 slots, see :mod:`ssi_sparse._structure.stencil`) holds the
couplings on the engine's grid; duplicate entries are summed, explicit zeros are ignored,
rows of nodes that are not unknowns are zero.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from .._engine import native
from .._engine.threads import parallel_map
from .._errors import NotGridStructuredError
from .mask import embedding_fits, find_embedding
from .._planning.plan import memory_estimate
from .._tuning import DETECT_MAX_COMPONENTS, MASK_MIN_COVERAGE

__all__ = ["GridSpec", "StencilPattern", "detect_grid", "grid_stencil"]

NUMBERINGS = ("pixel", "component")


@dataclass(frozen=True)
class GridSpec:
    """How the unknowns of a matrix are laid out on a grid.

    Attributes
    ----------
    shape : tuple of int
        ``(H, W)``: the grid has H rows and W columns of pixels.
    order : {'C', 'F'}
        ``'C'``: pixel (r, c) is number ``r * W + c``; ``'F'``: number ``c * H + r``.
    stencil : str
        ``'5-point'`` or ``'9-point'`` (3x3), ``'13-point'`` or ``'25-point'`` (5x5): which
        neighbours of a pixel are coupled.
    pixels : ndarray of int or None
        Masked grids: the pixel number (in ``order``) of each unknown pixel; None when every
        pixel holds unknowns, numbered as its pixel.
    components : int
        Unknowns per pixel.
    numbering : {'pixel', 'component'}
        With several components: ``'pixel'``-major (the unknowns of a pixel are consecutive)
        or ``'component'``-major (all pixels' first component, then the second, ...).
    radius : {1, 2}
        Stencil radius: 3x3 or 5x5 neighbourhoods.
    """

    shape: tuple
    order: str = "C"
    stencil: str = "9-point"
    pixels: np.ndarray | None = field(default=None, compare=False, repr=False)
    components: int = 1
    numbering: str = "pixel"
    radius: int = 1

    @property
    def engine_shape(self) -> tuple:
        """Row-major ``(height, width)`` of the engine's grid (of 2x2 cells for radius 2)."""
        h, w = self.shape if self.order == "C" else self.shape[::-1]
        return (h, w) if self.radius == 1 else (-(-h // 2), -(-w // 2))

    @property
    def engine_components(self) -> int:
        """Nodes per pixel of the engine's grid."""
        return self.components * (1 if self.radius == 1 else 4)

    @property
    def engine_dims(self) -> tuple:
        """``(height, width, k)`` of the engine's grid, as :mod:`ssi_sparse._structure.stencil` takes it."""
        return (*self.engine_shape, self.engine_components)

    @property
    def n_nodes(self) -> int:
        """Nodes of the engine's grid (unknowns, and the absent ones it carries)."""
        h, w, k = self.engine_dims
        return h * w * k

    @property
    def n_pixels(self) -> int:
        """Pixels of the whole grid (present or not)."""
        return self.shape[0] * self.shape[1]

    @property
    def n_unknowns(self) -> int:
        """Unknowns of the matrix."""
        return self.components * (self.n_pixels if self.pixels is None else len(self.pixels))

    @property
    def masked(self) -> bool:
        return self.pixels is not None

    @functools.cached_property
    def nodes(self) -> np.ndarray | None:
        """Engine node of every unknown, or None when unknown ``i`` is node ``i``."""
        k = self.components
        if not self.masked and self.radius == 1 and (k == 1 or self.numbering == "pixel"):
            return None
        q = np.arange(self.n_pixels) if self.pixels is None else self.pixels
        if self.radius == 2:
            width = self.shape[1] if self.order == "C" else self.shape[0]
            r, c = np.divmod(q, width)
            q = ((r // 2) * self.engine_shape[1] + c // 2) * 4 + (r % 2) * 2 + c % 2
        comp = np.arange(k)
        pairs = q[:, None] * k + comp[None, :] if self.numbering == "pixel" else q[None, :] * k + comp[:, None]
        return pairs.reshape(-1)

    def memory_estimate(self, dtype=np.float64, hermitian: bool = False, batch: int = 1, factor_dtype=None) -> int:
        """Peak bytes of factorizing a matrix on this grid, from the shape alone (O(H + W)
        work: no plan is built, so any size is answered at once).

        The factor's stored blocks, the engine's frontal workspace and the stencil arrays
        (the matrix's and its equilibrated copy).  ``hermitian``: a Hermitian matrix stores
        one triangle's couplings (Cholesky), so ``False`` is the bound for any matrix.
        ``factor_dtype``: mixed precision's lower factor precision.  ``factorize`` refuses
        with ``MemoryError`` what this says cannot fit in the memory available.

        Examples
        --------
        >>> from ssi_sparse import GridSpec
        >>> gib = GridSpec((1025, 1025)).memory_estimate("float64", hermitian=True) / 2**30
        >>> 0.5 < gib < 2
        True
        """
        itemsize = np.dtype(dtype).itemsize
        factor_itemsize = itemsize if factor_dtype is None else np.dtype(factor_dtype).itemsize
        h, w, k = self.engine_dims
        stencils = 2 * batch * h * w * k * k * 9 * itemsize
        return memory_estimate(h, w, factor_itemsize, hermitian, k, batch) + stencils

    def __eq__(self, other):
        if not isinstance(other, GridSpec):
            return NotImplemented
        same_mask = (self.pixels is None) == (other.pixels is None) and (
            self.pixels is None or np.array_equal(self.pixels, other.pixels)
        )
        mine = (self.shape, self.order, self.stencil, self.components, self.numbering, self.radius)
        theirs = (other.shape, other.order, other.stencil, other.components, other.numbering, other.radius)
        return mine == theirs and same_mask

    def __str__(self) -> str:
        where = f"{self.shape[0]}x{self.shape[1]} grid"
        if self.masked:
            where = f"{len(self.pixels)} of the {self.n_pixels} pixels of a {where}"
        if self.components > 1:
            where = f"{where} with {self.components} unknowns per pixel ({self.numbering}-major)"
        return f"{where}, order={self.order!r}, {self.stencil} stencil"

    def entry_slots(self, rows, cols):
        """Row of ``V`` times 9 plus slot for every coupling ``(rows, cols)`` of unknowns, or
        -1 where the two are not stencil neighbours on the engine's grid."""
        nodes = self.nodes
        if nodes is not None:
            rows, cols = nodes[rows], nodes[cols]
        h, w, k = self.engine_dims
        (pr, a), (pc, b) = np.divmod(rows, k), np.divmod(cols, k)
        ri, rj = _grid_row(pr, w), _grid_row(pc, w)
        dr, dc = rj - ri, (pc - rj * w) - (pr - ri * w)
        ok = (np.abs(dr) <= 1) & (np.abs(dc) <= 1)
        return np.where(ok, ((pr * k + a) * k + b) * 9 + (dr + 1) * 3 + (dc + 1), -1)


def _check_square(A):
    if not (sp.issparse(A)):
        raise TypeError(f"expected a SciPy sparse matrix or array, got {type(A).__name__}")
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"matrix must be square (has shape {A.shape})")


def _coo_parts(A):
    """Rows, columns and values of the stored nonzeros (explicit zeros dropped)."""
    _check_square(A)
    coo = A.tocoo()
    keep = coo.data != 0
    if not keep.all():
        return coo.row[keep], coo.col[keep], coo.data[keep]
    return coo.row, coo.col, coo.data


def _grid_row(ids, width):
    # float division is exact here (ids < 2**52) and far faster than integer division
    return np.floor((ids + 0.5) / width).astype(np.int64)


def _fits(rows, cols, width, radius=1):
    """Row/column offsets on a row-major grid of the given width, or None if one exceeds
    ``radius``."""
    ri = _grid_row(rows, width)
    rj = _grid_row(cols, width)
    dr = rj - ri
    dc = (cols - rj * width) - (rows - ri * width)
    if dr.size and (np.abs(dr).max() > radius or np.abs(dc).max() > radius):
        return None
    return dr, dc


def _candidate_widths(rows, cols, n, radius=1):
    """Row-major widths that could hold every coupling, cheapest grid first."""
    return _widths_for_reach(int(np.abs(cols - rows).max()) if rows.size else None, n, radius)


def _widths_for_reach(reach, n, radius=1):
    """Row-major widths whose grid reaches ``reach`` (the largest ``|j - i|`` coupled; None:
    no couplings), cheapest grid first."""
    if reach is None or reach <= radius:
        return [n]  # a 1 x n strip holds any band matrix of this half-width
    # the farthest coupling is dr = 1 .. radius rows down and dc = -radius .. radius columns
    # across: reach = dr * W + dc
    widths = {(reach - dc) // dr for dr in range(1, radius + 1) for dc in range(-radius, radius + 1)
              if (reach - dc) % dr == 0}  # fmt: skip
    widths = {w for w in widths if w >= 2 and n % w == 0}
    # a thin grid is cheap to solve: cost grows like n * min(H, W)^2
    return sorted(widths, key=lambda w: (min(w, n // w), w))


def detect_grid(A, grid=None, order=None, *, pixels=None, mask=None, components=None, numbering=None, radius=None):
    """Find the H x W grid on which ``A`` is a stencil operator.

    Parameters
    ----------
    A : sparse matrix or array, shape (n, n)
        Any SciPy sparse format; duplicate entries are summed and explicit zeros ignored.
    grid : tuple of int, optional
        ``(H, W)`` to check instead of inferring one.
    order : {'C', 'F'}, optional
        Numbering of the pixels; ``'C'`` (row-major) unless given.
    pixels : array_like of int, optional
        With ``grid``: unknown pixel ``i`` is pixel ``pixels[i]`` (numbered in ``order``); the
        others are not unknowns (a masked domain).
    mask : array_like of bool, shape (H, W), optional
        Instead of ``grid`` and ``pixels``: the unknowns are the ``True`` pixels, numbered in
        ``order`` (``np.flatnonzero(mask)`` for ``'C'``).
    components : int, optional
        Unknowns per pixel (found when omitted: 1, else 2 to 4).
    numbering : {'pixel', 'component'}, optional
        With several components: pixel-major or component-major numbering (found when
        omitted).
    radius : {1, 2}, optional
        Stencil radius, 3x3 or 5x5 (found when omitted).

    Returns
    -------
    GridSpec or None
        The grid, or ``None`` when ``A`` is not such an operator on any grid (or on the one
        given).  Found from the pattern alone: full grids numbered row- or column-major (3x3
        and 5x5 stencils, 1 to 4 unknowns per pixel in either numbering) and masked grids
        numbered in raster order of their pixels (3x3 stencils, ``pixels`` set).

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from ssi_sparse import detect_grid
    >>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(4, 4))
    >>> L = sp.kronsum(T, T)          # 5-point Laplacian of a 4 x 4 grid
    >>> detect_grid(L).shape
    (4, 4)
    >>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(8, 8))
    >>> L = sp.kronsum(T, T)
    >>> detect_grid(L @ L).stencil              # the biharmonic: a 5x5 stencil
    '13-point'
    >>> detect_grid(sp.kron(L, [[2.0, 1.0], [1.0, 2.0]])).components   # 2 unknowns per pixel
    2
    """
    hints = _Hints(grid, order, pixels, mask, components, numbering, radius)
    fast, reach = _full_grid_pass(A, hints)
    if fast is not None:
        return fast[0]
    try:
        return _detect(A, hints, reach)[0]
    except NotGridStructuredError:
        return None


@dataclass(frozen=True)
class _Hints:
    """What the caller said about the layout (None: find it)."""

    grid: tuple | None = None
    order: str | None = None
    pixels: object = None
    mask: object = None
    components: int | None = None
    numbering: str | None = None
    radius: int | None = None

    def check(self):
        if self.order not in (None, "C", "F"):
            raise ValueError(f"order must be 'C' or 'F', got {self.order!r}")
        if self.numbering not in (None, *NUMBERINGS):
            raise ValueError(f"numbering must be 'pixel' or 'component', got {self.numbering!r}")
        if self.radius not in (None, 1, 2):
            raise ValueError(f"radius must be 1 or 2, got {self.radius!r}")
        if self.components is not None and (int(self.components) != self.components or self.components < 1):
            raise ValueError(f"components must be a positive integer, got {self.components!r}")

    def kinds(self, n):
        """(components, numbering, radius) candidates in the order detection tries them."""
        ks = [self.components] if self.components else [1, *range(2, DETECT_MAX_COMPONENTS + 1)]
        out = []
        for k in ks:
            if n % k:
                continue
            numberings = ["pixel"] if k == 1 else ([self.numbering] if self.numbering else list(NUMBERINGS))
            radii = [self.radius] if self.radius else ([1, 2] if k == 1 else [1])
            out += [(k, nb, r) for r in radii for nb in numberings]
        if self.components is None and self.radius is None:  # radius 2 after every 3x3 kind
            out.sort(key=lambda kind: kind[2])
        return out


def _detect(A, hints, reach=None):
    """``(GridSpec, V)`` (``V`` the stencil array) or raise NotGridStructuredError.
    ``reach``: :func:`ssi_sparse._engine.native.grid_reach` of ``A`` if already known."""
    hints.check()
    try:
        return _detect_entries(A, hints, reach)
    except NotGridStructuredError:
        if not _may_hold_duplicates(A):
            raise
        # duplicates that cancel are a stored zero, wherever they sit: sum them and retry
        # (only on this rare path, since summing duplicates sorts every entry)
        return _detect_entries(sp.csr_array(A.tocoo().tocsr()), hints)


def _may_hold_duplicates(A) -> bool:
    if A.format in ("csr", "csc"):
        return not A.has_canonical_format
    return A.format in ("coo", "bsr")


def _given_pixels(n, hints):
    """``(grid, pixels)`` from the caller's ``pixels`` or ``mask`` (validated)."""
    if hints.mask is not None:
        if hints.grid is not None or hints.pixels is not None:
            raise ValueError("give either mask, or grid with pixels, not both")
        mask = np.asarray(hints.mask)
        if mask.ndim != 2 or mask.dtype != bool:
            raise ValueError(f"mask must be a 2-D boolean array, got {mask.dtype} {mask.shape}")
        return mask.shape, np.flatnonzero(mask.ravel(order=hints.order or "C"))
    if hints.grid is None:
        raise ValueError("pixels needs grid=(H, W)")
    pixels = np.asarray(hints.pixels)
    if pixels.ndim != 1 or pixels.dtype.kind not in "iu" or n % max(len(pixels), 1):
        raise ValueError(f"pixels must be {n} integer pixel numbers (or {n} / components), "
                         f"got {pixels.dtype} {pixels.shape}")  # fmt: skip
    return hints.grid, pixels.astype(np.int64)


def _more_than_per_line(A, limit) -> bool:
    """Some row (CSR) or column (CSC) stores more than ``limit`` nonzeros: no stencil of that
    size holds it.  A quick answer from ``indptr`` for the many matrices that are plainly not
    grids."""
    if A.format not in ("csr", "csc") or not A.has_canonical_format:
        return False
    if np.diff(A.indptr).max(initial=0) <= limit:
        return False
    return bool(A.data.all())  # (stored zeros are dropped by detection: count them out)


def _line_limit(kinds):
    return max((9 if r == 1 else 25) * k for k, _, r in kinds)


def _some_width_fits(line, offset, m, radius):
    """Whether one grid width divides ``m`` and explains every sampled line's couplings.

    A coupling at offset ``o`` beyond the line's own row of the stencil (``|o| > 2 radius``)
    is ``dr * W + dc`` with ``1 <= dr <= radius``, ``|dc| <= radius``: each such offset allows
    a few widths, and the width must be allowed by all of them.
    """
    far = np.abs(offset) > 2 * radius
    if not far.any():
        return True  # nothing beyond one row: a strip, or no vertical couplings seen
    widths = None
    for o in np.unique(np.abs(offset[far])).tolist():
        allowed = {(o - dc) // dr for dr in range(1, radius + 1) for dc in range(-radius, radius + 1)
                   if (o - dc) % dr == 0}  # fmt: skip
        widths = allowed if widths is None else widths & allowed
        if not widths:
            return False
    return any(w >= 2 and m % w == 0 for w in widths)


def _plausible_kinds(A, kinds, components_given=False, n_lines=64, reach=None):
    """The kinds a sample of ``A``'s rows (CSR) or columns (CSC) does not rule out, and the
    sample's couplings (or None where ``A`` is not canonical CSR/CSC).

    Detection of a kind costs a few passes over every entry; most matrices that are not
    grids are plainly not, and a few lines show it.  A line of a stencil operator on a grid
    of any width couples at most ``(2r + 1)^2`` pixels (radius ``r``), and their offsets from
    the line's own pixel form at most ``2r + 1`` clusters separated by gaps wider than
    ``2r`` (one per row of the stencil; rows closer than that merge).  The limits are
    necessary for every width, so no true layout is ever ruled out.
    """
    if not (sp.issparse(A) and A.format in ("csr", "csc") and A.has_canonical_format):
        return kinds, None
    n = A.shape[0]
    lines = np.linspace(0, n - 1, min(n, n_lines)).astype(np.int64)
    farthest = native.grid_reach(A) if reach is None else reach
    if farthest is not None:  # the line of the farthest coupling: a few long links show there
        lines = np.append(lines, farthest[1])
    lines = np.unique(lines)
    start, stop = A.indptr[lines], A.indptr[lines + 1]
    counts = (stop - start).astype(np.int64)
    take = np.concatenate([np.arange(a, b) for a, b in zip(start.tolist(), stop.tolist())] or [np.zeros(0, np.int64)])
    minor = A.indices[take].astype(np.int64)
    keep = A.data[take] != 0
    line = np.repeat(lines, counts)[keep]
    minor = minor[keep]
    counts = np.bincount(np.repeat(np.arange(len(lines)), counts)[keep], minlength=len(lines))  # stored zeros out
    out = []
    for k, numbering, radius in kinds:
        if counts.max(initial=0) > (9 if radius == 1 else 25) * k:
            continue
        pl, pm = _pixel_couplings(line, minor, n, k, numbering)
        key = np.unique(line * (2 * n + 1) + (pm - pl + n))  # distinct (line, offset), sorted
        if key.size == 0:  # no couplings sampled: nothing to rule out
            out.append((k, numbering, radius))
            continue
        which, offset = np.divmod(key, 2 * n + 1)
        new_line = np.concatenate([[True], which[1:] != which[:-1]])
        if np.bincount(np.cumsum(new_line) - 1).max(initial=0) > (2 * radius + 1) ** 2:
            continue
        starts_cluster = new_line | (np.diff(offset, prepend=offset[:1]) > 2 * radius)
        clusters = np.bincount(np.cumsum(new_line) - 1, weights=starts_cluster)
        if clusters.max(initial=0) > 2 * radius + 1:
            continue
        # a masked grid's width divides nothing (found for k = 1, or k given)
        masked_possible = radius == 1 and (k == 1 or components_given)
        if not masked_possible and not _some_width_fits(which, offset - n, n // k, radius):
            continue
        out.append((k, numbering, radius))
    # the sampled couplings, as (row, column) pairs: a quick first test of candidate grids
    probe = (line, minor) if A.format == "csr" else (minor, line)
    return out, probe


def _detect_entries(A, hints, reach=None):
    _check_square(A)
    n = A.shape[0]
    if n == 0:
        raise NotGridStructuredError("an empty matrix has no grid")
    given = hints.pixels is not None or hints.mask is not None
    if given:
        grid, pixels = _given_pixels(n, hints)
        hints = _Hints(grid, hints.order, pixels, None, hints.components or n // max(len(pixels), 1),
                       hints.numbering, hints.radius)  # fmt: skip
        if hints.components * len(pixels) != n:
            raise ValueError(f"mask has {len(pixels)} pixels set, but A has {n} unknowns")
        k = hints.components
        if k == 1 or hints.numbering is not None:  # the layout is given whole: one native pass
            spec = GridSpec(tuple(int(v) for v in grid), hints.order or "C", pixels=pixels, components=k,
                            numbering=hints.numbering or "pixel", radius=hints.radius or 1)  # fmt: skip
            found = _native_layout(A, spec)
            if found is not None and found is not NotImplemented:
                return found  # else the general path decides, with its messages
    kinds = hints.kinds(n)
    if hints.grid is not None and not given:
        h, w = (int(v) for v in hints.grid)
        kinds = [kind for kind in kinds if h >= 1 and w >= 1 and h * w * kind[0] == n]
        if not kinds:
            raise ValueError(f"grid {hints.grid} does not have {n} pixels (A has shape {A.shape})"
                             + (f" with {hints.components} unknowns each" if hints.components else ""))
    if not kinds:
        raise ValueError(f"{n} unknowns are not a multiple of components={hints.components}")
    if sp.issparse(A) and _more_than_per_line(A, _line_limit(kinds)):
        raise NotGridStructuredError(
            "A is not a stencil operator on a grid: some row or column couples more unknowns "
            "than any stencil we solve holds")  # fmt: skip
    probe = None
    if not given and hints.grid is None:
        plausible, probe = _plausible_kinds(A, kinds, bool(hints.components), reach=reach)
        if not plausible:
            raise NotGridStructuredError(
                "A is not a stencil operator on any grid: its rows couple unknowns farther "
                "apart than any stencil we solve reaches")  # fmt: skip
        kinds = plausible
    # every entry's coordinates: only for matrices the quick tests above could not rule out
    rows, cols, vals = _coo_parts(A)
    rows = rows.astype(np.int64, copy=False)
    cols = cols.astype(np.int64, copy=False)
    # every full-grid layout (one native pass each) before any masked embedding is searched
    # for (many passes): a matrix with two unknowns per pixel is not made to wait for that
    failure = None
    searches = (False, True) if hints.grid is None and hints.pixels is None else (False,)
    for masked in searches:
        for k, numbering, radius in kinds:
            if masked and not _masked_possible(hints, k, radius):
                continue
            try:
                return _detect_kind(A, rows, cols, vals, n, hints, k, numbering, radius, probe, masked)
            except NotGridStructuredError as exc:
                failure = failure or exc  # the plainest kind's reason is the clearest
    raise failure


def _pixel_couplings(rows, cols, n, k, numbering):
    """The pixels each coupling joins, for ``k`` unknowns per pixel in ``numbering``."""
    if k == 1:
        return rows, cols
    if numbering == "pixel":
        return rows // k, cols // k
    m = n // k
    return rows % m, cols % m


def _stencil_name(dr, dc, radius):
    if radius == 1:
        return "9-point" if bool(np.any((dr != 0) & (dc != 0))) else "5-point"
    return "25-point" if bool(np.any(np.abs(dr) + np.abs(dc) > 2)) else "13-point"


def _could_be_wide_pixel_major(rows, cols, m, k, radius):
    """False when no grid width fits the reach of pixel-major pairs (no pass over the pairs:
    their reach lies within one of the unknowns' reach divided by ``k``)."""
    if k == 1 or rows.size == 0:
        return True
    reach = int(np.abs(cols - rows).max())
    lo, hi = reach // k, -(-reach // k) + 1
    if lo <= radius:
        return True  # a strip may hold it
    return any(m % w == 0 for r in range(lo, hi + 1) for dr in range(1, radius + 1)
               for dc in range(-radius, radius + 1) if (r - dc) % dr == 0 and (w := (r - dc) // dr) >= 2)


def _masked_possible(hints, k, radius) -> bool:
    """Whether detection searches masked embeddings for this kind (3x3 stencils, one unknown
    per pixel, or several when the caller says how many)."""
    return radius == 1 and (k == 1 or bool(hints.components))


def _detect_kind(A, rows, cols, vals, n, hints, k, numbering, radius, probe=None, masked=False):
    """Detection for one kind of layout: raise NotGridStructuredError if it does not fit.

    ``probe``: a sample of the couplings; a candidate grid they do not fit is not tried on
    every entry.  ``masked``: search a masked embedding (after the full grids of every kind
    failed) instead of the full grids."""
    m = n // k
    masked_possible = _masked_possible(hints, k, radius)  # (any width)
    if hints.grid is None and hints.pixels is None and numbering == "pixel" and not masked_possible and not (
        _could_be_wide_pixel_major(rows, cols, m, k, radius)
    ):
        raise NotGridStructuredError(
            f"A is not a stencil operator with {k} unknowns per pixel (pixel-major) on any grid")
    pr, pc = _pixel_couplings(rows, cols, n, k, numbering)
    coo = (rows, cols, vals, pr, pc)
    probe = None if probe is None else _pixel_couplings(*probe, n, k, numbering)
    what = "a 3x3-stencil" if radius == 1 else "a 5x5-stencil"
    if k > 1:
        what += f" ({k} unknowns per pixel, {numbering}-major)"
    if hints.pixels is not None:
        order = hints.order or "C"
        h, w = (int(v) for v in hints.grid)
        found = _layout(A, GridSpec((h, w), order, pixels=hints.pixels, components=k, numbering=numbering,
                                    radius=radius), coo)  # fmt: skip
        if found is None:
            raise NotGridStructuredError(
                f"the pixels given are not distinct pixels of the {h}x{w} grid with every "
                f"coupling of A between {'3x3' if radius == 1 else '5x5'} neighbours (order={order!r})"
            )
        return found
    if hints.grid is not None:
        h, w = (int(v) for v in hints.grid)
        order = hints.order or "C"
        found = _layout(A, GridSpec((h, w), order, components=k, numbering=numbering, radius=radius), coo)
        if found is None:
            raise NotGridStructuredError(
                f"A is not {what} operator on the {h}x{w} grid (order={order!r})"
            )
        return found
    for width in [] if masked else _candidate_widths(pr, pc, m, radius):
        if probe is not None and _fits(*probe, width, radius) is None:
            continue
        # column-major numbering of H x W is row-major W x H: report the user's order
        shape = (m // width, width) if hints.order != "F" else (width, m // width)
        found = _layout(A, GridSpec(shape, hints.order or "C", components=k, numbering=numbering, radius=radius),
                        coo)  # fmt: skip
        if found is not None:
            return found
    if masked and masked_possible:
        # masked grids (3x3, found for one unknown per pixel; several when the caller says)
        found = find_embedding(*_unique_pairs(pr, pc, m, k), m, A if k == 1 else None)
        if found is not None:
            h, w, pixels = found
            found = _layout(A, GridSpec((h, w), "C", pixels=pixels, components=k, numbering=numbering), coo)
            if found is not None:
                return found
    raise NotGridStructuredError(
        f"A is not {what} operator on any grid, nor on a masked grid found from its pattern "
        f"that its unknowns cover at least {MASK_MIN_COVERAGE:.0%} of (pass grid= with "
        "pixels= or mask= to use a sparser embedding)"
    )


def _unique_pairs(pr, pc, m, k):
    if k == 1:
        return pr, pc
    key = np.unique(pr * m + pc)
    return np.divmod(key, m)


def _native_layout(A, spec, out=None, threads=None):
    """``(GridSpec, V)`` of ``A`` on the layout ``spec`` (its stencil named by what the pass
    met) in one native pass over the entries, which checks the layout too (distinct nodes,
    every coupling between stencil neighbours); None when it does not fit, NotImplemented
    where the pass cannot read ``A``.  ``out``: see :func:`native.grid_stencil_pass`;
    ``threads``: ``(map, n)`` that runs its parts (the engine's threads unless given)."""
    if not native.reads(A):
        return NotImplemented
    h, w, k = spec.engine_dims
    cells = spec.components if spec.radius == 2 else 0
    fit = native.grid_stencil_pass(A, w, spec.nodes, h * w * k, k, cells, out, *(threads or parallel_map()))
    if fit is None:
        return None
    V, wide = fit
    names = ("5-point", "9-point") if spec.radius == 1 else ("13-point", "25-point")
    return replace(spec, stencil=names[wide]), V


def _layout(A, spec, coo):
    """``(GridSpec, V)`` of ``A`` on the layout ``spec`` (any stencil name), or None when some
    coupling is not a stencil neighbour there or two unknowns share a node.  ``coo``: the
    entries ``(rows, cols, vals)`` and the pixels ``(pr, pc)`` they join, for the NumPy path
    (matrices the native pass cannot read)."""
    found = _native_layout(A, spec)
    if found is not NotImplemented:
        return found
    rows, cols, vals, pr, pc = coo
    width = spec.shape[1] if spec.order == "C" else spec.shape[0]
    if spec.pixels is not None:
        if not embedding_fits(pr, pc, spec.n_pixels // width, width, spec.pixels, spec.radius):
            return None
        pr, pc = spec.pixels[pr], spec.pixels[pc]
    fit = _fits(pr, pc, width, spec.radius)
    if fit is None:
        return None
    spec = replace(spec, stencil=_stencil_name(*fit, spec.radius))
    if spec.engine_components == 1:  # the common case: the slots from the offsets at hand
        dr, dc = fit
        flat = pr * 9 + (dr + 1) * 3 + (dc + 1)
    else:
        flat = spec.entry_slots(rows, cols)
    if np.any(flat < 0):  # a planning bug, never user input: the layout was checked
        raise AssertionError("a checked coupling is not a stencil neighbour")
    return spec, _bincount_stencil(flat, vals, spec.n_nodes * spec.engine_components)


def grid_stencil(A, grid=None, order=None, *, pixels=None, mask=None, components=None, numbering=None, radius=None):
    """Detect (or check) the grid and return ``(GridSpec, V)``, ``V`` the engine's stencil
    array (see :mod:`ssi_sparse._structure.stencil`).

    Raises
    ------
    NotGridStructuredError
        If ``A`` is not a stencil operator on the grid (given or any).
    """
    hints = _Hints(grid, order, pixels, mask, components, numbering, radius)
    fast, reach = _full_grid_pass(A, hints)
    if fast is not None:
        return fast
    return _detect(A, hints, reach)


def _full_grid_pass(A, hints):
    """``((GridSpec, V), reach)`` for the commonest layout (a full grid, one unknown per
    pixel, 3x3 stencil) by the native one-pass kernel, or ``(None, reach)``: that layout does
    not fit, or the pass cannot read ``A``, and the general path decides (with its messages;
    ``reach``, :func:`ssi_sparse._engine.native.grid_reach`'s answer when it ran, saves it a pass).  The same
    grid as the general path finds: it tries the same widths in the same order."""
    if hints.pixels is not None or hints.mask is not None or hints.components not in (None, 1) or (
        hints.radius not in (None, 1)
    ):
        return None, None
    hints.check()
    if not sp.issparse(A) or A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        return None, None
    n = A.shape[0]
    order = hints.order or "C"
    if hints.grid is not None:
        h, w = (int(v) for v in hints.grid)
        found = None
        if h < 1 or w < 1 or h * w != n:
            return None, None
        widths, shapes = [w if order == "C" else h], [(h, w)]
    else:
        found = native.grid_reach(A)
        if found is None:
            return None, None
        widths = _widths_for_reach(found[0], n)
        shapes = [(n // w, w) if order == "C" else (w, n // w) for w in widths]
    threads_map, n_threads = parallel_map()
    for width, shape in zip(widths, shapes):
        fit = native.grid_stencil_pass(A, width, parallel_map=threads_map, n_parts=n_threads)
        if fit is None:
            continue
        V, nine_point = fit
        return (GridSpec(shape, order, "9-point" if nine_point else "5-point"), V), found
    return None, found


def _bincount_stencil(flat, vals, n_rows):
    """Sum ``vals`` into the flat stencil slots ``flat``: one vectorized pass (in float64,
    then rounded once), duplicates summed."""
    dtype = np.result_type(vals.dtype, np.float32)
    V = np.bincount(flat, weights=vals.real, minlength=n_rows * 9)
    if np.iscomplexobj(vals):
        V = V + 1j * np.bincount(flat, weights=vals.imag, minlength=n_rows * 9)
    return V.astype(dtype, copy=False).reshape(n_rows, 9)


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
        self.spec = spec
        self._flat = None  # computed on the first refactorization, not at factorize time

    @property
    def flat(self):
        """Flat stencil index of each stored entry, -1 for (zero) entries off the stencil."""
        if self._flat is None:
            major = np.repeat(np.arange(self.shape[0], dtype=np.int64), np.diff(self.indptr))
            minor = self.indices.astype(np.int64)
            rows, cols = (major, minor) if self.format == "csr" else (minor, major)
            self._flat = self.spec.entry_slots(rows, cols)
        return self._flat

    def matches(self, A) -> bool:
        return (
            sp.issparse(A)
            and A.format == self.format
            and A.shape == self.shape
            and np.array_equal(A.indptr, self.indptr)
            and np.array_equal(A.indices, self.indices)
        )

    def stencil(self, A, out=None, threads=None):
        """Stencil array of ``A`` (same pattern), or None if an off-stencil entry is nonzero.
        ``out``: an array of its shape that the native pass may fill and return instead of
        a new one (when its dtype is the pass's accumulator); ``threads``: as for
        :func:`_native_layout`."""
        found = _native_layout(A, self.spec, out, threads)  # one native pass, none over self.flat
        if found is not NotImplemented:
            return None if found is None else found[1]
        data = A.data
        off = self.flat < 0
        if off.any() and np.any(data[off] != 0):
            return None
        return _bincount_stencil(self.flat[~off], data[~off], self.spec.n_nodes * self.spec.engine_components)
