/* op_values.c - the value-converting ops of the op table (op_table.h):
 * cast, affine, dequant, quant. Their inverses round, except a widening
 * cast. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "op_table.h"

static int one(d9_node *n, d9_node **y, int *ny) {
  *ny = 1;
  return (y[0] = n) ? 0 : -EINVAL;
}

/* ---- cast ---- */

static int build_cast(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx, d9_node **y,
                      int *ny, const char *where) {
  (void)nx;
  const d9_step_args *a = st->args;
  if (a->from != D9_DTYPE_INVALID && a->from != x[0]->dtype)
    return d9_diag_fail(b->diag, EINVAL, "%s: cast says \"from\": %s but the input is %s", where,
                        d9_dtype_name(a->from), d9_dtype_name(x[0]->dtype));
  return one(d9_node_cast(b->arena, x[0], a->to, where, b->diag), y, ny);
}

/* Can `to` hold every value of `from` exactly? Only then is casting back
 * lossless. E5M2 is a truncated F16; E4M3 (max 448, smallest subnormal
 * 2^-9) fits F16 and BF16; F16 and BF16 do not fit each other (range,
 * precision). */
static int widening(d9_dtype from, d9_dtype to) {
  static const d9_dtype ok[][2] = {
      {D9_F8_E4M3, D9_F16}, {D9_F8_E4M3, D9_BF16}, {D9_F8_E4M3, D9_F32}, {D9_F8_E5M2, D9_F16},
      {D9_F8_E5M2, D9_BF16}, {D9_F8_E5M2, D9_F32}, {D9_F16, D9_F32}, {D9_BF16, D9_F32}};
  if (from == to) return 1;
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
    if (ok[i][0] == from && ok[i][1] == to) return 1;
  return 0;
}

static int invert_cast(const d9_step *st, d9_op_inv *inv) {
  if (st->args->from == D9_DTYPE_INVALID)
    return inv->refuse = "cast has no inverse without \"from\" (the source dtype)", -EINVAL;
  inv->kind = D9_STEP_CAST;
  inv->args.to = st->args->from;
  inv->args.from = st->args->to;
  if (!widening(st->args->from, st->args->to))
    inv->lossy = "the cast cannot hold every source value (rounded, or out of range)";
  return 0;
}

const d9_op_def d9_op_cast = {
    .name = "cast", .kind = D9_STEP_CAST, .nin = 1, .nout = 1, .lossy = D9_LOSSY_NARROWING,
    .locality = D9_LOCAL_ELEM,
    .args = {D9_ARG("to", D9_ARG_DTYPE, to, 1, 0, 0, 0, 0, 0),
             D9_ARG("from", D9_ARG_DTYPE, from, 0, 0, 0, 0, 0, 0)},
    .build = build_cast, .invert = invert_cast};

/* ---- affine ---- */

static int build_affine(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                        d9_node **y, int *ny, const char *where) {
  (void)nx;
  return one(d9_node_affine(b->arena, x[0], (float)st->args->mul, (float)st->args->add, where,
                            b->diag),
             y, ny);
}

static int invert_affine(const d9_step *st, d9_op_inv *inv) {
  double mul = st->args->mul, add = st->args->add;
  if (mul == 0) return inv->refuse = "affine with \"mul\": 0 has no inverse", -EINVAL;
  inv->kind = D9_STEP_AFFINE;
  inv->args.mul = 1.0 / mul;
  inv->args.add = -add / mul;
  inv->lossy = "x*a+b is rounded to the dtype each way";
  return 0;
}

const d9_op_def d9_op_affine = {
    .name = "affine", .kind = D9_STEP_AFFINE, .nin = 1, .nout = 1, .lossy = D9_LOSSY_ALWAYS,
    .locality = D9_LOCAL_ELEM,
    .args = {D9_ARG("mul", D9_ARG_FLOAT, mul, 0, 0, 0, 1, 0, 0),
             D9_ARG("add", D9_ARG_FLOAT, add, 0, 0, 0, 0, 0, 0)},
    .build = build_affine, .invert = invert_affine};

/* ---- dequant, quant ---- */

/* The FP8 block size: the step's "block" ([b0, b1] or b), else config.json's
 * quantization_config.weight_block_size, else 128 x 128. */
static int block_of(const d9_step_ctx *b, const d9_step *st, int64_t blk[2], const char *where) {
  const d9_ilist *l = &st->args->block;
  if (l->n) {
    for (int i = 0; i < 2; i++)
      if (d9_op_int(b, st, &l->v[l->n == 2 ? i : 0], &blk[i])) return -EINVAL;
    return 0;
  }
  blk[0] = blk[1] = 128;
  static const char *const keys[2] = {"quantization_config.weight_block_size.0",
                                      "quantization_config.weight_block_size.1"};
  for (int i = 0; i < 2; i++) {
    int64_t v;
    if (d9_spec_lookup(b->s, b->config, keys[i], strlen(keys[i]), &v, NULL)) continue;
    if (v < 1 || v > D9_BLOCK_MAX)
      return d9_diag_fail(b->diag, EINVAL, "%s: config.json: %s is %lld, the limits are 1..%d",
                          where, keys[i], (long long)v, D9_BLOCK_MAX);
    blk[i] = v;
  }
  return 0;
}

static int build_dequant(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                         d9_node **y, int *ny, const char *where) {
  (void)nx;
  int64_t blk[2];
  if (block_of(b, st, blk, where)) return -EINVAL;
  return one(d9_node_dequant(b->arena, x[0], x[1], blk[0], blk[1], where, b->diag), y, ny);
}

static int build_quant(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                       d9_node **y, int *ny, const char *where) {
  (void)nx;
  int64_t blk[2];
  if (block_of(b, st, blk, where)) return -EINVAL;
  *ny = 2;
  return d9_node_quant(b->arena, x[0], blk[0], blk[1], y, where, b->diag);
}

static int invert_dequant(const d9_step *st, d9_op_inv *inv) {
  inv->kind = D9_STEP_QUANT;
  inv->args.block = st->args->block;
  inv->lossy = "dequantised weights are quantised back to FP8 (rounded)";
  return 0;
}

static int invert_quant(const d9_step *st, d9_op_inv *inv) {
  inv->kind = D9_STEP_DEQUANT;
  inv->args.block = st->args->block;
  inv->lossy = "quantisation error is not undone";
  return 0;
}

#define A_BLOCK D9_ARG("block", D9_ARG_INT_OR_INTS, block, 0, 1, D9_BLOCK_MAX, 0, 2, 2)

const d9_op_def d9_op_dequant = {
    .name = "dequant", .kind = D9_STEP_DEQUANT, .nin = 2,
    .in_desc = "two inputs (weight, scale)", .nout = 1, .lossy = D9_LOSSY_ALWAYS,
    .locality = D9_LOCAL_BLOCK, .args = {A_BLOCK}, .build = build_dequant,
    .invert = invert_dequant};

const d9_op_def d9_op_quant = {
    .name = "quant", .kind = D9_STEP_QUANT, .nin = 1, .nout = 2, .lossy = D9_LOSSY_ALWAYS,
    .locality = D9_LOCAL_BLOCK, .args = {A_BLOCK}, .build = build_quant,
    .invert = invert_quant};
