/* mxfp4.c - MXFP4 (OCP microscaling FP4) dequant and quant kernels, CPU.
 *
 * The format (gpt-oss checkpoints): values come in groups of `group` (32 in
 * gpt-oss) sharing one E8M0 scale byte s (the power 2^(s - 127); the
 * OCP format's NaN, s = 255, is read as 2^128 like transformers does);
 * each value is an E2M1 code of 4 bits, two per byte,
 * the even value in the low nibble. Code c: sign bit c & 8, magnitude
 * {0, 0.5, 1, 1.5, 2, 3, 4, 6}[c & 7].
 *
 * A flat stream: value v has its code in nibble v % 2 of byte v / 2 and its
 * scale in byte v / group. The kernels work on a segment [j0, j0 + n) of
 * such a stream; blocks points at byte j0 / 2 and scales at byte
 * j0 / group.
 *
 * The exact rules (mapper/node_ops.c documents the operations built on them):
 *  - dequant: the exact value e2m1(c) * 2^(s - 127), rounded to the dst
 *    dtype (F32 or BF16). Every such value with magnitude below 2^128 has
 *    at most two significant bits and is at least 2^-128, so it is exact in
 *    both; from 2^128 up it overflows to +-Inf. Code 0 / 8 gives +0 / -0
 *    whatever s (s = 255 included: no NaN is ever produced). That is what
 *    transformers' convert_moe_packed_tensors(..., dtype=bfloat16 or
 *    float32) computes (torch.ldexp of the table value), checked against it
 *    for all 16 codes x 256 scales (tests/py/check_mxfp4_peer.py).
 *  - quant (the inverse, OCP MX rule): per group, amax = max |x| with NaN
 *    ignored; s = 0 when amax is 0, 254 when it is Inf, else
 *    floor(log2(amax)) - 2 + 127 clamped to >= 0 (so the largest value
 *    lands in [4, 8) before saturation); each code is x * 2^(127 - s)
 *    rounded to the nearest E2M1 magnitude, ties to the even code,
 *    saturating at 6 (an Inf gives +-6, which dequantises to +-Inf with
 *    s = 254), with x's sign bit (so -0 and small negatives give code 8).
 *    A NaN has no MXFP4 encoding: it gives code 0 or 8 by its sign bit.
 *    x * 2^(127 - s) is exact except below 2^-126, where any rounding still
 *    gives code 0 or 8.
 * Both are exact-float formulas (ldexpf, comparisons): no dependence on the
 * FP environment.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/cpu.h"
#include "kernels/kernels.h"

/* The E2M1 magnitudes, codes 0..7. */
static const float e2m1_mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

float d9_e2m1_to_f32(uint8_t code) {
  float m = e2m1_mag[code & 7];
  return (code & 8) ? -m : m;
}

float d9_mxfp4_value(uint8_t code, uint8_t s) {
  return ldexpf(d9_e2m1_to_f32(code), (int)s - 127); /* exact, or +-Inf */
}

static inline uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

/* Every result: lut_f32[s][c] is d9_mxfp4_value(c, s) as F32 bits,
 * lut_bf16[s][c] its RNE narrowing to BF16 (exact here); 24 KiB, built
 * once (an ldexpf per value cost a fifth of a dequant's time). */
static uint32_t lut_f32[256][16];
static uint16_t lut_bf16[256][16];
static pthread_once_t lut_once = PTHREAD_ONCE_INIT;

static void build_lut(void) {
  for (int s = 0; s < 256; s++)
    for (int c = 0; c < 16; c++) {
      float v = d9_mxfp4_value((uint8_t)c, (uint8_t)s);
      lut_f32[s][c] = f32_bits(v);
      lut_bf16[s][c] = d9_f32_to_bf16(v);
    }
}

int d9_cpu_mxfp4_dequant(void *dst, d9_dtype dt, const uint8_t *blocks,
                         const uint8_t *scales, int64_t j0, int64_t n, int64_t group) {
  if (n < 0 || j0 < 0 || group <= 0 || group % 2 || (dt != D9_F32 && dt != D9_BF16))
    return -EINVAL;
  if (n == 0) return 0;
  if (!dst || !blocks || !scales) return -EINVAL;
  if ((uint64_t)n > SIZE_MAX / 4) return -EOVERFLOW;
  unsigned char *o = dst; /* any alignment */
  pthread_once(&lut_once, build_lut);
  int64_t b0 = j0 / 2, g0 = j0 / group;
  for (int64_t v = j0, end = j0 + n; v < end;) {
    int64_t g = v / group, gend = (g + 1) * group < end ? (g + 1) * group : end;
    const uint32_t *f32 = lut_f32[scales[g - g0]];
    const uint16_t *bf16 = lut_bf16[scales[g - g0]];
    for (; v < gend; v++) {
      uint8_t byte = blocks[v / 2 - b0];
      int c = (v & 1) ? byte >> 4 : byte & 15;
      size_t k = (size_t)(v - j0);
      if (dt == D9_F32)
        memcpy(o + k * 4, &f32[c], 4);
      else
        memcpy(o + k * 2, &bf16[c], 2);
    }
  }
  return 0;
}

/* The E2M1 code of magnitude a = |q| >= 0, round to nearest, ties to the
 * even code, saturating at 6; NaN gives 0. */
static inline uint8_t e2m1_code(float a) {
  if (!(a > 0.25f)) return 0; /* NaN too */
  if (a < 0.75f) return 1;
  if (a <= 1.25f) return 2;
  if (a < 1.75f) return 3;
  if (a <= 2.5f) return 4;
  if (a < 3.5f) return 5;
  if (a <= 5.0f) return 6;
  return 7;
}

uint8_t d9_mxfp4_scale(float amax) {
  if (!(amax > 0.0f)) return 0; /* 0 (or NaN: no value counts) */
  if (isinf(amax)) return 254;
  int ex;
  frexpf(amax, &ex); /* amax = m * 2^ex, m in [0.5, 1): floor(log2) = ex - 1 */
  int e = ex - 1 - 2;
  if (e < -127) e = -127;
  return (uint8_t)(e + 127);
}

int d9_cpu_mxfp4_quant(uint8_t *blocks, uint8_t *scales, const float *x, int64_t ngroups,
                       int64_t group) {
  if (ngroups < 0 || group <= 0 || group % 2) return -EINVAL;
  if (ngroups == 0) return 0;
  if (!blocks || !scales || !x) return -EINVAL;
  if ((uint64_t)ngroups > (uint64_t)INT64_MAX / (uint64_t)group ||
      (uint64_t)(ngroups * group) > SIZE_MAX / sizeof(float))
    return -EOVERFLOW;
  for (int64_t g = 0; g < ngroups; g++) {
    const float *xs = x + g * group;
    uint8_t *b = blocks + g * (group / 2);
    float amax = 0.0f;
    for (int64_t k = 0; k < group; k++) {
      float a = fabsf(xs[k]);
      if (a > amax) amax = a; /* NaN never compares greater */
    }
    uint8_t s = d9_mxfp4_scale(amax);
    scales[g] = s;
    float inv = ldexpf(1.0f, 127 - (int)s); /* 2^-e, e in [-127, 127]: exact */
    for (int64_t k = 0; k < group; k += 2) {
      uint8_t lo = e2m1_code(fabsf(xs[k] * inv)) | (signbit(xs[k]) ? 8 : 0);
      uint8_t hi = e2m1_code(fabsf(xs[k + 1] * inv)) | (signbit(xs[k + 1]) ? 8 : 0);
      b[k / 2] = (uint8_t)(lo | hi << 4);
    }
  }
  return 0;
}
