/* steps.c - one spec step as node primitives: the op table entry's builder
 * (op_table.h) after the input count is checked. The arguments were
 * decoded when the spec was parsed; integers given as expressions are
 * evaluated by the builder with params and config.json. */
#include "steps.h"

#include <errno.h>
#include <stdio.h>

#include "op_table.h"

int d9_step_run(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx, d9_node **y,
                int *ny, const char *where) {
  const d9_op_def *def = st->def;
  if (!def || !st->args)
    return d9_diag_fail(b->diag, EINVAL, "%s: %s: unsupported op", b->s->path, st->where);
  if (def->nin == 1 && nx != 1)
    return d9_diag_fail(b->diag, EINVAL, "%s: op '%s' takes one input, got %d", where, def->name,
                        nx);
  if (def->nin > 1 && nx != def->nin)
    return d9_diag_fail(b->diag, EINVAL, "%s: %s takes %s, got %d", where, def->name,
                        def->in_desc, nx);
  *ny = 0;
  int rc = def->build(b, st, x, nx, y, ny, where);
  if (!rc) return 0;
  /* constructors return NULL for both; the diag keeps which */
  if (rc == -ENOMEM || (b->diag && b->diag->set && b->diag->err == ENOMEM)) return -ENOMEM;
  return -EINVAL;
}
