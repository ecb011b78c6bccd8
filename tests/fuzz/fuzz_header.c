/* fuzz_header.c - libFuzzer target for the safetensors header parser
 * (mapper/st_header.h).
 *
 * Input: the bytes of a whole safetensors file (8-byte length, JSON, data).
 * The target runs the catalog's two steps, d9_st_header_len() on the first
 * 8 bytes and d9_st_parse() on an exact-size copy of the JSON (no NUL after
 * it, so ASan sees any read past header_len), and then checks properties
 * that must hold for every header the parser accepts:
 *   - tensors are strictly contiguous from 0 to the data length, each
 *     byte length = elements x element size, names non-empty and unique;
 *   - the writer (d9_st_write_header) accepts the parsed tensors and
 *     metadata, and its output parses back to the same names, dtypes,
 *     shapes and metadata ("every header that d9dfs emits must
 *     pass its own strict parser");
 *   - within a d9_st_budget the answer is the same, or -EFBIG naming the
 *     limit with nothing charged; an accepted header stays under the limit.
 * Built with libFuzzer, the target also has a structure-aware mutator
 * (LLVMFuzzerCustomMutator at the end, tests/fuzz/json_mutate.h).
 * A broken property aborts, which libFuzzer reports as a crash.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapper/st_header.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A property that must hold; on failure print it (and the diagnostic
 * when there is one) and abort, which libFuzzer reports as a crash. */
#define CHECK_MSG(c, msg)                                                     \
  do {                                                                        \
    if (!(c)) {                                                               \
      fprintf(stderr, "fuzz_header: property failed: %s (line %d)%s%s\n", #c,  \
              __LINE__, (msg) ? ": " : "", (msg) ? (msg) : "");               \
      abort();                                                                \
    }                                                                         \
  } while (0)
#define CHECK(c) CHECK_MSG(c, (const char *)NULL)

static int cmp_begin(const void *pa, const void *pb) {
  const d9_st_tensor *a = *(const d9_st_tensor *const *)pa;
  const d9_st_tensor *b = *(const d9_st_tensor *const *)pb;
  if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
  return (a->end > b->end) - (a->end < b->end);
}

static int cmp_name(const void *pa, const void *pb) {
  return strcmp((*(const d9_st_tensor *const *)pa)->name,
                (*(const d9_st_tensor *const *)pb)->name);
}

/* The invariants of an accepted header over a data section of data_len. */
static void check_accepted(const d9_st_header *h, uint64_t data_len) {
  const d9_st_tensor **v = malloc(((size_t)h->ntensors + 1) * sizeof *v);
  CHECK(v);
  for (int i = 0; i < h->ntensors; i++) {
    const d9_st_tensor *t = &h->tensors[i];
    uint64_t nbytes;
    CHECK(t->name && t->name[0]);
    CHECK(t->ndim >= 0 && t->ndim <= D9_MAX_DIMS);
    CHECK(d9_st_nbytes(t->shape, t->ndim, t->dtype, &nbytes) == 0);
    CHECK(t->begin <= t->end && t->end - t->begin == nbytes);
    CHECK(t->end <= data_len);
    v[i] = t;
  }
  qsort(v, (size_t)h->ntensors, sizeof *v, cmp_begin);
  uint64_t pos = 0;
  for (int i = 0; i < h->ntensors; i++) {
    CHECK(v[i]->begin == pos);
    pos = v[i]->end;
  }
  CHECK(pos == data_len);
  qsort(v, (size_t)h->ntensors, sizeof *v, cmp_name);
  for (int i = 1; i < h->ntensors; i++) CHECK(strcmp(v[i - 1]->name, v[i]->name));
  free(v);
}

/* Write h back with the reference writer and parse the result. */
static void check_roundtrip(const d9_st_header *h) {
  d9_st_tensor *w = malloc(((size_t)h->ntensors + 1) * sizeof *w);
  CHECK(w);
  uint64_t data_len = 0;
  for (int i = 0; i < h->ntensors; i++) {
    w[i] = h->tensors[i];
    data_len += h->tensors[i].end - h->tensors[i].begin;
  }
  unsigned char *out;
  uint64_t out_len;
  int rc = d9_st_write_header(w, h->ntensors, h->meta_keys, h->meta_values, h->nmeta,
                              &out, &out_len);
  CHECK(rc == 0);
  CHECK(out_len >= 16 && (out_len - 8) % 8 == 0);

  d9_arena *a = d9_arena_create();
  CHECK(a);
  d9_diag diag = {0};
  d9_st_header back;
  uint64_t hlen;
  uint64_t fsize = out_len + data_len;
  CHECK(d9_st_header_len(out, fsize, "written", &hlen, &diag) == 0);
  CHECK(hlen == out_len - 8);
  rc = d9_st_parse((const char *)out + 8, hlen, fsize, "written", a, &back, &diag);
  if (rc) fprintf(stderr, "fuzz_header: written header refused: %s\n", diag.msg);
  CHECK(rc == 0);
  CHECK(back.ntensors == h->ntensors);
  for (int i = 0; i < h->ntensors; i++) {
    const d9_st_tensor *x = &h->tensors[i], *y = &back.tensors[i];
    CHECK(!strcmp(x->name, y->name));
    CHECK(x->dtype == y->dtype && x->ndim == y->ndim);
    CHECK(!memcmp(x->shape, y->shape, sizeof(int64_t) * (size_t)x->ndim));
    CHECK(y->begin == w[i].begin && y->end == w[i].end);
  }
  /* metadata: the caller's pairs except "format", plus "format": "pt" */
  int want = 1;
  for (int i = 0; i < h->nmeta; i++) {
    if (!strcmp(h->meta_keys[i], "format")) continue;
    want++;
    int found = 0;
    for (int j = 0; j < back.nmeta; j++)
      if (!strcmp(back.meta_keys[j], h->meta_keys[i]))
        found = !strcmp(back.meta_values[j], h->meta_values[i]);
    CHECK(found);
  }
  CHECK(back.nmeta == want);
  d9_arena_destroy(a);
  free(out);
  free(w);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  unsigned char prefix[8] = {0};
  uint64_t hlen;
  d9_diag diag = {0};
  memcpy(prefix, data, size < 8 ? size : 8);
  if (d9_st_header_len(prefix, size, "fuzz.safetensors", &hlen, &diag)) {
    CHECK(diag.set);
    return 0;
  }
  CHECK(hlen > 0 && hlen <= size - 8);
  char *json = malloc((size_t)hlen); /* exactly hlen: no NUL to lean on */
  CHECK(json);
  memcpy(json, data + 8, (size_t)hlen);
  d9_arena *a = d9_arena_create();
  CHECK(a);
  d9_st_header h;
  int rc = d9_st_parse(json, hlen, size, "fuzz.safetensors", a, &h, &diag);
  if (rc == 0) {
    CHECK(h.header_len == hlen && h.data_start == 8 + hlen);
    check_accepted(&h, size - 8 - hlen);
    check_roundtrip(&h);
  } else {
    CHECK_MSG(diag.set && !strchr(diag.msg, '\n'), diag.msg);
  }
  /* within a budget: the same answer, or a refusal naming the limit */
  d9_arena *a2 = d9_arena_create();
  CHECK(a2);
  d9_diag d2 = {0};
  d9_st_budget b = {hlen * (size % 5) + (size % 977) * 64, size % 3 ? 0 : hlen, size % 200,
                    "fuzz"};
  uint64_t used0 = b.used;
  int rc2 = d9_st_parse_budget(json, hlen, size, "fuzz.safetensors", a2, &b, &h, &d2);
  CHECK_MSG(rc2 == rc || rc2 == -EFBIG, d2.msg);
  if (rc2 == -EFBIG) CHECK_MSG(strstr(d2.msg, "over the limit of") && b.used == used0, d2.msg);
  if (rc2 == 0) CHECK(b.used > used0 && (!b.limit || b.used <= b.limit));
  d9_arena_destroy(a2);
  d9_arena_destroy(a);
  free(json);
  return 0;
}

#ifdef D9_FUZZ_STRUCTURED
/* ---- structure-aware mutation (json_mutate.h; libFuzzer builds only) ----
 *
 * The input is a whole file, so the JSON between the 8-byte length and the
 * data section is mutated as a tree; then, most of the time, data_offsets
 * are made contiguous again from the shapes and dtypes (so a mutation that
 * adds 1000 tensors or a 9th dim reaches the checks behind the layout), the
 * length prefix is recomputed and the data section sized to match. The
 * special mutation builds headers of thousands of tensors (long names,
 * repeated names, dims up to D9_MAX_DIMS + 1). */
#include "json_mutate.h"

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned seed);

typedef struct hctx {
  uint64_t data_len; /* bytes of data section the tensors now need */
} hctx;

static const char *const dtypes[] = {"BOOL", "U8", "I8", "I16", "U16", "F16", "BF16", "I32",
                                     "U32", "F32", "F64", "I64", "U64", "F8_E4M3", "F8_E5M2",
                                     "F128", "bf16", ""};

static void many_tensors(cJSON **root, d9_fz_rng *r, void *ctx) {
  (void)ctx;
  static const int counts[] = {100, 300, 1000, 3000};
  int n = counts[d9_fz_below(r, 4)];
  int dup = d9_fz_below(r, 4) == 0 ? (int)d9_fz_below(r, (uint64_t)n) : -1;
  int longnames = d9_fz_below(r, 4) == 0;
  cJSON *o = cJSON_CreateObject();
  if (!o) return;
  cJSON *meta = cJSON_AddObjectToObject(o, "__metadata__");
  if (meta) cJSON_AddStringToObject(meta, "format", "pt");
  for (int i = 0; i < n; i++) {
    char name[1200];
    int at = i == n - 1 && dup >= 0 ? dup : i;
    if (longnames)
      snprintf(name, sizeof name, "model.layers.%d.%0*d", at / 64, 1000 + (int)d9_fz_below(r, 30), at);
    else
      snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.w", at / 64, at % 64);
    cJSON *e = cJSON_CreateObject();
    if (!e) break;
    cJSON_AddStringToObject(e, "dtype", d9_fz_below(r, 64) ? dtypes[d9_fz_below(r, 15)]
                                                           : dtypes[d9_fz_below(r, 18)]);
    cJSON *sh = cJSON_AddArrayToObject(e, "shape");
    int nd = (int)d9_fz_below(r, d9_fz_below(r, 32) ? D9_MAX_DIMS + 1 : D9_MAX_DIMS + 2);
    for (int d = 0; d < nd && sh; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)d9_fz_below(r, 3)));
    cJSON_AddItemToObject(e, "data_offsets", cJSON_CreateArray());
    cJSON_AddItemToObject(o, name, e);
  }
  cJSON_Delete(*root);
  *root = o;
}

/* data_offsets contiguous from the shapes, 7 times in 8 */
static void fix_layout(cJSON *root, d9_fz_rng *r, void *ctx) {
  hctx *h = ctx;
  if (!cJSON_IsObject(root) || d9_fz_below(r, 8) == 0) return;
  uint64_t off = 0;
  for (cJSON *e = root->child; e; e = e->next) {
    if (!cJSON_IsObject(e) || !e->string || !strcmp(e->string, "__metadata__")) continue;
    cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(sh)) continue;
    d9_dtype t = d9_dtype_parse(dt->valuestring, strlen(dt->valuestring));
    int64_t dims[D9_MAX_DIMS];
    int nd = 0, ok = t != D9_DTYPE_INVALID && cJSON_GetArraySize(sh) <= D9_MAX_DIMS;
    for (cJSON *d = sh->child; d && ok; d = d->next) {
      ok = cJSON_IsNumber(d) && d->valuedouble >= 0 && d->valuedouble <= 1e6;
      if (ok) dims[nd++] = (int64_t)d->valuedouble;
    }
    uint64_t nb;
    if (!ok || d9_st_nbytes(dims, nd, t, &nb) || nb > (1u << 20) - off) continue;
    cJSON *offs = cJSON_CreateArray();
    if (!offs) continue;
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
    cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + nb)));
    if (cJSON_GetObjectItemCaseSensitive(e, "data_offsets"))
      cJSON_ReplaceItemInObjectCaseSensitive(e, "data_offsets", offs);
    else
      cJSON_AddItemToObject(e, "data_offsets", offs);
    off += nb;
  }
  h->data_len = off;
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned seed) {
  d9_fz_rng r = {seed};
  if (max_size < 64 || d9_fz_below(&r, 5) == 0) return LLVMFuzzerMutate(data, size, max_size);
  uint64_t n = 0;
  for (int i = 7; i >= 0 && size >= 8; i--) n = n << 8 | data[i];
  size_t jl = size >= 8 ? size - 8 : 0;
  if (n < jl) jl = (size_t)n;
  hctx h = {size >= 8 ? size - 8 - jl : 0};
  static const char *const names[] = {"__metadata__", "dtype", "shape", "data_offsets", "format",
                                      "F32", "BF16", "F8_E4M3", "model.embed_tokens.weight"};
  d9_fz_cfg cfg = {names, 9, many_tensors, fix_layout, &h};
  uint8_t *out = malloc(max_size);
  if (!out) return LLVMFuzzerMutate(data, size, max_size);
  size_t len = d9_fz_mutate(size >= 8 ? data + 8 : data, jl, out, max_size - 16, seed, &cfg);
  if (!len) {
    free(out);
    return LLVMFuzzerMutate(data, size, max_size);
  }
  while (len % 8 && len < max_size - 16 && d9_fz_below(&r, 4)) out[len++] = ' ';
  uint64_t dl = h.data_len;
  if (dl > max_size - 8 - len) dl = max_size - 8 - len; /* the offsets then miss */
  uint64_t prefix = len;
  if (d9_fz_below(&r, 32) == 0) /* off by one either way */
    prefix = d9_fz_below(&r, 2) ? prefix + 1 : prefix - 1;
  for (int i = 0; i < 8; i++) data[i] = (uint8_t)(prefix >> (8 * i));
  memcpy(data + 8, out, len);
  memset(data + 8 + len, 0, (size_t)dl);
  free(out);
  return 8 + len + (size_t)dl;
}
#endif
