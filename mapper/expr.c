#include "expr.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>

enum { MAX_DEPTH = 32 };

typedef struct parser {
  const char *text, *p;
  d9_expr_lookup lookup;
  void *ctx;
  const char *where;
  d9_diag *diag;
  int depth;
} parser;

static int fail(parser *ps, const char *why) {
  int long_text = strlen(ps->text) > 80;
  return d9_diag_fail(ps->diag, EINVAL, "%s: expression '%.80s%s': %s at byte %zu",
                      ps->where, ps->text, long_text ? "..." : "", why,
                      (size_t)(ps->p - ps->text));
}

static void skip_ws(parser *ps) {
  while (*ps->p == ' ' || *ps->p == '\t') ps->p++;
}

static int parse_expr(parser *ps, int64_t *v);

static int parse_atom(parser *ps, int64_t *v) {
  skip_ws(ps);
  const char *s = ps->p;
  if (*s == '(') {
    if (++ps->depth > MAX_DEPTH) return fail(ps, "nested too deeply");
    ps->p++;
    int rc = parse_expr(ps, v);
    if (rc) return rc;
    skip_ws(ps);
    if (*ps->p != ')') return fail(ps, "expected ')'");
    ps->p++;
    ps->depth--;
    return 0;
  }
  if (isdigit((unsigned char)*s)) {
    int64_t x = 0;
    while (isdigit((unsigned char)*ps->p)) {
      int d = *ps->p - '0';
      if (x > (INT64_MAX - d) / 10) return fail(ps, "integer overflows 64 bits");
      x = x * 10 + d;
      ps->p++;
    }
    *v = x;
    return 0;
  }
  if (isalpha((unsigned char)*s) || *s == '_') {
    while (isalnum((unsigned char)*ps->p) || *ps->p == '_' || *ps->p == '.') ps->p++;
    size_t len = (size_t)(ps->p - s);
    int rc = ps->lookup(ps->ctx, s, len, v, ps->diag);
    if (rc == -ENOENT)
      return d9_diag_fail(ps->diag, EINVAL,
                          "%s: expression '%.80s': unknown name '%.*s' (not a "
                          "parameter and not an integer in config.json)",
                          ps->where, ps->text, (int)len, s);
    return rc;
  }
  return fail(ps, *s ? "unexpected character" : "unexpected end");
}

static int parse_unary(parser *ps, int64_t *v) {
  skip_ws(ps);
  if (*ps->p == '-') {
    if (++ps->depth > MAX_DEPTH) return fail(ps, "nested too deeply");
    ps->p++;
    int rc = parse_unary(ps, v);
    if (rc) return rc;
    if (*v == INT64_MIN) return fail(ps, "overflow");
    *v = -*v;
    ps->depth--;
    return 0;
  }
  return parse_atom(ps, v);
}

static int parse_term(parser *ps, int64_t *v) {
  int rc = parse_unary(ps, v);
  while (!rc) {
    skip_ws(ps);
    char op = *ps->p;
    if (op != '*' && op != '/' && op != '%') break;
    ps->p++;
    int64_t r;
    if ((rc = parse_unary(ps, &r))) break;
    if (op == '*') {
      if (__builtin_mul_overflow(*v, r, v)) return fail(ps, "multiplication overflows");
    } else {
      if (r == 0) return fail(ps, "division by zero");
      if (*v < 0 || r < 0) return fail(ps, "'/' and '%' need non-negative operands");
      *v = op == '/' ? *v / r : *v % r;
    }
  }
  return rc;
}

static int parse_expr(parser *ps, int64_t *v) {
  int rc = parse_term(ps, v);
  while (!rc) {
    skip_ws(ps);
    char op = *ps->p;
    if (op != '+' && op != '-') break;
    ps->p++;
    int64_t r;
    if ((rc = parse_term(ps, &r))) break;
    if (op == '+' ? __builtin_add_overflow(*v, r, v) : __builtin_sub_overflow(*v, r, v))
      return fail(ps, op == '+' ? "addition overflows" : "subtraction overflows");
  }
  return rc;
}

int d9_expr_eval(const char *text, d9_expr_lookup lookup, void *ctx,
                 const char *where, int64_t *out, d9_diag *diag) {
  parser ps = {text, text, lookup, ctx, where, diag, 0};
  int rc = parse_expr(&ps, out);
  if (rc) return rc;
  skip_ws(&ps);
  if (*ps.p) return fail(&ps, "unexpected trailing text");
  return 0;
}
