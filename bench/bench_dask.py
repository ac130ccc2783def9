#!/usr/bin/env python3
"""Many systems across a Dask cluster: ``ssi_sparse.dask.solve_many`` on a LocalCluster next
to one process looping over ``ssi_sparse.factorize``.

Run from the repository root::

    PYTHONPATH=. python bench/bench_dask.py [--systems 64] [--side 513] [--workers 2]

Each system: the 5-point diffusion operator of a side x side grid with its own random
coefficients, one right-hand side.  Timed: the loop in this process (the engine's own
threads), and ``solve_many`` on a fresh LocalCluster of ``--workers`` processes with one
thread each (cluster start-up excluded, transfers of the matrices included).  Like the other
benchmarks it unsets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for everything it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(var, None)

import numpy as np  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

import ssi_sparse  # noqa: E402
from ssi_sparse.problems import diffusion_2d  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", type=int, default=64)
    ap.add_argument("--side", type=int, default=513)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    import ssi_sparse.dask

    rng = np.random.default_rng(0)
    N = args.side
    matrices = [diffusion_2d(N, N, rng.uniform(0.1, 10.0, (N, N))) for _ in range(args.systems)]
    rhs = [rng.standard_normal(N * N) for _ in range(args.systems)]
    print(f"{args.systems} systems of {N}x{N} ({N * N} unknowns each), {os.cpu_count()} CPUs")

    t = time.perf_counter()
    loop = [ssi_sparse.factorize(A).solve(b) for A, b in zip(matrices, rhs)]
    t_loop = time.perf_counter() - t
    print(f"  one process, loop of factorize + solve: {t_loop:7.2f} s")

    env = {"SSI_SPARSE_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, env=env) as cluster, Client(cluster) as client:
        t = time.perf_counter()
        xs = ssi_sparse.dask.solve_many(client, matrices, rhs)
        t_dask = time.perf_counter() - t

        def misses():
            from ssi_sparse._planning.plan import build_plan

            return build_plan.cache_info().misses

        builds = client.run(misses)
    err = max(np.abs(x - y).max() for x, y in zip(xs, loop))
    print(f"  solve_many on {args.workers} workers x 1 thread:  {t_dask:7.2f} s   "
          f"({t_loop / t_dask:.2f}x the loop; plans built per worker: {sorted(builds.values())}; "
          f"max |x - x_loop| = {err:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
