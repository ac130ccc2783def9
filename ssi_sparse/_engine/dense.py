"""Dense kernel for the wider frontals on the CPU: factors, not inverses, one box at a time.

Each frontal ``F = [[S, S_R], [R_S, R]]`` is eliminated in place with LAPACK/BLAS-3 on
sub-blocks (:mod:`ssi_sparse._engine.lapack`, SciPy's library): no explicit inverse, no copies.  The loop over
boxes (with each box's assembly just before it) and the solve sweeps run in C
(:func:`ssi_sparse._engine.native.dense_chunk`, :func:`ssi_sparse._engine.native.dense_sweep`); the same arithmetic from Python
serves where the extension is not built.  :func:`run_jobs` runs a level's classes side by side.

The routines see a C-ordered frontal as its transpose ``G = F^T`` (column-major).  Eliminating
the leading block of ``G`` leaves ``D^T`` in the same memory, which is the parent's ``D`` read
C-ordered, so the arithmetic below is written for ``G``:

- LU (any matrix): ``G_SS = P L U`` (getrf), ``X = L^-1 P^T G_SR``, ``W = G_RS U^-1``,
  ``D_G = G_RR - W X`` (one gemm): ``2 s^3 / 3 + 2 s^2 r + 2 r^2 s`` flops.
- Cholesky (Hermitian frontals, tried first): ``G_SS = L L^H`` (potrf), ``W = G_RS L^-H``,
  ``D_G = G_RR - W W^H`` (herk/syrk, lower half, then mirrored): about half of that.  A block
  that is not positive definite makes potrf fail; the engine then refactors that level, and
  every later one, by LU (Hermitian indefinite matrices such as real Helmholtz).

Both are ``G = [[P L, 0], [W, I]] [[U, X], [0, D_G]]`` (Cholesky: ``P = I, U = L^H, W = X^H``),
which is what the solve sweeps below use.  Every block's condition number is estimated from
its factor (gecon/pocon) and measured against the matrix as the portable kernel does.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import wait
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from . import native
from . import pages
from .portable import check_rcond, exactly_singular
from .lapack import lapack_for, single_threaded_blas
from .threads import parallel_map
from .._tuning import SWEEP_PARALLEL_MIN_ENTRIES

__all__ = ["DenseJob", "FactoredBlocks", "NotPositiveDefinite", "factor_class", "run_jobs"]


class NotPositiveDefinite(Exception):
    """Internal: a Cholesky attempt met a block that is not positive definite."""


@lru_cache(maxsize=8)
def _strict_lower_mask(r: int) -> np.ndarray:
    return np.tri(r, r, -1, dtype=bool)


def _mirror_upper_to_lower(D) -> None:
    """``D[i, j] = conj(D[j, i])`` for i > j, in place (D square, upper triangle valid)."""
    if native.mirror_upper(D):
        return
    upper = D.T
    np.copyto(D, upper.conj() if np.iscomplexobj(D) else upper, where=_strict_lower_mask(D.shape[0]))


def _perm_from_ipiv(ipiv) -> np.ndarray:
    """``perm`` with ``P^T x = x[perm]`` from getrf's 1-based interchanges."""
    perm = list(range(len(ipiv)))
    for i, j in enumerate(ipiv.tolist()):
        j -= 1
        perm[i], perm[j] = perm[j], perm[i]
    return np.asarray(perm, dtype=np.intp)


def _permutation_signs(perm) -> np.ndarray:
    """Sign (+1/-1) of each row of ``perm`` (P, s), from its number of cycles: each element
    learns the smallest element of its cycle by pointer doubling (log2 s steps)."""
    P, s = perm.shape
    ids = np.arange(s)
    label = np.broadcast_to(ids, (P, s)).copy()
    jump = np.asarray(perm, dtype=np.int64)
    for _ in range(max(1, int(s).bit_length())):
        label = np.minimum(label, np.take_along_axis(label, jump, axis=1))
        jump = np.take_along_axis(jump, jump, axis=1)
    cycles = (label == ids).sum(axis=1)
    return np.where((s - cycles) % 2 == 0, 1.0, -1.0)


@dataclass(eq=False)
class FactoredBlocks:
    """One class's stored factors (column-major views of C-ordered arrays, see module doc).

    ``factor[p]``: L\\U (or L) of ``G_SS``, ld s.  ``x[p]`` (r, s) C-ordered: ``X`` (s x r),
    ld s; None for Cholesky (``X = W^H``).  ``w[p]`` (s, r) C-ordered: ``W`` (r x s), ld r.
    ``perm``/``inv_perm`` (P, s): the pivoting (None for Cholesky).
    """

    kind: str  # "lu" or "cholesky"
    factor: np.ndarray
    x: np.ndarray | None
    w: np.ndarray
    perm: np.ndarray | None
    inv_perm: np.ndarray | None
    min_rcond: float

    def nbytes(self) -> int:
        arrays = (self.factor, self.x, self.w, self.perm, self.inv_perm)
        return sum(int(a.nbytes) for a in arrays if a is not None)

    @property
    def _shape(self):
        return self.w.shape

    def _addresses(self, front):
        """Bytes per box of a frontal's right-hand sides (f, k), of an (s, s) and of an (r, s)
        block; the addresses of the first box's eliminated rows, its boundary rows, and of
        the stored factor, ``w`` and ``x``."""
        P, s, r = self._shape
        k = front.shape[2]
        item = self.w.itemsize
        a = front.ctypes.data
        x = None if self.x is None else self.x.ctypes.data
        steps = ((s + r) * k * item, s * s * item, r * s * item)
        return steps, (a, a + s * k * item, self.factor.ctypes.data, self.w.ctypes.data, x)

    def up(self, xp, front, trans):
        """Condense one class's right-hand sides in place, ``front`` (P, f, k) C-ordered: its
        eliminated rows ``[:, :s]`` become what :meth:`down` needs, its boundary rows
        ``[:, s:]`` lose the eliminated unknowns' contribution."""
        s = self._shape[1]
        if s == 0:
            return
        if trans != "N" and not self._native_perm(front):  # "T": P^T first
            front[:, :s] = np.take_along_axis(front[:, :s], self.perm[:, :, None], axis=1)
        self._sweep("up", trans, front)

    def slogdet(self, xp):
        """``(sign, log|det|)`` (one per box) of this class's eliminated blocks ``G_SS``, from
        the diagonals of their factors (and the pivoting's parity for LU)."""
        diag = np.diagonal(self.factor, axis1=1, axis2=2)
        logabs = np.sum(np.log(np.abs(diag)), axis=1, dtype=np.float64)
        if self.kind == "cholesky":
            return np.ones(len(diag)), 2.0 * logabs  # det = |prod diag L|^2
        sign = np.prod(diag / np.abs(diag), axis=1) * _permutation_signs(self.perm)
        return sign, logabs

    def inverse_frontal(self, xp, Z_RR):
        """As :meth:`ssi_sparse._engine.portable.EliminatedBlocks.inverse_frontal`, from the stored factors.

        In the column-major view ``G = F^T`` (see the module doc), ``G_SS^-1 G_SR = U^-1 X``
        and ``G_RS G_SS^-1 = W L^-1 P^T``; the inverse of ``G`` is the transpose of ``F``'s.
        """
        from scipy.linalg import solve_triangular

        P, s, r = self._shape
        if s == 0:
            return Z_RR
        Zg_RR = np.swapaxes(Z_RR, 1, 2)  # G's blocks are F's transposed
        out = np.empty((P, s + r, s + r), dtype=np.result_type(self.w.dtype, Z_RR.dtype))
        eye = np.eye(s, dtype=self.w.dtype)
        for p in range(P):
            M = self.factor[p].T  # L\U (or L) of G_SS, column-major
            W = self.w[p].T  # (r, s)
            if self.kind == "cholesky":
                L = np.tril(M)
                T2 = solve_triangular(L, W.T, lower=True, trans="T").T  # W L^-1
                T1 = T2.conj().T  # U^-1 X = L^-H W^H
                inv = solve_triangular(L, solve_triangular(L, eye, lower=True), lower=True, trans="C")
            else:
                L, U = np.tril(M, -1) + eye, np.triu(M)
                PT = eye[self.perm[p]]  # P^T v = v[perm]
                T1 = solve_triangular(U, self.x[p].T, lower=False)  # U^-1 X
                L_inv_PT = solve_triangular(L, PT, lower=True, unit_diagonal=True)
                T2 = W @ L_inv_PT  # W L^-1 P^T
                inv = solve_triangular(U, L_inv_PT, lower=False)  # U^-1 L^-1 P^T
            Z_RS = -(Zg_RR[p] @ T2)
            Zg = np.block([[inv - T1 @ Z_RS, -(T1 @ Zg_RR[p])], [Z_RS, Zg_RR[p]]])
            out[p] = Zg.T
        return out

    def down(self, xp, front, trans):
        """Back-substitute in place: ``front[:, s:]`` holds the boundary values, ``front[:, :s]``
        what :meth:`up` left there, which the eliminated unknowns' values replace."""
        s = self._shape[1]
        if s == 0:
            return
        self._sweep("down", trans, front)
        if trans == "N" and self.kind == "lu" and not self._native_perm(front):
            front[:, :s] = np.take_along_axis(front[:, :s], self.inv_perm[:, :, None], axis=1)

    def _native_perm(self, front) -> bool:
        """Whether the native sweep applies the pivoting itself (LU, int64 pivots)."""
        return (self.perm is not None and native.supports_dtype(np, front.dtype)
                and self.perm.dtype == np.int64 and self.perm.flags.c_contiguous)  # fmt: skip

    def _sweep(self, op, trans, front):
        """:func:`ssi_sparse._engine.native.dense_sweep` over all boxes; a class with many stored entries is cut
        into one box range per engine thread (the sweeps read each factor once: memory-bound,
        and one core does not saturate the memory)."""
        lap = lapack_for(self.factor.dtype)
        if not native.supports_dtype(np, front.dtype):
            return self._sweep_boxes(lap, op, trans, front)
        P, s, r = self._shape
        cholesky = self.kind == "cholesky"
        run_map, n = parallel_map()
        perm = self.perm if self._native_perm(front) else None
        if n == 1 or P < n or P * s * (s + r) < SWEEP_PARALLEL_MIN_ENTRIES:
            native.dense_sweep(op, trans, cholesky, self.factor, self.w, self.x, front, lap.table, perm)
            return
        cuts = [P * i // n for i in range(n + 1)]

        def boxes(i):
            p = slice(cuts[i], cuts[i + 1])
            x = None if self.x is None else self.x[p]
            native.dense_sweep(op, trans, cholesky, self.factor[p], self.w[p], x, front[p], lap.table,
                               None if perm is None else perm[p])  # fmt: skip

        list(run_map(boxes, range(n)))

    def _sweep_boxes(self, lap, op, trans, front):
        # the native sweep's arithmetic box by box from Python (no native extension)
        P, s, r = self._shape
        k = front.shape[2]
        lu = self.kind == "lu"
        (fs, ss, rs), (a0, b0, f0, w0, x0) = self._addresses(front)
        for p in range(P):
            a, b, M, W = a0 + p * fs, b0 + p * fs, f0 + p * ss, w0 + p * rs
            X = None if x0 is None else x0 + p * rs
            if op == "up" and trans == "N" and lu:  # a^T := a^T U^-1 ; b^T -= a^T X
                lap.trsm("R", "U", "N", "N", k, s, 1.0, M, s, a, k)
                lap.gemm("N", "N", k, r, s, -1.0, a, k, X, s, 1.0, b, k)
            elif op == "up" and trans == "N":  # a^T := a^T L^-H ; b^T -= a^T W^H
                lap.trsm("R", "L", "C", "N", k, s, 1.0, M, s, a, k)
                lap.gemm("N", "C", k, r, s, -1.0, a, k, W, r, 1.0, b, k)
            elif op == "up":  # a = P^T f_S already: a^T := a^T L^-T ; b^T -= a^T W^T
                lap.trsm("R", "L", "T", "U", k, s, 1.0, M, s, a, k)
                lap.gemm("N", "T", k, r, s, -1.0, a, k, W, r, 1.0, b, k)
            elif trans == "N":  # a^T -= b^T W ; u_S = P L^-T a
                lap.gemm("N", "N", k, s, r, -1.0, b, k, W, r, 1.0, a, k)
                lap.trsm("R", "L", "N", "U" if lu else "N", k, s, 1.0, M, s, a, k)
            else:  # a^T -= b^T X^T ; u_S = U^-1 a
                lap.gemm("N", "T", k, s, r, -1.0, b, k, X, s, 1.0, a, k)
                lap.trsm("R", "U", "T", "N", k, s, 1.0, M, s, a, k)


class DenseJob:
    """One class's elimination into factors: run in box ranges (:func:`run_jobs`, possibly
    beside other classes' jobs of the same level), then :meth:`finish` once.

    ``F`` (P, f, f) is eliminated in place; afterwards ``F[:, s:, s:]`` holds the Schur
    complements.  ``inline``: the native kernel's inline loops (narrow frontals) instead of
    LAPACK/BLAS; the same factors either way.  ``source``: ``(cls, level, V, fronts,
    child_classes, leaf_jobs)`` when the native kernel assembles each box just before it is
    factored (:func:`ssi_sparse._engine.native.dense_chunk`), None when ``F`` is assembled already;
    ``leaf_jobs`` (level 1 only, else None): the leaf classes' jobs (:meth:`for_leaves`),
    whose boxes this job assembles and factors beside its own.  ``compact``: the frontals may
    hold decoupled nodes (a masked grid's absent pixels); the native kernel factors each box
    without them (the results are the same).  ``storage``: the class's blocks of a
    factorization that is given up (a refactorization's predecessor), whose arrays of the
    right shape and dtype receive the factors instead of new ones.
    """

    def __init__(self, F, s: int, cholesky: bool, a_norm: float, where: str, source=None, inline: bool = False,
                 shape=None, dtype=None, compact: bool = False, storage=None):
        P, f, _ = F.shape if F is not None else shape
        dtype = np.dtype(F.dtype if F is not None else dtype)
        if F is not None and not F.flags.c_contiguous:
            raise ValueError("dense kernel needs C-contiguous frontals")
        r = f - s
        self.F, self.s, self.cholesky, self.a_norm, self.where, self.source = F, s, cholesky, a_norm, where, source
        self.n_boxes, self.n_front, self.dtype, self.inline, self.compact = P, f, dtype, inline, compact
        self.in_c = native.supports_dtype(np, dtype)
        if (source is not None or inline) and not self.in_c:
            raise ValueError("fused assembly and the inline kernel need the native extension")
        def stored(name, shape):  # ``storage``'s array (a factorization given up), else a new one
            a = getattr(storage, name, None)
            return a if a is not None and a.shape == shape and a.dtype == dtype else pages.empty(shape, dtype)

        self.factor = stored("factor", (P, s, s))
        self.x = None if cholesky else stored("x", (P, r, s))
        self.w = stored("w", (P, s, r))
        self.perm = None if cholesky else np.empty((P, s), dtype=np.intp)
        self.rconds = np.ones(P)
        self._task_seconds = []  # one entry per run (list.append is thread-safe)

    @classmethod
    def for_leaves(cls, P: int, f: int, s: int, dtype, cholesky: bool, a_norm: float, where: str,
                   storage=None) -> "DenseJob":  # fmt: skip
        """Storage for a leaf class that its level-1 parents factor (no frontals of its own)."""
        return cls(None, s, cholesky, a_norm, where, inline=True, shape=(P, f, f), dtype=dtype, storage=storage)

    def box_cost(self) -> float:
        """Flops of one box (the LU-type model, halved for Cholesky): for scheduling."""
        s, r = float(self.s), float(self.n_front - self.s)
        lu = 2.0 / 3.0 * s**3 + 2.0 * s * s * r + 2.0 * r * r * s
        return lu / 2 if self.cholesky else lu

    @property
    def has_work(self) -> bool:
        return self.F is not None and (bool(self.s) or self.source is not None)

    def run(self, bounds) -> None:
        """Assemble (if fused) and factor boxes ``bounds = (p0, p1)``.  Raises
        :class:`NotPositiveDefinite` or :class:`~ssi_sparse.SingularMatrixError`."""
        t0 = time.perf_counter()
        try:
            if self.in_c:
                self._run_native(bounds)
            else:
                self._run_python(bounds)
        finally:
            self._task_seconds.append(time.perf_counter() - t0)

    @property
    def seconds(self) -> float:
        """Seconds spent in :meth:`run`, summed over threads."""
        return sum(self._task_seconds)

    def _run_native(self, bounds):
        try:
            native.dense_chunk(self.F, *bounds, self.s, self.cholesky, self.inline, self.a_norm, self.factor, self.x,
                               self.w, self.perm, self.rconds, lapack_for(self.F.dtype).table,
                               self.source or (None, None, None, None, None, None), self.compact)  # fmt: skip
        except native.DenseFailure as failure:
            where = self.where if failure.leaf is None else self.source[5][failure.leaf].where
            if failure.not_pd:
                raise NotPositiveDefinite(where) from None
            raise exactly_singular(where) from None

    def _run_python(self, bounds):
        # the native loop's arithmetic box by box from Python (no native extension)
        F, s, where = self.F, self.s, self.where
        f = F.shape[1]
        r = f - s
        lap = lapack_for(F.dtype)
        item = F.itemsize
        ipiv = np.empty(max(s, 1), dtype=np.intc)
        for p in range(*bounds):
            base = F.ctypes.data + p * f * f * item
            g_ss, g_sr, g_rs, g_rr = base, base + s * f * item, base + s * item, base + (s * f + s) * item
            S = F[p, :s, :s]
            norm_s = lap.norm1(s, s, g_ss, f)  # ||G_SS||_1 = ||S||_inf
            if self.cholesky:
                if lap.potrf(s, g_ss, f):
                    raise NotPositiveDefinite(where)
                rc = lap.rcond("L", s, g_ss, f, norm_s)
                # W = G_RS L^-H (= X^H; the right-side solve ran faster than L^-1 G_SR)
                lap.trsm("R", "L", "C", "N", r, s, 1.0, g_ss, f, g_rs, f)
                lap.rank_k_lower(r, s, -1.0, g_rs, f, 1.0, g_rr, f, trans="N")
                _mirror_upper_to_lower(F[p, s:, s:])
            else:
                if lap.getrf(s, g_ss, f, ipiv.ctypes.data):
                    raise exactly_singular(where)
                rc = lap.rcond("LU", s, g_ss, f, norm_s)
                lap.laswp(r, g_sr, f, s, ipiv.ctypes.data)
                lap.trsm("L", "L", "N", "U", s, r, 1.0, g_ss, f, g_sr, f)
                lap.trsm("R", "U", "N", "N", r, s, 1.0, g_ss, f, g_rs, f)
                lap.gemm("N", "N", r, r, s, -1.0, g_rs, f, g_sr, f, 1.0, g_rr, f)
                self.perm[p] = _perm_from_ipiv(ipiv[:s])
                self.x[p] = F[p, s:, :s]
            # measured against A too, as the portable kernel's rcond (see _kernels._rcond)
            self.rconds[p] = rc * norm_s / max(norm_s, self.a_norm) if norm_s > 0 else 0.0
            self.factor[p] = S
            self.w[p] = F[p, :s, s:]

    def finish(self) -> FactoredBlocks:
        """Check the blocks' conditioning (raises :class:`~ssi_sparse.SingularMatrixError`)
        and return the stored factors."""
        P, s = self.n_boxes, self.s
        min_rcond = float(np.min(self.rconds)) if P and s else 1.0  # NaN propagates
        if s:
            check_rcond(min_rcond, s, float(np.finfo(self.dtype).eps), self.where)
        inv_perm = None
        if self.perm is not None:
            inv_perm = np.empty_like(self.perm)
            np.put_along_axis(inv_perm, self.perm, np.arange(s, dtype=np.intp)[None, :].repeat(P, 0), axis=1)
        kind = "cholesky" if self.cholesky else "lu"
        return FactoredBlocks(kind, self.factor, self.x, self.w, self.perm, inv_perm, min_rcond)


def run_jobs(jobs, pool=None, n_threads: int = 1) -> None:
    """Run every box of ``jobs``: one after another on BLAS's threads (``pool`` None), or
    spread over ``pool`` (the engine's executor, ``n_threads`` workers) with single-threaded
    BLAS, classes side by side, the costliest box ranges first (longest-processing-time
    order balances the threads).  The calling thread is one of the ``n_threads`` workers,
    and each worker takes the next task from one shared list: a level of many one-box
    classes (a masked plan's top) costs ``n_threads - 1`` hand-offs, not one per box.
    After a failure no new task starts; every worker is waited for before the first
    failure is raised (a :class:`NotPositiveDefinite` before any other: the caller then
    refactors by LU)."""
    jobs = [j for j in jobs if j.has_work]
    if pool is None or n_threads < 2:
        for job in jobs:
            job.run((0, job.n_boxes))
        return
    tasks = []
    for job in jobs:
        P = job.n_boxes
        cuts = np.linspace(0, P, min(P, 2 * n_threads) + 1).astype(int).tolist()
        tasks += [(job.box_cost() * (b - a), job, (a, b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
    tasks.sort(key=lambda t: -t[0])
    queue, lock, errors = iter(tasks), threading.Lock(), []

    def worker():
        while not errors:
            with lock:
                task = next(queue, None)
            if task is None:
                return
            try:
                task[1].run(task[2])
            except BaseException as exc:  # re-raised below, once every worker is done
                errors.append(exc)

    with single_threaded_blas():
        futures = [pool.submit(worker) for _ in range(min(n_threads, len(tasks)) - 1)]
        try:
            worker()
        finally:
            wait(futures)
    first = next((e for e in errors if isinstance(e, NotPositiveDefinite)), errors[0] if errors else None)
    # drop every reference from this frame first: the raised exception's traceback holds the
    # frame, and a frame -> exception cycle would keep the level's arrays (the whole
    # factorization in flight) alive until the cyclic collector ran
    del futures, errors, tasks, queue
    if first is not None:
        try:
            raise first
        finally:
            first = None


def factor_class(F, s: int, cholesky: bool, a_norm: float, where: str, pool=None, n_threads: int = 1,
                 source=None) -> FactoredBlocks:
    """Eliminate the leading ``s`` unknowns of every frontal of ``F`` (P, f, f), in place
    (one :class:`DenseJob` run by :func:`run_jobs`).

    Raises :class:`NotPositiveDefinite` (Cholesky only; ``F`` is then partly overwritten) or
    :class:`~ssi_sparse.SingularMatrixError`.
    """
    job = DenseJob(F, s, cholesky, a_norm, where, source)
    run_jobs([job], pool, n_threads)
    return job.finish()
