"""GPU benchmark: ssi_sparse's CuPy backend against cupyx, cuDSS (nvmath) and SciPy on the host.

    python bench/bench_gpu.py [--sizes 257 513 1025 2049 2561 4097] [--dtypes float64 float32]
                              [--json bench/results/gpu.json] [--budget 300]

Problems: 5-point Dirichlet Laplacian and 9-point variable-coefficient SPD (as bench_cpu.py).
Per size and dtype: ssi_sparse first call (detection + plan + numeric), cached factorization
(plan reused), reused solve, total (factorize + solve), residual, peak GPU memory (CuPy pool),
all with warm-up and stream synchronisation; baselines where they fit in time: cupyx
``spsolve`` (sparse QR, one column at a time; up to 513 by default), cuDSS through
``nvmath.sparse.advanced.DirectSolver`` when importable, SciPy ``spsolve`` on the host up to
1025.  Sizes that do not fit in GPU memory are skipped with the reason.  Stops starting new
sizes once ``--budget`` seconds have passed.

Never run on a GPU by its author (no device was available): expect to fix small API details
on the first run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import ssi_sparse  # noqa: E402
from ssi_sparse._planning.plan import DEFAULT_LEAF_CELLS, build_plan  # noqa: E402
from ssi_sparse.problems import diffusion_2d, random_spd_9pt  # noqa: E402

PROBLEMS = {"laplace5": lambda N: diffusion_2d(N, N), "varcoef9": lambda N: random_spd_9pt(N, N, seed=2024)}


def timed(fn, cp):
    cp.cuda.get_current_stream().synchronize()
    t = time.perf_counter()
    out = fn()
    cp.cuda.get_current_stream().synchronize()
    return time.perf_counter() - t, out


def rel_res(A, x, b):
    return float(np.linalg.norm(A @ x - b) / np.linalg.norm(b))


def run_ssi(A, b, cp):
    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    b_gpu = cp.asarray(b)
    build_plan.cache_clear()
    t_first, lu = timed(lambda: ssi_sparse.factorize(A, backend="gpu"), cp)
    t_factor, lu = timed(lambda: ssi_sparse.factorize(A, backend="gpu"), cp)
    timed(lambda: lu.solve(b_gpu), cp)  # warm-up
    t_solve = min(timed(lambda: lu.solve(b_gpu), cp)[0] for _ in range(3))
    x = cp.asnumpy(lu.solve(b_gpu))
    return {
        "factor_first_s": t_first,
        "factor_s": t_factor,
        "solve_s": t_solve,
        "total_s": t_factor + t_solve,
        "residual": rel_res(A, x, b),
        "peak_gpu_mib": pool.total_bytes() / 2**20,
    }


def run_cupyx(A, b, cp):
    import cupyx.scipy.sparse as csp
    import cupyx.scipy.sparse.linalg as cpla

    Ag, bg = csp.csr_matrix(A), cp.asarray(b)
    t, x = timed(lambda: cpla.spsolve(Ag, bg), cp)
    return {"total_s": t, "residual": rel_res(A, cp.asnumpy(x), b)}


def run_cudss(A, b, cp):
    import cupyx.scipy.sparse as csp
    import nvmath.sparse.advanced as nsa

    Ag, bg = csp.csr_matrix(A), cp.asarray(b)

    def all_phases():
        with nsa.DirectSolver(Ag, bg) as solver:
            solver.plan()
            solver.factorize()
            return solver.solve()

    timed(all_phases, cp)  # warm-up (library initialisation)
    t, x = timed(all_phases, cp)
    return {"total_s": t, "residual": rel_res(A, cp.asnumpy(x), b)}


def run_scipy(A, b):
    import scipy.sparse.linalg as spla

    t = time.perf_counter()
    x = spla.spsolve(A.tocsc(), b)
    return {"total_s": time.perf_counter() - t, "residual": rel_res(A, x, b)}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[257, 513, 1025, 2049, 2561, 4097])
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    p.add_argument("--cupyx-max", type=int, default=513)
    p.add_argument("--scipy-max", type=int, default=1025)
    p.add_argument("--budget", type=float, default=300.0, help="seconds before no new size starts")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    import cupy as cp

    dev = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    free, total = cp.cuda.runtime.memGetInfo()
    print(f"GPU: {dev['name'].decode()}, {total / 2**30:.0f} GiB; cupy {cp.__version__}, numpy {np.__version__}")
    try:
        import nvmath  # noqa: F401

        has_cudss = True
    except Exception as exc:
        has_cudss = False
        print(f"cuDSS (nvmath): not available ({type(exc).__name__})")
    start = time.perf_counter()
    rows = []
    for name, make in PROBLEMS.items():
        for dtype in args.dtypes:
            for N in args.sizes:
                if time.perf_counter() - start > args.budget:
                    print(f"budget of {args.budget:.0f} s spent: stopping before {name} {dtype} N={N}")
                    break
                plan = build_plan(N, N, DEFAULT_LEAF_CELLS)
                need = plan.memory_bytes(np.dtype(dtype).itemsize, True)
                free, _ = cp.cuda.runtime.memGetInfo()
                if need > 0.9 * free:
                    print(f"{name} {dtype} N={N}: skipped, needs ~{need / 2**30:.1f} GiB of {free / 2**30:.1f} free")
                    continue
                A = make(N).astype(dtype)
                b = np.random.default_rng(0).standard_normal(N * N).astype(dtype)
                row = {"problem": name, "dtype": dtype, "N": N, "ssi": run_ssi(A, b, cp)}
                if N <= args.cupyx_max:
                    row["cupyx"] = _guard(run_cupyx, A, b, cp)
                if has_cudss:
                    row["cudss"] = _guard(run_cudss, A, b, cp)
                if N <= args.scipy_max and dtype == "float64":
                    row["scipy"] = _guard(run_scipy, A, b)
                rows.append(row)
                _print_row(row)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"gpu": dev["name"].decode(), "rows": rows}, fh, indent=1)


def _guard(fn, *a):
    try:
        return fn(*a)
    except Exception as exc:  # a baseline that fails must not stop the benchmark
        return {"error": f"{type(exc).__name__}: {exc}"[:200]}


def _print_row(row):
    s = row["ssi"]
    line = (f"{row['problem']:9s} {row['dtype']:8s} N={row['N']:5d}  ssi first {s['factor_first_s'] * 1e3:9.1f} ms"
            f"  factor {s['factor_s'] * 1e3:8.1f} ms  solve {s['solve_s'] * 1e3:7.2f} ms"
            f"  total {s['total_s'] * 1e3:8.1f} ms  res {s['residual']:.1e}  peak {s['peak_gpu_mib']:.0f} MiB")
    for key in ("cupyx", "cudss", "scipy"):
        if key in row:
            r = row[key]
            line += (f" | {key} {r['total_s'] * 1e3:.0f} ms ({r['total_s'] / s['total_s']:.0f}x)"
                     if "total_s" in r else f" | {key} failed: {r['error']}")
    print(line, flush=True)


if __name__ == "__main__":
    main()
