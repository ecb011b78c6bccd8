/* graph_limits.c - the graph's target and memory limits (graph_limits.h). */
#include "graph_limits.h"

#include <errno.h>

#include "pattern.h"

/* The planning memory of g: its arena and target table. */
static size_t graph_bytes(const d9_graph *g, int tcap) {
  return d9_arena_used(g->arena) + (size_t)tcap * sizeof(d9_target);
}

int d9_graph_check_limits(const d9_spec *s, const d9_graph *g, int tcap, int64_t rule_targets,
                          const d9_rule *r, d9_diag *diag) {
  const char *who = r ? r->where : "pass-through";
  if (g->ntargets >= D9_MAX_TARGETS)
    return d9_diag_fail(diag, E2BIG, "%s: %s: more than %d targets in the tree, the limit",
                        s->path, who, D9_MAX_TARGETS);
  if (r && rule_targets >= D9_MAX_TARGETS_PER_RULE)
    return d9_diag_fail(diag, E2BIG, "%s: %s: the rule makes more than %d targets, the limit",
                        s->path, who, D9_MAX_TARGETS_PER_RULE);
  size_t used = graph_bytes(g, tcap);
  if (used > D9_GRAPH_MEM_MAX)
    return d9_diag_fail(diag, E2BIG, "%s: %s: planning memory %zu MiB, over the limit of %zu "
                        "MiB (%d targets so far)", s->path, who, used >> 20,
                        (size_t)D9_GRAPH_MEM_MAX >> 20, g->ntargets);
  return 0;
}

int d9_graph_precount(const d9_spec *s, const d9_catalog *c, d9_diag *diag) {
  int64_t total = 0;
  for (int k = 0; k < s->nrules; k++) {
    const d9_rule *r = &s->rules[k];
    int64_t n = 0;
    if (r->over) continue; /* stacked instances make fewer targets than drivers */
    for (int i = 0; i < c->ntensors; i++) {
      d9_caps caps = {0};
      const d9_src_tensor *t = &c->tensors[i];
      if (!d9_pattern_match(r->in_pats[0], t->name, &caps) || d9_graph_skips(s, r, t->name))
        continue;
      int64_t per = 1;
      if (r->unstack && t->ndim >= 1 && t->shape[0] >= 1 && t->shape[0] <= D9_RULE_UNSTACK_MAX)
        per = t->shape[0];
      n += per * r->nout; /* <= ntensors * 4096 * nout: no overflow */
    }
    if (n > D9_MAX_TARGETS_PER_RULE)
      return d9_diag_fail(diag, E2BIG, "%s: %s: the rule would make %lld targets, more than "
                          "the %d one rule may make", s->path, r->where, (long long)n,
                          D9_MAX_TARGETS_PER_RULE);
    if ((total += n) > D9_MAX_TARGETS)
      return d9_diag_fail(diag, E2BIG, "%s: %s: the rules up to this one would make %lld "
                          "targets, more than the %d a tree may hold", s->path, r->where,
                          (long long)total, D9_MAX_TARGETS);
  }
  return 0;
}
