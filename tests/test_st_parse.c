/* test_st_parse.c - the tree-free safetensors header reader (mapper/st_parse.c)
 * beyond the rule table of test_st_header.c: names and metadata decoded
 * from every escape form, seeded headers written with random whitespace,
 * key order and escapes read back against the table that generated them,
 * and the metadata budget (per header, across headers, through the
 * catalog). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mapper/catalog.h"
#include "mapper/st_header.h"

#define F "x.safetensors"

static int parse(const char *j, uint64_t data_len, d9_arena *a, d9_st_budget *b,
                 d9_st_header *h, d9_diag *diag) {
  size_t n = strlen(j);
  char *exact = malloc(n); /* exactly n bytes: a read past them trips ASan */
  assert_non_null(exact);
  memcpy(exact, j, n);
  int rc = d9_st_parse_budget(exact, n, 8 + n + data_len, F, a, b, h, diag);
  free(exact);
  return rc;
}

/* ---- decoding ---- */

static void test_names_and_metadata_decoded(void **state) {
  (void)state;
  const char *j =
      "{\"__metadata__\":{\"k\\t\\\"\":\"v\\/\\\\\\b\\f\\n\\r\\u00e9\\uD83D\\uDE00\"},"
      "\"a\\u002eb\\u0020c\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
      "\"\xe2\x82\xac\\u20ac\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]},"
      "\"\\u005f_metadata\":{\"dtype\":\"U8\",\"shape\":[-0],\"data_offsets\":[2,2]}}";
  d9_arena *a = d9_arena_create();
  d9_st_header h;
  d9_diag diag = {0};
  if (parse(j, 2, a, NULL, &h, &diag)) fail_msg("%s", diag.msg);
  assert_int_equal(h.ntensors, 3);
  assert_string_equal(h.tensors[0].name, "a.b c");
  assert_string_equal(h.tensors[1].name, "\xe2\x82\xac\xe2\x82\xac");
  assert_string_equal(h.tensors[2].name, "__metadata");
  assert_int_equal(h.tensors[2].shape[0], 0); /* "-0" reads as 0, as a double does */
  assert_int_equal(h.nmeta, 1);
  assert_string_equal(h.meta_keys[0], "k\t\"");
  assert_string_equal(h.meta_values[0], "v/\\\b\f\n\r\xc3\xa9\xf0\x9f\x98\x80");
  d9_arena_destroy(a);
}

typedef struct mcase {
  const char *json; /* ' stands for " */
  const char *msg;
} mcase;

static const mcase mcases[] = {
  {"{'__metadata__':{'a':'1','b':'2','a':'3'}}", F ": header: duplicate key 'a'"},
  {"{'__metadata__':{},'__metadata__':{}}", F ": header: duplicate key '__metadata__'"},
  {"{'__metadata__':{},'\\u005f_metadata__':{}}", F ": header: duplicate key '__metadata__'"},
  {"{'x':{'dtype':'U8','shape':[0],'data_offsets':[0,0]},'\\u0078':{'dtype':'U8','shape':[0],"
   "'data_offsets':[0,0]}}", F ": header: duplicate key 'x'"},
  {"{'x':{'dtype':'U8','shape':[0],'data_offsets':[0,0],'shape':[0]}}",
   F ": header: duplicate key 'shape' at byte 52 (line 1, column 53)"},
  {"{'x':{'dtype':'U8','shape':[[1]],'data_offsets':[0,0]}}",
   F ": tensor 'x': shape[0] is not an integer in [0, 2^53]: it is an array"},
  {"{'x':{'dtype':'U8','shape':[null],'data_offsets':[0,0]}}",
   F ": tensor 'x': shape[0] is not an integer in [0, 2^53]: it is not a number"},
  {"{'x':{'dtype':'U8','shape':[1],'data_offsets':[0,18446744073709551617]}}",
   F ": tensor 'x': data_offsets[1] is not an integer in [0, 2^53]: 18446744073709551617 is beyond 2^53"},
  {"{'x':{'dtype':'U8xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx','shape':[0],'data_offsets':[0,0]}}",
   F ": tensor 'x': unknown dtype 'U8xxxxxxxxxxxxxxxxxxxxxxxxxxxxx...'"},
  {"{'x':{'dtype':'U8','sh\\u0061pe':[0],'data_offsets':[0,0]}}", NULL},
  {"{'x' : { 'dtype' : 'U8' , 'shape' : [ ] , 'data_offsets' : [ 0 , 1 ] } }", NULL},
};

static void test_metadata_and_key_rules(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof mcases / sizeof *mcases; i++) {
    char buf[512];
    size_t n = strlen(mcases[i].json);
    for (size_t k = 0; k <= n; k++) buf[k] = mcases[i].json[k] == '\'' ? '"' : mcases[i].json[k];
    d9_arena *a = d9_arena_create();
    d9_st_header h;
    d9_diag diag = {0};
    uint64_t data = strstr(buf, "0 , 1") ? 1 : 0;
    int rc = parse(buf, data, a, NULL, &h, &diag);
    if (mcases[i].msg ? rc != -EINVAL || strcmp(diag.msg, mcases[i].msg) : rc != 0)
      fail_msg("case %zu: rc %d '%s', want '%s'", i, rc, diag.msg,
               mcases[i].msg ? mcases[i].msg : "success");
    d9_arena_destroy(a);
  }
}

/* ---- seeded: random layout of the text, read back against its table ---- */

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

typedef struct sb {
  char *p;
  size_t len, cap;
} sb;

static void put(sb *b, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    b->cap = 2 * b->cap + (size_t)n + 64;
    assert_non_null(b->p = realloc(b->p, b->cap));
  }
}

static void put_ws(sb *b, uint64_t *st) {
  static const char *const w[] = {"", "", " ", "\n", "\t", "\r\n  "};
  put(b, "%s", w[splitmix64(st) % 6]);
}

/* name written with each character plain, \uXXXX, or a short escape */
static void put_name(sb *b, const char *name, uint64_t *st) {
  put(b, "\"");
  for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
    int how = (int)(splitmix64(st) % 3);
    if (*p == '"' || *p == '\\') put(b, "\\%c", *p);
    else if (*p == '\n') put(b, how ? "\\n" : "\\u000a");
    else if (*p < 0x80 && how == 0) put(b, "\\u%04x", *p);
    else put(b, "%c", *p);
  }
  put(b, "\"");
}

static void test_random_layout_read_back(void **state) {
  (void)state;
  uint64_t st = 0x1234567;
  static const d9_dtype dts[] = {D9_U8, D9_BF16, D9_F32, D9_I64, D9_F8_E4M3};
  for (int iter = 0; iter < 300; iter++) {
    int n = (int)(splitmix64(&st) % 40);
    d9_st_tensor want[40];
    char names[40][24];
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
      d9_st_tensor *t = &want[i];
      memset(t, 0, sizeof *t);
      snprintf(names[i], sizeof names[i], "m.%d\n\"q\\%c\xc3\xa9", i, 'a' + (int)(splitmix64(&st) % 26));
      t->name = names[i];
      t->dtype = dts[splitmix64(&st) % 5];
      t->ndim = (int)(splitmix64(&st) % (D9_MAX_DIMS + 1));
      for (int d = 0; d < t->ndim; d++) t->shape[d] = (int64_t)(splitmix64(&st) % 3);
      uint64_t nb;
      assert_int_equal(d9_st_nbytes(t->shape, t->ndim, t->dtype, &nb), 0);
      t->begin = off, t->end = off + nb, off += nb;
    }
    sb b = {0};
    int meta_at = (int)(splitmix64(&st) % (uint64_t)(n + 1));
    put(&b, "{");
    for (int i = 0, members = 0; i <= n; i++) {
      if (i == meta_at) {
        put_ws(&b, &st);
        put(&b, "%s\"__metadata__\"", members++ ? "," : "");
        put_ws(&b, &st);
        put(&b, ":{\"format\":\"pt\"}");
      }
      if (i == n) break;
      const d9_st_tensor *t = &want[i];
      put(&b, "%s", members++ ? "," : "");
      put_ws(&b, &st);
      put_name(&b, t->name, &st);
      put_ws(&b, &st);
      put(&b, ":");
      put_ws(&b, &st);
      put(&b, "{");
      int order = (int)(splitmix64(&st) % 6), first = 1;
      static const int orders[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
      for (int k = 0; k < 3; k++, first = 0) {
        put(&b, "%s", first ? "" : ",");
        put_ws(&b, &st);
        switch (orders[order][k]) {
        case 0: put(&b, "\"dtype\":\"%s\"", d9_dtype_name(t->dtype)); break;
        case 1:
          put(&b, "\"shape\":[");
          for (int d = 0; d < t->ndim; d++) {
            put(&b, "%s%" PRId64, d ? "," : "", t->shape[d]);
            put_ws(&b, &st);
          }
          put(&b, "]");
          break;
        default:
          put(&b, "\"data_offsets\":[%" PRIu64 ",", t->begin);
          put_ws(&b, &st);
          put(&b, "%" PRIu64 "]", t->end);
        }
        put_ws(&b, &st);
      }
      put(&b, "}");
    }
    put(&b, "}");
    char *text = b.p;
    d9_arena *a = d9_arena_create();
    d9_st_header h;
    d9_diag diag = {0};
    int rc = parse(text, off, a, NULL, &h, &diag);
    if (rc) fail_msg("iteration %d: %s\n%s", iter, diag.msg, text);
    assert_int_equal(h.ntensors, n);
    assert_int_equal(h.nmeta, 1);
    for (int i = 0; i < n; i++) {
      const d9_st_tensor *g = &h.tensors[i], *w = &want[i];
      assert_string_equal(g->name, w->name);
      assert_int_equal(g->dtype, w->dtype);
      assert_int_equal(g->ndim, w->ndim);
      assert_memory_equal(g->shape, w->shape, sizeof(int64_t) * (size_t)w->ndim);
      assert_int_equal(g->begin, w->begin);
      assert_int_equal(g->end, w->end);
    }
    d9_arena_destroy(a);
    free(text);
  }
}

/* ---- the budget ---- */

/* A header of n U8 tensors of 1 byte, by the writer; data bytes in *data. */
static unsigned char *many(int n, uint64_t *len, uint64_t *data) {
  d9_st_tensor *ts = calloc((size_t)n, sizeof *ts);
  char (*names)[32] = calloc((size_t)n, 32);
  assert_true(ts && names);
  for (int i = 0; i < n; i++) {
    snprintf(names[i], 32, "model.layers.%d.weight", i);
    ts[i] = (d9_st_tensor){.name = names[i], .dtype = D9_U8, .ndim = 1, .shape = {1}};
  }
  unsigned char *out;
  assert_int_equal(d9_st_write_header(ts, n, NULL, NULL, 0, &out, len), 0);
  *data = (uint64_t)n;
  free(ts);
  free(names);
  return out;
}

static void test_budget_refuses_and_accumulates(void **state) {
  (void)state;
  uint64_t len, data;
  unsigned char *hdr = many(20000, &len, &data); /* ~1 MB of text */
  d9_arena *a = d9_arena_create();
  d9_st_header h;
  d9_diag diag = {0};
  /* unlimited: used grows by what stays (the arena's growth + per_tensor) */
  d9_st_budget b = {0, 0, 100, "-o meta_mib=N raises it"};
  size_t before = d9_arena_used(a);
  assert_int_equal(d9_st_parse_budget((char *)hdr + 8, len - 8, len + data, F, a, &b, &h, &diag), 0);
  assert_int_equal(b.used, d9_arena_used(a) - before + 20000 * 100);
  uint64_t one = b.used;
  /* a limit below one header: refused before the table is built */
  d9_st_budget small = {1u << 20, 0, 100, "-o meta_mib=N raises it"};
  before = d9_arena_used(a);
  assert_int_equal(d9_st_parse_budget((char *)hdr + 8, len - 8, len + data, F, a, &small, &h, &diag),
                   -EFBIG);
  assert_int_equal(d9_arena_used(a), before);
  assert_int_equal(small.used, 0);
  /* the need reported covers at least the text and the table */
  uint64_t mib;
  assert_int_equal(sscanf(diag.msg, F ": header metadata needs %" SCNu64 " MiB", &mib), 1);
  assert_true(mib >= (len - 8 + 20000 * (sizeof(d9_st_tensor) + 100)) >> 20);
  assert_non_null(strstr(diag.msg, "over the limit of 1 MiB (-o meta_mib=N raises it)"));
  /* across headers: room for one and a half; the second is refused and
   * says what the first took */
  d9_st_budget two = {one + one / 2 + (len - 8), 0, 100, "-o meta_mib=N raises it"};
  d9_diag d2 = {0};
  assert_int_equal(d9_st_parse_budget((char *)hdr + 8, len - 8, len + data, F, a, &two, &h, &d2), 0);
  assert_int_equal(d9_st_parse_budget((char *)hdr + 8, len - 8, len + data, F, a, &two, &h, &d2),
                   -EFBIG);
  assert_non_null(strstr(d2.msg, "MiB of the headers before it is over the limit of"));
  assert_int_equal(two.used, one);
  d9_arena_destroy(a);
  free(hdr);
}

/* The catalog charges every shard to one budget: a limit of 1 MiB refuses a
 * model.safetensors of 20000 tensors, naming the file and the limit. */
static void test_catalog_limit(void **state) {
  (void)state;
  char dir[] = "/tmp/d9stparse.XXXXXX";
  assert_non_null(mkdtemp(dir));
  uint64_t len, data;
  unsigned char *hdr = many(20000, &len, &data);
  char path[64];
  snprintf(path, sizeof path, "%s/model.safetensors", dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, hdr, len), (ssize_t)len);
  assert_int_equal(ftruncate(fd, (off_t)(len + data)), 0);
  close(fd);
  d9_catalog *c = NULL;
  d9_diag diag = {0};
  assert_int_equal(d9_catalog_open_limited(dir, 1u << 20, &c, &diag), -EFBIG);
  assert_null(c);
  if (!strstr(diag.msg, "model.safetensors: header metadata needs ") ||
      !strstr(diag.msg, "over the limit of 1 MiB (-o meta_mib=N raises it)"))
    fail_msg("message: %s", diag.msg);
  d9_diag_clear(&diag);
  assert_int_equal(d9_catalog_open_limited(dir, 64u << 20, &c, &diag), 0);
  assert_int_equal(c->ntensors, 20000);
  assert_true(c->meta.used > 0 && c->meta.used <= 64u << 20);
  d9_catalog_close(c);
  unlink(path);
  rmdir(dir);
  free(hdr);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_names_and_metadata_decoded),
      cmocka_unit_test(test_metadata_and_key_rules),
      cmocka_unit_test(test_random_layout_read_back),
      cmocka_unit_test(test_budget_refuses_and_accumulates),
      cmocka_unit_test(test_catalog_limit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
