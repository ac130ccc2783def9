"""Solve programs (``_engine/program.py``): a factor's recorded sweeps answer bit for bit as the
step by step walk, stay with their factor, and hand their workspace on."""

import pickle

import numpy as np
import pytest

import ssi_sparse
from helpers import rel_residual, stencil_matrix
from ssi_sparse import _tuning
from ssi_sparse._engine import native, walks
from ssi_sparse.problems import ring_mask

pytestmark = pytest.mark.skipif(native._library() is None, reason="native extension not built")


def _step_by_step(monkeypatch):
    monkeypatch.setattr(walks, "program_for", lambda *args: None)


def _matrix(kind, dtype, masked, rng, H=45, W=38):
    A = stencil_matrix(H, W, rng, kind, dtype)
    if not masked:
        return A, {}
    mask = ring_mask(H, W, fill=0.5)
    keep = np.flatnonzero(mask.ravel())
    return A.tocsr()[keep][:, keep], dict(mask=mask)


@pytest.mark.parametrize("kind, dtype, masked", [("spd", np.float64, False), ("spd", np.float32, True),
                                                 ("nonsym", np.float64, False), ("nonsym", np.float32, True),
                                                 ("complex", np.complex128, True), ("spd", np.complex64, False)])
@pytest.mark.parametrize("k", [1, 3])
def test_program_answers_as_the_step_by_step_walk(kind, dtype, masked, k, monkeypatch):
    monkeypatch.setattr(_tuning, "SOLVE_WORKSPACE_MAX_FRACTION", 100.0)  # keep every program (checked below)
    rng = np.random.default_rng(11)
    A, hints = _matrix(kind, dtype, masked, rng)
    F = ssi_sparse.factorize(A, **hints)
    b = rng.standard_normal((A.shape[0], k)).astype(dtype)
    if np.dtype(dtype).kind == "c":
        b = b + 1j * rng.standard_normal(b.shape).astype(dtype)
    recorded = {trans: F.solve(b, trans) for trans in "NTH"}
    assert F._numeric.programs  # the solves ran recorded programs
    _step_by_step(monkeypatch)
    for trans, x in recorded.items():
        np.testing.assert_array_equal(F.solve(b, trans), x)
    tol = 1e-4 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-10
    assert rel_residual(A, recorded["N"], b) < tol


def _kept(F):
    """Every solve program ``F`` keeps."""
    return [p for kept in F._numeric.programs.values() for p in kept]


def _solved(kind, seed):
    """``(A, F, b)``: a factor that has solved ``b`` once (and recorded that solve)."""
    rng = np.random.default_rng(seed)
    A, _ = _matrix(kind, np.float64, False, rng)
    F = ssi_sparse.factorize(A)
    b = rng.standard_normal(A.shape[0])
    F.solve(b)
    return A, F, b


def test_program_is_recorded_once_and_kept_per_shape(monkeypatch):
    A, F, b = _solved("nonsym", 12)
    (first,) = _kept(F)
    F.solve(2 * b)
    assert _kept(F) == [first]  # the same one, again
    wide = np.ones((A.shape[0], 64))  # fronts far larger than a quarter of the factor: not kept
    np.testing.assert_allclose(F.solve(wide)[:, 0], F.solve(wide[:, 0]), rtol=1e-12, atol=1e-12)
    assert all(key[1] != 64 for key in F._numeric.programs)
    # the kept programs' fronts together stay within the budget: the oldest shapes go first
    budget = _tuning.SOLVE_WORKSPACE_MAX_FRACTION * F._numeric.nbytes()
    for k in (1, 2, 3):
        F.solve(np.ones((A.shape[0], k)), "T")
        held = sum(p.nbytes for p in _kept(F))
        assert held <= budget and ("T", k) == next(reversed(F._numeric.programs))[:2]
    assert len(F._numeric.programs) < 4  # the three would not fit together (nor with N's)
    F._numeric.programs.clear()
    monkeypatch.setattr(_tuning, "SOLVE_WORKSPACE_MAX_FRACTION", 100.0)
    monkeypatch.setattr(_tuning, "KEPT_PROGRAMS", 3)
    for k in (1, 2, 3, 4):
        F.solve(np.ones((A.shape[0], k)))
    assert [key[1] for key in F._numeric.programs] == [2, 3, 4]  # at most KEPT_PROGRAMS shapes


def test_refactorize_records_anew_in_the_old_workspace():
    """A program holds its factor's addresses: the new factor records its own, in the fronts
    the old one's program had (no fresh memory), and answers for the new values."""
    A, F, b = _solved("spd", 13)
    (old,) = _kept(F)
    A2 = A.copy()
    A2.setdiag(A2.diagonal() * 1.5)
    F.refactorize(A2)
    assert not F._numeric.programs  # nothing recorded for the new factor yet
    x = F.solve(b)
    (new,) = _kept(F)
    assert new is not old and new.factor() is F._numeric
    assert all(a is c for la, lc in zip(new.fronts, old.fronts) for a, c in zip(la, lc))
    assert rel_residual(A2, x, b) < 1e-10


def test_factor_with_programs_is_freed_without_the_cyclic_collector():
    import gc
    import weakref

    _, F, _ = _solved("spd", 15)
    assert F._numeric.programs
    gc.disable()
    try:
        ref = weakref.ref(F._numeric)
        del F
        assert ref() is None  # freed by reference counting alone
    finally:
        gc.enable()


def test_pickled_factor_drops_programs():
    _, F, b = _solved("spd", 14)
    x = F.solve(b)
    G = pickle.loads(pickle.dumps(F))
    assert not G._numeric.programs
    np.testing.assert_array_equal(G.solve(b), x)


class _HeldPool:
    """An executor whose submitted calls wait until released (a pool busy elsewhere)."""

    def __init__(self):
        self.calls = []

    def submit(self, fn, *args):
        self.calls.append((fn, args))

    def release(self):
        for fn, args in self.calls:
            fn(*args)
        self.calls.clear()


def test_solve_needs_no_helper_and_late_helpers_find_it_over(monkeypatch):
    """The caller drives every stage itself when no helper thread comes (the engine's pool
    busy); helpers that start after the solve return at once, touching nothing."""
    from ssi_sparse._engine import program, threads

    rng = np.random.default_rng(16)
    A, _ = _matrix("nonsym", np.float64, False, rng, H=70, W=64)
    F = ssi_sparse.factorize(A)
    b = rng.standard_normal((A.shape[0], 2))
    monkeypatch.setattr(_tuning, "SWEEP_PARALLEL_MIN_ENTRIES", 0)
    monkeypatch.setattr(threads, "num_threads", lambda: 3)
    expected = F.solve(b)  # recorded for three threads, helpers on the real pool
    assert any(p._helpers == 2 for kept in F._numeric.programs.values() for p in kept)
    held = _HeldPool()
    monkeypatch.setattr(program, "pool", lambda n: held)
    x = F.solve(b)
    assert held.calls  # helpers were asked for, none came
    np.testing.assert_array_equal(x, expected)
    held.release()  # late: each finds its solve over and returns
    np.testing.assert_array_equal(F.solve(b), expected)
    held.release()
