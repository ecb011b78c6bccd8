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

typedef enum {
  D9_STEP_CAST,
  D9_STEP_CONCAT,
  D9_STEP_STACK,
  D9_STEP_CHUNK,
  D9_STEP_SPLIT,
  D9_STEP_QKV,
  D9_STEP_QKV_SPLIT,
  D9_STEP_RESHAPE,
} d9_step_kind;

typedef struct d9_step {
  d9_step_kind kind;
  const char *op;        /* as written */
  const char *where;     /* "rules[3] (qkv).steps[0]" */
  const cJSON *j;        /* the step object, for its arguments; owned by the spec */
  int nin, nout;         /* 0 = default (see spec.c) */
  const char **in, **out;/* value names */
} d9_step;

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
  uint64_t max_shard_size; /* bytes of tensor data per output shard */
  int single_file;       /* one model.safetensors whatever the size */
  int ncopy;
  const char **copy;     /* glob patterns of source files to copy */
} d9_spec;

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
