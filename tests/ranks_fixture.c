/* ranks_fixture.c - what test_ranks.c and test_ranks_experts.c share
 * (ranks_fixture.h). */
#include "ranks_fixture.h"

/* The tensor files of dir (relative to the mount root), whole: its
 * model.safetensors, or every *.safetensors in it (a split rank view:
 * model-*, experts-*). */
void tree_load(d9_mount *m, const char *dir, tree *t) {
  memset(t, 0, sizeof *t);
  int d = d9_mount_resolve(m, dir);
  assert_true(d >= 0);
  const d9_vnode *n = d9_mount_node(m, d);
  for (int i = 0; i < n->nchildren; i++) {
    const char *name = d9_mount_node(m, n->children[i])->name;
    size_t l = strlen(name);
    if (l < 12 || strcmp(name + l - 12, ".safetensors")) continue;
    assert_true(t->nfiles < TREE_MAX_FILES);
    t->file[t->nfiles] = tu_read_node(m, n->children[i], &t->flen[t->nfiles]);
    assert_non_null(t->file[t->nfiles]);
    t->nfiles++;
  }
  if (!t->nfiles) fprintf(stderr, "no tensor files in '%s'\n", dir);
  assert_true(t->nfiles > 0);
  t->data = t->file[0], t->len = t->flen[0];
  t->a = d9_arena_create();
}

void tree_free(tree *t) {
  for (int i = 0; i < t->nfiles; i++) free(t->file[i]);
  d9_arena_destroy(t->a);
}

const unsigned char *tree_get(tree *t, const char *name, d9_st_tensor *st) {
  for (int i = 0; i < t->nfiles; i++) {
    memset(st, 0, sizeof *st); /* set on success only */
    const unsigned char *p = tu_find(t->file[i], t->flen[i], name, st, t->a);
    if (p) return p;
  }
  memset(st, 0, sizeof *st);
  return NULL;
}

d9_mount *open_ranks_etp(const char *src, const char *spec, int tp, int ep, int pp, int etp,
                         int vdiv, d9_diag *diag) {
  d9_mount_opts o = {.src_dir = src, .spec_path = spec, .tp = tp, .ep = ep, .pp = pp,
                     .etp = etp, .vocab_divisible_by = vdiv,
                     .max_shard_size = (uint64_t)1 << 40};
  d9_mount *m = NULL;
  int rc = d9_mount_open(&o, &m, diag);
  if (rc && diag && !diag->set) fprintf(stderr, "rc %d\n", rc);
  return rc ? NULL : m;
}

d9_mount *open_ranks(const char *src, const char *spec, int tp, int ep, int pp, int vdiv,
                     d9_diag *diag) {
  return open_ranks_etp(src, spec, tp, ep, pp, 1, vdiv, diag);
}

size_t row_bytes(const d9_st_tensor *t) {
  size_t r = d9_dtype_size(t->dtype);
  for (int i = 1; i < t->ndim; i++) r *= (size_t)t->shape[i];
  return r;
}

/* Reference slice for TP rank r of T by style, from the full tensor f. */
unsigned char *ref_slice(const char *style, const unsigned char *f, const d9_st_tensor *ft,
                         int r, int T, int vdiv, size_t *outn) {
  size_t rb = row_bytes(ft), es = d9_dtype_size(ft->dtype);
  int64_t rows = ft->shape[0];
  unsigned char *o;
  if (!strcmp(style, "column") || !strcmp(style, "qkv")) {
    *outn = rb * (size_t)(rows / T);
    o = malloc(*outn);
    memcpy(o, f + rb * (size_t)(r * rows / T), *outn);
  } else if (!strcmp(style, "row")) {
    int64_t cols = ft->shape[1], part = cols / T;
    *outn = (size_t)rows * (size_t)part * es;
    o = malloc(*outn);
    for (int64_t i = 0; i < rows; i++)
      memcpy(o + (size_t)(i * part) * es, f + (size_t)(i * cols + r * part) * es, (size_t)part * es);
  } else if (!strcmp(style, "gated")) {
    int64_t half = rows / 2, part = half / T;
    *outn = rb * (size_t)(2 * part);
    o = malloc(*outn);
    memcpy(o, f + rb * (size_t)(r * part), rb * (size_t)part);
    memcpy(o + rb * (size_t)part, f + rb * (size_t)(half + r * part), rb * (size_t)part);
  } else { /* vocab: zero rows up to a multiple of vdiv*T, then column */
    int64_t mult = (int64_t)vdiv * T, padded = (rows + mult - 1) / mult * mult, part = padded / T;
    *outn = rb * (size_t)part;
    o = calloc(1, *outn);
    for (int64_t i = 0; i < part; i++)
      if (r * part + i < rows) memcpy(o + rb * (size_t)i, f + rb * (size_t)(r * part + i), rb);
  }
  return o;
}
