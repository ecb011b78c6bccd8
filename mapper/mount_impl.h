/* mount_impl.h - the d9_mount struct, shared by the files that implement
 * mount.h: mount.c (open, close, reads), tree.c (the virtual tree) and
 * render.c (stats.json, report.json, the plan text). Not for callers of
 * the core: they see mount.h only. */
#ifndef D9_MOUNT_IMPL_H
#define D9_MOUNT_IMPL_H

#include <stdint.h>

#include "catalog.h"
#include "eval.h"
#include "graph.h"
#include "mount.h"
#include "plan.h"
#include "readpool.h"
#include "scale_cache.h"
#include "spec.h"

struct d9_mount {
  d9_catalog *cat;
  d9_spec *spec;
  d9_spec *fwd_spec;   /* --reverse: the spec as written; spec is its inverse */
  d9_graph *graph;
  d9_plan *plan;
  d9_arena *arena;     /* the tree */
  int nnodes;
  d9_vnode *nodes;
  const d9_vfile **vfile_of; /* per node: its file, NULL for dirs / dynamic */
  int nranks;
  d9_plan **rank_plans;/* per rank (t, e, p) in that order; NULL without ranks */
  char **rank_names;   /* "tp0-ep1", ... */
  d9_arena *rank_arena;/* rank targets and nodes */
  int stats_node, report_node;
  int verbose;
  d9_faults faults;    /* test-only fault injection; off unless asked */
  d9_readpool *pool;   /* scratch budget, helper threads */
  d9_scale_cache *qcache; /* computed FP8 block rows, a quarter of -o mem on top of it */
  const d9_backend *be;/* the backend reads compute on (d9_eval_backend) */
  _Atomic uint64_t bytes_served, bytes_read_source, reads, tensors_evaluated, errors;
  _Atomic uint64_t split_reads;
  char *frontend;      /* members of stats.json's "frontend" object; NULL = none */
};

/* tree.c: the nodes of m's plans (root, .d9dfs/, ranks/NAME/), their
 * modes and owners from the sources, every directory's names checked
 * unique. Returns 0, -ENOMEM or -EEXIST (a name collision naming both
 * origins) with diag set. */
int d9_mount_build_tree(d9_mount *m, d9_diag *diag);

/* render.c: the sizes of the dynamic nodes (report.json exactly; stats.json
 * the most its padded rendering takes with the current front end), set in
 * m->nodes. 0 or -ENOMEM. */
int d9_mount_size_dynamic(d9_mount *m);

#endif
