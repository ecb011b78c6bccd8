#include "plan.h"

#include <errno.h>
#include <fnmatch.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config_patch.h"

/* A growable string for the index JSON. */
typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->cap - b->len < n + 1) {
    size_t nc = (b->cap ? b->cap * 2 : 4096);
    while (nc - b->len < n + 1) nc *= 2;
    char *p = realloc(b->p, nc);
    if (!p) {
      b->oom = 1;
      return;
    }
    b->p = p, b->cap = nc;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_json_str(sbuf *b, const char *s) {
  sb_add(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    char esc[8];
    if (*p == '"' || *p == '\\') {
      esc[0] = '\\', esc[1] = (char)*p;
      sb_add(b, esc, 2);
    } else if (*p < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", *p);
      sb_add(b, esc, 6);
    } else {
      sb_add(b, (const char *)p, 1);
    }
  }
  sb_add(b, "\"", 1);
}

static int cmp_names(const void *x, const void *y) {
  return strcmp(((const d9_extent *)x)->target->name, ((const d9_extent *)y)->target->name);
}

/* model.safetensors.index.json as HF writes it (indent 2, sorted keys). */
static int build_index(d9_plan *p, uint64_t total, d9_vfile *idx, d9_diag *diag) {
  int n = 0;
  for (int f = 0; f < p->nshards; f++) n += p->files[f].nextents;
  d9_extent *all = malloc(sizeof *all * ((size_t)n + 1));
  if (!all) return d9_diag_fail(diag, ENOMEM, "index: out of memory");
  const char **file_of = malloc(sizeof *file_of * ((size_t)n + 1));
  if (!file_of) {
    free(all);
    return d9_diag_fail(diag, ENOMEM, "index: out of memory");
  }
  int k = 0;
  for (int f = 0; f < p->nshards; f++)
    for (int e = 0; e < p->files[f].nextents; e++) {
      all[k] = p->files[f].extents[e];
      all[k].begin = (uint64_t)f; /* reuse begin to carry the file index */
      k++;
    }
  qsort(all, (size_t)n, sizeof *all, cmp_names);
  sbuf b = {0};
  char num[64];
  snprintf(num, sizeof num, "%llu", (unsigned long long)total);
  sb_str(&b, "{\n  \"metadata\": {\n    \"total_size\": ");
  sb_str(&b, num);
  sb_str(&b, "\n  },\n  \"weight_map\": {");
  for (int i = 0; i < n; i++) {
    sb_str(&b, i ? ",\n    " : "\n    ");
    sb_json_str(&b, all[i].target->name);
    sb_str(&b, ": ");
    sb_json_str(&b, p->files[all[i].begin].name);
  }
  sb_str(&b, "\n  }\n}\n");
  free(all);
  free(file_of);
  if (b.oom) {
    free(b.p);
    return d9_diag_fail(diag, ENOMEM, "index: out of memory");
  }
  unsigned char *bytes = d9_arena_alloc(p->arena, b.len);
  if (!bytes) {
    free(b.p);
    return d9_diag_fail(diag, ENOMEM, "index: out of memory");
  }
  memcpy(bytes, b.p, b.len);
  free(b.p);
  idx->kind = D9_VF_BLOB;
  idx->name = "model.safetensors.index.json";
  idx->bytes = bytes;
  idx->size = b.len;
  idx->fd = -1;
  return 0;
}

/* Emit the header of shard f holding targets [t0, t1). */
static int build_shard(d9_plan *p, const d9_spec *s, const d9_target *tg, int t0, int t1,
                       d9_vfile *vf, d9_diag *diag) {
  int n = t1 - t0;
  d9_st_tensor *st = calloc((size_t)n + 1, sizeof *st);
  if (!st) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", vf->name);
  for (int i = 0; i < n; i++) {
    const d9_node *x = tg[t0 + i].node;
    st[i].name = tg[t0 + i].name;
    st[i].dtype = x->dtype;
    st[i].ndim = x->ndim;
    memcpy(st[i].shape, x->shape, sizeof st[i].shape);
  }
  unsigned char *hdr;
  uint64_t hlen;
  int rc = d9_st_write_header(st, n, NULL, NULL, 0, &hdr, &hlen);
  if (rc) {
    uint64_t names = 0; /* the header holds each name, quoted, plus about 80 bytes */
    for (int i = 0; i < n; i++) names += strlen(st[i].name) + 80;
    free(st);
    if (rc == -ENOMEM) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", vf->name);
    if (names > D9_ST_HEADER_MAX)
      return d9_diag_fail(diag, E2BIG, "%s: %s: the header of its %d tensors would be about %llu "
                          "bytes, over the safetensors limit of %u; %s or make fewer targets",
                          s->path, vf->name, n, (unsigned long long)names,
                          (unsigned)D9_ST_HEADER_MAX,
                          s->single_file ? "drop output.single_file" : "lower output.max_shard_size");
    return d9_diag_fail(diag, -rc, "%s: %s: cannot write the header", s->path, vf->name);
  }
  unsigned char *copy = d9_arena_alloc(p->arena, hlen);
  vf->extents = d9_arena_calloc(p->arena, (size_t)n + 1, sizeof *vf->extents);
  if (!copy || !vf->extents) {
    free(hdr);
    free(st);
    return d9_diag_fail(diag, ENOMEM, "%s: out of memory", vf->name);
  }
  memcpy(copy, hdr, hlen);
  free(hdr);
  vf->kind = D9_VF_TENSORS;
  vf->bytes = copy;
  vf->header_len = hlen;
  vf->nextents = n;
  vf->fd = -1;
  for (int i = 0; i < n; i++)
    vf->extents[i] = (d9_extent){hlen + st[i].begin, hlen + st[i].end, &tg[t0 + i]};
  vf->size = n ? vf->extents[n - 1].end : hlen;
  free(st);
  return 0;
}

static int target_bytes(const d9_target *t, uint64_t *out) {
  return d9_st_nbytes(t->node->shape, t->node->ndim, t->node->dtype, out);
}

static int add_copies(d9_plan *p, const d9_spec *s, const d9_catalog *c, int maxf,
                      d9_diag *diag) {
  if (!s->ncopy) return 0;
  DIR *d = fdopendir(dup(c->dirfd));
  if (!d) return d9_diag_errno(diag, errno, c->dir);
  rewinddir(d);
  /* sorted for a deterministic listing */
  char **names = NULL;
  int nn = 0, cap = 0, rc = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.' || !strcmp(de->d_name, "model.safetensors.index.json")) continue;
    size_t l = strlen(de->d_name);
    if (l > 12 && !strcmp(de->d_name + l - 12, ".safetensors")) continue;
    int want = 0;
    for (int i = 0; i < s->ncopy && !want; i++) want = !fnmatch(s->copy[i], de->d_name, 0);
    if (!want) continue;
    if (nn == cap) {
      cap = cap ? cap * 2 : 16;
      char **nb = realloc(names, sizeof *nb * (size_t)cap);
      if (!nb) { rc = -ENOMEM; break; }
      names = nb;
    }
    if (!(names[nn] = d9_arena_strdup(p->arena, de->d_name))) { rc = -ENOMEM; break; }
    nn++;
  }
  closedir(d);
  if (rc) {
    free(names);
    return d9_diag_fail(diag, ENOMEM, "%s: out of memory", c->dir);
  }
  if (nn > D9_PLAN_MAX_COPIES) {
    free(names);
    return d9_diag_fail(diag, E2BIG, "%s: output.copy: %d files of %s match, more than the %d "
                        "a tree copies (name them more narrowly)", s->path, nn, c->dir,
                        D9_PLAN_MAX_COPIES);
  }
  for (int i = 0; i < nn; i++)
    for (int j = i + 1; j < nn; j++)
      if (strcmp(names[j], names[i]) < 0) {
        char *t = names[i];
        names[i] = names[j], names[j] = t;
      }
  for (int i = 0; i < nn && !rc; i++) {
    if (p->nfiles >= maxf) break;
    d9_vfile *vf = &p->files[p->nfiles];
    vf->name = names[i];
    vf->fd = -1;
    if (!strcmp(names[i], "config.json") && c->config_text &&
        (s->config_set || s->nconfig_delete)) {
      char *text;
      size_t len;
      unsigned char *copy;
      if ((rc = d9_spec_apply_config(s, c, &text, &len, diag))) break;
      if (!(copy = d9_arena_alloc(p->arena, len + 1))) {
        free(text);
        rc = d9_diag_fail(diag, ENOMEM, "config.json: out of memory");
        break;
      }
      memcpy(copy, text, len);
      free(text);
      vf->kind = D9_VF_BLOB; /* patched as the spec's "config" says (config_patch.h) */
      vf->bytes = copy;
      vf->size = len;
    } else if (!strcmp(names[i], "config.json") && c->config_text) {
      vf->kind = D9_VF_BLOB; /* the bytes the params were read from */
      vf->bytes = (const unsigned char *)c->config_text;
      vf->size = c->config_len;
    } else {
      int fd = d9_catalog_open_file(c, names[i], &vf->st, diag);
      if (fd < 0) { rc = fd; break; }
      vf->kind = D9_VF_COPY;
      vf->fd = fd;
      vf->size = (uint64_t)vf->st.st_size;
    }
    p->nfiles++;
  }
  free(names);
  return rc;
}

/* tg reordered into the plan's arena: the dense targets, then the
 * experts, each in name order; *ndense: how many dense. NULL: no memory. */
static const d9_target *dense_first(d9_plan *p, const d9_target *tg, int ntg, int *ndense) {
  d9_target *o = d9_arena_calloc(p->arena, (size_t)ntg + 1, sizeof *o);
  if (!o) return NULL;
  int k = 0;
  for (int i = 0; i < ntg; i++)
    if (!tg[i].expert) o[k++] = tg[i];
  *ndense = k;
  for (int i = 0; i < ntg; i++)
    if (tg[i].expert) o[k++] = tg[i];
  return o;
}

/* The name of shard f of ncut; with a split (first expert shard f1 > 0),
 * each part is numbered on its own. */
static const char *shard_name(d9_plan *p, const d9_catalog *c, int f, int ncut, int f1) {
  if (f1 > 0 && f1 < ncut)
    return f < f1 ? d9_arena_printf(p->arena, "model-%05d-of-%05d.safetensors", f + 1, f1)
                  : d9_arena_printf(p->arena, "experts-%05d-of-%05d.safetensors", f - f1 + 1,
                                    ncut - f1);
  if (ncut == 1) return c->adapter ? "adapter_model.safetensors" : "model.safetensors";
  return d9_arena_printf(p->arena, "model-%05d-of-%05d.safetensors", f + 1, ncut);
}

int d9_plan_build(const d9_spec *s, const d9_catalog *c, const d9_target *tg, int ntg,
                  d9_plan **out, d9_diag *diag) {
  return d9_plan_build_split(s, c, tg, ntg, 0, out, diag);
}

int d9_plan_build_split(const d9_spec *s, const d9_catalog *c, const d9_target *tg, int ntg,
                        int split, d9_plan **out, d9_diag *diag) {
  d9_plan *p = calloc(1, sizeof *p);
  int rc = -ENOMEM;
  if (!p || !(p->arena = d9_arena_create())) {
    free(p);
    return d9_diag_fail(diag, ENOMEM, "plan: out of memory");
  }
  int ndense = ntg; /* targets [ndense, ntg) are the experts' part */
  if (split && !s->single_file && !(tg = dense_first(p, tg, ntg, &ndense))) goto oom;
  if (ndense == 0) ndense = ntg; /* one part only: no split */
  /* cut shards; a split starts the experts' part on a shard of its own */
  int *cut = calloc((size_t)ntg + 2, sizeof *cut), ncut = 0, f1 = 0;
  if (!cut) goto oom;
  uint64_t cur = 0, total = 0;
  cut[ncut++] = 0;
  for (int i = 0; i < ntg; i++) {
    uint64_t nb;
    if (target_bytes(&tg[i], &nb)) {
      free(cut);
      rc = d9_diag_fail(diag, EOVERFLOW, "target '%s': size overflows", tg[i].name);
      goto fail;
    }
    if (i == ndense) {
      f1 = ncut;
      cut[ncut++] = i;
      cur = 0;
    } else if (!s->single_file && cur > 0 &&
               (cur >= s->max_shard_size || nb > s->max_shard_size - cur)) {
      cut[ncut++] = i;
      cur = 0;
    }
    cur += nb;
    total += nb;
  }
  cut[ncut] = ntg;
  p->nshards = ncut;
  int maxf = ncut + 1 + D9_PLAN_MAX_COPIES;
  p->files = d9_arena_calloc(p->arena, (size_t)maxf, sizeof *p->files);
  if (!p->files) {
    free(cut);
    goto oom;
  }
  for (int f = 0; f < ncut; f++) {
    d9_vfile *vf = &p->files[f];
    vf->name = shard_name(p, c, f, ncut, f1);
    vf->part = f1 > 0 && f >= f1;
    if (!vf->name || (rc = build_shard(p, s, tg, cut[f], cut[f + 1], vf, diag))) {
      free(cut);
      goto fail;
    }
  }
  free(cut);
  p->nfiles = ncut;
  if (ncut > 1 && (rc = build_index(p, total, &p->files[p->nfiles++], diag))) goto fail;
  if ((rc = add_copies(p, s, c, maxf, diag))) goto fail;
  *out = p;
  return 0;
oom:
  rc = d9_diag_fail(diag, ENOMEM, "plan: out of memory");
fail:
  d9_plan_destroy(p);
  return rc;
}

void d9_plan_destroy(d9_plan *p) {
  if (!p) return;
  if (p->files)
    for (int i = 0; i < p->nfiles; i++)
      if (p->files[i].kind == D9_VF_COPY && p->files[i].fd >= 0) close(p->files[i].fd);
  d9_arena_destroy(p->arena);
  free(p);
}
