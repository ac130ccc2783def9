"""Backends: which array library runs the engine (NumPy on the CPU, CuPy on a CUDA GPU).

The engine is written against the Python array API (tested under ``array_api_strict``).
CuPy speaks most of it; :class:`CupyNamespace` adds the few names CuPy releases spell
differently, so the engine sees one vocabulary.

Selection: ``backend=`` argument, else the ``SSI_SPARSE_BACKEND`` environment variable
(``cpu`` / ``gpu``), else the GPU for CuPy input, and for NumPy/SciPy input of at least
:data:`GPU_MIN_SIZE` unknowns when CuPy sees a GPU (the transfer is cheap next to the
factorization there), the CPU otherwise.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["Backend", "select_backend", "cupy_available", "is_cupy_array"]


def _cupy():
    try:
        import cupy
    except Exception:  # not installed, or no usable CUDA runtime
        return None
    return cupy


def cupy_available() -> bool:
    """CuPy imports and sees at least one GPU."""
    cp = _cupy()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def is_cupy_array(x) -> bool:
    mod = type(x).__module__
    return mod.startswith("cupy") or mod.startswith("cupyx")


class CupyNamespace:
    """CuPy, with the array-API names the engine uses that some CuPy releases lack."""

    __name__ = "cupy"

    def __init__(self, cupy):
        self._cp = cupy

    def __getattr__(self, name):
        return getattr(self._cp, name)

    def matrix_transpose(self, a):
        return self._cp.swapaxes(a, -1, -2)

    def concat(self, arrays, axis=0):
        return self._cp.concatenate(arrays, axis=axis)

    def permute_dims(self, x, axes):
        return self._cp.transpose(x, axes)

    def astype(self, x, dtype, copy=True):
        return x.astype(dtype, copy=copy)

    def isdtype(self, dtype, kind):
        kinds = {"complex floating": "c", "real floating": "f"}
        return np.dtype(dtype).kind == kinds[kind]

    def asarray(self, x, dtype=None, copy=None):
        if copy:
            return self._cp.array(x, dtype=dtype, copy=True)
        return self._cp.asarray(x, dtype=dtype)


class Backend:
    """An array library plus the host/device moves the factor object needs."""

    def __init__(self, name):
        self.name = name
        if name == "cpu":
            self.xp = np
        else:
            cp = _cupy()
            if cp is None or not cupy_available():
                raise RuntimeError(
                    "backend 'gpu' needs CuPy and a CUDA GPU: pip install 'ssi-sparse[gpu]'"
                )
            self.xp = CupyNamespace(cp)

    def __reduce__(self):
        return Backend, (self.name,)

    @property
    def is_gpu(self) -> bool:
        return self.name == "gpu"

    def to_device(self, a):
        return a if self.xp is np else self.xp.asarray(a)

    def to_host(self, a):
        return a if self.xp is np else self.xp.asnumpy(a)

    def free_memory(self) -> int | None:
        """Bytes free on the device (GPU), or None to use the host check."""
        if self.xp is np:
            return None
        free, _total = self.xp.cuda.runtime.memGetInfo()
        return int(free)

    def synchronize(self):
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()


#: NumPy/SciPy problems this large go to a GPU when one is present (and not forced off).
GPU_MIN_SIZE = 1 << 16


def select_backend(backend=None, *arrays) -> Backend:
    """The backend for these inputs: explicit, then environment, then where the data lives."""
    choice = backend or os.environ.get("SSI_SPARSE_BACKEND") or None
    if choice is None:
        if any(is_cupy_array(a) for a in arrays):
            choice = "gpu"
        else:
            n = max((a.shape[0] for a in arrays if hasattr(a, "shape") and len(a.shape)), default=0)
            choice = "gpu" if n >= GPU_MIN_SIZE and cupy_available() else "cpu"
    choice = {"numpy": "cpu", "cupy": "gpu"}.get(choice, choice)
    if choice not in ("cpu", "gpu"):
        raise ValueError(f"backend must be 'cpu' or 'gpu', got {choice!r}")
    return Backend(choice)
