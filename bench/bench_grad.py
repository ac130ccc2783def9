"""Forward vs backward cost of a differentiable solve (issue: backward <= 0.5 x forward).

    PYTHONPATH=. python bench/bench_grad.py [--sizes 513 1025] [--torch]

Forward = factorize + solve (what ``ssi_sparse.torch.spsolve`` does per call); backward = the
adjoint from the saved factorization: one transposed solve plus O(nnz) work for dL/dA
(``ssi_sparse.solve_backward``).  With ``--torch`` the same is timed through the autograd layer.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import ssi_sparse  # noqa: E402
from ssi_sparse.problems import random_spd_9pt  # noqa: E402


def best(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def run_numpy(N, repeat):
    A = random_spd_9pt(N, N, seed=0)
    b = np.random.default_rng(0).standard_normal(N * N)
    ssi_sparse.factorize(A)  # plan cached: time the numeric work a training step pays

    def forward():
        lu = ssi_sparse.factorize(A)
        return lu, lu.solve(b)

    t_fwd, (lu, x) = best(forward, repeat)
    t_bwd, _ = best(lambda: ssi_sparse.solve_backward(lu, x, 2 * x, A), repeat)
    return t_fwd, t_bwd


def run_torch(N, repeat):
    import torch

    import ssi_sparse.torch as sst

    A = random_spd_9pt(N, N, seed=0).tocoo()
    idx = torch.tensor(np.vstack([A.row, A.col]))
    layer = sst.SparseSolve(idx, A.shape)
    values = torch.tensor(A.data, requires_grad=True)
    b = torch.randn(A.shape[0], dtype=torch.float64, requires_grad=True)
    layer(values, b)  # first call detects the grid and builds the plan
    fwd, bwd = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        x = layer(values, b)
        t1 = time.perf_counter()
        x.square().sum().backward()
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
    return min(fwd), min(bwd)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[513, 1025])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--torch", action="store_true", help="also time the torch autograd layer")
    args = p.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"numpy {np.__version__}, float64, 9-point SPD, best of {args.repeat}")
    print(f"{'path':8s} {'N':>5s} {'n':>9s} {'forward s':>10s} {'backward s':>11s} {'bwd/fwd':>8s}")
    for N in args.sizes:
        rows = [("numpy", run_numpy)] + ([("torch", run_torch)] if args.torch else [])
        for name, fn in rows:
            fwd, bwd = fn(N, args.repeat)
            print(f"{name:8s} {N:5d} {N * N:9d} {fwd:10.3f} {bwd:11.3f} {bwd / fwd:8.3f}")


if __name__ == "__main__":
    main()
