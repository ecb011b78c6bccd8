/* scale_cache.h - a mount's cache of computed FP8 block rows.
 *
 * A block scale of a QUANT pair (node.h: QUANT_W, QUANT_S) depends on the
 * whole b0 x b1 block, so a read that needs a few elements of the weight,
 * or one scale, pulls whole b0-row tiles of the input. Without a cache each
 * read recomputes the block rows it touches, and the scale tensor reads the
 * weight again. The cache keeps, per block row B of a pair (keyed by the
 * pair's input node and block sizes, so the weight and the scale tensor
 * share it):
 *  - the scales computed so far (F32, one bit each saying "computed"), and
 *  - once one read computed the whole block row, its quantised bytes
 *    (rows x N F8_E4M3, row-major from the block row's first element), so
 *    the next reads of that block row copy instead of re-reading it.
 * Values are a pure function of the source, so a hit gives the same bits
 * as a recompute; a miss is always allowed (evicted, never stored, or no
 * cache at all: the evaluator then computes, as with d9_read_ctx.qcache
 * NULL).
 *
 * Memory: at most cap bytes (entry headers, scales and bytes counted);
 * when room is needed the least recently used bytes go first, then the
 * least recently used block rows (scales); a block row's bytes are kept
 * only when they take at most d9_scale_cache_row_max() (cap / 4).
 * Keys are node pointers: valid while the mount's graph lives, so the
 * cache dies with the mount. Every function is thread-safe (one mutex; a
 * copy out happens under it, so an entry never goes while it is read).
 */
#ifndef D9_SCALE_CACHE_H
#define D9_SCALE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "node.h"

typedef struct d9_scale_cache d9_scale_cache;

typedef struct d9_scale_cache_stats {
  size_t cap;          /* bytes */
  size_t used;         /* bytes held now, <= cap */
  size_t peak;         /* most bytes ever held, <= cap */
  uint64_t entries;    /* block rows held now */
  uint64_t hits, misses;
  uint64_t evictions;  /* block rows, or only their bytes, freed for room */
} d9_scale_cache_stats;

/* A cache of at most cap bytes (0 = keep nothing: every lookup misses).
 * Returns 0 or -ENOMEM. */
int d9_scale_cache_create(size_t cap, d9_scale_cache **out);
/* Frees every entry. Accepts NULL. No call may be in flight. */
void d9_scale_cache_destroy(d9_scale_cache *c);

/* The most bytes of one block row's quantised weight the cache keeps. */
size_t d9_scale_cache_row_max(const d9_scale_cache *c);

/* Scales [k0, k1) of block row B of the QUANT pair of q (QUANT_W or
 * QUANT_S) into sc: 1 when all were cached, else 0 and sc untouched. */
int d9_scale_cache_scales(d9_scale_cache *c, const d9_node *q, int64_t B, int64_t k0,
                          int64_t k1, float *sc);

/* Bytes [off, off+n) of block row B's quantised weight into dst: 1 when
 * the block row's bytes are cached (and hold the range), else 0.
 * With claimed set, a miss claims the block row for the caller (*claimed
 * = 1; 0 when the cache has no room for it): other claiming callers then
 * wait until the claim ends, so concurrent reads compute a block row once.
 * A caller that claimed must end the claim: d9_scale_cache_put with the
 * bytes, or d9_scale_cache_release (on an error), and must not claim
 * again before. Claims are taken in graph order (a block row's input
 * never depends on it), so waits cannot form a cycle. Claimed block rows
 * are never evicted. */
int d9_scale_cache_bytes(d9_scale_cache *c, const d9_node *q, int64_t B, uint64_t off,
                         size_t n, void *dst, int *claimed);
/* Ends the caller's claim on block row B without bytes. */
void d9_scale_cache_release(d9_scale_cache *c, const d9_node *q, int64_t B);

/* Store scales [k0, k1) of block row B (sc[0] is block k0; k0 == k1 for
 * none) and, when bytes is set, the whole block row's quantised weight:
 * nbytes malloc'd bytes whose ownership passes to the cache (kept, or
 * freed at once when they do not fit); a put with bytes ends a claim on
 * the block row, whoever holds it. Never fails visibly: what cannot be
 * kept (no memory, larger than the cap) is dropped. */
void d9_scale_cache_put(d9_scale_cache *c, const d9_node *q, int64_t B, int64_t k0, int64_t k1,
                        const float *sc, void *bytes, size_t nbytes);

void d9_scale_cache_get_stats(d9_scale_cache *c, d9_scale_cache_stats *out);

#endif
