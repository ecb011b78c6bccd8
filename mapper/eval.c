/* eval.c - the evaluator's dispatch (d9_eval_fill), the layout fills
 * (source, reshape, concat, slice), the scratch stack, and reads of planned
 * files (d9_eval_read, d9_eval_pieces). Computing nodes go to eval_fill.c,
 * eval_fp8.c and eval_mxfp4.c; see eval_internal.h. */
#include "eval_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Scratch is a stack in rc->scratch; past its end, push falls back to malloc
 * and pop frees. */
static int inject(_Atomic uint64_t *counter, uint64_t every) {
  return every && (atomic_fetch_add_explicit(counter, 1, memory_order_relaxed) + 1) % every == 0;
}

void *d9_scratch_push(d9_read_ctx *rc, size_t n) {
  if (rc->faults && inject(&rc->faults->allocs, rc->faults->alloc_every)) return NULL;
  n = (n + 63) & ~(size_t)63;
  if (!rc->scratch || D9_SCRATCH_BYTES - rc->scratch_top < n) return malloc(n ? n : 1);
  void *p = rc->scratch + rc->scratch_top;
  rc->scratch_top += n;
  return p;
}

void d9_scratch_pop(d9_read_ctx *rc, void *p, size_t n) {
  if (p && rc->scratch && (unsigned char *)p >= rc->scratch &&
      (unsigned char *)p < rc->scratch + D9_SCRATCH_BYTES)
    rc->scratch_top -= (n + 63) & ~(size_t)63;
  else
    free(p);
}

static int fill_source(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count,
                       void *out) {
  size_t es = d9_dtype_size(x->dtype);
  const d9_src_tensor *t = x->src;
  size_t n = (size_t)count * es;
  if (rc->faults && inject(&rc->faults->preads, rc->faults->pread_every)) {
    rc->failed_src = t;
    return -EIO;
  }
  if (rc->faults && rc->faults->delay_ms) {
    struct timespec ts = {(time_t)(rc->faults->delay_ms / 1000),
                          (long)(rc->faults->delay_ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR) {}
  }
  uint64_t off = t->offset + (uint64_t)start * es;
  unsigned char *o = out;
  if (rc->refs && rc->defer && n >= D9_REF_MIN && o >= rc->out_lo &&
      n <= (size_t)(rc->out_hi - o)) {
    size_t at = (size_t)(o - rc->out_lo);
    d9_ref *last = rc->nrefs ? &rc->refs[rc->nrefs - 1] : NULL;
    if (last && last->shard == t->shard && last->off + last->len == off &&
        last->at + last->len == at) {
      last->len += n;
      rc->src_bytes += n;
      return 0;
    }
    if (rc->nrefs < rc->maxrefs) {
      rc->refs[rc->nrefs++] = (d9_ref){t->shard, off, n, at};
      rc->src_bytes += n;
      return 0;
    }
  }
  int r, later = 0;
  if (rc->check_later) {
    for (int i = 0; i < rc->ntouched && !later; i++) later = rc->touched[i].shard == t->shard;
    if (!later && rc->ntouched < (int)(sizeof rc->touched / sizeof *rc->touched)) {
      rc->touched[rc->ntouched].shard = t->shard;
      rc->touched[rc->ntouched++].t = t;
      later = 1;
    }
  }
  r = later ? d9_catalog_pread_unchecked(rc->cat, t->shard, out, n, off)
            : d9_catalog_pread(rc->cat, t->shard, out, n, off);
  if (r) {
    rc->failed_src = t;
    return r;
  }
  rc->src_bytes += n;
  return 0;
}

/* The deferred staleness checks of one read: 0, or the first shard's error. */
static int check_touched(d9_read_ctx *rc) {
  for (int i = 0; i < rc->ntouched; i++) {
    int r = d9_catalog_check(rc->cat, rc->touched[i].shard);
    if (r) {
      rc->failed_src = rc->touched[i].t;
      return r;
    }
  }
  return 0;
}

static int fill_concat(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count,
                       unsigned char *out) {
  size_t es = d9_dtype_size(x->dtype);
  int64_t inner = x->inner, block = x->cum[x->nin] * inner;
  int i = 0;
  while (count > 0) {
    int64_t o = start / block, w = start % block;
    /* the input holding w: inputs are few, and consecutive segments move forward */
    if (i >= x->nin || x->cum[i] * inner > w) i = 0;
    while (x->cum[i + 1] * inner <= w) i++;
    int64_t seg_off = w - x->cum[i] * inner;
    int64_t seg_len = (x->cum[i + 1] - x->cum[i]) * inner - seg_off;
    int64_t take = count < seg_len ? count : seg_len;
    const d9_node *in = x->in[i];
    int64_t in_start = o * (in->shape[x->dim] * inner) + seg_off;
    int r = d9_eval_fill(rc, in, in_start, take, out);
    if (r) return r;
    out += (size_t)take * es;
    start += take;
    count -= take;
  }
  return 0;
}

static int fill_slice(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count,
                      unsigned char *out) {
  size_t es = d9_dtype_size(x->dtype);
  const d9_node *in = x->in[0];
  int64_t seg = x->shape[x->dim] * x->inner, in_block = in->shape[x->dim] * x->inner;
  while (count > 0) {
    int64_t o = start / seg, w = start % seg;
    int64_t take = count < seg - w ? count : seg - w;
    int r = d9_eval_fill(rc, in, o * in_block + x->start * x->inner + w, take, out);
    if (r) return r;
    out += (size_t)take * es;
    start += take;
    count -= take;
  }
  return 0;
}

/* The ops that compute: their inputs are read now (rc->defer off), since
 * the bytes they read are not the bytes they reply. */
static int fill_compute(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count,
                        void *out) {
  switch (x->op) {
    case D9_OP_CAST: return d9_fill_cast(rc, x, start, count, out);
    case D9_OP_PERMUTE: return d9_fill_permute(rc, x, start, count, out);
    case D9_OP_DEQUANT: return d9_fill_dequant(rc, x, start, count, out);
    case D9_OP_QUANT_W:
    case D9_OP_QUANT_S: return d9_fill_quant(rc, x, start, count, out);
    case D9_OP_AFFINE: return d9_fill_affine(rc, x, start, count, out);
    case D9_OP_PAD: return d9_fill_pad(rc, x, start, count, out);
    case D9_OP_MXFP4_DQ: return d9_fill_mxfp4_dequant(rc, x, start, count, out);
    case D9_OP_MXFP4_QB:
    case D9_OP_MXFP4_QS: return d9_fill_mxfp4_quant(rc, x, start, count, out);
    default: return -EINVAL;
  }
}

int d9_eval_fill(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count, void *out) {
  if (count <= 0) return 0;
  if (start < 0 || start > x->numel - count) return -EINVAL;
  switch (x->op) {
    case D9_OP_SOURCE: return fill_source(rc, x, start, count, out);
    case D9_OP_RESHAPE: return d9_eval_fill(rc, x->in[0], start, count, out);
    case D9_OP_CONCAT: return fill_concat(rc, x, start, count, out);
    case D9_OP_SLICE: return fill_slice(rc, x, start, count, out);
    default: {
      int defer = rc->defer;
      rc->defer = 0;
      int r = fill_compute(rc, x, start, count, out);
      rc->defer = defer;
      return r;
    }
  }
}

/* Bytes [tb, te) of extent e's tensor into out. Whole elements go straight
 * into out; a partial element at either edge goes through a small buffer. */
static int read_extent(d9_read_ctx *rc, const d9_extent *e, uint64_t tb, uint64_t te,
                       unsigned char *out) {
  const d9_node *x = e->target->node;
  uint64_t es = d9_dtype_size(x->dtype);
  uint64_t a0 = (tb + es - 1) / es, a1 = te / es; /* whole elements */
  int r = 0;
  rc->tensors++;
  if (a0 < a1) r = d9_eval_fill(rc, x, (int64_t)a0, (int64_t)(a1 - a0), out + (a0 * es - tb));
  uint64_t edges[2] = {tb / es, te / es};
  int nedge = 0;
  if (tb % es) nedge = 1;
  if (te % es && (nedge == 0 || edges[1] != edges[0])) edges[nedge++] = te / es;
  for (int k = 0; k < nedge && !r; k++) {
    unsigned char one[8];
    uint64_t el = edges[k], eb = el * es;
    if ((r = d9_eval_fill(rc, x, (int64_t)el, 1, one))) break;
    uint64_t lo = eb > tb ? eb : tb, hi = eb + es < te ? eb + es : te;
    memcpy(out + (lo - tb), one + (lo - eb), hi - lo);
  }
  if (r && !rc->failed_target) rc->failed_target = e->target;
  return r;
}

static ssize_t read_copy(const d9_catalog *c, const d9_vfile *vf, uint64_t off, size_t n,
                         unsigned char *buf) {
  return d9_catalog_read_file(c, vf->name, vf->fd, &vf->st, buf, n, off);
}

/* The first extent of vf with end > off (nextents if none). */
static int first_extent(const d9_vfile *vf, uint64_t off) {
  int lo = 0, hi = vf->nextents;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (vf->extents[mid].end <= off) lo = mid + 1; else hi = mid;
  }
  return lo;
}

/* 1 if x or a node under it computes; *budget bounds the walk (a walk that
 * runs out answers 1: the caller only decides whether to split). */
static int node_computes(const d9_node *x, int *budget) {
  if (--*budget < 0) return 1;
  switch (x->op) {
    case D9_OP_SOURCE: return 0;
    case D9_OP_RESHAPE:
    case D9_OP_CONCAT:
    case D9_OP_SLICE:
      for (int i = 0; i < x->nin; i++)
        if (node_computes(x->in[i], budget)) return 1;
      return 0;
    default: return 1;
  }
}

int d9_eval_range_computes(const d9_vfile *vf, uint64_t off, size_t n) {
  if (vf->kind != D9_VF_TENSORS) return 0;
  int budget = 256;
  for (int i = first_extent(vf, off); i < vf->nextents && vf->extents[i].begin < off + n; i++)
    if (node_computes(vf->extents[i].target->node, &budget)) return 1;
  return 0;
}

ssize_t d9_eval_read(d9_read_ctx *rc, const d9_vfile *vf, uint64_t off, size_t n, void *buf) {
  unsigned char *out = buf;
  if (off >= vf->size) return 0;
  if (n > vf->size - off) n = (size_t)(vf->size - off);
  if (n > SSIZE_MAX) n = SSIZE_MAX;
  if (vf->kind == D9_VF_BLOB) {
    memcpy(out, vf->bytes + off, n);
    return (ssize_t)n;
  }
  if (vf->kind == D9_VF_COPY) return read_copy(rc->cat, vf, off, n, out);
  rc->defer = rc->refs != NULL;
  rc->out_lo = out;
  rc->out_hi = out + n;
  rc->check_later = 1;
  rc->ntouched = 0;
  uint64_t end = off + n;
  if (off < vf->header_len) {
    uint64_t h = end < vf->header_len ? end : vf->header_len;
    memcpy(out, vf->bytes + off, h - off);
  }
  for (int i = first_extent(vf, off); i < vf->nextents && vf->extents[i].begin < end; i++) {
    const d9_extent *e = &vf->extents[i];
    uint64_t b = e->begin > off ? e->begin : off, t = e->end < end ? e->end : end;
    if (b >= t) continue;
    int r = read_extent(rc, e, b - e->begin, t - e->begin, out + (b - off));
    if (r) {
      rc->check_later = 0;
      return r;
    }
  }
  rc->check_later = 0;
  int r = check_touched(rc);
  return r ? r : (ssize_t)n;
}

int d9_eval_pieces(const d9_read_ctx *rc, unsigned char *buf, size_t r,
                   d9_piece pieces[D9_READ_MAXPIECES]) {
  int np = 0;
  size_t pos = 0; /* reply bytes described so far; refs come in reply order */
  for (int i = 0; i < rc->nrefs; i++) {
    const d9_ref *f = &rc->refs[i];
    if (f->at > pos) pieces[np++] = (d9_piece){buf + pos, -1, -1, 0, f->at - pos};
    pieces[np++] = (d9_piece){NULL, rc->cat->shards[f->shard].fd, f->shard, f->off, f->len};
    pos = f->at + f->len;
  }
  if (r > pos || np == 0) pieces[np++] = (d9_piece){buf + pos, -1, -1, 0, r - pos};
  return np;
}
