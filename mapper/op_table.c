/* op_table.c - the op table (op_table.h): lookup, the parse-time decoder
 * of step arguments, and their evaluation when the graph is built. */
#include "op_table.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "expr.h"
#include "json_strict.h"

static const d9_op_def *const table[D9_STEP_COUNT] = {
#define D9_X(k, name) [D9_STEP_##k] = &d9_op_##name,
    D9_STEP_TABLE(D9_X)
#undef D9_X
};

const d9_op_def *d9_op_get(d9_step_kind k) {
  return k >= 0 && k < D9_STEP_COUNT ? table[k] : NULL;
}

const d9_op_def *d9_op_find(const char *name) {
  for (int k = 0; k < D9_STEP_COUNT; k++)
    if (!strcmp(table[k]->name, name)) return table[k];
  return NULL;
}

const char *d9_step_name(d9_step_kind k) {
  const d9_op_def *d = d9_op_get(k);
  return d ? d->name : "?";
}

/* ---- expression syntax (expr.h's grammar, without values) ---- */

typedef struct syn {
  const char *p, *why;
  int depth;
} syn;

static void syn_ws(syn *s) {
  while (*s->p == ' ' || *s->p == '\t') s->p++;
}

static int syn_expr(syn *s);

static int syn_unary(syn *s) {
  syn_ws(s);
  if (*s->p == '-') {
    if (++s->depth > 32) return s->why = "nested too deeply", -1;
    s->p++;
    int rc = syn_unary(s);
    s->depth--;
    return rc;
  }
  if (*s->p == '(') {
    if (++s->depth > 32) return s->why = "nested too deeply", -1;
    s->p++;
    if (syn_expr(s)) return -1;
    syn_ws(s);
    if (*s->p != ')') return s->why = "expected ')'", -1;
    s->p++;
    s->depth--;
    return 0;
  }
  if (isdigit((unsigned char)*s->p)) {
    int64_t x = 0;
    for (; isdigit((unsigned char)*s->p); s->p++) {
      int d = *s->p - '0';
      if (x > (INT64_MAX - d) / 10) return s->why = "integer overflows 64 bits", -1;
      x = x * 10 + d;
    }
    return 0;
  }
  if (isalpha((unsigned char)*s->p) || *s->p == '_') {
    while (isalnum((unsigned char)*s->p) || *s->p == '_' || *s->p == '.') s->p++;
    return 0;
  }
  return s->why = *s->p ? "unexpected character" : "unexpected end", -1;
}

static int syn_expr(syn *s) {
  for (;;) {
    if (syn_unary(s)) return -1;
    syn_ws(s);
    if (!*s->p || !strchr("+-*/%", *s->p)) return 0;
    s->p++;
  }
}

/* Is text a well-formed expression? 0, or -1 with *why and *at set. */
static int expr_syntax(const char *text, const char **why, size_t *at) {
  syn s = {text, NULL, 0};
  if (!syn_expr(&s)) {
    syn_ws(&s);
    if (!*s.p) return 0;
    s.why = "unexpected trailing text";
  }
  *why = s.why;
  *at = (size_t)(s.p - text);
  return -1;
}

/* ---- decoding ---- */

static int decode_int(const d9_arg_def *d, const cJSON *v, int literal_only, const char *path,
                      const char *where, const char *key, d9_ival *out, d9_diag *diag) {
  *out = (d9_ival){NULL, 0, 1};
  if (cJSON_IsNumber(v)) {
    if (d9_json_int(v, -D9_ARG_INT_MAX, D9_ARG_INT_MAX, &out->lit))
      return d9_diag_fail(diag, EINVAL, "%s: %s.%s: not an integer", path, where, key);
    if (out->lit < d->lo || out->lit > d->hi)
      return d9_diag_fail(diag, EINVAL, "%s: %s.%s: %lld is out of range, the limits are %lld..%lld",
                          path, where, key, (long long)out->lit, (long long)d->lo,
                          (long long)d->hi);
    return 0;
  }
  if (literal_only || !cJSON_IsString(v))
    return d9_diag_fail(diag, EINVAL, "%s: %s.%s: want an integer%s", path, where, key,
                        literal_only ? "" : " or an expression string");
  const char *why;
  size_t at;
  if (expr_syntax(v->valuestring, &why, &at))
    return d9_diag_fail(diag, EINVAL, "%s: %s.%s: expression '%.80s%s': %s at byte %zu", path,
                        where, key, v->valuestring, strlen(v->valuestring) > 80 ? "..." : "",
                        why, at);
  out->expr = v->valuestring;
  return 0;
}

static int decode_list(const d9_arg_def *d, const cJSON *v, d9_arena *arena, const char *path,
                       const char *where, d9_ilist *out, d9_diag *diag) {
  int scalar = d->type == D9_ARG_INT_OR_INTS && !cJSON_IsArray(v);
  int n = scalar ? 1 : cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
  char lim[48];
  if (d->max_n == INT32_MAX) snprintf(lim, sizeof lim, "at least %d", d->min_n);
  else if (d->min_n == d->max_n) snprintf(lim, sizeof lim, "%d", d->min_n);
  else snprintf(lim, sizeof lim, "%d..%d", d->min_n, d->max_n);
  if (n < 0)
    return d9_diag_fail(diag, EINVAL, "%s: %s.%s: want a list of integers (%s)", path, where,
                        d->key, lim);
  if (!scalar && (n < d->min_n || n > d->max_n))
    return d9_diag_fail(diag, EINVAL, "%s: %s.%s: %d values, want %s", path, where,
                        d->key, n, lim);
  out->v = d9_arena_calloc(arena, (size_t)n + 1, sizeof *out->v);
  if (!out->v) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", path);
  out->n = n;
  out->scalar = scalar;
  if (scalar) return decode_int(d, v, 0, path, where, d->key, &out->v[0], diag);
  int i = 0;
  const cJSON *e;
  cJSON_ArrayForEach(e, v) {
    char key[64];
    snprintf(key, sizeof key, "%s[%d]", d->key, i);
    int rc = decode_int(d, e, d->type == D9_ARG_LIT_INTS, path, where, key, &out->v[i++], diag);
    if (rc) return rc;
  }
  return 0;
}

static int decode_one(const d9_arg_def *d, const cJSON *v, d9_arena *arena, const char *path,
                      const char *where, d9_step_args *a, d9_diag *diag) {
  void *field = (char *)a + d->off;
  switch (d->type) {
    case D9_ARG_INT: return decode_int(d, v, 0, path, where, d->key, field, diag);
    case D9_ARG_INTS:
    case D9_ARG_INT_OR_INTS:
    case D9_ARG_LIT_INTS: return decode_list(d, v, arena, path, where, field, diag);
    case D9_ARG_FLOAT:
      if (!cJSON_IsNumber(v) || v->valuedouble != v->valuedouble)
        return d9_diag_fail(diag, EINVAL, "%s: %s.%s: want a number", path, where, d->key);
      *(double *)field = v->valuedouble;
      return 0;
    case D9_ARG_DTYPE: {
      d9_dtype t = cJSON_IsString(v) ? d9_dtype_parse(v->valuestring, strlen(v->valuestring))
                                     : D9_DTYPE_INVALID;
      if (t == D9_DTYPE_INVALID || !d9_dtype_is_castable(t))
        return d9_diag_fail(diag, EINVAL, "%s: %s: \"%s\" must be F32, F16, BF16, F8_E4M3 or "
                            "F8_E5M2", path, where, d->key);
      *(d9_dtype *)field = t;
      return 0;
    }
    case D9_ARG_WORD:
      for (int i = 0; cJSON_IsString(v) && d->words[i]; i++)
        if (!strcmp(v->valuestring, d->words[i])) {
          a->word = i, a->word_given = 1;
          return 0;
        }
      return d9_diag_fail(diag, EINVAL, "%s: %s: \"%s\" must be \"%s\" or \"%s\"", path, where,
                          d->key, d->words[0], d->words[1]);
  }
  return -EINVAL;
}

/* The value of an absent key. */
static void set_default(const d9_arg_def *d, d9_step_args *a) {
  void *field = (char *)a + d->off;
  switch (d->type) {
    case D9_ARG_INT: *(d9_ival *)field = (d9_ival){NULL, d->def, 0}; break;
    case D9_ARG_FLOAT: *(double *)field = (double)d->def; break;
    case D9_ARG_DTYPE: *(d9_dtype *)field = D9_DTYPE_INVALID; break;
    default: break; /* lists: n = 0; words: word_given = 0 */
  }
}

int d9_op_decode(const d9_op_def *def, const cJSON *j, d9_arena *arena, const char *path,
                 const char *where, d9_step_args *out, d9_diag *diag) {
  static const char *const common[] = {"op", "in", "out", "comment"};
  const cJSON *e;
  *out = (d9_step_args){0};
  cJSON_ArrayForEach(e, j) {
    int ok = 0;
    for (int i = 0; i < 4 && !ok; i++) ok = !strcmp(e->string, common[i]);
    for (const d9_arg_def *d = def->args; d->key && !ok; d++) ok = !strcmp(e->string, d->key);
    if (!ok) return d9_diag_fail(diag, EINVAL, "%s: %s: unknown key '%s'", path, where, e->string);
  }
  for (const d9_arg_def *d = def->args; d->key; d++) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, d->key);
    set_default(d, out);
    if (!v && d->required)
      return d9_diag_fail(diag, EINVAL, "%s: %s: missing \"%s\"", path, where, d->key);
    int rc = v ? decode_one(d, v, arena, path, where, out, diag) : 0;
    if (rc) return rc;
  }
  return def->check ? def->check(out, path, where, diag) : 0;
}

/* ---- evaluation ---- */

typedef struct lookup_ctx {
  const d9_spec *s;
  const cJSON *config;
} lookup_ctx;

static int lookup_cb(void *ctx, const char *name, size_t len, int64_t *v, d9_diag *diag) {
  lookup_ctx *lc = ctx;
  return d9_spec_lookup(lc->s, lc->config, name, len, v, diag);
}

/* The key of *v in st's op (field or list entry), and the entry index. */
static const d9_arg_def *key_of(const d9_step *st, const d9_ival *v, int *idx) {
  const char *base = (const char *)st->args;
  *idx = -1;
  for (const d9_arg_def *d = st->def->args; d->key; d++) {
    if (base + d->off == (const char *)v) return d;
    if (d->type == D9_ARG_INTS || d->type == D9_ARG_INT_OR_INTS || d->type == D9_ARG_LIT_INTS) {
      const d9_ilist *l = (const d9_ilist *)(base + d->off);
      if (v >= l->v && v < l->v + l->n) return *idx = (int)(v - l->v), d;
    }
  }
  return NULL;
}

int d9_op_int_quiet(const d9_spec *s, const cJSON *config, const d9_ival *v, int64_t *out) {
  if (!v->expr) return *out = v->lit, 0;
  lookup_ctx lc = {s, config};
  return d9_expr_eval(v->expr, lookup_cb, &lc, "", out, NULL) ? -EINVAL : 0;
}

int d9_op_int(const d9_step_ctx *b, const d9_step *st, const d9_ival *v, int64_t *out) {
  int idx;
  const d9_arg_def *d = key_of(st, v, &idx);
  char key[96], where[1024];
  if (!d) return d9_diag_fail(b->diag, EINVAL, "%s: %s: bad argument", b->s->path, st->where);
  if (idx >= 0) snprintf(key, sizeof key, "%s[%d]", d->key, idx);
  else snprintf(key, sizeof key, "%s", d->key);
  if (!v->expr) return *out = v->lit, 0; /* range-checked at parse */
  lookup_ctx lc = {b->s, b->config};
  snprintf(where, sizeof where, "%s: %s.%s", b->s->path, st->where, key);
  int rc = d9_expr_eval(v->expr, lookup_cb, &lc, where, out, b->diag);
  if (rc) return rc;
  if (*out < d->lo || *out > d->hi)
    return d9_diag_fail(b->diag, EINVAL, "%s: '%s' is %lld, out of range, the limits are "
                        "%lld..%lld", where, v->expr, (long long)*out, (long long)d->lo,
                        (long long)d->hi);
  return 0;
}

int d9_op_add(int64_t a, int64_t b, int64_t *out, const char *where, const char *what,
              d9_diag *diag) {
  if (__builtin_add_overflow(a, b, out))
    return d9_diag_fail(diag, EINVAL, "%s: %s: %lld + %lld overflows", where, what, (long long)a,
                        (long long)b);
  return 0;
}

int d9_op_mul(int64_t a, int64_t b, int64_t *out, const char *where, const char *what,
              d9_diag *diag) {
  if (__builtin_mul_overflow(a, b, out))
    return d9_diag_fail(diag, EINVAL, "%s: %s: %lld * %lld overflows", where, what, (long long)a,
                        (long long)b);
  return 0;
}

int d9_op_check_given(const d9_step_ctx *b, const d9_step *st, const d9_ilist *l,
                      const char *key, int n, int64_t (*want_at)(d9_node **x, int i, int dim),
                      d9_node **x, int dim, int minus1, const char *where) {
  if (!l->n) return 0;
  if (l->n != n)
    return d9_diag_fail(b->diag, EINVAL, "%s: \"%s\" lists %d values, the input has %d", where,
                        key, l->n, n);
  for (int i = 0; i < n; i++) {
    int64_t got, want = want_at(x, i, dim);
    if (d9_op_int(b, st, &l->v[i], &got)) return -EINVAL;
    if (got != want && !(got == -1 && minus1))
      return d9_diag_fail(b->diag, EINVAL, "%s: \"%s\" value %d is %lld but the input has %lld "
                          "(--reverse relies on it)", where, key, i, (long long)got,
                          (long long)want);
  }
  return 0;
}
