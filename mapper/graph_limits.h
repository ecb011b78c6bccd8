/* graph_limits.h - the target and planning-memory limits of
 * d9_graph_build (graph.h names them; docs/spec.md "Limits"). Private to
 * the graph builder. */
#ifndef D9_GRAPH_LIMITS_H
#define D9_GRAPH_LIMITS_H

#include <stdint.h>

#include "graph.h"

/* Before anything is built: the targets each plain or unstacking rule of
 * s will make over c (its matching drivers, times the slices of an
 * unstack, times its outputs), against D9_MAX_TARGETS_PER_RULE and
 * D9_MAX_TARGETS. 0 or -E2BIG with diag naming the rule, the count and
 * the limit. */
int d9_graph_precount(const d9_spec *s, const d9_catalog *c, d9_diag *diag);

/* May rule r (NULL: pass-through) add one more target to g, whose target
 * table has room for tcap, when r has made rule_targets so far? 0 or
 * -E2BIG with diag (targets per rule, per tree, planning memory). */
int d9_graph_check_limits(const d9_spec *s, const d9_graph *g, int tcap, int64_t rule_targets,
                          const d9_rule *r, d9_diag *diag);

/* Is source tensor `name` ignored by s or excluded by r? (graph.c) */
int d9_graph_skips(const d9_spec *s, const d9_rule *r, const char *name);

#endif
