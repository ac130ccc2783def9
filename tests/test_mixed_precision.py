"""Mixed precision: factor in single precision, refine to working (double) accuracy."""

import numpy as np
import pytest
import scipy.sparse as sp

import ssi_sparse
from helpers import stencil_matrix
from ssi_sparse._api import factor as _factor
from ssi_sparse import problems


def _backward_error(A, x, b):
    r = b - A @ x
    return np.abs(r).max() / (abs(A).sum(axis=1).max() * np.abs(x).max() + np.abs(b).max())


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("kind", ["spd", "nonsym"])
def test_single_precision_factor_refines_to_double_accuracy(dtype, kind):
    rng = np.random.default_rng(3)
    A = stencil_matrix(70, 90, rng, kind, np.dtype(dtype))
    lu = ssi_sparse.factorize(A, factor_dtype=np.float32 if dtype == np.float64 else np.complex64)
    assert lu.dtype == dtype and lu.factor_dtype.itemsize == np.dtype(dtype).itemsize // 2
    b = rng.standard_normal((A.shape[0], 2)).astype(dtype)
    for trans, op in [("N", A), ("T", A.T), ("H", A.conj().T)]:
        x = lu.solve(b, trans=trans)
        assert x.dtype == dtype
        assert _backward_error(op, x, b) <= 8 * np.finfo(dtype).eps


def test_refinement_that_stalls_refactors_in_full_precision(monkeypatch):
    # no refinement steps allowed: a single-precision solve alone cannot reach 8 eps of
    # double, so the factor must be recomputed in double and the answer still be accurate
    monkeypatch.setattr(_factor, "MIXED_REFINE_STEPS", 0)
    rng = np.random.default_rng(0)
    A = stencil_matrix(40, 50, rng, "nonsym", np.dtype(np.float64))
    b = rng.standard_normal(A.shape[0])
    lu = ssi_sparse.factorize(A, factor_dtype=np.float32)
    assert lu.factor_dtype == np.float32
    x = lu.solve(b)
    assert lu.factor_dtype == np.float64
    assert _backward_error(A, x, b) <= 8 * np.finfo(np.float64).eps


def test_ill_conditioned_matrix_still_accurate():
    # coefficients spanning 1e10: whatever precision the factor ends in, the answer is exact
    H, W = 8, 400
    rng = np.random.default_rng(0)
    coef = np.exp(rng.uniform(np.log(1e-5), np.log(1e5), (H, W)))
    A = problems.diffusion_2d(H, W, coef)
    b = rng.standard_normal(H * W)
    x = ssi_sparse.factorize(A, factor_dtype=np.float32).solve(b)
    assert _backward_error(A, x, b) <= 8 * np.finfo(np.float64).eps


def test_factor_dtype_must_be_a_lower_precision():
    A = sp.identity(5000, format="csr")
    with pytest.raises(ValueError, match="lower precision"):
        ssi_sparse.factorize(A, grid=(50, 100), factor_dtype=np.complex64)
    lu = ssi_sparse.factorize(A, grid=(50, 100), factor_dtype=np.float64)
    assert lu.factor_dtype == np.float64
