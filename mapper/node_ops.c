/* node_ops.c - the non-layout operations: permute, FP8 block dequant and
 * quant, affine, pad, MXFP4 dequant and quant. This file builds them (constructors check shapes and
 * dtypes); the evaluator computes them (eval_fill.c, eval_fp8.c, through the
 * read's backend).
 *
 * Exact semantics (tests compare bytes):
 *  - PERMUTE x by perm (a permutation of 0..n-1): out->shape[k] =
 *    x->shape[perm[k]], out[i_0..i_{n-1}] = x[j] with j[perm[k]] = i_k.
 *    Bytes are copied, never converted. 0-D and 1-D permutes are identity.
 *    A read pulls about its own size from the input (tiles, eval_fill.c).
 *  - DEQUANT w F8_E4M3/F8_E5M2 [M, N], s F32/BF16 [ceil(M/b0), ceil(N/b1)]
 *    (exactly): out F32 [M, N], out[i,j] = f32(w[i,j]) * f32(s[i/b0, j/b1])
 *    as one F32 multiply; a NaN product is +0x7fc00000 (fp8.c). Inf and
 *    subnormal weights are exact inputs to the multiply (Inf * 0 is NaN).
 *  - QUANT x F32/F16/BF16 [M, N], blocks b0 x b1 (edges ragged): amax =
 *    max |f32(x)| over the block, NaN ignored (an all-NaN block has amax 0),
 *    Inf counted; scale = amax / 448 (F32), 1 when amax is 0 or not finite
 *    (or below 7 * 2^-144, where the quotient is 0); QUANT_S [ceil(M/b0),
 *    ceil(N/b1)] F32 holds the scales (the "scale_inv" that DEQUANT
 *    multiplies by); QUANT_W F8_E4M3 [M, N] = e4m3(f32(x) / scale), one F32
 *    division, then the saturating RNE narrowing (|q| <= 448; a block with
 *    an Inf has scale 1, so its finite values and the Inf saturate to
 *    +-448; a NaN x gives 0x7f with its sign). Round trip: for a block with
 *    normal scale s, |f32(e4m3) * s - x| <= 2^-4 |x| + 2^-10 s + 2^-22
 *    (|x| + s) (derived in tests/test_ops.c).
 *  - AFFINE: cast_{x->dtype}(f32(x) * a + b), two F32 roundings (backend.c;
 *    NaN results canonical). w + 1 / w - 1 for zero-centred RMSNorm.
 *  - PAD: dim 0 grown to rows; elements past x's are zero bytes.
 *  - MXFP4_DQ / MXFP4_QB / MXFP4_QS: flat streams of values, codes and
 *    scales (value v: nibble v % 2 of byte v / 2, scale v / group); the
 *    exact rules are kernels/cpu/mxfp4.c's (eval_mxfp4.c computes them).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "node.h"

static inline int64_t cdiv(int64_t a, int64_t b) { return a / b + (a % b != 0); }

static d9_node *new_op(d9_arena *a, d9_op op, int nin, const d9_node *like) {
  d9_node *n = d9_arena_alloc(a, sizeof *n);
  if (!n || !(n->in = d9_arena_calloc(a, (size_t)nin, sizeof *n->in))) return NULL;
  n->op = op;
  n->nin = nin;
  n->dtype = like->dtype;
  n->ndim = like->ndim;
  memcpy(n->shape, like->shape, sizeof n->shape);
  n->numel = like->numel;
  return n;
}

/* ---- constructors ---- */

d9_node *d9_node_permute(d9_arena *a, d9_node *x, const int *perm, int ndim,
                         const char *where, d9_diag *diag) {
  char b1[160], pb[160];
  size_t o = 0;
  pb[0] = 0;
  for (int k = 0; k < ndim && k < D9_MAX_DIMS && o < sizeof pb; k++)
    o += (size_t)snprintf(pb + o, sizeof pb - o, "%s%d", k ? ", " : "", perm[k]);
  if (ndim != x->ndim)
    return d9_diag_fail(diag, EINVAL, "%s: permutation (%s) has %d dims, tensor %s has %d",
                        where, pb, ndim, d9_shape_str(x->shape, x->ndim, b1, sizeof b1),
                        x->ndim), NULL;
  unsigned seen = 0;
  for (int k = 0; k < ndim; k++) {
    if (perm[k] < 0 || perm[k] >= ndim || (seen >> perm[k] & 1u))
      return d9_diag_fail(diag, EINVAL, "%s: (%s) is not a permutation of the dims of %s",
                          where, pb, d9_shape_str(x->shape, x->ndim, b1, sizeof b1)), NULL;
    seen |= 1u << perm[k];
  }
  d9_node *n = new_op(a, D9_OP_PERMUTE, 1, x);
  if (!n) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", where), NULL;
  n->in[0] = x;
  for (int k = 0; k < ndim; k++) {
    n->perm[k] = perm[k];
    n->shape[k] = x->shape[perm[k]];
  }
  return n;
}

static int check_blocks(int64_t b0, int64_t b1, const char *where, d9_diag *diag) {
  if (b0 <= 0 || b1 <= 0)
    return d9_diag_fail(diag, EINVAL, "%s: block size %lldx%lld must be positive", where,
                        (long long)b0, (long long)b1);
  return 0;
}

d9_node *d9_node_dequant(d9_arena *a, d9_node *w, d9_node *s, int64_t b0, int64_t b1,
                         const char *where, d9_diag *diag) {
  char t1[160], t2[160], t3[160];
  if (check_blocks(b0, b1, where, diag)) return NULL;
  if (w->ndim != 2 || (w->dtype != D9_F8_E4M3 && w->dtype != D9_F8_E5M2))
    return d9_diag_fail(diag, EINVAL, "%s: dequant weight is %s %s, want F8_E4M3 or F8_E5M2 "
                        "[M, N]", where, d9_dtype_name(w->dtype),
                        d9_shape_str(w->shape, w->ndim, t1, sizeof t1)), NULL;
  int64_t want[2] = {cdiv(w->shape[0], b0), cdiv(w->shape[1], b1)};
  if (s->dtype != D9_F32 && s->dtype != D9_BF16)
    return d9_diag_fail(diag, EINVAL, "%s: dequant scale is %s, want F32 or BF16", where,
                        d9_dtype_name(s->dtype)), NULL;
  if (s->ndim != 2 || s->shape[0] != want[0] || s->shape[1] != want[1])
    return d9_diag_fail(diag, EINVAL, "%s: dequant scale is %s, want %s for weight %s in "
                        "blocks of %lldx%lld", where,
                        d9_shape_str(s->shape, s->ndim, t1, sizeof t1),
                        d9_shape_str(want, 2, t2, sizeof t2),
                        d9_shape_str(w->shape, 2, t3, sizeof t3), (long long)b0,
                        (long long)b1), NULL;
  d9_node *n = new_op(a, D9_OP_DEQUANT, 2, w);
  if (!n) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", where), NULL;
  n->in[0] = w;
  n->in[1] = s;
  n->dtype = D9_F32;
  n->block[0] = b0;
  n->block[1] = b1;
  return n;
}

int d9_node_quant(d9_arena *a, d9_node *x, int64_t b0, int64_t b1, d9_node *out[2],
                  const char *where, d9_diag *diag) {
  char t1[160];
  if (check_blocks(b0, b1, where, diag)) return -EINVAL;
  if (x->ndim != 2 || (x->dtype != D9_F32 && x->dtype != D9_F16 && x->dtype != D9_BF16))
    return d9_diag_fail(diag, EINVAL, "%s: quantised tensor is %s %s, want F32, F16 or BF16 "
                        "[M, N]", where, d9_dtype_name(x->dtype),
                        d9_shape_str(x->shape, x->ndim, t1, sizeof t1));
  d9_node *w = new_op(a, D9_OP_QUANT_W, 1, x), *s = new_op(a, D9_OP_QUANT_S, 1, x);
  if (!w || !s) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", where);
  w->dtype = D9_F8_E4M3;
  s->dtype = D9_F32;
  s->shape[0] = cdiv(x->shape[0], b0);
  s->shape[1] = cdiv(x->shape[1], b1);
  s->numel = s->shape[0] * s->shape[1]; /* <= x->numel */
  for (int i = 0; i < 2; i++) {
    d9_node *n = i ? s : w;
    n->in[0] = x;
    n->block[0] = b0;
    n->block[1] = b1;
    out[i] = n;
  }
  return 0;
}

d9_node *d9_node_affine(d9_arena *a, d9_node *x, float mul, float add, const char *where,
                        d9_diag *diag) {
  if (!d9_dtype_is_castable(x->dtype))
    return d9_diag_fail(diag, EINVAL, "%s: affine needs a float tensor, not %s", where,
                        d9_dtype_name(x->dtype)), NULL;
  d9_node *n = new_op(a, D9_OP_AFFINE, 1, x);
  if (!n) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", where), NULL;
  n->in[0] = x;
  n->a = mul;
  n->b = add;
  return n;
}

d9_node *d9_node_pad(d9_arena *a, d9_node *x, int64_t rows, const char *where,
                     d9_diag *diag) {
  char t1[160];
  if (x->ndim < 1 || rows < x->shape[0])
    return d9_diag_fail(diag, EINVAL, "%s: cannot pad %s to %lld rows", where,
                        d9_shape_str(x->shape, x->ndim, t1, sizeof t1), (long long)rows), NULL;
  d9_node *n = new_op(a, D9_OP_PAD, 1, x);
  if (!n) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", where), NULL;
  n->in[0] = x;
  n->shape[0] = rows;
  uint64_t bytes;
  if (d9_st_numel(n->shape, n->ndim, &n->numel) ||
      d9_st_nbytes(n->shape, n->ndim, n->dtype, &bytes))
    return d9_diag_fail(diag, EOVERFLOW, "%s: padding to %lld rows overflows", where,
                        (long long)rows), NULL;
  return n;
}

/* ---- MXFP4 (gpt-oss): exact rules in kernels/cpu/mxfp4.c ---- */

d9_node *d9_node_mxfp4_dequant(d9_arena *a, d9_node *blocks, d9_node *scales, d9_dtype to,
                               int64_t group, const char *where, d9_diag *diag) {
  char t1[160], t2[160];
  int nd = blocks->ndim;
  if (to != D9_F32 && to != D9_BF16)
    return d9_diag_fail(diag, EINVAL, "%s: mxfp4_dequant gives F32 or BF16, not %s", where,
                        d9_dtype_name(to)), NULL;
  if (blocks->dtype != D9_U8 || nd < 2)
    return d9_diag_fail(diag, EINVAL, "%s: mxfp4 blocks are %s %s, want U8 [..., G, B]", where,
                        d9_dtype_name(blocks->dtype),
                        d9_shape_str(blocks->shape, nd, t1, sizeof t1)), NULL;
  int same = scales->dtype == D9_U8 && scales->ndim == nd - 1;
  for (int k = 0; same && k < nd - 1; k++) same = scales->shape[k] == blocks->shape[k];
  if (!same)
    return d9_diag_fail(diag, EINVAL, "%s: mxfp4 scales are %s %s, want U8 %s for blocks %s "
                        "(one E8M0 byte per block row)", where, d9_dtype_name(scales->dtype),
                        d9_shape_str(scales->shape, scales->ndim, t1, sizeof t1),
                        d9_shape_str(blocks->shape, nd - 1, t2, sizeof t2),
                        d9_shape_str(blocks->shape, nd, t1, sizeof t1)), NULL;
  int64_t B = blocks->shape[nd - 1];
  if (B < 1 || (group > 0 && group != 2 * B))
    return d9_diag_fail(diag, EINVAL, "%s: mxfp4 blocks %s hold %lld values per scale, "
                        "\"group\" says %lld", where,
                        d9_shape_str(blocks->shape, nd, t1, sizeof t1), (long long)(2 * B),
                        (long long)group), NULL;
  d9_node *n = new_op(a, D9_OP_MXFP4_DQ, 2, blocks);
  if (!n) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", where), NULL;
  n->in[0] = blocks;
  n->in[1] = scales;
  n->dtype = to;
  n->ndim = nd - 1;
  n->shape[nd - 2] = blocks->shape[nd - 2] * 2 * B; /* G*B <= numel: no overflow */
  n->shape[nd - 1] = 0;
  n->block[0] = 2 * B;
  uint64_t bytes;
  if (d9_st_numel(n->shape, n->ndim, &n->numel) ||
      d9_st_nbytes(n->shape, n->ndim, n->dtype, &bytes))
    return d9_diag_fail(diag, EOVERFLOW, "%s: mxfp4 values of %s overflow", where,
                        d9_shape_str(blocks->shape, nd, t1, sizeof t1)), NULL;
  return n;
}

int d9_node_mxfp4_quant(d9_arena *a, d9_node *x, int64_t group, d9_node *out[2],
                        const char *where, d9_diag *diag) {
  char t1[160];
  int nd = x->ndim;
  if (nd < 1 || nd >= D9_MAX_DIMS ||
      (x->dtype != D9_F32 && x->dtype != D9_F16 && x->dtype != D9_BF16))
    return d9_diag_fail(diag, EINVAL, "%s: mxfp4_quant input is %s %s, want F32, F16 or BF16 "
                        "[..., N] with at most %d dims", where, d9_dtype_name(x->dtype),
                        d9_shape_str(x->shape, nd, t1, sizeof t1), D9_MAX_DIMS - 1);
  if (group < 2 || group % 2 || x->shape[nd - 1] % group)
    return d9_diag_fail(diag, EINVAL, "%s: mxfp4_quant: the last dim of %s is not a multiple "
                        "of the group %lld (even)", where,
                        d9_shape_str(x->shape, nd, t1, sizeof t1), (long long)group);
  d9_node *b = new_op(a, D9_OP_MXFP4_QB, 1, x), *s = new_op(a, D9_OP_MXFP4_QS, 1, x);
  if (!b || !s) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", where);
  b->dtype = s->dtype = D9_U8;
  b->shape[nd - 1] = s->shape[nd - 1] = x->shape[nd - 1] / group;
  b->shape[nd] = group / 2;
  b->ndim = nd + 1;
  b->numel = x->numel / 2;
  s->numel = x->numel / group;
  for (int i = 0; i < 2; i++) {
    d9_node *n = i ? s : b;
    n->in[0] = x;
    n->block[0] = group;
    out[i] = n;
  }
  return 0;
}
