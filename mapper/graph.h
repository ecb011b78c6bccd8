/* graph.h - a spec expanded over a catalog: the target tensors, each the
 * output node of a rule instance, with shapes and dtypes inferred and
 * validated before any data is read.
 *
 * Each rule instance is one dependency group (d9d's StateGroup): its
 * source inputs and its target outputs. Validation reports, naming the
 * spec rule and the tensor: missing inputs, shape/dtype mismatches,
 * divisibility errors, duplicate targets, reserved names, and (strict mode)
 * source tensors used by no rule and not ignored.
 */
#ifndef D9_GRAPH_H
#define D9_GRAPH_H

#include "catalog.h"
#include "node.h"
#include "spec.h"

typedef struct d9_target {
  const char *name;      /* arena-owned */
  d9_node *node;
  const d9_rule *rule;   /* NULL for pass-through */
  int group;             /* dependency group (rule instance) id */
  int expert;            /* rank views: 1 when cut by an expert style (rank.c) */
} d9_target;

/* Named limits (docs/spec.md "Limits"). A spec that would pass one is
 * refused with -E2BIG and a message naming the rule, the count and the
 * limit, in --lenient mode too. */
#define D9_MAX_TARGETS (1 << 21)          /* targets in one tree */
#define D9_MAX_TARGETS_PER_RULE (1 << 20) /* targets one rule makes */
#define D9_GRAPH_MEM_MAX ((size_t)2 << 30) /* bytes of planning memory (nodes, names, targets) */
#define D9_RULE_UNSTACK_MAX 4096          /* slices of one tensor a rule's "unstack" makes */
#define D9_REPORT_MAX 4096                /* lenient findings kept in the report */

typedef struct d9_graph {
  d9_arena *arena;
  int ntargets;
  d9_target *targets;    /* sorted by name (natural order) after build */
  int ngroups;
  int nignored;          /* source tensors dropped by "ignore" patterns */
  int nshadowed;         /* explicit tensors of tied rules whose flag is set: --reverse drops them */
  int nskipped;          /* rule instances skipped because an "optional" input is absent */
  int nreport;           /* lenient mode: findings that did not stop the build */
  const char *report[D9_REPORT_MAX]; /* one line each, arena-owned */
} d9_graph;

/* Expand s over c. 0, -EINVAL / -ENOENT (a finding, with diag), -E2BIG (a
 * limit above), or -ENOMEM. */
int d9_graph_build(const d9_spec *s, const d9_catalog *c, d9_graph **out, d9_diag *diag);
void d9_graph_destroy(d9_graph *g); /* accepts NULL */

/* Natural order: digit runs compare as numbers ("layers.2" < "layers.10"). */
int d9_natural_cmp(const char *a, const char *b);

#endif
