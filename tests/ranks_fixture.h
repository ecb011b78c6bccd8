/* ranks_fixture.h - what the rank-view tests share (test_ranks.c: TP
 * styles and pipeline stages; test_ranks_experts.c: expert parallelism and
 * the files rank views share): mounts with -o tp, ep, pp, etp; a tree's
 * tensor files read whole through the mount API; and the naive reference
 * slice of each TP style. Test-only; cmocka assertions inside. */
#ifndef D9_RANKS_FIXTURE_H
#define D9_RANKS_FIXTURE_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "mapper/rank.h"
#include "testutil.h"

#define SPEC_DIR D9DFS_SOURCE_DIR "/mounts"

enum { TREE_MAX_FILES = 8 };

typedef struct tree {
  unsigned char *data; /* the first file (model.safetensors when alone) */
  uint64_t len;
  int nfiles;
  unsigned char *file[TREE_MAX_FILES];
  uint64_t flen[TREE_MAX_FILES];
  d9_arena *a;
} tree;

/* The tensor files of dir (relative to the mount root), whole: its
 * model.safetensors, or every *.safetensors in it (a split rank view:
 * model-*, experts-*). */
void tree_load(d9_mount *m, const char *dir, tree *t);
void tree_free(tree *t);
/* Tensor name's bytes in t (and its entry in *st), or NULL. */
const unsigned char *tree_get(tree *t, const char *name, d9_st_tensor *st);

/* A mount of src with spec and these rank sizes (shards never cut). NULL
 * with diag set when refused. */
d9_mount *open_ranks_etp(const char *src, const char *spec, int tp, int ep, int pp, int etp,
                         int vdiv, d9_diag *diag);
d9_mount *open_ranks(const char *src, const char *spec, int tp, int ep, int pp, int vdiv,
                     d9_diag *diag); /* etp = 1 */

/* Bytes of one dim-0 row of tensor t. */
size_t row_bytes(const d9_st_tensor *t);

/* Reference slice for TP rank r of T by style ("column", "qkv", "row",
 * "gated", else vocab with divisor vdiv), from the full tensor f; malloc'd,
 * *outn bytes. */
unsigned char *ref_slice(const char *style, const unsigned char *f, const d9_st_tensor *ft,
                         int r, int T, int vdiv, size_t *outn);

#endif
