/* plan.h - the virtual tree: every file's exact header bytes and tensor
 * extents, fixed at mount time.
 *
 * Target tensors are laid out in natural name order and cut into shards at
 * the spec's size budget (a new shard starts when the next tensor would
 * take the current one past the budget, as HF's save_pretrained does):
 * model-00001-of-0000N.safetensors plus model.safetensors.index.json, or
 * model.safetensors alone when everything fits one shard.
 */
#ifndef D9_PLAN_H
#define D9_PLAN_H

#include <stdint.h>

#include "catalog.h"
#include "graph.h"
#include "spec.h"

/* Non-tensor files (config.json, tokenizer files, ...) a tree copies from
 * the source at most: each holds a descriptor for the mount's lifetime. A
 * spec whose output.copy patterns match more is refused (E2BIG). */
enum { D9_PLAN_MAX_COPIES = 256 };

typedef enum {
  D9_VF_TENSORS, /* a safetensors file: header bytes then tensor extents */
  D9_VF_BLOB,    /* bytes held in memory (index, config) */
  D9_VF_COPY,    /* a source file served as is */
} d9_vfile_kind;

typedef struct d9_extent {
  uint64_t begin, end;     /* bytes within the virtual file */
  const d9_target *target; /* borrowed from the graph */
} d9_extent;

typedef struct d9_vfile {
  d9_vfile_kind kind;
  const char *name;
  uint64_t size;           /* bytes */
  const unsigned char *bytes; /* TENSORS: header (8 + N bytes); BLOB: all */
  uint64_t header_len;     /* TENSORS: 8 + N */
  int nextents;
  d9_extent *extents;      /* TENSORS: sorted, contiguous after the header */
  int fd;                  /* COPY: held open */
  struct stat st;          /* COPY: at mount, for change detection */
  int part;                /* TENSORS of a split plan: 0 the dense part, 1 the experts */
  int linked;              /* a rank view's file with the same bytes as file link_file of
                              rank link_rank's view: the tree lists that one (one inode) */
  int link_rank, link_file;
} d9_vfile;

typedef struct d9_plan {
  d9_arena *arena;
  int nfiles;
  d9_vfile *files;
  int nshards;             /* TENSORS files */
} d9_plan;

/* Lay out targets tg[0..ntg) (sorted by name, borrowed: they must outlive
 * the plan) per s's output section; copies come from c. */
int d9_plan_build(const d9_spec *s, const d9_catalog *c, const d9_target *tg, int ntg,
                  d9_plan **out, d9_diag *diag);

/* The same, with split set: a rank view whose dense tensors (target
 * expert == 0) other ranks hold byte for byte (the EP ranks of one TP rank
 * and stage) or whose experts others hold (the TP ranks under etp = 1).
 * When both parts are non-empty each is cut into its own shards:
 * model-0000i-of-0000K.safetensors (dense) and
 * experts-0000j-of-0000M.safetensors, with an index over both, so that the
 * files of a part are the same, by name and bytes, in every rank view
 * holding it; vfile.part says which. A single_file spec is not split. */
int d9_plan_build_split(const d9_spec *s, const d9_catalog *c, const d9_target *tg, int ntg,
                        int split, d9_plan **out, d9_diag *diag);
void d9_plan_destroy(d9_plan *p); /* accepts NULL; closes COPY fds */

#endif
