/* mount.c - the mount API (mount.h): open a source with a spec into a
 * planned tree, look names up, serve reads with their statistics, close.
 * The tree is built in tree.c, reads are evaluated through the read pool
 * (readpool.c), and stats.json, report.json and the plan text are
 * rendered in render.c. */
#include "mount_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "applies.h"
#include "config_patch.h"
#include "json_strict.h"
#include "rank.h"
#include "src_cache.h"

enum { SPEC_MAX = 16u << 20 };

/* Two tensor files of the same part, name and header (which fixes every
 * extent): the same part of two rank views, so the same bytes. */
static int same_file(const d9_vfile *a, const d9_vfile *b) {
  return a->kind == D9_VF_TENSORS && b->kind == D9_VF_TENSORS && a->part == b->part &&
         !strcmp(a->name, b->name) && a->header_len == b->header_len &&
         !memcmp(a->bytes, b->bytes, (size_t)a->header_len);
}

/* The index of rank (t, e, p) in m->rank_plans (build_ranks' order). */
static int rank_index(const d9_rank_opts *ro, int t, int e, int p) {
  return (t * ro->ep + e) * ro->pp + p;
}

/* Split rank views (plan.h): the dense part of rank (t, e, p) is the one of
 * (t, 0, p), and under etp = 1 the experts' part is the one of (0, e, p);
 * mark such files linked to the first holder, so that the tree lists one
 * inode (one copy in the page cache, one read of the source). The header
 * check is a guard: a file that differs stays a file of its own. */
static void link_shared(d9_mount *m, const d9_rank_opts *ro) {
  for (int t = 0; t < ro->tp; t++)
    for (int e = 0; e < ro->ep; e++)
      for (int p = 0; p < ro->pp; p++) {
        int r = rank_index(ro, t, e, p);
        d9_plan *pl = m->rank_plans[r];
        for (int f = 0; f < pl->nshards; f++) {
          d9_vfile *vf = &pl->files[f];
          int cr = vf->part ? (ro->etp > 1 ? -1 : rank_index(ro, 0, e, p)) : rank_index(ro, t, 0, p);
          if (cr < 0 || cr == r) continue;
          const d9_plan *cp = m->rank_plans[cr];
          for (int g = 0; g < cp->nshards; g++)
            if (same_file(&cp->files[g], vf)) {
              vf->linked = 1, vf->link_rank = cr, vf->link_file = g;
              break;
            }
        }
      }
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
  d9_rank_prep *prep; /* what each target is, matched once for all ranks */
  int prc = d9_rank_prepare(m->spec, m->graph, m->rank_arena, &prep, diag);
  if (prc) return prc;
  /* split rank views (plan.h) where a part can be held whole by another
   * rank: ep > 1 shares the dense part, tp > 1 with etp = 1 the experts'
   * (a view without experts, or a single_file spec, stays one part) */
  int split = ro.ep > 1 || (ro.tp > 1 && ro.etp == 1);
  for (int t = 0; t < ro.tp; t++)
    for (int e = 0; e < ro.ep; e++)
      for (int p = 0; p < ro.pp; p++) {
        char name[64];
        d9_target *tg;
        int ntg, rc;
        d9_rank_name(&ro, t, e, p, name, sizeof name);
        if ((rc = d9_rank_targets_prepared(m->spec, m->cat, m->graph, prep, &ro, t, e, p,
                                           m->rank_arena, &tg, &ntg, diag)))
          return rc;
        int r = m->nranks;
        if (!(m->rank_names[r] = d9_arena_strdup(m->arena, name)))
          return d9_diag_fail(diag, ENOMEM, "out of memory");
        if ((rc = d9_plan_build_split(m->spec, m->cat, tg, ntg, split, &m->rank_plans[r],
                                      diag))) {
          d9_diag_prefix(diag, "ranks/%s", name);
          return rc;
        }
        m->nranks++;
      }
  if (split) link_shared(m, &ro);
  return 0;
}

int d9_mount_open(const d9_mount_opts *o, d9_mount **out, d9_diag *diag) {
  int rc;
  char *text = NULL;
  size_t len;
  d9_mount *m = calloc(1, sizeof *m);
  if (!m) return d9_diag_fail(diag, ENOMEM, "out of memory");
  if (d9_readpool_create(o->threads, o->mem_budget_mb, &m->pool)) {
    free(m);
    return d9_diag_fail(diag, ENOMEM, "out of memory");
  }
  if (d9_scale_cache_create((size_t)(d9_readpool_mem_mib(m->pool) << 20) / 4, &m->qcache)) {
    rc = d9_diag_fail(diag, ENOMEM, "out of memory");
    goto fail;
  }
  m->verbose = o->verbose;
  m->faults.pread_every = o->inject_pread_every;
  m->faults.alloc_every = o->inject_alloc_every;
  m->faults.delay_ms = o->inject_delay_ms;
  if ((rc = d9_eval_backend(o->device, &m->be, diag))) goto fail;
  if (!(m->arena = d9_arena_create())) {
    rc = d9_diag_fail(diag, ENOMEM, "out of memory");
    goto fail;
  }
  if ((rc = d9_read_small_file(AT_FDCWD, o->spec_path, SPEC_MAX, &text, &len, diag))) goto fail;
  if ((rc = d9_spec_parse(text, len, o->spec_path, &m->spec, diag))) goto fail;
  m->spec->lenient = o->lenient;
  uint64_t meta_mib = o->meta_mib ? o->meta_mib : D9_ST_META_MIB_DEFAULT;
  if ((rc = d9_catalog_open_ex(o->src_dir, o->confine_links ? D9_CATALOG_CONFINE : 0,
                               meta_mib << 20, &m->cat, diag)))
    goto fail;
  if (o->source_cache == D9_SOURCE_CACHE_DROP && d9_src_cache_create(m->cat, &m->cat->src_cache)) {
    rc = d9_diag_fail(diag, ENOMEM, "out of memory");
    goto fail;
  }
  if (o->reverse && m->cat->config && (rc = d9_config_restore(m->cat, diag))) goto fail;
  if (o->reverse) {
    m->fwd_spec = m->spec; /* the reversed rules borrow its strings */
    if ((rc = d9_spec_resolve_params(m->fwd_spec, m->cat->config, diag)) ||
        (rc = d9_spec_reverse(m->fwd_spec, m->cat->config, &m->spec, diag))) {
      m->spec = NULL;
      goto fail;
    }
  }
  if (o->max_shard_size) m->spec->max_shard_size = o->max_shard_size;
  const d9_spec *as_written = o->reverse ? m->fwd_spec : m->spec;
  d9_diag warn[2] = {{0}}; /* --force: the applies_to mismatch, the rule-instance one */
  if ((rc = d9_applies_check(as_written, o->reverse, m->cat, NULL, o->force, &warn[0], diag)))
    goto fail;
  if (warn[0].set) fprintf(stderr, "d9dfs: warning: %s\n", warn[0].msg);
  if ((rc = d9_spec_resolve_params(m->spec, m->cat->config, diag))) goto fail;
  if ((rc = d9_graph_build(m->spec, m->cat, &m->graph, diag))) goto fail;
  if ((rc = d9_applies_check(as_written, o->reverse, m->cat, m->graph, o->force, &warn[1], diag)))
    goto fail;
  if (warn[1].set) fprintf(stderr, "d9dfs: warning: %s\n", warn[1].msg);
  if ((rc = d9_plan_build(m->spec, m->cat, m->graph->targets, m->graph->ntargets, &m->plan,
                          diag)))
    goto fail;
  if ((rc = build_ranks(m, o, diag))) goto fail;
  if (m->cat->src_cache && m->nranks) { /* drop a tensor after the last rank that reads it */
    uint64_t *need = calloc((size_t)m->cat->ntensors + 1, sizeof *need);
    if (!need || d9_mount_rank_need(m, need)) {
      free(need);
      rc = d9_diag_fail(diag, ENOMEM, "out of memory");
      goto fail;
    }
    d9_src_cache_set_need(m->cat->src_cache, need);
    free(need);
  }
  if ((rc = d9_mount_build_tree(m, diag))) goto fail;
  if ((rc = d9_mount_size_dynamic(m))) {
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
  d9_readpool_destroy(m->pool); /* joins the helpers before what they read goes */
  d9_scale_cache_destroy(m->qcache);
  free(m->frontend);
  d9_plan_destroy(m->plan);
  for (int r = 0; r < m->nranks; r++) d9_plan_destroy(m->rank_plans[r]);
  free(m->rank_plans);
  d9_arena_destroy(m->rank_arena);
  d9_graph_destroy(m->graph);
  if (m->cat) d9_src_cache_destroy(m->cat->src_cache);
  d9_catalog_close(m->cat);
  d9_spec_destroy(m->spec);
  d9_spec_destroy(m->fwd_spec);
  d9_arena_destroy(m->arena);
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

/* What a failed read was doing, for the log: the tensor (the one that
 * failed, else the first one the range covers, else the header), the
 * source shard, and what to do. Never a placeholder. */
static void log_read_error(const d9_mount *m, const d9_vfile *vf, uint64_t off, size_t n,
                           const d9_read_ctx *rc, ssize_t r) {
  const char *tensor = rc->failed_target ? rc->failed_target->name : NULL;
  for (int i = 0; !tensor && i < vf->nextents; i++)
    if (vf->extents[i].end > off && vf->extents[i].begin < off + n)
      tensor = vf->extents[i].target->name;
  int shard = rc->failed_src ? rc->failed_src->shard : rc->ntouched ? rc->touched[0].shard : -1;
  char what[96];
  if (tensor) snprintf(what, sizeof what, "tensor '%.64s'", tensor);
  else snprintf(what, sizeof what, "%s", vf->kind == D9_VF_TENSORS ? "the header" : "the file");
  fprintf(stderr, "d9dfs: read %s [%llu, +%zu): %s (source shard %s): %s%s\n", vf->name,
          (unsigned long long)off, n, what,
          shard >= 0 ? m->cat->shards[shard].name : vf->kind == D9_VF_COPY ? vf->name : "none",
          strerror((int)-r),
          r == -ESTALE ? ": remount after a source changed" : "");
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
  d9_read_ctx rc = {.cat = m->cat, .be = m->be, .scratch = d9_readpool_get(m->pool),
                    .qcache = m->qcache};
  if (m->faults.pread_every || m->faults.alloc_every || m->faults.delay_ms) rc.faults = &m->faults;
  if (off < vf->size && n > vf->size - off) n = (size_t)(vf->size - off); /* parts stop at EOF */
  if (pieces) rc.refs = refs, rc.maxrefs = D9_READ_MAXREFS; /* a split read clears them */
  int split;
  ssize_t r = d9_readpool_read(m->pool, &rc, vf, off, n, buf, &split);
  if (split) atomic_fetch_add_explicit(&m->split_reads, 1, memory_order_relaxed);
  if (pieces && r >= 0) *npieces = d9_eval_pieces(&rc, buf, (size_t)r, pieces);
  d9_readpool_put(m->pool, rc.scratch);
  atomic_fetch_add_explicit(&m->reads, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&m->bytes_read_source, rc.src_bytes, memory_order_relaxed);
  atomic_fetch_add_explicit(&m->tensors_evaluated, rc.tensors, memory_order_relaxed);
  if (r >= 0) {
    atomic_fetch_add_explicit(&m->bytes_served, (uint64_t)r, memory_order_relaxed);
  } else {
    atomic_fetch_add_explicit(&m->errors, 1, memory_order_relaxed);
    log_read_error(m, vf, off, n, &rc, r);
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
    fprintf(stderr, "d9dfs: read %s: source shard %s changed under the mount: %s: "
            "remount after a source changed\n", vf ? vf->name : "(unknown file)",
            m->cat->shards[pieces[i].shard].name, strerror(-e));
    return e;
  }
  return 0;
}

void d9_mount_pieces_sent(d9_mount *m, const d9_piece *pieces, int npieces) {
  d9_src_cache *sc = m->cat->src_cache;
  for (int i = 0; sc && i < npieces; i++)
    if (!pieces[i].mem && pieces[i].shard >= 0 && pieces[i].shard < m->cat->nshards)
      d9_src_cache_note(sc, pieces[i].shard, pieces[i].off, pieces[i].len);
}

int d9_mount_pieces_to_buf(d9_mount *m, int idx, unsigned char *buf, const d9_piece *p,
                           int np) {
  int e = 0;
  size_t pos = 0;
  for (int i = 0; i < np && !e; pos += p[i++].len)
    if (!p[i].mem)
      e = p[i].shard < 0 || p[i].shard >= m->cat->nshards
              ? -EINVAL
              : d9_catalog_pread_unchecked(m->cat, p[i].shard, buf + pos, p[i].len, p[i].off);
  int c = d9_mount_check_pieces(m, idx, p, np); /* a shard that shrank is stale: say which */
  return c ? c : e;
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

/* Is real (a canonical path) dir itself or under it? */
static int path_under(const char *real, const char *dir) {
  size_t l = strlen(dir);
  if (l == 1 && dir[0] == '/') return real[0] == '/';
  return l && !strncmp(real, dir, l) && (real[l] == '/' || !real[l]);
}

/* -EINVAL naming what if source file name (relative to the source
 * directory) resolves to mnt or below it; 0 otherwise (also when it does
 * not resolve: the open checked it). */
static int check_source_path(const d9_catalog *c, const char *name, const char *what,
                             const char *mnt, d9_diag *diag) {
  char path[PATH_MAX], real[PATH_MAX];
  if ((size_t)snprintf(path, sizeof path, "%s/%s", c->root, name) >= sizeof path ||
      !realpath(path, real) || !path_under(real, mnt))
    return 0;
  return d9_diag_fail(diag, EINVAL, "mount point %s: %s %s resolves to %s, through the mount "
                      "point: the mount would hide its own source", mnt, what, path, real);
}

int d9_mount_check_mountpoint(const d9_mount *m, const char *mnt, d9_diag *diag) {
  const d9_catalog *c = m->cat;
  int rc;
  if (path_under(mnt, c->root))
    return d9_diag_fail(diag, EINVAL, "mount point %s is inside the source directory %s: the "
                        "mount would hide its own source", mnt, c->root);
  if (path_under(c->root, mnt))
    return d9_diag_fail(diag, EINVAL, "source directory %s is under the mount point %s: the "
                        "mount would hide its own source", c->root, mnt);
  if (c->blobs[0] && path_under(c->blobs, mnt))
    return d9_diag_fail(diag, EINVAL, "the source's blobs directory %s is under the mount point "
                        "%s: the mount would hide its own source", c->blobs, mnt);
  for (int s = 0; s < c->nshards; s++)
    if ((rc = check_source_path(c, c->shards[s].name, "source shard", mnt, diag))) return rc;
  if (c->config_text && (rc = check_source_path(c, "config.json", "source file", mnt, diag)))
    return rc;
  for (int f = 0; f < m->plan->nfiles; f++) /* the rank views copy the same files */
    if (m->plan->files[f].kind == D9_VF_COPY &&
        (rc = check_source_path(c, m->plan->files[f].name, "copied file", mnt, diag)))
      return rc;
  return 0;
}

const struct d9_plan *d9_mount_plan(const d9_mount *m) { return m->plan; }
