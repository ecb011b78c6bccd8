/* fp8.c - FP8 block (de)quantisation kernels (DeepSeek-V3 style), CPU.
 *
 * A weight [M, N] is cut into blocks of b0 rows x b1 columns (edge blocks
 * ragged); block (i / b0, j / b1) has one F32 scale. These kernels work on a
 * segment of one row: n elements starting at column j0, whose scales are
 * scale[0 .. (j0 + n - 1) / b1 - j0 / b1], i.e. scale[0] is the scale of the
 * block holding column j0. The caller gathers rows, scale rows and block
 * rows; the kernels do no I/O and no allocation. The F32 output of dequant
 * may have any alignment (it is a reader's buffer); the other float arrays
 * must be aligned for float.
 *
 * The exact rules (mapper/node_ops.c documents the operations built on them):
 *  - dequant: dst[k] = f32(w[k]) * s, one F32 multiply rounded to nearest
 *    even (never fused), with f32() the exact widening of cast.c. A NaN
 *    product (NaN weight or scale, Inf * 0) is the default quiet NaN
 *    +0x7fc00000, whatever the operands' sign or payload, as the backend's
 *    affine does: hardware differs on which NaN a product returns.
 *  - amax: the largest |x| over the segment, NaN ignored (an all-NaN or
 *    empty block keeps amax 0); Inf counts.
 *  - scale: amax / 448 (F32 division); 1 when amax is 0, not finite, or so
 *    small (<= 7 * 2^-144) that the quotient rounds to 0.
 *  - quant: dst[k] = e4m3(x[k] / s), one F32 division, then the saturating
 *    round-to-nearest-even narrowing of cast.c (finite overflow -> +-448,
 *    +-Inf -> +-448). A NaN x gives the E4M3 NaN 0x7f with x's sign, decided
 *    from x itself, not from the NaN the division returns.
 * They use the FP environment (default assumed: round to nearest, no
 * FTZ/DAZ), like affine; see backend.c on contraction.
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunknown-pragmas"
#pragma STDC FP_CONTRACT OFF /* honoured by clang; gcc relies on -std=c11 */
#pragma GCC diagnostic pop

#include <errno.h>
#include <float.h>
#include <stdint.h>
#include <string.h>

#include "kernels/cpu/cpu.h"
#include "kernels/kernels.h"


enum { QBLOCK = 256 }; /* F32 quotients per stack block */

static inline float qnan(void) {
  uint32_t w = 0x7fc00000u;
  float f;
  memcpy(&f, &w, sizeof f);
  return f;
}

/* Columns of the segment [j0, j0 + n) that share the scale of column j:
 * from j up to the end of its block or of the segment. */
static inline int64_t run_end(int64_t j, int64_t end, int64_t b) {
  int64_t rest = b - j % b; /* no overflow, whatever b */
  return end - j < rest ? end : j + rest;
}

static inline int seg_ok(const void *dst, const void *src, const float *scale,
                         int64_t j0, int64_t n, int64_t b) {
  return n >= 0 && j0 >= 0 && b > 0 && (n == 0 || (dst && src && scale));
}

/* x[k] *= s, NaN made canonical (q), for k < n. */
static D9_INLINE void scale_elems(unsigned char *restrict x, int64_t n, float s, float q) {
  for (int64_t k = 0; k < n; k++) {
    float t;
    memcpy(&t, x + 4 * k, sizeof t);
    t = t * s;
    t = t != t ? q : t;
    memcpy(x + 4 * k, &t, sizeof t);
  }
}

enum { SBLOCK = 64 }; /* F32 per scaled block: a constant count vectorises */

/* n F32 at x (any alignment) *= s, NaN made canonical: whole blocks of
 * SBLOCK, then the rest one by one (the same multiply either way). */
static D9_INLINE void scale_run(unsigned char *restrict x, int64_t n, float s) {
  float q = qnan();
  int64_t k = 0;
  for (; k + SBLOCK <= n; k += SBLOCK) scale_elems(x + 4 * k, SBLOCK, s, q);
  scale_elems(x + 4 * k, n - k, s, q);
}

/* Compiled per ISA (D9_CLONES, cpu.h); one F32 multiply per element, so
 * every path gives the same bits. */
D9_CLONES int d9_cpu_fp8_dequant(void *dst, const uint8_t *w, d9_dtype wt,
                                 const float *scale, int64_t j0, int64_t n, int64_t b) {
  if (!seg_ok(dst, w, scale, j0, n, b) ||
      (wt != D9_F8_E4M3 && wt != D9_F8_E5M2))
    return -EINVAL;
  if (n == 0)
    return 0;
  int r = d9_cpu_cast(dst, D9_F32, w, wt, n); /* exact widening */
  if (r)
    return r;
  int64_t end = j0 + n, first = j0 / b;
  for (int64_t j = j0; j < end;) {
    int64_t e = run_end(j, end, b);
    scale_run((unsigned char *)dst + 4 * (j - j0), e - j, scale[j / b - first]);
    j = e;
  }
  return 0;
}

int d9_cpu_fp8_amax(float *amax, const float *x, int64_t j0, int64_t n,
                    int64_t b) {
  if (!seg_ok(amax, x, amax, j0, n, b))
    return -EINVAL;
  int64_t end = j0 + n, first = j0 / b;
  for (int64_t j = j0; j < end;) {
    int64_t e = run_end(j, end, b);
    const float *p = x + (j - j0);
    float m = amax[j / b - first];
    for (int64_t k = 0; k < e - j; k++) {
      float a = p[k] < 0 ? -p[k] : p[k];
      m = a > m ? a : m; /* false for NaN: ignored */
    }
    amax[j / b - first] = m;
    j = e;
  }
  return 0;
}

float d9_cpu_fp8_scale(float amax) { return d9_fp8_scale(amax); }

/* buf[k] = p[k] / s for k < m: whole blocks of SBLOCK (vectorised), then
 * the rest; one F32 division per element either way. */
static D9_INLINE void divide_run(float *restrict buf, const float *restrict p, int64_t m,
                                 float s) {
  int64_t k = 0;
  for (; k + SBLOCK <= m; k += SBLOCK)
    for (int i = 0; i < SBLOCK; i++) buf[k + i] = p[k + i] / s;
  for (; k < m; k++) buf[k] = p[k] / s;
}

/* Compiled per ISA (D9_CLONES, cpu.h), as the dequant. */
D9_CLONES int d9_cpu_fp8_quant(uint8_t *dst, const float *x, const float *scale,
                               int64_t j0, int64_t n, int64_t b) {
  if (!seg_ok(dst, x, scale, j0, n, b))
    return -EINVAL;
  int64_t end = j0 + n, first = j0 / b;
  float buf[QBLOCK];
  for (int64_t j = j0; j < end;) {
    int64_t e = run_end(j, end, b);
    if (e - j > QBLOCK)
      e = j + QBLOCK;
    float s = scale[j / b - first];
    const float *p = x + (j - j0);
    int64_t k, m = e - j;
    divide_run(buf, p, m, s);
    int r = d9_cpu_cast(dst + (j - j0), D9_F8_E4M3, buf, D9_F32, m);
    if (r)
      return r;
    for (k = 0; k < m; k++) /* a NaN x keeps its own sign */
      if (p[k] != p[k]) {
        uint32_t bits;
        memcpy(&bits, &p[k], sizeof bits);
        dst[(j - j0) + k] = (uint8_t)(0x7fu | ((bits >> 24) & 0x80u));
      }
    j = e;
  }
  return 0;
}

/* ---- the backend's box members (kernels.h d9_fp8_box): the row
 * functions above, row by row ---- */


/* The window entry offset of box row r's first block (entries). */
static inline int64_t box_row_at(const d9_fp8_box *b, int64_t r) {
  return ((b->i0 + r) / b->b0 - b->i0 / b->b0) * b->lds;
}

int d9_cpu_fp8_dequant_box(void *dst, const uint8_t *w, d9_dtype wt, const float *scale,
                           const d9_fp8_box *box) {
  int touch, r = d9_fp8_box_check(box, dst && w && scale, 4, &touch);
  if (r)
    return r;
  if (wt != D9_F8_E4M3 && wt != D9_F8_E5M2)
    return -EINVAL;
  for (int64_t i = 0; touch && i < box->rows && !r; i++)
    r = d9_cpu_fp8_dequant((unsigned char *)dst + 4 * (size_t)(i * box->n), w + i * box->n,
                           wt, scale + box_row_at(box, i), box->j0, box->n, box->b1);
  return r;
}

int d9_cpu_fp8_amax_box(float *amax, const float *x, const d9_fp8_box *box) {
  int touch, r = d9_fp8_box_check(box, amax && x, 4, &touch);
  for (int64_t i = 0; !r && touch && i < box->rows; i++)
    r = d9_cpu_fp8_amax(amax + box_row_at(box, i), x + i * box->n, box->j0, box->n, box->b1);
  return r;
}

int d9_cpu_fp8_quant_box(uint8_t *dst, const float *x, const float *scale,
                         const d9_fp8_box *box) {
  int touch, r = d9_fp8_box_check(box, dst && x && scale, 4, &touch);
  for (int64_t i = 0; !r && touch && i < box->rows; i++)
    r = d9_cpu_fp8_quant(dst + i * box->n, x + i * box->n, scale + box_row_at(box, i),
                         box->j0, box->n, box->b1);
  return r;
}
