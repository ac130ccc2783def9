#!/usr/bin/env python3
"""Per-level profile of one numeric factorization: time, flop model and rate per level.

    PYTHONPATH=. python bench/bench_levels.py [--N 1025] [--problem laplace5|varcoef9|convdiff|helmholtz]

Runs the engine's pipeline by hand (detection, equilibration, plan), factorizes once to warm
up, then reports the second factorization level by level: which kernel ran (native fused,
dense LAPACK/BLAS, portable), which factorization (inverse, LU, Cholesky), seconds, GFLOP of
the LU-type model (halved for Cholesky) and GFLOP/s, next to the machine's dense matmul rate.
Levels eliminated inside the next one (leaves fused into level 1) have no time of their own.
OpenBLAS pins (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE) are unset, as in bench_cpu.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if any(v in os.environ for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")):
    for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        os.environ.pop(v, None)
    os.execv(sys.executable, [sys.executable, *sys.argv])

import numpy as np  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_cpu import make_problem  # noqa: E402

from ssi_sparse._engine import walks as _engine  # noqa: E402
from ssi_sparse._structure.grid import grid_stencil  # noqa: E402
from ssi_sparse._planning.plan import build_plan  # noqa: E402
from ssi_sparse._structure.stencil import equilibrate, is_hermitian, stencil_norm_inf  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--N", type=int, default=1025)
    ap.add_argument("--problem", default="laplace5")
    args = ap.parse_args()
    A = make_problem(args.problem, args.N)
    spec, V = grid_stencil(A)
    shape = spec.engine_shape
    Vs, _ = equilibrate(np, V, shape)
    plan = build_plan(*shape)
    herm = is_hermitian(np, Vs, shape)
    a_norm = stencil_norm_inf(np, Vs, shape)
    _engine.factorize_values(plan, Vs, herm, a_norm)
    n = 1024
    a, b = np.random.rand(n, n), np.random.rand(n, n)
    a @ b
    t = time.perf_counter()
    a @ b
    mm = 2 * n**3 / (time.perf_counter() - t) / 1e9
    timings = []
    t = time.perf_counter()
    _engine.factorize_values(plan, Vs, herm, a_norm, timings=timings)
    total = time.perf_counter() - t
    print(f"{args.problem} {args.N}x{args.N}, hermitian={herm}; numpy matmul 1024^2: {mm:.0f} GFLOP/s")
    print(f"{'level':>5} {'max f':>6} {'boxes':>7} {'seconds':>8} {'GFLOP':>7} {'GFLOP/s':>8}  kernels")
    carried = 0.0  # flops of a level whose time counts in the next one (leaves fused into level 1)
    for k in range(len(plan.levels)):
        rows = [c for c in timings if c.level == k]
        sec, fl = sum(c.seconds for c in rows), sum(c.flops for c in rows)
        kinds = sorted({f"{c.kernel}/{c.kind}" for c in rows})
        head = f"{k:>5} {max(c.n_elim + c.n_boundary for c in rows):>6} {sum(c.n_boxes for c in rows):>7} "
        if sec == 0.0 and fl > 0:
            carried += fl
            print(f"{head}{'-':>8} {fl / 1e9:>7.2f} {'-':>8}  {', '.join(kinds)} (eliminated inside level {k + 1})")
            continue
        rate = (fl + carried) / 1e9 / max(sec, 1e-9)
        note = f" (rate with level {k - 1}'s flops)" if carried else ""
        carried = 0.0
        print(f"{head}{sec:>8.3f} {fl / 1e9:>7.2f} {rate:>8.1f}  {', '.join(kinds)}{note}")
    fl = sum(c.flops for c in timings)
    print(f"total {total:.3f} s, {fl / 1e9:.2f} GFLOP, {fl / 1e9 / total:.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
