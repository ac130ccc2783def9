#!/usr/bin/env python3
"""Reused solves (many right-hand sides on one factorization): ssi_sparse against SuperLU,
CHOLMOD and PARDISO, and the engine's solve program against its step-by-step walk.

    PYTHONPATH=. python bench/bench_solve.py [--sizes 257 513 1025] [--problem laplace5] [--repeats 15]

What time stepping, Newton loops and multi-channel images run: one factorization, then
``solve(b)`` again and again (1 and 8 columns).  Per size, in one process: every solver
factors the same matrix once, then the solves run in interleaved rounds (one solve of each
solver per round), so load on the shared machine hits them alike; min and median over
rounds (every other round in reverse order).  ``ssi (step by step)`` is the engine's walk without the recorded solve program
(``_engine/program.py``), on the same factor: the program's gain measured side by side.
Unsets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for every solver (as bench_cpu.py) and prints
the BLAS each one loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (REPO_ROOT, os.path.dirname(os.path.abspath(__file__))):
    if path not in sys.path:
        sys.path.insert(0, path)

from bench_cpu import _blas_in_use, machine_info, make_problem, print_machine, run_unpinned  # noqa: E402


def _solvers(A):
    """name -> solve(rhs) for every solver that is installed, each factored once here."""
    import numpy as np
    import scipy.sparse.linalg as spla

    import ssi_sparse
    from ssi_sparse._engine import walks

    out = {}
    F = ssi_sparse.factorize(A)
    out["ssi_sparse"] = F.solve
    recorded = walks.program_for

    def step_by_step(rhs):
        walks.program_for = lambda *args: None
        try:
            return F.solve(rhs)
        finally:
            walks.program_for = recorded

    out["ssi (step by step)"] = step_by_step
    lu = spla.splu(A.tocsc(), permc_spec="MMD_AT_PLUS_A")
    out["SuperLU MMD"] = lu.solve
    try:
        import cvxopt
        import cvxopt.cholmod
        import scipy.sparse as sp

        low = sp.tril(A, format="coo")
        M = cvxopt.spmatrix(cvxopt.matrix(low.data.astype(np.float64)), cvxopt.matrix(low.row.astype(np.int64)),
                            cvxopt.matrix(low.col.astype(np.int64)), size=A.shape)  # fmt: skip
        C = cvxopt.cholmod.symbolic(M)
        cvxopt.cholmod.numeric(M, C)

        def cholmod(rhs):
            X = cvxopt.matrix(np.asarray(rhs, dtype=np.float64).reshape(A.shape[0], -1))
            cvxopt.cholmod.solve(C, X)
            return np.array(X).reshape(np.shape(rhs))

        out["CHOLMOD (cvxopt)"] = cholmod
    except ImportError:
        pass
    try:
        import pypardiso

        ps = pypardiso.PyPardisoSolver()
        Ac = A.tocsr()
        ps.factorize(Ac)
        out["PARDISO"] = lambda rhs: ps.solve(Ac, rhs)
    except (ImportError, AttributeError):
        pass
    return out


def run(N: int, problem: str, repeats: int) -> dict:
    import numpy as np

    A = make_problem(problem, N)
    rng = np.random.default_rng(N)
    rhs = {1: rng.standard_normal(A.shape[0]), 8: rng.standard_normal((A.shape[0], 8))}
    solvers = _solvers(A)
    times = {(name, k): [] for name in solvers for k in rhs}
    residual = {}
    for name, solve in solvers.items():  # warm-up (records the engine's program), residuals
        for k, b in rhs.items():
            x = solve(b)
            residual[name, k] = float(np.linalg.norm(A @ x - b) / np.linalg.norm(b))
    names = list(solvers)
    for r in range(repeats):
        for k, b in rhs.items():
            # every other round in reverse: no solver always runs right after the same one
            # (freed buffers are kept for reuse ~2 s; a fixed order would favour some)
            for name in names if r % 2 == 0 else names[::-1]:
                solve = solvers[name]
                t = time.perf_counter()
                solve(b)
                times[name, k].append(time.perf_counter() - t)
    rows = []
    for name in solvers:
        row = {"solver": name, "N": N, "n": A.shape[0]}
        for k in rhs:
            ts = times[name, k]
            row[f"k{k}_min_s"], row[f"k{k}_median_s"] = min(ts), statistics.median(ts)
            row[f"k{k}_residual"] = residual[name, k]
        rows.append(row)
    return {"N": N, "problem": problem, "rows": rows}


def print_rows(result) -> None:
    rows = result["rows"]
    ref = rows[0]["k1_median_s"]
    print(f"\n{result['problem']} {result['N']}x{result['N']} ({rows[0]['n']} unknowns), reused solves, ms "
          f"(min / median of the rounds); ratio = median / ssi_sparse's median, 1 column")
    print(f"  {'solver':<20} {'1 col min':>10} {'median':>8} {'8 cols min':>11} {'median':>8} {'ratio':>7} "
          f"{'residual':>9}")
    for r in rows:
        print(f"  {r['solver']:<20} {r['k1_min_s'] * 1e3:>10.1f} {r['k1_median_s'] * 1e3:>8.1f} "
              f"{r['k8_min_s'] * 1e3:>11.1f} {r['k8_median_s'] * 1e3:>8.1f} {r['k1_median_s'] / ref:>6.2f}x "
              f"{r['k1_residual']:>9.1e}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[257, 513, 1025])
    ap.add_argument("--problem", default="laplace5")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    run_unpinned(__file__, argv)
    info = machine_info()
    print_machine(info)
    results = [run(N, args.problem, args.repeats) for N in args.sizes]
    for result in results:
        print_rows(result)
    print(f"\nBLAS loaded in this process: {_blas_in_use()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": info, "results": results}, fh, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
