"""SciPy's own BLAS/LAPACK, called on sub-blocks in place (leading dimensions, no copies).

``scipy.linalg.lapack`` wrappers copy every non-contiguous block they are handed; the engine's
frontals are sub-blocks of one array, so it reaches the routines behind
``scipy.linalg.cython_blas`` / ``cython_lapack`` through their function pointers instead
(ctypes releases the GIL during each call).  Every dense factorization of the engine's large
frontals therefore runs in one BLAS library, SciPy's, with its own thread pool.

All matrices here are column-major, as LAPACK sees them.  A C-ordered NumPy block is the
transpose of what LAPACK sees; the callers (:mod:`ssi_sparse._engine.dense`) work in that transposed view.
"""

from __future__ import annotations

import ctypes
import threading
from functools import lru_cache

import numpy as np

__all__ = ["Lapack", "blas_thread_count", "lapack_for", "single_threaded_blas", "single_threaded_blas_available"]

_PREFIX = {
    np.dtype(np.float32): "s",
    np.dtype(np.float64): "d",
    np.dtype(np.complex64): "c",
    np.dtype(np.complex128): "z",
}

_get_name = ctypes.pythonapi.PyCapsule_GetName
_get_name.restype, _get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
_get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_get_pointer.restype, _get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]

_FN = ctypes.CFUNCTYPE(None)  # every Fortran argument is a pointer: no argtypes needed


def _address(module, name) -> int:
    capsule = module.__pyx_capi__[name]
    return _get_pointer(capsule, _get_name(capsule))


def _routine(module, name, prototype=_FN):
    return ctypes.cast(_address(module, name), prototype)


class BlasTable(ctypes.Structure):
    """The routines' addresses for the native dense kernel (``struct blas_table`` in
    ``_csrc/frontal.c``: the same fields in the same order)."""

    _fields_ = [(name, ctypes.c_void_p)
                for name in ("gemm", "trsm", "rank_k", "getrf", "potrf", "gecon", "pocon", "lange", "laswp", "gemv",
                             "trsv")]


def _char(c: str):
    return ctypes.c_char_p(c.encode())


_CHARS = {c: _char(c) for c in "LURNTCI1"}


def _int(v):
    return ctypes.byref(ctypes.c_int(int(v)))


class Lapack:
    """The handful of routines the dense kernel needs, for one dtype.

    Arguments named ``a``, ``b``, ``c`` are addresses (``int``) of column-major blocks.
    Each method returns LAPACK's ``info`` where the routine has one.
    """

    def __init__(self, dtype):
        import scipy.linalg.cython_blas as blas
        import scipy.linalg.cython_lapack as lapack

        self.dtype = np.dtype(dtype)
        self.complex = self.dtype.kind == "c"
        self.real_dtype = np.dtype(self.dtype.char.lower())
        p = _PREFIX[self.dtype]
        scalar = ctypes.c_float if self.real_dtype == np.float32 else ctypes.c_double
        self._scalar = scalar
        self._fn = {
            name: _routine(blas if name in ("gemm", "trsm", "herk", "syrk") else lapack, p + name)
            for name in ("gemm", "trsm", "getrf", "potrf", "gecon", "pocon", "laswp")
        }
        # lange returns the norm in the real type: its own prototype
        self._lange = _routine(lapack, p + "lange", ctypes.CFUNCTYPE(scalar))
        rk = "herk" if self.complex else "syrk"
        self._fn["rank_k"] = _routine(blas, p + rk)
        self.table = BlasTable(*(
            _address(blas if name in ("gemm", "trsm", "rank_k", "gemv", "trsv") else lapack,
                     p + (rk if name == "rank_k" else name))
            for name, _ in BlasTable._fields_
        ))  # fmt: skip

    def _value(self, v):
        if self.complex:
            return ctypes.byref((self._scalar * 2)(v.real, v.imag))
        return ctypes.byref(self._scalar(v))

    def _real(self, v):
        return ctypes.byref(self._scalar(v))

    @staticmethod
    def _buffer(n, dtype):
        # fresh per call (a few KiB): the object is shared by every thread of the process
        return np.empty(max(n, 1), dtype=dtype)

    def getrf(self, n, a, lda, ipiv) -> int:
        info = ctypes.c_int(0)
        self._fn["getrf"](_int(n), _int(n), ctypes.c_void_p(a), _int(lda), ctypes.c_void_p(ipiv), ctypes.byref(info))
        return info.value

    def norm1(self, m, n, a, lda) -> float:
        """1-norm (largest column sum of moduli) of an m x n block (lange, no copy)."""
        if m == 0 or n == 0:
            return 0.0
        return float(self._lange(_CHARS["1"], _int(m), _int(n), ctypes.c_void_p(a), _int(lda), None))

    def laswp(self, n, a, lda, k, ipiv) -> None:
        """Apply the row interchanges ``ipiv[0:k]`` (getrf's) to the n columns of ``a``."""
        if n == 0 or k == 0:
            return
        self._fn["laswp"](_int(n), ctypes.c_void_p(a), _int(lda), _int(1), _int(k), ctypes.c_void_p(ipiv), _int(1))

    def potrf(self, n, a, lda) -> int:
        info = ctypes.c_int(0)
        self._fn["potrf"](_CHARS["L"], _int(n), ctypes.c_void_p(a), _int(lda), ctypes.byref(info))
        return info.value

    def rcond(self, factor: str, n, a, lda, anorm) -> float:
        """Estimated reciprocal 1-norm condition number from an LU ('LU') or Cholesky ('L')
        factor of a matrix whose 1-norm is ``anorm``."""
        if n == 0:
            return 1.0
        rc = self._scalar(0.0)
        info = ctypes.c_int(0)
        work = self._buffer(4 * n, self.dtype)
        common = [_int(n), ctypes.c_void_p(a), _int(lda), self._real(anorm), ctypes.byref(rc),
                  ctypes.c_void_p(work.ctypes.data)]  # fmt: skip
        # keep the buffers referenced until the call returns
        more = self._buffer(2 * n, self.real_dtype) if self.complex else self._buffer(n, np.intc)
        extra = [ctypes.c_void_p(more.ctypes.data)]
        if factor == "LU":
            self._fn["gecon"](_CHARS["1"], *common, *extra, ctypes.byref(info))
        else:
            self._fn["pocon"](_CHARS["L"], *common, *extra, ctypes.byref(info))
        return float(rc.value)

    def trsm(self, side, uplo, trans, diag, m, n, alpha, a, lda, b, ldb) -> None:
        if m == 0 or n == 0:
            return
        self._fn["trsm"](_CHARS[side], _CHARS[uplo], _CHARS[trans], _char(diag), _int(m), _int(n),
                         self._value(alpha), ctypes.c_void_p(a), _int(lda), ctypes.c_void_p(b), _int(ldb))  # fmt: skip

    def gemm(self, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) -> None:
        if m == 0 or n == 0:
            return
        self._fn["gemm"](_CHARS[ta], _CHARS[tb], _int(m), _int(n), _int(k), self._value(alpha),
                         ctypes.c_void_p(a), _int(max(lda, 1)), ctypes.c_void_p(b), _int(max(ldb, 1)),
                         self._value(beta), ctypes.c_void_p(c), _int(ldc))  # fmt: skip

    def rank_k_lower(self, n, k, alpha, a, lda, beta, c, ldc, trans="C") -> None:
        """``C := alpha op(A) op(A)^H + beta C`` (lower triangle of C only), herk / syrk:
        ``trans='N'``: A is n x k (``A A^H``); ``'C'``: A is k x n (``A^H A``)."""
        if n == 0:
            return
        trans = _CHARS["N"] if trans == "N" else (_CHARS["C"] if self.complex else _CHARS["T"])
        self._fn["rank_k"](_CHARS["L"], trans, _int(n), _int(k), self._real(alpha), ctypes.c_void_p(a),
                           _int(max(lda, 1)), self._real(beta), ctypes.c_void_p(c), _int(ldc))  # fmt: skip


@lru_cache(maxsize=1)
def _thread_count_setter():
    """SciPy's OpenBLAS ``openblas_set_num_threads_local`` (0.3.27+), or None.

    Despite its name it sets the library's global thread count and returns the previous one
    (measured), so :class:`single_threaded_blas` calls it only from the engine's main thread,
    around work that the engine's own threads spread over the cores.
    """
    import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's BLAS)

    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "openblas" in line.rsplit("/", 1)[-1].lower()}
    except OSError:
        return None
    # SciPy's own copy first (NumPy's may be another library with its own pool)
    for path in sorted(paths, key=lambda p: "numpy" in p):
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int]
        return fn
    return None


def single_threaded_blas_available() -> bool:
    return _thread_count_setter() is not None


def blas_thread_count(n: int) -> int | None:
    """Set SciPy's BLAS thread count to ``n``; returns the previous one (None where unknown)."""
    fn = _thread_count_setter()
    return None if fn is None else int(fn(int(n)))


_count_lock = threading.Lock()
_count_users = 0
_count_saved = None


class single_threaded_blas:
    """Context manager: SciPy's BLAS runs single-threaded inside (no-op where unknown).

    Nested and concurrent uses (several factorizations in user threads) share one saved
    value, restored when the last one leaves.
    """

    def __enter__(self):
        global _count_users, _count_saved
        fn = _thread_count_setter()
        if fn is not None:
            with _count_lock:
                if _count_users == 0:
                    _count_saved = fn(1)
                _count_users += 1
        return self

    def __exit__(self, *exc):
        global _count_users
        fn = _thread_count_setter()
        if fn is not None:
            with _count_lock:
                _count_users -= 1
                if _count_users == 0:
                    fn(_count_saved)
        return False


@lru_cache(maxsize=None)
def _lapack_cached(dtype: np.dtype) -> Lapack:
    return Lapack(dtype)


def lapack_for(dtype) -> Lapack:
    """The routines for ``dtype`` (one of the engine's four), bound once per process."""
    return _lapack_cached(np.dtype(dtype))
