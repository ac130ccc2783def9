"""Measured factorization time at awkward grid sides (complements bench_sizes.py's flop model).

    PYTHONPATH=. python bench/bench_size_times.py [--sizes 1000 1024 1025 1026 1080 1100]

Prints, per N x N 5-point Laplacian (float64): plan build, numeric factorization (best of 2,
plan cached), and both normalized by N^3 against the best size in the run.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import ssi_sparse  # noqa: E402
from ssi_sparse._planning.plan import DEFAULT_LEAF_CELLS, build_plan  # noqa: E402
from ssi_sparse.problems import diffusion_2d  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 1024, 1025, 1026, 1080, 1100])
    args = p.parse_args()
    rows = []
    for N in args.sizes:
        A = diffusion_2d(N, N)
        build_plan.cache_clear()
        t = time.perf_counter()
        plan = build_plan(N, N, DEFAULT_LEAF_CELLS)
        plan_s = time.perf_counter() - t
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            ssi_sparse.factorize(A)
            best = min(best, time.perf_counter() - t)
        rows.append((N, plan_s, best, plan.flops(), len(plan.levels)))
    fastest = min(r[2] / r[0] ** 3 for r in rows)
    print(f"{'N':>5s} {'levels':>6s} {'plan s':>7s} {'factor s':>9s} {'s/N^3 vs best':>14s} {'GFLOP':>7s}")
    for N, plan_s, t, flops, levels in rows:
        print(f"{N:5d} {levels:6d} {plan_s:7.3f} {t:9.3f} {t / N**3 / fastest:14.2f} {flops / 1e9:7.1f}")


if __name__ == "__main__":
    main()
