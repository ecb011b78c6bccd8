#include "graph.h"
#include "graph_limits.h"

#include <ctype.h>
#include <limits.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_strict.h"
#include "op_table.h"
#include "pattern.h"
#include "steps.h"

/* Named values inside one rule instance; the arrays grow as needed and
 * are reused by the next instance. */
typedef struct env {
  int n, cap;
  const char **name;
  d9_node **node;
  int last0, nlast; /* the previous step's outputs: [last0, last0+nlast) */
} env;

typedef struct builder {
  const d9_spec *s;
  const d9_catalog *c;
  d9_graph *g;
  int cap;
  uint8_t *used; /* per catalog tensor: consumed by a rule */
  d9_diag *diag;
  int npending;  /* inputs of the instance being built, marked used on success */
  int *pending;  /* [maxin]: catalog indices */
  int maxin;     /* the most inputs of any rule */
  env e;         /* the instance being built */
  d9_node **x;   /* [xcap]: a step's inputs */
  int xcap;
  d9_node **outs;/* [maxout]: the outputs of one instance */
  int maxout;    /* the most outputs of any rule */
  int64_t rule_targets; /* targets the current rule made */
} builder;

/* Put a value; -1 when out of memory. */
static int env_put(env *e, const char *name, d9_node *x) {
  for (int i = 0; i < e->n; i++)
    if (name && e->name[i] && !strcmp(e->name[i], name)) {
      e->node[i] = x;
      return i;
    }
  if (e->n == e->cap) {
    if (e->cap > INT_MAX / 2) return -1;
    int ncap = e->cap ? e->cap * 2 : 64;
    const char **nn = realloc(e->name, (size_t)ncap * sizeof *nn);
    if (!nn) return -1;
    e->name = nn;
    d9_node **nd = realloc(e->node, (size_t)ncap * sizeof *nd);
    if (!nd) return -1;
    e->node = nd, e->cap = ncap;
  }
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
  int rc = d9_graph_check_limits(b->s, b->g, b->cap, b->rule_targets, r, b->diag);
  if (rc) return rc;
  if (b->g->ntargets == b->cap) {
    int ncap = b->cap ? b->cap * 2 : 256;
    d9_target *t = realloc(b->g->targets, (size_t)ncap * sizeof *t);
    if (!t) return d9_diag_fail(b->diag, ENOMEM, "out of memory");
    b->g->targets = t, b->cap = ncap;
  }
  char *nm = d9_arena_strdup(b->g->arena, name);
  if (!nm) return d9_diag_fail(b->diag, ENOMEM, "out of memory");
  b->g->targets[b->g->ntargets++] = (d9_target){nm, x, r, group, 0};
  b->rule_targets++;
  return 0;
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
  if (!rc || !b->s->lenient || rc == -ENOMEM || rc == -E2BIG) return rc;
  if (b->g->nreport < D9_REPORT_MAX) {
    char *m = d9_arena_strdup(b->g->arena, b->diag && b->diag->set ? b->diag->msg : "error");
    if (m) b->g->report[b->g->nreport++] = m;
  }
  d9_diag_clear(b->diag);
  return 0;
}

/* Room for n step inputs in b->x. */
static int x_room(builder *b, int n) {
  if (n <= b->xcap) return 0;
  d9_node **x = realloc(b->x, (size_t)n * sizeof *x);
  if (!x) return -ENOMEM;
  b->x = x, b->xcap = n;
  return 0;
}

/* Is input i of r one of its "optional" ones? */
static int optional(const d9_rule *r, int i) {
  for (int k = 0; k < r->noptional; k++)
    if (!strcmp(r->optional[k], r->in_names[i])) return 1;
  return 0;
}

/* Run rule r's chain for one instance: the driver drv and the captures in
 * caps. When the rule unstacks (unstack_idx >= 0), every input is first cut
 * to its slice unstack_idx along dim 0. outs[o] receives the node of output o.
 * 0, 1 (an optional input is absent: skip the instance), -EINVAL (a
 * finding), or -ENOMEM. */
static int run_instance(builder *b, const d9_rule *r, d9_caps *caps, const d9_src_tensor *drv,
                        int64_t unstack_idx, d9_node **outs) {
  b->npending = 0;
  char name[D9_NAME_MAX], where[D9_NAME_MAX + 256];
  env *e = &b->e;
  d9_arena *a = b->g->arena;
  e->n = 0;
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
      if ((!(t = d9_catalog_find(b->c, name)) || ignored(b->s, name)) && optional(r, i))
        return 1; /* skip the instance: no finding, nothing used */
      if (!t || ignored(b->s, name))
        return d9_diag_fail(b->diag, ENOENT, "%s: missing input '%s' (%s)%s", where, name,
                            r->in_names[i], t ? ": it is ignored by the spec" : "");
    }
    b->pending[b->npending++] = (int)(t - b->c->tensors); /* room for r->ninputs */
    d9_node *x = d9_node_source(a, t);
    if (x && unstack_idx >= 0) {
      int64_t sh[D9_MAX_DIMS];
      for (int k = 1; k < x->ndim; k++) sh[k - 1] = x->shape[k];
      if (x->ndim < 1 || x->shape[0] != drv->shape[0])
        return d9_diag_fail(b->diag, EINVAL, "%s: input '%s' has no leading dim of %lld to "
                            "unstack", where, t->name, (long long)drv->shape[0]);
      x = d9_node_slice(a, x, 0, unstack_idx, 1, where, b->diag);
      if (x) x = d9_node_reshape(a, x, sh, x->ndim - 1, where, b->diag);
      if (!x) return b->diag && b->diag->err == ENOMEM ? -ENOMEM : -EINVAL;
    }
    if (!x || env_put(e, r->in_names[i], x) < 0)
      return d9_diag_fail(b->diag, ENOMEM, "%s: out of memory", where);
  }
  e->last0 = 0, e->nlast = e->n;
  for (int s = 0; s < r->nsteps; s++) {
    const d9_step *st = &r->steps[s];
    char swhere[D9_NAME_MAX + 256];
    snprintf(swhere, sizeof swhere, "%s: %s: tensor '%s'", b->s->path, st->where, drv->name);
    d9_node *y[D9_STEP_MAX_OUTPUTS];
    int nx = 0, ny = 0, rc;
    if (x_room(b, st->nin ? st->nin : e->nlast))
      return d9_diag_fail(b->diag, ENOMEM, "%s: out of memory", swhere);
    if (st->nin) {
      for (int i = 0; i < st->nin; i++)
        if (!(b->x[nx++] = env_get(e, st->in[i])))
          return d9_diag_fail(b->diag, EINVAL, "%s: unknown value '%s'", swhere, st->in[i]);
    } else {
      for (int i = 0; i < e->nlast; i++) b->x[nx++] = e->node[e->last0 + i];
    }
    d9_step_ctx cx = {b->s, b->c->config, b->g->arena, b->diag};
    if ((rc = d9_step_run(&cx, st, b->x, nx, y, &ny, swhere))) return rc;
    if (st->nout && st->nout != ny)
      return d9_diag_fail(b->diag, EINVAL, "%s: op '%s' makes %d outputs, \"out\" names %d",
                          swhere, st->op, ny, st->nout);
    for (int i = 0; i < ny; i++)
      if (st->nout && env_put(e, st->out[i], y[i]) < 0)
        return d9_diag_fail(b->diag, ENOMEM, "%s: out of memory", swhere);
    /* the step's outputs, contiguous, are the next step's default inputs */
    for (int i = 0; i < ny; i++)
      if (env_put(e, NULL, y[i]) < 0)
        return d9_diag_fail(b->diag, ENOMEM, "%s: out of memory", swhere);
    e->last0 = e->n - ny, e->nlast = ny;
  }
  for (int o = 0; o < r->nout; o++) {
    if (r->out_names[o]) {
      if (!(outs[o] = env_get(e, r->out_names[o])))
        return d9_diag_fail(b->diag, EINVAL, "%s: output names unknown value '%s'", where,
                            r->out_names[o]);
    } else {
      if (e->nlast != 1)
        return d9_diag_fail(b->diag, EINVAL, "%s: the last step makes %d values; name them in "
                            "an \"output\" object", where, e->nlast);
      outs[o] = e->node[e->last0];
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

/* An instance skipped for an absent optional input: counted, and its
 * dependency group (the last one taken) given back. Returns 0. */
static int skipped(builder *b, int group) {
  if (group == b->g->ngroups - 1) b->g->ngroups--;
  b->g->nskipped++;
  return 0;
}

/* One plain instance (or, with "unstack", one per slice of the driver). */
static int instantiate(builder *b, const d9_rule *r, d9_caps *caps, const d9_src_tensor *drv,
                       int group) {
  d9_node **outs = b->outs;
  int rc;
  if (!r->unstack) {
    if ((rc = run_instance(b, r, caps, drv, -1, outs)) > 0) return skipped(b, group);
    if (rc) return rc;
    for (int o = 0; o < r->nout; o++)
      if ((rc = emit(b, r, o, caps, outs[o], group, drv->name))) return rc;
    commit_used(b);
    return 0;
  }
  if (drv->ndim < 1 || drv->shape[0] < 1)
    return d9_diag_fail(b->diag, EINVAL, "%s: %s: tensor '%s': nothing to unstack on dim 0 "
                        "(%s)", b->s->path, r->where, drv->name,
                        drv->ndim < 1 ? "a scalar" : "it is empty");
  if (drv->shape[0] > D9_RULE_UNSTACK_MAX)
    return d9_diag_fail(b->diag, EINVAL, "%s: %s: tensor '%s': dim 0 has %lld slices, more than "
                        "the %d a rule may unstack", b->s->path, r->where, drv->name,
                        (long long)drv->shape[0], D9_RULE_UNSTACK_MAX);
  for (int64_t i = 0; i < drv->shape[0]; i++) {
    d9_caps c2 = *caps;
    char idx[24];
    snprintf(idx, sizeof idx, "%lld", (long long)i);
    if (c2.n >= D9_MAX_CAPS)
      return d9_diag_fail(b->diag, EINVAL, "%s: %s: more than %d captures", b->s->path, r->where,
                          D9_MAX_CAPS);
    snprintf(c2.c[c2.n].name, sizeof c2.c[c2.n].name, "%s", r->unstack);
    c2.c[c2.n].val = idx;
    c2.c[c2.n++].len = strlen(idx);
    if ((rc = run_instance(b, r, &c2, drv, i, outs)) > 0) return skipped(b, group);
    if (rc) return rc;
    for (int o = 0; o < r->nout; o++)
      if ((rc = emit(b, r, o, &c2, outs[o], group, drv->name))) return rc;
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
    int *used = calloc((size_t)cnt * (size_t)r->ninputs + 1, sizeof *used);
    if (!per || !used) {
      free(per);
      free(used);
      return d9_diag_fail(b->diag, ENOMEM, "out of memory");
    }
    for (int i = 0; i < cnt && !rc; i++) {
      rc = run_instance(b, r, &v[g0 + i].caps, v[g0 + i].drv, -1, b->outs);
      for (int o = 0; o < r->nout && !rc; o++) per[o * cnt + i] = b->outs[o];
      for (int k = 0; !rc && k < b->npending; k++) used[nused++] = b->pending[k];
    }
    int group = b->g->ngroups++;
    for (int o = 0; o < r->nout && !rc; o++) {
      char where[512];
      snprintf(where, sizeof where, "%s: %s: stack over %s", b->s->path, r->where, r->over);
      d9_node *st = d9_node_stack(b->g->arena, per + o * cnt, cnt, 0, where, b->diag);
      rc = st ? emit(b, r, o, &v[g0].caps, st, group, v[g0].drv->name)
              : b->diag && b->diag->err == ENOMEM ? -ENOMEM : -EINVAL;
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
      /* a reversed or "shared" tied alias: the input is consumed, not emitted */
      for (int i = 0; i < b->c->ntensors; i++) {
        d9_caps caps = {0};
        if (d9_pattern_match(r->in_pats[0], b->c->tensors[i].name, &caps))
          b->used[i] = 1, b->g->nshadowed += !b->s->reversed; /* "shared": --reverse drops it */
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

int d9_graph_skips(const d9_spec *s, const d9_rule *r, const char *name) {
  return ignored(s, name) || excluded(r, name);
}

/* The arrays every instance reuses, sized for the largest rule. */
static int builder_arrays(builder *b) {
  for (int i = 0; i < b->s->nrules; i++) {
    if (b->s->rules[i].ninputs > b->maxin) b->maxin = b->s->rules[i].ninputs;
    if (b->s->rules[i].nout > b->maxout) b->maxout = b->s->rules[i].nout;
  }
  b->pending = calloc((size_t)b->maxin + 1, sizeof *b->pending);
  b->outs = calloc((size_t)b->maxout + 1, sizeof *b->outs);
  return b->pending && b->outs ? 0 : -ENOMEM;
}

static void builder_free(builder *b) {
  free(b->used);
  free(b->pending);
  free(b->outs);
  free(b->x);
  free(b->e.name);
  free(b->e.node);
}

static int cmp_target(const void *x, const void *y) {
  return d9_natural_cmp(((const d9_target *)x)->name, ((const d9_target *)y)->name);
}

int d9_graph_build(const d9_spec *s, const d9_catalog *c, d9_graph **out, d9_diag *diag) {
  builder b = {.s = s, .c = c, .diag = diag};
  int rc = -ENOMEM;
  if (!(b.g = calloc(1, sizeof *b.g)) || !(b.g->arena = d9_arena_create()) ||
      !(b.used = calloc((size_t)c->ntensors + 1, 1)) || builder_arrays(&b)) {
    rc = d9_diag_fail(diag, ENOMEM, "%s: out of memory", s->path);
    goto fail;
  }
  if ((rc = d9_graph_precount(s, c, diag))) goto fail;
  for (int i = 0; i < s->nrules; i++) {
    b.rule_targets = 0;
    if ((rc = expand_rule(&b, &s->rules[i]))) goto fail;
  }
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
  builder_free(&b);
  *out = b.g;
  return 0;
fail:
  builder_free(&b);
  d9_graph_destroy(b.g);
  return rc ? rc : -EINVAL;
}

void d9_graph_destroy(d9_graph *g) {
  if (!g) return;
  free(g->targets);
  d9_arena_destroy(g->arena);
  free(g);
}
