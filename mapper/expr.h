/* expr.h - integer arithmetic for spec parameters.
 *
 * Grammar:  expr := term (('+'|'-') term)* ; term := unary (('*'|'/'|'%') unary)*
 *           unary := '-' unary | atom ; atom := INT | NAME | '(' expr ')'
 *           NAME := [A-Za-z_][A-Za-z0-9_.]*  (dots reach into nested config
 *           objects: quantization_config.weight_block_size.0)
 * Arithmetic is on int64_t with every operation checked: overflow, division
 * by zero and a '/' or '%' with a negative operand are errors. '/' truncates.
 * Names resolve through a caller-supplied lookup (spec params first, then
 * config.json). Nesting depth is bounded.
 */
#ifndef D9_EXPR_H
#define D9_EXPR_H

#include <stdint.h>

#include "diag.h"

/* Resolve name[0..len): return 0 and set *v, -ENOENT if unknown, or another
 * -errno with diag set. */
typedef int (*d9_expr_lookup)(void *ctx, const char *name, size_t len,
                              int64_t *v, d9_diag *diag);

/* Evaluate text. `where` names the spec location for messages. */
int d9_expr_eval(const char *text, d9_expr_lookup lookup, void *ctx,
                 const char *where, int64_t *out, d9_diag *diag);

#endif
