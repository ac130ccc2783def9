#!/usr/bin/env python3
"""Benchmark of grid problems beyond one unknown per 3x3 stencil: several unknowns per pixel
and the 13-point biharmonic operator, ssi_sparse.spsolve against what people use instead.

Run from the repository root::

    PYTHONPATH=. python bench/bench_kinds.py [--repeats 3] [--json out.json]
        [--sizes 512] [--cases horn_schunck biharmonic elasticity batch] [--timeout 900]

Cases (N x N grids, N from ``--sizes``, default 512; all three symmetric positive definite):

* ``horn_schunck``: Horn-Schunck optical flow (``problems.horn_schunck``, pixel numbering,
  2 N^2 unknowns) from scikit-image's camera photo (float in [0, 1], resized when N != 512)
  to itself shifted by (0.6, -0.4) pixel (``scipy.ndimage.shift``), alpha = 10 / 255; its own
  right-hand side.  Skipped when scikit-image is missing.
* ``biharmonic``: ``problems.biharmonic_2d(N, N)`` (13-point, ``L @ L``), random b.
* ``elasticity``: ``problems.elasticity_2d(N, N)`` (plane strain, lam = mu = 1, pixel
  numbering, 2 N^2 unknowns), random b.
* ``batch``: 256 diffusion systems of 64 x 64 (coefficients uniform in [0.1, 10], one field
  per system) and their right-hand sides: every baseline in a loop, ssi_sparse's own
  ``factorize`` in a loop, and ``factorize_batch`` (``--sizes`` does not apply).

Solvers, each of each case in its own fresh process (so the first call is what a user sees;
then ``--repeats`` more calls in that process for the cached figures): SciPy spsolve, SuperLU
with MMD_AT_PLUS_A, CHOLMOD (cvxopt), PARDISO (pypardiso), ssi_sparse.spsolve; the
ssi_sparse row says whether its engine took the matrix or it went to SciPy ("fallback").

Like bench_cpu.py it unsets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for every solver of the run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (REPO_ROOT, os.path.dirname(os.path.abspath(__file__))):
    if path not in sys.path:
        sys.path.insert(0, path)

from bench_cpu import _blas_in_use, machine_info, print_machine, run_unpinned  # noqa: E402
from bench_masked import SOLVERS, table  # noqa: E402  (the same five solver calls)

from ssi_sparse import problems  # noqa: E402

SEED = 0
SHIFT = (0.6, -0.4)  # rows, columns: the flow is (u, v) = (-0.4, 0.6) pixel
ALPHA = 10 / 255
CASES = {
    "horn_schunck": "Horn-Schunck optical flow, skimage camera and its (0.6, -0.4)-pixel shift, "
                    "alpha = 10/255, pixel numbering",
    "biharmonic": "13-point biharmonic biharmonic_2d(N, N) = L @ L",
    "elasticity": "plane-strain elasticity elasticity_2d(N, N), lam = mu = 1, pixel numbering",
    "batch": "a batch: 256 diffusion systems of 64x64, each with its own random coefficients",
}
BATCH, BATCH_SIDE = 256, 64


def batch_systems():
    rng = np.random.default_rng(SEED)
    As = [problems.diffusion_2d(BATCH_SIDE, BATCH_SIDE, rng.uniform(0.1, 10.0, (BATCH_SIDE, BATCH_SIDE)))
          for _ in range(BATCH)]  # fmt: skip
    return As, rng.standard_normal((BATCH, BATCH_SIDE * BATCH_SIDE))


def _loop(solve):
    return lambda As, bs: np.stack([solve(A, b) for A, b in zip(As, bs)])


def _ssi_factorize_loop(A, b):
    import ssi_sparse

    return ssi_sparse.factorize(A).solve(b)


def _ssi_batch(As, bs):
    import ssi_sparse

    return ssi_sparse.factorize_batch(As).solve(bs)


BATCH_SOLVERS = {**{name: _loop(fn) for name, fn in SOLVERS.items() if name != "ssi_sparse"},
                 "ssi_factorize_loop": _loop(_ssi_factorize_loop), "ssi_factorize_batch": _ssi_batch}


# --- problems (rebuilt identically in every child) -------------------------------------------


def camera_pair(n):
    """The camera photo (n x n, float in [0, 1]) and the same photo shifted by ``SHIFT``."""
    from scipy import ndimage
    from skimage import data, transform

    I0 = data.camera().astype(float) / 255
    if I0.shape != (n, n):
        I0 = transform.resize(I0, (n, n), anti_aliasing=True)
    return I0, ndimage.shift(I0, SHIFT, order=3, mode="nearest")


def system(case, n):
    if case == "horn_schunck":
        return problems.horn_schunck(*camera_pair(n), alpha=ALPHA)
    if case == "biharmonic":
        A = problems.biharmonic_2d(n, n)
    elif case == "elasticity":
        A = problems.elasticity_2d(n, n)
    else:
        raise ValueError(case)
    return A, np.random.default_rng(SEED).standard_normal(A.shape[0])


def ssi_path(A):
    """What ssi_sparse.spsolve does with ``A``: its engine (on which grid) or SciPy (why)."""
    import ssi_sparse
    from ssi_sparse._tuning import ENGINE_MIN_SIZE

    if A.shape[0] < ENGINE_MIN_SIZE:
        return f"fallback (n < ENGINE_MIN_SIZE = {ENGINE_MIN_SIZE})"
    try:
        f = ssi_sparse.factorize(A)
    except ssi_sparse.NotGridStructuredError as exc:
        return f"fallback (NotGridStructuredError: {exc})"
    except ssi_sparse.SingularMatrixError:
        return "fallback (the engine met a singular block; SciPy decides)"
    return f"engine ({f.grid})"


# --- children --------------------------------------------------------------------------------


def child(spec):
    """One (case, size, solver): the first call, then ``repeats`` more, in this fresh process."""
    import ssi_sparse  # noqa: F401  (imported before timing, for every solver alike)

    res = {"case": spec["case"], "size": spec["size"], "solver": spec["solver"]}
    batch = spec["case"] == "batch"
    if batch:
        As, bs = batch_systems()
        res["unknowns"], res["nnz"] = As[0].shape[0] * len(As), int(sum(A.nnz for A in As))
        solve, A, b = BATCH_SOLVERS[spec["solver"]], As, bs
    else:
        A, b = system(spec["case"], spec["size"])
        res["unknowns"], res["nnz"] = A.shape[0], int(A.nnz)
        solve = SOLVERS[spec["solver"]]
    times = []
    try:
        for _ in range(1 + spec["repeats"]):
            t = time.perf_counter()
            x = solve(A, b)
            times.append(time.perf_counter() - t)
    except ImportError as exc:
        res["error"] = f"not installed ({exc})"
    else:
        if batch:  # the worst system's
            res["residual"] = max(float(np.linalg.norm(M @ xt - bt) / np.linalg.norm(bt)) for M, xt, bt in zip(A, x, b))
        else:
            res["residual"] = float(np.linalg.norm(A @ x - b) / np.linalg.norm(b))
        res["first_s"] = times[0]
        res["min_s"] = min(times)
        res["median_s"] = statistics.median(times)
        res["blas"] = _blas_in_use()
        if spec["solver"] == "ssi_sparse" and not batch:
            res["path"] = ssi_path(A)  # after the timed calls, untimed
        if spec["case"] == "horn_schunck":
            u, v = x.reshape(-1, 2).T
            res["median_flow"] = [float(np.median(u)), float(np.median(v))]
    with open(spec["out"], "w") as fh:
        json.dump(res, fh)


def run_child(case, size, solver, repeats, workdir, timeout):
    out = os.path.join(workdir, f"{case}_{size}_{solver}.json")
    spec = json.dumps({"case": case, "size": size, "solver": solver, "repeats": repeats, "out": out})
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--_child", spec],
                              capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"case": case, "size": size, "solver": solver, "error": f"timed out after {timeout} s"}
    if proc.returncode != 0 or not os.path.exists(out):
        tail = " | ".join((proc.stderr or "").strip().splitlines()[-3:])
        return {"case": case, "size": size, "solver": solver, "error": f"rc={proc.returncode}: {tail}"}
    with open(out) as fh:
        return json.load(fh)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[512],
                    help="grid sides N (N x N); smaller ones (64, 128, 256) for quick checks")
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child:
        child(json.loads(args._child))
        return 0
    run_unpinned(__file__, argv)
    info = machine_info()
    print_machine(info)
    print(f"each row: a fresh process; 'first' is its first call, min/median over 1 + "
          f"{args.repeats} calls; ratios from first calls of this run (> 1: faster than SciPy)")
    results = {"machine": info, "cases": {}}
    with tempfile.TemporaryDirectory() as work:
        for case in args.cases:
            if case == "horn_schunck" and importlib.util.find_spec("skimage") is None:
                print(f"\n{case}: skipped (scikit-image is not installed)")
                continue
            if case == "batch":
                rows = [run_child(case, BATCH_SIDE, s, args.repeats, work, args.timeout) for s in BATCH_SOLVERS]
                table(f"{CASES[case]}: {rows[0].get('unknowns')} unknowns in all, float64, SPD; every "
                      "baseline loops over the systems", rows, "spsolve")  # fmt: skip
                results["cases"]["batch"] = rows
                continue
            for size in args.sizes:
                rows = [run_child(case, size, s, args.repeats, work, args.timeout) for s in SOLVERS]
                first = next((r for r in rows if "error" not in r), {})
                table(f"{CASES[case]}, {size}x{size}: {first.get('unknowns')} unknowns, "
                      f"{first.get('nnz')} nonzeros, float64, SPD", rows, "spsolve")
                ssi = next(r for r in rows if r["solver"] == "ssi_sparse")
                print(f"  ssi_sparse: {ssi.get('path', ssi.get('error'))}")
                if "median_flow" in first:
                    u, v = first["median_flow"]
                    print(f"  median flow (u, v) = ({u:.3f}, {v:.3f}) pixel; the shift moved the "
                          f"photo by ({SHIFT[1]}, {SHIFT[0]})")
                results["cases"][f"{case}_{size}"] = rows
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
