"""The engine's threads: how many it may use, and the one pool they run in.

Host threads run box ranges of the small frontals, dense classes side by side and the
whole-grid stencil passes (ctypes releases the GIL in the native calls); BLAS's own threads
run only where the engine's are idle (see :mod:`ssi_sparse._engine.walks`).
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

__all__ = ["num_threads", "pool", "thread_budget"]

_THREAD_BUDGET = None  # set by thread_budget (one process of several on a machine)


def num_threads() -> int:
    """Threads the engine may use: :class:`thread_budget`'s, else ``SSI_SPARSE_NUM_THREADS``,
    else one per CPU."""
    if _THREAD_BUDGET is not None:
        return _THREAD_BUDGET
    env = os.environ.get("SSI_SPARSE_NUM_THREADS")
    return max(1, int(env)) if env else _cpu_count()


@functools.lru_cache(maxsize=1)
def _cpu_count() -> int:
    # asked per class and per sweep: os.cpu_count reads sysfs each time (~10 us)
    return os.cpu_count() or 1


class thread_budget:
    """Context manager: the engine's pool and SciPy's BLAS use at most ``n`` threads inside
    (for one process of several sharing a machine, such as MPI ranks on one node).  An
    explicit ``SSI_SPARSE_NUM_THREADS`` still wins for the engine's pool."""

    def __init__(self, n: int):
        self.n = max(1, int(n))

    def __enter__(self):
        global _THREAD_BUDGET
        from .lapack import blas_thread_count

        self._saved = _THREAD_BUDGET
        if not os.environ.get("SSI_SPARSE_NUM_THREADS"):
            _THREAD_BUDGET = self.n
        self._blas = blas_thread_count(self.n)
        return self

    def __exit__(self, *exc):
        global _THREAD_BUDGET
        from .lapack import blas_thread_count

        _THREAD_BUDGET = self._saved
        if self._blas is not None:
            blas_thread_count(self._blas)
        return False


_POOL = None


def pool(n: int) -> ThreadPoolExecutor:
    """The process's pool of ``n`` workers (rebuilt when ``n`` changes).  Never submit to it
    from one of its own workers: they would wait on each other."""
    global _POOL
    if _POOL is None or _POOL._max_workers != n:
        _POOL = ThreadPoolExecutor(max_workers=n, thread_name_prefix="ssi_sparse")
    return _POOL


def parallel_map():
    """``(map, n)``: the pool's ``map`` and ``n`` workers when the engine may use several
    threads, else the builtin ``map`` and 1."""
    n = num_threads()
    return (pool(n).map, n) if n > 1 else (map, 1)


def _forget_pool():
    # a forked child inherits the pool object but not its threads: work sent to it would
    # wait forever (multiprocessing with "fork" after a factorization in the parent)
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)
