/* backend.c - the CPU backend: its table (every member of d9_backend:
 * cast in cast.c, the FP8 boxes in fp8.c, transpose in transpose.c, MXFP4
 * in mxfp4.c) and
 * affine.
 *
 * affine computes dst[i] = cast_dt(t) with t = f32(src[i]) * a, then
 * t = t + b, each rounded to F32 (two roundings; never a fused multiply-add).
 * A NaN t is replaced by the default quiet NaN +0x7fc00000 before the cast,
 * whatever the input NaN's sign or payload: hardware differs on which NaN a
 * product returns (x86 keeps the operand's, and makes Inf * 0 0xffc00000;
 * CUDA returns 0x7fffffff), and backends must agree bit for bit. So a NaN
 * result is F32 0x7fc00000, F16 0x7e00, BF16 0x7fc0, E5M2 0x7e, E4M3 0x7f.
 * Unlike cast, affine uses the FP environment: it assumes the default one
 * (round to nearest, no FTZ/DAZ), so subnormals are computed exactly.
 *
 * Contraction would break the two-rounding rule: build with -std=c11 (gcc
 * then defaults to -ffp-contract=off) and never with -ffp-contract=fast,
 * -ffast-math or -std=gnu11 on a target with FMA.
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunknown-pragmas"
#pragma STDC FP_CONTRACT OFF /* honoured by clang; gcc relies on -std=c11 */
#pragma GCC diagnostic pop

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/cpu.h"
#include "kernels/kernels.h"


enum { AFFINE_BLOCK = 256 }; /* elements per F32 scratch block */

/* t = x * a, then t + b, on k floats in place, NaN made canonical. */
static inline void affine_block(float *restrict x, int64_t k, float a,
                                float b) {
  uint32_t qnan_bits = 0x7fc00000u;
  float qnan;
  memcpy(&qnan, &qnan_bits, sizeof qnan);
  for (int64_t i = 0; i < k; i++) {
    float t = x[i] * a;
    t = t + b;
    x[i] = t != t ? qnan : t;
  }
}

/* The CPU backend's affine (see kernels.h). st and dt must be castable;
 * src and dst must not overlap.
 * Returns 0; -EINVAL for n < 0, a non-castable type or a NULL pointer with
 * n > 0; -EOVERFLOW when the byte count does not fit in a size_t. */
static int cpu_affine(void *dst, d9_dtype dt, const void *src, d9_dtype st,
                      int64_t n, float a, float b) {
  if (n < 0 || !d9_dtype_is_castable(st) || !d9_dtype_is_castable(dt))
    return -EINVAL;
  if (n == 0)
    return 0;
  if (dst == NULL || src == NULL)
    return -EINVAL;
  size_t ssize = d9_dtype_size(st), dsize = d9_dtype_size(dt);
  if ((uint64_t)n > SIZE_MAX / ssize || (uint64_t)n > SIZE_MAX / dsize)
    return -EOVERFLOW;
  uint8_t *d = dst;
  const uint8_t *s = src;
  float buf[AFFINE_BLOCK];
  for (int64_t i = 0; i < n; i += AFFINE_BLOCK) {
    int64_t k = n - i < AFFINE_BLOCK ? n - i : AFFINE_BLOCK;
    int rc = d9_cpu_cast(buf, D9_F32, s + (size_t)i * ssize, st, k);
    if (rc != 0)
      return rc;
    if (k == AFFINE_BLOCK)
      affine_block(buf, AFFINE_BLOCK, a, b); /* constant count: vectorised */
    else
      affine_block(buf, k, a, b);
    rc = d9_cpu_cast(d + (size_t)i * dsize, dt, buf, D9_F32, k);
    if (rc != 0)
      return rc;
  }
  return 0;
}

static const d9_backend cpu_backend = {
    .name = "cpu",
    .cast = d9_cpu_cast,
    .affine = cpu_affine,
    .fp8_dequant = d9_cpu_fp8_dequant_box,
    .fp8_amax = d9_cpu_fp8_amax_box,
    .fp8_quant = d9_cpu_fp8_quant_box,
    .transpose = d9_cpu_transpose,
    .mxfp4_dequant = d9_cpu_mxfp4_dequant,
    .mxfp4_quant = d9_cpu_mxfp4_quant,
};

const d9_backend *d9_backend_cpu(void) { return &cpu_backend; }
