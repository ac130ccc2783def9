"""Numeric engine: factorize the stencil values with a plan, then solve many times.

Written against an array namespace ``xp`` (NumPy on the CPU, CuPy on the GPU): assembly is by
gathers with the plan's precomputed index maps, elimination by batched dense kernels.

Factorize: leaves (assemble frontal from the stencil, eliminate interiors), then every merge
level (gather the two children's Schur complements into the parent's frontal, eliminate the
shared edge), up to the root whose boundary is empty.

Solve (``trans='N'``): up sweep (condense the right-hand side level by level), root, down sweep
(back-substitute each eliminated block from its boundary values).  ``'T'`` and ``'H'`` walk the
same stored blocks transposed.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import sys
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from . import native
from . import pages
from .dense import DenseJob, NotPositiveDefinite, run_jobs
from .portable import EliminatedBlocks, allocate_blocks, eliminate
from .program import keep_program, program_for
from .lapack import single_threaded_blas, single_threaded_blas_available
from .._planning.plan import Plan
from .threads import num_threads as _num_threads
from .threads import pool as _pool
from .threads import thread_budget  # noqa: F401  (the engine's public knob, used by .mpi)
from .._tuning import (
    BLAS_THREADS_MIN_FRONT,
    GATHER_BLOCK_BYTES,
    NUMPY_FLAT_MAX_FRONT,
    PARALLEL_MIN_ENTRIES,
    SOLVE_WORKSPACE_MAX_FRACTION,
    choose_kernel,
)

__all__ = ["NumericFactor", "factorize_values", "solve_values", "up_sweep", "down_sweep"]


@dataclass(eq=False)
class NumericFactor:
    plan: Plan
    blocks: list  # blocks[level][class] -> EliminatedBlocks or FactoredBlocks
    hermitian: bool
    dtype: object  # the array namespace's dtype
    kernels: list = None  # kernels[level][class]: the kernel that eliminated it
    #: A window plan's root Schur complement on ``plan.boundary`` (f, f), for the tree above.
    schur: object = None
    #: The last solve's frontal right-hand sides, reused by the next solve of as many columns
    #: (fresh memory costs page faults: ~10 % of a 1025^2 solve); at most one set, kept
    #: only while small next to the factor (:data:`._tuning.SOLVE_WORKSPACE_MAX_FRACTION`).
    spare_fronts: list = field(default_factory=list, repr=False)
    #: Recorded solves (:class:`.program.SweepProgram`) by ``(trans, columns, dtype)``: each
    #: holds this factor's addresses, so it is never handed to another factor.
    programs: dict = field(default_factory=dict, repr=False)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["spare_fronts"], state["programs"] = [], {}  # scratch, not state
        return state

    def spare_workspaces(self) -> list:
        """Every solve workspace this factor holds (fronts lists), for the one replacing it."""
        return self.spare_fronts + [p.fronts for kept in self.programs.values() for p in kept]

    @property
    def cholesky(self) -> bool:
        """Whether the dense-kernel classes (if any) were all factored as ``L L^H``."""
        kinds = {getattr(b, "kind", None) for level in self.blocks for b in level} - {None}
        return kinds == {"cholesky"}

    def nbytes(self) -> int:
        return sum(b.nbytes() for level in self.blocks for b in level)

    @property
    def min_rcond(self) -> float:
        return min(b.min_rcond for level in self.blocks for b in level)

    def slogdet(self, xp=np):
        """``(sign, log|det|)`` of the factored matrix, one per system of a batch (arrays of
        ``plan.batch``): det A = product of every eliminated block's determinant (each
        elimination is a Schur complement).  Box ``j * batch + t`` belongs to system ``t``."""
        B = self.plan.batch
        sign, logabs = np.ones(B, dtype=np.complex128), np.zeros(B)
        for level in self.blocks:
            for blk in level:
                s, la = blk.slogdet(xp)
                sign *= np.prod(np.reshape(s, (-1, B)), axis=0)
                logabs += np.sum(np.reshape(la, (-1, B)), axis=0)
        return sign, logabs


@dataclass(frozen=True)
class ClassTiming:
    """Wall time of assembling and eliminating one class (see ``factorize_values``)."""

    level: int
    kernel: str
    kind: str  # "inverse", "lu" or "cholesky"
    n_boxes: int
    n_elim: int
    n_boundary: int
    seconds: float

    @classmethod
    def of(cls, level, box_class, kernel, blocks, seconds) -> "ClassTiming":
        kind = getattr(blocks, "kind", "inverse")
        return cls(level, kernel, kind, box_class.n_boxes, box_class.n_elim, box_class.n_boundary, seconds)

    @property
    def flops(self) -> float:
        """LU-type model (Cholesky: half), as :meth:`Plan.flops`."""
        s, r = float(self.n_elim), float(self.n_boundary)
        lu = self.n_boxes * (2.0 / 3.0 * s**3 + 2.0 * s * s * r + 2.0 * r * r * s)
        return lu / 2 if self.kind == "cholesky" else lu


def _take_into(xp, a, indices, axis, out):
    """``out[...] = take(a, indices, axis)`` without a temporary where the library allows."""
    if xp is np:
        np.take(a, indices, axis=axis, out=out)
    else:
        out[...] = xp.take(a, indices, axis=axis)



def _merge_frontals_into(xp, F, cls, fronts, child_classes, rows, to_xp, parallel_map=map, n_parts=1):
    """Assemble rows ``rows`` of a merge class's frontals into ``F`` (p, f, f).

    Small frontals: one flat gather per child, in row blocks whose scratch (the second
    child's gather, added to the first's) stays in cache.  Large ones: each child's Schur
    block lands as a few contiguous runs (the plan orders boundaries side by side), so
    assembly is a handful of block copies (on the CPU the native kernel writes each row once,
    in ``n_parts`` parts run by ``parallel_map``).
    """
    p, f = F.shape[0], F.shape[1]

    def child_rows(link, a, b):
        return slice(link.rows.start + rows.start + a, link.rows.start + rows.start + b)

    if cls.children[0].has_flat and (xp is not np or f <= NUMPY_FLAT_MAX_FRONT):
        F2 = xp.reshape(F, (p, f * f))
        first, second = cls.children
        flat1, flat2 = to_xp(first.flat), to_xp(second.flat)
        step = max(1, GATHER_BLOCK_BYTES // (8 * f * f))
        scratch = xp.empty((min(step, p), f * f), dtype=F.dtype)
        for a in range(0, p, step):
            b = min(p, a + step)
            c1 = xp.reshape(fronts[first.cls][child_rows(first, a, b), ...], (b - a, -1))
            c2 = xp.reshape(fronts[second.cls][child_rows(second, a, b), ...], (b - a, -1))
            _take_into(xp, c1, flat1, 1, F2[a:b, ...])
            _take_into(xp, c2, flat2, 1, scratch[: b - a, ...])
            F2[a:b, ...] += scratch[: b - a, ...]
        return
    if native.supports_dtype(xp, F.dtype) and native.gathers_by_runs(cls):
        native.assemble_runs(F, cls, fronts, child_classes, rows, parallel_map, n_parts)
        return
    F[...] = 0
    for link in cls.children:
        s = child_classes[link.cls].n_elim
        D = fronts[link.cls][child_rows(link, 0, p), s:, s:]
        for di, si, li in link.runs.tolist():
            for dj, sj, lj in link.runs.tolist():
                F[:, di : di + li, dj : dj + lj] += D[:, si : si + li, sj : sj + lj]


def _flush_tiny(F) -> None:
    """Zero entries below sqrt(smallest normal) (~1e-154 of the equilibrated matrix): they
    are far below rounding, and left in, their products are subnormal and ~100x slower."""
    below = np.sqrt(np.finfo(F.real.dtype).tiny)
    for p in range(F.shape[0]):
        np.putmask(F[p], np.abs(F[p]) < below, 0)


def _leaf_frontals_into(xp, F, V_padded, cls, rows, to_xp):
    p, f = F.shape[0], F.shape[1]
    n_local = cls.closed_nodes.shape[1]
    nodes = to_xp(cls.closed_nodes)
    template = xp.reshape(to_xp(cls.leaf_template), (-1,))
    F2 = xp.reshape(F, (p, f * f))
    step = max(1, GATHER_BLOCK_BYTES // (8 * n_local * 9))
    scratch = xp.empty((min(step, p) * n_local, 9), dtype=F.dtype)
    for a in range(0, p, step):
        b = min(p, a + step)
        Vbox = scratch[: (b - a) * n_local, ...]
        _take_into(xp, V_padded, xp.reshape(nodes[rows.start + a : rows.start + b, ...], (-1,)), 0, Vbox)
        _take_into(xp, xp.reshape(Vbox, (b - a, n_local * 9)), template, 1, F2[a:b, ...])


def _release_tail(arena, keep: int) -> None:
    """``madvise(MADV_DONTNEED)`` the whole pages of ``arena`` (1-D) past its first ``keep``
    entries: their memory goes back to the system, and reads would see zeros (nothing reads
    them).  No-op where the call is not available."""
    madvise = _madvise()
    if madvise is None:
        return
    page = mmap.PAGESIZE
    start = -(-(arena.ctypes.data + keep * arena.itemsize) // page) * page
    end = (arena.ctypes.data + arena.nbytes) // page * page
    if end > start:
        madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_DONTNEED)


_MADV_DONTNEED = 4  # Linux


@lru_cache(maxsize=1)
def _madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return fn


class _Workspace:
    """Frontal buffers reused across levels.

    A level's frontals are needed only until its parent level is assembled, so two arenas
    alternate, each sized once for the largest level it serves.  Fresh memory costs a page
    fault per page on first touch: reusing the buffers measured about 1.4 s of a 5 s first
    factorization at 1025 x 1025.
    """

    def __init__(self, xp, dtype, plan: Plan, skip=()):
        self.xp = xp
        self.sizes = [0 if k in skip else sum(c.n_boxes * c.n_front * c.n_front for c in level.classes)
                      for k, level in enumerate(plan.levels)]  # fmt: skip
        empty = pages.empty if xp is np else lambda n, dtype: xp.empty(n, dtype=dtype)
        self.arenas = [empty(max([1, *self.sizes[parity::2]]), dtype) for parity in (0, 1)]
        self.fresh = [xp is np and pages.first_touch(a) for a in self.arenas]

    def done_with(self, k):
        """Level ``k``'s frontals are consumed: hand the pages of its arena that no later level
        of its parity reaches back to the system.  The levels shrink towards the root while
        the stored factors grow, so this keeps the two arenas from adding their full size to
        the factorization's peak (1025^2: about 170 MB less).  Only for fresh arenas: one
        reused from the factorization before (``refactorize`` loops) holds the process's
        memory already, and its released pages would fault again in the next one (1025^2:
        95,000 faults, 0.1 s of a 1.0 s refactorization)."""
        if not self.fresh[k % 2]:
            return
        later = max([0, *self.sizes[k + 2 :: 2]])
        _release_tail(self.arenas[k % 2], later)

    def level(self, k, classes):
        """Frontal arrays (P, f, f) for every class of level ``k``."""
        arena = self.arenas[k % 2]
        fronts, offset = [], 0
        for c in classes:
            size = c.n_boxes * c.n_front * c.n_front
            view = arena[offset : offset + size, ...]
            fronts.append(self.xp.reshape(view, (c.n_boxes, c.n_front, c.n_front)))
            offset += size
        return fronts


def _row_chunks(P, f):
    n = _num_threads()
    if n == 1 or P * f * f < PARALLEL_MIN_ENTRIES:
        return [slice(0, P)]
    bounds = np.linspace(0, P, n + 1).astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def factorize_values(plan: Plan, V, hermitian: bool, a_norm: float, xp=np, timings=None,
                     masked: bool = False, reuse: NumericFactor | None = None) -> NumericFactor:
    """Numeric phase: eliminate every level of ``plan`` for the stencil values ``V`` (n, 9).

    ``a_norm`` (the matrix's infinity-norm) is the scale singular blocks are measured against.
    ``masked``: some nodes are decoupled (a masked grid's absent pixels); the native dense
    kernel then factors every box without them (the inline kernel skips their zero updates).
    ``timings``: a list that receives one :class:`ClassTiming` per class (benchmarks).
    ``reuse``: a factorization on ``plan`` that is given up (overwritten, even when this one
    fails): its stored blocks take the new factors where shapes and dtype agree, so a
    refactorization touches no fresh memory for them.
    """
    if reuse is not None and reuse.plan is not plan:
        reuse = None
    if native.supports_dtype(xp, V.dtype):
        V = np.ascontiguousarray(V)  # the native kernels read V itself (no zero row: see _source)
        V_padded = None
    else:  # the gathers' zero slot: a zero row after the last node
        V_padded = xp.concat([V, xp.zeros((1, 9), dtype=V.dtype)], axis=0)
    fused = _leaves_fused_into_level_1(xp, V.dtype, plan)
    workspace = _Workspace(xp, V.dtype, plan, skip=(0,) if fused else ())
    to_xp = plan.device(xp)
    blocks, kernels = [], []
    n_threads = _num_threads() if xp is np else 1
    cholesky = hermitian  # until a block proves the matrix indefinite
    fronts = None  # eliminated frontals of the level below (their Schur blocks feed parents)
    for k, level in enumerate(plan.levels):
        level_kernels = [choose_kernel(xp, V.dtype, cls, k) for cls in level.classes]
        kernels.append(level_kernels)
        if k == 0 and fused:  # level 1 factors them (their time counts in its)
            blocks.append([None] * len(level.classes))
            continue
        level_fronts = workspace.level(k, level.classes)
        level_blocks = [None] * len(level.classes)
        seconds = [0.0] * len(level.classes)

        def assemble(Fr, rows, cls, k=k, n_parts=1):
            if k == 0:
                _leaf_frontals_into(xp, Fr, V_padded, cls, rows, to_xp)
            else:
                # a class run whole may spread its assembly over the pool (never from
                # inside the pool: its workers would wait on each other)
                spread = _pool(n_parts).map if n_parts > 1 else map
                child_classes = plan.levels[k - 1].classes
                _merge_frontals_into(xp, Fr, cls, fronts, child_classes, rows, to_xp, spread, n_parts)

        for ci, (cls, F, kernel) in enumerate(zip(level.classes, level_fronts, level_kernels)):
            if kernel == "portable":
                t0 = time.perf_counter()
                level_blocks[ci] = _eliminate_class(xp, F, cls, k, hermitian, a_norm, fronts, n_threads, assemble)
                seconds[ci] = time.perf_counter() - t0
        boxed = [ci for ci, kernel in enumerate(level_kernels) if kernel != "portable"]
        if boxed:
            t0 = time.perf_counter()
            leaf_classes = plan.levels[0].classes if k == 1 and fused else None

            def factor_level(cholesky, k=k, level_fronts=level_fronts, boxed=boxed, level_kernels=level_kernels,
                             leaf_classes=leaf_classes, assemble=assemble, fronts=fronts):
                old = None if reuse is None else (reuse.blocks[k], reuse.blocks[0] if leaf_classes else None)
                jobs, leaf_jobs = _box_jobs(xp, plan.levels, level_fronts, boxed, level_kernels, k, cholesky, a_norm,
                                            V, fronts, leaf_classes, n_threads, assemble, masked, old)  # fmt: skip
                _run_box_jobs(jobs, n_threads)
                return jobs, leaf_jobs

            try:
                jobs, leaf_jobs = factor_level(cholesky)
            except NotPositiveDefinite:
                # Hermitian but indefinite: LU for this level and all later (the children are intact)
                cholesky = False
                jobs, leaf_jobs = factor_level(cholesky)
            wall = time.perf_counter() - t0
            busy = sum(job.seconds for job in jobs) or 1.0
            if leaf_jobs is not None:
                blocks[0] = [job.finish() for job in leaf_jobs]
            for ci, job in zip(boxed, jobs):
                level_blocks[ci] = job.finish()
                seconds[ci] = wall * job.seconds / busy  # the level's wall time, shared by work
        for ci, (cls, F) in enumerate(zip(level.classes, level_fronts)):
            if cls.n_elim:
                F[:, 0, 0] = 0  # S is spent: entry (0, 0) is the zero slot of flat gathers
        blocks.append(level_blocks)
        if timings is not None:
            if k == 1 and fused:  # the leaves' time counts in this level's
                timings += [ClassTiming.of(0, c, kernel, blk, 0.0)
                            for c, kernel, blk in zip(plan.levels[0].classes, kernels[0], blocks[0])]  # fmt: skip
            timings += [ClassTiming.of(k, c, kernel, blk, sec)
                        for c, kernel, blk, sec in zip(level.classes, level_kernels, level_blocks, seconds)]  # fmt: skip
        if k >= 1:
            workspace.done_with(k - 1)  # its frontals fed this level
        fronts = level_fronts
    schur = None
    if plan.boundary is not None:  # a window: its root's Schur complement goes up the tree
        s = plan.levels[-1].classes[0].n_elim
        schur = xp.asarray(fronts[0][0, s:, s:], copy=True)
    numeric = NumericFactor(plan, blocks, hermitian, V.dtype, kernels, schur)
    if reuse is not None:
        numeric.spare_fronts = reuse.spare_workspaces()  # the solves' frontal right-hand sides too
    return numeric


def _box_jobs(xp, plan_levels, level_fronts, boxed, level_kernels, k, cholesky, a_norm, V, fronts, leaf_classes,
              n_threads, assemble, masked=False, old=None):
    """``(jobs, leaf_jobs)``: one :class:`DenseJob` per class of level ``k`` that the native
    or dense kernel factors box by box (``boxed``), and (``leaf_classes`` given: level 1 with
    its leaves fused) one storage job per leaf class, factored by its parents.  With the
    native kernel each box is gathered just before it is factored, on the thread that factors
    it (in cache, and beside the other threads' arithmetic); otherwise the frontals are
    assembled here first.  ``old``: ``(blocks of level k, of the leaves)`` of a factorization
    given up, whose storage the jobs reuse (see :func:`factorize_values`)."""
    level = plan_levels[k]
    child_classes = plan_levels[k - 1].classes if k else None
    old_level, old_leaves = old if old is not None else (None, None)
    leaf_jobs = None
    if leaf_classes is not None:
        leaf_jobs = [DenseJob.for_leaves(c.n_boxes, c.n_front, c.n_elim, V.dtype, cholesky, a_norm, _where(0, c),
                                         None if old_leaves is None else old_leaves[ci])
                     for ci, c in enumerate(leaf_classes)]  # fmt: skip
    jobs = []
    for ci in boxed:
        cls, F = level.classes[ci], level_fronts[ci]
        source = None
        if native.gathers_dense(xp, F.dtype, cls, k):
            source = (cls, k, V, fronts, child_classes, leaf_jobs)
        else:
            assemble(F, slice(0, cls.n_boxes), cls, n_parts=n_threads)
            if not native.supports_dtype(xp, F.dtype):
                _flush_tiny(F)  # the native assembly does this on the fly
        jobs.append(DenseJob(F, cls.n_elim, cholesky, a_norm, _where(k, cls), source,
                             inline=level_kernels[ci] == "native", compact=masked and level_kernels[ci] == "dense",
                             storage=None if old_level is None else old_level[ci]))  # fmt: skip
    return jobs, leaf_jobs


def _run_box_jobs(jobs, n_threads):
    """A level's classes side by side on the engine's threads, each box with single-threaded
    BLAS, when the level has a box per thread at least or its frontals are too narrow for
    BLAS's threads to pay (``BLAS_THREADS_MIN_FRONT``); otherwise box after box on BLAS's own
    threads (the top levels of large grids).  Never both at once.  A level with fewer than
    ``PARALLEL_MIN_ENTRIES`` frontal entries runs on the calling thread alone."""
    working = [job for job in jobs if job.has_work]
    boxes = sum(job.n_boxes for job in working)
    narrow = max((job.F.shape[1] for job in working), default=0) < BLAS_THREADS_MIN_FRONT
    no_blas = all(job.inline for job in jobs)
    if sum(job.n_boxes * job.F.shape[1] ** 2 for job in working) < PARALLEL_MIN_ENTRIES:
        with single_threaded_blas():  # a small level: handing boxes to threads costs more
            run_jobs(jobs)
        return
    side_by_side = n_threads > 1 and (boxes >= n_threads or narrow) and (no_blas or single_threaded_blas_available())
    run_jobs(jobs, _pool(n_threads) if side_by_side else None, n_threads)


def _where(k, cls) -> str:
    return f"level {k} ({cls.n_boxes} boxes, {cls.n_elim} eliminated, {cls.n_boundary} kept)"


def _leaves_fused_into_level_1(xp, dtype, plan: Plan) -> bool:
    """Whether level 1 assembles and factors its leaves itself (:func:`ssi_sparse._engine.native.dense_chunk`):
    every class of both levels on the native inline kernel, level 1 merging two leaves each
    by flat maps."""
    if xp is not np or len(plan.levels) < 2:
        return False
    return all(choose_kernel(xp, dtype, c, k) == "native" and native.fuses_assembly(c, k)
               for k in (0, 1) for c in plan.levels[k].classes)  # fmt: skip


def _eliminate_class(xp, F, cls, k, hermitian, a_norm, fronts, n_threads, assemble):
    """Assemble and eliminate one class by the portable kernel (explicit inverses), in row
    chunks on the engine's threads when it is large."""
    where = _where(k, cls)
    # host threads only help NumPy; a GPU runs each class as one batch
    chunks = _row_chunks(cls.n_boxes, cls.n_front) if xp is np else [slice(0, cls.n_boxes)]
    out = None
    if len(chunks) > 1:  # chunks write rows of one allocation
        out = allocate_blocks(xp, cls.n_boxes, cls.n_elim, cls.n_boundary, F.dtype, hermitian)

    def work(rows, whole=len(chunks) == 1):
        Fr = F[rows, ...]
        out_rows = None
        if out is not None:
            out_rows = EliminatedBlocks(out.s_inv[rows, ...], out.x[rows, ...],
                                        None if out.r_s is None else out.r_s[rows, ...], 1.0)  # fmt: skip
        assemble(Fr, rows, cls, n_parts=n_threads if whole else 1)
        return eliminate(xp, Fr, cls.n_elim, hermitian, a_norm, where, out_rows)

    if len(chunks) == 1:
        return work(chunks[0])
    parts = list(_pool(len(chunks)).map(work, chunks))
    out.min_rcond = min(b.min_rcond for b in parts)
    return out


def plain_trans(hermitian: bool, complex_: bool, trans: str):
    """``(conjugate, trans')``: ``op(A) x = b`` is solved as ``op'(A) y = b'`` with
    ``b' = conj(b)``, ``x = conj(y)`` when ``conjugate`` (A^H = conj(A^T); for Hermitian A,
    A^T = conj(A) and A^H = A), so a Hermitian factor only ever runs ``'N'``."""
    if hermitian:
        return (complex_ and trans == "T"), "N"
    if trans == "H":
        return complex_, "T"
    return False, trans


def solve_values(factor: NumericFactor, b, trans: str = "N", xp=np):
    """Solve ``op(A) x = b`` with ``b`` of shape (n, k) in the engine's node order."""
    conjugate, trans = plain_trans(factor.hermitian, xp.isdtype(factor.dtype, "complex floating"), trans)
    if conjugate:
        return xp.conj(solve_values(factor, xp.conj(b), trans, xp))
    program = program_for(factor, trans, b.shape[1], b.dtype) if xp is np else None
    if program is not None:
        n_nodes = len(factor.plan.inverse_order)
        x = (pages.zeros if factor.plan.dropped is not None else pages.empty)((n_nodes, b.shape[1]), b.dtype)
        with _sweep_blas(xp):
            program.run(np.ascontiguousarray(b), x)
        keep_program(factor, program)
        return x
    try:  # pop is atomic: threads may share a factor
        spare = factor.spare_fronts.pop()
    except IndexError:
        spare = None
    fronts, _ = up_sweep(factor, b, trans, xp, spare)
    x = down_sweep(factor, fronts, None, trans, xp)
    if xp is np and sum(f.nbytes for level in fronts for f in level) <= SOLVE_WORKSPACE_MAX_FRACTION * factor.nbytes():
        factor.spare_fronts[:] = [fronts]  # CuPy pools its memory itself
    return x


def up_sweep(factor: NumericFactor, b, trans: str, xp=np, spare=None):
    """Condense the right-hand side ``b`` ((n, k), node order) level by level.  Returns every
    class's frontal right-hand sides ((P, f, k), per level; the down sweep works in them),
    and the root's condensed right-hand side on ``plan.boundary`` ((r, k); r = 0 for a
    whole grid).  ``trans`` is ``'N'`` or ``'T'`` (see :func:`plain_trans`); ``spare``: an
    earlier solve's fronts to write into, used where shape and dtype match."""
    with _sweep_blas(xp):
        return _up_sweep(factor, b, trans, xp, spare)


def _sweep_blas(xp):
    """The solve sweeps run with single-threaded BLAS: they split big classes among the
    engine's threads themselves (:meth:`ssi_sparse._engine.dense.FactoredBlocks.up`)."""
    return single_threaded_blas() if xp is np else contextlib.nullcontext()


def _up_sweep(factor, b, trans, xp, spare):
    plan = factor.plan
    k_rhs = b.shape[1]
    if spare is not None and (spare[0][0].shape[2] != k_rhs or spare[0][0].dtype != b.dtype):
        spare = None
    native_moves = xp is np and native.supports_dtype(np, b.dtype)
    if native_moves:
        b = np.ascontiguousarray(b)
    bp, offset = None, 0  # elsewhere: the eliminated nodes' right-hand sides in elimination order
    fronts, below = [], None
    for k, level in enumerate(plan.levels):
        level_fronts = []
        for ci, cls in enumerate(level.classes):
            P, s = cls.n_boxes, cls.n_elim
            front = spare[k][ci] if spare is not None else (
                pages.empty((P, cls.n_front, k_rhs), b.dtype) if xp is np else xp.empty((P, cls.n_front, k_rhs), dtype=b.dtype))
            if not (native_moves and native.gather_nodes(front, b, cls.eliminated)):
                if bp is None:
                    bp = xp.take(b, plan.device(xp)(plan.order), axis=0)
                front[:, :s, :] = xp.reshape(bp[offset : offset + P * s, ...], (P, s, k_rhs))
                front[:, s:, :] = 0
            offset += P * s
            for link in cls.children:  # the children's condensed right-hand sides
                child = below[link.cls][link.rows, ...]
                first = plan.levels[k - 1].classes[link.cls].n_elim
                if native_moves and native.add_runs(front, child, first, link.runs):
                    continue
                for di, si, li in link.runs.tolist():
                    front[:, di : di + li, ...] += child[:, first + si : first + si + li, ...]
            factor.blocks[k][ci].up(xp, front, trans)
            level_fronts.append(front)
        fronts.append(level_fronts)
        below = level_fronts
    root = plan.levels[-1].classes[0]
    return fronts, below[0][0, root.n_elim :, ...]


def down_sweep(factor: NumericFactor, fronts, u_top, trans: str, xp=np):
    """Back-substitute from the root down, in the up sweep's ``fronts``: ``u_top`` (r, k) the
    values on ``plan.boundary`` (None for a whole grid).  Returns the solution (n, k) in
    node order (zero on the nodes a masked plan drops)."""
    with _sweep_blas(xp):
        return _down_sweep(factor, fronts, u_top, trans, xp)


def _down_sweep(factor, fronts, u_top, trans, xp):
    plan = factor.plan
    to_xp = plan.device(xp)
    k_rhs = fronts[0][0].shape[2]
    dtype = fronts[0][0].dtype
    native_moves = xp is np and native.supports_dtype(np, dtype)
    top = len(plan.levels) - 1
    if u_top is not None:
        fronts[top][0][0, plan.levels[top].classes[0].n_elim :, ...] = xp.astype(u_top, dtype)
    for k in range(top, -1, -1):
        level = plan.levels[k]
        for ci, cls in enumerate(level.classes):
            front, s, start = fronts[k][ci], cls.n_elim, 0
            if k < top:  # boundary values from the parents' frontals, parent by parent
                for pi, role in level.boundary_sources[ci]:
                    parent, link = fronts[k + 1][pi], plan.levels[k + 1].classes[pi].children[role]
                    rows = slice(start, start + parent.shape[0])
                    start = rows.stop
                    if native_moves and native.gather_boundary(front[rows], s, parent, link.boundary_pos, link.carried):
                        continue
                    front[rows, s:, :] = _at_boundary(xp, to_xp, parent, link)
            factor.blocks[k][ci].down(xp, front, trans)
    n_nodes = len(plan.inverse_order)
    if native_moves:
        x = (pages.zeros if plan.dropped is not None else pages.empty)((n_nodes, k_rhs), dtype)
        if all(native.scatter_nodes(x, front, cls.eliminated)
               for level, level_fronts in zip(plan.levels, fronts) for cls, front in zip(level.classes, level_fronts)):  # fmt: skip
            if u_top is not None:
                x[plan.boundary] = u_top
            return x
    parts = [xp.reshape(front[:, : cls.n_elim, :], (-1, k_rhs))
             for level, level_fronts in zip(plan.levels, fronts) for cls, front in zip(level.classes, level_fronts)]  # fmt: skip
    if u_top is not None:
        parts.append(xp.reshape(xp.astype(u_top, dtype), (-1, k_rhs)))
    if plan.dropped is not None:  # nodes no box eliminates read this zero row
        parts.append(xp.zeros((1, k_rhs), dtype=dtype))
    return xp.take(xp.concat(parts, axis=0), to_xp(plan.inverse_order), axis=0)


def _at_boundary(xp, to_xp, parent_values, link, square=False):
    """A parent's frontal values (P, f, k) at a child's boundary nodes (``link``), or
    (``square``) its (P, f, f) block on them; the decoupled nodes a masked plan's parent does
    not carry read zero."""
    pos = to_xp(link.boundary_pos)
    out = xp.take(parent_values, pos, axis=1)
    if square:
        out = xp.take(out, pos, axis=2)
    if link.carried is not None:
        c = to_xp(link.carried)
        keep = xp.reshape(c, (1, -1, 1)) & xp.reshape(c, (1, 1, -1)) if square else xp.reshape(c, (1, -1, 1))
        out = xp.where(keep, out, xp.zeros_like(out))
    return out


def _stack_parts(xp, parts, empty_shape, dtype):
    """A class's boundary values from its parents' parts (box order); none: a masked plan's
    box whose boundary is all decoupled, so it has no parent."""
    if not parts:
        return xp.zeros(empty_shape, dtype=dtype)
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


def selected_inverse(factor: NumericFactor, xp=np):
    """Entries of ``A^-1`` on the stencil pattern, in the stencil array's layout.

    Returns ``Z`` shaped like ``V`` (rows, 9): ``Z[row, slot]`` is the entry of ``A^-1`` at
    the coupling ``V[row, slot]`` stands for (every slot that joins two nodes of the grid,
    stored or not).  Walks the tree from the root: a frontal's inverse block follows from
    its boundary block, which its parent's holds (:meth:`inverse_frontal`); every coupling
    lies in the leaf box that owns it, where the leaf's template reads it back.
    """
    plan = factor.plan
    n_rows = plan.height * plan.width * plan.components**2 * plan.batch
    to_xp = plan.device(xp)
    parent_Z = None
    for k in range(len(plan.levels) - 1, -1, -1):
        level = plan.levels[k]
        level_Z = []
        for ci, cls in enumerate(level.classes):
            if k == len(plan.levels) - 1:
                Z_RR = xp.zeros((cls.n_boxes, 0, 0), dtype=factor.dtype)
            else:
                parts = [_at_boundary(xp, to_xp, parent_Z[pi], plan.levels[k + 1].classes[pi].children[role], True)
                         for pi, role in level.boundary_sources[ci]]  # fmt: skip
                Z_RR = _stack_parts(xp, parts, (cls.n_boxes, 0, 0), factor.dtype)
            level_Z.append(factor.blocks[k][ci].inverse_frontal(xp, Z_RR))
        parent_Z = level_Z
    Z = xp.zeros((n_rows + 1) * 9, dtype=factor.dtype)
    for cls, Zf in zip(plan.levels[0].classes, parent_Z):
        # entries the box does not own read the zero row (the last): written there, dropped
        local, slot = np.divmod(cls.leaf_template.reshape(-1), 9)
        where = cls.closed_nodes[:, local] * 9 + slot[None, :]  # (P, f * f)
        Z[to_xp(where.reshape(-1))] = xp.reshape(Zf, (-1,))
    return xp.reshape(Z, (n_rows + 1, 9))[:n_rows, ...]
