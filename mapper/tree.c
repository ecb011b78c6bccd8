/* tree.c - the virtual tree of a mount: the full view's files at the root,
 * .d9dfs/{stats,report}.json, and ranks/NAME/ with each rank's files.
 *
 * Names: every directory's names are unique. A source file copied by the
 * spec's "copy" patterns can be named like an entry d9dfs adds (ranks);
 * such a collision is refused at mount time, naming both origins, rather
 * than listing the name twice with one entry unreachable.
 *
 * Permissions: a node's mode and owner come from the source files it is
 * made from, so that another user (allow_other, with the kernel checking
 * modes: default_permissions) reads through the mount exactly what the
 * source lets them read. A file takes the read bits common to all its
 * sources (never write or execute: the mount is read-only) and the owner
 * and group of its first source: a tensor file the shards its tensors are
 * read from, in file order; the index every shard behind the view's tensor
 * files (it names their tensors); config.json and copied files the source
 * file itself. Directories, .d9dfs/ and its files take the source
 * directory's read and search bits and owner. */
#include "mount_impl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { WALK_BUDGET = 1 << 12 }; /* graph nodes visited per tensor before assuming every shard */

/* Tree construction: nodes with child lists, from one arena. */
typedef struct tree_builder {
  d9_mount *m;
  int cap;
  int **kids;    /* temporary per-node child arrays */
  int *nkids, *capkids;
  const char **origin; /* per node: where its name comes from, for a collision */
  const d9_plan **plan_of; /* per node: the plan holding its file, or NULL */
  unsigned char *seen; /* per catalog shard: behind the file being walked */
  struct stat dir_st;  /* the source directory */
} tree_builder;

/* List node i in directory dir. i, or -ENOMEM. */
static int tb_list(tree_builder *tb, int dir, int i) {
  if (tb->nkids[dir] == tb->capkids[dir]) {
    int nc = tb->capkids[dir] ? tb->capkids[dir] * 2 : 8;
    int *k = realloc(tb->kids[dir], sizeof(int) * (size_t)nc);
    if (!k) return -ENOMEM;
    tb->kids[dir] = k, tb->capkids[dir] = nc;
  }
  tb->kids[dir][tb->nkids[dir]++] = i;
  return i;
}

static int tb_add(tree_builder *tb, int parent, const char *name, d9_node_kind kind,
                  uint64_t size, const d9_vfile *vfile, const char *origin) {
  d9_mount *m = tb->m;
  if (m->nnodes == tb->cap) return -ENOMEM; /* sized up front */
  int i = m->nnodes++;
  m->nodes[i] = (d9_vnode){name, kind, size, parent < 0 ? i : parent, 0, NULL, 0, 0, 0, 1};
  m->vfile_of[i] = vfile;
  tb->origin[i] = origin;
  tb->plan_of[i] = NULL;
  return parent >= 0 ? tb_list(tb, parent, i) : i;
}

static const char *file_origin(const d9_vfile *vf) {
  if (vf->kind == D9_VF_TENSORS) return "a tensor file of the spec's output";
  if (vf->kind == D9_VF_BLOB && !strcmp(vf->name, "model.safetensors.index.json"))
    return "the output's index";
  return "a source file matched by the spec's \"copy\" patterns";
}

/* The files of plan p in dir; node[f]: file f's node. A file linked to an
 * earlier rank view's (plan.h) is that file's node listed again (rank_node:
 * the earlier rank views' node arrays). */
static int add_plan_files(tree_builder *tb, int dir, const d9_plan *p, int *const *rank_node,
                          int *node) {
  for (int f = 0; f < p->nfiles; f++) {
    const d9_vfile *vf = &p->files[f];
    int i = vf->linked ? rank_node[vf->link_rank][vf->link_file]
                       : tb_add(tb, dir, vf->name, D9_NODE_FILE, vf->size, vf, file_origin(vf));
    if (i < 0) return -ENOMEM;
    if (vf->linked) {
      if (tb_list(tb, dir, i) < 0) return -ENOMEM;
      tb->m->nodes[i].nlink++;
    } else {
      tb->plan_of[i] = p;
    }
    if (node) node[f] = i;
  }
  return 0;
}

/* ---- permissions ---- */

/* Mark in tb->seen the shards behind x; *first is the first one met.
 * Spends *budget per node visited; none left: it may have stopped short. */
static void walk_sources(tree_builder *tb, const d9_node *x, int *first, int *budget) {
  if (*budget <= 0) return;
  --*budget;
  if (x->op == D9_OP_SOURCE) {
    int s = x->src->shard;
    if (!tb->seen[s]) tb->seen[s] = 1, *first = *first < 0 ? s : *first;
    return;
  }
  for (int i = 0; i < x->nin; i++) walk_sources(tb, x->in[i], first, budget);
}

/* Mark the shards behind the tensor files of p (all of them when index,
 * else file vf only). Returns the first shard met, or -1. */
static int mark_shards(tree_builder *tb, const d9_plan *p, const d9_vfile *vf) {
  int first = -1, all = 0;
  for (int f = 0; f < p->nfiles; f++) {
    const d9_vfile *g = &p->files[f];
    if (g->kind != D9_VF_TENSORS || (vf && g != vf)) continue;
    for (int e = 0; e < g->nextents; e++) {
      int budget = WALK_BUDGET;
      walk_sources(tb, g->extents[e].target->node, &first, &budget);
      all |= budget <= 0;
    }
  }
  if (all) /* a graph too shared to walk: take every shard, the most restrictive */
    memset(tb->seen, 1, (size_t)tb->m->cat->nshards), first = first < 0 ? 0 : first;
  return first;
}

static void set_attr(d9_vnode *v, const struct stat *st, mode_t bits) {
  v->mode = st->st_mode & bits;
  v->uid = st->st_uid;
  v->gid = st->st_gid;
}

/* A file node's mode and owner from the sources of vf (of plan p). */
static void file_attr(tree_builder *tb, d9_vnode *v, const d9_plan *p, const d9_vfile *vf) {
  const d9_catalog *c = tb->m->cat;
  if (vf->kind == D9_VF_COPY) {
    set_attr(v, &vf->st, 0444);
    return;
  }
  if (vf->kind == D9_VF_BLOB && strcmp(vf->name, "model.safetensors.index.json")) {
    set_attr(v, c->config_text ? &c->config_st : &tb->dir_st, 0444); /* config.json */
    return;
  }
  memset(tb->seen, 0, (size_t)c->nshards);
  int first = mark_shards(tb, p, vf->kind == D9_VF_TENSORS ? vf : NULL);
  set_attr(v, first < 0 ? &tb->dir_st : &c->shards[first].st, 0444); /* no tensor: the dir's */
  for (int s = 0; s < c->nshards; s++)
    if (tb->seen[s]) v->mode &= c->shards[s].st.st_mode;
}

static void set_modes(tree_builder *tb) {
  d9_mount *m = tb->m;
  for (int i = 0; i < m->nnodes; i++) {
    d9_vnode *v = &m->nodes[i];
    const d9_vfile *vf = m->vfile_of[i];
    if (vf)
      file_attr(tb, v, tb->plan_of[i], vf);
    else /* directories, .d9dfs files */
      set_attr(v, &tb->dir_st, v->kind == D9_NODE_DIR ? 0555 : 0444);
  }
}

/* ---- names ---- */

static int cmp_child(const void *a, const void *b, void *ctx) {
  const d9_vnode *nodes = ctx;
  return strcmp(nodes[*(const int *)a].name, nodes[*(const int *)b].name);
}

/* -EEXIST with diag naming dir and both origins if two children of dir
 * share a name; kids[0..n) are sorted in place. */
static int check_unique(tree_builder *tb, int dir, int *kids, int n, d9_diag *diag) {
  const d9_mount *m = tb->m;
  qsort_r(kids, (size_t)n, sizeof *kids, cmp_child, m->nodes);
  for (int i = 0; i + 1 < n; i++) {
    const d9_vnode *a = &m->nodes[kids[i]], *b = &m->nodes[kids[i + 1]];
    if (strcmp(a->name, b->name)) continue;
    int up = m->nodes[dir].parent; /* dirs are at most two deep: ranks/NAME */
    return d9_diag_fail(diag, EEXIST, "%s%s%s: two entries named '%s': %s and %s",
                        up ? m->nodes[up].name : "", up ? "/" : "",
                        dir ? m->nodes[dir].name : "the root directory", a->name,
                        tb->origin[kids[i]], tb->origin[kids[i + 1]]);
  }
  return 0;
}

/* ---- the tree ---- */

static int add_nodes(tree_builder *tb) {
  d9_mount *m = tb->m;
  if (tb_add(tb, -1, "", D9_NODE_DIR, 0, NULL, "the root") < 0 ||
      add_plan_files(tb, 0, m->plan, NULL, NULL))
    return -ENOMEM;
  int meta = tb_add(tb, 0, ".d9dfs", D9_NODE_DIR, 0, NULL, "d9dfs's own directory (.d9dfs)");
  if (meta < 0 ||
      (m->stats_node = tb_add(tb, meta, "stats.json", D9_NODE_DYNAMIC, 0, NULL, "stats")) < 0 ||
      (m->report_node = tb_add(tb, meta, "report.json", D9_NODE_DYNAMIC, 0, NULL, "report")) < 0)
    return -ENOMEM;
  if (!m->nranks) return 0;
  int ranks = tb_add(tb, 0, "ranks", D9_NODE_DIR, 0, NULL, "the rank views (-o tp, ep, pp)");
  if (ranks < 0) return -ENOMEM;
  size_t nf = 0; /* every rank view's file nodes, for the links */
  for (int r = 0; r < m->nranks; r++) nf += (unsigned)m->rank_plans[r]->nfiles;
  int **rank_node = calloc((unsigned)m->nranks, sizeof *rank_node);
  int *nodes = calloc(nf + 1, sizeof *nodes), rc = rank_node && nodes ? 0 : -ENOMEM;
  for (int r = 0, *at = nodes; r < m->nranks && !rc; r++) {
    rank_node[r] = at;
    at += m->rank_plans[r]->nfiles;
    int d = tb_add(tb, ranks, m->rank_names[r], D9_NODE_DIR, 0, NULL, "a rank view");
    rc = d < 0 ? d : add_plan_files(tb, d, m->rank_plans[r], rank_node, rank_node[r]);
  }
  free(rank_node);
  free(nodes);
  return rc ? -ENOMEM : 0;
}

int d9_mount_build_tree(d9_mount *m, d9_diag *diag) {
  int cap = m->plan->nfiles + 8 + 1, rc = -ENOMEM;
  for (int r = 0; r < m->nranks; r++) cap += m->rank_plans[r]->nfiles + 1;
  tree_builder tb = {m, cap, calloc((size_t)cap, sizeof(int *)), calloc((size_t)cap, sizeof(int)),
                     calloc((size_t)cap, sizeof(int)), calloc((size_t)cap, sizeof(char *)),
                     calloc((size_t)cap, sizeof(d9_plan *)),
                     calloc((size_t)m->cat->nshards + 1, 1), {0}};
  m->nodes = d9_arena_calloc(m->arena, (size_t)cap, sizeof *m->nodes);
  m->vfile_of = d9_arena_calloc(m->arena, (size_t)cap, sizeof *m->vfile_of);
  if (!tb.kids || !tb.nkids || !tb.capkids || !tb.origin || !tb.plan_of || !tb.seen || !m->nodes ||
      !m->vfile_of || add_nodes(&tb))
    goto oom;
  if (fstat(m->cat->dirfd, &tb.dir_st)) {
    rc = d9_diag_errno(diag, errno, m->cat->dir);
    goto out;
  }
  set_modes(&tb);
  for (int i = 0; i < m->nnodes; i++) {
    if (m->nodes[i].kind != D9_NODE_DIR) continue;
    int *k = d9_arena_calloc(m->arena, (size_t)tb.nkids[i] + 1, sizeof(int));
    if (!k) goto oom;
    if (tb.nkids[i]) memcpy(k, tb.kids[i], sizeof(int) * (size_t)tb.nkids[i]);
    if ((rc = check_unique(&tb, i, tb.kids[i], tb.nkids[i], diag))) goto out;
    m->nodes[i].children = k; /* in listing order: the sort above was on tb's copy */
    m->nodes[i].nchildren = tb.nkids[i];
  }
  rc = 0;
  goto out;
oom:
  rc = d9_diag_fail(diag, ENOMEM, "out of memory");
out:
  for (int i = 0; tb.kids && i < cap; i++) free(tb.kids[i]);
  free(tb.kids);
  free(tb.nkids);
  free(tb.capkids);
  free(tb.origin);
  free(tb.plan_of);
  free(tb.seen);
  return rc;
}
