/* steps.c - each spec step op as node primitives (node.h, node_ops.c):
 * qkv is reshape + concat + reshape, interleave is reshape + concat, rope is
 * reshape + permute + reshape, and so on. Arguments are integers or
 * expressions over params and config.json. */
#include "steps.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "json_strict.h"

static int step_int(const d9_step_ctx *b, const d9_step *st, const char *key, int have_default,
                    int64_t def, int64_t *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(st->j, key);
  if (!v) {
    if (have_default) return *out = def, 0;
    return d9_diag_fail(b->diag, EINVAL, "%s: %s: missing \"%s\"", b->s->path, st->where, key);
  }
  char where[256];
  snprintf(where, sizeof where, "%s.%s", st->where, key);
  return d9_spec_int(b->s, b->config, v, where, out, b->diag);
}

/* The FP8 block size: the step's "block" ([b0, b1] or b), else config.json's
 * quantization_config.weight_block_size, else 128 x 128. */
static int step_block(const d9_step_ctx *b, const d9_step *st, int64_t blk[2]) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(st->j, "block");
  char where[256];
  snprintf(where, sizeof where, "%s.block", st->where);
  if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 2) {
    for (int i = 0; i < 2; i++)
      if (d9_spec_int(b->s, b->config, cJSON_GetArrayItem(v, i), where, &blk[i], b->diag))
        return -EINVAL;
  } else if (v) {
    if (d9_spec_int(b->s, b->config, v, where, &blk[0], b->diag)) return -EINVAL;
    blk[1] = blk[0];
  } else {
    blk[0] = blk[1] = 128;
    int64_t x;
    const char *k0 = "quantization_config.weight_block_size.0";
    const char *k1 = "quantization_config.weight_block_size.1";
    if (!d9_spec_lookup(b->s, b->config, k0, strlen(k0), &x, NULL)) blk[0] = x;
    if (!d9_spec_lookup(b->s, b->config, k1, strlen(k1), &x, NULL)) blk[1] = x;
  }
  if (blk[0] < 1 || blk[1] < 1 || blk[0] > (1 << 20) || blk[1] > (1 << 20))
    return d9_diag_fail(b->diag, EINVAL, "%s: %s: block sizes must be 1..2^20", b->s->path, where);
  return 0;
}

static int step_float(const d9_step_ctx *b, const d9_step *st, const char *key, double def, float *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(st->j, key);
  if (!v) return *out = (float)def, 0;
  if (!cJSON_IsNumber(v) || v->valuedouble != v->valuedouble)
    return d9_diag_fail(b->diag, EINVAL, "%s: %s.%s: want a number", b->s->path, st->where, key);
  *out = (float)v->valuedouble;
  return 0;
}

static int norm_dim(int64_t dim, int ndim, int extra, int *out) {
  if (dim < 0) dim += ndim + extra;
  if (dim < 0 || dim >= ndim + extra) return -1;
  *out = (int)dim;
  return 0;
}

/* View x [n, ...] as [n/group, group, ...] (interleave helpers). */
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

/* Arguments that only --reverse uses ("sizes" of a concat, "from_rows",
 * "from_shape") must describe the forward input truly, or the reverse would
 * cut wrong shapes silently. key names a list (sizes along dim of each
 * input, or x's shape when dim < 0) or, for "from_rows", x's dim 0. */
static int check_reverse_arg(const d9_step_ctx *b, const d9_step *st, const char *key, d9_node **x,
                             int nx, int dim, const char *where) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(st->j, key), *e;
  if (!v) return 0;
  int64_t want[D9_MAX_DIMS > 64 ? D9_MAX_DIMS : 64], got;
  int n = 0;
  if (!strcmp(key, "from_rows")) {
    want[n++] = x[0]->ndim ? x[0]->shape[0] : 0;
  } else if (dim >= 0) {
    for (int i = 0; i < nx && n < 64; i++) want[n++] = x[i]->shape[dim];
  } else {
    for (int i = 0; i < x[0]->ndim; i++) want[n++] = x[0]->shape[i];
  }
  int count = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 1;
  if (count != n)
    return d9_diag_fail(b->diag, EINVAL, "%s: \"%s\" lists %d values, the input has %d", where,
                        key, count, n);
  int i = 0;
  if (!cJSON_IsArray(v)) {
    if (d9_spec_int(b->s, b->config, v, st->where, &got, b->diag)) return -EINVAL;
    if (got != want[0]) goto bad;
    return 0;
  }
  cJSON_ArrayForEach(e, v) {
    if (d9_spec_int(b->s, b->config, e, st->where, &got, b->diag)) return -EINVAL;
    if (got != want[i] && !(got == -1 && dim < 0)) goto bad;
    i++;
  }
  return 0;
bad:
  return d9_diag_fail(b->diag, EINVAL, "%s: \"%s\" value %d is %lld but the input has %lld "
                      "(--reverse relies on it)", where, key, i, (long long)got, (long long)want[i]);
}

/* Run one step: inputs x[0..nx) -> outputs y[0..*ny). */
int d9_step_run(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx, d9_node **y, int *ny,
                    const char *where) {
  d9_arena *a = b->arena;
  d9_diag *diag = b->diag;
  int64_t dim = 0;
  switch (st->kind) {
    case D9_STEP_CAST: {
      const cJSON *to = cJSON_GetObjectItemCaseSensitive(st->j, "to");
      d9_dtype t = cJSON_IsString(to) ? d9_dtype_parse(to->valuestring, strlen(to->valuestring))
                                      : D9_DTYPE_INVALID;
      if (t == D9_DTYPE_INVALID || !d9_dtype_is_castable(t))
        return d9_diag_fail(diag, EINVAL, "%s: %s: \"to\" must be F32, F16, BF16, F8_E4M3 or F8_E5M2",
                            b->s->path, st->where);
      if (nx != 1) goto want_one;
      const cJSON *from = cJSON_GetObjectItemCaseSensitive(st->j, "from");
      if (from && (!cJSON_IsString(from) ||
                   strcmp(from->valuestring, d9_dtype_name(x[0]->dtype))))
        return d9_diag_fail(diag, EINVAL, "%s: cast says \"from\": %s but the input is %s",
                            where, cJSON_IsString(from) ? from->valuestring : "?",
                            d9_dtype_name(x[0]->dtype));
      *ny = 1;
      return (y[0] = d9_node_cast(a, x[0], t, where, diag)) ? 0 : -EINVAL;
    }
    case D9_STEP_CONCAT:
    case D9_STEP_STACK:
      if (step_int(b, st, "dim", 1, 0, &dim)) return -EINVAL;
      if (dim < -D9_MAX_DIMS || dim > D9_MAX_DIMS) goto bad_dim;
      if (st->kind == D9_STEP_CONCAT && nx > 0) {
        int d;
        if (norm_dim(dim, x[0]->ndim, 0, &d)) goto bad_dim;
        if (check_reverse_arg(b, st, "sizes", x, nx, d, where)) return -EINVAL;
      }
      *ny = 1;
      y[0] = st->kind == D9_STEP_CONCAT ? d9_node_concat(a, x, nx, (int)dim, where, diag)
                                        : d9_node_stack(a, x, nx, (int)dim, where, diag);
      return y[0] ? 0 : -EINVAL;
    case D9_STEP_CHUNK:
    case D9_STEP_SPLIT: {
      if (nx != 1) goto want_one;
      if (step_int(b, st, "dim", 1, 0, &dim)) return -EINVAL;
      if (dim < 0) dim += x[0]->ndim;
      if (dim < 0 || dim >= x[0]->ndim) goto bad_dim;
      int64_t total = x[0]->shape[dim], sizes[32];
      int n = 0;
      if (st->kind == D9_STEP_CHUNK) {
        int64_t chunks;
        if (step_int(b, st, "chunks", 0, 0, &chunks)) return -EINVAL;
        if (chunks < 1 || chunks > 32)
          return d9_diag_fail(diag, EINVAL, "%s: %s: chunks must be 1..32", b->s->path, st->where);
        if (total % chunks)
          return d9_diag_fail(diag, EINVAL, "%s: dim %lld of size %lld is not divisible into %lld chunks",
                              where, (long long)dim, (long long)total, (long long)chunks);
        for (n = 0; n < chunks; n++) sizes[n] = total / chunks;
      } else {
        const cJSON *sz = cJSON_GetObjectItemCaseSensitive(st->j, "sizes"), *e;
        if (!cJSON_IsArray(sz) || cJSON_GetArraySize(sz) < 1 || cJSON_GetArraySize(sz) > 32)
          return d9_diag_fail(diag, EINVAL, "%s: %s: \"sizes\" must be a list of 1..32 sizes",
                              b->s->path, st->where);
        int64_t sum = 0;
        cJSON_ArrayForEach(e, sz) {
          char w[256];
          snprintf(w, sizeof w, "%s.sizes[%d]", st->where, n);
          if (d9_spec_int(b->s, b->config, e, w, &sizes[n], diag)) return -EINVAL;
          if (sizes[n] < 0 || __builtin_add_overflow(sum, sizes[n], &sum))
            return d9_diag_fail(diag, EINVAL, "%s: %s: bad size", b->s->path, w);
          n++;
        }
        if (sum != total)
          return d9_diag_fail(diag, EINVAL, "%s: split sizes add up to %lld, dim %lld is %lld",
                              where, (long long)sum, (long long)dim, (long long)total);
      }
      int64_t off = 0;
      for (int i = 0; i < n; i++) {
        if (!(y[i] = d9_node_slice(a, x[0], (int)dim, off, sizes[i], where, diag))) return -EINVAL;
        off += sizes[i];
      }
      *ny = n;
      return 0;
    }
    case D9_STEP_QKV:
    case D9_STEP_QKV_SPLIT: {
      int64_t nh, ng, d;
      if (step_int(b, st, "heads", 0, 0, &nh) || step_int(b, st, "groups", 0, 0, &ng) ||
          step_int(b, st, "head_dim", 0, 0, &d))
        return -EINVAL;
      if (st->kind == D9_STEP_QKV) {
        if (nx != 3)
          return d9_diag_fail(diag, EINVAL, "%s: qkv takes three inputs (q, k, v), got %d",
                              where, nx);
        *ny = 1;
        return (y[0] = d9_node_qkv(a, x[0], x[1], x[2], nh, ng, d, where, diag)) ? 0 : -EINVAL;
      }
      if (nx != 1) goto want_one;
      *ny = 3;
      return d9_node_qkv_split(a, x[0], nh, ng, d, y, where, diag);
    }
    case D9_STEP_RESHAPE: {
      if (nx != 1) goto want_one;
      const cJSON *sh = cJSON_GetObjectItemCaseSensitive(st->j, "shape"), *e;
      if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > D9_MAX_DIMS)
        return d9_diag_fail(diag, EINVAL, "%s: %s: \"shape\" must be a list of at most %d sizes",
                            b->s->path, st->where, D9_MAX_DIMS);
      if (check_reverse_arg(b, st, "from_shape", x, 1, -1, where)) return -EINVAL;
      int64_t shape[D9_MAX_DIMS];
      int n = 0;
      cJSON_ArrayForEach(e, sh) {
        char w[256];
        snprintf(w, sizeof w, "%s.shape[%d]", st->where, n);
        if (d9_spec_int(b->s, b->config, e, w, &shape[n++], diag)) return -EINVAL;
      }
      *ny = 1;
      return (y[0] = d9_node_reshape(a, x[0], shape, n, where, diag)) ? 0 : -EINVAL;
    }
    case D9_STEP_SQUEEZE:
    case D9_STEP_UNSQUEEZE: {
      if (nx != 1) goto want_one;
      int d, sq = st->kind == D9_STEP_SQUEEZE;
      if (step_int(b, st, "dim", 0, 0, &dim)) return -EINVAL;
      if (norm_dim(dim, x[0]->ndim, sq ? 0 : 1, &d)) goto bad_dim;
      if (sq && x[0]->shape[d] != 1)
        return d9_diag_fail(diag, EINVAL, "%s: squeeze dim %d has size %lld, not 1", where, d,
                            (long long)x[0]->shape[d]);
      int64_t sh[D9_MAX_DIMS];
      int n = 0;
      if (!sq && x[0]->ndim + 1 > D9_MAX_DIMS) goto bad_dim;
      for (int i = 0; i < x[0]->ndim + (sq ? 0 : 1); i++) {
        if (sq && i == d) continue;
        if (!sq && i == d) sh[n++] = 1;
        if (i < x[0]->ndim) sh[n++] = x[0]->shape[i];
      }
      if (!sq && d == x[0]->ndim) n = x[0]->ndim + 1, sh[d] = 1;
      *ny = 1;
      return (y[0] = d9_node_reshape(a, x[0], sh, n, where, diag)) ? 0 : -EINVAL;
    }
    case D9_STEP_TRANSPOSE:
    case D9_STEP_PERMUTE: {
      if (nx != 1) goto want_one;
      int perm[D9_MAX_DIMS], n = x[0]->ndim;
      for (int i = 0; i < n; i++) perm[i] = i;
      if (st->kind == D9_STEP_TRANSPOSE) {
        int64_t d0, d1;
        int a0, a1;
        if (step_int(b, st, "dim0", 1, 0, &d0) || step_int(b, st, "dim1", 1, 1, &d1))
          return -EINVAL;
        if (norm_dim(d0, n, 0, &a0) || norm_dim(d1, n, 0, &a1)) goto bad_dim;
        perm[a0] = a1, perm[a1] = a0;
      } else {
        const cJSON *ds = cJSON_GetObjectItemCaseSensitive(st->j, "dims"), *e;
        if (!cJSON_IsArray(ds) || cJSON_GetArraySize(ds) != n)
          return d9_diag_fail(diag, EINVAL, "%s: \"dims\" must list %d dims", where, n);
        int k = 0;
        cJSON_ArrayForEach(e, ds) {
          int64_t v;
          if (d9_json_int(e, -n, n - 1, &v) || norm_dim(v, n, 0, &perm[k]))
            return d9_diag_fail(diag, EINVAL, "%s: dims[%d] out of range", where, k);
          k++;
        }
      }
      *ny = 1;
      return (y[0] = d9_node_permute(a, x[0], perm, n, where, diag)) ? 0 : -EINVAL;
    }
    case D9_STEP_SLICE: {
      if (nx != 1) goto want_one;
      int d;
      int64_t s0, e0;
      if (step_int(b, st, "dim", 1, 0, &dim) || norm_dim(dim, x[0]->ndim, 0, &d)) goto bad_dim;
      if (step_int(b, st, "start", 1, 0, &s0) ||
          step_int(b, st, "end", 1, x[0]->shape[d], &e0))
        return -EINVAL;
      if (s0 < 0) s0 += x[0]->shape[d];
      if (e0 < 0) e0 += x[0]->shape[d];
      *ny = 1;
      return (y[0] = d9_node_slice(a, x[0], d, s0, e0 - s0, where, diag)) ? 0 : -EINVAL;
    }
    case D9_STEP_UNSTACK: {
      if (nx != 1) goto want_one;
      int d;
      if (step_int(b, st, "dim", 1, 0, &dim) || norm_dim(dim, x[0]->ndim, 0, &d)) goto bad_dim;
      int64_t n = x[0]->shape[d];
      if (n < 1 || n > 64)
        return d9_diag_fail(diag, EINVAL, "%s: unstack of %lld slices (1..64)", where, (long long)n);
      int64_t sh[D9_MAX_DIMS];
      int k = 0;
      for (int i = 0; i < x[0]->ndim; i++)
        if (i != d) sh[k++] = x[0]->shape[i];
      for (int64_t i = 0; i < n; i++) {
        d9_node *s = d9_node_slice(a, x[0], d, i, 1, where, diag);
        if (!s || !(y[i] = d9_node_reshape(a, s, sh, k, where, diag))) return -EINVAL;
      }
      *ny = (int)n;
      return 0;
    }
    case D9_STEP_INTERLEAVE: {
      int64_t group;
      if (step_int(b, st, "group", 1, 1, &group)) return -EINVAL;
      d9_node *v[64];
      for (int i = 0; i < nx; i++)
        if (!(v[i] = view_rows(a, x[i], group, where, diag))) return -EINVAL;
      d9_node *c = d9_node_concat(a, v, nx, 1, where, diag);
      if (!c) return -EINVAL;
      int64_t sh[D9_MAX_DIMS];
      sh[0] = c->shape[0] * c->shape[1];
      for (int i = 2; i < c->ndim; i++) sh[i - 1] = c->shape[i];
      *ny = 1;
      return (y[0] = d9_node_reshape(a, c, sh, c->ndim - 1, where, diag)) ? 0 : -EINVAL;
    }
    case D9_STEP_DEINTERLEAVE: {
      if (nx != 1) goto want_one;
      int64_t parts, group;
      if (step_int(b, st, "parts", 0, 0, &parts) || step_int(b, st, "group", 1, 1, &group))
        return -EINVAL;
      if (parts < 1 || parts > 32 || group < 1 || group > INT64_MAX / parts)
        return d9_diag_fail(diag, EINVAL, "%s: parts must be 1..32", where);
      d9_node *v = view_rows(a, x[0], group * parts, where, diag);
      if (!v) return -EINVAL;
      for (int64_t i = 0; i < parts; i++) {
        d9_node *s = d9_node_slice(a, v, 1, i * group, group, where, diag);
        int64_t sh[D9_MAX_DIMS];
        if (!s) return -EINVAL;
        sh[0] = s->shape[0] * group;
        for (int k = 2; k < s->ndim; k++) sh[k - 1] = s->shape[k];
        if (!(y[i] = d9_node_reshape(a, s, sh, s->ndim - 1, where, diag))) return -EINVAL;
      }
      *ny = (int)parts;
      return 0;
    }
    case D9_STEP_DEQUANT: {
      int64_t blk[2];
      if (nx != 2)
        return d9_diag_fail(diag, EINVAL, "%s: dequant takes two inputs (weight, scale), got %d",
                            where, nx);
      if (step_block(b, st, blk)) return -EINVAL;
      *ny = 1;
      return (y[0] = d9_node_dequant(a, x[0], x[1], blk[0], blk[1], where, diag)) ? 0 : -EINVAL;
    }
    case D9_STEP_QUANT: {
      int64_t blk[2];
      if (nx != 1) goto want_one;
      if (step_block(b, st, blk)) return -EINVAL;
      *ny = 2;
      return d9_node_quant(a, x[0], blk[0], blk[1], y, where, diag);
    }
    case D9_STEP_AFFINE: {
      float mul, add;
      if (nx != 1) goto want_one;
      if (step_float(b, st, "mul", 1.0, &mul) || step_float(b, st, "add", 0.0, &add))
        return -EINVAL;
      *ny = 1;
      return (y[0] = d9_node_affine(a, x[0], mul, add, where, diag)) ? 0 : -EINVAL;
    }
    case D9_STEP_PAD:
    case D9_STEP_TRUNCATE: {
      if (nx != 1) goto want_one;
      int64_t rows = 0, mult = 0, have = x[0]->ndim ? x[0]->shape[0] : 0;
      if (check_reverse_arg(b, st, "from_rows", x, 1, 0, where)) return -EINVAL;
      if (cJSON_GetObjectItemCaseSensitive(st->j, "rows")) {
        if (step_int(b, st, "rows", 0, 0, &rows)) return -EINVAL;
      } else if (st->kind == D9_STEP_PAD) {
        if (step_int(b, st, "multiple", 0, 0, &mult)) return -EINVAL;
        if (mult < 1) return d9_diag_fail(diag, EINVAL, "%s: multiple must be >= 1", where);
        rows = (have + mult - 1) / mult * mult;
      } else {
        return d9_diag_fail(diag, EINVAL, "%s: truncate needs \"rows\"", where);
      }
      *ny = 1;
      if (st->kind == D9_STEP_PAD) {
        if (rows < have)
          return d9_diag_fail(diag, EINVAL, "%s: pad to %lld rows, fewer than the %lld there are",
                              where, (long long)rows, (long long)have);
        return (y[0] = d9_node_pad(a, x[0], rows, where, diag)) ? 0 : -EINVAL;
      }
      return (y[0] = d9_node_slice(a, x[0], 0, 0, rows, where, diag)) ? 0 : -EINVAL;
    }
    case D9_STEP_ROPE: {
      if (nx != 1) goto want_one;
      int64_t nh;
      const cJSON *to = cJSON_GetObjectItemCaseSensitive(st->j, "to");
      int half = cJSON_IsString(to) && !strcmp(to->valuestring, "half");
      if (!cJSON_IsString(to) || (!half && strcmp(to->valuestring, "interleaved")))
        return d9_diag_fail(diag, EINVAL, "%s: \"to\" must be \"half\" or \"interleaved\"", where);
      if (step_int(b, st, "heads", 0, 0, &nh)) return -EINVAL;
      d9_node *w = x[0];
      if (w->ndim < 1 || w->ndim > 2 || nh < 1 || w->shape[0] % (2 * nh))
        return d9_diag_fail(diag, EINVAL, "%s: rope: %lld rows are not %lld heads of an even head_dim",
                            where, w->ndim ? (long long)w->shape[0] : 0LL, (long long)nh);
      int64_t hd = w->shape[0] / nh, cols = w->ndim == 2 ? w->shape[1] : 1;
      /* interleaved (x0,y0,x1,y1..) -> half ([x..][y..]): view [nh, d/2, 2, C],
       * swap dims 1 and 2; the way back views [nh, 2, d/2, C]. */
      int64_t sh[4] = {nh, half ? hd / 2 : 2, half ? 2 : hd / 2, cols};
      int perm[4] = {0, 2, 1, 3};
      d9_node *v = d9_node_reshape(a, w, sh, 4, where, diag);
      d9_node *p = v ? d9_node_permute(a, v, perm, 4, where, diag) : NULL;
      *ny = 1;
      return p && (y[0] = d9_node_reshape(a, p, w->shape, w->ndim, where, diag)) ? 0 : -EINVAL;
    }
    case D9_STEP_COUNT: break;
  }
  return d9_diag_fail(diag, EINVAL, "%s: %s: unsupported op", b->s->path, st->where);
want_one:
  return d9_diag_fail(diag, EINVAL, "%s: op '%s' takes one input, got %d", where, st->op, nx);
bad_dim:
  return d9_diag_fail(diag, EINVAL, "%s: dim %lld out of range", where, (long long)dim);
}

