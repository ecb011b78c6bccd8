/* test_cuda.c - every member of the CUDA backend against the CPU kernels,
 * bit for bit (ggml's test-backend-ops idea), and the GPU benchmark.
 *
 * Exit 77 (skip) when there is no device: a build without CUDA
 * (d9_cuda_device_count() = -ENODEV) or a CUDA build where the driver finds
 * none. With D9_REQUIRE_GPU=1 that is a failure instead (for a GPU CI).
 * On a machine with a GPU, device 0's backend must exist and match:
 *  - cast: every code of every 8/16-bit format to every format; an F32 grid
 *    of all top-19-bit patterns with tie / near-tie / random low bits (every
 *    rounding boundary of every target); random lengths and misaligned
 *    pointers; lengths spanning several staging jobs on both lanes;
 *  - affine: every castable pair, a and b including 0, -0, Inf, NaN and
 *    products that are F32 subnormals (no flush to zero, no FMA);
 *  - fp8 dequant / amax / quant: random boxes with ragged edge blocks, odd
 *    sizes, rows longer than a job, block sides above 2^30; scales and
 *    inputs with NaN, Inf, zeros of both signs, subnormals, negatives;
 *  - transpose: element sizes 1, 2, 4, 8, odd shapes, batches above the
 *    grid limit, matrices larger than a staging buffer (tiled jobs);
 *  - error answers equal the CPU's; six threads at once (more than the four
 *    slots of a device).
 * D9_TEST_SEED replays a run (the seed is printed); D9_TEST_CUDA_EXHAUSTIVE=1
 * adds every F32 bit pattern to every format (~1 min).
 *
 * `test_cuda --bench [MAX_BYTES]` (tools/bench-gpu) times each operation on
 * the CPU (one thread, the kernels the evaluator calls) and through the CUDA
 * backend (host buffer to host buffer, copies included) for ranges of 4 KiB
 * to MAX_BYTES (default 1 GiB) output bytes, checks the two outputs are
 * identical, and prints the crossover size per operation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernels/cuda/cuda.h"
#include "kernels/kernels.h"

enum { MAX_REPORT = 6, GUARD = 16, STAGE = 8 << 20 /* kernels/cuda/stage.cuh */ };

static const d9_dtype CASTABLE[] = {D9_F32, D9_F16, D9_BF16, D9_F8_E4M3, D9_F8_E5M2};
enum { N_CASTABLE = 5 };

/* ---- helpers ---- */

/* d9_cuda_backend_status, which kernels/cuda_stub.c may not have yet */
static int backend_status(int dev) {
#ifdef D9DFS_HAVE_CUDA
  return d9_cuda_backend_status(dev);
#else
  (void)dev;
  return -ENODEV;
#endif
}

static float ffrom(uint32_t w) {
  float f;
  memcpy(&f, &w, sizeof f);
  return f;
}

static uint64_t splitmix64(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static int64_t rnd(uint64_t *s, int64_t lo, int64_t hi) { /* [lo, hi] */
  return lo + (int64_t)(splitmix64(s) % (uint64_t)(hi - lo + 1));
}

static uint64_t g_seed = UINT64_C(0xd9dfc0dac0ffee01);

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  assert_non_null(p);
  return p;
}

/* F32 patterns that matter: specials, subnormals, values near every
 * format's range, random bits. */
static uint32_t gen_f32(uint64_t *s) {
  static const uint32_t sp[] = {
      0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001,
      0xff812345, 0x00000001, 0x807fffff, 0x00800000, 0x3f800000, 0x477ff000, 0x477fefff,
      0x43e00000, 0x43e80000, 0x43f00000, 0x47700000, 0x47600000, 0x7f7fffff, 0x33000000,
      0x3b000000, 0x37000000, 0x36800000, 0x3a000000, 0x7f7f8000, 0xbf808000};
  uint64_t r = splitmix64(s);
  switch (r & 7) {
  case 0: return sp[(r >> 8) % (sizeof sp / sizeof sp[0])];
  case 1: return (uint32_t)(r >> 32) & 0x807fffffu;                      /* subnormal */
  case 2: return ((uint32_t)(r >> 32) & 0x81ffffffu) | 0x38000000u;       /* |x| ~ 2^-15..2^16 */
  case 3: return ((uint32_t)(r >> 32) & 0x80ffe000u) | 0x3c000000u | 0x1000u; /* F16 ties */
  default: return (uint32_t)(r >> 32);
  }
}

/* n elements of type t: codes at random for 1/2-byte types (with the
 * all-codes walk every so often), gen_f32 for F32. */
static void fill(void *p, d9_dtype t, int64_t n, uint64_t *s) {
  size_t es = d9_dtype_size(t);
  uint8_t *b = p;
  for (int64_t i = 0; i < n; i++) {
    uint32_t w = es == 4 ? gen_f32(s) : (i & 1) ? (uint32_t)splitmix64(s) : (uint32_t)(i * 40503u);
    memcpy(b + (size_t)i * es, &w, es); /* little-endian: the low bytes */
  }
}

/* Counts differing elements of es bytes, printing the first few. */
static int64_t diff(const char *what, const void *got, const void *want, int64_t n, size_t es) {
  const uint8_t *g = got, *w = want;
  int64_t bad = 0;
  if (memcmp(got, want, (size_t)n * es) == 0)
    return 0;
  for (int64_t i = 0; i < n; i++)
    if (memcmp(g + (size_t)i * es, w + (size_t)i * es, es) != 0 && bad++ < MAX_REPORT) {
      uint64_t gv = 0, wv = 0;
      memcpy(&gv, g + (size_t)i * es, es);
      memcpy(&wv, w + (size_t)i * es, es);
      print_error("%s: element %lld: gpu %llx cpu %llx\n", what, (long long)i,
                  (unsigned long long)gv, (unsigned long long)wv);
    }
  return bad;
}

/* ---- cast and affine ---- */

/* One cast (aff = 0) or affine through both backends: n elements from
 * src (type st) at byte offset so, into dst at offset do; guard bytes
 * after the GPU's output must stay untouched. */
static int64_t check_cast(const d9_backend *be, d9_dtype dt, d9_dtype st, const void *src,
                          int64_t n, int so, int dof, int aff, float a, float b) {
  const d9_backend *cpu = d9_backend_cpu();
  size_t ss = d9_dtype_size(st), ds = d9_dtype_size(dt);
  uint8_t *s = xmalloc((size_t)n * ss + 8), *got = xmalloc((size_t)n * ds + 8 + GUARD);
  uint8_t *want = xmalloc((size_t)n * ds + 1);
  memcpy(s + so, src, (size_t)n * ss);
  memset(got, 0xa5, (size_t)n * ds + 8 + GUARD);
  int rc = aff ? cpu->affine(want, dt, s + so, st, n, a, b) : cpu->cast(want, dt, s + so, st, n);
  int rg = aff ? be->affine(got + dof, dt, s + so, st, n, a, b)
               : be->cast(got + dof, dt, s + so, st, n);
  assert_int_equal(rc, 0);
  assert_int_equal(rg, 0);
  char what[128];
  snprintf(what, sizeof what, "%s %s -> %s n=%lld a=%a b=%a", aff ? "affine" : "cast",
           d9_dtype_name(st), d9_dtype_name(dt), (long long)n, (double)a, (double)b);
  int64_t bad = diff(what, got + dof, want, n, ds);
  for (int g = 0; g < GUARD; g++)
    if (got[dof + (size_t)n * ds + g] != 0xa5 && bad++ == 0)
      print_error("%s: wrote past the end\n", what);
  free(s);
  free(got);
  free(want);
  return bad;
}

static void test_backend(void **state) {
  const d9_backend *be = *state;
  assert_string_equal(be->name, "cuda:0");
  assert_true(be->cast && be->affine && be->fp8_dequant && be->fp8_amax && be->fp8_quant &&
              be->transpose);
  assert_ptr_equal(d9_backend_cuda(0), be);
  assert_null(d9_backend_cuda(-1));
  int n = d9_cuda_device_count();
  if (n < 16)
    assert_null(d9_backend_cuda(n));
  assert_int_equal(backend_status(0), 0);
}

static void test_cast_codes(void **state) {
  const d9_backend *be = *state;
  int64_t bad = 0;
  for (int i = 1; i < N_CASTABLE; i++) {
    d9_dtype st = CASTABLE[i];
    size_t ss = d9_dtype_size(st);
    int64_t n = (ss == 2 ? 65536 : 256) * 3 + 13;
    uint8_t *src = xmalloc((size_t)n * ss);
    for (int64_t k = 0; k < n; k++) {
      uint32_t c = (uint32_t)k;
      memcpy(src + (size_t)k * ss, &c, ss);
    }
    for (int j = 0; j < N_CASTABLE; j++)
      bad += check_cast(be, CASTABLE[j], st, src, n, 0, 0, 0, 0, 0);
    free(src);
  }
  assert_int_equal(bad, 0);
}

/* (hi << 13) | low for every hi < 2^19 and low in {0, tie, tie - 1,
 * tie + 1, random}: every rounding boundary of every narrowing. */
static void test_cast_f32_grid(void **state) {
  const d9_backend *be = *state;
  uint64_t s = g_seed ^ 1;
  int64_t n = (INT64_C(1) << 19) * 5;
  uint32_t *src = xmalloc((size_t)n * 4);
  static const uint32_t lows[] = {0, 0x1000, 0x0fff, 0x1001};
  for (int64_t k = 0; k < n; k++) {
    uint32_t hi = (uint32_t)(k / 5), l = (uint32_t)(k % 5);
    src[k] = (hi << 13) | (l < 4 ? lows[l] : (uint32_t)splitmix64(&s) & 0x1fffu);
  }
  int64_t bad = 0;
  for (int j = 1; j < N_CASTABLE; j++)
    bad += check_cast(be, CASTABLE[j], D9_F32, src, n, 0, 0, 0, 0, 0);
  free(src);
  assert_int_equal(bad, 0);
}

static void test_cast_exhaustive(void **state) {
  const d9_backend *be = *state, *cpu = d9_backend_cpu();
  const char *e = getenv("D9_TEST_CUDA_EXHAUSTIVE");
  if (!e || strcmp(e, "1") != 0)
    skip();
  int64_t chunk = INT64_C(1) << 26, bad = 0;
  uint32_t *src = xmalloc((size_t)chunk * 4);
  uint8_t *got = xmalloc((size_t)chunk * 2), *want = xmalloc((size_t)chunk * 2);
  for (int64_t base = 0; base < (INT64_C(1) << 32); base += chunk) {
    for (int64_t k = 0; k < chunk; k++)
      src[k] = (uint32_t)(base + k);
    for (int j = 1; j < N_CASTABLE; j++) {
      d9_dtype dt = CASTABLE[j];
      assert_int_equal(cpu->cast(want, dt, src, D9_F32, chunk), 0);
      assert_int_equal(be->cast(got, dt, src, D9_F32, chunk), 0);
      bad += diff(d9_dtype_name(dt), got, want, chunk, d9_dtype_size(dt));
    }
  }
  free(src);
  free(got);
  free(want);
  assert_int_equal(bad, 0);
}

static void test_cast_lengths(void **state) {
  const d9_backend *be = *state;
  uint64_t s = g_seed ^ 2;
  static const int64_t lens[] = {0, 1, 2, 7, 63, 64, 65, 255, 4097, 100003};
  int64_t bad = 0;
  for (size_t l = 0; l < sizeof lens / sizeof lens[0]; l++)
    for (int i = 0; i < N_CASTABLE; i++)
      for (int j = 0; j < N_CASTABLE; j++) {
        d9_dtype st = CASTABLE[i], dt = CASTABLE[j];
        uint8_t *src = xmalloc((size_t)lens[l] * 4);
        fill(src, st, lens[l], &s);
        bad += check_cast(be, dt, st, src, lens[l], (int)rnd(&s, 0, 3), (int)rnd(&s, 0, 3), 0,
                          0, 0);
        free(src);
      }
  /* several jobs on both lanes: 8 MiB staging buffers */
  static const d9_dtype big[][2] = {{D9_F32, D9_BF16}, {D9_F8_E4M3, D9_F32}, {D9_BF16, D9_F16}};
  for (size_t k = 0; k < sizeof big / sizeof big[0]; k++) {
    int64_t n = 5 * (STAGE / 4) + 12345;
    uint8_t *src = xmalloc((size_t)n * 4);
    fill(src, big[k][0], n, &s);
    bad += check_cast(be, big[k][1], big[k][0], src, n, 1, 3, 0, 0, 0);
    free(src);
  }
  assert_int_equal(bad, 0);
}

static void test_errors(void **state) {
  const d9_backend *be = *state, *cpu = d9_backend_cpu();
  float f[4] = {1, 2, 3, 4}, o[4];
  int32_t in[4] = {1, 2, 3, 4}, out[4];
  struct { void *d; d9_dtype dt; const void *s; d9_dtype st; int64_t n; } c[] = {
      {o, D9_F32, in, D9_I32, 3},   {out, D9_I32, f, D9_F32, 3},
      {o, D9_F32, in, D9_F64, 1},   {o, D9_F32, f, D9_F32, -1},
      {o, D9_DTYPE_INVALID, f, D9_F32, 1}, {o, D9_DTYPE_COUNT, f, D9_DTYPE_COUNT, 1},
      {NULL, D9_F16, f, D9_F32, 1}, {NULL, D9_F16, NULL, D9_F32, 0},
      {o, D9_F32, in, D9_I32, 0},   {out, D9_I32, in, D9_I32, 3},
      {o, D9_BF16, f, D9_F32, INT64_MAX}};
  for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
    assert_int_equal(be->cast(c[i].d, c[i].dt, c[i].s, c[i].st, c[i].n),
                     cpu->cast(c[i].d, c[i].dt, c[i].s, c[i].st, c[i].n));
    if (i < 9)
      assert_int_equal(be->affine(c[i].d, c[i].dt, c[i].s, c[i].st, c[i].n, 2, 1),
                       cpu->affine(c[i].d, c[i].dt, c[i].s, c[i].st, c[i].n, 2, 1));
  }
  assert_int_equal(be->affine(out, D9_I32, in, D9_I32, 3, 1, 0), -EINVAL);
  d9_fp8_box box = {0, 1, 1, 0, 4, 1, 4};
  uint8_t w[4] = {0};
  assert_int_equal(be->fp8_dequant(o, w, D9_F16, f, &box), -EINVAL);
  assert_int_equal(be->fp8_dequant(o, w, D9_F8_E4M3, f, NULL), -EINVAL);
  box.lds = 3; /* 4 block columns touched */
  assert_int_equal(be->fp8_quant(w, f, f, &box), -EINVAL);
  box.lds = 4;
  box.b1 = 0;
  assert_int_equal(be->fp8_amax(o, f, &box), -EINVAL);
  box.b1 = 1;
  box.n = -1;
  assert_int_equal(be->fp8_quant(w, f, f, &box), -EINVAL);
  box.n = 0; /* nothing to touch: NULL pointers are fine, as on the CPU */
  assert_int_equal(be->fp8_quant(NULL, NULL, NULL, &box), 0);
  assert_int_equal(be->fp8_dequant(NULL, NULL, D9_F8_E5M2, NULL, &box), 0);
  box.n = 4;
  assert_int_equal(be->fp8_amax(NULL, f, &box), -EINVAL);
  float neg[4] = {0, -1, 0, 0}; /* a negative amax entry: the CPU's turn */
  assert_int_equal(be->fp8_amax(neg, f, &box), -ENOTSUP);
  assert_true(neg[1] == -1.0f);
  assert_int_equal(be->transpose(o, f, 3, 1, 2, 2), -ENOTSUP);
  assert_int_equal(be->transpose(o, f, 4, 1, -2, 2), -EINVAL);
  assert_int_equal(be->transpose(NULL, NULL, 4, 0, 2, 2), 0);
  assert_int_equal(be->transpose(NULL, f, 4, 1, 2, 2), -EINVAL);
}

static void test_affine(void **state) {
  const d9_backend *be = *state;
  static const float ab[][2] = {
      {1, 1}, {1, -1}, {0.5f, 0.25f}, {-3, 1e-3f}, {0, 2}, {-0.0f, -0.0f}, {1e30f, -1e30f},
      {0x1p-20f, 0}, {0x1p-130f, 0x1p-149f}, {0x1.8p-126f, -0x1p-127f}, {INFINITY, 0},
      {0, INFINITY}, {NAN, 1}, {1, -INFINITY}, {3.14159f, 2.71828f}, {1, 0x1p-149f}};
  uint64_t s = g_seed ^ 3;
  int64_t bad = 0, n = 20011;
  uint8_t *src = xmalloc((size_t)n * 4);
  for (size_t p = 0; p < sizeof ab / sizeof ab[0]; p++)
    for (int i = 0; i < N_CASTABLE; i++)
      for (int j = 0; j < N_CASTABLE; j++) {
        fill(src, CASTABLE[i], n, &s);
        bad += check_cast(be, CASTABLE[j], CASTABLE[i], src, n, 0, (int)(p & 3), 1, ab[p][0],
                          ab[p][1]);
      }
  free(src);
  int64_t big = 3 * (STAGE / 4) + 7; /* several jobs */
  src = xmalloc((size_t)big * 4);
  fill(src, D9_F32, big, &s);
  bad += check_cast(be, D9_BF16, D9_F32, src, big, 0, 1, 1, 0x1.000002p0f, -0x1p-140f);
  free(src);
  assert_int_equal(bad, 0);
}

/* ---- FP8 boxes ---- */

typedef struct {
  d9_fp8_box b;
  int64_t nrb, ncb; /* window rows, columns touched */
} boxdef;

static boxdef make_box(int64_t i0, int64_t rows, int64_t b0, int64_t j0, int64_t n, int64_t b1,
                       int64_t pad) {
  boxdef d;
  d.b.i0 = i0;
  d.b.rows = rows;
  d.b.b0 = b0;
  d.b.j0 = j0;
  d.b.n = n;
  d.b.b1 = b1;
  d.nrb = rows ? (i0 + rows - 1) / b0 - i0 / b0 + 1 : 1;
  d.ncb = n ? (j0 + n - 1) / b1 - j0 / b1 + 1 : 1;
  d.b.lds = d.ncb + pad;
  return d;
}

static int64_t pick_block(uint64_t *s) {
  static const int64_t bs[] = {1, 2, 3, 7, 16, 64, 127, 128, 129, 1000};
  return bs[splitmix64(s) % (sizeof bs / sizeof bs[0])];
}

/* A random box of a random matrix, ragged edges likely. */
static boxdef rand_box(uint64_t *s) {
  int64_t M = rnd(s, 1, 700), N = rnd(s, 1, 3000), b0 = pick_block(s), b1 = pick_block(s);
  int64_t i0 = rnd(s, 0, M - 1), j0 = rnd(s, 0, N - 1);
  return make_box(i0, rnd(s, 0, M - i0), b0, j0, rnd(s, 0, N - j0), b1, rnd(s, 0, 3));
}

/* Scale values: ordinary positive, block scales from amax, and the
 * unusual: 0, -0, negative, Inf, NaN, subnormal. */
static float gen_scale(uint64_t *s) {
  uint64_t r = splitmix64(s);
  switch (r % 10) {
  case 0: return ffrom(gen_f32(s));
  case 1: return d9_cpu_fp8_scale(ffrom(gen_f32(s) & 0x7fffffffu));
  case 2: return ffrom((uint32_t)(r >> 40) & 0x7fffff); /* subnormal */
  default: return ldexpf(1.0f + (float)(r >> 40) / 16777216.0f, (int)((r >> 8) % 40) - 30);
  }
}

static float *make_window(const boxdef *d, uint64_t *s) {
  size_t n = (size_t)(d->nrb * d->b.lds);
  float *w = xmalloc(n * sizeof *w);
  for (size_t i = 0; i < n; i++)
    w[i] = gen_scale(s);
  return w;
}

static const float *row_window(const float *w, const boxdef *d, int64_t r) {
  return w + ((d->b.i0 + r) / d->b.b0 - d->b.i0 / d->b.b0) * d->b.lds;
}

static int64_t check_dequant(const d9_backend *be, const boxdef *d, d9_dtype wt, uint64_t *s) {
  int64_t e = d->b.rows * d->b.n;
  uint8_t *w = xmalloc((size_t)e), *got = xmalloc((size_t)e * 4 + 4), *want = xmalloc((size_t)e * 4);
  fill(w, D9_U8, e, s);
  float *sc = make_window(d, s);
  for (int64_t r = 0; r < d->b.rows; r++)
    assert_int_equal(d9_cpu_fp8_dequant(want + 4 * r * d->b.n, w + r * d->b.n, wt,
                                        row_window(sc, d, r), d->b.j0, d->b.n, d->b.b1), 0);
  int off = (int)(splitmix64(s) & 3); /* dst at any alignment */
  assert_int_equal(be->fp8_dequant(got + off, w, wt, sc, &d->b), 0);
  char what[160];
  snprintf(what, sizeof what, "dequant %s box i0=%lld rows=%lld b0=%lld j0=%lld n=%lld b1=%lld",
           d9_dtype_name(wt), (long long)d->b.i0, (long long)d->b.rows, (long long)d->b.b0,
           (long long)d->b.j0, (long long)d->b.n, (long long)d->b.b1);
  int64_t bad = diff(what, got + off, want, e, 4);
  free(w);
  free(got);
  free(want);
  free(sc);
  return bad;
}

static int64_t check_amax(const d9_backend *be, const boxdef *d, uint64_t *s) {
  int64_t e = d->b.rows * d->b.n, wn = d->nrb * d->b.lds;
  float *x = xmalloc((size_t)e * 4), *got = xmalloc((size_t)wn * 4), *want = xmalloc((size_t)wn * 4);
  fill(x, D9_F32, e, s);
  for (int64_t i = 0; i < wn; i++) { /* >= 0, -0 or NaN on entry */
    uint64_t r = splitmix64(s);
    want[i] = r % 6 == 0 ? -0.0f : r % 6 == 1 ? NAN : r % 6 == 2 ? ldexpf((float)(r >> 40), -30) : 0.0f;
  }
  memcpy(got, want, (size_t)wn * 4);
  for (int64_t r = 0; r < d->b.rows; r++)
    assert_int_equal(d9_cpu_fp8_amax(want + ((d->b.i0 + r) / d->b.b0 - d->b.i0 / d->b.b0) *
                                                d->b.lds,
                                     x + r * d->b.n, d->b.j0, d->b.n, d->b.b1), 0);
  assert_int_equal(be->fp8_amax(got, x, &d->b), 0);
  int64_t bad = diff("amax", got, want, wn, 4);
  free(x);
  free(got);
  free(want);
  return bad;
}

static int64_t check_quant(const d9_backend *be, const boxdef *d, uint64_t *s) {
  int64_t e = d->b.rows * d->b.n;
  float *x = xmalloc((size_t)e * 4), *sc = make_window(d, s);
  uint8_t *got = xmalloc((size_t)e), *want = xmalloc((size_t)e);
  fill(x, D9_F32, e, s);
  for (int64_t r = 0; r < d->b.rows; r++)
    assert_int_equal(d9_cpu_fp8_quant(want + r * d->b.n, x + r * d->b.n, row_window(sc, d, r),
                                      d->b.j0, d->b.n, d->b.b1), 0);
  assert_int_equal(be->fp8_quant(got, x, sc, &d->b), 0);
  int64_t bad = diff("quant", got, want, e, 1);
  free(x);
  free(sc);
  free(got);
  free(want);
  return bad;
}

/* Large and edge boxes every FP8 test runs besides the random ones. */
static boxdef fixed_box(int k) {
  switch (k) {
  case 0: return make_box(0, 576, 128, 0, 7168, 128, 0);        /* DeepSeek ragged rows */
  case 1: return make_box(5, 3, 128, 1, STAGE / 2 + 77, 128, 2); /* rows longer than a job */
  case 2: return make_box(100, 900, 128, 64, 7000, 128, 1);     /* several jobs */
  case 3: return make_box(INT64_C(3) << 31, 5, INT64_C(1) << 40, (INT64_C(1) << 31) - 3, 1000,
                          (INT64_C(1) << 31) + 5, 0); /* block sides above 2^30 */
  default: return make_box(0, 1, 1, 0, 1, 1, 0);
  }
}
enum { N_FIXED = 5, N_RANDOM_BOXES = 150 };

/* Every special x against every special scale, one block per element:
 * the NaN quotients (0/0, Inf/Inf, NaN scale) take the host's NaN sign. */
static int64_t check_quant_specials(const d9_backend *be) {
  static const uint32_t v[] = {0x00000000, 0x80000000, 0x3f800000, 0xbf800000, 0x7f800000,
                               0xff800000, 0x7fc00000, 0xffc00001, 0x7f800001, 0x00000001,
                               0x80000001, 0x43e00000, 0x7f7fffff};
  enum { NV = sizeof v / sizeof v[0] };
  float x[NV * NV], sc[NV * NV];
  uint8_t got[NV * NV], want[NV * NV];
  for (int i = 0; i < NV * NV; i++) {
    x[i] = ffrom(v[i / NV]);
    sc[i] = ffrom(v[i % NV]);
  }
  boxdef d = make_box(0, 1, 1, 0, NV * NV, 1, 0);
  assert_int_equal(d9_cpu_fp8_quant(want, x, sc, 0, NV * NV, 1), 0);
  assert_int_equal(be->fp8_quant(got, x, sc, &d.b), 0);
  return diff("quant specials (x = v[i / 13], s = v[i % 13])", got, want, NV * NV, 1);
}

/* The fixed boxes, then random ones, through one of the checks (k: which;
 * dequant alternates E4M3 and E5M2 weights). */
static int64_t run_boxes(const d9_backend *be, int k, uint64_t *s) {
  int64_t bad = 0;
  for (int i = 0; i < N_FIXED + N_RANDOM_BOXES; i++) {
    boxdef d = i < N_FIXED ? fixed_box(i) : rand_box(s);
    bad += k == 0   ? check_dequant(be, &d, i & 1 ? D9_F8_E5M2 : D9_F8_E4M3, s)
           : k == 1 ? check_amax(be, &d, s)
                    : check_quant(be, &d, s);
  }
  return bad;
}

static void test_fp8_dequant(void **state) {
  uint64_t s = g_seed ^ 4;
  assert_int_equal(run_boxes(*state, 0, &s), 0);
}

static void test_fp8_amax(void **state) {
  uint64_t s = g_seed ^ 5;
  assert_int_equal(run_boxes(*state, 1, &s), 0);
}

static void test_fp8_quant(void **state) {
  uint64_t s = g_seed ^ 6;
  assert_int_equal(check_quant_specials(*state) + run_boxes(*state, 2, &s), 0);
}

/* ---- transpose ---- */

static void ref_transpose(uint8_t *dst, const uint8_t *src, size_t es, int64_t B, int64_t R,
                          int64_t C) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t r = 0; r < R; r++)
      for (int64_t c = 0; c < C; c++)
        memcpy(dst + (size_t)((b * C + c) * R + r) * es, src + (size_t)((b * R + r) * C + c) * es,
               es);
}

static int64_t check_transpose(const d9_backend *be, size_t es, int64_t B, int64_t R, int64_t C,
                               uint64_t *s) {
  size_t bytes = (size_t)(B * R * C) * es;
  uint8_t *src = xmalloc(bytes + 1), *got = xmalloc(bytes + 1 + GUARD), *want = xmalloc(bytes);
  for (size_t i = 0; i < bytes; i++)
    src[i + 1] = (uint8_t)splitmix64(s);
  memset(got, 0x5a, bytes + 1 + GUARD);
  ref_transpose(want, src + 1, es, B, R, C);
  assert_int_equal(be->transpose(got + 1, src + 1, es, B, R, C), 0); /* misaligned */
  char what[96];
  snprintf(what, sizeof what, "transpose es=%zu [%lld, %lld, %lld]", es, (long long)B,
           (long long)R, (long long)C);
  int64_t bad = diff(what, got + 1, want, (int64_t)bytes, 1);
  for (int g = 0; g < GUARD; g++)
    bad += got[1 + bytes + g] != 0x5a;
  free(src);
  free(got);
  free(want);
  return bad;
}

static void test_transpose(void **state) {
  const d9_backend *be = *state;
  uint64_t s = g_seed ^ 7;
  int64_t bad = 0;
  for (int i = 0; i < 200; i++) {
    size_t es = (size_t)1 << rnd(&s, 0, 3);
    bad += check_transpose(be, es, rnd(&s, 1, 4), rnd(&s, 1, 300), rnd(&s, 1, 300), &s);
  }
  bad += check_transpose(be, 4, 1, 1, 77777, &s);
  bad += check_transpose(be, 2, 1, 77777, 1, &s);
  bad += check_transpose(be, 1, 70001, 3, 5, &s);         /* batch above the grid limit */
  bad += check_transpose(be, 8, 1, 1500, 1500, &s);       /* tiles of whole rows */
  bad += check_transpose(be, 2, 2, 4099, 1031, &s);       /* tiles, several per matrix */
  bad += check_transpose(be, 1, 1, 3, STAGE + 5, &s);     /* rows longer than a job */
  bad += check_transpose(be, 4, 1, STAGE / 4 + 3, 2, &s); /* narrow and tall, tiled */
  bad += check_transpose(be, 1, 1, 3000000, 2, &s);       /* row tiles above the grid limit */
  assert_int_equal(bad, 0);
}

/* ---- several threads at once ---- */

typedef struct {
  const d9_backend *be;
  uint64_t seed;
  int64_t bad;
} worker;

static void *work(void *p) {
  worker *w = p;
  for (int k = 0; k < 3; k++) {
    int64_t n = STAGE / 2 + 1000 * k;
    uint8_t *src = malloc((size_t)n * 4), *a = malloc((size_t)n * 2), *b = malloc((size_t)n * 2);
    if (!src || !a || !b) {
      w->bad++;
      free(src), free(a), free(b);
      return NULL;
    }
    fill(src, D9_F32, n, &w->seed);
    int r1 = w->be->cast(a, D9_BF16, src, D9_F32, n);
    int r2 = d9_backend_cpu()->cast(b, D9_BF16, src, D9_F32, n);
    w->bad += r1 != 0 || r2 != 0 || memcmp(a, b, (size_t)n * 2) != 0;
    free(src), free(a), free(b);
  }
  return NULL;
}

static void test_threads(void **state) {
  enum { T = 6 };
  pthread_t th[T];
  worker w[T];
  for (int i = 0; i < T; i++) {
    w[i].be = *state;
    w[i].seed = g_seed ^ (uint64_t)(100 + i);
    w[i].bad = 0;
    assert_int_equal(pthread_create(&th[i], NULL, work, &w[i]), 0);
  }
  int64_t bad = 0;
  for (int i = 0; i < T; i++) {
    pthread_join(th[i], NULL);
    bad += w[i].bad;
  }
  assert_int_equal(bad, 0);
}

/* ---- the benchmark ---- */

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct {
  const char *name;
  int kind; /* 0 cast, 1 affine, 2 dequant, 3 amax, 4 quant, 5 transpose */
  d9_dtype st, dt; /* cast/affine types; transpose: st's size */
} bench_op;

static const bench_op BENCH[] = {
    {"cast F32->BF16", 0, D9_F32, D9_BF16},     {"cast BF16->F32", 0, D9_BF16, D9_F32},
    {"cast F32->F16", 0, D9_F32, D9_F16},       {"cast BF16->F8_E4M3", 0, D9_BF16, D9_F8_E4M3},
    {"cast F8_E4M3->BF16", 0, D9_F8_E4M3, D9_BF16}, {"affine BF16 w+1", 1, D9_BF16, D9_BF16},
    {"fp8 dequant E4M3->F32", 2, D9_F8_E4M3, D9_F32}, {"fp8 amax F32", 3, D9_F32, D9_F32},
    {"fp8 quant F32->E4M3", 4, D9_F32, D9_F8_E4M3}, {"transpose 2-byte", 5, D9_BF16, D9_BF16},
    {"transpose 4-byte", 5, D9_F32, D9_F32}};

/* Weight-like data for timing (no subnormal F32 arithmetic, which is slow
 * on x86 and would flatter the GPU): uniform in +-0.05 for the wide types,
 * random codes for FP8. */
static void fill_weights(void *p, d9_dtype t, int64_t n, uint64_t *s) {
  if (d9_dtype_size(t) == 1) {
    fill(p, D9_U8, n, s);
    return;
  }
  float buf[4096];
  for (int64_t i = 0; i < n; i += 4096) {
    int64_t k = n - i < 4096 ? n - i : 4096;
    for (int64_t j = 0; j < k; j++)
      buf[j] = (float)((double)(splitmix64(s) >> 11) * 0x1p-53 - 0.5) * 0.1f;
    if (d9_backend_cpu()->cast((uint8_t *)p + (size_t)i * d9_dtype_size(t), t, buf, D9_F32, k))
      abort();
  }
}

/* The CPU side of the 2-D members and of transpose: what the evaluator
 * does today (row by row; a 32 x 32 tiled loop). */
static int cpu_run(const bench_op *op, void *dst, const void *src, const float *sc, float *amax,
                   const d9_fp8_box *b) {
  const d9_backend *cpu = d9_backend_cpu();
  switch (op->kind) {
  case 0: return cpu->cast(dst, op->dt, src, op->st, b->rows * b->n);
  case 1: return cpu->affine(dst, op->dt, src, op->st, b->rows * b->n, 1.0f, 1.0f);
  case 5: {
    size_t es = d9_dtype_size(op->st);
    const uint8_t *s = src;
    uint8_t *d = dst;
    for (int64_t r0 = 0; r0 < b->rows; r0 += 32)
      for (int64_t c0 = 0; c0 < b->n; c0 += 32)
        for (int64_t r = r0; r < r0 + 32 && r < b->rows; r++)
          for (int64_t c = c0; c < c0 + 32 && c < b->n; c++)
            memcpy(d + (size_t)(c * b->rows + r) * es, s + (size_t)(r * b->n + c) * es, es);
    return 0;
  }
  default: break;
  }
  for (int64_t r = 0; r < b->rows; r++) {
    const float *w = sc + (r / b->b0) * b->lds;
    int rc = op->kind == 2 ? d9_cpu_fp8_dequant((float *)dst + r * b->n, (const uint8_t *)src + r * b->n,
                                                 op->st, w, 0, b->n, b->b1)
             : op->kind == 3 ? d9_cpu_fp8_amax(amax + (r / b->b0) * b->lds,
                                               (const float *)src + r * b->n, 0, b->n, b->b1)
                             : d9_cpu_fp8_quant((uint8_t *)dst + r * b->n,
                                                (const float *)src + r * b->n, w, 0, b->n, b->b1);
    if (rc)
      return rc;
  }
  return 0;
}

static int gpu_run(const d9_backend *be, const bench_op *op, void *dst, const void *src,
                   const float *sc, float *amax, const d9_fp8_box *b) {
  switch (op->kind) {
  case 0: return be->cast(dst, op->dt, src, op->st, b->rows * b->n);
  case 1: return be->affine(dst, op->dt, src, op->st, b->rows * b->n, 1.0f, 1.0f);
  case 2: return be->fp8_dequant(dst, src, op->st, sc, b);
  case 3: return be->fp8_amax(amax, src, b);
  case 4: return be->fp8_quant(dst, src, sc, b);
  default: return be->transpose(dst, src, d9_dtype_size(op->st), 1, b->rows, b->n);
  }
}

/* Seconds per call: repeated until 0.3 s have passed (at least once). */
static double timeit(int gpu, const d9_backend *be, const bench_op *op, void *dst,
                     const void *src, const float *sc, float *amax, const d9_fp8_box *b,
                     int *rc) {
  int reps = 0;
  double t0 = now(), t;
  do {
    *rc = gpu ? gpu_run(be, op, dst, src, sc, amax, b) : cpu_run(op, dst, src, sc, amax, b);
    reps++;
    t = now() - t0;
  } while (*rc == 0 && t < 0.3 && reps < 100000);
  return t / reps;
}

static int bench(const d9_backend *be, int64_t max_bytes) {
  uint64_t s = g_seed;
  int failed = 0;
  printf("%-24s %12s %10s %10s %8s %s\n", "op", "bytes", "cpu GB/s", "gpu GB/s", "gpu/cpu",
         "same");
  for (size_t o = 0; o < sizeof BENCH / sizeof BENCH[0]; o++) {
    const bench_op *op = &BENCH[o];
    int64_t cross = -1;
    for (int64_t bytes = 4096; bytes <= max_bytes; bytes *= 4) {
      /* bytes = output bytes (amax: input bytes) */
      size_t ies = d9_dtype_size(op->st), oes = op->kind == 3 ? ies : d9_dtype_size(op->dt);
      int64_t e = bytes / (int64_t)oes;
      d9_fp8_box b = {0, 1, 128, 0, e, 128, 0};
      if (op->kind >= 2) { /* DeepSeek-like rows of 7168, or one short row */
        b.n = e < 7168 ? e : 7168;
        b.rows = e / b.n;
        if (op->kind == 5 && e >= 4096 * 4) { b.n = 4096; b.rows = e / 4096; }
      }
      e = b.rows * b.n;
      b.lds = (b.n + 127) / 128;
      int64_t wn = ((b.rows + 127) / 128) * b.lds;
      void *src = malloc((size_t)e * ies), *d1 = malloc((size_t)e * oes), *d2 = malloc((size_t)e * oes);
      float *sc = malloc((size_t)wn * 4), *a1 = calloc((size_t)wn, 4), *a2 = calloc((size_t)wn, 4);
      if (!src || !d1 || !d2 || !sc || !a1 || !a2) {
        fprintf(stderr, "bench: out of memory at %lld bytes\n", (long long)bytes);
        free(src), free(d1), free(d2), free(sc), free(a1), free(a2);
        break;
      }
      fill_weights(src, op->st, e, &s);
      for (int64_t i = 0; i < wn; i++)
        sc[i] = d9_cpu_fp8_scale(ldexpf(1.0f + (float)(i % 7), (int)(i % 9)));
      int rc1, rc2;
      (void)gpu_run(be, op, d2, src, sc, a2, &b); /* warm-up: slot buffers */
      double tc = timeit(0, be, op, d1, src, sc, a1, &b, &rc1);
      double tg = timeit(1, be, op, d2, src, sc, a2, &b, &rc2);
      memset(a1, 0, (size_t)wn * 4), memset(a2, 0, (size_t)wn * 4);
      if (!rc1 && op->kind == 3) /* one fresh accumulation each to compare */
        rc1 = cpu_run(op, d1, src, sc, a1, &b), rc2 = gpu_run(be, op, d2, src, sc, a2, &b);
      int same = !rc1 && !rc2 &&
                 (op->kind == 3 ? !memcmp(a1, a2, (size_t)wn * 4) : !memcmp(d1, d2, (size_t)e * oes));
      double gb = (double)e * (double)oes / 1e9;
      printf("%-24s %12lld %10.2f %10.2f %8.2f %s\n", op->name, (long long)(e * (int64_t)oes),
             gb / tc, gb / tg, tc / tg, rc1 || rc2 ? "ERROR" : same ? "yes" : "NO");
      fflush(stdout);
      failed |= !same;
      if (tg < tc && cross < 0)
        cross = e * (int64_t)oes;
      else if (tg >= tc)
        cross = -1;
      free(src), free(d1), free(d2), free(sc), free(a1), free(a2);
    }
    if (cross < 0)
      printf("%-24s gpu slower at the largest size measured\n", op->name);
    else
      printf("%-24s gpu faster from %lld bytes up\n", op->name, (long long)cross);
  }
  return failed ? 1 : 0;
}

/* ---- main ---- */

static int group_setup(void **state) {
  *state = (void *)d9_backend_cuda(0);
  if (*state == NULL)
    fprintf(stderr, "test_cuda: a device is present but d9_backend_cuda(0) is NULL (status %d)\n",
            backend_status(0));
  return *state ? 0 : -1;
}

int main(int argc, char **argv) {
  int n = d9_cuda_device_count();
  if (n <= 0) {
    const char *req = getenv("D9_REQUIRE_GPU");
    int must = req && strcmp(req, "1") == 0;
    fprintf(stderr, "test_cuda: %s%s\n",
            n == -ENODEV ? "built without CUDA" : "no CUDA device found by the driver",
            must ? "; D9_REQUIRE_GPU=1: failing" : "; skipped");
    if (n == 0 && access("/dev/nvidia0", F_OK) == 0)
      fprintf(stderr, "test_cuda: /dev/nvidia0 exists: is the driver broken?\n");
    return must ? 1 : 77;
  }
  const char *e = getenv("D9_TEST_SEED");
  if (e)
    g_seed = strtoull(e, NULL, 0);
  printf("test_cuda: seed %llu (set D9_TEST_SEED to replay)\n", (unsigned long long)g_seed);
  if (argc > 1 && strcmp(argv[1], "--bench") == 0) {
    const d9_backend *be = d9_backend_cuda(0);
    if (!be) {
      fprintf(stderr, "test_cuda: d9_backend_cuda(0) is NULL (status %d)\n",
              backend_status(0));
      return 1;
    }
    return bench(be, argc > 2 ? strtoll(argv[2], NULL, 0) : INT64_C(1) << 30);
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_backend),        cmocka_unit_test(test_errors),
      cmocka_unit_test(test_cast_codes),     cmocka_unit_test(test_cast_f32_grid),
      cmocka_unit_test(test_cast_lengths),   cmocka_unit_test(test_cast_exhaustive),
      cmocka_unit_test(test_affine),         cmocka_unit_test(test_fp8_dequant),
      cmocka_unit_test(test_fp8_amax),       cmocka_unit_test(test_fp8_quant),
      cmocka_unit_test(test_transpose),      cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, group_setup, NULL);
}
