/* spec.h - the JSON mapping spec (format version 1), parsed and checked
 * for shape before any tensor is looked at. mounts/README.md documents the
 * format; this header documents the parsed form.
 *
 * Every object is checked for unknown keys; every pattern for syntax.
 * Parameters are resolved against config.json by d9_spec_resolve_params().
 */
#ifndef D9_SPEC_H
#define D9_SPEC_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "arena.h"
#include "diag.h"

/* The step operations: X(kind suffix, op name). Each has one entry,
 * d9_op_<name>, in the op table (op_table.h), which holds its arguments,
 * builder and inverse; docs/spec.md documents each. */
#define D9_STEP_TABLE(X)      \
  X(CAST, cast)               \
  X(CONCAT, concat)           \
  X(STACK, stack)             \
  X(UNSTACK, unstack)         \
  X(CHUNK, chunk)             \
  X(SPLIT, split)             \
  X(QKV, qkv)                 \
  X(QKV_SPLIT, qkv_split)     \
  X(RESHAPE, reshape)         \
  X(SQUEEZE, squeeze)         \
  X(UNSQUEEZE, unsqueeze)     \
  X(TRANSPOSE, transpose)     \
  X(PERMUTE, permute)         \
  X(SLICE, slice)             \
  X(INTERLEAVE, interleave)   \
  X(DEINTERLEAVE, deinterleave) \
  X(DEQUANT, dequant)         \
  X(QUANT, quant)             \
  X(AFFINE, affine)           \
  X(PAD, pad)                 \
  X(TRUNCATE, truncate)       \
  X(ROPE, rope)               \
  X(MXFP4_DEQUANT, mxfp4_dequant) \
  X(MXFP4_QUANT, mxfp4_quant)     \
  X(COPY, copy)               \
  X(DEDUP, dedup)

typedef enum {
#define D9_X(k, name) D9_STEP_##k,
  D9_STEP_TABLE(D9_X)
#undef D9_X
  D9_STEP_COUNT
} d9_step_kind;

/* The op name of a step kind. */
const char *d9_step_name(d9_step_kind k);

struct d9_op_def;
struct d9_step_args;

typedef struct d9_step {
  d9_step_kind kind;
  const char *op;        /* the op name */
  const char *where;     /* "rules[3] (qkv).steps[0]" */
  const struct d9_op_def *def;        /* its op table entry (op_table.h) */
  const struct d9_step_args *args;    /* decoded at parse; arena-owned */
  int nin, nout;         /* 0 = default (see spec.c) */
  const char **in, **out;/* value names */
} d9_step;

/* Tensor/expert parallel styles (docs/design.md "Exact layouts": TP styles, experts). */
typedef enum {
  D9_PAR_REPLICATED,
  D9_PAR_COLUMN,   /* split dim 0 */
  D9_PAR_ROW,      /* split dim 1 */
  D9_PAR_QKV,      /* split dim 0 of the interleaved QKV by KV group (groups % T == 0) */
  D9_PAR_GATED,    /* [G; U] -> [G_t; U_t] */
  D9_PAR_VOCAB,    /* pad rows to a multiple of vocab_divisible_by * T, then column */
  D9_PAR_EXPERT,   /* EP: stacked [E, ...] split on dim 0, or per-expert tensors by owner */
  D9_PAR_COUNT_SENTINEL
} d9_par_style;

typedef struct d9_parallel {
  d9_par_style style;
  const char *pattern;   /* target-name pattern (defaults list), or NULL (rule-level) */
  const cJSON *groups;   /* qkv: the KV group count (integer or expression) */
  const cJSON *heads;    /* qkv: the attention head count, or NULL (not checked) */
  const char *capture;   /* expert: capture in `pattern` holding the expert index;
                            NULL = a stacked tensor split on dim 0 */
  int renumber;          /* expert with capture: number experts locally from 0 */
  d9_par_style expert_tp;/* expert: the TP style inside each expert when the
                            expert tensor parallel size (etp) is > 1: column,
                            row, gated or replicated; D9_PAR_COUNT_SENTINEL =
                            not given (refused under etp > 1) */
  const char *where;     /* spec location */
} d9_parallel;

typedef struct d9_pipeline {
  const char *layers;    /* target pattern with the layer capture, e.g. decoder.layers.{L}.{rest*} */
  const char *capture;   /* the layer capture's name ("L") */
  int nfirst, nlast;
  const char **first, **last; /* patterns of tensors on the first / last stage only */
  int renumber;          /* number layers locally from 0 on each stage */
} d9_pipeline;

typedef struct d9_rule {
  const char *name;      /* "name" or "rules[i]" */
  const char *where;     /* "rules[i] (name)" */
  int ninputs;
  const char **in_names, **in_pats; /* in spec order; in_pats[0] drives */
  int nsteps;
  d9_step *steps;
  int nout;              /* outputs: value name -> target pattern */
  const char **out_names, **out_pats;
  int required;          /* no match for the driving input is an error */
  const char *tied_from; /* literal source name used when the driver is absent */
  const char *tied_if;   /* parameter/config flag that allows it */
  const char *over;      /* capture to stack the instances over (new dim 0), or NULL */
  const char *unstack;   /* capture made by unstacking the inputs' dim 0, or NULL */
  const char *drop_if;   /* consume the input, emit nothing, when set: a reversed tied
                            alias, or a "shared" one (the full view and pp = 1 ranks
                            have no such target; see rank.h) */
  int nexclude;
  const char **exclude;  /* driver names matching one of these are skipped (both directions) */
  int noptional;
  const char **optional; /* "optional": input names (never the first) that may be absent: the
                            instance is then skipped, no finding, its inputs left unused */
  const d9_parallel *par;/* "parallel": the style of this rule's outputs, or NULL */
} d9_rule;

typedef struct d9_param {
  const char *name;
  int64_t value;
} d9_param;

typedef struct d9_spec {
  const char *path;      /* for messages */
  cJSON *root;           /* owned */
  d9_arena *arena;
  int nparams;
  d9_param *params;      /* resolved by d9_spec_resolve_params */
  int nignore;
  const char **ignore;   /* patterns */
  int nrules;
  d9_rule *rules;
  int passthrough;       /* unmatched tensors keep name and dtype */
  int strict;            /* unused source tensors are an error (default 1) */
  int lenient;           /* mount option: findings go to the report, not fail */
  int reversed;          /* made by d9_spec_reverse */
  int nlossy;
  const char **lossy;    /* reversed specs: the steps whose inverse is lossy, one line
                            each (arena-owned, room for one per step) */
  uint64_t max_shard_size; /* bytes of tensor data per output shard */
  int single_file;       /* one model.safetensors whatever the size */
  int ncopy;
  const char **copy;     /* glob patterns of source files to copy */
  int npar;
  d9_parallel *par;      /* "parallel": default styles by target-name pattern, first match wins */
  d9_pipeline pipeline;  /* "pipeline"; pipeline.layers NULL = none */
  const cJSON *config_set; /* "config": {"set": {...}}, borrowed from root; NULL = none */
  int nconfig_delete;
  const char **config_delete; /* "config": {"delete": [...]} */
  const char **config_set_raw; /* each "set" value's text as written, in order; NULL = none
                                  (config_patch.c) */
  const char *description;     /* "description", or NULL (applies.c) */
  const struct d9_applies *applies; /* "applies_to", or NULL = not declared (applies.h) */
} d9_spec;

/* The inverse spec of f (see spec_reverse.c). It borrows f's strings, so f
 * must outlive it. f's params must be resolved (step counts may be
 * expressions, evaluated with config); the caller resolves the reversed
 * spec's params again. 0 or -errno. */
int d9_spec_reverse(const d9_spec *f, const cJSON *config, d9_spec **out, d9_diag *diag);

/* Parse spec text. Returns 0 or -EINVAL with diag naming the spec path
 * and location. */
int d9_spec_parse(const char *text, size_t len, const char *path,
                  d9_spec **out, d9_diag *diag);
void d9_spec_destroy(d9_spec *s); /* accepts NULL */

/* Resolve "params" in order against config (may be NULL). */
int d9_spec_resolve_params(d9_spec *s, const cJSON *config, d9_diag *diag);

/* Evaluate an integer argument: a JSON integer or an expression string over
 * params and config. Returns 0 or -EINVAL with diag naming `where`. */
int d9_spec_int(const d9_spec *s, const cJSON *config, const cJSON *v,
                const char *where, int64_t *out, d9_diag *diag);

/* Look a name up in params, then in config (integers and booleans; dots
 * reach into nested objects and arrays). 0, -ENOENT, or -EINVAL. */
int d9_spec_lookup(const d9_spec *s, const cJSON *config, const char *name,
                   size_t len, int64_t *v, d9_diag *diag);

#endif
