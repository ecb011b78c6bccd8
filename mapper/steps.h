/* steps.h - running one spec step (cast, concat, qkv, ...) on nodes: the
 * op table's builder (op_table.h) with its arity checked; graph.c runs the
 * steps of each rule instance. */
#ifndef D9_STEPS_H
#define D9_STEPS_H

#include <cjson/cJSON.h>

#include "node.h"
#include "spec.h"

typedef struct d9_step_ctx {
  const d9_spec *s;      /* for params and messages */
  const cJSON *config;   /* config.json, may be NULL */
  d9_arena *arena;       /* the graph's: nodes live as long as it */
  d9_diag *diag;
} d9_step_ctx;

/* Run step st on inputs x[0..nx): outputs into y[0..*ny), which has room
 * for D9_STEP_MAX_OUTPUTS (op_table.h). `where` names the spec location and
 * tensor for messages. 0 or -errno (-ENOMEM stays -ENOMEM). */
int d9_step_run(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx, d9_node **y,
                int *ny, const char *where);

#endif
