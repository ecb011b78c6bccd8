/* cast.c - conversions between the float element types, scalar and array.
 *
 * The exact rules; every backend reproduces them bit for bit.
 *
 * Widening (F16, BF16, F8_E4M3, F8_E5M2 -> F32) is exact. A NaN widens to
 * the F32 NaN with the same sign and the source mantissa bits copied into
 * the top of the F32 mantissa, not quieted (F16 0x7d00 -> 0x7fa00000,
 * E4M3 0x7f -> 0x7ff00000, BF16 h -> h << 16). Inf widens to Inf.
 *
 * Narrowing (F32 -> F16, BF16, F8_E4M3, F8_E5M2) rounds once:
 *  - Finite values round to nearest, ties to the even code, as if the target
 *    had an unbounded exponent range above. Subnormal targets are rounded the
 *    same way (no flush to zero) and F32 subnormal inputs are honoured; a
 *    value below half the smallest subnormal becomes a zero of its sign.
 *  - Overflow, F16 / BF16 / F8_E5M2: a value whose rounded magnitude is
 *    beyond the largest finite (65504, 0x1.fep127, 57344) becomes Inf with
 *    its sign. Equivalently |x| >= max + ulp(max)/2 gives Inf: the midpoint
 *    itself is a tie that goes to the even code, which is Inf (F16 threshold
 *    65520, E5M2 61440, BF16 0x1.ffp127).
 *  - Overflow, F8_E4M3 (the "fn" variant, no Inf): every |x| > 448, +-Inf
 *    included, saturates to +-448 (0x7e / 0xfe), as torch's float8_e4m3fn
 *    cast does (torch 2.15, tests/mount/e4m3.sh).
 *  - Inf: F16 0x7c00, BF16 0x7f80, E5M2 0x7c, each with the sign; F8_E4M3
 *    has no Inf, so +-Inf saturates to +-448 (above).
 *  - NaN keeps its sign and becomes quiet: F16 0x7e00 | sign, BF16
 *    (bits >> 16) | 0x0040 (sign and top payload bits kept), E5M2 0x7e |
 *    sign, E4M3 0x7f | sign.
 *
 * A pair of non-F32 types converts through F32: exact widening, then one
 * rounding (so E5M2 Inf -> E4M3 gives 448, F16 -> E4M3 saturates).
 *
 * Results come from integer operations and float operations that are exact
 * (power-of-two scaling, truncating conversion, subtracting the integer
 * part), so neither the rounding mode nor FTZ/DAZ changes any bit.
 * Elements are read and written with memcpy in host byte order; hosts are
 * little-endian like the safetensors format.
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunknown-pragmas"
#pragma STDC FP_CONTRACT OFF /* for clang; gcc: see backend.c */
#pragma GCC diagnostic pop

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/cpu.h"
#include "kernels/kernels.h"

static D9_INLINE uint32_t bits_of(float f) {
  uint32_t w;
  memcpy(&w, &f, sizeof w);
  return w;
}

static D9_INLINE float float_of(uint32_t w) {
  float f;
  memcpy(&f, &w, sizeof f);
  return f;
}

/* Branch-free selection. The conversions below compute every case and
 * select with masks rather than ?:, because gcc turns a ?: (and a mask
 * written as cond ? ~0u : 0) into a branch and sinks the float work into
 * it, and a loop with a conditional float operation is not if-converted
 * (it might trap), so it is not vectorised. Comparisons are on int32_t:
 * every operand is below 2^31 and SSE2 has only signed 32-bit compares. */
static D9_INLINE uint32_t mask_if(int cond) { return -(uint32_t)(cond != 0); }

static D9_INLINE uint32_t pick(uint32_t mask, uint32_t yes, uint32_t no) {
  return (yes & mask) | (no & ~mask);
}

/* ---- widening: code -> F32 bits ---- */

/* em: a code without its sign bit, mb mantissa bits, exponent bias.
 * em >= special (the first Inf/NaN code without sign) is Inf or NaN: the
 * exponent becomes all ones and the mantissa is copied to the top. */
static D9_INLINE uint32_t widen_mag(uint32_t em, int mb, int bias,
                                 uint32_t special) {
  uint32_t shifted = em << (23 - mb);
  uint32_t normal = shifted + ((uint32_t)(127 - bias) << 23);
  uint32_t inf_nan = shifted | 0x7f800000u;
  /* subnormal: em * 2^(1 - bias - mb), exact in F32 and itself normal */
  float scale = float_of((uint32_t)(127 + 1 - bias - mb) << 23);
  uint32_t sub = bits_of((float)(int32_t)em * scale);
  uint32_t w = pick(mask_if((int32_t)em >= (int32_t)special), inf_nan, normal);
  return pick(mask_if((int32_t)em < (int32_t)(1u << mb)), sub, w);
}

static D9_INLINE uint32_t widen_f16(uint32_t h) {
  return ((h & 0x8000u) << 16) | widen_mag(h & 0x7fffu, 10, 15, 0x7c00u);
}

static D9_INLINE uint32_t widen_bf16(uint32_t h) { return h << 16; }

static D9_INLINE uint32_t widen_e4m3(uint32_t v) {
  return ((v & 0x80u) << 24) | widen_mag(v & 0x7fu, 3, 7, 0x7fu);
}

static D9_INLINE uint32_t widen_e5m2(uint32_t v) {
  return ((v & 0x80u) << 24) | widen_mag(v & 0x7fu, 2, 15, 0x7cu);
}

/* ---- narrowing: F32 bits -> code ---- */

/* Rounds the magnitude a (F32 bits, sign clear) to nearest-even in a format
 * with mb mantissa bits and the given exponent bias (smallest normal
 * 2^(1 - bias)), with no upper exponent limit: the result may exceed the
 * format's largest code and the caller clamps it; for a >= Inf it is above
 * any format's largest finite code.
 *
 * Normal targets: rebias the exponent in place and round the low 23 - mb
 * bits away; a carry out of the mantissa moves into the exponent, which is
 * the next code. Subnormal targets: scale by a power of two to units of the
 * smallest subnormal (exact, below 2^mb), split into integer and fraction
 * with a truncating conversion (exact) and round the fraction by hand.
 * FTZ/DAZ can only zero an F32 subnormal input or its product, and those
 * round to 0 anyway. No variable shifts, so SSE2 vectorises it. */
static D9_INLINE uint32_t round_mag(uint32_t a, int mb, int bias) {
  const int sh = 23 - mb;
  uint32_t n = a - ((uint32_t)(127 - bias) << 23); /* wraps if subnormal */
  uint32_t rn = (n + (1u << (sh - 1)) - 1 + ((n >> sh) & 1u)) >> sh;
  uint32_t sb = mask_if((int32_t)a < (int32_t)((uint32_t)(128 - bias) << 23));
  float scale = float_of((uint32_t)(127 + mb + bias - 1) << 23);
  float f = float_of(a & sb) * scale; /* units of the smallest subnormal */
  int32_t i = (int32_t)f;             /* f < 2^mb: no overflow */
  float frac = f - (float)i;
  int32_t up = (frac > 0.5f) | ((frac == 0.5f) & i);
  uint32_t rs = (uint32_t)(i + (up & 1));
  return pick(sb, rs, rn);
}

static D9_INLINE uint16_t narrow_f16(uint32_t w) {
  uint32_t sign = (w >> 16) & 0x8000u;
  uint32_t a = w & 0x7fffffffu;
  uint32_t m = round_mag(a, 10, 15);
  m = pick(mask_if((int32_t)m > 0x7c00), 0x7c00u, m); /* overflow: Inf */
  m = pick(mask_if((int32_t)a > 0x7f800000), 0x7e00u, m);
  return (uint16_t)(sign | m);
}

static D9_INLINE uint16_t narrow_bf16(uint32_t w) {
  /* same exponent range as F32: round the low 16 bits away in place; a
   * carry out of the mantissa correctly reaches Inf at the top */
  uint32_t r = (w + 0x7fffu + ((w >> 16) & 1u)) >> 16;
  uint32_t nan = (w >> 16) | 0x0040u;
  return (uint16_t)pick(mask_if((int32_t)(w & 0x7fffffffu) > 0x7f800000), nan,
                        r);
}

static D9_INLINE uint8_t narrow_e4m3(uint32_t w) {
  uint32_t sign = (w >> 24) & 0x80u;
  uint32_t a = w & 0x7fffffffu;
  uint32_t m = round_mag(a, 3, 7);
  m = pick(mask_if((int32_t)m > 0x7e), 0x7eu, m);        /* saturate, Inf too */
  m = pick(mask_if((int32_t)a > 0x7f800000), 0x7fu, m);  /* NaN */
  return (uint8_t)(sign | m);
}

static D9_INLINE uint8_t narrow_e5m2(uint32_t w) {
  uint32_t sign = (w >> 24) & 0x80u;
  uint32_t a = w & 0x7fffffffu;
  uint32_t m = round_mag(a, 2, 15);
  m = pick(mask_if((int32_t)m > 0x7c), 0x7cu, m); /* overflow: Inf */
  m = pick(mask_if((int32_t)a > 0x7f800000), 0x7eu, m);
  return (uint8_t)(sign | m);
}

/* ---- the exported scalar conversions ---- */

float d9_f16_to_f32(uint16_t h) { return float_of(widen_f16(h)); }
uint16_t d9_f32_to_f16(float f) { return narrow_f16(bits_of(f)); }
float d9_bf16_to_f32(uint16_t h) { return float_of(widen_bf16(h)); }
uint16_t d9_f32_to_bf16(float f) { return narrow_bf16(bits_of(f)); }
float d9_e4m3_to_f32(uint8_t v) { return float_of(widen_e4m3(v)); }
uint8_t d9_f32_to_e4m3(float f) { return narrow_e4m3(bits_of(f)); }
float d9_e5m2_to_f32(uint8_t v) { return float_of(widen_e5m2(v)); }
uint8_t d9_f32_to_e5m2(float f) { return narrow_e5m2(bits_of(f)); }

/* ---- array loops ----
 *
 * Every loop converts exactly BLOCK elements: a constant trip count is what
 * lets gcc -O2 (the "very-cheap" vectoriser cost model, which refuses loops
 * that need a scalar epilogue) vectorise it, and restrict spares it alias
 * checks. The last partial block goes through zero-padded stack buffers.
 * Pointers may be unaligned. */

enum { BLOCK = 64 };

static D9_INLINE uint32_t ld8(const uint8_t *p, int i) { return p[i]; }

static D9_INLINE uint32_t ld16(const uint8_t *p, int i) {
  uint16_t v;
  memcpy(&v, p + 2 * i, sizeof v);
  return v;
}

static D9_INLINE uint32_t ld32(const uint8_t *p, int i) {
  uint32_t v;
  memcpy(&v, p + 4 * i, sizeof v);
  return v;
}

static D9_INLINE void st8(uint8_t *p, int i, uint8_t v) { p[i] = v; }

static D9_INLINE void st16(uint8_t *p, int i, uint16_t v) {
  memcpy(p + 2 * i, &v, sizeof v);
}

static D9_INLINE void st32(uint8_t *p, int i, uint32_t v) {
  memcpy(p + 4 * i, &v, sizeof v);
}

/* BLOCK elements of type st (castable, not F32) to F32 at dst. */
static D9_INLINE void widen_block(uint8_t *restrict dst, const uint8_t *restrict src,
                        d9_dtype st) {
  switch (st) {
  case D9_F16:
    for (int i = 0; i < BLOCK; i++) st32(dst, i, widen_f16(ld16(src, i)));
    break;
  case D9_BF16:
    for (int i = 0; i < BLOCK; i++) st32(dst, i, widen_bf16(ld16(src, i)));
    break;
  case D9_F8_E4M3:
    for (int i = 0; i < BLOCK; i++) st32(dst, i, widen_e4m3(ld8(src, i)));
    break;
  case D9_F8_E5M2:
    for (int i = 0; i < BLOCK; i++) st32(dst, i, widen_e5m2(ld8(src, i)));
    break;
  default:
    break;
  }
}

/* BLOCK F32 elements at src to type dt (castable, not F32) at dst. */
static D9_INLINE void narrow_block(uint8_t *restrict dst, d9_dtype dt,
                         const uint8_t *restrict src) {
  switch (dt) {
  case D9_F16:
    for (int i = 0; i < BLOCK; i++) st16(dst, i, narrow_f16(ld32(src, i)));
    break;
  case D9_BF16:
    for (int i = 0; i < BLOCK; i++) st16(dst, i, narrow_bf16(ld32(src, i)));
    break;
  case D9_F8_E4M3:
    for (int i = 0; i < BLOCK; i++) st8(dst, i, narrow_e4m3(ld32(src, i)));
    break;
  case D9_F8_E5M2:
    for (int i = 0; i < BLOCK; i++) st8(dst, i, narrow_e5m2(ld32(src, i)));
    break;
  default:
    break;
  }
}

/* BLOCK elements of a castable pair with st != dt. F32 on either side is
 * one loop; the common other pairs are fused loops; the rest widen into a
 * stack block and narrow from it. */
static D9_INLINE void cast_block(uint8_t *restrict dst, d9_dtype dt,
                       const uint8_t *restrict src, d9_dtype st) {
  if (st == D9_F32) {
    narrow_block(dst, dt, src);
  } else if (dt == D9_F32) {
    widen_block(dst, src, st);
  } else if (st == D9_BF16 && dt == D9_F16) {
    for (int i = 0; i < BLOCK; i++)
      st16(dst, i, narrow_f16(widen_bf16(ld16(src, i))));
  } else if (st == D9_F16 && dt == D9_BF16) {
    for (int i = 0; i < BLOCK; i++)
      st16(dst, i, narrow_bf16(widen_f16(ld16(src, i))));
  } else if (st == D9_F8_E4M3 && dt == D9_BF16) {
    for (int i = 0; i < BLOCK; i++)
      st16(dst, i, narrow_bf16(widen_e4m3(ld8(src, i))));
  } else {
    uint8_t tmp[BLOCK * 4]; /* F32 */
    widen_block(tmp, src, st);
    narrow_block(dst, dt, tmp);
  }
}

/* The full blocks of a cast, one loop per ISA (D9_CLONES, cpu.h). */
D9_CLONES static void cast_blocks(uint8_t *restrict d, d9_dtype dt, const uint8_t *restrict s,
                                  d9_dtype st, size_t full) {
  size_t ssize = d9_dtype_size(st), dsize = d9_dtype_size(dt);
  for (size_t i = 0; i < full; i += BLOCK) cast_block(d + i * dsize, dt, s + i * ssize, st);
}

/* The CPU backend's cast (see kernels.h): converts n elements of st at src
 * to dt at dst; src and dst must not overlap; either may be unaligned.
 * Returns 0; -EINVAL for n < 0, a NULL pointer with n > 0, an invalid
 * dtype, or a pair that is neither identical nor both castable;
 * -EOVERFLOW when n elements do not fit in a size_t of bytes. */
int d9_cpu_cast(void *dst, d9_dtype dt, const void *src, d9_dtype st,
                int64_t n) {
  int r = d9_cast_prologue(dst, dt, src, st, n);
  if (r)
    return r < 0 ? r : 0;
  size_t ssize = d9_dtype_size(st), dsize = d9_dtype_size(dt);
  uint8_t *d = dst;
  const uint8_t *s = src;
  size_t full = (size_t)(n - n % BLOCK), rest = (size_t)(n % BLOCK);
  cast_blocks(d, dt, s, st, full);
  if (rest > 0) {
    uint8_t sbuf[BLOCK * 4] = {0}, dbuf[BLOCK * 4]; /* elements of st, dt */
    memcpy(sbuf, s + full * ssize, rest * ssize);
    cast_block(dbuf, dt, sbuf, st);
    memcpy(d + full * dsize, dbuf, rest * dsize);
  }
  return 0;
}
