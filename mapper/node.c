#include "node.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *d9_shape_str(const int64_t *shape, int ndim, char *buf, size_t cap) {
  size_t o = 0;
  o += (size_t)snprintf(buf + o, cap - o, "[");
  for (int i = 0; i < ndim && o < cap; i++)
    o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (o < cap) snprintf(buf + o, cap - o, "]");
  return buf;
}

static d9_node *new_node(d9_arena *a, d9_op op, int nin) {
  d9_node *n = d9_arena_alloc(a, sizeof *n);
  if (!n) return NULL;
  n->op = op;
  n->nin = nin;
  if (nin && !(n->in = d9_arena_calloc(a, (size_t)nin, sizeof *n->in))) return NULL;
  return n;
}

static int64_t inner_of(const int64_t *shape, int ndim, int dim) {
  int64_t p = 1;
  for (int i = dim + 1; i < ndim; i++) p *= shape[i];
  return p;
}

d9_node *d9_node_source(d9_arena *a, const d9_src_tensor *t) {
  d9_node *n = new_node(a, D9_OP_SOURCE, 0);
  if (!n) return NULL;
  n->src = t;
  n->dtype = t->dtype;
  n->ndim = t->ndim;
  memcpy(n->shape, t->shape, sizeof n->shape);
  d9_st_numel(t->shape, t->ndim, &n->numel); /* checked by the catalog */
  return n;
}

d9_node *d9_node_reshape(d9_arena *a, d9_node *x, const int64_t *shape, int ndim,
                         const char *where, d9_diag *diag) {
  char b1[160], b2[160];
  int64_t sh[D9_MAX_DIMS], known = 1;
  int infer = -1;
  if (ndim < 0 || ndim > D9_MAX_DIMS)
    return d9_diag_fail(diag, EINVAL, "%s: reshape to %d dims (at most %d)", where, ndim,
                        D9_MAX_DIMS), NULL;
  for (int i = 0; i < ndim; i++) {
    sh[i] = shape[i];
    if (sh[i] == -1 && infer < 0) {
      infer = i;
      continue;
    }
    if (sh[i] < 0 || __builtin_mul_overflow(known, sh[i], &known))
      return d9_diag_fail(diag, EINVAL, "%s: bad reshape target %s", where,
                          d9_shape_str(shape, ndim, b1, sizeof b1)), NULL;
  }
  if (infer >= 0) {
    if (known == 0 || x->numel % known)
      return d9_diag_fail(diag, EINVAL, "%s: cannot reshape %s into %s", where,
                          d9_shape_str(x->shape, x->ndim, b1, sizeof b1),
                          d9_shape_str(shape, ndim, b2, sizeof b2)), NULL;
    sh[infer] = x->numel / known;
    known = x->numel;
  }
  if (known != x->numel)
    return d9_diag_fail(diag, EINVAL,
                        "%s: reshape %s into %s changes the element count (%lld vs %lld)",
                        where, d9_shape_str(x->shape, x->ndim, b1, sizeof b1),
                        d9_shape_str(sh, ndim, b2, sizeof b2), (long long)x->numel,
                        (long long)known), NULL;
  d9_node *n = new_node(a, D9_OP_RESHAPE, 1);
  if (!n) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", where), NULL;
  n->in[0] = x;
  n->dtype = x->dtype;
  n->ndim = ndim;
  memcpy(n->shape, sh, sizeof(int64_t) * (size_t)ndim);
  n->numel = x->numel;
  return n;
}

d9_node *d9_node_concat(d9_arena *a, d9_node **in, int n, int dim, const char *where,
                        d9_diag *diag) {
  char b1[160], b2[160];
  if (n < 1) return d9_diag_fail(diag, EINVAL, "%s: concat of no tensors", where), NULL;
  d9_node *f = in[0];
  if (dim < 0) dim += f->ndim;
  if (dim < 0 || dim >= f->ndim)
    return d9_diag_fail(diag, EINVAL, "%s: concat dim %d out of range for %s", where, dim,
                        d9_shape_str(f->shape, f->ndim, b1, sizeof b1)), NULL;
  d9_node *o = new_node(a, D9_OP_CONCAT, n);
  if (!o || !(o->cum = d9_arena_calloc(a, (size_t)n + 1, sizeof(int64_t))))
    return d9_diag_fail(diag, ENOMEM, "%s: out of memory", where), NULL;
  for (int i = 0; i < n; i++) {
    d9_node *x = in[i];
    int same = x->ndim == f->ndim && x->dtype == f->dtype;
    for (int k = 0; same && k < f->ndim; k++)
      if (k != dim && x->shape[k] != f->shape[k]) same = 0;
    if (!same)
      return d9_diag_fail(diag, EINVAL,
                          "%s: concat on dim %d: input %d is %s %s, input 0 is %s %s", where,
                          dim, i, d9_dtype_name(x->dtype),
                          d9_shape_str(x->shape, x->ndim, b1, sizeof b1),
                          d9_dtype_name(f->dtype),
                          d9_shape_str(f->shape, f->ndim, b2, sizeof b2)), NULL;
    o->in[i] = x;
    if (__builtin_add_overflow(o->cum[i], x->shape[dim], &o->cum[i + 1]))
      return d9_diag_fail(diag, EOVERFLOW, "%s: concat size overflows", where), NULL;
  }
  o->dtype = f->dtype;
  o->ndim = f->ndim;
  memcpy(o->shape, f->shape, sizeof o->shape);
  o->shape[dim] = o->cum[n];
  o->dim = dim;
  o->inner = inner_of(o->shape, o->ndim, dim);
  if (d9_st_numel(o->shape, o->ndim, &o->numel))
    return d9_diag_fail(diag, EOVERFLOW, "%s: concat size overflows", where), NULL;
  return o;
}

d9_node *d9_node_slice(d9_arena *a, d9_node *x, int dim, int64_t start, int64_t len,
                       const char *where, d9_diag *diag) {
  char b1[160];
  if (dim < 0) dim += x->ndim;
  if (dim < 0 || dim >= x->ndim)
    return d9_diag_fail(diag, EINVAL, "%s: dim %d out of range for %s", where, dim,
                        d9_shape_str(x->shape, x->ndim, b1, sizeof b1)), NULL;
  if (start < 0 || len < 0 || start > x->shape[dim] || len > x->shape[dim] - start)
    return d9_diag_fail(diag, EINVAL, "%s: slice [%lld, %lld) of dim %d is outside %s",
                        where, (long long)start, (long long)start + len, dim,
                        d9_shape_str(x->shape, x->ndim, b1, sizeof b1)), NULL;
  d9_node *o = new_node(a, D9_OP_SLICE, 1);
  if (!o) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", where), NULL;
  o->in[0] = x;
  o->dtype = x->dtype;
  o->ndim = x->ndim;
  memcpy(o->shape, x->shape, sizeof o->shape);
  o->shape[dim] = len;
  o->dim = dim;
  o->start = start;
  o->inner = inner_of(o->shape, o->ndim, dim);
  d9_st_numel(o->shape, o->ndim, &o->numel);
  return o;
}

d9_node *d9_node_cast(d9_arena *a, d9_node *x, d9_dtype to, const char *where,
                      d9_diag *diag) {
  if (x->dtype == to) return x;
  if (!d9_dtype_is_castable(x->dtype) || !d9_dtype_is_castable(to))
    return d9_diag_fail(diag, EINVAL, "%s: cannot cast %s to %s", where,
                        d9_dtype_name(x->dtype), d9_dtype_name(to)), NULL;
  d9_node *o = new_node(a, D9_OP_CAST, 1);
  if (!o) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", where), NULL;
  o->in[0] = x;
  o->dtype = to;
  o->ndim = x->ndim;
  memcpy(o->shape, x->shape, sizeof o->shape);
  o->numel = x->numel;
  return o;
}

d9_node *d9_node_stack(d9_arena *a, d9_node **in, int n, int dim, const char *where,
                       d9_diag *diag) {
  if (n < 1) return d9_diag_fail(diag, EINVAL, "%s: stack of no tensors", where), NULL;
  int nd = in[0]->ndim;
  if (dim < 0) dim += nd + 1;
  if (dim < 0 || dim > nd || nd + 1 > D9_MAX_DIMS)
    return d9_diag_fail(diag, EINVAL, "%s: stack dim %d out of range", where, dim), NULL;
  d9_node **u = d9_arena_calloc(a, (size_t)n, sizeof *u);
  if (!u) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", where), NULL;
  for (int i = 0; i < n; i++) {
    int64_t sh[D9_MAX_DIMS];
    for (int k = 0, j = 0; k <= nd; k++) sh[k] = k == dim ? 1 : in[i]->shape[j++];
    if (!(u[i] = d9_node_reshape(a, in[i], sh, nd + 1, where, diag))) return NULL;
  }
  return d9_node_concat(a, u, n, dim, where, diag);
}

/* Checks shared by qkv and its inverse: returns rows-per-head layout. */
static int qkv_check(int64_t nh, int64_t ng, int64_t d, const char *where, d9_diag *diag) {
  if (nh <= 0 || ng <= 0 || d <= 0)
    return d9_diag_fail(diag, EINVAL, "%s: heads %lld, groups %lld, head_dim %lld must be > 0",
                        where, (long long)nh, (long long)ng, (long long)d);
  if (nh % ng)
    return d9_diag_fail(diag, EINVAL,
                        "%s: %lld attention heads are not divisible by %lld kv groups", where,
                        (long long)nh, (long long)ng);
  if (nh > INT32_MAX || d > INT32_MAX || ng > INT32_MAX)
    return d9_diag_fail(diag, EINVAL, "%s: head counts too large", where);
  return 0;
}

static d9_node *view_groups(d9_arena *a, d9_node *x, int64_t ng, int64_t rows,
                            const char *where, d9_diag *diag) {
  int64_t sh[3] = {ng, rows, x->ndim == 2 ? x->shape[1] : 0};
  return d9_node_reshape(a, x, sh, x->ndim == 2 ? 3 : 2, where, diag);
}

d9_node *d9_node_qkv(d9_arena *a, d9_node *q, d9_node *k, d9_node *v, int64_t nh,
                     int64_t ng, int64_t d, const char *where, d9_diag *diag) {
  char b1[160];
  if (qkv_check(nh, ng, d, where, diag)) return NULL;
  int64_t g = nh / ng;
  struct { d9_node *x; const char *what; int64_t rows; } t[3] = {
      {q, "q", nh * d}, {k, "k", ng * d}, {v, "v", ng * d}};
  for (int i = 0; i < 3; i++)
    if (t[i].x->ndim < 1 || t[i].x->ndim > 2 || t[i].x->shape[0] != t[i].rows ||
        (t[i].x->ndim == 2 && t[i].x->shape[1] != q->shape[q->ndim - 1]) ||
        t[i].x->ndim != q->ndim)
      return d9_diag_fail(diag, EINVAL,
                          "%s: %s is %s, want %lld rows (heads %lld, groups %lld, head_dim "
                          "%lld)%s",
                          where, t[i].what,
                          d9_shape_str(t[i].x->shape, t[i].x->ndim, b1, sizeof b1),
                          (long long)t[i].rows, (long long)nh, (long long)ng, (long long)d,
                          q->ndim == 2 ? " and the columns of q" : ""), NULL;
  d9_node *parts[3];
  int64_t rows[3] = {g * d, d, d};
  for (int i = 0; i < 3; i++)
    if (!(parts[i] = view_groups(a, t[i].x, ng, rows[i], where, diag))) return NULL;
  d9_node *c = d9_node_concat(a, parts, 3, 1, where, diag);
  if (!c) return NULL;
  int64_t sh[2] = {(nh + 2 * ng) * d, q->ndim == 2 ? q->shape[1] : 0};
  return d9_node_reshape(a, c, sh, q->ndim, where, diag);
}

int d9_node_qkv_split(d9_arena *a, d9_node *x, int64_t nh, int64_t ng, int64_t d,
                      d9_node *out[3], const char *where, d9_diag *diag) {
  char b1[160];
  if (qkv_check(nh, ng, d, where, diag)) return -EINVAL;
  int64_t g = nh / ng, w = (g + 2) * d;
  if (x->ndim < 1 || x->ndim > 2 || x->shape[0] != ng * w)
    return d9_diag_fail(diag, EINVAL, "%s: fused qkv is %s, want %lld rows", where,
                        d9_shape_str(x->shape, x->ndim, b1, sizeof b1), (long long)(ng * w));
  d9_node *grouped = view_groups(a, x, ng, w, where, diag);
  if (!grouped) return -EINVAL;
  int64_t start[3] = {0, g * d, (g + 1) * d}, len[3] = {g * d, d, d};
  for (int i = 0; i < 3; i++) {
    d9_node *s = d9_node_slice(a, grouped, 1, start[i], len[i], where, diag);
    int64_t sh[2] = {ng * len[i], x->ndim == 2 ? x->shape[1] : 0};
    if (!s || !(out[i] = d9_node_reshape(a, s, sh, x->ndim, where, diag))) return -EINVAL;
  }
  return 0;
}
