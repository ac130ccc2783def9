/* Inline factor kernel for narrow frontals: dense_box's arithmetic (dense_impl.h) without
 * library calls.
 *
 * Included by frontal_impl.h once per dtype (T, R, FN set).  Below ~64 unknowns a frontal
 * costs a few microseconds of arithmetic, and the half-dozen BLAS/LAPACK calls per box that
 * dense_box makes would cost as much again; tens of thousands of such boxes fill the bottom
 * levels of the tree.  Here the whole elimination is one partial factorization of the
 * frontal's column-major view G = F^T (column j of G is row j of F, contiguous): the first s
 * pivots of G, with every update applied to the full trailing matrix, leave exactly what
 * dense_box leaves (L\U or L in G_SS, X in G_SR, W in G_RS, the Schur complement D_G in
 * G_RR), so both store one format (FactoredBlocks in _dense.py) and share the solve sweeps.
 * Updates go four pivot columns at a time, so each trailing entry is loaded and stored once
 * per four multiply-adds.
 */

enum { FN(INLINE_NB) = 4 };

/* c[i] -= a0 p0[i] + a1 p1[i] (+ a2 p2[i] (+ a3 p3[i])) for i in [lo, hi): the blocked update,
 * one pass over c for the whole block (block sizes 1 to 4 each get their own loop) */
static inline void FN(update4)(T *restrict c, const T *restrict p0, const T *restrict p1, const T *restrict p2,
                               const T *restrict p3, T a0, T a1, T a2, T a3, int64_t lo, int64_t hi)
{
    for (int64_t i = lo; i < hi; i++)
        c[i] -= a0 * p0[i] + a1 * p1[i] + a2 * p2[i] + a3 * p3[i];
}

static inline void FN(update3)(T *restrict c, const T *restrict p0, const T *restrict p1, const T *restrict p2,
                               T a0, T a1, T a2, int64_t lo, int64_t hi)
{
    for (int64_t i = lo; i < hi; i++)
        c[i] -= a0 * p0[i] + a1 * p1[i] + a2 * p2[i];
}

static inline void FN(update2)(T *restrict c, const T *restrict p0, const T *restrict p1, T a0, T a1, int64_t lo,
                               int64_t hi)
{
    for (int64_t i = lo; i < hi; i++)
        c[i] -= a0 * p0[i] + a1 * p1[i];
}

static inline void FN(update1)(T *restrict c, const T *restrict p, T a, int64_t lo, int64_t hi)
{
    for (int64_t i = lo; i < hi; i++)
        c[i] -= a * p[i];
}

/* c[i] -= sum_q a[q] col(k0 + q)[i], q < kb <= 4, for i in [lo, hi) (G with column stride f) */
static inline void FN(update_block)(T *c, const T *G, int64_t f, int64_t k0, int64_t kb, const T *a, int64_t lo,
                                    int64_t hi)
{
    int any = 0; /* frontals are sparse (stencil couplings; decoupled absent pixels): skip zero work */
    for (int64_t q = 0; q < kb; q++)
        any |= a[q] != 0;
    if (!any)
        return;
    const T *p = G + k0 * f;
    switch (kb) {
    case 4:
        FN(update4)(c, p, p + f, p + 2 * f, p + 3 * f, a[0], a[1], a[2], a[3], lo, hi);
        break;
    case 3:
        FN(update3)(c, p, p + f, p + 2 * f, a[0], a[1], a[2], lo, hi);
        break;
    case 2:
        FN(update2)(c, p, p + f, a[0], a[1], lo, hi);
        break;
    default:
        FN(update1)(c, p, a[0], lo, hi);
    }
}

/* Partial Cholesky of G over its first s pivots, lower triangle only: L in G_SS, W in G_RS,
 * D_G's lower half in G_RR.  Returns 0 or BOX_NOT_PD (a pivot <= 0 or NaN). */
static int FN(inline_cholesky)(T *G, int64_t f, int64_t s)
{
    T a[FN(INLINE_NB)];
    for (int64_t k0 = 0; k0 < s; k0 += FN(INLINE_NB)) {
        const int64_t kb = s - k0 < FN(INLINE_NB) ? s - k0 : FN(INLINE_NB), k1 = k0 + kb;
        for (int64_t k = k0; k < k1; k++) { /* the panel, unblocked */
            T *ck = G + k * f;
            const R d = REAL_PART(ck[k]);
            if (!(d > 0))
                return BOX_NOT_PD;
            const R l = SQRT(d), inv = 1 / l;
            ck[k] = l;
            for (int64_t i = k + 1; i < f; i++)
                ck[i] *= inv;
            for (int64_t j = k + 1; j < k1; j++)
                FN(update1)(G + j * f, ck, CONJ(ck[j]), j, f);
        }
        for (int64_t j = k1; j < f; j++) { /* the trailing lower triangle, kb columns at a time */
            for (int64_t q = 0; q < kb; q++)
                a[q] = CONJ(G[(k0 + q) * f + j]);
            FN(update_block)(G + j * f, G, f, k0, kb, a, j, f);
        }
    }
    return 0;
}

/* Partial LU of G over its first s pivots, pivoting within the first s rows (getrf on G_SS,
 * laswp on G_SR, then X, W and D_G): piv[k] is the row swapped with row k.  The pivot is the
 * largest entry relative to its row's largest in G_SS (scaled partial pivoting, held in
 * row_scale: s entries), so the choice does not depend on how the rows of G (the columns of
 * A: the unknowns' units) are scaled, as plain partial pivoting does not.  Returns 0 or
 * BOX_SINGULAR (an exact zero pivot). */
static int FN(inline_lu)(T *G, int64_t f, int64_t s, int64_t *piv, R *row_scale)
{
    T a[FN(INLINE_NB)];
    for (int64_t i = 0; i < s; i++)
        row_scale[i] = 0;
    for (int64_t j = 0; j < s; j++)
        for (int64_t i = 0; i < s; i++) {
            const R v = ABS(G[j * f + i]);
            row_scale[i] = v > row_scale[i] ? v : row_scale[i];
        }
    for (int64_t i = 0; i < s; i++)
        row_scale[i] = row_scale[i] > 0 ? 1 / row_scale[i] : 1;
    for (int64_t k0 = 0; k0 < s; k0 += FN(INLINE_NB)) {
        const int64_t kb = s - k0 < FN(INLINE_NB) ? s - k0 : FN(INLINE_NB), k1 = k0 + kb;
        for (int64_t k = k0; k < k1; k++) {
            T *ck = G + k * f;
            int64_t p = k;
            R big = ABS(ck[k]) * row_scale[k];
            for (int64_t i = k + 1; i < s; i++) {
                const R v = ABS(ck[i]) * row_scale[i];
                if (v > big) {
                    big = v;
                    p = i;
                }
            }
            piv[k] = p;
            if (p != k) { /* swap rows k and p of every column */
                for (int64_t j = 0; j < f; j++) {
                    T *cj = G + j * f;
                    const T t = cj[k];
                    cj[k] = cj[p];
                    cj[p] = t;
                }
                const R t = row_scale[k];
                row_scale[k] = row_scale[p];
                row_scale[p] = t;
            }
            if (ck[k] == 0)
                return BOX_SINGULAR;
            const T inv = 1 / ck[k];
            for (int64_t i = k + 1; i < f; i++)
                ck[i] *= inv;
            for (int64_t j = k + 1; j < k1; j++)
                FN(update1)(G + j * f, ck, G[j * f + k], k + 1, f);
        }
        for (int64_t j = k1; j < f; j++) {
            T *cj = G + j * f;
            /* the panel's rows of column j: U (or X) by the unit lower panel */
            for (int64_t q = 1; q < kb; q++)
                for (int64_t t = 0; t < q; t++)
                    cj[k0 + q] -= G[(k0 + t) * f + k0 + q] * cj[k0 + t];
            for (int64_t q = 0; q < kb; q++)
                a[q] = cj[k0 + q];
            FN(update_block)(cj, G, f, k0, kb, a, k1, f);
        }
    }
    return 0;
}

/* y := op(A)^-1 y for the factored s x s block (column-major, ld s): Cholesky A = L L^H
 * (either op: A is Hermitian), LU A = P L U (op 'N' or 'H', the conjugate transpose).
 * inv_d: the reciprocals of M's diagonal (L's or U's): a solve multiplies, no division waits. */
static void FN(inline_solve)(const T *M, const T *inv_d, int64_t s, int cholesky, const int64_t *piv, int conj_trans,
                             T *y)
{
    if (!cholesky && !conj_trans)
        for (int64_t k = 0; k < s; k++) { /* P^T */
            const T t = y[k];
            y[k] = y[piv[k]];
            y[piv[k]] = t;
        }
    if (cholesky || !conj_trans) {
        /* L z = y (unit for LU), then L^H w = z (Cholesky) or U w = z (LU) */
        for (int64_t c = 0; c < s; c++) {
            const T *mc = M + c * s;
            if (cholesky)
                y[c] *= inv_d[c];
            FN(update1)(y, mc, y[c], c + 1, s);
        }
        for (int64_t c = s - 1; c >= 0; c--) {
            const T *mc = M + c * s;
            if (cholesky) {
                T sum = y[c];
                for (int64_t i = c + 1; i < s; i++)
                    sum -= CONJ(mc[i]) * y[i];
                y[c] = sum * inv_d[c];
            } else {
                y[c] *= inv_d[c];
                FN(update1)(y, mc, y[c], 0, c);
            }
        }
        return;
    }
    /* LU, A^H = U^H L^H P^T: U^H z = y, L^H w = z (unit), then P */
    for (int64_t c = 0; c < s; c++) {
        const T *mc = M + c * s;
        T sum = y[c];
        for (int64_t i = 0; i < c; i++)
            sum -= CONJ(mc[i]) * y[i];
        y[c] = sum * CONJ(inv_d[c]);
    }
    for (int64_t c = s - 1; c >= 0; c--) {
        const T *mc = M + c * s;
        T sum = y[c];
        for (int64_t i = c + 1; i < s; i++)
            sum -= CONJ(mc[i]) * y[i];
        y[c] = sum;
    }
    for (int64_t k = s - 1; k >= 0; k--) {
        const T t = y[k];
        y[k] = y[piv[k]];
        y[piv[k]] = t;
    }
}

static inline R FN(sum_abs)(const T *v, int64_t n)
{
    R sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += ABS(v[i]);
    return sum;
}

static inline int64_t FN(arg_max_abs)(const T *v, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (ABS(v[i]) > ABS(v[best]))
            best = i;
    return best;
}

/* v[i] := v[i] / |v[i]| (1 where v[i] = 0 or NaN): the estimator's sign vector */
static inline void FN(signs)(T *v, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        if (sizeof(T) == sizeof(R)) { /* real: a comparison, no division */
            v[i] = REAL_PART(v[i]) < 0 ? (T)-1 : (T)1;
            continue;
        }
        const R m = ABS(v[i]);
        v[i] = m > 0 ? v[i] / m : (T)1;
    }
}

/* Estimate of ||A^-1||_1 for the factored block (Hager's method with Higham's refinements,
 * as LAPACK's lacn2 behind gecon / pocon): a few solves with A and A^H.  work: 3 s entries. */
static R FN(inline_inv_norm1)(const T *M, int64_t s, int cholesky, const int64_t *piv, T *work)
{
    T *x = work, *z = work + s, *inv_d = work + 2 * s;
    for (int64_t c = 0; c < s; c++)
        inv_d[c] = (T)1 / M[c * s + c];
    for (int64_t i = 0; i < s; i++)
        x[i] = (T)1 / (T)(R)s;
    FN(inline_solve)(M, inv_d, s, cholesky, piv, 0, x);
    R est = FN(sum_abs)(x, s);
    if (s > 1 && est == est) {
        int64_t j_prev = -1;
        for (int64_t iter = 0; iter < 5; iter++) {
            for (int64_t i = 0; i < s; i++)
                z[i] = x[i];
            FN(signs)(z, s);
            FN(inline_solve)(M, inv_d, s, cholesky, piv, 1, z);
            const int64_t j = FN(arg_max_abs)(z, s);
            R zx = 0; /* Re z^H x: x is a local maximum when no |z_j| exceeds it */
            for (int64_t i = 0; i < s; i++)
                zx += REAL_PART(CONJ(z[i]) * x[i]);
            if (j == j_prev || (iter > 0 && ABS(z[j]) <= zx))
                break;
            j_prev = j;
            for (int64_t i = 0; i < s; i++)
                x[i] = i == j ? (T)1 : (T)0;
            FN(inline_solve)(M, inv_d, s, cholesky, piv, 0, x);
            const R next = FN(sum_abs)(x, s);
            if (!(next > est))
                break;
            est = next;
        }
        /* Higham's alternating vector catches what the iteration can miss */
        for (int64_t i = 0; i < s; i++)
            x[i] = (T)((i % 2 ? -1 : 1) * (1 + (R)i / (R)(s - 1)));
        FN(inline_solve)(M, inv_d, s, cholesky, piv, 0, x);
        const R alt = 2 * FN(sum_abs)(x, s) / (3 * (R)s);
        if (alt > est || alt != alt)
            est = alt;
    }
    return est;
}

/* Whether the first s nodes of F are coupled to no node but themselves (a masked grid's
 * absent pixels fill whole boxes of the low levels): rows [0, s) hold only their diagonal,
 * and for LU columns [0, s) too (F is Hermitian for Cholesky).  Stops at the first coupling,
 * which an ordinary box has in its first row. */
static inline int FN(decoupled)(const T *F, int64_t f, int64_t s, int cholesky)
{
    for (int64_t i = 0; i < s; i++)
        for (int64_t j = 0; j < f; j++)
            if (F[i * f + j] != 0 && j != i)
                return 0;
    if (!cholesky)
        for (int64_t i = s; i < f; i++)
            for (int64_t j = 0; j < s; j++)
                if (F[i * f + j] != 0)
                    return 0;
    return 1;
}

/* inline_box for a decoupled box: the pivots are its diagonal (Cholesky: their square roots),
 * W, X and the Schur update zero, no interchanges; rcond exactly min |d| over the scale
 * (what the estimator finds for a diagonal block), NaN kept.  Same status codes. */
static int FN(decoupled_box)(T *F, int64_t f, int64_t s, int cholesky, T *factor, T *x, T *w, int64_t *perm,
                             R a_norm, double *rcond)
{
    const int64_t r = f - s;
    R d_min = 0, d_max = 0;
    for (int64_t i = 0; i < s; i++) {
        const T d = F[i * f + i];
        const R m = ABS(d);
        if (cholesky ? !(REAL_PART(d) > 0) : d == 0)
            return cholesky ? BOX_NOT_PD : BOX_SINGULAR;
        if (i == 0 || !(m >= d_min))
            d_min = m;
        if (i == 0 || !(m <= d_max))
            d_max = m;
    }
    for (int64_t i = 0; i < s * s; i++)
        factor[i] = 0;
    for (int64_t i = 0; i < s; i++) {
        const T d = F[i * f + i];
        factor[i * s + i] = cholesky ? (T)SQRT(REAL_PART(d)) : d;
        F[i * f + i] = factor[i * s + i];
    }
    for (int64_t i = 0; i < s * r; i++)
        w[i] = 0;
    if (!cholesky) {
        for (int64_t i = 0; i < r * s; i++)
            x[i] = 0;
        for (int64_t i = 0; i < s; i++)
            perm[i] = i;
    }
    const R scale = d_max > a_norm ? d_max : a_norm;
    *rcond = (double)(d_min / scale);
    return 0;
}

/* Box-level counterpart of dense_box: the same outputs, status codes and rcond measure. */
static int FN(inline_box)(T *F, int64_t f, int64_t s, int cholesky, T *factor, T *x, T *w, int64_t *perm,
                          int64_t *piv, T *work, R a_norm, double *rcond)
{
    const int64_t r = f - s;
    if (FN(decoupled)(F, f, s, cholesky))
        return FN(decoupled_box)(F, f, s, cholesky, factor, x, w, perm, a_norm, rcond);
    R norm_s = 0; /* ||G_SS||_1: column sums of G = row sums of S */
    for (int64_t j = 0; j < s; j++) {
        const R sum = FN(sum_abs)(F + j * f, s);
        if (!(sum <= norm_s))
            norm_s = sum;
    }
    int status = cholesky ? FN(inline_cholesky)(F, f, s) : FN(inline_lu)(F, f, s, piv, (R *)work);
    if (status)
        return status;
    if (cholesky && r > 0)
        FN(ssi_mirror_upper)(r, f, F + s * f + s);
    for (int64_t i = 0; i < s; i++) {
        for (int64_t j = 0; j < s; j++)
            factor[i * s + j] = F[i * f + j];
        for (int64_t j = 0; j < r; j++)
            w[i * r + j] = F[i * f + s + j];
    }
    if (!cholesky) {
        for (int64_t i = 0; i < s; i++)
            perm[i] = i;
        for (int64_t i = 0; i < s; i++) { /* P^T v = v[perm] */
            const int64_t j = piv[i], t = perm[i];
            perm[i] = perm[j];
            perm[j] = t;
        }
        for (int64_t i = 0; i < r; i++)
            for (int64_t j = 0; j < s; j++)
                x[i * s + j] = F[(s + i) * f + j];
    }
    const R inv_norm = FN(inline_inv_norm1)(factor, s, cholesky, piv, work);
    const R scale = norm_s > a_norm ? norm_s : a_norm;
    *rcond = (double)(1 / (scale * inv_norm)); /* NaN stays NaN; an infinite inverse gives 0 */
    return 0;
}

