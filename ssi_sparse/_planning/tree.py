"""The top of a grid's box tree split across processes: windows, owners, merges above them.

A grid too large for one process is cut along its own box tree (:mod:`ssi_sparse._planning.plan`): the boxes of
one level become *windows*, each factorized by one process with an ordinary (window) plan that
keeps the window's shared sides; the levels above are *merges*, each owned by one process,
which receives its children's Schur complements (and, in the solve, their condensed
right-hand sides) and sends the boundary values back down.  With ``2^m`` windows that is
``m`` rounds of messages, the pattern of a reduction tree; a merge belongs to the rank of
its first child's last window, so that on ``2^m`` ranks each rank owns at most one merge and
the large top frontals are spread instead of piling up on rank 0.

Everything here is symbolic and process-independent: every rank computes the same
:class:`DistributedPlan` from ``(height, width, ranks)`` and so knows, without asking, who
sends what to whom, how large every message is, and what each rank will hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .plan import (
    DEFAULT_LEAF_CELLS,
    _boundary_nodes,
    _children_of,
    _segment_tree,
    build_window_plan,
    flops_of_sizes,
    memory_of_sizes,
    stored_entries_of_sizes,
    tree_sizes,
)

__all__ = ["DistributedPlan", "Merge", "Window", "distributed_plan", "tree_sizes"]


@dataclass(eq=False)
class _Box:
    level: int  # in the segment tree, leaves first
    box: int  # row-major id within the level
    rows: tuple  # (r0, r1), inclusive node rows
    cols: tuple  # (c0, c1)
    owner: int
    #: Global (row-major) ids of the nodes this box keeps for its parent, in the order of its
    #: Schur complement (shared sides, as :func:`ssi_sparse._planning.plan._boundary_nodes` orders them).
    boundary: np.ndarray

    @property
    def shape(self):
        return self.rows[1] - self.rows[0] + 1, self.cols[1] - self.cols[0] + 1


@dataclass(eq=False)
class Window(_Box):
    """One box factorized by one process: :meth:`plan` is its window plan."""

    index: int = 0  # position among the windows (depth-first, first child first)
    leaf_cells: int = DEFAULT_LEAF_CELLS
    grid: tuple = (0, 0)

    def plan(self):
        return build_window_plan(*self.grid, self.level, self.box, self.leaf_cells)

    def sizes(self):
        """The window plan's class sizes, without building it (:func:`tree_sizes`)."""
        return tree_sizes(*self.grid, self.leaf_cells, (self.level, self.box))

    def global_ids(self, local):
        """Global node ids of window-local (row-major) ids."""
        lr, lc = np.divmod(np.asarray(local, dtype=np.int64), self.shape[1])
        return (self.rows[0] + lr) * self.grid[1] + self.cols[0] + lc


@dataclass(eq=False)
class Merge(_Box):
    """A box above the windows: assembles its two children's Schur complements."""

    children: tuple = ()
    eliminated: np.ndarray = None  # global ids, the frontal's leading block
    #: Positions of each child's boundary in this frontal ``[eliminated, boundary]``.
    child_pos: tuple = ()

    @property
    def n_elim(self) -> int:
        return len(self.eliminated)

    @property
    def n_front(self) -> int:
        return len(self.eliminated) + len(self.boundary)


@dataclass(eq=False)
class DistributedPlan:
    """Windows and merges of an ``height x width`` grid on ``ranks`` processes.

    ``merges[t]`` are the merges of round ``t`` (``merges[0]`` join windows); the last round
    holds the root alone.  A grid with a single window has no merges.
    """

    height: int
    width: int
    ranks: int
    leaf_cells: int
    windows: list
    merges: list
    root: _Box

    def windows_of(self, rank: int) -> list:
        return [w for w in self.windows if w.owner == rank]

    def merges_of(self, rank: int) -> list:
        return [m for level in self.merges for m in level if m.owner == rank]

    def memory_bytes(self, rank: int, itemsize: int, hermitian: bool) -> int:
        """Peak bytes of ``rank``'s factorization, from the tree's sizes alone (cheap at any
        size): stored factors of everything it owns, plus the largest transient (one
        window's frontal arenas, or one merge's frontal and the Schur complements it
        receives)."""
        stored, transient = 0, 0
        for w in self.windows_of(rank):
            sizes = w.sizes()
            kept = stored_entries_of_sizes(sizes, hermitian)
            stored += kept + len(w.boundary) ** 2
            transient = max(transient, memory_of_sizes(sizes, 1, hermitian) - kept)
        for m in self.merges_of(rank):
            s, r = m.n_elim, len(m.boundary)
            stored += s * s + s * r + (0 if hermitian else r * s) + r * r
            received = sum(len(c.boundary) ** 2 for c in m.children)
            transient = max(transient, m.n_front**2 + received)
        return itemsize * (stored + transient)

    def flops(self, rank: int) -> float:
        """LU-type flops of ``rank``'s windows and merges (Cholesky: about half)."""
        total = sum(flops_of_sizes(w.sizes()) for w in self.windows_of(rank))
        return total + flops_of_sizes([[(1, m.n_elim, len(m.boundary))] for m in self.merges_of(rank)])

    def message_bytes(self, rank: int, itemsize: int, columns: int | None = None):
        """Bytes ``rank`` sends and receives between processes in the tree: in the
        factorization (``columns`` None) the Schur complements, in a solve with ``columns``
        right-hand sides the condensed right-hand sides up and the boundary values down.
        Returns ``(sent, received)``."""
        sent = received = 0
        for level in self.merges:
            for m in level:
                for c in m.children:
                    if c.owner == m.owner:
                        continue
                    r = len(c.boundary)
                    # factor: the Schur block; solve: condensed rhs + b on the boundary up,
                    # boundary values down
                    up = r * r if columns is None else 2 * r * columns
                    down = 0 if columns is None else r * columns
                    if rank == c.owner:
                        sent += up * itemsize
                        received += down * itemsize
                    if rank == m.owner:
                        received += up * itemsize
                        sent += down * itemsize
        return sent, received


def _last_window(node):
    while not isinstance(node, Window):
        node = node.children[1]
    return node


def _positions(front_ids: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Positions of ``ids`` in ``front_ids`` (every id present)."""
    sorter = np.argsort(front_ids, kind="stable")
    pos = sorter[np.searchsorted(front_ids, ids, sorter=sorter)]
    if not np.array_equal(front_ids[pos], ids):  # a planning bug
        raise AssertionError("child boundary not in its parent's frontal")
    return pos


def n_windows_for(ranks: int, n_levels: int) -> int:
    """Windows for ``ranks`` processes: the next power of two (twice that when ``ranks`` is
    not one, so that ``floor(i * ranks / windows)`` spreads them evenly), at most the number
    of leaf boxes."""
    if ranks < 1:
        raise ValueError(f"ranks must be positive, got {ranks}")
    n = 1 << (ranks - 1).bit_length()
    if n != ranks:
        n *= 2
    return min(n, 1 << (n_levels - 1))


def distributed_plan(height: int, width: int, ranks: int, leaf_cells: int = DEFAULT_LEAF_CELLS,
                     windows: int | None = None) -> DistributedPlan:  # fmt: skip
    """The windows and merges of an ``height x width`` grid (row-major nodes) on ``ranks``
    processes.  Window ``i`` (depth-first) belongs to rank ``floor(i * ranks / n_windows)``;
    a merge to its first child's last window's.  Ranks beyond the windows' count (tiny grids) own
    nothing and only pass data.  ``windows``: a power of two to use instead of the default
    (:func:`n_windows_for`), capped by the tree's depth."""
    if height < 1 or width < 1:
        raise ValueError(f"grid shape must be positive, got {height}x{width}")
    seg_levels, axes = _segment_tree(height, width, leaf_cells)
    n_levels = len(seg_levels)
    if windows is not None and (windows < 1 or windows & (windows - 1)):
        raise ValueError(f"windows must be a power of two, got {windows}")
    n_win = n_windows_for(ranks, n_levels) if windows is None else min(windows, 1 << (n_levels - 1))
    window_level = n_levels - 1 - (n_win.bit_length() - 1)
    counter = [0]
    merges = [[] for _ in range(n_levels - 1 - window_level)]

    def box_geometry(k, b):
        rows, cols = seg_levels[k]
        (r0, r1), (c0, c1) = rows[b // len(cols)].tolist(), cols[b % len(cols)].tolist()
        hn, wn = r1 - r0 + 1, c1 - c0 + 1
        local = _boundary_nodes(hn, wn, r0 > 0, r1 < height - 1, c0 > 0, c1 < width - 1)
        lr, lc = np.divmod(local, wn)
        return (r0, r1), (c0, c1), ((r0 + lr) * width + c0 + lc).astype(np.int64)

    def build(k, b):
        rows, cols, boundary = box_geometry(k, b)
        if k == window_level:
            i = counter[0]
            counter[0] += 1
            owner = i * ranks // n_win if n_win >= ranks else i
            return Window(k, b, rows, cols, owner, boundary, i, leaf_cells, (height, width))
        n_cols, child_n_cols = len(seg_levels[k][1]), len(seg_levels[k - 1][1])
        kids = [int(c[0]) for c in _children_of(np.array([b]), axes[k - 1], n_cols, child_n_cols)]
        children = tuple(build(k - 1, c) for c in kids)
        front = np.union1d(children[0].boundary, children[1].boundary)
        eliminated = np.setdiff1d(front, boundary)
        front_ids = np.concatenate([eliminated, boundary])
        child_pos = tuple(_positions(front_ids, c.boundary) for c in children)
        # a merge belongs to the rank of its first child's last window: with 2^m windows on
        # 2^m ranks every rank then owns at most one merge (rank r the round given by the
        # lowest set bit of r + 1), so the large top frontals do not pile up on one rank
        owner = _last_window(children[0]).owner
        merge = Merge(k, b, rows, cols, owner, boundary, children, eliminated, child_pos)
        merges[k - window_level - 1].append(merge)
        return merge

    root = build(n_levels - 1, 0)
    windows = []

    def collect(node):
        if isinstance(node, Window):
            windows.append(node)
        else:
            for c in node.children:
                collect(c)

    collect(root)
    return DistributedPlan(height, width, ranks, leaf_cells, windows, merges, root)
