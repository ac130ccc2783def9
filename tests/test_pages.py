"""The engine's large buffers (ssi_sparse._engine.pages): NumPy's semantics, reuse only after the
last view is gone, freed buffers unmapped after a while."""

import gc
import sys
import time

import numpy as np
import pytest

from ssi_sparse._engine import pages
from ssi_sparse._api.factor import available_memory
from ssi_sparse._tuning import SMALL_PAGES_MIN_BYTES

mapped = pytest.mark.skipif(not pages._MAPPING_WORKS, reason="buffers are mapped on Linux only")
LARGE = (SMALL_PAGES_MIN_BYTES // 8 + 1000,)  # float64 entries: above the mapping threshold


@pytest.fixture(autouse=True)
def _no_idle_buffers():
    gc.collect()
    pages._unmap_all_for_tests()
    yield
    gc.collect()
    pages._unmap_all_for_tests()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128, np.int64])
@pytest.mark.parametrize("shape", [(7,), (3, 5), LARGE, (2, LARGE[0] // 2, 1)])
def test_empty_and_zeros_behave_as_numpy(shape, dtype):
    a = pages.empty(shape, dtype)
    z = pages.zeros(shape, dtype)
    for x in (a, z):
        assert x.shape == shape and x.dtype == np.dtype(dtype)
        assert x.flags.c_contiguous and x.flags.writeable and x.flags.aligned
    assert not np.any(z)
    a[...] = 3
    assert np.all(a == 3)


@mapped
def test_a_freed_buffer_is_reused_and_zeros_are_zeroed_again():
    a = pages.empty(LARGE, np.float64)
    a[:] = 7.0
    address = a.ctypes.data
    del a
    assert pages.idle_bytes() >= LARGE[0] * 8
    z = pages.zeros(LARGE, np.float64)
    assert z.ctypes.data == address  # the same mapping, its pages already touched
    assert not np.any(z)
    assert pages.idle_bytes() == 0


@mapped
def test_a_view_keeps_its_buffer_from_reuse():
    a = pages.empty(LARGE, np.float64)
    a[:] = 1.0
    view = a[5:].reshape(-1)[::2]
    del a
    gc.collect()
    assert pages.idle_bytes() == 0  # the view still holds it
    b = pages.empty(LARGE, np.float64)
    assert not np.shares_memory(b, view)
    b[:] = 2.0
    assert np.all(view == 1.0)
    del view
    assert pages.idle_bytes() >= LARGE[0] * 8


@mapped
def test_idle_buffers_are_unmapped_after_a_while(monkeypatch):
    monkeypatch.setattr(pages, "KEEP_FREED_S", 0.05)
    pages.empty(LARGE, np.float64)  # dies at once
    assert pages.idle_bytes() > 0
    deadline = time.monotonic() + 5
    while pages.idle_bytes() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert pages.idle_bytes() == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MemAvailable is Linux's")
def test_the_memory_check_counts_idle_buffers_as_available(monkeypatch):
    monkeypatch.setattr(pages, "idle_bytes", lambda: 1 << 50)
    assert available_memory() >= 1 << 50


@pytest.mark.parametrize("choice, expected", [("small", True), ("numpy", False)])
def test_the_page_choice_can_be_overridden(monkeypatch, choice, expected):
    monkeypatch.setenv("SSI_SPARSE_PAGES", choice)
    pages.small_pages_pay.cache_clear()
    try:
        assert pages.small_pages_pay() is (expected and pages._MAPPING_WORKS)
    finally:
        monkeypatch.delenv("SSI_SPARSE_PAGES")
        pages.small_pages_pay.cache_clear()
