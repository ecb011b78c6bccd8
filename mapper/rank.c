#include "rank.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pattern.h"

void d9_rank_share(int64_t total, int r, int n, int64_t *start, int64_t *count) {
  int64_t base = total / n, rem = total % n;
  *start = r * base + (r < rem ? r : rem);
  *count = base + (r < rem ? 1 : 0);
}

const char *d9_rank_name(const d9_rank_opts *o, int t, int e, int p, char *buf, size_t cap) {
  int n = snprintf(buf, cap, "tp%d", t);
  if (o->ep > 1 && n > 0 && (size_t)n < cap) n += snprintf(buf + n, cap - (size_t)n, "-ep%d", e);
  if (o->pp > 1 && n > 0 && (size_t)n < cap) snprintf(buf + n, cap - (size_t)n, "-pp%d", p);
  return buf;
}

static const d9_parallel *style_of(const d9_spec *s, const d9_target *t) {
  if (t->rule && t->rule->par) return t->rule->par;
  for (int i = 0; i < s->npar; i++) {
    d9_caps caps = {0};
    if (d9_pattern_match(s->par[i].pattern, t->name, &caps)) return &s->par[i];
  }
  return NULL;
}

static const char *style_name(d9_par_style st) {
  static const char *const n[] = {"replicated", "column", "row", "qkv", "gated", "vocab", "expert"};
  return st >= 0 && st < D9_PAR_COUNT_SENTINEL ? n[st] : "?";
}

/* Capture `cap` of pat matched against name as an integer; -1 if none. */
static int64_t cap_int(const char *pat, const char *cap, const char *name) {
  d9_caps caps = {0};
  size_t len;
  if (!d9_pattern_match(pat, name, &caps)) return -1;
  const char *v = d9_caps_get(&caps, cap, &len);
  if (!v || len == 0 || len > 18) return -1;
  int64_t x = 0;
  for (size_t i = 0; i < len; i++) {
    if (v[i] < '0' || v[i] > '9') return -1;
    x = x * 10 + (v[i] - '0');
  }
  return x;
}

/* name with capture `cap` of pat set to value (pat must match name). */
static const char *renumber(d9_arena *a, const char *pat, const char *cap, const char *name,
                            int64_t value) {
  d9_caps caps = {0};
  char num[24], out[D9_NAME_MAX];
  if (!d9_pattern_match(pat, name, &caps)) return name;
  snprintf(num, sizeof num, "%lld", (long long)value);
  for (int i = 0; i < caps.n; i++)
    if (!strcmp(caps.c[i].name, cap)) caps.c[i].val = num, caps.c[i].len = strlen(num);
  if (d9_pattern_fill(pat, &caps, out, sizeof out, NULL) < 0) return NULL;
  return d9_arena_strdup(a, out);
}

static int uneven(d9_diag *diag, const d9_spec *s, const d9_target *t, const d9_parallel *par,
                  const char *what, int64_t size, int64_t by) {
  return d9_diag_fail(diag, EINVAL, "%s: tensor '%s': style %s (%s): %s of %lld is not divisible "
                      "by %lld", s->path, t->name, style_name(par->style), par->where, what,
                      (long long)size, (long long)by);
}

/* The TP slice of x for rank t of T under style st (par's, or its expert
 * "tp"), on dims d0 = lead and d1 = lead + 1 (lead 1 for the experts of a
 * stacked [E, ...] tensor). NULL with diag set. */
static d9_node *tp_slice(const d9_spec *s, const d9_catalog *c, const d9_target *tg,
                         d9_node *x, const d9_parallel *par, d9_par_style st, int lead,
                         const d9_rank_opts *o, int T, int t, d9_arena *a, d9_diag *diag) {
  const char *w = tg->name;
  int d0 = lead, d1 = lead + 1;
  if (!par || st == D9_PAR_REPLICATED || T == 1) return x;
  if (x->ndim < d0 + 1) return uneven(diag, s, tg, par, "a scalar", 0, T), NULL;
  switch (st) {
    case D9_PAR_QKV: {
      int64_t groups;
      if (d9_spec_int(s, c->config, par->groups, par->where, &groups, diag)) return NULL;
      /* Megatron-Core's rule: the groups are a multiple or a divisor of T.
       * Either way linear_qkv stays one column-parallel tensor, cut in T
       * even dim-0 chunks: whole groups per rank when groups >= T, else
       * T / groups consecutive pieces of each group's rows (the ranks of a
       * group gather them back at run time) */
      if (groups < 1 || (groups % T && T % groups))
        return d9_diag_fail(diag, EINVAL, "%s: tensor '%s': style qkv (%s): %lld kv groups are "
                            "neither a multiple nor a divisor of tp=%d", s->path, tg->name,
                            par->where, (long long)groups, T), NULL;
      if (x->shape[0] % groups) return uneven(diag, s, tg, par, "dim 0", x->shape[0], groups), NULL;
      int64_t heads = T;
      if (par->heads && d9_spec_int(s, c->config, par->heads, par->where, &heads, diag)) return NULL;
      if (heads % T)
        return d9_diag_fail(diag, EINVAL, "%s: tensor '%s': style qkv (%s): %lld attention heads "
                            "are not divisible by tp=%d", s->path, tg->name, par->where,
                            (long long)heads, T), NULL;
      __attribute__((fallthrough));
    }
    case D9_PAR_COLUMN:
      if (x->shape[d0] % T)
        return uneven(diag, s, tg, par, lead ? "dim 1" : "dim 0", x->shape[d0], T), NULL;
      return d9_node_slice(a, x, d0, t * (x->shape[d0] / T), x->shape[d0] / T, w, diag);
    case D9_PAR_ROW:
      if (x->ndim < d1 + 1) return uneven(diag, s, tg, par, "a 1-D tensor's dim 1", 0, T), NULL;
      if (x->shape[d1] % T)
        return uneven(diag, s, tg, par, lead ? "dim 2" : "dim 1", x->shape[d1], T), NULL;
      return d9_node_slice(a, x, d1, t * (x->shape[d1] / T), x->shape[d1] / T, w, diag);
    case D9_PAR_GATED: {
      if (x->shape[d0] % (2 * T))
        return uneven(diag, s, tg, par,
                      lead ? "dim 1 (gate and up halves, each split tp ways)"
                           : "dim 0 (gate and up halves, each split tp ways)",
                      x->shape[d0], 2 * T), NULL;
      int64_t half = x->shape[d0] / 2, part = half / T;
      d9_node *gu[2] = {d9_node_slice(a, x, d0, t * part, part, w, diag),
                        d9_node_slice(a, x, d0, half + t * part, part, w, diag)};
      return gu[0] && gu[1] ? d9_node_concat(a, gu, 2, d0, w, diag) : NULL;
    }
    case D9_PAR_VOCAB: {
      int64_t mult = (int64_t)o->vocab_divisible_by * T;
      int64_t rows = (x->shape[0] + mult - 1) / mult * mult;
      d9_node *pad = rows == x->shape[0] ? x : d9_node_pad(a, x, rows, w, diag);
      return pad ? d9_node_slice(a, pad, 0, t * (rows / T), rows / T, w, diag) : NULL;
    }
    default:
      return x;
  }
}

struct d9_rank_prep {
  const d9_parallel **par;  /* per target: its style, or NULL */
  int64_t *layer;           /* per target: its pipeline layer, or -1 */
  unsigned char *edge;      /* per target: 1 first-stage, 2 last-stage tensor */
  int64_t *expert;          /* per target: its expert index (capture styles), or -1 */
  int64_t *nexperts;        /* per s->par entry: the largest expert index + 1 */
  int64_t *nexperts_rule;   /* the same per rule, for a rule's own expert style */
  int64_t nlayers;          /* the largest layer + 1 */
};

int d9_rank_prepare(const d9_spec *s, const d9_graph *g, d9_arena *a, d9_rank_prep **out,
                    d9_diag *diag) {
  const d9_pipeline *pl = &s->pipeline;
  size_t n = (size_t)g->ntargets;
  d9_rank_prep *r = d9_arena_calloc(a, 1, sizeof *r);
  if (!r || !(r->par = d9_arena_calloc(a, n + 1, sizeof *r->par)) ||
      !(r->layer = d9_arena_calloc(a, n + 1, sizeof *r->layer)) ||
      !(r->edge = d9_arena_calloc(a, n + 1, 1)) ||
      !(r->expert = d9_arena_calloc(a, n + 1, sizeof *r->expert)) ||
      !(r->nexperts = d9_arena_calloc(a, (size_t)s->npar + 1, sizeof *r->nexperts)) ||
      !(r->nexperts_rule = d9_arena_calloc(a, (size_t)s->nrules + 1, sizeof *r->nexperts_rule)))
    return d9_diag_fail(diag, ENOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    const d9_target *tg = &g->targets[i];
    r->layer[i] = pl->layers ? cap_int(pl->layers, pl->capture, tg->name) : -1;
    if (r->layer[i] + 1 > r->nlayers) r->nlayers = r->layer[i] + 1;
    for (int k = 0; pl->layers && r->layer[i] < 0 && k < pl->nfirst; k++) {
      d9_caps caps = {0};
      if (d9_pattern_match(pl->first[k], tg->name, &caps)) r->edge[i] |= 1;
    }
    for (int k = 0; pl->layers && r->layer[i] < 0 && k < pl->nlast; k++) {
      d9_caps caps = {0};
      if (d9_pattern_match(pl->last[k], tg->name, &caps)) r->edge[i] |= 2;
    }
    const d9_parallel *par = r->par[i] = style_of(s, tg);
    r->expert[i] = par && par->style == D9_PAR_EXPERT && par->capture
                       ? cap_int(par->pattern, par->capture, tg->name) : -1;
  }
  /* an expert style's count: the largest index its pattern captures in
   * any target (whatever that target's own style) */
  for (int k = 0; k < s->npar + s->nrules; k++) {
    const d9_parallel *par = k < s->npar ? &s->par[k] : s->rules[k - s->npar].par;
    int64_t *cnt = k < s->npar ? &r->nexperts[k] : &r->nexperts_rule[k - s->npar];
    if (!par || par->style != D9_PAR_EXPERT || !par->capture || !par->pattern) continue;
    for (size_t i = 0; i < n; i++) {
      int64_t e = r->par[i] == par ? r->expert[i] : cap_int(par->pattern, par->capture,
                                                              g->targets[i].name);
      if (e + 1 > *cnt) *cnt = e + 1;
    }
  }
  *out = r;
  return 0;
}

/* The expert count of style par (a spec-level entry, or a rule's). */
static int64_t expert_count(const d9_spec *s, const d9_rank_prep *r, const d9_parallel *par) {
  if (par >= s->par && par < s->par + s->npar) return r->nexperts[par - s->par];
  for (int k = 0; k < s->nrules; k++)
    if (s->rules[k].par == par) return r->nexperts_rule[k];
  return 0;
}

/* A "shared" tied rule whose flag is set made no target (Megatron-Core's
 * shared embedding has no output layer of its own), but with pp > 1 the
 * last stage keeps a copy of the tied tensor under the rule's output name:
 * returns its node (the rename of the tied source), NULL when the rule
 * does not apply, or sets *rc. */
static d9_node *shared_alias(const d9_spec *s, const d9_catalog *c, const d9_rule *r,
                             d9_arena *a, int *rc, d9_diag *diag) {
  int64_t flag = 0;
  if (!r->tied_from || r->drop_if != r->tied_if ||
      d9_spec_lookup(s, c->config, r->tied_if, strlen(r->tied_if), &flag, NULL) || !flag)
    return NULL;
  const d9_src_tensor *src = d9_catalog_find(c, r->tied_from);
  if (r->nsteps || r->nout != 1 || !d9_pattern_is_literal(r->out_pats[0]) || !src) {
    *rc = d9_diag_fail(diag, EINVAL, "%s: %s: the last of the pp stages holds the shared tied "
                       "tensor '%s', which must exist and be renamed only (no steps, one "
                       "literal output)", s->path, r->where, r->tied_from);
    return NULL;
  }
  d9_node *n = d9_node_source(a, src);
  if (!n) *rc = d9_diag_fail(diag, ENOMEM, "out of memory");
  return n;
}

static int cmp_target(const void *x, const void *y) {
  return d9_natural_cmp(((const d9_target *)x)->name, ((const d9_target *)y)->name);
}

int d9_rank_targets(const d9_spec *s, const d9_catalog *c, const d9_graph *g,
                    const d9_rank_opts *o, int t, int e, int p, d9_arena *a,
                    d9_target **out, int *nout, d9_diag *diag) {
  d9_rank_prep *prep;
  int rc = d9_rank_prepare(s, g, a, &prep, diag);
  return rc ? rc : d9_rank_targets_prepared(s, c, g, prep, o, t, e, p, a, out, nout, diag);
}

int d9_rank_targets_prepared(const d9_spec *s, const d9_catalog *c, const d9_graph *g,
                             const d9_rank_prep *prep, const d9_rank_opts *o, int t, int e,
                             int p, d9_arena *a, d9_target **out, int *nout, d9_diag *diag) {
  const d9_pipeline *pl = &s->pipeline;
  if (o->etp > 1 && o->etp != o->tp)
    return d9_diag_fail(diag, EINVAL, "etp=%d: the expert tensor parallel size must be 1 or "
                        "equal tp=%d", o->etp, o->tp);
  if (o->pp > 1 && !pl->layers)
    return d9_diag_fail(diag, EINVAL, "%s: pp=%d needs a \"pipeline\" section in the spec",
                        s->path, o->pp);
  /* pipeline: the layer range of stage p */
  int64_t nlayers = 0, l0 = 0, ln = 0;
  if (pl->layers) {
    nlayers = prep->nlayers;
    if (o->npp_layers) {
      int64_t sum = 0;
      for (int i = 0; i < o->npp_layers; i++) {
        if (i == p) l0 = sum, ln = o->pp_layers[i];
        sum += o->pp_layers[i];
      }
      if (o->npp_layers != o->pp || sum != nlayers)
        return d9_diag_fail(diag, EINVAL, "pp_layers: %d stages adding up to %lld layers, but "
                            "pp=%d and the model has %lld layers", o->npp_layers, (long long)sum,
                            o->pp, (long long)nlayers);
    } else {
      d9_rank_share(nlayers, p, o->pp, &l0, &ln);
    }
    if (o->pp > nlayers)
      return d9_diag_fail(diag, EINVAL, "pp=%d: more stages than the %lld layers", o->pp,
                          (long long)nlayers);
  }
  d9_target *v = d9_arena_calloc(a, (size_t)g->ntargets + (size_t)s->nrules + 1, sizeof *v);
  if (!v) return d9_diag_fail(diag, ENOMEM, "out of memory");
  int n = 0;
  for (int i = 0; i < g->ntargets; i++) {
    const d9_target *tg = &g->targets[i];
    d9_target r = *tg;
    /* pipeline stage */
    if (pl->layers) {
      int64_t L = prep->layer[i];
      int on = 1;
      if (L >= 0) {
        on = L >= l0 && L < l0 + ln;
        if (on && pl->renumber && !(r.name = renumber(a, pl->layers, pl->capture, r.name, L - l0)))
          return d9_diag_fail(diag, ENOMEM, "out of memory");
      } else {
        int first = prep->edge[i] & 1, last = prep->edge[i] & 2;
        if (first || last) on = (first && p == 0) || (last && p == o->pp - 1);
      }
      if (!on) continue;
    }
    const d9_parallel *par = prep->par[i];
    r.expert = par && par->style == D9_PAR_EXPERT;
    if (r.expert) {
      if (par->capture) {
        int64_t ex = prep->expert[i], total = expert_count(s, prep, par);
        int64_t st, cnt;
        d9_rank_share(total, e, o->ep, &st, &cnt);
        if (ex < 0)
          return d9_diag_fail(diag, EINVAL, "%s: tensor '%s': style expert (%s): no expert "
                              "index in capture %s of '%s'", s->path, tg->name, par->where,
                              par->capture, par->pattern);
        if (ex < st || ex >= st + cnt) continue;
        if (par->renumber && !(r.name = renumber(a, par->pattern, par->capture, r.name, ex - st)))
          return d9_diag_fail(diag, ENOMEM, "out of memory");
      } else {
        int64_t st, cnt;
        if (r.node->ndim < 1)
          return d9_diag_fail(diag, EINVAL, "%s: tensor '%s': style expert: a scalar has no "
                              "expert dim", s->path, tg->name);
        if (r.node->shape[0] < o->ep)
          return d9_diag_fail(diag, EINVAL, "%s: tensor '%s': style expert (%s): %lld experts "
                              "for ep=%d", s->path, tg->name, par->where,
                              (long long)r.node->shape[0], o->ep);
        d9_rank_share(r.node->shape[0], e, o->ep, &st, &cnt);
        if (!(r.node = d9_node_slice(a, r.node, 0, st, cnt, tg->name, diag))) return -EINVAL;
      }
      if (o->etp > 1 && par->expert_tp == D9_PAR_COUNT_SENTINEL)
        return d9_diag_fail(diag, EINVAL, "%s: tensor '%s': style expert (%s): etp=%d needs "
                            "\"tp\", the TP style inside an expert", s->path, tg->name,
                            par->where, o->etp);
      if (o->etp > 1 && !(r.node = tp_slice(s, c, tg, r.node, par, par->expert_tp,
                                            par->capture ? 0 : 1, o, o->etp, t, a, diag)))
        return -EINVAL;
    } else if (!(r.node = tp_slice(s, c, tg, r.node, par, par ? par->style : D9_PAR_REPLICATED,
                                   0, o, o->tp, t, a, diag))) {
      return -EINVAL;
    }
    v[n++] = r;
  }
  for (int i = 0; o->pp > 1 && p == o->pp - 1 && !s->reversed && i < s->nrules; i++) {
    int rc = 0;
    d9_target r = {.rule = &s->rules[i], .name = s->rules[i].out_pats[0], .group = g->ngroups};
    if (!(r.node = shared_alias(s, c, r.rule, a, &rc, diag))) {
      if (rc) return rc;
      continue;
    }
    const d9_parallel *par = style_of(s, &r);
    if (!(r.node = tp_slice(s, c, &r, r.node, par, par ? par->style : D9_PAR_REPLICATED, 0, o,
                            o->tp, t, a, diag)))
      return -EINVAL;
    v[n++] = r;
  }
  qsort(v, (size_t)n, sizeof *v, cmp_target);
  for (int i = 0; i + 1 < n; i++)
    if (!strcmp(v[i].name, v[i + 1].name))
      return d9_diag_fail(diag, EINVAL, "%s: renumbering makes two tensors named '%s'", s->path,
                          v[i].name);
  *out = v;
  *nout = n;
  return 0;
}
