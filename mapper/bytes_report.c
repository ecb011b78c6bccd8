/* bytes_report.c - `d9dfs plan --bytes`: what a full read of each tree
 * (the full view, or every ranks/NAME view) pulls from the source, computed
 * from the graph without reading tensor data.
 *
 * A walk maps each target's elements onto its source tensors the way the
 * evaluator reads them: reshape, cast and affine pass a range through,
 * concat and slice split it per row, pad clips it. Layout-only trees
 * (renames, QKV interleave, gated fusion, TP/EP/PP slices) therefore count
 * exactly the bytes a read pulls, which stats.json's bytes_read_source
 * counts (tests/mount/scale.sh checks it); permute, FP8 block dequant and
 * quant are counted as their inputs' share in proportion to the range
 * (exact for whole tensors). Copied files (config.json, ...) are not
 * counted, as stats.json does not count them. */
#include "mount_impl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/dtype.h"

typedef struct {
  const d9_catalog *cat;
  uint64_t *b; /* per source tensor: bytes pulled */
} walk_acc;

/* The SOURCE node under a chain of element-for-element nodes, else NULL. */
static const d9_node *direct_source(const d9_node *x) {
  while (x->op == D9_OP_RESHAPE || x->op == D9_OP_CAST || x->op == D9_OP_AFFINE) x = x->in[0];
  return x->op == D9_OP_SOURCE ? x : NULL;
}

static void walk(walk_acc *a, const d9_node *x, int64_t start, int64_t count);

/* CONCAT: [start, start+count) split into whole rows (one range per input)
 * and partial rows (one range per input overlapped). */
static void walk_concat(walk_acc *a, const d9_node *x, int64_t start, int64_t count) {
  int64_t rowlen = x->shape[x->dim] * x->inner, e = start, end = start + count;
  if (rowlen <= 0) return;
  while (e < end) {
    int64_t o = e / rowlen, w = e % rowlen;
    if (!w && end - e >= rowlen) {
      int64_t rows = (end - e) / rowlen;
      for (int i = 0; i < x->nin; i++) {
        int64_t len = x->in[i]->shape[x->dim] * x->inner;
        walk(a, x->in[i], o * len, rows * len);
      }
      e += rows * rowlen;
      continue;
    }
    int64_t take = end - e < rowlen - w ? end - e : rowlen - w;
    for (int i = 0; i < x->nin; i++) {
      int64_t lo = x->cum[i] * x->inner, hi = x->cum[i + 1] * x->inner;
      int64_t s = w > lo ? w : lo, t = w + take < hi ? w + take : hi;
      if (t > s) walk(a, x->in[i], o * (hi - lo) + (s - lo), t - s);
    }
    e += take;
  }
}

/* SLICE: per row, the matching range of the input's row. */
static void walk_slice(walk_acc *a, const d9_node *x, int64_t start, int64_t count) {
  const d9_node *in = x->in[0], *src = direct_source(in);
  if (src) { /* every element maps to one source element: the count is all */
    a->b[src->src - a->cat->tensors] += (uint64_t)count * d9_dtype_size(src->dtype);
    return;
  }
  int64_t out_row = x->shape[x->dim] * x->inner, in_row = in->shape[x->dim] * x->inner;
  int64_t skip = x->start * x->inner, e = start, end = start + count;
  if (out_row <= 0) return;
  while (e < end) {
    int64_t o = e / out_row, w = e % out_row;
    int64_t take = end - e < out_row - w ? end - e : out_row - w;
    walk(a, in, o * in_row + skip + w, take);
    e += take;
  }
}

static void walk(walk_acc *a, const d9_node *x, int64_t start, int64_t count) {
  if (count <= 0) return;
  switch (x->op) {
    case D9_OP_SOURCE:
      a->b[x->src - a->cat->tensors] += (uint64_t)count * d9_dtype_size(x->dtype);
      return;
    case D9_OP_RESHAPE: case D9_OP_CAST: case D9_OP_AFFINE:
      walk(a, x->in[0], start, count);
      return;
    case D9_OP_PAD:
      if (start < x->in[0]->numel)
        walk(a, x->in[0], start, count < x->in[0]->numel - start ? count : x->in[0]->numel - start);
      return;
    case D9_OP_CONCAT: walk_concat(a, x, start, count); return;
    case D9_OP_SLICE: walk_slice(a, x, start, count); return;
    default: /* permute, dequant, quant: the inputs' share of the range */
      for (int i = 0; i < x->nin; i++) {
        int64_t n = x->in[i]->numel;
        int64_t s = (int64_t)((double)start / (double)x->numel * (double)n);
        int64_t c = count == x->numel ? n : (int64_t)((double)count / (double)x->numel * (double)n);
        walk(a, x->in[i], s, c);
      }
      return;
  }
}

/* Per source tensor, the bytes a full read of plan p pulls, into b; with
 * own_only, of the files p does not share with an earlier rank view. */
static void plan_bytes(const d9_catalog *cat, const d9_plan *p, int own_only, uint64_t *b) {
  walk_acc a = {cat, b};
  for (int f = 0; f < p->nfiles; f++) {
    if (own_only && p->files[f].linked) continue;
    for (int e = 0; e < p->files[f].nextents; e++) {
      const d9_node *x = p->files[f].extents[e].target->node;
      walk(&a, x, 0, x->numel);
    }
  }
}

int d9_mount_rank_need(const d9_mount *m, uint64_t *need) {
  int nt = m->cat->ntensors;
  uint64_t *b = calloc((size_t)nt + 1, sizeof *b);
  if (!b) return -ENOMEM;
  memset(need, 0, (size_t)nt * sizeof *need);
  for (int r = 0; r < m->nranks; r++) {
    memset(b, 0, (size_t)nt * sizeof *b);
    plan_bytes(m->cat, m->rank_plans[r], 1, b);
    for (int i = 0; i < nt; i++) need[i] += b[i];
  }
  free(b);
  return 0;
}

static uint64_t sum(const uint64_t *b, int n) {
  uint64_t s = 0;
  for (int i = 0; i < n; i++) s += b[i];
  return s;
}

/* The tree's group key: its name without the leading "tpN" ("" for tpN). */
static const char *cell_of(const char *rank) {
  const char *d = strchr(rank, '-');
  return d ? d + 1 : "";
}

int d9_mount_print_bytes(const d9_mount *m, int fd) {
  const d9_catalog *c = m->cat;
  int nt = c->ntensors, nr = m->nranks ? m->nranks : 1;
  uint64_t *b = calloc((size_t)nr * (size_t)nt + 1, sizeof *b);
  uint64_t *all = calloc((size_t)nt + 1, sizeof *all), *cell = calloc((size_t)nt + 1, sizeof *cell);
  FILE *f = fdopen(dup(fd), "w");
  if (!b || !all || !cell || !f) {
    free(b), free(all), free(cell);
    if (f) fclose(f);
    return -ENOMEM;
  }
  uint64_t model = 0;
  for (int i = 0; i < nt; i++) model += c->tensors[i].nbytes;
  for (int r = 0; r < nr; r++) {
    plan_bytes(c, m->nranks ? m->rank_plans[r] : m->plan, 0, b + (size_t)r * nt);
    for (int i = 0; i < nt; i++) all[i] += b[(size_t)r * nt + i];
  }
  fprintf(f, "# what a full read of each tree pulls from the source (layout steps exact,\n"
             "# permute/dequant/quant in proportion); replicated: this tree's share of the\n"
             "# bytes that more than one tree pulls, beyond the first copy\n");
  fprintf(f, "# source: %d tensors, %llu bytes in %d shards\n", nt, (unsigned long long)model,
          c->nshards);
  fprintf(f, "%-24s %18s %9s %18s\n", "tree", "source bytes", "x model", "replicated");
  uint64_t tot = 0, rep_tot = 0;
  for (int r = 0; r < nr; r++) {
    const uint64_t *br = b + (size_t)r * nt;
    double rep = 0;
    for (int i = 0; i < nt; i++)
      if (br[i] && all[i] > c->tensors[i].nbytes)
        rep += (double)br[i] * (1.0 - (double)c->tensors[i].nbytes / (double)all[i]);
    uint64_t s = sum(br, nt);
    tot += s, rep_tot += (uint64_t)rep;
    char name[80];
    snprintf(name, sizeof name, "%s%s", m->nranks ? "ranks/" : "(full view)",
             m->nranks ? m->rank_names[r] : "");
    fprintf(f, "%-24s %18llu %9.4f %18llu\n", name, (unsigned long long)s,
            model ? (double)s / (double)model : 0.0, (unsigned long long)rep);
  }
  if (m->nranks) {
    fprintf(f, "%-24s %18llu %9.4f %18llu\n", "all trees", (unsigned long long)tot,
            model ? (double)tot / (double)model : 0.0, (unsigned long long)rep_tot);
    /* one mount serving every tree: a file rank views share is read once,
     * which is what the source cache waits for (d9_mount_rank_need) */
    if (d9_mount_rank_need(m, cell)) {
      free(b), free(all), free(cell);
      fclose(f);
      return -ENOMEM;
    }
    uint64_t once = sum(cell, nt);
    fprintf(f, "one mount, every tree read (shared files once): %llu bytes (%.4fx)\n",
            (unsigned long long)once, model ? (double)once / (double)model : 0.0);
    /* one node per ep/pp cell, holding its tp ranks: the bytes the node's
     * mount pulls when each source byte is read from storage once */
    uint64_t lo = UINT64_MAX, hi = 0, cells_tot = 0;
    int ncells = 0;
    for (int r = 0; r < m->nranks; r++) {
      const char *key = cell_of(m->rank_names[r]);
      int first = 1;
      for (int q = 0; q < r && first; q++) first = strcmp(cell_of(m->rank_names[q]), key) != 0;
      if (!first) continue;
      memset(cell, 0, (size_t)nt * sizeof *cell);
      for (int q = r; q < m->nranks; q++)
        if (!strcmp(cell_of(m->rank_names[q]), key))
          for (int i = 0; i < nt; i++) cell[i] += b[(size_t)q * nt + i];
      uint64_t s = 0;
      for (int i = 0; i < nt; i++) s += cell[i] < c->tensors[i].nbytes ? cell[i] : c->tensors[i].nbytes;
      lo = s < lo ? s : lo, hi = s > hi ? s : hi, cells_tot += s, ncells++;
    }
    fprintf(f, "per node (the tp ranks of one ep/pp cell, %d nodes): %llu - %llu bytes "
               "(%.4f - %.4fx the model), all nodes %llu (%.4fx)\n", ncells,
            (unsigned long long)lo, (unsigned long long)hi, model ? (double)lo / (double)model : 0,
            model ? (double)hi / (double)model : 0, (unsigned long long)cells_tot,
            model ? (double)cells_tot / (double)model : 0);
  }
  int bad = ferror(f);
  free(b), free(all), free(cell);
  return fclose(f) || bad ? -EIO : 0;
}
