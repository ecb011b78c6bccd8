/* eval_mxfp4.c - the MXFP4 fills: dequant (MXFP4_DQ), and quant's blocks
 * (MXFP4_QB) and scales (MXFP4_QS); node_ops.c defines the operations and
 * kernels/cpu/mxfp4.c their exact bits. The compute runs on the read's
 * backend through d9_run_* (eval_backend.c).
 *
 * The three nodes are flat streams (value v: code in nibble v % 2 of byte
 * v / 2, scale v / g), so a range needs only the bytes and scales of its
 * own values:
 *  - MXFP4_DQ pulls, per chunk of at most CHUNK values, the bytes and
 *    scale bytes that chunk covers, once each;
 *  - MXFP4_QB / MXFP4_QS pull the whole groups their bytes (scales) belong
 *    to, at most CHUNK values at a time (one group when a group is larger),
 *    as F32, and keep only the part of the result the range asked for.
 */
#include <errno.h>
#include <string.h>

#include "eval_internal.h"

enum { CHUNK = 16 * 1024 }; /* values per pull and per backend call */

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

int d9_fill_mxfp4_dequant(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count,
                          void *out) {
  const d9_node *blk = x->in[0], *sc = x->in[1];
  int64_t g = x->block[0], end = start + count;
  size_t es = d9_dtype_size(x->dtype), bn = CHUNK / 2 + 1, sn = CHUNK / 2 + 2;
  unsigned char *o = out;
  int r = -ENOMEM;
  uint8_t *bbuf = d9_scratch_push(rc, bn);
  if (!bbuf) goto out;
  uint8_t *sbuf = d9_scratch_push(rc, sn);
  if (!sbuf) goto pop_b;
  r = 0;
  for (int64_t v = start; v < end && !r;) {
    int64_t take = min64(CHUNK, end - v), b0 = v / 2, b1 = (v + take + 1) / 2;
    int64_t s0 = v / g, s1 = (v + take - 1) / g + 1;
    if (!(r = d9_eval_fill(rc, blk, b0, b1 - b0, bbuf)) &&
        !(r = d9_eval_fill(rc, sc, s0, s1 - s0, sbuf)))
      r = d9_run_mxfp4_dequant(rc, o + (size_t)(v - start) * es, x->dtype, bbuf, sbuf, v,
                               take, g);
    v += take;
  }
  d9_scratch_pop(rc, sbuf, sn);
pop_b:
  d9_scratch_pop(rc, bbuf, bn);
out:
  return r;
}

/* Quantise groups [ga, gb) of q's input into blocks (g/2 bytes per group)
 * and scales; f holds (gb - ga) * g F32, raw as many of the input's dtype
 * (NULL for F32). */
static int quant_groups(d9_read_ctx *rc, const d9_node *q, int64_t ga, int64_t gb,
                        uint8_t *blocks, uint8_t *scales, float *f, void *raw) {
  const d9_node *x = q->in[0];
  int64_t g = q->block[0], n = (gb - ga) * g;
  int r;
  if (x->dtype == D9_F32) {
    r = d9_eval_fill(rc, x, ga * g, n, f);
  } else {
    r = d9_eval_fill(rc, x, ga * g, n, raw);
    if (!r) r = d9_run_cast(rc, f, D9_F32, raw, x->dtype, n);
  }
  return r ? r : d9_run_mxfp4_quant(rc, blocks, scales, f, gb - ga, g);
}

int d9_fill_mxfp4_quant(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count,
                        void *out) {
  const d9_node *in = x->in[0];
  int64_t g = x->block[0], end = start + count;
  int64_t per = g >= CHUNK ? 1 : CHUNK / g; /* groups per pull */
  int qb = x->op == D9_OP_MXFP4_QB;
  size_t fn = (size_t)(per * g) * sizeof(float), bn = (size_t)(per * g / 2), sn = (size_t)per;
  size_t rn = in->dtype == D9_F32 ? 0 : (size_t)(per * g) * d9_dtype_size(in->dtype);
  unsigned char *o = out;
  int r = -ENOMEM;
  float *f = d9_scratch_push(rc, fn);
  if (!f) goto out;
  void *raw = rn ? d9_scratch_push(rc, rn) : NULL;
  if (rn && !raw) goto pop_f;
  uint8_t *bbuf = d9_scratch_push(rc, bn);
  if (!bbuf) goto pop_raw;
  uint8_t *sbuf = d9_scratch_push(rc, sn);
  if (!sbuf) goto pop_b;
  /* the groups of [start, end): a block byte k is in group 2k / g */
  int64_t ga = qb ? 2 * start / g : start, gend = qb ? (2 * (end - 1)) / g + 1 : end;
  r = 0;
  for (; ga < gend && !r; ga += per) {
    int64_t gb = min64(gend, ga + per);
    if ((r = quant_groups(rc, x, ga, gb, bbuf, sbuf, f, raw))) break;
    /* the part of these groups' output the range asked for */
    int64_t lo = qb ? ga * g / 2 : ga, hi = qb ? gb * g / 2 : gb;
    int64_t a = lo > start ? lo : start, z = hi < end ? hi : end;
    memcpy(o + (a - start), (qb ? bbuf : sbuf) + (a - lo), (size_t)(z - a));
  }
  d9_scratch_pop(rc, sbuf, sn);
pop_b:
  d9_scratch_pop(rc, bbuf, bn);
pop_raw:
  if (rn) d9_scratch_pop(rc, raw, rn);
pop_f:
  d9_scratch_pop(rc, f, fn);
out:
  return r;
}
