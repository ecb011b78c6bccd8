/* plan_dot.c - the plan as a picture and as provenance: `d9dfs plan --dot`
 * (Graphviz: source tensors -> the rule's operations -> target tensors ->
 * files, lossy operations in red) and `d9dfs plan -v` (per target tensor,
 * its source tensors and its chain of operations as one expression). Both
 * walk the graph nodes behind the plan's extents; nothing is evaluated. */
#include "mount.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/dtype.h"
#include "plan.h"

/* The op names the output shows, in d9_op order. */
static const char *op_name(d9_op op) {
  static const char *names[] = {"source", "reshape", "concat", "slice", "cast", "permute",
                                "dequant", "quant_w", "quant_s", "affine", "pad",
                                "mxfp4_dequant", "mxfp4_blocks", "mxfp4_scales"};
  return (unsigned)op < sizeof names / sizeof names[0] ? names[op] : "?";
}

/* 1 if the node can change values: a cast to fewer bits, FP8
 * quantisation, an affine map rounded to its dtype. */
static int node_lossy(const d9_node *n) {
  if (n->op == D9_OP_QUANT_W || n->op == D9_OP_QUANT_S) return 1;
  if (n->op == D9_OP_MXFP4_QB || n->op == D9_OP_MXFP4_QS) return 1;
  if (n->op == D9_OP_AFFINE) return 1;
  if (n->op == D9_OP_CAST && n->nin == 1)
    return d9_dtype_size(n->dtype) < d9_dtype_size(n->in[0]->dtype) ||
           n->dtype == D9_F8_E4M3 || n->dtype == D9_F8_E5M2;
  return 0;
}

/* Pointers seen, each with a small id in order of first sight (open
 * addressing; grows), so that output does not depend on addresses. */
typedef struct ptr_set {
  const void **slot;
  int *id;        /* per slot */
  size_t cap, n;
} ptr_set;

static void set_free(ptr_set *s) {
  free(s->slot);
  free(s->id);
}

/* 1 if p was already in s, 0 if added now; *id gets its id. -ENOMEM. */
static int set_add(ptr_set *s, const void *p, int *id) {
  if (2 * (s->n + 1) > s->cap) {
    size_t cap = s->cap ? 2 * s->cap : 1024;
    const void **slot = calloc(cap, sizeof *slot);
    int *ids = calloc(cap, sizeof *ids);
    if (!slot || !ids) {
      free(slot);
      free(ids);
      return -ENOMEM;
    }
    for (size_t i = 0; i < s->cap; i++) {
      if (!s->slot[i]) continue;
      size_t h = ((uintptr_t)s->slot[i] >> 4) % cap;
      while (slot[h]) h = (h + 1) % cap;
      slot[h] = s->slot[i];
      ids[h] = s->id[i];
    }
    set_free(s);
    s->slot = slot, s->id = ids, s->cap = cap;
  }
  size_t h = ((uintptr_t)p >> 4) % s->cap;
  for (; s->slot[h]; h = (h + 1) % s->cap)
    if (s->slot[h] == p) {
      *id = s->id[h];
      return 1;
    }
  s->slot[h] = p;
  *id = s->id[h] = (int)s->n++;
  return 0;
}

/* A label string for dot: quotes and backslashes escaped. */
static void dot_str(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') fputc('\\', f);
    fputc(*s, f);
  }
}

/* Operation arguments worth showing, in a short form, into buf ("" if none). */
static const char *op_args(const d9_node *n, char *buf, size_t cap) {
  buf[0] = 0;
  switch (n->op) {
    case D9_OP_CONCAT: snprintf(buf, cap, "dim %d", n->dim); break;
    case D9_OP_SLICE: snprintf(buf, cap, "dim %d from %lld", n->dim, (long long)n->start); break;
    case D9_OP_CAST:
    case D9_OP_QUANT_W: snprintf(buf, cap, "to %s", d9_dtype_name(n->dtype)); break;
    case D9_OP_AFFINE: snprintf(buf, cap, "*%g +%g", (double)n->a, (double)n->b); break;
    default: break;
  }
  return buf;
}

/* Emit node n and its inputs (once each; a source tensor read by several
 * rules is one box); *id gets n's id. 0 or -ENOMEM. */
static int dot_node(FILE *f, ptr_set *seen, const d9_node *n, int *id) {
  int r = set_add(seen, n->op == D9_OP_SOURCE ? (const void *)n->src : (const void *)n, id);
  if (r) return r < 0 ? r : 0;
  char sh[160];
  d9_shape_str(n->shape, n->ndim, sh, sizeof sh);
  if (n->op == D9_OP_SOURCE) {
    fprintf(f, "  n%d [shape=box, style=filled, fillcolor=\"#dde8f5\", label=\"", *id);
    dot_str(f, n->src->name);
    fprintf(f, "\\n%s %s\"];\n", d9_dtype_name(n->dtype), sh);
    return 0;
  }
  char args[96];
  op_args(n, args, sizeof args);
  fprintf(f, "  n%d [shape=ellipse, label=\"%s%s%s", *id, op_name(n->op), *args ? " " : "",
          args);
  fprintf(f, "\\n%s %s\"%s];\n", d9_dtype_name(n->dtype), sh,
          node_lossy(n) ? ", color=red, fontcolor=red, xlabel=\"lossy\"" : "");
  for (int i = 0; i < n->nin; i++) {
    int in;
    if ((r = dot_node(f, seen, n->in[i], &in))) return r;
    fprintf(f, "  n%d -> n%d;\n", in, *id);
  }
  return 0;
}

int d9_plan_write_dot(const d9_plan *p, int fd) {
  FILE *f = fdopen(dup(fd), "w");
  if (!f) return -errno;
  ptr_set seen = {0};
  int rc = 0, ntargets = 0;
  fprintf(f, "digraph d9dfs_plan {\n  rankdir=LR;\n  node [fontname=\"monospace\", "
             "fontsize=10];\n");
  for (int i = 0; i < p->nfiles && !rc; i++) {
    const d9_vfile *vf = &p->files[i];
    fprintf(f, "  f%d [shape=folder, style=filled, fillcolor=\"#e8f0d8\", label=\"", i);
    dot_str(f, vf->name);
    fprintf(f, "\\n%llu bytes\"];\n", (unsigned long long)vf->size);
    for (int e = 0; e < vf->nextents && !rc; e++, ntargets++) {
      const d9_target *t = vf->extents[e].target;
      int top;
      fprintf(f, "  t%d [shape=note, label=\"", ntargets);
      dot_str(f, t->name);
      fprintf(f, "\\n");
      dot_str(f, t->rule ? t->rule->where : "pass-through");
      fprintf(f, "\"];\n");
      if ((rc = dot_node(f, &seen, t->node, &top))) break;
      fprintf(f, "  n%d -> t%d;\n  t%d -> f%d;\n", top, ntargets, ntargets, i);
    }
  }
  fprintf(f, "}\n");
  set_free(&seen);
  if (fclose(f) && !rc) rc = -EIO;
  return rc;
}

/* The node as an expression: op[args](inputs...), sources by name. */
static void expr(FILE *f, const d9_node *n, int depth) {
  if (n->op == D9_OP_SOURCE) {
    fprintf(f, "%s", n->src->name);
    return;
  }
  if (depth > 64) { /* deeper chains are cut: the dot output has them all */
    fprintf(f, "...");
    return;
  }
  char sh[160], args[96];
  op_args(n, args, sizeof args);
  fprintf(f, "%s%s[%s%s-> %s %s](", op_name(n->op), node_lossy(n) ? "!" : "", args,
          *args ? " " : "", d9_dtype_name(n->dtype),
          d9_shape_str(n->shape, n->ndim, sh, sizeof sh));
  for (int i = 0; i < n->nin; i++) {
    if (i) fprintf(f, ", ");
    expr(f, n->in[i], depth + 1);
  }
  fprintf(f, ")");
}

/* The distinct source tensors under n, comma-separated. */
static int sources(FILE *f, ptr_set *seen, const d9_node *n, int *count) {
  if (n->op == D9_OP_SOURCE) {
    int id, r = set_add(seen, n->src, &id);
    if (r) return r < 0 ? r : 0;
    fprintf(f, "%s%s", (*count)++ ? ", " : "", n->src->name);
    return 0;
  }
  for (int i = 0; i < n->nin; i++) {
    int r = sources(f, seen, n->in[i], count);
    if (r) return r;
  }
  return 0;
}

int d9_plan_print_provenance(const d9_plan *p, int fd) {
  FILE *f = fdopen(dup(fd), "w");
  if (!f) return -errno;
  int rc = 0;
  for (int i = 0; i < p->nfiles && !rc; i++) {
    const d9_vfile *vf = &p->files[i];
    fprintf(f, "%s\n", vf->name);
    for (int e = 0; e < vf->nextents && !rc; e++) {
      const d9_target *t = vf->extents[e].target;
      char sh[160];
      ptr_set seen = {0};
      int count = 0;
      fprintf(f, "  %s %s %s <- %s\n    sources: ", t->name, d9_dtype_name(t->node->dtype),
              d9_shape_str(t->node->shape, t->node->ndim, sh, sizeof sh),
              t->rule ? t->rule->where : "pass-through");
      rc = sources(f, &seen, t->node, &count);
      set_free(&seen);
      fprintf(f, "\n    ops: ");
      expr(f, t->node, 0);
      fprintf(f, "\n");
    }
  }
  fprintf(f, "(ops: op[args -> dtype shape](inputs); '!' marks a lossy operation)\n");
  if (fclose(f) && !rc) rc = -EIO;
  return rc;
}

const char *d9_plan_tensor_at(const d9_plan *p, const char *file, uint64_t off) {
  for (int i = 0; p && i < p->nfiles; i++) {
    const d9_vfile *vf = &p->files[i];
    if (strcmp(vf->name, file)) continue;
    int lo = 0, hi = vf->nextents; /* extents are sorted and contiguous */
    while (lo < hi) {
      int mid = lo + (hi - lo) / 2;
      if (vf->extents[mid].end <= off) lo = mid + 1;
      else hi = mid;
    }
    return lo < vf->nextents && vf->extents[lo].begin <= off ? vf->extents[lo].target->name
                                                             : NULL;
  }
  return NULL;
}

int d9_mount_write_dot(const d9_mount *m, int fd) {
  return d9_plan_write_dot(d9_mount_plan(m), fd);
}

int d9_mount_print_provenance(const d9_mount *m, int fd) {
  return d9_plan_print_provenance(d9_mount_plan(m), fd);
}
