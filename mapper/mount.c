#include "mount.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"
#include "kernels/cuda/cuda.h"
#include "eval.h"
#include "graph.h"
#include "json_strict.h"
#include "plan.h"
#include "rank.h"
#include "spec.h"

enum { SPEC_MAX = 16u << 20, POOL_MAX = 512, MEM_DEFAULT_MB = 64 };

/* Split reads (see read_split): parts of at least SPLIT_MIN bytes, at most
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
  int done;
} read_part;

struct d9_mount {
  d9_catalog *cat;
  d9_spec *spec;
  d9_spec *fwd_spec;   /* --reverse: the spec as written; spec is its inverse */
  d9_graph *graph;
  d9_plan *plan;
  d9_arena *arena;     /* the tree */
  int nnodes;
  d9_vnode *nodes;
  const d9_vfile **vfile_of; /* per node: its file, NULL for dirs / dynamic */
  int nranks;
  d9_plan **rank_plans;/* per rank (t, e, p) in that order; NULL without ranks */
  char **rank_names;   /* "tp0-ep1", ... */
  d9_arena *rank_arena;/* rank targets and nodes */
  int stats_node, report_node;
  int verbose;
  d9_faults faults;    /* test-only fault injection; off unless asked */
  _Atomic uint64_t bytes_served, bytes_read_source, reads, tensors_evaluated, errors;
  _Atomic uint64_t split_reads;
  char *frontend;      /* members of stats.json's "frontend" object; NULL = none */
  pthread_mutex_t pool_lock; /* guards pool, npool, scratch_out */
  pthread_cond_t pool_free;  /* signalled when a scratch buffer comes back */
  unsigned char *pool[POOL_MAX];
  int npool;
  int scratch_out;           /* scratch buffers held by reads in flight */
  int scratch_max;           /* the memory budget in scratch buffers (>= 1) */
  int nhelpers;              /* helper threads for split reads (0 = none) */
  pthread_mutex_t help_lock; /* guards the fields below */
  pthread_cond_t help_work;  /* a part was queued, or stop */
  pthread_cond_t help_done;  /* a part is done */
  pthread_t helper[HELPERS_MAX];
  int started;               /* helpers running (started on first split) */
  pid_t started_pid;         /* in this process: a fork does not copy threads */
  int idle;                  /* helpers not reserved by a read */
  int stop;
  read_part *queue[HELPERS_MAX];
  int nqueue;
};

/* Tree construction: nodes with child lists, from one arena. */
typedef struct tree_builder {
  d9_mount *m;
  int cap;
  int **kids;    /* temporary per-node child arrays */
  int *nkids, *capkids;
} tree_builder;

static int tb_add(tree_builder *tb, int parent, const char *name, d9_node_kind kind,
                  uint64_t size, const d9_vfile *vfile) {
  d9_mount *m = tb->m;
  if (m->nnodes == tb->cap) return -ENOMEM; /* sized up front */
  int i = m->nnodes++;
  m->nodes[i] = (d9_vnode){name, kind, size, parent < 0 ? i : parent, 0, NULL};
  m->vfile_of[i] = vfile;
  if (parent >= 0) {
    if (tb->nkids[parent] == tb->capkids[parent]) {
      int nc = tb->capkids[parent] ? tb->capkids[parent] * 2 : 8;
      int *k = realloc(tb->kids[parent], sizeof(int) * (size_t)nc);
      if (!k) return -ENOMEM;
      tb->kids[parent] = k, tb->capkids[parent] = nc;
    }
    tb->kids[parent][tb->nkids[parent]++] = i;
  }
  return i;
}

static int add_plan_files(tree_builder *tb, int dir, const d9_plan *p) {
  for (int f = 0; f < p->nfiles; f++)
    if (tb_add(tb, dir, p->files[f].name, D9_NODE_FILE, p->files[f].size, &p->files[f]) < 0)
      return -ENOMEM;
  return 0;
}

/* root: the full view's files, .d9dfs/{stats,report}.json, and ranks/NAME/
 * with each rank's files. */
static int build_tree(d9_mount *m) {
  int cap = m->plan->nfiles + 8 + 1, rc = -ENOMEM;
  for (int r = 0; r < m->nranks; r++) cap += m->rank_plans[r]->nfiles + 1;
  tree_builder tb = {m, cap, calloc((size_t)cap, sizeof(int *)), calloc((size_t)cap, sizeof(int)),
                     calloc((size_t)cap, sizeof(int))};
  m->nodes = d9_arena_calloc(m->arena, (size_t)cap, sizeof *m->nodes);
  m->vfile_of = d9_arena_calloc(m->arena, (size_t)cap, sizeof *m->vfile_of);
  if (!tb.kids || !tb.nkids || !tb.capkids || !m->nodes || !m->vfile_of) goto out;
  if (tb_add(&tb, -1, "", D9_NODE_DIR, 0, NULL) < 0 || add_plan_files(&tb, 0, m->plan)) goto out;
  int meta = tb_add(&tb, 0, ".d9dfs", D9_NODE_DIR, 0, NULL);
  if (meta < 0 || (m->stats_node = tb_add(&tb, meta, "stats.json", D9_NODE_DYNAMIC, 0, NULL)) < 0 ||
      (m->report_node = tb_add(&tb, meta, "report.json", D9_NODE_DYNAMIC, 0, NULL)) < 0)
    goto out;
  if (m->nranks) {
    int ranks = tb_add(&tb, 0, "ranks", D9_NODE_DIR, 0, NULL);
    if (ranks < 0) goto out;
    for (int r = 0; r < m->nranks; r++) {
      int d = tb_add(&tb, ranks, m->rank_names[r], D9_NODE_DIR, 0, NULL);
      if (d < 0 || add_plan_files(&tb, d, m->rank_plans[r])) goto out;
    }
  }
  for (int i = 0; i < m->nnodes; i++) {
    if (m->nodes[i].kind != D9_NODE_DIR) continue;
    int *k = d9_arena_calloc(m->arena, (size_t)tb.nkids[i] + 1, sizeof(int));
    if (!k) goto out;
    if (tb.nkids[i]) memcpy(k, tb.kids[i], sizeof(int) * (size_t)tb.nkids[i]);
    m->nodes[i].children = k;
    m->nodes[i].nchildren = tb.nkids[i];
  }
  rc = 0;
out:
  for (int i = 0; tb.kids && i < cap; i++) free(tb.kids[i]);
  free(tb.kids);
  free(tb.nkids);
  free(tb.capkids);
  return rc;
}

/* One plan per rank (t, e, p) when tp, ep or pp > 1. */
static int build_ranks(d9_mount *m, const d9_mount_opts *o, d9_diag *diag) {
  d9_rank_opts ro = {o->tp > 1 ? o->tp : 1, o->ep > 1 ? o->ep : 1, o->pp > 1 ? o->pp : 1,
                     o->etp > 1 ? o->etp : 1,
                     o->vocab_divisible_by > 1 ? o->vocab_divisible_by : 1, o->npp_layers,
                     o->pp_layers};
  int n = ro.tp * ro.ep * ro.pp;
  if (ro.etp > 1 && ro.etp != ro.tp)
    return d9_diag_fail(diag, EINVAL, "etp=%d: the expert tensor parallel size must be 1 or "
                        "equal tp=%d", ro.etp, ro.tp);
  if (n == 1) return 0;
  if (n > 4096) return d9_diag_fail(diag, EINVAL, "tp*ep*pp = %d ranks: at most 4096", n);
  m->rank_arena = d9_arena_create();
  m->rank_plans = calloc((size_t)n, sizeof *m->rank_plans);
  m->rank_names = d9_arena_calloc(m->arena, (size_t)n, sizeof(char *));
  if (!m->rank_arena || !m->rank_plans || !m->rank_names)
    return d9_diag_fail(diag, ENOMEM, "out of memory");
  for (int t = 0; t < ro.tp; t++)
    for (int e = 0; e < ro.ep; e++)
      for (int p = 0; p < ro.pp; p++) {
        char name[64];
        d9_target *tg;
        int ntg, rc;
        d9_rank_name(&ro, t, e, p, name, sizeof name);
        if ((rc = d9_rank_targets(m->spec, m->cat, m->graph, &ro, t, e, p, m->rank_arena, &tg,
                                  &ntg, diag)))
          return rc;
        int r = m->nranks;
        if (!(m->rank_names[r] = d9_arena_strdup(m->arena, name)))
          return d9_diag_fail(diag, ENOMEM, "out of memory");
        if ((rc = d9_plan_build(m->spec, m->cat, tg, ntg, &m->rank_plans[r], diag))) {
          d9_diag_prefix(diag, "ranks/%s", name);
          return rc;
        }
        m->nranks++;
      }
  return 0;
}

/* -o device=auto|cpu|cuda[:N]. Reads are evaluated on the CPU backend: the
 * CUDA kernels exist (kernels/cuda/) but are not wired into reads yet, and
 * CUDA state made here, before the daemon forks, would not survive the fork
 * anyway. So asking for a GPU is refused with the reason rather than
 * silently served by the CPU. */
static int pick_device(const char *dev, d9_diag *diag) {
  if (!dev || !strcmp(dev, "auto") || !strcmp(dev, "cpu")) return 0;
  if (strncmp(dev, "cuda", 4) || (dev[4] && dev[4] != ':'))
    return d9_diag_fail(diag, EINVAL, "-o device=%s: want auto, cpu or cuda[:N]", dev);
  int n = d9_cuda_device_count();
  if (n == -ENODEV)
    return d9_diag_fail(diag, ENODEV, "-o device=%s: this d9dfs was built without CUDA", dev);
  int want = dev[4] ? atoi(dev + 5) : 0;
  if (want < 0 || want >= n)
    return d9_diag_fail(diag, ENODEV, "-o device=%s: %d CUDA device%s found", dev, n,
                        n == 1 ? "" : "s");
  return d9_diag_fail(diag, ENOTSUP, "-o device=%s: reads are not evaluated on the GPU yet "
                      "(use device=cpu or auto)", dev);
}

/* --reverse on a tree whose config.json d9dfs patched: serve (and take
 * params from) the original config. */
static int restore_config(d9_catalog *c, d9_diag *diag) {
  cJSON *orig;
  int rc = d9_spec_undo_config(c->config, &orig);
  if (rc <= 0) return rc ? d9_diag_fail(diag, ENOMEM, "config.json: out of memory") : 0;
  char *text = cJSON_Print(orig);
  char *nl = text ? realloc(text, strlen(text) + 2) : NULL;
  if (!nl) {
    free(text);
    cJSON_Delete(orig);
    return d9_diag_fail(diag, ENOMEM, "config.json: out of memory");
  }
  strcat(nl, "\n");
  cJSON_Delete(c->config);
  free(c->config_text);
  c->config = orig;
  c->config_text = nl;
  c->config_len = strlen(nl);
  return 0;
}

int d9_mount_open(const d9_mount_opts *o, d9_mount **out, d9_diag *diag) {
  int rc;
  char *text = NULL;
  size_t len;
  d9_mount *m = calloc(1, sizeof *m);
  if (!m) return d9_diag_fail(diag, ENOMEM, "out of memory");
  pthread_mutex_init(&m->pool_lock, NULL);
  pthread_cond_init(&m->pool_free, NULL);
  pthread_mutex_init(&m->help_lock, NULL);
  pthread_cond_init(&m->help_work, NULL);
  pthread_cond_init(&m->help_done, NULL);
  {
    long t = o->threads ? o->threads : sysconf(_SC_NPROCESSORS_ONLN);
    if (!o->threads && t > THREADS_AUTO) t = THREADS_AUTO;
    m->nhelpers = t <= 1 ? 0 : t - 1 > HELPERS_MAX ? HELPERS_MAX : (int)t - 1;
  }
  {
    uint64_t mb = o->mem_budget_mb ? o->mem_budget_mb : MEM_DEFAULT_MB;
    uint64_t n = (mb << 20) / D9_SCRATCH_BYTES;
    m->scratch_max = n < 1 ? 1 : n > POOL_MAX ? POOL_MAX : (int)n;
  }
  m->verbose = o->verbose;
  m->faults.pread_every = o->inject_pread_every;
  m->faults.alloc_every = o->inject_alloc_every;
  if ((rc = pick_device(o->device, diag))) goto fail;
  if (!(m->arena = d9_arena_create())) {
    rc = d9_diag_fail(diag, ENOMEM, "out of memory");
    goto fail;
  }
  if ((rc = d9_read_small_file(AT_FDCWD, o->spec_path, SPEC_MAX, &text, &len, diag))) goto fail;
  if ((rc = d9_spec_parse(text, len, o->spec_path, &m->spec, diag))) goto fail;
  m->spec->lenient = o->lenient;
  if ((rc = d9_catalog_open_limited(o->src_dir, (o->meta_mib ? o->meta_mib : D9_ST_META_MIB_DEFAULT) << 20,
                                    &m->cat, diag)))
    goto fail;
  if (o->reverse && m->cat->config && (rc = restore_config(m->cat, diag))) goto fail;
  if (o->reverse) {
    m->fwd_spec = m->spec; /* the reversed rules borrow its strings */
    if ((rc = d9_spec_resolve_params(m->fwd_spec, m->cat->config, diag)) ||
        (rc = d9_spec_reverse(m->fwd_spec, m->cat->config, &m->spec, diag))) {
      m->spec = NULL;
      goto fail;
    }
  }
  if (o->max_shard_size) m->spec->max_shard_size = o->max_shard_size;
  if ((rc = d9_spec_resolve_params(m->spec, m->cat->config, diag))) goto fail;
  if ((rc = d9_graph_build(m->spec, m->cat, &m->graph, diag))) goto fail;
  if ((rc = d9_plan_build(m->spec, m->cat, m->graph->targets, m->graph->ntargets, &m->plan,
                          diag)))
    goto fail;
  if ((rc = build_ranks(m, o, diag))) goto fail;
  if ((rc = build_tree(m))) {
    d9_diag_fail(diag, ENOMEM, "out of memory");
    goto fail;
  }
  free(text);
  *out = m;
  return 0;
fail:
  free(text);
  d9_mount_close(m);
  return rc;
}

void d9_mount_close(d9_mount *m) {
  if (!m) return;
  pthread_mutex_lock(&m->help_lock);
  m->stop = 1;
  pthread_cond_broadcast(&m->help_work);
  int joinable = m->started_pid == getpid() ? m->started : 0;
  pthread_mutex_unlock(&m->help_lock);
  for (int i = 0; i < joinable; i++) pthread_join(m->helper[i], NULL);
  free(m->frontend);
  pthread_mutex_destroy(&m->help_lock);
  pthread_cond_destroy(&m->help_work);
  pthread_cond_destroy(&m->help_done);
  d9_plan_destroy(m->plan);
  for (int r = 0; r < m->nranks; r++) d9_plan_destroy(m->rank_plans[r]);
  free(m->rank_plans);
  d9_arena_destroy(m->rank_arena);
  d9_graph_destroy(m->graph);
  d9_catalog_close(m->cat);
  d9_spec_destroy(m->spec);
  d9_spec_destroy(m->fwd_spec);
  d9_arena_destroy(m->arena);
  for (int i = 0; i < m->npool; i++) free(m->pool[i]);
  pthread_mutex_destroy(&m->pool_lock);
  pthread_cond_destroy(&m->pool_free);
  free(m);
}

int d9_mount_nnodes(const d9_mount *m) { return m->nnodes; }

const d9_vnode *d9_mount_node(const d9_mount *m, int idx) {
  return idx >= 0 && idx < m->nnodes ? &m->nodes[idx] : NULL;
}

int d9_mount_lookup(const d9_mount *m, int parent, const char *name) {
  const d9_vnode *p = d9_mount_node(m, parent);
  if (!p) return -ENOENT;
  if (p->kind != D9_NODE_DIR) return -ENOTDIR;
  if (!strcmp(name, ".")) return parent;
  if (!strcmp(name, "..")) return p->parent;
  for (int i = 0; i < p->nchildren; i++)
    if (!strcmp(m->nodes[p->children[i]].name, name)) return p->children[i];
  return -ENOENT;
}

int d9_mount_resolve(const d9_mount *m, const char *path) {
  int cur = 0;
  char part[1024];
  while (*path) {
    while (*path == '/') path++;
    if (!*path) break;
    size_t l = strcspn(path, "/");
    if (l >= sizeof part) return -ENAMETOOLONG;
    memcpy(part, path, l);
    part[l] = 0;
    cur = d9_mount_lookup(m, cur, part);
    if (cur < 0) return cur;
    path += l;
  }
  return cur;
}

/* Scratch memory is the mount's memory budget (-o mem=MiB): at most
 * scratch_max reads evaluate at once, each with one D9_SCRATCH_BYTES buffer
 * (kept for reuse); a read past the budget waits for a buffer to come back.
 * Evaluation needs no more than its scratch plus bounded chunks.
 * pool_take: a buffer from the budget into *out (NULL when malloc failed),
 * waiting while the budget is spent if wait, else giving up; 1 if taken. */
static int pool_take(d9_mount *m, int wait, unsigned char **out) {
  unsigned char *p = NULL;
  int ok = 0;
  pthread_mutex_lock(&m->pool_lock);
  while (wait && m->scratch_out >= m->scratch_max)
    pthread_cond_wait(&m->pool_free, &m->pool_lock);
  if (m->scratch_out < m->scratch_max) {
    ok = 1;
    m->scratch_out++;
    if (m->npool) p = m->pool[--m->npool];
  }
  pthread_mutex_unlock(&m->pool_lock);
  if (ok) *out = p ? p : malloc(D9_SCRATCH_BYTES); /* NULL: the read mallocs per chunk or ENOMEMs */
  return ok;
}

/* A scratch buffer, waiting while the budget is spent. */
static unsigned char *pool_get(d9_mount *m) {
  unsigned char *p = NULL;
  pool_take(m, 1, &p);
  return p;
}

static void pool_put(d9_mount *m, unsigned char *p) {
  pthread_mutex_lock(&m->pool_lock);
  m->scratch_out--;
  if (p && m->npool < m->scratch_max) m->pool[m->npool++] = p, p = NULL;
  pthread_cond_signal(&m->pool_free);
  pthread_mutex_unlock(&m->pool_lock);
  free(p);
}


static void *helper_main(void *arg) {
  d9_mount *m = arg;
  pthread_mutex_lock(&m->help_lock);
  for (;;) {
    if (!m->nqueue && !m->stop) { /* spin a while before sleeping: see SPIN_NS */
      pthread_mutex_unlock(&m->help_lock);
      struct timespec t0, t;
      clock_gettime(CLOCK_MONOTONIC, &t0);
      do {
        for (int i = 0; i < 64; i++) __builtin_ia32_pause();
        clock_gettime(CLOCK_MONOTONIC, &t);
      } while (!__atomic_load_n(&m->nqueue, __ATOMIC_RELAXED) &&
               (t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < SPIN_NS);
      pthread_mutex_lock(&m->help_lock);
    }
    while (!m->nqueue && !m->stop) pthread_cond_wait(&m->help_work, &m->help_lock);
    if (m->stop) break;
    /* nqueue changes under help_lock, atomically for the spin above */
    int q = __atomic_sub_fetch(&m->nqueue, 1, __ATOMIC_RELAXED);
    read_part *p = m->queue[q];
    pthread_mutex_unlock(&m->help_lock);
    p->r = d9_eval_read(&p->rc, p->vf, p->off, p->n, p->buf);
    pthread_mutex_lock(&m->help_lock);
    p->done = 1;
    m->idle++;
    pthread_cond_broadcast(&m->help_done);
  }
  pthread_mutex_unlock(&m->help_lock);
  return NULL;
}

/* Split reads. A read of at least 2 * SPLIT_MIN bytes whose range computes
 * (a cast, transpose, dequant, ... : d9_eval_range_computes) is cut into
 * page-aligned parts evaluated at once: the caller takes the first (rc),
 * idle helper threads the others. Helpers start on the first split, in
 * the process that reads (a daemon forks after opening the mount). Only
 * idle helpers and free scratch are taken, never waited for, so under
 * parallel readers each read runs whole on its own thread. Returns the
 * number of parts handed to helpers (parts[0..k)), 0 for none. */
static int post_parts(d9_mount *m, const d9_vfile *vf, uint64_t off, size_t n,
                      unsigned char *buf, const d9_read_ctx *rc, read_part *parts, size_t *first) {
  if (!m->nhelpers || n < 2 * SPLIT_MIN || !d9_eval_range_computes(vf, off, n)) return 0;
  pthread_mutex_lock(&m->help_lock);
  if (m->started && m->started_pid != getpid()) m->started = m->idle = 0; /* forked */
  if (!m->started && !m->stop) {
    for (int i = 0; i < m->nhelpers; i++) {
      if (pthread_create(&m->helper[i], NULL, helper_main, m)) break;
      m->started++;
    }
    m->idle = m->started;
    m->started_pid = getpid();
    if (!m->started) m->nhelpers = 0; /* cannot start threads: never split */
  }
  size_t most = n / SPLIT_MIN - 1; /* helpers' parts, each >= SPLIT_MIN */
  int k = m->idle < (int)most ? m->idle : (int)most;
  for (int i = 0; i < k; i++)
    if (!pool_take(m, 0, &parts[i].rc.scratch)) k = i; /* never wait: a split is optional */
  if (k > 0) {
    size_t each = (n / (size_t)(k + 1)) & ~(size_t)4095, at = n - each * (size_t)k;
    *first = at;
    for (int i = 0; i < k; i++, at += each) {
      read_part *p = &parts[i];
      unsigned char *scratch = p->rc.scratch;
      *p = (read_part){.vf = vf, .off = off + at, .n = each, .buf = buf + at};
      p->rc = (d9_read_ctx){.cat = rc->cat, .be = rc->be, .scratch = scratch,
                            .faults = rc->faults};
      m->queue[__atomic_fetch_add(&m->nqueue, 1, __ATOMIC_RELAXED)] = p;
    }
    m->idle -= k;
    pthread_cond_broadcast(&m->help_work);
  }
  pthread_mutex_unlock(&m->help_lock);
  return k;
}

/* Wait for parts[0..k), return their scratch, fold their counts and first
 * error into rc; returns that error or 0. */
static ssize_t join_parts(d9_mount *m, read_part *parts, int k, d9_read_ctx *rc) {
  ssize_t err = 0;
  pthread_mutex_lock(&m->help_lock);
  for (int i = 0; i < k; i++)
    while (!parts[i].done) pthread_cond_wait(&m->help_done, &m->help_lock);
  pthread_mutex_unlock(&m->help_lock);
  for (int i = 0; i < k; i++) {
    read_part *p = &parts[i];
    pool_put(m, p->rc.scratch);
    rc->src_bytes += p->rc.src_bytes;
    rc->tensors += p->rc.tensors;
    if (p->r >= 0 && (size_t)p->r == p->n) continue;
    if (!err) {
      err = p->r < 0 ? p->r : -EIO;
      if (!rc->failed_target) rc->failed_target = p->rc.failed_target;
      if (!rc->failed_src) rc->failed_src = p->rc.failed_src;
    }
  }
  return err;
}

/* d9_mount_read, and d9_mount_read_pieces when pieces is set. */
static ssize_t mount_read(d9_mount *m, int idx, uint64_t off, size_t n, void *buf,
                          d9_piece *pieces, int *npieces) {
  const d9_vnode *v = d9_mount_node(m, idx);
  if (npieces) *npieces = 0;
  if (!v) return -EINVAL;
  if (v->kind == D9_NODE_DIR) return -EISDIR;
  const d9_vfile *vf = m->vfile_of[idx];
  if (v->kind == D9_NODE_DYNAMIC || !vf) return -EINVAL;
  d9_ref refs[D9_READ_MAXREFS];
  d9_read_ctx rc = {.cat = m->cat, .be = d9_backend_cpu(), .scratch = pool_get(m)};
  if (m->faults.pread_every || m->faults.alloc_every) rc.faults = &m->faults;
  if (off < vf->size && n > vf->size - off) n = (size_t)(vf->size - off); /* parts stop at EOF */
  read_part parts[HELPERS_MAX];
  size_t first = n;
  int k = post_parts(m, vf, off, n, buf, &rc, parts, &first);
  if (pieces && !k) rc.refs = refs, rc.maxrefs = D9_READ_MAXREFS; /* split: all copied */
  ssize_t r = d9_eval_read(&rc, vf, off, first, buf);
  if (k) {
    atomic_fetch_add_explicit(&m->split_reads, 1, memory_order_relaxed);
    ssize_t e = join_parts(m, parts, k, &rc);
    if (r >= 0) r = e ? e : (size_t)r != first ? -EIO : (ssize_t)n;
  }
  if (pieces && r >= 0) *npieces = d9_eval_pieces(&rc, buf, (size_t)r, pieces);
  pool_put(m, rc.scratch);
  atomic_fetch_add_explicit(&m->reads, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&m->bytes_read_source, rc.src_bytes, memory_order_relaxed);
  atomic_fetch_add_explicit(&m->tensors_evaluated, rc.tensors, memory_order_relaxed);
  if (r >= 0) {
    atomic_fetch_add_explicit(&m->bytes_served, (uint64_t)r, memory_order_relaxed);
  } else {
    atomic_fetch_add_explicit(&m->errors, 1, memory_order_relaxed);
    fprintf(stderr, "d9dfs: read %s [%llu, +%zu): tensor '%s' (source shard %s): %s\n",
            vf->name, (unsigned long long)off, n,
            rc.failed_target ? rc.failed_target->name : "-",
            rc.failed_src ? m->cat->shards[rc.failed_src->shard].name : "-", strerror((int)-r));
  }
  if (m->verbose)
    fprintf(stderr, "d9dfs: read %s [%llu, +%zu) -> %zd, %llu source bytes\n", vf->name,
            (unsigned long long)off, n, r, (unsigned long long)rc.src_bytes);
  return r;
}

ssize_t d9_mount_read(d9_mount *m, int idx, uint64_t off, size_t n, void *buf) {
  return mount_read(m, idx, off, n, buf, NULL, NULL);
}

ssize_t d9_mount_read_pieces(d9_mount *m, int idx, uint64_t off, size_t n, void *buf,
                             d9_piece pieces[D9_READ_MAXPIECES], int *npieces) {
  return mount_read(m, idx, off, n, buf, pieces, npieces);
}

int d9_mount_check_pieces(d9_mount *m, int idx, const d9_piece *pieces, int npieces) {
  for (int i = 0; i < npieces; i++) {
    if (pieces[i].mem || pieces[i].shard < 0 || pieces[i].shard >= m->cat->nshards) continue;
    int seen = 0; /* each shard once */
    for (int k = 0; k < i && !seen; k++) seen = !pieces[k].mem && pieces[k].shard == pieces[i].shard;
    if (seen) continue;
    int e = d9_catalog_check(m->cat, pieces[i].shard);
    if (!e) continue;
    const d9_vfile *vf = idx >= 0 && idx < m->nnodes ? m->vfile_of[idx] : NULL;
    atomic_fetch_add_explicit(&m->errors, 1, memory_order_relaxed);
    fprintf(stderr, "d9dfs: read %s: source shard %s changed under the mount: %s\n",
            vf ? vf->name : "-", m->cat->shards[pieces[i].shard].name, strerror(-e));
    return e;
  }
  return 0;
}

int d9_mount_nlossy(const d9_mount *m) { return m->spec->nlossy; }

int d9_mount_nignored(const d9_mount *m) { return m->graph->nignored; }

int d9_mount_nshadowed(const d9_mount *m) { return m->graph->nshadowed; }

const char *d9_mount_lossy(const d9_mount *m, int i) {
  return i >= 0 && i < m->spec->nlossy ? m->spec->lossy[i] : NULL;
}

void d9_mount_get_stats(const d9_mount *m, d9_stats *o) {
  o->bytes_served = atomic_load(&m->bytes_served);
  o->bytes_read_source = atomic_load(&m->bytes_read_source);
  o->reads = atomic_load(&m->reads);
  o->tensors_evaluated = atomic_load(&m->tensors_evaluated);
  o->errors = atomic_load(&m->errors);
  o->split_reads = atomic_load(&m->split_reads);
}

/* .d9dfs/report.json: the validation findings (lenient mounts), a JSON
 * array of strings. */
static int render_report(const d9_mount *m, char **out, size_t *out_len) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; a && i < m->graph->nreport; i++)
    cJSON_AddItemToArray(a, cJSON_CreateString(m->graph->report[i]));
  char *t = a ? cJSON_Print(a) : NULL;
  cJSON_Delete(a);
  if (!t) return -ENOMEM;
  size_t n = strlen(t);
  char *buf = realloc(t, n + 2);
  if (!buf) {
    free(t);
    return -ENOMEM;
  }
  buf[n] = '\n';
  buf[n + 1] = 0;
  *out = buf;
  *out_len = n + 1;
  return 0;
}

int d9_mount_set_frontend(d9_mount *m, const char *members) {
  char *c = strdup(members);
  if (!c) return -ENOMEM;
  free(__atomic_exchange_n(&m->frontend, c, __ATOMIC_ACQ_REL));
  return 0;
}

int d9_mount_render(d9_mount *m, int idx, char **out, size_t *out_len) {
  if (idx == m->report_node) return render_report(m, out, out_len);
  if (idx != m->stats_node) return -EINVAL;
  d9_stats s;
  d9_mount_get_stats(m, &s);
  const char *fe = __atomic_load_n(&m->frontend, __ATOMIC_ACQUIRE);
  if (!fe) fe = "";
  size_t cap = 640 + strlen(fe);
  char *buf = malloc(cap);
  if (!buf) return -ENOMEM;
  int n = snprintf(buf, cap,
                   "{\n  \"bytes_served\": %llu,\n  \"bytes_read_source\": %llu,\n"
                   "  \"reads\": %llu,\n  \"tensors_evaluated\": %llu,\n  \"errors\": %llu,\n"
                   "  \"split_reads\": %llu,\n  \"threads\": %d,\n  \"mem_mib\": %llu,\n"
                   "  \"frontend\": {%s}\n}\n",
                   (unsigned long long)s.bytes_served, (unsigned long long)s.bytes_read_source,
                   (unsigned long long)s.reads, (unsigned long long)s.tensors_evaluated,
                   (unsigned long long)s.errors, (unsigned long long)s.split_reads,
                   m->nhelpers + 1,
                   (unsigned long long)m->scratch_max * D9_SCRATCH_BYTES >> 20, fe);
  *out = buf;
  *out_len = (size_t)n;
  return 0;
}

int d9_mount_print_plan(const d9_mount *m, int fd) {
  FILE *f = fdopen(dup(fd), "w");
  if (!f) return -errno;
  const d9_plan *p = m->plan;
  fprintf(f, "source: %s (%d tensors in %d shard%s)\nspec: %s (%d rules)\n", m->cat->dir,
          m->cat->ntensors, m->cat->nshards, m->cat->nshards == 1 ? "" : "s", m->spec->path,
          m->spec->nrules);
  for (int i = 0; i < m->spec->nparams; i++)
    fprintf(f, "param %s = %lld\n", m->spec->params[i].name,
            (long long)m->spec->params[i].value);
  for (int i = 0; i < p->nfiles; i++) {
    const d9_vfile *vf = &p->files[i];
    fprintf(f, "%s  %llu bytes%s\n", vf->name, (unsigned long long)vf->size,
            vf->kind == D9_VF_COPY ? "  (copied)" : vf->kind == D9_VF_BLOB ? "  (generated)" : "");
    for (int e = 0; e < vf->nextents; e++) {
      const d9_target *t = vf->extents[e].target;
      char sh[160];
      fprintf(f, "  %-64s %-8s %-20s <- %s\n", t->name, d9_dtype_name(t->node->dtype),
              d9_shape_str(t->node->shape, t->node->ndim, sh, sizeof sh),
              t->rule ? t->rule->where : "pass-through");
    }
  }
  for (int i = 0; i < m->graph->nreport; i++) fprintf(f, "finding: %s\n", m->graph->report[i]);
  for (int i = 0; i < m->spec->nlossy; i++) fprintf(f, "lossy: %s\n", m->spec->lossy[i]);
  fprintf(f, "validation: %s (%d targets in %d groups, %d finding%s)\n",
          m->graph->nreport ? "mounted leniently" : "ok", m->graph->ntargets, m->graph->ngroups,
          m->graph->nreport, m->graph->nreport == 1 ? "" : "s");
  return fclose(f) ? -EIO : 0;
}
