/* applies.h - which checkpoints a spec is for: the spec's "applies_to" and
 * "description" keys, and the check that refuses a spec meant for another
 * model family before it changes a single weight.
 *
 *   "description": "one line: what the spec does",
 *   "applies_to": {
 *     "model_type":    ["gemma", "gemma2"],            config.json's model_type
 *     "architectures": ["GemmaForCausalLM"],           or one of its architectures
 *     "tensors":       ["{X*}.weight_scale_inv"],      each matches a source tensor
 *     "dtypes":        ["F32"]                         every source tensor has one
 *   }
 *   "applies_to": "any"                                 any checkpoint
 *
 * Every key inside "applies_to" is optional, but the object may not be
 * empty. model_type and architectures together are one condition: the
 * source matches when config.json's model_type is listed or one of its
 * "architectures" is. Names are compared exactly (case-sensitive).
 *
 * The check (d9_applies_check) runs twice at mount and plan time: before the
 * graph is built (config.json, the source tensors' names and dtypes), and
 * after (some rule must make a tensor: a spec with rules of which none has
 * an instance in this source and no "ignore" pattern that drops one - every
 * tensor only passed through - transforms nothing and is refused too).
 * Under --reverse only model_type and architectures are checked, against
 * the original config.json (the undo record of a patched config applied;
 * model_type survives every shipped spec): the tree is in the spec's
 * target layout, so "tensors", "dtypes" and the rule instances, which
 * describe a forward conversion, are not checked (a reversed tied rule may
 * rightly make nothing: it drops the materialised tensor).
 */
#ifndef D9_APPLIES_H
#define D9_APPLIES_H

#include "catalog.h"
#include "diag.h"
#include "graph.h"
#include "spec.h"

#define D9_APPLIES_MAX 32 /* names in one "applies_to" list */

typedef struct d9_applies {
  int any;                    /* "applies_to": "any" */
  int nmodel_types, narchs, ntensors, ndtypes;
  const char **model_types;   /* borrowed from the spec's JSON */
  const char **archs;
  const char **tensors;       /* patterns (checked by d9_pattern_check) */
  d9_dtype dtypes[D9_APPLIES_MAX];
} d9_applies;

/* Read "description" (a string, or absent) and "applies_to" (absent, "any"
 * or an object as above) from s->root into s->description and s->applies
 * (arena-owned). Returns 0, -EINVAL with diag naming the spec and the key,
 * or -ENOMEM. */
int d9_applies_parse(d9_spec *s, d9_diag *diag);

/* Check that spec s (as written, forward; reverse: mounted with --reverse)
 * applies to the source c. With g == NULL the source checks run
 * (config.json, tensors, dtypes); with g (forward only), the graph built
 * from s must hold a target made by a rule or have ignored a tensor -
 * unless s has no rules (a pass-through spec such as identity.json). A
 * spec without "applies_to" is checked for rule instances only.
 *
 * On a mismatch: without force, returns -EMEDIUMTYPE with diag holding one
 * line that names the spec file, what it expects and what the source has
 * ("mounts/gemma-to-standard-norms.json applies to model_type gemma,
 * gemma2; config.json says llama"); with force, writes that line to warn
 * (if not NULL and not already set) and returns 0. -ENOMEM on allocation
 * failure. */
int d9_applies_check(const d9_spec *s, int reverse, const d9_catalog *c, const d9_graph *g,
                     int force, d9_diag *warn, d9_diag *diag);

#endif
