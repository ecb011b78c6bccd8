/* node.h - the transformation graph's nodes.
 *
 * Every node is a tensor (shape, dtype) defined by an operation on its
 * inputs. Evaluation works on flat element ranges in row-major order:
 * node->numel elements, and a read of elements [a, b) of a node pulls only
 * the matching ranges of its inputs (the evaluator, eval.h). This header
 * and node.c / node_ops.c only build nodes; nothing here evaluates. Layout
 * operations are expressed with four primitives:
 *   SOURCE   a tensor of the source catalog
 *   RESHAPE  same elements, new shape (free: flat ranges are unchanged)
 *   CONCAT   along one dim (stack = concat of unsqueezed inputs; QKV
 *            interleave = reshape -> concat on dim 1 -> reshape)
 *   SLICE    a range along one dim (chunk, split, QKV split)
 * and elementwise CAST. All are element-local, so no read ever materialises
 * a whole tensor.
 */
#ifndef D9_NODE_H
#define D9_NODE_H

#include <stdint.h>

#include "arena.h"
#include "catalog.h"
#include "diag.h"

typedef enum {
  D9_OP_SOURCE,
  D9_OP_RESHAPE,
  D9_OP_CONCAT,
  D9_OP_SLICE,
  D9_OP_CAST,
  D9_OP_PERMUTE,  /* out dim k = in dim perm[k]; evaluated in tiles (eval_fill.c) */
  D9_OP_DEQUANT,  /* in[0] F8 weight [M, N], in[1] scale [ceil(M/b0), ceil(N/b1)] -> F32 */
  D9_OP_QUANT_W,  /* in[0] float [M, N] -> F8_E4M3 weight, per-block absmax scaling */
  D9_OP_QUANT_S,  /* in[0] float [M, N] -> F32 scale_inv [ceil(M/b0), ceil(N/b1)] */
  D9_OP_AFFINE,   /* cast_dtype(f32(x) * a + b), computed in F32 */
  D9_OP_PAD,      /* rows beyond in[0]'s dim 0 are zero bytes */
  D9_OP_MXFP4_DQ, /* in[0] U8 blocks [..., G, B], in[1] U8 E8M0 scales [..., G] -> [..., G*2B] */
  D9_OP_MXFP4_QB, /* in[0] float [..., N] -> U8 blocks [..., N/g, g/2] (g = block[0]) */
  D9_OP_MXFP4_QS, /* in[0] float [..., N] -> U8 E8M0 scales [..., N/g] */
} d9_op;

typedef struct d9_node {
  d9_op op;
  d9_dtype dtype;
  int ndim;
  int64_t shape[D9_MAX_DIMS];
  int64_t numel;
  int nin;
  struct d9_node **in;       /* arena-owned array of borrowed nodes */
  const d9_src_tensor *src;  /* SOURCE: borrowed from the catalog */
  int dim;                   /* CONCAT, SLICE */
  int64_t start;             /* SLICE: first index along dim */
  int64_t inner;             /* CONCAT, SLICE: elements per index of dim (product of later dims) */
  int64_t *cum;              /* CONCAT: cum[i] = sum of in[j]->shape[dim] for j < i; nin+1 entries */
  int perm[D9_MAX_DIMS];     /* PERMUTE */
  int64_t block[2];          /* DEQUANT, QUANT_*: block rows b0, block cols b1;
                                MXFP4_*: block[0] = values per scale */
  float a, b;                /* AFFINE */
} d9_node;

/* Constructors. Each checks shapes/dtypes and returns NULL with diag set
 * (the message starts with `where`, the spec location). Memory from a. */
d9_node *d9_node_source(d9_arena *a, const d9_src_tensor *t);
d9_node *d9_node_reshape(d9_arena *a, d9_node *x, const int64_t *shape, int ndim,
                         const char *where, d9_diag *diag);
d9_node *d9_node_concat(d9_arena *a, d9_node **in, int n, int dim, const char *where,
                        d9_diag *diag);
d9_node *d9_node_slice(d9_arena *a, d9_node *x, int dim, int64_t start, int64_t len,
                       const char *where, d9_diag *diag);
d9_node *d9_node_cast(d9_arena *a, d9_node *x, d9_dtype to, const char *where,
                      d9_diag *diag);
/* Stack n same-shape inputs along a new dim. */
d9_node *d9_node_stack(d9_arena *a, d9_node **in, int n, int dim, const char *where,
                       d9_diag *diag);
/* GQA QKV interleave (docs/spec.md, qkv): q [nh*d, (H)], k, v [ng*d, (H)] ->
 * [(nh+2ng)*d, (H)]; 1-D biases likewise. */
d9_node *d9_node_qkv(d9_arena *a, d9_node *q, d9_node *k, d9_node *v, int64_t nh,
                     int64_t ng, int64_t d, const char *where, d9_diag *diag);
/* Its inverse: out[0..2] = q, k, v. Returns 0 or -EINVAL. */
int d9_node_qkv_split(d9_arena *a, d9_node *x, int64_t nh, int64_t ng, int64_t d,
                      d9_node *out[3], const char *where, d9_diag *diag);

/* ---- node_ops.c: the non-layout operations ---- */

/* Permute dims: out->shape[k] = x->shape[perm[k]]. perm must be a
 * permutation of 0..ndim-1. Evaluated in 2-D tiles of the output's two last
 * dims, so a read pulls about its own size from the input. */
d9_node *d9_node_permute(d9_arena *a, d9_node *x, const int *perm, int ndim,
                         const char *where, d9_diag *diag);
/* FP8 block dequantisation (DeepSeek-V3): w F8_E4M3/F8_E5M2 [M, N], s F32
 * or BF16 [ceil(M/b0), ceil(N/b1)]; out F32 [M, N] with
 * out[i,j] = f32(w[i,j]) * f32(s[i/b0, j/b1]) (one F32 multiply). */
d9_node *d9_node_dequant(d9_arena *a, d9_node *w, d9_node *s, int64_t b0, int64_t b1,
                         const char *where, d9_diag *diag);
/* FP8 block quantisation, the inverse: for x F32/F16/BF16 [M, N], per
 * block amax = max |x| (F32; NaN ignored), scale = amax / 448 (F32; 1 when
 * amax is 0), weight = e4m3(x / scale) (saturating, round to nearest even),
 * out[0] the F8_E4M3 weight [M, N], out[1] the F32 scale_inv
 * [ceil(M/b0), ceil(N/b1)] = scale. Returns 0 or -EINVAL. */
int d9_node_quant(d9_arena *a, d9_node *x, int64_t b0, int64_t b1, d9_node *out[2],
                  const char *where, d9_diag *diag);
/* y = cast_{x->dtype}(f32(x) * a + b), in F32 without FMA. x castable. */
d9_node *d9_node_affine(d9_arena *a, d9_node *x, float mul, float add, const char *where,
                        d9_diag *diag);
/* Pad dim 0 with zero rows up to rows (>= x->shape[0]). */
d9_node *d9_node_pad(d9_arena *a, d9_node *x, int64_t rows, const char *where,
                     d9_diag *diag);

/* MXFP4 dequantisation (gpt-oss experts; kernels/cpu/mxfp4.c has the
 * format): blocks U8 [..., G, B] (two E2M1 codes per byte, low nibble
 * first), scales U8 [..., G] (E8M0, one per 2B values) -> `to` (F32 or
 * BF16) [..., G*2B]: value v = e2m1(code v) * 2^(scale - 127) in F32,
 * rounded to `to` (exact; +-Inf from 2^128 up; never NaN). When group > 0
 * it must equal 2B. */
d9_node *d9_node_mxfp4_dequant(d9_arena *a, d9_node *blocks, d9_node *scales, d9_dtype to,
                               int64_t group, const char *where, d9_diag *diag);
/* Its inverse: x F32/F16/BF16 [..., N], N a multiple of group (even) ->
 * out[0] U8 blocks [..., N/group, group/2], out[1] U8 E8M0 scales
 * [..., N/group] (kernels.h mxfp4_quant has the rule). 0 or -EINVAL. */
int d9_node_mxfp4_quant(d9_arena *a, d9_node *x, int64_t group, d9_node *out[2],
                        const char *where, d9_diag *diag);

/* "[4096, 1024]" into buf. */
const char *d9_shape_str(const int64_t *shape, int ndim, char *buf, size_t cap);

#endif
