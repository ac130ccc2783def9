#!/usr/bin/env python3
"""Model of memory, time and traffic per MPI rank for grids too large to run here.

Run from the repository root::

    PYTHONPATH=. python bench/model_mpi.py [--sides 4097 8193 16385] [--ranks 1 2 4 ... 64]
        [--rate GFLOPS] [--bandwidth GBS] [--check bench/results/mpi_2049.json]

Everything comes from the plan's geometry (``ssi_sparse._planning.tree``: class sizes from the
segments alone, no index maps, so 16385^2 on 64 ranks takes seconds):

- memory per rank: the stored factors of its windows and merges plus its largest transient
  (``DistributedPlan.memory_bytes``), plus three copies of its slab of the stencil (72 bytes
  a node: the kept slab with halo, the scaled copy and the window copy while they coexist),
  plus the interpreter (``--base`` MiB);
- time per rank: its factorization flops (Cholesky: half the LU-type count) at ``--rate``
  GFLOP/s (default: the one-process rate measured in ``--check``'s run, i.e. a 2-core rank
  of this machine) plus its tree and redistribution bytes at ``--bandwidth`` GB/s;
- traffic per rank: :func:`ssi_sparse.mpi.traffic_model` (what the ranks count at run time;
  the 2049^2 runs measured it equal).

With ``--check``, the model is printed next to the measured 2049^2 runs first.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from ssi_sparse._planning.plan import flops_of_sizes, memory_of_sizes  # noqa: E402
from ssi_sparse._planning.tree import distributed_plan, tree_sizes  # noqa: E402
from ssi_sparse.mpi import slab_rows, traffic_model  # noqa: E402

STENCIL_BYTES = 72  # 9 float64 couplings a node


def per_rank(side, ranks, rate, bandwidth, base_mib):
    """Model rows for one grid on ``ranks`` ranks: one dict per rank."""
    if ranks == 1:
        sizes = tree_sizes(side, side)
        mem = memory_of_sizes(sizes, 8, True) + STENCIL_BYTES * side * side
        flops = flops_of_sizes(sizes) / 2
        return [{"memory_gib": mem / 2**30 + base_mib / 1024, "gflop": flops / 1e9, "seconds": flops / (rate * 1e9),
                 "traffic_mib": 0.0, "solve_traffic_mib": 0.0}]  # fmt: skip
    plan = distributed_plan(side, side, ranks)
    starts = [slab_rows(side, ranks, p)[0] for p in range(ranks)] + [side]
    out = []
    for r in range(ranks):
        rows = starts[r + 1] - starts[r]
        mem = plan.memory_bytes(r, 8, True) + 3 * STENCIL_BYTES * (rows + 2) * side
        flops = plan.flops(r) / 2
        t = traffic_model(plan, starts, r, 8, columns=1, sweeps=1, matvecs=1)
        moved = max(t["factorize"])
        out.append({"memory_gib": mem / 2**30 + base_mib / 1024, "gflop": flops / 1e9,
                    "seconds": flops / (rate * 1e9) + moved / (bandwidth * 1e9),
                    "traffic_mib": sum(t["factorize"]) / 2**20, "solve_traffic_mib": sum(t["solve"]) / 2**20})  # fmt: skip
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sides", type=int, nargs="+", default=[4097, 8193, 16385])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--rate", type=float, help="GFLOP/s of one rank (default: measured in --check)")
    ap.add_argument("--bandwidth", type=float, default=10.0, help="GB/s between ranks (default 10)")
    ap.add_argument("--base", type=float, default=70.0, help="MiB of each process before any data (default 70)")
    ap.add_argument("--check", default=os.path.join(REPO_ROOT, "bench", "results", "mpi_2049.json"))
    args = ap.parse_args()

    rate = args.rate
    if os.path.exists(args.check):
        with open(args.check) as fh:
            measured = json.load(fh)
        one = measured["one_process"]
        rate = rate or one["gflops"] / one["factorize_s"]
        side = int(measured.get("side", 2049))
        print(f"# model vs measured, {side}^2 ({args.check}); rate {rate:.1f} GFLOP/s (one process, 2 cores)")
        print("ranks  rank  peak GiB model / measured (both with the interpreter)   factorize s model / measured")
        base = one["rss_after_imports_mib"]
        m1 = per_rank(side, 1, rate, args.bandwidth, base)[0]
        print(f"  one     -          {m1['memory_gib']:6.2f} / {one['peak_rss_mib'] / 1024:6.2f}"
              f"                     {m1['seconds']:7.2f} / {one['factorize_s']:.2f}")  # fmt: skip
        for P, reports in sorted(measured["mpi"].items(), key=lambda kv: int(kv[0])):
            P = int(P)
            cores = os.cpu_count() or 1
            share = min(1.0, cores / P / 2) if P > 1 else 1.0  # ranks beyond the cores share them
            model = per_rank(side, P, rate * share, args.bandwidth, reports[0]["rss_after_imports_mib"]) if P > 1 \
                else [m1]  # fmt: skip
            for r, m in zip(reports, model):
                print(f"  {P:3d}  {r['rank']:4d}          {m['memory_gib']:6.2f} / {r['peak_rss_mib'] / 1024:6.2f}"
                      f"                     {m['seconds']:7.2f} / {r['factorize_s']:.2f}")  # fmt: skip
        print()
    rate = rate or 10.0
    print(f"# model: largest rank per grid and rank count; {rate:.1f} GFLOP/s a rank, {args.bandwidth:g} GB/s, "
          f"{args.base:g} MiB interpreter; float64, SPD (Cholesky)")  # fmt: skip
    print("grid     ranks  peak GiB (max rank)  GFLOP (max rank)  factorize s  factorize traffic MiB  solve traffic MiB")
    for side in args.sides:
        for P in args.ranks:
            rows = per_rank(side, P, rate, args.bandwidth, args.base)
            worst = max(rows, key=lambda r: r["memory_gib"])
            slow = max(rows, key=lambda r: r["seconds"])
            print(f"{side:5d}^2 {P:5d}  {worst['memory_gib']:14.1f}  {max(r['gflop'] for r in rows):16.0f} "
                  f"{slow['seconds']:12.0f}  {max(r['traffic_mib'] for r in rows):20.0f} "
                  f"{max(r['solve_traffic_mib'] for r in rows):17.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
