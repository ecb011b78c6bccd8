/* test_kernels.c - the float conversions and the CPU backend against a
 * naive reference written here from the formats' definitions.
 *
 * The reference decodes a code with ldexp() from its sign, exponent and
 * mantissa fields, and encodes by searching the representable values of the
 * target for the nearest one (ties to the even code), then applies the rules
 * documented at the top of kernels/cpu/cast.c for overflow, saturation, Inf
 * and NaN. It shares no code with the implementation.
 *
 * Inputs: every code of every format; every F16 and BF16 pattern widened;
 * random F32 bit patterns and random in-range values from a seeded
 * splitmix64 (the seed is printed); hand-picked specials; and every
 * midpoint between adjacent representable values, with its F32 neighbours.
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

#define SEED UINT64_C(0xd9df5c0ffee12345)
enum { N_RANDOM = 200000, MAX_REPORT = 8 };

/* ---- helpers ---- */


static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* ---- the reference formats ---- */

typedef struct {
  const char *name;
  d9_dtype dtype;
  int bits; /* 8 or 16 */
  int eb;   /* exponent bits */
  int mb;   /* mantissa bits */
  int fn;   /* 1: no Inf, and only S.1..1.1..1 is NaN (E4M3 "fn") */
} fmt;

static const fmt FMT_F16 = {"F16", D9_F16, 16, 5, 10, 0};
static const fmt FMT_BF16 = {"BF16", D9_BF16, 16, 8, 7, 0};
static const fmt FMT_E4M3 = {"E4M3", D9_F8_E4M3, 8, 4, 3, 1};
static const fmt FMT_E5M2 = {"E5M2", D9_F8_E5M2, 8, 5, 2, 0};
static const fmt *const FMTS[] = {&FMT_F16, &FMT_BF16, &FMT_E4M3, &FMT_E5M2};
enum { N_FMTS = 4 };

enum { CODE_FINITE, CODE_INF, CODE_NAN };

/* The value of code in f; *kind says finite, Inf or NaN. */
static double ref_value(const fmt *f, uint32_t code, int *kind) {
  uint32_t sign = (code >> (f->bits - 1)) & 1u;
  uint32_t e = (code >> f->mb) & ((1u << f->eb) - 1);
  uint32_t m = code & ((1u << f->mb) - 1);
  uint32_t e_all = (1u << f->eb) - 1, m_all = (1u << f->mb) - 1;
  int bias = (1 << (f->eb - 1)) - 1;
  *kind = CODE_FINITE;
  if (!f->fn && e == e_all)
    *kind = m == 0 ? CODE_INF : CODE_NAN;
  if (f->fn && e == e_all && m == m_all)
    *kind = CODE_NAN;
  if (*kind != CODE_FINITE)
    return 0;
  double v = e == 0 ? ldexp((double)m, 1 - bias - f->mb)
                    : ldexp((double)((1u << f->mb) + m), (int)e - bias - f->mb);
  return sign ? -v : v;
}

/* Reference widening to F32 bits: exact value; NaN copies the mantissa to
 * the top of the F32 mantissa. */
static uint32_t ref_widen(const fmt *f, uint32_t code) {
  int kind;
  double v = ref_value(f, code, &kind);
  uint32_t sign = ((code >> (f->bits - 1)) & 1u) << 31;
  uint32_t m = code & ((1u << f->mb) - 1);
  if (kind == CODE_INF)
    return sign | 0x7f800000u;
  if (kind == CODE_NAN)
    return sign | 0x7f800000u | (m << (23 - f->mb));
  float x = (float)v;
  assert_true((double)x == v); /* every format fits in F32 */
  return tu_fbits(x);
}

/* The positive finite values of a format in code order (which is value
 * order, checked when built). */
typedef struct {
  double v[1 << 15];
  uint32_t n;     /* codes 0 .. n-1 */
  double overflow; /* |x| >= this rounds beyond max: max + ulp(max) / 2 */
} ref_table;

/* Built once by the group setup, read-only after. */
static ref_table TABLES[N_FMTS];

static void build_tables(void) {
  for (int t = 0; t < N_FMTS; t++) {
    const fmt *f = FMTS[t];
    ref_table *tb = &TABLES[t];
    tb->n = 0;
    for (uint32_t c = 0; c < (1u << (f->bits - 1)); c++) {
      int kind;
      double v = ref_value(f, c, &kind);
      if (kind != CODE_FINITE)
        break;
      if (c > 0)
        assert_true(v > tb->v[c - 1]);
      tb->v[tb->n++] = v;
    }
    double max = tb->v[tb->n - 1];
    tb->overflow = max + (max - tb->v[tb->n - 2]) / 2;
  }
}

static int fmt_index(const fmt *f) {
  for (int t = 0; t < N_FMTS; t++)
    if (FMTS[t] == f)
      return t;
  return -1;
}

/* Reference narrowing of x to f's code. */
static uint32_t ref_narrow(const fmt *f, float x) {
  const ref_table *tb = &TABLES[fmt_index(f)];
  uint32_t sign = signbit(x) ? 1u << (f->bits - 1) : 0;
  uint32_t xb = tu_fbits(x);
  if (isnan(x)) {
    if (f == &FMT_F16)
      return sign | 0x7e00u;
    if (f == &FMT_BF16)
      return (xb >> 16) | 0x0040u;
    return sign | (f->fn ? 0x7fu : 0x7eu);
  }
  if (isinf(x)) /* fn: saturates to max; else Inf: all-ones exponent, zero mantissa */
    return f->fn ? (sign | (tb->n - 1)) : (sign | (tb->n));
  double ax = fabs((double)x);
  if (!f->fn && ax >= tb->overflow)
    return sign | tb->n; /* the Inf code follows the largest finite */
  if (ax >= tb->v[tb->n - 1]) /* below the threshold, or fn saturation */
    return sign | (tb->n - 1);
  uint32_t best = 0;
  if (f->bits == 8) {
    /* scan every magnitude code: nearest, ties to the even code */
    double best_d = INFINITY;
    for (uint32_t c = 0; c < tb->n; c++) {
      double d = fabs(ax - tb->v[c]);
      if (d < best_d || (d == best_d && (c & 1u) == 0)) {
        best = c;
        best_d = d;
      }
    }
    return sign | best;
  }
  /* binary search for the neighbours lo <= ax < hi */
  uint32_t lo = 0, hi = tb->n - 1;
  while (hi - lo > 1) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (tb->v[mid] <= ax)
      lo = mid;
    else
      hi = mid;
  }
  double twice = 2 * ax, sum = tb->v[lo] + tb->v[hi]; /* both exact */
  if (twice < sum)
    best = lo;
  else if (twice > sum)
    best = hi;
  else
    best = (lo & 1u) == 0 ? lo : hi;
  return sign | best;
}

/* ---- the implementation's scalar conversions, by format ---- */

static uint32_t impl_widen(const fmt *f, uint32_t code) {
  if (f == &FMT_F16)
    return tu_fbits(d9_f16_to_f32((uint16_t)code));
  if (f == &FMT_BF16)
    return tu_fbits(d9_bf16_to_f32((uint16_t)code));
  if (f == &FMT_E4M3)
    return tu_fbits(d9_e4m3_to_f32((uint8_t)code));
  return tu_fbits(d9_e5m2_to_f32((uint8_t)code));
}

static uint32_t impl_narrow(const fmt *f, float x) {
  if (f == &FMT_F16)
    return d9_f32_to_f16(x);
  if (f == &FMT_BF16)
    return d9_f32_to_bf16(x);
  if (f == &FMT_E4M3)
    return d9_f32_to_e4m3(x);
  return d9_f32_to_e5m2(x);
}

/* Compares every narrowing of x with the reference; returns mismatches. */
static int check_narrow_all(float x, int *reported) {
  int bad = 0;
  for (int t = 0; t < N_FMTS; t++) {
    uint32_t want = ref_narrow(FMTS[t], x), got = impl_narrow(FMTS[t], x);
    if (want != got) {
      if ((*reported)++ < MAX_REPORT)
        print_error("narrow %s: x=%a (0x%08x): want 0x%04x got 0x%04x\n",
                    FMTS[t]->name, (double)x, tu_fbits(x), want, got);
      bad++;
    }
  }
  return bad;
}

/* ---- decoding: every code ---- */

static void check_widen_every_code(const fmt *f) {
  int bad = 0;
  for (uint32_t c = 0; c < (1u << f->bits); c++) {
    uint32_t want = ref_widen(f, c), got = impl_widen(f, c);
    if (want != got && bad++ < MAX_REPORT)
      print_error("widen %s 0x%04x: want 0x%08x got 0x%08x\n", f->name, c,
                  want, got);
  }
  assert_int_equal(bad, 0);
}

static void test_widen_f16(void **state) {
  (void)state;
  check_widen_every_code(&FMT_F16);
}

static void test_widen_bf16(void **state) {
  (void)state;
  check_widen_every_code(&FMT_BF16);
}

static void test_widen_e4m3(void **state) {
  (void)state;
  check_widen_every_code(&FMT_E4M3);
  assert_true(d9_e4m3_to_f32(0x7e) == 448.0f);
  assert_true(d9_e4m3_to_f32(0x01) == 0x1p-9f);
  assert_true(isnan(d9_e4m3_to_f32(0xff)) && signbit(d9_e4m3_to_f32(0xff)));
}

static void test_widen_e5m2(void **state) {
  (void)state;
  check_widen_every_code(&FMT_E5M2);
  assert_true(d9_e5m2_to_f32(0x7b) == 57344.0f);
  assert_true(d9_e5m2_to_f32(0x01) == 0x1p-16f);
  assert_true(isinf(d9_e5m2_to_f32(0xfc)) && d9_e5m2_to_f32(0xfc) < 0);
}

/* ---- encoding ---- */

/* Every 16-bit pattern of f, widened by the reference, narrowed to every
 * format; and the round trip to f itself gives the code back. */
static void check_narrow_widened(const fmt *f) {
  int bad = 0, reported = 0;
  for (uint32_t c = 0; c < 65536; c++) {
    float x = tu_ffrom(ref_widen(f, c));
    bad += check_narrow_all(x, &reported);
    int kind;
    ref_value(f, c, &kind);
    if (kind != CODE_NAN && impl_narrow(f, x) != c) {
      if (reported++ < MAX_REPORT)
        print_error("round trip %s 0x%04x\n", f->name, c);
      bad++;
    }
  }
  assert_int_equal(bad, 0);
}

static void test_narrow_f16_patterns(void **state) {
  (void)state;
  check_narrow_widened(&FMT_F16);
}

static void test_narrow_bf16_patterns(void **state) {
  (void)state;
  check_narrow_widened(&FMT_BF16);
}

static void test_narrow_random_bits(void **state) {
  (void)state;
  uint64_t rng = SEED;
  int bad = 0, reported = 0;
  print_message("random f32 bit patterns: seed 0x%016llx, %d values\n",
                (unsigned long long)SEED, N_RANDOM);
  for (int i = 0; i < N_RANDOM; i++)
    bad += check_narrow_all(tu_ffrom((uint32_t)splitmix64(&rng)), &reported);
  assert_int_equal(bad, 0);
}

/* Random values whose exponent lies where the targets round: 2^-30 to
 * 2^18 (past F16 and E5M2 overflow, below their smallest subnormals). */
static void test_narrow_random_in_range(void **state) {
  (void)state;
  uint64_t rng = SEED ^ UINT64_C(0x5555);
  int bad = 0, reported = 0;
  print_message("random in-range values: seed 0x%016llx, %d values\n",
                (unsigned long long)(SEED ^ UINT64_C(0x5555)), N_RANDOM);
  for (int i = 0; i < N_RANDOM; i++) {
    uint64_t r = splitmix64(&rng);
    uint32_t exp = 127 - 30 + (uint32_t)((r >> 32) % 49);
    uint32_t w = ((uint32_t)(r >> 31) & 0x80000000u) | (exp << 23) |
                 ((uint32_t)r & 0x7fffffu);
    bad += check_narrow_all(tu_ffrom(w), &reported);
  }
  assert_int_equal(bad, 0);
}

/* Every midpoint between adjacent representable values of every format
 * (ties: nearest-even decides), the F32 values either side of it, and the
 * same negated; for IEEE formats that includes the overflow threshold. */
static void test_narrow_midpoints(void **state) {
  (void)state;
  int bad = 0, reported = 0;
  for (int t = 0; t < N_FMTS; t++) {
    const ref_table *tb = &TABLES[t];
    for (uint32_t c = 0; c < tb->n; c++) {
      double next = c + 1 < tb->n ? tb->v[c + 1] : 2 * tb->overflow - tb->v[c];
      double mid = (tb->v[c] + next) / 2;
      float m = (float)mid;
      assert_true((double)m == mid);
      float xs[] = {m, nextafterf(m, 0), nextafterf(m, INFINITY)};
      for (int k = 0; k < 3; k++) {
        bad += check_narrow_all(xs[k], &reported);
        bad += check_narrow_all(-xs[k], &reported);
      }
    }
  }
  assert_int_equal(bad, 0);
}

/* Hand-picked specials, each checked against the reference and some
 * against codes written out here, which checks the reference itself. */
static void test_narrow_specials(void **state) {
  (void)state;
  static const uint32_t specials[] = {
      0x00000000, 0x80000000, 0x7f800000, 0xff800000, /* zeros, Inf */
      0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, /* NaNs */
      0x7fbfffff, 0x7fffffff, 0xffffffff, 0x7fa00000, 0x7ff00000,
      0x00000001, 0x80000001, 0x007fffff, 0x00400000, /* F32 subnormal */
      0x00800000, 0x7f7fffff, 0xff7fffff, 0x3f800000, /* min, max, 1 */
      0x33000000, 0x33000001, 0x32ffffff,             /* 2^-25 (F16) */
      0x477fe000, 0x477fefff, 0x477ff000, 0x477ff001, /* 65504, 65520 */
      0x43e00000, 0x43e80000, 0x43f00000, 0x43f80000, /* 448..496 */
      0x47600000, 0x476fffff, 0x47700000, 0x47800000, /* 57344, 61440 */
      0x3a800000, 0x3a000000, 0x39ffffff, 0x3a000001, /* E4M3 2^-9 */
      0x37800000, 0x37000000, 0x36ffffff, 0x37000001, /* E5M2 2^-16 */
      0x7f7f8000, 0x7f7f7fff, 0x00008000, 0x00018000, /* BF16 ties */
  };
  int bad = 0, reported = 0;
  for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
    bad += check_narrow_all(tu_ffrom(specials[i]), &reported);
  assert_int_equal(bad, 0);

  assert_int_equal(d9_f32_to_f16(65504.0f), 0x7bff);
  assert_int_equal(d9_f32_to_f16(nextafterf(65520.0f, 0)), 0x7bff);
  assert_int_equal(d9_f32_to_f16(65520.0f), 0x7c00);
  assert_int_equal(d9_f32_to_f16(-INFINITY), 0xfc00);
  assert_int_equal(d9_f32_to_f16(0x1p-25f), 0x0000); /* tie to even 0 */
  assert_int_equal(d9_f32_to_f16(0x1.8p-24f), 0x0002); /* tie to even 2 */
  assert_int_equal(d9_f32_to_f16(-0x1p-26f), 0x8000);
  assert_int_equal(d9_f32_to_f16(tu_ffrom(0xffc00001)), 0xfe00);
  assert_int_equal(d9_f32_to_bf16(tu_ffrom(0x7f800001)), 0x7fc0);
  assert_int_equal(d9_f32_to_bf16(tu_ffrom(0xffa50000)), 0xffe5);
  assert_int_equal(d9_f32_to_bf16(tu_ffrom(0x3f808000)), 0x3f80); /* tie */
  assert_int_equal(d9_f32_to_bf16(tu_ffrom(0x3f818000)), 0x3f82); /* tie */
  assert_int_equal(d9_f32_to_bf16(tu_ffrom(0x7f7f8000)), 0x7f80); /* Inf */
  assert_int_equal(d9_f32_to_bf16(tu_ffrom(0x00008000)), 0x0000);
  assert_int_equal(d9_f32_to_e4m3(448.0f), 0x7e);
  assert_int_equal(d9_f32_to_e4m3(464.0f), 0x7e);
  assert_int_equal(d9_f32_to_e4m3(1e30f), 0x7e);
  assert_int_equal(d9_f32_to_e4m3(-1e30f), 0xfe);
  assert_int_equal(d9_f32_to_e4m3(INFINITY), 0x7e); /* saturates, as finite overflow */
  assert_int_equal(d9_f32_to_e4m3(-INFINITY), 0xfe);
  assert_int_equal(d9_f32_to_e4m3(NAN), 0x7f);
  assert_int_equal(d9_f32_to_e4m3(-NAN), 0xff);
  assert_int_equal(d9_f32_to_e4m3(0x1p-10f), 0x00); /* tie to even 0 */
  assert_int_equal(d9_f32_to_e4m3(0x1.8p-9f), 0x02); /* tie to even 2 */
  assert_int_equal(d9_f32_to_e4m3(0x1.1p+0f), 0x38); /* tie to 1.0 */
  assert_int_equal(d9_f32_to_e5m2(57344.0f), 0x7b);
  assert_int_equal(d9_f32_to_e5m2(nextafterf(61440.0f, 0)), 0x7b);
  assert_int_equal(d9_f32_to_e5m2(61440.0f), 0x7c);
  assert_int_equal(d9_f32_to_e5m2(-INFINITY), 0xfc);
  assert_int_equal(d9_f32_to_e5m2(tu_ffrom(0xff800001)), 0xfe);
  assert_int_equal(d9_f32_to_e5m2(0x1p-17f), 0x00);
  assert_int_equal(d9_f32_to_e5m2(nextafterf(0x1p-17f, 1)), 0x01);
}

/* ---- the backend ---- */

/* Scalar path for one element: same types copy, else widen + narrow. */
static void scalar_cast(uint8_t *dst, d9_dtype dt, const uint8_t *src,
                        d9_dtype st) {
  if (st == dt) {
    memcpy(dst, src, d9_dtype_size(st));
    return;
  }
  float x;
  uint16_t h;
  switch (st) {
  case D9_F32: memcpy(&x, src, 4); break;
  case D9_F16: memcpy(&h, src, 2); x = d9_f16_to_f32(h); break;
  case D9_BF16: memcpy(&h, src, 2); x = d9_bf16_to_f32(h); break;
  case D9_F8_E4M3: x = d9_e4m3_to_f32(src[0]); break;
  default: x = d9_e5m2_to_f32(src[0]); break;
  }
  switch (dt) {
  case D9_F32: memcpy(dst, &x, 4); break;
  case D9_F16: h = d9_f32_to_f16(x); memcpy(dst, &h, 2); break;
  case D9_BF16: h = d9_f32_to_bf16(x); memcpy(dst, &h, 2); break;
  case D9_F8_E4M3: dst[0] = d9_f32_to_e4m3(x); break;
  default: dst[0] = d9_f32_to_e5m2(x); break;
  }
}

static const d9_dtype CASTABLE[] = {D9_F32, D9_F16, D9_BF16, D9_F8_E4M3,
                                    D9_F8_E5M2};
enum { N_CASTABLE = 5, GUARD = 16 };

/* n source elements of type st: every code of a 1- or 2-byte type in turn
 * (repeated), or for F32 random bits with specials mixed in. */
static void fill_source(uint8_t *p, d9_dtype st, int64_t n, uint64_t *rng) {
  static const uint32_t f32_specials[] = {
      0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000,
      0xff800001, 0x00000001, 0x477ff000, 0x43f00000, 0x47700000,
      0x3f808000, 0x33000000, 0x3a000000, 0x37000000, 0x3f800000};
  size_t size = d9_dtype_size(st);
  for (int64_t i = 0; i < n; i++) {
    if (size == 4) {
      uint32_t w = (uint32_t)splitmix64(rng);
      if (i % 3 == 0)
        w = f32_specials[(i / 3) % (sizeof f32_specials / 4)];
      memcpy(p + 4 * i, &w, 4);
    } else if (size == 2) {
      uint16_t h = (uint16_t)(i * 40503u); /* odd stride: all codes */
      memcpy(p + 2 * i, &h, 2);
    } else {
      p[i] = (uint8_t)i;
    }
  }
}

/* Casts n elements st -> dt through the backend at byte offset off and
 * compares with the scalar path; checks the guard bytes after dst. */
static int check_backend_cast(d9_dtype dt, d9_dtype st, int64_t n, int off,
                              uint64_t *rng) {
  const d9_backend *be = d9_backend_cpu();
  size_t ss = d9_dtype_size(st), ds = d9_dtype_size(dt);
  uint8_t *src = malloc((size_t)n * ss + 1 + GUARD);
  uint8_t *got = malloc((size_t)n * ds + 1 + GUARD);
  uint8_t *want = malloc((size_t)n * ds + 1);
  assert_non_null(src);
  assert_non_null(got);
  assert_non_null(want);
  fill_source(src + off, st, n, rng);
  memset(got, 0xa5, (size_t)n * ds + 1 + GUARD);
  for (int64_t i = 0; i < n; i++)
    scalar_cast(want + i * ds, dt, src + off + i * ss, st);
  assert_int_equal(be->cast(got + off, dt, src + off, st, n), 0);
  int bad = memcmp(got + off, want, (size_t)n * ds) != 0;
  for (int g = 0; g < GUARD; g++)
    bad |= got[off + (size_t)n * ds + g] != 0xa5;
  if (bad)
    print_error("cast %s -> %s, n=%lld, offset %d differs\n",
                d9_dtype_name(st), d9_dtype_name(dt), (long long)n, off);
  free(src);
  free(got);
  free(want);
  return bad;
}

static void test_backend_cast_pairs(void **state) {
  (void)state;
  uint64_t rng = SEED ^ 1;
  int bad = 0;
  for (int i = 0; i < N_CASTABLE; i++)
    for (int j = 0; j < N_CASTABLE; j++)
      bad += check_backend_cast(CASTABLE[j], CASTABLE[i], 65536 + 37, 0, &rng);
  assert_int_equal(bad, 0);
}

static void test_backend_cast_lengths(void **state) {
  (void)state;
  static const int64_t lengths[] = {0, 1, 7, 63, 64, 65, 1023};
  uint64_t rng = SEED ^ 2;
  int bad = 0;
  for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++)
    for (int i = 0; i < N_CASTABLE; i++)
      for (int j = 0; j < N_CASTABLE; j++)
        for (int off = 0; off < 2; off++) /* off 1: unaligned */
          bad += check_backend_cast(CASTABLE[j], CASTABLE[i], lengths[l], off,
                                    &rng);
  assert_int_equal(bad, 0);
}

static void test_backend_errors(void **state) {
  (void)state;
  const d9_backend *be = d9_backend_cpu();
  assert_string_equal(be->name, "cpu");
  int32_t in[3] = {1, -2, 3}, out[3] = {0};
  float f[3] = {0};
  assert_int_equal(be->cast(out, D9_I32, in, D9_I32, 3), 0); /* memcpy */
  assert_memory_equal(out, in, sizeof in);
  uint8_t b[3] = {1, 0, 1}, bo[3] = {0};
  assert_int_equal(be->cast(bo, D9_BOOL, b, D9_BOOL, 3), 0);
  assert_memory_equal(bo, b, sizeof b);
  assert_int_equal(be->cast(f, D9_F32, in, D9_I32, 3), -EINVAL);
  assert_int_equal(be->cast(out, D9_I32, f, D9_F32, 3), -EINVAL);
  assert_int_equal(be->cast(f, D9_F32, in, D9_F64, 1), -EINVAL);
  assert_int_equal(be->cast(f, D9_F32, f, D9_F32, -1), -EINVAL);
  assert_int_equal(be->cast(f, D9_DTYPE_INVALID, f, D9_F32, 1), -EINVAL);
  assert_int_equal(be->cast(f, D9_DTYPE_COUNT, f, D9_DTYPE_COUNT, 1),
                   -EINVAL);
  assert_int_equal(be->cast(NULL, D9_F16, f, D9_F32, 1), -EINVAL);
  assert_int_equal(be->cast(NULL, D9_F16, NULL, D9_F32, 0), 0);
  assert_int_equal(be->cast(f, D9_F32, in, D9_I32, 0), -EINVAL);
  assert_int_equal(be->affine(f, D9_F32, in, D9_I32, 3, 1, 0), -EINVAL);
  assert_int_equal(be->affine(out, D9_I32, in, D9_I32, 3, 1, 0), -EINVAL);
  assert_int_equal(be->affine(f, D9_F32, f, D9_F32, -1, 1, 0), -EINVAL);
  assert_int_equal(be->affine(NULL, D9_F32, NULL, D9_F32, 0, 1, 0), 0);
}

/* Reference affine element: widen (scalar path), t = x * a, t = t + b in
 * F32, a NaN made 0x7fc00000, then narrow (scalar path). */
static void ref_affine(uint8_t *dst, d9_dtype dt, const uint8_t *src,
                       d9_dtype st, float a, float b) {
  float x;
  uint8_t tmp[4];
  if (st == D9_F32)
    memcpy(&x, src, 4);
  else {
    scalar_cast(tmp, D9_F32, src, st);
    memcpy(&x, tmp, 4);
  }
  volatile float t = x * a; /* volatile: two roundings, never an FMA */
  float r = t + b;
  if (isnan(r))
    r = tu_ffrom(0x7fc00000u);
  if (dt == D9_F32)
    memcpy(dst, &r, 4);
  else
    scalar_cast(dst, dt, (const uint8_t *)&r, D9_F32);
}

static void test_backend_affine(void **state) {
  (void)state;
  static const float ab[][2] = {{1, 1},     {1, -1},    {0.5f, 0.25f},
                                {-3, 1e-3f}, {0, 2},    {1e30f, -1e30f},
                                {0x1p-20f, 0}};
  static const d9_dtype srcs[] = {D9_BF16, D9_F32, D9_F16, D9_F8_E4M3};
  static const int64_t lengths[] = {0, 1, 7, 1023, 65536 + 37};
  const d9_backend *be = d9_backend_cpu();
  uint64_t rng = SEED ^ 3;
  int bad = 0;
  for (size_t p = 0; p < sizeof ab / sizeof ab[0]; p++)
    for (size_t s = 0; s < sizeof srcs / sizeof srcs[0]; s++)
      for (int j = 0; j < N_CASTABLE; j++)
        for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; l++) {
          d9_dtype st = srcs[s], dt = CASTABLE[j];
          int64_t n = lengths[l];
          size_t ss = d9_dtype_size(st), ds = d9_dtype_size(dt);
          uint8_t *src = malloc((size_t)n * ss + 1);
          uint8_t *got = malloc((size_t)n * ds + 1);
          uint8_t *want = malloc((size_t)n * ds + 1);
          assert_true(src && got && want);
          fill_source(src, st, n, &rng);
          for (int64_t i = 0; i < n; i++)
            ref_affine(want + i * ds, dt, src + i * ss, st, ab[p][0], ab[p][1]);
          assert_int_equal(be->affine(got, dt, src, st, n, ab[p][0], ab[p][1]),
                           0);
          if (memcmp(got, want, (size_t)n * ds) != 0 && bad++ < MAX_REPORT)
            print_error("affine %s -> %s, a=%a b=%a, n=%lld differs\n",
                        d9_dtype_name(st), d9_dtype_name(dt), (double)ab[p][0],
                        (double)ab[p][1], (long long)n);
          free(src);
          free(got);
          free(want);
        }
  assert_int_equal(bad, 0);

  /* NaN from Inf * 0 and from a NaN input are both the canonical one */
  float in[2] = {INFINITY, tu_ffrom(0xffc00001)}, out[2];
  assert_int_equal(be->affine(out, D9_F32, in, D9_F32, 2, 0, 1), 0);
  assert_int_equal(tu_fbits(out[0]), 0x7fc00000);
  assert_int_equal(be->affine(out, D9_F32, in, D9_F32, 2, 1, 1), 0);
  assert_int_equal(tu_fbits(out[1]), 0x7fc00000);
}

/* ---- E4M3 saturation: +-Inf and every |x| > 448 give +-448 ---- */

/* The E4M3 code of x by the format's definition, written for this test
 * alone: NaN is 0x7f | sign; every |x| >= 448 (Inf included) is 448 =
 * 0x7e | sign; else the nearest of the positive codes 0x00 .. 0x7e, decoded
 * here with ldexp, ties to the even code. */
static uint8_t naive_e4m3(float x) {
  uint8_t sign = signbit(x) ? 0x80 : 0;
  if (isnan(x)) return sign | 0x7f;
  double ax = fabs((double)x);
  if (ax >= 448.0) return sign | 0x7e;
  uint8_t best = 0;
  double best_d = INFINITY;
  for (int c = 0; c <= 0x7e; c++) {
    int e = c >> 3, m = c & 7;
    double v = e ? ldexp(8 + m, e - 10) : ldexp(m, -9);
    double d = fabs(ax - v);
    if (d < best_d || (d == best_d && (c & 1) == 0)) best = (uint8_t)c, best_d = d;
  }
  return sign | best;
}

/* Every F32 of magnitude in [384, 1024) (the codes 0x7c .. 0x7e = 384,
 * 416, 448, the ties 400 and 432, 449 .. 464 rounding to 448 as before, and
 * the saturation above 464),
 * +-Inf, and every NaN pattern, against naive_e4m3, through the scalar
 * conversion and through the backend's array cast (F32, and the Inf / NaN
 * of F16, BF16 and E5M2, which convert through F32). */
static void test_e4m3_saturation(void **state) {
  (void)state;
  int bad = 0;
  for (uint32_t w = tu_fbits(384.0f); w < tu_fbits(1024.0f); w++)
    for (uint32_t s = 0; s < 2; s++) {
      float x = tu_ffrom(w | s << 31);
      if (d9_f32_to_e4m3(x) != naive_e4m3(x) && bad++ < MAX_REPORT)
        print_error("e4m3(%a) = 0x%02x, want 0x%02x\n", (double)x, d9_f32_to_e4m3(x),
                    naive_e4m3(x));
    }
  for (uint32_t m = 0; m < (1u << 23); m++) /* Inf (m = 0) and every NaN */
    for (uint32_t s = 0; s < 2; s++) {
      float x = tu_ffrom(s << 31 | 0x7f800000u | m);
      if (d9_f32_to_e4m3(x) != naive_e4m3(x) && bad++ < MAX_REPORT)
        print_error("e4m3(0x%08x) = 0x%02x, want 0x%02x\n", tu_fbits(x), d9_f32_to_e4m3(x),
                    naive_e4m3(x));
    }
  assert_int_equal(bad, 0);
  assert_int_equal(naive_e4m3(INFINITY), 0x7e);
  assert_int_equal(naive_e4m3(-INFINITY), 0xfe);
  assert_int_equal(naive_e4m3(449.0f), 0x7e);
  assert_int_equal(naive_e4m3(432.0f), 0x7e); /* tie 416 / 448: even 0x7e */
  assert_int_equal(naive_e4m3(400.0f), 0x7c); /* tie 384 / 416: even 0x7c */
  assert_int_equal(naive_e4m3(nextafterf(432.0f, 0)), 0x7d);

  const d9_backend *be = d9_backend_cpu();
  float f32[200];
  uint8_t got[200];
  for (int i = 0; i < 200; i++) /* the array loop: whole blocks and a tail */
    f32[i] = i % 4 == 0 ? INFINITY : i % 4 == 1 ? -INFINITY : i % 4 == 2 ? NAN : 440.0f + (float)i;
  assert_int_equal(be->cast(got, D9_F8_E4M3, f32, D9_F32, 200), 0);
  for (int i = 0; i < 200; i++) assert_int_equal(got[i], naive_e4m3(f32[i]));
  static const struct { d9_dtype t; uint16_t pinf, ninf, nan; } wide[] = {
      {D9_F16, 0x7c00, 0xfc00, 0x7e00}, {D9_BF16, 0x7f80, 0xff80, 0x7fc0}};
  for (int k = 0; k < 2; k++) {
    uint16_t in[3] = {wide[k].pinf, wide[k].ninf, wide[k].nan};
    assert_int_equal(be->cast(got, D9_F8_E4M3, in, wide[k].t, 3), 0);
    assert_int_equal(got[0], 0x7e);
    assert_int_equal(got[1], 0xfe);
    assert_int_equal(got[2], 0x7f);
  }
  uint8_t e5[3] = {0x7c, 0xfc, 0x7e}; /* E5M2 +Inf, -Inf, NaN */
  assert_int_equal(be->cast(got, D9_F8_E4M3, e5, D9_F8_E5M2, 3), 0);
  assert_int_equal(got[0], 0x7e);
  assert_int_equal(got[1], 0xfe);
  assert_int_equal(got[2], 0x7f);
}

/* ---- the backend's box members and transpose, against formulas ---- */

/* A box over a [M, N] matrix in blocks b0 x b1: rows [i0, i0 + rows),
 * columns [j0, j0 + n); window entry of element (r, k). */
static int64_t win_at(const d9_fp8_box *b, int64_t r, int64_t k) {
  return ((b->i0 + r) / b->b0 - b->i0 / b->b0) * b->lds + (b->j0 + k) / b->b1 - b->j0 / b->b1;
}

/* dequant, amax and quant of random boxes (block sizes that cut rows and
 * columns, a window wider than needed) element by element: dequant f32(w)
 * * s (NaN 0x7fc00000), amax the max |x| over the block's elements in the
 * box (NaN ignored) folded into the entry, quant e4m3(x / s) (a NaN x
 * keeps its sign); and the argument errors kernels.h lists. */
static void test_backend_fp8_boxes(void **state) {
  (void)state;
  const d9_backend *be = d9_backend_cpu();
  uint64_t rng = SEED ^ 7;
  int bad = 0;
  for (int it = 0; it < 40; it++) {
    d9_fp8_box b = {.i0 = (int64_t)(splitmix64(&rng) % 300), .rows = 1 + (int64_t)(splitmix64(&rng) % 9),
                    .b0 = 1 + (int64_t)(splitmix64(&rng) % 5), .j0 = (int64_t)(splitmix64(&rng) % 300),
                    .n = 1 + (int64_t)(splitmix64(&rng) % 200), .b1 = 1 + (int64_t)(splitmix64(&rng) % 70)};
    int64_t nrb = (b.i0 + b.rows - 1) / b.b0 - b.i0 / b.b0 + 1;
    int64_t ncb = (b.j0 + b.n - 1) / b.b1 - b.j0 / b.b1 + 1;
    b.lds = ncb + (int64_t)(splitmix64(&rng) % 3);
    int64_t ne = b.rows * b.n, nw = nrb * b.lds;
    uint8_t *w = malloc((size_t)ne), *q = malloc((size_t)ne);
    float *x = malloc((size_t)ne * 4), *sc = malloc((size_t)nw * 4), *am = malloc((size_t)nw * 4);
    unsigned char *deq = malloc((size_t)ne * 4 + 1);
    assert_true(w && q && x && sc && am && deq);
    for (int64_t e = 0; e < ne; e++) {
      w[e] = (uint8_t)splitmix64(&rng);
      uint32_t u = (uint32_t)splitmix64(&rng);
      x[e] = e % 5 ? tu_ffrom(u) : (float)(int32_t)u * 0x1p-24f;
    }
    for (int64_t k = 0; k < nw; k++) {
      sc[k] = d9_cpu_fp8_scale((float)(splitmix64(&rng) % 100000) * 0.37f);
      am[k] = (float)(k % 3); /* accumulates onto these */
    }
    d9_dtype wt = it % 2 ? D9_F8_E5M2 : D9_F8_E4M3;
    assert_int_equal(be->fp8_dequant(deq + 1, w, wt, sc, &b), 0);
    assert_int_equal(be->fp8_quant(q, x, sc, &b), 0);
    float *am0 = malloc((size_t)nw * 4);
    assert_non_null(am0);
    memcpy(am0, am, (size_t)nw * 4);
    assert_int_equal(be->fp8_amax(am, x, &b), 0);
    for (int64_t r = 0; r < b.rows; r++)
      for (int64_t k = 0; k < b.n; k++) {
        int64_t e = r * b.n + k, at = win_at(&b, r, k);
        volatile float v = wt == D9_F8_E5M2 ? d9_e5m2_to_f32(w[e]) : d9_e4m3_to_f32(w[e]);
        volatile float y = v * sc[at];
        uint32_t want = isnan(y) ? 0x7fc00000u : tu_fbits(y), got;
        memcpy(&got, deq + 1 + 4 * e, 4);
        volatile float quo = x[e] / sc[at];
        uint8_t wq = isnan(x[e]) ? (uint8_t)(0x7f | (tu_fbits(x[e]) >> 24 & 0x80)) : d9_f32_to_e4m3(quo);
        if ((got != want || q[e] != wq) && bad++ < MAX_REPORT)
          print_error("box %d (%lld, %lld): dequant 0x%08x want 0x%08x, quant 0x%02x want 0x%02x\n",
                      it, (long long)r, (long long)k, got, want, q[e], wq);
        if (!isnan(x[e]) && fabsf(x[e]) > am0[at]) am0[at] = fabsf(x[e]);
      }
    if (memcmp(am0, am, (size_t)nw * 4) && bad++ < MAX_REPORT) print_error("box %d: amax differs\n", it);
    free(w), free(q), free(x), free(sc), free(am), free(am0), free(deq);
  }
  assert_int_equal(bad, 0);
  float f[4] = {1, 2, 3, 4};
  uint8_t u8[4] = {0};
  d9_fp8_box ok = {.rows = 2, .b0 = 1, .n = 2, .b1 = 2, .lds = 1};
  d9_fp8_box neg = ok, narrow = ok, noblk = ok, empty = ok;
  neg.j0 = -1, narrow.j0 = 1, noblk.b0 = 0, empty.rows = 0;
  assert_int_equal(be->fp8_dequant(f, u8, D9_F8_E4M3, f, &neg), -EINVAL);
  assert_int_equal(be->fp8_dequant(f, u8, D9_F32, f, &ok), -EINVAL);
  assert_int_equal(be->fp8_amax(f, f, &narrow), -EINVAL); /* lds 1 < 2 blocks touched */
  assert_int_equal(be->fp8_quant(u8, f, f, &noblk), -EINVAL);
  assert_int_equal(be->fp8_quant(NULL, f, f, &ok), -EINVAL);
  assert_int_equal(be->fp8_quant(NULL, NULL, NULL, &empty), 0);
}

/* transpose of [batch, rows, cols] against dst[(b*cols + c)*rows + r] =
 * src[(b*rows + r)*cols + c], element sizes 1, 2, 3, 4, 8, 16, unaligned. */
static void test_backend_transpose(void **state) {
  (void)state;
  const d9_backend *be = d9_backend_cpu();
  static const size_t sizes[] = {1, 2, 3, 4, 8, 16};
  static const int64_t dims[][3] = {{1, 1, 1}, {1, 7, 5}, {3, 4, 9}, {2, 33, 65}, {1, 1, 40}, {4, 40, 1}};
  uint64_t rng = SEED ^ 8;
  for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
    for (size_t di = 0; di < sizeof dims / sizeof *dims; di++) {
      size_t es = sizes[si];
      int64_t B = dims[di][0], R = dims[di][1], C = dims[di][2];
      size_t nb = (size_t)(B * R * C) * es;
      unsigned char *src = malloc(nb + 1), *got = malloc(nb + 1), *want = malloc(nb);
      assert_true(src && got && want);
      for (size_t i = 0; i < nb; i++) src[i + 1] = (unsigned char)splitmix64(&rng);
      for (int64_t b = 0; b < B; b++)
        for (int64_t r = 0; r < R; r++)
          for (int64_t c = 0; c < C; c++)
            memcpy(want + (size_t)((b * C + c) * R + r) * es, src + 1 + (size_t)((b * R + r) * C + c) * es, es);
      assert_int_equal(be->transpose(got + 1, src + 1, es, B, R, C), 0);
      if (memcmp(got + 1, want, nb))
        fail_msg("transpose es=%zu [%lld, %lld, %lld] differs", es, (long long)B, (long long)R, (long long)C);
      free(src), free(got), free(want);
    }
  char c[4];
  assert_int_equal(be->transpose(c, c, 1, -1, 1, 1), -EINVAL);
  assert_int_equal(be->transpose(NULL, c, 1, 1, 2, 2), -EINVAL);
  assert_int_equal(be->transpose(c, c, 0, 1, 2, 2), -EINVAL);
  assert_int_equal(be->transpose(NULL, NULL, 4, 0, 2, 2), 0);
  assert_int_equal(be->transpose(c, c, 8, 1, INT64_MAX / 2, 4), -EOVERFLOW);
}

static int setup(void **state) {
  (void)state;
  build_tables();
  return 0;
}

/* Block dequant against the formula element by element: f32(code) times
 * the scale of the element's block (one F32 multiply), NaN as 0x7fc00000;
 * every code, scales with specials (0, -0, Inf, NaN, subnormal, huge),
 * block sizes and segment starts that cut blocks, unaligned dst. This runs
 * the loops on each ISA build (test_kernels_base, _avx2). */
static void test_fp8_dequant(void **state) {
  (void)state;
  static const uint32_t specials[] = {0x00000000, 0x80000000, 0x7f800000, 0xff800000,
                                      0x7fc00001, 0x00000001, 0x7f7fffff, 0x3f800000};
  static const int64_t blocks[] = {1, 7, 64, 128, 300};
  uint64_t rng = SEED ^ 5;
  int bad = 0;
  for (int wt = 0; wt < 2; wt++)
    for (size_t bi = 0; bi < sizeof blocks / sizeof *blocks; bi++)
      for (int it = 0; it < 6; it++) {
        int64_t b = blocks[bi], j0 = (int64_t)(splitmix64(&rng) % 500);
        int64_t n = it == 0 ? 0 : (int64_t)(splitmix64(&rng) % 3000);
        int64_t nsc = (j0 + n) / b - j0 / b + 1;
        uint8_t *w = malloc((size_t)n + 1), *dst = malloc((size_t)n * 4 + 1);
        float *sc = malloc((size_t)nsc * sizeof *sc);
        assert_true(w && dst && sc);
        for (int64_t k = 0; k < n; k++) w[k] = (uint8_t)(splitmix64(&rng) >> 13);
        for (int64_t k = 0; k < nsc; k++) {
          uint32_t u = (uint32_t)splitmix64(&rng);
          if (k % 3 == 0) u = specials[(size_t)(k / 3) % (sizeof specials / 4)];
          memcpy(&sc[k], &u, 4);
        }
        d9_dtype t = wt ? D9_F8_E5M2 : D9_F8_E4M3;
        assert_int_equal(d9_cpu_fp8_dequant(dst + 1, w, t, sc, j0, n, b), 0);
        for (int64_t k = 0; k < n; k++) {
          float x = wt ? d9_e5m2_to_f32(w[k]) : d9_e4m3_to_f32(w[k]);
          float want = x * sc[(j0 + k) / b - j0 / b], got;
          uint32_t wb = tu_fbits(want);
          if (want != want) wb = 0x7fc00000u;
          memcpy(&got, dst + 1 + 4 * k, 4);
          if (tu_fbits(got) != wb && bad++ < MAX_REPORT)
            print_error("dequant %s b=%lld j0=%lld k=%lld: want 0x%08x got 0x%08x\n",
                        d9_dtype_name(t), (long long)b, (long long)j0, (long long)k, wb,
                        tu_fbits(got));
        }
        free(w);
        free(dst);
        free(sc);
      }
  assert_int_equal(bad, 0);
}

/* Block quant against the formula: e4m3(x / scale of the block) with one
 * F32 division, a NaN x keeping its sign (0x7f | sign); random bits for x,
 * and x = m * s nudged by an ulp with m an E4M3 rounding midpoint, so that
 * the division's own rounding decides the code (a reciprocal multiply
 * fails here); positive scales as d9_cpu_fp8_scale gives, blocks cut by
 * segment starts. Runs on each ISA build like the dequant test. */
static void test_fp8_quant(void **state) {
  (void)state;
  static const int64_t blocks[] = {1, 5, 64, 128, 300};
  uint64_t rng = SEED ^ 6;
  int bad = 0;
  for (size_t bi = 0; bi < sizeof blocks / sizeof *blocks; bi++)
    for (int it = 0; it < 6; it++) {
      int64_t b = blocks[bi], j0 = (int64_t)(splitmix64(&rng) % 500);
      int64_t n = it == 0 ? 0 : (int64_t)(splitmix64(&rng) % 3000);
      int64_t nsc = (j0 + n) / b - j0 / b + 1;
      float *x = malloc((size_t)n * sizeof *x + 4), *sc = malloc((size_t)nsc * sizeof *sc);
      uint8_t *dst = malloc((size_t)n + 1);
      assert_true(x && sc && dst);
      for (int64_t k = 0; k < nsc; k++)
        sc[k] = d9_cpu_fp8_scale((float)(splitmix64(&rng) % 100000) * 0.37f);
      for (int64_t k = 0; k < n; k++) {
        uint32_t u = (uint32_t)splitmix64(&rng);
        if (k % 4 != 0) { /* near a midpoint of two E4M3 codes, times the scale */
          int e = (int)(u % 14) - 6, j = (int)(u >> 8 & 7);
          float m = ldexpf(1.0f + (float)(2 * j + 1) / 16.0f, e);
          float xv = m * sc[(j0 + k) / b - j0 / b];
          u = tu_fbits(xv) + (uint32_t)(u >> 16) % 3u - 1u;
        }
        memcpy(&x[k], &u, 4);
      }
      assert_int_equal(d9_cpu_fp8_quant(dst, x, sc, j0, n, b), 0);
      for (int64_t k = 0; k < n; k++) {
        float q = x[k] / sc[(j0 + k) / b - j0 / b];
        uint32_t want = d9_f32_to_e4m3(q);
        if (x[k] != x[k]) want = 0x7fu | ((tu_fbits(x[k]) >> 24) & 0x80u);
        if (dst[k] != want && bad++ < MAX_REPORT)
          print_error("quant b=%lld j0=%lld k=%lld: x=0x%08x want 0x%02x got 0x%02x\n",
                      (long long)b, (long long)j0, (long long)k, tu_fbits(x[k]), want, dst[k]);
      }
      free(x);
      free(sc);
      free(dst);
    }
  assert_int_equal(bad, 0);
}

int main(void) {
#ifdef D9_TEST_AVX2 /* the AVX2 build of the kernels (CMakeLists.txt) */
  if (!__builtin_cpu_supports("avx2")) {
    printf("skip: this CPU has no AVX2\n");
    return 77;
  }
#endif
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_widen_f16),
      cmocka_unit_test(test_widen_bf16),
      cmocka_unit_test(test_widen_e4m3),
      cmocka_unit_test(test_widen_e5m2),
      cmocka_unit_test(test_narrow_f16_patterns),
      cmocka_unit_test(test_narrow_bf16_patterns),
      cmocka_unit_test(test_narrow_random_bits),
      cmocka_unit_test(test_narrow_random_in_range),
      cmocka_unit_test(test_narrow_midpoints),
      cmocka_unit_test(test_narrow_specials),
      cmocka_unit_test(test_backend_cast_pairs),
      cmocka_unit_test(test_backend_cast_lengths),
      cmocka_unit_test(test_backend_errors),
      cmocka_unit_test(test_backend_affine),
      cmocka_unit_test(test_fp8_dequant),
      cmocka_unit_test(test_fp8_quant),
      cmocka_unit_test(test_e4m3_saturation),
      cmocka_unit_test(test_backend_fp8_boxes),
      cmocka_unit_test(test_backend_transpose),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
