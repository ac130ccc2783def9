/* Dense kernel, box loop in C: LAPACK/BLAS-3 factors (not inverses) of one class's frontals
 * (or inline ones, inline_impl.h, for narrow frontals: the same format, the same sweeps).
 *
 * Included by frontal_impl.h once per dtype (T, R, FN set).  The arithmetic is
 * ssi_sparse/_dense.py's (see its module doc: a C-ordered frontal F is its transpose G = F^T
 * to LAPACK, column-major with leading dimension f); the loop over boxes, the assembly of
 * each box and the solve sweeps run here so that no Python runs per box: the routines are
 * SciPy's (scipy.linalg.cython_blas / cython_lapack), handed in as function pointers.
 */

typedef void (*FN(gemm_t))(char *, char *, int *, int *, int *, T *, T *, int *, T *, int *, T *, T *, int *);
typedef void (*FN(trsm_t))(char *, char *, char *, char *, int *, int *, T *, T *, int *, T *, int *);
typedef void (*FN(rank_k_t))(char *, char *, int *, int *, R *, T *, int *, R *, T *, int *);
typedef void (*FN(getrf_t))(int *, int *, T *, int *, int *, int *);
typedef void (*FN(potrf_t))(char *, int *, T *, int *, int *);
/* gecon / pocon: the last work argument is iwork (real types) or rwork (complex) */
typedef void (*FN(con_t))(char *, int *, T *, int *, R *, R *, T *, void *, int *);
typedef R (*FN(lange_t))(char *, int *, int *, T *, int *, R *);
typedef void (*FN(laswp_t))(int *, T *, int *, int *, int *, int *, int *);
typedef void (*FN(gemv_t))(char *, int *, int *, T *, T *, int *, T *, int *, T *, T *, int *);
typedef void (*FN(trsv_t))(char *, char *, char *, int *, T *, int *, T *, int *);

static void FN(gemm)(const struct blas_table *t, char ta, char tb, int m, int n, int k, T alpha,
                     const T *a, int lda, const T *b, int ldb, T beta, T *c, int ldc)
{
    if (m == 0 || n == 0)
        return;
    lda = lda > 1 ? lda : 1;
    ldb = ldb > 1 ? ldb : 1;
    ((FN(gemm_t))t->gemm)(&ta, &tb, &m, &n, &k, &alpha, (T *)a, &lda, (T *)b, &ldb, &beta, c, &ldc);
}

static void FN(trsm)(const struct blas_table *t, char side, char uplo, char ta, char diag, int m, int n,
                     const T *a, int lda, T *b, int ldb)
{
    if (m == 0 || n == 0)
        return;
    T one = 1;
    ((FN(trsm_t))t->trsm)(&side, &uplo, &ta, &diag, &m, &n, &one, (T *)a, &lda, b, &ldb);
}

/* y := alpha op(A) x + beta y, A m x n (column-major, ld lda) */
static void FN(gemv)(const struct blas_table *t, char ta, int m, int n, T alpha, const T *a, int lda, const T *x,
                     T beta, T *y)
{
    if (m == 0 || n == 0)
        return;
    int inc = 1;
    lda = lda > 1 ? lda : 1;
    ((FN(gemv_t))t->gemv)(&ta, &m, &n, &alpha, (T *)a, &lda, (T *)x, &inc, &beta, y, &inc);
}

static void FN(trsv)(const struct blas_table *t, char uplo, char ta, char diag, int n, const T *a, int lda, T *x)
{
    if (n == 0)
        return;
    int inc = 1;
    ((FN(trsv_t))t->trsv)(&uplo, &ta, &diag, &n, (T *)a, &lda, x, &inc);
}

static inline void FN(conj_in_place)(T *v, int n)
{
    for (int i = 0; i < n; i++)
        v[i] = CONJ(v[i]);
}

/* Ask for the n entries from p in cache: the backward substitution reads a factor from its
 * end, which the hardware does not prefetch. */
static inline void FN(prefetch)(const T *p, int64_t n)
{
#if defined(__GNUC__)
    for (int64_t i = 0; i < n; i += 64 / (int64_t)sizeof(T))
        __builtin_prefetch(p + i);
#else
    (void)p, (void)n;
#endif
}

/* One column (k = 1): the sweeps below as matrix-vector BLAS-2 calls (a BLAS-3 call per box
 * costs several times more at this size).  With a^T op(M) = c^T read as op(M)^T a = c. */
static void FN(sweep_vector)(const struct blas_table *t, int32_t op, int32_t cholesky, int s, int r, const T *fp,
                             const T *wp, const T *xp, T *a, T *b)
{
    switch (op) {
    case SWEEP_UP_N:
        if (cholesky) { /* a := conj(L)^-1 a, b -= conj(W) a, by conjugating around L and W */
            FN(conj_in_place)(a, s);
            FN(conj_in_place)(b, r);
            FN(trsv)(t, 'L', 'N', 'N', s, fp, s, a);
            FN(gemv)(t, 'N', r, s, -1, wp, r, a, 1, b);
            FN(conj_in_place)(a, s);
            FN(conj_in_place)(b, r);
        } else { /* a := U^-T a, b -= X^T a */
            FN(trsv)(t, 'U', 'T', 'N', s, fp, s, a);
            FN(gemv)(t, 'T', s, r, -1, xp, s, a, 1, b);
        }
        break;
    case SWEEP_UP_T: /* a := L^-1 a (unit), b -= W a */
        FN(trsv)(t, 'L', 'N', 'U', s, fp, s, a);
        FN(gemv)(t, 'N', r, s, -1, wp, r, a, 1, b);
        break;
    case SWEEP_DOWN_N: /* a -= W^T b, a := L^-T a */
        FN(gemv)(t, 'T', r, s, -1, wp, r, b, 1, a);
        FN(trsv)(t, 'L', 'T', cholesky ? 'N' : 'U', s, fp, s, a);
        break;
    case SWEEP_DOWN_T: /* a -= X b, a := U^-1 a */
        FN(gemv)(t, 'N', s, r, -1, xp, s, b, 1, a);
        FN(trsv)(t, 'U', 'N', 'N', s, fp, s, a);
        break;
    }
}

/* b -= W a, or conj(W) a (W r x s, column-major, ld r) */
static inline void FN(w_times)(const T *W, int64_t r, int64_t s, const T *restrict a, int conjugate, T *restrict b)
{
    for (int64_t c = 0; c < s; c++) {
        const T *wc = W + c * r;
        const T v = a[c];
        if (conjugate)
            for (int64_t j = 0; j < r; j++)
                b[j] -= CONJ(wc[j]) * v;
        else
            for (int64_t j = 0; j < r; j++)
                b[j] -= wc[j] * v;
    }
}

/* out[c] -= column c of M (m x n, column-major) dotted with v, four columns at a time:
 * four independent sums (a single running sum waits on each multiply-add) and v read once
 * per four columns. */
static inline void FN(columns_dot)(const T *M, int64_t m, int64_t n, const T *restrict v, T *restrict out)
{
    int64_t c = 0;
    for (; c + 4 <= n; c += 4) {
        const T *m0 = M + c * m, *m1 = m0 + m, *m2 = m1 + m, *m3 = m2 + m;
        T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (int64_t j = 0; j < m; j++) {
            const T vj = v[j];
            s0 += m0[j] * vj;
            s1 += m1[j] * vj;
            s2 += m2[j] * vj;
            s3 += m3[j] * vj;
        }
        out[c] -= s0, out[c + 1] -= s1, out[c + 2] -= s2, out[c + 3] -= s3;
    }
    for (; c < n; c++) {
        const T *mc = M + c * m;
        T sum = 0;
        for (int64_t j = 0; j < m; j++)
            sum += mc[j] * v[j];
        out[c] -= sum;
    }
}


/* sweep_vector's arithmetic in plain loops, for narrow frontals (a library call per box
 * would cost more than its s (s + r) multiply-adds).  Column-major blocks: M the factor (ld
 * s), W (r x s, ld r), X (s x r, ld s); every inner loop runs down one contiguous column. */
static void FN(sweep_vector_inline)(int32_t op, int32_t cholesky, int64_t s, int64_t r, const T *M, const T *W,
                                    const T *X, T *restrict a, T *restrict b)
{
    switch (op) {
    case SWEEP_UP_N:
        if (cholesky) { /* a := conj(L)^-1 a, b -= conj(W) a */
            for (int64_t c = 0; c < s; c++) {
                const T *mc = M + c * s;
                const T v = a[c] / CONJ(mc[c]);
                a[c] = v;
                for (int64_t i = c + 1; i < s; i++)
                    a[i] -= CONJ(mc[i]) * v;
            }
            FN(w_times)(W, r, s, a, 1, b);
        } else { /* a := U^-T a, b -= X^T a */
            for (int64_t i = 0; i < s; i++) { /* row i of U: independent updates */
                const T v = a[i] / M[i * s + i];
                a[i] = v;
                for (int64_t c = i + 1; c < s; c++)
                    a[c] -= M[c * s + i] * v;
            }
            FN(columns_dot)(X, s, r, a, b);
        }
        break;
    case SWEEP_UP_T: /* a := L^-1 a (unit), b -= W a */
        for (int64_t c = 0; c < s; c++) {
            const T *mc = M + c * s;
            const T v = a[c];
            for (int64_t i = c + 1; i < s; i++)
                a[i] -= mc[i] * v;
        }
        FN(w_times)(W, r, s, a, 0, b);
        break;
    case SWEEP_DOWN_N: /* a -= W^T b, a := L^-T a (unit for LU) */
        FN(prefetch)(M, s * s);
        FN(columns_dot)(W, r, s, b, a);
        for (int64_t i = s - 1; i >= 0; i--) { /* row i of L (in cache): independent updates */
            const T v = cholesky ? a[i] / M[i * s + i] : a[i];
            a[i] = v;
            for (int64_t c = 0; c < i; c++)
                a[c] -= M[c * s + i] * v;
        }
        break;
    case SWEEP_DOWN_T: /* a -= X b, a := U^-1 a */
        FN(prefetch)(M, s * s);
        for (int64_t j = 0; j < r; j++) {
            const T *xj = X + j * s;
            const T v = b[j];
            for (int64_t i = 0; i < s; i++)
                a[i] -= xj[i] * v;
        }
        for (int64_t c = s - 1; c >= 0; c--) {
            const T *mc = M + c * s;
            const T v = a[c] / mc[c];
            a[c] = v;
            for (int64_t i = 0; i < c; i++)
                a[i] -= mc[i] * v;
        }
        break;
    }
}

/* Returns 0, BOX_NOT_PD (Cholesky refused: F partly overwritten) or BOX_SINGULAR. */
static int FN(dense_box)(const struct blas_table *t, T *F, int f, int s, int cholesky, T *factor, T *x, T *w,
                         int64_t *perm, int *ipiv, T *work, void *iwork, R a_norm, double *rcond)
{
    int r = f - s; /* not const: LAPACK takes pointers */
    T *g_ss = F, *g_sr = F + (int64_t)s * f, *g_rs = F + s, *g_rr = F + (int64_t)s * f + s;
    int info = 0;
    char one = '1', lower = 'L';
    R rwork_norm[1];
    R norm_s = ((FN(lange_t))t->lange)(&one, &s, &s, g_ss, &f, rwork_norm); /* ||G_SS||_1 = ||S||_inf */
    R rc = 0;
    if (cholesky) {
        ((FN(potrf_t))t->potrf)(&lower, &s, g_ss, &f, &info);
        if (info)
            return BOX_NOT_PD;
        ((FN(con_t))t->pocon)(&lower, &s, g_ss, &f, &norm_s, &rc, work, iwork, &info);
        /* W = G_RS L^-H (= X^H), D_G -= W W^H on the lower half, then mirrored */
        FN(trsm)(t, 'R', 'L', 'C', 'N', r, s, g_ss, f, g_rs, f);
        if (r > 0) {
            R minus = -1, plus = 1;
            char no = 'N';
            ((FN(rank_k_t))t->rank_k)(&lower, &no, &r, &s, &minus, g_rs, &f, &plus, g_rr, &f);
            FN(ssi_mirror_upper)(r, f, g_rr);
        }
    } else {
        ((FN(getrf_t))t->getrf)(&s, &s, g_ss, &f, ipiv, &info);
        if (info)
            return BOX_SINGULAR;
        ((FN(con_t))t->gecon)(&one, &s, g_ss, &f, &norm_s, &rc, work, iwork, &info);
        if (r > 0) {
            int k1 = 1, inc = 1;
            ((FN(laswp_t))t->laswp)(&r, g_sr, &f, &k1, &s, ipiv, &inc);
        }
        FN(trsm)(t, 'L', 'L', 'N', 'U', s, r, g_ss, f, g_sr, f); /* X = L^-1 P^T G_SR */
        FN(trsm)(t, 'R', 'U', 'N', 'N', r, s, g_ss, f, g_rs, f); /* W = G_RS U^-1 */
        FN(gemm)(t, 'N', 'N', r, r, s, -1, g_rs, f, g_sr, f, 1, g_rr, f);
        for (int i = 0; i < s; i++)
            perm[i] = i;
        for (int i = 0; i < s; i++) { /* P^T v = v[perm] from getrf's 1-based interchanges */
            int64_t j = ipiv[i] - 1, tmp = perm[i];
            perm[i] = perm[j];
            perm[j] = tmp;
        }
        for (int i = 0; i < r; i++) /* x = F[s:, :s] (X, ld s) */
            for (int j = 0; j < s; j++)
                x[(int64_t)i * s + j] = F[(int64_t)(s + i) * f + j];
    }
    /* measured against A too, as the portable kernel's rcond */
    *rcond = norm_s > 0 ? (double)rc * norm_s / (norm_s > a_norm ? norm_s : a_norm) : 0.0;
    for (int i = 0; i < s; i++) {
        for (int j = 0; j < s; j++)
            factor[(int64_t)i * s + j] = F[(int64_t)i * f + j];
        for (int j = 0; j < r; j++)
            w[(int64_t)i * r + j] = F[(int64_t)i * f + s + j];
    }
    return 0;
}

/* Factor one assembled box by the chosen kernel (inline loops or LAPACK/BLAS). */
static int FN(factor_box)(const struct blas_table *t, int inline_kernel, T *F, int64_t f, int64_t s, int cholesky,
                          T *factor, T *x, T *w, int64_t *perm, int *ipiv, int64_t *piv, T *work, void *iwork,
                          R a_norm, double *rcond)
{
    if (inline_kernel)
        return FN(inline_box)(F, f, s, cholesky, factor, x, w, perm, piv, work, a_norm, rcond);
    return FN(dense_box)(t, F, (int)f, (int)s, cholesky, factor, x, w, perm, ipiv, work, iwork, a_norm, rcond);
}

/* mark[i] = 1 where node i of frontal F is coupled to another node, 0 where it is not (an
 * absent pixel of a masked grid: its row and column hold only the diagonal); one pass over F,
 * counting nonzeros per column (in mark) and per row (in rows: f entries) without branches:
 * absent and present nodes interleave, and the data-dependent branch was mispredicted. */
static inline void FN(mark_coupled)(const T *restrict F, int64_t f, int64_t *restrict mark, int64_t *restrict rows)
{
    for (int64_t i = 0; i < f; i++)
        mark[i] = 0;
    for (int64_t i = 0; i < f; i++) {
        const T *restrict row = F + i * f;
        int64_t in_row = 0;
#pragma omp simd reduction(+ : in_row)
        for (int64_t j = 0; j < f; j++) {
            const int64_t nonzero = row[j] != 0;
            in_row += nonzero;
            mark[j] += nonzero;
        }
        rows[i] = in_row;
    }
    for (int64_t i = 0; i < f; i++) {
        const int64_t diagonal = F[i * f + i] != 0;
        mark[i] = mark[i] + rows[i] > 2 * diagonal;
    }
}

/* factor_box for frontals that may hold decoupled nodes: the coupled ones are gathered into a
 * smaller frontal and factored there (flops: the cube of the present share), and the results
 * scattered back into the full format.  Decoupled nodes stay out of every update, so the full
 * frontal's factorization is the compact one with their diagonal entries interleaved: L or
 * L\U gets their pivot (Cholesky: its square root), W, X and their rows and columns of D stay
 * zero, the pivoting maps through the kept nodes, and the block's rcond is the smaller of
 * the compact block's and that of the decoupled pivots (measured against A, as everywhere).
 * scratch: f^2 + s^2 + 2 s r entries; keep: 2 f. */
static int FN(factor_box_compact)(const struct blas_table *t, int inline_kernel, T *F, int64_t f, int64_t s,
                                  int cholesky, T *factor, T *x, T *w, int64_t *perm, int *ipiv, int64_t *piv,
                                  T *work, void *iwork, R a_norm, double *rcond, T *scratch, int64_t *keep)
{
    const int64_t r = f - s;
    int64_t ns = 0, nr = 0;
    R d_min = 0;
    int any_decoupled = 0;
    int64_t *mark = keep + f; /* then the kept nodes */
    FN(mark_coupled)(F, f, mark, keep); /* keep: scratch until it is filled below */
    for (int64_t i = 0; i < f; i++) {
        if (mark[i]) {
            if (i < s)
                keep[ns++] = i;
            else
                keep[s + nr++] = i; /* boundary ones after the largest possible ns */
            continue;
        }
        if (i >= s)
            continue;
        const R d = ABS(F[i * f + i]);
        if (!any_decoupled || !(d >= d_min))
            d_min = d;
        any_decoupled = 1;
        if (d == 0)
            return BOX_SINGULAR;
        if (cholesky && !(REAL_PART(F[i * f + i]) > 0))
            return BOX_NOT_PD;
    }
    if (ns == s && nr == r)
        return FN(factor_box)(t, inline_kernel, F, f, s, cholesky, factor, x, w, perm, ipiv, piv, work, iwork,
                              a_norm, rcond);
    for (int64_t i = 0; i < s * s; i++)
        factor[i] = 0;
    for (int64_t i = 0; i < s; i++) /* the decoupled pivots, before mark is overwritten */
        if (!mark[i]) {
            T d = F[i * f + i];
            factor[i * s + i] = cholesky ? (T)SQRT(REAL_PART(d)) : d;
        }
    int64_t *kept = mark; /* the kept nodes in order: S ones, then boundary ones */
    for (int64_t a = 0; a < ns; a++)
        kept[a] = keep[a];
    for (int64_t b = 0; b < nr; b++)
        kept[ns + b] = keep[s + b];
    const int64_t fc = ns + nr;
    T *G = scratch, *cf = G + fc * fc, *cx = cf + ns * ns, *cw = cx + nr * ns;
    for (int64_t a = 0; a < fc; a++)
        for (int64_t b = 0; b < fc; b++)
            G[a * fc + b] = F[kept[a] * f + kept[b]];
    double rc = 1.0;
    if (ns > 0) {
        int status = FN(factor_box)(t, inline_kernel, G, fc, ns, cholesky, cf, cholesky ? NULL : cx, cw,
                                    cholesky ? NULL : keep, ipiv, piv, work, iwork, a_norm, &rc);
        if (status)
            return status;
    }
    if (any_decoupled) {
        const double rd = (double)(d_min / a_norm); /* |d| <= ||A||: A's own diagonal entry */
        rc = rd < rc || rd != rd ? rd : rc;
    }
    *rcond = rc;
    for (int64_t i = 0; i < s * r; i++)
        w[i] = 0;
    for (int64_t a = 0; a < ns; a++) {
        for (int64_t b = 0; b < ns; b++)
            factor[kept[a] * s + kept[b]] = cf[a * ns + b];
        for (int64_t b = 0; b < nr; b++)
            w[kept[a] * r + kept[ns + b] - s] = cw[a * nr + b];
    }
    if (!cholesky) {
        for (int64_t i = 0; i < r * s; i++)
            x[i] = 0;
        for (int64_t b = 0; b < nr; b++)
            for (int64_t a = 0; a < ns; a++)
                x[(kept[ns + b] - s) * s + kept[a]] = cx[b * ns + a];
        for (int64_t i = 0; i < s; i++)
            perm[i] = i;
        for (int64_t a = 0; a < ns; a++) /* keep[0:ns] holds the compact perm now */
            perm[kept[a]] = kept[keep[a]];
    }
    for (int64_t a = 0; a < nr; a++) /* the coupled boundary's Schur complement */
        for (int64_t b = 0; b < nr; b++)
            F[kept[ns + a] * f + kept[ns + b]] = G[(ns + a) * fc + ns + b];
    return 0;
}

/* Assemble both leaves of level-1 box p into scratch[0], scratch[1] and factor them there
 * (inline), their blocks stored into the leaves' arrays.  Returns 0 or (part << 2) | status,
 * part 1 or 2 for the first or second leaf. */
static int FN(leaf_pair)(const struct leaf_source *leaves, const void *V, int64_t n_rows, int64_t p, int cholesky,
                         T *scratch[2], int64_t *piv, T *work, R a_norm)
{
    for (int c = 0; c < 2; c++) {
        const struct leaf_source *lf = &leaves[c];
        const int64_t fl = lf->f, sl = lf->s, rl = fl - sl;
        const struct source src = {MODE_LEAF, V, n_rows, NULL, NULL, 0, NULL, lf->nodes, lf->n_nodes, lf->tpos,
                                   lf->tnode, lf->tslot, lf->n_entries};
        FN(assemble)(&src, p, fl * fl, scratch[c]);
        if (sl == 0)
            continue;
        int status = FN(inline_box)(scratch[c], fl, sl, cholesky, (T *)lf->factor + p * sl * sl,
                                    cholesky ? NULL : (T *)lf->x + p * rl * sl, (T *)lf->w + p * sl * rl,
                                    cholesky ? NULL : lf->perm + p * sl, piv, work, a_norm, lf->rcond + p);
        if (status)
            return ((1 + c) << 2) | status;
        scratch[c][0] = 0; /* S is spent: entry (0, 0) is the flat maps' zero slot */
    }
    return 0;
}

/* Boxes [0, P) of one chunk: assemble each (src->mode LEAF / MERGE from src, RUNS from runs;
 * NONE: F holds it already; leaves not NULL: a level-1 box from its two leaves, assembled and
 * factored in scratch first, src->idx_a / idx_b the flat maps from them), then factor it in
 * place, inline or by LAPACK/BLAS.  factor (P, s, s), x (P, r, s) (LU only), w (P, s, r), perm
 * (P, s) (LU only), rcond (P).  work: 4 s entries of T, then (with leaves) room for the two
 * leaf frontals; iwork: 2 s entries of R; ipiv, piv: s ints (with leaves: the largest s).
 * compact: the frontals may hold decoupled nodes (a masked grid's absent pixels), factored
 * without them (factor_box_compact; compact_work f^2 + s^2 + 2 s r entries, keep 2 f).
 * Returns 0, or ((1 + box) * 4 + part) * 4 + status for the first box that failed (part 0:
 * the box itself, 1 or 2: its first or second leaf). */
EXPORT int64_t FN(ssi_dense_chunk)(
    int64_t P, int64_t f, int64_t s, int32_t cholesky, int32_t inline_kernel, const struct source *src,
    const struct runs_source *runs, const struct leaf_source *leaves, const void *V, int64_t n_rows,
    void *F_, void *factor_, void *x_, void *w_, int64_t *perm, double *rcond, double a_norm,
    const struct blas_table *table, void *work_, void *iwork, int *ipiv, int64_t *piv, int32_t compact,
    void *compact_work, int64_t *keep)
{
    const int32_t mode = src->mode;
    T *F = (T *)F_, *factor = (T *)factor_, *x = (T *)x_, *w = (T *)w_, *work = (T *)work_;
    const int64_t r = f - s;
    T *scratch[2] = {NULL, NULL};
    int64_t s_max = s;
    if (leaves) {
        for (int c = 0; c < 2; c++)
            s_max = leaves[c].s > s_max ? leaves[c].s : s_max;
        scratch[0] = work + 4 * (s_max > 1 ? s_max : 1);
        scratch[1] = scratch[0] + leaves[0].f * leaves[0].f;
    }
    for (int64_t p = 0; p < P; p++) {
        T *Fp = F + p * f * f;
        if (leaves) {
            int status = FN(leaf_pair)(leaves, V, n_rows, p, cholesky, scratch, piv, work, (R)a_norm);
            if (status)
                return ((p + 1) * 4 + (status >> 2)) * 4 + (status & 3);
            struct source pair = *src;
            pair.a = scratch[0];
            pair.b = scratch[1];
            pair.stride_a = pair.stride_b = 0;
            FN(assemble)(&pair, 0, f * f, Fp);
        } else if (mode == MODE_RUNS)
            FN(ssi_assemble_runs)(1, f, 0, f, Fp,
                                  (const T *)runs->c[0] + p * runs->f[0] * runs->f[0], runs->f[0], runs->s[0],
                                  runs->rowmap[0], runs->runs[0], runs->n_runs[0],
                                  (const T *)runs->c[1] + p * runs->f[1] * runs->f[1], runs->f[1], runs->s[1],
                                  runs->rowmap[1], runs->runs[1], runs->n_runs[1]);
        else if (mode != MODE_NONE)
            FN(assemble)(src, p, f * f, Fp);
        if (s == 0)
            continue;
        T *fp = factor + p * s * s, *xp = cholesky ? NULL : x + p * r * s, *wp = w + p * s * r;
        int64_t *pp = cholesky ? NULL : perm + p * s;
        int status = compact ? FN(factor_box_compact)(table, inline_kernel, Fp, f, s, cholesky, fp, xp, wp, pp, ipiv,
                                                      piv, work, iwork, (R)a_norm, rcond + p, (T *)compact_work, keep)
                             : FN(factor_box)(table, inline_kernel, Fp, f, s, cholesky, fp, xp, wp, pp, ipiv, piv,
                                              work, iwork, (R)a_norm, rcond + p);
        if (status)
            return (p + 1) * 16 + status;
    }
    return 0;
}

/* One box of ssi_dense_sweep: a and b its eliminated and boundary rows (s x k, r x k). */
static void FN(sweep_box)(const struct blas_table *t, int32_t op, int32_t cholesky, int narrow, int si, int ri,
                          int ki, const T *fp, const T *wp, const T *xp, T *ap, T *bp)
{
    const int64_t s = si, r = ri;
    if (ki == 1) {
        if (narrow)
            FN(sweep_vector_inline)(op, cholesky, s, r, fp, wp, xp, ap, bp);
        else
            FN(sweep_vector)(t, op, cholesky, si, ri, fp, wp, xp, ap, bp);
        return;
    }
    switch (op) {
    case SWEEP_UP_N: /* a^T := a^T U^-1 (or L^-H); b^T -= a^T X (or W^H) */
        if (cholesky) {
            FN(trsm)(t, 'R', 'L', 'C', 'N', ki, si, fp, si, ap, ki);
            FN(gemm)(t, 'N', 'C', ki, ri, si, -1, ap, ki, wp, ri, 1, bp, ki);
        } else {
            FN(trsm)(t, 'R', 'U', 'N', 'N', ki, si, fp, si, ap, ki);
            FN(gemm)(t, 'N', 'N', ki, ri, si, -1, ap, ki, xp, si, 1, bp, ki);
        }
        break;
    case SWEEP_UP_T: /* a = P^T f_S already; a^T := a^T L^-T; b^T -= a^T W^T */
        FN(trsm)(t, 'R', 'L', 'T', 'U', ki, si, fp, si, ap, ki);
        FN(gemm)(t, 'N', 'T', ki, ri, si, -1, ap, ki, wp, ri, 1, bp, ki);
        break;
    case SWEEP_DOWN_N: /* a^T -= b^T W ; a^T := a^T L^-T (unit for LU) */
        FN(gemm)(t, 'N', 'N', ki, si, ri, -1, bp, ki, wp, ri, 1, ap, ki);
        FN(trsm)(t, 'R', 'L', 'N', cholesky ? 'N' : 'U', ki, si, fp, si, ap, ki);
        break;
    case SWEEP_DOWN_T: /* a^T -= b^T X^T ; a^T := a^T U^-T */
        FN(gemm)(t, 'N', 'T', ki, si, ri, -1, bp, ki, xp, si, 1, ap, ki);
        FN(trsm)(t, 'R', 'U', 'T', 'N', ki, si, fp, si, ap, ki);
        break;
    }
}

/* One solve sweep over P boxes' stored factors (FactoredBlocks' up / down) in place on the
 * frontals' right-hand sides, front (P, s + r, k) C-ordered (column-major transposes, as in
 * _dense.py): per box, a = its first s rows, b = the r boundary rows.  Up: a := the
 * condensed values, b -= the eliminated unknowns' part; down: a := the solution from a and
 * the boundary values b.  Frontals narrower than inline_below sweep one column by inline
 * loops, wider ones by BLAS-2.  Returns 0, or 1 when out of memory. */
EXPORT int64_t FN(ssi_dense_sweep)(int64_t P, int64_t s, int64_t r, int64_t k, int32_t op, int32_t cholesky,
                                   const void *factor_, const void *w_, const void *x_, void *front_,
                                   const int64_t *perm, const struct blas_table *t, int64_t inline_below)
{
    const T *factor = (const T *)factor_, *w = (const T *)w_, *x = (const T *)x_;
    T *front = (T *)front_;
    const int si = (int)s, ri = (int)r, ki = (int)k;
    const int64_t f = s + r;
    const int narrow = f < inline_below;
    /* LU's row pivoting (perm, P x s: P^T v = v[perm]), applied here when given: the
     * transposed up sweep starts from P^T a, the plain down sweep ends with P a */
    T *moved = perm && (op == SWEEP_UP_T || op == SWEEP_DOWN_N) ? (T *)malloc(sizeof(T) * s * k) : NULL;
    if (perm && (op == SWEEP_UP_T || op == SWEEP_DOWN_N) && !moved && s > 0)
        return 1; /* out of memory: the caller raises */
    for (int64_t p = 0; p < P; p++) {
        const T *fp = factor + p * s * s, *wp = w + p * s * r, *xp = cholesky ? NULL : x + p * r * s;
        T *ap = front + p * f * k, *bp = ap + s * k;
        if (moved && op == SWEEP_UP_T) {
            for (int64_t i = 0; i < s; i++)
                for (int64_t j = 0; j < k; j++)
                    moved[i * k + j] = ap[perm[p * s + i] * k + j];
            memcpy(ap, moved, sizeof(T) * s * k);
        }
        FN(sweep_box)(t, op, cholesky, narrow, si, ri, ki, fp, wp, xp, ap, bp);
        if (moved && op == SWEEP_DOWN_N) {
            for (int64_t i = 0; i < s; i++)
                for (int64_t j = 0; j < k; j++)
                    moved[perm[p * s + i] * k + j] = ap[i * k + j];
            memcpy(ap, moved, sizeof(T) * s * k);
        }
    }
    free(moved);
    return 0;
}
