#!/usr/bin/env python3
"""CPU benchmark of ssi_sparse against SciPy's SuperLU (and CHOLMOD / PARDISO when installed).

Run from the repository root::

    PYTHONPATH=. python bench/bench_cpu.py [--sizes 257 513 1025 2049]
        [--max-baseline-seconds 240] [--json out.json] [--quick]

Every solver runs in its own child process (this script re-invoked with ``--_child``), so that
its peak memory is measured on its own and a hang cannot stall the run.  The matrix travels to
the child as a temporary ``.npz`` file; right-hand sides are regenerated there from a seed.

See bench/README.md for the meaning of every column.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy
import scipy.sparse as sp

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)  # benchmark the working tree's engine

PROBLEMS = {
    "laplace5": "5-point Dirichlet Laplacian (kronsum of 1-D [-1, 2, -1])",
    "varcoef9": "9-point variable-coefficient SPD (log-uniform edge weights in [1e-2, 1e2])",
    "convdiff": "upwind convection-diffusion, cell Peclet 100 / 50 (nonsymmetric)",
    "helmholtz": "Helmholtz L - (kh)^2 I, kh = 0.5 (real symmetric indefinite)",
    "image": "edge-aware smoothing I + 10 L_w of a synthetic N x N photo-like image (SPD)",
}
#: Problems whose matrix is symmetric positive definite (CHOLMOD applies).
SPD_PROBLEMS = {"laplace5", "varcoef9", "image"}

# Baselines: name -> (growth of total time when N doubles, used to predict the next size).
BASELINES = {
    "spsolve": 8.0,
    "splu_mmd": 8.0,
    "cholmod": 6.5,
    "cholmod_cvxopt": 6.5,
    "pardiso": 6.5,
    "ssi_mixed": 6.5,
}
BASELINE_LABEL = {
    "spsolve": "scipy spsolve (COLAMD)",
    "splu_mmd": "scipy splu MMD_AT_PLUS_A",
    "cholmod": "CHOLMOD (sksparse)",
    "cholmod_cvxopt": "CHOLMOD (cvxopt)",
    "pardiso": "PARDISO (pypardiso)",
    "ssi_mixed": "ssi_sparse float32 factor",
}

RHS_SEED = 12345
MATRIX_SEED = 2024
SSI_TIMEOUT_S = 3600.0


# --------------------------------------------------------------------------------------------
# problems
# --------------------------------------------------------------------------------------------


def laplace5(N: int) -> sp.csr_matrix:
    T = sp.diags([-1.0, 2.0, -1.0], [-1, 0, 1], shape=(N, N), dtype=np.float64)
    return sp.kronsum(T, T, format="csr")


def varcoef9(N: int, seed: int = MATRIX_SEED) -> sp.csr_matrix:
    """A = D - W + shift*I on an N x N grid (row-major), W symmetric with 8-neighbour couplings.

    Every undirected edge (4 forward offsets cover all 8 neighbours) gets one weight,
    log-uniform in [1e-2, 1e2]; D holds the row sums of W, so D - W is a graph Laplacian (PSD)
    and the shift 1e-3 * mean(diag D) makes A SPD.
    """
    rng = np.random.default_rng(seed)
    n = N * N
    idx = np.arange(n, dtype=np.int64).reshape(N, N)
    rows, cols, vals = [], [], []
    diag = np.zeros(n)
    for dr, dc in ((0, 1), (1, -1), (1, 0), (1, 1)):
        r0, r1 = 0, N - dr
        c0, c1 = max(0, -dc), N - max(0, dc)
        i = idx[r0:r1, c0:c1].ravel()
        j = idx[r0 + dr : r1 + dr, c0 + dc : c1 + dc].ravel()
        w = np.exp(rng.uniform(np.log(1e-2), np.log(1e2), size=i.size))
        rows += [i, j]
        cols += [j, i]
        vals += [-w, -w]
        np.add.at(diag, i, w)
        np.add.at(diag, j, w)
    diag += 1e-3 * diag.mean()
    ar = np.arange(n, dtype=np.int64)
    rows.append(ar)
    cols.append(ar)
    vals.append(diag)
    A = sp.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    return A.tocsr()


def synthetic_image(N: int, seed: int = MATRIX_SEED) -> np.ndarray:
    """A deterministic photo-like image in [0, 1]: smooth shading, sharp-edged discs and
    bars, fine texture and noise (no download needed)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:N, 0:N] / max(N - 1, 1)
    img = 0.3 + 0.2 * np.sin(3 * x + 2 * y)
    for _ in range(12):
        cx, cy, rad, val = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.2), rng.uniform(-0.4, 0.4)
        img += val * ((x - cx) ** 2 + (y - cy) ** 2 < rad**2)
    img += 0.15 * ((np.floor(8 * x) + np.floor(8 * y)) % 2) * (x > 0.6)
    img += 0.02 * rng.standard_normal((N, N))
    return np.clip(img, 0, 1)


def image_smoothing(N: int, lam: float = 10.0, sigma: float = 0.05) -> sp.csr_matrix:
    """Weighted-least-squares (edge-aware) smoothing ``I + lam L_w``, 5-point weights
    ``exp(-|dI|^2 / sigma^2)`` from :func:`synthetic_image`, as in Farbman et al. 2008."""
    img = synthetic_image(N)
    idx = np.arange(N * N).reshape(N, N)
    rows, cols, vals = [], [], []
    diag = np.ones(N * N)
    for a, b, d in ((idx[:, :-1], idx[:, 1:], img[:, 1:] - img[:, :-1]),
                    (idx[:-1, :], idx[1:, :], img[1:, :] - img[:-1, :])):  # fmt: skip
        w = lam * np.exp(-(d**2) / sigma**2).ravel()
        a, b = a.ravel(), b.ravel()
        rows += [a, b]
        cols += [b, a]
        vals += [-w, -w]
        np.add.at(diag, a, w)
        np.add.at(diag, b, w)
    ar = np.arange(N * N)
    A = sp.coo_matrix((np.concatenate(vals + [diag]), (np.concatenate(rows + [ar]), np.concatenate(cols + [ar]))),
                      shape=(N * N, N * N))  # fmt: skip
    return A.tocsr()


def make_problem(name: str, N: int) -> sp.csr_matrix:
    from ssi_sparse import problems

    if name == "laplace5":
        return laplace5(N)
    if name == "varcoef9":
        return varcoef9(N)
    if name == "convdiff":
        return problems.convection_diffusion_2d(N, N, peclet=100.0)
    if name == "helmholtz":
        return problems.helmholtz_2d(N, N, kh=0.5)
    return image_smoothing(N)


# --------------------------------------------------------------------------------------------
# machine information
# --------------------------------------------------------------------------------------------


def _proc_field(path: str, key: str):
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _blas_info() -> dict:
    info = {}
    try:
        cfg = np.show_config(mode="dicts")  # NumPy >= 1.25
        deps = cfg.get("Build Dependencies", {})
        for key in ("blas", "lapack"):
            d = deps.get(key, {})
            info[f"numpy_{key}"] = f"{d.get('name', '?')} {d.get('version', '?')}".strip()
        blas = deps.get("blas", {})
        if "openblas configuration" in blas:
            info["numpy_openblas_config"] = blas["openblas configuration"]
    except Exception as exc:  # older NumPy or odd builds
        info["numpy_blas"] = f"unknown ({type(exc).__name__})"
    try:
        cfg = scipy.show_config(mode="dicts")
        d = cfg.get("Build Dependencies", {}).get("blas", {})
        info["scipy_blas"] = f"{d.get('name', '?')} {d.get('version', '?')}"
    except Exception:
        pass
    try:
        import threadpoolctl

        pools = threadpoolctl.threadpool_info()
        info["threadpools"] = [
            {k: p.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer")}
            for p in pools
        ]
    except ImportError:
        info["threadpools"] = "threadpoolctl not installed"
    return info


def run_unpinned(script: str, argv=None) -> None:
    """The development VMs pin OpenBLAS to an older core type (``OPENBLAS_CORETYPE``,
    ``OPENBLAS_L2_SIZE``): restart ``script`` without both, so that this process's NumPy and
    every solver it starts (children inherit the environment) get the library's own kernel
    choice, and say so in the output."""
    pinned = [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in os.environ]
    if pinned:
        for v in pinned:
            os.environ.pop(v)
        os.environ["SSI_BENCH_UNPINNED"] = ",".join(pinned)
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, os.path.abspath(script)]
                 + list(sys.argv[1:] if argv is None else argv))  # fmt: skip
    if os.environ.get("SSI_BENCH_UNPINNED"):
        print(f"note: unset {os.environ['SSI_BENCH_UNPINNED']} for every solver of this run "
              "(OpenBLAS picks its own kernels)")
    else:
        print("note: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE not set: OpenBLAS picks its own kernels")


def machine_info() -> dict:
    mem_kb = _proc_field("/proc/meminfo", "MemTotal")
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    try:
        import ssi_sparse

        from ssi_sparse._engine.native import describe

        ssi = f"{ssi_sparse.__version__} ({os.path.dirname(ssi_sparse.__file__)})"
        kernels = describe()
    except Exception as exc:
        ssi = kernels = f"import failed: {exc}"
    env_threads = {
        k: os.environ[k]
        for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                  "VECLIB_MAXIMUM_THREADS")
        if k in os.environ
    }
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "ram_gib": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "ssi_sparse": ssi,
        "ssi_kernels": kernels,
        "thread_env": env_threads,
        "blas": _blas_info(),
    }


def print_machine(info: dict) -> None:
    print("=" * 100)
    print("Machine")
    print("=" * 100)
    for k in (
        "date", "host", "platform", "cpu_model", "cpu_count", "cpus_usable", "ram_gib",
        "python", "numpy", "scipy", "ssi_sparse", "ssi_kernels", "thread_env",
    ):
        print(f"  {k:<14} {info[k]}")
    for k, v in info["blas"].items():
        print(f"  {k:<14} {v}")


def matmul_gflops(sizes=(2048, 4096), repeats=3) -> dict:
    out = {}
    rng = np.random.default_rng(0)
    for m in sizes:
        a = rng.standard_normal((m, m))
        b = rng.standard_normal((m, m))
        a @ b  # warm-up (thread pool start, page faults)
        best = math.inf
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        out[m] = 2.0 * m**3 / best / 1e9
        print(f"  dense matmul float64 {m}x{m}: {out[m]:8.1f} GFLOP/s (best of {repeats}, "
              f"{best:.3f} s)")
        del a, b
    return out


# --------------------------------------------------------------------------------------------
# child process: one solver on one matrix
# --------------------------------------------------------------------------------------------


def _status_kib(key: str):
    v = _proc_field("/proc/self/status", key)
    return int(v.split()[0]) if v else None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_kib() -> int:
    hwm = _status_kib("VmHWM")
    if hwm is None:  # no /proc: fall back to getrusage (KiB on Linux)
        import resource

        hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return hwm


def _rel_res(A, x, b) -> float:
    r = A @ x - b
    return float(np.linalg.norm(r) / np.linalg.norm(b))


def _max_col_res(A, X, B) -> float:
    R = A @ X - B
    return float(np.max(np.linalg.norm(R, axis=0) / np.linalg.norm(B, axis=0)))


def _best(fn, repeats):
    best, out = math.inf, None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _time_factor_and_solves(A, b, B8, res, factor, solve):
    """The common protocol of the factor-then-solve baselines: reset the peak-RSS counter,
    time ``factor()`` and the first ``solve(handle, b)``, then reused solves (1 and 8 rhs).
    Returns the factor handle."""
    _reset_peak()
    res["rss0_kib"] = _status_kib("VmRSS")
    t = time.perf_counter()
    handle = factor()
    res["factor_s"] = time.perf_counter() - t
    t = time.perf_counter()
    x = solve(handle, b)
    res["solve1_first_s"] = time.perf_counter() - t
    res["peak_kib"] = _peak_kib()
    res["residual"] = _rel_res(A, x, b)
    res["solve1_s"], x = _best(lambda: solve(handle, b), 3)
    res["solve8_s"], X = _best(lambda: solve(handle, B8), 2)
    res["residual8"] = _max_col_res(A, X, B8)
    res["total_s"] = res["factor_s"] + res["solve1_first_s"]
    return handle


def _child_ssi(A, b, B8, res):
    import ssi_sparse
    from ssi_sparse._planning.plan import build_plan

    H = W = int(round(math.sqrt(A.shape[0])))
    build_plan.cache_clear()
    # first call: grid detection + plan build + numeric factorization
    t = time.perf_counter()
    f = ssi_sparse.factorize(A)
    res["factor_first_s"] = time.perf_counter() - t
    t = time.perf_counter()
    x = f.solve(b)
    res["solve1_first_s"] = time.perf_counter() - t
    res["peak_kib"] = _peak_kib()
    res["residual"] = _rel_res(A, x, b)
    res["nbytes"] = int(f.nbytes)
    res["grid"] = str(f.grid)
    res["hermitian"] = bool(f.hermitian)
    res["min_rcond"] = float(f.min_rcond)
    del f, x
    # plan cached: numeric factorization only (best of 2 when it is cheap)
    reps = 2 if res["factor_first_s"] < 20 else 1
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        f = ssi_sparse.factorize(A)
        best = min(best, time.perf_counter() - t)
        if _ < reps - 1:
            del f
    res["factor_s"] = best
    res["solve1_s"], x = _best(lambda: f.solve(b), 3)
    res["solve8_s"], X = _best(lambda: f.solve(B8), 2)
    res["residual_cached"] = _rel_res(A, x, b)
    res["residual8"] = _max_col_res(A, X, B8)
    # new values on the same pattern (time stepping, Newton): refactorize, as such loops run it
    # (the first one builds its factor beside the old one; later ones reuse memory)
    A_next = A * 1.5
    times = []
    for _ in range(3 if res["factor_first_s"] < 20 else 1):
        t = time.perf_counter()
        f.refactorize(A_next)
        times.append(time.perf_counter() - t)
    res["refactor_first_s"], res["refactor_s"] = times[0], min(times[1:] or times)
    res["residual_refactor"] = _rel_res(A_next, f.solve(b), b)
    del f, x, X, A_next
    # the symbolic phase alone, and the flop model
    build_plan.cache_clear()
    t = time.perf_counter()
    plan = build_plan(H, W)
    res["plan_s"] = time.perf_counter() - t
    res["flops"] = float(plan.flops())
    res["max_front"] = int(plan.max_front())
    # as for the baselines: the first factorization and the first solve after it
    res["total_s"] = res["factor_first_s"] + res["solve1_first_s"]
    res["total_cached_s"] = res["factor_s"] + res["solve1_s"]


def _child_spsolve(A, b, B8, res):
    from scipy.sparse.linalg import spsolve

    A = A.tocsc()
    _reset_peak()
    res["rss0_kib"] = _status_kib("VmRSS")
    t = time.perf_counter()
    x = spsolve(A, b)
    res["total_s"] = time.perf_counter() - t
    res["peak_kib"] = _peak_kib()
    res["residual"] = _rel_res(A, x, b)


def _child_splu(A, b, B8, res):
    from scipy.sparse.linalg import splu

    A = A.tocsc()
    lu = _time_factor_and_solves(
        A, b, B8, res, lambda: splu(A, permc_spec="MMD_AT_PLUS_A"), lambda f, rhs: f.solve(rhs)
    )
    # factor size: values + row indices of L and U (+ column pointers)
    nnz = lu.L.nnz + lu.U.nnz
    res["nbytes"] = int(nnz * (8 + 4) + 2 * (A.shape[0] + 1) * 4)


def _child_cholmod(A, b, B8, res):
    from sksparse.cholmod import cholesky

    A = A.tocsc()
    F = _time_factor_and_solves(A, b, B8, res, lambda: cholesky(A), lambda f, rhs: f(rhs))
    try:
        res["nbytes"] = int(F.L().nnz * (8 + 4))
    except Exception:
        pass


def _child_cholmod_cvxopt(A, b, B8, res):
    """CHOLMOD through cvxopt (its wheels bundle CHOLMOD; the anchors' fastest CPU solver)."""
    import cvxopt
    import cvxopt.cholmod

    low = sp.tril(A, format="coo")  # cvxopt.cholmod reads the lower triangle
    M = cvxopt.spmatrix(
        cvxopt.matrix(low.data.astype(np.float64)),
        cvxopt.matrix(low.row.astype(np.int64)),
        cvxopt.matrix(low.col.astype(np.int64)),
        size=A.shape,
    )

    def factor():
        F = cvxopt.cholmod.symbolic(M)
        cvxopt.cholmod.numeric(M, F)
        return F

    def solve(F, rhs):
        X = cvxopt.matrix(np.asarray(rhs, dtype=np.float64).reshape(A.shape[0], -1))
        cvxopt.cholmod.solve(F, X)
        return np.array(X).reshape(np.shape(rhs))

    _time_factor_and_solves(A, b, B8, res, factor, solve)


def _child_pardiso(A, b, B8, res):
    import pypardiso

    A = A.tocsr()
    solver = getattr(pypardiso, "PyPardisoSolver", None)
    if solver is None:  # only the one-shot interface
        _reset_peak()
        res["rss0_kib"] = _status_kib("VmRSS")
        t = time.perf_counter()
        x = pypardiso.spsolve(A, b)
        res["total_s"] = time.perf_counter() - t
        res["peak_kib"] = _peak_kib()
        res["residual"] = _rel_res(A, x, b)
        return
    ps = solver()

    def factor():
        ps.factorize(A)
        return ps

    # solve() reuses the factorization of the same matrix
    _time_factor_and_solves(A, b, B8, res, factor, lambda p, rhs: p.solve(A, rhs))


def _child_ssi_mixed(A, b, B8, res):
    """ssi_sparse with a float32 factorization refined to float64 accuracy (first call)."""
    import ssi_sparse

    f = _time_factor_and_solves(A, b, B8, res, lambda: ssi_sparse.factorize(A, factor_dtype=np.float32),
                                lambda f, rhs: f.solve(rhs))  # fmt: skip
    res["nbytes"] = int(f.nbytes)
    res["factor_dtype"] = str(f.factor_dtype)


CHILD_FUNCS = {
    "ssi_sparse": _child_ssi,
    "spsolve": _child_spsolve,
    "splu_mmd": _child_splu,
    "cholmod": _child_cholmod,
    "cholmod_cvxopt": _child_cholmod_cvxopt,
    "pardiso": _child_pardiso,
    "ssi_mixed": _child_ssi_mixed,
}


def _blas_in_use() -> str:
    """The BLAS libraries loaded by the solver that just ran (threadpoolctl), one line."""
    try:
        import threadpoolctl
    except ImportError:
        return "threadpoolctl not installed"
    parts = []
    for p in threadpoolctl.threadpool_info():
        if p.get("user_api") != "blas":
            continue
        name = os.path.basename(p.get("filepath", "?")).split(".so")[0]
        parts.append(f"{p.get('internal_api')} {p.get('version')} {p.get('architecture', '')} "
                     f"x{p.get('num_threads')} ({name})")
    return "; ".join(parts) or "no BLAS loaded"


def child_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    if spec["solver"] in ("ssi_sparse", "ssi_mixed"):  # import before the baseline RSS is taken
        import ssi_sparse  # noqa: F401
        from ssi_sparse._planning.plan import build_plan  # noqa: F401
    A = sp.load_npz(spec["matrix"]).tocsr()
    n = A.shape[0]
    rng = np.random.default_rng(RHS_SEED)
    b = rng.standard_normal(n)
    B8 = rng.standard_normal((n, 8))
    res = {"solver": spec["solver"]}
    res["peak_reset"] = _reset_peak()
    res["rss0_kib"] = _status_kib("VmRSS")
    try:
        CHILD_FUNCS[spec["solver"]](A, b, B8, res)
        res["ok"] = True
        res["blas"] = _blas_in_use()
    except ImportError as exc:
        res["ok"] = False
        res["error"] = f"not installed ({exc})"
    except Exception as exc:
        res["ok"] = False
        res["error"] = f"{type(exc).__name__}: {exc}"
    if res.get("peak_kib") and res.get("rss0_kib"):
        res["peak_mib"] = (res["peak_kib"] - res["rss0_kib"]) / 1024
        res["peak_abs_mib"] = res["peak_kib"] / 1024
    with open(spec["out"], "w") as fh:
        json.dump(res, fh)


def run_child(solver: str, matrix: str, workdir: str, timeout: float) -> dict:
    out = os.path.join(workdir, f"res_{solver}_{os.getpid()}_{time.monotonic_ns()}.json")
    spec = json.dumps({"solver": solver, "matrix": matrix, "out": out})
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", spec]
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"solver": solver, "ok": False, "timeout": True,
                "error": f"timed out after {timeout:.3g} s (killed)"}
    wall = time.perf_counter() - t
    if proc.returncode != 0 or not os.path.exists(out):
        tail = (proc.stderr or "").strip().splitlines()[-5:]
        why = "killed (out of memory?)" if proc.returncode in (-9, 137) else f"rc={proc.returncode}"
        return {"solver": solver, "ok": False, "error": f"child failed, {why}: " + " | ".join(tail)}
    with open(out) as fh:
        res = json.load(fh)
    os.remove(out)
    res["child_wall_s"] = wall
    return res


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------


def _available(solver: str) -> tuple[bool, str]:
    mod = {"cholmod": "sksparse.cholmod", "cholmod_cvxopt": "cvxopt.cholmod", "pardiso": "pypardiso"}.get(solver)
    if mod is None:
        return True, ""
    try:
        __import__(mod)
        return True, ""
    except Exception as exc:
        return False, f"not installed ({type(exc).__name__}: {exc})"


def _fmt(v, spec=".3f"):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    return format(v, spec)


def _fmt_s(v):
    if v is None:
        return "-"
    return f"{v:.4f}" if v < 1 else (f"{v:.3f}" if v < 100 else f"{v:.1f}")


def print_table(problem: str, rows: list, notes: list) -> None:
    print()
    print("=" * 124)
    print(f"{problem}: {PROBLEMS[problem]}")
    print("=" * 124)
    hdr = (f"{'N':>5} {'n':>9}  {'solver':<28} {'factor s':>9} {'solve(1) s':>10} "
           f"{'solve(8) s':>10} {'total s':>9} {'speed-up':>8} {'residual':>9} "
           f"{'peak MiB':>9} {'factor MiB':>10}")
    print(hdr)
    print("-" * len(hdr))
    last_n = None
    for r in rows:
        if last_n is not None and r["N"] != last_n:
            print()
        last_n = r["N"]
        if not r.get("ok"):
            print(f"{r['N']:>5} {r['n']:>9}  {r['label']:<28} {r.get('error', 'skipped')}")
            continue
        nb = r.get("nbytes")
        print(
            f"{r['N']:>5} {r['n']:>9}  {r['label']:<28} "
            f"{_fmt_s(r.get('factor_table_s', r.get('factor_s'))):>9} "
            f"{_fmt_s(r.get('solve1_s')):>10} {_fmt_s(r.get('solve8_s')):>10} "
            f"{_fmt_s(r.get('total_s')):>9} {_fmt(r.get('speedup'), '.2f'):>8} "
            f"{_fmt(r.get('residual'), '.1e'):>9} {_fmt(r.get('peak_mib'), '.0f'):>9} "
            f"{_fmt(nb / 2**20 if nb else None, '.0f'):>10}"
        )
    for line in notes:
        print("  " + line)
    blas = {}
    for r in rows:
        if r.get("ok") and r.get("blas"):
            blas[r["label"].split(" (")[0] if r["label"].startswith("ssi") else r["label"]] = r["blas"]
    for label, line in blas.items():
        print(f"  BLAS used by {label}: {line}")


def plot_results(results: dict, path: str) -> None:
    """Log-log plot of first-call total time against unknowns, one panel per problem."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    problems = results["problems"]
    colors = {}
    fig, axes = plt.subplots(1, len(problems), figsize=(5 * len(problems), 4.2), squeeze=False)
    for ax, (name, data) in zip(axes[0], problems.items()):
        series = {}
        for r in data["rows"]:
            if r.get("ok") and r.get("total_s"):
                series.setdefault(r["label"], []).append((r["n"], r["total_s"]))
        for label, pts in series.items():
            pts.sort()
            style = "-o" if label.startswith("ssi") else "--s"
            color = colors.setdefault(label, f"C{len(colors)}")  # one colour per solver
            ax.loglog([p[0] for p in pts], [p[1] for p in pts], style, label=label, ms=4, color=color)
        ax.set_title(name)
        ax.set_xlabel("unknowns")
        ax.set_ylabel("factorize + solve, s")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[0]:
        ax.legend(fontsize=6)
    fig.suptitle(f"bench_cpu.py on {results['machine'].get('cpu_model', 'this machine')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[257, 513, 1025, 2049])
    ap.add_argument("--max-baseline-seconds", type=float, default=240.0)
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--plot", type=str, default=None,
                    help="write a log-log plot (total time vs unknowns, every solver) to this PNG")
    ap.add_argument("--quick", action="store_true", help="sizes 129 and 257 only (smoke test)")
    ap.add_argument("--problems", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    ap.add_argument("--no-matmul", action="store_true", help="skip the dense matmul reference")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS/OpenMP threads for every solver and the matmul reference (sets "
                         "OMP/OPENBLAS/MKL_NUM_THREADS and restarts the script)")
    ap.add_argument("--warm-memory-gib", type=float, default=0.0,
                    help="first touch (and free) this much memory in a throwaway process: on a "
                         "fresh VM the first touch of guest memory costs ~1-2 s/GiB (host page "
                         "faults), which otherwise lands on whichever solver runs first")
    ap.add_argument("--busy-core", action="store_true",
                    help="keep one core busy (a spinning process) for the whole run: behaviour under "
                         "load, every solver alike")
    ap.add_argument("--_child", type=str, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._child is not None:
        child_main(args._child)
        return 0
    if args.threads is not None and os.environ.get("SSI_BENCH_THREADS") != str(args.threads):
        # thread counts must be set before NumPy loads its BLAS: restart with them in the env
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "SSI_BENCH_THREADS"):
            os.environ[var] = str(args.threads)
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, os.path.abspath(__file__)]
                 + list(sys.argv[1:] if argv is None else argv))

    run_unpinned(__file__, argv)  # the matmul reference too
    sizes = [129, 257] if args.quick else sorted(args.sizes)
    budget = args.max_baseline_seconds
    info = machine_info()
    print_machine(info)
    print()
    print("Dense matmul reference (numpy float64 A @ B)")
    mm = {} if args.no_matmul else matmul_gflops()
    mm_peak = max(mm.values()) if mm else None

    if args.warm_memory_gib > 0:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import numpy as np; a = np.ones(int(%d)); del a"
                        % int(args.warm_memory_gib * 2**30 / 8)], check=True)  # fmt: skip
        print(f"  warmed {args.warm_memory_gib:g} GiB of memory first (touched and freed in "
              f"{time.perf_counter() - t:.2f} s): first calls below see warm memory")
    if args.busy_core:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        import atexit

        atexit.register(hog.kill)
        print(f"  one core kept busy for the whole run (a spinning process, pid {hog.pid})")
    avail = {s: _available(s) for s in BASELINES}
    for s, (ok, why) in avail.items():
        if not ok:
            print(f"  baseline {BASELINE_LABEL[s]}: {why}")

    results = {"machine": info, "matmul_gflops": {str(k): v for k, v in mm.items()},
               "max_baseline_seconds": budget, "sizes": sizes, "problems": {}}
    tables = {}
    with tempfile.TemporaryDirectory(prefix="ssi_bench_") as workdir:
        for problem in args.problems:
            rows, notes = [], []
            prev = {s: None for s in BASELINES}  # (N, total_s) or "stop"
            for N in sizes:
                n = N * N
                print(f"\n[{problem} N={N}] building matrix ...", flush=True)
                t = time.perf_counter()
                A = make_problem(problem, N)
                t_build = time.perf_counter() - t
                path = os.path.join(workdir, f"{problem}_{N}.npz")
                sp.save_npz(path, A, compressed=False)
                print(f"  n={n} nnz={A.nnz} (built in {t_build:.2f} s)", flush=True)
                del A

                ssi = run_child("ssi_sparse", path, workdir, SSI_TIMEOUT_S)
                ssi.update(N=N, n=n, label="ssi_sparse (first call)")
                if ssi.get("ok"):
                    ssi["gflops"] = ssi["flops"] / ssi["factor_s"] / 1e9
                    ssi["gflops_first"] = ssi["flops"] / ssi["factor_first_s"] / 1e9
                    ssi["speedup"] = 1.0
                    ssi["factor_table_s"] = ssi["factor_first_s"]
                    print(f"  ssi_sparse: factor {ssi['factor_first_s']:.3f} s first call "
                          f"(plan {ssi['plan_s']:.3f} s), {ssi['factor_s']:.3f} s cached, "
                          f"solve {ssi['solve1_s']:.4f} s, residual {ssi['residual']:.1e}; "
                          f"refactorize {ssi['refactor_first_s']:.3f} s first, {ssi['refactor_s']:.3f} s "
                          f"in a loop (residual {ssi['residual_refactor']:.1e})", flush=True)
                    line = (f"N={N}: engine {ssi['flops'] / 1e9:.2f} GFLOP (model), "
                            f"{ssi['gflops']:.1f} GFLOP/s plan cached, "
                            f"{ssi['gflops_first']:.1f} GFLOP/s first call")
                    if mm_peak:
                        line += (f"  vs dense matmul {mm_peak:.1f} GFLOP/s "
                                 f"({100 * ssi['gflops'] / mm_peak:.0f}%)")
                    line += (f"; plan build {ssi['plan_s']:.3f} s, max front {ssi['max_front']}, "
                             f"{ssi['grid']}, hermitian={ssi['hermitian']}, "
                             f"min_rcond={ssi['min_rcond']:.1e}")
                    notes.append(line)
                    rows.append(ssi)
                    cached = dict(ssi, label="ssi_sparse (plan cached)",
                                  total_s=ssi["total_cached_s"],
                                  residual=ssi["residual_cached"],
                                  peak_mib=None, nbytes=None,
                                  factor_table_s=ssi["factor_s"])
                    cached["speedup"] = ssi["total_cached_s"] / ssi["total_s"]
                    rows.append(cached)
                else:
                    print(f"  ssi_sparse FAILED: {ssi.get('error')}", flush=True)
                    rows.append(ssi)
                ssi_total = ssi.get("total_s") if ssi.get("ok") else None

                for solver, growth in BASELINES.items():
                    label = BASELINE_LABEL[solver]
                    row = {"solver": solver, "N": N, "n": n, "label": label, "ok": False}
                    ok, why = avail[solver]
                    if solver.startswith("cholmod") and problem not in SPD_PROBLEMS:
                        ok, why = False, "not applicable (matrix not SPD)"
                    if not ok:
                        row["error"] = why
                        row["skipped"] = True
                        rows.append(row)
                        continue
                    p = prev[solver]
                    if p == "stop":
                        row["error"] = "skipped: failed or timed out at a smaller size"
                        row["skipped"] = True
                        rows.append(row)
                        print(f"  {label}: {row['error']}", flush=True)
                        continue
                    if p is not None:
                        n_prev, t_prev = p
                        predicted = t_prev * growth ** math.log2(N / n_prev)
                        row["predicted_s"] = predicted
                        if predicted > budget:
                            row["error"] = (f"skipped: predicted {predicted:.0f} s "
                                            f"({t_prev:.1f} s at N={n_prev} x {growth:g} per "
                                            f"doubling) > budget {budget:.0f} s")
                            row["skipped"] = True
                            rows.append(row)
                            prev[solver] = "stop"
                            print(f"  {label}: {row['error']}", flush=True)
                            continue
                    res = run_child(solver, path, workdir, 2.0 * budget)
                    row.update(res)
                    row["label"] = label
                    if row.get("ok"):
                        if ssi_total:
                            row["speedup"] = row["total_s"] / ssi_total
                        prev[solver] = (N, row["total_s"])
                        print(f"  {label}: total {row['total_s']:.3f} s, residual "
                              f"{row['residual']:.1e}", flush=True)
                    else:
                        prev[solver] = "stop"
                        print(f"  {label}: {row.get('error')}", flush=True)
                    rows.append(row)
                os.remove(path)
            tables[problem] = (rows, notes)
            results["problems"][problem] = {"description": PROBLEMS[problem], "rows": rows,
                                            "notes": notes}

    for problem, (rows, notes) in tables.items():
        print_table(problem, rows, notes)
    print()
    print("speed-up = (this solver's total s) / (ssi_sparse first-call total s); > 1 means "
          "ssi_sparse is faster.")
    print("peak MiB = child's peak RSS increase during factorize + first solve (matrix and rhs "
          "already loaded).")

    if args.plot:
        plot_results(results, args.plot)

    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=str)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
