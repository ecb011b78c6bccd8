/* readpool.h - what a mount evaluates reads with: the scratch budget
 * (-o mem), the helper threads and the split reads (-o threads).
 * Internal to the core: the mount API (mount.c) owns one per mount.
 *
 * Scratch memory is the memory budget: at most d9_readpool_mem_mib() MiB
 * of D9_SCRATCH_BYTES buffers are out at once, one per read in flight
 * (kept for reuse); a read past the budget waits for a buffer to come
 * back. A computing read of at least 512 KiB is cut into page-aligned
 * parts that idle helper threads evaluate beside the reading thread;
 * helpers start on the first split, in the process that reads (a daemon
 * forks after opening the mount). Every function is thread-safe.
 */
#ifndef D9_READPOOL_H
#define D9_READPOOL_H

#include <stdint.h>
#include <sys/types.h>

#include "eval.h"

typedef struct d9_readpool d9_readpool;

/* threads: evaluating threads per read (0 = the CPUs online, at most 8;
 * 1 = no helpers); mem_mb: the scratch budget in MiB (0 = 64). Starts no
 * thread. Returns 0 or -ENOMEM. */
int d9_readpool_create(int threads, uint64_t mem_mb, d9_readpool **out);
/* Stops and joins the helpers this process started; frees the scratch.
 * Accepts NULL. No read may be in flight. */
void d9_readpool_destroy(d9_readpool *p);

/* A scratch buffer (D9_SCRATCH_BYTES), waiting while the budget is spent;
 * NULL when malloc failed (the read then mallocs per chunk or fails with
 * ENOMEM). Give it back with d9_readpool_put, NULL included. */
unsigned char *d9_readpool_get(d9_readpool *p);
void d9_readpool_put(d9_readpool *p, unsigned char *scratch);

/* d9_eval_read(rc, vf, off, n, buf), split across idle helpers when the
 * range computes and is large enough (only idle helpers and free scratch
 * are taken, never waited for). n must stop at vf's end (the parts are
 * cut from it); rc->scratch is the caller's. A split read copies every
 * byte: it clears rc->refs. The parts' source bytes, tensor counts and
 * first failure are folded into rc. *split is set to 1 when the read was
 * split, else 0. Returns what d9_eval_read returns for the whole range. */
ssize_t d9_readpool_read(d9_readpool *p, d9_read_ctx *rc, const d9_vfile *vf, uint64_t off,
                         size_t n, void *buf, int *split);

int d9_readpool_threads(const d9_readpool *p);       /* helpers + the reading thread */
uint64_t d9_readpool_mem_mib(const d9_readpool *p);  /* the scratch budget, MiB */

#endif
