/* kernels.h - the compute interface shared by the CPU and CUDA backends.
 *
 * Kernels do no I/O, no allocation and no logging: they take pointers,
 * int64_t element counts and dtypes. Every backend must produce identical
 * bits for identical inputs. A backend reports failure by returning -errno
 * (never aborting). -EINVAL and -EOVERFLOW are answers about the arguments,
 * which the CPU backend gives too; any other error (-EIO, -ENOMEM,
 * -ENOTSUP, -ENODEV) from a backend other than the CPU's means "this call
 * could not run here": the caller then runs the same call on the CPU
 * backend (the evaluator does that in one place, its dispatch).
 *
 * Float conversions round to nearest, ties to even. NaN stays NaN (sign
 * kept, payload truncated, quiet bit set when narrowing); Inf stays Inf
 * where the target has one. F8_E4M3 is the "fn" variant (no Inf, one NaN
 * encoding S.1111.111, max finite 448): narrowing to it saturates, so every
 * finite value beyond the range and +-Inf become +-448 (0x7e / 0xfe); NaN
 * stays NaN (0x7f / 0xff), as torch's .to(torch.float8_e4m3fn) does
 * (torch 2.15: byte for byte on 4M values, tests/mount/e4m3.sh) - see
 * cast.c for the exact rule. F8_E5M2 is IEEE-like (Inf and NaN
 * exist); overflow rounds to Inf.
 */
#ifndef D9_KERNELS_H
#define D9_KERNELS_H

#include <float.h>
#include <stddef.h>
#include <stdint.h>

#include "dtype.h"

/* A box of a blocked matrix for the 2-D FP8 members: rows x n elements,
 * dense and row-major (row r of the data at element r * n), its first
 * element at matrix row i0, column j0; blocks of b0 rows x b1 columns. The
 * scale (or amax) array is a window of the block grid holding the blocks
 * the box touches: row r, column j0 + k use entry
 * ((i0 + r) / b0 - i0 / b0) * lds + (j0 + k) / b1 - j0 / b1, so lds (>= the
 * number of block columns the box touches) is the window's row stride in
 * entries. With rows = 1 a member is the d9_cpu_fp8_* function. Members
 * answer -EINVAL for a negative count, i0 < 0, j0 < 0, b0 <= 0, b1 <= 0,
 * lds too small, or a NULL pointer with elements to touch; -EOVERFLOW when
 * rows * n elements do not fit in memory. */
typedef struct d9_fp8_box {
  int64_t i0, rows, b0; /* first matrix row, rows, block rows */
  int64_t j0, n, b1;    /* first matrix column, columns, block columns */
  int64_t lds;          /* window row stride (entries) */
} d9_fp8_box;

/* The argument checks every backend's FP8 box member makes (dtype.c):
 * 0 with *touch = 1 when the box has elements, 0 with *touch = 0 when it
 * has none, -EINVAL or -EOVERFLOW as above. ptrs_ok: every pointer the
 * member needs is set; es_max: the largest element size of its arrays. */
int d9_fp8_box_check(const d9_fp8_box *b, int ptrs_ok, size_t es_max, int *touch);

typedef struct d9_backend {
  const char *name;
  /* Every member up to transpose is required: the CPU backend and each
   * CUDA backend provide them all, so a caller never computes behind the
   * table. The members after it are optional (NULL when a backend lacks
   * them; the CPU backend has every one): the evaluator's dispatch then
   * runs the CPU backend's member instead. */

  /* Convert n elements from src (type st) to dst (type dt). Both castable
   * (d9_dtype_is_castable) or st == dt. src and dst must not overlap.
   * Returns 0, or -EINVAL for an unsupported pair. */
  int (*cast)(void *dst, d9_dtype dt, const void *src, d9_dtype st, int64_t n);
  /* dst[i] = cast_dt( f32(src[i]) * a + b ), computed in F32. */
  int (*affine)(void *dst, d9_dtype dt, const void *src, d9_dtype st,
                int64_t n, float a, float b);
  /* FP8 block dequant of a box (see d9_fp8_box): for each row r,
   * d9_cpu_fp8_dequant(dst + r*n F32, w + r*n, wt, scale row of r, j0, n,
   * b1), same bits. dst may have any alignment. */
  int (*fp8_dequant)(void *dst, const uint8_t *w, d9_dtype wt,
                     const float *scale, const d9_fp8_box *box);
  /* FP8 block amax of a box: d9_cpu_fp8_amax row by row into the amax
   * window, accumulating; same bits when every amax entry is >= 0 or NaN
   * on entry (a CUDA backend answers -ENOTSUP for a negative entry). */
  int (*fp8_amax)(float *amax, const float *x, const d9_fp8_box *box);
  /* FP8 block quant of a box: d9_cpu_fp8_quant row by row, same bits. */
  int (*fp8_quant)(uint8_t *dst, const float *x, const float *scale,
                   const d9_fp8_box *box);
  /* Batched transpose of the last two dims: src [batch, rows, cols] ->
   * dst [batch, cols, rows], elements of es bytes, copied bit for bit:
   * dst[(b*cols + c)*rows + r] = src[(b*rows + r)*cols + c]. Any alignment;
   * no overlap. -EINVAL for a negative count, es == 0 or a NULL pointer
   * with elements to move; -EOVERFLOW when the bytes do not fit a size_t;
   * -ENOTSUP for an element size the backend lacks (the CPU takes any). */
  int (*transpose)(void *dst, const void *src, size_t es, int64_t batch,
                   int64_t rows, int64_t cols);

  /* ---- optional members ---- */

  /* MXFP4 dequant of n values [j0, j0 + n) of a flat stream (mxfp4.c has
   * the format and the exact rule): value v is the E2M1 code in nibble
   * v % 2 (low first) of blocks[v / 2 - j0 / 2] times 2^(s - 127), s =
   * scales[v / group - j0 / group] (E8M0), into dst as dt (F32 or BF16) at
   * any alignment. -EINVAL for n < 0, j0 < 0, group <= 0 or odd, another
   * dt, or a NULL pointer with n > 0; -EOVERFLOW when the bytes do not fit
   * a size_t. */
  int (*mxfp4_dequant)(void *dst, d9_dtype dt, const uint8_t *blocks,
                       const uint8_t *scales, int64_t j0, int64_t n, int64_t group);
  /* MXFP4 quant of ngroups whole groups of group F32 values x (aligned):
   * scales[g] the E8M0 scale of group g (d9_mxfp4_scale of its amax, NaN
   * ignored), blocks[g * group / 2 ..] its codes, two per byte, low nibble
   * first. -EINVAL / -EOVERFLOW as dequant. */
  int (*mxfp4_quant)(uint8_t *blocks, uint8_t *scales, const float *x,
                     int64_t ngroups, int64_t group);
} d9_backend;

/* The CPU backend; always present, every member set. Borrowed, static
 * lifetime. */
const d9_backend *d9_backend_cpu(void);

/* Scalar conversions, exported for tests and for other kernels. */
float d9_f16_to_f32(uint16_t h);
uint16_t d9_f32_to_f16(float f);
float d9_bf16_to_f32(uint16_t h);
uint16_t d9_f32_to_bf16(float f);
float d9_e4m3_to_f32(uint8_t v);
uint8_t d9_f32_to_e4m3(float f);
float d9_e5m2_to_f32(uint8_t v);
uint8_t d9_f32_to_e5m2(float f);

/* ---- fp8.c: FP8 block (de)quantisation kernels (CPU; plain functions,
 * the rows of the CPU backend's box members; the evaluator reaches them
 * only through the backend) ----
 *
 * Each works on a segment of one row of a blocked matrix: n elements from
 * column j0 (>= 0), block width b (> 0) columns; scale / amax point at the
 * entry of the block holding column j0, so element k uses entry
 * (j0 + k) / b - j0 / b. Exact rules at the top of fp8.c. Each returns 0,
 * or -EINVAL for n < 0, j0 < 0, b <= 0, a NULL pointer with n > 0 or (for
 * dequant) a weight type other than F8_E4M3 / F8_E5M2. */

/* dst[k] = f32(w[k]) * scale[.] (one F32 multiply; NaN -> +0x7fc00000);
 * dst holds F32 at any alignment, the other float arrays are aligned. */
int d9_cpu_fp8_dequant(void *dst, const uint8_t *w, d9_dtype wt,
                       const float *scale, int64_t j0, int64_t n, int64_t b);
/* amax[.] = max(amax[.], |x[k]|), NaN ignored; accumulates over calls. */
int d9_cpu_fp8_amax(float *amax, const float *x, int64_t j0, int64_t n,
                    int64_t b);
/* The block scale for a block amax: amax / 448 in F32; 1 when amax is 0,
 * not finite, or small enough (<= 7 * 2^-144) that the quotient is 0. One
 * division every backend's host side computes alike, so it is a function
 * here rather than a backend member. */
static inline float d9_fp8_scale(float amax) {
  if (!(amax > 0.0f) || !(amax <= FLT_MAX))
    return 1.0f;
  float s = amax / 448.0f;
  return s > 0.0f ? s : 1.0f;
}
/* d9_fp8_scale, as an exported function (tests). */
float d9_cpu_fp8_scale(float amax);
/* dst[k] = e4m3(x[k] / scale[.]) (one F32 division, saturating RNE: an
 * Inf quotient gives +-448, a NaN x 0x7f with x's sign). */
int d9_cpu_fp8_quant(uint8_t *dst, const float *x, const float *scale,
                     int64_t j0, int64_t n, int64_t b);


/* ---- mxfp4.c: MXFP4 kernels (CPU; the CPU backend's mxfp4_* members) ---- */

int d9_cpu_mxfp4_dequant(void *dst, d9_dtype dt, const uint8_t *blocks,
                         const uint8_t *scales, int64_t j0, int64_t n, int64_t group);
int d9_cpu_mxfp4_quant(uint8_t *blocks, uint8_t *scales, const float *x, int64_t ngroups,
                       int64_t group);
/* The E2M1 value of code & 15, and the MXFP4 value of a code with E8M0
 * scale s: e2m1(code) * 2^(s - 127), exact in F32, +-Inf from 2^128 up. */
float d9_e2m1_to_f32(uint8_t code);
float d9_mxfp4_value(uint8_t code, uint8_t s);
/* The E8M0 scale byte for a group's amax (max |x|, NaN ignored): 0 for 0,
 * 254 for Inf, else floor(log2(amax)) - 2 + 127 clamped to >= 0. One
 * formula every backend's host side may share. */
uint8_t d9_mxfp4_scale(float amax);

#endif
