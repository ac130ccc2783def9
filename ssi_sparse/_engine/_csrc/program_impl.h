/* A whole solve sweep's native steps in one call (ssi_sparse/_engine/program.py).
 *
 * Included by frontal_impl.h once per dtype, after dense_impl.h.  A solve walks every class of
 * every level with five small kernels (node gathers and scatters, run additions, boundary
 * gathers, the dense sweep); called one by one from Python, their dispatch cost more than
 * their work on grids up to ~512^2 (257^2: half of a solve's time in the interpreter).  A
 * program is those calls with their arguments, recorded once per factor and right-hand-side
 * shape: a table of OP_WIDTH int64 per step (opcode, then the kernel's arguments, addresses as
 * integers), run here in order.  The right-hand side b and the solution x are the only
 * arrays that change between solves: the steps that read or write them take them from the
 * call.  Returns 0, 1 when a sweep is out of memory, 2 for an unknown opcode. */

EXPORT int64_t FN(ssi_sweep_program)(const int64_t *ops, int64_t n_ops, const void *b, void *x,
                                     const struct blas_table *t)
{
#define ADDR(i) ((void *)(intptr_t)o[i])
    for (int64_t n = 0; n < n_ops; n++) {
        const int64_t *o = ops + n * PROGRAM_OP_WIDTH;
        switch (o[0]) {
        case OP_GATHER_NODES: /* P, s, f, k, nodes, front */
            FN(ssi_gather_nodes)(o[1], o[2], o[3], o[4], ADDR(5), b, ADDR(6));
            break;
        case OP_SCATTER_NODES: /* P, s, f, k, nodes, front */
            FN(ssi_scatter_nodes)(o[1], o[2], o[3], o[4], ADDR(5), ADDR(6), x);
            break;
        case OP_ADD_RUNS: /* P, k, dst, f, src, r, runs, n_runs */
            FN(ssi_add_runs)(o[1], o[2], ADDR(3), o[4], ADDR(5), o[6], ADDR(7), o[8]);
            break;
        case OP_GATHER_BOUNDARY: /* P, r, k, parent, f_parent, pos, carried, child, f_child, first */
            FN(ssi_gather_boundary)(o[1], o[2], o[3], ADDR(4), o[5], ADDR(6), ADDR(7), ADDR(8), o[9], o[10]);
            break;
        case OP_SWEEP: /* P, s, r, k, op, cholesky, factor, w, x, front, perm, inline_below */
            if (FN(ssi_dense_sweep)(o[1], o[2], o[3], o[4], (int32_t)o[5], (int32_t)o[6], ADDR(7), ADDR(8), ADDR(9),
                                    ADDR(10), ADDR(11), t, o[12]))
                return 1;
            break;
        default:
            return 2;
        }
    }
#undef ADDR
    return 0;
}

/* A program's stages on several threads, without a hand-off through Python per stage.
 * stages: n_stages rows of width int64, each [n_tables, table_0, n_ops_0, table_1, n_ops_1, ...]
 * (a stage's tables are independent; a stage reads what the one before wrote).  sync: 2 +
 * 2 n_stages int64, zero but sync[0] = -1: the current stage, the first failure's status,
 * then per stage the tables claimed and the tables done.  The caller runs the driver, which
 * opens each stage, runs the tables it claims and waits until every claimed table is done;
 * helpers (other threads, any number, any time) run the tables they claim in the stage
 * that is open.  The driver never waits for a helper to arrive, only for tables a helper
 * claimed, so a helper that starts late (a busy pool) costs nothing: it finds the program
 * over and returns.  Returns the driver's status (as ssi_sweep_program). */

static void FN(run_claimed)(const int64_t *row, int64_t *claim, int64_t *done, int64_t *status, const void *b,
                            void *x, const struct blas_table *t)
{
    const int64_t n_tables = row[0];
    int64_t i;
    while ((i = __atomic_fetch_add(claim, 1, __ATOMIC_ACQ_REL)) < n_tables) {
        const int64_t failed = FN(ssi_sweep_program)((const int64_t *)(intptr_t)row[1 + 2 * i], row[2 + 2 * i], b, x, t);
        if (failed) {
            int64_t none = 0;
            __atomic_compare_exchange_n(status, &none, failed, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
        }
        __atomic_fetch_add(done, 1, __ATOMIC_RELEASE);
    }
}

EXPORT int64_t FN(ssi_sweep_drive)(const int64_t *stages, int64_t n_stages, int64_t width, const void *b, void *x,
                                   const struct blas_table *t, int64_t *sync)
{
    for (int64_t st = 0; st < n_stages; st++) {
        const int64_t *row = stages + st * width;
        int64_t *claim = sync + 2 + 2 * st, *done = claim + 1;
        __atomic_store_n(&sync[0], st, __ATOMIC_RELEASE);
        FN(run_claimed)(row, claim, done, &sync[1], b, x, t);
        int64_t spins = 0;
        while (__atomic_load_n(done, __ATOMIC_ACQUIRE) < row[0])
            relax(&spins);
    }
    __atomic_store_n(&sync[0], n_stages, __ATOMIC_RELEASE); /* over: helpers return */
    return __atomic_load_n(&sync[1], __ATOMIC_ACQUIRE);
}

EXPORT void FN(ssi_sweep_help)(const int64_t *stages, int64_t n_stages, int64_t width, const void *b, void *x,
                               const struct blas_table *t, int64_t *sync)
{
    int64_t seen = -1, spins = 0;
    for (;;) {
        const int64_t st = __atomic_load_n(&sync[0], __ATOMIC_ACQUIRE);
        if (st >= n_stages)
            return;
        if (st < 0 || st == seen) {
            relax(&spins);
            continue;
        }
        int64_t *claim = sync + 2 + 2 * st;
        FN(run_claimed)(stages + st * width, claim, claim + 1, &sync[1], b, x, t);
        seen = st;
        spins = 0;
    }
}
