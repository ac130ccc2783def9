"""Batches: many systems on one grid, factored together.

A batch of ``B`` matrices with one layout is one factorization whose every class holds the
boxes of all systems (``build_plan(..., batch=B)``): each batched dense call is ``B`` times
larger, which is what fills a GPU and the CPU's threads when one small grid cannot.  The
layout is found once, from the first matrix; the others must share it (for CSR/CSC input with
the same sparsity pattern, their values go straight into the stencil array).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._engine import pages
from .._engine.threads import parallel_map
from .._backend import is_cupy_array, select_backend
from .._structure.grid import StencilPattern, grid_stencil

__all__ = ["factorize_batch", "batch_stencils"]


def _same_layout(a, b) -> bool:
    fields = ("shape", "order", "components", "numbering", "radius")
    same_pixels = (a.pixels is None) == (b.pixels is None) and (
        a.pixels is None or np.array_equal(a.pixels, b.pixels)
    )
    return same_pixels and all(getattr(a, f) == getattr(b, f) for f in fields)


def batch_stencils(matrices, spec=None, pattern=None, hints=None):
    """``(spec, pattern, V)``: the systems' stencil rows stacked system after system.

    ``spec``/``pattern``: a layout already known (refactorization); else it is detected from
    the first matrix with ``hints`` (the keyword arguments of :func:`factorize`).
    """
    from .factor import _engine_dtype
    from .from_stencil import _engine_rows

    if isinstance(matrices, np.ndarray) and matrices.ndim in (5, 7) or is_cupy_array(matrices):
        parts = [_engine_rows(V) for V in matrices]  # stencil arrays, batch axis first
        if not parts:
            raise ValueError("a batch needs at least one system")
        if spec is not None and (spec.nodes is not None or parts[0][0].engine_dims != spec.engine_dims):
            raise ValueError(f"stencil arrays of shape {matrices.shape[1:]} do not fit the factor's {spec}")
        spec = spec or parts[0][0]
        rows = [V for _, V in parts]
    else:
        matrices = list(matrices)
        if not matrices:
            raise ValueError("a batch needs at least one system")
        for i, A in enumerate(matrices):
            if not (sp.issparse(A) or is_cupy_array(A)):
                raise TypeError(f"system {i} is a {type(A).__name__}, not a SciPy sparse matrix")
        dtype = np.result_type(*[_engine_dtype(A.dtype) for A in matrices])
        out = None  # every system's rows, filled in place where the native pass can
        done = set()  # systems whose rows the pattern's pass wrote

        def fill(systems):  # on the engine's threads: the pattern's own pass, unsplit
            for i in systems:
                A, mine = matrices[i], out[i * n_rows : (i + 1) * n_rows]
                V = pattern.stencil(A, mine, threads=(map, 1)) if sp.issparse(A) and pattern.matches(A) else None
                if V is not None:
                    if V is not mine:
                        mine[...] = V
                    done.add(i)  # (set.add is atomic)

        for i, A in enumerate(matrices):
            if i == 1 and pattern is not None:  # the first system gave the layout and the pattern
                threads_map, n = parallel_map()
                list(threads_map(fill, np.array_split(np.arange(1, len(matrices)), n)))
            if i in done:
                continue
            if is_cupy_array(A):
                A = A.get()
            mine = None if out is None else out[i * n_rows : (i + 1) * n_rows]
            V = pattern.stencil(A, mine) if pattern is not None and pattern.matches(A) else None
            if V is None:
                if spec is None:
                    found, V = grid_stencil(A, **(hints or {}))
                else:
                    found, V = grid_stencil(A, grid=spec.shape, order=spec.order, pixels=spec.pixels,
                                            components=spec.components, numbering=spec.numbering,
                                            radius=spec.radius)  # fmt: skip
                    if not _same_layout(found, spec):
                        raise ValueError(f"system {i} is laid out on a {found}, not on the batch's {spec}")
                spec = spec or found
                if pattern is None and A.format in ("csr", "csc"):
                    pattern = StencilPattern(A, spec)
            if out is None:
                n_rows = V.shape[0]
                out = pages.empty((len(matrices) * n_rows, *V.shape[1:]), dtype)
                mine = out[:n_rows]
            if V is not mine:
                mine[...] = V
        return spec, pattern, out
    dtype = np.result_type(*[_engine_dtype(V.dtype) for V in rows])
    out = pages.empty((sum(V.shape[0] for V in rows), *rows[0].shape[1:]), dtype)
    return spec, pattern, np.concatenate(rows, axis=0, out=out, casting="same_kind")


def factorize_batch(matrices, *, backend=None, factor_dtype=None, **layout):
    """Factorize many systems of one grid layout together.

    Parameters
    ----------
    matrices : sequence of sparse matrices, or array of shape (B, H, W, [k, k,] 3, 3)
        ``B`` matrices with one layout (grid, mask, components, radius: found from the first,
        or given by ``layout``), or ``B`` stencil arrays (see :func:`factorize_stencil`).
    backend, factor_dtype
        As for :func:`factorize`.
    **layout
        ``grid``, ``order``, ``pixels``, ``mask``, ``components``, ``numbering``, ``radius``
        as for :func:`factorize`.

    Returns
    -------
    GridFactor
        With ``batch == B``: ``solve(b)`` takes ``b`` of shape (B, n) or (B, n, k) (``b[t]``
        for system ``t``), ``slogdet()`` returns one value per system,
        ``refactorize_batch(matrices)`` takes new values.  A system that is singular makes
        the whole batch raise :class:`SingularMatrixError`.

    Examples
    --------
    >>> import numpy as np
    >>> from ssi_sparse import factorize_batch
    >>> from ssi_sparse.problems import diffusion_2d
    >>> rng = np.random.default_rng(0)
    >>> systems = [diffusion_2d(32, 32, rng.uniform(0.5, 2.0, (32, 32))) for _ in range(8)]
    >>> lu = factorize_batch(systems)
    >>> b = np.ones((8, 32 * 32))
    >>> x = lu.solve(b)
    >>> x.shape, bool(max(np.linalg.norm(A @ xt - 1) for A, xt in zip(systems, x)) < 1e-10)
    ((8, 1024), True)
    """
    from .factor import GridFactor

    spec, pattern, V = batch_stencils(matrices, hints=layout)
    batch = V.shape[0] // (spec.n_nodes * spec.engine_components)
    chosen = select_backend(backend, V)
    return GridFactor(spec, V, pattern, chosen, factor_dtype, batch=batch)
