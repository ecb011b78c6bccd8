/* catalog.h - the source checkpoint: every safetensors header parsed
 * strictly, the index cross-checked, config.json read. No tensor data is
 * read here.
 *
 * A source directory holds either model.safetensors, or shards listed by
 * model.safetensors.index.json ({"weight_map": {tensor: shard file}}), and
 * normally config.json. Index entries must be plain relative paths inside
 * the directory (no absolute paths, no '..', no symlink leading outside),
 * each a regular file; every tensor listed must be in its shard, every
 * tensor in a shard must be listed there, and no name may be in two shards.
 */
#ifndef D9_CATALOG_H
#define D9_CATALOG_H

#include <stdint.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "arena.h"
#include "diag.h"
#include "st_header.h"

typedef struct d9_shard {
  const char *name;   /* relative path as in the index; arena-owned */
  int fd;             /* held open read-only for the catalog's lifetime */
  struct stat st;     /* at open: size, mtime, inode (change detection) */
  uint64_t data_start;/* file offset of the data section */
} d9_shard;

typedef struct d9_src_tensor {
  const char *name;   /* arena-owned */
  d9_dtype dtype;
  int ndim;
  int64_t shape[D9_MAX_DIMS];
  int shard;          /* index into catalog shards */
  uint64_t offset;    /* absolute file offset of the first byte */
  uint64_t nbytes;
} d9_src_tensor;

typedef struct d9_catalog {
  const char *dir;       /* as given; arena-owned */
  const char *root;      /* its canonical path, at open; arena-owned */
  const char *blobs;     /* a hub cache snapshot's ../../blobs, canonical, or "" */
  int dirfd;
  d9_arena *arena;
  int nshards;
  d9_shard *shards;
  int ntensors;
  d9_src_tensor *tensors;/* in shard order, then file order */
  int *by_name;          /* tensor indices sorted by name (for lookup) */
  int has_index;         /* source came with model.safetensors.index.json */
  cJSON *config;         /* parsed config.json or NULL if absent */
  char *config_text;     /* its bytes (NUL-terminated), or NULL */
  size_t config_len;
  d9_st_budget meta;     /* header metadata limit and use (st_header.h) */
} d9_catalog;

/* Open and validate dir. Returns 0 or -errno with diag set. */
int d9_catalog_open(const char *dir, d9_catalog **out, d9_diag *diag);
void d9_catalog_close(d9_catalog *c); /* accepts NULL */
/* d9_catalog_open with the headers' metadata bounded by meta_limit bytes
 * (d9_catalog_open: D9_ST_META_MIB_DEFAULT MiB); over it: -EFBIG. */
int d9_catalog_open_limited(const char *dir, uint64_t meta_limit, d9_catalog **out,
                            d9_diag *diag);

/* Tensor by exact name, or NULL. */
const d9_src_tensor *d9_catalog_find(const d9_catalog *c, const char *name);

/* Read n bytes at absolute offset off of shard s. Returns 0, -EIO (I/O
 * error or short read), or -ESTALE (the shard changed since the mount: size,
 * mtime or inode differ). Thread-safe. */
int d9_catalog_pread(const d9_catalog *c, int s, void *buf, size_t n,
                     uint64_t off);

/* pread without the staleness check: 0 or -EIO (error or short read).
 * The caller must d9_catalog_check(c, s) after its last read of s and
 * before it uses the bytes (d9_eval_read does, once per shard per read). */
int d9_catalog_pread_unchecked(const d9_catalog *c, int s, void *buf, size_t n, uint64_t off);

/* 0 if shard s is still the file catalogued at mount (same size, mtime and
 * inode behind its name), else -ESTALE (-EIO if it cannot be checked). */
int d9_catalog_check(const d9_catalog *c, int s);

/* Open a regular file of the source directory by its relative path (no
 * leading '/', no '.' or '..' component, nothing resolving outside the
 * directory through a symlink). Returns an fd or -errno with diag set. */
int d9_catalog_open_file(const d9_catalog *c, const char *name, struct stat *st,
                         d9_diag *diag);

#endif
