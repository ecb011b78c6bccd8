/* op_layout.c - the layout ops of the op table (op_table.h): concat,
 * stack, unstack, chunk, split, reshape, squeeze, unsqueeze, transpose,
 * permute, slice. Each is made of node primitives (node.h); none converts
 * a value. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "op_table.h"

#define A_DIM(req, def) D9_ARG("dim", D9_ARG_INT, dim, req, D9_ARG_DIM_LO, D9_ARG_DIM_HI, def, 0, 0)
#define A_SIZES(key, field, req, max_n) \
  D9_ARG(key, D9_ARG_INTS, field, req, 0, D9_ARG_INT_MAX, 0, 1, max_n)

static int bad_dim(const d9_step_ctx *b, const char *where, int64_t dim) {
  return d9_diag_fail(b->diag, EINVAL, "%s: dim %lld out of range", where, (long long)dim);
}

static int one(d9_node *n, d9_node **y, int *ny) {
  *ny = 1;
  return (y[0] = n) ? 0 : -EINVAL;
}

/* ---- concat, stack ---- */

static int64_t size_on(d9_node **x, int i, int dim) { return x[i]->shape[dim]; }

static int build_concat(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                        d9_node **y, int *ny, const char *where) {
  const d9_step_args *a = st->args;
  int64_t dim;
  int d;
  if (d9_op_int(b, st, &a->dim, &dim)) return -EINVAL;
  if (nx > 0) {
    if (d9_op_dim(dim, x[0]->ndim, 0, &d)) return bad_dim(b, where, dim);
    if (d9_op_check_given(b, st, &a->sizes, "sizes", nx, size_on, x, d, 0, where)) return -EINVAL;
  }
  return one(d9_node_concat(b->arena, x, nx, (int)dim, where, b->diag), y, ny);
}

static int build_stack(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                       d9_node **y, int *ny, const char *where) {
  int64_t dim;
  if (d9_op_int(b, st, &st->args->dim, &dim)) return -EINVAL;
  return one(d9_node_stack(b->arena, x, nx, (int)dim, where, b->diag), y, ny);
}

static int invert_concat(const d9_step *st, d9_op_inv *inv) {
  if (!st->args->sizes.n)
    return inv->refuse = "concat has no inverse without \"sizes\" (the size of each part along "
                         "dim)", -EINVAL;
  if (st->args->sizes.n > D9_STEP_MAX_PARTS)
    return inv->refuse = "concat of more than 32 parts has no inverse (split makes at most 32 "
                         "parts)", -EINVAL;
  inv->kind = D9_STEP_SPLIT;
  inv->args.sizes = st->args->sizes;
  inv->args.dim = st->args->dim;
  return 0;
}

static int invert_to(d9_step_kind k, const d9_step *st, d9_op_inv *inv) {
  inv->kind = k;
  inv->args.dim = st->args->dim;
  return 0;
}
static int invert_stack(const d9_step *st, d9_op_inv *inv) {
  return invert_to(D9_STEP_UNSTACK, st, inv);
}
static int invert_unstack(const d9_step *st, d9_op_inv *inv) {
  return invert_to(D9_STEP_STACK, st, inv);
}
static int invert_parts(const d9_step *st, d9_op_inv *inv) {
  return invert_to(D9_STEP_CONCAT, st, inv);
}

const d9_op_def d9_op_concat = {
    .name = "concat", .kind = D9_STEP_CONCAT, .nout = 1, .locality = D9_LOCAL_COPY,
    .args = {A_DIM(0, 0), A_SIZES("sizes", sizes, 0, INT32_MAX)},
    .build = build_concat, .invert = invert_concat};

const d9_op_def d9_op_stack = {
    .name = "stack", .kind = D9_STEP_STACK, .nout = 1, .locality = D9_LOCAL_COPY,
    .args = {A_DIM(0, 0)}, .build = build_stack, .invert = invert_stack};

/* ---- unstack ---- */

static int build_unstack(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                         d9_node **y, int *ny, const char *where) {
  (void)nx;
  int64_t dim, sh[D9_MAX_DIMS];
  int d, k = 0;
  if (d9_op_int(b, st, &st->args->dim, &dim)) return -EINVAL;
  if (d9_op_dim(dim, x[0]->ndim, 0, &d)) return bad_dim(b, where, dim);
  int64_t n = x[0]->shape[d];
  if (n < 1 || n > D9_STEP_MAX_OUTPUTS)
    return d9_diag_fail(b->diag, EINVAL, "%s: unstack of %lld slices, the limit is 1..%d", where,
                        (long long)n, D9_STEP_MAX_OUTPUTS);
  for (int i = 0; i < x[0]->ndim; i++)
    if (i != d) sh[k++] = x[0]->shape[i];
  for (int64_t i = 0; i < n; i++) {
    d9_node *s = d9_node_slice(b->arena, x[0], d, i, 1, where, b->diag);
    if (!s || !(y[i] = d9_node_reshape(b->arena, s, sh, k, where, b->diag))) return -EINVAL;
  }
  *ny = (int)n;
  return 0;
}

static int nouts_unknown(const d9_spec *s, const cJSON *config, const d9_step *st) {
  (void)s, (void)config, (void)st;
  return -1;
}

const d9_op_def d9_op_unstack = {
    .name = "unstack", .kind = D9_STEP_UNSTACK, .nin = 1, .locality = D9_LOCAL_COPY,
    .args = {A_DIM(0, 0)}, .build = build_unstack, .nouts = nouts_unknown,
    .invert = invert_unstack};

/* ---- chunk, split ---- */

static int cut(const d9_step_ctx *b, d9_node *x, int d, const int64_t *sizes, int n,
               d9_node **y, int *ny, const char *where) {
  int64_t off = 0;
  for (int i = 0; i < n; i++) {
    if (!(y[i] = d9_node_slice(b->arena, x, d, off, sizes[i], where, b->diag))) return -EINVAL;
    off += sizes[i]; /* the sizes add up to the dim's size: no overflow */
  }
  *ny = n;
  return 0;
}

static int build_chunk(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                       d9_node **y, int *ny, const char *where) {
  (void)nx;
  int64_t dim, chunks, sizes[D9_STEP_MAX_PARTS];
  int d;
  if (d9_op_int(b, st, &st->args->dim, &dim)) return -EINVAL;
  if (d9_op_dim(dim, x[0]->ndim, 0, &d)) return bad_dim(b, where, dim);
  if (d9_op_int(b, st, &st->args->chunks, &chunks)) return -EINVAL;
  int64_t total = x[0]->shape[d];
  if (total % chunks)
    return d9_diag_fail(b->diag, EINVAL, "%s: dim %d of size %lld is not divisible into %lld "
                        "chunks", where, d, (long long)total, (long long)chunks);
  for (int i = 0; i < chunks; i++) sizes[i] = total / chunks;
  return cut(b, x[0], d, sizes, (int)chunks, y, ny, where);
}

static int build_split(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                       d9_node **y, int *ny, const char *where) {
  (void)nx;
  const d9_ilist *l = &st->args->sizes;
  int64_t dim, sizes[D9_STEP_MAX_PARTS], sum = 0;
  int d;
  if (d9_op_int(b, st, &st->args->dim, &dim)) return -EINVAL;
  if (d9_op_dim(dim, x[0]->ndim, 0, &d)) return bad_dim(b, where, dim);
  if (l->n > D9_STEP_MAX_PARTS) /* decoded specs hold at most that; inverses are checked */
    return d9_diag_fail(b->diag, EINVAL, "%s: split into %d parts, the limit is %d", where, l->n,
                        D9_STEP_MAX_PARTS);
  for (int i = 0; i < l->n; i++)
    if (d9_op_int(b, st, &l->v[i], &sizes[i]) ||
        d9_op_add(sum, sizes[i], &sum, where, "split sizes", b->diag))
      return -EINVAL;
  if (sum != x[0]->shape[d])
    return d9_diag_fail(b->diag, EINVAL, "%s: split sizes add up to %lld, dim %d is %lld", where,
                        (long long)sum, d, (long long)x[0]->shape[d]);
  return cut(b, x[0], d, sizes, l->n, y, ny, where);
}

static int nouts_chunk(const d9_spec *s, const cJSON *config, const d9_step *st) {
  int64_t n;
  if (d9_op_int_quiet(s, config, &st->args->chunks, &n) || n < 1 || n > D9_STEP_MAX_PARTS)
    return -1;
  return (int)n;
}

static int nouts_split(const d9_spec *s, const cJSON *config, const d9_step *st) {
  (void)s, (void)config;
  return st->args->sizes.n;
}

const d9_op_def d9_op_chunk = {
    .name = "chunk", .kind = D9_STEP_CHUNK, .nin = 1, .locality = D9_LOCAL_COPY,
    .args = {D9_ARG("chunks", D9_ARG_INT, chunks, 1, 1, D9_STEP_MAX_PARTS, 0, 0, 0), A_DIM(0, 0)},
    .build = build_chunk, .nouts = nouts_chunk, .invert = invert_parts};

const d9_op_def d9_op_split = {
    .name = "split", .kind = D9_STEP_SPLIT, .nin = 1, .locality = D9_LOCAL_COPY,
    .args = {A_SIZES("sizes", sizes, 1, D9_STEP_MAX_PARTS), A_DIM(0, 0)},
    .build = build_split, .nouts = nouts_split, .invert = invert_parts};

/* ---- reshape, squeeze, unsqueeze ---- */

static int64_t shape_at(d9_node **x, int i, int dim) {
  (void)dim;
  return x[0]->shape[i];
}

static int build_reshape(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                         d9_node **y, int *ny, const char *where) {
  (void)nx;
  const d9_ilist *l = &st->args->shape;
  int64_t shape[D9_MAX_DIMS];
  if (d9_op_check_given(b, st, &st->args->from_shape, "from_shape", x[0]->ndim, shape_at, x, 0,
                        1, where))
    return -EINVAL;
  for (int i = 0; i < l->n; i++)
    if (d9_op_int(b, st, &l->v[i], &shape[i])) return -EINVAL;
  return one(d9_node_reshape(b->arena, x[0], shape, l->n, where, b->diag), y, ny);
}

static int invert_reshape(const d9_step *st, d9_op_inv *inv) {
  if (!st->args->from_shape.n)
    return inv->refuse = "reshape has no inverse without \"from_shape\"", -EINVAL;
  inv->kind = D9_STEP_RESHAPE;
  inv->args.shape = st->args->from_shape;
  inv->args.from_shape = st->args->shape;
  return 0;
}

const d9_op_def d9_op_reshape = {
    .name = "reshape", .kind = D9_STEP_RESHAPE, .nin = 1, .nout = 1, .locality = D9_LOCAL_VIEW,
    .args = {D9_ARG("shape", D9_ARG_INTS, shape, 1, -1, D9_ARG_INT_MAX, 0, 0, D9_MAX_DIMS),
             D9_ARG("from_shape", D9_ARG_INTS, from_shape, 0, -1, D9_ARG_INT_MAX, 0, 0,
                    D9_MAX_DIMS)},
    .build = build_reshape, .invert = invert_reshape};

static int squeeze(const d9_step_ctx *b, const d9_step *st, d9_node *x, int sq, d9_node **y,
                   int *ny, const char *where) {
  int64_t dim, sh[D9_MAX_DIMS];
  int d, n = 0;
  if (d9_op_int(b, st, &st->args->dim, &dim)) return -EINVAL;
  if (d9_op_dim(dim, x->ndim, sq ? 0 : 1, &d)) return bad_dim(b, where, dim);
  if (sq && x->shape[d] != 1)
    return d9_diag_fail(b->diag, EINVAL, "%s: squeeze dim %d has size %lld, not 1", where, d,
                        (long long)x->shape[d]);
  if (!sq && x->ndim + 1 > D9_MAX_DIMS) return bad_dim(b, where, dim);
  for (int i = 0; i < x->ndim + (sq ? 0 : 1); i++) {
    if (sq && i == d) continue;
    if (!sq && i == d) sh[n++] = 1;
    if (i < x->ndim) sh[n++] = x->shape[i];
  }
  if (!sq && d == x->ndim) n = x->ndim + 1, sh[d] = 1;
  return one(d9_node_reshape(b->arena, x, sh, n, where, b->diag), y, ny);
}

static int build_squeeze(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                         d9_node **y, int *ny, const char *where) {
  (void)nx;
  return squeeze(b, st, x[0], 1, y, ny, where);
}
static int build_unsqueeze(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                           d9_node **y, int *ny, const char *where) {
  (void)nx;
  return squeeze(b, st, x[0], 0, y, ny, where);
}
static int invert_squeeze(const d9_step *st, d9_op_inv *inv) {
  return invert_to(D9_STEP_UNSQUEEZE, st, inv);
}
static int invert_unsqueeze(const d9_step *st, d9_op_inv *inv) {
  return invert_to(D9_STEP_SQUEEZE, st, inv);
}

const d9_op_def d9_op_squeeze = {
    .name = "squeeze", .kind = D9_STEP_SQUEEZE, .nin = 1, .nout = 1, .locality = D9_LOCAL_VIEW,
    .args = {A_DIM(1, 0)}, .build = build_squeeze, .invert = invert_squeeze};

const d9_op_def d9_op_unsqueeze = {
    .name = "unsqueeze", .kind = D9_STEP_UNSQUEEZE, .nin = 1, .nout = 1,
    .locality = D9_LOCAL_VIEW, .args = {A_DIM(1, 0)}, .build = build_unsqueeze,
    .invert = invert_unsqueeze};

/* ---- transpose, permute ---- */

static int build_transpose(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                           d9_node **y, int *ny, const char *where) {
  (void)nx;
  int perm[D9_MAX_DIMS], n = x[0]->ndim, a0, a1;
  int64_t d0, d1;
  for (int i = 0; i < n; i++) perm[i] = i;
  if (d9_op_int(b, st, &st->args->dim0, &d0) || d9_op_int(b, st, &st->args->dim1, &d1))
    return -EINVAL;
  if (d9_op_dim(d0, n, 0, &a0)) return bad_dim(b, where, d0);
  if (d9_op_dim(d1, n, 0, &a1)) return bad_dim(b, where, d1);
  perm[a0] = a1, perm[a1] = a0;
  return one(d9_node_permute(b->arena, x[0], perm, n, where, b->diag), y, ny);
}

static int invert_transpose(const d9_step *st, d9_op_inv *inv) {
  inv->kind = D9_STEP_TRANSPOSE;
  inv->args.dim0 = st->args->dim0;
  inv->args.dim1 = st->args->dim1;
  return 0;
}

const d9_op_def d9_op_transpose = {
    .name = "transpose", .kind = D9_STEP_TRANSPOSE, .nin = 1, .nout = 1,
    .locality = D9_LOCAL_TILED,
    .args = {D9_ARG("dim0", D9_ARG_INT, dim0, 0, D9_ARG_DIM_LO, D9_ARG_DIM_HI, 0, 0, 0),
             D9_ARG("dim1", D9_ARG_INT, dim1, 0, D9_ARG_DIM_LO, D9_ARG_DIM_HI, 1, 0, 0)},
    .build = build_transpose, .invert = invert_transpose};

/* dims must list each dim once (negative from the end): known at parse. */
static int check_permute(const d9_step_args *a, const char *path, const char *where,
                         d9_diag *diag) {
  int n = a->dims.n, seen[D9_MAX_DIMS] = {0}, v;
  for (int k = 0; k < n; k++) {
    if (d9_op_dim(a->dims.v[k].lit, n, 0, &v))
      return d9_diag_fail(diag, EINVAL, "%s: %s.dims[%d]: %lld is not a dim of %d", path, where,
                          k, (long long)a->dims.v[k].lit, n);
    if (seen[v]++)
      return d9_diag_fail(diag, EINVAL, "%s: %s.dims[%d]: dim %d is listed twice", path, where,
                          k, v);
  }
  return 0;
}

static int build_permute(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                         d9_node **y, int *ny, const char *where) {
  (void)nx;
  const d9_ilist *l = &st->args->dims;
  int perm[D9_MAX_DIMS], n = x[0]->ndim;
  if (l->n != n) return d9_diag_fail(b->diag, EINVAL, "%s: \"dims\" must list %d dims", where, n);
  for (int k = 0; k < n; k++)
    if (d9_op_dim(l->v[k].lit, n, 0, &perm[k])) /* checked at parse */
      return d9_diag_fail(b->diag, EINVAL, "%s: dims[%d] out of range", where, k);
  return one(d9_node_permute(b->arena, x[0], perm, n, where, b->diag), y, ny);
}

static int invert_permute(const d9_step *st, d9_op_inv *inv) {
  const d9_ilist *l = &st->args->dims;
  d9_ival *v = d9_arena_calloc(inv->arena, (size_t)l->n + 1, sizeof *v);
  if (!v) return -ENOMEM;
  for (int k = 0, d; k < l->n; k++)
    if (!d9_op_dim(l->v[k].lit, l->n, 0, &d)) v[d] = (d9_ival){NULL, k, 1}; /* checked at parse */
  inv->kind = D9_STEP_PERMUTE;
  inv->args.dims = (d9_ilist){l->n, v, 0};
  return 0;
}

const d9_op_def d9_op_permute = {
    .name = "permute", .kind = D9_STEP_PERMUTE, .nin = 1, .nout = 1, .locality = D9_LOCAL_TILED,
    .args = {D9_ARG("dims", D9_ARG_LIT_INTS, dims, 1, -D9_MAX_DIMS, D9_MAX_DIMS - 1, 0, 0,
                    D9_MAX_DIMS)},
    .check = check_permute, .build = build_permute, .invert = invert_permute};

/* ---- slice ---- */

static int build_slice(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx,
                       d9_node **y, int *ny, const char *where) {
  (void)nx;
  const d9_step_args *a = st->args;
  int64_t dim, s0, e0, len;
  int d;
  if (d9_op_int(b, st, &a->dim, &dim)) return -EINVAL;
  if (d9_op_dim(dim, x[0]->ndim, 0, &d)) return bad_dim(b, where, dim);
  int64_t size = x[0]->shape[d];
  if (d9_op_int(b, st, &a->start, &s0)) return -EINVAL;
  if (a->end.given ? d9_op_int(b, st, &a->end, &e0) : (e0 = size, 0)) return -EINVAL;
  /* |start|, |end| <= 2^53 and size <= 2^53: these cannot overflow */
  if (s0 < 0) s0 += size;
  if (e0 < 0) e0 += size;
  if (d9_op_add(e0, -s0, &len, where, "slice end - start", b->diag)) return -EINVAL;
  return one(d9_node_slice(b->arena, x[0], d, s0, len, where, b->diag), y, ny);
}

static int invert_slice(const d9_step *st, d9_op_inv *inv) {
  (void)st;
  return inv->refuse = "slice drops data and has no inverse", -EINVAL;
}

const d9_op_def d9_op_slice = {
    .name = "slice", .kind = D9_STEP_SLICE, .nin = 1, .nout = 1, .locality = D9_LOCAL_COPY,
    .args = {A_DIM(0, 0),
             D9_ARG("start", D9_ARG_INT, start, 0, -D9_ARG_INT_MAX, D9_ARG_INT_MAX, 0, 0, 0),
             D9_ARG("end", D9_ARG_INT, end, 0, -D9_ARG_INT_MAX, D9_ARG_INT_MAX, 0, 0, 0)},
    .build = build_slice, .invert = invert_slice};
