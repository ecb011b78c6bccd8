/* mount.h - the public face of the core library: a source checkpoint plus
 * a spec, planned into a virtual tree whose every byte can be read.
 *
 * The FUSE layer (fs/) and the CLI (tools/) use only this header. Nothing
 * here has FUSE types. A d9_mount is immutable after d9_mount_open() except
 * for its statistics counters (and the front end's note, set once before
 * serving), so every read function is thread-safe.
 *
 * The virtual tree is an array of nodes; node 0 is the root directory.
 * Inode numbers for FUSE are node index + 1 (so the root is inode 1).
 */
#ifndef D9_MOUNT_H
#define D9_MOUNT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "diag.h"
#include "piece.h"

typedef struct d9_mount d9_mount;

typedef struct d9_mount_opts {
  const char *src_dir;    /* source checkpoint directory */
  const char *spec_path;  /* JSON mapping spec */
  int reverse;            /* present the spec's source layout from a target-layout checkpoint */
  int lenient;            /* mount despite validation findings (listed in .d9dfs/report.json) */
  int force;              /* mount a spec whose "applies_to" does not fit SRC (warning on stderr) */
  int tp, ep, pp;         /* parallel sizes for ranks/ (0 or 1: none) */
  int etp;                /* expert tensor parallel size: 0 or 1 (experts whole), or tp */
  int vocab_divisible_by; /* style vocab pads rows to a multiple of this * tp (0/1: tp) */
  int npp_layers;         /* explicit layers per pipeline stage (0 = remainder rule) */
  const int *pp_layers;
  const char *device;     /* "auto", "cpu", "cuda[:N]"; NULL = auto */
  int verbose;            /* log each read to stderr */
  uint64_t max_shard_size;/* override the spec's output.max_shard_size; 0 = the spec's */
  uint64_t meta_mib;      /* -o meta_mib=N: header metadata limit, MiB (0 = 512) */
  uint64_t mem_budget_mb; /* -o mem=MiB: evaluation scratch, in MiB (0 = 64); reads
                             beyond it wait (2 MiB per read in flight) */
  int threads;            /* -o threads=N: threads that evaluate one computing read
                             (casts, dequant, ...) at once; 0 = the CPUs online, at
                             most 8; 1 = the reading thread alone */
  int confine_links;      /* source symlinks must resolve inside it (or a hub snapshot's
                             blobs): set for -o allow_other without -o follow_links */
  int follow_links;       /* -o follow_links: follow them wherever they point */
  int source_cache;       /* -o source_cache=: D9_SOURCE_CACHE_KEEP (0, the library's
                             default) or D9_SOURCE_CACHE_DROP: drop each source tensor
                             from the page cache once read (mapper/src_cache.h); the
                             CLI drops on buffered mounts, keeps with direct_io */
  uint64_t inject_pread_every; /* tests: every Nth source read fails with EIO (0 = off) */
  uint64_t inject_alloc_every; /* tests: every Nth scratch allocation fails (0 = off) */
  uint64_t inject_delay_ms;    /* tests: every source read first waits this long (0 = off) */
} d9_mount_opts;

enum { D9_SOURCE_CACHE_KEEP = 0, D9_SOURCE_CACHE_DROP = 1 };

typedef enum {
  D9_NODE_DIR,
  D9_NODE_FILE,     /* fixed size, immutable content */
  D9_NODE_DYNAMIC,  /* content rendered at each open (stats.json), of a fixed size */
} d9_node_kind;

typedef struct d9_vnode {
  const char *name;   /* borrowed; valid while the mount lives; "" for the root */
  d9_node_kind kind;
  uint64_t size;      /* bytes a read returns: exact for every file (a dynamic file
                         renders to exactly this size), 0 for dirs */
  int parent;         /* node index; the root is its own parent */
  int nchildren;      /* dirs only */
  const int *children;/* dirs only: node indices, in listing order */
  mode_t mode;        /* permission bits from the sources (see mapper/tree.c): the read
                         bits common to a file's sources (at most 0444), the source
                         directory's read and search bits for dirs (at most 0555) */
  uid_t uid;          /* owner and group: of the file's first source; the source */
  gid_t gid;          /* directory's for dirs and .d9dfs files */
  int nlink;          /* files: the directories listing it (a file several rank views
                         share, plan.h, is one node listed in each: a hard link) */
} d9_vnode;

typedef struct d9_stats {
  uint64_t bytes_served;       /* bytes returned by d9_mount_read */
  uint64_t bytes_read_source;  /* bytes pread from source shards */
  uint64_t reads;              /* d9_mount_read calls */
  uint64_t tensors_evaluated;  /* target tensor extents (or parts) evaluated */
  uint64_t errors;             /* reads that returned an error */
  uint64_t split_reads;        /* reads evaluated in parts on several threads */
} d9_stats;

/* Catalog the source, parse the spec, build and validate the graph, plan
 * the tree. Reads headers and small JSON files only, never tensor data.
 * Returns 0, or -errno with diag holding one line naming the file, the
 * tensor or the spec location and the reason. */
int d9_mount_open(const d9_mount_opts *o, d9_mount **out, d9_diag *diag);
void d9_mount_close(d9_mount *m); /* accepts NULL */

int d9_mount_nnodes(const d9_mount *m);
const d9_vnode *d9_mount_node(const d9_mount *m, int idx); /* NULL if out of range */
/* Child of dir `parent` called `name`: node index, or -ENOENT / -ENOTDIR. */
int d9_mount_lookup(const d9_mount *m, int parent, const char *name);
/* Node for a '/'-separated path relative to the root ("" or "/" = root). */
int d9_mount_resolve(const d9_mount *m, const char *path);

/* Refuse a mount point that would hide the mount's own sources: mnt (a
 * canonical path, as realpath gives) must not be the source directory or
 * inside it, and no source path (the directory, a shard, a copied file,
 * config.json, after symlinks) may lead through it. Once mounted there,
 * the daemon's source checks would see the mount instead of the sources
 * (every read ESTALE) or wait on its own mount. Returns 0, or -EINVAL with
 * diag naming both paths. */
int d9_mount_check_mountpoint(const d9_mount *m, const char *mnt, d9_diag *diag);

/* Read n bytes at off of file node idx into buf. Returns the byte count -
 * exactly n unless the range runs past the end of the file - or -errno
 * (-EISDIR, -EINVAL, -EIO on a source fault, -ESTALE when a source shard
 * changed under the mount, -ENOMEM). Thread-safe. */
ssize_t d9_mount_read(d9_mount *m, int idx, uint64_t off, size_t n, void *buf);

/* The zero-copy form of d9_mount_read. Bytes that the read would copy
 * unchanged from the source (a renamed, reshaped, concatenated or sliced
 * tensor, in runs of at least 32 KiB) are not read but described: on
 * success pieces[0 .. *npieces) are, in order, exactly the r bytes that
 * d9_mount_read would put in buf, each either memory (mem points into buf)
 * or a source range (mem is NULL: len bytes at offset off of the open,
 * read-only shard file fd, e.g. for splice(2)). buf is left undefined
 * under source pieces. Once the source ranges are copied, call
 * d9_mount_check_pieces: the copy is valid only if it returns 0, as
 * d9_mount_read checks its own preads. Same return values as
 * d9_mount_read. Thread-safe. d9_piece is in piece.h. */
ssize_t d9_mount_read_pieces(d9_mount *m, int idx, uint64_t off, size_t n, void *buf,
                             d9_piece pieces[D9_READ_MAXPIECES], int *npieces);
/* 0 if every shard behind the source pieces is unchanged since the mount,
 * else -ESTALE or -EIO (counted as a read error and logged). */
int d9_mount_check_pieces(d9_mount *m, int idx, const d9_piece *pieces, int npieces);
/* The source pieces have been copied out of the source (spliced into a
 * reply that the kernel has taken): with -o source_cache=drop they now
 * count as read, and a source tensor read to its end may leave the page
 * cache (src_cache.h). Before that its pages are still needed, so the front
 * end calls this after the reply. Thread-safe; no-op without the policy. */
void d9_mount_pieces_sent(d9_mount *m, const d9_piece *pieces, int npieces);
/* The pieces as one reply in buf, when they cannot be spliced: the memory
 * pieces already sit in place, the source ranges are read into the gaps,
 * then checked (d9_mount_check_pieces). Returns 0, -EIO or -ESTALE. */
int d9_mount_pieces_to_buf(d9_mount *m, int idx, unsigned char *buf, const d9_piece *pieces,
                           int npieces);

/* Render a D9_NODE_DYNAMIC node's current content into a malloc'd buffer
 * (caller frees): exactly the node's size in bytes (stats.json pads the
 * room its counters do not take with spaces before its final newline).
 * Returns 0 or -errno. */
int d9_mount_render(d9_mount *m, int idx, char **out, size_t *out_len);

void d9_mount_get_stats(const d9_mount *m, d9_stats *out);

/* What the front end settled on (a JSON object's members without braces,
 * e.g. "\"direct_io\": true"), shown as "frontend" in stats.json; copied.
 * It sets stats.json's size: call before serving (before any stat of it).
 * Returns 0 or -ENOMEM. */
int d9_mount_set_frontend(d9_mount *m, const char *members);

/* Reversed mounts: the spec steps whose inverse is lossy (one line each). */
int d9_mount_nlossy(const d9_mount *m);
/* Source tensors the spec's "ignore" patterns dropped. */
int d9_mount_nignored(const d9_mount *m);
/* Explicit tensors of tied rules whose flag is set (an lm_head next to
 * tie_word_embeddings = true): served, but --reverse drops them. */
int d9_mount_nshadowed(const d9_mount *m);
const char *d9_mount_lossy(const d9_mount *m, int i);

/* The human-readable plan (`d9dfs plan`): files, tensors, shapes, dtypes,
 * the rule that makes each, and the validation report. Written to fd. */
int d9_mount_print_plan(const d9_mount *m, int fd);

/* `d9dfs plan --bytes` (bytes_report.c): per tree (the full view, or each
 * ranks/NAME view) the bytes a full read pulls from the source and the
 * share of them other trees pull too; with ranks, the bytes each node
 * (the tp ranks of one ep/pp cell) pulls. Written to fd; 0 or -errno. */
int d9_mount_print_bytes(const d9_mount *m, int fd);
/* need[0 .. source tensors): per source tensor, the bytes all rank views
 * together pull from it on a full read of each (zeros without ranks).
 * 0 or -ENOMEM. */
int d9_mount_rank_need(const d9_mount *m, uint64_t *need);

/* ---- plan_dot.c: the plan as a picture and as provenance ---- */
struct d9_plan;
/* The mount's plan of the full view (mount.c); borrowed, lives as long as m. */
const struct d9_plan *d9_mount_plan(const d9_mount *m);
/* `d9dfs plan --dot`: Graphviz of source tensors -> operations -> target
 * tensors -> files, lossy operations in red. Written to fd; 0 or -errno. */
int d9_plan_write_dot(const struct d9_plan *p, int fd);
int d9_mount_write_dot(const d9_mount *m, int fd);
/* `d9dfs plan -v`: per target tensor its source tensors and its chain of
 * operations as one expression. Written to fd; 0 or -errno. */
int d9_plan_print_provenance(const struct d9_plan *p, int fd);
int d9_mount_print_provenance(const d9_mount *m, int fd);
/* The name of the target tensor holding byte off of p's file `file`
 * (borrowed), or NULL (the header, another file, off past the end). For
 * log lines. */
const char *d9_plan_tensor_at(const struct d9_plan *p, const char *file, uint64_t off);

#endif
