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
 *     shapes and metadata (DESIGN.md: "every header that d9dfs emits must
 *     pass its own strict parser").
 * A broken property aborts, which libFuzzer reports as a crash.
 */
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
  d9_arena_destroy(a);
  free(json);
  return 0;
}
