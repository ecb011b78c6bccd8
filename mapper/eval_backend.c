/* eval_backend.c - the evaluator's door to the kernels: which backend a
 * mount computes on (d9_eval_backend), and every compute call of a read
 * (d9_run_*, eval_internal.h) on the read's backend, with the one fallback
 * to the CPU backend. No other file of mapper/ names a backend or a
 * kernel: what runs a read's compute is decided here and nowhere else.
 *
 * The fallback: a backend other than the CPU's that answers an error other
 * than -EINVAL / -EOVERFLOW could not run the call (kernels.h); the same
 * call then runs on the CPU backend. That is safe for every member: the
 * inputs are const, the CPU overwrites every output element of cast,
 * affine, dequant, quant and transpose, and an amax call that failed half
 * way has folded only maxima of the same data into the window, which
 * folding them again does not change. An optional member a backend lacks
 * (NULL, kernels.h) counts as -ENOTSUP: the CPU backend runs it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "eval_internal.h"
#include "kernels/cuda/cuda.h"

int d9_eval_backend(const char *dev, const d9_backend **out, d9_diag *diag) {
  *out = NULL;
  if (!dev || !strcmp(dev, "auto") || !strcmp(dev, "cpu")) {
    *out = d9_backend_cpu();
    return 0;
  }
  if (strncmp(dev, "cuda", 4) || (dev[4] && dev[4] != ':'))
    return d9_diag_fail(diag, EINVAL, "-o device=%s: want auto, cpu or cuda[:N]", dev);
  int n = d9_cuda_device_count();
  if (n == -ENODEV)
    return d9_diag_fail(diag, ENODEV, "-o device=%s: this d9dfs was built without CUDA", dev);
  int want = dev[4] ? atoi(dev + 5) : 0;
  if (want < 0 || want >= n)
    return d9_diag_fail(diag, ENODEV, "-o device=%s: %d CUDA device%s found", dev, n,
                        n == 1 ? "" : "s");
  /* The CUDA backend has every member and is bit-identical to the CPU
   * (tests/test_cuda.c), but a backend made here, before the daemon forks,
   * would not survive the fork (kernels/cuda/cuda.h): choosing it belongs
   * to the front end after daemonising. Until then a GPU is refused with
   * the reason rather than silently served by the CPU. */
  return d9_diag_fail(diag, ENOTSUP, "-o device=%s: reads are not evaluated on the GPU yet "
                      "(use device=cpu or auto)", dev);
}

/* The backend of rc's read. */
static inline const d9_backend *be_of(const d9_read_ctx *rc) {
  return rc->be ? rc->be : d9_backend_cpu();
}

/* 1 when be answered r for a call the CPU backend should run instead. */
static inline int on_cpu_instead(const d9_backend *be, int r) {
  return r != 0 && r != -EINVAL && r != -EOVERFLOW && be != d9_backend_cpu();
}

int d9_run_cast(d9_read_ctx *rc, void *dst, d9_dtype dt, const void *src, d9_dtype st,
                int64_t n) {
  const d9_backend *be = be_of(rc);
  int r = be->cast(dst, dt, src, st, n);
  return on_cpu_instead(be, r) ? d9_backend_cpu()->cast(dst, dt, src, st, n) : r;
}

int d9_run_affine(d9_read_ctx *rc, void *dst, d9_dtype dt, const void *src, d9_dtype st,
                  int64_t n, float a, float b) {
  const d9_backend *be = be_of(rc);
  int r = be->affine(dst, dt, src, st, n, a, b);
  return on_cpu_instead(be, r) ? d9_backend_cpu()->affine(dst, dt, src, st, n, a, b) : r;
}

int d9_run_fp8_dequant(d9_read_ctx *rc, void *dst, const uint8_t *w, d9_dtype wt,
                       const float *scale, const d9_fp8_box *box) {
  const d9_backend *be = be_of(rc);
  int r = be->fp8_dequant(dst, w, wt, scale, box);
  return on_cpu_instead(be, r) ? d9_backend_cpu()->fp8_dequant(dst, w, wt, scale, box) : r;
}

int d9_run_fp8_amax(d9_read_ctx *rc, float *amax, const float *x, const d9_fp8_box *box) {
  const d9_backend *be = be_of(rc);
  int r = be->fp8_amax(amax, x, box);
  return on_cpu_instead(be, r) ? d9_backend_cpu()->fp8_amax(amax, x, box) : r;
}

int d9_run_fp8_quant(d9_read_ctx *rc, uint8_t *dst, const float *x, const float *scale,
                     const d9_fp8_box *box) {
  const d9_backend *be = be_of(rc);
  int r = be->fp8_quant(dst, x, scale, box);
  return on_cpu_instead(be, r) ? d9_backend_cpu()->fp8_quant(dst, x, scale, box) : r;
}

int d9_run_transpose(d9_read_ctx *rc, void *dst, const void *src, size_t es, int64_t batch,
                     int64_t rows, int64_t cols) {
  const d9_backend *be = be_of(rc);
  int r = be->transpose(dst, src, es, batch, rows, cols);
  return on_cpu_instead(be, r) ? d9_backend_cpu()->transpose(dst, src, es, batch, rows, cols)
                               : r;
}

int d9_run_mxfp4_dequant(d9_read_ctx *rc, void *dst, d9_dtype dt, const uint8_t *blocks,
                         const uint8_t *scales, int64_t j0, int64_t n, int64_t group) {
  const d9_backend *be = be_of(rc);
  int r = be->mxfp4_dequant ? be->mxfp4_dequant(dst, dt, blocks, scales, j0, n, group)
                            : -ENOTSUP;
  return on_cpu_instead(be, r)
             ? d9_backend_cpu()->mxfp4_dequant(dst, dt, blocks, scales, j0, n, group)
             : r;
}

int d9_run_mxfp4_quant(d9_read_ctx *rc, uint8_t *blocks, uint8_t *scales, const float *x,
                       int64_t ngroups, int64_t group) {
  const d9_backend *be = be_of(rc);
  int r = be->mxfp4_quant ? be->mxfp4_quant(blocks, scales, x, ngroups, group) : -ENOTSUP;
  return on_cpu_instead(be, r)
             ? d9_backend_cpu()->mxfp4_quant(blocks, scales, x, ngroups, group)
             : r;
}
