"""One grid across many processes with MPI (``mpi4py``; ``pip install ssi-sparse[mpi]``).

Each rank holds a *slab*: consecutive rows of the grid (its rows of the stencil array, of the
right-hand side and of the answer).  The factorization cuts the grid along its own box tree
(:mod:`ssi_sparse._planning.tree`): every rank factorizes its *windows* (boxes of one level of the tree) with the
ordinary engine, and the windows' boundary Schur complements are merged pairwise up the top
levels, ``log2 P`` rounds of one message per pair.  A solve runs the same tree: condensed
right-hand sides up, boundary values down.  No rank ever holds all of ``A``, ``b`` or ``x``.

Elementwise work (validation, equilibration, the Hermitian test, residuals for iterative
refinement) runs on the slabs with one halo row from each neighbour; stencil rows and
right-hand sides move from slabs to windows (and answers back) in one all-to-all each.

Errors raised on any rank (a singular block, too little memory, bad input) are agreed on
after every phase and raised on every rank as the same exception: never a hang.

Launch with ``mpiexec -n 4 python program.py`` (or Slurm's ``srun``); see ``docs/mpi.md``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ._engine.dense import NotPositiveDefinite, factor_class
from ._engine.walks import down_sweep, factorize_values, plain_trans, thread_budget, up_sweep
from ._errors import SingularMatrixError
from ._api.factor import MAX_REFINE_STEPS, _engine_dtype, available_memory
from ._planning.plan import STENCIL_OFFSETS
from ._engine.refine import refine, refuse_unsolved
from ._structure.stencil import is_hermitian, scale_couplings, stencil_matvec, stencil_row_sums, transpose_stencil
from ._planning.tree import Window, distributed_plan

__all__ = ["SlabFactor", "factorize_slab", "slab_rows", "spsolve", "traffic_model"]


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ssi_sparse.mpi needs mpi4py and an MPI library: pip install 'ssi-sparse[mpi]'"
        ) from exc
    return MPI


def _world(comm):
    return _mpi().COMM_WORLD if comm is None else comm


# ---------------------------------------------------------------------------------------
# agreeing on errors


def _portable(exc: BaseException):
    return type(exc), str(exc), getattr(exc, "exact", None)


def _rebuild(kind, message, exact):
    if issubclass(kind, SingularMatrixError):
        return kind(message, bool(exact))
    try:
        return kind(message)
    except Exception:  # an exception type that cannot be made from a message
        return RuntimeError(f"{kind.__name__}: {message}")


class _Phase:
    """``with _Phase(comm, "what"):`` runs a step on every rank, then agrees: if any rank
    raised, every rank raises the same exception (the lowest failing rank's, naming it).
    Nothing inside may communicate with a rank that could have failed before reaching it."""

    def __init__(self, comm, what):
        self.comm, self.what = comm, what

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is not None and not isinstance(exc, Exception):
            return False  # KeyboardInterrupt and the like: leave at once
        mine = None if exc is None else _portable(exc)
        reports = self.comm.allgather(mine)
        for rank, report in enumerate(reports):
            if report is not None:
                kind_, message, exact = report
                raise _rebuild(kind_, f"{message} [rank {rank}, {self.what}]", exact) from exc
        return False


def _allmax(comm, a):
    a = np.ascontiguousarray(a, dtype=np.float64)
    out = np.empty_like(a)
    comm.Allreduce(a, out, op=_mpi().MAX)
    return out


# ---------------------------------------------------------------------------------------
# moving rectangles of the grid between ranks


def _intersect(a, b):
    r0, r1 = max(a[0], b[0]), min(a[1], b[1])
    c0, c1 = max(a[2], b[2]), min(a[3], b[3])
    return (r0, r1, c0, c1) if r0 < r1 and c0 < c1 else None


def _transfers(sources, requests, me):
    """``(outgoing, incoming)``: the rectangles this rank sends (``(dest, request index, source
    index, box)``) and receives (``(source rank, request index, box)``), in the one order
    both sides use."""
    outgoing = [
        (q, i, j, box)
        for q in range(len(requests))
        for i, req in enumerate(requests[q])
        for j, src in enumerate(sources[me])
        if (box := _intersect(req, src)) is not None
    ]
    incoming = [
        (p, i, box)
        for p in range(len(sources))
        for i, req in enumerate(requests[me])
        for src in sources[p]
        if (box := _intersect(req, src)) is not None
    ]
    return outgoing, incoming


def _area(box):
    return (box[1] - box[0]) * (box[3] - box[2])


def _redistribute(comm, sources, arrays, requests, tail, dtype, traffic=None):
    """Move rectangles of a grid-shaped array between ranks in one all-to-all.

    ``sources[p]``: the half-open regions ``(r0, r1, c0, c1)`` rank ``p`` holds (regions of
    all ranks together do not overlap); ``arrays``: this rank's, shaped
    ``(r1 - r0, c1 - c0, *tail)``.  ``requests[p]``: the regions rank ``p`` wants, each
    covered by the sources.  Every rank knows every rank's regions (they follow from the
    plan), so nothing but the data travels.  Returns this rank's requested arrays;
    ``traffic`` ([sent, received] bytes) counts what crossed to other ranks.
    """
    me, size = comm.rank, comm.size
    tail = tuple(tail)
    per_node = int(np.prod(tail, dtype=np.int64))
    outgoing, incoming = _transfers(sources, requests, me)
    send, send_counts = [], np.zeros(size, dtype=np.int64)
    for q, _, j, box in outgoing:
        src = sources[me][j]
        piece = arrays[j][box[0] - src[0] : box[1] - src[0], box[2] - src[2] : box[3] - src[2], ...]
        send.append(np.ascontiguousarray(piece, dtype=dtype).reshape(-1))
        send_counts[q] += send[-1].size
    recv_counts = np.zeros(size, dtype=np.int64)
    for p, _, box in incoming:
        recv_counts[p] += _area(box) * per_node
    sendbuf = np.concatenate(send) if send else np.empty(0, dtype=dtype)
    recvbuf = np.empty(int(recv_counts.sum()), dtype=dtype)
    displs = lambda counts: np.concatenate([[0], np.cumsum(counts)[:-1]])  # noqa: E731
    comm.Alltoallv([sendbuf, (send_counts, displs(send_counts))], [recvbuf, (recv_counts, displs(recv_counts))])
    if traffic is not None:
        item = np.dtype(dtype).itemsize
        traffic[0] += item * int(send_counts.sum() - send_counts[me])
        traffic[1] += item * int(recv_counts.sum() - recv_counts[me])
    out = [np.empty((r1 - r0, c1 - c0) + tail, dtype=dtype) for r0, r1, c0, c1 in requests[me]]
    offset = 0
    for _, i, box in incoming:
        r0, _, c0, _ = requests[me][i]
        n = _area(box) * per_node
        shape = (box[1] - box[0], box[3] - box[2]) + tail
        out[i][box[0] - r0 : box[1] - r0, box[2] - c0 : box[3] - c0, ...] = recvbuf[offset : offset + n].reshape(shape)
        offset += n
    return out


def _transfer_bytes(sources, requests, me, per_node, itemsize):
    """``(sent, received)`` bytes :func:`_redistribute` moves to and from other ranks."""
    outgoing, incoming = _transfers(sources, requests, me)
    sent = sum(_area(box) for q, _, _, box in outgoing if q != me)
    received = sum(_area(box) for p, _, box in incoming if p != me)
    return sent * per_node * itemsize, received * per_node * itemsize


def slab_rows(height: int, size: int, rank: int) -> tuple:
    """The rows ``(start, stop)`` of an even split of ``height`` rows over ``size`` ranks
    (what :func:`spsolve` and the command line use; any split works for
    :func:`factorize_slab`)."""
    bounds = np.linspace(0, height, size + 1).astype(int)
    return int(bounds[rank]), int(bounds[rank + 1])


@dataclass(frozen=True)
class _Slabs:
    """Which rows of the ``height x width`` grid each rank holds: ``starts[p]:starts[p+1]``."""

    height: int
    width: int
    starts: tuple

    def rows(self, p):
        return self.starts[p], self.starts[p + 1]

    def regions(self):
        return [[(a, b, 0, self.width)] if b > a else [] for a, b in zip(self.starts[:-1], self.starts[1:])]

    def halo_requests(self):
        """Per rank: the row above and the row below its slab (where they exist)."""
        out = []
        for a, b in zip(self.starts[:-1], self.starts[1:]):
            req = []
            if b > a and a > 0:
                req.append((a - 1, a, 0, self.width))
            if b > a and b < self.height:
                req.append((b, b + 1, 0, self.width))
            out.append(req)
        return out


def _closed_box(w: Window):
    return (w.rows[0], w.rows[1] + 1, w.cols[0], w.cols[1] + 1)


def _owned_box(w: Window, height, width):
    """The part of a window's box it answers for: windows share their edge lines, so each
    takes the half-open box, plus the grid's last row and column where it reaches them."""
    r1 = w.rows[1] + 1 if w.rows[1] == height - 1 else w.rows[1]
    c1 = w.cols[1] + 1 if w.cols[1] == width - 1 else w.cols[1]
    return (w.rows[0], r1, w.cols[0], c1)


def _drop_outside(V, row0, height, width):
    """Zero the couplings of slab rows ``V`` (h, W, 9) that leave the grid (in place)."""
    h = V.shape[0]
    r = row0 + np.arange(h)[:, None]
    c = np.arange(width)[None, :]
    for slot, (dr, dc) in enumerate(STENCIL_OFFSETS.tolist()):
        outside = (r + dr < 0) | (r + dr >= height) | (c + dc < 0) | (c + dc >= width)
        V[outside, slot] = 0


def _local_ranks(comm) -> int:
    """Ranks of ``comm`` on this machine (they share its cores)."""
    MPI = _mpi()
    try:
        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    except Exception:  # pragma: no cover - an MPI without shared-memory splits
        return 1
    try:
        return node.size
    finally:
        node.Free()


# ---------------------------------------------------------------------------------------
# the distributed factor


class SlabFactor:
    """A factorization of one grid spread over the ranks of an MPI communicator.

    Made by :func:`factorize_slab` on every rank at once; every method is collective (all
    ranks call it, each with its own rows).

    Attributes
    ----------
    shape : tuple of int
        ``(n, n)`` of the whole matrix, ``n = H * W``.
    rows : tuple of int
        ``(start, stop)``: the grid rows this rank holds (unknowns ``start * W`` to
        ``stop * W``).
    dtype : numpy.dtype
    hermitian : bool
        Whether the matrix was found exactly Hermitian (on every rank's rows).
    plan : DistributedPlan
        Windows, merges and their owners (:mod:`ssi_sparse._planning.tree`).
    """

    def __init__(self, comm, V_rows, shape, windows=None):
        self.comm = comm
        H, W = (int(v) for v in shape)
        self.grid_shape = (H, W)
        self.shape = (H * W, H * W)
        with _Phase(comm, "reading the slab"):
            V = np.asarray(V_rows)
            if V.ndim != 4 or V.shape[1:] != (W, 3, 3):
                raise ValueError(f"stencil rows must have shape (rows, {W}, 3, 3), got {V.shape}")
            if V.dtype.kind not in "biufc":
                raise TypeError(f"unsupported stencil dtype {V.dtype}")
            dtype = _engine_dtype(V.dtype)
        counts = comm.allgather(V.shape[0])
        dtypes = comm.allgather(dtype.str)
        with _Phase(comm, "checking the slabs"):
            if sum(counts) != H:
                raise ValueError(f"the ranks' stencil rows add up to {sum(counts)} rows, the grid has {H}")
        self.dtype = np.result_type(*[np.dtype(d) for d in dtypes])
        self._slabs = _Slabs(H, W, tuple(int(v) for v in np.concatenate([[0], np.cumsum(counts)])))
        self.rows = self._slabs.rows(comm.rank)
        self.plan = distributed_plan(H, W, comm.size, windows=windows)
        self._threads = max(1, (os.cpu_count() or 1) // _local_ranks(comm))
        #: Bytes this rank sent to and received from other ranks, per phase (all calls so
        #: far), and the solve sweeps and residual products behind the "solve" figures.
        self.traffic = {"factorize": [0, 0], "solve": [0, 0]}
        self.counts = {"sweeps": 0, "matvecs": 0}
        self._factorize(V)

    # -- factorization ------------------------------------------------------------------

    def refactorize(self, V_rows) -> None:
        """New stencil values on the same grid and slabs (collective); the plan is kept."""
        V = np.asarray(V_rows)
        with _Phase(self.comm, "reading the slab"):
            if V.shape != (self.rows[1] - self.rows[0], self.grid_shape[1], 3, 3):
                raise ValueError(f"stencil rows must keep their shape, got {V.shape}")
        self._factorize(V)

    def _factorize(self, V_rows):
        comm, (H, W) = self.comm, self.grid_shape
        a, b = self.rows
        V = np.array(V_rows, dtype=self.dtype, copy=True).reshape(b - a, W, 9)
        with _Phase(comm, "checking the stencil"):
            if not np.all(np.isfinite(V)):
                raise ValueError("matrix contains NaN or Inf")
        _drop_outside(V, a, H, W)
        V_ext, top = self._with_halo(V, 9, "factorize")
        del V  # V_ext holds it (and the halo rows): every copy of the stencil costs 72 bytes a node
        dims = (V_ext.shape[0], W)
        own = slice(top * W, (top + b - a) * W)
        row_max = np.max(np.abs(V_ext), axis=2)
        with _Phase(comm, "equilibrating"):
            if not np.all(row_max[top : top + b - a] > 0):
                raise SingularMatrixError("matrix is exactly singular: it has an all-zero row", exact=True)
        s_ext = (1.0 / np.sqrt(np.where(row_max > 0, row_max, 1.0))).astype(np.finfo(self.dtype).dtype).reshape(-1)
        del row_max
        Vs_ext = np.asarray(scale_couplings(np, V_ext.reshape(-1, 9), s_ext, dims), dtype=self.dtype)
        # the halo rows' couplings beyond the halo are not this rank's to test (nor used)
        grid = Vs_ext.reshape(dims[0], W, 9)
        if top:
            grid[0, :, :3] = 0
        if dims[0] > top + b - a:
            grid[-1, :, 6:] = 0
        hermitian = all(comm.allgather(bool(is_hermitian(np, Vs_ext, dims))))
        Vs = Vs_ext[own]
        a_norm = float(_allmax(comm, np.array([np.max(stencil_row_sums(np, Vs, (b - a, W)), initial=0.0)]))[0])
        row_sums = stencil_row_sums(np, V_ext.reshape(-1, 9), dims)[own]
        norm_inf = float(_allmax(comm, np.array([np.max(row_sums, initial=0.0)]))[0])
        with _Phase(comm, "checking memory"):
            need = self.plan.memory_bytes(comm.rank, self.dtype.itemsize, hermitian) + 3 * V_ext.nbytes
            free = available_memory()
            if free is not None and need > free:
                raise MemoryError(
                    f"factorizing this rank's part of a {H}x{W} grid needs about {need / 2**30:.1f} GiB, "
                    f"but only {free / 2**30:.1f} GiB of memory is available"
                )
        windows = self.plan.windows_of(comm.rank)
        Vw = _redistribute(comm, self._slabs.regions(), [Vs.reshape(b - a, W, 9)] if b > a else [],
                           self._window_requests(), (9,), self.dtype, self.traffic["factorize"])  # fmt: skip
        del Vs, Vs_ext, grid
        with thread_budget(self._threads):
            with _Phase(comm, "factorizing the windows"):
                numeric = {}
                for w, Vwin in zip(windows, Vw):
                    numeric[_key(w)] = factorize_values(w.plan(), Vwin.reshape(-1, 9), hermitian, a_norm)
            merged = self._merge_up(numeric, hermitian, a_norm)
        # commit only after success, so a failed refactorization leaves the factor intact
        self._numeric, self._merged = numeric, merged
        self.hermitian = hermitian
        self._V_ext, self._top = V_ext.reshape(-1, 9), top
        self._scale = s_ext[own]
        self._norm_inf = norm_inf
        self._row_scale = {"N": 1.0 / row_sums.reshape(-1, 1)}
        self._Vt_ext = None

    def _window_requests(self):
        return [[_closed_box(w) for w in self.plan.windows_of(p)] for p in range(self.comm.size)]

    def _with_halo(self, X, tail, phase):
        """``X`` (h, W, *tail) with the rows above and below from the neighbouring slabs:
        ``(X_ext, rows_above)``."""
        comm, (a, b) = self.comm, self.rows
        tail = (tail,) if isinstance(tail, int) else tuple(tail)
        halos = _redistribute(comm, self._slabs.regions(), [X] if b > a else [],
                              self._slabs.halo_requests(), tail, X.dtype, self.traffic[phase])  # fmt: skip
        requests = self._slabs.halo_requests()[comm.rank]
        above = [h for h, req in zip(halos, requests) if req[0] < a]
        below = [h for h, req in zip(halos, requests) if req[0] >= b]
        return np.concatenate(above + [X] + below, axis=0), len(above)

    def _merge_up(self, numeric, hermitian, a_norm):
        """Factor the merges round by round; returns ``{merge id: (merge, blocks)}`` for
        this rank's merges (blocks None where a merge eliminates nothing)."""
        comm, me = self.comm, self.comm.rank
        schur = {_key(w): numeric[_key(w)].schur for w in self.plan.windows_of(me)}
        merged = {}
        for t, level in enumerate(self.plan.merges):
            with _Phase(comm, f"merge round {t + 1}"):
                received = self._exchange_up(level, lambda node: schur.pop(_key(node)), lambda r: (r, r), "factorize")
                for m in level:
                    if m.owner != me:
                        continue
                    F = np.zeros((1, m.n_front, m.n_front), dtype=self.dtype)
                    children = [received[(_key(m), i)] for i in range(2)]

                    def assemble():
                        F[...] = 0
                        for pos, S in zip(m.child_pos, children):
                            F[0][np.ix_(pos, pos)] += S

                    assemble()
                    where = f"merge of round {t + 1} ({m.n_elim} eliminated, {len(m.boundary)} kept)"
                    blocks = None
                    if m.n_elim:
                        try:
                            blocks = factor_class(F, m.n_elim, hermitian, a_norm, where)
                        except NotPositiveDefinite:
                            assemble()
                            blocks = factor_class(F, m.n_elim, False, a_norm, where)
                    merged[_key(m)] = (m, blocks)
                    schur[_key(m)] = np.array(F[0, m.n_elim :, m.n_elim :], copy=True)
        return merged

    def _exchange_up(self, level, payload, shape_of, phase):
        """Hand each child's payload to its merge's owner: returns ``{(merge, role): array}``
        on the owners.  ``payload(child)`` is called on the child's owner; ``shape_of(r)``
        gives the array shape for a boundary of ``r`` nodes."""
        comm, me = self.comm, self.comm.rank
        out, sends, buffers = {}, [], []
        for m in level:
            for role, child in enumerate(m.children):
                tag = _tag(m, role)
                if child.owner == me:
                    data = np.ascontiguousarray(payload(child), dtype=self.dtype)
                    if m.owner == me:
                        out[(_key(m), role)] = data
                    else:
                        sends.append(comm.Isend(data, dest=m.owner, tag=tag))
                        buffers.append(data)  # alive until sent
                        self.traffic[phase][0] += data.nbytes
                elif m.owner == me:
                    buf = np.empty(shape_of(len(child.boundary)), dtype=self.dtype)
                    comm.Recv(buf, source=child.owner, tag=tag)
                    self.traffic[phase][1] += buf.nbytes
                    out[(_key(m), role)] = buf
        _mpi().Request.Waitall(sends)
        return out

    def _exchange_down(self, level, payload, shape_of, phase):
        """Hand each merge's values for a child to the child's owner: ``{child: array}``."""
        comm, me = self.comm, self.comm.rank
        out, sends, buffers = {}, [], []
        for m in level:
            for role, child in enumerate(m.children):
                tag = _tag(m, role)
                if m.owner == me:
                    data = np.ascontiguousarray(payload(m, role), dtype=self.dtype)
                    if child.owner == me:
                        out[_key(child)] = data
                    else:
                        sends.append(comm.Isend(data, dest=child.owner, tag=tag))
                        buffers.append(data)
                        self.traffic[phase][0] += data.nbytes
                elif child.owner == me:
                    buf = np.empty(shape_of(len(child.boundary)), dtype=self.dtype)
                    comm.Recv(buf, source=m.owner, tag=tag)
                    self.traffic[phase][1] += buf.nbytes
                    out[_key(child)] = buf
        _mpi().Request.Waitall(sends)
        return out

    # -- solving ------------------------------------------------------------------------

    def solve(self, b_rows, trans="N"):
        """Solve ``op(A) x = b`` (collective): ``b_rows`` this rank's rows of ``b``.

        Parameters
        ----------
        b_rows : array_like, shape (m,) or (m, k)
            ``m = (stop - start) * W`` values, unknowns ``start * W`` to ``stop * W`` (see
            :attr:`rows`); ``k`` the same on every rank.
        trans : {'N', 'T', 'H'}

        Returns
        -------
        x_rows : ndarray, shape of ``b_rows``
            This rank's rows of the answer, refined against the exact residual; a system
            that cannot be solved raises :class:`~ssi_sparse.SingularMatrixError` on every
            rank.
        """
        comm = self.comm
        m = (self.rows[1] - self.rows[0]) * self.grid_shape[1]
        with _Phase(comm, "reading the right-hand side"):
            if trans not in ("N", "T", "H"):
                raise ValueError(f"trans must be 'N', 'T' or 'H', got {trans!r}")
            b = np.asarray(b_rows)
            if b.ndim not in (1, 2) or b.shape[0] != m:
                raise ValueError(f"right-hand side rows must have shape ({m},) or ({m}, k), got {b.shape}")
            if b.dtype.kind not in "biufc":
                raise TypeError(f"unsupported right-hand side dtype {b.dtype}")
            if not np.all(np.isfinite(b)):
                raise ValueError("right-hand side contains NaN or Inf")
        columns = comm.allgather(1 if b.ndim == 1 else b.shape[1])
        kinds = comm.allgather(b.dtype.str)
        with _Phase(comm, "checking the right-hand sides"):
            if len(set(columns)) != 1:
                raise ValueError(f"every rank must pass the same number of right-hand sides, got {columns}")
        out_dtype = np.result_type(self.dtype, *[np.dtype(d) for d in kinds])
        if out_dtype.kind == "f" and out_dtype.itemsize < 4:
            out_dtype = np.dtype(np.float32)
        B = b.reshape(m, columns[0])
        if columns[0] == 0:
            return np.zeros(b.shape, dtype=out_dtype)
        with thread_budget(self._threads):
            if self.dtype.kind == "f" and out_dtype.kind == "c":
                k = B.shape[1]
                both = np.concatenate([B.real, B.imag], axis=1).astype(self.dtype)
                X = self._solve_refined(both, trans)
                X = X[:, :k] + 1j * X[:, k:]
            else:
                X = self._solve_refined(B.astype(self.dtype), trans)
        return X.astype(out_dtype).reshape(b.shape)

    def _solve_refined(self, B, trans):
        comm = self.comm

        def combine(local):
            return _allmax(comm, local)

        eps = float(np.finfo(self.dtype).eps)
        X, R, eta, steps = refine(np, lambda r: self._solve_scaled(r, trans), lambda x: self._op_matvec(x, trans),
                                  B, self._norm_inf, eps, MAX_REFINE_STEPS, combine)  # fmt: skip
        with _Phase(comm, "checking the answer"):
            refuse_unsolved(np, R, B, self._inverse_row_norms(trans), self.dtype, steps, eta, combine)
        return X

    def _op_matvec(self, x, trans):
        """``op(A) x`` on this rank's rows, with the neighbours' halo rows of ``x``."""
        W = self.grid_shape[1]
        k = x.shape[1]
        self.counts["matvecs"] += 1
        x_ext, top = self._with_halo(x.reshape(-1, W, k), k, "solve")
        V = self._V_ext if trans == "N" else self._transposed()
        if trans == "H":
            x_ext = np.conj(x_ext)
        y = stencil_matvec(np, V, (x_ext.shape[0], W), x_ext.reshape(-1, k))
        y = y[top * W : top * W + x.shape[0]]
        return np.conj(y) if trans == "H" else y

    def _transposed(self):
        if self._Vt_ext is None:
            W = self.grid_shape[1]
            self._Vt_ext = transpose_stencil(np, self._V_ext, (self._V_ext.shape[0] // W, W))
        return self._Vt_ext

    def _inverse_row_norms(self, trans):
        key = "N" if trans == "N" else "T"
        if key not in self._row_scale:
            W, top = self.grid_shape[1], self._top
            Vt = self._transposed()
            sums = stencil_row_sums(np, Vt, (Vt.shape[0] // W, W))
            n = (self.rows[1] - self.rows[0]) * W
            self._row_scale[key] = 1.0 / sums[top * W : top * W + n].reshape(-1, 1)
        return self._row_scale[key]

    def _solve_scaled(self, B, trans):
        # A = S^-1 As S^-1 with As = S A S: op(A)^-1 b = S op(As)^-1 S b
        conjugate, trans = plain_trans(self.hermitian, self.dtype.kind == "c", trans)
        if conjugate:
            return np.conj(self._solve_scaled_plain(np.conj(B), trans))
        return self._solve_scaled_plain(B, trans)

    def _solve_scaled_plain(self, B, trans):
        comm, me, (H, W) = self.comm, self.comm.rank, self.grid_shape
        a, b = self.rows
        k = B.shape[1]
        s = self._scale[:, None]
        rhs = (B * s).reshape(b - a, W, k)
        windows = self.plan.windows_of(me)
        self.counts["sweeps"] += 1
        traffic = self.traffic["solve"]
        rhs_w = _redistribute(comm, self._slabs.regions(), [rhs] if b > a else [],
                              self._window_requests(), (k,), self.dtype, traffic)  # fmt: skip
        # up: each window condenses its right-hand side onto its boundary
        kept, up = {}, {}
        for w, bw in zip(windows, rhs_w):
            plan, numeric = w.plan(), self._numeric[_key(w)]
            bw = bw.reshape(-1, k)
            kept[_key(w)], condensed = up_sweep(numeric, bw, trans)
            boundary = plan.boundary if plan.boundary is not None else np.zeros(0, dtype=np.int64)
            up[_key(w)] = np.concatenate([condensed.reshape(-1, k), bw[boundary]], axis=0)
        merge_kept = {}
        for level in self.plan.merges:
            got = self._exchange_up(level, lambda node: up.pop(_key(node)), lambda r: (2 * r, k), "solve")
            for m in level:
                if m.owner != me:
                    continue
                _, blocks = self._merged[_key(m)]
                f = np.zeros((m.n_front, k), dtype=self.dtype)
                b_front = np.zeros((m.n_front, k), dtype=self.dtype)
                for role, pos in enumerate(m.child_pos):
                    data = got[(_key(m), role)]
                    r = len(pos)
                    f[pos] += data[:r]
                    b_front[pos] = data[r:]  # the same node's b from either child
                s_ = m.n_elim
                f[:s_] += b_front[:s_]
                if blocks is not None:
                    blocks.up(np, f[None], trans)
                merge_kept[_key(m)] = f
                up[_key(m)] = np.concatenate([f[s_:], b_front[s_:]], axis=0)
        # down: boundary values from the root to the windows
        values = {}
        for level in reversed(self.plan.merges):
            for m in level:
                if m.owner != me:
                    continue
                _, blocks = self._merged[_key(m)]
                front = merge_kept.pop(_key(m))
                front[m.n_elim :] = values.pop(_key(m), 0)
                if blocks is not None:
                    blocks.down(np, front[None], trans)
                values[("front", _key(m))] = front
            values.update(self._exchange_down(
                level, lambda m, role: values[("front", _key(m))][m.child_pos[role]], lambda r: (r, k), "solve"))  # fmt: skip
        solutions = []
        for w in windows:
            plan = w.plan()
            u_top = values.get(_key(w)) if plan.boundary is not None else None
            u = down_sweep(self._numeric[_key(w)], kept[_key(w)], u_top, trans)
            solutions.append(u.reshape(w.shape + (k,)))
        owned = [_owned_box(w, H, W) for w in windows]
        parts = [sol[o[0] - w.rows[0] : o[1] - w.rows[0], o[2] - w.cols[0] : o[3] - w.cols[0]]
                 for w, sol, o in zip(windows, solutions, owned)]  # fmt: skip
        sources = [[_owned_box(w, H, W) for w in self.plan.windows_of(p)] for p in range(comm.size)]
        x = _redistribute(comm, sources, parts, self._slabs.regions(), (k,), self.dtype, traffic)
        x = x[0].reshape(-1, k) if x else np.zeros((0, k), dtype=self.dtype)
        return x * s

    # -- queries --------------------------------------------------------------------------

    def traffic_model(self, columns: int = 1, sweeps: int | None = None, matvecs: int | None = None):
        """The bytes :attr:`traffic` should show (:func:`traffic_model`), for ``sweeps`` solve
        sweeps and ``matvecs`` residual products of ``columns`` right-hand sides (default:
        the counts made so far, :attr:`counts`)."""
        sweeps = self.counts["sweeps"] if sweeps is None else sweeps
        matvecs = self.counts["matvecs"] if matvecs is None else matvecs
        return traffic_model(self.plan, self._slabs.starts, self.comm.rank, self.dtype.itemsize, columns, sweeps,
                             matvecs)  # fmt: skip

    def slogdet(self):
        """``(sign, log|det A|)`` of the whole matrix, on every rank (collective)."""
        sign, logabs = 1.0 + 0j, 0.0
        for numeric in self._numeric.values():
            s, la = numeric.slogdet()
            sign, logabs = sign * complex(s[0]), logabs + float(la[0])
        for _, blocks in self._merged.values():
            if blocks is not None:
                s, la = blocks.slogdet(np)
                sign, logabs = sign * complex(np.prod(s)), logabs + float(np.sum(la))
        logabs -= 2.0 * float(np.sum(np.log(self._scale)))  # det(S A S) = det(A) det(S)^2
        signs = self.comm.allgather(sign)
        total = float(self.comm.allreduce(logabs))
        sign = complex(np.prod(signs))
        sign = sign / abs(sign) if sign != 0 else 0.0
        return (sign if self.dtype.kind == "c" else float(sign.real)), total

    def nbytes(self) -> int:
        """Bytes of this rank's stored factors."""
        total = sum(n.nbytes() for n in self._numeric.values())
        return total + sum(b.nbytes() for _, b in self._merged.values() if b is not None)

    def __repr__(self):
        H, W = self.grid_shape
        mine = self.plan.windows_of(self.comm.rank)
        return (
            f"<SlabFactor {H}x{W} {self.dtype} on {self.comm.size} ranks; rank {self.comm.rank}: rows "
            f"{self.rows[0]}:{self.rows[1]}, {len(mine)} window(s), {len(self._merged)} merge(s), "
            f"{self.nbytes() / 2**20:.1f} MiB>"
        )


def traffic_model(plan, starts, rank, itemsize=8, columns=1, sweeps=1, matvecs=1):
    """Bytes rank ``rank`` sends and receives, from the geometry alone: ``{"factorize": (sent,
    received), "solve": (sent, received)}``.  ``plan``: the :class:`DistributedPlan`;
    ``starts``: the slabs' first rows and the grid's height (``P + 1`` values).

    Factorize: the halo rows and the slab-to-window move of the stencil (9 values a node),
    the Schur complements up the tree.  Solve: per sweep the right-hand side to the windows,
    condensed right-hand sides up and boundary values down the tree, the answer back to the
    slabs; per residual product, one halo row of ``x`` from each neighbour.
    """
    H, W = plan.height, plan.width
    slabs = _Slabs(H, W, tuple(starts))
    regions, windows = slabs.regions(), [[_closed_box(w) for w in plan.windows_of(p)] for p in range(plan.ranks)]
    owned = [[_owned_box(w, H, W) for w in plan.windows_of(p)] for p in range(plan.ranks)]

    def add(*pairs):
        return tuple(int(sum(v)) for v in zip(*pairs))

    def scaled(pair, times):
        return tuple(times * v for v in pair)

    halo = lambda per: _transfer_bytes(regions, slabs.halo_requests(), rank, per, itemsize)  # noqa: E731
    factor = add(halo(9), _transfer_bytes(regions, windows, rank, 9, itemsize), plan.message_bytes(rank, itemsize))
    sweep = add(_transfer_bytes(regions, windows, rank, columns, itemsize), plan.message_bytes(rank, itemsize, columns),
                _transfer_bytes(owned, regions, rank, columns, itemsize))  # fmt: skip
    return {"factorize": factor, "solve": add(scaled(sweep, sweeps), scaled(halo(columns), matvecs))}


def _key(node):
    return (node.level, node.box)


def _tag(merge, role):
    # unique per message of one exchange: (box id within its level, role); levels are
    # exchanged one at a time, so ids of different levels never meet
    return 2 * merge.box + role


def factorize_slab(V_rows, shape, *, comm=None, windows=None) -> SlabFactor:
    """Factorize a grid operator whose stencil rows are spread over MPI ranks (collective).

    Parameters
    ----------
    V_rows : array_like, shape (rows, W, 3, 3)
        This rank's consecutive rows of the stencil array (as for
        :func:`ssi_sparse.factorize_stencil`): rank 0 the first rows, rank 1 the next, ...;
        any split, a rank may hold no rows.  Couplings that leave the grid are ignored.
    shape : (H, W)
        The whole grid.
    comm : mpi4py communicator, optional
        ``MPI.COMM_WORLD`` by default.
    windows : int, optional
        A power of two: how many boxes of the tree to cut the grid into (default: the
        number of ranks rounded up to a power of two, doubled when it is not one).

    Returns
    -------
    SlabFactor
        ``solve(b_rows)`` takes and returns this rank's rows.

    Examples
    --------
    Run as ``mpiexec -n 4 python example.py``; each rank builds only its own rows:

    >>> import numpy as np
    >>> from ssi_sparse.mpi import factorize_slab, slab_rows
    >>> from mpi4py import MPI
    >>> comm = MPI.COMM_WORLD
    >>> H, W = 300, 200
    >>> start, stop = slab_rows(H, comm.size, comm.rank)
    >>> laplace = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=float)
    >>> V = np.broadcast_to(laplace, (stop - start, W, 3, 3))
    >>> lu = factorize_slab(V, (H, W), comm=comm)
    >>> x = lu.solve(np.ones((stop - start) * W))
    >>> x.shape == ((stop - start) * W,)
    True
    """
    return SlabFactor(_world(comm), V_rows, shape, windows)


def spsolve(A, b, *, comm=None, root=0, grid=None, order=None):
    """Solve ``A x = b`` held by one rank, on all ranks of ``comm`` (collective).

    Rank ``root`` passes ``A`` and ``b`` (the others pass ``None``): it finds the grid, sends
    every rank its slab of stencil rows and right-hand side, and gathers ``x``.  A plain
    3x3-stencil grid is solved across the ranks; anything else (masked or multi-component
    grids, matrices that are not grids) by rank ``root`` alone, with
    :func:`ssi_sparse.spsolve`.  ``grid``, ``order``: hints for finding the grid, as for
    :func:`ssi_sparse.factorize`.  Returns ``x`` on ``root``, ``None`` elsewhere.
    """
    import ssi_sparse

    from ._errors import NotGridStructuredError
    from ._structure.grid import grid_stencil

    comm = _world(comm)
    me = comm.rank
    plan = None
    with _Phase(comm, "finding the grid"):
        if me == root:
            import scipy.sparse as sp

            A = sp.csr_array(A) if sp.issparse(A) else A
            b_host = np.asarray(b)
            try:
                spec, V = grid_stencil(A, grid, order)
                plain = spec.nodes is None and spec.engine_components == 1 and spec.radius == 1
            except NotGridStructuredError:
                plain = False
            if plain and b_host.shape[:1] == (A.shape[0],):
                plan = ("distributed", spec.engine_shape, b_host.ndim, None if b_host.ndim == 1 else b_host.shape[1])
            else:
                plan = ("root", None, None, None)
    plan = comm.bcast(plan, root=root)
    if plan[0] == "root":
        with _Phase(comm, "solving on the root rank"):
            x = ssi_sparse.spsolve(A, b, grid=grid, order=order or "C") if me == root else None
        return x
    (H, W), ndim, k = plan[1], plan[2], plan[3]
    start, stop = slab_rows(H, comm.size, me)
    bounds = [slab_rows(H, comm.size, p) for p in range(comm.size)]
    V_rows = _scatter_rows(comm, root, V.reshape(H, W, 9) if me == root else None, bounds, (W, 9), np.dtype(V.dtype) if me == root else None)
    cols = 1 if ndim == 1 else k
    b_rows = _scatter_rows(comm, root, b_host.reshape(H, W, cols) if me == root else None, bounds, (W, cols),
                           b_host.dtype if me == root else None)  # fmt: skip
    lu = factorize_slab(V_rows.reshape(stop - start, W, 3, 3), (H, W), comm=comm)
    x_rows = lu.solve(b_rows.reshape((stop - start) * W, cols))
    x = _gather_rows(comm, root, x_rows.reshape(stop - start, W, cols), bounds)
    if me != root:
        return None
    return x.reshape(H * W) if ndim == 1 else x.reshape(H * W, cols)


def _scatter_rows(comm, root, data, bounds, tail, dtype):
    dtype = np.dtype(comm.bcast(None if dtype is None else dtype.str, root=root))
    start, stop = bounds[comm.rank]
    per_row = int(np.prod(tail))
    out = np.empty((stop - start,) + tuple(tail), dtype=dtype)
    counts = [(b - a) * per_row for a, b in bounds]
    displs = [a * per_row for a, _ in bounds]
    send = [np.ascontiguousarray(data, dtype=dtype).reshape(-1), (counts, displs)] if comm.rank == root else None
    comm.Scatterv(send, out.reshape(-1), root=root)
    return out


def _gather_rows(comm, root, rows, bounds):
    per_row = int(np.prod(rows.shape[1:]))
    counts = [(b - a) * per_row for a, b in bounds]
    displs = [a * per_row for a, _ in bounds]
    out = np.empty((bounds[-1][1],) + rows.shape[1:], dtype=rows.dtype) if comm.rank == root else None
    comm.Gatherv(np.ascontiguousarray(rows).reshape(-1), [out.reshape(-1), (counts, displs)] if out is not None else None,
                 root=root)  # fmt: skip
    return out
