"""Command line: ``ssi-sparse demo | solve | info`` (also ``python -m ssi_sparse ...``)."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np


def _demo_problem(n, seed=0):
    """Variable-coefficient diffusion on an n x n image: a coefficient field with sharp
    edges spanning four decades, as in edge-aware smoothing or layered media."""
    from .problems import diffusion_2d

    y, x = np.mgrid[0:n, 0:n] / max(n - 1, 1)
    blobs = np.sin(9 * x) * np.cos(7 * y) + 0.5 * np.sin(23 * (x + y))
    coefficient = np.where(blobs > 0.2, 1e2, 1e-2) * np.exp(np.random.default_rng(seed).uniform(-1, 1, (n, n)))
    A = diffusion_2d(n, n, coefficient)
    b = np.random.default_rng(seed + 1).standard_normal(n * n)
    return A, b


def _residual(A, x, b):
    return float(np.linalg.norm(A @ x - b) / np.linalg.norm(b))


def demo(size=1025, scipy_baseline=True, out=None):
    import scipy.sparse.linalg as spla

    import ssi_sparse

    out = out or sys.stdout
    A, b = _demo_problem(size)
    print(f"ssi_sparse {ssi_sparse.__version__} demo: variable-coefficient diffusion, "
          f"{size} x {size} grid, n = {A.shape[0]:,}, nnz = {A.nnz:,}, float64", file=out)
    t0 = time.perf_counter()
    lu = ssi_sparse.factorize(A)
    t1 = time.perf_counter()
    x = lu.solve(b)
    t2 = time.perf_counter()
    x2 = lu.solve(2 * b)
    t3 = time.perf_counter()
    total = t2 - t0
    res = _residual(A, x, b)
    print(f"  grid detected      : {lu.grid}; backend: {lu.backend.name}", file=out)
    if lu.backend.name == "cpu":
        from ._engine.native import describe

        print(f"  CPU kernels        : {describe()}", file=out)
    print(f"  ssi_sparse factorize {t1 - t0:8.3f} s   solve {t2 - t1:6.3f} s   "
          f"total {total:8.3f} s   residual {res:.2e}", file=out)
    print(f"  reused solve         {t3 - t2:8.3f} s   (same factorization, new right-hand side; "
          f"residual {_residual(A, x2, 2 * b):.2e})", file=out)
    A_next = A * 1.5  # new values on the same pattern, as in time stepping or Newton
    t4 = time.perf_counter()
    lu.refactorize(A_next)
    t5 = time.perf_counter()
    x3 = lu.solve(b)
    total_again = time.perf_counter() - t4
    print(f"  refactorize          {t5 - t4:8.3f} s   (new values, same pattern: no detection, "
          f"no planning; residual {_residual(A_next, x3, b):.2e})", file=out)
    if scipy_baseline:
        t0 = time.perf_counter()
        xs = spla.spsolve(A.tocsc(), b)
        scipy_time = time.perf_counter() - t0
        print(f"  scipy spsolve        {scipy_time:8.3f} s{'':34}residual "
              f"{_residual(A, xs, b):.2e}", file=out)
        diff = np.max(np.abs(x - xs)) / np.max(np.abs(xs))
        print(f"  speed-up vs spsolve: {scipy_time / total:.1f}x first factorize + solve, "
              f"{scipy_time / total_again:.1f}x refactorize + solve;"
              f"  max |x - x_scipy| / max |x_scipy| = {diff:.1e}", file=out)
    return res


def _read_matrix_market(path, what):
    import scipy.io

    try:
        return scipy.io.mmread(path)
    except FileNotFoundError:
        raise SystemExit(f"ssi-sparse: cannot read {what} {path!r}: no such file") from None
    except Exception as exc:  # mmread raises ValueError/OSError/... on malformed input
        raise SystemExit(
            f"ssi-sparse: cannot read {what} {path!r} as Matrix Market: {exc}"
        ) from None


def _progress(message, out=None):
    """A one-line progress display with elapsed time, updated from a background thread."""
    import threading

    out = out or sys.stderr
    done = threading.Event()
    start = time.perf_counter()

    def tick():
        while not done.wait(0.5):
            print(f"\r{message} {time.perf_counter() - start:6.1f} s", end="", file=out, flush=True)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()

    def stop():
        done.set()
        thread.join()
        print(f"\r{message} {time.perf_counter() - start:6.1f} s", file=out, flush=True)

    return stop


def _read_system(matrix, rhs):
    """``(A, b)`` from Matrix Market files, checked (``SystemExit`` with the reason)."""
    import scipy.sparse as sp

    A = _read_matrix_market(matrix, "matrix")
    b = _read_matrix_market(rhs, "right-hand side")
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise SystemExit(f"ssi-sparse: matrix must be square, {matrix!r} is {A.shape[0]}x{A.shape[1]}")
    b = b.toarray() if sp.issparse(b) else np.asarray(b)
    if b.shape[0] != A.shape[0]:
        raise SystemExit(
            f"ssi-sparse: right-hand side has {b.shape[0]} rows, the matrix has {A.shape[0]}"
        )
    return sp.csr_array(A), b


def _write_answer(output, A, b, x, quiet, where=""):
    import scipy.io

    x = np.asarray(x).reshape(b.shape[0], -1)
    res = np.linalg.norm(A @ x - b.reshape(x.shape)) / max(np.linalg.norm(b), np.finfo(float).tiny)
    scipy.io.mmwrite(output, x)
    if not quiet:
        print(f"ssi-sparse: wrote {output} ({x.shape[0]}x{x.shape[1]}){where}, relative residual {res:.2e}",
              file=sys.stderr)  # fmt: skip
    return res


def _mpi_world_size() -> int:
    """Processes of the MPI job this one was launched in (1 outside mpiexec / srun), from the
    launchers' environment, so that a plain run never loads MPI."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


def solve_files(matrix, rhs, output, grid=None, order=None, quiet=False):
    """``x = A^-1 b`` from Matrix Market files, written to Matrix Market.  Under
    ``mpiexec -n P`` (P > 1) rank 0 reads the files and the grid is solved across the ranks
    (:func:`ssi_sparse.mpi.spsolve`)."""
    if _mpi_world_size() > 1:
        return _solve_files_mpi(matrix, rhs, output, grid, order, quiet)
    import ssi_sparse

    A, b = _read_system(matrix, rhs)
    spec = ssi_sparse.detect_grid(A, grid=grid, order=order)
    if grid is not None and spec is None:
        raise SystemExit(f"ssi-sparse: the matrix is not a 3x3 stencil on the {grid[0]}x{grid[1]} grid")
    label = f"factorizing on a {spec}" if spec is not None else "not grid-structured: SciPy spsolve"
    stop = (lambda: None) if quiet else _progress(f"ssi-sparse: {label} ...")
    try:
        x = ssi_sparse.spsolve(A, b, grid=grid, order=order or "C")
    finally:
        stop()
    return _write_answer(output, A, b, x, quiet)


def _solve_files_mpi(matrix, rhs, output, grid, order, quiet):
    from mpi4py import MPI

    from ssi_sparse import mpi

    comm = MPI.COMM_WORLD
    A = b = failure = None
    if comm.rank == 0:
        try:
            A, b = _read_system(matrix, rhs)
        except SystemExit as exc:
            failure = str(exc)
    failure = comm.bcast(failure, root=0)
    if failure is not None:
        raise SystemExit(failure if comm.rank == 0 else 1)  # the reason, printed once
    x = mpi.spsolve(A, b, comm=comm, grid=grid, order=order)
    if comm.rank == 0:
        return _write_answer(output, A, b, x, quiet, f", {comm.size} MPI ranks")
    return None


def _grid_arg(text):
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid must look like 480x640, got {text!r}") from None
    return (h, w)


def info(out=None):
    import scipy

    import ssi_sparse

    out = out or sys.stdout
    print(f"ssi_sparse {ssi_sparse.__version__}", file=out)
    print(f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}", file=out)
    print(f"machine: {platform.machine()}, {os.cpu_count()} logical CPUs", file=out)
    from ._backend import GPU_MIN_SIZE, cupy_available

    try:
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode() if cupy_available() else "no GPU"
        print(f"cupy {cupy.__version__}: {name}", file=out)
    except Exception as exc:  # no CuPy or no driver: the CPU path is used
        print(f"cupy: not available ({type(exc).__name__})", file=out)
    forced = os.environ.get("SSI_SPARSE_BACKEND")
    if forced:
        print(f"backend: {forced} (SSI_SPARSE_BACKEND)", file=out)
    elif cupy_available():
        print(f"backend: GPU (CuPy) for problems of {GPU_MIN_SIZE:,}+ unknowns, else NumPy (CPU)", file=out)
    else:
        print("backend: NumPy (CPU)", file=out)
    from ._engine.native import describe

    print(f"CPU kernels: {describe()}", file=out)
    print(f"threads: {os.cpu_count()} (engine pool; SSI_SPARSE_NUM_THREADS to change)", file=out)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if var in os.environ:
            print(f"{var}={os.environ[var]}", file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ssi-sparse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="solve a real grid problem and compare with SciPy")
    p_demo.add_argument("--size", type=int, default=1025, help="grid side (default 1025)")
    p_demo.add_argument("--no-scipy", action="store_true", help="skip the SciPy baseline")
    p_solve = sub.add_parser("solve", help="solve A x = b from Matrix Market files")
    p_solve.add_argument("matrix", help="A, Matrix Market (.mtx)")
    p_solve.add_argument("rhs", help="b, Matrix Market (.mtx), one or more columns")
    p_solve.add_argument("-o", "--output", required=True, help="where to write x (.mtx)")
    p_solve.add_argument("--grid", type=_grid_arg, help="HxW grid (detected when omitted)")
    p_solve.add_argument("--order", choices=["C", "F"], help="pixel numbering of --grid")
    p_solve.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    sub.add_parser("info", help="versions and available backends")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.size, not args.no_scipy)
    elif args.command == "solve":
        solve_files(args.matrix, args.rhs, args.output, args.grid, args.order, args.quiet)
    elif args.command == "info":
        info()
    return 0


if __name__ == "__main__":
    sys.exit(main())
