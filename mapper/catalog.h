/* catalog.h - the source checkpoint: every safetensors header parsed
 * strictly, the index cross-checked, config.json read. No tensor data is
 * read here.
 *
 * A source directory holds either model.safetensors, or shards listed by
 * model.safetensors.index.json ({"weight_map": {tensor: shard file}}), or
 * a PEFT adapter's adapter_model.safetensors, and normally config.json.
 * Index entries must be plain relative paths (no absolute paths, no '.' or
 * '..' component), each a regular file; every tensor listed must be in its
 * shard, every tensor in a shard must be listed there, and no name may be
 * in two shards.
 *
 * Symlinks. Shards, the index, config.json and copied files may be
 * symlinks to regular files. Opened with D9_CATALOG_CONFINE (a mount that
 * other users read), each must resolve, after full resolution, inside the
 * source directory, or inside a hub cache snapshot's own blobs directory
 * (.../models--X/snapshots/REV -> .../models--X/blobs, which must be a
 * real directory, not a symlink); the opened file is checked to be the
 * one that resolution named. Without it links are followed wherever they
 * point, as every loader does: the daemon reads only what its user can.
 * FIFOs, devices, sockets and directories are refused either way.
 *
 * Staleness: the catalog keeps each source file open and remembers the
 * fstat of the opened file (the link target) at open. After its last read
 * of a request, a reader checks the file (d9_catalog_check*): size, mtime,
 * ctime (which no writer can set back, so an in-place rewrite with a
 * restored mtime is caught) and the inode the name resolves to now must
 * all be the same, else -ESTALE.
 */
#ifndef D9_CATALOG_H
#define D9_CATALOG_H

#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

#include "arena.h"
#include "diag.h"
#include "st_header.h"

typedef struct d9_shard {
  const char *name;   /* relative path as in the index; arena-owned */
  int fd;             /* held open read-only for the catalog's lifetime */
  struct stat st;     /* fstat of the opened file (a link's target) at open: size,
                         mtime, ctime, inode for change detection; mode, owner */
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
  int confine;           /* opened with D9_CATALOG_CONFINE */
  d9_arena *arena;
  int nshards;
  d9_shard *shards;
  int ntensors;
  d9_src_tensor *tensors;/* in shard order, then file order */
  int *by_name;          /* tensor indices sorted by name (for lookup) */
  int has_index;         /* source came with model.safetensors.index.json */
  int adapter;           /* a PEFT adapter: its one shard is adapter_model.safetensors */
  cJSON *config;         /* parsed config.json or NULL if absent */
  char *config_text;     /* its bytes (NUL-terminated), or NULL */
  size_t config_len;
  struct stat config_st; /* config.json at open (mode, owner); zeroed if absent */
  d9_st_budget meta;     /* header metadata limit and use (st_header.h) */
  struct d9_src_cache *src_cache; /* -o source_cache=drop: told of every shard pread
                                     (src_cache.h); NULL = source pages kept */
} d9_catalog;

/* Flags for d9_catalog_open_flags. */
enum {
  D9_CATALOG_CONFINE = 1, /* links must resolve inside the source (or its hub blobs) */
};

/* Open and validate dir. flags: D9_CATALOG_CONFINE or 0 (links followed
 * wherever they point). Returns 0 or -errno with diag set. */
int d9_catalog_open_flags(const char *dir, unsigned flags, d9_catalog **out, d9_diag *diag);
/* d9_catalog_open_flags(dir, D9_CATALOG_CONFINE, out, diag). */
int d9_catalog_open(const char *dir, d9_catalog **out, d9_diag *diag);
void d9_catalog_close(d9_catalog *c); /* accepts NULL */
/* d9_catalog_open with the headers' metadata bounded by meta_limit bytes
 * (d9_catalog_open: D9_ST_META_MIB_DEFAULT MiB); over it: -EFBIG. */
int d9_catalog_open_limited(const char *dir, uint64_t meta_limit, d9_catalog **out,
                            d9_diag *diag);
/* Both: flags as d9_catalog_open_flags, meta_limit as d9_catalog_open_limited. */
int d9_catalog_open_ex(const char *dir, unsigned flags, uint64_t meta_limit, d9_catalog **out,
                       d9_diag *diag);

/* Serve config (taken; NULL for none) and its text (taken: malloc'd, len
 * bytes) as the source's config.json from now on, freeing the ones read at
 * open. Call before the catalog is shared. */
void d9_catalog_set_config(d9_catalog *c, cJSON *config, char *text, size_t len);

/* Tensor by exact name, or NULL. */
const d9_src_tensor *d9_catalog_find(const d9_catalog *c, const char *name);

/* Read n bytes at absolute offset off of shard s, then check it
 * (d9_catalog_check). Returns 0, -EIO (I/O error or short read), or
 * -ESTALE (the shard changed since the mount). Thread-safe. */
int d9_catalog_pread(const d9_catalog *c, int s, void *buf, size_t n,
                     uint64_t off);

/* pread without the staleness check: 0 or -EIO (error or short read).
 * The caller must d9_catalog_check(c, s) after its last read of s and
 * before it uses the bytes (d9_eval_read does, once per shard per read). */
int d9_catalog_pread_unchecked(const d9_catalog *c, int s, void *buf, size_t n, uint64_t off);

/* 0 if shard s is still the file catalogued at mount (same size, mtime,
 * ctime, and inode behind its name), else -ESTALE (-EIO if it cannot be
 * checked); a change is logged to stderr, naming the file and what
 * changed. Thread-safe. */
int d9_catalog_check(const d9_catalog *c, int s);

/* The same check for any source file held open: fd was opened from name
 * (relative to the source directory) and st is its fstat at open. Returns
 * 0, or -ESTALE / -EIO with diag set ("NAME: changed under the mount
 * (WHAT): remount after a source changed"). Thread-safe. */
int d9_catalog_check_file(const d9_catalog *c, const char *name, int fd,
                          const struct stat *st, d9_diag *diag);

/* Read n bytes at off of a source file opened by d9_catalog_open_file
 * (a copied file), then check it (d9_catalog_check_file; a change is
 * logged). Returns n, -EIO (error or short read) or -ESTALE. Thread-safe. */
ssize_t d9_catalog_read_file(const d9_catalog *c, const char *name, int fd,
                             const struct stat *st, void *buf, size_t n, uint64_t off);

/* Drop bytes [off, off+n) of shard s from the page cache (n = 0: to the
 * end of the file): posix_fadvise(POSIX_FADV_DONTNEED), a hint that never
 * changes what a read returns. 0 or -errno. Thread-safe. */
int d9_catalog_drop_cache(const d9_catalog *c, int s, uint64_t off, uint64_t n);

/* Open a regular file of the source by its relative path (no leading '/',
 * no '.' or '..' component; with D9_CATALOG_CONFINE nothing resolving
 * outside the directory or its hub blobs). st receives the fstat of the
 * opened file (a link's target). Returns an fd or -errno with diag set. */
int d9_catalog_open_file(const d9_catalog *c, const char *name, struct stat *st,
                         d9_diag *diag);

#endif
