#!/usr/bin/env python3
"""One grid across MPI ranks: peak memory per rank, time and traffic, next to one process.

Run from the repository root (``pip install -e '.[mpi]'``)::

    PYTHONPATH=. python bench/bench_mpi.py [--side 2049] [--ranks 1 2 4]

The problem: the 5-point operator of ``-div(c grad u)`` on a side x side grid, Dirichlet
boundary, a smooth coefficient field spanning two decades, one right-hand side.  Each MPI rank
builds only its own rows of the stencil (``ssi_sparse.mpi.factorize_slab``), as a program that
holds its grid in slabs would.  Measured, every run in a fresh process (or job):

- one process with the ordinary engine (``factorize_stencil`` + ``solve``), its peak RSS;
- ``mpiexec -n P`` for each ``--ranks``: every rank's peak RSS, factorize and solve times, the
  bytes it sent and received (counted at every MPI call) next to the plan's model, and its
  rows of ``x`` against the one-process answer.

Peak RSS is ``ru_maxrss`` (includes the interpreter and libraries, reported separately as the
RSS after imports).  OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are unset for every run.  With more
ranks than cores the ranks share the cores (each gets one thread); times then measure
overhead, not speed-up: on this 2-core machine the targets are memory and traffic.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(var, None)

import numpy as np  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (REPO_ROOT, os.path.join(REPO_ROOT, "bench")):
    if path not in sys.path:
        sys.path.insert(0, path)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _coefficient(rows, W):
    r = rows[:, None] / 97.0
    c = np.arange(W)[None, :] / 89.0
    return np.exp(2.3 * np.sin(r) * np.cos(c))  # 0.1 .. 10


def diffusion_rows(H, W, start, stop):
    """Rows ``start:stop`` of the (H, W, 3, 3) stencil of ``-div(c grad u)`` (arithmetic-mean
    face coefficients, Dirichlet faces on the boundary use the pixel's own coefficient)."""
    rows = np.arange(start - 1, stop + 1)
    c = _coefficient(np.clip(rows, 0, H - 1), W)
    here = c[1:-1]
    V = np.zeros((stop - start, W, 3, 3))
    up, down = 0.5 * (here + c[:-2]), 0.5 * (here + c[2:])
    across = 0.5 * (here[:, :-1] + here[:, 1:])
    left = np.concatenate([here[:, :1], across], axis=1)
    right = np.concatenate([across, here[:, -1:]], axis=1)
    g = np.arange(start, stop)[:, None]
    up = np.where(g == 0, here, up)
    down = np.where(g == H - 1, here, down)
    V[:, :, 0, 1], V[:, :, 2, 1], V[:, :, 1, 0], V[:, :, 1, 2] = -up, -down, -left, -right
    V[:, :, 1, 1] = up + down + left + right
    return V


def rhs_rows(H, W, start, stop):
    r = np.arange(start, stop)[:, None]
    c = np.arange(W)[None, :]
    return (np.sin(0.01 * r * c) + 1.0).reshape(-1)


def one_process(side, out_dir):
    """The ordinary engine on the whole grid, in this (fresh) process."""
    import ssi_sparse
    from bench_cpu import _blas_in_use

    base = _rss_mib()
    V = diffusion_rows(side, side, 0, side)
    b = rhs_rows(side, side, 0, side)
    t0 = time.perf_counter()
    lu = ssi_sparse.factorize_stencil(V)
    t1 = time.perf_counter()
    x = lu.solve(b)
    t2 = time.perf_counter()
    np.save(os.path.join(out_dir, "x.npy"), x)
    from ssi_sparse._planning.plan import build_plan

    flops = build_plan(side, side).flops() / (2 if lu.hermitian else 1)
    return {"rss_after_imports_mib": base, "peak_rss_mib": _rss_mib(), "factorize_s": t1 - t0, "solve_s": t2 - t1,
            "gflops": flops / 1e9, "model_mib": build_plan(side, side).memory_bytes(8, lu.hermitian) / 2**20,
            "blas": _blas_in_use()}  # fmt: skip


def rank_job(side, out_dir):
    """One rank of ``mpiexec -n P``: its slab only."""
    from mpi4py import MPI

    from ssi_sparse.mpi import factorize_slab, slab_rows

    comm = MPI.COMM_WORLD
    base = _rss_mib()
    start, stop = slab_rows(side, comm.size, comm.rank)
    V = diffusion_rows(side, side, start, stop)
    b = rhs_rows(side, side, start, stop)
    comm.Barrier()
    t0 = time.perf_counter()
    lu = factorize_slab(V, (side, side), comm=comm)
    t1 = time.perf_counter()
    x = lu.solve(b)
    t2 = time.perf_counter()
    ref = np.load(os.path.join(out_dir, "x.npy"), mmap_mode="r")[start * side : stop * side]
    scale = float(np.max(np.abs(np.load(os.path.join(out_dir, "x.npy"), mmap_mode="r"))))
    model = lu.traffic_model(columns=1)
    me = comm.rank
    report = {
        "rank": me, "rows": [start, stop], "rss_after_imports_mib": base, "peak_rss_mib": _rss_mib(),
        "model_mib": lu.plan.memory_bytes(me, 8, lu.hermitian) / 2**20, "factor_mib": lu.nbytes() / 2**20,
        "windows": len(lu.plan.windows_of(me)), "merges": len(lu.plan.merges_of(me)),
        "gflops": lu.plan.flops(me) / (2e9 if lu.hermitian else 1e9),
        "factorize_s": t1 - t0, "solve_s": t2 - t1, "max_diff": float(np.max(np.abs(x - ref), initial=0)) / scale,
        "traffic": lu.traffic, "traffic_model": model, "counts": lu.counts, "threads": lu._threads,
    }  # fmt: skip
    reports = comm.gather(report, root=0)
    if me == 0:
        print("JSON" + json.dumps(reports), flush=True)


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else "mpiexec"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=2049)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--out", help="write the report here (.txt) and its data (.json)")
    ap.add_argument("--one", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--rank-job", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("JSON" + json.dumps(one_process(args.side, args.one)), flush=True)
        return
    if args.rank_job:
        rank_job(args.side, args.rank_job)
        return

    from bench_cpu import machine_info

    def run(cmd):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stdout[-2000:] + proc.stderr[-4000:])
        return json.loads(proc.stdout.split("JSON", 1)[1])

    lines = []

    def say(text=""):
        print(text, flush=True)
        lines.append(text)

    info = machine_info()
    say(f"# bench_mpi: {args.side}x{args.side} diffusion (5-point, SPD), one right-hand side")
    say(f"# {info.get('cpu_model')}, {info.get('cpu_count')} cores, {info.get('ram_gib')} GiB; "
        f"OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset for every run")  # fmt: skip
    say(f"# command: PYTHONPATH=. python bench/bench_mpi.py --side {args.side} --ranks {' '.join(map(str, args.ranks))}")
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.abspath(__file__)
        one = run([sys.executable, script, "--one", tmp, "--side", str(args.side)])
        say(f"# BLAS (one process): {one['blas']}")
        say()
        say(f"one process, ordinary engine: factorize {one['factorize_s']:.2f} s, solve {one['solve_s']:.2f} s, "
            f"peak RSS {one['peak_rss_mib']:.0f} MiB (after imports {one['rss_after_imports_mib']:.0f}), "
            f"model {one['model_mib']:.0f} MiB + stencil, {one['gflops']:.0f} GFLOP")  # fmt: skip
        results = {"side": args.side, "one_process": one, "machine": info, "mpi": {}}
        for P in args.ranks:
            reports = run([_mpiexec(), "-n", str(P), sys.executable, "-m", "mpi4py", script, "--rank-job", tmp,
                           "--side", str(args.side)])  # fmt: skip
            results["mpi"][P] = reports
            say()
            say(f"mpiexec -n {P}:")
            say(" rank  rows         win merge  GFLOP  factor s  solve s  peak RSS  model   (MiB)  "
                "sent/recv factorize MiB (model)     sent/recv solve MiB (model)  max |x - x1|/|x1|")  # fmt: skip
            for r in reports:
                tf, mf = r["traffic"]["factorize"], r["traffic_model"]["factorize"]
                ts, ms = r["traffic"]["solve"], r["traffic_model"]["solve"]
                mib = lambda v: v / 2**20  # noqa: E731
                say(f" {r['rank']:4d}  {r['rows'][0]:5d}:{r['rows'][1]:<5d} {r['windows']:4d} {r['merges']:5d} "
                    f"{r['gflops']:6.1f} {r['factorize_s']:9.2f} {r['solve_s']:8.2f} {r['peak_rss_mib']:9.0f} "
                    f"{r['model_mib']:6.0f}         {mib(tf[0]):7.1f}/{mib(tf[1]):<7.1f} ({mib(mf[0]):.1f}/{mib(mf[1]):.1f})"
                    f"   {mib(ts[0]):7.2f}/{mib(ts[1]):<7.2f} ({mib(ms[0]):.2f}/{mib(ms[1]):.2f})  {r['max_diff']:.1e}")  # fmt: skip
            worst = max(r["peak_rss_mib"] for r in reports)
            say(f"  largest rank's peak RSS / one process's: {worst / one['peak_rss_mib']:.2f} "
                f"(less the interpreter's RSS after imports: "
                f"{(worst - reports[0]['rss_after_imports_mib']) / (one['peak_rss_mib'] - one['rss_after_imports_mib']):.2f}); "
                f"slowest rank factorize {max(r['factorize_s'] for r in reports):.2f} s")  # fmt: skip
    if args.out:
        with open(args.out + ".txt", "w") as fh:
            fh.write("\n".join(lines) + "\n")
        with open(args.out + ".json", "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
