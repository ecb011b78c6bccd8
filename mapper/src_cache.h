/* src_cache.h - -o source_cache=drop: keep a model in the page cache once.
 *
 * A buffered mount keeps what it served in its own page cache (keep_cache),
 * so after a full read the source's pages hold a second copy of the same
 * bytes. The tracker counts, per source tensor, the bytes read from the
 * source (preads, and source pieces once spliced); once a tensor's count
 * reaches its size, its byte range, widened over completed neighbours by up
 * to D9_SRC_CACHE_WIDEN bytes (large folios straddle tensor boundaries), is
 * dropped from the page cache (d9_catalog_drop_cache: posix_fadvise
 * DONTNEED), and so are the completed tensors up to D9_SRC_CACHE_AHEAD
 * after it, which the kernel's readahead for this one may have read back
 * in (a target file that reorders tensors reads its source out of order);
 * the last D9_SRC_CACHE_RECENT completions' windows are swept again at each
 * completion, since readahead in flight (locked pages) escapes a drop.
 * Once every tensor of a shard is dropped, the whole shard is dropped again
 * at once, and by a sweeper thread D9_SRC_CACHE_SWEEP_MS and ten times that
 * later: with reads served out of order (mmap readers, several FUSE
 * threads) the kernel's readahead may still be bringing dropped ranges
 * back in at the last completion. A later read of a dropped tensor (another target, another rank, a re-read
 * after the mount's pages were evicted) comes from the disk, and its window
 * is dropped again after it. Counting bytes, not coverage, means a tensor
 * read twice in part (the kernel may ask for a range twice under mmap) may
 * be dropped before every byte was read: that costs a disk read, never a
 * wrong byte (it is only a hint to the kernel), and the rest, once read, is
 * dropped by that same rule. Measurements:
 * docs/performance.md, "Cache once".
 *
 * Thread-safe (atomics; the sweeper's schedule under a mutex). */
#ifndef D9_SRC_CACHE_H
#define D9_SRC_CACHE_H

#include <stdint.h>

struct d9_catalog;
typedef struct d9_src_cache d9_src_cache;

enum {
  D9_SRC_CACHE_WIDEN = 2 << 20,  /* the largest page-cache folio (x86-64 PMD) */
  D9_SRC_CACHE_AHEAD = 32 << 20, /* how far the kernel's readahead may run past a
                                    read (twice a read_ahead_kb of 16 MiB) */
  D9_SRC_CACHE_RECENT = 4,       /* completions whose windows each completion sweeps
                                    again (readahead in flight at their drop) */
  D9_SRC_CACHE_SWEEP_MS = 100,   /* a completed shard is dropped again this long and
                                    10x this long after its last tensor */
};

/* A tracker over c's tensors. 0 or -ENOMEM. */
int d9_src_cache_create(const struct d9_catalog *c, d9_src_cache **out);
void d9_src_cache_destroy(d9_src_cache *sc); /* accepts NULL */

/* n bytes at absolute offset off of shard s were read from the source:
 * count them against the tensors they overlap and drop the tensors that
 * are now complete. Accepts sc == NULL (no-op). */
void d9_src_cache_note(d9_src_cache *sc, int s, uint64_t off, uint64_t n);

/* Per tensor, the bytes to count before it is dropped (default: its
 * size): for a mount with rank views, what all of them pull together, so
 * that a tensor several ranks read (replicated, or experts under etp=1)
 * is dropped only after the last of them. need[] is copied; a 0 entry
 * keeps the tensor's size. */
void d9_src_cache_set_need(d9_src_cache *sc, const uint64_t *need);

/* Tensors dropped so far (for tests and stats). */
uint64_t d9_src_cache_ndropped(const d9_src_cache *sc);

#endif
