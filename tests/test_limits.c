/* test_limits.c - the named limits of the graph and the steps
 * (mapper/graph.h, mapper/op_table.h, docs/spec.md "Limits"): what fits
 * is served byte for byte, what does not is refused at once with a
 * message naming the rule, the count and the limit; integer arguments
 * never overflow. Sources are safetensors files written here with known
 * values. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>

#include "mapper/graph.h"
#include "mapper/plan.h"
#include "testutil.h"

/* A growable string. */
typedef struct str {
  char *p;
  size_t len, cap;
} str;

static void sadd(str *s, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int n = vsnprintf(s->p ? s->p + s->len : NULL, s->p ? s->cap - s->len : 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    if (s->p && (size_t)n < s->cap - s->len) {
      s->len += (size_t)n;
      return;
    }
    s->cap = (s->cap + (size_t)n + 1) * 2;
    s->p = realloc(s->p, s->cap);
    assert_non_null(s->p);
  }
}

/* SRC/model.safetensors with groups of tensors: for each g, count[g]
 * tensors "<prefix[g]>.<i>" of dtype dt and shape [rows] ([rows, 4] when
 * F32: element (r, j) = i * 1000 + r * 4 + j). */
static void write_src(const char *src, int ngroups, const char *const *prefix, const int *count,
                      int64_t rows, d9_dtype dt) {
  int n = 0;
  for (int g = 0; g < ngroups; g++) n += count[g];
  d9_st_tensor *t = calloc((size_t)n, sizeof *t);
  char **names = calloc((size_t)n, sizeof *names);
  assert_true(t && names);
  for (int g = 0, k = 0; g < ngroups; g++)
    for (int i = 0; i < count[g]; i++, k++) {
      names[k] = malloc(64);
      snprintf(names[k], 64, "%s.%d", prefix[g], i);
      t[k].name = names[k];
      t[k].dtype = dt;
      t[k].ndim = dt == D9_F32 ? 2 : 1;
      t[k].shape[0] = rows;
      t[k].shape[1] = 4;
    }
  unsigned char *hdr;
  uint64_t hlen;
  assert_int_equal(d9_st_write_header(t, n, NULL, NULL, 0, &hdr, &hlen), 0);
  assert_int_equal(mkdir(src, 0755), 0);
  char path[4300];
  snprintf(path, sizeof path, "%s/model.safetensors", src);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(hdr, 1, hlen, f), hlen);
  for (int k = 0; k < n; k++) {
    if (dt == D9_F32) {
      int i = atoi(strrchr(names[k], '.') + 1);
      for (int64_t e = 0; e < rows * 4; e++) {
        float v = (float)(i * 1000 + e);
        assert_int_equal(fwrite(&v, 4, 1, f), 1);
      }
    } else {
      static const unsigned char zero[4096];
      for (int64_t e = 0; e < rows; e += (int64_t)sizeof zero)
        assert_int_equal(fwrite(zero, 1, (size_t)(rows - e < 4096 ? rows - e : 4096), f),
                         (size_t)(rows - e < 4096 ? rows - e : 4096));
    }
    free(names[k]);
  }
  assert_int_equal(fclose(f), 0);
  free(hdr);
  free(names);
  free(t);
}

/* Mount src with spec text; NULL and diag set when refused (*rc the code). */
static d9_mount *try_open(const char *dir, const char *src, const char *text, int *rc,
                          d9_diag *diag) {
  char spec[4300];
  snprintf(spec, sizeof spec, "%s/spec.json", dir);
  tu_write(spec, text);
  d9_mount_opts o = {.src_dir = src, .spec_path = spec};
  d9_mount *m = NULL;
  *rc = d9_mount_open(&o, &m, diag);
  return m;
}

static void want_msg(const d9_diag *diag, const char *const *parts) {
  for (int i = 0; parts[i]; i++)
    if (!strstr(diag->msg, parts[i])) fail_msg("message '%s' lacks '%s'", diag->msg, parts[i]);
  assert_null(strchr(diag->msg, '\n'));
}

/* A rule with n inputs stacked (default inputs) and concatenated in
 * reverse order (a step whose "in" lists n names): served, every byte as
 * written, for n = 65, 100 (stack of 100 inputs), 300. */
static void test_many_inputs(void **state) {
  (void)state;
  static const int ns[] = {65, 100, 300};
  for (size_t c = 0; c < sizeof ns / sizeof *ns; c++) {
    int n = ns[c];
    char *dir = tu_tmpdir(), src[4200];
    snprintf(src, sizeof src, "%s/src", dir);
    const char *prefix = "t";
    write_src(src, 1, &prefix, &n, 3, D9_F32);
    str s = {0};
    sadd(&s, "{\"d9dfs_spec\": 1, \"rules\": [");
    for (int r = 0; r < 2; r++) {
      sadd(&s, "%s{\"name\": \"%s\", \"inputs\": {", r ? ", " : "", r ? "cat" : "stk");
      for (int i = 0; i < n; i++) sadd(&s, "%s\"a%d\": \"t.%d\"", i ? ", " : "", i, i);
      if (r == 0) {
        sadd(&s, "}, \"steps\": [{\"op\": \"stack\"}], \"output\": \"stacked\"}");
      } else {
        sadd(&s, "}, \"steps\": [{\"op\": \"concat\", \"in\": [");
        for (int i = n - 1; i >= 0; i--) sadd(&s, "\"a%d\"%s", i, i ? ", " : "");
        sadd(&s, "]}], \"output\": \"cat\"}");
      }
    }
    sadd(&s, "]}");
    d9_diag diag = {0};
    int rc;
    d9_mount *m = try_open(dir, src, s.p, &rc, &diag);
    if (!m) fail_msg("n = %d: rc %d: %s", n, rc, diag.msg);
    uint64_t len = 0;
    int idx = d9_mount_resolve(m, "model.safetensors");
    assert_true(idx > 0);
    unsigned char *f = tu_read_node(m, idx, &len);
    assert_non_null(f);
    d9_arena *a = d9_arena_create();
    d9_st_tensor t;
    const float *stk = (const float *)tu_find(f, len, "stacked", &t, a);
    assert_non_null(stk);
    assert_int_equal(t.ndim, 3);
    assert_int_equal(t.shape[0], n);
    const float *cat = (const float *)tu_find(f, len, "cat", &t, a);
    assert_non_null(cat);
    assert_int_equal(t.shape[0], 3 * n);
    for (int i = 0; i < n; i++)
      for (int e = 0; e < 12; e++) {
        if (stk[i * 12 + e] != (float)(i * 1000 + e))
          fail_msg("n = %d: stacked[%d][%d] = %g", n, i, e, stk[i * 12 + e]);
        if (cat[(n - 1 - i) * 12 + e] != (float)(i * 1000 + e))
          fail_msg("n = %d: cat part %d [%d] = %g", n, n - 1 - i, e, cat[(n - 1 - i) * 12 + e]);
      }
    d9_arena_destroy(a);
    free(f);
    d9_mount_close(m);
    free(s.p);
    tu_rmrf(dir);
    free(dir);
  }
}

/* Regression (issue: unbounded target count): one unstack rule over 300
 * tensors of 4096 rows would make 1,228,800 targets; three rules of 230
 * tensors each 942,080, 2,826,240 in all. Both are refused before any
 * instance is built: -E2BIG naming the rule, the count and the limit.
 * Before the limits the first built 1.2 M targets and mounted. */
static void test_target_caps(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), src[4200];
  snprintf(src, sizeof src, "%s/src", dir);
  static const char *const prefix[] = {"a", "b", "c", "d"};
  static const int count[] = {300, 230, 230, 230};
  write_src(src, 4, prefix, count, 4096, D9_U8);
  d9_diag diag = {0};
  int rc;
  assert_null(try_open(dir, src,
                       "{\"d9dfs_spec\": 1, \"passthrough\": true, \"rules\": [{\"name\": \"rows\","
                       " \"unstack\": \"R\", \"inputs\": \"a.{i}\", \"output\": \"a.{i}.{R}\"}]}",
                       &rc, &diag));
  assert_int_equal(rc, -E2BIG);
  want_msg(&diag, (const char *const[]){"spec.json: rules[0] (rows)", "1228800", "1048576", NULL});
  assert_int_equal(D9_MAX_TARGETS_PER_RULE, 1048576);

  d9_diag_clear(&diag);
  assert_null(try_open(dir, src,
                       "{\"d9dfs_spec\": 1, \"passthrough\": true, \"rules\": ["
                       "{\"name\": \"b\", \"unstack\": \"R\", \"inputs\": \"b.{i}\", \"output\": \"b.{i}.{R}\"},"
                       "{\"name\": \"c\", \"unstack\": \"R\", \"inputs\": \"c.{i}\", \"output\": \"c.{i}.{R}\"},"
                       "{\"name\": \"d\", \"unstack\": \"R\", \"inputs\": \"d.{i}\", \"output\": \"d.{i}.{R}\"}]}",
                       &rc, &diag));
  assert_int_equal(rc, -E2BIG);
  want_msg(&diag, (const char *const[]){"rules[2] (d)", "2826240", "2097152", NULL});

  /* --lenient does not turn a limit into a finding */
  d9_diag_clear(&diag);
  char spec[4300];
  snprintf(spec, sizeof spec, "%s/spec.json", dir);
  d9_mount_opts o = {.src_dir = src, .spec_path = spec, .lenient = 1};
  d9_mount *m = NULL;
  assert_int_equal(d9_mount_open(&o, &m, &diag), -E2BIG);
  assert_null(m);
  tu_rmrf(dir);
  free(dir);
}

/* A rule that unstacks a tensor of 5000 rows says so (not "nothing to
 * unstack"); one that unstacks a scalar says that. */
static void test_unstack_slices(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), src[4200];
  snprintf(src, sizeof src, "%s/src", dir);
  const char *prefix = "big";
  int one = 1;
  write_src(src, 1, &prefix, &one, 5000, D9_U8);
  d9_diag diag = {0};
  int rc;
  assert_null(try_open(dir, src,
                       "{\"d9dfs_spec\": 1, \"rules\": [{\"name\": \"u\", \"unstack\": \"R\","
                       " \"inputs\": \"big.0\", \"output\": \"s.{R}\"}]}", &rc, &diag));
  assert_int_equal(rc, -EINVAL);
  want_msg(&diag, (const char *const[]){"rules[0] (u)", "tensor 'big.0'", "dim 0 has 5000 slices",
                                        "4096", NULL});
  tu_rmrf(dir);
  free(dir);
}

/* Regression (signed overflow in step arguments): values that overflowed
 * int64 in slice (end - start), pad (rows + multiple - 1) and rope
 * (2 * heads) are refused, naming the key and the value. */
static void test_argument_overflow(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), src[4200];
  snprintf(src, sizeof src, "%s/src", dir);
  const char *prefix = "t";
  int one = 1;
  write_src(src, 1, &prefix, &one, 8, D9_F32);
  static const struct {
    const char *step, *want1, *want2;
  } cases[] = {
      {"{\"op\": \"slice\", \"start\": \"0 - 9007199254740992 * 1000\","
       " \"end\": \"9007199254740992 * 1000\"}",
       "rules[0] (x).steps[0].start", "-9007199254740992000, out of range"},
      {"{\"op\": \"slice\", \"end\": \"9223372036854775807\"}", "rules[0] (x).steps[0].end",
       "9223372036854775807, out of range"},
      {"{\"op\": \"pad\", \"multiple\": \"9223372036854775807\"}",
       "rules[0] (x).steps[0].multiple", "9223372036854775807, out of range"},
      {"{\"op\": \"pad\", \"rows\": \"4611686018427387903 * 2 + 1\"}",
       "rules[0] (x).steps[0].rows", "9223372036854775807, out of range"},
      {"{\"op\": \"rope\", \"heads\": \"4611686018427387904\", \"to\": \"half\"}",
       "rules[0] (x).steps[0].heads", "4611686018427387904, out of range"},
      {"{\"op\": \"pad\", \"multiple\": 9223372036854775807}", "rules[0] (x).steps[0].multiple",
       "not an integer"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char text[1024];
    snprintf(text, sizeof text, "{\"d9dfs_spec\": 1, \"rules\": [{\"name\": \"x\", \"inputs\":"
             " \"t.0\", \"steps\": [%s], \"output\": \"y\"}]}", cases[i].step);
    d9_diag diag = {0};
    int rc;
    assert_null(try_open(dir, src, text, &rc, &diag));
    assert_int_equal(rc, -EINVAL);
    want_msg(&diag, (const char *const[]){cases[i].want1, cases[i].want2, NULL});
  }
  tu_rmrf(dir);
  free(dir);
}

/* Step arguments are checked when the spec is read: a bad one is reported
 * even when the source directory does not exist (no tensor looked at). */
static void test_bad_argument_before_catalog(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), src[4200];
  snprintf(src, sizeof src, "%s/no-such-source", dir);
  d9_diag diag = {0};
  int rc;
  assert_null(try_open(dir, src,
                       "{\"d9dfs_spec\": 1, \"rules\": [{\"name\": \"q\", \"inputs\": \"a\","
                       " \"steps\": [{\"op\": \"chunk\", \"chunks\": 64}], \"output\": \"b\"}]}",
                       &rc, &diag));
  assert_int_equal(rc, -EINVAL);
  want_msg(&diag, (const char *const[]){"spec.json: rules[0] (q).steps[0].chunks: 64 is out of range",
                                        "1..32", NULL});
  assert_null(strstr(diag.msg, "no-such-source"));
  tu_rmrf(dir);
  free(dir);
}

/* Regression (copies beyond 64 were dropped silently): a spec whose
 * output.copy matches D9_PLAN_MAX_COPIES files mounts and serves them all;
 * one more is refused naming the spec, the count and the limit. */
static void test_copy_limit(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), src[4200], path[4400];
  snprintf(src, sizeof src, "%s/src", dir);
  const char *prefix = "w";
  int one = 1;
  write_src(src, 1, &prefix, &one, 8, D9_U8);
  for (int i = 0; i < D9_PLAN_MAX_COPIES; i++) {
    snprintf(path, sizeof path, "%s/extra-%04d.txt", src, i);
    tu_write(path, "x");
  }
  const char *spec = "{\"d9dfs_spec\": 1, \"passthrough\": true,"
                     " \"output\": {\"copy\": [\"extra-*.txt\"]}}";
  d9_diag diag = {0};
  int rc;
  d9_mount *m = try_open(dir, src, spec, &rc, &diag);
  if (!m) fail_msg("%d copies refused: %s", D9_PLAN_MAX_COPIES, diag.msg);
  snprintf(path, sizeof path, "extra-%04d.txt", D9_PLAN_MAX_COPIES - 1);
  assert_true(d9_mount_resolve(m, path) > 0); /* the last one is served too */
  d9_mount_close(m);
  snprintf(path, sizeof path, "%s/extra-%04d.txt", src, D9_PLAN_MAX_COPIES);
  tu_write(path, "x");
  memset(&diag, 0, sizeof diag);
  assert_null(try_open(dir, src, spec, &rc, &diag));
  assert_int_equal(rc, -E2BIG);
  char count[32], limit[32];
  snprintf(count, sizeof count, "%d files", D9_PLAN_MAX_COPIES + 1);
  snprintf(limit, sizeof limit, "the %d", D9_PLAN_MAX_COPIES);
  want_msg(&diag, (const char *const[]){"spec.json: output.copy", count, limit, NULL});
  tu_rmrf(dir);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_many_inputs),
      cmocka_unit_test(test_target_caps),
      cmocka_unit_test(test_unstack_slices),
      cmocka_unit_test(test_argument_overflow),
      cmocka_unit_test(test_bad_argument_before_catalog),
      cmocka_unit_test(test_copy_limit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
