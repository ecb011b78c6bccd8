/* eval_internal.h - what the evaluator's files share (eval.c, eval_backend.c,
 * eval_fill.c, eval_fp8.c); nothing outside the evaluator includes it.
 *
 * The evaluator has three layers:
 *   eval.c          d9_eval_fill's dispatch, the layout fills (source,
 *                   reshape, concat, slice), the scratch stack and
 *                   d9_eval_read over a planned file
 *   eval_fill.c     the element-wise and tiled fills: cast, affine, pad,
 *                   permute
 *   eval_fp8.c      the FP8 block fills: dequant, quant weight and scale
 *   eval_mxfp4.c    the MXFP4 fills: dequant, quant blocks and scales
 *   eval_backend.c  the only door to the kernels: every compute of a read
 *                   is one d9_run_* call on rc->be, falling back to the CPU
 *                   backend in that one place; and d9_eval_backend, the
 *                   one place that picks a backend
 * A fill produces elements [start, start+count) of its node (row-major,
 * the node's dtype) into out, pulls from its inputs only the ranges those
 * elements need (d9_eval_fill), allocates only scratch, and returns 0 or
 * -errno (-ENOMEM when scratch fails).
 */
#ifndef D9_EVAL_INTERNAL_H
#define D9_EVAL_INTERNAL_H

#include "eval.h"

/* ---- eval.c: scratch ---- */

/* Scratch memory for fill functions: a stack inside rc->scratch, falling
 * back to malloc when full. Pop in reverse order of push. NULL on ENOMEM
 * (or an injected failure, rc->faults). */
void *d9_scratch_push(d9_read_ctx *rc, size_t n);
void d9_scratch_pop(d9_read_ctx *rc, void *p, size_t n);

/* ---- eval_fill.c, eval_fp8.c: the computing fills ---- */

int d9_fill_cast(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count, void *out);
int d9_fill_affine(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count, void *out);
int d9_fill_pad(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count, void *out);
int d9_fill_permute(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count, void *out);
int d9_fill_dequant(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count, void *out);
int d9_fill_quant(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count, void *out);
/* eval_mxfp4.c: MXFP4_DQ; MXFP4_QB and MXFP4_QS */
int d9_fill_mxfp4_dequant(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count,
                          void *out);
int d9_fill_mxfp4_quant(d9_read_ctx *rc, const d9_node *x, int64_t start, int64_t count,
                        void *out);

/* ---- eval_backend.c: the kernels, through rc->be ----
 *
 * Each runs the d9_backend member of the same name (kernels.h has the
 * contracts) on rc->be (NULL: the CPU backend). When that backend is not
 * the CPU's and answers an error other than -EINVAL / -EOVERFLOW (-EIO,
 * -ENOMEM, -ENOTSUP, -ENODEV: "not here"), the same call runs on the CPU
 * backend and its answer is returned. */
int d9_run_cast(d9_read_ctx *rc, void *dst, d9_dtype dt, const void *src, d9_dtype st,
                int64_t n);
int d9_run_affine(d9_read_ctx *rc, void *dst, d9_dtype dt, const void *src, d9_dtype st,
                  int64_t n, float a, float b);
int d9_run_fp8_dequant(d9_read_ctx *rc, void *dst, const uint8_t *w, d9_dtype wt,
                       const float *scale, const d9_fp8_box *box);
int d9_run_fp8_amax(d9_read_ctx *rc, float *amax, const float *x, const d9_fp8_box *box);
int d9_run_fp8_quant(d9_read_ctx *rc, uint8_t *dst, const float *x, const float *scale,
                     const d9_fp8_box *box);
int d9_run_transpose(d9_read_ctx *rc, void *dst, const void *src, size_t es, int64_t batch,
                     int64_t rows, int64_t cols);
/* The optional members: a backend without one (NULL) runs the CPU's. */
int d9_run_mxfp4_dequant(d9_read_ctx *rc, void *dst, d9_dtype dt, const uint8_t *blocks,
                         const uint8_t *scales, int64_t j0, int64_t n, int64_t group);
int d9_run_mxfp4_quant(d9_read_ctx *rc, uint8_t *blocks, uint8_t *scales, const float *x,
                       int64_t ngroups, int64_t group);

#endif
