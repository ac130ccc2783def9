"""PyTorch integration: ``x = A^-1 b`` as a differentiable operation (extra ``ssi_sparse[torch]``).

The backward pass reuses the forward factorization: ``dL/db = A^-H dL/dx`` is one more solve,
``dL/dA`` on the stored entries is O(nnz) work (see :mod:`ssi_sparse._api.adjoint`).  Only this
module imports torch; the rest of ssi_sparse works without it.

>>> import torch, ssi_sparse.torch as sst                               # doctest: +SKIP
>>> x = sst.spsolve(A, b)          # A: sparse COO/CSR tensor, values with requires_grad
>>> x.square().sum().backward()    # A.values().grad and b.grad from one extra solve
"""

from __future__ import annotations

import copy

import numpy as np
import scipy.sparse as sp

try:
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "ssi_sparse.torch needs PyTorch: pip install 'ssi-sparse[torch]'"
    ) from exc

from ._api.adjoint import stored_entry_gradient
from ._api.factor import factorize

__all__ = ["spsolve", "slogdet", "SparseSolve"]


def _pattern(A):
    """(values, rows, cols) of a sparse COO or CSR tensor; values keep their autograd graph."""
    if A.layout == torch.sparse_coo:
        A = A.coalesce()
        rows, cols = A.indices()
        values = A.values()
    elif A.layout == torch.sparse_csr:
        crow, cols = A.crow_indices(), A.col_indices()
        rows = torch.repeat_interleave(torch.arange(A.shape[0], device=crow.device), torch.diff(crow))
        values = A.values()
    else:
        raise TypeError(f"A must be a sparse COO or CSR tensor, got layout {A.layout}")
    return values, rows.cpu().numpy(), cols.cpu().numpy()


def _exchange(*tensors):
    """(backend name, tensor -> array, array -> tensor) for where the tensors live.

    CPU tensors share memory with NumPy arrays; CUDA tensors with CuPy arrays through DLPack
    (zero-copy both ways).
    """
    devices = {t.device.type for t in tensors}
    if devices == {"cpu"}:
        return "cpu", lambda t: t.detach().numpy(), torch.from_numpy
    if devices == {"cuda"}:
        import cupy

        return "gpu", lambda t: cupy.from_dlpack(t.detach()), torch.from_dlpack
    raise ValueError(f"A and b must be on one device, got {sorted(devices)}")


def _as_columns(b, n):
    """Fold b of shape (n,), (n, k) or (B, n, k) into an (n, m) matrix, and how to unfold."""
    if b.ndim == 1 and b.shape[0] == n:
        return b.reshape(n, 1), lambda x: x.reshape(n)
    if b.ndim == 2 and b.shape[0] == n:
        return b, lambda x: x
    if b.ndim == 3 and b.shape[1] == n:
        B, _, k = b.shape
        cols = b.permute(1, 0, 2).reshape(n, B * k)
        return cols, lambda x: x.reshape(n, B, k).permute(1, 0, 2)
    raise ValueError(f"b must have shape ({n},), ({n}, k) or (batch, {n}, k), got {tuple(b.shape)}")


class _Solve(torch.autograd.Function):
    """``x = A^-1 b`` (values (nnz,)), or ``x[t] = A_t^-1 b[t]`` for ``B`` matrices on one
    pattern (values (B, nnz), one batch factor)."""

    @staticmethod
    def forward(ctx, values, b, rows, cols, shape, factor_source):
        dtype = torch.promote_types(values.dtype, b.dtype)
        backend, to_array, to_tensor = _exchange(values, b)
        # detection and the plan are host work on the pattern: the values cross once (nnz)
        data = values.detach().to(dtype).cpu().numpy()
        if data.ndim == 1:
            matrices = sp.csr_array((data, (rows, cols)), shape=shape)
        else:
            matrices = [sp.csr_array((d, (rows, cols)), shape=shape) for d in data]
        factor = factor_source(matrices, backend)
        x = to_tensor(factor.solve(to_array(b.detach().to(dtype).contiguous())))
        ctx.factor, ctx.rows, ctx.cols, ctx.to_array, ctx.to_tensor = factor, rows, cols, to_array, to_tensor
        ctx.value_dtype, ctx.b_dtype = values.dtype, b.dtype
        ctx.save_for_backward(x)
        return x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_x):
        (x,) = ctx.saved_tensors
        xp = ctx.factor.backend.xp
        grad_b = ctx.factor.solve(ctx.to_array(grad_x.contiguous()), trans="H")
        grad_values = grad_b_t = None
        if ctx.needs_input_grad[0]:
            to_xp = ctx.factor.backend.to_device
            rows, cols, xs = to_xp(ctx.rows), to_xp(ctx.cols), ctx.to_array(x)
            if ctx.factor.batch is None:
                g = stored_entry_gradient(grad_b, xs, rows, cols, xp)
            else:
                g = xp.stack([stored_entry_gradient(gb, xt, rows, cols, xp) for gb, xt in zip(grad_b, xs)])
            if not ctx.value_dtype.is_complex:
                g = xp.real(g)
            grad_values = ctx.to_tensor(xp.ascontiguousarray(g)).to(ctx.value_dtype)
        if ctx.needs_input_grad[1]:
            if not ctx.b_dtype.is_complex:
                grad_b = xp.real(grad_b)
            grad_b_t = ctx.to_tensor(xp.ascontiguousarray(grad_b)).to(ctx.b_dtype)
        return grad_values, grad_b_t, None, None, None, None


def _solve(values, rows, cols, shape, b, factor_source):
    columns, unfold = _as_columns(b, shape[0])
    return unfold(_Solve.apply(values, columns, rows, cols, shape, factor_source))


def spsolve(A, b, *, grid=None, order=None):
    """Differentiable ``x = A^-1 b`` for a sparse grid-structured torch tensor ``A``.

    Parameters
    ----------
    A : torch.Tensor, sparse COO or CSR, shape (n, n)
        A 3x3-stencil operator on a grid; ``A.values()`` may require grad.
    b : torch.Tensor, shape (n,), (n, k) or (batch, n, k)
        Dense right-hand side(s); may require grad.  A batch shares ``A``.
    grid, order
        As for :func:`ssi_sparse.factorize`.

    Returns
    -------
    x : torch.Tensor, shape of ``b``, dtype ``torch.promote_types(A.dtype, b.dtype)``
    """
    values, rows, cols = _pattern(A)

    def factor_source(M, backend):
        return factorize(M, grid=grid, order=order, backend=backend)

    return _solve(values, rows, cols, tuple(A.shape), b, factor_source)


class _SlogDet(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values, rows, cols, shape, grid, order):
        data = values.detach().cpu().numpy()
        factor = factorize(sp.csr_array((data, (rows, cols)), shape=shape), grid=grid, order=order, backend="cpu")
        sign, logabs = factor.slogdet()
        ctx.factor, ctx.rows, ctx.cols, ctx.value_dtype = factor, rows, cols, values.dtype
        real = torch.empty(0, dtype=values.dtype).real.dtype
        return (torch.tensor(sign, dtype=values.dtype, device=values.device),
                torch.tensor(logabs, dtype=real, device=values.device))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_sign, grad_logabs):
        # d log|det A| / dA = A^-T (complex: the conjugate-gradient convention gives A^-H),
        # needed on the stored entries only: selected inversion
        z = ctx.factor.inverse_entries(ctx.cols, ctx.rows)  # (A^-1)[j, i] for entry (i, j)
        g = np.conj(z) if ctx.value_dtype.is_complex else z.real
        grad = torch.from_numpy(np.ascontiguousarray(g)).to(device=grad_logabs.device, dtype=ctx.value_dtype)
        return grad * grad_logabs, None, None, None, None, None


def slogdet(A, *, grid=None, order=None):
    """Differentiable ``(sign, log|det A|)`` of a sparse grid-structured torch tensor ``A``.

    As :func:`torch.linalg.slogdet`, from ssi_sparse's factorization (on the CPU); the
    gradient of ``log|det A|`` with respect to ``A.values()`` is ``A^-T`` on the stored
    entries, computed by selected inversion (:meth:`ssi_sparse.GridFactor.inverse_entries`),
    never a dense inverse.  For Gaussian Markov random field and Gaussian-process
    likelihoods.
    """
    values, rows, cols = _pattern(A)
    sign, logabs = _SlogDet.apply(values, rows, cols, tuple(A.shape), grid, order)
    return sign.detach(), logabs


class SparseSolve(torch.nn.Module):
    """A layer solving ``A(values) x = b`` on a fixed sparsity pattern.

    For networks that predict the stencil: the pattern (and grid detection, and the plan) is
    set once; each call passes new ``values`` (aligned with ``indices``) and is refactorized
    without detection.

    Parameters
    ----------
    indices : tensor or array, shape (2, nnz)
        Row and column of every stored entry.
    shape : tuple of int
        ``(n, n)``.
    grid, order
        As for :func:`ssi_sparse.factorize`.

    ``forward(values, b)``: ``values`` of shape (nnz,) and ``b`` of shape (n,), (n, k) or
    (batch, n, k) solve one matrix; ``values`` of shape (B, nnz) with ``b`` of shape (B, n) or
    (B, n, k) solve ``B`` matrices on the pattern, factorized together
    (:func:`ssi_sparse.factorize_batch`).
    """

    def __init__(self, indices, shape, *, grid=None, order=None):
        super().__init__()
        idx = torch.as_tensor(indices).cpu().numpy().astype(np.int64)
        self.rows, self.cols = idx[0], idx[1]
        self.shape = tuple(int(s) for s in shape)
        self.grid, self.order = grid, order
        self._factor = self._batch_factor = None

    def _factor_for(self, A, backend):
        if self._factor is None or self._factor.dtype != A.dtype or self._factor.backend.name != backend:
            self._factor = factorize(A, grid=self.grid, order=self.order, backend=backend)
            return self._factor
        # a fresh factor per call (earlier calls' backward passes still need theirs),
        # sharing grid, sparsity pattern and plan: no detection, no planning
        return copy.copy(self._factor).refactorize(A)

    def _batch_factor_for(self, matrices, backend):
        from ._api.batch import factorize_batch

        f = self._batch_factor
        if f is None or f.dtype != matrices[0].dtype or f.backend.name != backend or f.batch != len(matrices):
            self._batch_factor = factorize_batch(matrices, grid=self.grid, order=self.order, backend=backend)
            return self._batch_factor
        return copy.copy(f).refactorize_batch(matrices)  # (a fresh factor per call, as above)

    def forward(self, values, b):
        if values.ndim == 2:
            n = self.shape[0]
            if b.ndim not in (2, 3) or b.shape[:2] != (values.shape[0], n):
                raise ValueError(f"with values of shape {tuple(values.shape)}, b must have shape "
                                 f"({values.shape[0]}, {n}) or ({values.shape[0]}, {n}, k), got {tuple(b.shape)}")
            return _Solve.apply(values, b, self.rows, self.cols, self.shape, self._batch_factor_for)
        return _solve(values, self.rows, self.cols, self.shape, b, self._factor_for)
