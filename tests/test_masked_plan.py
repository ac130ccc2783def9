"""Masked plans: the top levels carry only the unknowns, and solve exactly what the full
grid's plan solves.

The masked plan (:mod:`ssi_sparse._planning.masked_plan`) drops decoupled (absent) nodes from the
wide frontals at the top of the tree and whole boxes with no unknown in their region.  Every
answer must equal the full plan's: solutions (all ``trans``), ``slogdet``, selected
inverse entries, conditioning refusals; and the plan's own invariants must hold.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import ssi_sparse
from ssi_sparse._api import factor as _factor
from ssi_sparse._planning.masked_plan import masked_plan_for
from ssi_sparse._planning.plan import build_plan, stored_entries_of_sizes
from ssi_sparse.problems import ring_mask
from helpers import stencil_matrix
from test_mask import KIND_DTYPE, masked_matrix, masks


def _full_plan_factor(A, mask, **hints):
    """The same system factored on the full grid's plan (absent pixels carried everywhere)."""
    from unittest import mock

    with mock.patch.object(_factor, "masked_plan_for", lambda plan, present: plan):
        return ssi_sparse.factorize(A, mask=mask, **hints)


def _islands(H, W, rng):
    """Small separate components scattered over the grid: many boxes have unknowns inside
    them but none on their separators or sides (the plan's decoupled-pivot case)."""
    mask = np.zeros((H, W), dtype=bool)
    for _ in range(rng.integers(1, 12)):
        r, c = rng.integers(0, H), rng.integers(0, W)
        mask[r : r + rng.integers(1, 3), c : c + rng.integers(1, 3)] = True
    return mask


def _check_invariants(plan, present):
    order = plan.order
    assert len(np.unique(order)) == len(order)
    assert present[plan.dropped].sum() == 0  # only absent nodes are dropped
    assert np.isin(np.flatnonzero(present), order).all()  # every unknown eliminated once
    assert np.array_equal(plan.inverse_order[order], np.arange(len(order)))
    assert (plan.inverse_order[plan.dropped] == len(order)).all()


@settings(max_examples=40, deadline=None)
@given(mask=st.one_of(masks(max_side=40), st.builds(lambda h, w, s: _islands(h, w, np.random.default_rng(s)),
                                                     st.integers(8, 48), st.integers(8, 48), st.integers(0, 2**31))),
       case=KIND_DTYPE, k=st.sampled_from([1, 3]), seed=st.integers(0, 2**31 - 1))
def test_masked_plan_answers_as_the_full_plan(mask, case, k, seed):
    kind, dtype = case
    rng = np.random.default_rng(seed)
    A, _ = masked_matrix(mask, rng, kind, dtype)
    F = ssi_sparse.factorize(A, mask=mask)
    G = _full_plan_factor(A, mask)
    plan = F._numeric.plan
    if plan.dropped is not None:
        _check_invariants(plan, np.isin(np.arange(plan.n), F.grid.nodes))
    tol = 1e-3 if np.dtype(dtype).itemsize // (2 if np.dtype(dtype).kind == "c" else 1) == 4 else 1e-10
    b = rng.standard_normal((A.shape[0], k)).astype(dtype)
    for trans in ("N", "T", "H"):
        x, y = F.solve(b, trans), G.solve(b, trans)
        assert np.linalg.norm(x - y) <= tol * max(np.linalg.norm(y), 1e-30)
    (s1, l1), (s2, l2) = F.slogdet(), G.slogdet()
    assert np.isclose(l1, l2, rtol=tol, atol=tol) and np.isclose(s1, s2, rtol=tol, atol=tol)
    coo = sp.coo_array(A)
    np.testing.assert_allclose(F.inverse_entries(coo.row, coo.col), G.inverse_entries(coo.row, coo.col),
                               rtol=tol ** 0.5, atol=tol * float(np.abs(G.inverse_entries(coo.row, coo.row)).max()))


def test_masked_plan_drops_the_top_levels_absent_pixels():
    """A ring covering a quarter of 512 x 512: the top frontals shrink to the ring's
    crossings, and the factor with them."""
    mask = ring_mask(512, 512, fill=0.25)
    full = build_plan(512, 512, 5, 1, 1)
    plan = masked_plan_for(full, mask.ravel())
    _check_invariants(plan, mask.ravel())
    top = [max(c.n_front for c in level.classes) for level in plan.levels]
    top_full = [max(c.n_front for c in level.classes) for level in full.levels]
    assert top[-1] < top_full[-1] / 3 and top[-3] < top_full[-3] / 3
    assert plan.flops() < 0.3 * full.flops()
    stored = [stored_entries_of_sizes(p.sizes(), True) for p in (plan, full)]
    assert stored[0] < 0.75 * stored[1]
    # the low levels lose the subtrees with no unknown (the hole, the corners)
    leaves = [sum(c.n_boxes for c in p.levels[0].classes) for p in (plan, full)]
    assert leaves[0] <= 0.55 * leaves[1]
    kept = np.concatenate([c.eliminated.ravel() for level in plan.levels[:2] for c in level.classes])
    assert mask.ravel()[kept].any() and np.isin(np.flatnonzero(mask), plan.order).all()
    assert masked_plan_for(full, mask.ravel()) is plan  # cached per mask


def test_full_masks_and_batches_keep_the_full_plan():
    full = build_plan(64, 64, 5, 1, 1)
    assert masked_plan_for(full, np.ones(64 * 64, dtype=bool)) is full
    batch = build_plan(64, 64, 5, 1, 2)
    present = np.ones(batch.n, dtype=bool)
    present[:10] = False
    assert masked_plan_for(batch, present) is batch


def test_masked_plan_pickles_as_its_key():
    import pickle

    mask = ring_mask(96, 80, fill=0.3)
    plan = masked_plan_for(build_plan(96, 80, 5, 1, 1), mask.ravel())
    assert plan.dropped is not None
    assert pickle.loads(pickle.dumps(plan)) is plan  # rebuilt from the cache in-process


def test_singular_masked_system_still_refused():
    """A zero row among the unknowns is refused as before (the plan changes nothing there)."""
    mask = ring_mask(60, 60, fill=0.4)
    A, _ = masked_matrix(mask, np.random.default_rng(4), "spd", np.float64)
    A = sp.lil_array(A)
    A[5, :] = 0
    A[:, 5] = 0
    with pytest.raises(ssi_sparse.SingularMatrixError):
        ssi_sparse.factorize(sp.csr_array(A), mask=mask).solve(np.ones(A.shape[0]))


@pytest.mark.parametrize("k, hermitian", [(2, True), (3, False)])
def test_masked_block_stencils_answer_as_the_full_plan(k, hermitian):
    """Several unknowns per pixel: the plan's nodes are pixel * k + component."""
    from ssi_sparse.problems import block_stencil_random

    rng = np.random.default_rng(k)
    H, W = 37, 29
    mask = ring_mask(H, W, fill=0.45)
    full = block_stencil_random(H, W, k, seed=k, hermitian=hermitian)
    keep = (np.flatnonzero(mask)[:, None] * k + np.arange(k)).ravel()
    A = sp.csr_array(full[keep][:, keep])
    F, G = ssi_sparse.factorize(A, mask=mask, components=k), _full_plan_factor(A, mask, components=k)
    assert F._numeric.plan.dropped is not None
    b = rng.standard_normal((A.shape[0], 2))
    for trans in ("N", "T"):
        np.testing.assert_allclose(F.solve(b, trans), G.solve(b, trans), rtol=1e-10, atol=1e-12)
    assert F.slogdet()[1] == pytest.approx(np.linalg.slogdet(A.toarray())[1], rel=1e-10)


def test_boxes_with_one_child_left_are_assembled_natively():
    """A compacted box whose other child holds no unknown keeps one child link; the native
    kernel gathers it (by runs) like a two-child merge, and answers as the full plan."""
    from ssi_sparse._engine import native

    if not native.available():
        pytest.skip("native kernel not built")
    mask = ring_mask(200, 180, fill=0.25)
    plan = masked_plan_for(build_plan(200, 180, 5, 1, 1), mask.ravel())
    lone = [(k, c) for k, level in enumerate(plan.levels) for c in level.classes if len(c.children) == 1]
    assert lone and all(native.gathers_dense(np, np.float64, c, k) for k, c in lone)
    A, _ = masked_matrix(mask, np.random.default_rng(1), "spd", np.float64)
    b = np.random.default_rng(2).standard_normal(A.shape[0])
    x = ssi_sparse.factorize(A, mask=mask).solve(b)
    np.testing.assert_allclose(x, _full_plan_factor(A, mask).solve(b), rtol=1e-10, atol=1e-12)


@settings(max_examples=6, deadline=None)
@given(mask=masks(max_side=160).filter(lambda m: m.shape[0] * m.shape[1] > 4000), nine=st.booleans(),
       seed=st.integers(0, 2**31 - 1))
def test_pruned_low_levels_answer_as_the_full_plan(mask, nine, seed):
    """Grids large enough that whole subtrees below the compacted levels are pruned (random
    rectangles with holes: empty corners and gaps of every size)."""
    rng = np.random.default_rng(seed)
    A, _ = masked_matrix(mask, rng, "nonsym", np.float64, nine_point=nine)
    F, G = ssi_sparse.factorize(A, mask=mask), _full_plan_factor(A, mask)
    plan = F._numeric.plan
    if plan.dropped is not None:
        _check_invariants(plan, np.isin(np.arange(plan.n), F.grid.nodes))
    b = rng.standard_normal((A.shape[0], 2))
    for trans in ("N", "T"):
        x, y = F.solve(b, trans), G.solve(b, trans)
        assert np.linalg.norm(x - y) <= 1e-10 * np.linalg.norm(y)
    assert F.slogdet()[1] == pytest.approx(G.slogdet()[1], rel=1e-10)
