#!/usr/bin/env python3
"""log-determinant of a large SPD grid matrix: ssi_sparse's GridFactor.slogdet next to CHOLMOD.

Run from the repository root::

    PYTHONPATH=. python bench/bench_slogdet.py [--size 1025]

CHOLMOD (through cvxopt) factors ``A = P L L^T P^T``; ``log det A = 2 sum log diag L``.
Prints both values, their relative difference and the time of each (factorization included).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import scipy.sparse as sp

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from ssi_sparse.problems import random_spd_9pt  # noqa: E402


def cholmod_logdet(A):
    import cvxopt
    import cvxopt.cholmod

    low = sp.tril(A, format="coo")
    M = cvxopt.spmatrix(cvxopt.matrix(low.data.astype(np.float64)), cvxopt.matrix(low.row.astype(np.int64)),
                        cvxopt.matrix(low.col.astype(np.int64)), size=A.shape)  # fmt: skip
    cvxopt.cholmod.options["supernodal"] = 2
    F = cvxopt.cholmod.symbolic(M)
    cvxopt.cholmod.numeric(M, F)
    return 2.0 * float(np.sum(np.log(np.array(cvxopt.cholmod.diag(F)).ravel())))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1025)
    args = ap.parse_args()
    import ssi_sparse

    N = args.size
    A = random_spd_9pt(N, N, seed=0)
    print(f"9-point random SPD {N}x{N}: n = {A.shape[0]}, nnz = {A.nnz}")
    t = time.perf_counter()
    sign, ours = ssi_sparse.factorize(A).slogdet()
    t_ours = time.perf_counter() - t
    try:
        t = time.perf_counter()
        ref = cholmod_logdet(A)
        t_ref = time.perf_counter() - t
    except ImportError as exc:
        print(f"CHOLMOD (cvxopt) not installed: {exc}")
        return 0
    print(f"  ssi_sparse  factorize + slogdet {t_ours:7.2f} s   sign {sign:+.0f}  logdet {ours:.12e}")
    print(f"  CHOLMOD     factorize + diag    {t_ref:7.2f} s              logdet {ref:.12e}")
    print(f"  relative difference {abs(ours - ref) / abs(ref):.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
