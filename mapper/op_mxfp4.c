/* op_mxfp4.c - the MXFP4 ops of the op table (op_table.h): mxfp4_dequant
 * (gpt-oss experts: U8 blocks [..., G, B] + U8 E8M0 scales [..., G] ->
 * F32/BF16 [..., G*2B]) and its inverse mxfp4_quant. The exact rules are
 * kernels/cpu/mxfp4.c's; docs/spec.md documents both ops. */
#include <errno.h>
#include <stdio.h>

#include "op_table.h"

#define GROUP_MAX (1 << 20) /* values per scale: a named limit (docs/spec.md) */

static int check_group(int64_t g, const char *where, d9_diag *diag) {
  if (g % 2)
    return d9_diag_fail(diag, EINVAL, "%s.group: %lld is odd (two values per byte)", where,
                        (long long)g);
  return 0;
}

static int check_mxfp4(const d9_step_args *a, const char *path, const char *where,
                       d9_diag *diag) {
  if (a->to != D9_DTYPE_INVALID && a->to != D9_F32 && a->to != D9_BF16)
    return d9_diag_fail(diag, EINVAL, "%s: %s.to: mxfp4 dequantises to F32 or BF16, not %s",
                        path, where, d9_dtype_name(a->to));
  if (a->group.given && !a->group.expr && a->group.lit % 2)
    return d9_diag_fail(diag, EINVAL, "%s: %s.group: %lld is odd (two values per byte)", path,
                        where, (long long)a->group.lit);
  return 0;
}

/* The group size of st: its "group" (evaluated, even), or 0 when absent
 * (dequant: taken from the blocks' shape) / 32 (quant). */
static int group_of(const d9_step_ctx *b, const d9_step *st, int64_t absent, int64_t *g,
                    const char *where) {
  *g = absent;
  if (!st->args->group.given) return 0;
  if (d9_op_int(b, st, &st->args->group, g)) return -EINVAL;
  return check_group(*g, where, b->diag);
}

static int build_dequant(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                         d9_node **y, int *ny, const char *where) {
  (void)nx;
  int64_t g;
  if (group_of(b, st, 0, &g, where)) return -EINVAL;
  d9_dtype to = st->args->to == D9_DTYPE_INVALID ? D9_BF16 : st->args->to;
  *ny = 1;
  y[0] = d9_node_mxfp4_dequant(b->arena, x[0], x[1], to, g, where, b->diag);
  return y[0] ? 0 : -EINVAL;
}

static int build_quant(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                       d9_node **y, int *ny, const char *where) {
  (void)nx;
  int64_t g;
  if (group_of(b, st, 32, &g, where)) return -EINVAL;
  *ny = 2;
  return d9_node_mxfp4_quant(b->arena, x[0], g, y, where, b->diag);
}

static int invert_dequant(const d9_step *st, d9_op_inv *inv) {
  inv->kind = D9_STEP_MXFP4_QUANT;
  inv->args.group = st->args->group;
  inv->lossy = "dequantised values are quantised back to MXFP4 (scale from the group "
               "amax, rounded to E2M1)";
  return 0;
}

static int invert_quant(const d9_step *st, d9_op_inv *inv) {
  inv->kind = D9_STEP_MXFP4_DEQUANT;
  inv->args.group = st->args->group;
  inv->args.to = st->args->to;
  inv->lossy = "quantisation error is not undone";
  return 0;
}

#define A_GROUP D9_ARG("group", D9_ARG_INT, group, 0, 2, GROUP_MAX, 0, 0, 0)
#define A_TO D9_ARG("to", D9_ARG_DTYPE, to, 0, 0, 0, 0, 0, 0)

const d9_op_def d9_op_mxfp4_dequant = {
    .name = "mxfp4_dequant", .kind = D9_STEP_MXFP4_DEQUANT, .nin = 2,
    .in_desc = "two inputs (blocks, scales)", .nout = 1, .lossy = D9_LOSSY_ALWAYS,
    .locality = D9_LOCAL_BLOCK, .args = {A_GROUP, A_TO}, .check = check_mxfp4,
    .build = build_dequant, .invert = invert_dequant};

const d9_op_def d9_op_mxfp4_quant = {
    .name = "mxfp4_quant", .kind = D9_STEP_MXFP4_QUANT, .nin = 1, .nout = 2,
    .lossy = D9_LOSSY_ALWAYS, .locality = D9_LOCAL_BLOCK, .args = {A_GROUP, A_TO},
    .check = check_mxfp4, .build = build_quant, .invert = invert_quant};
