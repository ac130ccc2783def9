#!/usr/bin/env python3
"""Small grids: where SciPy's SuperLU is faster than the engine (``ENGINE_MIN_SIZE``).

    PYTHONPATH=. python bench/bench_small.py [--sizes 40 48 56 64 72 80 96 128] [--fresh 3]

For each N x N variable-coefficient diffusion grid, SciPy ``spsolve`` and the engine
(``ssi_sparse.factorize(A).solve(b)``, which takes any grid, unlike ``ssi_sparse.spsolve``
below the threshold) each run in ``--fresh`` fresh processes in interleaved rounds; each
process times its first call, then 10 systems of that size with new coefficients (median:
what a program solving many small systems sees).  Reports the medians over processes and
the ratio.  Unsets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for every solver, as bench_cpu.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (REPO_ROOT, os.path.dirname(os.path.abspath(__file__))):
    if path not in sys.path:
        sys.path.insert(0, path)

SOLVERS = ("spsolve", "engine")


def child(N: int, solver: str) -> dict:
    import numpy as np
    import scipy.sparse.linalg as spla

    import ssi_sparse
    from bench_cpu import _blas_in_use
    from ssi_sparse.problems import diffusion_2d

    rng = np.random.default_rng(N)
    systems = [diffusion_2d(N, N, rng.uniform(0.1, 10.0, (N, N))) for _ in range(11)]
    b = rng.standard_normal(N * N)
    solve = spla.spsolve if solver == "spsolve" else (lambda A, rhs: ssi_sparse.factorize(A).solve(rhs))
    times = []
    for A in systems:
        t = time.perf_counter()
        x = solve(A, b)
        times.append(time.perf_counter() - t)
    res = float(np.linalg.norm(systems[-1] @ x - b) / np.linalg.norm(b))
    return {"first_s": times[0], "median_s": statistics.median(times[1:]), "residual": res, "blas": _blas_in_use()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[40, 48, 56, 64, 72, 80, 96, 128])
    ap.add_argument("--fresh", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--_child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        print(json.dumps(child(int(args._child[0]), args._child[1])))
        return 0
    from bench_cpu import machine_info, print_machine, run_unpinned

    run_unpinned(__file__, argv)

    from ssi_sparse._tuning import ENGINE_MIN_SIZE

    print_machine(machine_info())
    print(f"each cell: median over {args.fresh} fresh processes (interleaved); 'first' = a process's first call, "
          f"'loop' = median of its next 10 systems; ENGINE_MIN_SIZE = {ENGINE_MIN_SIZE}")
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rows = []
    print(f"{'N':>5} {'n':>7} {'spsolve first':>14} {'engine first':>13} {'spsolve loop':>13} {'engine loop':>12}"
          f" {'loop ratio':>11}  BLAS (engine)")
    for N in args.sizes:
        runs = {s: [] for s in SOLVERS}
        for _ in range(args.fresh):
            for s in SOLVERS:
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--_child", str(N), s],
                                     capture_output=True, text=True, env=env, check=True)
                runs[s].append(json.loads(out.stdout.strip().splitlines()[-1]))
        med = {s: {k: statistics.median(r[k] for r in runs[s]) for k in ("first_s", "median_s")} for s in SOLVERS}
        row = {"N": N, "n": N * N, **{f"{s}_{k}": v for s in SOLVERS for k, v in med[s].items()},
               "residual": max(r["residual"] for s in SOLVERS for r in runs[s])}
        rows.append(row)
        print(f"{N:>5} {N * N:>7} {med['spsolve']['first_s'] * 1e3:>11.2f} ms {med['engine']['first_s'] * 1e3:>10.2f} ms"
              f" {med['spsolve']['median_s'] * 1e3:>10.2f} ms {med['engine']['median_s'] * 1e3:>9.2f} ms"
              f" {med['spsolve']['median_s'] / med['engine']['median_s']:>10.2f}x  {runs['engine'][0]['blas']}")
    print("loop ratio > 1: the engine is faster; residuals at most", f"{max(r['residual'] for r in rows):.1e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
