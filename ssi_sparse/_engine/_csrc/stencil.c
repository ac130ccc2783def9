/* Native CPU pass of ssi_sparse: a CSR/CSC matrix's stencil array on a row-major grid (every
 * pixel an unknown, or a masked grid's unknowns on the nodes given).
 *
 * Grid detection and stencil assembly in NumPy take a dozen passes over every stored entry
 * (coordinates, integer divisions, offsets, slots, a bincount): ~0.5 s per million unknowns,
 * and many temporaries of the matrix's size.  For the common layout (one unknown per pixel,
 * 3x3 stencil, every pixel an unknown) one pass over indptr/indices/data does it all:
 * every nonzero entry (row i, column j) either lands in slot (dr + 1) * 3 + (dc + 1) of row
 * i, where (dr, dc) is the offset of j's pixel from i's on a grid of the given width, or the
 * width does not fit (the pass stops at once).  Explicit zeros are ignored and duplicate
 * entries summed in double precision, as ssi_sparse/_grid.py's general path does.
 *
 * Part of the _native_frontal extension, loaded with ctypes by ssi_sparse/_native.py.
 */
#include <complex.h>
#include <math.h>
#include <stdint.h>

#if defined(_WIN32)
#define EXPORT __declspec(dllexport)
#else
#define EXPORT __attribute__((visibility("default")))
#endif

enum { FIT = 0, OFF_STENCIL = -1, OUT_OF_RANGE = -2, BAD_NODES = -3 };

/* One instantiation per (index type, value type): NAME names the functions, I the index,
 * T the stored value, A its accumulator (double or double complex). */
#define DEFINE_STENCIL_PASS(NAME, I, T, A)                                                       \
    /* Largest |j - i| over the nonzero entries (the reach that candidate widths come from); \
     * *line: the row (CSR) or column (CSC) holding it. */                                     \
    EXPORT int64_t ssi_reach_##NAME(int64_t n, const I *indptr, const I *indices,               \
                                    const T *data, int64_t *line) {                             \
        int64_t reach = 0;                                                                      \
        *line = 0;                                                                              \
        for (int64_t i = 0; i < n; ++i) {                                                       \
            for (int64_t e = indptr[i]; e < indptr[i + 1]; ++e) {                               \
                if (data[e] == 0) continue;                                                     \
                int64_t d = (int64_t)indices[e] - i;                                            \
                if (d < 0) d = -d;                                                              \
                if (d > reach) {                                                                \
                    reach = d;                                                                  \
                    *line = i;                                                                  \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        return reach;                                                                           \
    }                                                                                           \
                                                                                                \
    /* V (n_nodes * k, 9) zeroed by the caller: FIT, OFF_STENCIL, OUT_OF_RANGE (an index of  \
     * A) or BAD_NODES.  The grid is row-major, `width` pixels wide, k nodes per pixel (node  \
     * q is pixel q / k); unknown i is node i, or node[i] (node not NULL; seen: n_nodes zeroed \
     * bytes), whose embedding is checked: nodes in range and distinct (every coupling between \
     * 3x3 neighbours, as for all).  Coupling (row node qr, column node qc) lands in row       \
     * qr * k + qc % k, slot (dr + 1) * 3 + (dc + 1).  `cells` > 0: the pixels are 2x2 cells \
     * of a 5x5 stencil's grid with `cells` unknowns per pixel (k = 4 cells; node component  \
     * (2 * (row % 2) + col % 2) * cells + unknown), whose offsets must stay within 2.  `csc`: \
     * the outer index is the column.  *wide set when some coupling is diagonal (3x3: a       \
     * 9-point stencil) or beyond the 13-point star (cells: 25-point).  Only the outer lines \
     * [o0, o1) are read (threads split the matrix: no two lines write one entry of V); with  \
     * seen not NULL the embedding is checked first, which the split calls rely on. */        \
    EXPORT int64_t ssi_stencil_##NAME(int64_t n, const I *indptr, const I *indices,             \
                                      const T *data, const int64_t *node, int64_t n_nodes,      \
                                      int64_t width, int64_t k, int32_t cells, int32_t csc,     \
                                      int64_t o0, int64_t o1, A *V, uint8_t *seen,              \
                                      int32_t *wide) {                                          \
        for (int64_t i = 0; node && seen && i < n; ++i) {                                       \
            int64_t q = node[i];                                                                \
            if (q < 0 || q >= n_nodes || seen[q]) return BAD_NODES;                             \
            seen[q] = 1;                                                                        \
        }                                                                                       \
        int32_t far = 0;                                                                        \
        for (int64_t o = o0; o < o1; ++o) {                                                     \
            int64_t qo = node ? node[o] : o, po = qo / k, ro = po / width, co = po - ro * width;  \
            for (int64_t e = indptr[o]; e < indptr[o + 1]; ++e) {                               \
                if (data[e] == 0) continue;                                                     \
                int64_t j = (int64_t)indices[e];                                                \
                if (j < 0 || j >= n) return OUT_OF_RANGE;                                       \
                int64_t qj = node ? node[j] : j, pj = qj / k, rj = pj / width, cj = pj - rj * width;  \
                /* offset of the column's pixel from the row's */                               \
                int64_t dr = csc ? ro - rj : rj - ro, dc = csc ? co - cj : cj - co;              \
                if (dr < -1 || dr > 1 || dc < -1 || dc > 1) return OFF_STENCIL;                 \
                int64_t qr = csc ? qj : qo, qc = csc ? qo : qj;                                 \
                if (cells) { /* the offset on the 5x5 stencil's own grid */                    \
                    int64_t sr = qr % k / cells, sc = qc % k / cells; /* place in the cell */  \
                    int64_t ar = sr >> 1, ac = sr & 1, br = sc >> 1, bc = sc & 1;               \
                    int64_t er = 2 * dr + br - ar, ec = 2 * dc + bc - ac;                       \
                    if (er < -2 || er > 2 || ec < -2 || ec > 2) return OFF_STENCIL;             \
                    far |= (er < 0 ? -er : er) + (ec < 0 ? -ec : ec) > 2;                       \
                } else {                                                                        \
                    far |= (dr != 0) & (dc != 0);                                               \
                }                                                                               \
                V[(qr * k + qc % k) * 9 + (dr + 1) * 3 + (dc + 1)] += (A)data[e];               \
            }                                                                                   \
        }                                                                                       \
        *wide = far;                                                                            \
        return FIT;                                                                             \
    }

DEFINE_STENCIL_PASS(i32_f32, int32_t, float, double)
DEFINE_STENCIL_PASS(i32_f64, int32_t, double, double)
DEFINE_STENCIL_PASS(i32_c64, int32_t, float _Complex, double _Complex)
DEFINE_STENCIL_PASS(i32_c128, int32_t, double _Complex, double _Complex)
DEFINE_STENCIL_PASS(i64_f32, int64_t, float, double)
DEFINE_STENCIL_PASS(i64_f64, int64_t, double, double)
DEFINE_STENCIL_PASS(i64_c64, int64_t, float _Complex, double _Complex)
DEFINE_STENCIL_PASS(i64_c128, int64_t, double _Complex, double _Complex)

/* Masked grids found from the pattern (ssi_sparse/_mask.py): the runs of coupled consecutive
 * unknowns and the run pairs that the other couplings join, each in one pass over the entries
 * (the pattern taken undirected, explicit zeros ignored), as the NumPy path computes them. */
#define DEFINE_RUN_PASS(NAME, I, T)                                                              \
    /* run_of, offset (n each): every unknown's run and its place in it.  Returns the number  \
     * of runs; -1 when an unknown has more than max_degree couplings, -2 for an index out of \
     * range, -3 when nothing is coupled.  linked (n bytes), degree (n): zeroed scratch. */    \
    EXPORT int64_t ssi_mask_runs_##NAME(int64_t n, const I *indptr, const I *indices,           \
                                        const T *data, int64_t max_degree, uint8_t *linked,     \
                                        int32_t *degree, int64_t *run_of, int64_t *offset) {    \
        int64_t coupled = 0;                                                                    \
        for (int64_t o = 0; o < n; ++o) {                                                       \
            for (int64_t e = indptr[o]; e < indptr[o + 1]; ++e) {                               \
                int64_t j = (int64_t)indices[e];                                                \
                if (j < 0 || j >= n) return -2;                                                 \
                if (data[e] == 0 || j == o) continue;                                           \
                int64_t lo = j < o ? j : o, hi = j < o ? o : j;                                 \
                if (hi == lo + 1) linked[lo] = 1;                                               \
                degree[lo]++;                                                                   \
                degree[hi]++;                                                                   \
                coupled = 1;                                                                    \
            }                                                                                   \
        }                                                                                       \
        if (!coupled) return -3;                                                                \
        int64_t n_runs = 0, start = 0;                                                          \
        for (int64_t i = 0; i < n; ++i) {                                                       \
            if (degree[i] > max_degree) return -1;                                              \
            if (i == 0 || !linked[i - 1]) {                                                     \
                start = i;                                                                      \
                n_runs++;                                                                       \
            }                                                                                   \
            run_of[i] = n_runs - 1;                                                             \
            offset[i] = i - start;                                                              \
        }                                                                                       \
        return n_runs;                                                                          \
    }                                                                                           \
                                                                                                \
    /* The run pairs a < b joined by couplings of non-consecutive unknowns lo < hi, with the  \
     * range [low, high] of offset[lo] - offset[hi] over them, in a hash table of cap slots   \
     * (a power of two, keys a * n_runs + b, -1 when empty).  Returns the number of pairs; -1 \
     * when two unknowns of one run are coupled across a gap (not a raster-ordered mask), -2  \
     * when more than cap / 2 pairs are found (the caller takes the NumPy path). */            \
    EXPORT int64_t ssi_mask_edges_##NAME(int64_t n, const I *indptr, const I *indices,          \
                                         const T *data, const int64_t *run_of,                  \
                                         const int64_t *offset, int64_t n_runs, int64_t cap,    \
                                         int64_t *key, int64_t *low, int64_t *high) {           \
        int64_t count = 0;                                                                      \
        for (int64_t o = 0; o < n; ++o) {                                                       \
            for (int64_t e = indptr[o]; e < indptr[o + 1]; ++e) {                               \
                int64_t j = (int64_t)indices[e];                                                \
                if (data[e] == 0 || j == o) continue;                                           \
                int64_t lo = j < o ? j : o, hi = j < o ? o : j;                                 \
                if (hi == lo + 1) continue;                                                     \
                int64_t a = run_of[lo], b = run_of[hi];                                         \
                if (a == b) return -1;                                                          \
                int64_t k = a * n_runs + b, base = offset[lo] - offset[hi];                     \
                uint64_t h = ((uint64_t)k * 11400714819323198485ull) & (uint64_t)(cap - 1);     \
                while (key[h] != -1 && key[h] != k) h = (h + 1) & (uint64_t)(cap - 1);          \
                if (key[h] == -1) {                                                             \
                    if (++count > cap / 2) return -2;                                           \
                    key[h] = k;                                                                 \
                    low[h] = high[h] = base;                                                    \
                } else {                                                                        \
                    if (base < low[h]) low[h] = base;                                           \
                    if (base > high[h]) high[h] = base;                                         \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        return count;                                                                           \
    }

DEFINE_RUN_PASS(i32_f32, int32_t, float)
DEFINE_RUN_PASS(i32_f64, int32_t, double)
DEFINE_RUN_PASS(i32_c64, int32_t, float _Complex)
DEFINE_RUN_PASS(i32_c128, int32_t, double _Complex)
DEFINE_RUN_PASS(i64_f32, int64_t, float)
DEFINE_RUN_PASS(i64_f64, int64_t, double)
DEFINE_RUN_PASS(i64_c64, int64_t, float _Complex)
DEFINE_RUN_PASS(i64_c128, int64_t, double _Complex)

/* Whole-grid passes over a stencil array V (h * w * k * k rows of 9 slots, see
 * ssi_sparse/_stencil.py): row reductions, symmetric scaling and the Hermitian test, each
 * one pass in place of NumPy's dozen shifted whole-grid temporaries.  Same arithmetic as the
 * NumPy versions (one product s_i * s_j per entry, so an exactly Hermitian matrix stays so). */
#define ABS_OF(v) _Generic((v), float: fabsf, double: fabs, float _Complex: cabsf, double _Complex: cabs)(v)
#define CONJ_OF(v) _Generic((v), float _Complex: conjf(v), double _Complex: conj(v), default: (v))

#define DEFINE_STENCIL_OPS(NAME, T, R)                                                           \
    /* Per node (a run of k * 9 entries): max |V| (mode 0) or sum |V| (mode 1). */              \
    EXPORT void ssi_node_reduce_##NAME(int64_t n_nodes, int64_t run, const T *V, R *out,       \
                                       int32_t mode) {                                          \
        for (int64_t i = 0; i < n_nodes; ++i) {                                                 \
            const T *v = V + i * run;                                                           \
            R acc = 0;                                                                          \
            for (int64_t e = 0; e < run; ++e) {                                                 \
                R a = ABS_OF(v[e]);                                                             \
                acc = mode ? acc + a : (a > acc ? a : acc);                                     \
            }                                                                                   \
            out[i] = acc;                                                                       \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    /* out = diag(s) A diag(s): entry (i, j) times (s_i * s_j); s_j = 0 off the grid.  Grid   \
     * rows [r0, r1) (threads split the grid). */                                              \
    EXPORT void ssi_scale_##NAME(int64_t h, int64_t w, int64_t k, int64_t r0, int64_t r1,      \
                                 const T *V, const R *s, T *out) {                              \
        for (int64_t r = r0; r < r1; ++r) {                                                     \
            for (int64_t c = 0; c < w; ++c) {                                                   \
                int64_t p = r * w + c;                                                          \
                for (int64_t slot = 0; slot < 9; ++slot) {                                      \
                    int64_t rr = r + slot / 3 - 1, cc = c + slot % 3 - 1;                       \
                    int inside = rr >= 0 && rr < h && cc >= 0 && cc < w;                        \
                    int64_t q = rr * w + cc;                                                    \
                    for (int64_t a = 0; a < k; ++a) {                                           \
                        R si = s[p * k + a];                                                    \
                        for (int64_t b = 0; b < k; ++b) {                                       \
                            R sj = inside ? s[q * k + b] : (R)0;                                \
                            int64_t e = ((p * k + a) * k + b) * 9 + slot;                       \
                            out[e] = V[e] * (si * sj);                                          \
                        }                                                                       \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
                                                                                                \
    /* 1 when A[i, j] == conj(A[j, i]) for every coupling (slot s of pixel p against slot     \
     * 8 - s of its neighbour, components swapped; zero off the grid), else 0; the couplings  \
     * of grid rows [r0, r1). */                                                               \
    EXPORT int32_t ssi_hermitian_##NAME(int64_t h, int64_t w, int64_t k, int64_t r0, int64_t r1, \
                                        const T *V) {                                           \
        for (int64_t r = r0; r < r1; ++r) {                                                     \
            for (int64_t c = 0; c < w; ++c) {                                                   \
                int64_t p = r * w + c;                                                          \
                for (int64_t slot = 0; slot <= 4; ++slot) {                                     \
                    int64_t rr = r + slot / 3 - 1, cc = c + slot % 3 - 1;                       \
                    int inside = rr >= 0 && rr < h && cc >= 0 && cc < w;                        \
                    int64_t q = rr * w + cc;                                                    \
                    for (int64_t a = 0; a < k; ++a) {                                           \
                        for (int64_t b = 0; b < k; ++b) {                                       \
                            T mine = V[((p * k + a) * k + b) * 9 + slot];                       \
                            T mirror = inside ? V[((q * k + b) * k + a) * 9 + (8 - slot)] : (T)0; \
                            if (mine != CONJ_OF(mirror)) return 0;                              \
                        }                                                                       \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
        return 1;                                                                               \
    }

DEFINE_STENCIL_OPS(f32, float, float)
DEFINE_STENCIL_OPS(f64, double, double)
DEFINE_STENCIL_OPS(c64, float _Complex, float)
DEFINE_STENCIL_OPS(c128, double _Complex, double)

/* Rows [r0, r1) of the grid of out (n, m) = A x for x (n, m), both row-major, n = h * w * k
 * nodes: the residuals of every refined solve, one pass over V instead of nine shifted
 * whole-grid products (row ranges: the caller's threads split the grid).  One unknown per
 * pixel and one column, the common case, has its own loop without bounds tests inside. */
#define DEFINE_STENCIL_MATVEC(NAME, T)                                                           \
    static void matvec_scalar_##NAME(int64_t h, int64_t w, int64_t r0, int64_t r1, const T *V, \
                                     const T *x, T *out) {                                     \
        for (int64_t r = r0; r < r1; ++r) {                                                     \
            const int inner_row = r > 0 && r + 1 < h;                                           \
            for (int64_t c = 0; c < w; ++c) {                                                   \
                int64_t p = r * w + c;                                                          \
                const T *v = V + p * 9;                                                         \
                T sum = 0;                                                                      \
                if (inner_row && c > 0 && c + 1 < w) {                                          \
                    const T *up = x + p - w, *mid = x + p, *down = x + p + w;                   \
                    sum = v[0] * up[-1] + v[1] * up[0] + v[2] * up[1] + v[3] * mid[-1] +        \
                          v[4] * mid[0] + v[5] * mid[1] + v[6] * down[-1] + v[7] * down[0] +    \
                          v[8] * down[1];                                                       \
                } else {                                                                        \
                    for (int64_t slot = 0; slot < 9; ++slot) {                                  \
                        int64_t rr = r + slot / 3 - 1, cc = c + slot % 3 - 1;                   \
                        if (rr < 0 || rr >= h || cc < 0 || cc >= w) continue;                   \
                        sum += v[slot] * x[rr * w + cc];                                        \
                    }                                                                           \
                }                                                                               \
                out[p] = sum;                                                                   \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    EXPORT void ssi_matvec_##NAME(int64_t h, int64_t w, int64_t k, int64_t m, int64_t r0,      \
                                  int64_t r1, const T *V, const T *x, T *out) {                 \
        if (k == 1 && m == 1) {                                                                 \
            matvec_scalar_##NAME(h, w, r0, r1, V, x, out);                                      \
            return;                                                                             \
        }                                                                                       \
        for (int64_t r = r0; r < r1; ++r) {                                                     \
            for (int64_t c = 0; c < w; ++c) {                                                   \
                int64_t p = r * w + c;                                                          \
                for (int64_t a = 0; a < k; ++a) {                                               \
                    T *o = out + (p * k + a) * m;                                               \
                    for (int64_t j = 0; j < m; ++j) o[j] = 0;                                   \
                    for (int64_t slot = 0; slot < 9; ++slot) {                                  \
                        int64_t rr = r + slot / 3 - 1, cc = c + slot % 3 - 1;                   \
                        if (rr < 0 || rr >= h || cc < 0 || cc >= w) continue;                   \
                        int64_t q = rr * w + cc;                                                \
                        for (int64_t b = 0; b < k; ++b) {                                       \
                            T v = V[((p * k + a) * k + b) * 9 + slot];                          \
                            const T *xq = x + (q * k + b) * m;                                  \
                            for (int64_t j = 0; j < m; ++j) o[j] += v * xq[j];                  \
                        }                                                                       \
                    }                                                                           \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    }

DEFINE_STENCIL_MATVEC(f32, float)
DEFINE_STENCIL_MATVEC(f64, double)
DEFINE_STENCIL_MATVEC(c64, float _Complex)
DEFINE_STENCIL_MATVEC(c128, double _Complex)
