"""Symbolic phase: the box tree of an H x W grid and every index map, from the shape alone.

Boxes are closed rectangles of nodes that share their edge lines with their neighbours (every
grid cell belongs to exactly one leaf box).  A node is eliminated in the lowest box of the tree
that is the only box of its level containing it; nodes on the grid's outer boundary therefore
go early instead of riding along to the top (DESIGN.md section 3).

Boxes of one level with the same local structure (size in nodes and which of their four sides
are shared with a neighbour) form a *class*; every class is one batched dense call in the
numeric engine.  Arbitrary H, W are handled by halving cell ranges unevenly (sizes differ by at
most one cell per axis within a level), so there is no padding and no wasted work; a level has
at most 2 x 2 sizes x 9 positions = 36 classes, in practice far fewer.

All node ids here are row-major (``r * W + c``) on the engine's grid.  A grid with ``k``
unknowns per pixel (a block stencil) has the same tree with every pixel expanded into ``k``
consecutive nodes (``pixel * k + component``): :func:`build_plan` with ``components=k``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from .._tuning import FLAT_GATHER_MAX_FRONT

__all__ = ["Plan", "BoxClass", "ChildLink", "build_plan", "build_window_plan", "DEFAULT_LEAF_CELLS",
           "flops_of_sizes", "memory_estimate", "memory_of_sizes", "stored_entries_of_sizes", "tree_sizes"]

#: Largest leaf box side, in cells.  Halving gives leaf sides in {m, m + 1}; allowing 5 (not
#: the paper's 4) keeps awkward sizes such as 1026 from adding two levels of 2-cell boxes.
DEFAULT_LEAF_CELLS = 5

# Stencil slots: slot = (dr + 1) * 3 + (dc + 1) for the coupling of pixel (r, c) to (r+dr, c+dc).
STENCIL_OFFSETS = np.array([(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1)], dtype=np.int64)


@dataclass(eq=False)
class ChildLink:
    """How one child class feeds a merge class: the children of this class's boxes are rows
    ``rows`` of class ``cls`` one level down (stored parent by parent, so a slice)."""

    cls: int
    rows: slice
    #: (dst_start, src_start, length) runs: frontal positions fed by the child's boundary.
    runs: np.ndarray
    #: Positions of the child's boundary nodes in this frontal (down sweep).
    boundary_pos: np.ndarray
    #: Small frontals only: builds :attr:`flat` on first use (the maps of a 512^2 plan take
    #: 16 MB, and the CPU kernels read them only for the narrowest frontals).
    flat_maker: object = None
    #: Masked plans: which of the child's boundary nodes the parent carries (False: a
    #: decoupled node, whose values read as zero; ``boundary_pos`` holds 0 there), or None
    #: when it carries all.
    carried: np.ndarray | None = None

    @property
    def has_flat(self) -> bool:
        return self.flat_maker is not None

    @functools.cached_property
    def flat(self) -> np.ndarray | None:
        """For every frontal entry, its index in the child's flattened eliminated frontal (the
        Schur block), or 0 where the child does not contribute (the engine zeroes entry (0, 0)
        once S is spent); None without flat maps.  One gather beats many tiny block copies."""
        return None if self.flat_maker is None else self.flat_maker()



@dataclass(eq=False)
class BoxClass:
    """Boxes of one level that share a local structure; one batched dense call.

    The frontal matrix of a box is ordered ``[eliminated (n_elim), boundary (n_boundary)]``.
    """

    n_elim: int
    n_boundary: int
    #: (n_boxes, n_elim) global ids of the nodes this frontal eliminates.
    eliminated: np.ndarray
    # Leaf classes: frontal = take(V[closed_nodes] flattened, leaf_template), where the last
    # closed node is the id n: a zero row the engine appends to V (the template's zero slot).
    closed_nodes: np.ndarray | None = None  # (n_boxes, n_local + 1)
    leaf_template: np.ndarray | None = None  # (n_front, n_front) into (n_local + 1) * 9
    # Merge classes: one ChildLink per child role (first/second half).
    children: tuple = ()

    def __post_init__(self):
        # the solve's native gathers index with it directly
        self.eliminated = np.ascontiguousarray(self.eliminated, dtype=np.int64)

    @property
    def n_boxes(self) -> int:
        return self.eliminated.shape[0]

    @property
    def n_front(self) -> int:
        return self.n_elim + self.n_boundary


@dataclass(eq=False)
class Level:
    classes: list
    #: For the down sweep: for each class, the sources of its boundary values, as
    #: (parent class, child role) pairs whose concatenation is this class's box order.
    boundary_sources: list = field(default_factory=list)


@dataclass(eq=False)
class Plan:
    """The box tree of an ``height x width`` row-major grid with its index maps."""

    height: int
    width: int
    leaf_cells: int
    levels: list  # levels[0] = leaves, levels[-1] = root (a single box, no boundary)
    #: Elimination order: the concatenation of every class's ``eliminated`` ids, level by level.
    order: np.ndarray
    #: inverse of ``order``: x = take(u_in_elimination_order, inverse_order).
    inverse_order: np.ndarray
    #: Unknowns per pixel: node ``pixel * components + c``.
    components: int = 1
    #: Independent systems on this grid, factored together: system ``t``'s node ``i`` is
    #: ``t * (nodes of one grid) + i``, its box ``j`` of a class is row ``j * batch + t``.
    batch: int = 1
    #: A window plan (one box of a larger grid's tree, see :func:`build_window_plan`): the
    #: root's boundary, the nodes it keeps for the tree above, in the order of its Schur
    #: complement; ``inverse_order`` then inverts ``order`` followed by ``boundary``.
    boundary: np.ndarray | None = None
    #: Masked plans (:mod:`ssi_sparse._planning.masked_plan`): the nodes no box eliminates (decoupled, absent
    #: pixels; ``inverse_order`` points them one past the end: their solution is zero).
    dropped: np.ndarray | None = None
    #: What rebuilds this plan in another process: (function, arguments).
    key: tuple | None = field(default=None, repr=False)
    _device_cache: dict = field(default_factory=dict, repr=False)

    def __reduce__(self):
        # a plan travels as its key: the receiving process builds (or finds in its cache)
        # its own, so a Dask worker or MPI rank builds each plan once, whatever it is sent
        if self.key is not None:
            return self.key
        return build_plan, (self.height, self.width, self.leaf_cells, self.components, self.batch)

    @property
    def n(self) -> int:
        """Nodes (unknowns) of the grid, of all systems of a batch."""
        return self.height * self.width * self.components * self.batch

    def device(self, xp):
        """``to_xp(array)``: the plan's index arrays in namespace ``xp``, converted once.

        NumPy uses them as they are; another library (CuPy, array_api_strict) gets copies
        cached on the plan, so a plan serves every backend and each array moves only once.
        """
        if xp is np:
            return lambda a: a
        cache = self._device_cache.setdefault(xp.__name__, {})

        def to_xp(a):
            key = id(a)
            if key not in cache:
                cache[key] = (xp.asarray(a), a)  # keep the host array alive with its copy
            return cache[key][0]

        return to_xp

    def sizes(self):
        """Per level, ``(n_boxes, n_elim, n_boundary)`` of every class."""
        return [[(c.n_boxes, c.n_elim, c.n_boundary) for c in level.classes] for level in self.levels]

    def flops(self) -> float:
        """LU-type work model: factor each eliminated block, solve, Schur-update."""
        return flops_of_sizes(self.sizes())

    def memory_bytes(self, itemsize: int, hermitian: bool) -> int:
        """Peak bytes of a factorization: stored blocks plus the engine's two frontal arenas
        and scratch (what ``factorize`` checks against the memory available)."""
        return memory_of_sizes(self.sizes(), itemsize, hermitian)

    def max_front(self) -> int:
        return max(c.n_front for level in self.levels for c in level.classes)


def flops_of_sizes(sizes) -> float:
    """LU-type flops of a tree given as :meth:`Plan.sizes` (Cholesky: about half)."""
    total = 0.0
    for level in sizes:
        for p, s, r in level:
            s, r = float(s), float(r)
            total += p * (2.0 / 3.0 * s**3 + 2.0 * s * s * r + 2.0 * r * r * s)
    return total


def stored_entries_of_sizes(sizes, hermitian: bool) -> int:
    """Entries of the stored factors (``R_S`` not kept for Hermitian matrices)."""
    return sum(p * (s * s + s * r + (0 if hermitian else r * s)) for level in sizes for p, s, r in level)


def memory_of_sizes(sizes, itemsize: int, hermitian: bool) -> int:
    """Peak bytes of factorizing a tree given as :meth:`Plan.sizes`: the stored blocks, the
    two frontal arenas of consecutive levels, and one class's scratch."""
    per_level = [sum(p * (s + r) ** 2 for p, s, r in level) for level in sizes]
    scratch = max(p * (s + r) ** 2 for level in sizes for p, s, r in level)
    arenas = max(a + b for a, b in zip(per_level, per_level[1:] + [0]))
    return itemsize * (stored_entries_of_sizes(sizes, hermitian) + arenas + scratch)


def _segment_classes(seg, extent, before, after):
    """Distinct (size, first end shared, last end shared) of 1-D segments, and their counts."""
    s0, s1 = seg[:, 0], seg[:, 1]
    keys = np.stack([s1 - s0 + 1, (s0 > 0) | before, (s1 < extent - 1) | after], axis=1).astype(np.int64)
    return np.unique(keys, axis=0, return_counts=True)


@functools.lru_cache(maxsize=64)
def tree_sizes(height: int, width: int, leaf_cells: int = DEFAULT_LEAF_CELLS, window=None,
               components: int = 1, batch: int = 1) -> tuple:  # fmt: skip
    """Per level (leaves first), the ``(n_boxes, n_elim, n_boundary)`` of every class of
    :func:`build_plan`'s tree (``window=(level, box)``: of that window's plan), from the 1-D
    segments alone, no index maps and nothing per box: the memory and time of any grid in
    O(H + W) work, before anything is allocated (and each MPI rank's share).

    A merge eliminates its separator line less the ends that lie on its shared sides (every
    other node of its children's boundaries is on its own boundary); a leaf, all its nodes
    but its boundary.  ``components`` multiplies every size, ``batch`` every box count, as
    :func:`build_plan` expands its maps.  Cached (a factorization checks its memory twice).
    """
    if window is None:
        seg_levels, axes = _segment_tree(height, width, leaf_cells)
        (h, w), (top, bottom, left, right) = (height, width), (False, False, False, False)
    else:
        seg_levels, axes, (h, w), (top, bottom, left, right) = window_tree(height, width, *window, leaf_cells)
    out = []
    for k, (rows, cols) in enumerate(seg_levels):
        row_keys, row_counts = _segment_classes(rows, h, top, bottom)
        col_keys, col_counts = _segment_classes(cols, w, left, right)
        level = []
        for (hn, t, b), rc in zip(row_keys.tolist(), row_counts.tolist()):
            for (wn, lf, rt), cc in zip(col_keys.tolist(), col_counts.tolist()):
                r = len(_boundary_nodes(hn, wn, t, b, lf, rt))
                if k == 0:
                    s = hn * wn - r
                elif axes[k - 1] == 0:  # children stacked: the separator is a row of wn nodes
                    s = wn - (lf + rt if wn > 1 else int(lf or rt))
                else:
                    s = hn - (t + b if hn > 1 else int(t or b))
                level.append((rc * cc * batch, s * components, r * components))
        out.append(tuple(level))
    return tuple(out)


def memory_estimate(height: int, width: int, itemsize: int, hermitian: bool, components: int = 1,
                    batch: int = 1, leaf_cells: int = DEFAULT_LEAF_CELLS) -> int:  # fmt: skip
    """Peak bytes of factorizing an ``height x width`` grid (:meth:`Plan.memory_bytes`) in
    closed form: O(H + W) work, no plan, so any size is refused in milliseconds."""
    return memory_of_sizes(tree_sizes(height, width, leaf_cells, None, components, batch), itemsize, hermitian)


def _split_segments(seg: np.ndarray) -> np.ndarray:
    """Halve every [start, end] node segment at its middle cell (shared node between halves)."""
    start, end = seg[:, 0], seg[:, 1]
    mid = start + (end - start) // 2
    out = np.empty((2 * len(seg), 2), dtype=np.int64)
    out[0::2, 0], out[0::2, 1] = start, mid
    out[1::2, 0], out[1::2, 1] = mid, end
    return out


def _segment_tree(height: int, width: int, leaf_cells: int):
    """Row and column segments of every level, leaves first, and the axis merged above each."""
    rows = np.array([[0, height - 1]], dtype=np.int64)
    cols = np.array([[0, width - 1]], dtype=np.int64)
    levels = [(rows, cols)]
    axes = []
    while True:
        row_cells = int((rows[:, 1] - rows[:, 0]).max())
        col_cells = int((cols[:, 1] - cols[:, 0]).max())
        if max(row_cells, col_cells) <= leaf_cells:
            break
        if row_cells >= col_cells:
            rows = _split_segments(rows)
            axes.append(0)
        else:
            cols = _split_segments(cols)
            axes.append(1)
        levels.append((rows, cols))
    return levels[::-1], axes[::-1]


def _boundary_nodes(hn: int, wn: int, top: bool, bottom: bool, left: bool, right: bool):
    """Local (row-major) ids of a box's shared-side nodes, ordered side by side.

    Sides in the order top, bottom, left, right (a corner goes with the first side it is on),
    each along its line, so that a child's boundary lands in its parent's frontal as a few
    contiguous runs (block copies instead of gathers).  O(hn + wn): big boxes stay cheap.
    """
    cols, rows = np.arange(wn), np.arange(hn)
    taken_top = bool(top)
    taken_bottom = bool(bottom) and not (hn == 1 and taken_top)
    parts = []
    if taken_top:
        parts.append(cols)
    if taken_bottom:
        parts.append((hn - 1) * wn + cols)
    inner = rows[~((rows == 0) & taken_top) & ~((rows == hn - 1) & taken_bottom)]
    if left:
        parts.append(inner * wn)
    if right and not (wn == 1 and left):
        parts.append(inner * wn + wn - 1)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _local_structure(hn: int, wn: int, top: bool, bottom: bool, left: bool, right: bool):
    """Local (row-major) ids of a box's eliminated and boundary nodes (see _boundary_nodes)."""
    boundary = _boundary_nodes(hn, wn, top, bottom, left, right)
    shared = np.zeros(hn * wn, dtype=bool)
    shared[boundary] = True
    return np.flatnonzero(~shared), boundary


def _runs(gather: np.ndarray, zero_slot: int) -> np.ndarray:
    """Maximal runs (dst_start, src_start, length) with gather[dst + t] == src + t."""
    dst = np.flatnonzero(gather != zero_slot)
    if dst.size == 0:
        return np.zeros((0, 3), dtype=np.int64)
    src = gather[dst]
    brk = np.flatnonzero((np.diff(dst) != 1) | (np.diff(src) != 1)) + 1
    starts = np.concatenate([[0], brk])
    lengths = np.diff(np.concatenate([starts, [dst.size]]))
    return np.stack([dst[starts], src[starts], lengths], axis=1)


def _leaf_template(hn, wn, bottom, right, front_local):
    """Frontal entry -> (local node * 9 + slot), or the zero slot for entries not owned here.

    An entry (i, j) is owned by the box holding the grid cell with top-left corner
    (min(ri, rj), min(ci, cj)); along an axis where i and j agree, a node on the box's far
    side belongs to the next box's cell unless it lies on the grid's outer boundary.  The rule
    is symmetric in (i, j), so Hermitian matrices give Hermitian frontals.
    """
    n_local = hn * wn
    n_front = len(front_local)
    pos = np.full(n_local, -1, dtype=np.int64)
    pos[front_local] = np.arange(n_front)
    zero_slot = n_local * 9
    template = np.full((n_front, n_front), zero_slot, dtype=np.int64)

    ra, ca = np.divmod(np.arange(n_local), wn)

    def owned(a, b, n_axis, far_shared):
        if n_axis == 1:
            return np.ones_like(a, dtype=bool)
        cell = np.minimum(a, b)
        same_far = (a == b) & (a == n_axis - 1) & (not far_shared)
        cell = np.where(same_far, cell - 1, cell)
        return (cell >= 0) & (cell <= n_axis - 2)

    for slot, (dr, dc) in enumerate(STENCIL_OFFSETS):
        rb, cb = ra + dr, ca + dc
        inside = (rb >= 0) & (rb < hn) & (cb >= 0) & (cb < wn)
        ok = inside & owned(ra, rb, hn, bottom) & owned(ca, cb, wn, right)
        a = np.flatnonzero(ok)
        b = rb[a] * wn + cb[a]
        template[pos[a], pos[b]] = a * 9 + slot
    return template


def _classify(rows, cols, height, width, sides=(False, False, False, False)):
    """Class id of every box of a level (boxes numbered row-major over segments).

    A box's signature is its row segment's (size, top shared, bottom shared) times its column
    segment's (size, left shared, right shared): classify the few segments, then combine.
    ``sides`` (top, bottom, left, right): which sides of the whole ``height x width`` region
    are shared with neighbouring regions (a window of a larger grid), else outer boundary.
    """
    r0, r1 = rows[:, 0], rows[:, 1]
    c0, c1 = cols[:, 0], cols[:, 1]
    top, bottom, left, right = sides
    row_sig, row_class = np.unique(
        np.stack([r1 - r0 + 1, (r0 > 0) | top, (r1 < height - 1) | bottom], axis=1).astype(np.int64),
        axis=0,
        return_inverse=True,
    )
    col_sig, col_class = np.unique(
        np.stack([c1 - c0 + 1, (c0 > 0) | left, (c1 < width - 1) | right], axis=1).astype(np.int64),
        axis=0,
        return_inverse=True,
    )
    combined = (row_class.reshape(-1, 1) * len(col_sig) + col_class.reshape(1, -1)).reshape(-1)
    used = np.zeros(len(row_sig) * len(col_sig), dtype=bool)
    used[combined] = True
    ids = np.flatnonzero(used)
    renumber = np.empty(len(used), dtype=np.int64)
    renumber[ids] = np.arange(len(ids))
    ri, ci = np.divmod(ids, len(col_sig))
    rs, cs = row_sig[ri], col_sig[ci]
    # columns: (hn, wn, top, bottom, left, right)
    signatures = np.stack([rs[:, 0], cs[:, 0], rs[:, 1], rs[:, 2], cs[:, 1], cs[:, 2]], axis=1)
    return signatures, renumber[combined]


def _global_ids(rows, cols, boxes, n_cols, width, hn, wn, local):
    """Global ids of local nodes ``local`` in each of ``boxes``."""
    bi, bj = np.divmod(boxes, n_cols)
    lr, lc = np.divmod(local, wn)
    return (rows[bi, 0][:, None] + lr[None, :]) * width + (cols[bj, 0][:, None] + lc[None, :])


def _children_of(boxes, axis, n_cols, child_n_cols):
    """Box ids one level down of the first (top/left) and second halves of ``boxes``."""
    bi, bj = np.divmod(boxes, n_cols)
    if axis == 0:
        return [(2 * bi) * child_n_cols + bj, (2 * bi + 1) * child_n_cols + bj]
    return [bi * child_n_cols + 2 * bj, bi * child_n_cols + 2 * bj + 1]


def _box_order(seg_levels, axes, classified):
    """Boxes of every class, ordered top-down so that each parent class reads its children
    as one contiguous slice of the child class: ``links[k][ci]`` lists, per child role,
    ``(child class, start, stop)`` one level down."""
    n_levels = len(seg_levels)
    order = [None] * n_levels
    links = [[] for _ in range(n_levels)]
    order[-1] = [np.zeros(1, dtype=np.int64)]
    for k in range(n_levels - 2, -1, -1):
        class_of_box = classified[k][1]
        n_cols, child_n_cols = len(seg_levels[k + 1][1]), len(seg_levels[k][1])
        parts = [[] for _ in range(len(classified[k][0]))]
        filled = [0] * len(parts)
        for boxes in order[k + 1]:
            roles = []
            for kid in _children_of(boxes, axes[k], n_cols, child_n_cols):
                kc = class_of_box[kid]
                if np.any(kc != kc[0]):  # children of one parent class share one class
                    raise AssertionError("inconsistent child classes in plan")
                kc = int(kc[0])
                roles.append((kc, filled[kc], filled[kc] + len(kid)))
                parts[kc].append(kid)
                filled[kc] += len(kid)
            links[k + 1].append(roles)
        order[k] = [np.concatenate(p) for p in parts]
    return order, links


@functools.lru_cache(maxsize=16)
def build_plan(height: int, width: int, leaf_cells: int = DEFAULT_LEAF_CELLS, components: int = 1,
               batch: int = 1) -> Plan:  # fmt: skip
    """Build (once per shape, cached) the box tree and index maps of a row-major grid.

    ``components``: unknowns per pixel (block stencils); the scalar plan's maps expanded.
    ``batch``: that many systems on the grid, each class's boxes repeated for every system
    (one batched dense call covers the whole batch).
    """
    if components < 1 or batch < 1:
        raise ValueError(f"components and batch must be positive, got {components}, {batch}")
    if batch > 1:
        return _batch_plan(build_plan(height, width, leaf_cells, components), batch)
    if components > 1:
        return _expand_plan(build_plan(height, width, leaf_cells), components)
    if height < 1 or width < 1:
        raise ValueError(f"grid shape must be positive, got {height}x{width}")
    if leaf_cells < 2:
        raise ValueError("leaf_cells must be at least 2")
    seg_levels, axes = _segment_tree(height, width, leaf_cells)
    return _plan_from_segments(seg_levels, axes, height, width, leaf_cells)


def _plan_from_segments(seg_levels, axes, height, width, leaf_cells, sides=(False, False, False, False)):
    """The plan of the box tree ``seg_levels`` (leaves first) over a ``height x width``
    region; ``sides`` as for :func:`_classify` (a window keeps its shared sides to the end)."""
    classified = [_classify(rows, cols, height, width, sides) for rows, cols in seg_levels]
    box_order, links = _box_order(seg_levels, axes, classified)

    levels = []
    child_boundaries = None
    for k, (rows, cols) in enumerate(seg_levels):
        signatures = classified[k][0]
        classes, boundaries = [], []
        for ci, (hn, wn, top, bottom, left, right) in enumerate(signatures.tolist()):
            boxes = box_order[k][ci]
            if k == 0:
                elim_l, bound_l = _local_structure(hn, wn, top, bottom, left, right)
            else:  # a merge finds its eliminated nodes from its children
                bound_l = _boundary_nodes(hn, wn, top, bottom, left, right)
            boundaries.append((bound_l, hn, wn))
            if k == 0:
                front_l = np.concatenate([elim_l, bound_l])
                closed = _global_ids(rows, cols, boxes, len(cols), width, hn, wn, np.arange(hn * wn))
                zero_node = np.full((len(boxes), 1), height * width, dtype=closed.dtype)
                cls = BoxClass(
                    n_elim=len(elim_l),
                    n_boundary=len(bound_l),
                    eliminated=closed[:, elim_l],
                    closed_nodes=np.concatenate([closed, zero_node], axis=1),
                    leaf_template=_leaf_template(hn, wn, bool(bottom), bool(right), front_l),
                )
            else:
                kids = [
                    (kc, a, b, child_boundaries[kc], levels[k - 1].classes[kc])
                    for kc, a, b in links[k][ci]
                ]
                cls = _merge_class(axes[k - 1], (hn, wn), bound_l, kids)
                cls.eliminated = np.ascontiguousarray(_global_ids(
                    rows, cols, boxes, len(cols), width, hn, wn, cls.eliminated
                ))  # fmt: skip
            classes.append(cls)
        levels.append(Level(classes))
        child_boundaries = boundaries

    for k in range(len(levels) - 1):
        _link_down_sweep(levels[k], levels[k + 1])

    order = np.concatenate(
        [c.eliminated.reshape(-1) for level in levels for c in level.classes]
    ).astype(np.int64)
    boundary = child_boundaries[0][0].astype(np.int64)  # the root's (empty for a whole grid)
    everything = np.concatenate([order, boundary])
    inverse = np.full(height * width, -1, dtype=np.int64)
    inverse[everything] = np.arange(len(everything))
    if len(everything) != height * width or np.any(inverse < 0):  # a planning bug
        raise AssertionError("plan does not eliminate every node exactly once")
    return Plan(height, width, leaf_cells, levels, order, inverse,
                boundary=boundary if len(boundary) else None)  # fmt: skip


def window_segments(seg_levels, axes, level, box):
    """The part of a grid's segment tree below box ``box`` (row-major id) of level ``level``
    (leaves first), in the box's own coordinates: ``(seg_levels, axes, (r0, c0))``."""
    rows, cols = seg_levels[level]
    (r0, r1), (c0, c1) = rows[box // len(cols)], cols[box % len(cols)]
    out = []
    for k in range(level + 1):
        rk, ck = seg_levels[k]
        rk = rk[(rk[:, 0] >= r0) & (rk[:, 1] <= r1)] - r0
        ck = ck[(ck[:, 0] >= c0) & (ck[:, 1] <= c1)] - c0
        out.append((rk, ck))
    return out, axes[:level], (int(r0), int(c0))


def window_tree(height, width, level, box, leaf_cells):
    """Segments, axes, shape and shared sides of box ``box`` of level ``level``'s subtree."""
    seg_levels, axes = _segment_tree(height, width, leaf_cells)
    segs, sub_axes, (r0, c0) = window_segments(seg_levels, axes, level, box)
    hn = int(segs[-1][0][0, 1]) + 1
    wn = int(segs[-1][1][0, 1]) + 1
    return segs, sub_axes, (hn, wn), (r0 > 0, r0 + hn < height, c0 > 0, c0 + wn < width)


@functools.lru_cache(maxsize=16)
def build_window_plan(height: int, width: int, level: int, box: int,
                      leaf_cells: int = DEFAULT_LEAF_CELLS) -> Plan:  # fmt: skip
    """The plan of one box of the ``height x width`` grid's tree (``box`` of level ``level``,
    leaves first), in the box's own row-major node ids: the same subtree, classes and
    entry ownership as :func:`build_plan`'s, but the root keeps its shared sides
    (``Plan.boundary``) for the levels above, which another process may own."""
    segs, sub_axes, (hn, wn), sides = window_tree(height, width, level, box, leaf_cells)
    plan = _plan_from_segments(segs, sub_axes, hn, wn, leaf_cells, sides)
    plan.key = (build_window_plan, (height, width, level, box, leaf_cells))
    return plan


def _merge_class(axis, shape, bound_l, kids):
    """A class of parent boxes formed by merging two children along ``axis``.

    ``kids``: per role, (child class, start, stop, (child boundary, child hn, child wn),
    child BoxClass).
    Returns the BoxClass with ``eliminated`` still in parent-local ids.
    """
    hn, wn = shape
    # which parent-local nodes appear in a child's boundary, and where
    where = []
    offset = (0, 0)
    for kc, start, stop, (k_bound, khn, kwn), kid in kids:
        kr, kcol = np.divmod(k_bound, kwn)
        local = (kr + offset[0]) * wn + (kcol + offset[1])
        where.append((kc, slice(start, stop), local, kid))
        # the second child starts on the line the two share
        offset = (khn - 1, 0) if axis == 0 else (0, kwn - 1)

    in_child = np.zeros(hn * wn, dtype=bool)
    for _, _, local, _ in where:
        in_child[local] = True
    is_bound = np.zeros(hn * wn, dtype=bool)
    is_bound[bound_l] = True
    elim_l = np.flatnonzero(in_child & ~is_bound)
    front_l = np.concatenate([elim_l, bound_l])
    pos = np.full(hn * wn, -1, dtype=np.int64)
    pos[front_l] = np.arange(len(front_l))

    n_front = len(front_l)
    use_flat = flat_gathers_pay(n_front, [kid for *_, kid in where])
    children = [child_link(kc, rows, pos[local], n_front, kid, use_flat) for kc, rows, local, kid in where]
    return BoxClass(
        n_elim=len(elim_l),
        n_boundary=len(bound_l),
        eliminated=elim_l,
        children=tuple(children),
    )


def flat_gathers_pay(n_front: int, kids) -> bool:
    """Whether a merge frontal of ``n_front`` nodes gets flat gather maps (see ChildLink)."""
    return n_front <= FLAT_GATHER_MAX_FRONT and all(kid.n_elim > 0 for kid in kids)


def child_link(kc: int, rows: slice, boundary_pos: np.ndarray, n_front: int, kid: BoxClass,
               use_flat: bool) -> ChildLink:  # fmt: skip
    """The link of a merge class to one child class ``kc`` (its boxes ``rows``) whose
    boundary node ``i`` sits at position ``boundary_pos[i]`` of the parent's frontal (-1: a
    decoupled node the parent does not carry, see :mod:`ssi_sparse._planning.masked_plan`)."""
    n_kid = len(boundary_pos)
    carried = boundary_pos >= 0
    gather = np.full(n_front, n_kid, dtype=np.int64)  # n_kid = the zero slot
    gather[boundary_pos[carried]] = np.flatnonzero(carried)
    flat = functools.partial(_flat_map, gather, n_kid, kid.n_elim, kid.n_front) if use_flat else None
    return ChildLink(kc, rows, _runs(gather, n_kid), np.where(carried, boundary_pos, 0), flat,
                     None if carried.all() else carried)  # fmt: skip


def _flat_map(gather, n_kid, kid_elim, kid_front):
    g = np.where(gather < n_kid, gather + kid_elim, -1)
    both = (g[:, None] >= 0) & (g[None, :] >= 0)
    return np.where(both, g[:, None] * kid_front + g[None, :], 0).reshape(-1)


def _link_down_sweep(child_level: Level, parent_level: Level) -> None:
    """For each child class, the (parent class, role) slices that give its boundary values,
    in the class's own box order (children are stored parent by parent)."""
    for ci, cls in enumerate(child_level.classes):
        sources = []
        for pi, parent in enumerate(parent_level.classes):
            for role, link in enumerate(parent.children):
                if link.cls == ci:
                    sources.append((link.rows.start, pi, role))
        sources.sort()
        # (a masked plan's box whose boundary is all decoupled has no parent: see _masked_plan)
        if sum(parent_level.classes[pi].n_boxes for _, pi, _ in sources) != cls.n_boxes and (
            sources or cls.n_boundary
        ):
            raise AssertionError("a box has no parent in plan")
        child_level.boundary_sources.append([(pi, role) for _, pi, role in sources])


def _expand_nodes(ids: np.ndarray, k: int) -> np.ndarray:
    """Ids (any shape, last axis a list) of pixels -> their ``k`` nodes each, pixel-major."""
    out = ids[..., :, None] * k + np.arange(k)
    return out.reshape(ids.shape[:-1] + (ids.shape[-1] * k,))


def _expand_runs(runs: np.ndarray, k: int) -> np.ndarray:
    return runs * k  # a run of pixels is a run of their nodes: starts and lengths scale


def _expand_flat(link: ChildLink, f: int, child_f: int, k: int) -> np.ndarray:
    """Flat gather (f x f entries into the child's f_c x f_c frontal, 0 = no contribution)
    of ``link`` for the expanded frontals."""
    flat = link.flat
    g1, g2 = np.divmod(flat.reshape(f, f), child_f)
    a = np.arange(k)
    rows = (g1[:, None, :, None] * k + a[None, :, None, None]) * (child_f * k)
    cols = g2[:, None, :, None] * k + a[None, None, None, :]
    out = np.where((flat.reshape(f, f) != 0)[:, None, :, None], rows + cols, 0)
    return out.reshape(-1)


def _expand_template(template: np.ndarray, n_local: int, k: int) -> np.ndarray:
    """Leaf template into ``(n_local + 1) * 9`` -> into the expanded closed nodes' rows:
    entry (i k + a, j k + b) reads row ``local * k^2 + a k + b`` (slot unchanged)."""
    f = template.shape[0]
    local, slot = np.divmod(template, 9)
    a = np.arange(k)
    row = local[:, None, :, None] * (k * k) + a[None, :, None, None] * k + a[None, None, None, :]
    out = np.where((template == n_local * 9)[:, None, :, None], n_local * k * k * 9, row * 9 + slot[:, None, :, None])
    return out.reshape(f * k, f * k)


def _expand_plan(plan: Plan, k: int) -> Plan:
    """The plan of the same grid with ``k`` nodes per pixel.

    The engine's stencil rows become ``pixel * k^2 + a * k + b`` (the coupling of component
    ``a`` of a pixel to component ``b`` of its neighbour, 9 slots each), so leaves gather
    ``k^2`` rows per closed node; the zero node stays one row, the last.
    """
    n_pixels = plan.height * plan.width
    levels = []
    for k_level, level in enumerate(plan.levels):
        classes = []
        for c in level.classes:
            new = BoxClass(n_elim=c.n_elim * k, n_boundary=c.n_boundary * k,
                           eliminated=_expand_nodes(c.eliminated, k))  # fmt: skip
            if c.closed_nodes is not None:
                n_local = c.closed_nodes.shape[1] - 1
                rows = _expand_nodes(c.closed_nodes, k * k)
                new.closed_nodes = np.where(rows >= n_pixels * k * k, n_pixels * k * k, rows)
                new.leaf_template = _expand_template(c.leaf_template, n_local, k)
            if c.children:
                child_classes = plan.levels[k_level - 1].classes
                new.children = tuple(
                    ChildLink(
                        link.cls,
                        link.rows,
                        _expand_runs(link.runs, k),
                        _expand_nodes(link.boundary_pos, k),
                        functools.partial(_expand_flat, link, c.n_front, child_classes[link.cls].n_front, k)
                        if link.has_flat and c.n_front * k <= FLAT_GATHER_MAX_FRONT else None,
                    )
                    for link in c.children
                )
            classes.append(new)
        levels.append(Level(classes, level.boundary_sources))
    order = _expand_nodes(plan.order, k)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return Plan(plan.height, plan.width, plan.leaf_cells, levels, order, inverse, components=k)


def _batch_plan(plan: Plan, B: int) -> Plan:
    """``B`` systems on ``plan``'s grid: box ``j`` of a class becomes rows ``j * B + t``, so a
    parent's children stay one slice of their class (scaled by ``B``), and every map inside a
    frontal (templates, runs, flat gathers) is shared."""
    n_nodes = plan.n
    n_rows = plan.height * plan.width * plan.components**2  # stencil rows of one system
    shift_nodes = np.arange(B) * n_nodes
    shift_rows = np.arange(B) * n_rows

    def repeat(ids, shift):
        return (ids[:, None, :] + shift[None, :, None]).reshape(ids.shape[0] * B, ids.shape[1])

    levels = []
    for level in plan.levels:
        classes = []
        for c in level.classes:
            new = BoxClass(c.n_elim, c.n_boundary, repeat(c.eliminated, shift_nodes))
            if c.closed_nodes is not None:
                rows = repeat(c.closed_nodes, shift_rows)
                zero = (c.closed_nodes == n_rows)[:, None, :]  # (broadcast over the systems)
                np.copyto(rows.reshape(c.n_boxes, B, -1), B * n_rows, where=zero)  # the one zero row, last
                new.closed_nodes = rows
                new.leaf_template = c.leaf_template
            new.children = tuple(
                ChildLink(link.cls, slice(link.rows.start * B, link.rows.stop * B), link.runs,
                          link.boundary_pos, functools.partial(getattr, link, "flat") if link.has_flat else None)  # fmt: skip
                for link in c.children
            )
            classes.append(new)
        levels.append(Level(classes, level.boundary_sources))
    order = np.concatenate([c.eliminated.reshape(-1) for level in levels for c in level.classes])
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return Plan(plan.height, plan.width, plan.leaf_cells, levels, order, inverse,
                components=plan.components, batch=B)  # fmt: skip
