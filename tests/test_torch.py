"""PyTorch layer: gradcheck, agreement with dense autograd, batching, the module form."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import ssi_sparse.torch as sst  # noqa: E402
from ssi_sparse.problems import convection_diffusion_2d, random_spd_9pt  # noqa: E402

torch.set_num_threads(1)  # ANCHORS.md: torch's CPU batched LU misbehaves with 2 threads


def sparse_tensor(A, dtype=torch.float64, complex_shift=False):
    """A scipy grid matrix as (indices, values) in CSR order, optionally made complex."""
    coo = A.tocsr().tocoo()
    values = torch.tensor(coo.data, dtype=dtype)
    if complex_shift:
        rng = np.random.default_rng(0)
        values = values + 0.3j * torch.tensor(rng.standard_normal(coo.nnz))
    idx = torch.tensor(np.vstack([coo.row, coo.col]), dtype=torch.int64)
    return idx, values


def build(idx, values, n, layout="coo"):
    if layout == "csr":  # values are in CSR order (see sparse_tensor)
        crow = torch.cat([torch.zeros(1, dtype=torch.int64), torch.bincount(idx[0], minlength=n).cumsum(0)])
        return torch.sparse_csr_tensor(crow, idx[1], values, (n, n))
    return torch.sparse_coo_tensor(idx, values, (n, n))


CASES = {
    "nonsym": lambda: convection_diffusion_2d(4, 5, peclet=3.0),
    "spd9": lambda: random_spd_9pt(5, 3, seed=1),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("cplx", [False, True])
@pytest.mark.parametrize("bshape", ["vector", "matrix"])
def test_gradcheck(name, cplx, bshape):
    A = CASES[name]()
    n = A.shape[0]
    dtype = torch.complex128 if cplx else torch.float64
    idx, values = sparse_tensor(A, dtype, complex_shift=cplx)
    values.requires_grad_(True)
    shape = (n,) if bshape == "vector" else (n, 2)
    b = torch.randn(shape, dtype=dtype, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, rhs: sst.spsolve(build(idx, v, n), rhs), (values, b))


@pytest.mark.parametrize(
    "layout, cplx",
    # torch cannot build a complex CSR tensor that carries autograd, so no ("csr", True)
    [("coo", False), ("coo", True), ("csr", False)],
)
def test_matches_dense_autograd(layout, cplx):
    A = convection_diffusion_2d(6, 7, peclet=5.0)
    n = A.shape[0]
    dtype = torch.complex128 if cplx else torch.float64
    idx, values = sparse_tensor(A, dtype, complex_shift=cplx)
    b = torch.randn(n, 3, dtype=dtype)

    v1, b1 = values.clone().requires_grad_(True), b.clone().requires_grad_(True)
    Asp = build(idx, v1, n, layout)
    x1 = sst.spsolve(Asp, b1)
    (x1.abs() ** 2).sum().backward()

    v2, b2 = values.clone().requires_grad_(True), b.clone().requires_grad_(True)
    dense = torch.zeros(n, n, dtype=dtype).index_put((idx[0], idx[1]), v2, accumulate=True)
    x2 = torch.linalg.solve(dense, b2)
    (x2.abs() ** 2).sum().backward()

    def rel(a, c):
        return float((a - c).abs().max() / c.abs().max())

    assert rel(x1.detach(), x2.detach()) < 1e-10
    assert rel(b1.grad, b2.grad) < 1e-8
    assert rel(v1.grad, v2.grad) < 1e-8  # the gradient reaches the leaf values


def test_batched_rhs_and_float32():
    A = random_spd_9pt(6, 6, seed=3)
    n = A.shape[0]
    idx, values = sparse_tensor(A, torch.float32)
    values.requires_grad_(True)
    b = torch.randn(4, n, 2, dtype=torch.float32, requires_grad=True)
    x = sst.spsolve(build(idx, values, n), b)
    assert x.shape == b.shape and x.dtype == torch.float32
    dense = torch.zeros(n, n).index_put((idx[0], idx[1]), values.detach(), accumulate=True)
    assert float((dense @ x[2].detach() - b[2].detach()).abs().max()) < 1e-4
    x.sum().backward()
    assert values.grad.shape == values.shape and b.grad.shape == b.shape


def test_module_reuses_pattern_and_keeps_each_calls_gradient():
    A = random_spd_9pt(5, 6, seed=2)
    n = A.shape[0]
    idx, values = sparse_tensor(A)
    layer = sst.SparseSolve(idx, (n, n))
    b = torch.randn(n, dtype=torch.float64)
    v1 = values.clone().requires_grad_(True)
    v2 = (values * 2).requires_grad_(True)
    x1, x2 = layer(v1, b), layer(v2, b)  # two forwards before any backward
    (x1.sum() + 10 * x2.sum()).backward()
    dense = lambda v: torch.zeros(n, n, dtype=v.dtype).index_put((idx[0], idx[1]), v, accumulate=True)  # noqa: E731
    for v, scale in ((v1, 1.0), (v2, 10.0)):
        vv = v.detach().clone().requires_grad_(True)
        (scale * torch.linalg.solve(dense(vv), b).sum()).backward()
        torch.testing.assert_close(v.grad, vv.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("with_columns", [False, True])
def test_module_batch_of_matrices_gradcheck(with_columns):
    """values (B, nnz): B matrices on one pattern, factorized together; gradients checked."""
    A = random_spd_9pt(3, 4, seed=3)
    n = A.shape[0]
    idx, values = sparse_tensor(A)
    layer = sst.SparseSolve(idx, (n, n), grid=(3, 4))
    scales = torch.tensor([1.0, 1.5, 0.7], dtype=torch.float64)[:, None]
    V = (values[None, :] * scales).requires_grad_(True)
    b = torch.randn((3, n, 2) if with_columns else (3, n), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, bb: layer(v, bb), (V, b))
    x = layer(V, b)
    dense = lambda v: torch.zeros(n, n, dtype=v.dtype).index_put((idx[0], idx[1]), v, accumulate=True)  # noqa: E731
    for t in range(3):
        torch.testing.assert_close(x[t], torch.linalg.solve(dense(V[t]), b[t]), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="b must have shape"):
        layer(V, torch.randn(n, dtype=torch.float64))


@pytest.mark.gpu
def test_cuda_tensors_run_on_the_gpu_engine_and_match_cpu():
    from ssi_sparse._backend import cupy_available

    if not (torch.cuda.is_available() and cupy_available()):
        pytest.skip("needs CUDA, CuPy and a GPU")
    A = convection_diffusion_2d(20, 30, peclet=4.0)
    n = A.shape[0]
    idx, values = sparse_tensor(A)
    b = torch.randn(n, 2, dtype=torch.float64)
    grads = {}
    for device in ("cpu", "cuda"):
        v = values.clone().to(device).requires_grad_(True)
        rhs = b.clone().to(device).requires_grad_(True)
        x = sst.spsolve(build(idx.to(device), v, n), rhs)
        assert x.device.type == device
        (x**2).sum().backward()
        grads[device] = (x.detach().cpu(), v.grad.cpu(), rhs.grad.cpu())
    for got, want in zip(grads["cuda"], grads["cpu"]):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)


def test_bad_shapes():
    A = random_spd_9pt(4, 4)
    idx, values = sparse_tensor(A)
    with pytest.raises(ValueError, match="b must have shape"):
        sst.spsolve(build(idx, values, 16), torch.ones(15, dtype=torch.float64))
    with pytest.raises(TypeError, match="sparse COO or CSR"):
        sst.spsolve(build(idx, values, 16).to_dense(), torch.ones(16, dtype=torch.float64))


@pytest.mark.parametrize("cplx", [False, True])
def test_slogdet_value_and_gradcheck(cplx):
    """log|det A| and its gradient (A^-T on the stored entries, by selected inversion)."""
    if cplx:
        from ssi_sparse.problems import block_stencil_random

        A = block_stencil_random(4, 5, 2, seed=4, hermitian=False, dtype=np.complex128)
    else:
        A = random_spd_9pt(5, 6, seed=4)
    n = A.shape[0]
    idx, values = sparse_tensor(A, dtype=torch.complex128 if cplx else torch.float64)
    v = values.clone().requires_grad_(True)
    make = lambda vv: torch.sparse_coo_tensor(idx, vv, (n, n))  # noqa: E731
    sign, logabs = sst.slogdet(make(v))
    sign0, logabs0 = np.linalg.slogdet(A.toarray())
    assert logabs.item() == pytest.approx(logabs0, rel=1e-12)
    assert complex(sign.item()) == pytest.approx(complex(sign0), abs=1e-12)
    assert torch.autograd.gradcheck(lambda vv: sst.slogdet(make(vv))[1], (v,))
    # against dense autograd
    dense = lambda vv: torch.zeros(n, n, dtype=vv.dtype).index_put((idx[0], idx[1]), vv, accumulate=True)  # noqa: E731
    vv = values.clone().requires_grad_(True)
    torch.linalg.slogdet(dense(vv))[1].backward()
    logabs.backward()
    torch.testing.assert_close(v.grad, vv.grad, rtol=1e-9, atol=1e-12)
