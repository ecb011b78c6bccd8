/* scale_cache.c - a mount's cache of computed FP8 block rows
 * (scale_cache.h): a chained hash table of block rows, two LRU lists (all
 * block rows; those holding bytes), one mutex. When room is needed the
 * bytes go first, least recently used first, so that the scales (about
 * 1/4096 of the bytes with 128 x 128 blocks) outlive them: a scale tensor
 * read after its weight then finds them although the weight's block rows
 * did not all fit. */
#include "scale_cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum { BUCKETS_MIN = 16, BUCKETS_MAX = 1 << 16 };

/* One block row of one QUANT pair. */
typedef struct entry {
  const d9_node *x;            /* key: the pair's input (borrowed), */
  int64_t b0, b1, B;           /* its block sizes, the block row */
  int64_t nb;                  /* scales in the row */
  float *scale;                /* nb, inside this allocation */
  uint64_t *have;              /* bit k: scale[k] is computed */
  unsigned char *bytes;        /* the quantised block row (malloc'd), or NULL */
  size_t nbytes;
  size_t cost;                 /* bytes charged to the cap */
  int filling;                 /* a caller claimed the bytes (d9_scale_cache_bytes) */
  struct entry *chain;         /* next in the bucket */
  struct entry *newer[2], *older[2]; /* in the LRU lists ALL and (with bytes) BYTES */
} entry;

enum { ALL, BYTES };

struct d9_scale_cache {
  pthread_mutex_t lock;        /* guards every field below */
  pthread_cond_t filled;       /* a claim ended (bytes put, or released) */
  size_t cap, used, peak;      /* bytes */
  entry **bucket;
  size_t nbucket;              /* a power of two */
  entry *newest[2], *oldest[2]; /* the LRU lists ALL, BYTES */
  uint64_t entries, hits, misses, evictions;
};

static inline int64_t cdiv(int64_t a, int64_t b) { return a / b + (a % b != 0); }

int d9_scale_cache_create(size_t cap, d9_scale_cache **out) {
  d9_scale_cache *c = calloc(1, sizeof *c);
  if (!c) return -ENOMEM;
  size_t nb = BUCKETS_MIN;
  while (nb < BUCKETS_MAX && nb < cap / 4096) nb <<= 1;
  if (!(c->bucket = calloc(nb, sizeof *c->bucket))) {
    free(c);
    return -ENOMEM;
  }
  c->nbucket = nb;
  c->cap = cap;
  pthread_mutex_init(&c->lock, NULL);
  pthread_cond_init(&c->filled, NULL);
  *out = c;
  return 0;
}

static void free_entry(entry *e) {
  free(e->bytes);
  free(e);
}

void d9_scale_cache_destroy(d9_scale_cache *c) {
  if (!c) return;
  for (entry *e = c->newest[ALL], *n; e; e = n) {
    n = e->older[ALL];
    free_entry(e);
  }
  free(c->bucket);
  pthread_mutex_destroy(&c->lock);
  pthread_cond_destroy(&c->filled);
  free(c);
}

size_t d9_scale_cache_row_max(const d9_scale_cache *c) { return c->cap / 4; }

static size_t slot(const d9_scale_cache *c, const d9_node *x, int64_t B) {
  uint64_t h = (uint64_t)(uintptr_t)x * 0x9e3779b97f4a7c15u ^ (uint64_t)B * 0xbf58476d1ce4e5b9u;
  h ^= h >> 31;
  return (size_t)h & (c->nbucket - 1);
}

/* The entry of block row B of q's pair, or NULL. */
static entry *find(const d9_scale_cache *c, const d9_node *q, int64_t B) {
  const d9_node *x = q->in[0];
  for (entry *e = c->bucket[slot(c, x, B)]; e; e = e->chain)
    if (e->x == x && e->B == B && e->b0 == q->block[0] && e->b1 == q->block[1]) return e;
  return NULL;
}

static void lru_unlink(d9_scale_cache *c, int l, entry *e) {
  if (e->newer[l]) e->newer[l]->older[l] = e->older[l]; else c->newest[l] = e->older[l];
  if (e->older[l]) e->older[l]->newer[l] = e->newer[l]; else c->oldest[l] = e->newer[l];
  e->newer[l] = e->older[l] = NULL;
}

static void lru_front(d9_scale_cache *c, int l, entry *e) {
  e->older[l] = c->newest[l];
  if (c->newest[l]) c->newest[l]->newer[l] = e; else c->oldest[l] = e;
  c->newest[l] = e;
}

static void touch(d9_scale_cache *c, entry *e) {
  for (int l = ALL; l <= BYTES; l++) {
    if (c->newest[l] == e || (l == BYTES && !e->bytes)) continue;
    lru_unlink(c, l, e);
    lru_front(c, l, e);
  }
}

static void drop_bytes(d9_scale_cache *c, entry *e) {
  lru_unlink(c, BYTES, e);
  free(e->bytes);
  e->bytes = NULL;
  e->cost -= e->nbytes;
  c->used -= e->nbytes;
  e->nbytes = 0;
  c->evictions++;
}

static void evict(d9_scale_cache *c, entry *e) {
  entry **p = &c->bucket[slot(c, e->x, e->B)];
  while (*p != e) p = &(*p)->chain;
  *p = e->chain;
  if (e->bytes) lru_unlink(c, BYTES, e);
  lru_unlink(c, ALL, e);
  c->used -= e->cost;
  c->entries--;
  c->evictions++;
  free_entry(e);
}

/* Free least recently used bytes, then least recently used entries, other
 * than keep and the claimed ones, until need more bytes fit the cap; 1 if
 * they do. */
static int make_room(d9_scale_cache *c, size_t need, const entry *keep) {
  if (need > c->cap) return 0;
  for (int l = BYTES; l >= ALL; l--) {
    entry *v = c->oldest[l];
    while (c->used > c->cap - need) {
      while (v && (v == keep || v->filling)) v = v->newer[l];
      if (!v) break;
      entry *next = v->newer[l];
      if (l == BYTES) drop_bytes(c, v); else evict(c, v);
      v = next;
    }
  }
  return c->used <= c->cap - need;
}

static void charge(d9_scale_cache *c, size_t n) {
  c->used += n;
  if (c->used > c->peak) c->peak = c->used;
}

/* A new entry for block row B of q's pair, linked in, or NULL. */
static entry *add(d9_scale_cache *c, const d9_node *q, int64_t B) {
  int64_t nb = cdiv(q->in[0]->shape[1], q->block[1]);
  size_t words = (size_t)(nb + 63) / 64;
  size_t scales = (size_t)nb * sizeof(float);
  size_t at = (sizeof(entry) + 15) & ~(size_t)15;
  size_t cost = at + scales + words * sizeof(uint64_t);
  if (!make_room(c, cost, NULL)) return NULL;
  entry *e = calloc(1, cost);
  if (!e) return NULL;
  *e = (entry){.x = q->in[0], .b0 = q->block[0], .b1 = q->block[1], .B = B, .nb = nb,
               .cost = cost};
  e->have = (uint64_t *)((unsigned char *)e + at); /* 16-aligned, then 8-aligned scales */
  e->scale = (float *)(e->have + words);
  size_t s = slot(c, e->x, B);
  e->chain = c->bucket[s];
  c->bucket[s] = e;
  lru_front(c, ALL, e);
  c->entries++;
  charge(c, cost);
  return e;
}

static int has_all(const entry *e, int64_t k0, int64_t k1) {
  for (int64_t k = k0; k < k1; k++)
    if (!(e->have[k / 64] >> (k % 64) & 1)) return 0;
  return 1;
}

int d9_scale_cache_scales(d9_scale_cache *c, const d9_node *q, int64_t B, int64_t k0,
                          int64_t k1, float *sc) {
  pthread_mutex_lock(&c->lock);
  entry *e = find(c, q, B);
  int hit = e && k0 >= 0 && k0 <= k1 && k1 <= e->nb && has_all(e, k0, k1);
  if (hit) {
    memcpy(sc, e->scale + k0, (size_t)(k1 - k0) * sizeof *sc);
    touch(c, e);
    c->hits++;
  } else {
    c->misses++;
  }
  pthread_mutex_unlock(&c->lock);
  return hit;
}

int d9_scale_cache_bytes(d9_scale_cache *c, const d9_node *q, int64_t B, uint64_t off,
                         size_t n, void *dst, int *claimed) {
  pthread_mutex_lock(&c->lock);
  entry *e = find(c, q, B);
  if (claimed) {
    *claimed = 0;
    while (e && !e->bytes && e->filling) { /* another reader computes it: wait */
      pthread_cond_wait(&c->filled, &c->lock);
      e = find(c, q, B);
    }
  }
  int hit = e && e->bytes && off <= e->nbytes && n <= e->nbytes - off;
  if (hit) {
    if (n) memcpy(dst, e->bytes + off, n);
    touch(c, e);
    c->hits++;
  } else {
    c->misses++;
    if (claimed && (e || (e = add(c, q, B)))) *claimed = e->filling = 1;
  }
  pthread_mutex_unlock(&c->lock);
  return hit;
}

void d9_scale_cache_release(d9_scale_cache *c, const d9_node *q, int64_t B) {
  pthread_mutex_lock(&c->lock);
  entry *e = find(c, q, B);
  if (e && e->filling) {
    e->filling = 0;
    pthread_cond_broadcast(&c->filled);
  }
  pthread_mutex_unlock(&c->lock);
}

void d9_scale_cache_put(d9_scale_cache *c, const d9_node *q, int64_t B, int64_t k0, int64_t k1,
                        const float *sc, void *bytes, size_t nbytes) {
  pthread_mutex_lock(&c->lock);
  entry *e = find(c, q, B);
  if (!e) e = add(c, q, B);
  if (e) {
    touch(c, e);
    for (int64_t k = k0 < 0 ? 0 : k0; k < k1 && k < e->nb; k++) {
      e->scale[k] = sc[k - k0];
      e->have[k / 64] |= (uint64_t)1 << (k % 64);
    }
    if (bytes && !e->bytes && nbytes <= d9_scale_cache_row_max(c) &&
        make_room(c, nbytes, e)) {
      e->bytes = bytes;
      e->nbytes = nbytes;
      lru_front(c, BYTES, e);
      e->cost += nbytes;
      charge(c, nbytes);
      bytes = NULL;
    }
    if (nbytes && e->filling) { /* the claim ends, kept or not */
      e->filling = 0;
      pthread_cond_broadcast(&c->filled);
    }
  }
  pthread_mutex_unlock(&c->lock);
  free(bytes);
}

void d9_scale_cache_get_stats(d9_scale_cache *c, d9_scale_cache_stats *out) {
  pthread_mutex_lock(&c->lock);
  *out = (d9_scale_cache_stats){.cap = c->cap, .used = c->used, .peak = c->peak,
                                .entries = c->entries, .hits = c->hits,
                                .misses = c->misses, .evictions = c->evictions};
  pthread_mutex_unlock(&c->lock);
}
