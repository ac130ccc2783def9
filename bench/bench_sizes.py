#!/usr/bin/env python3
"""How much the uneven-split plan costs at awkward grid sizes (no padding is used).

For every square grid side N in [--start, --stop] (step --step) this computes the flop model of
the plan, ``build_plan(N, N).flops()``, and reports it per n^1.5 = N^3 (work per unit of the
asymptotic cost), then the best and worst sizes and the ratio worst / best.  The same is done
for a few non-square shapes (flops / (H W)^1.5), and the plan build is timed for 1025 x 1025
and 1080 x 1920.

Run from the repository root::

    PYTHONPATH=. python bench/bench_sizes.py [--step 1] [--start 500] [--stop 1100]
        [--table] [--json out.json]

Only the symbolic phase runs (no matrix, no numeric factorization); with step 1 it builds 601
plans (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from ssi_sparse._planning.plan import build_plan  # noqa: E402

NON_SQUARE = [(1080, 1920), (720, 1280), (1000, 1500)]
TIMED = [(1025, 1025), (1080, 1920)]

# bypass the lru_cache so hundreds of plans are not kept alive (16 cached plans of ~1000^2
# grids hold a lot of index maps)
_build_uncached = build_plan.__wrapped__


def plan_stats(h: int, w: int) -> dict:
    t = time.perf_counter()
    plan = _build_uncached(h, w)
    dt = time.perf_counter() - t
    flops = float(plan.flops())
    return {
        "height": h,
        "width": w,
        "flops": flops,
        "per_n15": flops / float(h * w) ** 1.5,
        "max_front": int(plan.max_front()),
        "levels": len(plan.levels),
        "classes": sum(len(level.classes) for level in plan.levels),
        "plan_s": dt,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--start", type=int, default=500)
    ap.add_argument("--stop", type=int, default=1100, help="inclusive")
    ap.add_argument("--step", type=int, default=1)
    ap.add_argument("--table", action="store_true", help="print every size")
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args(argv)

    sizes = list(range(args.start, args.stop + 1, args.step))
    print(f"Square grids N x N, N = {args.start} .. {args.stop} step {args.step} "
          f"({len(sizes)} plans); work = build_plan(N, N).flops(), per n^1.5 = flops / N^3")
    t0 = time.perf_counter()
    rows = []
    for i, N in enumerate(sizes):
        rows.append(plan_stats(N, N))
        if not args.table and len(sizes) > 50 and (i + 1) % 100 == 0:
            print(f"  ... {i + 1}/{len(sizes)} plans ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    elapsed = time.perf_counter() - t0

    if args.table:
        print(f"{'N':>6} {'GFLOP':>9} {'flops/N^3':>10} {'max front':>9} {'levels':>6} "
              f"{'classes':>7} {'plan s':>7}")
        for r in rows:
            print(f"{r['height']:>6} {r['flops'] / 1e9:>9.2f} {r['per_n15']:>10.3f} "
                  f"{r['max_front']:>9} {r['levels']:>6} {r['classes']:>7} {r['plan_s']:>7.3f}")

    per = np.array([r["per_n15"] for r in rows])
    order = np.argsort(per)
    k = min(5, len(rows))

    def show(idx):
        r = rows[idx]
        return (f"N={r['height']:>5}: flops/N^3 = {r['per_n15']:.3f}  "
                f"({r['flops'] / 1e9:.2f} GFLOP, max front {r['max_front']})")

    print(f"\n{len(rows)} plans built in {elapsed:.1f} s")
    print("best sizes (least work per N^3):")
    for idx in order[:k]:
        print("  " + show(idx))
    print("worst sizes (most work per N^3):")
    for idx in order[::-1][:k]:
        print("  " + show(idx))
    best, worst = rows[order[0]], rows[order[-1]]
    ratio = worst["per_n15"] / best["per_n15"]
    print(f"worst / best = {ratio:.3f}  (N={worst['height']} vs N={best['height']}); "
          f"median {np.median(per):.3f}, mean {per.mean():.3f}, "
          f"median / best = {np.median(per) / best['per_n15']:.3f}")
    for N in (512, 513, 1024, 1025):
        if args.start <= N <= args.stop and (N - args.start) % args.step == 0:
            r = rows[(N - args.start) // args.step]
            print(f"  reference N={N}: flops/N^3 = {r['per_n15']:.3f} "
                  f"({r['per_n15'] / best['per_n15']:.3f} x best)")
    # the smooth part: work between consecutive sizes, to see how jumpy it is
    if len(rows) > 1:
        steps = per[1:] / per[:-1]
        j = int(np.argmax(np.abs(np.log(steps))))
        print(f"largest jump between neighbouring sizes: N={rows[j]['height']} -> "
              f"{rows[j + 1]['height']}: x{steps[j]:.3f} in flops/N^3")

    print("\nNon-square grids: flops / (H W)^1.5")
    ns_rows = []
    for h, w in NON_SQUARE:
        r = plan_stats(h, w)
        ns_rows.append(r)
        print(f"  {h:>5} x {w:<5}: {r['flops'] / 1e9:8.2f} GFLOP, per n^1.5 = {r['per_n15']:.3f} "
              f"({r['per_n15'] / best['per_n15']:.3f} x best square), max front "
              f"{r['max_front']}, plan {r['plan_s']:.2f} s")

    print("\nPlan build time (first call after build_plan.cache_clear(), then best of 3 uncached)")
    timed = []
    for h, w in TIMED:
        build_plan.cache_clear()
        t = time.perf_counter()
        build_plan(h, w)
        first = time.perf_counter() - t
        build_plan.cache_clear()
        best_t = math.inf
        for _ in range(3):
            t = time.perf_counter()
            _build_uncached(h, w)
            best_t = min(best_t, time.perf_counter() - t)
        timed.append({"height": h, "width": w, "first_s": first, "best_s": best_t})
        print(f"  {h:>5} x {w:<5}: first {first:.3f} s, best of 3 {best_t:.3f} s")

    if args.json:
        out = {
            "square": rows,
            "best": best,
            "worst": worst,
            "worst_over_best": ratio,
            "non_square": ns_rows,
            "plan_build": timed,
        }
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
