"""Dask integration: many systems across a cluster (extra ``ssi_sparse[dask]``).

Systems that share a layout (the same sparsity pattern) are grouped and cut into chunks;
each chunk is one task that factors its systems together (:func:`ssi_sparse.factorize_batch`)
and solves them.  A worker builds each grid's plan once and keeps it (plans are cached per
process and travel between processes as their key, see ``Plan.__reduce__``), so a group
spread over many tasks costs one plan per worker.  Only this module imports Dask.

>>> from distributed import Client                                      # doctest: +SKIP
>>> from ssi_sparse.dask import solve_many, solve_columns
>>> xs = solve_many(client, matrices, rhs)   # x[t] solves matrices[t] x = rhs[t]
>>> X = solve_columns(client, factor, B)     # B a dask array (n, m) of columns
"""

from __future__ import annotations

import hashlib
import math
import warnings

import numpy as np
import scipy.sparse as sp

try:
    import dask.array as da
    import distributed  # noqa: F401  (the scheduler these functions need)
except ImportError as exc:  # pragma: no cover - exercised only without dask
    raise ImportError("ssi_sparse.dask needs Dask: pip install 'ssi-sparse[dask]'") from exc

from ._tuning import DASK_BATCH_MAX_UNKNOWNS

__all__ = ["solve_many", "solve_columns"]


def _layout_key(A):
    """Systems with equal keys share one sparsity pattern, hence one layout and plan."""
    A = A if sp.issparse(A) and A.format in ("csr", "csc") else sp.csr_array(A)
    digest = hashlib.blake2b(np.ascontiguousarray(A.indptr).tobytes(), digest_size=16)
    digest.update(np.ascontiguousarray(A.indices).tobytes())
    return (A.format, A.shape, A.nnz, digest.hexdigest())


def _solve_chunk(chunk, layout):
    """One task: the chunk's systems factored together (one system: plainly); systems the
    engine does not take (not grids, or singular blocks) are answered one by one as
    ``ssi_sparse.spsolve`` does."""
    import ssi_sparse

    matrices, rhs = chunk
    try:
        if len(matrices) == 1:
            return [ssi_sparse.factorize(matrices[0], **layout).solve(rhs[0])]
        factor = ssi_sparse.factorize_batch(matrices, **layout)
        return list(factor.solve(np.stack(rhs)))
    except (ssi_sparse.NotGridStructuredError, ssi_sparse.SingularMatrixError):
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return [ssi_sparse.spsolve(A, b) for A, b in zip(matrices, rhs)]


def solve_many(client, matrices, rhs, *, chunk=None, **layout):
    """Solve ``matrices[t] @ x[t] = rhs[t]`` for every ``t`` on a Dask ``distributed`` client.

    Parameters
    ----------
    client : distributed.Client
    matrices : sequence of sparse matrices
        Any mix of grids; those with the same sparsity pattern are factored together.
    rhs : sequence of arrays
        ``rhs[t]`` of shape (n_t,) or (n_t, k); one shape within a group.
    chunk : int, optional
        Systems per task, factored as one batch.  Default: each group cut into a whole
        number of tasks per worker (at least two), with at most ``DASK_BATCH_MAX_UNKNOWNS``
        unknowns per task (the batch's memory).
    **layout
        Passed to :func:`ssi_sparse.factorize_batch` (``grid=``, ``components=``, ...).

    Returns
    -------
    list of ndarray
        ``x[t]``, in the order of ``matrices``.
    """
    matrices, rhs = list(matrices), [np.asarray(b) for b in rhs]
    if len(matrices) != len(rhs):
        raise ValueError(f"{len(matrices)} matrices but {len(rhs)} right-hand sides")
    groups = {}
    for t, A in enumerate(matrices):
        groups.setdefault(_layout_key(A), []).append(t)
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    parts = []
    for members in groups.values():
        size = chunk
        if size is None:
            # at least two tasks per worker, each batch within the memory cap, and a whole
            # number of tasks per worker (the last round of an uneven split idles workers)
            cap = max(1, DASK_BATCH_MAX_UNKNOWNS // matrices[members[0]].shape[0])
            n_tasks = max(math.ceil(len(members) / cap), 2 * n_workers)
            n_tasks = min(len(members), math.ceil(n_tasks / n_workers) * n_workers)
            size = math.ceil(len(members) / n_tasks)
        parts += [members[start : start + size] for start in range(0, len(members), size)]
    # the data goes to the workers once, as futures, not inside the task graph
    data = client.scatter([([matrices[t] for t in part], [rhs[t] for t in part]) for part in parts], hash=False)
    tasks = [(part, client.submit(_solve_chunk, d, layout, pure=False)) for part, d in zip(parts, data)]
    out = [None] * len(matrices)
    for part, result in zip((p for p, _ in tasks), client.gather([f for _, f in tasks])):
        for t, x in zip(part, result):
            out[t] = x
    return out


def _solve_block(block, factor):
    return factor.solve(block)


def solve_columns(client, factor, B):
    """``A^-1 B`` for a dask array ``B`` (n, m) of right-hand-side columns.

    The factor (from :func:`ssi_sparse.factorize`) is sent to every worker once; each
    column chunk of ``B`` is one solve there.  ``B`` must not be chunked along its rows.
    Returns a dask array (lazy: ``.compute()`` it).
    """
    B = da.asarray(B)
    if B.ndim != 2 or B.shape[0] != factor.shape[0]:
        raise ValueError(f"B must have shape ({factor.shape[0]}, m), got {B.shape}")
    if len(B.chunks[0]) != 1:
        B = B.rechunk({0: -1})
    shared = client.scatter(factor, broadcast=True, hash=False)
    dtype = np.promote_types(factor.dtype, B.dtype)
    return B.map_blocks(_solve_block, shared, dtype=dtype)
