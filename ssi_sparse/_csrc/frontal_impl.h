/* Fused assemble + eliminate of small frontal matrices, one box at a time (see frontal.c).
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
        /* leaf: F[j] = V[nodes[p, tnode[j]], tslot[j]], zero past the grid's last node */
        const T *V = (const T *)src->a;
        const int64_t *nodes = src->nodes + p * src->n_nodes, n = src->stride_a;
        for (int64_t j = 0; j < ff; j++) {
            const int64_t q = nodes[src->tnode[j]];
            F[j] = q < n ? V[q * 9 + src->tslot[j]] : (T)0;
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

/* Infinity norm (max row sum of moduli) of the leading s x s block of a matrix with row
 * stride ld. */
static inline R FN(norm_inf)(const T *A, int64_t s, int64_t ld)
{
    R best = 0;
    for (int64_t i = 0; i < s; i++) {
        R sum = 0;
        for (int64_t k = 0; k < s; k++)
            sum += ABS(A[i * ld + k]);
        if (!(sum <= best)) /* NaN sticks */
            best = sum;
    }
    return best;
}

/* Eliminate the leading s unknowns of the frontal F (f x f) in place:
 * B = [I | S_R] is solved by LU with partial pivoting of S, giving S^-1 and X = S^-1 S_R;
 * then D = R - R_S X overwrites F's trailing block.  Returns 0, or 1 for an exact zero pivot.
 */
static inline int FN(eliminate)(T *restrict F, int64_t f, int64_t s, int hermitian,
                         T *restrict lu, T *restrict B, T *restrict lrow, int64_t *restrict piv,
                         T *restrict s_inv, T *restrict x, T *restrict r_s,
                         R a_norm, R *rcond)
{
    const int64_t r = f - s, w = s + r; /* B is s x w */
    R norm_s = FN(norm_inf)(F, s, f);

    for (int64_t i = 0; i < s; i++) {
        for (int64_t k = 0; k < s; k++)
            lu[i * s + k] = F[i * f + k];
    }
    /* LU with partial pivoting, row-oriented (Doolittle, right-looking) */
    for (int64_t k = 0; k < s; k++) {
        int64_t p = k;
        R big = ABS(lu[k * s + k]);
        for (int64_t i = k + 1; i < s; i++) {
            R v = ABS(lu[i * s + k]);
            if (v > big) {
                big = v;
                p = i;
            }
        }
        piv[k] = p;
        if (p != k) {
            for (int64_t j = 0; j < s; j++) {
                T t = lu[k * s + j];
                lu[k * s + j] = lu[p * s + j];
                lu[p * s + j] = t;
            }
        }
        T d = lu[k * s + k];
        if (d == 0)
            return 1;
        for (int64_t i = k + 1; i < s; i++) {
            T l = lu[i * s + k] / d;
            lu[i * s + k] = l;
            if (l != 0) {
                for (int64_t j = k + 1; j < s; j++)
                    lu[i * s + j] -= l * lu[k * s + j];
            }
        }
    }
    /* B = P [I | S_R] */
    for (int64_t i = 0; i < s; i++) {
        T *b = B + i * w;
        for (int64_t j = 0; j < s; j++)
            b[j] = (i == j);
        for (int64_t j = 0; j < r; j++)
            b[s + j] = F[i * f + s + j];
    }
    for (int64_t k = 0; k < s; k++) {
        if (piv[k] != k) {
            T *a = B + k * w, *b = B + piv[k] * w;
            for (int64_t j = 0; j < w; j++) {
                T t = a[j];
                a[j] = b[j];
                b[j] = t;
            }
        }
    }
    /* forward (unit L), then backward (U) substitution, row by row */
    for (int64_t i = 1; i < s; i++) {
        T *bi = B + i * w;
        for (int64_t k = 0; k < i; k++) {
            T l = lu[i * s + k];
            if (l != 0) {
                const T *bk = B + k * w;
                for (int64_t j = 0; j < w; j++)
                    bi[j] -= l * bk[j];
            }
        }
    }
    for (int64_t i = s - 1; i >= 0; i--) {
        T *bi = B + i * w;
        for (int64_t k = i + 1; k < s; k++) {
            T u = lu[i * s + k];
            if (u != 0) {
                const T *bk = B + k * w;
                for (int64_t j = 0; j < w; j++)
                    bi[j] -= u * bk[j];
            }
        }
        T d = 1 / lu[i * s + i];
        for (int64_t j = 0; j < w; j++)
            bi[j] *= d;
    }
    for (int64_t i = 0; i < s; i++) {
        for (int64_t j = 0; j < s; j++)
            s_inv[i * s + j] = B[i * w + j];
        for (int64_t j = 0; j < r; j++)
            x[i * r + j] = B[i * w + s + j];
    }
    R norm_inv = FN(norm_inf)(s_inv, s, s);
    R scale = norm_s > a_norm ? norm_s : a_norm;
    *rcond = 1 / (scale * norm_inv);

    if (!hermitian) {
        for (int64_t i = 0; i < r; i++) {
            for (int64_t k = 0; k < s; k++)
                r_s[i * s + k] = F[(s + i) * f + k];
        }
    }
    /* D -= R_S X, with R_S = S_R^H for Hermitian frontals; four rows of X per pass over a
     * row of D (register blocking: a quarter of the loads and stores of D).  A Hermitian D
     * gets its upper triangle only (columns j >= i: half the work), mirrored below. */
    for (int64_t i = 0; i < r; i++) {
        const int64_t j0 = hermitian ? i : 0;
        T *restrict d = F + (s + i) * f + s;
        for (int64_t k = 0; k < s; k++)
            lrow[k] = hermitian ? CONJ(F[k * f + s + i]) : F[(s + i) * f + k];
        int64_t k = 0;
        for (; k + 4 <= s; k += 4) {
            const T l0 = lrow[k], l1 = lrow[k + 1], l2 = lrow[k + 2], l3 = lrow[k + 3];
            const T *x0 = x + k * r, *x1 = x0 + r, *x2 = x1 + r, *x3 = x2 + r;
            for (int64_t j = j0; j < r; j++)
                d[j] -= l0 * x0[j] + l1 * x1[j] + l2 * x2[j] + l3 * x3[j];
        }
        for (; k < s; k++) {
            const T l = lrow[k];
            const T *xk = x + k * r;
            for (int64_t j = j0; j < r; j++)
                d[j] -= l * xk[j];
        }
    }
    if (hermitian) {
        for (int64_t i = 1; i < r; i++) {
            T *restrict d = F + (s + i) * f + s;
            for (int64_t j = 0; j < i; j++)
                d[j] = CONJ(F[(s + j) * f + s + i]);
        }
    }
    return 0;
}

/* Assemble and eliminate boxes [0, P) of one chunk.  Returns 0, or 1 + the first box with an
 * exact zero pivot.  *min_rcond receives the smallest reciprocal condition number (NaN wins). */
EXPORT int64_t FN(ssi_factor_chunk)(
    int64_t P, int64_t f, int64_t s, int32_t hermitian, const struct source *src,
    void *F_, void *s_inv_, void *x_, void *r_s_, double a_norm, double *min_rcond,
    void *work_, int64_t *piv)
{
    T *F = (T *)F_, *s_inv = (T *)s_inv_, *x = (T *)x_, *r_s = (T *)r_s_, *work = (T *)work_;
    const int64_t r = f - s;
    T *lu = work, *B = work + s * s, *lrow = B + s * f; /* s*s + s*f + s entries */
    double worst = 1.0;
    int saw_nan = 0;
    for (int64_t p = 0; p < P; p++) {
        T *Fp = F + p * f * f;
        FN(assemble)(src, p, f * f, Fp);
        if (s == 0)
            continue;
        R rc;
        if (FN(eliminate)(Fp, f, s, hermitian, lu, B, lrow, piv, s_inv + p * s * s, x + p * s * r,
                          hermitian ? NULL : r_s + p * r * s, (R)a_norm, &rc))
            return p + 1;
        if (rc != rc)
            saw_nan = 1;
        else if ((double)rc < worst)
            worst = (double)rc;
    }
    if (saw_nan)
        worst = NAN;
    *min_rcond = worst;
    return 0;
}

/* Level-1 boxes [0, P) of one chunk whose two children are leaves: each leaf is assembled
 * from V and eliminated in a scratch buffer (its blocks stored as ssi_factor_chunk stores
 * them), then the level-1 frontal is gathered from the two scratch frontals by the flat maps
 * and eliminated into F.  The leaves' frontals never go to memory.  V: (n_rows, 9).  work: f0^2 + f1^2 +
 * max over the leaves of (s^2 + s f + s) + (s^2 + s f + s) of this class; piv: max s.
 * Returns 0, or (1 + box) * 4 + part for the first exact zero pivot (part 0: the level-1
 * box, 1 or 2: its first or second leaf).  *min_rcond: this class's, leaves[c].min_rcond:
 * each leaf link's. */
EXPORT int64_t FN(ssi_factor_leaf_pairs)(
    int64_t P, int64_t f, int64_t s, int32_t hermitian, const void *V_, int64_t n_rows,
    struct leaf_source *leaves,
    const int64_t *idx_a, const int64_t *idx_b, void *F_, void *s_inv_, void *x_, void *r_s_,
    double a_norm, double *min_rcond, void *work_, int64_t *piv)
{
    T *F = (T *)F_, *s_inv = (T *)s_inv_, *x = (T *)x_, *r_s = (T *)r_s_, *work = (T *)work_;
    const int64_t r = f - s;
    T *scratch[2] = {work, work + leaves[0].f * leaves[0].f};
    T *leaf_work = scratch[1] + leaves[1].f * leaves[1].f;
    int64_t leaf_need = 0;
    for (int c = 0; c < 2; c++) {
        const int64_t need = leaves[c].s * leaves[c].s + leaves[c].s * leaves[c].f + leaves[c].s;
        leaf_need = need > leaf_need ? need : leaf_need;
    }
    T *own = leaf_work + leaf_need;
    T *lu = own, *B = own + s * s, *lrow = B + s * f;
    double worst[3] = {1.0, 1.0, 1.0};
    int saw_nan[3] = {0, 0, 0};
    for (int64_t p = 0; p < P; p++) {
        for (int c = 0; c < 2; c++) {
            const struct leaf_source *lf = &leaves[c];
            const int64_t fl = lf->f, sl = lf->s, rl = fl - sl;
            const struct source src = {MODE_LEAF, V_, n_rows, NULL, NULL, 0, NULL, lf->nodes, lf->n_nodes, lf->tnode,
                                       lf->tslot};
            FN(assemble)(&src, p, fl * fl, scratch[c]);
            if (sl == 0)
                continue;
            R rc;
            T *l_lu = leaf_work, *l_B = leaf_work + sl * sl, *l_lrow = l_B + sl * fl;
            if (FN(eliminate)(scratch[c], fl, sl, hermitian, l_lu, l_B, l_lrow, piv, (T *)lf->s_inv + p * sl * sl,
                              (T *)lf->x + p * sl * rl, hermitian ? NULL : (T *)lf->r_s + p * rl * sl,
                              (R)a_norm, &rc))
                return (p + 1) * 4 + 1 + c;
            if (rc != rc)
                saw_nan[1 + c] = 1;
            else if ((double)rc < worst[1 + c])
                worst[1 + c] = (double)rc;
            scratch[c][0] = 0; /* S is spent: entry (0, 0) is the flat maps' zero slot */
        }
        T *Fp = F + p * f * f;
        for (int64_t j = 0; j < f * f; j++)
            Fp[j] = FN(flush)(scratch[0][idx_a[j]] + scratch[1][idx_b[j]]);
        if (s == 0)
            continue;
        R rc;
        if (FN(eliminate)(Fp, f, s, hermitian, lu, B, lrow, piv, s_inv + p * s * s, x + p * s * r,
                          hermitian ? NULL : r_s + p * r * s, (R)a_norm, &rc))
            return (p + 1) * 4;
        if (rc != rc)
            saw_nan[0] = 1;
        else if ((double)rc < worst[0])
            worst[0] = (double)rc;
    }
    *min_rcond = saw_nan[0] ? NAN : worst[0];
    for (int c = 0; c < 2; c++)
        leaves[c].min_rcond = saw_nan[1 + c] ? NAN : worst[1 + c];
    return 0;
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

#include "dense_impl.h"

#undef FN
#undef T
#undef R
