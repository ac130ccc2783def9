"""The factor object: detection + plan + numeric factorization, reusable for many solves."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator

from .._engine import pages
from .._backend import Backend, is_cupy_array, select_backend
from .._engine.walks import NumericFactor, factorize_values, selected_inverse, solve_values
from .._errors import SingularMatrixError
from .._structure.grid import GridSpec, StencilPattern, grid_stencil
from .._planning.masked_plan import masked_plan_for
from .._planning.plan import DEFAULT_LEAF_CELLS, build_plan
from .._engine.refine import refine, refuse_unsolved
from .._structure.stencil import (
    equilibrate,
    is_hermitian,
    scale_couplings,
    stencil_matvec,
    stencil_max_abs,
    stencil_norm_inf,
    stencil_row_sums,
    transpose_stencil,
)

__all__ = ["GridFactor", "factorize"]

_SUPPORTED = tuple(np.dtype(c) for c in "fdFD")

#: Iterative-refinement steps a solve may take before it reports failure.
MAX_REFINE_STEPS = 3
#: ... and with a lower-precision factorization (each step gains about 7 digits at best).
MIXED_REFINE_STEPS = 10

#: Lower precisions a factorization may run in, per working dtype.
_LOWER = {np.dtype(np.float64): np.dtype(np.float32), np.dtype(np.complex128): np.dtype(np.complex64)}


def _factor_dtype(dtype, factor_dtype):
    """The dtype the numeric factorization runs in: ``dtype`` or its single-precision twin."""
    if factor_dtype is None or np.dtype(factor_dtype) == dtype:
        return dtype
    factor_dtype = np.dtype(factor_dtype)
    if _LOWER.get(dtype) != factor_dtype:
        raise ValueError(
            f"factor_dtype {factor_dtype} is not a lower precision of the matrix dtype {dtype}: "
            "use float32 for float64 matrices, complex64 for complex128 ones"
        )
    return factor_dtype


def available_memory() -> int | None:
    """Bytes the OS can still give this process (Linux MemAvailable, plus the freed buffers
    the engine keeps for reuse), or None if unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 + pages.idle_bytes()
    except OSError:
        pass
    return None


def check_memory(needed: int, what: str, device_free: int | None = None) -> None:
    """Refuse, before allocating, a factorization that cannot fit in (device) memory."""
    available = available_memory() if device_free is None else device_free
    where = "memory" if device_free is None else "GPU memory"
    if available is not None and needed > available:
        raise MemoryError(
            f"factorizing {what} needs about {needed / 2**30:.1f} GiB, but only "
            f"{available / 2**30:.1f} GiB of {where} is available"
        )


def _check_fits(spec: GridSpec, dtype, factor_dtype, hermitian: bool, backend: Backend, batch: int = 1) -> None:
    """Refuse (MemoryError) a factorization on ``spec`` that cannot fit, from its closed-form
    estimate: nothing is planned or allocated first."""
    need = spec.memory_estimate(dtype, hermitian, batch, factor_dtype)
    check_memory(need, f"a {spec}", backend.free_memory())


def _engine_dtype(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype in _SUPPORTED:
        return dtype
    if dtype.kind in "biu":
        return np.dtype(np.float64)  # as SciPy's solvers do
    if dtype == np.float16:
        return np.dtype(np.float32)
    raise TypeError(
        f"unsupported matrix dtype {dtype}: use float32, float64, complex64 or complex128"
    )


def _per_system(ids, batch, stride):
    """``ids`` of one system, repeated for every system of a batch (system t adds t*stride)."""
    if batch == 1:
        return ids
    return (np.arange(batch)[:, None] * stride + ids[None, :]).reshape(-1)


class GridFactor:
    """A factorization of a grid-structured matrix, reusable for many right-hand sides.

    Build it with :func:`factorize`.  ``solve(b, trans)`` costs one up and one down sweep of
    batched matrix products; it never refactors.

    Attributes
    ----------
    shape : tuple of int
        ``(n, n)``.
    dtype : numpy.dtype
        dtype of the factorization (float32, float64, complex64 or complex128).
    grid : GridSpec
        The grid the matrix was solved on.
    factor_dtype : numpy.dtype
        dtype the factorization is stored in (``dtype``, or single precision when
        ``factorize(..., factor_dtype=)`` asked for mixed precision).
    hermitian : bool
        Whether the matrix was found exactly Hermitian (then ``R_S = S_R^H`` is not stored
        and a transposed solve is a conjugated plain one).
    """

    def __init__(self, spec: GridSpec, V, pattern=None, backend=None, factor_dtype=None, batch=None, owned=False):
        self.grid = spec
        self.batch = batch
        self._pattern = pattern
        self._requested_factor_dtype = factor_dtype
        self.backend = backend or Backend("cpu")
        self._xp = self.backend.xp
        n = spec.n_unknowns
        self.shape = (n, n)
        B = batch or 1
        h, w, k = spec.engine_dims
        # the stencil operations see a batch as one grid of B * h rows: nothing couples the
        # systems (no stencil entry leaves its grid), so products, scaling and tests are exact
        self._dims = (B * h, w, k)
        self._nodes = self._absent = self._present = None
        if spec.nodes is not None:
            absent = np.ones(spec.n_nodes, dtype=bool)
            absent[spec.nodes] = False
            self._present = ~absent  # (one system's nodes: what a masked plan keeps)
            node, a = np.divmod(np.flatnonzero(absent), k)
            diagonal = (node * k + a) * k + a  # stencil row of each absent node's diagonal
            self._absent = self.backend.to_device(_per_system(diagonal, B, h * w * k * k))
            self._nodes = self.backend.to_device(_per_system(spec.nodes, B, spec.n_nodes))
        self._factorize_stencil(V, owned=owned)

    def __getstate__(self):
        # pickles (Dask, multiprocessing): the array namespace is a module, restored from the
        # backend; the plan travels as its key (see Plan.__reduce__)
        state = dict(self.__dict__)
        del state["_xp"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._xp = self.backend.xp

    def _factorize_stencil(self, V, full_precision=False, owned=False):
        """Numeric phase for the (host) stencil values ``V`` on this factor's grid and plan;
        ``owned``: ``V`` is this factor's to keep and edit (built from the matrix here)."""
        xp = self._xp
        dtype = np.dtype(V.dtype)
        factor_dtype = dtype if full_precision else _factor_dtype(dtype, self._requested_factor_dtype)
        V = self.backend.to_device(V)
        if not bool(xp.all(xp.isfinite(V))):
            raise ValueError("matrix contains NaN or Inf")
        V = self._with_absent_nodes(V, owned)
        dims = self._dims
        Vs, scale = equilibrate(xp, V, dims)
        if scale is None:
            raise SingularMatrixError(
                "matrix is exactly singular: it has an all-zero row", exact=True
            )
        hermitian = is_hermitian(xp, Vs, dims)
        _check_fits(self.grid, dtype, factor_dtype, hermitian, self.backend, self.batch or 1)
        numeric = None
        # a refactorization writes its factors into the storage of the one it replaces (no
        # fresh memory to touch: at 1025^2 ~540 MB); if it fails, that one is recomputed
        # from its own values, so a failed refactorization still leaves the factor intact
        reuse = getattr(self, "_numeric", None) if xp is np else None
        try:
            if factor_dtype != dtype:
                try:
                    numeric = self._eliminate(xp.astype(Vs, factor_dtype), hermitian, reuse)
                except SingularMatrixError:
                    factor_dtype = dtype  # singular in single precision: the full one decides
            if numeric is None:
                numeric = self._eliminate(Vs, hermitian, reuse)
        except BaseException:
            if reuse is not None:
                self._recompute()
            raise
        self._V, self._numeric, self._scale = V, numeric, scale
        self._Vt = None  # transposed stencil, built on the first transposed solve
        row_sums = stencil_row_sums(xp, V, dims)
        # reciprocal row norms of op(A) (the transposed ones built on the first such solve)
        self._row_scale = {"N": 1.0 / xp.reshape(row_sums, (-1, 1))}
        self._norm_inf = float(xp.max(row_sums))
        self.dtype = dtype
        self.factor_dtype = factor_dtype
        self.hermitian = numeric.hermitian

    def _plan(self):
        g = self.grid
        plan = build_plan(*g.engine_shape, DEFAULT_LEAF_CELLS, g.engine_components, self.batch or 1)
        if self._present is None or self.batch is not None:
            return plan
        return masked_plan_for(plan, self._present)  # the top levels carry only the unknowns

    def _working_precision_numeric(self) -> NumericFactor:
        """The factorization in the matrix's own precision: the stored one, or (mixed
        precision) one made for the caller and not kept."""
        if self.factor_dtype == self.dtype:
            return self._numeric
        Vs, _ = equilibrate(self._xp, self._V, self._dims)
        return self._eliminate(Vs, self._numeric.hermitian)

    def _eliminate(self, Vs, hermitian, reuse=None) -> NumericFactor:
        """Numeric factorization of the equilibrated stencil ``Vs`` (in its dtype), into the
        storage of ``reuse`` (a factorization given up) where it fits."""
        a_norm = stencil_norm_inf(self._xp, Vs, self._dims)
        masked = self._absent is not None and self._absent.size > 0
        return factorize_values(self._plan(), Vs, hermitian, a_norm, self._xp, masked=masked, reuse=reuse)

    def _recompute(self) -> None:
        """The committed factorization again from its own values (a failed refactorization
        overwrote its storage): the same arithmetic, the same factors."""
        Vs, _ = equilibrate(self._xp, self._V, self._dims)
        self._numeric = self._eliminate(self._xp.astype(Vs, self.factor_dtype), self._numeric.hermitian)

    def slogdet(self):
        """Sign and natural log of the absolute value of ``det(A)``, from the factorization.

        As :func:`numpy.linalg.slogdet`: ``det(A) = sign * exp(logabsdet)``, with ``sign``
        +1 or -1 for real matrices and a complex number of modulus 1 for complex ones (a
        nonsingular factor never has sign 0).  For Gaussian Markov random fields and
        Gaussian-process likelihoods, where ``det`` itself under- or overflows.

        Returns
        -------
        sign : scalar of the factor's dtype (batches: an array, one per system)
        logabsdet : float (batches: float64 array)
            In double precision.  A mixed-precision factor (``factor_dtype=``) computes it
            from a full-precision factorization, made for this call and not kept.

        Examples
        --------
        >>> import numpy as np
        >>> from ssi_sparse import factorize
        >>> from ssi_sparse.problems import diffusion_2d
        >>> A = diffusion_2d(12, 9)
        >>> sign, logdet = factorize(A).slogdet()
        >>> bool(np.isclose(logdet, np.linalg.slogdet(A.toarray())[1], rtol=1e-12))
        True
        """
        xp = self._xp
        sign, logabs = self._working_precision_numeric().slogdet(xp)
        B = self.batch or 1
        # A_engine = S^-1 As S^-1 (S the equilibration), A_engine = A (+) d I on absent nodes
        scale = self.backend.to_host(self._scale).astype(np.float64)
        logabs = logabs - 2.0 * np.sum(np.log(scale).reshape(B, -1), axis=1)
        if self._absent is not None and self._absent.shape[0]:
            d = np.abs(self.backend.to_host(self._V[self._absent, 4])).reshape(B, -1)
            logabs = logabs - np.sum(np.log(d), axis=1)
        dropped = self._numeric.plan.dropped
        if dropped is not None:  # absent nodes the masked plan never factors (pivots d s^2)
            k = self.grid.engine_components
            rows = self.backend.to_device(dropped * k + dropped % k)  # their diagonals' rows
            d = np.abs(self.backend.to_host(self._V[rows, 4]))
            logabs = logabs + np.sum(np.log(d) + 2.0 * np.log(scale[dropped]))
        sign = sign / np.abs(sign)
        if self.dtype.kind == "f":
            sign = np.where(sign.real > 0, 1.0, -1.0)
        sign = sign.astype(self.dtype)
        if self.batch is None:
            return sign[0], float(logabs[0])
        return sign, logabs

    def inverse_entries(self, rows, cols):
        """Entries ``(A^-1)[rows[e], cols[e]]`` of the inverse, where unknowns ``rows[e]``
        and ``cols[e]`` are stencil neighbours (or equal): selected inversion.

        Marginal variances of a Gaussian Markov random field (``rows = cols = arange(n)``),
        the gradient of ``log|det A|`` (``(A^-T)`` on ``A``'s pattern), covariances between
        neighbours.  The first call walks the factorization once more, top-down (batched
        products, on the CPU a few times the factorization's time), then the values are
        cached on the factor; ``A^-1`` is never formed.  Batch factors return one row per
        system.

        Raises
        ------
        ValueError
            If a pair is not a pair of stencil neighbours.

        Examples
        --------
        >>> import numpy as np
        >>> from ssi_sparse import factorize
        >>> from ssi_sparse.problems import diffusion_2d
        >>> A = diffusion_2d(20, 30)
        >>> i = np.arange(A.shape[0])
        >>> variances = factorize(A).inverse_entries(i, i)       # diag(A^-1)
        >>> bool(np.allclose(variances, np.diag(np.linalg.inv(A.toarray()))))
        True
        """
        xp = self._xp
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        n = self.shape[0]
        if rows.shape != cols.shape or rows.ndim != 1:
            raise ValueError("rows and cols must be 1-D arrays of one length")
        if rows.size and (min(rows.min(), cols.min()) < 0 or max(rows.max(), cols.max()) >= n):
            raise ValueError(f"unknown numbers must lie in [0, {n})")
        slots = self.grid.entry_slots(rows, cols)
        if np.any(slots < 0):
            raise ValueError("inverse_entries reads A^-1 only between stencil neighbours")
        Z = self._inverse_on_pattern()
        per_system = self.grid.n_nodes * self.grid.engine_components * 9
        B = self.batch or 1
        flat = xp.reshape(Z, (B, per_system))
        out = xp.take(flat, self.backend.to_device(slots), axis=1)
        return self.backend.to_host(out if self.batch else out[0])

    def _inverse_on_pattern(self):
        """``A^-1`` on the stencil pattern (stencil-array layout), computed once per factor."""
        if getattr(self, "_Z", None) is None or self._Z[0] is not self._numeric:
            xp = self._xp
            # As = S A S, so A^-1 = S As^-1 S
            Z = scale_couplings(xp, selected_inverse(self._working_precision_numeric(), xp), self._scale, self._dims)
            self._Z = (self._numeric, Z)
        return self._Z[1]

    def _with_absent_nodes(self, V, owned=False):
        """Nodes that are not unknowns (masked pixels, the empty half of an odd side's 2x2
        cells) become decoupled unknowns ``d x = 0``, ``d`` the largest entry of ``A`` (keeps
        ``A``'s norm, so the refinement's tests are unchanged).  A copy unless ``owned``."""
        if self._absent is None or self._absent.size == 0:
            return V
        xp = self._xp
        if not owned:
            V = xp.asarray(V, copy=True)
        d = stencil_max_abs(xp, V, self._dims)
        V[self._absent, 4] = d if d > 0 else 1.0
        return V

    def _embed(self, B):
        """(n, m) values of the unknowns -> (nodes, m) on the engine grid (zero elsewhere)."""
        if self._nodes is None:
            return B
        xp = self._xp
        full = xp.zeros((self.grid.n_nodes * (self.batch or 1), B.shape[1]), dtype=B.dtype)
        full[self._nodes, ...] = B
        return full

    def _extract(self, X):
        return X if self._nodes is None else self._xp.take(X, self._nodes, axis=0)

    def refactorize(self, A):
        """Factorize new values with the same grid, reusing detection and the plan.

        For time stepping and Newton iterations: when ``A`` has the same CSR/CSC sparsity
        pattern (``indptr`` and ``indices``) as the matrix this factor was built from, its
        values go straight into the stencil array; otherwise ``A`` is checked against this
        factor's grid.  ``A`` may also be a stencil array of the grid's shape (see
        :func:`factorize_stencil`).  Updates the factor in place and returns it: the new
        factors are written into the old ones' storage (no new memory for them, no pages to
        touch).  A refactorization that fails (a singular matrix) leaves the factor as it
        was: if the old factors were overwritten already, they are recomputed.

        Raises
        ------
        NotGridStructuredError
            If ``A`` does not fit this factor's grid.
        SingularMatrixError
            If the new values are singular (the factor keeps the old ones).
        """
        if self.batch is not None:
            raise ValueError("a batch factor takes new values with refactorize_batch")
        if not sp.issparse(A) and np.ndim(A) in (4, 6):  # a stencil array (factorize_stencil)
            from .from_stencil import _engine_rows

            spec, V = _engine_rows(A)
            if self.grid.nodes is not None or spec.engine_dims != self.grid.engine_dims:
                raise ValueError(f"stencil array of shape {np.shape(A)} does not fit the factor's {self.grid}")
            self._factorize_stencil(V.astype(_engine_dtype(V.dtype), copy=False))
            return self
        if A.shape != self.shape:
            raise ValueError(f"matrix shape {A.shape} differs from the factor's {self.shape}")
        if is_cupy_array(A):
            A = A.get()
        dtype = _engine_dtype(A.dtype)
        V = self._pattern.stencil(A) if self._pattern is not None and self._pattern.matches(A) else None
        if V is None:
            g = self.grid
            spec, V = grid_stencil(A, grid=g.shape, order=g.order, pixels=g.pixels, components=g.components,
                                   numbering=g.numbering, radius=g.radius)  # fmt: skip
            if sp.issparse(A) and A.format in ("csr", "csc"):
                self._pattern = StencilPattern(A, spec)
        self._factorize_stencil(V.astype(dtype, copy=False), owned=True)  # built here from A
        return self

    def refactorize_batch(self, matrices):
        """New values for every system of a batch factor (:func:`factorize_batch`): a
        sequence of ``batch`` matrices, or stencil arrays, on the batch's layout.  Updates the
        factor in place and returns it."""
        from .batch import batch_stencils

        if self.batch is None:
            raise ValueError("refactorize_batch needs a batch factor (factorize_batch); use refactorize")
        _, self._pattern, V = batch_stencils(matrices, self.grid, self._pattern)
        if V.shape[0] != self._V.shape[0]:
            raise ValueError(f"the factor holds {self.batch} systems, got {len(matrices)}")
        self._factorize_stencil(V)
        return self

    def aslinearoperator(self):
        """``A^-1`` as a :class:`scipy.sparse.linalg.LinearOperator`.

        Implements ``matvec``/``matmat`` (one solve for all columns) and the adjoint
        (``A^-H``), so it serves as ``M=`` in :func:`scipy.sparse.linalg.cg` or ``gmres`` and
        as ``OPinv`` in :func:`scipy.sparse.linalg.eigsh`.
        """
        return _InverseOperator(self, "N")

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored blocks of the factorization."""
        return self._numeric.nbytes()

    @property
    def min_rcond(self) -> float:
        """Smallest reciprocal condition number of any eliminated block (after scaling)."""
        return self._numeric.min_rcond

    def __repr__(self) -> str:
        batch = "" if self.batch is None else f"batch of {self.batch} "
        return (
            f"<GridFactor {batch}{self.shape[0]}x{self.shape[1]} {self.dtype} on a {self.grid}, "
            f"{self.nbytes / 2**20:.1f} MiB>"
        )

    def solve(self, b, trans="N"):
        """Solve ``op(A) x = b``.

        Parameters
        ----------
        b : array_like, shape (n,) or (n, k)
            Right-hand side(s); all columns are solved in one pass.  A batch factor
            (:func:`factorize_batch`) takes ``(B, n)`` or ``(B, n, k)``: ``b[t]`` for system
            ``t``.
        trans : {'N', 'T', 'H'}
            ``A x = b``, ``A^T x = b`` or ``A^H x = b``.

        Returns
        -------
        x : ndarray, shape of ``b``
            dtype is the promotion of the factor's and ``b``'s dtypes.

        Raises
        ------
        SingularMatrixError
            If, after iterative refinement, ``x`` still does not satisfy the equations (its
            row-scaled residual exceeds ``eps**(1/4)`` of ``b``'s): the matrix is singular or
            too ill-conditioned for its precision, and no finite answer is returned.
        """
        xp = self._xp
        if trans not in ("N", "T", "H"):
            raise ValueError(f"trans must be 'N', 'T' or 'H', got {trans!r}")
        on_host = not is_cupy_array(b)  # NumPy in, NumPy out; CuPy stays on the GPU
        b = self.backend.to_device(np.asarray(b) if on_host else b)
        n = self.shape[0]
        if self.batch is not None:
            if b.ndim not in (2, 3) or b.shape[:2] != (self.batch, n):
                raise ValueError(f"right-hand side of a batch must have shape ({self.batch}, {n}) or "
                                 f"({self.batch}, {n}, k), got {tuple(b.shape)}")  # fmt: skip
            n = self.batch * n  # the systems' unknowns, one after another
        elif b.ndim not in (1, 2) or b.shape[0] != n:
            raise ValueError(
                f"right-hand side must have shape ({n},) or ({n}, k), got {tuple(b.shape)}"
            )
        if b.dtype.kind not in "biufc":
            raise TypeError(f"unsupported right-hand side dtype {b.dtype}")
        out_dtype = np.promote_types(self.dtype, b.dtype)
        if out_dtype.kind == "f" and out_dtype.itemsize < 4:
            out_dtype = np.dtype(np.float32)
        B = xp.reshape(b, (n, -1))
        if B.shape[1] == 0:
            return np.zeros(b.shape, dtype=out_dtype) if on_host else xp.zeros(b.shape, dtype=out_dtype)
        if not bool(xp.all(xp.isfinite(B))):
            raise ValueError("right-hand side contains NaN or Inf")
        if self.dtype.kind == "f" and B.dtype.kind == "c":
            # real factor, complex data: solve real and imaginary parts as extra columns
            k = B.shape[1]
            both = xp.concat([xp.real(B), xp.imag(B)], axis=1)
            X = self._extract(self._solve_refined(self._embed(xp.astype(both, self.dtype)), trans))
            X = X[:, :k] + 1j * X[:, k:]
        else:
            X = self._extract(self._solve_refined(self._embed(xp.astype(B, self.dtype)), trans))
        X = xp.reshape(xp.astype(X, out_dtype), b.shape)
        return self.backend.to_host(X) if on_host else X

    def _solve_scaled(self, B, trans):
        # A = S^-1 As S^-1 with As = S A S, so op(A)^-1 b = S op(As)^-1 S b (S real diagonal)
        xp = self._xp
        s = self._scale[:, None]
        rhs = B * s
        # the arrays made here are this solve's own: scaled in place (each copy of a 1025^2
        # right-hand side is 8 MB of fresh memory, ~2 ms)
        if self.factor_dtype != self.dtype:
            # lower-precision factor: scale columns into its range, solve, back to working
            col = xp.max(xp.abs(rhs), axis=0)
            col = xp.where(col > 0, col, 1.0)
            rhs /= col
            X = xp.astype(solve_values(self._numeric, xp.astype(rhs, self.factor_dtype), trans, xp), self.dtype)
            X *= col
        else:
            X = solve_values(self._numeric, rhs, trans, xp)
        X *= s
        return X

    def _op_matvec(self, x, trans):
        xp = self._xp
        if trans == "N":
            return stencil_matvec(xp, self._V, self._dims, x)
        # op(A) x = (A^T x) or (A^H x): conj trick: A^H x = conj(A^T conj(x))
        Vt = self._transposed_stencil()
        y = stencil_matvec(xp, Vt, self._dims, xp.conj(x) if trans == "H" else x)
        return xp.conj(y) if trans == "H" else y

    def _inverse_row_norms(self, trans):
        """(n, 1) reciprocal absolute row sums of op(A), computed once per factor."""
        key = "N" if trans == "N" else "T"
        if key not in self._row_scale:
            xp = self._xp
            V = self._V if key == "N" else self._transposed_stencil()
            self._row_scale[key] = 1.0 / xp.reshape(stencil_row_sums(xp, V, self._dims), (-1, 1))
        return self._row_scale[key]

    def _transposed_stencil(self):
        if self._Vt is None:
            self._Vt = transpose_stencil(self._xp, self._V, self._dims)
        return self._Vt

    def _solve_refined(self, B, trans):
        """Solve, then refine with the exact residual until the backward error is tiny; an
        answer that does not satisfy the equations is refused (:mod:`ssi_sparse._engine.refine`).  A
        lower-precision factor whose refinement does not reach working accuracy is replaced
        by a full-precision one, for good."""
        xp = self._xp
        eps = float(np.finfo(self.dtype).eps)
        mixed = self.factor_dtype != self.dtype
        X, R, eta, steps = refine(
            xp, lambda rhs: self._solve_scaled(rhs, trans), lambda x: self._op_matvec(x, trans), B,
            self._norm_inf, eps, MIXED_REFINE_STEPS if mixed else MAX_REFINE_STEPS,
        )  # fmt: skip
        if mixed and not (eta <= 8 * eps):
            self._factorize_stencil(self._V, full_precision=True)
            return self._solve_refined(B, trans)
        refuse_unsolved(xp, R, B, self._inverse_row_norms(trans), self.dtype, steps, eta)
        return X


def factorize(A, *, grid=None, order=None, pixels=None, mask=None, components=None, numbering=None,
              radius=None, backend=None, factor_dtype=None):
    """Factorize a grid-structured sparse matrix with the Schwarz-Schur engine.

    Parameters
    ----------
    A : sparse matrix or array, shape (n, n)
        A stencil operator on an H x W grid (3x3: 5- or 9-point, 5x5: 13- or 25-point, any
        values; 1 to 4 unknowns per pixel found from the pattern, more when given).
    grid : tuple of int, optional
        ``(H, W)``; inferred when omitted.
    order : {'C', 'F'}, optional
        Pixel numbering, row-major (default) or column-major.
    pixels : array_like of int, optional
        A masked domain: unknown ``i`` sits on pixel ``pixels[i]`` of ``grid`` (pixels
        numbered in ``order``); the other pixels are not unknowns.  Any numbering of the
        unknowns.  Without ``grid``/``pixels``/``mask``, a masked grid whose unknowns are
        numbered in row-major or column-major order of their pixels (``np.flatnonzero(mask)``)
        is recognized from the sparsity pattern.
    mask : array_like of bool, shape (H, W), optional
        Instead of ``grid`` and ``pixels``: the unknowns are the ``True`` pixels, numbered in
        ``order``.
    components : int, optional
        Unknowns per pixel (optical flow's ``u, v``; a displacement field).
    numbering : {'pixel', 'component'}, optional
        With several components: ``'pixel'``-major ``[u0, v0, u1, v1, ...]`` or
        ``'component'``-major ``[u0, u1, ..., v0, v1, ...]``.
    radius : {1, 2}, optional
        Stencil radius: 3x3 neighbourhoods, or 5x5 (biharmonic, fourth-order differences;
        solved as a 3x3 stencil of 2x2 cells).
    backend : {'cpu', 'gpu'}, optional
        Where the numeric work runs: NumPy on the CPU or CuPy on a CUDA GPU (extra ``gpu``).
        Default: the ``SSI_SPARSE_BACKEND`` environment variable, else the GPU for a
        ``cupyx.scipy.sparse`` matrix and the CPU otherwise.  Solves return arrays of the
        library ``b`` came in.
    factor_dtype : dtype, optional
        Mixed precision: factor in ``float32`` (``complex64``) a ``float64`` (``complex128``)
        matrix, half the memory and about twice the dense rate, then refine every solve
        against the exact matrix to working accuracy (backward error <= 8 eps).  Where that
        refinement does not converge (the matrix is too ill-conditioned for single
        precision), the factor is recomputed in full precision (``factor_dtype`` attribute
        then equals ``dtype``) and the solve repeated: never an inaccurate answer.

    Returns
    -------
    GridFactor

    Raises
    ------
    NotGridStructuredError
        (a ``ValueError``) if ``A`` is not grid-structured (on the grid given, if any).
    SingularMatrixError
        If ``A`` is exactly or numerically singular.
    ValueError
        If ``A`` holds NaN or Inf.
    TypeError
        For unsupported dtypes.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from ssi_sparse import factorize
    >>> T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(30, 30))
    >>> A = sp.kronsum(T, T, format="csr")        # 5-point Laplacian, 30 x 30 grid
    >>> lu = factorize(A)
    >>> lu.grid.shape
    (30, 30)
    >>> b = np.ones(A.shape[0])
    >>> x = lu.solve(b)
    >>> bool(np.linalg.norm(A @ x - b) < 1e-10 * np.linalg.norm(b))
    True
    """
    chosen = select_backend(backend, A)
    if is_cupy_array(A):  # detection and the plan are host work; values go to the device
        A = A.get()
    dtype = _engine_dtype(A.dtype)
    lowest = _factor_dtype(dtype, factor_dtype)
    if grid is not None and pixels is None and len(grid) == 2 and grid[0] * grid[1] * (components or 1) == A.shape[0]:
        # a given grid that cannot fit is refused before detection reads the matrix
        radius_ = radius or 1
        given = GridSpec(tuple(grid), "C", f"{2 * radius_ + 1}x{2 * radius_ + 1}", None, components or 1, radius=radius_)
        _check_fits(given, dtype, lowest, True, chosen)
    spec, V = grid_stencil(A, grid=grid, order=order, pixels=pixels, mask=mask, components=components,
                           numbering=numbering, radius=radius)  # fmt: skip
    _check_fits(spec, dtype, lowest, True, chosen)  # before the stencil pattern and the factor
    pattern = StencilPattern(A, spec) if A.format in ("csr", "csc") else None
    return GridFactor(spec, V.astype(dtype, copy=False), pattern, chosen, factor_dtype, owned=True)



class _InverseOperator(LinearOperator):
    """``op(A)^-1`` of a GridFactor as a LinearOperator (``trans`` 'N' or 'H')."""

    def __init__(self, factor, trans):
        self.factor = factor
        self.trans = trans
        super().__init__(dtype=factor.dtype, shape=factor.shape)

    def _matvec(self, x):
        return self.factor.solve(np.ravel(x), trans=self.trans)

    def _matmat(self, X):
        return self.factor.solve(X, trans=self.trans)

    def _adjoint(self):
        return _InverseOperator(self.factor, "H" if self.trans == "N" else "N")
