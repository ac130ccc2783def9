"""``patch_scipy``: SciPy's names resolve to ours while applied, and everything is restored.

Includes scikit-image's ``random_walker(mode='bf')`` on a real photo, unchanged, under the
patch (skipped without scikit-image).
"""

import importlib
import sys
import types

import numpy as np
import pytest
import scipy.sparse.linalg as spla
from scipy.sparse.linalg._dsolve import linsolve

import ssi_sparse
from ssi_sparse._api import fallback as _fallback
from ssi_sparse.problems import diffusion_2d

SCIPY_SPSOLVE = linsolve.spsolve
SCIPY_FACTORIZED = linsolve.factorized


def _module_that_imported_by_name(name):
    """A module that did ``from scipy.sparse.linalg import spsolve, factorized`` before."""
    mod = types.ModuleType(name)
    exec("from scipy.sparse.linalg import spsolve, factorized\n"
         "def solve(A, b):\n    return spsolve(A, b)\n", mod.__dict__)
    sys.modules[name] = mod
    return mod


@pytest.fixture
def user_module():
    mod = _module_that_imported_by_name("_ssi_test_user_module")
    yield mod
    del sys.modules[mod.__name__]


def _assert_restored(mod=None):
    assert spla.spsolve is SCIPY_SPSOLVE and spla.factorized is SCIPY_FACTORIZED
    assert not ssi_sparse.patch_scipy.active()
    if mod is not None:
        assert mod.spsolve is SCIPY_SPSOLVE and mod.factorized is SCIPY_FACTORIZED


@pytest.fixture
def engine_calls(monkeypatch):
    """The grids our engine factorized (a spy on the front end's engine entry)."""
    from ssi_sparse._api import frontend as _frontend

    seen = []
    real = _frontend._engine_factor

    def spy(A, *args, **kwargs):
        factor, fell_back = real(A, *args, **kwargs)
        seen.append(None if factor is None else factor.grid)
        return factor, fell_back

    monkeypatch.setattr(_frontend, "_engine_factor", spy)
    return seen


def test_context_manager_reaches_modules_that_imported_by_name(user_module, engine_calls):
    A, b = diffusion_2d(80, 80), np.ones(6400)  # above ENGINE_MIN_SIZE
    with ssi_sparse.patch_scipy() as patch:
        assert ssi_sparse.patch_scipy.active()
        assert spla.spsolve is ssi_sparse.spsolve
        assert spla.factorized is ssi_sparse.factorized
        assert user_module.spsolve is ssi_sparse.spsolve
        assert "applied" in repr(patch)
        x = user_module.solve(A, b)
        np.testing.assert_allclose(A @ x, b, atol=1e-10)
    assert engine_calls and engine_calls[0].shape == (80, 80)
    _assert_restored(user_module)
    assert "undone" in repr(patch)


def test_plain_call_and_undo(user_module):
    patch = ssi_sparse.patch_scipy()
    assert user_module.factorized is ssi_sparse.factorized
    patch.undo()
    _assert_restored(user_module)
    patch.undo()  # idempotent
    _assert_restored(user_module)


def test_nested_patches_restore_at_the_last_undo(user_module):
    outer = ssi_sparse.patch_scipy()
    with ssi_sparse.patch_scipy():
        assert spla.spsolve is ssi_sparse.spsolve
    assert spla.spsolve is ssi_sparse.spsolve  # the outer patch is still open
    outer.undo()
    _assert_restored(user_module)


def test_modules_imported_while_patched_are_restored():
    with ssi_sparse.patch_scipy():
        late = _module_that_imported_by_name("_ssi_test_late_module")
        assert late.spsolve is ssi_sparse.spsolve
    try:
        _assert_restored(late)
    finally:
        del sys.modules[late.__name__]


def test_restored_on_error(user_module):
    with pytest.raises(ZeroDivisionError):
        with ssi_sparse.patch_scipy():
            1 / 0
    _assert_restored(user_module)


def test_our_own_fallback_is_not_patched():
    """Non-grid matrices still reach SciPy's functions, not ours again (no recursion)."""
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    A = sp.random_array((300, 300), density=0.05, rng=rng) + 30 * sp.eye_array(300)
    b = rng.standard_normal(300)
    with ssi_sparse.patch_scipy():
        # (globals that are SciPy's function get patched anywhere, this module's included:
        # the defining module keeps it)
        assert _fallback.scipy_spsolve is linsolve.spsolve
        x = spla.spsolve(sp.csc_array(A), b)
    np.testing.assert_array_equal(x, SCIPY_SPSOLVE(sp.csc_array(A), b))


def test_scikit_image_random_walker_labels_unchanged(engine_calls):
    pytest.importorskip("skimage")
    from skimage import data
    from skimage.segmentation import random_walker

    rw_module = importlib.import_module(random_walker.__module__)
    img = data.camera()[::4, ::4].astype(float) / 255  # 128 x 128 real photo
    markers = np.zeros(img.shape, dtype=np.int32)
    markers[img < 0.12] = 1
    markers[img > 0.75] = 2
    expected = random_walker(img, markers, beta=130, mode="bf")
    with ssi_sparse.patch_scipy():
        assert rw_module.spsolve is ssi_sparse.spsolve  # it imported spsolve by name
        got = random_walker(img, markers, beta=130, mode="bf")
        probs = random_walker(img, markers, beta=130, mode="bf", return_full_prob=True)
    np.testing.assert_array_equal(got, expected)
    # the seeded system reached the engine as a masked grid of the image
    assert engine_calls and all(g is not None and g.masked for g in engine_calls)
    assert probs.shape == (2,) + img.shape
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-8)
    _assert_restored()
