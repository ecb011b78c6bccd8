#include "graph.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_strict.h"
#include "pattern.h"

typedef struct builder {
  const d9_spec *s;
  const d9_catalog *c;
  d9_graph *g;
  int cap;
  uint8_t *used; /* per catalog tensor: consumed by a rule */
  d9_diag *diag;
  int npending;  /* inputs of the instance being built, marked used on success */
  int pending[64];
} builder;

/* Named values inside one rule instance. */
typedef struct env {
  int n;
  const char *name[64];
  d9_node *node[64];
  int last0, nlast; /* the previous step's outputs: [last0, last0+nlast) */
} env;

static int env_put(env *e, const char *name, d9_node *x) {
  for (int i = 0; i < e->n; i++)
    if (name && e->name[i] && !strcmp(e->name[i], name)) {
      e->node[i] = x;
      return i;
    }
  if (e->n >= 64) return -1;
  e->name[e->n] = name;
  e->node[e->n] = x;
  return e->n++;
}

static d9_node *env_get(const env *e, const char *name) {
  for (int i = e->n - 1; i >= 0; i--)
    if (e->name[i] && !strcmp(e->name[i], name)) return e->node[i];
  return NULL;
}

static int natural_cmp(const char *a, const char *b) {
  while (*a && *b) {
    if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
      while (*a == '0' && isdigit((unsigned char)a[1])) a++;
      while (*b == '0' && isdigit((unsigned char)b[1])) b++;
      size_t la = 0, lb = 0;
      while (isdigit((unsigned char)a[la])) la++;
      while (isdigit((unsigned char)b[lb])) lb++;
      if (la != lb) return la < lb ? -1 : 1;
      int r = strncmp(a, b, la);
      if (r) return r;
      a += la, b += lb;
      continue;
    }
    if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
    a++, b++;
  }
  return *a ? 1 : *b ? -1 : 0;
}

int d9_natural_cmp(const char *a, const char *b) {
  int r = natural_cmp(a, b);
  return r ? r : strcmp(a, b); /* "x.01" and "x.1" differ */
}

static int add_target(builder *b, const char *name, d9_node *x, const d9_rule *r, int group) {
  if (b->g->ntargets == b->cap) {
    int ncap = b->cap ? b->cap * 2 : 256;
    d9_target *t = realloc(b->g->targets, (size_t)ncap * sizeof *t);
    if (!t) return d9_diag_fail(b->diag, ENOMEM, "out of memory");
    b->g->targets = t, b->cap = ncap;
  }
  char *nm = d9_arena_strdup(b->g->arena, name);
  if (!nm) return d9_diag_fail(b->diag, ENOMEM, "out of memory");
  b->g->targets[b->g->ntargets++] = (d9_target){nm, x, r, group};
  return 0;
}

static int step_int(builder *b, const d9_step *st, const char *key, int have_default,
                    int64_t def, int64_t *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(st->j, key);
  if (!v) {
    if (have_default) return *out = def, 0;
    return d9_diag_fail(b->diag, EINVAL, "%s: %s: missing \"%s\"", b->s->path, st->where, key);
  }
  char where[256];
  snprintf(where, sizeof where, "%s.%s", st->where, key);
  return d9_spec_int(b->s, b->c->config, v, where, out, b->diag);
}

/* The FP8 block size: the step's "block" ([b0, b1] or b), else config.json's
 * quantization_config.weight_block_size, else 128 x 128. */
static int step_block(builder *b, const d9_step *st, int64_t blk[2]) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(st->j, "block");
  char where[256];
  snprintf(where, sizeof where, "%s.block", st->where);
  if (cJSON_IsArray(v) && cJSON_GetArraySize(v) == 2) {
    for (int i = 0; i < 2; i++)
      if (d9_spec_int(b->s, b->c->config, cJSON_GetArrayItem(v, i), where, &blk[i], b->diag))
        return -EINVAL;
  } else if (v) {
    if (d9_spec_int(b->s, b->c->config, v, where, &blk[0], b->diag)) return -EINVAL;
    blk[1] = blk[0];
  } else {
    blk[0] = blk[1] = 128;
    int64_t x;
    const char *k0 = "quantization_config.weight_block_size.0";
    const char *k1 = "quantization_config.weight_block_size.1";
    if (!d9_spec_lookup(b->s, b->c->config, k0, strlen(k0), &x, NULL)) blk[0] = x;
    if (!d9_spec_lookup(b->s, b->c->config, k1, strlen(k1), &x, NULL)) blk[1] = x;
  }
  if (blk[0] < 1 || blk[1] < 1 || blk[0] > (1 << 20) || blk[1] > (1 << 20))
    return d9_diag_fail(b->diag, EINVAL, "%s: %s: block sizes must be 1..2^20", b->s->path, where);
  return 0;
}

static int step_float(builder *b, const d9_step *st, const char *key, double def, float *out) {
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
static int check_reverse_arg(builder *b, const d9_step *st, const char *key, d9_node **x,
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
    if (d9_spec_int(b->s, b->c->config, v, st->where, &got, b->diag)) return -EINVAL;
    if (got != want[0]) goto bad;
    return 0;
  }
  cJSON_ArrayForEach(e, v) {
    if (d9_spec_int(b->s, b->c->config, e, st->where, &got, b->diag)) return -EINVAL;
    if (got != want[i] && !(got == -1 && dim < 0)) goto bad;
    i++;
  }
  return 0;
bad:
  return d9_diag_fail(b->diag, EINVAL, "%s: \"%s\" value %d is %lld but the input has %lld "
                      "(--reverse relies on it)", where, key, i, (long long)got, (long long)want[i]);
}

/* Run one step: inputs x[0..nx) -> outputs y[0..*ny). */
static int run_step(builder *b, const d9_step *st, d9_node **x, int nx, d9_node **y, int *ny,
                    const char *where) {
  d9_arena *a = b->g->arena;
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
          if (d9_spec_int(b->s, b->c->config, e, w, &sizes[n], diag)) return -EINVAL;
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
        if (d9_spec_int(b->s, b->c->config, e, w, &shape[n++], diag)) return -EINVAL;
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

static int ignored(const d9_spec *s, const char *name) {
  for (int i = 0; i < s->nignore; i++) {
    d9_caps caps = {0};
    if (d9_pattern_match(s->ignore[i], name, &caps)) return 1;
  }
  return 0;
}

/* In lenient mode a failed instance is recorded in the report and skipped;
 * in strict mode it fails the build. */
static int soft(builder *b, int rc) {
  if (!rc || !b->s->lenient || rc == -ENOMEM) return rc;
  if (b->g->nreport < D9_REPORT_MAX) {
    char *m = d9_arena_strdup(b->g->arena, b->diag && b->diag->set ? b->diag->msg : "error");
    if (m) b->g->report[b->g->nreport++] = m;
  }
  d9_diag_clear(b->diag);
  return 0;
}

/* Run rule r's chain for one instance: the driver drv and the captures in
 * caps. When the rule unstacks (unstack_idx >= 0), every input is first cut
 * to its slice unstack_idx along dim 0. outs[o] receives the node of output o. */
static int run_instance(builder *b, const d9_rule *r, d9_caps *caps, const d9_src_tensor *drv,
                        int64_t unstack_idx, d9_node **outs) {
  b->npending = 0;
  char name[D9_NAME_MAX], where[D9_NAME_MAX + 256];
  env e = {0};
  d9_arena *a = b->g->arena;
  snprintf(where, sizeof where, "%s: %s: tensor '%s'", b->s->path, r->where, drv->name);
  for (int i = 0; i < r->ninputs; i++) {
    const d9_src_tensor *t = drv;
    if (i > 0) {
      char miss[D9_CAP_NAME_MAX];
      int rc = d9_pattern_fill(r->in_pats[i], caps, name, sizeof name, miss);
      if (rc == -ENOENT)
        return d9_diag_fail(b->diag, EINVAL, "%s: input '%s' uses a capture the first input "
                            "does not have", where, r->in_names[i]);
      if (rc < 0) return d9_diag_fail(b->diag, EINVAL, "%s: input name too long", where);
      if (!(t = d9_catalog_find(b->c, name)) || ignored(b->s, name))
        return d9_diag_fail(b->diag, ENOENT, "%s: missing input '%s' (%s)%s", where, name,
                            r->in_names[i], t ? ": it is ignored by the spec" : "");
    }
    if (b->npending < 64) b->pending[b->npending++] = (int)(t - b->c->tensors);
    d9_node *x = d9_node_source(a, t);
    if (x && unstack_idx >= 0) {
      int64_t sh[D9_MAX_DIMS];
      for (int k = 1; k < x->ndim; k++) sh[k - 1] = x->shape[k];
      if (x->ndim < 1 || x->shape[0] != drv->shape[0])
        return d9_diag_fail(b->diag, EINVAL, "%s: input '%s' has no leading dim of %lld to "
                            "unstack", where, t->name, (long long)drv->shape[0]);
      x = d9_node_slice(a, x, 0, unstack_idx, 1, where, b->diag);
      if (!x || !(x = d9_node_reshape(a, x, sh, x->ndim - 1, where, b->diag))) return -EINVAL;
    }
    if (!x || env_put(&e, r->in_names[i], x) < 0)
      return d9_diag_fail(b->diag, ENOMEM, "%s: out of memory", where);
  }
  e.last0 = 0, e.nlast = e.n;
  for (int s = 0; s < r->nsteps; s++) {
    const d9_step *st = &r->steps[s];
    char swhere[D9_NAME_MAX + 256];
    snprintf(swhere, sizeof swhere, "%s: %s: tensor '%s'", b->s->path, st->where, drv->name);
    d9_node *x[64], *y[64];
    int nx = 0, ny = 0;
    if (st->nin) {
      for (int i = 0; i < st->nin; i++)
        if (!(x[nx++] = env_get(&e, st->in[i])))
          return d9_diag_fail(b->diag, EINVAL, "%s: unknown value '%s'", swhere, st->in[i]);
    } else {
      for (int i = 0; i < e.nlast; i++) x[nx++] = e.node[e.last0 + i];
    }
    if (run_step(b, st, x, nx, y, &ny, swhere)) return -EINVAL;
    if (st->nout && st->nout != ny)
      return d9_diag_fail(b->diag, EINVAL, "%s: op '%s' makes %d outputs, \"out\" names %d",
                          swhere, st->op, ny, st->nout);
    for (int i = 0; i < ny; i++)
      if (st->nout && env_put(&e, st->out[i], y[i]) < 0)
        return d9_diag_fail(b->diag, ENOMEM, "%s: too many values", swhere);
    /* the step's outputs, contiguous, are the next step's default inputs */
    for (int i = 0; i < ny; i++)
      if (env_put(&e, NULL, y[i]) < 0)
        return d9_diag_fail(b->diag, ENOMEM, "%s: too many values", swhere);
    e.last0 = e.n - ny, e.nlast = ny;
  }
  for (int o = 0; o < r->nout; o++) {
    if (r->out_names[o]) {
      if (!(outs[o] = env_get(&e, r->out_names[o])))
        return d9_diag_fail(b->diag, EINVAL, "%s: output names unknown value '%s'", where,
                            r->out_names[o]);
    } else {
      if (e.nlast != 1)
        return d9_diag_fail(b->diag, EINVAL, "%s: the last step makes %d values; name them in "
                            "an \"output\" object", where, e.nlast);
      outs[o] = e.node[e.last0];
    }
  }
  return 0;
}

/* Name output o of r for caps and add it as a target. */
static int emit(builder *b, const d9_rule *r, int o, d9_caps *caps, d9_node *x, int group,
                const char *drv_name) {
  char name[D9_NAME_MAX], miss[D9_CAP_NAME_MAX];
  int rc = d9_pattern_fill(r->out_pats[o], caps, name, sizeof name, miss);
  if (rc == -ENOENT)
    return d9_diag_fail(b->diag, EINVAL, "%s: %s: tensor '%s': output pattern '%s' uses a "
                        "capture the inputs do not have", b->s->path, r->where, drv_name,
                        r->out_pats[o]);
  if (rc < 0)
    return d9_diag_fail(b->diag, EINVAL, "%s: %s: tensor '%s': output name too long",
                        b->s->path, r->where, drv_name);
  if (!strcmp(name, "__metadata__"))
    return d9_diag_fail(b->diag, EINVAL, "%s: %s: tensor '%s': target name '__metadata__' is "
                        "reserved", b->s->path, r->where, drv_name);
  return add_target(b, name, x, r, group);
}

/* Mark the inputs of the instance just built as consumed. */
static void commit_used(builder *b) {
  for (int i = 0; i < b->npending; i++) b->used[b->pending[i]] = 1;
  b->npending = 0;
}

/* One plain instance (or, with "unstack", one per slice of the driver). */
static int instantiate(builder *b, const d9_rule *r, d9_caps *caps, const d9_src_tensor *drv,
                       int group) {
  d9_node *outs[64];
  if (!r->unstack) {
    if (run_instance(b, r, caps, drv, -1, outs)) return -EINVAL;
    for (int o = 0; o < r->nout; o++)
      if (emit(b, r, o, caps, outs[o], group, drv->name)) return -EINVAL;
    commit_used(b);
    return 0;
  }
  if (drv->ndim < 1 || drv->shape[0] < 1 || drv->shape[0] > 4096)
    return d9_diag_fail(b->diag, EINVAL, "%s: %s: tensor '%s': nothing to unstack on dim 0",
                        b->s->path, r->where, drv->name);
  for (int64_t i = 0; i < drv->shape[0]; i++) {
    d9_caps c2 = *caps;
    char idx[24];
    snprintf(idx, sizeof idx, "%lld", (long long)i);
    if (c2.n >= D9_MAX_CAPS) return d9_diag_fail(b->diag, EINVAL, "%s: too many captures", r->where);
    snprintf(c2.c[c2.n].name, sizeof c2.c[c2.n].name, "%s", r->unstack);
    c2.c[c2.n].val = idx;
    c2.c[c2.n++].len = strlen(idx);
    if (run_instance(b, r, &c2, drv, i, outs)) return -EINVAL;
    for (int o = 0; o < r->nout; o++)
      if (emit(b, r, o, &c2, outs[o], group, drv->name)) return -EINVAL;
    commit_used(b);
  }
  return 0;
}

/* "over": the instances that differ only in capture r->over are run one by
 * one and each output is stacked along a new dim 0, in the capture's
 * numeric order, which must be exactly 0..n-1. */
typedef struct over_inst {
  d9_caps caps;
  const d9_src_tensor *drv;
  long long key;  /* the over capture as an integer */
  char group[D9_NAME_MAX]; /* output 0's name: instances with the same one stack together */
} over_inst;

static int cmp_over(const void *x, const void *y) {
  const over_inst *a = x, *b = y;
  int r = strcmp(a->group, b->group);
  return r ? r : (a->key > b->key) - (a->key < b->key);
}

static int expand_over(builder *b, const d9_rule *r, over_inst *v, int n) {
  for (int i = 0; i < n; i++) {
    size_t len;
    const char *val = d9_caps_get(&v[i].caps, r->over, &len);
    char buf[32], *end;
    if (!val || len == 0 || len >= sizeof buf)
      return soft(b, d9_diag_fail(b->diag, EINVAL, "%s: %s: tensor '%s': no capture '%s' to stack over",
                          b->s->path, r->where, v[i].drv->name, r->over));
    memcpy(buf, val, len);
    buf[len] = 0;
    v[i].key = strtoll(buf, &end, 10);
    if (*end || v[i].key < 0)
      return soft(b, d9_diag_fail(b->diag, EINVAL, "%s: %s: tensor '%s': capture %s='%s' is not an index",
                          b->s->path, r->where, v[i].drv->name, r->over, buf));
    char miss[D9_CAP_NAME_MAX];
    if (d9_pattern_fill(r->out_pats[0], &v[i].caps, v[i].group, sizeof v[i].group, miss) < 0)
      return soft(b, d9_diag_fail(b->diag, EINVAL, "%s: %s: output pattern '%s' cannot be filled",
                          b->s->path, r->where, r->out_pats[0]));
  }
  qsort(v, (size_t)n, sizeof *v, cmp_over);
  for (int g0 = 0, g1; g0 < n; g0 = g1) {
    int rc = 0;
    for (g1 = g0; g1 < n && !strcmp(v[g1].group, v[g0].group); g1++)
      if (!rc && v[g1].key != g1 - g0)
        rc = d9_diag_fail(b->diag, ENOENT, "%s: %s: stacking over %s for '%s': index %d is "
                          "missing (found %lld)", b->s->path, r->where, r->over, v[g0].group,
                          g1 - g0, v[g1].key);
    /* each group stands alone: in lenient mode a failed one is reported and
     * the others are still built */
    if (rc) {
      if ((rc = soft(b, rc))) return rc;
      continue;
    }
    int cnt = g1 - g0, nused = 0;
    d9_node **per = calloc((size_t)cnt * (size_t)r->nout + 1, sizeof *per);
    int *used = calloc((size_t)cnt * 64 + 1, sizeof *used);
    if (!per || !used) {
      free(per);
      free(used);
      return d9_diag_fail(b->diag, ENOMEM, "out of memory");
    }
    for (int i = 0; i < cnt && !rc; i++) {
      d9_node *outs[64];
      rc = run_instance(b, r, &v[g0 + i].caps, v[g0 + i].drv, -1, outs);
      for (int o = 0; o < r->nout && !rc; o++) per[o * cnt + i] = outs[o];
      for (int k = 0; !rc && k < b->npending; k++) used[nused++] = b->pending[k];
    }
    int group = b->g->ngroups++;
    for (int o = 0; o < r->nout && !rc; o++) {
      char where[512];
      snprintf(where, sizeof where, "%s: %s: stack over %s", b->s->path, r->where, r->over);
      d9_node *st = d9_node_stack(b->g->arena, per + o * cnt, cnt, 0, where, b->diag);
      rc = st ? emit(b, r, o, &v[g0].caps, st, group, v[g0].drv->name) : -EINVAL;
    }
    for (int k = 0; !rc && k < nused; k++) b->used[used[k]] = 1;
    free(per);
    free(used);
    if ((rc = soft(b, rc))) return rc;
  }
  return 0;
}

static int tied_flag(builder *b, const d9_rule *r, int64_t *flag) {
  int rc = d9_spec_lookup(b->s, b->c->config, r->tied_if, strlen(r->tied_if), flag, b->diag);
  if (rc == -ENOENT) return *flag = 0, 0;
  return rc;
}


/* The flag says tied and the checkpoint has its own output tensor anyway:
 * refuse when it cannot be the same tensor (shape or dtype differ). Values
 * are not compared: mounting reads no tensor data. */
static int check_tied(builder *b, const d9_rule *r) {
  int64_t flag;
  if (tied_flag(b, r, &flag) || !flag) return 0;
  const d9_src_tensor *own = d9_catalog_find(b->c, r->in_pats[0]);
  const d9_src_tensor *emb = d9_catalog_find(b->c, r->tied_from);
  if (!own || !emb) return 0;
  if (own->dtype == emb->dtype && own->ndim == emb->ndim &&
      !memcmp(own->shape, emb->shape, sizeof(int64_t) * (size_t)own->ndim)) {
    b->g->nshadowed++; /* served as is; --reverse will drop it (the flag says tied) */
    return 0;
  }
  char s1[160], s2[160];
  return d9_diag_fail(b->diag, EINVAL, "%s: %s: '%s' is set but '%s' (%s %s) differs from '%s' "
                      "(%s %s)", b->s->path, r->where, r->tied_if, own->name,
                      d9_dtype_name(own->dtype), d9_shape_str(own->shape, own->ndim, s1, sizeof s1),
                      emb->name, d9_dtype_name(emb->dtype),
                      d9_shape_str(emb->shape, emb->ndim, s2, sizeof s2));
}

static int excluded(const d9_rule *r, const char *name) {
  for (int i = 0; i < r->nexclude; i++) {
    d9_caps caps = {0};
    if (d9_pattern_match(r->exclude[i], name, &caps)) return 1;
  }
  return 0;
}

/* Instances of r: one per source tensor (not ignored, not excluded)
 * matching its first input. */
static int expand_rule(builder *b, const d9_rule *r) {
  int matched = 0, cap = 0, rc = 0;
  if (r->drop_if) {
    int64_t flag = 0;
    if (d9_spec_lookup(b->s, b->c->config, r->drop_if, strlen(r->drop_if), &flag, NULL) == 0 &&
        flag) {
      /* the reverse of a tied alias: the tied target is consumed, not emitted */
      for (int i = 0; i < b->c->ntensors; i++) {
        d9_caps caps = {0};
        if (d9_pattern_match(r->in_pats[0], b->c->tensors[i].name, &caps)) b->used[i] = 1;
      }
      return 0;
    }
  }
  over_inst *ov = NULL;
  for (int i = 0; i < b->c->ntensors && !rc; i++) {
    d9_caps caps = {0};
    const d9_src_tensor *t = &b->c->tensors[i];
    if (!d9_pattern_match(r->in_pats[0], t->name, &caps) || ignored(b->s, t->name) ||
        excluded(r, t->name))
      continue;
    if (r->over) {
      if (matched == cap) {
        cap = cap ? cap * 2 : 64;
        over_inst *n = realloc(ov, sizeof *ov * (size_t)cap);
        if (!n) {
          free(ov);
          return d9_diag_fail(b->diag, ENOMEM, "out of memory");
        }
        ov = n;
      }
      ov[matched].caps = caps;
      ov[matched].drv = t;
    } else {
      rc = soft(b, instantiate(b, r, &caps, t, b->g->ngroups++));
    }
    matched++;
  }
  if (r->over && !rc && matched) rc = expand_over(b, r, ov, matched);
  free(ov);
  if (!rc && matched && r->tied_from) rc = soft(b, check_tied(b, r));
  if (rc || matched) return rc;
  if (r->tied_from) {
    int64_t flag;
    rc = tied_flag(b, r, &flag);
    if (rc) return rc;
    if (!flag)
      return soft(b, d9_diag_fail(b->diag, ENOENT, "%s: %s: missing input '%s' and '%s' is not "
                                  "set, so it cannot be tied to '%s'", b->s->path, r->where,
                                  r->in_pats[0], r->tied_if, r->tied_from));
    const d9_src_tensor *t = d9_catalog_find(b->c, r->tied_from);
    if (!t)
      return d9_diag_fail(b->diag, ENOENT, "%s: %s: missing input '%s' and its tied source '%s'",
                          b->s->path, r->where, r->in_pats[0], r->tied_from);
    d9_caps caps = {0};
    /* an alias reads the tied tensor without consuming it: the tensor itself
     * still needs a rule (or pass-through) of its own */
    uint8_t was = b->used[t - b->c->tensors];
    rc = soft(b, instantiate(b, r, &caps, t, b->g->ngroups++));
    b->used[t - b->c->tensors] = was;
    return rc;
  }
  if (r->required)
    return soft(b, d9_diag_fail(b->diag, ENOENT, "%s: %s: no source tensor matches '%s'",
                                b->s->path, r->where, r->in_pats[0]));
  return 0;
}

static int cmp_target(const void *x, const void *y) {
  return d9_natural_cmp(((const d9_target *)x)->name, ((const d9_target *)y)->name);
}

int d9_graph_build(const d9_spec *s, const d9_catalog *c, d9_graph **out, d9_diag *diag) {
  builder b = {.s = s, .c = c, .diag = diag};
  int rc = -ENOMEM;
  if (!(b.g = calloc(1, sizeof *b.g)) || !(b.g->arena = d9_arena_create()) ||
      !(b.used = calloc((size_t)c->ntensors + 1, 1))) {
    rc = d9_diag_fail(diag, ENOMEM, "out of memory");
    goto fail;
  }
  for (int i = 0; i < s->nrules; i++)
    if ((rc = expand_rule(&b, &s->rules[i]))) goto fail;
  for (int i = 0; i < c->ntensors; i++) {
    const d9_src_tensor *t = &c->tensors[i];
    if (b.used[i]) continue;
    if (ignored(s, t->name)) {
      b.g->nignored++;
      continue;
    }
    if (s->passthrough) {
      d9_node *x = d9_node_source(b.g->arena, t);
      if (!x || (rc = add_target(&b, t->name, x, NULL, b.g->ngroups++))) goto fail;
    } else if (s->strict) {
      rc = soft(&b, d9_diag_fail(diag, EINVAL, "%s: source tensor '%s' (%s) is used by no rule "
                                 "and not ignored (strict mode)", s->path, t->name,
                                 c->shards[t->shard].name));
      if (rc) goto fail;
    }
  }
  if (b.g->ntargets) /* qsort(NULL, 0) is undefined: no rule made a target */
    qsort(b.g->targets, (size_t)b.g->ntargets, sizeof *b.g->targets, cmp_target);
  for (int i = 0; i + 1 < b.g->ntargets; i++) {
    const d9_target *x = &b.g->targets[i], *y = &b.g->targets[i + 1];
    if (!strcmp(x->name, y->name)) {
      rc = d9_diag_fail(diag, EINVAL, "%s: duplicate target '%s' made by %s and by %s",
                        s->path, x->name, x->rule ? x->rule->where : "pass-through",
                        y->rule ? y->rule->where : "pass-through");
      goto fail; /* even lenient: two tensors cannot share a name in one file */
    }
  }
  free(b.used);
  *out = b.g;
  return 0;
fail:
  free(b.used);
  d9_graph_destroy(b.g);
  return rc ? rc : -EINVAL;
}

void d9_graph_destroy(d9_graph *g) {
  if (!g) return;
  free(g->targets);
  d9_arena_destroy(g->arena);
  free(g);
}
