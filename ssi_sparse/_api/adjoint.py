"""Adjoint of ``x = A^-1 b``: gradients from the forward factorization, framework-free.

For a loss ``L(x)`` with upstream gradient ``g = dL/dx`` (PyTorch's convention for complex
values: the gradient is taken with respect to the conjugate):

    dL/db      = A^-H g                        one reused solve, no new factorization
    dL/dA_ij   = -(dL/db)_i conj(x_j)          on the stored nonzeros only, O(nnz)

summed over right-hand-side columns.
"""

from __future__ import annotations

import numpy as np

__all__ = ["solve_backward", "stored_entry_gradient"]


def stored_entry_gradient(grad_b, x, rows, cols, xp=np):
    """``-sum_k grad_b[rows, k] * conj(x[cols, k])`` for every stored entry (rows, cols)."""
    grad_b = xp.reshape(grad_b, (grad_b.shape[0], -1))
    x = xp.reshape(x, (x.shape[0], -1))
    return -xp.sum(xp.take(grad_b, rows, axis=0) * xp.conj(xp.take(x, cols, axis=0)), axis=1)


def solve_backward(factor, x, grad_x, A=None):
    """Gradients of ``x = A^-1 b`` from the factorization that computed ``x``.

    Parameters
    ----------
    factor : GridFactor
        The forward factorization of ``A``.
    x : ndarray, shape (n,) or (n, k)
        The forward solution.
    grad_x : ndarray, shape of ``x``
        Upstream gradient ``dL/dx``.
    A : sparse matrix or array, optional
        The forward matrix; when given, ``dL/dA`` is returned on its stored entries.

    Returns
    -------
    grad_b : ndarray, shape of ``x``
    grad_A : sparse array with ``A``'s sparsity pattern (``grad_A.data`` aligned with the
        stored entries of ``A``), or None when ``A`` is not given.

    Examples
    --------
    >>> import numpy as np
    >>> import ssi_sparse
    >>> from ssi_sparse.problems import diffusion_2d
    >>> A = diffusion_2d(20, 20)
    >>> lu = ssi_sparse.factorize(A)
    >>> b = np.ones(400)
    >>> x = lu.solve(b)
    >>> grad_b, grad_A = ssi_sparse.solve_backward(lu, x, 2 * x, A)   # L = |x|^2
    >>> grad_A.shape
    (400, 400)
    """
    import scipy.sparse as sp

    grad_b = factor.solve(grad_x, trans="H")
    if A is None:
        return grad_b, None
    A = A if sp.issparse(A) and A.format in ("csr", "csc", "coo") else sp.csr_array(A)
    coo = A.tocoo()  # storage order of A.data is kept for CSR/CSC/COO
    data = stored_entry_gradient(grad_b, x, coo.row, coo.col)
    if not np.iscomplexobj(A.data):
        data = data.real
    grad = A.copy()
    grad.data = data.astype(np.result_type(A.dtype, data.dtype), copy=False)
    return grad_b, grad
