/* readpool.c - the scratch budget, the helper threads and split reads of a
 * mount (readpool.h). */
#include "readpool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#if !defined(D9_PAUSE_FALLBACK) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#endif

enum { POOL_MAX = 512, MEM_DEFAULT_MB = 64 };

/* Split reads (see post_parts): parts of at least SPLIT_MIN bytes, at most
 * HELPERS_MAX helper threads; THREADS_AUTO caps the default. */
enum { SPLIT_MIN = 256 << 10, HELPERS_MAX = 7, THREADS_AUTO = 8 };
/* A helper that finishes a part spins this long before it sleeps: on these
 * VMs waking a thread on an idle CPU takes long enough to eat the gain of
 * splitting a 1 MiB read (docs/performance.md). */
enum { SPIN_NS = 500 * 1000 };

/* One part of a split read, evaluated by a helper thread. */
typedef struct read_part {
  const d9_vfile *vf;
  uint64_t off;
  size_t n;
  unsigned char *buf;
  d9_read_ctx rc;
  ssize_t r;
  int done;                  /* guarded by help_lock */
} read_part;

struct d9_readpool {
  pthread_mutex_t pool_lock; /* guards pool, npool, scratch_out */
  pthread_cond_t pool_free;  /* signalled when a scratch buffer comes back */
  unsigned char *pool[POOL_MAX];
  int npool;
  int scratch_out;           /* scratch buffers held by reads in flight */
  int scratch_max;           /* the memory budget in scratch buffers (>= 1) */
  int nhelpers;              /* helper threads for split reads (0 = none); set
                                under help_lock, read atomically outside it */
  pthread_mutex_t help_lock; /* guards the fields below */
  pthread_cond_t help_work;  /* a part was queued, or stop */
  pthread_cond_t help_done;  /* a part is done */
  pthread_t helper[HELPERS_MAX];
  int started;               /* helpers running (started on first split) */
  pid_t started_pid;         /* in this process: a fork does not copy threads */
  int idle;                  /* helpers not reserved by a read */
  int stop;
  read_part *queue[HELPERS_MAX];
  int nqueue;                /* changed under help_lock, atomically for the spin */
};

/* One step of a spin-wait: tells the CPU (and a hyperthread sibling) that
 * this thread is waiting. Nothing where no such hint is known. */
static inline void cpu_relax(void) {
#if defined(D9_PAUSE_FALLBACK)
  /* forced portable path (tests): a plain spin */
#elif defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__) || defined(__arm__)
  __asm__ __volatile__("yield" ::: "memory");
#endif
}

int d9_readpool_create(int threads, uint64_t mem_mb, d9_readpool **out) {
  d9_readpool *p = calloc(1, sizeof *p);
  if (!p) return -ENOMEM;
  pthread_mutex_init(&p->pool_lock, NULL);
  pthread_cond_init(&p->pool_free, NULL);
  pthread_mutex_init(&p->help_lock, NULL);
  pthread_cond_init(&p->help_work, NULL);
  pthread_cond_init(&p->help_done, NULL);
  long t = threads ? threads : sysconf(_SC_NPROCESSORS_ONLN);
  if (!threads && t > THREADS_AUTO) t = THREADS_AUTO;
  p->nhelpers = t <= 1 ? 0 : t - 1 > HELPERS_MAX ? HELPERS_MAX : (int)t - 1;
  uint64_t mb = mem_mb ? mem_mb : MEM_DEFAULT_MB;
  uint64_t n = (mb << 20) / D9_SCRATCH_BYTES;
  p->scratch_max = n < 1 ? 1 : n > POOL_MAX ? POOL_MAX : (int)n;
  *out = p;
  return 0;
}

void d9_readpool_destroy(d9_readpool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->help_lock);
  p->stop = 1;
  pthread_cond_broadcast(&p->help_work);
  int joinable = p->started_pid == getpid() ? p->started : 0;
  pthread_mutex_unlock(&p->help_lock);
  for (int i = 0; i < joinable; i++) pthread_join(p->helper[i], NULL);
  pthread_mutex_destroy(&p->help_lock);
  pthread_cond_destroy(&p->help_work);
  pthread_cond_destroy(&p->help_done);
  for (int i = 0; i < p->npool; i++) free(p->pool[i]);
  pthread_mutex_destroy(&p->pool_lock);
  pthread_cond_destroy(&p->pool_free);
  free(p);
}

int d9_readpool_threads(const d9_readpool *p) {
  return __atomic_load_n(&p->nhelpers, __ATOMIC_RELAXED) + 1;
}

uint64_t d9_readpool_mem_mib(const d9_readpool *p) {
  return (uint64_t)p->scratch_max * D9_SCRATCH_BYTES >> 20;
}

/* A buffer from the budget into *out (NULL when malloc failed), waiting
 * while the budget is spent if wait, else giving up; 1 if taken. */
static int pool_take(d9_readpool *p, int wait, unsigned char **out) {
  unsigned char *b = NULL;
  int ok = 0;
  pthread_mutex_lock(&p->pool_lock);
  while (wait && p->scratch_out >= p->scratch_max)
    pthread_cond_wait(&p->pool_free, &p->pool_lock);
  if (p->scratch_out < p->scratch_max) {
    ok = 1;
    p->scratch_out++;
    if (p->npool) b = p->pool[--p->npool];
  }
  pthread_mutex_unlock(&p->pool_lock);
  if (ok) *out = b ? b : malloc(D9_SCRATCH_BYTES); /* NULL: the read mallocs per chunk or ENOMEMs */
  return ok;
}

unsigned char *d9_readpool_get(d9_readpool *p) {
  unsigned char *b = NULL;
  pool_take(p, 1, &b);
  return b;
}

void d9_readpool_put(d9_readpool *p, unsigned char *b) {
  pthread_mutex_lock(&p->pool_lock);
  p->scratch_out--;
  if (b && p->npool < p->scratch_max) p->pool[p->npool++] = b, b = NULL;
  pthread_cond_signal(&p->pool_free);
  pthread_mutex_unlock(&p->pool_lock);
  free(b);
}

static void *helper_main(void *arg) {
  d9_readpool *p = arg;
  pthread_mutex_lock(&p->help_lock);
  for (;;) {
    if (!p->nqueue && !p->stop) { /* spin a while before sleeping: see SPIN_NS */
      pthread_mutex_unlock(&p->help_lock);
      struct timespec t0, t;
      clock_gettime(CLOCK_MONOTONIC, &t0);
      do {
        for (int i = 0; i < 64; i++) cpu_relax();
        clock_gettime(CLOCK_MONOTONIC, &t);
      } while (!__atomic_load_n(&p->nqueue, __ATOMIC_RELAXED) &&
               (t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < SPIN_NS);
      pthread_mutex_lock(&p->help_lock);
    }
    while (!p->nqueue && !p->stop) pthread_cond_wait(&p->help_work, &p->help_lock);
    if (p->stop) break;
    int q = __atomic_sub_fetch(&p->nqueue, 1, __ATOMIC_RELAXED);
    read_part *part = p->queue[q];
    pthread_mutex_unlock(&p->help_lock);
    part->r = d9_eval_read(&part->rc, part->vf, part->off, part->n, part->buf);
    pthread_mutex_lock(&p->help_lock);
    part->done = 1;
    p->idle++;
    pthread_cond_broadcast(&p->help_done);
  }
  pthread_mutex_unlock(&p->help_lock);
  return NULL;
}

/* A read of at least 2 * SPLIT_MIN bytes whose range computes (a cast,
 * transpose, dequant, ...: d9_eval_range_computes) is cut into page-aligned
 * parts evaluated at once: the caller takes the first, [0, *first), idle
 * helpers the others. Returns the number of parts handed to helpers
 * (parts[0..k)), 0 for none. */
static int post_parts(d9_readpool *p, const d9_vfile *vf, uint64_t off, size_t n,
                      unsigned char *buf, const d9_read_ctx *rc, read_part *parts, size_t *first) {
  if (!__atomic_load_n(&p->nhelpers, __ATOMIC_RELAXED) || n < 2 * SPLIT_MIN ||
      !d9_eval_range_computes(vf, off, n))
    return 0;
  pthread_mutex_lock(&p->help_lock);
  if (p->started && p->started_pid != getpid()) p->started = p->idle = 0; /* forked */
  if (!p->started && !p->stop) {
    for (int i = 0; i < p->nhelpers; i++) {
      if (pthread_create(&p->helper[i], NULL, helper_main, p)) break;
      p->started++;
    }
    p->idle = p->started;
    p->started_pid = getpid();
    if (!p->started) __atomic_store_n(&p->nhelpers, 0, __ATOMIC_RELAXED); /* never split */
  }
  size_t most = n / SPLIT_MIN - 1; /* helpers' parts, each >= SPLIT_MIN */
  int k = p->idle < (int)most ? p->idle : (int)most;
  for (int i = 0; i < k; i++)
    if (!pool_take(p, 0, &parts[i].rc.scratch)) k = i; /* never wait: a split is optional */
  if (k > 0) {
    size_t each = (n / (size_t)(k + 1)) & ~(size_t)4095, at = n - each * (size_t)k;
    *first = at;
    for (int i = 0; i < k; i++, at += each) {
      read_part *part = &parts[i];
      unsigned char *scratch = part->rc.scratch;
      *part = (read_part){.vf = vf, .off = off + at, .n = each, .buf = buf + at};
      part->rc = (d9_read_ctx){.cat = rc->cat, .be = rc->be, .scratch = scratch,
                               .qcache = rc->qcache, .faults = rc->faults};
      p->queue[__atomic_fetch_add(&p->nqueue, 1, __ATOMIC_RELAXED)] = part;
    }
    p->idle -= k;
    pthread_cond_broadcast(&p->help_work);
  }
  pthread_mutex_unlock(&p->help_lock);
  return k;
}

/* Wait for parts[0..k), return their scratch, fold their counts and first
 * error into rc; returns that error or 0. */
static ssize_t join_parts(d9_readpool *p, read_part *parts, int k, d9_read_ctx *rc) {
  ssize_t err = 0;
  pthread_mutex_lock(&p->help_lock);
  for (int i = 0; i < k; i++)
    while (!parts[i].done) pthread_cond_wait(&p->help_done, &p->help_lock);
  pthread_mutex_unlock(&p->help_lock);
  for (int i = 0; i < k; i++) {
    read_part *part = &parts[i];
    d9_readpool_put(p, part->rc.scratch);
    rc->src_bytes += part->rc.src_bytes;
    rc->tensors += part->rc.tensors;
    if (part->r >= 0 && (size_t)part->r == part->n) continue;
    if (!err) {
      err = part->r < 0 ? part->r : -EIO;
      if (!rc->failed_target) rc->failed_target = part->rc.failed_target;
      if (!rc->failed_src) rc->failed_src = part->rc.failed_src;
    }
  }
  return err;
}

ssize_t d9_readpool_read(d9_readpool *p, d9_read_ctx *rc, const d9_vfile *vf, uint64_t off,
                         size_t n, void *buf, int *split) {
  read_part parts[HELPERS_MAX];
  size_t first = n;
  int k = post_parts(p, vf, off, n, buf, rc, parts, &first);
  *split = k > 0;
  if (k) rc->refs = NULL, rc->maxrefs = 0; /* split: all copied */
  ssize_t r = d9_eval_read(rc, vf, off, first, buf);
  if (k) {
    ssize_t e = join_parts(p, parts, k, rc);
    if (r >= 0) r = e ? e : (size_t)r != first ? -EIO : (ssize_t)n;
  }
  return r;
}
