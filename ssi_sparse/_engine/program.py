"""Solve programs: a factor's whole up and down sweep as recorded native steps.

A solve walks every class of every level with five small native kernels (node gathers and
scatters, run additions, boundary gathers, the dense sweep, see :mod:`.walks`).  Called one
by one from Python, with their checks and address arithmetic, they cost more than their work
on grids up to ~512^2: at 257^2 half of a solve's time was the interpreter's, and a reused
solve took 3x SuperLU's.  A :class:`SweepProgram` records those calls once per factor and
right-hand-side shape, as a table of int64 steps per level (``ssi_sweep_program`` in
``_csrc/program_impl.h`` runs a table in one call), and owns the frontal right-hand sides
they work in.

A level whose classes move enough data for threads to pay
(:data:`~ssi_sparse._tuning.SWEEP_PARALLEL_MIN_ENTRIES`) gets one table per engine thread: its
large classes cut into box ranges, its small ones dealt whole to the least loaded thread;
consecutive levels that run on one thread are joined into one table.  A solve is then one
native call: the caller drives the stages (``ssi_sweep_drive``) and helpers on the engine's
pool take tables of the open stage (``ssi_sweep_help``); the caller never waits for a helper
to arrive, only for the tables one took.  The tables hold raw addresses into the factor's
blocks and the program's fronts: a program belongs to one factor, which keeps it
(:attr:`~ssi_sparse._engine.walks.NumericFactor.programs`) and never hands it on.
"""

from __future__ import annotations

import ctypes
import functools
import threading
import weakref

import numpy as np

from . import native, pages
from .native import _ptr
from .dense import FactoredBlocks
from .lapack import lapack_for
from .threads import parallel_map, pool
from .. import _tuning

__all__ = ["SweepProgram", "keep_program", "program_for"]

_KEPT_LOCK = threading.Lock()  # every factor's kept programs (threads may share a factor)

# ssi_sweep_program's steps: the numbers and the width of _csrc/frontal.c
_GATHER_NODES, _ADD_RUNS, _SWEEP, _GATHER_BOUNDARY, _SCATTER_NODES = 1, 2, 3, 4, 5
_WIDTH = 13


def program_for(factor, trans: str, k: int, dtype):
    """A :class:`SweepProgram` for ``factor`` (a NumericFactor) solving ``op(A) x = b`` with
    ``b`` (n, k) of ``dtype`` (``trans`` 'N' or 'T', see :func:`.walks.plain_trans`): one kept
    from an earlier solve, or a new one; None where a program does not apply (no native
    kernel, another dtype than the factor's, a window's plan, blocks not all native)."""
    dtype = np.dtype(dtype)
    key = (trans, int(k), dtype.str, parallel_map()[1])
    with _KEPT_LOCK:  # threads may share a factor: each solve needs its own fronts
        kept = factor.programs.get(key)
        if kept:
            return kept.pop()
    if not _applies(factor, dtype):
        return None
    try:  # the last solves' fronts (or those of the factor this one replaced)
        spare = factor.spare_fronts.pop()
    except IndexError:
        spare = None
    return SweepProgram(factor, trans, int(k), dtype, spare)


def keep_program(factor, program) -> None:
    """Keep ``program`` with its factor for the next solve of its shape: one per shape, the
    most recent shapes (at most :data:`~ssi_sparse._tuning.KEPT_PROGRAMS`) while their fronts
    together stay small next to the factor
    (:data:`~ssi_sparse._tuning.SOLVE_WORKSPACE_MAX_FRACTION` of its bytes)."""
    if program.budget is None:  # decided once: neither the factor nor the fronts change
        program.budget = _tuning.SOLVE_WORKSPACE_MAX_FRACTION * factor.nbytes()
    if program.nbytes > program.budget:
        return
    with _KEPT_LOCK:
        kept = factor.programs.pop(program.key, [])
        if not kept:
            kept.append(program)
        factor.programs[program.key] = kept  # most recently used last
        held = sum(p.nbytes for ps in factor.programs.values() for p in ps)
        while len(factor.programs) > _tuning.KEPT_PROGRAMS or held > program.budget:
            held -= sum(p.nbytes for p in factor.programs.pop(next(iter(factor.programs))))


def _applies(factor, dtype) -> bool:
    plan = factor.plan
    if plan.boundary is not None or not native.supports_dtype(np, dtype) or np.dtype(factor.dtype) != dtype:
        return False
    for level in factor.blocks:
        for blk in level:
            if not isinstance(blk, FactoredBlocks) or blk.w.dtype != dtype:
                return False
            arrays = [blk.factor, blk.w] + ([] if blk.kind == "cholesky" else [blk.x, blk.perm])
            if any(a is None or not a.flags.c_contiguous for a in arrays):
                return False
            if blk.kind != "cholesky" and blk.perm.dtype != np.int64:
                return False
    for level in plan.levels:
        for cls in level.classes:
            if cls.eliminated.dtype != np.int64 or not cls.eliminated.flags.c_contiguous:
                return False
            for link in cls.children:
                if link.runs.dtype != np.int64 or not link.runs.flags.c_contiguous:
                    return False
                if link.boundary_pos.dtype != np.int64 or not link.boundary_pos.flags.c_contiguous:
                    return False
    return True


class SweepProgram:
    """The native steps of one factor's solves with ``k`` right-hand sides (see module doc)."""

    def __init__(self, factor, trans: str, k: int, dtype, spare=None):
        self.factor, self.trans, self.k, self.dtype = factor, trans, k, np.dtype(dtype)
        _, self.n_threads = parallel_map()
        self.key = (trans, k, self.dtype.str, self.n_threads)  # recorded for this many threads
        plan = factor.plan
        self.item = self.dtype.itemsize
        self.fronts = [[_front(spare, kl, ci, (cls.n_boxes, cls.n_front, k), self.dtype)
                        for ci, cls in enumerate(level.classes)]
                       for kl, level in enumerate(plan.levels)]  # fmt: skip
        self._carried = {}  # id(link) -> its carried mask as uint8 (alive with the program)
        self.budget = None  # bytes of fronts its factor keeps at most (keep_program)
        up = [self._level_steps(kl, self._up_steps) for kl in range(len(plan.levels))]
        down = [self._level_steps(kl, self._down_steps) for kl in range(len(plan.levels) - 1, -1, -1)]
        self.stages = _joined(up + down)
        self._fn, self._drive, self._help = _entry_points(self.dtype)
        # the stages as ssi_sweep_drive reads them: [n_tables, table, n_ops, table, n_ops, ...]
        width = 1 + 2 * max(len(tables) for tables in self.stages)
        self._desc = np.zeros((len(self.stages), width), dtype=np.int64)
        for row, tables in zip(self._desc, self.stages):
            row[0] = len(tables)
            row[1 : 1 + 2 * len(tables)] = [v for t in tables for v in (_ptr(t), t.shape[0])]
        self._helpers = width // 2 - 1  # threads beside the caller that a stage can use
        self._table = ctypes.addressof(lapack_for(self.dtype).table)
        # the factor keeps its programs: a reference back would make a cycle, and the
        # factor's memory would wait for the cyclic collector (spsolve's factors are dropped
        # at once); it runs only through its factor, whose arrays are then alive
        self.factor = weakref.ref(factor)

    @functools.cached_property
    def nbytes(self) -> int:
        return sum(f.nbytes for level in self.fronts for f in level)

    def run(self, b, x) -> None:
        """Solve into ``x`` (n_nodes, k) from ``b`` (n, k), both C-ordered of the program's
        dtype and ``k`` columns (node order); the caller holds single-threaded BLAS."""
        bp, xp = _ptr(b), _ptr(x)
        if not self._helpers:  # one thread: the stages are one table
            for (table,) in self.stages:
                self._check(self._fn(_ptr(table), table.shape[0], bp, xp, self._table))
            return
        # the caller drives the stages in C, helpers on the pool take tables as they come
        # (no hand-off through Python per stage); a fresh sync block per solve, held by
        # the helpers' calls with the stage rows, so that one starting (or resuming) late
        # reads live memory and finds its own solve over: every table is taken by then
        sync = np.zeros(2 + 2 * len(self.stages), dtype=np.int64)
        sync[0] = -1
        args = (_ptr(self._desc), len(self.stages), self._desc.shape[1], bp, xp, self._table)
        workers = pool(self.n_threads)
        for _ in range(self._helpers):
            workers.submit(_help, self._help, args, sync, self._desc)
        try:
            status = self._drive(*args, _ptr(sync))
        finally:
            sync[0] = len(self.stages)  # over, even if the call itself failed: helpers return
        self._check(status)

    @staticmethod
    def _check(status) -> None:
        if status == 1:
            raise MemoryError("no memory for a solve sweep's scratch")
        if status:
            raise RuntimeError(f"solve program failed (status {status})")

    # --- recording ---------------------------------------------------------------------

    def _level_steps(self, kl, steps_of):
        """One level's steps as per-thread lists of step rows: each class in box ranges."""
        level = self.factor.plan.levels[kl]
        k = self.k
        weights = []  # entries each box moves: its frontal right-hand side and stored factor
        for ci, cls in enumerate(level.classes):
            s = cls.n_elim
            weights.append(cls.n_front * k + s * cls.n_front)
        total = sum(cls.n_boxes * w for cls, w in zip(level.classes, weights))
        n = self.n_threads if total >= _tuning.SWEEP_PARALLEL_MIN_ENTRIES else 1
        threads, load = [[] for _ in range(n)], [0] * n
        for ci, (cls, w) in enumerate(zip(level.classes, weights)):
            P = cls.n_boxes
            if n > 1 and P >= n:
                cuts = [P * i // n for i in range(n + 1)]
                for i in range(n):
                    threads[i] += steps_of(kl, ci, cuts[i], cuts[i + 1])
                    load[i] += (cuts[i + 1] - cuts[i]) * w
                continue
            i = load.index(min(load))
            threads[i] += steps_of(kl, ci, 0, P)
            load[i] += P * w
        return [t for t in threads if t] or [[]]

    def _up_steps(self, kl, ci, p0, p1):
        plan, item, k = self.factor.plan, self.item, self.k
        cls = plan.levels[kl].classes[ci]
        P, s, f = p1 - p0, cls.n_elim, cls.n_front
        front = _ptr(self.fronts[kl][ci]) + p0 * f * k * item
        steps = [(_GATHER_NODES, P, s, f, k, _ptr(cls.eliminated) + p0 * s * 8, front)]
        for link in cls.children:
            child_cls = plan.levels[kl - 1].classes[link.cls]
            fc, first = child_cls.n_front, child_cls.n_elim
            src = _ptr(self.fronts[kl - 1][link.cls]) + ((link.rows.start + p0) * fc + first) * k * item
            steps.append((_ADD_RUNS, P, k, front, f, src, fc, _ptr(link.runs), link.runs.shape[0]))
        if s:
            steps.append(self._sweep_step("up", kl, ci, p0, p1, front))
        return steps

    def _down_steps(self, kl, ci, p0, p1):
        plan, item, k = self.factor.plan, self.item, self.k
        level = plan.levels[kl]
        cls = level.classes[ci]
        P, s, f = p1 - p0, cls.n_elim, cls.n_front
        front = _ptr(self.fronts[kl][ci]) + p0 * f * k * item
        steps = []
        if kl < len(plan.levels) - 1:  # boundary values from the parents' frontals, parent by parent
            start = 0
            for pi, role in level.boundary_sources[ci]:
                parent_cls = plan.levels[kl + 1].classes[pi]
                link = parent_cls.children[role]
                stop = start + parent_cls.n_boxes
                q0, q1 = max(p0, start), min(p1, stop)
                if q1 > q0:
                    fp = parent_cls.n_front
                    parent = _ptr(self.fronts[kl + 1][pi]) + (q0 - start) * fp * k * item
                    child = _ptr(self.fronts[kl][ci]) + q0 * f * k * item
                    steps.append((_GATHER_BOUNDARY, q1 - q0, link.boundary_pos.shape[0], k, parent, fp,
                                  _ptr(link.boundary_pos), self._carried_ptr(link), child, f, s))  # fmt: skip
                start = stop
        if s:
            steps.append(self._sweep_step("down", kl, ci, p0, p1, front))
        steps.append((_SCATTER_NODES, P, s, f, k, _ptr(cls.eliminated) + p0 * s * 8, front))
        return steps

    def _sweep_step(self, op, kl, ci, p0, p1, front):
        blk = self.factor.blocks[kl][ci]
        _, s, r = blk.w.shape
        item = self.item
        lu = blk.kind != "cholesky"
        x = _ptr(blk.x) + p0 * r * s * item if lu else 0
        perm = _ptr(blk.perm) + p0 * s * 8 if lu else 0
        return (_SWEEP, p1 - p0, s, r, self.k, native.SWEEPS[op, self.trans], int(not lu),
                _ptr(blk.factor) + p0 * s * s * item, _ptr(blk.w) + p0 * s * r * item, x, front, perm,
                _tuning.DENSE_MIN_FRONT)  # fmt: skip

    def _carried_ptr(self, link) -> int:
        if link.carried is None:
            return 0
        mask = self._carried.get(id(link))
        if mask is None:
            mask = self._carried[id(link)] = np.ascontiguousarray(link.carried, dtype=np.uint8)
        return _ptr(mask)


def _entry_points(dtype):
    """``ssi_sweep_program``, ``ssi_sweep_drive``, ``ssi_sweep_help`` for ``dtype``."""
    lib, suffix = native._library(), native._SUFFIX[np.dtype(dtype)]
    run = getattr(lib, f"ssi_sweep_program_{suffix}")
    run.argtypes, run.restype = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p], ctypes.c_int64
    shared = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
              ctypes.c_void_p]  # fmt: skip
    drive = getattr(lib, f"ssi_sweep_drive_{suffix}")
    drive.argtypes, drive.restype = shared, ctypes.c_int64
    help_ = getattr(lib, f"ssi_sweep_help_{suffix}")
    help_.argtypes, help_.restype = shared, None
    return run, drive, help_


def _help(fn, args, sync, stages) -> None:
    fn(*args, _ptr(sync))  # sync and the stage rows it may still read stay alive with this call


def _front(spare, kl, ci, shape, dtype):
    """Class ``ci``'s frontal right-hand sides at level ``kl``: the spare one where it fits."""
    try:
        f = spare[kl][ci]
    except (TypeError, IndexError):
        f = None
    if f is not None and f.shape == shape and f.dtype == dtype and f.flags.c_contiguous:
        return f
    return pages.empty(shape, dtype)


def _joined(stages):
    """The levels' per-thread step lists as int64 tables, consecutive one-thread levels
    joined into one table (their order kept: each level reads the one before)."""
    out, pending = [], []
    for threads in stages:
        if len(threads) == 1:
            pending += threads[0]
            continue
        if pending:
            out.append([_table(pending)])
            pending = []
        out.append([_table(t) for t in threads])
    if pending:
        out.append([_table(pending)])
    return out


def _table(steps) -> np.ndarray:
    table = np.zeros((len(steps), _WIDTH), dtype=np.int64)
    for i, step in enumerate(steps):
        table[i, : len(step)] = step
    return table
