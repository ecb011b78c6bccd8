/* op_copy.c - the duplicating ops of the op table (op_table.h): copy (one
 * input made into several equal outputs) and dedup (several inputs that
 * hold the same tensor, kept once). Each is the other's inverse. Neither
 * moves data: the outputs are the input's own node (node.h), so a read of
 * any copy reads the one source.
 *
 * dedup keeps its first input and never reads the others: the copies are
 * assumed equal, as the lora_A matrices NeMo AutoModel duplicates are. The
 * round trip of a dedup (copy back) is exact only when they are: `d9dfs
 * check` compares the copies in the source and names those that differ
 * (tools/check.c). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "op_table.h"

/* ---- copy ---- */

static int build_copy(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                      d9_node **y, int *ny, const char *where) {
  (void)nx, (void)where;
  int64_t n;
  if (d9_op_int(b, st, &st->args->copies, &n)) return -EINVAL;
  for (int64_t i = 0; i < n; i++) y[i] = x[0]; /* n <= D9_STEP_MAX_OUTPUTS (the key's range) */
  *ny = (int)n;
  return 0;
}

static int nouts_copy(const d9_spec *s, const cJSON *config, const d9_step *st) {
  int64_t n;
  if (d9_op_int_quiet(s, config, &st->args->copies, &n) || n < 1 || n > D9_STEP_MAX_OUTPUTS)
    return -1;
  return (int)n;
}

static int invert_copy(const d9_step *st, d9_op_inv *inv) {
  (void)st;
  inv->kind = D9_STEP_DEDUP;
  return 0;
}

const d9_op_def d9_op_copy = {
    .name = "copy", .kind = D9_STEP_COPY, .nin = 1, .locality = D9_LOCAL_VIEW,
    .args = {D9_ARG("copies", D9_ARG_INT, copies, 1, 1, D9_STEP_MAX_OUTPUTS, 0, 0, 0)},
    .build = build_copy, .nouts = nouts_copy, .invert = invert_copy};

/* ---- dedup ---- */

static int build_dedup(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                       d9_node **y, int *ny, const char *where) {
  (void)st;
  if (nx < 1)
    return d9_diag_fail(b->diag, EINVAL, "%s: dedup takes one or more inputs, got none", where);
  for (int i = 1; i < nx; i++)
    if (x[i]->dtype != x[0]->dtype || x[i]->ndim != x[0]->ndim ||
        memcmp(x[i]->shape, x[0]->shape, sizeof(int64_t) * (size_t)x[0]->ndim)) {
      char s0[160], s1[160];
      return d9_diag_fail(b->diag, EINVAL, "%s: dedup input %d (%s %s) is not shaped like input "
                          "0 (%s %s)", where, i, d9_dtype_name(x[i]->dtype),
                          d9_shape_str(x[i]->shape, x[i]->ndim, s1, sizeof s1),
                          d9_dtype_name(x[0]->dtype),
                          d9_shape_str(x[0]->shape, x[0]->ndim, s0, sizeof s0));
    }
  y[0] = x[0];
  *ny = 1;
  return 0;
}

static int invert_dedup(const d9_step *st, d9_op_inv *inv) {
  (void)st;
  if (inv->nin > D9_STEP_MAX_OUTPUTS)
    return inv->refuse = "dedup of more than 64 inputs has no inverse (copy makes at most 64)",
           -EINVAL;
  inv->kind = D9_STEP_COPY;
  inv->args.copies = (d9_ival){NULL, inv->nin, 1};
  return 0;
}

const d9_op_def d9_op_dedup = {
    .name = "dedup", .kind = D9_STEP_DEDUP, .nout = 1, .locality = D9_LOCAL_VIEW,
    .build = build_dedup, .invert = invert_dedup};
