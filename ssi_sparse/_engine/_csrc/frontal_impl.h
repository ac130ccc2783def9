/* Per-box assembly of frontal matrices, and the two kernels that factor them (see frontal.c):
 * inline loops for narrow frontals (inline_impl.h), SciPy's LAPACK/BLAS for wide ones (dense_impl.h).
 *
 * Included once per dtype with T (scalar), R (real type of T) and FN(name) set; undefines them
 * at the end so the next dtype can set them again.
 * Every array is C-contiguous; a frontal is f x f, row-major, ordered [S (s), boundary (r)].
 */

/* Schur complements of strongly convective or otherwise decaying problems hold entries that
 * shrink towards the subnormal range, where every multiply costs ~100x (measured: dense LU
 * 5x slower on convection-diffusion).  Frontals are assembled from equilibrated values of
 * order 1, so an entry below sqrt(smallest normal) is ~1e-154 (float: ~1e-19) of the matrix,
 * far below rounding: it is set to zero, and products of kept entries stay normal. */
static inline T FN(flush)(T v)
{
    const R below = sizeof(R) == sizeof(float) ? (R)1.0842022e-19f : (R)1.4916681462400413e-154;
    return ABS(v) < below ? (T)0 : v;
}

/* Assemble box p's frontal into F (f*f entries). */
static inline void FN(assemble)(const struct source *src, int64_t p, int64_t ff, T *restrict F)
{
    if (src->mode == MODE_LEAF) {
        /* leaf: F[tpos[e]] = V[nodes[p, tnode[e]], tslot[e]] for the entries the box owns
         * (most of a leaf frontal is structurally zero: a third of its entries are couplings
         * on a 5-point stencil), zero past the grid's last node */
        const T *V = (const T *)src->a;
        const int64_t *nodes = src->nodes + p * src->n_nodes, n = src->stride_a;
        for (int64_t j = 0; j < ff; j++)
            F[j] = 0;
        for (int64_t e = 0; e < src->n_entries; e++) {
            const int64_t q = nodes[src->tnode[e]];
            if (q < n)
                F[src->tpos[e]] = V[q * 9 + src->tslot[e]];
        }
    } else {
        /* merge: sum of the two children's flat gathers (index 0 is each child's zero slot) */
        const T *c1 = (const T *)src->a + p * src->stride_a;
        const T *c2 = (const T *)src->b + p * src->stride_b;
        const int64_t *i1 = src->idx_a, *i2 = src->idx_b;
        for (int64_t j = 0; j < ff; j++)
            F[j] = FN(flush)(c1[i1[j]] + c2[i2[j]]);
    }
}

/* Assemble rows [row_lo, row_hi) of P large merge frontals (f x f) from the two children's
 * Schur blocks, one row at a time (zero it, add each child's runs), so every row of F is
 * written once while it is in cache.  rowmap_c[i]: the child-c boundary index feeding row i
 * of F, or -1; runs_c: (dst, src, length) column runs, the same for rows and columns. */
EXPORT void FN(ssi_assemble_runs)(
    int64_t P, int64_t f, int64_t row_lo, int64_t row_hi, void *F_,
    const void *c1_, int64_t f1, int64_t s1, const int64_t *rowmap1, const int64_t *runs1, int64_t n1,
    const void *c2_, int64_t f2, int64_t s2, const int64_t *rowmap2, const int64_t *runs2, int64_t n2)
{
    const T *c[2] = {(const T *)c1_, (const T *)c2_};
    const int64_t fc[2] = {f1, f2}, sc[2] = {s1, s2}, nr[2] = {n1, n2};
    const int64_t *rowmap[2] = {rowmap1, rowmap2}, *runs[2] = {runs1, runs2};
    for (int64_t p = 0; p < P; p++) {
        for (int64_t i = row_lo; i < row_hi; i++) {
            T *restrict row = (T *)F_ + (p * f + i) * f;
            for (int64_t j = 0; j < f; j++)
                row[j] = 0;
            for (int k = 0; k < 2; k++) {
                int64_t src = rowmap[k][i];
                if (src < 0)
                    continue;
                const T *restrict from = c[k] + (p * fc[k] + sc[k] + src) * fc[k] + sc[k];
                for (int64_t q = 0; q < nr[k]; q++) {
                    const int64_t dst = runs[k][3 * q], at = runs[k][3 * q + 1], len = runs[k][3 * q + 2];
                    for (int64_t j = 0; j < len; j++)
                        row[dst + j] += from[at + j];
                }
            }
            for (int64_t j = 0; j < f; j++)
                row[j] = FN(flush)(row[j]);
        }
    }
}

/* D[i][j] = conj(D[j][i]) for i > j: the strict lower triangle of a square row-major block
 * (row stride ld) from its upper one, in cache-sized tiles (a Hermitian Schur complement
 * whose lower half BLAS's herk/syrk left stale). */
EXPORT void FN(ssi_mirror_upper)(int64_t r, int64_t ld, void *D_)
{
    T *D = (T *)D_;
    enum { TILE = 64 };
    for (int64_t i0 = 0; i0 < r; i0 += TILE) {
        const int64_t i1 = i0 + TILE < r ? i0 + TILE : r;
        for (int64_t j0 = 0; j0 <= i0; j0 += TILE) {
            const int64_t j1 = j0 + TILE < r ? j0 + TILE : r;
            for (int64_t i = i0; i < i1; i++) {
                const int64_t jend = j1 < i ? j1 : i;
                for (int64_t j = j0; j < jend; j++)
                    D[i * ld + j] = CONJ(D[j * ld + i]);
            }
        }
    }
}

/* The up sweep's right-hand-side assembly: dst (P boxes of f x k) += a child's condensed
 * right-hand sides (P boxes of r x k) by its (dst, src, length) runs of rows. */
EXPORT void FN(ssi_add_runs)(int64_t P, int64_t k, void *dst_, int64_t f, const void *src_, int64_t r,
                             const int64_t *runs, int64_t n_runs)
{
    for (int64_t p = 0; p < P; p++) {
        T *restrict dst = (T *)dst_ + p * f * k;
        const T *restrict src = (const T *)src_ + p * r * k;
        for (int64_t q = 0; q < n_runs; q++) {
            const int64_t d = runs[3 * q] * k, s0 = runs[3 * q + 1] * k, len = runs[3 * q + 2] * k;
            for (int64_t e = 0; e < len; e++)
                dst[d + e] += src[s0 + e];
        }
    }
}

/* The solve's moves between node order and the frontals (P boxes of f x k, C-ordered), so
 * that no array of the whole right-hand side is built per level:
 * gather_nodes: front[p, i] = b[nodes[p s + i]] for i < s, the f - s boundary rows zeroed;
 * scatter_nodes: x[nodes[p s + i]] = front[p, i];
 * gather_boundary: child[q, first + j] = parent[q, pos[j]] for j < r, zero where a masked
 * plan's parent does not carry the node (carried[j] == 0). */
EXPORT void FN(ssi_gather_nodes)(int64_t P, int64_t s, int64_t f, int64_t k, const int64_t *nodes, const void *b_,
                                 void *front_)
{
    const T *b = (const T *)b_;
    for (int64_t p = 0; p < P; p++) {
        T *dst = (T *)front_ + p * f * k;
        for (int64_t i = 0; i < s; i++) {
            const T *src = b + nodes[p * s + i] * k;
            for (int64_t j = 0; j < k; j++)
                dst[i * k + j] = src[j];
        }
        for (int64_t e = s * k; e < f * k; e++)
            dst[e] = 0;
    }
}

EXPORT void FN(ssi_scatter_nodes)(int64_t P, int64_t s, int64_t f, int64_t k, const int64_t *nodes,
                                  const void *front_, void *x_)
{
    T *x = (T *)x_;
    for (int64_t p = 0; p < P; p++) {
        const T *src = (const T *)front_ + p * f * k;
        for (int64_t i = 0; i < s; i++) {
            T *dst = x + nodes[p * s + i] * k;
            for (int64_t j = 0; j < k; j++)
                dst[j] = src[i * k + j];
        }
    }
}

EXPORT void FN(ssi_gather_boundary)(int64_t P, int64_t r, int64_t k, const void *parent_, int64_t f_parent,
                                    const int64_t *pos, const uint8_t *carried, void *child_, int64_t f_child,
                                    int64_t first)
{
    for (int64_t q = 0; q < P; q++) {
        const T *src = (const T *)parent_ + q * f_parent * k;
        T *dst = (T *)child_ + (q * f_child + first) * k;
        for (int64_t i = 0; i < r; i++) {
            const int keep = carried == NULL || carried[i];
            for (int64_t j = 0; j < k; j++)
                dst[i * k + j] = keep ? src[pos[i] * k + j] : (T)0;
        }
    }
}

/* out[j] = max over rows i of |a[i, j]| (times w[i] where w is given), a (n, k) C-ordered:
 * the refinement's column norms in one pass (NumPy reduces a narrow axis 0 element by
 * element); NaN wherever a term is NaN. */
EXPORT void FN(ssi_column_absmax)(int64_t n, int64_t k, const void *a_, const R *w, double *out)
{
    const T *a = (const T *)a_;
    if (k == 1) { /* branch-free: vector max instructions, NaN noted on the side */
        double m = 0;
        int nan = 0;
        if (w)
            for (int64_t i = 0; i < n; i++) {
                const double v = (double)ABS(a[i]) * (double)w[i];
                m = v > m ? v : m;
                nan |= v != v;
            }
        else
            for (int64_t i = 0; i < n; i++) {
                const double v = (double)ABS(a[i]);
                m = v > m ? v : m;
                nan |= v != v;
            }
        out[0] = nan ? (double)NAN : m;
        return;
    }
    for (int64_t j = 0; j < k; j++)
        out[j] = 0;
    for (int64_t i = 0; i < n; i++) {
        const double wi = w ? (double)w[i] : 1.0;
        for (int64_t j = 0; j < k; j++) {
            const double v = (double)ABS(a[i * k + j]) * wi;
            if (v > out[j] || v != v)
                out[j] = v;
        }
    }
}

#include "inline_impl.h"
#include "dense_impl.h"
#include "program_impl.h"

#undef FN
#undef T
#undef R
