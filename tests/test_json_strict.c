/* test_json_strict.c - d9_json_parse, d9_json_int, d9_read_small_file.
 * Table driven; every input is built at test time into a buffer of exactly
 * its length (no NUL after it), so a read past the end trips ASan. In the
 * tables ' stands for " to keep the JSON readable. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mapper/json_strict.h"

/* ---- helpers ---- */

/* Copy of s[0..len) with ' turned into ", in a buffer of exactly len bytes. */
static char *bytes(const char *s, size_t len) {
  char *b = malloc(len ? len : 1);
  assert_non_null(b);
  for (size_t i = 0; i < len; i++) b[i] = s[i] == '\'' ? '"' : s[i];
  return b;
}

static char *repeat_gen(const char *head, const char *unit, size_t n,
                        const char *tail, size_t *len) {
  size_t h = strlen(head), u = strlen(unit), t = strlen(tail);
  *len = h + u * n + t;
  char *b = malloc(*len), *p = b;
  assert_non_null(b);
  memcpy(p, head, h);
  p += h;
  for (size_t i = 0; i < n; i++, p += u) memcpy(p, unit, u);
  memcpy(p, tail, t);
  return b;
}

static char *gen_deep_100000(size_t *len) { return repeat_gen("", "[", 100000, "", len); }
static char *gen_deep_65(size_t *len) { return repeat_gen("", "[", 65, "", len); }
static char *gen_depth_64_ok(size_t *len) {
  char *open = repeat_gen("", "[", 64, "", len), *b = malloc(2 * *len);
  assert_non_null(b);
  memcpy(b, open, *len);
  memset(b + *len, ']', *len);
  *len *= 2;
  free(open);
  return b;
}
static char *gen_deep_objects(size_t *len) {
  return repeat_gen("", "{\"a\":", 100000, "1", len);
}

/* {"k0":0,...,"k99999":99999} plus optionally a repeat of "k4242" */
static char *keys_gen(size_t *len, int dup) {
  size_t cap = 100000 * 24 + 64, o = 0;
  char *b = malloc(cap);
  assert_non_null(b);
  b[o++] = '{';
  for (int i = 0; i < 100000; i++)
    o += (size_t)snprintf(b + o, cap - o, "%s\"k%d\":%d", i ? "," : "", i, i);
  if (dup) o += (size_t)snprintf(b + o, cap - o, ",\"k4242\":1");
  b[o++] = '}';
  *len = o;
  return b;
}
static char *gen_keys_100000(size_t *len) { return keys_gen(len, 0); }
static char *gen_keys_100000_dup(size_t *len) { return keys_gen(len, 1); }

/* ---- d9_json_parse ---- */

typedef struct jcase {
  const char *label;
  const char *text;            /* ' stands for " */
  size_t len;                  /* 0: strlen(text) */
  char *(*gen)(size_t *len);   /* instead of text */
  int depth;                   /* 0: 64 */
  int spaces_only;
  const char *msg;             /* NULL: must parse */
} jcase;

static const jcase jcases[] = {
  /* valid */
  {"object", "{'a':1,'b':[true,false,null],'c':{'d':'e'}}", 0, NULL, 0, 0, NULL},
  {"whitespace around", " \t\r\n{ 'a' : [ 1 , 2 ] }\n\t ", 0, NULL, 0, 0, NULL},
  {"scalar top", "-12.5e+3", 0, NULL, 0, 0, NULL},
  {"string top", "'x'", 0, NULL, 0, 0, NULL},
  {"escapes", "['\\'\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00']", 0, NULL, 0, 0, NULL},
  {"utf-8 2,3,4 bytes", "['\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf']", 0, NULL, 0, 0, NULL},
  {"spaces only ok", "{}   ", 0, NULL, 0, 1, NULL},
  {"empty containers", "[{},[],'']", 0, NULL, 0, 0, NULL},
  {"depth 64 ok", NULL, 0, gen_depth_64_ok, 0, 0, NULL},
  {"same key in two objects", "[{'a':1},{'a':2}]", 0, NULL, 0, 0, NULL},
  {"100000 keys", NULL, 0, gen_keys_100000, 0, 0, NULL},
  /* utf-8 and nul */
  {"overlong 2-byte", "['\xc0\xaf']", 0, NULL, 0, 0, "invalid utf-8 at byte 2"},
  {"overlong 3-byte", "['\xe0\x80\xaf']", 0, NULL, 0, 0, "invalid utf-8 at byte 2"},
  {"overlong 4-byte", "['\xf0\x80\x80\xaf']", 0, NULL, 0, 0, "invalid utf-8 at byte 2"},
  {"surrogate d800", "['\xed\xa0\x80']", 0, NULL, 0, 0, "invalid utf-8 at byte 2"},
  {"surrogate dfff", "['a\xed\xbf\xbf']", 0, NULL, 0, 0, "invalid utf-8 at byte 3"},
  {"above 10ffff", "['\xf4\x90\x80\x80']", 0, NULL, 0, 0, "invalid utf-8 at byte 2"},
  {"f5 lead", "['\xf5\x80\x80\x80']", 0, NULL, 0, 0, "invalid utf-8 at byte 2"},
  {"ff byte", "['\xff']", 0, NULL, 0, 0, "invalid utf-8 at byte 2"},
  {"stray continuation", "['\x80']", 0, NULL, 0, 0, "invalid utf-8 at byte 2"},
  {"truncated in string", "['\xe2\x82']", 0, NULL, 0, 0, "invalid utf-8 at byte 2"},
  {"truncated at end", "['x']\xc3", 0, NULL, 0, 0, "invalid utf-8 at byte 5"},
  {"utf-8 outside string", "[1,\xc3\xa9]", 0, NULL, 0, 0, "expected a json value at byte 3"},
  {"raw nul", "{'a':'b\0c'}", 11, NULL, 0, 0, "nul byte in the json at byte 7"},
  {"nul after value", "{}\0", 3, NULL, 0, 0, "nul byte in the json at byte 2"},
  /* depth */
  {"depth 65", NULL, 0, gen_deep_65, 0, 0, "json nested deeper than 64"},
  {"depth 100000 arrays", NULL, 0, gen_deep_100000, 0, 0, "json nested deeper than 64"},
  {"depth 100000 objects", NULL, 0, gen_deep_objects, 0, 0, "json nested deeper than 64"},
  {"depth 3 limit", "[[[[1]]]]", 0, NULL, 3, 0, "json nested deeper than 3"},
  {"brackets inside strings do not count", "['[[[[[[[[[[', '\\'[[[[[']", 0, NULL, 2, 0, NULL},
  /* escapes */
  {"\\u0000", "['a\\u0000b']", 0, NULL, 0, 0, "\\u0000 (nul) in a string at byte 3"},
  {"invalid escape", "['\\x']", 0, NULL, 0, 0, "invalid escape '\\x' in a string at byte 2"},
  {"unknown escape letter", "['\\q']", 0, NULL, 0, 0, "invalid escape '\\q'"},
  {"lone high surrogate", "['\\uD800']", 0, NULL, 0, 0, "unpaired high surrogate"},
  {"high + non-low", "['\\uD800\\u0041']", 0, NULL, 0, 0, "unpaired high surrogate"},
  {"high + high", "['\\uDBFF\\uDBFF']", 0, NULL, 0, 0, "unpaired high surrogate"},
  {"high + text", "['\\uD800abcdef']", 0, NULL, 0, 0, "unpaired high surrogate"},
  {"lone low surrogate", "['\\uDC00']", 0, NULL, 0, 0, "lone low surrogate"},
  {"bad hex", "['\\u12G4']", 0, NULL, 0, 0, "invalid \\u escape"},
  {"short \\u at end", "['\\u12", 0, NULL, 0, 0, "invalid \\u escape"},
  {"raw control char", "['a\tb']", 0, NULL, 0, 0, "control character 0x09 in a string at byte 3"},
  {"raw newline in key", "{'a\nb':1}", 0, NULL, 0, 0, "control character 0x0a"},
  {"unterminated string", "['abc", 0, NULL, 0, 0, "unterminated string starting at byte 1"},
  {"backslash at end", "['abc\\", 0, NULL, 0, 0, "unterminated string"},
  /* grammar cJSON lets through */
  {"empty", "", 0, NULL, 0, 0, "empty json text"},
  {"only whitespace", "  \n ", 0, NULL, 0, 0, "empty json text"},
  {"bom", "\xef\xbb\xbf{}", 0, NULL, 0, 0, "expected a json value at byte 0"},
  {"vertical tab as space", "[1,\v2]", 0, NULL, 0, 0, "expected a json value at byte 3"},
  {"leading zero", "[01]", 0, NULL, 0, 0, "leading zero in a number at byte 1"},
  {"plus sign", "[+1]", 0, NULL, 0, 0, "expected a json value at byte 1"},
  {"leading dot", "[.5]", 0, NULL, 0, 0, "expected a json value at byte 1"},
  {"trailing dot", "[1.]", 0, NULL, 0, 0, "no digit after '.'"},
  {"bare exponent", "[1e]", 0, NULL, 0, 0, "no digit in the exponent"},
  {"minus alone", "[-]", 0, NULL, 0, 0, "invalid number at byte 1"},
  {"hex", "[0x10]", 0, NULL, 0, 0, "expected ',' or ']' at byte 2"},
  {"nan", "[NaN]", 0, NULL, 0, 0, "expected a json value"},
  {"infinity", "[-Infinity]", 0, NULL, 0, 0, "invalid number"},
  {"64-char number", "[1000000000000000000000000000000000000000000000000000000000000000]",
   0, NULL, 0, 0, "number longer than 63 characters at byte 1"},
  {"trailing comma array", "[1,]", 0, NULL, 0, 0, "expected a json value at byte 3"},
  {"trailing comma object", "{'a':1,}", 0, NULL, 0, 0, "expected a string key at byte 7"},
  {"missing colon", "{'a' 1}", 0, NULL, 0, 0, "expected ':' at byte 5"},
  {"number key", "{1:2}", 0, NULL, 0, 0, "expected a string key at byte 1"},
  {"missing comma", "[1 2]", 0, NULL, 0, 0, "expected ',' or ']' at byte 3"},
  {"wrong close", "{'a':1]", 0, NULL, 0, 0, "expected ',' or '}' at byte 6"},
  {"truncated literal", "[tru]", 0, NULL, 0, 0, "expected a json value at byte 1"},
  {"truncated literal at end", "nul", 0, NULL, 0, 0, "expected a json value at byte 0"},
  {"unclosed", "{'a':[1,2", 0, NULL, 0, 0, "unexpected end of the json at byte 9"},
  {"backslash before the key quote", "{\\'a\\':1}", 0, NULL, 0, 0, "expected a string key at byte 1"},
  /* after the value */
  {"junk after object", "{}x", 0, NULL, 0, 0, "trailing bytes after the json object at byte 2"},
  {"second value", "{} {}", 0, NULL, 0, 0, "trailing bytes after the json object at byte 3"},
  {"junk after scalar", "1 2", 0, NULL, 0, 0, "trailing bytes after the json value at byte 2"},
  {"newline, spaces only", "{}  \n", 0, NULL, 0, 1, "trailing bytes after the json object at byte 4"},
  {"tab, spaces only", "{}\t", 0, NULL, 0, 1, "trailing bytes after the json object at byte 2"},
  {"newline allowed otherwise", "{}  \n", 0, NULL, 0, 0, NULL},
  /* duplicates */
  {"duplicate key", "{'a.weight':1,'b':2,'a.weight':3}", 0, NULL, 0, 0, "duplicate key 'a.weight'"},
  {"duplicate nested", "{'x':[{'k':1,'k':1}]}", 0, NULL, 0, 0, "duplicate key 'k'"},
  {"duplicate via escape", "{'a':1,'\\u0061':2}", 0, NULL, 0, 0, "duplicate key 'a'"},
  {"duplicate key shown safely", "{'\\u001b[31m':1,'\\u001b[31m':2}", 0, NULL, 0, 0,
   "duplicate key '\\x1b[31m'"},
  {"duplicate among 100000", NULL, 0, gen_keys_100000_dup, 0, 0, "duplicate key 'k4242'"},
};

static void test_json_parse_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof jcases / sizeof jcases[0]; i++) {
    const jcase *c = &jcases[i];
    size_t len;
    char *buf;
    if (c->gen) {
      buf = c->gen(&len);
    } else {
      len = c->len ? c->len : strlen(c->text);
      buf = bytes(c->text, len);
    }
    d9_diag diag = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cJSON *j = d9_json_parse(buf, len, c->depth ? c->depth : 64, c->spaces_only,
                             "t.json", &diag);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (c->msg) {
      if (j || !diag.set || !strstr(diag.msg, c->msg) ||
          strncmp(diag.msg, "t.json: ", 8))
        fail_msg("case '%s': expected '%s', got %s '%s'", c->label, c->msg,
                 j ? "success" : "error", diag.msg);
    } else if (!j) {
      fail_msg("case '%s': unexpected error '%s'", c->label, diag.msg);
    }
    if (getenv("D9_TEST_VERBOSE"))
      printf("%-40s %.3fs %s\n", c->label, secs, j ? "ok" : diag.msg);
    if (secs > 1.0 && !getenv("D9_TEST_NO_TIMING")) /* set under valgrind */
      fail_msg("case '%s' took %.3f s", c->label, secs);
    cJSON_Delete(j);
    free(buf);
  }
}

static void test_json_parse_values(void **state) {
  (void)state;
  const char *t = "{\"a\":\"\\u00e9\\uD83D\\uDE00\",\"b\":[1,2.5]}";
  d9_diag diag = {0};
  cJSON *j = d9_json_parse(t, strlen(t), 64, 0, "t.json", &diag);
  assert_non_null(j);
  assert_string_equal(cJSON_GetObjectItem(j, "a")->valuestring,
                      "\xc3\xa9\xf0\x9f\x98\x80");
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "b")), 2);
  cJSON_Delete(j);
  /* a NULL diag is allowed */
  assert_null(d9_json_parse("[", 1, 64, 0, "t.json", NULL));
}

/* ---- d9_json_int ---- */

typedef struct icase {
  const char *text; /* one JSON number (or other value) */
  int64_t lo, hi;
  int rc;
  int64_t want;
} icase;

#define P53 (INT64_C(1) << 53)
static const icase icases[] = {
  {"0", 0, 10, 0, 0},
  {"-0", 0, 10, 0, 0},
  {"10", 0, 10, 0, 10},
  {"11", 0, 10, -EINVAL, 0},
  {"-1", 0, 10, -EINVAL, 0},
  {"-1", -5, 10, 0, -1},
  {"1e3", 0, P53, -EINVAL, 0}, /* integers are written as integers */
  {"1E+3", 0, P53, -EINVAL, 0},
  {"2.5e1", 0, P53, -EINVAL, 0},
  {"2.50e1", 0, P53, -EINVAL, 0},
  {"25e-1", 0, P53, -EINVAL, 0},
  {"250e-1", 0, P53, -EINVAL, 0},
  {"1.0", 0, P53, -EINVAL, 0},
  {"1.5", 0, P53, -EINVAL, 0},
  {"-0.5", -10, 10, -EINVAL, 0},
  {"0.5", 0, 10, -EINVAL, 0},
  {"9007199254740992", 0, P53, 0, P53},
  {"9007199254740992.0", 0, P53, -EINVAL, 0},
  {"90071992547409920e-1", 0, P53, -EINVAL, 0},
  {"9007199254740993", 0, P53, -EINVAL, 0}, /* reads as 2^53 in a double */
  {"9007199254740994", 0, P53, -EINVAL, 0},
  {"9007199254740993", 0, INT64_MAX, -EINVAL, 0}, /* hi is capped at 2^53 */
  {"1.0000000000000001", 0, P53, -EINVAL, 0},    /* reads as 1.0 */
  {"0.99999999999999999", 0, P53, -EINVAL, 0},   /* reads as 1.0 */
  {"1234567890123456", 0, P53, 0, INT64_C(1234567890123456)},
  {"1e400", 0, P53, -EINVAL, 0},
  {"-1e400", -P53, P53, -EINVAL, 0},
  {"1e-400", 0, P53, -EINVAL, 0},  /* reads as 0.0 */
  {"0e-400", 0, P53, -EINVAL, 0},
  {"0.0", 0, P53, -EINVAL, 0},
  {"-9007199254740992", -P53, 0, 0, -P53},
  {"\"5\"", 0, 10, -EINVAL, 0},
  {"null", 0, 10, -EINVAL, 0},
  {"true", 0, 10, -EINVAL, 0},
  {"[5]", 0, 10, -EINVAL, 0},
};

static void test_json_int_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof icases / sizeof icases[0]; i++) {
    const icase *c = &icases[i];
    char buf[128];
    snprintf(buf, sizeof buf, "[%s]", c->text);
    d9_diag diag = {0};
    cJSON *j = d9_json_parse(buf, strlen(buf), 64, 0, "t.json", &diag);
    if (!j) fail_msg("'%s' did not parse: %s", c->text, diag.msg);
    int64_t v = -12345;
    int rc = d9_json_int(j->child, c->lo, c->hi, &v);
    if (rc != c->rc || (rc == 0 && v != c->want))
      fail_msg("'%s' in [%lld, %lld]: rc %d value %lld, want rc %d value %lld",
               c->text, (long long)c->lo, (long long)c->hi, rc, (long long)v,
               c->rc, (long long)c->want);
    if (rc) assert_int_equal(v, -12345); /* untouched on error */
    cJSON_Delete(j);
  }
  int64_t v;
  assert_int_equal(d9_json_int(NULL, 0, 1, &v), -EINVAL);
}

/* ---- d9_read_small_file ---- */

typedef struct fcase {
  const char *label;
  const char *path;
  size_t max;
  int rc;
  const char *msg;    /* NULL: success */
  const char *want;   /* content on success */
} fcase;

static const fcase fcases[] = {
  {"regular", "a.json", 100, 0, NULL, "{\"a\":1}"},
  {"exactly the limit", "a.json", 7, 0, NULL, "{\"a\":1}"},
  {"empty file", "empty", 100, 0, NULL, ""},
  {"over the limit", "a.json", 6, -EFBIG, "a.json: file is 7 bytes, more than the limit of 6", NULL},
  {"directory", "dir", 100, -EINVAL, "dir: not a regular file", NULL},
  {"fifo", "fifo", 100, -EINVAL, "fifo: not a regular file", NULL},
  {"missing", "nope", 100, -ENOENT, "nope: no such file or directory", NULL},
  {"symlink to a regular file", "link", 100, 0, NULL, "{\"a\":1}"},
};

static void test_read_small_file_table(void **state) {
  (void)state;
  char dir[] = "/tmp/d9test.XXXXXX";
  assert_non_null(mkdtemp(dir));
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  assert_true(dfd >= 0);
  int fd = openat(dfd, "a.json", O_WRONLY | O_CREAT | O_EXCL, 0600);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "{\"a\":1}", 7), 7);
  close(fd);
  fd = openat(dfd, "empty", O_WRONLY | O_CREAT | O_EXCL, 0600);
  assert_true(fd >= 0);
  close(fd);
  assert_int_equal(mkdirat(dfd, "dir", 0700), 0);
  assert_int_equal(mkfifoat(dfd, "fifo", 0600), 0);
  assert_int_equal(symlinkat("a.json", dfd, "link"), 0);

  for (size_t i = 0; i < sizeof fcases / sizeof fcases[0]; i++) {
    const fcase *c = &fcases[i];
    d9_diag diag = {0};
    char *out = (char *)1;
    size_t len = 99;
    int rc = d9_read_small_file(dfd, c->path, c->max, &out, &len, &diag);
    if (rc != c->rc) fail_msg("case '%s': rc %d, want %d (%s)", c->label, rc, c->rc, diag.msg);
    if (c->msg) {
      if (!strstr(diag.msg, c->msg))
        fail_msg("case '%s': message '%s', want '%s'", c->label, diag.msg, c->msg);
      assert_null(out);
    } else {
      assert_non_null(out);
      assert_int_equal(len, strlen(c->want));
      assert_memory_equal(out, c->want, len);
      assert_int_equal(out[len], 0);
      free(out);
    }
  }
  unlinkat(dfd, "a.json", 0);
  unlinkat(dfd, "empty", 0);
  unlinkat(dfd, "fifo", 0);
  unlinkat(dfd, "link", 0);
  unlinkat(dfd, "dir", AT_REMOVEDIR);
  close(dfd);
  rmdir(dir);
}

/* ---- where errors are, why integers fail, out of memory, d9_json_check ---- */

static void test_json_error_line_column(void **state) {
  (void)state;
  static const struct {
    const char *text, *msg;
  } cases[] = {
    {"{\n  \"a\": 1,\n  \"b\": [1 2]\n}", "t.json: expected ',' or ']' at byte 22 (line 3, column 11)"},
    {"[1,\n\n\xff]", "t.json: invalid utf-8 at byte 5 (line 3, column 1)"},
    {"{\"a\":\r\n 01}", "leading zero in a number at byte 8 (line 2, column 2)"},
    {"[\"x\n\"]", "control character 0x0a in a string at byte 3 (line 1, column 4)"},
    {"{}\n\n  x", "trailing bytes after the json object at byte 6 (line 3, column 3)"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    d9_diag diag = {0};
    cJSON *j = d9_json_parse(cases[i].text, strlen(cases[i].text), 64, 0, "t.json", &diag);
    if (j || !strstr(diag.msg, cases[i].msg))
      fail_msg("case %zu: want '%s', got '%s'", i, cases[i].msg, diag.msg);
    /* d9_json_check finds the same error in the same place */
    d9_diag d2 = {0};
    assert_int_equal(d9_json_check(cases[i].text, strlen(cases[i].text), 64, 0, "t.json",
                                   NULL, &d2), -EINVAL);
    assert_string_equal(d2.msg, diag.msg);
  }
}

static void test_json_int_why(void **state) {
  (void)state;
  static const struct {
    const char *text;
    int64_t lo, hi;
    const char *why; /* NULL: accepted */
  } cases[] = {
    {"7", 0, 10, NULL},
    {"9007199254740992", 0, INT64_C(1) << 53, NULL},
    {"9007199254740993", 0, INT64_C(1) << 53, "is beyond 2^53"},
    {"18446744073709551616", 0, INT64_C(1) << 53, "is beyond 2^53"},
    {"1e3", 0, 10000, "is not written as an integer"},
    {"2.0", 0, 10, "is not written as an integer"},
    {"11", 0, 10, "11 is outside [0, 10]"},
    {"-1", 0, 10, "-1 is outside [0, 10]"},
    {"1000000000000000000000", 0, 10, "is outside [0, 10]"},
    {"\"3\"", 0, 10, "is not a number"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char text[64], buf[96];
    snprintf(text, sizeof text, "[%s]", cases[i].text);
    cJSON *j = d9_json_parse(text, strlen(text), 64, 0, "t.json", NULL);
    assert_non_null(j);
    const char *why = d9_json_int_why(j->child, cases[i].lo, cases[i].hi, buf, sizeof buf);
    int64_t v;
    int rc = d9_json_int(j->child, cases[i].lo, cases[i].hi, &v);
    if (cases[i].why ? !why || !strstr(why, cases[i].why) || rc != -EINVAL : why || rc)
      fail_msg("'%s': why '%s' rc %d, want '%s'", cases[i].text, why ? why : "(accepted)", rc,
               cases[i].why ? cases[i].why : "(accepted)");
    cJSON_Delete(j);
  }
}

static void *failing_malloc(size_t n) {
  (void)n;
  return NULL;
}

/* cJSON failing to allocate is ENOMEM, said as such (it used to read as a
 * parse error "could not parse the json at byte N"). */
static void test_json_out_of_memory(void **state) {
  (void)state;
  const char *t = "{\"a\":[1,2,3]}";
  cJSON_Hooks hooks = {failing_malloc, free};
  cJSON_InitHooks(&hooks);
  d9_diag diag = {0};
  cJSON *j = (cJSON *)1;
  int rc = d9_json_read(t, strlen(t), 64, 0, "t.json", &j, &diag);
  cJSON_InitHooks(NULL);
  assert_int_equal(rc, -ENOMEM);
  assert_null(j);
  assert_non_null(strstr(diag.msg, "t.json: out of memory building the json tree"));
  assert_int_equal(d9_json_read(t, strlen(t), 64, 0, "t.json", &j, &diag), 0);
  cJSON_Delete(j);
}

static void test_json_check_counts(void **state) {
  (void)state;
  const char *t = "{\"ab\":{\"x\":1,\"y\":[{\"z\":2}]},\"c\\u0064\":3, \"\":[]}";
  d9_json_shape sh;
  assert_int_equal(d9_json_check(t, strlen(t), 64, 0, "t.json", &sh, NULL), 0);
  assert_int_equal(sh.top_members, 3);
  assert_int_equal(sh.top_key_bytes, 2 + 7 + 0); /* as written: c\u0064 is 7 bytes */
  assert_int_equal(d9_json_check("[1,{\"a\":1}]", 11, 64, 0, "t.json", &sh, NULL), 0);
  assert_int_equal(sh.top_members, 0);
  /* duplicates are the caller's business here, depth is not */
  assert_int_equal(d9_json_check("{\"a\":1,\"a\":2}", 13, 64, 0, "t.json", NULL, NULL), 0);
  assert_int_equal(d9_json_check("[[[]]]", 6, 2, 0, "t.json", NULL, NULL), -EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_json_parse_table),
      cmocka_unit_test(test_json_parse_values),
      cmocka_unit_test(test_json_int_table),
      cmocka_unit_test(test_read_small_file_table),
      cmocka_unit_test(test_json_error_line_column),
      cmocka_unit_test(test_json_int_why),
      cmocka_unit_test(test_json_out_of_memory),
      cmocka_unit_test(test_json_check_counts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
