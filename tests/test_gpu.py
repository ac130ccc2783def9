"""GPU backend (CuPy).  The same test bodies run on the NumPy and the CuPy backends and their
answers are compared, as CuPy's ``numpy_cupy_allclose`` does.  Without CuPy and a CUDA GPU the
``gpu`` tests skip; backend selection is tested everywhere."""

import numpy as np
import pytest

import ssi_sparse
from ssi_sparse._backend import GPU_MIN_SIZE, Backend, cupy_available, select_backend
from ssi_sparse.problems import convection_diffusion_2d, diffusion_2d, helmholtz_2d, random_spd_9pt

needs_gpu = pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a CUDA GPU")


def test_backend_selection_rules(monkeypatch):
    monkeypatch.delenv("SSI_SPARSE_BACKEND", raising=False)
    small = diffusion_2d(10, 10)
    assert select_backend(None, small).name == "cpu"
    assert select_backend("cpu", small).name == "cpu"
    assert select_backend("numpy", small).name == "cpu"
    monkeypatch.setenv("SSI_SPARSE_BACKEND", "cpu")
    assert select_backend(None, np.ones((GPU_MIN_SIZE, 1))).name == "cpu"
    with pytest.raises(ValueError, match="backend must be"):
        select_backend("tpu", small)


@pytest.mark.skipif(cupy_available(), reason="checks the message shown without a GPU")
def test_gpu_backend_without_gpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="needs CuPy and a CUDA GPU"):
        Backend("gpu")
    with pytest.raises(RuntimeError, match="needs CuPy and a CUDA GPU"):
        ssi_sparse.factorize(diffusion_2d(8, 8), backend="gpu")


CASES = {
    "laplace 65x40": (lambda: diffusion_2d(65, 40), np.float64),
    "spd9 33x47": (lambda: random_spd_9pt(33, 47), np.float64),
    "nonsym 50x50": (lambda: convection_diffusion_2d(50, 50, 20.0), np.float64),
    "complex helmholtz": (lambda: helmholtz_2d(31, 29, 0.3).astype(np.complex128) * (1 + 0.2j), np.complex128),
    "float32 strip": (lambda: random_spd_9pt(1, 300), np.float32),
}


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("trans", ["N", "T", "H"])
def test_numpy_and_cupy_backends_agree(name, trans):
    import cupy

    make, dtype = CASES[name]
    A = make().astype(dtype)
    b = np.random.default_rng(0).standard_normal((A.shape[0], 3)).astype(dtype)
    results = {}
    for backend in ("cpu", "gpu"):
        lu = ssi_sparse.factorize(A, backend=backend)
        results[backend] = lu.solve(b, trans=trans)
        assert isinstance(results[backend], np.ndarray)  # NumPy in, NumPy out
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(results["gpu"], results["cpu"], rtol=tol, atol=tol)
    # CuPy in, CuPy out
    x = ssi_sparse.factorize(A, backend="gpu").solve(cupy.asarray(b), trans=trans)
    assert isinstance(x, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(x), results["cpu"], rtol=tol, atol=tol)


@pytest.mark.gpu
@needs_gpu
def test_cupyx_input_stays_on_gpu_and_non_grid_falls_back_to_cupyx():
    import cupy
    import cupyx.scipy.sparse as csp
    import scipy.sparse as sp

    A = random_spd_9pt(70, 70)
    b = np.ones(A.shape[0])
    x = ssi_sparse.spsolve(csp.csr_matrix(A), cupy.asarray(b))
    assert isinstance(x, cupy.ndarray)
    assert np.linalg.norm(A @ cupy.asnumpy(x) - b) <= 1e-10 * np.linalg.norm(b)
    R = (sp.random(500, 500, density=0.01, random_state=0) + 10 * sp.identity(500)).tocsr()
    xr = ssi_sparse.spsolve(csp.csr_matrix(R), cupy.ones(500))
    assert isinstance(xr, cupy.ndarray)
    assert np.linalg.norm(R @ cupy.asnumpy(xr) - 1) <= 1e-10 * np.sqrt(500)


@pytest.mark.gpu
@needs_gpu
def test_gpu_singular_and_memory_errors(monkeypatch):
    import ssi_sparse._api.factor as factor_mod

    with pytest.raises(ssi_sparse.SingularMatrixError):
        ssi_sparse.factorize(diffusion_2d(40, 40, neumann=True), backend="gpu").solve(np.ones(1600))
    lu_backend = Backend("gpu")
    monkeypatch.setattr(type(lu_backend), "free_memory", lambda self: 1 << 20)
    with pytest.raises(MemoryError, match="GPU memory"):
        factor_mod.factorize(diffusion_2d(64, 64), backend="gpu")


class _NumpyAsCupy(Backend):
    """The GPU code path (CupyNamespace shim, no host threads, device/host moves) run with
    NumPy standing in for CuPy: exercises everything but CuPy itself on any machine."""

    def __init__(self):
        from ssi_sparse._backend import CupyNamespace

        self.name = "gpu"
        self.xp = CupyNamespace(np)

    def to_device(self, a):
        return np.array(a)  # a copy, as a host-to-device transfer makes

    def to_host(self, a):
        return np.array(a)

    def free_memory(self):
        return 1 << 40


@pytest.mark.parametrize("name", sorted(CASES))
def test_gpu_code_path_with_numpy_standing_in(name):
    from ssi_sparse._api.factor import GridFactor
    from ssi_sparse._structure.grid import grid_stencil

    make, dtype = CASES[name]
    A = make().astype(dtype)
    spec, V = grid_stencil(A)
    emulated = GridFactor(spec, V.astype(dtype), None, _NumpyAsCupy())
    assert emulated._xp is not np
    reference = ssi_sparse.factorize(A)
    b = np.random.default_rng(1).standard_normal((A.shape[0], 2)).astype(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for trans in "NTH":
        np.testing.assert_allclose(emulated.solve(b, trans), reference.solve(b, trans), rtol=tol, atol=tol)
