/* eval_fp8.c - the FP8 block fills: dequant, and quant's weight and scale
 * (node_ops.c defines the operations and their exact bits). The compute -
 * widening to F32, the block dequant, amax and quant - runs on the read's
 * backend through d9_run_* (eval_backend.c); the block scale of an amax is
 * d9_fp8_scale (kernels.h).
 *
 * A read is cut into groups, each inside one block row (next_group). Per
 * group, scale blocks are taken in windows of at most SWIN; in a window the
 * elements go to the backend as boxes (kernels.h d9_fp8_box): several
 * whole rows at once when the window spans whole rows of at most CHUNK
 * elements, else segments of one row of at most CHUNK elements.
 *  - DEQUANT pulls its weight elements once and, per block row it touches,
 *    each needed scale element once.
 *  - QUANT_W computes the scales of the blocks it touches from their whole
 *    b0-row tiles (held in scratch when they fit TILE_ELEMS, else the
 *    elements are read twice, streamed); QUANT_S pulls each block it
 *    answers once.
 *  - With the mount's cache (rc->qcache, scale_cache.h) both take the
 *    scales computed before from it, and a group as wide as its block row
 *    (a read of more than one row of it) computes the whole block row
 *    (quant_row: every scale, then every quantised byte, through the tile)
 *    and leaves it there, so the next reads of that block row copy it;
 *    a read of the scale tensor does the same for a whole row of scales.
 *    Concurrent reads of one block row compute it once (a claim). The
 *    bytes are those of the uncached path: same scales, same quant calls.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "eval_internal.h"
#include "scale_cache.h"

enum {
  CHUNK = 16 * 1024,    /* elements per pull and per backend call */
  SWIN = 1024,          /* most scale blocks per window */
  TILE_ELEMS = 1 << 18, /* quant: most F32 elements kept per tile */
};

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t cdiv(int64_t a, int64_t b) { return a / b + (a % b != 0); }
/* First index of block k of size b, clipped to lim (no overflow for any b). */
static inline int64_t upto(int64_t k, int64_t b, int64_t lim) {
  return k >= cdiv(lim, b) ? lim : k * b;
}

/* A run of the request inside one block row: rows i..il, the first from
 * column c0, the last up to column cl (exclusive); its scale blocks
 * [k0, k1). Two partial rows whose blocks do not meet are cut into two
 * groups, so only needed blocks are touched. Returns the flat end. */
typedef struct group {
  int64_t i, c0, il, cl, k0, k1;
} group;

static int64_t next_group(const d9_node *x, int64_t start, int64_t end, group *g) {
  int64_t M = x->shape[0], N = x->shape[1], b0 = x->block[0], b1 = x->block[1];
  int64_t nb = cdiv(N, b1);
  g->i = start / N;
  g->c0 = start % N;
  int64_t gend = min64(end, upto(g->i / b0 + 1, b0, M) * N);
  g->il = (gend - 1) / N;
  g->cl = (gend - 1) % N + 1;
  if (g->il == g->i) {
    g->k0 = g->c0 / b1;
    g->k1 = (g->cl - 1) / b1 + 1;
  } else if (g->il == g->i + 1 && (g->cl - 1) / b1 + 1 < g->c0 / b1) {
    g->il = g->i;
    g->cl = N;
    gend = (g->i + 1) * N;
    g->k0 = g->c0 / b1;
    g->k1 = nb;
  } else {
    g->k0 = 0;
    g->k1 = nb;
  }
  return gend;
}

/* Columns [*a, *z) of row r of group g that lie inside [w0, w1). */
static void row_cols(const group *g, int64_t N, int64_t r, int64_t w0, int64_t w1,
                     int64_t *a, int64_t *z) {
  int64_t lo = r == g->i ? g->c0 : 0, hi = r == g->il ? g->cl : N;
  *a = lo > w0 ? lo : w0;
  *z = hi < w1 ? hi : w1;
}

/* Whole rows of group g from row r that one box can take (each in full,
 * the window [w0, w1) spanning the N columns, at most CHUNK elements in
 * all); 0 when row r is not whole or only one row would fit. */
static int64_t whole_rows(const group *g, int64_t N, int64_t r, int64_t w0, int64_t w1) {
  if (w0 != 0 || w1 != N || N > CHUNK / 2 || (r == g->i && g->c0 != 0)) return 0;
  int64_t last = g->cl == N ? g->il : g->il - 1; /* the last whole row */
  int64_t k = min64(last - r + 1, CHUNK / N);
  return k > 1 ? k : 0;
}

/* The box of rows [i, i + rows) x columns [a, a + n) of a node blocked
 * b0 x b1, with a window of lds scale entries per block row. */
static d9_fp8_box box_of(const d9_node *x, int64_t i, int64_t rows, int64_t a, int64_t n,
                         int64_t lds) {
  return (d9_fp8_box){.i0 = i, .rows = rows, .b0 = x->block[0],
                      .j0 = a, .n = n, .b1 = x->block[1], .lds = lds};
}

/* Elements [at, at+n) of x (n <= CHUNK) as F32 into dst; raw holds CHUNK
 * elements of x's dtype (unused for F32). */
static int pull_f32(d9_read_ctx *rc, const d9_node *x, int64_t at, int64_t n, float *dst,
                    void *raw) {
  if (x->dtype == D9_F32) return d9_eval_fill(rc, x, at, n, dst);
  int r = d9_eval_fill(rc, x, at, n, raw);
  return r ? r : d9_run_cast(rc, dst, D9_F32, raw, x->dtype, n);
}

/* ---- dequant ---- */

int d9_fill_dequant(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count,
                    void *out) {
  const d9_node *w = x->in[0], *s = x->in[1];
  int64_t N = x->shape[1], b0 = x->block[0], b1 = x->block[1], nb = s->shape[1];
  int64_t end = start + count, first = start;
  size_t ses = d9_dtype_size(s->dtype), wn = CHUNK, sn = SWIN * sizeof(float);
  size_t rn = s->dtype == D9_F32 ? 0 : SWIN * ses;
  unsigned char *o = out; /* F32, any alignment */
  int r = -ENOMEM;
  uint8_t *wbuf = d9_scratch_push(rc, wn);
  if (!wbuf) goto out;
  float *sc = d9_scratch_push(rc, sn);
  if (!sc) goto pop_w;
  void *sraw = rn ? d9_scratch_push(rc, rn) : NULL;
  if (rn && !sraw) goto pop_s;
  r = 0;
  while (start < end && !r) {
    group g;
    int64_t gend = next_group(x, start, end, &g);
    for (int64_t ka = g.k0; ka < g.k1 && !r; ka += SWIN) {
      int64_t kb = min64(g.k1, ka + SWIN), w0 = ka * b1, w1 = upto(kb, b1, N);
      r = pull_f32(rc, s, g.i / b0 * nb + ka, kb - ka, sc, sraw);
      for (int64_t i = g.i; i <= g.il && !r;) {
        int64_t k = whole_rows(&g, N, i, w0, w1);
        if (k) { /* k whole rows, one box */
          d9_fp8_box b = box_of(x, i, k, 0, N, kb - ka);
          if (!(r = d9_eval_fill(rc, w, i * N, k * N, wbuf)))
            r = d9_run_fp8_dequant(rc, o + 4 * (i * N - first), wbuf, w->dtype, sc, &b);
          i += k;
          continue;
        }
        int64_t a, z;
        row_cols(&g, N, i, w0, w1, &a, &z);
        for (; a < z && !r; a += CHUNK) {
          int64_t take = min64(CHUNK, z - a);
          d9_fp8_box b = box_of(x, i, 1, a, take, kb - ka);
          if (!(r = d9_eval_fill(rc, w, i * N + a, take, wbuf)))
            r = d9_run_fp8_dequant(rc, o + 4 * (i * N + a - first), wbuf, w->dtype,
                                   sc + (a / b1 - ka), &b);
        }
        i++;
      }
    }
    start = gend;
  }
  if (rn) d9_scratch_pop(rc, sraw, rn);
pop_s:
  d9_scratch_pop(rc, sc, sn);
pop_w:
  d9_scratch_pop(rc, wbuf, wn);
out:
  return r;
}

/* ---- quant ---- */

typedef struct qbufs {
  void *raw;    /* CHUNK elements of x's dtype (NULL for F32) */
  float *f;     /* CHUNK F32 */
  float *tile;  /* tcap F32 (<= TILE_ELEMS), or NULL: stream */
  int64_t tcap;
} qbufs;

/* amax[k - k0] for blocks [k0, k1) of block row B, accumulated over the
 * block's rows (amax zeroed by the caller). With tile set, also keeps the
 * rows as F32: tile[(r - B*b0) * width + (c - k0*b1)]. */
static int block_amax(d9_read_ctx *rc, const d9_node *q, int64_t B, int64_t k0, int64_t k1,
                      float *amax, qbufs *qb) {
  const d9_node *x = q->in[0];
  int64_t M = x->shape[0], N = x->shape[1], b0 = q->block[0], b1 = q->block[1];
  int64_t w0 = k0 * b1, w1 = upto(k1, b1, N), width = w1 - w0, iend = upto(B + 1, b0, M);
  /* whole rows at once when the window spans them and two or more fit */
  int64_t per = w0 == 0 && w1 == N && N <= CHUNK / 2 ? CHUNK / N : 1;
  int r = 0;
  for (int64_t i = B * b0; i < iend && !r;) {
    int64_t k = min64(per, iend - i);
    for (int64_t a = w0; a < w1 && !r; a += CHUNK) {
      int64_t take = k > 1 ? k * N : min64(CHUNK, w1 - a);
      float *dst = qb->tile ? qb->tile + (i - B * b0) * width + (a - w0) : qb->f;
      d9_fp8_box b = box_of(q, i, k, a, k > 1 ? N : take, k1 - k0);
      if (!(r = pull_f32(rc, x, i * N + a, take, dst, qb->raw)))
        r = d9_run_fp8_amax(rc, amax + (a / b1 - k0), dst, &b);
    }
    i += k;
  }
  return r;
}

/* The scales of blocks [ka, kb) of block row B into sc: from the cache
 * (*hit = 1), else computed through the tile when qb has one (*hit = 0)
 * and put in the cache. */
static int window_scales(d9_read_ctx *rc, const d9_node *q, int64_t B, int64_t ka, int64_t kb,
                         qbufs *qb, float *sc, int *hit) {
  *hit = rc->qcache && d9_scale_cache_scales(rc->qcache, q, B, ka, kb, sc);
  if (*hit) return 0;
  for (int64_t k = 0; k < kb - ka; k++) sc[k] = 0.0f;
  int r = block_amax(rc, q, B, ka, kb, sc, qb);
  for (int64_t k = 0; k < kb - ka; k++) sc[k] = d9_fp8_scale(sc[k]);
  if (!r && rc->qcache) d9_scale_cache_put(rc->qcache, q, B, ka, kb, sc, NULL, 0);
  return r;
}

/* Block row B of q computed whole through the tile (its scales, then its
 * rows x N quantised bytes), bytes [off, off+n) of it copied to dst, and
 * the block row handed to the cache, so that the reads after this one copy
 * it instead of pulling its rows again. */
static int quant_row(d9_read_ctx *rc, const d9_node *q, int64_t B, int64_t off, int64_t n,
                     uint8_t *dst, qbufs *qb, float *sc, int claimed) {
  const d9_node *x = q->in[0];
  int64_t M = x->shape[0], N = x->shape[1], b0 = q->block[0], b1 = q->block[1];
  int64_t i0 = B * b0, rows = upto(B + 1, b0, M) - i0, nb = cdiv(N, b1);
  int64_t per = min64(qb->tcap / (rows * b1), SWIN); /* >= 1: see d9_fill_quant */
  uint8_t *row = malloc((size_t)(rows * N));
  int r = row ? 0 : -ENOMEM, hit;
  for (int64_t ka = 0, kb; ka < nb && !r; ka = kb) {
    kb = min64(nb, ka + per);
    int64_t w0 = ka * b1, width = upto(kb, b1, N) - w0;
    if ((r = window_scales(rc, q, B, ka, kb, qb, sc, &hit))) break;
    if (hit) /* scales cached, the tile not filled: fill it */
      for (int64_t i = 0; i < rows && !r; i++)
        for (int64_t a = 0; a < width && !r; a += CHUNK)
          r = pull_f32(rc, x, (i0 + i) * N + w0 + a, min64(CHUNK, width - a),
                       qb->tile + i * width + a, qb->raw);
    for (int64_t i = 0; i < rows && !r; i++) /* row segments of at most CHUNK */
      for (int64_t a = 0; a < width && !r; a += CHUNK) {
        int64_t j = w0 + a, take = min64(CHUNK, width - a);
        d9_fp8_box b = box_of(q, i0 + i, 1, j, take, kb - ka);
        r = d9_run_fp8_quant(rc, row + i * N + j, qb->tile + i * width + a, sc + (j / b1 - ka),
                             &b);
      }
  }
  if (r) {
    if (claimed) d9_scale_cache_release(rc->qcache, q, B);
    free(row);
    return r;
  }
  if (n) memcpy(dst, row + off, (size_t)n);
  d9_scale_cache_put(rc->qcache, q, B, 0, 0, NULL, row, (size_t)(rows * N));
  return 0;
}

/* Scales in windows of at most SWIN blocks through sc, then into out (any
 * alignment); from the cache where it holds them, else computed: a window
 * of a whole block row by computing the block row whole (quant_row, whose
 * bytes the weight's reads then copy; or waiting for the reader that
 * computes it), a narrower one by its blocks' amax alone. */
static int fill_quant_s(d9_read_ctx *rc, const d9_node *q, int64_t start, int64_t count,
                        unsigned char *out, qbufs *qb, float *sc) {
  const d9_node *x = q->in[0];
  int64_t nb = q->shape[1], end = start + count, M = x->shape[0], N = x->shape[1];
  int64_t b0 = q->block[0];
  size_t row_max = rc->qcache ? d9_scale_cache_row_max(rc->qcache) : 0;
  qbufs stream = *qb; /* a window of SWIN blocks does not fit the tile: stream it */
  stream.tile = NULL;
  int r = 0, hit;
  for (int64_t at = start; at < end && !r;) {
    int64_t B = at / nb, k0 = at % nb, k1 = min64(min64(nb, k0 + (end - at)), k0 + SWIN);
    int64_t rows = upto(B + 1, b0, M) - B * b0;
    hit = rc->qcache && d9_scale_cache_scales(rc->qcache, q, B, k0, k1, sc);
    if (!hit && qb->tile && k0 == 0 && k1 == nb && (uint64_t)(rows * N) <= row_max) {
      int claimed = 0;
      if (!d9_scale_cache_bytes(rc->qcache, q, B, 0, 0, NULL, &claimed))
        r = quant_row(rc, q, B, 0, 0, NULL, qb, sc, claimed);
      hit = !r && d9_scale_cache_scales(rc->qcache, q, B, k0, k1, sc); /* else evicted */
    }
    if (!hit && !r) r = window_scales(rc, q, B, k0, k1, &stream, sc, &hit);
    memcpy(out + 4 * (at - start), sc, (size_t)(k1 - k0) * sizeof *sc);
    at += k1 - k0;
  }
  return r;
}

static int fill_quant_w(d9_read_ctx *rc, const d9_node *q, int64_t start, int64_t count,
                        uint8_t *out, qbufs *qb, float *sc) {
  const d9_node *x = q->in[0];
  int64_t M = x->shape[0], N = x->shape[1], b0 = q->block[0], b1 = q->block[1];
  int64_t end = start + count, first = start, nb = cdiv(N, b1);
  size_t row_max = rc->qcache ? d9_scale_cache_row_max(rc->qcache) : 0;
  int r = 0;
  while (start < end && !r) {
    group g;
    int64_t gend = next_group(q, start, end, &g), B = g.i / b0;
    int64_t rows = upto(B + 1, b0, M) - B * b0, base = B * b0 * N;
    if (rc->qcache) {
      /* a group as wide as the block row reads all of it for the scales
       * anyway: quantise all of it, for the next reads (claimed, so that
       * concurrent reads of the block row wait for it instead) */
      int whole = qb->tile && g.k0 == 0 && g.k1 == nb && (uint64_t)(rows * N) <= row_max;
      int claimed = 0;
      if (d9_scale_cache_bytes(rc->qcache, q, B, (uint64_t)(start - base),
                               (size_t)(gend - start), out + (start - first),
                               whole ? &claimed : NULL)) {
        start = gend;
        continue;
      }
      if (whole) {
        r = quant_row(rc, q, B, start - base, gend - start, out + (start - first), qb, sc,
                      claimed);
        start = gend;
        continue;
      }
    }
    /* tile mode: as many blocks as fit TILE_ELEMS; else stream 1 window */
    int64_t per = qb->tile ? qb->tcap / (rows * b1) : SWIN;
    for (int64_t ka = g.k0; ka < g.k1 && !r;) {
      int64_t kb = min64(g.k1, ka + min64(per, SWIN)), w0 = ka * b1, w1 = upto(kb, b1, N);
      int hit;
      r = window_scales(rc, q, B, ka, kb, qb, sc, &hit);
      const float *tile = hit ? NULL : qb->tile; /* cached scales: pull the elements */
      for (int64_t i = g.i; i <= g.il && !r;) {
        int64_t k = whole_rows(&g, N, i, w0, w1), a, z;
        if (k) { /* k whole rows, one box */
          const float *src = tile ? tile + (i - B * b0) * N : qb->f;
          d9_fp8_box b = box_of(q, i, k, 0, N, kb - ka);
          if (!tile) r = pull_f32(rc, x, i * N, k * N, qb->f, qb->raw);
          if (!r) r = d9_run_fp8_quant(rc, out + (i * N - first), src, sc, &b);
          i += k;
          continue;
        }
        row_cols(&g, N, i, w0, w1, &a, &z);
        for (; a < z && !r; a += CHUNK) {
          int64_t take = min64(CHUNK, z - a);
          const float *src = tile ? tile + (i - B * b0) * (w1 - w0) + (a - w0) : qb->f;
          d9_fp8_box b = box_of(q, i, 1, a, take, kb - ka);
          if (!tile) r = pull_f32(rc, x, i * N + a, take, qb->f, qb->raw);
          if (!r) r = d9_run_fp8_quant(rc, out + (i * N + a - first), src, sc + (a / b1 - ka), &b);
        }
        i++;
      }
      ka = kb;
    }
    start = gend;
  }
  return r;
}

int d9_fill_quant(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count,
                  void *out) {
  const d9_node *in = x->in[0];
  int64_t rows = min64(x->block[0], in->shape[0]), nb = cdiv(in->shape[1], x->block[1]);
  qbufs qb = {0};
  /* the tile holds whole block rows of at least one block column, and of
   * no more block columns than the tensor has */
  if ((x->op == D9_OP_QUANT_W || rc->qcache) && rows <= TILE_ELEMS / x->block[1]) {
    int64_t col = rows * x->block[1];
    qb.tcap = nb <= TILE_ELEMS / col ? nb * col : TILE_ELEMS;
  }
  size_t rn = in->dtype == D9_F32 ? 0 : CHUNK * d9_dtype_size(in->dtype);
  size_t fn = CHUNK * sizeof(float), tn = (size_t)qb.tcap * sizeof(float);
  size_t sn = SWIN * sizeof(float);
  int r = -ENOMEM;
  if (rn && !(qb.raw = d9_scratch_push(rc, rn))) goto out;
  if (!(qb.f = d9_scratch_push(rc, fn))) goto pop_raw;
  if (tn && !(qb.tile = d9_scratch_push(rc, tn))) goto pop_f;
  float *sc = d9_scratch_push(rc, sn);
  if (!sc) goto pop_tile;
  if (x->op == D9_OP_QUANT_S)
    r = fill_quant_s(rc, x, start, count, out, &qb, sc);
  else
    r = fill_quant_w(rc, x, start, count, out, &qb, sc);
  d9_scratch_pop(rc, sc, sn);
pop_tile:
  if (tn) d9_scratch_pop(rc, qb.tile, tn);
pop_f:
  d9_scratch_pop(rc, qb.f, fn);
pop_raw:
  if (rn) d9_scratch_pop(rc, qb.raw, rn);
out:
  return r;
}
