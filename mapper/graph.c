#include "graph.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pattern.h"

typedef struct builder {
  const d9_spec *s;
  const d9_catalog *c;
  d9_graph *g;
  int cap;
  uint8_t *used; /* per catalog tensor: consumed by a rule */
  d9_diag *diag;
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
      *ny = 1;
      return (y[0] = d9_node_cast(a, x[0], t, where, diag)) ? 0 : -EINVAL;
    }
    case D9_STEP_CONCAT:
    case D9_STEP_STACK:
      if (step_int(b, st, "dim", 1, 0, &dim)) return -EINVAL;
      if (dim < -D9_MAX_DIMS || dim > D9_MAX_DIMS) goto bad_dim;
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
  }
  return d9_diag_fail(diag, EINVAL, "%s: %s: unsupported op", b->s->path, st->where);
want_one:
  return d9_diag_fail(diag, EINVAL, "%s: op '%s' takes one input, got %d", where, st->op, nx);
bad_dim:
  return d9_diag_fail(diag, EINVAL, "%s: dim %lld out of range", where, (long long)dim);
}

/* One instance of rule r for the captures in caps. inputs[0] is given. */
static int instantiate(builder *b, const d9_rule *r, d9_caps *caps, const d9_src_tensor *drv,
                       int group) {
  char name[D9_NAME_MAX], where[D9_NAME_MAX + 256];
  env e = {0};
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
      if (!(t = d9_catalog_find(b->c, name)))
        return d9_diag_fail(b->diag, ENOENT, "%s: missing input '%s' (%s)", where, name,
                            r->in_names[i]);
    }
    b->used[t - b->c->tensors] = 1;
    d9_node *x = d9_node_source(b->g->arena, t);
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
    int first = -1;
    for (int i = 0; i < ny; i++) {
      int k = env_put(&e, st->nout ? st->out[i] : NULL, y[i]);
      if (k < 0) return d9_diag_fail(b->diag, ENOMEM, "%s: too many values", swhere);
      if (i == 0) first = k;
    }
    /* env_put may reuse slots for named outputs; keep the last outputs contiguous */
    if (st->nout) {
      for (int i = 0; i < ny; i++) env_put(&e, NULL, y[i]);
      first = e.n - ny;
    }
    e.last0 = first, e.nlast = ny;
  }
  for (int o = 0; o < r->nout; o++) {
    d9_node *x;
    if (r->out_names[o]) {
      if (!(x = env_get(&e, r->out_names[o])))
        return d9_diag_fail(b->diag, EINVAL, "%s: output names unknown value '%s'", where,
                            r->out_names[o]);
    } else {
      if (e.nlast != 1)
        return d9_diag_fail(b->diag, EINVAL, "%s: the last step makes %d values; name them in "
                            "an \"output\" object", where, e.nlast);
      x = e.node[e.last0];
    }
    char miss[D9_CAP_NAME_MAX];
    int rc = d9_pattern_fill(r->out_pats[o], caps, name, sizeof name, miss);
    if (rc == -ENOENT)
      return d9_diag_fail(b->diag, EINVAL, "%s: output pattern '%s' uses a capture the inputs "
                          "do not have", where, r->out_pats[o]);
    if (rc < 0) return d9_diag_fail(b->diag, EINVAL, "%s: output name too long", where);
    if (!strcmp(name, "__metadata__"))
      return d9_diag_fail(b->diag, EINVAL, "%s: target name '__metadata__' is reserved", where);
    if ((rc = add_target(b, name, x, r, group))) return rc;
  }
  return 0;
}

static int tied_flag(builder *b, const d9_rule *r, int64_t *flag) {
  int rc = d9_spec_lookup(b->s, b->c->config, r->tied_if, strlen(r->tied_if), flag, b->diag);
  if (rc == -ENOENT) return *flag = 0, 0;
  return rc;
}

static int ignored(const d9_spec *s, const char *name) {
  for (int i = 0; i < s->nignore; i++) {
    d9_caps caps = {0};
    if (d9_pattern_match(s->ignore[i], name, &caps)) return 1;
  }
  return 0;
}

/* Instances of r: one per source tensor (not ignored) matching its first input. */
static int expand_rule(builder *b, const d9_rule *r) {
  int matched = 0;
  for (int i = 0; i < b->c->ntensors; i++) {
    d9_caps caps = {0};
    const d9_src_tensor *t = &b->c->tensors[i];
    if (!d9_pattern_match(r->in_pats[0], t->name, &caps) || ignored(b->s, t->name)) continue;
    matched++;
    int rc = instantiate(b, r, &caps, t, b->g->ngroups++);
    if (rc) return rc;
  }
  if (matched) return 0;
  if (r->tied_from) {
    int64_t flag;
    int rc = tied_flag(b, r, &flag);
    if (rc) return rc;
    if (!flag)
      return d9_diag_fail(b->diag, ENOENT, "%s: %s: missing input '%s' and '%s' is not set, "
                          "so it cannot be tied to '%s'", b->s->path, r->where, r->in_pats[0],
                          r->tied_if, r->tied_from);
    const d9_src_tensor *t = d9_catalog_find(b->c, r->tied_from);
    if (!t)
      return d9_diag_fail(b->diag, ENOENT, "%s: %s: missing input '%s' and its tied source '%s'",
                          b->s->path, r->where, r->in_pats[0], r->tied_from);
    d9_caps caps = {0};
    return instantiate(b, r, &caps, t, b->g->ngroups++);
  }
  if (r->required)
    return d9_diag_fail(b->diag, ENOENT, "%s: %s: no source tensor matches '%s'", b->s->path,
                        r->where, r->in_pats[0]);
  return 0;
}

static int cmp_target(const void *x, const void *y) {
  return d9_natural_cmp(((const d9_target *)x)->name, ((const d9_target *)y)->name);
}

int d9_graph_build(const d9_spec *s, const d9_catalog *c, d9_graph **out, d9_diag *diag) {
  builder b = {s, c, NULL, 0, NULL, diag};
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
    if (b.used[i] || ignored(s, t->name)) continue;
    if (s->passthrough) {
      d9_node *x = d9_node_source(b.g->arena, t);
      if (!x || (rc = add_target(&b, t->name, x, NULL, b.g->ngroups++))) goto fail;
    } else if (s->strict) {
      rc = d9_diag_fail(diag, EINVAL, "%s: source tensor '%s' (%s) is used by no rule and not "
                        "ignored (strict mode)", s->path, t->name, c->shards[t->shard].name);
      goto fail;
    }
  }
  qsort(b.g->targets, (size_t)b.g->ntargets, sizeof *b.g->targets, cmp_target);
  for (int i = 0; i + 1 < b.g->ntargets; i++) {
    const d9_target *x = &b.g->targets[i], *y = &b.g->targets[i + 1];
    if (!strcmp(x->name, y->name)) {
      rc = d9_diag_fail(diag, EINVAL, "%s: duplicate target '%s' made by %s and by %s",
                        s->path, x->name, x->rule ? x->rule->where : "pass-through",
                        y->rule ? y->rule->where : "pass-through");
      goto fail;
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
