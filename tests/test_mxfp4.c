/* test_mxfp4.c - the CPU backend's MXFP4 members (kernels/cpu/mxfp4.c)
 * against a naive reference written here from the format's definition.
 *
 * The reference computes a value in double (the E2M1 magnitude times
 * pow(2, s - 127), exact in double), calls it +-Inf from 2^128 up (the
 * rule transformers' convert_moe_packed_tensors follows, checked there by
 * tests/py/check_mxfp4_peer.py), and takes BF16 as the top half of the F32
 * bits after asserting that the bottom half is zero (the values are exact in
 * BF16). Quant's reference finds the scale exponent by counting powers of two
 * and each code by searching the eight magnitudes for the nearest one (ties
 * to the even code). It shares no code with the implementation.
 *
 * Inputs: every code with every scale byte 0..255, in F32 and BF16, at
 * every odd and even start and length inside a stream; random groups from a
 * seeded splitmix64 (the seed is printed) over a wide exponent range;
 * exact ties; -0, Inf, NaN, subnormals and all-zero groups; bad arguments.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "tests/bits.h"

static const double MAG[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};

/* The F32 value of code c with scale byte s. */
static float ref_value(int c, int s) {
  double v = MAG[c & 7] * pow(2.0, s - 127);
  if (v >= ldexp(1.0, 128)) v = INFINITY;
  float f = (float)v;
  assert_true((double)f == v); /* exact */
  return (c & 8) ? -f : f;
}

static uint16_t ref_bf16(int c, int s) {
  uint32_t w = tu_fbits(ref_value(c, s));
  assert_int_equal(w & 0xffff, 0); /* exact in BF16 */
  return (uint16_t)(w >> 16);
}

static uint64_t next64(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* Every code with every scale: a stream of 256 groups of 32 values, group
 * s with scale s and the codes 0..15 twice (bytes 0x00..0xff cover every
 * low/high pair over the stream). Every start and length in a window. */
static void test_dequant_every_code_and_scale(void **state) {
  (void)state;
  enum { G = 32, NG = 256, N = G * NG };
  uint8_t *blocks = malloc(N / 2), scales[NG];
  float *f = malloc(N * sizeof *f);
  uint16_t *h = malloc(N * sizeof *h);
  assert_non_null(blocks);
  assert_non_null(f);
  assert_non_null(h);
  for (int i = 0; i < N / 2; i++) blocks[i] = (uint8_t)(i * 7 + i / 16); /* every byte value */
  for (int g = 0; g < NG; g++) scales[g] = (uint8_t)g;
  const d9_backend *cpu = d9_backend_cpu();
  assert_int_equal(cpu->mxfp4_dequant(f, D9_F32, blocks, scales, 0, N, G), 0);
  assert_int_equal(cpu->mxfp4_dequant(h, D9_BF16, blocks, scales, 0, N, G), 0);
  int seen[16][256] = {{0}};
  for (int v = 0; v < N; v++) {
    int c = v % 2 ? blocks[v / 2] >> 4 : blocks[v / 2] & 15, s = scales[v / G];
    seen[c][s] = 1;
    if (tu_fbits(f[v]) != tu_fbits(ref_value(c, s)))
      fail_msg("F32 value %d code %d scale %d: %08x, want %08x", v, c, s, tu_fbits(f[v]),
               tu_fbits(ref_value(c, s)));
    if (h[v] != ref_bf16(c, s))
      fail_msg("BF16 value %d code %d scale %d: %04x, want %04x", v, c, s, h[v],
               ref_bf16(c, s));
  }
  for (int c = 0; c < 16; c++)
    for (int s = 0; s < 256; s++) assert_true(seen[c][s]);
  /* spot the rule's corners against literal IEEE patterns */
  assert_int_equal(tu_fbits(ref_value(1, 0)), 0x00200000u);  /* 2^-128, subnormal */
  assert_int_equal(tu_fbits(ref_value(7, 254)), 0x7f800000u); /* 6 * 2^127 -> Inf */
  assert_int_equal(tu_fbits(ref_value(1, 255)), 0x7f000000u); /* 0.5 * 2^128 = 2^127 */
  assert_int_equal(tu_fbits(ref_value(8, 255)), 0x80000000u); /* -0, never NaN */
  /* segments: every start in [0, 70) and length in [0, 70), any alignment */
  unsigned char raw[70 * 4 + 1];
  for (int j0 = 0; j0 < 70; j0++)
    for (int n = 0; n < 70; n++) {
      int64_t base = 64 * 37 + j0; /* inside group 74.. */
      const uint8_t *bp = blocks + base / 2, *sp = scales + base / G;
      assert_int_equal(cpu->mxfp4_dequant(raw + 1, D9_F32, bp, sp, base, n, G), 0);
      assert_memory_equal(raw + 1, f + base, (size_t)n * 4);
      assert_int_equal(cpu->mxfp4_dequant(raw + 1, D9_BF16, bp, sp, base, n, G), 0);
      assert_memory_equal(raw + 1, h + base, (size_t)n * 2);
    }
  /* another group size: 2 values per scale */
  assert_int_equal(cpu->mxfp4_dequant(f, D9_F32, blocks, scales, 0, 2 * NG, 2), 0);
  for (int v = 0; v < 2 * NG; v++) {
    int c = v % 2 ? blocks[v / 2] >> 4 : blocks[v / 2] & 15;
    assert_int_equal(tu_fbits(f[v]), tu_fbits(ref_value(c, scales[v / 2])));
  }
  free(blocks);
  free(f);
  free(h);
}

/* ---- quant ---- */

/* The naive scale byte of a group and the nearest code of x given it. */
static int ref_scale(const float *x, int n) {
  double amax = 0;
  for (int k = 0; k < n; k++)
    if (!isnan(x[k]) && fabs(x[k]) > amax) amax = fabs(x[k]);
  if (amax == 0) return 0;
  if (isinf(amax)) return 254;
  int k = -160;
  while (ldexp(1.0, k + 1) <= amax) k++; /* 2^k <= amax < 2^(k+1) */
  int e = k - 2;
  return e < -127 ? 0 : e + 127;
}

static int ref_code(float x, int s) {
  int sign = signbit(x) ? 8 : 0;
  if (isnan(x)) return sign;
  double q = fabs((double)x) / pow(2.0, s - 127);
  int best = 0;
  for (int c = 1; c < 8; c++) {
    double d = fabs(q - MAG[c]), db = fabs(q - MAG[best]);
    if (d < db || (d == db && c % 2 == 0)) best = c;
  }
  if (isinf(q)) best = 7; /* saturating: Inf is nearest to nothing */
  return best | sign;
}

static void check_quant(const float *x, int ngroups, int g, const char *what) {
  uint8_t *b = malloc((size_t)(ngroups * g / 2)), *s = malloc((size_t)ngroups);
  assert_non_null(b);
  assert_non_null(s);
  assert_int_equal(d9_backend_cpu()->mxfp4_quant(b, s, x, ngroups, g), 0);
  for (int k = 0; k < ngroups; k++) {
    int want = ref_scale(x + k * g, g);
    if (s[k] != want) fail_msg("%s: group %d: scale %d, want %d", what, k, s[k], want);
    for (int i = 0; i < g; i++) {
      int v = k * g + i, c = i % 2 ? b[v / 2] >> 4 : b[v / 2] & 15;
      int wc = ref_code(x[v], want);
      if (c != wc)
        fail_msg("%s: value %d (%a, scale %d): code %d, want %d", what, v, (double)x[v], want,
                 c, wc);
    }
  }
  free(b);
  free(s);
}

static void test_quant_random(void **state) {
  (void)state;
  enum { G = 32, NG = 4096 };
  uint64_t seed = 0x6d786670u, r = seed;
  printf("seed %llu\n", (unsigned long long)seed);
  float *x = malloc(NG * G * sizeof *x);
  assert_non_null(x);
  for (int k = 0; k < NG; k++) {
    int e = (int)(next64(&r) % 300) - 170; /* subnormal to near FLT_MAX */
    for (int i = 0; i < G; i++) {
      uint64_t u = next64(&r);
      float m = (float)((u >> 40) & 0xffffff) / (float)(1 << 24);
      float v = ldexpf(m, e - (int)(u % 6));
      x[k * G + i] = (u >> 39 & 1) ? -v : v;
    }
  }
  check_quant(x, NG, G, "random");
  /* exact ties: magnitudes halfway between codes at a fixed scale (amax
   * pins the scale at 2^e: 4 * 2^e is the largest) */
  static const float ties[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 7.0f};
  for (int k = 0; k < 64; k++) {
    int e = k - 40;
    for (int i = 0; i < G; i++) {
      float t = ties[i % 8] * ldexpf(1.0f, e);
      x[k * G + i] = i == 0 ? 4.0f * ldexpf(1.0f, e) : (i % 3 ? t : -t);
    }
  }
  check_quant(x, 64, G, "ties");
  /* specials: -0, zeros, Inf, NaN, subnormals, FLT_MAX */
  for (int i = 0; i < 8 * G; i++) x[i] = 0.0f;
  x[1] = -0.0f;                             /* group 0: all zero -> scale 0 */
  x[G] = INFINITY, x[G + 1] = 1.0f, x[G + 2] = -INFINITY, x[G + 3] = 3e38f; /* group 1 */
  x[2 * G] = NAN, x[2 * G + 1] = -NAN, x[2 * G + 2] = 2.0f; /* group 2: NaN ignored */
  for (int i = 0; i < G; i++) x[3 * G + i] = NAN;             /* group 3: all NaN */
  x[4 * G] = tu_ffrom(1), x[4 * G + 1] = -tu_ffrom(3), x[4 * G + 2] = tu_ffrom(0x7fffff);
  x[5 * G] = FLT_MAX, x[5 * G + 1] = -FLT_MAX / 3;
  x[6 * G] = ldexpf(1.0f, -126), x[6 * G + 1] = ldexpf(1.5f, -127);
  x[7 * G] = 6.0f, x[7 * G + 1] = 7.9999995f, x[7 * G + 2] = -0.1f;
  check_quant(x, 8, G, "specials");
  /* the corners the rule names */
  uint8_t b[16 * 8], s[8];
  assert_int_equal(d9_backend_cpu()->mxfp4_quant(b, s, x, 8, G), 0);
  assert_int_equal(s[0], 0);
  assert_int_equal(b[0], 0x80); /* +0 low, -0 high */
  assert_int_equal(s[1], 254);
  assert_int_equal(b[16] & 15, 7); /* Inf saturates to 6 */
  assert_int_equal(s[3], 0);
  /* and dequantising an Inf group's saturated code gives Inf back */
  assert_true(isinf(d9_mxfp4_value(7, 254)));
  /* another group size */
  check_quant(x, 8 * G / 4, 4, "group 4");
  free(x);
}

/* Quant then dequant: values that are exactly MXFP4 (the group's largest
 * magnitude in [4, 6] with the rest on its grid) come back bit for bit. */
static void test_round_trip_exact(void **state) {
  (void)state;
  enum { G = 32, NG = 200 };
  uint64_t r = 12345;
  float x[G * NG], y[G * NG];
  uint8_t b[G * NG / 2], s[NG];
  for (int k = 0; k < NG; k++) {
    int e = (int)(next64(&r) % 250) - 125;
    for (int i = 0; i < G; i++) {
      int c = i == 0 ? 6 + (int)(next64(&r) % 2) : (int)(next64(&r) % 16);
      x[k * G + i] = (float)(ldexp(MAG[c & 7], e) * ((c & 8) ? -1 : 1));
    }
  }
  const d9_backend *cpu = d9_backend_cpu();
  assert_int_equal(cpu->mxfp4_quant(b, s, x, NG, G), 0);
  assert_int_equal(cpu->mxfp4_dequant(y, D9_F32, b, s, 0, G * NG, G), 0);
  for (int i = 0; i < G * NG; i++)
    if (tu_fbits(x[i]) != tu_fbits(y[i]))
      fail_msg("value %d: %a came back as %a", i, (double)x[i], (double)y[i]);
}

static void test_errors(void **state) {
  (void)state;
  const d9_backend *cpu = d9_backend_cpu();
  uint8_t b[16] = {0}, s[2] = {127, 127};
  float f[32] = {0};
  assert_int_equal(cpu->mxfp4_dequant(f, D9_F32, b, s, 0, -1, 32), -EINVAL);
  assert_int_equal(cpu->mxfp4_dequant(f, D9_F32, b, s, -1, 1, 32), -EINVAL);
  assert_int_equal(cpu->mxfp4_dequant(f, D9_F32, b, s, 0, 1, 0), -EINVAL);
  assert_int_equal(cpu->mxfp4_dequant(f, D9_F32, b, s, 0, 1, 31), -EINVAL);
  assert_int_equal(cpu->mxfp4_dequant(f, D9_F16, b, s, 0, 1, 32), -EINVAL);
  assert_int_equal(cpu->mxfp4_dequant(NULL, D9_F32, b, s, 0, 1, 32), -EINVAL);
  assert_int_equal(cpu->mxfp4_dequant(f, D9_F32, NULL, s, 0, 1, 32), -EINVAL);
  assert_int_equal(cpu->mxfp4_dequant(NULL, D9_F32, NULL, NULL, 0, 0, 32), 0);
  assert_int_equal(cpu->mxfp4_quant(b, s, f, -1, 32), -EINVAL);
  assert_int_equal(cpu->mxfp4_quant(b, s, f, 1, 3), -EINVAL);
  assert_int_equal(cpu->mxfp4_quant(b, NULL, f, 1, 32), -EINVAL);
  assert_int_equal(cpu->mxfp4_quant(NULL, NULL, NULL, 0, 32), 0);
  assert_int_equal(cpu->mxfp4_quant(b, s, f, INT64_MAX / 2, 32), -EOVERFLOW);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dequant_every_code_and_scale),
      cmocka_unit_test(test_quant_random),
      cmocka_unit_test(test_round_trip_exact),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
