/* eval.h - lazy evaluation: bytes [off, off+n) of a virtual file, computed
 * from only the source ranges they need.
 *
 * d9_eval_fill() produces elements [start, start+count) of a node, in row-
 * major order and the node's dtype, straight into the caller's buffer.
 * Layout nodes recurse into the matching input ranges; computing nodes
 * (cast, affine, permute tiles, FP8 dequant and quant) pull their inputs in
 * bounded chunks through scratch memory and compute them on the read's
 * backend (rc->be), never by calling a kernel directly. Memory per call is
 * bounded by the read plus a fixed scratch (D9_SCRATCH_BYTES), never by
 * tensor size; with rc->qcache, an FP8 quant also holds one block row's
 * quantised bytes while it computes them (at most
 * d9_scale_cache_row_max(), then handed to the cache). The files of the
 * evaluator are listed in eval_internal.h.
 */
#ifndef D9_EVAL_H
#define D9_EVAL_H

#include <stdint.h>
#include <sys/types.h>

#include "../kernels/kernels.h"
#include "catalog.h"
#include "node.h"
#include "piece.h"
#include "plan.h"

#define D9_SCRATCH_BYTES (2u << 20)

/* Fault injection for tests (mount options -o inject_...): every Nth source
 * read fails with EIO, every Nth scratch allocation with ENOMEM, every source
 * read first waits delay_ms milliseconds (a slow source). 0 = off. The
 * counters are shared by all reads of a mount. */
typedef struct d9_faults {
  uint64_t pread_every, alloc_every, delay_ms;
  _Atomic uint64_t preads, allocs;
} d9_faults;

/* Zero-copy reads: a run of at least D9_REF_MIN source bytes that lands in
 * the reply unchanged (through rename, reshape, concat, slice only) is
 * recorded as a reference instead of being read; the front end then moves
 * it from the source file to the kernel with splice (d9_eval_pieces). */
enum { D9_REF_MIN = 32 * 1024 }; /* bytes; shorter runs are read with pread */
typedef struct d9_ref {
  int shard;       /* catalog shard index */
  uint64_t off;    /* absolute file offset */
  size_t len;      /* bytes */
  size_t at;       /* offset in the reply */
} d9_ref;

struct d9_scale_cache; /* scale_cache.h */

/* Per-read context: the backend, scratch memory and what went wrong, for
 * the log. */
typedef struct d9_read_ctx {
  const d9_catalog *cat;
  const d9_backend *be;     /* every compute of the read runs here (borrowed;
                               from d9_eval_backend); NULL = the CPU backend */
  unsigned char *scratch;   /* D9_SCRATCH_BYTES, borrowed */
  size_t scratch_top;       /* bytes in use (a stack) */
  struct d9_scale_cache *qcache; /* the mount's computed FP8 block rows (borrowed,
                               thread-safe); NULL = compute every block row */
  uint64_t src_bytes;       /* bytes pread from the source by this read */
  uint64_t tensors;         /* extents evaluated by this read */
  const d9_src_tensor *failed_src;  /* set on a source error */
  const d9_target *failed_target;   /* set on any tensor error */
  d9_faults *faults;                /* NULL = no injection */
  d9_ref *refs;                     /* caller's array of maxrefs; NULL = read everything */
  int nrefs, maxrefs;
  int defer;                        /* 1 while filling the reply through layout ops only */
  unsigned char *out_lo, *out_hi;   /* the reply buffer of d9_eval_read */
  /* d9_eval_read checks each source shard it read once, after its last
   * pread (two syscalls per shard per read, not per segment) */
  int check_later;                  /* set by d9_eval_read */
  int ntouched;
  struct {
    int shard;
    const d9_src_tensor *t;         /* a tensor read from it, for the log */
  } touched[8];
} d9_read_ctx;

/* Fill elements [start, start+count) of x into out. 0 or -errno. */
int d9_eval_fill(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count, void *out);

/* The backend a mount's reads compute on, for -o device=DEV: the CPU
 * backend for NULL, "auto" and "cpu"; "cuda[:N]" is refused for now
 * (-ENOTSUP, or -ENODEV / -EINVAL naming what is missing or wrong). *out
 * is borrowed (static lifetime), NULL on error. Returns 0 or -errno with
 * diag set. */
int d9_eval_backend(const char *device, const d9_backend **out, d9_diag *diag);

/* Bytes [off, off+n) of vf into buf. Returns the count (short only at
 * EOF) or -errno. */
ssize_t d9_eval_read(d9_read_ctx *rc, const d9_vfile *vf, uint64_t off, size_t n, void *buf);

/* 1 if bytes [off, off+n) of vf cover a tensor whose evaluation computes
 * (cast, permute, dequant, ...: any op besides source, reshape, concat and
 * slice), 0 if they only move source bytes. Cheap: a bounded graph walk. */
int d9_eval_range_computes(const d9_vfile *vf, uint64_t off, size_t n);

/* After d9_eval_read(rc, vf, off, n, buf) returned r >= 0 with rc->refs
 * set: the reply, bytes [0, r), as pieces of buf and the recorded source
 * refs, in order (see d9_mount_read_pieces). Returns the piece count. */
int d9_eval_pieces(const d9_read_ctx *rc, unsigned char *buf, size_t r,
                   d9_piece pieces[D9_READ_MAXPIECES]);

#endif
