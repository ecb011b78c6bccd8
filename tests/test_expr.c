/* test_expr.c - integer expressions (mapper/expr.h): table driven, every
 * failing case checking the return code and a substring of the diag
 * message, and a seeded random test comparing d9_expr_eval with a
 * reference evaluation of generated expressions (the seed is printed;
 * D9_TEST_SEED overrides). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mapper/expr.h"
#include "mapper/json_strict.h"
#include "mapper/spec.h"


/* ---- helpers ---- */

static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* ---- d9_expr_eval with a table lookup ---- */

static const struct { const char *name; int64_t v; } names[] = {
    {"a", 3}, {"b", 4}, {"x.y.0", 5}, {"big", INT64_MAX}, {"neg", -2}, {"_u9", 9},
};

static int calls; /* lookups made during one evaluation */

static int table_lookup(void *ctx, const char *name, size_t len, int64_t *v, d9_diag *diag) {
  assert_ptr_equal(ctx, &calls);
  calls++;
  if (len == 3 && !memcmp(name, "bad", 3))
    return d9_diag_fail(diag, EINVAL, "config.json: 'bad' is not an integer");
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if (strlen(names[i].name) == len && !memcmp(names[i].name, name, len)) {
      *v = names[i].v;
      return 0;
    }
  return -ENOENT;
}

typedef struct ecase {
  const char *text;          /* NULL: gen */
  char *(*gen)(void);
  int rc;
  int64_t want;
  const char *msg;           /* substring of the message when rc != 0 */
} ecase;

static char *nest(int n, const char *open, const char *mid, const char *close) {
  size_t lo = strlen(open), lm = strlen(mid), lc = strlen(close);
  char *b = malloc((size_t)n * (lo + lc) + lm + 1), *p = b;
  assert_non_null(b);
  for (int i = 0; i < n; i++, p += lo) memcpy(p, open, lo);
  memcpy(p, mid, lm);
  p += lm;
  for (int i = 0; i < n; i++, p += lc) memcpy(p, close, lc);
  *p = 0;
  return b;
}
static char *gen_paren_32(void) { return nest(32, "(", "7", ")"); }
static char *gen_paren_33(void) { return nest(33, "(", "7", ")"); }
static char *gen_paren_100(void) { return nest(100, "(", "7", ")"); }
static char *gen_paren_100000(void) { return nest(100000, "(", "7", ")"); }
static char *gen_open_100000(void) { return nest(100000, "(", "", ""); }
static char *gen_minus_32(void) { return nest(32, "-", "7", ""); }
static char *gen_minus_100000(void) { return nest(100000, "-", "7", ""); }
static char *gen_mixed_100(void) { return nest(100, "-(", "1", ")"); }
/* 100 parenthesised groups one after another: depth 1 each, no limit hit */
static char *gen_flat_1000(void) {
  char *b = malloc(1000 * 4 + 2), *p = b;
  assert_non_null(b);
  for (int i = 0; i < 1000; i++) p += sprintf(p, "%s(1)", i ? "+" : "");
  return b;
}

static const ecase ecases[] = {
  /* values */
  {"2+3*4", NULL, 0, 14, NULL},
  {"(2+3)*4", NULL, 0, 20, NULL},
  {"2*3+4", NULL, 0, 10, NULL},
  {"10-4-3", NULL, 0, 3, NULL},
  {"100/10/5", NULL, 0, 2, NULL},
  {"2*3%4", NULL, 0, 2, NULL},
  {"7%3", NULL, 0, 1, NULL},
  {"7/2", NULL, 0, 3, NULL},
  {"0/5", NULL, 0, 0, NULL},
  {"-3", NULL, 0, -3, NULL},
  {"--3", NULL, 0, 3, NULL},
  {"2 - -3", NULL, 0, 5, NULL},
  {"-(2+3)*4", NULL, 0, -20, NULL},
  {"-2*-3", NULL, 0, 6, NULL},
  {" \t1 +\t1 \t", NULL, 0, 2, NULL},
  {"007", NULL, 0, 7, NULL},
  {"0", NULL, 0, 0, NULL},
  {"a*b", NULL, 0, 12, NULL},
  {"a * (b + _u9)", NULL, 0, 39, NULL},
  {"x.y.0 + 1", NULL, 0, 6, NULL},
  {"a + neg", NULL, 0, 1, NULL},
  {"neg * neg", NULL, 0, 4, NULL},
  {"9223372036854775807", NULL, 0, INT64_MAX, NULL},
  {"-9223372036854775807 - 1", NULL, 0, INT64_MIN, NULL},
  {"big", NULL, 0, INT64_MAX, NULL},
  {"3037000499*3037000499", NULL, 0, INT64_C(9223372030926249001), NULL},
  {NULL, gen_paren_32, 0, 7, NULL},
  {NULL, gen_minus_32, 0, 7, NULL},
  {NULL, gen_flat_1000, 0, 1000, NULL},
  /* names */
  {"foo", NULL, -EINVAL, 0, "W: expression 'foo': unknown name 'foo'"},
  {"a + foo.bar * 2", NULL, -EINVAL, 0, "unknown name 'foo.bar'"},
  {"x.y", NULL, -EINVAL, 0, "unknown name 'x.y'"},
  {"bad + 1", NULL, -EINVAL, 0, "config.json: 'bad' is not an integer"},
  /* arithmetic errors */
  {"1/0", NULL, -EINVAL, 0, "W: expression '1/0': division by zero at byte 3"},
  {"1%0", NULL, -EINVAL, 0, "division by zero"},
  {"a/(b-4)", NULL, -EINVAL, 0, "division by zero"},
  {"big+1", NULL, -EINVAL, 0, "overflows"},
  {"1+big", NULL, -EINVAL, 0, "overflows"},
  {"-big-2", NULL, -EINVAL, 0, "overflows"},
  {"0-big-2", NULL, -EINVAL, 0, "overflows"},
  {"big*2", NULL, -EINVAL, 0, "multiplication overflows"},
  {"3037000500*3037000500", NULL, -EINVAL, 0, "multiplication overflows"},
  {"-big*2", NULL, -EINVAL, 0, "multiplication overflows"},
  {"-(-big-1)", NULL, -EINVAL, 0, "overflow"},
  {"9223372036854775808", NULL, -EINVAL, 0, "integer overflows 64 bits"},
  {"-9223372036854775808", NULL, -EINVAL, 0, "integer overflows 64 bits"},
  {"99999999999999999999999", NULL, -EINVAL, 0, "integer overflows 64 bits"},
  {"neg/2", NULL, -EINVAL, 0, "'/' and '%' need non-negative operands"},
  {"7%neg", NULL, -EINVAL, 0, "'/' and '%' need non-negative operands"},
  {"-7/2", NULL, -EINVAL, 0, "'/' and '%' need non-negative operands"},
  {"7/-2", NULL, -EINVAL, 0, "'/' and '%' need non-negative operands"},
  {"-7%2", NULL, -EINVAL, 0, "'/' and '%' need non-negative operands"},
  /* syntax */
  {"", NULL, -EINVAL, 0, "W: expression '': unexpected end at byte 0"},
  {"   ", NULL, -EINVAL, 0, "unexpected end at byte 3"},
  {"1+", NULL, -EINVAL, 0, "unexpected end at byte 2"},
  {"-", NULL, -EINVAL, 0, "unexpected end"},
  {"1 2", NULL, -EINVAL, 0, "unexpected trailing text at byte 2"},
  {"2x", NULL, -EINVAL, 0, "unexpected trailing text at byte 1"},
  {"1)", NULL, -EINVAL, 0, "unexpected trailing text at byte 1"},
  {"(1", NULL, -EINVAL, 0, "expected ')' at byte 2"},
  {"()", NULL, -EINVAL, 0, "unexpected character at byte 1"},
  {"1 + * 2", NULL, -EINVAL, 0, "unexpected character at byte 4"},
  {"2**3", NULL, -EINVAL, 0, "unexpected character at byte 2"},
  {"+1", NULL, -EINVAL, 0, "unexpected character at byte 0"},
  {"$x", NULL, -EINVAL, 0, "unexpected character at byte 0"},
  {"1.5", NULL, -EINVAL, 0, "unexpected trailing text at byte 1"},
  {"0x10", NULL, -EINVAL, 0, "unexpected trailing text at byte 1"},
  /* depth */
  {NULL, gen_paren_33, -EINVAL, 0, "nested too deeply"},
  {NULL, gen_paren_100, -EINVAL, 0, "nested too deeply"},
  {NULL, gen_mixed_100, -EINVAL, 0, "nested too deeply"},
};

static void test_expr_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof ecases / sizeof *ecases; i++) {
    const ecase *c = &ecases[i];
    char *gen = c->gen ? c->gen() : NULL;
    const char *text = gen ? gen : c->text;
    d9_diag diag = {0};
    int64_t v = -12345;
    calls = 0;
    int rc = d9_expr_eval(text, table_lookup, &calls, "W", &v, &diag);
    char shown[64];
    snprintf(shown, sizeof shown, "%.40s%s", text, strlen(text) > 40 ? "..." : "");
    if (rc != c->rc)
      fail_msg("'%s': rc %d, want %d (%s)", shown, rc, c->rc, diag.msg);
    if (rc == 0 && (v != c->want || diag.set))
      fail_msg("'%s': %" PRId64 ", want %" PRId64 " (%s)", shown, v, c->want, diag.msg);
    if (rc && (!diag.set || !strstr(diag.msg, c->msg) ||
               (strncmp(diag.msg, "W: ", 3) && strncmp(diag.msg, "config.json: ", 13))))
      fail_msg("'%s': message '%s', want '%s'", shown, diag.msg, c->msg);
    free(gen);
  }
}

/* BUG (fails on purpose): an error in an expression longer than about
 * 1000 bytes loses its reason. fail() in expr.c writes
 * "W: expression '<the whole text>': <why> at byte N" and the diag holds
 * D9_DIAG_MAX (1024) bytes, so for the 100000 nested parentheses below
 * the message is "W: expression '((((...", cut inside the text, without
 * "nested too deeply" or the byte offset. The return code is right
 * (-EINVAL) and nothing crashes; expected a message that still names the
 * reason (e.g. with the text shortened). */
static void test_expr_long_text_keeps_reason(void **state) {
  (void)state;
  char *(*gens[])(void) = {gen_paren_100000, gen_open_100000, gen_minus_100000};
  char failures[1024] = "";
  for (size_t i = 0; i < sizeof gens / sizeof *gens; i++) {
    char *text = gens[i]();
    d9_diag diag = {0};
    int64_t v;
    calls = 0;
    int rc = d9_expr_eval(text, table_lookup, &calls, "W", &v, &diag);
    assert_int_equal(rc, -EINVAL); /* the code is right */
    if (!strstr(diag.msg, "nested too deeply")) {
      size_t o = strlen(failures);
      snprintf(failures + o, sizeof failures - o, "[%.12s... (%zu bytes): '%.40s...' (%zu)] ",
               text, strlen(text), diag.msg, strlen(diag.msg));
    }
    free(text);
  }
  if (failures[0]) fail_msg("message lacks 'nested too deeply': %s", failures);
}

/* The lookup sees each name once, with its exact length (not NUL-terminated
 * at the name's end); a NULL diag is allowed. */
static int rec_lookup(void *ctx, const char *name, size_t len, int64_t *v, d9_diag *diag) {
  char *seen = ctx;
  size_t o = strlen(seen);
  snprintf(seen + o, 256 - o, "[%.*s]", (int)len, name);
  *v = (int64_t)len;
  return 0;
}

static void test_expr_lookup_names(void **state) {
  (void)state;
  char seen[256] = "";
  int64_t v;
  assert_int_equal(d9_expr_eval("ab*(c.d.0 + e_f)-g", rec_lookup, seen, "W", &v, NULL), 0);
  assert_string_equal(seen, "[ab][c.d.0][e_f][g]");
  assert_int_equal(v, 2 * (5 + 3) - 1);
  assert_int_equal(d9_expr_eval("1 +", rec_lookup, seen, "W", &v, NULL), -EINVAL);
}

/* The first error wins: a message already in diag is kept. */
static void test_expr_diag_first_wins(void **state) {
  (void)state;
  d9_diag diag = {0};
  int64_t v;
  d9_diag_fail(&diag, EIO, "earlier");
  assert_int_equal(d9_expr_eval("1/0", table_lookup, &calls, "W", &v, &diag), -EINVAL);
  assert_string_equal(diag.msg, "earlier");
}

/* ---- seeded: random expressions against a reference evaluation ----
 *
 * Expressions are built left to right from the grammar (sums of products of
 * factors; a factor is a number, a name, a parenthesised sum or a unary
 * minus), and each value is computed as the text grows, with the grammar's
 * precedence and left associativity. An operand that would divide by a
 * non-positive value, use a negative dividend or leave [-B, B] is left
 * out, so every generated text is valid and its value known. */

enum { RB = 1000000000 }; /* bound on every intermediate value */

typedef struct sbuf {
  char *p;
  size_t n, cap;
} sbuf;

static void sb_put(sbuf *b, const char *s) {
  size_t l = strlen(s);
  if (b->n + l + 1 > b->cap) {
    b->cap = (b->n + l + 1) * 2;
    b->p = realloc(b->p, b->cap);
    assert_non_null(b->p);
  }
  memcpy(b->p + b->n, s, l + 1);
  b->n += l;
}

static int64_t gen_sum(uint64_t *st, int depth, sbuf *out);

static int64_t gen_factor(uint64_t *st, int depth, sbuf *out) {
  uint64_t r = splitmix64(st) % 8;
  if (depth < 3 && r == 0) {
    sb_put(out, "(");
    int64_t v = gen_sum(st, depth + 1, out);
    sb_put(out, ")");
    return v;
  }
  if (depth < 3 && r == 1) {
    sb_put(out, splitmix64(st) % 2 ? "- " : "-");
    return -gen_factor(st, depth + 1, out);
  }
  if (r == 2) return sb_put(out, "a"), 3;
  if (r == 3) return sb_put(out, "_u9"), 9;
  char num[32];
  int64_t v = (int64_t)(splitmix64(st) % 1000);
  snprintf(num, sizeof num, "%" PRId64, v);
  sb_put(out, num);
  return v;
}

static int in_bound(int64_t v) { return v >= -RB && v <= RB; }

static int64_t gen_term(uint64_t *st, int depth, sbuf *out) {
  int64_t acc = gen_factor(st, depth, out);
  int more = (int)(splitmix64(st) % 3);
  for (int i = 0; i < more; i++) {
    sbuf f = {0};
    sb_put(&f, "");
    int64_t x = gen_factor(st, depth, &f);
    static const char ops[] = "*/%";
    char op = ops[splitmix64(st) % 3];
    int64_t res;
    int ok;
    if (op == '*') ok = !__builtin_mul_overflow(acc, x, &res) && in_bound(res);
    else if ((ok = acc >= 0 && x > 0)) res = op == '/' ? acc / x : acc % x;
    if (ok) {
      char o[4] = {' ', op, ' ', 0};
      sb_put(out, splitmix64(st) % 2 ? o : o + 1);
      sb_put(out, f.p);
      acc = res;
    }
    free(f.p);
  }
  return acc;
}

static int64_t gen_sum(uint64_t *st, int depth, sbuf *out) {
  int64_t acc = gen_term(st, depth, out);
  int more = (int)(splitmix64(st) % 3);
  for (int i = 0; i < more; i++) {
    sbuf t = {0};
    sb_put(&t, "");
    int64_t x = gen_term(st, depth, &t);
    char op = splitmix64(st) % 2 ? '+' : '-';
    int64_t res = op == '+' ? acc + x : acc - x; /* |acc|, |x| <= RB: no overflow */
    if (in_bound(res)) {
      sb_put(out, op == '+' ? " + " : " - ");
      sb_put(out, t.p);
      acc = res;
    }
    free(t.p);
  }
  return acc;
}

static void test_expr_random(void **state) {
  (void)state;
  const char *e = getenv("D9_TEST_SEED");
  uint64_t st = e ? strtoull(e, NULL, 0) : (uint64_t)time(NULL);
  printf("test_expr: seed %llu (set D9_TEST_SEED to replay)\n", (unsigned long long)st);
  for (int iter = 0; iter < 20000; iter++) {
    sbuf b = {0};
    sb_put(&b, "");
    int64_t want = gen_sum(&st, 0, &b);
    d9_diag diag = {0};
    int64_t v = 0;
    calls = 0;
    int rc = d9_expr_eval(b.p, table_lookup, &calls, "W", &v, &diag);
    if (getenv("D9_TEST_VERBOSE") && iter < 20) printf("%s = %" PRId64 "\n", b.p, want);
    if (rc || v != want)
      fail_msg("'%s': rc %d value %" PRId64 " '%s', want %" PRId64, b.p, rc, v, diag.msg, want);
    free(b.p);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_expr_table),
      cmocka_unit_test(test_expr_long_text_keeps_reason),
      cmocka_unit_test(test_expr_lookup_names),
      cmocka_unit_test(test_expr_diag_first_wins),
      cmocka_unit_test(test_expr_random),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
