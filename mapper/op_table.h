/* op_table.h - the step operations as one table.
 *
 * Each op (cast, concat, qkv, ...) is one d9_op_def: its name, its argument
 * keys with their types, defaults and ranges, the parse-time checks of
 * those arguments, the builder of its graph nodes, its inverse for
 * --reverse, whether that inverse is lossy, and its element locality. The
 * spec parser (spec.c) decodes every step's JSON into a typed
 * d9_step_args with d9_op_decode() when the spec is read, so a bad argument
 * is refused, naming its spec location, before any tensor is looked at;
 * steps.c runs def->build while the graph is built; spec_reverse.c calls
 * def->invert. None of them switches on op names.
 *
 * Adding an op: one X line in D9_STEP_TABLE (spec.h), one d9_op_def named
 * d9_op_<name> in an op family file (op_layout.c, op_fused.c,
 * op_values.c, op_copy.c), its tests and its section in docs/spec.md. A
 * new argument key adds a field to d9_step_args.
 *
 * Integer arguments are literals or expressions over params and
 * config.json: a literal is range-checked at parse, an expression has its
 * syntax checked at parse and is evaluated, and range-checked, when the
 * graph is built (d9_op_int).
 */
#ifndef D9_OP_TABLE_H
#define D9_OP_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "node.h"
#include "spec.h"
#include "steps.h"

/* ---- named limits (docs/spec.md "Limits") ---- */
#define D9_STEP_MAX_OUTPUTS 64 /* values one step makes (unstack slices) */
#define D9_STEP_MAX_PARTS 32   /* parts of chunk, split, deinterleave */
#define D9_BLOCK_MAX (1 << 20) /* FP8 block rows / cols */
#define D9_ARG_INT_MAX (INT64_C(1) << 53) /* |literal| of any integer argument */

/* An integer argument: a literal or an expression (arena-borrowed from the
 * spec's JSON). */
typedef struct d9_ival {
  const char *expr; /* expression text; NULL = the literal lit */
  int64_t lit;      /* the literal, or the default when !given */
  int given;        /* 1 = written in the spec */
} d9_ival;

/* A list of integer arguments. */
typedef struct d9_ilist {
  int n;            /* entries; 0 = not given */
  d9_ival *v;       /* arena-owned (the spec's or the reversed spec's) */
  int scalar;       /* written as one value, not a list ("block": 128) */
} d9_ilist;

/* The typed arguments of a step: the union of every op's keys. An op reads
 * only the fields its d9_op_def lists; the others stay zero. */
typedef struct d9_step_args {
  d9_ival dim, dim0, dim1, start, end;
  d9_ival chunks, parts, group;
  d9_ival heads, groups, head_dim;
  d9_ival rows, multiple, from_rows;
  d9_ival copies;       /* copy */
  d9_ilist sizes, shape, from_shape, dims, block;
  d9_dtype to, from;    /* cast; D9_DTYPE_INVALID = not given */
  int word;             /* rope "to": index into the key's words (0 half, 1 interleaved) */
  int word_given;
  double mul, add;      /* affine (JSON numbers, no expressions) */
} d9_step_args;

typedef enum {
  D9_ARG_INT,         /* integer literal or expression string -> d9_ival */
  D9_ARG_INTS,        /* list of those -> d9_ilist */
  D9_ARG_INT_OR_INTS, /* one of those, or a list -> d9_ilist (scalar = 1) */
  D9_ARG_LIT_INTS,    /* list of integer literals only -> d9_ilist */
  D9_ARG_FLOAT,       /* JSON number, not NaN -> double */
  D9_ARG_DTYPE,       /* a castable dtype name -> d9_dtype */
  D9_ARG_WORD,        /* one of words[] -> int index */
} d9_arg_type;

/* One argument key of an op. */
typedef struct d9_arg_def {
  const char *key;
  d9_arg_type type;
  size_t off;                /* offsetof(d9_step_args, field) */
  int required;
  int64_t lo, hi;            /* integers (list entries): the allowed range */
  int64_t def;               /* integer default when absent; FLOAT default (as a value) */
  int min_n, max_n;          /* lists: the allowed entry count */
  const char *const *words;  /* WORD: NULL-terminated */
} d9_arg_def;

#define D9_OP_MAX_ARGS 8

/* Element locality: what source range a target range of the op needs. */
typedef enum {
  D9_LOCAL_VIEW,  /* same elements, flat ranges unchanged (reshape, squeeze) */
  D9_LOCAL_COPY,  /* each output range maps to input ranges of the same size (byte copy) */
  D9_LOCAL_TILED, /* permutes: a range needs the 2-D tiles of the last two dims it touches */
  D9_LOCAL_ELEM,  /* elementwise: the same range of the input (cast, affine) */
  D9_LOCAL_BLOCK, /* FP8 blocks: the whole blocks (and scales) the range touches */
} d9_op_locality;

/* Is the inverse lossy? */
typedef enum {
  D9_LOSSY_NEVER,
  D9_LOSSY_ALWAYS,
  D9_LOSSY_NARROWING, /* cast: when `to` cannot hold every value of `from` */
} d9_op_lossy;

/* What def->invert fills in. */
typedef struct d9_op_inv {
  d9_arena *arena;    /* the reversed spec's; in: for argument lists */
  int nin;            /* in: the forward step's input count */
  d9_step_kind kind;  /* out: the inverse op */
  d9_step_args args;  /* out: its arguments */
  const char *lossy;  /* out: why the round trip is inexact, or NULL */
  const char *refuse; /* out with -EINVAL: why there is no inverse */
} d9_op_inv;

typedef struct d9_op_def {
  const char *name;
  d9_step_kind kind;
  int nin;              /* inputs: exactly nin, or 0 = one or more */
  const char *in_desc;  /* for nin > 1: "three inputs (q, k, v)" */
  int nout;             /* outputs when fixed, else 0 (see nouts) */
  d9_op_lossy lossy;
  d9_op_locality locality;
  d9_arg_def args[D9_OP_MAX_ARGS]; /* terminated by key NULL */
  /* Parse-time checks across keys (may be NULL). 0 or -EINVAL with diag
   * naming path and where. */
  int (*check)(const d9_step_args *a, const char *path, const char *where, d9_diag *diag);
  /* Make the nodes: x[0..nx) -> y[0..*ny), *ny <= D9_STEP_MAX_OUTPUTS.
   * nx already matches nin. 0 or -errno with b->diag set. */
  int (*build)(const d9_step_ctx *b, const d9_step *st, d9_node **x, int nx, d9_node **y,
               int *ny, const char *where);
  /* Outputs when not fixed: the count, or -1 when only the shapes know it
   * (config may be NULL). */
  int (*nouts)(const d9_spec *s, const cJSON *config, const d9_step *st);
  /* The inverse step; 0, -EINVAL with inv->refuse set, or -ENOMEM. */
  int (*invert)(const d9_step *st, d9_op_inv *inv);
} d9_op_def;

/* The entry of an op kind (never NULL for 0 <= k < D9_STEP_COUNT), and by
 * name (NULL if unknown). */
const d9_op_def *d9_op_get(d9_step_kind k);
const d9_op_def *d9_op_find(const char *name);

/* Decode the arguments of step object j (every key but op/in/out/comment)
 * into *out, allocating lists from arena. Unknown keys, missing required
 * keys, wrong types, literals out of range and expressions with bad syntax
 * are refused: -EINVAL with diag "path: where.key: reason". -ENOMEM. */
int d9_op_decode(const d9_op_def *def, const cJSON *j, d9_arena *arena, const char *path,
                 const char *where, d9_step_args *out, d9_diag *diag);

/* Evaluate integer argument *v of step st (a field of st->args, or an
 * entry of one of its lists) with params and config, and check it against
 * the key's range. 0 or -EINVAL with diag naming the key. */
int d9_op_int(const d9_step_ctx *b, const d9_step *st, const d9_ival *v, int64_t *out);

/* Evaluate without a context (params resolved, config may be NULL); no
 * message. 0 or -EINVAL. */
int d9_op_int_quiet(const d9_spec *s, const cJSON *config, const d9_ival *v, int64_t *out);

/* Checked size arithmetic for argument values: 0, or -EINVAL with diag
 * "where: what: a op b overflows". */
int d9_op_add(int64_t a, int64_t b, int64_t *out, const char *where, const char *what,
              d9_diag *diag);
int d9_op_mul(int64_t a, int64_t b, int64_t *out, const char *where, const char *what,
              d9_diag *diag);

/* ---- for op entries ---- */

/* Argument definitions (the ranges apply to literals at parse and to
 * evaluated expressions at build). */
#define D9_ARG(k, type, field, req, lo, hi, def, min_n, max_n) \
  {k, type, offsetof(d9_step_args, field), req, lo, hi, def, min_n, max_n, NULL}
#define D9_ARG_DIM_LO (-(D9_MAX_DIMS + 1))
#define D9_ARG_DIM_HI D9_MAX_DIMS

/* Dim d of an ndim tensor (+extra allowed past the end), negative from the
 * end; 0 or -1 when out of range. */
static inline int d9_op_dim(int64_t dim, int ndim, int extra, int *out) {
  if (dim < 0) dim += ndim + extra;
  if (dim < 0 || dim >= ndim + extra) return -1;
  *out = (int)dim;
  return 0;
}

/* An argument only --reverse uses ("sizes", "from_rows", "from_shape")
 * must describe the forward input truly: list l (when given) must equal
 * want[0..n) (want_at(i) for i < n), -1 entries allowed when minus1. 0 or
 * -EINVAL naming `key`. */
int d9_op_check_given(const d9_step_ctx *b, const d9_step *st, const d9_ilist *l,
                      const char *key, int n, int64_t (*want_at)(d9_node **x, int i, int dim),
                      d9_node **x, int dim, int minus1, const char *where);

/* The op family entries (op_layout.c, op_fused.c, op_values.c, op_copy.c). */
#define D9_X(k, name) extern const d9_op_def d9_op_##name;
D9_STEP_TABLE(D9_X)
#undef D9_X

#endif
