"""Masked grids: unknowns on a subset of the pixels of a grid, recovered from the pattern alone.

Programs number the unknowns of a masked domain in raster order of their pixels
(``np.flatnonzero(mask)``, or the pixels left after deleting seeded rows and columns).  Then
two consecutive unknowns that are coupled are horizontal neighbours, so the unknowns fall into
*runs* (maximal chains of coupled consecutive unknowns: pieces of one grid row), and every
other coupling joins a run to a run of the next row, at a column shift its offsets give.  A
spanning forest of that run graph places every run; separate components are packed side by
side.  Column-major numbering gives the same construction transposed, which the engine solves
equally well.

Nothing found here is trusted: the caller keeps an embedding only after checking that no two
unknowns share a pixel and that every stored coupling joins 3x3 neighbours.  Ambiguous
patterns (a coupled consecutive pair that is really vertical, as in a one-pixel-wide vertical
neck) may give an embedding that fails that check: the matrix then goes to SciPy.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse import csgraph

from .._engine import native
from .._tuning import MASK_MAX_COMPONENTS, MASK_MIN_COVERAGE

__all__ = ["find_embedding", "embedding_fits"]


def _runs(lo, hi, n):
    """Run id and offset within its run of every unknown (runs: coupled consecutive ids)."""
    linked = np.zeros(max(n - 1, 0), dtype=bool)
    linked[lo[hi == lo + 1]] = True
    starts = np.concatenate([[True], ~linked])
    run_of = np.cumsum(starts) - 1
    run_start = np.flatnonzero(starts)
    return run_of, np.arange(n) - run_start[run_of], len(run_start)


def _run_edges(lo, hi, run_of, offset, n_runs):
    """Unique run pairs (a < b) coupled by non-consecutive unknowns, sorted by
    ``a * n_runs + b``, with the range ``[low, high]`` of ``offset(i) - offset(j)`` over their
    couplings, or None."""
    cross = hi != lo + 1
    i, j = lo[cross], hi[cross]
    a, b = run_of[i], run_of[j]
    if np.any(a == b):
        return None  # two unknowns of one grid row coupled across a gap
    base = offset[i] - offset[j]
    key = a * n_runs + b
    if key.size == 0:  # one run per component: nothing joins runs
        return key, base, base
    order = np.argsort(key, kind="stable")
    key, base = key[order], base[order]
    first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    return key[first], np.minimum.reduceat(base, first), np.maximum.reduceat(base, first)


def _shifts(a, b, low, high, run_len):
    """Column shift ``start(b) - start(a)`` of every coupled run pair.

    A coupling of unknown i (run a, one row up) with j (run b) has ``start(b) - start(a) =
    base + col(j) - col(i)``, ``base = off(i) - off(j)``: vertical couplings give the shift
    exactly, so a 5-point matrix (one base per pair) is placed exactly.  With diagonals a
    pair's bases can span 2 (the shift is the middle) or less, when the runs only touch at an
    end; assuming every geometric neighbour is coupled, the touching configurations then tell
    the shift from the run lengths.  Returns ``(shift, sure)``: ``sure`` is False where the
    contact is symmetric (a two-pixel run over a one-pixel run: under either end), so the
    spanning forest avoids those pairs where it can.  A wrong guess is caught by the embedding
    check.
    """
    if not np.any(high > low):
        return low, None  # no diagonal coupling anywhere: all couplings are vertical
    la, lb = run_len[a], run_len[b]
    shift = (low + high) // 2
    one = high - low == 1  # vertical + one diagonal side: b starts at a's end, or ends at its start
    shift = np.where(one & (high == la - 1), high, np.where(one & (low == 1 - lb), low, shift))
    zero = high == low  # a single corner contact (or two one-pixel runs, taken as vertical)
    corner = zero & ~((la == 1) & (lb == 1))
    shift = np.where(corner & (low == la - 1), la, np.where(corner & (low == 1 - lb), -lb, shift))
    sure = (high - low == 2) | (one & (la + lb != 3)) | corner
    return shift, sure


def _place_runs(a, b, shift, sure, n_runs):
    """Row and column of every run's start, and its component, from a spanning forest
    (of the pairs whose shift is ``sure`` where they suffice).  ``a < b``: the coupled run
    pairs, sorted by ``a * n_runs + b``."""
    keys = a * n_runs + b
    weight = np.ones(len(a)) if sure is None else np.where(sure, 1.0, 2.0)
    graph = sp.coo_array((weight, (a, b)), shape=(n_runs, n_runs)).tocsr()
    n_comp, label = csgraph.connected_components(graph, directed=False)
    if sure is not None and not sure.all():
        tree = csgraph.minimum_spanning_tree(graph).tocoo()
        a, b = np.minimum(tree.row, tree.col), np.maximum(tree.row, tree.col)
    roots = np.unique(label, return_index=True)[1]
    # one virtual root above every component's first run: a single BFS spans the forest
    top = n_runs
    ra = np.concatenate([a, np.full(len(roots), top)])
    rb = np.concatenate([b, roots])
    forest = sp.coo_array((np.ones(len(ra)), (ra, rb)), shape=(n_runs + 1, n_runs + 1)).tocsr()
    _, pred = csgraph.breadth_first_order(forest, top, directed=False, return_predecessors=True)
    pred = pred[:n_runs]
    parent = np.where(pred == top, np.arange(n_runs), pred)
    # offset of each run from its parent: the edge (min, max) is stored with a < b
    tree = parent != np.arange(n_runs)
    child = np.flatnonzero(tree)
    p = parent[child]
    down = p < child  # the parent is the upper run of the pair
    edge = np.searchsorted(keys, np.minimum(p, child) * n_runs + np.maximum(p, child))
    d_row = np.zeros(n_runs, dtype=np.int64)
    d_col = np.zeros(n_runs, dtype=np.int64)
    d_row[child] = np.where(down, 1, -1)
    d_col[child] = np.where(down, shift[edge], -shift[edge])
    # pointer jumping: after log2(depth) rounds every run is relative to its component root
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            break
        d_row, d_col, parent = d_row + d_row[parent], d_col + d_col[parent], grand
    return d_row, d_col, label, n_comp


def _pack(rows, cols, comp, n_comp):
    """Shift every component to its own place (shelves of one common width); (H, W, r, c)."""
    r_min = np.full(n_comp, np.iinfo(np.int64).max)
    c_min = r_min.copy()
    np.minimum.at(r_min, comp, rows)
    np.minimum.at(c_min, comp, cols)
    r_max = np.full(n_comp, np.iinfo(np.int64).min)
    c_max = r_max.copy()
    np.maximum.at(r_max, comp, rows)
    np.maximum.at(c_max, comp, cols)
    heights, widths = r_max - r_min + 1, c_max - c_min + 1
    width = int(widths.max())
    top = np.zeros(n_comp, dtype=np.int64)
    left = np.zeros(n_comp, dtype=np.int64)
    y = x = shelf = 0
    for k in np.argsort(-heights, kind="stable").tolist():
        if x + widths[k] > width:
            y, x, shelf = y + shelf, 0, 0
        top[k], left[k] = y, x
        x += int(widths[k])
        shelf = max(shelf, int(heights[k]))
    height = y + shelf
    return height, width, rows - r_min[comp] + top[comp], cols - c_min[comp] + left[comp]


#: Couplings of one unknown, both directions counted: 8 neighbours.
_MAX_DEGREE = 16


def _runs_and_edges(rows, cols, n):
    """``(run_of, offset, n_runs, keys, low, high)`` (see :func:`_runs`, :func:`_run_edges`)
    from the stored nonzeros, or None."""
    off = rows != cols
    lo = np.minimum(rows[off], cols[off])
    hi = np.maximum(rows[off], cols[off])
    if lo.size == 0 or np.bincount(np.concatenate([lo, hi]), minlength=n).max() > _MAX_DEGREE:
        return None  # no couplings (the 1 x n strip takes it) or more than 8 neighbours
    run_of, offset, n_runs = _runs(lo, hi, n)
    edges = _run_edges(lo, hi, run_of, offset, n_runs)
    return None if edges is None else (run_of, offset, n_runs, *edges)


def find_embedding(rows, cols, n, A=None):
    """``(H, W, pixels)`` placing the ``n`` unknowns on an H x W grid, or None.

    ``rows``, ``cols``: the stored nonzeros (int64); ``A``: the matrix they come from, whose
    CSR/CSC arrays the native pass reads in their place where it can (the same answer).
    ``pixels[i]`` is the row-major pixel of unknown ``i``.  The result is a candidate only:
    check it with :func:`embedding_fits`.
    """
    found = NotImplemented if A is None else native.mask_runs_and_edges(A, _MAX_DEGREE)
    if found is NotImplemented:
        found = _runs_and_edges(rows, cols, n)
    if found is None:
        return None
    run_of, offset, n_runs, keys, low, high = found
    if np.any(high - low > 2):
        return None
    run_len = np.bincount(run_of, minlength=n_runs)
    a, b = np.divmod(keys, n_runs)
    shift, sure = _shifts(a, b, low, high, run_len)
    d_row, d_col, label, n_comp = _place_runs(a, b, shift, sure, n_runs)
    if n_comp > MASK_MAX_COMPONENTS:
        return None
    r = d_row[run_of]
    c = d_col[run_of] + offset
    height, width, r, c = _pack(r, c, label[run_of], n_comp)
    if height * width * MASK_MIN_COVERAGE > n:
        return None  # the grid would be mostly padding: SciPy does better
    return height, width, r * width + c


def embedding_fits(rows, cols, height, width, pixels, radius=1) -> bool:
    """No two unknowns on one pixel, and every coupling joins neighbours at most ``radius``
    rows and columns apart."""
    if pixels.min() < 0 or pixels.max() >= height * width:
        return False
    if np.bincount(pixels, minlength=height * width).max() > 1:
        return False
    pr, pc = np.divmod(pixels, width)
    return bool(
        np.abs(pr[cols] - pr[rows]).max(initial=0) <= radius
        and np.abs(pc[cols] - pc[rows]).max(initial=0) <= radius
    )
