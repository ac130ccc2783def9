"""Property tests: ssi_sparse solves agree with SciPy's spsolve and have tiny residuals.

Random H x W grids (1..40 each, strips and odd sizes included), the kinds of
``helpers.stencil_matrix``, 5- and 9-point stencils, 'C' and 'F' numbering, four dtypes,
vector and matrix right-hand sides, and the three ``trans`` modes.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import example, given
from hypothesis import strategies as st

import ssi_sparse
from helpers import (
    KINDS,
    magnetic_laplacian,
    op,
    random_rhs,
    reference_solve,
    rel_residual,
    stencil_matrix,
)

DTYPES = [np.dtype(c) for c in (np.float32, np.float64, np.complex64, np.complex128)]
#: (kind, dtype) pairs that make sense: 'complex' needs a complex dtype.
CASES = [(k, d) for k in KINDS for d in DTYPES if not (k == "complex" and d.kind != "c")]

#: residual ||op(A) x - b|| / ||b|| allowed for a factor of this precision
RESIDUAL_TOL = {4: 1e-4, 8: 1e-12}  # keyed by the real itemsize of the factor dtype
#: relative distance to SciPy's (double precision) solution, well-conditioned matrices only
AGREE_TOL = {4: 1e-3, 8: 1e-9}


def _precision(dtype):
    dtype = np.dtype(dtype)
    return dtype.itemsize // (2 if dtype.kind == "c" else 1)


def _rel_diff(x, ref):
    x = np.asarray(x).astype(np.complex128)
    return float(np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-300))


def _expected_stencil(H, W, kind, nine_point):
    return "9-point" if (nine_point and kind != "laplacian" and H >= 2 and W >= 2) else "5-point"


sizes = st.integers(min_value=1, max_value=40)
n_rhs = st.one_of(st.none(), st.integers(min_value=1, max_value=4))
seeds = st.integers(min_value=0, max_value=2**32 - 1)
#: A random grid problem: shape, matrix kind and dtype, stencil, numbering, seed.
grid_problems = dict(
    H=sizes,
    W=sizes,
    case=st.sampled_from(CASES),
    nine_point=st.booleans(),
    order=st.sampled_from(["C", "F"]),
    seed=seeds,
)


@given(
    **grid_problems,
    k=n_rhs,
    b_dtype=st.sampled_from(DTYPES),
    trans=st.sampled_from(["N", "T", "H"]),
)
@example(H=1, W=37, case=("nonsym", DTYPES[1]), nine_point=True, order="C", k=None,
         b_dtype=DTYPES[1], trans="N", seed=1)
@example(H=2, W=31, case=("complex", DTYPES[3]), nine_point=True, order="F", k=3,
         b_dtype=DTYPES[3], trans="T", seed=2)
@example(H=37, W=1, case=("spd", DTYPES[3]), nine_point=True, order="C", k=2,
         b_dtype=DTYPES[3], trans="H", seed=3)
@example(H=29, W=2, case=("laplacian", DTYPES[0]), nine_point=False, order="F", k=None,
         b_dtype=DTYPES[0], trans="N", seed=4)
@example(H=1, W=1, case=("nonsym", DTYPES[1]), nine_point=True, order="C", k=1,
         b_dtype=DTYPES[1], trans="T", seed=5)
@example(H=39, W=33, case=("nonsym", DTYPES[2]), nine_point=True, order="F", k=4,
         b_dtype=DTYPES[2], trans="H", seed=6)
def test_solve_matches_spsolve(H, W, case, nine_point, order, k, b_dtype, trans, seed):
    kind, dtype = case
    rng = np.random.default_rng(seed)
    A = stencil_matrix(H, W, rng, kind, dtype, order=order, nine_point=nine_point)
    b = random_rhs(rng, H * W, k, b_dtype)
    b_before = b.copy()

    lu = ssi_sparse.factorize(A, grid=(H, W), order=order)
    assert lu.shape == (H * W, H * W)
    assert lu.dtype == dtype
    assert lu.grid.shape == (H, W)
    assert lu.grid.order == order
    assert lu.grid.stencil == _expected_stencil(H, W, kind, nine_point)

    x = lu.solve(b, trans=trans)
    assert isinstance(x, np.ndarray)
    assert x.shape == b.shape
    assert x.dtype == np.promote_types(dtype, b_dtype)
    assert np.all(np.isfinite(x))
    np.testing.assert_array_equal(b, b_before)  # b is not modified

    prec = _precision(dtype)
    assert rel_residual(op(A, trans), x, b) <= RESIDUAL_TOL[prec]
    ref = reference_solve(A, b, trans)
    assert _rel_diff(x, ref) <= AGREE_TOL[prec]


@given(
    H=sizes,
    W=sizes,
    case=st.sampled_from(CASES),
    nine_point=st.booleans(),
    k=n_rhs,
    trans=st.sampled_from(["N", "T", "H"]),
    seed=seeds,
)
@example(H=1, W=40, case=("laplacian", DTYPES[1]), nine_point=False, k=None, trans="N", seed=0)
@example(H=40, W=1, case=("nonsym", DTYPES[1]), nine_point=True, k=2, trans="T", seed=0)
@example(H=2, W=17, case=("spd", DTYPES[3]), nine_point=True, k=None, trans="H", seed=0)
@example(H=17, W=2, case=("complex", DTYPES[2]), nine_point=True, k=1, trans="N", seed=0)
def test_solve_with_inferred_grid(H, W, case, nine_point, k, trans, seed):
    """Without ``grid`` a row-major matrix is found on its grid (1 x n for strips) and solved."""
    kind, dtype = case
    rng = np.random.default_rng(seed)
    A = stencil_matrix(H, W, rng, kind, dtype, order="C", nine_point=nine_point)
    b = random_rhs(rng, H * W, k, dtype)

    spec = ssi_sparse.detect_grid(A)
    expected_shape = (1, H * W) if (H == 1 or W == 1) else (H, W)
    assert spec is not None
    assert spec.shape == expected_shape
    assert spec.order == "C"
    assert spec.stencil == _expected_stencil(H, W, kind, nine_point)

    lu = ssi_sparse.factorize(A)
    assert lu.grid == spec
    x = lu.solve(b, trans=trans)
    assert x.shape == b.shape and x.dtype == dtype
    prec = _precision(dtype)
    assert rel_residual(op(A, trans), x, b) <= RESIDUAL_TOL[prec]
    assert _rel_diff(x, reference_solve(A, b, trans)) <= AGREE_TOL[prec]


@given(**grid_problems)
def test_factor_reuse_is_deterministic_and_transposes_agree(H, W, case, nine_point, order, seed):
    """One factor serves N, T and H solves in any sequence; repeated solves are bit-identical,
    and T / H solves match spsolve on A.T / A.conj().T."""
    kind, dtype = case
    rng = np.random.default_rng(seed)
    A = stencil_matrix(H, W, rng, kind, dtype, order=order, nine_point=nine_point)
    b = random_rhs(rng, H * W, 2, dtype)
    lu = ssi_sparse.factorize(A, grid=(H, W), order=order)
    prec = _precision(dtype)

    first = {t: lu.solve(b, trans=t) for t in ("T", "N", "H")}
    for t in ("H", "N", "T", "N"):
        np.testing.assert_array_equal(lu.solve(b, trans=t), first[t])
    # column j of a matrix solve equals the vector solve of column j
    for t in ("N", "T", "H"):
        np.testing.assert_allclose(
            lu.solve(b[:, 1], trans=t), first[t][:, 1], rtol=0, atol=10 * AGREE_TOL[prec]
        )

    M = sp.csr_array(A)
    for t, opA in (("N", M), ("T", M.T), ("H", M.conj().T)):
        ref = reference_solve(opA, b, "N")
        assert _rel_diff(first[t], ref) <= AGREE_TOL[prec]
        assert rel_residual(opA, first[t], b) <= RESIDUAL_TOL[prec]
    if dtype.kind == "f":  # for real A, A^H = A^T
        np.testing.assert_array_equal(first["H"], first["T"])
    elif kind == "complex" and H * W >= 6:  # complex non-Hermitian: T and H differ
        assert _rel_diff(first["T"], first["H"]) > 1e-3


@given(
    H=sizes,
    W=sizes,
    kind=st.sampled_from(["spd", "nonsym", "laplacian"]),
    dtype=st.sampled_from([np.dtype(np.float32), np.dtype(np.float64)]),
    k=n_rhs,
    trans=st.sampled_from(["N", "T", "H"]),
    seed=seeds,
)
def test_real_factor_complex_rhs(H, W, kind, dtype, k, trans, seed):
    """A real factor solves complex right-hand sides (real and imaginary parts together)."""
    rng = np.random.default_rng(seed)
    A = stencil_matrix(H, W, rng, kind, dtype)
    b_dtype = np.dtype(np.complex64 if dtype == np.float32 else np.complex128)
    b = random_rhs(rng, H * W, k, b_dtype)
    lu = ssi_sparse.factorize(A, grid=(H, W))
    assert lu.dtype == dtype
    x = lu.solve(b, trans=trans)
    assert x.dtype == b_dtype and x.shape == b.shape
    prec = _precision(dtype)
    assert rel_residual(op(A, trans), x, b) <= RESIDUAL_TOL[prec]
    ref = reference_solve(A, b, trans)
    assert _rel_diff(x, ref) <= AGREE_TOL[prec]
    # linearity: the imaginary part of x solves with the imaginary part of b
    x_im = lu.solve(np.ascontiguousarray(b.imag), trans=trans)
    np.testing.assert_allclose(x.imag, x_im, rtol=0, atol=10 * AGREE_TOL[prec] * np.abs(x).max())


# --- deterministic cases: shapes that must always be covered ------------------------------

EDGE_SHAPES = [(1, 1), (1, 2), (2, 1), (1, 37), (37, 1), (2, 2), (2, 29), (29, 2), (3, 3),
               (5, 5), (6, 5), (17, 23), (33, 40), (40, 40)]


@pytest.mark.parametrize("H,W", EDGE_SHAPES)
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("case", [("nonsym", "d"), ("complex", "D"), ("spd", "d")])
def test_edge_shapes(H, W, order, case):
    kind, dtype = case
    rng = np.random.default_rng(H * 1000 + W)
    A = stencil_matrix(H, W, rng, kind, dtype, order=order, nine_point=True)
    b = random_rhs(rng, H * W, 3, dtype)
    lu = ssi_sparse.factorize(A, grid=(H, W), order=order)
    for t in ("N", "T", "H"):
        x = lu.solve(b, trans=t)
        assert rel_residual(op(A, t), x, b) <= 1e-12
        assert _rel_diff(x, reference_solve(A, b, t)) <= 1e-9


@pytest.mark.parametrize("dtype,tol", [(np.complex64, 1e-4), (np.complex128, 1e-12)])
@pytest.mark.parametrize("H,W", [(1, 30), (9, 8), (31, 26)])
def test_hermitian_path(dtype, tol, H, W):
    """An exactly Hermitian matrix (uniform row scale) is stored as Hermitian and still
    solves all three transposes correctly (T goes through conj(A))."""
    rng = np.random.default_rng(7)
    A = magnetic_laplacian(H, W, rng, dtype)
    b = random_rhs(rng, H * W, 2, dtype)
    lu = ssi_sparse.factorize(A)
    assert lu.hermitian
    for t in ("N", "T", "H"):
        x = lu.solve(b, trans=t)
        assert rel_residual(op(A, t), x, b) <= tol
        assert _rel_diff(x, reference_solve(A, b, t)) <= (1e-3 if tol > 1e-6 else 1e-9)
    # T really differs from N for a complex Hermitian matrix (A^T = conj(A) != A)
    assert _rel_diff(lu.solve(b, "T"), lu.solve(b, "N")) > 1e-3


def test_nonhermitian_not_flagged_hermitian():
    rng = np.random.default_rng(3)
    for kind, dtype in (("nonsym", "d"), ("complex", "D")):
        assert not ssi_sparse.factorize(stencil_matrix(8, 9, rng, kind, dtype)).hermitian
    # complex symmetric (A == A.T) is not Hermitian
    A = magnetic_laplacian(6, 7, rng)
    U = sp.triu(A, 1)
    S = sp.csr_array(U + U.T + sp.diags_array(A.diagonal()))
    assert abs(S - S.T).max() == 0 and abs(S - S.conj().T).max() > 0.1
    assert not ssi_sparse.factorize(S).hermitian


@pytest.mark.parametrize("dtype", ["d", "D"])
def test_hermitian_flag_for_random_spd(dtype):
    """Regression (fixed in cb11709): equilibration used to compute (a*s_i)*s_j and
    (a*s_j)*s_i, which differ in the last bit, so exactly Hermitian matrices with non-uniform
    row scales were reported hermitian=False and took the unsymmetric path."""
    A = sp.csr_array(np.array([[2.9, 0.6], [0.6, 1.3]], dtype=dtype))  # minimal reproducer
    assert abs(A - A.conj().T).max() == 0
    assert ssi_sparse.factorize(A).hermitian
    B = stencil_matrix(17, 13, np.random.default_rng(0), "spd", dtype)
    assert abs(B - B.conj().T).max() == 0
    assert ssi_sparse.factorize(B).hermitian


@pytest.mark.parametrize(
    "a_dtype,b_dtype",
    [("f", "d"), ("f", "D"), ("d", "f"), ("d", "F"), ("F", "d"), ("D", "f"), ("d", "i8"),
     ("f", "i4"), ("F", "f"), ("d", "?")],
)
def test_output_dtype_promotion(a_dtype, b_dtype):
    rng = np.random.default_rng(11)
    kind = "complex" if np.dtype(a_dtype).kind == "c" else "nonsym"
    A = stencil_matrix(6, 7, rng, kind, a_dtype)
    if np.dtype(b_dtype).kind in "biu":
        b = rng.integers(-3, 4, 42).astype(b_dtype)
    else:
        b = random_rhs(rng, 42, None, b_dtype)
    lu = ssi_sparse.factorize(A)
    x = lu.solve(b)
    assert x.dtype == np.promote_types(lu.dtype, np.dtype(b_dtype))
    tol = RESIDUAL_TOL[_precision(lu.dtype)]
    assert rel_residual(A, x, b) <= tol


def test_integer_matrix_uses_float64():
    A = sp.csr_array(
        stencil_matrix(7, 6, np.random.default_rng(0), "laplacian", "d").astype(np.int64)
    )
    lu = ssi_sparse.factorize(A)
    assert lu.dtype == np.float64
    b = np.arange(42.0)
    assert rel_residual(A, lu.solve(b), b) <= 1e-12


def test_rhs_layouts():
    """Fortran-ordered, strided, read-only and list right-hand sides give the same answer."""
    rng = np.random.default_rng(5)
    A = stencil_matrix(11, 9, rng, "nonsym", "d")
    lu = ssi_sparse.factorize(A)
    B = random_rhs(rng, 99, 4, "d")
    X = lu.solve(B)
    assert rel_residual(A, X, B) <= 1e-12
    np.testing.assert_allclose(lu.solve(np.asfortranarray(B)), X, rtol=1e-13, atol=0)
    np.testing.assert_allclose(lu.solve(B[:, ::2]), X[:, ::2], rtol=1e-13, atol=0)
    ro = B.copy()
    ro.flags.writeable = False
    np.testing.assert_allclose(lu.solve(ro), X, rtol=1e-13, atol=0)
    np.testing.assert_allclose(lu.solve(list(B[:, 0])), X[:, 0], rtol=1e-13, atol=0)
    assert lu.solve(np.zeros((99, 0))).shape == (99, 0)
    np.testing.assert_array_equal(lu.solve(np.zeros(99)), np.zeros(99))


def test_factor_attributes():
    rng = np.random.default_rng(2)
    A = stencil_matrix(12, 10, rng, "nonsym", "d")
    lu = ssi_sparse.factorize(A)
    assert lu.nbytes > 0
    assert 0 < lu.min_rcond <= 1
    assert "12x10" in repr(lu)
    # a hermitian factor stores less than the unsymmetric one of the same pattern
    L = magnetic_laplacian(12, 10, rng)
    N = sp.csr_array(sp.diags_array(1.0 + np.arange(120) / 120) @ L)  # same pattern, not Hermitian
    assert ssi_sparse.factorize(L).nbytes < ssi_sparse.factorize(N).nbytes


@given(
    H=st.integers(1, 9),
    W=st.integers(1, 9),
    dtype=st.sampled_from(["d", "D"]),
    pick=st.integers(0, 10**6),
    seed=seeds,
)
def test_one_asymmetric_coupling_is_not_hermitian(H, W, dtype, pick, seed):
    """The Hermitian test reads only half of the stencil slots: changing any one stored
    coupling of a Hermitian matrix (either triangle, the diagonal of a complex one) must
    still be seen."""
    from ssi_sparse._structure.grid import grid_stencil
    from ssi_sparse._structure.stencil import is_hermitian

    A = stencil_matrix(H, W, np.random.default_rng(seed), "spd", dtype).tocoo()
    spec, V = grid_stencil(A, grid=(H, W))
    assert is_hermitian(np, V, (H, W))
    k = pick % A.nnz
    if A.row[k] == A.col[k] and dtype == "d":
        return  # a real diagonal entry is its own transpose
    data = A.data.copy()
    data[k] += 0.5j if A.row[k] == A.col[k] else 0.25
    B = sp.coo_array((data, (A.row, A.col)), shape=A.shape)
    _, VB = grid_stencil(B, grid=(H, W))
    assert not is_hermitian(np, VB, (H, W))
