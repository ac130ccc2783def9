/* Native CPU kernel of ssi_sparse: assemble and factor the frontal matrices of the box tree.
 *
 * The portable engine (ssi_sparse/_engine.py) does this level by level with NumPy gathers and
 * stacked LAPACK inverses, which cost a library call per tiny matrix and a pass over memory
 * per step.  Here each box's frontal is gathered and factored while it sits in cache, by
 * inline loops (narrow frontals, inline_impl.h) or SciPy's LAPACK/BLAS (wide ones,
 * dense_impl.h), both storing factors, not inverses; tests compare them with the portable
 * kernel and with each other.
 *
 * Loaded with ctypes (ssi_sparse/_native.py), which releases the GIL during the call,
 * so the engine's thread pool runs chunks in parallel.  The module init below exists only so
 * that setuptools can build this file as an ordinary (optional) extension.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <complex.h>
#include <math.h>
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#if !defined(_WIN32)
#include <sched.h>
#include <time.h>
#endif

#if defined(_WIN32)
#include <windows.h>
#define EXPORT __declspec(dllexport)
#else
#define EXPORT __attribute__((visibility("default")))
#endif

enum { MODE_LEAF = 0, MODE_MERGE = 1, MODE_NONE = 2, MODE_RUNS = 3 };
enum { BOX_NOT_PD = 1, BOX_SINGULAR = 2 };
enum { SWEEP_UP_N = 0, SWEEP_UP_T = 1, SWEEP_DOWN_N = 2, SWEEP_DOWN_T = 3 };
/* ssi_sweep_program's steps (program_impl.h; the same numbers in _engine/program.py) */
enum { OP_GATHER_NODES = 1, OP_ADD_RUNS = 2, OP_SWEEP = 3, OP_GATHER_BOUNDARY = 4, OP_SCATTER_NODES = 5 };
enum { PROGRAM_OP_WIDTH = 13 };

/* A thread waiting for another (ssi_sweep_drive, program_impl.h): spin briefly (the other is
 * microseconds away on a free core), then yield, then sleep, so that a busy machine's cores
 * go to the threads with work. */
static inline void relax(int64_t *spins)
{
    ++*spins;
#if defined(_WIN32)
    if (*spins > 4096)
        Sleep(0);
#else
    if (*spins < 4096) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else if (*spins < 4096 + 256) {
        sched_yield();
    } else {
        const struct timespec pause = {0, 20000};
        nanosleep(&pause, NULL);
    }
#endif
}

/* SciPy's BLAS/LAPACK routines for one dtype (dense_impl.h), as ssi_sparse/_lapack.py finds them */
struct blas_table {
    void *gemm, *trsm, *rank_k, *getrf, *potrf, *gecon, *pocon, *lange, *laswp, *gemv, *trsv;
};

struct source {
    int32_t mode;
    const void *a;        /* leaf: V (n, 9); merge: first child's frontals at this chunk */
    int64_t stride_a;     /* leaf: n (a closed node >= n reads zero); merge: entries per child frontal */
    const int64_t *idx_a; /* merge: flat gather into the first child's frontal */
    const void *b;
    int64_t stride_b;
    const int64_t *idx_b;
    const int64_t *nodes; /* leaf: closed nodes of every box (P, n_nodes) */
    int64_t n_nodes;
    /* leaf: the template's owned entries: frontal position, closed node, stencil slot */
    const int64_t *tpos, *tnode, *tslot;
    int64_t n_entries;
};

/* The two children of a merge class assembled by runs (MODE_RUNS, frontals too wide for flat
 * maps; see ssi_assemble_runs), each child's frontals at the chunk's first box. */
struct runs_source {
    const void *c[2];
    int64_t f[2], s[2];
    const int64_t *rowmap[2], *runs[2];
    int64_t n_runs[2];
};

/* One leaf child of a level-1 box assembled and factored with its parent (ssi_dense_chunk):
 * its class's closed nodes and template, and where its factors go, each at the chunk's first
 * leaf (x and perm NULL for Cholesky). */
struct leaf_source {
    const int64_t *nodes;
    int64_t n_nodes;
    const int64_t *tpos, *tnode, *tslot;
    int64_t n_entries;
    int64_t f, s;
    void *factor, *x, *w;
    int64_t *perm;
    double *rcond;
};

/* |x| and conj(x) for whichever scalar type the template is instantiated with */
#define ABS(v) _Generic((v), float: fabsf, double: fabs, float _Complex: cabsf, double _Complex: cabs)(v)
#define CONJ(v) _Generic((v), float _Complex: conjf, double _Complex: conj, default: real_identity)(v)
static inline double real_identity(double v) { return v; }
#define REAL_PART(v) _Generic((v), float _Complex: crealf, double _Complex: creal, default: real_identity)(v)
#define SQRT(v) _Generic((v), float: sqrtf, default: sqrt)(v)

/* One instantiation per dtype: FN names the functions, T is the scalar, R its real type. */
#define FN(name) name##_f64
#define T double
#define R double
#include "frontal_impl.h"

#define FN(name) name##_f32
#define T float
#define R float
#include "frontal_impl.h"

#define FN(name) name##_c128
#define T double _Complex
#define R double
#include "frontal_impl.h"

#define FN(name) name##_c64
#define T float _Complex
#define R float
#include "frontal_impl.h"

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native_frontal", "ssi_sparse native CPU kernels (used through ctypes)",
    -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native_frontal(void) { return PyModule_Create(&module); }
