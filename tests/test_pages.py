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
def test_first_touch_tells_fresh_buffers_from_reused_ones():
    a = pages.empty(LARGE, np.float64)
    assert pages.first_touch(a) and pages.first_touch(a[10:].reshape(-1)[::3])
    del a
    b = pages.empty(LARGE, np.float64)
    assert not pages.first_touch(b) and not pages.first_touch(b[1:])
    assert pages.first_touch(np.empty(4))  # not mapped here: counts as fresh


@mapped
def test_reused_arenas_keep_their_pages(monkeypatch):
    """A factorization's frontal arenas hand their unused tails back to the system only when
    they are fresh memory; reused ones (the factorization before left them) keep them, so
    the next factorization does not fault them in again."""
    import scipy.sparse as sp
    from ssi_sparse import factorize
    from ssi_sparse._engine import walks

    released = []
    real = walks._release_tail
    monkeypatch.setattr(walks, "_release_tail", lambda arena, keep: (released.append(keep), real(arena, keep)))
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(300, 300))
    A = sp.csr_array(sp.kronsum(T, T))
    lu = factorize(A)
    assert released  # the first factorization's arenas are fresh: their tails go back
    released.clear()
    lu.refactorize(A)  # the old factor holds its blocks, not the arenas: those are reused
    lu.refactorize(A)
    assert not released
    b = np.ones(A.shape[0])
    assert np.linalg.norm(A @ lu.solve(b) - b) <= 1e-10 * np.linalg.norm(b)


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
