/* test_st_header.c - the strict safetensors header reader and the writer.
 * Table driven: each case is a header built at test time (in the tables '
 * stands for ") plus a data section length; the 8-byte prefix and the file
 * size are computed from them unless a case overrides them. The header
 * buffer has exactly N bytes, so a read past it trips ASan. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mapper/st_header.h"

#define F "x.safetensors"
/* a tensor entry: T("name", "F32", "[2]", "[0,8]") */
#define T(name, dt, shape, offs) \
  "'" name "':{'dtype':'" dt "','shape':" shape ",'data_offsets':" offs "}"

enum { OV_N = 1, OV_SIZE = 2 };

/* CPU seconds of the parsing thread per case: 100,000 tensors take ~0.3 s
 * optimized and ~1 s under ASan+UBSan; a quadratic parser takes minutes.
 * Thread CPU time, not wall time, so a busy machine does not fail it. */
#define TIME_LIMIT 10.0

typedef struct st_case {
  const char *label;
  const char *json;                       /* ' stands for " */
  size_t json_len;                        /* 0: strlen(json) */
  char *(*gen)(size_t *len, uint64_t *data_len); /* instead of json */
  uint64_t data_len;                      /* bytes after the header */
  size_t pad;                             /* spaces appended to the json */
  int ov;                                 /* OV_N / OV_SIZE: use n / size */
  uint64_t n, size;
  int rc;
  const char *msg;                        /* NULL: must parse */
  int ntensors;                           /* checked on success */
} st_case;

/* ---- generated headers ---- */

typedef struct sbuf {
  char *p;
  size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return;
    }
    b->cap = b->cap * 2 + (size_t)n + 64;
    b->p = realloc(b->p, b->cap);
    assert_non_null(b->p);
  }
}

/* 100,000 F16 tensors of shape [i % 7 + 1, 3] laid out in index order, listed
 * in a seeded shuffled order; dup: one name repeated. */
static char *many_gen(uint64_t *data_len, size_t *len, int dup) {
  enum { N = 100000 };
  int *order = malloc(N * sizeof *order);
  uint64_t *begin = malloc((N + 1) * sizeof *begin);
  assert_true(order && begin);
  begin[0] = 0;
  for (int i = 0; i < N; i++) {
    order[i] = i;
    begin[i + 1] = begin[i] + (uint64_t)(i % 7 + 1) * 3 * 2;
  }
  uint64_t seed = 0x9E3779B97F4A7C15u; /* xorshift64, fixed seed */
  for (int i = N - 1; i > 0; i--) {
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    int j = (int)(seed % (uint64_t)(i + 1)), t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  sbuf b = {0};
  sb_printf(&b, "{\"__metadata__\":{\"format\":\"pt\"}");
  for (int k = 0; k < N; k++) {
    int i = order[k];
    sb_printf(&b, ",\"model.layers.%d.weight\":{\"dtype\":\"F16\",\"shape\":[%d,3],"
                  "\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}",
              dup && k == N - 1 ? order[0] : i, i % 7 + 1, begin[i], begin[i + 1]);
  }
  sb_printf(&b, "}");
  *data_len = begin[N];
  *len = b.len;
  free(order);
  free(begin);
  return b.p;
}
static char *gen_many(size_t *len, uint64_t *dl) { return many_gen(dl, len, 0); }
static char *gen_many_dup(size_t *len, uint64_t *dl) { return many_gen(dl, len, 1); }

static char *gen_deep(size_t *len, uint64_t *dl) {
  sbuf b = {0};
  sb_printf(&b, "{\"a\":");
  for (int i = 0; i < 100000; i++) sb_printf(&b, "[");
  *dl = 0;
  *len = b.len;
  return b.p;
}

static char *gen_long_name(size_t *len, uint64_t *dl) {
  sbuf b = {0};
  sb_printf(&b, "{\"");
  for (int i = 0; i < 5000; i++) sb_printf(&b, "\xc3\xa9"); /* é */
  sb_printf(&b, "\":{\"dtype\":\"F33\",\"shape\":[],\"data_offsets\":[0,4]}}");
  *dl = 4;
  *len = b.len;
  return b.p;
}

/* ---- the table ---- */

static const st_case cases[] = {
  /* valid */
  {"empty object", "{}", 0, NULL, 0, 0, 0, 0, 0, 0, NULL, 0},
  {"metadata and two tensors",
   "{'__metadata__':{'format':'pt','note':'caf\xc3\xa9'}," T("a", "BF16", "[2,3]", "[0,12]") ","
   T("b", "F32", "[4]", "[12,28]") "}", 0, NULL, 28, 0, 0, 0, 0, 0, NULL, 2},
  {"json order differs from data order",
   "{" T("b", "F32", "[4]", "[12,28]") "," T("a", "BF16", "[2,3]", "[0,12]") "}",
   0, NULL, 28, 0, 0, 0, 0, 0, NULL, 2},
  {"zero-size tensors", "{" T("e0", "F32", "[0,4]", "[0,0]") "," T("a", "F32", "[2]", "[0,8]") ","
   T("e8", "I64", "[3,0]", "[8,8]") "," T("e8b", "U8", "[0]", "[8,8]") "}",
   0, NULL, 8, 0, 0, 0, 0, 0, NULL, 4},
  {"only zero-size tensors", "{" T("e", "F32", "[0]", "[0,0]") "}", 0, NULL, 0, 0, 0, 0, 0, 0, NULL, 1},
  {"scalar", "{" T("s", "F64", "[]", "[0,8]") "}", 0, NULL, 8, 0, 0, 0, 0, 0, NULL, 1},
  {"space padding", "{" T("a", "U8", "[3]", "[0,3]") "}", 0, NULL, 3, 7, 0, 0, 0, 0, NULL, 1},
  {"whitespace inside", "{ 'a' :\n{'dtype':'U8',\t'shape':[ 3 ],'data_offsets':[0, 3]} }",
   0, NULL, 3, 0, 0, 0, 0, 0, NULL, 1},
  {"integer written with an exponent (refused, as the reference does)",
   "{" T("a", "U8", "[1e1]", "[0,10]") "}", 0, NULL, 10, 0, 0, 0, 0, 0,
   "tensor 'a': shape[0] is not an integer", 0},
  {"integer written with a fraction (refused, as the reference does)",
   "{" T("a", "U8", "[10]", "[0,10.0]") "}", 0, NULL, 10, 0, 0, 0, 0, 0,
   "tensor 'a': data_offsets", 0},
  {"all dtypes", "{" T("a", "BOOL", "[1]", "[0,1]") "," T("b", "F8_E4M3", "[1]", "[1,2]") ","
   T("c", "F8_E5M2", "[1]", "[2,3]") "," T("d", "I16", "[1]", "[3,5]") ","
   T("e", "U64", "[1]", "[5,13]") "}", 0, NULL, 13, 0, 0, 0, 0, 0, NULL, 5},
  {"surrogate pair name", "{" T("\\uD83D\\uDE00", "U8", "[1]", "[0,1]") "}", 0, NULL, 1, 0, 0, 0, 0, 0, NULL, 1},
  {"8 dims", "{" T("a", "U8", "[1,1,1,1,1,1,1,2]", "[0,2]") "}", 0, NULL, 2, 0, 0, 0, 0, 0, NULL, 1},
  {"100000 tensors", NULL, 0, gen_many, 0, 0, 0, 0, 0, 0, NULL, 100000},
  /* the 8-byte length */
  {"file of 5 bytes", "{}", 0, NULL, 0, 0, OV_SIZE, 0, 5, -EINVAL,
   F ": file is 5 bytes, shorter than the 8-byte header length", 0},
  {"file of 0 bytes", "{}", 0, NULL, 0, 0, OV_SIZE, 0, 0, -EINVAL, "file is 0 bytes", 0},
  {"n over the cap", "{}", 0, NULL, 0, 0, OV_N | OV_SIZE, 100000001, 200000000, -EINVAL,
   F ": header length 100000001 is more than the limit of 100000000 bytes", 0},
  {"n = 2^64-1", "{}", 0, NULL, 0, 0, OV_N, UINT64_MAX, 0, -EINVAL, "more than the limit", 0},
  {"n past the file", "{}", 0, NULL, 0, 0, OV_N, 3, 0, -EINVAL,
   F ": header length 3 goes past the end of the file (10 bytes)", 0},
  {"n past a 8-byte file", "{}", 0, NULL, 0, 0, OV_N | OV_SIZE, 1, 8, -EINVAL, "goes past the end", 0},
  {"n = 0", "{}", 0, NULL, 0, 0, OV_N, 0, 0, -EINVAL, F ": header is empty", 0},
  /* text */
  {"overlong utf-8", "{'\xc0\xaf':1}", 0, NULL, 0, 0, 0, 0, 0, 0, F ": header: invalid utf-8 at byte 2", 0},
  {"surrogate utf-8", "{'a\xed\xa0\x80':1}", 0, NULL, 0, 0, 0, 0, 0, 0, F ": header: invalid utf-8 at byte 3", 0},
  {"utf-8 above 10ffff", "{'\xf4\x90\x80\x80':1}", 0, NULL, 0, 0, 0, 0, 0, 0, "invalid utf-8 at byte 2", 0},
  {"truncated utf-8", "{'\xe2\x82':1}", 0, NULL, 0, 0, 0, 0, 0, 0, "invalid utf-8 at byte 2", 0},
  {"stray continuation", "{}  \x80", 0, NULL, 0, 0, 0, 0, 0, 0, "invalid utf-8 at byte 4", 0},
  {"latin-1 byte", "{'caf\xe9':1}", 0, NULL, 0, 0, 0, 0, 0, 0, "invalid utf-8 at byte 5", 0},
  {"raw nul", "{}\0   ", 6, NULL, 0, 0, 0, 0, 0, 0, "nul byte in the json at byte 2", 0},
  {"not json", "{hello}", 0, NULL, 0, 0, 0, 0, 0, 0, F ": header: expected a string key at byte 1", 0},
  {"not json at all", "hello", 0, NULL, 0, 0, 0, 0, 0, 0, F ": header: not a json object", 0},
  {"truncated json", "{" T("a", "U8", "[1]", "[0,1]"), 0, NULL, 1, 0, 0, 0, 0, 0,
   "unexpected end of the json", 0},
  {"top-level array", "[{}]", 0, NULL, 0, 0, 0, 0, 0, 0, F ": header: not a json object", 0},
  {"leading space", " {}", 0, NULL, 0, 0, 0, 0, 0, 0, "does not start with '{'", 0},
  {"bom", "\xef\xbb\xbf{}", 0, NULL, 0, 0, 0, 0, 0, 0, "not a json object", 0},
  {"junk after the object", "{}x", 0, NULL, 0, 0, 0, 0, 0, 0,
   F ": header: trailing bytes after the json object at byte 2", 0},
  {"second object", "{}{}", 0, NULL, 0, 0, 0, 0, 0, 0, "trailing bytes after the json object", 0},
  {"newline padding", "{}   \n", 0, NULL, 0, 0, 0, 0, 0, 0, "trailing bytes after the json object at byte 5", 0},
  {"tab padding", "{}\t", 0, NULL, 0, 0, 0, 0, 0, 0, "trailing bytes after the json object", 0},
  {"depth 100000", NULL, 0, gen_deep, 0, 0, 0, 0, 0, 0, F ": header: json nested deeper than 64", 0},
  {"duplicate tensor", "{" T("a", "U8", "[1]", "[0,1]") "," T("a", "U8", "[1]", "[1,2]") "}",
   0, NULL, 2, 0, 0, 0, 0, 0, F ": header: duplicate key 'a'", 0},
  {"duplicate among 100000", NULL, 0, gen_many_dup, 0, 0, 0, 0, 0, 0, "duplicate key 'model.layers.", 0},
  {"duplicate key in an entry", "{'a':{'dtype':'U8','dtype':'U8','shape':[1],'data_offsets':[0,1]}}",
   0, NULL, 1, 0, 0, 0, 0, 0, "duplicate key 'dtype'", 0},
  {"\\u0000 in a name", "{" T("a\\u0000b", "U8", "[1]", "[0,1]") "}", 0, NULL, 1, 0, 0, 0, 0, 0,
   "\\u0000 (nul) in a string at byte 3", 0},
  {"invalid escape", "{" T("a\\x", "U8", "[1]", "[0,1]") "}", 0, NULL, 1, 0, 0, 0, 0, 0,
   "invalid escape '\\x'", 0},
  {"lone high surrogate", "{" T("\\uD800", "U8", "[1]", "[0,1]") "}", 0, NULL, 1, 0, 0, 0, 0, 0,
   "unpaired high surrogate", 0},
  {"lone low surrogate", "{" T("\\uDFFF", "U8", "[1]", "[0,1]") "}", 0, NULL, 1, 0, 0, 0, 0, 0,
   "lone low surrogate", 0},
  /* metadata */
  {"metadata a string", "{'__metadata__':'pt'}", 0, NULL, 0, 0, 0, 0, 0, 0,
   F ": __metadata__ is not an object", 0},
  {"metadata an array", "{'__metadata__':['a']}", 0, NULL, 0, 0, 0, 0, 0, 0, "__metadata__ is not an object", 0},
  {"metadata number value", "{'__metadata__':{'format':'pt','epochs':3}}", 0, NULL, 0, 0, 0, 0, 0, 0,
   F ": __metadata__ value of 'epochs' is not a string", 0},
  {"metadata nested object", "{'__metadata__':{'x':{}}}", 0, NULL, 0, 0, 0, 0, 0, 0,
   "__metadata__ value of 'x' is not a string", 0},
  /* entries */
  {"empty name", "{" T("", "U8", "[1]", "[0,1]") "}", 0, NULL, 1, 0, 0, 0, 0, 0, F ": a tensor has an empty name", 0},
  {"entry not an object", "{'a':[1]}", 0, NULL, 0, 0, 0, 0, 0, 0, F ": tensor 'a': entry is not an object", 0},
  {"unknown key", "{'a':{'dtype':'U8','shape':[1],'data_offsets':[0,1],'offset':0}}", 0, NULL, 1, 0, 0, 0, 0, 0,
   F ": tensor 'a': unknown key 'offset'", 0},
  {"missing shape", "{'a':{'dtype':'U8','data_offsets':[0,1]}}", 0, NULL, 1, 0, 0, 0, 0, 0,
   F ": tensor 'a': missing key 'shape'", 0},
  {"unknown dtype", "{" T("a", "F128", "[1]", "[0,16]") "}", 0, NULL, 16, 0, 0, 0, 0, 0,
   F ": tensor 'a': unknown dtype 'F128'", 0},
  {"lowercase dtype", "{" T("a", "bf16", "[1]", "[0,2]") "}", 0, NULL, 2, 0, 0, 0, 0, 0,
   F ": tensor 'a': unknown dtype 'bf16'", 0},
  {"dtype not a string", "{'a':{'dtype':2,'shape':[1],'data_offsets':[0,1]}}", 0, NULL, 1, 0, 0, 0, 0, 0,
   "tensor 'a': dtype is not a string", 0},
  {"name with escape codes", "{" T("x\\u001b[2J", "F33", "[1]", "[0,4]") "}", 0, NULL, 4, 0, 0, 0, 0, 0,
   F ": tensor 'x\\x1b[2J': unknown dtype 'F33'", 0},
  {"very long name", NULL, 0, gen_long_name, 0, 0, 0, 0, 0, 0, "...': unknown dtype 'F33'", 0},
  /* shape */
  {"shape not an array", "{" T("a", "U8", "3", "[0,3]") "}", 0, NULL, 3, 0, 0, 0, 0, 0,
   "tensor 'a': shape is not an array", 0},
  {"negative shape", "{" T("a", "U8", "[2,-1]", "[0,0]") "}", 0, NULL, 0, 0, 0, 0, 0, 0,
   F ": tensor 'a': shape[1] is not an integer in [0, 2^53]", 0},
  {"fractional shape", "{" T("a", "U8", "[1.5]", "[0,1]") "}", 0, NULL, 1, 0, 0, 0, 0, 0,
   "tensor 'a': shape[0] is not an integer", 0},
  {"string shape", "{" T("a", "U8", "['1']", "[0,1]") "}", 0, NULL, 1, 0, 0, 0, 0, 0,
   "tensor 'a': shape[0] is not an integer", 0},
  {"shape 2^53+2", "{" T("a", "U8", "[9007199254740994,0]", "[0,0]") "}", 0, NULL, 0, 0, 0, 0, 0, 0,
   "tensor 'a': shape[0] is not an integer in [0, 2^53]", 0},
  {"shape 2^53+1", "{" T("a", "U8", "[9007199254740993,0]", "[0,0]") "}", 0, NULL, 0, 0, 0, 0, 0, 0,
   "tensor 'a': shape[0] is not an integer in [0, 2^53]", 0},
  {"shape 1e300", "{" T("a", "U8", "[1e300]", "[0,0]") "}", 0, NULL, 0, 0, 0, 0, 0, 0,
   "shape[0] is not an integer", 0},
  {"9 dims", "{" T("a", "U8", "[1,1,1,1,1,1,1,1,1]", "[0,1]") "}", 0, NULL, 1, 0, 0, 0, 0, 0,
   F ": tensor 'a': shape has 9 dimensions, more than 8", 0},
  {"element count overflow", "{" T("a", "U8", "[4294967296,4294967296,16]", "[0,0]") "}", 0, NULL, 0, 0, 0, 0, 0, 0,
   F ": tensor 'a': shape [4294967296, 4294967296, 16] of U8 overflows", 0},
  {"overflow before a zero dim", "{" T("a", "U8", "[4294967296,4294967296,0]", "[0,0]") "}", 0, NULL, 0, 0, 0, 0, 0, 0,
   "overflows the element count", 0},
  {"byte length overflow", "{" T("a", "F64", "[9007199254740992,512]", "[0,0]") "}", 0, NULL, 0, 0, 0, 0, 0, 0,
   "tensor 'a': shape [9007199254740992, 512] of F64 overflows", 0},
  {"byte length mismatch", "{" T("a", "F32", "[2,2]", "[0,12]") "}", 0, NULL, 12, 0, 0, 0, 0, 0,
   F ": tensor 'a': data_offsets [0, 12) hold 12 bytes, but shape [2, 2] of F32 needs 16", 0},
  {"2^53 by 0 is empty", "{" T("a", "U8", "[9007199254740992,0]", "[0,0]") "}", 0, NULL, 0, 0, 0, 0, 0, 0, NULL, 1},
  /* data_offsets */
  {"offsets not an array", "{" T("a", "U8", "[1]", "0") "}", 0, NULL, 1, 0, 0, 0, 0, 0,
   "tensor 'a': data_offsets is not an array", 0},
  {"one offset", "{" T("a", "U8", "[1]", "[0]") "}", 0, NULL, 1, 0, 0, 0, 0, 0,
   F ": tensor 'a': data_offsets must have 2 items [begin, end], not 1", 0},
  {"three offsets", "{" T("a", "U8", "[1]", "[0,1,2]") "}", 0, NULL, 1, 0, 0, 0, 0, 0,
   "tensor 'a': data_offsets must have 2 items [begin, end], not 3", 0},
  {"string offsets", "{" T("a", "U8", "[1]", "['0','1']") "}", 0, NULL, 1, 0, 0, 0, 0, 0,
   "tensor 'a': data_offsets[0] is not an integer in [0, 2^53]", 0},
  {"negative offset", "{" T("a", "U8", "[0]", "[-1,-1]") "}", 0, NULL, 0, 0, 0, 0, 0, 0,
   "data_offsets[0] is not an integer", 0},
  {"fractional offset", "{" T("a", "U8", "[1]", "[0,1.5]") "}", 0, NULL, 1, 0, 0, 0, 0, 0,
   "data_offsets[1] is not an integer", 0},
  {"offset 2^53+2", "{" T("a", "U8", "[0]", "[9007199254740994,9007199254740994]") "}", 0, NULL, 0, 0, 0, 0, 0, 0,
   "data_offsets[0] is not an integer", 0},
  {"reversed offsets", "{" T("a", "U8", "[1]", "[8,0]") "}", 0, NULL, 8, 0, 0, 0, 0, 0,
   F ": tensor 'a': data_offsets [8, 0) end before they begin", 0},
  {"not starting at 0", "{" T("a", "U8", "[8]", "[8,16]") "}", 0, NULL, 16, 0, 0, 0, 0, 0,
   F ": tensor 'a': data_offsets [8, 16) leave a gap at the start", 0},
  {"gap", "{" T("a", "U8", "[8]", "[0,8]") "," T("b", "U8", "[8]", "[12,20]") "}", 0, NULL, 20, 0, 0, 0, 0, 0,
   F ": tensor 'b': data_offsets [12, 20) leave a gap of 4 bytes after the previous tensor 'a' [0, 8)", 0},
  {"overlap", "{" T("a", "U8", "[128]", "[0,128]") "," T("b", "U8", "[96]", "[32,128]") "}", 0, NULL, 128, 0, 0, 0, 0, 0,
   F ": tensor 'b': data_offsets [32, 128) overlap the previous tensor 'a' [0, 128)", 0},
  {"overlap, same begin", "{" T("a", "U8", "[128]", "[0,128]") "," T("b", "U8", "[96]", "[0,96]") "}", 0, NULL, 128, 0, 0, 0, 0, 0,
   F ": tensor 'a': data_offsets [0, 128) overlap the previous tensor 'b' [0, 96)", 0},
  {"alias", "{" T("a", "U8", "[16]", "[0,16]") "," T("b", "I16", "[8]", "[0,16]") "}", 0, NULL, 16, 0, 0, 0, 0, 0,
   F ": tensor 'b': data_offsets [0, 16) alias tensor 'a'", 0},
  {"zero-size inside another", "{" T("a", "U8", "[16]", "[0,16]") "," T("z", "U8", "[0]", "[8,8]") "}", 0, NULL, 16, 0, 0, 0, 0, 0,
   "tensor 'z': data_offsets [8, 8) overlap the previous tensor 'a' [0, 16)", 0},
  {"trailing bytes", "{" T("a", "U8", "[8]", "[0,8]") "}", 0, NULL, 12, 0, 0, 0, 0, 0,
   F ": trailing bytes: the data section is 12 bytes, the tensors end at 8", 0},
  {"data but no tensors", "{}", 0, NULL, 1, 0, 0, 0, 0, 0, F ": trailing bytes: the data section is 1 bytes, the tensors end at 0", 0},
  {"short data", "{" T("a", "U8", "[8]", "[0,8]") "}", 0, NULL, 7, 0, 0, 0, 0, 0,
   F ": tensor 'a': data_offsets [0, 8) go past the end of the data section (7 bytes)", 0},
};

static void run_case(const st_case *c) {
  size_t len;
  uint64_t data_len = c->data_len;
  char *text;
  if (c->gen) {
    text = c->gen(&len, &data_len);
  } else {
    len = c->json_len ? c->json_len : strlen(c->json);
    text = malloc(len + c->pad + 1);
    assert_non_null(text);
    for (size_t i = 0; i < len; i++) text[i] = c->json[i] == '\'' ? '"' : c->json[i];
  }
  memset(text + len, ' ', c->pad);
  len += c->pad;
  /* exactly N bytes for the parser to see */
  char *hdr = malloc(len ? len : 1);
  assert_non_null(hdr);
  memcpy(hdr, text, len);
  free(text);

  uint64_t n = c->ov & OV_N ? c->n : len;
  uint64_t size = c->ov & OV_SIZE ? c->size : 8 + len + data_len;
  unsigned char prefix[8];
  for (int i = 0; i < 8; i++) prefix[i] = (unsigned char)(n >> (8 * i));

  d9_diag diag = {0};
  d9_arena *a = d9_arena_create();
  d9_st_header h;
  uint64_t hl = 0;
  struct timespec t0, t1;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
  int rc = d9_st_header_len(prefix, size, F, &hl, &diag);
  if (rc == 0) {
    assert_int_equal(hl, n);
    assert_true(hl <= len); /* the table never declares more than it built */
    rc = d9_st_parse(hdr, hl, size, F, a, &h, &diag);
  }
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  if (getenv("D9_TEST_VERBOSE"))
    printf("%-36s %.3fs %s\n", c->label, secs, rc ? diag.msg : "ok");
  if (c->msg) {
    if (rc != (c->rc ? c->rc : -EINVAL) || !strstr(diag.msg, c->msg))
      fail_msg("case '%s': want '%s', got rc %d '%s'", c->label, c->msg, rc, diag.msg);
    if (strncmp(diag.msg, F ": ", strlen(F ": ")))
      fail_msg("case '%s': message does not name the file: '%s'", c->label, diag.msg);
  } else {
    if (rc) fail_msg("case '%s': unexpected error '%s'", c->label, diag.msg);
    assert_int_equal(h.ntensors, c->ntensors);
    assert_int_equal(h.header_len, len);
    assert_int_equal(h.data_start, 8 + len);
  }
  if (secs > TIME_LIMIT && !getenv("D9_TEST_NO_TIMING")) /* set under valgrind */
    fail_msg("case '%s' took %.3f s (limit %.1f s)", c->label, secs, TIME_LIMIT);
  d9_arena_destroy(a);
  free(hdr);
}

static void test_parse_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
}

/* field-level checks of a parse: JSON order, metadata, dtype, shape */
static void test_parse_fields(void **state) {
  (void)state;
  const char *j = "{\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[12,28]},"
                  "\"__metadata__\":{\"format\":\"pt\",\"k\":\"v\\n\"},"
                  "\"a\":{\"data_offsets\":[0,12],\"shape\":[2,3],\"dtype\":\"BF16\"}}";
  size_t len = strlen(j);
  d9_arena *a = d9_arena_create();
  d9_st_header h;
  d9_diag diag = {0};
  assert_int_equal(d9_st_parse(j, len, 8 + len + 28, F, a, &h, &diag), 0);
  assert_int_equal(h.ntensors, 2);
  assert_string_equal(h.tensors[0].name, "b");
  assert_int_equal(h.tensors[0].dtype, D9_F32);
  assert_int_equal(h.tensors[0].ndim, 1);
  assert_int_equal(h.tensors[0].shape[0], 4);
  assert_int_equal(h.tensors[0].begin, 12);
  assert_int_equal(h.tensors[0].end, 28);
  assert_string_equal(h.tensors[1].name, "a");
  assert_int_equal(h.tensors[1].dtype, D9_BF16);
  assert_int_equal(h.tensors[1].ndim, 2);
  assert_int_equal(h.tensors[1].shape[1], 3);
  assert_int_equal(h.nmeta, 2);
  assert_string_equal(h.meta_keys[1], "k");
  assert_string_equal(h.meta_values[1], "v\n");
  d9_arena_destroy(a);
}

/* ---- numel / nbytes ---- */

typedef struct ncase {
  int64_t shape[D9_MAX_DIMS + 1];
  int ndim;
  d9_dtype t;
  int rc_numel, rc_nbytes;
  int64_t numel;
  uint64_t nbytes;
} ncase;

static const ncase ncases[] = {
  {{0}, 0, D9_F32, 0, 0, 1, 4},
  {{2, 3}, 2, D9_BF16, 0, 0, 6, 12},
  {{0, INT64_MAX}, 2, D9_F32, 0, 0, 0, 0},
  {{INT64_C(1) << 32, INT64_C(1) << 32, 16}, 3, D9_U8, -EOVERFLOW, -EOVERFLOW, 0, 0},
  {{INT64_C(1) << 32, INT64_C(1) << 32, 0}, 3, D9_U8, -EOVERFLOW, -EOVERFLOW, 0, 0},
  {{INT64_MAX}, 1, D9_U8, 0, 0, INT64_MAX, (uint64_t)INT64_MAX},
  {{INT64_MAX}, 1, D9_I16, 0, 0, INT64_MAX, (uint64_t)INT64_MAX * 2},
  {{INT64_MAX}, 1, D9_F32, 0, -EOVERFLOW, INT64_MAX, 0},
  {{INT64_C(1) << 62, 2}, 2, D9_U8, -EOVERFLOW, -EOVERFLOW, 0, 0},
  {{-1}, 1, D9_U8, -EINVAL, -EINVAL, 0, 0},
  {{1}, D9_MAX_DIMS + 1, D9_U8, -EINVAL, -EINVAL, 0, 0},
  {{1}, 1, D9_DTYPE_INVALID, 0, -EINVAL, 1, 0},
};

static void test_numel_nbytes_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof ncases / sizeof ncases[0]; i++) {
    const ncase *c = &ncases[i];
    int64_t ne = -7;
    uint64_t nb = 7;
    int r1 = d9_st_numel(c->shape, c->ndim, &ne);
    int r2 = d9_st_nbytes(c->shape, c->ndim, c->t, &nb);
    if (r1 != c->rc_numel || r2 != c->rc_nbytes || (!r1 && ne != c->numel) ||
        (!r2 && nb != c->nbytes))
      fail_msg("numel case %zu: rc %d/%d values %lld/%llu", i, r1, r2,
               (long long)ne, (unsigned long long)nb);
  }
}

/* ---- writer ---- */

static void test_write_round_trip(void **state) {
  (void)state;
  d9_st_tensor ts[] = {
      {.name = "model.embed.weight", .dtype = D9_BF16, .ndim = 2, .shape = {2, 3}},
      {.name = "empty", .dtype = D9_F32, .ndim = 2, .shape = {0, 5}},
      {.name = "q\"uote\\back\nnl\x01\x1f\x7f", .dtype = D9_F8_E4M3, .ndim = 1, .shape = {7}},
      {.name = "caf\xc3\xa9 \xf0\x9f\x98\x80", .dtype = D9_I64, .ndim = 0},
      {.name = "deep", .dtype = D9_U8, .ndim = 8, .shape = {1, 2, 1, 2, 1, 2, 1, 3}},
      {.name = "empty2", .dtype = D9_U8, .ndim = 1, .shape = {0}},
  };
  const char *mk[] = {"format", "source", "q\"k"}, *mv[] = {"ignored", "d9dfs \\ test", "\t"};
  int n = (int)(sizeof ts / sizeof ts[0]);
  unsigned char *out;
  uint64_t out_len;
  assert_int_equal(d9_st_write_header(ts, n, mk, mv, 3, &out, &out_len), 0);

  const char *want_start = "{\"__metadata__\":{\"format\":\"pt\",\"source\":\"d9dfs \\\\ test\","
                           "\"q\\\"k\":\"\\u0009\"},\"model.embed.weight\":{\"dtype\":\"BF16\","
                           "\"shape\":[2,3],\"data_offsets\":[0,12]},\"empty\":";
  assert_memory_equal(out + 8, want_start, strlen(want_start));
  const char *want_name = "\"q\\\"uote\\\\back\\u000anl\\u0001\\u001f\x7f\":{";
  assert_non_null(memmem(out, out_len, want_name, strlen(want_name)));

  uint64_t hl;
  d9_diag diag = {0};
  uint64_t data = 12 + 0 + 7 + 8 + 24 + 0; /* bytes of the six tensors */
  assert_int_equal(d9_st_header_len(out, out_len + data, F, &hl, &diag), 0);
  assert_int_equal(hl, out_len - 8);
  assert_int_equal(hl % 8, 0);
  assert_int_equal(out[out_len - 1] == ' ' || out[out_len - 1] == '}', 1);

  d9_arena *a = d9_arena_create();
  d9_st_header h;
  int rc = d9_st_parse((const char *)out + 8, hl, out_len + data, F, a, &h, &diag);
  if (rc) fail_msg("round trip: %s", diag.msg);
  assert_int_equal(h.ntensors, n);
  uint64_t off = 0;
  for (int i = 0; i < n; i++) {
    assert_string_equal(h.tensors[i].name, ts[i].name);
    assert_int_equal(h.tensors[i].dtype, ts[i].dtype);
    assert_int_equal(h.tensors[i].ndim, ts[i].ndim);
    assert_memory_equal(h.tensors[i].shape, ts[i].shape, (size_t)ts[i].ndim * sizeof(int64_t));
    assert_int_equal(h.tensors[i].begin, ts[i].begin);
    assert_int_equal(h.tensors[i].end, ts[i].end);
    assert_int_equal(ts[i].begin, off);
    off = ts[i].end;
  }
  assert_int_equal(off, data);
  assert_int_equal(h.nmeta, 3);
  assert_string_equal(h.meta_keys[0], "format");
  assert_string_equal(h.meta_values[0], "pt");
  assert_string_equal(h.meta_values[1], "d9dfs \\ test");
  assert_string_equal(h.meta_keys[2], "q\"k");
  d9_arena_destroy(a);
  free(out);

  /* every padding length: names of 1..16 bytes */
  for (int k = 1; k <= 16; k++) {
    char name[17];
    memset(name, 'n', (size_t)k);
    name[k] = 0;
    d9_st_tensor t = {.name = name, .dtype = D9_U8, .ndim = 1, .shape = {3}};
    assert_int_equal(d9_st_write_header(&t, 1, NULL, NULL, 0, &out, &out_len), 0);
    assert_int_equal(out_len % 8, 0);
    d9_arena *a2 = d9_arena_create();
    assert_int_equal(d9_st_parse((const char *)out + 8, out_len - 8, out_len + 3, F, a2, &h, &diag), 0);
    assert_string_equal(h.tensors[0].name, name);
    d9_arena_destroy(a2);
    free(out);
  }
}

typedef struct wcase {
  const char *label;
  d9_st_tensor t[2];
  int n;
  const char *mk[2], *mv[2];
  int nmeta;
  int rc;
} wcase;

static const wcase wcases[] = {
  {"no tensors", {{0}}, 0, {0}, {0}, 0, 0},
  {"bad dtype", {{.name = "a", .dtype = D9_DTYPE_INVALID, .ndim = 1, .shape = {1}}}, 1, {0}, {0}, 0, -EINVAL},
  {"negative dim", {{.name = "a", .dtype = D9_U8, .ndim = 1, .shape = {-1}}}, 1, {0}, {0}, 0, -EINVAL},
  {"9 dims", {{.name = "a", .dtype = D9_U8, .ndim = 9}}, 1, {0}, {0}, 0, -EINVAL},
  {"overflow", {{.name = "a", .dtype = D9_U8, .ndim = 3, .shape = {INT64_C(1) << 32, INT64_C(1) << 32, 16}}},
   1, {0}, {0}, 0, -EINVAL},
  {"past 2^53", {{.name = "a", .dtype = D9_U8, .ndim = 1, .shape = {INT64_C(1) << 53}},
                 {.name = "b", .dtype = D9_U8, .ndim = 1, .shape = {1}}}, 2, {0}, {0}, 0, -EINVAL},
  {"duplicate names", {{.name = "a", .dtype = D9_U8, .ndim = 0}, {.name = "a", .dtype = D9_U8, .ndim = 0}},
   2, {0}, {0}, 0, -EINVAL},
  {"__metadata__ name", {{.name = "__metadata__", .dtype = D9_U8, .ndim = 0}}, 1, {0}, {0}, 0, -EINVAL},
  {"empty name", {{.name = "", .dtype = D9_U8, .ndim = 0}}, 1, {0}, {0}, 0, -EINVAL},
  {"null name", {{.name = NULL, .dtype = D9_U8, .ndim = 0}}, 1, {0}, {0}, 0, -EINVAL},
  {"invalid utf-8 name", {{.name = "\xc0\xaf", .dtype = D9_U8, .ndim = 0}}, 1, {0}, {0}, 0, -EINVAL},
  {"duplicate meta", {{0}}, 0, {"k", "k"}, {"1", "2"}, 2, -EINVAL},
  {"null meta value", {{0}}, 0, {"k"}, {NULL}, 1, -EINVAL},
  {"meta format only", {{0}}, 0, {"format"}, {"np"}, 1, 0},
};

static void test_write_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof wcases / sizeof wcases[0]; i++) {
    wcase c = wcases[i]; /* the writer sets begin/end */
    unsigned char *out = (unsigned char *)1;
    uint64_t len = 1;
    int rc = d9_st_write_header(c.t, c.n, c.mk, c.mv, c.nmeta, &out, &len);
    if (rc != c.rc) fail_msg("writer case '%s': rc %d, want %d", c.label, rc, c.rc);
    if (rc) {
      assert_null(out);
      continue;
    }
    d9_arena *a = d9_arena_create();
    d9_st_header h;
    d9_diag diag = {0};
    if (d9_st_parse((const char *)out + 8, len - 8, len, F, a, &h, &diag))
      fail_msg("writer case '%s': output does not parse: %s", c.label, diag.msg);
    assert_string_equal(h.meta_values[0], "pt");
    d9_arena_destroy(a);
    free(out);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_table),
      cmocka_unit_test(test_parse_fields),
      cmocka_unit_test(test_numel_nbytes_table),
      cmocka_unit_test(test_write_round_trip),
      cmocka_unit_test(test_write_table),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
