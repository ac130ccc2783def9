"""Command line: ``ssi-sparse demo`` (or ``python -m ssi_sparse demo``) and ``ssi-sparse info``."""

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


def demo(size=1025, scipy_baseline=True, out=sys.stdout):
    import scipy.sparse.linalg as spla

    import ssi_sparse

    A, b = _demo_problem(size)
    print(f"ssi_sparse {ssi_sparse.__version__} demo: variable-coefficient diffusion, "
          f"{size} x {size} grid, n = {A.shape[0]:,}, nnz = {A.nnz:,}, float64, CPU", file=out)
    t0 = time.perf_counter()
    lu = ssi_sparse.factorize(A)
    t1 = time.perf_counter()
    x = lu.solve(b)
    t2 = time.perf_counter()
    x2 = lu.solve(2 * b)
    t3 = time.perf_counter()
    total = t2 - t0
    res = _residual(A, x, b)
    print(f"  grid detected      : {lu.grid}", file=out)
    print(f"  ssi_sparse factorize {t1 - t0:8.3f} s   solve {t2 - t1:6.3f} s   "
          f"total {total:8.3f} s   residual {res:.2e}", file=out)
    print(f"  reused solve         {t3 - t2:8.3f} s   (same factorization, new right-hand side; "
          f"residual {_residual(A, x2, 2 * b):.2e})", file=out)
    if scipy_baseline:
        t0 = time.perf_counter()
        xs = spla.spsolve(A.tocsc(), b)
        scipy_time = time.perf_counter() - t0
        print(f"  scipy spsolve        {scipy_time:8.3f} s{'':34}residual "
              f"{_residual(A, xs, b):.2e}", file=out)
        diff = np.max(np.abs(x - xs)) / np.max(np.abs(xs))
        print(f"  speed-up (factorize + solve vs spsolve): {scipy_time / total:.1f}x;"
              f"  max |x - x_scipy| / max |x_scipy| = {diff:.1e}", file=out)
    return res


def info(out=sys.stdout):
    import scipy

    import ssi_sparse

    print(f"ssi_sparse {ssi_sparse.__version__}", file=out)
    print(f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}", file=out)
    print(f"machine: {platform.machine()}, {os.cpu_count()} logical CPUs", file=out)
    print("backend: NumPy (CPU)", file=out)
    try:
        import cupy

        print(f"cupy {cupy.__version__}: {cupy.cuda.runtime.getDeviceCount()} GPU(s) visible "
              "(the GPU backend is not implemented yet; solves run on the CPU)", file=out)
    except Exception as exc:  # no CuPy or no driver: the CPU path is used
        print(f"cupy: not available ({type(exc).__name__})", file=out)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        if var in os.environ:
            print(f"{var}={os.environ[var]}", file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="ssi-sparse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="solve a real grid problem and compare with SciPy")
    p_demo.add_argument("--size", type=int, default=1025, help="grid side (default 1025)")
    p_demo.add_argument("--no-scipy", action="store_true", help="skip the SciPy baseline")
    sub.add_parser("info", help="versions and available backends")
    args = parser.parse_args(argv)
    if args.command == "demo":
        demo(args.size, not args.no_scipy)
    elif args.command == "info":
        info()
    return 0


if __name__ == "__main__":
    sys.exit(main())
