/* src_cache.c - drop source tensors from the page cache once served
 * (src_cache.h). */
#include "src_cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"

struct d9_src_cache {
  const d9_catalog *cat;
  int *first;                 /* per shard: index of its first tensor; [nshards] = ntensors */
  _Atomic uint64_t *consumed; /* per tensor: bytes read from the source */
  uint64_t *need;             /* per tensor: bytes to count before the drop */
  atomic_uchar *done;         /* per tensor: dropped (or empty) */
  atomic_int *left;           /* per shard: tensors not yet dropped */
  /* the sweeper: a thread that drops each completed shard again
   * D9_SRC_CACHE_SWEEP_MS and 10x that after its last tensor, for the
   * readahead still in flight then; started at the first completed shard
   * (in the process that serves, after any fork), joined by destroy */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t sweeper;
  pid_t sweeper_pid;          /* 0 = not started */
  int stop;
  int sync_ready;             /* mu and cv initialised (destroy may come before) */
  int64_t *sweep_at;          /* per shard: CLOCK_MONOTONIC ns of its next sweep, 0 = none */
  unsigned char *sweeps;      /* per shard: sweeps done */
  _Atomic uint64_t ndropped;
  /* the last completions (shard << 32 | tensor + 1; 0 = none): each
   * completion sweeps their windows again, as readahead in flight when
   * they were dropped (locked pages, skipped) may have filled them since */
  _Atomic uint64_t recent[D9_SRC_CACHE_RECENT];
  atomic_uint next;
};

int d9_src_cache_create(const d9_catalog *c, d9_src_cache **out) {
  d9_src_cache *sc = calloc(1, sizeof *sc);
  size_t nt = (size_t)c->ntensors + 1;
  if (!sc || !(sc->first = calloc((size_t)c->nshards + 1, sizeof *sc->first)) ||
      !(sc->consumed = calloc(nt, sizeof *sc->consumed)) ||
      !(sc->need = calloc(nt, sizeof *sc->need)) ||
      !(sc->done = calloc(nt, sizeof *sc->done)) ||
      !(sc->left = calloc((size_t)c->nshards + 1, sizeof *sc->left)) ||
      !(sc->sweep_at = calloc((size_t)c->nshards + 1, sizeof *sc->sweep_at)) ||
      !(sc->sweeps = calloc((size_t)c->nshards + 1, 1))) {
    d9_src_cache_destroy(sc);
    return -ENOMEM;
  }
  pthread_mutex_init(&sc->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&sc->cv, &ca);
  pthread_condattr_destroy(&ca);
  sc->sync_ready = 1;
  sc->cat = c;
  /* tensors are in shard order, then file order */
  int t = 0;
  for (int s = 0; s < c->nshards; s++) {
    while (t < c->ntensors && c->tensors[t].shard < s) t++;
    sc->first[s] = t;
  }
  sc->first[c->nshards] = c->ntensors;
  for (int i = 0; i < c->ntensors; i++) {
    sc->need[i] = c->tensors[i].nbytes;
    if (!c->tensors[i].nbytes) atomic_init(&sc->done[i], 1);
    else atomic_fetch_add_explicit(&sc->left[c->tensors[i].shard], 1, memory_order_relaxed);
  }
  *out = sc;
  return 0;
}

void d9_src_cache_destroy(d9_src_cache *sc) {
  if (!sc) return;
  if (sc->sync_ready) {
    pthread_mutex_lock(&sc->mu);
    sc->stop = 1;
    pthread_cond_signal(&sc->cv);
    int join = sc->sweeper_pid == getpid();
    pthread_mutex_unlock(&sc->mu);
    if (join) pthread_join(sc->sweeper, NULL);
    pthread_mutex_destroy(&sc->mu);
    pthread_cond_destroy(&sc->cv);
  }
  free(sc->sweep_at);
  free(sc->sweeps);
  free(sc->first);
  free(sc->consumed);
  free(sc->need);
  free(sc->done);
  free(sc->left);
  free(sc);
}

void d9_src_cache_set_need(d9_src_cache *sc, const uint64_t *need) {
  for (int i = 0; i < sc->cat->ntensors; i++)
    if (need[i]) sc->need[i] = need[i];
}

uint64_t d9_src_cache_ndropped(const d9_src_cache *sc) {
  return sc ? atomic_load(&sc->ndropped) : 0;
}

static uint64_t end_of(const d9_src_tensor *t) { return t->offset + t->nbytes; }

/* Drop tensor i's bytes, widened over completed neighbours of its shard
 * (the shard's header too once its first tensor is done, its tail once its
 * last is), then the completed tensors within D9_SRC_CACHE_AHEAD after it:
 * the kernel's readahead for tensor i may have brought them back. */
static void drop_window(d9_src_cache *sc, int s, int i) {
  const d9_src_tensor *T = sc->cat->tensors;
  int lo_i = sc->first[s], hi_i = sc->first[s + 1] - 1;
  uint64_t lo = T[i].offset, hi = end_of(&T[i]);
  uint64_t lim_lo = lo > D9_SRC_CACHE_WIDEN ? lo - D9_SRC_CACHE_WIDEN : 0;
  uint64_t lim_hi = hi + D9_SRC_CACHE_AHEAD;
  int j = i - 1;
  for (; j >= lo_i && lo > lim_lo && atomic_load_explicit(&sc->done[j], memory_order_relaxed);
       j--)
    lo = T[j].offset > lim_lo ? T[j].offset : lim_lo;
  if (j < lo_i && lo > lim_lo) lo = lim_lo; /* the header below the first tensor */
  /* runs of completed tensors from i to lim_hi, each dropped whole */
  for (int k = i + 1;; k++) {
    int more = k <= hi_i && T[k].offset < lim_hi;
    if (more && atomic_load_explicit(&sc->done[k], memory_order_relaxed)) {
      hi = end_of(&T[k]);
      continue;
    }
    if (hi > lo) d9_catalog_drop_cache(sc->cat, s, lo, k > hi_i ? 0 : hi - lo); /* 0: to EOF */
    if (!more) break;
    lo = hi = end_of(&T[k]); /* skip tensor k: still being read */
  }
}

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static void *sweeper_main(void *arg) {
  d9_src_cache *sc = arg;
  pthread_mutex_lock(&sc->mu);
  while (!sc->stop) {
    int64_t t = now_ns(), next = 0;
    int due = -1;
    for (int s = 0; s < sc->cat->nshards; s++) {
      if (!sc->sweep_at[s]) continue;
      if (sc->sweep_at[s] <= t && due < 0) {
        due = s;
        sc->sweep_at[s] = ++sc->sweeps[s] < 2 ? t + 9 * D9_SRC_CACHE_SWEEP_MS * 1000000LL : 0;
      }
      if (sc->sweep_at[s] && (!next || sc->sweep_at[s] < next)) next = sc->sweep_at[s];
    }
    if (due >= 0) { /* the drop walks the shard's pages: not under the lock */
      pthread_mutex_unlock(&sc->mu);
      d9_catalog_drop_cache(sc->cat, due, 0, 0);
      pthread_mutex_lock(&sc->mu);
    } else if (!next) {
      pthread_cond_wait(&sc->cv, &sc->mu);
    } else {
      struct timespec ts = {(time_t)(next / 1000000000), (long)(next % 1000000000)};
      pthread_cond_timedwait(&sc->cv, &sc->mu, &ts);
    }
  }
  pthread_mutex_unlock(&sc->mu);
  return NULL;
}

/* Shard s is complete: drop it now, and have the sweeper drop it again. */
static void shard_done(d9_src_cache *sc, int s) {
  d9_catalog_drop_cache(sc->cat, s, 0, 0);
  pthread_mutex_lock(&sc->mu);
  if (sc->sweeper_pid != getpid()) { /* not started here (or started before a fork) */
    sc->sweeper_pid = pthread_create(&sc->sweeper, NULL, sweeper_main, sc) ? 0 : getpid();
  }
  sc->sweeps[s] = 0;
  sc->sweep_at[s] = now_ns() + D9_SRC_CACHE_SWEEP_MS * 1000000LL;
  pthread_cond_signal(&sc->cv);
  pthread_mutex_unlock(&sc->mu);
}

static void drop(d9_src_cache *sc, int s, int i) {
  drop_window(sc, s, i);
  for (int r = 0; r < D9_SRC_CACHE_RECENT; r++) {
    uint64_t e = atomic_load_explicit(&sc->recent[r], memory_order_relaxed);
    if (e) drop_window(sc, (int)(e >> 32), (int)(e & 0xffffffffu) - 1);
  }
  unsigned slot = atomic_fetch_add_explicit(&sc->next, 1, memory_order_relaxed);
  atomic_store_explicit(&sc->recent[slot % D9_SRC_CACHE_RECENT],
                        (uint64_t)s << 32 | (uint64_t)(i + 1), memory_order_relaxed);
  atomic_fetch_add_explicit(&sc->ndropped, 1, memory_order_relaxed);
  /* the shard's last tensor: sweep all of it again, now and later (what
   * readahead brought back after the windows around it were dropped) */
  if (atomic_fetch_sub_explicit(&sc->left[s], 1, memory_order_relaxed) == 1) shard_done(sc, s);
}

void d9_src_cache_note(d9_src_cache *sc, int s, uint64_t off, uint64_t n) {
  if (!sc || s < 0 || s >= sc->cat->nshards || !n) return;
  const d9_src_tensor *T = sc->cat->tensors;
  int a = sc->first[s], b = sc->first[s + 1]; /* the first tensor ending after off */
  while (a < b) {
    int mid = a + (b - a) / 2;
    if (end_of(&T[mid]) <= off) a = mid + 1;
    else b = mid;
  }
  uint64_t end = off + n;
  for (int i = a; i < sc->first[s + 1] && T[i].offset < end; i++) {
    uint64_t lo = off > T[i].offset ? off : T[i].offset;
    uint64_t hi = end < end_of(&T[i]) ? end : end_of(&T[i]);
    if (hi <= lo) continue;
    uint64_t before = atomic_fetch_add_explicit(&sc->consumed[i], hi - lo, memory_order_relaxed);
    if (before < sc->need[i] && before + (hi - lo) >= sc->need[i] &&
        !atomic_exchange_explicit(&sc->done[i], 1, memory_order_relaxed))
      drop(sc, s, i);
    else if (before >= sc->need[i]) /* read again after its drop: drop again */
      drop_window(sc, s, i);
  }
}
