"""SciPy-compatible front end: spsolve / factorized behave as SciPy's, engine or fallback."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse import SparseEfficiencyWarning
from scipy.sparse.linalg import MatrixRankWarning

import ssi_sparse
import ssi_sparse._api.frontend as frontend
from ssi_sparse._tuning import ENGINE_MIN_SIZE
from ssi_sparse.problems import convection_diffusion_2d, diffusion_2d, random_spd_9pt

# big enough that the engine, not the fallback, answers
H, W = 90, 73
N = H * W
assert N >= ENGINE_MIN_SIZE


@pytest.fixture
def engine_calls(monkeypatch):
    """Record the factorizations the engine completes through the front end."""
    calls = []
    real = frontend.factorize

    def counting(A, **kw):
        factor = real(A, **kw)
        calls.append(A.shape)
        return factor

    monkeypatch.setattr(frontend, "factorize", counting)
    return calls


def rel_residual(A, x, b):
    return np.linalg.norm(A @ x - b) / np.linalg.norm(b)


MATRICES = {
    "laplace5": lambda: diffusion_2d(H, W),
    "spd9": lambda: random_spd_9pt(H, W, seed=3),
    "convection": lambda: convection_diffusion_2d(H, W, peclet=50.0),
}


@pytest.mark.parametrize("name", sorted(MATRICES))
@pytest.mark.parametrize("fmt", ["csr", "csc"])
@pytest.mark.parametrize("bshape", [(N,), (N, 1), (N, 3)])
def test_spsolve_matches_scipy(name, fmt, bshape, engine_calls):
    A = MATRICES[name]().asformat(fmt)
    b = np.random.default_rng(0).standard_normal(bshape)
    x = ssi_sparse.spsolve(A, b)
    xs = spla.spsolve(A, b)
    assert engine_calls, "the engine should have answered"
    assert x.shape == xs.shape and x.dtype == xs.dtype
    assert rel_residual(A, x, b.reshape(x.shape)) <= 10 * max(
        rel_residual(A, xs, b.reshape(xs.shape)), 1e-15
    )
    np.testing.assert_allclose(x, xs, rtol=1e-8, atol=1e-10 * np.abs(xs).max())


@pytest.mark.parametrize(
    "a_dtype, b_dtype",
    [
        (np.float32, np.float32),
        (np.float32, np.float64),
        (np.float64, np.complex128),
        (np.complex64, np.float32),
        (np.int64, np.float64),
    ],
)
def test_spsolve_dtype_promotion(a_dtype, b_dtype, engine_calls):
    A = diffusion_2d(H, W).astype(a_dtype)
    b = (np.arange(N) % 7).astype(b_dtype)
    x = ssi_sparse.spsolve(A, b)
    assert x.dtype == np.promote_types(a_dtype, b_dtype) == spla.spsolve(A, b).dtype
    tol = 1e-4 if np.finfo(x.dtype).bits <= 32 or x.dtype == np.complex64 else 1e-12
    assert rel_residual(A, x, b) <= tol


def test_spsolve_sparse_rhs_returns_sparse_of_a_class(engine_calls):
    A = diffusion_2d(H, W).tocsc()
    B = sp.random(N, 4, density=0.01, format="csc", random_state=0)
    X = ssi_sparse.spsolve(A, B)
    Xs = spla.spsolve(A, B)
    assert engine_calls
    assert type(X) is type(Xs) and X.shape == Xs.shape and X.dtype == Xs.dtype
    np.testing.assert_allclose(X.toarray(), Xs.toarray(), rtol=1e-8, atol=1e-12)


def test_spsolve_non_csr_input_warns_like_scipy(engine_calls):
    A = diffusion_2d(H, W).tocoo()
    b = np.ones(N)
    with pytest.warns(SparseEfficiencyWarning, match="CSC or CSR"):
        x = ssi_sparse.spsolve(A, b)
    assert engine_calls
    assert rel_residual(A, x, b) < 1e-12


def test_spsolve_accepts_list_and_matrix_classes(engine_calls):
    A = sp.csr_matrix(diffusion_2d(H, W))
    b = list(np.ones(N))
    x = ssi_sparse.spsolve(A, b)
    assert isinstance(x, np.ndarray) and x.shape == (N,)


def test_spsolve_errors_are_scipys():
    A = diffusion_2d(H, W)
    with pytest.raises(ValueError, match="dimension mismatch"):
        ssi_sparse.spsolve(A, np.ones(N + 1))
    with pytest.raises(ValueError, match="must be square"):
        ssi_sparse.spsolve(A[:, :-1], np.ones(N))


def test_exactly_singular_gives_rank_warning_and_nan(capfd):
    A = diffusion_2d(H, W).tolil()
    A[5, :] = 0  # an all-zero row
    A = A.tocsr()
    with pytest.warns(MatrixRankWarning):
        x = ssi_sparse.spsolve(A, np.ones(N))
    assert np.all(np.isnan(x))
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_pure_neumann_is_reported_not_garbage():
    # SciPy's SuperLU returns a finite wrong answer here without any warning
    A = diffusion_2d(H, W, neumann=True)
    b = np.ones(N)  # inconsistent: no solution exists
    with pytest.warns(MatrixRankWarning):
        x = ssi_sparse.spsolve(A, b)
    assert np.all(np.isnan(x))
    # a consistent right-hand side has solutions: one is returned, no warning
    b = A @ np.random.default_rng(1).standard_normal(N)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = ssi_sparse.spsolve(A, b)
    assert rel_residual(A, x, b) < 1e-8


def test_non_grid_matrix_is_bit_for_bit_scipy(engine_calls):
    rng = np.random.default_rng(5)
    A = (sp.random(N, N, density=5.0 / N, random_state=rng) + 10 * sp.identity(N)).tocsr()
    b = rng.standard_normal(N)
    x = ssi_sparse.spsolve(A, b)
    assert not engine_calls
    np.testing.assert_array_equal(x, spla.spsolve(A, b))


def test_small_grid_matrix_uses_scipy_unless_grid_given(engine_calls):
    A = diffusion_2d(10, 10)
    b = np.ones(100)
    np.testing.assert_array_equal(ssi_sparse.spsolve(A, b), spla.spsolve(A, b))
    assert not engine_calls
    x = ssi_sparse.spsolve(A, b, grid=(10, 10))
    assert engine_calls and rel_residual(A, x, b) < 1e-12


def test_first_small_matrix_of_a_size_goes_to_scipy(engine_calls, monkeypatch):
    """Between ENGINE_MIN_SIZE and ENGINE_MIN_SIZE_FIRST unknowns the first matrix of a size
    goes to SciPy (its plan would cost more than SciPy's solve), the next ones of that size
    to the engine; from ENGINE_MIN_SIZE_FIRST on the first one does."""
    from ssi_sparse import _tuning

    monkeypatch.setattr(_tuning, "ENGINE_MIN_SIZE_FIRST", 2 * N)
    monkeypatch.setattr(frontend, "_SIZES_MET", type(frontend._SIZES_MET)())
    A = diffusion_2d(H, W)
    b = np.ones(N)
    np.testing.assert_array_equal(ssi_sparse.spsolve(A, b), spla.spsolve(A, b))
    assert not engine_calls
    for _ in range(2):  # the second and later ones of its size (other values: same size)
        x = ssi_sparse.spsolve(2.0 * A, b)
        assert rel_residual(2.0 * A, x, b) < 1e-12
    assert len(engine_calls) == 2
    ssi_sparse.factorized(diffusion_2d(W, H))  # the same size: met before
    assert len(engine_calls) == 3
    other = diffusion_2d(H + 1, W)  # another size: its first one goes to SciPy
    ssi_sparse.spsolve(other, np.ones(other.shape[0]))
    assert len(engine_calls) == 3
    monkeypatch.setattr(_tuning, "ENGINE_MIN_SIZE_FIRST", N)
    big = diffusion_2d(H + 2, W)
    ssi_sparse.spsolve(big, np.ones(big.shape[0]))
    assert len(engine_calls) == 4


def test_factorized_engine(engine_calls):
    A = random_spd_9pt(H, W, seed=2)
    solve = ssi_sparse.factorized(A)
    assert engine_calls
    b = np.random.default_rng(0).standard_normal((N, 2))
    x = solve(b)
    assert x.shape == b.shape and rel_residual(A, x, b) < 1e-12
    x1 = solve(b[:, 0])
    assert x1.shape == (N,)
    np.testing.assert_allclose(x1, x[:, 0], rtol=1e-12, atol=1e-14)


def test_factorized_errors_match_scipy():
    A = diffusion_2d(H, W)
    ours, theirs = ssi_sparse.factorized(A), spla.factorized(A.tocsc())
    for bad, exc in [(np.ones(N + 1), ValueError), (np.ones(N) * 1j, TypeError), (list(np.ones(N)), TypeError)]:
        with pytest.raises(exc):
            theirs(bad)
        with pytest.raises(exc):
            ours(bad)


def test_factorized_exactly_singular_raises_runtimeerror():
    A = diffusion_2d(H, W).tolil()
    A[7, :] = 0
    with pytest.raises(RuntimeError, match="Factor is exactly singular"):
        ssi_sparse.factorized(A.tocsc())


def test_scipy_linsolve_suite_with_our_functions_bound(tmp_path):
    """SciPy's own test_linsolve.py, run with our spsolve/factorized: same counts as SciPy."""
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    # a neutral pytest config: ours (--strict-markers) must not apply to SciPy's tests
    ini = tmp_path / "pytest.ini"
    ini.write_text("[pytest]\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [tests_dir, os.path.dirname(tests_dir), env.get("PYTHONPATH", "")]
    )

    def run(extra, min_size=None):
        e = dict(env)
        if min_size is not None:
            e["SSI_ENGINE_MIN_SIZE"] = str(min_size)
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ini),
               "--rootdir", str(tmp_path), *extra,
               "--pyargs", "scipy.sparse.linalg._dsolve.tests.test_linsolve"]
        out = subprocess.run(cmd, capture_output=True, text=True, env=e, cwd=tmp_path)
        return out.returncode, out.stdout.strip().splitlines()[-1]

    rc0, plain = run([])
    rc1, patched = run(["-p", "scipy_patch_plugin"])
    rc2, engine = run(["-p", "scipy_patch_plugin"], min_size=1)  # engine answers tiny grids too

    def counts(line):
        return line.split(" in ")[0]

    assert rc0 == rc1 == rc2 == 0, (plain, patched, engine)
    assert counts(plain) == counts(patched) == counts(engine)
