"""The engine's large buffers (stencil arrays, frontal arenas, stored factors, solve fronts), on
the pages that cost least to touch for the first time.

NumPy asks for transparent huge pages on every large array.  Where the kernel reports freed
memory to a hypervisor (virtio-balloon free page reporting, as Firecracker and other cloud
VMs enable), it reports exactly the free 2 MiB blocks that huge pages are taken from, and the
host must back each of them again on first touch.  Measured on such a VM (fresh process,
512 MiB written once): huge pages 1.15-1.59 s, 4 KiB pages 0.24-0.29 s; a 1025^2 Laplacian's
first factorization 2.24-2.37 s with NumPy's pages, 1.51-1.53 s with small ones.  There the
large buffers are mapped here with small pages; elsewhere with huge ones, as NumPy's.

Small pages cost more to touch than huge ones on memory the host still backs (a 1025^2
factorization after another: 0.5-0.6 s of system time against 0.2 s), so a freed buffer is
not unmapped at once: it is kept for ``KEEP_FREED_S`` seconds, and a new buffer of its size
(the next factorization on the grid, a ``refactorize`` loop) takes it with its pages already
touched.  Linux and NumPy arrays only; elsewhere this is ``numpy.empty``.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import math
import mmap
import os
import sys
import threading
import time
import weakref

import numpy as np

from .._tuning import KEEP_FREED_S, SMALL_PAGES_MIN_BYTES

#: ``SSI_SPARSE_PAGES=small`` or ``=numpy`` overrides the detection (benchmarks compare both).
_OVERRIDE = "SSI_SPARSE_PAGES"

_REPORTING_FEATURE_BIT = 5  # VIRTIO_BALLOON_F_REPORTING (virtio spec 5.5.3)

_MAPPING_WORKS = sys.platform.startswith("linux") and hasattr(mmap, "MADV_NOHUGEPAGE")
_idle: dict = {}  # bytes -> [(mapping, time freed)]: freed buffers kept for reuse
_lock = threading.RLock()  # re-entrant: a finalizer may run inside a locked section
_timer = None  # the pending _unmap_stale


def empty(shape, dtype) -> np.ndarray:
    """``numpy.empty(shape, dtype)``: a large one on the pages that pay here, reusing a
    mapping of its size freed in the last ``KEEP_FREED_S`` seconds."""
    return _mapped(shape, dtype, zero=False)


def zeros(shape, dtype) -> np.ndarray:
    """``numpy.zeros(shape, dtype)``, likewise (a fresh mapping reads as zeros already)."""
    return _mapped(shape, dtype, zero=True)


def first_touch(array) -> bool:
    """Whether ``array`` (or the buffer it views) is fresh memory, never written (a reused
    buffer's pages are in place already; arrays not mapped here count as fresh)."""
    base = array
    while base is not None and not isinstance(base, ctypes.Array):
        base = getattr(base, "base", None)
    return getattr(base, "fresh", True)


def idle_bytes() -> int:
    """Bytes of freed buffers kept for reuse (the memory check counts them as available)."""
    with _lock:
        return sum(nbytes * len(kept) for nbytes, kept in _idle.items())


def _mapped(shape, dtype, zero: bool) -> np.ndarray:
    dtype = np.dtype(dtype)
    shape = tuple(int(d) for d in (shape if isinstance(shape, tuple) else (shape,)))
    count = math.prod(shape)
    nbytes = -(-count * dtype.itemsize // mmap.PAGESIZE) * mmap.PAGESIZE
    if count * dtype.itemsize < SMALL_PAGES_MIN_BYTES or not _MAPPING_WORKS:
        return (np.zeros if zero else np.empty)(shape, dtype=dtype)
    buffer = _take_idle(nbytes)
    fresh = buffer is None
    if fresh:  # an anonymous private mapping (it reads as zeros)
        buffer = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        try:
            buffer.madvise(mmap.MADV_NOHUGEPAGE if small_pages_pay() else mmap.MADV_HUGEPAGE)
        except OSError:  # a kernel without transparent huge pages: its pages are small already
            pass
    # NumPy keeps the buffer's exporter as every view's base: a ctypes array that dies with
    # the last view, when the mapping goes back to the idle list
    holder = (ctypes.c_char * nbytes).from_buffer(buffer)
    holder.fresh = fresh
    weakref.finalize(holder, _give_back, buffer, nbytes).atexit = False
    out = np.frombuffer(holder, dtype=dtype, count=count).reshape(shape)
    if zero and not fresh:
        out.fill(0)
    return out


def _take_idle(nbytes: int):
    with _lock:
        kept = _idle.get(nbytes)
        return kept.pop()[0] if kept else None


def _give_back(buffer, nbytes: int) -> None:
    global _timer
    with _lock:
        _idle.setdefault(nbytes, []).append((buffer, time.monotonic()))
        if _timer is None:
            _timer = threading.Timer(KEEP_FREED_S, _unmap_stale)
            _timer.daemon = True
            _timer.start()


def _unmap_stale() -> None:
    """Unmap the buffers idle for ``KEEP_FREED_S``; come back for the rest."""
    global _timer
    with _lock:
        now, later = time.monotonic(), None
        for nbytes in list(_idle):
            fresh = [(b, t) for b, t in _idle[nbytes] if now - t < KEEP_FREED_S]
            for b, t in _idle[nbytes]:
                if now - t >= KEEP_FREED_S:
                    b.close()
            if fresh:
                _idle[nbytes] = fresh
                oldest = min(t for _, t in fresh)
                later = oldest if later is None else min(later, oldest)
            else:
                del _idle[nbytes]
        _timer = None
        if later is not None:
            _timer = threading.Timer(KEEP_FREED_S - (now - later) + 0.01, _unmap_stale)
            _timer.daemon = True
            _timer.start()


def _unmap_all_for_tests() -> None:
    with _lock:
        for kept in _idle.values():
            for buffer, _ in kept:
                buffer.close()
        _idle.clear()


def _forget_in_child() -> None:
    global _timer, _lock
    _lock, _timer = threading.RLock(), None  # the parent's timer thread is not in the child
    _idle.clear()


@functools.lru_cache(maxsize=1)
def small_pages_pay() -> bool:
    """Whether the engine maps its large buffers on small pages (see the module doc)."""
    choice = os.environ.get(_OVERRIDE, "").strip().lower()
    if choice in ("small", "numpy"):
        return choice == "small"
    if not _MAPPING_WORKS:
        return False
    return _huge_pages_enabled() and _free_pages_reported()


def _huge_pages_enabled() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def _free_pages_reported() -> bool:
    for path in glob.glob("/sys/bus/virtio/drivers/virtio_balloon/virtio*/features"):
        try:
            with open(path) as f:
                bits = f.read().strip()
        except OSError:
            continue
        if len(bits) > _REPORTING_FEATURE_BIT and bits[_REPORTING_FEATURE_BIT] == "1":
            return True
    return False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)
