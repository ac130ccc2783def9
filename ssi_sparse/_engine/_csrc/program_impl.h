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
