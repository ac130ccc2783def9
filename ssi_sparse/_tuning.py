"""Tuning constants of the CPU engine, and the one place that picks each class's kernel.

Every threshold the engine, the plan and the kernels use lives here, so that a retuning (or a
new machine) changes one table.  Values measured on the development machine (2-core AMD EPYC,
OpenBLAS); see bench/README.md.
"""

from __future__ import annotations

import numpy as np

#: ``spsolve`` / ``factorized`` send grids of fewer unknowns to SciPy's SuperLU, which is
#: faster there (the engine's per-class Python work dominates; bench/results/small.txt,
#: variable diffusion, median per system over 10: 64^2 SciPy 8.3 ms vs 10.6, 72^2 11.4 vs
#: 12.1, 80^2 14.4 vs 13.3, 96^2 22.6 vs 16.8), unless the caller names a grid.
ENGINE_MIN_SIZE = 6400

#: ... and from this many unknowns up the first time a matrix of its size (unknowns and stored
#: entries) comes to ``spsolve`` / ``factorized``; below, that first one goes to SciPy and the
#: next ones of its size to the engine: the engine's first call on a grid also builds the
#: grid's plan, which pays from the second system on (bench/results/small_v2.txt, fresh
#: processes, first call, SciPy vs engine: 112^2 49 vs 81 ms, 128^2 49 vs 72, 144^2 87 vs 65;
#: the next systems of a size 47 vs 40, 51 vs 30, 66 vs 38).
ENGINE_MIN_SIZE_FIRST = 20736

#: Merge frontals up to this size get flat gather maps in the plan (one gather per entry beats
#: many tiny block copies); larger ones are assembled from contiguous runs.
FLAT_GATHER_MAX_FRONT = 256

#: The native kernels gather merge frontals up to this size by flat maps, wider ones by
#: their runs: as fast from f = 79 up (512^2 and 1025^2 factorizations), and the wider maps
#: are then never built (12-25 MB, 10-15 ms of a first call at 512^2).
NATIVE_FLAT_MAX_FRONT = 64

#: NumPy assembles frontals up to this size by flat gathers, larger ones by block copies
#: (CuPy gathers everything).
NUMPY_FLAT_MAX_FRONT = 128

#: Row block of the flat-gather assembly: its scratch stays small, cached and reused.
GATHER_BLOCK_BYTES = 2 << 20

#: Bytes of temporaries per chunk of the portable kernel's Schur update (stays in cache and in
#: the allocator's free lists).
CHUNK_BYTES = 8 << 20

#: Classes with at least this many frontal entries are split into row chunks run by the
#: engine's threads (box-level parallelism for the small frontals).
PARALLEL_MIN_ENTRIES = 1 << 20

#: Whole-matrix passes (the stencil pass over a CSR matrix's entries, equilibration, the
#: Hermitian test, row maxima) are cut over the engine's threads from this many entries up;
#: below, one call costs less than handing parts to threads.
PASS_PARALLEL_MIN_ENTRIES = 1 << 18

#: With the native extension every box is factored in C into the same format (factors, not
#: inverses): frontals at least this wide by LAPACK/BLAS-3 one box at a time
#: (``_csrc/dense_impl.h``), narrower ones by inline loops (``_csrc/inline_impl.h``), whose
#: arithmetic costs less than the library calls at that size (bench/bench_levels.py).
DENSE_MIN_FRONT = 64

#: A level with fewer boxes than the engine has threads runs its boxes on BLAS's own threads
#: only when some frontal is at least this wide; narrower ones run on the engine's threads
#: with single-threaded BLAS.  Each multi-threaded BLAS call leaves OpenBLAS's workers
#: spinning for about 0.1 s, taking cores from the engine's next work: the 512^2 root
#: (f = 512) on two BLAS threads made every refactorization ~17 % slower (0.25 s vs 0.21 s
#: with OPENBLAS_THREAD_TIMEOUT=4 or one BLAS thread); at 1025^2 the root (f = 1025) gains
#: from the threads as much as it loses.
BLAS_THREADS_MIN_FRONT = 1024

#: A solve sweep over a class with at least this many stored factor entries (P s (s + r))
#: cuts its boxes into one range per engine thread: the sweeps stream each factor once and
#: one core does not saturate the memory.  The sweeps run with single-threaded BLAS (its
#: spinning workers would take the second core): 1025^2 reused solve 0.16 -> 0.12 s, about
#: the same from 2^16 to 2^20 entries (levels of 1-8 MB).
SWEEP_PARALLEL_MIN_ENTRIES = 1 << 18

#: A solve keeps its frontal right-hand sides for the next solve of as many columns while
#: they take at most this fraction of the factor's bytes (one column at 1025^2: 37 MB next to
#: 536 MB; reusing them saves the page faults of fresh memory, 0.100 -> 0.090 s per solve).
SOLVE_WORKSPACE_MAX_FRACTION = 0.25

#: Recorded solves (solve programs) a factor keeps, one per shape of right-hand side
#: (``trans``, columns, dtype): the most recent ones, their fronts together within
#: ``SOLVE_WORKSPACE_MAX_FRACTION`` of the factor.
KEPT_PROGRAMS = 4

#: Without the native extension the dense kernel loops over boxes in Python: a few ctypes
#: calls per box pay only on wide frontals; below, the portable batched inverse kernel.
DENSE_MIN_FRONT_PYTHON_LOOP = 257

#: A masked grid found from the pattern goes to the engine only if its unknowns cover at least
#: this share of the embedding grid: on thinner domains SciPy's fill is as cheap as the
#: absent pixels the engine still carries near the unknowns (bench/results/masked_v9.txt,
#: rings in 512^2, first call, SciPy / engine: 25 % 1.0x, 35 % 1.3x, 45 % 1.7x).
#: ``mask=`` / ``pixels=`` given by the caller bypass it.
MASK_MIN_COVERAGE = 0.3

#: Masked grids: from the level where a level holds at most this many boxes upwards, every
#: box is its own class whose frontal carries only the unknowns (:mod:`ssi_sparse._planning.masked_plan`);
#: the wide frontals up there hold most of the work and memory, and a class per box costs
#: a little Python per box.
MASK_COMPACT_MAX_BOXES = 64

#: ... and has at most this many separate components (each is placed on the grid by a loop).
MASK_MAX_COMPONENTS = 4096

#: Detection without a hint tries 1, then 2 .. this many unknowns per pixel (both numberings).
DETECT_MAX_COMPONENTS = 4

#: ``ssi_sparse.dask.solve_many`` factors each task's systems as one batch of at most this
#: many unknowns in all (batches ran faster than one system per task, bench/bench_dask.py:
#: 64 systems of 513^2 on 2 workers, 43 s batched in 16s vs 50 s one by one).
DASK_BATCH_MAX_UNKNOWNS = 1 << 22

#: Stencil arrays, frontal arenas, stored factors and solve fronts at least this large are
#: mapped by :mod:`ssi_sparse._engine.pages` (small pages where the machine reports freed memory to a
#: hypervisor); smaller arrays come from NumPy's allocator and its free lists.
SMALL_PAGES_MIN_BYTES = 4 << 20

#: ... and, freed, they stay mapped this long for the next buffer of their size (the kernel
#: reports a free block to the hypervisor after 2 s; an allocator's decay, e.g. jemalloc's,
#: is 10 s).
KEEP_FREED_S = 2.0

KERNELS = ("dense", "native", "portable")


def choose_kernel(xp, dtype, cls, level: int) -> str:
    """Which kernel assembles and eliminates class ``cls`` of level ``level``.

    ``"dense"``: per-box LAPACK/BLAS (:mod:`ssi_sparse._engine.dense`), NumPy arrays only.  ``"native"``: the
    inline C loops (:mod:`ssi_sparse._engine.native`) for narrow frontals, in the same format.  ``"portable"``:
    the batched array-API inverse kernel (:mod:`ssi_sparse._engine.portable`), any namespace (CuPy,
    array_api_strict).
    """
    from ._engine import native  # the native module imports the kernels' helpers

    if xp is not np:
        return "portable"
    if native.supports_dtype(xp, dtype):
        return "dense" if cls.n_front >= DENSE_MIN_FRONT else "native"
    return "dense" if cls.n_front >= DENSE_MIN_FRONT_PYTHON_LOOP else "portable"
