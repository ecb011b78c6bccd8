/* testutil.h - fixtures shared by the cmocka tests: temp directories,
 * generated checkpoints, specs written to files, whole virtual files. */
#ifndef D9_TESTUTIL_H
#define D9_TESTUTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bits.h"
#include "mapper/mount.h"
#include "mapper/st_header.h"
#include "tools/gen.h"

/* mkdtemp under /tmp; aborts the test on failure. Caller frees. */
static inline char *tu_tmpdir(void) {
  char *d = strdup("/tmp/d9test.XXXXXX");
  if (!d || !mkdtemp(d)) abort();
  return d;
}

static inline void tu_rmrf(const char *d) {
  char cmd[4200];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
  if (system(cmd)) fprintf(stderr, "warning: cannot remove %s\n", d);
}

static inline void tu_write(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f || fputs(text, f) < 0 || fclose(f)) abort();
}

/* Whole content of file node idx, malloc'd; *len its size. */
static inline unsigned char *tu_read_node(d9_mount *m, int idx, uint64_t *len) {
  const d9_vnode *v = d9_mount_node(m, idx);
  unsigned char *b = malloc(v->size ? v->size : 1);
  if (!b) abort();
  ssize_t r = d9_mount_read(m, idx, 0, v->size, b);
  if (r != (ssize_t)v->size) {
    free(b);
    return NULL;
  }
  *len = v->size;
  return b;
}

/* d9_mount_open(o): the mount, or the reason on stderr and the test
 * aborted. */
static inline d9_mount *tu_mount(const d9_mount_opts *o) {
  d9_mount *m = NULL;
  d9_diag diag = {0};
  if (d9_mount_open(o, &m, &diag)) {
    fprintf(stderr, "mount %s with %s: %s\n", o->src_dir, o->spec_path, diag.msg);
    abort();
  }
  return m;
}

/* Find tensor `name` in a whole safetensors file held in memory. Returns a
 * pointer to its data (and fills *t), or NULL. */
static inline const unsigned char *tu_find(const unsigned char *file, uint64_t len,
                                           const char *name, d9_st_tensor *t, d9_arena *a) {
  uint64_t hl;
  d9_st_header h;
  if (d9_st_header_len(file, len, "mem", &hl, NULL)) return NULL;
  if (d9_st_parse((const char *)file + 8, hl, len, "mem", a, &h, NULL)) return NULL;
  for (int i = 0; i < h.ntensors; i++)
    if (!strcmp(h.tensors[i].name, name)) {
      *t = h.tensors[i];
      return file + h.data_start + h.tensors[i].begin;
    }
  return NULL;
}

#endif
