/* convert.cuh - the scalar conversions and F32 arithmetic of the CUDA
 * kernels, a line-by-line mirror of kernels/cpu/cast.c (widen_*, narrow_*,
 * round_mag) and of the arithmetic in kernels/cpu/backend.c and fp8.c.
 *
 * Bit identity with the CPU rests on three things:
 *  - The conversions are the same integer expressions as cast.c (same masks,
 *    same order); the few float operations in them are exact (power-of-two
 *    scaling, truncating conversion, subtracting the integer part).
 *  - Every float operation that rounds goes through d9c_mul_rn / add_rn /
 *    div_rn, which on the device are inline PTX mul.rn.f32 / add.rn.f32 /
 *    div.rn.f32: no contraction into an FMA (nvcc's -fmad=true contracts a
 *    plain a * b + c), no flush to zero whatever -ftz / --use_fast_math say
 *    (nvcc would emit mul.rn.ftz.f32 for __fmul_rn under -ftz=true), and
 *    div.rn is the IEEE division whatever -prec-div says. On the host (only
 *    for checking the mirror) they are plain C operators.
 *  - NaN results are decided from bits, never from the hardware's choice of
 *    NaN: affine and dequant make a NaN result 0x7fc00000 like the CPU, and
 *    quant reproduces the host CPU's NaN rules (see d9c_quant_e4m3).
 * Everything is __host__ __device__ so a host program can compare the
 * mirror with cast.c exhaustively without a GPU.
 */
#ifndef D9_CUDA_CONVERT_CUH
#define D9_CUDA_CONVERT_CUH

#include <stdint.h>
#include <string.h>

#define D9C_HD __host__ __device__ __forceinline__

/* ---- bits and exact-rounding arithmetic ---- */

D9C_HD uint32_t d9c_bits(float f) {
#ifdef __CUDA_ARCH__
  return __float_as_uint(f);
#else
  uint32_t w;
  memcpy(&w, &f, sizeof w);
  return w;
#endif
}

D9C_HD float d9c_float(uint32_t w) {
#ifdef __CUDA_ARCH__
  return __uint_as_float(w);
#else
  float f;
  memcpy(&f, &w, sizeof f);
  return f;
#endif
}

/* a * b rounded once to nearest even; subnormals kept. */
D9C_HD float d9c_mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  float r;
  asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
#else
  return a * b;
#endif
}

/* a + b rounded once to nearest even; subnormals kept. */
D9C_HD float d9c_add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  float r;
  asm("add.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
#else
  return a + b;
#endif
}

/* a - b rounded once to nearest even; subnormals kept. */
D9C_HD float d9c_sub_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  float r;
  asm("sub.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
#else
  return a - b;
#endif
}

/* a / b, the IEEE division rounded to nearest even; subnormals kept. */
D9C_HD float d9c_div_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  float r;
  asm("div.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
#else
  return a / b;
#endif
}

D9C_HD int d9c_isnan_bits(uint32_t w) { return (w & 0x7fffffffu) > 0x7f800000u; }

/* ---- branch-free selection, as in cast.c ---- */

D9C_HD uint32_t d9c_mask_if(int cond) { return -(uint32_t)(cond != 0); }

D9C_HD uint32_t d9c_pick(uint32_t mask, uint32_t yes, uint32_t no) {
  return (yes & mask) | (no & ~mask);
}

/* ---- widening: code -> F32 bits (cast.c widen_mag and friends) ---- */

D9C_HD uint32_t d9c_widen_mag(uint32_t em, int mb, int bias, uint32_t special) {
  uint32_t shifted = em << (23 - mb);
  uint32_t normal = shifted + ((uint32_t)(127 - bias) << 23);
  uint32_t inf_nan = shifted | 0x7f800000u;
  /* subnormal: em * 2^(1 - bias - mb), exact in F32 and itself normal */
  float scale = d9c_float((uint32_t)(127 + 1 - bias - mb) << 23);
  uint32_t sub = d9c_bits(d9c_mul_rn((float)(int32_t)em, scale));
  uint32_t w = d9c_pick(d9c_mask_if((int32_t)em >= (int32_t)special), inf_nan, normal);
  return d9c_pick(d9c_mask_if((int32_t)em < (int32_t)(1u << mb)), sub, w);
}

D9C_HD uint32_t d9c_widen_f16(uint32_t h) {
  return ((h & 0x8000u) << 16) | d9c_widen_mag(h & 0x7fffu, 10, 15, 0x7c00u);
}

D9C_HD uint32_t d9c_widen_bf16(uint32_t h) { return h << 16; }

D9C_HD uint32_t d9c_widen_e4m3(uint32_t v) {
  return ((v & 0x80u) << 24) | d9c_widen_mag(v & 0x7fu, 3, 7, 0x7fu);
}

D9C_HD uint32_t d9c_widen_e5m2(uint32_t v) {
  return ((v & 0x80u) << 24) | d9c_widen_mag(v & 0x7fu, 2, 15, 0x7cu);
}

/* ---- narrowing: F32 bits -> code (cast.c round_mag and friends) ---- */

D9C_HD uint32_t d9c_round_mag(uint32_t a, int mb, int bias) {
  const int sh = 23 - mb;
  uint32_t n = a - ((uint32_t)(127 - bias) << 23); /* wraps if subnormal */
  uint32_t rn = (n + (1u << (sh - 1)) - 1 + ((n >> sh) & 1u)) >> sh;
  uint32_t sb = d9c_mask_if((int32_t)a < (int32_t)((uint32_t)(128 - bias) << 23));
  float scale = d9c_float((uint32_t)(127 + mb + bias - 1) << 23);
  float f = d9c_mul_rn(d9c_float(a & sb), scale); /* units of the smallest subnormal */
  int32_t i = (int32_t)f;                         /* truncates; f < 2^mb */
  float frac = d9c_sub_rn(f, (float)i);           /* exact */
  int32_t up = (frac > 0.5f) | ((frac == 0.5f) & i);
  uint32_t rs = (uint32_t)(i + (up & 1));
  return d9c_pick(sb, rs, rn);
}

D9C_HD uint32_t d9c_narrow_f16(uint32_t w) {
  uint32_t sign = (w >> 16) & 0x8000u;
  uint32_t a = w & 0x7fffffffu;
  uint32_t m = d9c_round_mag(a, 10, 15);
  m = d9c_pick(d9c_mask_if((int32_t)m > 0x7c00), 0x7c00u, m); /* overflow: Inf */
  m = d9c_pick(d9c_mask_if((int32_t)a > 0x7f800000), 0x7e00u, m);
  return sign | m;
}

D9C_HD uint32_t d9c_narrow_bf16(uint32_t w) {
  uint32_t r = (w + 0x7fffu + ((w >> 16) & 1u)) >> 16;
  uint32_t nan = (w >> 16) | 0x0040u;
  return d9c_pick(d9c_mask_if((int32_t)(w & 0x7fffffffu) > 0x7f800000), nan, r) & 0xffffu;
}

D9C_HD uint32_t d9c_narrow_e4m3(uint32_t w) {
  uint32_t sign = (w >> 24) & 0x80u;
  uint32_t a = w & 0x7fffffffu;
  uint32_t m = d9c_round_mag(a, 3, 7);
  m = d9c_pick(d9c_mask_if((int32_t)m > 0x7e), 0x7eu, m);       /* saturate, Inf too */
  m = d9c_pick(d9c_mask_if((int32_t)a > 0x7f800000), 0x7fu, m); /* NaN */
  return sign | m;
}

D9C_HD uint32_t d9c_narrow_e5m2(uint32_t w) {
  uint32_t sign = (w >> 24) & 0x80u;
  uint32_t a = w & 0x7fffffffu;
  uint32_t m = d9c_round_mag(a, 2, 15);
  m = d9c_pick(d9c_mask_if((int32_t)m > 0x7c), 0x7cu, m); /* overflow: Inf */
  m = d9c_pick(d9c_mask_if((int32_t)a > 0x7f800000), 0x7eu, m);
  return sign | m;
}

/* ---- element types as template parameters ----
 *
 * d9c_type<DT> gives the storage type of a castable dtype (values of
 * d9_dtype: F8_E4M3 = 3, F8_E5M2 = 4, F16 = 7, BF16 = 8, F32 = 11 - the
 * numbering of dtype.h, checked by static_asserts in cast.cu), widen()
 * from a stored code to F32 bits and narrow() back. */

template <int DT> struct d9c_type;

template <> struct d9c_type<3> { /* F8_E4M3 */
  typedef uint8_t T;
  static D9C_HD uint32_t widen(T v) { return d9c_widen_e4m3(v); }
  static D9C_HD T narrow(uint32_t w) { return (T)d9c_narrow_e4m3(w); }
};

template <> struct d9c_type<4> { /* F8_E5M2 */
  typedef uint8_t T;
  static D9C_HD uint32_t widen(T v) { return d9c_widen_e5m2(v); }
  static D9C_HD T narrow(uint32_t w) { return (T)d9c_narrow_e5m2(w); }
};

template <> struct d9c_type<7> { /* F16 */
  typedef uint16_t T;
  static D9C_HD uint32_t widen(T v) { return d9c_widen_f16(v); }
  static D9C_HD T narrow(uint32_t w) { return (T)d9c_narrow_f16(w); }
};

template <> struct d9c_type<8> { /* BF16 */
  typedef uint16_t T;
  static D9C_HD uint32_t widen(T v) { return d9c_widen_bf16(v); }
  static D9C_HD T narrow(uint32_t w) { return (T)d9c_narrow_bf16(w); }
};

template <> struct d9c_type<11> { /* F32: identity */
  typedef uint32_t T;
  static D9C_HD uint32_t widen(T v) { return v; }
  static D9C_HD T narrow(uint32_t w) { return w; }
};

/* ---- the arithmetic of the other kernels ---- */

#define D9C_QNAN 0x7fc00000u /* the canonical NaN of affine and dequant */

/* backend.c affine: t = x * a, t = t + b (two roundings), NaN canonical. */
D9C_HD uint32_t d9c_affine(uint32_t x, float a, float b) {
  float t = d9c_mul_rn(d9c_float(x), a);
  t = d9c_add_rn(t, b);
  uint32_t w = d9c_bits(t);
  return d9c_isnan_bits(w) ? D9C_QNAN : w;
}

/* fp8.c dequant: f32(w) * s (one rounding), NaN canonical. */
D9C_HD uint32_t d9c_dequant(uint32_t x, float s) {
  uint32_t w = d9c_bits(d9c_mul_rn(d9c_float(x), s));
  return d9c_isnan_bits(w) ? D9C_QNAN : w;
}

/* How the host CPU's division makes NaNs, which fp8.c's quant inherits
 * (it narrows whatever NaN x / s returns when x is not NaN): invalid_sign
 * is the sign bit (0x80000000 or 0) of the default NaN of 0/0 and Inf/Inf
 * (x86: set; Arm, RISC-V: clear); nan_prop is 1 when a NaN operand is
 * returned (quieted, sign kept) rather than the default NaN. Probed on the
 * host at run time (backend.cu), so the GPU copies whatever CPU it runs
 * beside. */
typedef struct d9c_nan_rules {
  uint32_t invalid_sign;
  int nan_prop;
} d9c_nan_rules;

/* fp8.c quant: e4m3(x / s), one F32 division, saturating narrowing; a NaN
 * x gives 0x7f with x's sign; a NaN quotient of a non-NaN x gives 0x7f with
 * the sign the host's division would give it. */
D9C_HD uint32_t d9c_quant_e4m3(uint32_t x, float s, d9c_nan_rules nr) {
  if (d9c_isnan_bits(x))
    return 0x7fu | ((x >> 24) & 0x80u);
  uint32_t t = d9c_bits(d9c_div_rn(d9c_float(x), s));
  if (d9c_isnan_bits(t)) {
    uint32_t sb = d9c_bits(s);
    uint32_t sign = d9c_isnan_bits(sb) && nr.nan_prop ? sb & 0x80000000u : nr.invalid_sign;
    return 0x7fu | (sign >> 24);
  }
  return d9c_narrow_e4m3(t);
}

/* *p = max(*p, v), atomically on the device (plain on the host). */
D9C_HD void d9c_atomic_max(uint32_t *p, uint32_t v) {
#ifdef __CUDA_ARCH__
  atomicMax(p, v);
#else
  *p = v > *p ? v : *p;
#endif
}

/* fp8.c amax, one element: |x| as bits when x is not NaN, else 0 (the
 * identity of the maximum over non-negative bit patterns, which order like
 * their values). */
D9C_HD uint32_t d9c_abs_or_zero(uint32_t x) {
  uint32_t a = x & 0x7fffffffu;
  return a > 0x7f800000u ? 0u : a;
}

#endif
