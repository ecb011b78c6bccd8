/* op_fused.c - the row-regrouping ops of the op table (op_table.h): qkv,
 * qkv_split, interleave, deinterleave, rope, pad, truncate. qkv is reshape
 * + concat + reshape, interleave is reshape + concat, rope is reshape +
 * permute + reshape (node.h primitives). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "op_table.h"

#define A_POS(key, field, req, def) \
  D9_ARG(key, D9_ARG_INT, field, req, 1, D9_ARG_INT_MAX, def, 0, 0)
#define A_ROWS(key, field, req) D9_ARG(key, D9_ARG_INT, field, req, 0, D9_ARG_INT_MAX, 0, 0, 0)
#define A_HEADS(key, field) D9_ARG(key, D9_ARG_INT, field, 1, 1, INT32_MAX, 0, 0, 0)

static int one(d9_node *n, d9_node **y, int *ny) {
  *ny = 1;
  return (y[0] = n) ? 0 : -EINVAL;
}

/* ---- qkv, qkv_split ---- */

static int qkv_args(const d9_step_ctx *b, const d9_step *st, int64_t *nh, int64_t *ng,
                    int64_t *d) {
  const d9_step_args *a = st->args;
  return d9_op_int(b, st, &a->heads, nh) || d9_op_int(b, st, &a->groups, ng) ||
                 d9_op_int(b, st, &a->head_dim, d)
             ? -EINVAL
             : 0;
}

static int build_qkv(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx, d9_node **y,
                     int *ny, const char *where) {
  (void)nx;
  int64_t nh, ng, d;
  if (qkv_args(b, st, &nh, &ng, &d)) return -EINVAL;
  return one(d9_node_qkv(b->arena, x[0], x[1], x[2], nh, ng, d, where, b->diag), y, ny);
}

static int build_qkv_split(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                           d9_node **y, int *ny, const char *where) {
  (void)nx;
  int64_t nh, ng, d;
  if (qkv_args(b, st, &nh, &ng, &d)) return -EINVAL;
  *ny = 3;
  return d9_node_qkv_split(b->arena, x[0], nh, ng, d, y, where, b->diag);
}

static int invert_qkv_to(d9_step_kind k, const d9_step *st, d9_op_inv *inv) {
  inv->kind = k;
  inv->args.heads = st->args->heads;
  inv->args.groups = st->args->groups;
  inv->args.head_dim = st->args->head_dim;
  return 0;
}
static int invert_qkv(const d9_step *st, d9_op_inv *inv) {
  return invert_qkv_to(D9_STEP_QKV_SPLIT, st, inv);
}
static int invert_qkv_split(const d9_step *st, d9_op_inv *inv) {
  return invert_qkv_to(D9_STEP_QKV, st, inv);
}

#define QKV_ARGS {A_HEADS("heads", heads), A_HEADS("groups", groups), A_HEADS("head_dim", head_dim)}

const d9_op_def d9_op_qkv = {
    .name = "qkv", .kind = D9_STEP_QKV, .nin = 3, .in_desc = "three inputs (q, k, v)",
    .nout = 1, .locality = D9_LOCAL_COPY, .args = QKV_ARGS, .build = build_qkv,
    .invert = invert_qkv};

const d9_op_def d9_op_qkv_split = {
    .name = "qkv_split", .kind = D9_STEP_QKV_SPLIT, .nin = 1, .nout = 3,
    .locality = D9_LOCAL_COPY, .args = QKV_ARGS, .build = build_qkv_split,
    .invert = invert_qkv_split};

/* ---- interleave, deinterleave ---- */

/* View x [n, ...] as [n/group, group, ...]. */
static d9_node *view_rows(d9_arena *a, d9_node *x, int64_t group, const char *where,
                          d9_diag *diag) {
  int64_t sh[D9_MAX_DIMS];
  if (x->ndim < 1 || x->ndim + 1 > D9_MAX_DIMS || group < 1 || x->shape[0] % group)
    return d9_diag_fail(diag, EINVAL, "%s: dim 0 of size %lld is not a multiple of group %lld",
                        where, x->ndim ? (long long)x->shape[0] : 0LL, (long long)group), NULL;
  sh[0] = x->shape[0] / group, sh[1] = group;
  for (int i = 1; i < x->ndim; i++) sh[i + 1] = x->shape[i];
  return d9_node_reshape(a, x, sh, x->ndim + 1, where, diag);
}

static int build_interleave(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                            d9_node **y, int *ny, const char *where) {
  int64_t group, sh[D9_MAX_DIMS];
  if (d9_op_int(b, st, &st->args->group, &group)) return -EINVAL;
  d9_node **v = d9_arena_calloc(b->arena, (size_t)nx + 1, sizeof *v);
  if (!v) return d9_diag_fail(b->diag, ENOMEM, "%s: out of memory", where);
  for (int i = 0; i < nx; i++)
    if (!(v[i] = view_rows(b->arena, x[i], group, where, b->diag))) return -EINVAL;
  d9_node *c = d9_node_concat(b->arena, v, nx, 1, where, b->diag);
  if (!c) return -EINVAL;
  sh[0] = c->shape[0] * c->shape[1]; /* = the inputs' rows times nx: a valid numel factor */
  for (int i = 2; i < c->ndim; i++) sh[i - 1] = c->shape[i];
  return one(d9_node_reshape(b->arena, c, sh, c->ndim - 1, where, b->diag), y, ny);
}

static int build_deinterleave(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                              d9_node **y, int *ny, const char *where) {
  (void)nx;
  int64_t parts, group, span;
  if (d9_op_int(b, st, &st->args->parts, &parts) || d9_op_int(b, st, &st->args->group, &group) ||
      d9_op_mul(group, parts, &span, where, "deinterleave group * parts", b->diag))
    return -EINVAL;
  d9_node *v = view_rows(b->arena, x[0], span, where, b->diag);
  if (!v) return -EINVAL;
  for (int64_t i = 0; i < parts; i++) {
    int64_t sh[D9_MAX_DIMS];
    d9_node *s = d9_node_slice(b->arena, v, 1, i * group, group, where, b->diag);
    if (!s) return -EINVAL;
    sh[0] = s->shape[0] * group;
    for (int k = 2; k < s->ndim; k++) sh[k - 1] = s->shape[k];
    if (!(y[i] = d9_node_reshape(b->arena, s, sh, s->ndim - 1, where, b->diag))) return -EINVAL;
  }
  *ny = (int)parts;
  return 0;
}

static int nouts_deinterleave(const d9_spec *s, const cJSON *config, const d9_step *st) {
  int64_t n;
  if (d9_op_int_quiet(s, config, &st->args->parts, &n) || n < 1 || n > D9_STEP_MAX_PARTS)
    return -1;
  return (int)n;
}

static int invert_interleave(const d9_step *st, d9_op_inv *inv) {
  inv->kind = D9_STEP_DEINTERLEAVE;
  if (inv->nin > D9_STEP_MAX_PARTS)
    return inv->refuse = "interleave of more than 32 inputs has no inverse (deinterleave makes "
                         "at most 32 parts)", -EINVAL;
  inv->args.parts = (d9_ival){NULL, inv->nin, 1};
  inv->args.group = st->args->group;
  return 0;
}

static int invert_deinterleave(const d9_step *st, d9_op_inv *inv) {
  inv->kind = D9_STEP_INTERLEAVE;
  inv->args.group = st->args->group;
  return 0;
}

const d9_op_def d9_op_interleave = {
    .name = "interleave", .kind = D9_STEP_INTERLEAVE, .nout = 1, .locality = D9_LOCAL_COPY,
    .args = {A_POS("group", group, 0, 1)}, .build = build_interleave,
    .invert = invert_interleave};

const d9_op_def d9_op_deinterleave = {
    .name = "deinterleave", .kind = D9_STEP_DEINTERLEAVE, .nin = 1, .locality = D9_LOCAL_COPY,
    .args = {D9_ARG("parts", D9_ARG_INT, parts, 1, 1, D9_STEP_MAX_PARTS, 0, 0, 0),
             A_POS("group", group, 0, 1)},
    .build = build_deinterleave, .nouts = nouts_deinterleave, .invert = invert_deinterleave};

/* ---- rope ---- */

static const char *const rope_to[] = {"half", "interleaved", NULL};

static int build_rope(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx, d9_node **y,
                      int *ny, const char *where) {
  (void)nx;
  int64_t nh, two_nh;
  int half = st->args->word == 0;
  d9_node *w = x[0];
  if (d9_op_int(b, st, &st->args->heads, &nh) ||
      d9_op_mul(nh, 2, &two_nh, where, "rope 2 * heads", b->diag))
    return -EINVAL;
  if (w->ndim < 1 || w->ndim > 2 || w->shape[0] % two_nh)
    return d9_diag_fail(b->diag, EINVAL, "%s: rope: %lld rows are not %lld heads of an even "
                        "head_dim", where, w->ndim ? (long long)w->shape[0] : 0LL, (long long)nh);
  int64_t hd = w->shape[0] / nh, cols = w->ndim == 2 ? w->shape[1] : 1;
  /* interleaved (x0,y0,x1,y1..) -> half ([x..][y..]): view [nh, d/2, 2, C],
   * swap dims 1 and 2; the way back views [nh, 2, d/2, C]. */
  int64_t sh[4] = {nh, half ? hd / 2 : 2, half ? 2 : hd / 2, cols};
  int perm[4] = {0, 2, 1, 3};
  d9_node *v = d9_node_reshape(b->arena, w, sh, 4, where, b->diag);
  d9_node *p = v ? d9_node_permute(b->arena, v, perm, 4, where, b->diag) : NULL;
  return one(p ? d9_node_reshape(b->arena, p, w->shape, w->ndim, where, b->diag) : NULL, y, ny);
}

static int invert_rope(const d9_step *st, d9_op_inv *inv) {
  inv->kind = D9_STEP_ROPE;
  inv->args.heads = st->args->heads;
  inv->args.word = !st->args->word;
  inv->args.word_given = 1;
  return 0;
}

const d9_op_def d9_op_rope = {
    .name = "rope", .kind = D9_STEP_ROPE, .nin = 1, .nout = 1, .locality = D9_LOCAL_TILED,
    .args = {A_HEADS("heads", heads),
             {"to", D9_ARG_WORD, offsetof(d9_step_args, word), 1, 0, 0, 0, 0, 0, rope_to}},
    .build = build_rope, .invert = invert_rope};

/* ---- pad, truncate ---- */

static int check_from_rows(const d9_step_ctx *b, const d9_step *st, d9_node *x,
                           const char *where) {
  int64_t got, have = x->ndim ? x->shape[0] : 0;
  if (!st->args->from_rows.given) return 0;
  if (d9_op_int(b, st, &st->args->from_rows, &got)) return -EINVAL;
  if (got != have)
    return d9_diag_fail(b->diag, EINVAL, "%s: \"from_rows\" value 0 is %lld but the input has "
                        "%lld (--reverse relies on it)", where, (long long)got, (long long)have);
  return 0;
}

static int check_pad(const d9_step_args *a, const char *path, const char *where, d9_diag *diag) {
  if (!a->rows.given && !a->multiple.given)
    return d9_diag_fail(diag, EINVAL, "%s: %s: pad needs \"rows\" or \"multiple\"", path, where);
  return 0;
}

static int build_pad(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx, d9_node **y,
                     int *ny, const char *where) {
  (void)nx;
  int64_t rows, mult, have = x[0]->ndim ? x[0]->shape[0] : 0;
  if (check_from_rows(b, st, x[0], where)) return -EINVAL;
  if (st->args->rows.given) {
    if (d9_op_int(b, st, &st->args->rows, &rows)) return -EINVAL;
  } else {
    if (d9_op_int(b, st, &st->args->multiple, &mult) ||
        d9_op_add(have, mult - 1, &rows, where, "pad rows + multiple - 1", b->diag))
      return -EINVAL;
    rows = rows / mult * mult;
  }
  if (rows < have)
    return d9_diag_fail(b->diag, EINVAL, "%s: pad to %lld rows, fewer than the %lld there are",
                        where, (long long)rows, (long long)have);
  return one(d9_node_pad(b->arena, x[0], rows, where, b->diag), y, ny);
}

static int build_truncate(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                          d9_node **y, int *ny, const char *where) {
  (void)nx;
  int64_t rows;
  if (check_from_rows(b, st, x[0], where) || d9_op_int(b, st, &st->args->rows, &rows))
    return -EINVAL;
  return one(d9_node_slice(b->arena, x[0], 0, 0, rows, where, b->diag), y, ny);
}

/* pad <-> truncate: rows and from_rows swap places. */
static int invert_rows(const d9_step *st, d9_op_inv *inv, d9_step_kind k) {
  if (!st->args->from_rows.given)
    return inv->refuse = k == D9_STEP_TRUNCATE ? "pad has no inverse without \"from_rows\""
                                               : "truncate has no inverse without \"from_rows\"",
           -EINVAL;
  inv->kind = k;
  inv->args.rows = st->args->from_rows;
  inv->args.from_rows = st->args->rows;
  if (k == D9_STEP_PAD) inv->lossy = "truncated rows come back as zeros";
  return 0;
}
static int invert_pad(const d9_step *st, d9_op_inv *inv) {
  return invert_rows(st, inv, D9_STEP_TRUNCATE);
}
static int invert_truncate(const d9_step *st, d9_op_inv *inv) {
  return invert_rows(st, inv, D9_STEP_PAD);
}

const d9_op_def d9_op_pad = {
    .name = "pad", .kind = D9_STEP_PAD, .nin = 1, .nout = 1, .locality = D9_LOCAL_COPY,
    .args = {A_POS("multiple", multiple, 0, 1), A_ROWS("rows", rows, 0),
             A_ROWS("from_rows", from_rows, 0)},
    .check = check_pad, .build = build_pad, .invert = invert_pad};

const d9_op_def d9_op_truncate = {
    .name = "truncate", .kind = D9_STEP_TRUNCATE, .nin = 1, .nout = 1, .lossy = D9_LOSSY_ALWAYS,
    .locality = D9_LOCAL_COPY,
    .args = {A_ROWS("rows", rows, 1), A_ROWS("from_rows", from_rows, 0)},
    .build = build_truncate, .invert = invert_truncate};
