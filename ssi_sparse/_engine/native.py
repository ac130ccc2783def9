"""Native CPU kernels (C, via ctypes): every box of the tree assembled and factored in C.

The bottom levels of the box tree hold tens of thousands of frontals a few dozen wide.  The
portable path (:mod:`ssi_sparse._engine.walks` with :func:`ssi_sparse._engine.portable.eliminate`) spends most of its time there
in per-matrix LAPACK calls and index gathers.  Here (:func:`dense_chunk`, ``_csrc/``) each box
is gathered just before it is factored, on the thread that factors it, and factored into the
dense kernel's format (:mod:`ssi_sparse._engine.dense`: factors, not inverses): narrow frontals by inline loops
(``inline_impl.h``), wide ones by SciPy's BLAS/LAPACK (``dense_impl.h``); level 1 assembles
and factors its two leaves per box first, so the leaves' frontals never reach memory.  The
solve sweeps over the stored factors run there too (:func:`dense_sweep`);
:func:`assemble_runs` assembles wide frontals for other callers, writing each row once.

The extension is optional: it is compiled when the package is installed with a C compiler at
hand, and without it (or with ``SSI_SPARSE_NATIVE=0``) the engine runs the portable path.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from functools import lru_cache

import numpy as np

from . import pages
from .threads import parallel_map
from .. import _tuning

__all__ = ["DenseFailure", "add_runs", "assemble_runs", "available", "column_absmax", "dense_chunk", "dense_sweep",
           "describe", "fuses_assembly", "gather_boundary", "gather_nodes", "gathers_dense", "grid_reach",
           "grid_stencil_pass", "mirror_upper", "node_reduce", "reads", "scale_stencil", "scatter_nodes",
           "stencil_matvec", "stencil_is_hermitian", "supports_dtype"]

_SUFFIX = {
    np.dtype(np.float64): "f64",
    np.dtype(np.float32): "f32",
    np.dtype(np.complex128): "c128",
    np.dtype(np.complex64): "c64",
}
_INDEX = {np.dtype(np.int32): "i32", np.dtype(np.int64): "i64"}
_MODE_LEAF, _MODE_MERGE, _MODE_NONE, _MODE_RUNS = 0, 1, 2, 3
_BOX_NOT_PD, _BOX_SINGULAR = 1, 2
SWEEPS = {("up", "N"): 0, ("up", "T"): 1, ("down", "N"): 2, ("down", "T"): 3}
_p = ctypes.c_void_p
_i64 = ctypes.c_int64
_ASSEMBLE_ARGTYPES = [_i64, _i64, _i64, _i64, _p,
                      _p, _i64, _i64, _p, _p, _i64,
                      _p, _i64, _i64, _p, _p, _i64]  # fmt: skip
_DENSE_ARGTYPES = [_i64, _i64, _i64, ctypes.c_int32, ctypes.c_int32, _p, _p, _p, _p, _i64,
                   _p, _p, _p, _p, _p, _p, ctypes.c_double, _p, _p, _p, _p, _p, ctypes.c_int32, _p, _p]  # fmt: skip


class _Source(ctypes.Structure):
    # struct source in _csrc/frontal.c: the same fields in the same order
    _fields_ = [("mode", ctypes.c_int32), ("a", _p), ("stride_a", _i64), ("idx_a", _p), ("b", _p),
                ("stride_b", _i64), ("idx_b", _p), ("nodes", _p), ("n_nodes", _i64), ("tpos", _p),
                ("tnode", _p), ("tslot", _p), ("n_entries", _i64)]  # fmt: skip


@lru_cache(maxsize=1)
def _library():
    spec = importlib.util.find_spec("ssi_sparse._engine._native_frontal")
    if spec is None or not spec.origin:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)  # ctypes releases the GIL during calls
    except OSError:
        return None
    for suffix in _SUFFIX.values():
        fn = getattr(lib, f"ssi_assemble_runs_{suffix}")
        fn.argtypes, fn.restype = _ASSEMBLE_ARGTYPES, None
        fn = getattr(lib, f"ssi_mirror_upper_{suffix}")
        fn.argtypes, fn.restype = [_i64, _i64, _p], None
        fn = getattr(lib, f"ssi_dense_chunk_{suffix}")
        fn.argtypes, fn.restype = _DENSE_ARGTYPES, _i64
        fn = getattr(lib, f"ssi_dense_sweep_{suffix}")
        fn.argtypes = [_i64, _i64, _i64, _i64, ctypes.c_int32, ctypes.c_int32, _p, _p, _p, _p, _p, _p, _i64]
        fn.restype = _i64
    for suffix in _SUFFIX.values():
        fn = getattr(lib, f"ssi_node_reduce_{suffix}")
        fn.argtypes, fn.restype = [_i64, _i64, _p, _p, ctypes.c_int32], None
        fn = getattr(lib, f"ssi_scale_{suffix}")
        fn.argtypes, fn.restype = [_i64, _i64, _i64, _i64, _i64, _p, _p, _p], None
        fn = getattr(lib, f"ssi_hermitian_{suffix}")
        fn.argtypes, fn.restype = [_i64, _i64, _i64, _i64, _i64, _p], ctypes.c_int32
        fn = getattr(lib, f"ssi_add_runs_{suffix}")
        fn.argtypes, fn.restype = [_i64, _i64, _p, _i64, _p, _i64, _p, _i64], None
        fn = getattr(lib, f"ssi_column_absmax_{suffix}")
        fn.argtypes, fn.restype = [_i64, _i64, _p, _p, _p], None
        for name in ("gather_nodes", "scatter_nodes"):
            fn = getattr(lib, f"ssi_{name}_{suffix}")
            fn.argtypes, fn.restype = [_i64, _i64, _i64, _i64, _p, _p, _p], None
        fn = getattr(lib, f"ssi_gather_boundary_{suffix}")
        fn.argtypes, fn.restype = [_i64, _i64, _i64, _p, _i64, _p, _p, _p, _i64, _i64], None
        fn = getattr(lib, f"ssi_matvec_{suffix}")
        fn.argtypes, fn.restype = [_i64, _i64, _i64, _i64, _i64, _i64, _p, _p, _p], None
    for index in _INDEX.values():
        for suffix in _SUFFIX.values():
            fn = getattr(lib, f"ssi_reach_{index}_{suffix}")
            fn.argtypes, fn.restype = [_i64, _p, _p, _p, _p], _i64
            fn = getattr(lib, f"ssi_stencil_{index}_{suffix}")
            fn.argtypes = [_i64, _p, _p, _p, _p, _i64, _i64, _i64, ctypes.c_int32, ctypes.c_int32, _i64, _i64,
                           _p, _p, _p]  # fmt: skip
            fn.restype = _i64
            fn = getattr(lib, f"ssi_mask_runs_{index}_{suffix}")
            fn.argtypes, fn.restype = [_i64, _p, _p, _p, _i64, _p, _p, _p, _p], _i64
            fn = getattr(lib, f"ssi_mask_edges_{index}_{suffix}")
            fn.argtypes, fn.restype = [_i64, _p, _p, _p, _p, _p, _i64, _i64, _p, _p, _p], _i64
    return lib


def available() -> bool:
    """The compiled kernel is importable and not switched off by ``SSI_SPARSE_NATIVE=0``."""
    return os.environ.get("SSI_SPARSE_NATIVE", "1") != "0" and _library() is not None


def describe() -> str:
    """One line for ``ssi-sparse info`` and the demo: which CPU kernel runs the small frontals."""
    if _library() is None:
        return ("portable NumPy for small frontals (native extension not built: no C compiler at "
                "install time?), SciPy's LAPACK/BLAS for large ones")
    if not available():
        return ("portable NumPy for small frontals (native kernel switched off by "
                "SSI_SPARSE_NATIVE=0), SciPy's LAPACK/BLAS for large ones")
    return "native C kernel for small frontals, SciPy's LAPACK/BLAS (dense kernel) for large ones"


def supports_dtype(xp, dtype) -> bool:
    """Whether the native kernels can run on these arrays at all (NumPy, the four dtypes)."""
    return xp is np and np.dtype(dtype) in _SUFFIX and available()


def _ptr(a, dtype=None) -> int:
    # the kernels index raw memory: a strided view or another dtype would be read wrongly
    if not a.flags.c_contiguous or (dtype is not None and a.dtype != dtype):
        raise ValueError("native kernel needs C-contiguous arrays of the frontal dtype")
    return a.ctypes.data


def fuses_assembly(cls, level: int) -> bool:
    """Whether the native kernels can gather this class's frontals box by box themselves
    (leaves from the stencil, small merges by their flat maps)."""
    return level == 0 or (len(cls.children) == 2 and cls.children[0].has_flat)


def gathers_dense(xp, dtype, cls, level: int) -> bool:
    """Whether :func:`dense_chunk` can gather this class's boxes itself: leaves, and merges of
    two children (by flat maps, or by runs where the frontals are too wide for them) or of
    one by runs (a masked plan's box whose other child holds no unknown)."""
    return supports_dtype(xp, dtype) and (level == 0 or gathers_by_runs(cls))


def gathers_by_runs(cls) -> bool:
    """Whether the native runs assembly serves merge class ``cls`` (one or two children)."""
    n = len(cls.children)
    return n == 2 or (n == 1 and not cls.children[0].has_flat)


def _source(dtype, cls, rows: slice, level: int, V, fronts, child_classes=None):
    """``(source, runs, keep)``: what the C kernels read to assemble boxes ``rows`` of ``cls``
    (``struct source``; ``cls`` None: the frontals are assembled already), the ``struct
    runs_source`` of a merge without flat maps (dense kernel only; ``child_classes`` needed)
    or None, and the arrays that memory belongs to (alive until the call returns)."""
    if cls is None:
        return _Source(_MODE_NONE), None, []
    if level == 0:
        nodes = np.ascontiguousarray(cls.closed_nodes[rows], dtype=np.int64)
        tpos, tnode, tslot = _owned_entries(cls)
        src = _Source(_MODE_LEAF, _ptr(V, dtype), V.shape[0], nodes=_ptr(nodes), n_nodes=nodes.shape[1],
                      tpos=_ptr(tpos), tnode=_ptr(tnode), tslot=_ptr(tslot), n_entries=tpos.shape[0])  # fmt: skip
        return src, None, [nodes, tpos, tnode, tslot]
    if not cls.children[0].has_flat or cls.n_front > _tuning.NATIVE_FLAT_MAX_FRONT:
        per_child = _children_by_runs(cls, fronts, child_classes, cls.n_front)
        runs = _RunsSource()
        for c, (child, start, s, rowmap, link_runs) in enumerate(per_child):
            runs.c[c] = _ptr(child, dtype) + (start + rows.start) * child.strides[0]
            runs.f[c], runs.s[c] = child.shape[1], s
            runs.rowmap[c], runs.runs[c], runs.n_runs[c] = _ptr(rowmap), _ptr(link_runs), link_runs.shape[0]
        keep = [a for *_, rowmap, link_runs in per_child for a in (rowmap, link_runs)]
        return _Source(_MODE_RUNS), runs, keep
    args, keep = [], []
    for link in cls.children:
        child = fronts[link.cls]
        start = link.rows.start + rows.start
        flat = np.ascontiguousarray(link.flat, dtype=np.int64)
        keep.append(flat)
        args += [_ptr(child, dtype) + start * child.strides[0], child.shape[1] * child.shape[2], _ptr(flat)]
    return _Source(_MODE_MERGE, *args), None, keep


def _owned_entries(cls):
    """``(tpos, tnode, tslot)``: the leaf template's entries that read a coupling (frontal
    position, closed node, stencil slot); the others read the closed nodes' last column, the
    zero sentinel past the grid (``Plan``'s leaf template), and stay zero."""
    template = np.ascontiguousarray(cls.leaf_template, dtype=np.int64).reshape(-1)
    tpos = np.flatnonzero(template != (cls.closed_nodes.shape[1] - 1) * 9)
    tnode, tslot = np.divmod(template[tpos], 9)
    return tpos, np.ascontiguousarray(tnode), np.ascontiguousarray(tslot)


class _LeafSource(ctypes.Structure):
    # struct leaf_source in _csrc/frontal.c: the same fields in the same order
    _fields_ = [("nodes", _p), ("n_nodes", _i64), ("tpos", _p), ("tnode", _p), ("tslot", _p), ("n_entries", _i64),
                ("f", _i64), ("s", _i64),
                ("factor", _p), ("x", _p), ("w", _p), ("perm", _p), ("rcond", _p)]  # fmt: skip


_LeafPair = _LeafSource * 2  # one array type (ctypes builds a new, self-referencing one per product)


def _leaf_pair(cls, rows: slice, child_classes, leaf_jobs, dtype):
    """``(leaves, keep)``: the two leaves of boxes ``rows`` of the level-1 class ``cls`` (their
    templates, and their jobs' output arrays at the chunk's first leaf), and the arrays that
    memory belongs to."""
    leaves, keep = _LeafPair(), []
    for c, link in enumerate(cls.children):
        lc, job = child_classes[link.cls], leaf_jobs[link.cls]
        first = link.rows.start + rows.start
        nodes = np.ascontiguousarray(lc.closed_nodes[first : first + rows.stop - rows.start], dtype=np.int64)
        tpos, tnode, tslot = _owned_entries(lc)
        keep += [nodes, tpos, tnode, tslot]
        fl, sl = lc.n_front, lc.n_elim

        def at(a, per_box):
            return None if a is None else _ptr(a, a.dtype) + first * per_box * a.itemsize

        leaves[c] = _LeafSource(_ptr(nodes), nodes.shape[1], _ptr(tpos), _ptr(tnode), _ptr(tslot), tpos.shape[0], fl, sl,
                                at(job.factor, sl * sl), at(job.x, (fl - sl) * sl), at(job.w, sl * (fl - sl)),
                                at(job.perm, sl), at(job.rconds, 1))  # fmt: skip
    return leaves, keep


class DenseFailure(Exception):
    """Internal: box ``box`` of a dense chunk (or its child leaf ``leaf``, a leaf class id)
    was not positive definite (``not_pd``) or had an exact zero pivot."""

    def __init__(self, box: int, not_pd: bool, leaf=None):
        super().__init__(box, not_pd, leaf)
        self.box, self.not_pd, self.leaf = box, not_pd, leaf


def dense_chunk(F, p0: int, p1: int, s: int, cholesky: bool, inline: bool, a_norm: float, factor, x, w, perm, rconds,
                table, source=(None, None, None, None, None, None), compact: bool = False) -> None:
    """Factor boxes ``[p0, p1)`` of ``F`` (P, f, f) in place with the dense kernel's
    arithmetic (:mod:`ssi_sparse._engine.dense`), by inline loops (``inline``) or LAPACK/BLAS, the loop in C;
    the outputs are the class's arrays (all P boxes).  ``source``: ``(cls, level, V, fronts,
    child_classes, leaf_jobs)`` to assemble each box first (``cls`` None: assembled already;
    ``leaf_jobs`` not None: level 1 factors its two leaves per box first, into those jobs'
    arrays).  ``table``: :attr:`ssi_sparse._engine.lapack.Lapack.table`.  ``compact``: the frontals may hold
    decoupled nodes (a masked grid's absent pixels), factored without them.  Raises
    :class:`DenseFailure`."""
    dtype = F.dtype
    f = F.shape[1]
    cls, level, V, fronts, child_classes, leaf_jobs = source
    rows = slice(p0, p1)
    leaves, s_max, scratch = None, s, 0
    if leaf_jobs is not None:
        leaves, keep_leaves = _leaf_pair(cls, rows, child_classes, leaf_jobs, dtype)  # noqa: F841
        flat = [np.ascontiguousarray(link.flat, dtype=np.int64) for link in cls.children]
        src, runs, keep = _Source(_MODE_MERGE, None, 0, _ptr(flat[0]), None, 0, _ptr(flat[1])), None, flat  # noqa: F841
        s_max = max(s, leaves[0].s, leaves[1].s)
        scratch = leaves[0].f ** 2 + leaves[1].f ** 2
    else:
        src, runs, keep = _source(dtype, cls, rows, level, V, fronts, child_classes)  # noqa: F841
    real = _real(dtype)
    work = np.empty(4 * max(s_max, 1) + scratch, dtype=dtype)
    iwork = np.empty(2 * max(s, 1), dtype=real if dtype.kind == "c" else np.float64)
    ipiv = np.empty(max(s, 1), dtype=np.intc)
    piv = np.empty(max(s_max, 1), dtype=np.int64)
    compact_work = np.empty(f * f + s * s + 2 * s * (f - s) if compact else 1, dtype=dtype)
    kept_nodes = np.empty(2 * f if compact else 1, dtype=np.int64)
    fn = getattr(_library(), f"ssi_dense_chunk_{_SUFFIX[dtype]}")

    def at(a, per_box):
        return None if a is None else _ptr(a, a.dtype) + p0 * per_box * a.itemsize

    r = f - s
    status = fn(p1 - p0, f, s, int(cholesky), int(inline), ctypes.byref(src),
                None if runs is None else ctypes.byref(runs), leaves,
                None if V is None else _ptr(V, dtype), 0 if V is None else V.shape[0],
                at(F, f * f), at(factor, s * s), at(x, r * s), at(w, s * r),
                at(perm, s), at(rconds, 1), float(a_norm), ctypes.byref(table),
                _ptr(work), _ptr(iwork), _ptr(ipiv), _ptr(piv), int(compact), _ptr(compact_work), _ptr(kept_nodes))  # fmt: skip
    if status:
        box, part, code = int(status) // 16 - 1, int(status) // 4 % 4, int(status) % 4
        leaf = None if part == 0 else cls.children[part - 1].cls
        raise DenseFailure(p0 + box, code == _BOX_NOT_PD, leaf)


def dense_sweep(op: str, trans: str, cholesky: bool, factor, w, x, front, table, perm=None) -> None:
    """One solve sweep (``op`` 'up' or 'down', ``trans`` 'N' or 'T') over a class's stored
    dense factors, in place on ``front`` (P, s + r, k) C-ordered (see ``ssi_dense_sweep``);
    one column of frontals narrower than ``DENSE_MIN_FRONT`` by inline loops, as they were
    factored.  ``perm`` (P, s) int64: LU's pivoting, applied in the sweep (up 'T' starts
    from ``P^T a``, down 'N' ends with ``P a``); None: the caller applies it."""
    P, s, r = w.shape
    fn = getattr(_library(), f"ssi_dense_sweep_{_SUFFIX[front.dtype]}")
    status = fn(P, s, r, front.shape[2], SWEEPS[op, trans], int(cholesky), _ptr(factor, front.dtype),
                _ptr(w, front.dtype), None if x is None else _ptr(x, front.dtype), _ptr(front, front.dtype),
                None if perm is None else _ptr(perm, np.int64), ctypes.byref(table), _tuning.DENSE_MIN_FRONT)  # fmt: skip
    if status:
        raise MemoryError("no memory for a solve sweep's scratch")


def add_runs(dst, src, first_row: int, runs) -> bool:
    """``dst[:, d:d+l] += src[:, first_row+s : first_row+s+l]`` for every run ``(d, s, l)``
    of ``runs`` (int64, C-ordered), ``dst`` (P, f, k) and ``src`` (P, f', k) C-ordered boxes
    of one dtype; False (nothing done) where the kernel does not apply."""
    if not supports_dtype(np, dst.dtype) or src.dtype != dst.dtype or runs.dtype != np.int64 or not (
        dst.flags.c_contiguous and src.flags.c_contiguous and runs.flags.c_contiguous
    ):
        return False
    fn = getattr(_library(), f"ssi_add_runs_{_SUFFIX[dst.dtype]}")
    P, f, k = dst.shape
    d, c, size = dst.ctypes.data, src.ctypes.data + first_row * k * src.itemsize, src.shape[1] * k * src.itemsize
    _by_boxes(P, f * k, lambda p0, p1: fn(p1 - p0, k, d + p0 * f * k * dst.itemsize, f, c + p0 * size, src.shape[1],
                                          runs.ctypes.data, runs.shape[0]))  # fmt: skip
    return True


def _by_boxes(P: int, entries_per_box: int, call) -> None:
    """``call(p0, p1)`` for boxes ``[0, P)``: in one range per engine thread when the class
    moves enough data for threads to pay (the solve's moves are memory-bound; one core does
    not saturate the memory), else at once.  Every box writes only its own rows."""
    run, n = parallel_map()
    if P < 2 or P * entries_per_box < _tuning.SWEEP_PARALLEL_MIN_ENTRIES:
        n = 1
    cuts = [P * i // n for i in range(n + 1)]
    _each(run, lambda i: call(cuts[i], cuts[i + 1]), range(n))


def _moves(front, *arrays, index=()):
    # the solve's row moves apply to C-ordered arrays of one supported dtype, int64 indices
    return (supports_dtype(np, front.dtype) and front.flags.c_contiguous
            and all(a.dtype == front.dtype and a.flags.c_contiguous for a in arrays)
            and all(i.dtype == np.int64 and i.flags.c_contiguous for i in index))  # fmt: skip


def gather_nodes(front, b, nodes) -> bool:
    """``front[:, :s] = b[nodes]``, ``front[:, s:] = 0`` (``front`` (P, f, k), ``b`` (n, k),
    ``nodes`` (P, s)); False (nothing done) where the kernel does not apply."""
    return _node_move("gather_nodes", front, b, nodes)


def scatter_nodes(x, front, nodes) -> bool:
    """``x[nodes] = front[:, :s]`` (see :func:`gather_nodes`); False where it does not apply."""
    return _node_move("scatter_nodes", front, x, nodes)


def _node_move(name, front, by_node, nodes) -> bool:
    if not _moves(front, by_node, index=(nodes,)) or by_node.shape[1] != front.shape[2]:
        return False
    fn = getattr(_library(), f"ssi_{name}_{_SUFFIX[front.dtype]}")
    P, f, k = front.shape
    s = nodes.shape[1]
    gather = name == "gather_nodes"
    at_front, at_nodes, x = front.ctypes.data, nodes.ctypes.data, by_node.ctypes.data

    def boxes(p0, p1):
        mine = at_front + p0 * f * k * front.itemsize
        fn(p1 - p0, s, f, k, at_nodes + p0 * s * 8, x if gather else mine, mine if gather else x)

    _by_boxes(P, f * k, boxes)
    return True


def gather_boundary(child, first: int, parent, pos, carried) -> bool:
    """``child[:, first:first + r] = parent[:, pos]`` (zero where ``carried`` is False;
    ``child`` (P, f_c, k) and ``parent`` (P, f_p, k) boxes in the same order); False where
    the kernel does not apply."""
    if not _moves(child, parent, index=(pos,)) or (carried is not None and carried.dtype != np.bool_):
        return False
    fn = getattr(_library(), f"ssi_gather_boundary_{_SUFFIX[child.dtype]}")
    P, f_c, k = child.shape
    carried = None if carried is None else np.ascontiguousarray(carried)
    keep = None if carried is None else carried.ctypes.data
    f_p, at_parent, at_child = parent.shape[1], parent.ctypes.data, child.ctypes.data
    _by_boxes(P, f_c * k, lambda p0, p1: fn(p1 - p0, pos.shape[0], k, at_parent + p0 * f_p * k * parent.itemsize, f_p,
                                            pos.ctypes.data, keep, at_child + p0 * f_c * k * child.itemsize, f_c, first))  # fmt: skip
    return True


def column_absmax(a, weights=None):
    """``max_i |a[i, j]| * weights[i]`` for every column ``j`` of ``a`` (n, k) in one pass
    (float64, NaN where a term is NaN), or None where the kernel does not apply."""
    if not supports_dtype(np, a.dtype) or a.ndim != 2 or not a.flags.c_contiguous:
        return None
    if weights is not None:
        weights = np.ascontiguousarray(np.reshape(weights, -1), dtype=_real(a.dtype))
        if weights.shape[0] != a.shape[0]:
            return None
    fn = getattr(_library(), f"ssi_column_absmax_{_SUFFIX[a.dtype]}")
    n, k = a.shape
    parts = []  # one row range per engine thread (a reduction: each its own maxima)

    def rows(p0, p1):
        out = np.empty(k, dtype=np.float64)
        w = None if weights is None else weights.ctypes.data + p0 * weights.itemsize
        fn(p1 - p0, k, a.ctypes.data + p0 * k * a.itemsize, w, out.ctypes.data)
        parts.append(out)  # (list.append is atomic)

    _by_boxes(n, k, rows)
    # NaN wherever a part has one (np.fmax would drop it)
    return parts[0] if len(parts) == 1 else np.maximum.reduce(parts)


def mirror_upper(D) -> bool:
    """``D[i, j] = conj(D[j, i])`` for i > j in place, for a square block of a C-ordered array
    (rows contiguous).  Returns False (nothing done) where the kernel is not available."""
    if not supports_dtype(np, D.dtype) or D.strides[1] != D.itemsize:
        return False
    fn = getattr(_library(), f"ssi_mirror_upper_{_SUFFIX[D.dtype]}")
    fn(D.shape[0], D.strides[0] // D.itemsize, D.ctypes.data)
    return True


class _RunsSource(ctypes.Structure):
    # struct runs_source in _csrc/frontal.c: the same fields in the same order
    _fields_ = [("c", _p * 2), ("f", _i64 * 2), ("s", _i64 * 2), ("rowmap", _p * 2), ("runs", _p * 2),
                ("n_runs", _i64 * 2)]  # fmt: skip


def _children_by_runs(cls, fronts, child_classes, f):
    """Per child link: ``(child frontals, first child row, child's n_elim, rowmap, runs)`` for
    ``ssi_assemble_runs`` (``rowmap[i]``: the child boundary index feeding row ``i``, or -1);
    a lone child is paired with one that feeds no row."""
    per_child = []
    for link in cls.children:
        rowmap = np.full(f, -1, dtype=np.int64)
        runs = np.ascontiguousarray(link.runs, dtype=np.int64)
        for dst, src, length in runs.tolist():
            rowmap[dst : dst + length] = np.arange(src, src + length)
        per_child.append((fronts[link.cls], link.rows.start, child_classes[link.cls].n_elim, rowmap, runs))
    if len(per_child) == 1:
        child, start, s, _, _ = per_child[0]
        per_child.append((child, start, s, np.full(f, -1, dtype=np.int64), np.zeros((0, 3), dtype=np.int64)))
    return per_child


def assemble_runs(F, cls, fronts, child_classes, rows: slice, parallel_map=map, n_parts=1) -> None:
    """Assemble the large merge frontals ``F`` (boxes ``rows`` of ``cls``) from the children's
    Schur blocks by the plan's runs, each row of ``F`` written once.

    The work is cut into ``n_parts`` parts (box ranges, or row ranges of a single box) that
    ``parallel_map(fn, parts)`` runs, on the engine's threads when it is their ``map``
    (ctypes releases the GIL, so they run in parallel).
    """
    P, f = F.shape[0], F.shape[1]
    fn = getattr(_library(), f"ssi_assemble_runs_{_SUFFIX[F.dtype]}")
    per_child = _children_by_runs(cls, fronts, child_classes, f)

    def part(bounds):
        (p0, p1), (i0, i1) = bounds
        args = []
        for child, start, s, rowmap, runs in per_child:
            ptr = _ptr(child, F.dtype) + (start + rows.start + p0) * child.strides[0]
            args += [ptr, child.shape[1], s, _ptr(rowmap), _ptr(runs), runs.shape[0]]
        fn(p1 - p0, f, i0, i1, _ptr(F) + p0 * F.strides[0], *args)

    if P >= n_parts:
        cuts = np.linspace(0, P, n_parts + 1).astype(int).tolist()
        parts = [((a, b), (0, f)) for a, b in zip(cuts[:-1], cuts[1:])]
    else:
        cuts = np.linspace(0, f, n_parts + 1).astype(int).tolist()
        parts = [((0, P), (a, b)) for a, b in zip(cuts[:-1], cuts[1:])]
    list(parallel_map(part, parts))


def _csr_parts(A):
    """``(suffix, n, indptr, indices, data)`` of a CSR/CSC matrix the stencil pass reads as it
    is, or None (other formats, index or value types: the NumPy path)."""
    if not available() or getattr(A, "format", None) not in ("csr", "csc"):
        return None
    index, value = _INDEX.get(A.indices.dtype), _SUFFIX.get(A.data.dtype)
    if index is None or value is None or A.indptr.dtype != A.indices.dtype:
        return None
    arrays = [np.ascontiguousarray(a) for a in (A.indptr, A.indices, A.data)]
    return f"{index}_{value}", A.shape[0], *arrays


def reads(A) -> bool:
    """Whether the native stencil pass reads ``A`` as it is (CSR/CSC, int32/int64 indices,
    the four value dtypes)."""
    return _csr_parts(A) is not None


def grid_reach(A):
    """``(reach, line)``: the largest ``|j - i|`` over the nonzero entries of ``A`` and the
    row (CSR) or column (CSC) holding it, in one pass; None where the native pass does not
    read this matrix."""
    parts = _csr_parts(A)
    if parts is None:
        return None
    suffix, n, indptr, indices, data = parts
    line = ctypes.c_int64(0)
    fn = getattr(_library(), f"ssi_reach_{suffix}")
    reach = fn(n, indptr.ctypes.data, indices.ctypes.data, data.ctypes.data, ctypes.byref(line))
    return int(reach), int(line.value)


def grid_stencil_pass(A, width: int, nodes=None, n_nodes=None, components: int = 1, cells: int = 0,
                      out=None, parallel_map=map, n_parts=1):
    """``(V, wide)`` of ``A`` on a row-major grid of ``width`` pixels with ``components``
    nodes each and a 3x3 stencil (``V`` of shape (nodes * components, 9) in the matrix's
    precision, see :mod:`ssi_sparse._structure.stencil`), or None when a nonzero entry is
    not a 3x3 neighbour there (or the pass cannot read ``A``).

    ``nodes`` (int64, one per unknown) places the unknowns on the ``n_nodes`` nodes (a
    masked grid, another numbering of the components, 2x2 cells); None when they are not
    distinct nodes.  Without it unknown ``i`` is node ``i``.  ``cells`` > 0: the pixels are
    the 2x2 cells of a 5x5 stencil's grid with ``cells`` unknowns per pixel of that grid
    (``components = 4 * cells`` nodes each), whose couplings must stay within 2 pixels there.  ``wide``: some coupling is diagonal (3x3: a 9-point stencil) or
    outside the 13-point star (cells: a 25-point stencil).  ``out``: a C-contiguous array of
    ``V``'s shape to fill (a batch's share of its stencil rows), used when its dtype is the
    pass's accumulator (float64 or complex128) and returned as ``V``.  A large matrix's lines
    are cut into ``n_parts`` ranges of as many entries, run by ``parallel_map`` (the engine's
    threads), after one check of the embedding.
    """
    parts = _csr_parts(A)
    if parts is None:
        return None
    suffix, n, indptr, indices, data = parts
    acc = np.complex128 if np.iscomplexobj(data) else np.float64
    wide = ctypes.c_int32(0)
    csc = int(A.format == "csc")
    ptrs = (indptr.ctypes.data, indices.ctypes.data, data.ctypes.data)
    seen = None
    if nodes is None:
        n_nodes = n
    else:
        nodes = np.ascontiguousarray(nodes, dtype=np.int64)
        if nodes.shape != (n,):
            return None
        seen = np.zeros(n_nodes, dtype=np.uint8)
    shape = (n_nodes * components, 9)
    direct = out is not None and out.shape == shape and out.dtype == acc and out.flags.c_contiguous
    V = out if direct else pages.empty(shape, acc)
    fn = getattr(_library(), f"ssi_stencil_{suffix}")
    layout = (None if nodes is None else nodes.ctypes.data, int(n_nodes), int(width), int(components), int(cells), csc)
    if seen is not None and fn(n, *ptrs, *layout, 0, 0, V.ctypes.data, seen.ctypes.data, ctypes.byref(wide)):
        return None  # the nodes are not distinct nodes of the grid (checked alone: no line read)
    parts = _cuts(indptr, n_parts)
    # V zeroed by writes, each thread its share: the pass's first access to an entry is a
    # read, and on fresh pages a read maps the zero page and the write then faults again
    # (two threads faulting so were slower than one)
    bounds = np.linspace(0, V.nbytes, len(parts) + 1).astype(np.int64).tolist()
    _each(parallel_map, lambda at: ctypes.memset(V.ctypes.data + at[0], 0, at[1] - at[0]), list(zip(bounds[:-1], bounds[1:])))

    def lines(bounds):
        flag = ctypes.c_int32(0)
        return fn(n, *ptrs, *layout, *bounds, V.ctypes.data, None, ctypes.byref(flag)), flag.value

    results = _each(parallel_map, lines, parts)
    if any(status == -2 for status, _ in results):
        raise ValueError("sparse matrix has an index out of range")
    if any(status != 0 for status, _ in results):
        return None
    wide = any(flag for _, flag in results)
    return V.astype(np.result_type(data.dtype, np.float32), copy=False), wide


def _cuts(indptr, n_parts: int):
    """Line ranges ``[(o0, o1), ...]`` of about equal entries: ``n_parts`` of them where the
    matrix is large enough for threads to pay, else one."""
    n, nnz = len(indptr) - 1, int(indptr[-1])
    if n_parts < 2 or nnz < _tuning.PASS_PARALLEL_MIN_ENTRIES:
        return [(0, n)]
    cuts = np.searchsorted(indptr, np.linspace(0, nnz, n_parts + 1)).tolist()
    cuts[0], cuts[-1] = 0, n
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def _each(parallel_map, fn, parts) -> list:
    """``[fn(part) for part in parts]``, by ``parallel_map`` when there are several."""
    return list(parallel_map(fn, parts) if len(parts) > 1 else map(fn, parts))


def _row_parts(h: int, entries: int, n_parts: int):
    """Grid row ranges for a whole-grid pass over ``entries`` stencil entries."""
    if n_parts < 2 or entries < _tuning.PASS_PARALLEL_MIN_ENTRIES or h < 2:
        return [(0, h)]
    cuts = np.linspace(0, h, min(n_parts, h) + 1).astype(int).tolist()
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def mask_runs_and_edges(A, max_degree: int):
    """The runs of coupled consecutive unknowns and the run pairs the other couplings join,
    from ``A``'s pattern (see :mod:`ssi_sparse._structure.mask`): ``(run_of, offset, n_runs, keys, low, high)``,
    ``keys`` sorted; None when the pattern is not a raster-numbered masked grid's; and
    NotImplemented where this pass does not decide (the NumPy path then does)."""
    parts = _csr_parts(A)
    if parts is None:
        return NotImplemented
    suffix, n, indptr, indices, data = parts
    ptrs = (indptr.ctypes.data, indices.ctypes.data, data.ctypes.data)
    linked, degree = np.zeros(n, dtype=np.uint8), np.zeros(n, dtype=np.int32)
    run_of, offset = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    n_runs = getattr(_library(), f"ssi_mask_runs_{suffix}")(
        n, *ptrs, int(max_degree), linked.ctypes.data, degree.ctypes.data, run_of.ctypes.data, offset.ctypes.data)
    if n_runs == -2:
        raise ValueError("sparse matrix has an index out of range")
    if n_runs < 0:
        return None
    cap = 1 << (8 * n_runs + 64).bit_length()  # room for 4 pairs per run at half load
    key = np.full(cap, -1, dtype=np.int64)
    low, high = np.empty(cap, dtype=np.int64), np.empty(cap, dtype=np.int64)
    count = getattr(_library(), f"ssi_mask_edges_{suffix}")(
        n, *ptrs, run_of.ctypes.data, offset.ctypes.data, n_runs, cap, key.ctypes.data, low.ctypes.data,
        high.ctypes.data)  # fmt: skip
    if count == -1:
        return None
    if count < 0:
        return NotImplemented
    used = np.flatnonzero(key >= 0)
    used = used[np.argsort(key[used])]
    return run_of, offset, int(n_runs), key[used], low[used], high[used]


# Whole-grid passes over a stencil array V of an (h, w, k) grid (see ._stencil), for NumPy
# arrays of the four dtypes: one C pass each instead of NumPy's shifted temporaries.

def _real(dtype) -> np.dtype:
    return np.empty(0, dtype).real.dtype


def _stencil_fn(name, V):
    if not supports_dtype(np, V.dtype) or not V.flags.c_contiguous:
        return None
    return getattr(_library(), f"ssi_{name}_{_SUFFIX[np.dtype(V.dtype)]}")


def node_reduce(V, dims, mode: str, parallel_map=map, n_parts=1):
    """Per node, ``max |A_ij|`` (``mode='max'``) or ``sum |A_ij|`` (``'sum'``) over its row;
    None where the native pass does not apply.  (``parallel_map``, ``n_parts``: as for
    :func:`stencil_matvec`, here and in the passes below.)"""
    fn = _stencil_fn("node_reduce", V)
    if fn is None:
        return None
    h, w, k = dims
    out = np.empty(h * w * k, dtype=_real(V.dtype))
    run = k * 9

    def rows(bounds):
        (r0, r1), nodes = bounds, w * k
        fn((r1 - r0) * nodes, run, V.ctypes.data + r0 * nodes * run * V.itemsize,
           out.ctypes.data + r0 * nodes * out.itemsize, 1 if mode == "sum" else 0)  # fmt: skip

    _each(parallel_map, rows, _row_parts(h, V.size, n_parts))
    return out


def scale_stencil(V, s, dims, parallel_map=map, n_parts=1):
    """``diag(s) A diag(s)`` as a new stencil array, or None where the pass does not apply."""
    fn = _stencil_fn("scale", V)
    if fn is None or s.dtype != _real(V.dtype) or not s.flags.c_contiguous:
        return None
    out = pages.empty(V.shape, V.dtype)
    _each(parallel_map, lambda rows: fn(*dims, *rows, V.ctypes.data, s.ctypes.data, out.ctypes.data),
          _row_parts(dims[0], V.size, n_parts))  # fmt: skip
    return out


def stencil_is_hermitian(V, dims, parallel_map=map, n_parts=1):
    """Exact Hermitian test of the stencil array, or None where the pass does not apply."""
    fn = _stencil_fn("hermitian", V)
    if fn is None:
        return None
    return all(_each(parallel_map, lambda rows: bool(fn(*dims, *rows, V.ctypes.data)), _row_parts(dims[0], V.size, n_parts)))


def stencil_matvec(V, dims, x, parallel_map=map, n_parts=1):
    """``A @ x`` for ``x`` (n, m) of ``V``'s dtype, or None where the pass does not apply;
    the grid's rows cut into ``n_parts`` ranges run by ``parallel_map`` (the engine's threads:
    ctypes releases the GIL)."""
    fn = _stencil_fn("matvec", V)
    if fn is None or x.dtype != V.dtype or x.ndim != 2:
        return None
    x = np.ascontiguousarray(x)
    out = pages.empty(x.shape, x.dtype)
    h = dims[0]
    cuts = np.linspace(0, h, max(1, min(n_parts, h)) + 1).astype(int).tolist()

    def rows(bounds):
        fn(*dims, x.shape[1], *bounds, V.ctypes.data, x.ctypes.data, out.ctypes.data)

    list(parallel_map(rows, list(zip(cuts[:-1], cuts[1:]))))
    return out
