"""Masked plans: the top levels of a grid's box tree carry only the nodes that are unknowns.

A masked grid's absent pixels are decoupled nodes (``d x = 0``) of the full grid, so the
full grid's plan solves it exactly, but every frontal then carries them: a ring covering a
quarter of its bounding box costs nearly the whole box.  Where that weighs, in the few wide
frontals at the top of the tree, this plan drops them.  From the level where a level holds
at most ``MASK_COMPACT_MAX_BOXES`` boxes upwards, every box becomes its own class whose
frontal holds only the present nodes of the full plan's frontal (eliminated ones first, then
its boundary, in the full plan's order); a box whose whole region holds no unknown is
dropped, with its subtree.  Below, the full plan's classes keep their structure (their
frontals keep the absent nodes; the dense kernel factors around them, see
``factor_box_compact``) but lose the subtrees of the boxes just below the compacted levels
whose region holds no unknown: a compacted parent carries nothing of theirs, so a ring's
hole and a blob's empty corners cost nothing at the low levels either.

Exact, not an approximation: a decoupled node's row and column hold only its diagonal in
every frontal and every Schur complement, so leaving it out changes no other entry.  A node
the plan never eliminates is an absent one; its solution is zero (its right-hand side is).
Built once per (grid, mask) and cached, like the full plan per shape.
"""

from __future__ import annotations

import functools

import numpy as np

from .plan import BoxClass, ChildLink, Level, Plan, _link_down_sweep, build_plan, child_link
from .._tuning import MASK_COMPACT_MAX_BOXES

__all__ = ["build_masked_plan", "masked_plan_for"]


def masked_plan_for(plan: Plan, present: np.ndarray) -> Plan:
    """The masked plan of ``plan`` (a whole grid's, one system) for the nodes ``present``
    (bool, one per node), cached per mask; ``plan`` itself where nothing would be dropped."""
    if plan.batch != 1 or plan.boundary is not None or bool(present.all()):
        return plan
    packed = np.packbits(present).tobytes()
    return build_masked_plan(plan.height, plan.width, plan.leaf_cells, plan.components, packed)


@functools.lru_cache(maxsize=8)
def build_masked_plan(height: int, width: int, leaf_cells: int, components: int, packed: bytes) -> Plan:
    """:func:`masked_plan_for` from its picklable key (``packed``: ``np.packbits`` of the
    present nodes)."""
    plan = build_plan(height, width, leaf_cells, components, 1)  # (the engine's cache key)
    present = np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=plan.n).astype(bool)
    out = _compact(plan, present)
    if out is None:
        return plan
    out.key = (build_masked_plan, (height, width, leaf_cells, components, packed))
    return out


def _first_compact_level(plan: Plan) -> int | None:
    """Lowest level from which every level has at most MASK_COMPACT_MAX_BOXES boxes (at
    least 2: leaves and the level that fuses them keep their classes), or None."""
    first = None
    for k in range(len(plan.levels) - 1, 1, -1):
        if sum(c.n_boxes for c in plan.levels[k].classes) > MASK_COMPACT_MAX_BOXES:
            break
        first = k
    return first


def _region_present(plan: Plan, present: np.ndarray, up_to: int):
    """Per level ``<= up_to`` and class, whether each box's closed region holds an unknown
    (leaves: their closed nodes; merges: either child's region)."""
    with_zero = np.concatenate([present, [False]])  # leaves' zero row (node n)
    out = []
    for k in range(up_to + 1):
        level = []
        for cls in plan.levels[k].classes:
            if k == 0:  # closed_nodes are stencil rows: node * components + component
                level.append(with_zero[cls.closed_nodes // plan.components].any(axis=1))
                continue
            any_kid = np.zeros(cls.n_boxes, dtype=bool)
            for link in cls.children:
                any_kid |= out[k - 1][link.cls][link.rows]
            level.append(any_kid)
        out.append(level)
    return out


def _fronts(plan: Plan, down_to: int):
    """Global node ids of every box's frontal (eliminated, then boundary), per level
    ``>= down_to`` and class, (P, n_front) arrays, from the root down."""
    fronts = [None] * len(plan.levels)
    for k in range(len(plan.levels) - 1, down_to - 1, -1):
        level = plan.levels[k]
        if k == len(plan.levels) - 1:
            fronts[k] = [c.eliminated for c in level.classes]  # the root has no boundary
            continue
        parents = plan.levels[k + 1].classes
        fronts[k] = []
        for ci, cls in enumerate(level.classes):
            parts = []
            for pi, role in level.boundary_sources[ci]:
                parts.append(fronts[k + 1][pi][:, parents[pi].children[role].boundary_pos])
            boundary = np.concatenate(parts, axis=0)
            fronts[k].append(np.concatenate([cls.eliminated, boundary], axis=1))
    return fronts


def _compact(plan: Plan, present: np.ndarray) -> Plan | None:
    """The masked plan, or None where it would not differ from ``plan``."""
    first = _first_compact_level(plan)
    if first is None:
        return None
    top = len(plan.levels) - 1
    region = _region_present(plan, present, top)
    fronts = _fronts(plan, first - 1)
    # A box with unknowns below it but none in its frontal needs one decoupled pivot to stay
    # a box; only the lowest compacted level can take it (its children carry every node).
    for k in range(top, first, -1):
        if any((region[k][ci] & ~present[fronts[k][ci]].any(axis=1)).any() for ci in range(len(fronts[k]))):
            first = k
            break
    # a box of the lowest compacted level that keeps a decoupled pivot keeps all its children
    # (the pivot's diagonal entry lies in one of them); its other children with no unknown
    # in their region go, with their subtrees
    pivot = [region[first][ci] & ~present[fronts[first][ci]].any(axis=1) for ci in range(len(fronts[first]))]
    keep = _kept_boxes(plan, first, region[first - 1], pivot)
    levels, index = _pruned_levels(plan, first, keep)
    new_index, kept_of = {}, {}  # (level, full class, box) -> masked class, its kept front mask
    pos_of = np.full(plan.n, -1, dtype=np.int64)
    for k in range(first, top + 1):
        classes = []
        for ci, cls in enumerate(plan.levels[k].classes):
            for j in range(cls.n_boxes):
                if not region[k][ci][j]:
                    continue  # no unknown in its region: dropped with its subtree
                front = fronts[k][ci][j]
                kept = present[front]
                if not kept.any():  # (lowest compacted level only, see above)
                    if cls.n_elim == 0:
                        return None  # degenerate strips: the full plan serves
                    kept[0] = True  # a decoupled pivot, carried by the full classes below
                elim, bound = front[: cls.n_elim][kept[: cls.n_elim]], front[cls.n_elim :][kept[cls.n_elim :]]
                front_c = np.concatenate([elim, bound])
                pos_of[front_c] = np.arange(len(front_c))
                links = []
                for link in cls.children:
                    row = link.rows.start + j
                    if k > first:
                        if (k - 1, link.cls, row) not in new_index:
                            continue  # dropped child
                        kc, rows = new_index[(k - 1, link.cls, row)], slice(0, 1)
                        kid = levels[k - 1].classes[kc]
                        kid_front = fronts[k - 1][link.cls][row][kept_of[(k - 1, link.cls, row)]]
                    else:
                        kc, kid_rows = index[link.cls]
                        if kid_rows[row] < 0:
                            continue  # pruned child: no unknown in its region
                        rows = slice(int(kid_rows[row]), int(kid_rows[row]) + 1)
                        kid = levels[k - 1].classes[kc]
                        kid_front = fronts[k - 1][link.cls][row]
                    links.append((kc, rows, pos_of[kid_front[kid.n_elim :]], kid))
                # runs, no flat maps: building those cost more than they save on so few boxes
                children = tuple(child_link(kc, rows, pos, len(front_c), kid, False) for kc, rows, pos, kid in links)
                pos_of[front_c] = -1
                new_index[(k, ci, j)], kept_of[(k, ci, j)] = len(classes), kept
                classes.append(BoxClass(len(elim), len(bound), elim[None, :], children=children))
        levels.append(Level(classes))
    for k in range(top):
        _link_down_sweep(levels[k], levels[k + 1])
    order = np.concatenate([c.eliminated.reshape(-1) for level in levels for c in level.classes]).astype(np.int64)
    inverse = np.full(plan.n, len(order), dtype=np.int64)  # never eliminated: the zero row
    inverse[order] = np.arange(len(order))
    dropped = np.flatnonzero(inverse == len(order))
    if present[dropped].any():  # a planning bug
        raise AssertionError("masked plan drops an unknown")
    return Plan(plan.height, plan.width, plan.leaf_cells, levels, order, inverse, components=plan.components,
                dropped=dropped)  # fmt: skip


def _kept_boxes(plan: Plan, first: int, region_below, pivot):
    """Per level ``< first`` and class, which boxes stay: those of level ``first - 1`` whose
    region holds an unknown or whose parent keeps a decoupled pivot (``pivot``, per class
    of level ``first``), and below them their whole subtrees."""
    keep = [None] * first
    keep[first - 1] = [r.copy() for r in region_below]
    for cls, forced in zip(plan.levels[first].classes, pivot):
        for link in cls.children:
            keep[first - 1][link.cls][link.rows] |= forced
    for k in range(first - 1, 0, -1):  # children are stored parent by parent
        keep[k - 1] = [np.zeros(c.n_boxes, dtype=bool) for c in plan.levels[k - 1].classes]
        for cls, kept in zip(plan.levels[k].classes, keep[k]):
            for link in cls.children:
                keep[k - 1][link.cls][link.rows] = kept
    return keep


def _pruned_levels(plan: Plan, first: int, keep):
    """The full plan's levels ``< first`` with only the boxes ``keep``, and for level
    ``first - 1`` per old class ``(new class or -1, new row of every old box or -1)``.
    A parent's kept children stay one slice of their class: both follow the parent's order."""
    levels, index = [], None
    for k in range(first):
        classes, new_index = [], []
        for cls, kept in zip(plan.levels[k].classes, keep[k]):
            rows = np.cumsum(kept) - 1
            rows[~kept] = -1
            if not kept.any():
                new_index.append((-1, rows))
                continue
            new_index.append((len(classes), rows))
            if kept.all() and k == 0:
                classes.append(cls)
                continue
            new = BoxClass(cls.n_elim, cls.n_boundary, cls.eliminated[kept],
                           None if cls.closed_nodes is None else cls.closed_nodes[kept], cls.leaf_template)  # fmt: skip
            links = []
            for link in cls.children:
                kc, kid_rows = index[link.cls]
                start = kid_rows[link.rows][kept]
                if kc < 0 or not np.array_equal(start, start[0] + np.arange(len(start))):  # a planning bug
                    raise AssertionError("pruned children are not one slice of their class")
                flat = functools.partial(getattr, link, "flat") if link.has_flat else None
                links.append(ChildLink(kc, slice(int(start[0]), int(start[0]) + len(start)), link.runs,
                                       link.boundary_pos, flat, link.carried))  # fmt: skip
            new.children = tuple(links)
            classes.append(new)
        levels.append(Level(classes))
        index = new_index
    return levels, index
