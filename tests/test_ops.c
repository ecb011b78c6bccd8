/* test_ops.c - the non-layout operations (built by mapper/node_ops.c,
 * evaluated by mapper/eval_fill.c and eval_fp8.c) against naive
 * references written here from the formulas.
 *
 * Fixtures: seeded random tensors written to a model.safetensors in a
 * temporary directory, opened as a catalog; op nodes are built on SOURCE
 * nodes and evaluated with d9_eval_fill. References: permute by index
 * arithmetic over the whole tensor; dequant with an FP8 decoder built on
 * ldexp() from the code's fields; quant by the per-block formula; affine
 * with float temporaries. For every node, random (start, count) ranges must
 * equal the same slice of the full evaluation (the laziness contract), the
 * bytes pulled from the source are checked where the design fixes them, the
 * scratch stack is empty after every fill, and injected read / allocation
 * failures come back as errors.
 *
 * Quantisation round trip bound (x finite, block scale s F32-normal, and
 * q*s normal or zero). With u = 2^-24: y' = fl(x / s) = (x / s)(1 + d1),
 * |d1| <= u. e4m3 rounding to nearest: in the normal range (|y'| >= 2^-6)
 * the error is at most half an ulp, 2^-4 |y'| (3 mantissa bits); in the
 * subnormal range at most half the spacing, 2^-10; |y'| never exceeds
 * 448 (1 + 4u), so saturation costs less than 2^-4 |y'|. Hence
 * |q - y'| <= 2^-4 |y'| + 2^-10. Then d = fl(q s) = q s (1 + d2) and
 *   d - x = (q - y') s + x d1 + q s d2
 *   |d - x| <= 2^-4 |x| (1 + u) + 2^-10 s + u |x| + u (1.0625 (1 + u) |x| + 2^-10 s)
 *           <= 2^-4 |x| + 2^-10 s + 2^-22 (|x| + s).
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
#include <unistd.h>

#include "kernels/kernels.h"
#include "mapper/eval.h"
#include "mapper/node.h"
#include "testutil.h"

#define SEED UINT64_C(0x0d9f0b5eed5eed01)
enum { RANGES = 60 };

/* ---- helpers ---- */

static uint64_t rng_state = SEED;

static uint64_t rnd(void) {
  uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static int64_t rnd_below(int64_t n) { return (int64_t)(rnd() % (uint64_t)n); }


static int64_t numel(const int64_t *shape, int ndim) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  return n;
}

/* ---- fixture: one model.safetensors in a temp dir, opened as a catalog ---- */

typedef struct tdef {
  const char *name;
  d9_dtype dt;
  int ndim;
  int64_t shape[D9_MAX_DIMS];
  const void *data;
} tdef;

typedef struct fx {
  char *dir;
  d9_catalog *cat;
  d9_arena *a;
  d9_read_ctx rc;
} fx;

static void fx_open(fx *f, const tdef *t, int n) {
  d9_st_tensor st[16];
  assert_true(n <= 16);
  for (int i = 0; i < n; i++) {
    memset(&st[i], 0, sizeof st[i]);
    st[i].name = t[i].name;
    st[i].dtype = t[i].dt;
    st[i].ndim = t[i].ndim;
    memcpy(st[i].shape, t[i].shape, sizeof st[i].shape);
  }
  unsigned char *hdr;
  uint64_t hlen;
  assert_int_equal(d9_st_write_header(st, n, NULL, NULL, 0, &hdr, &hlen), 0);
  f->dir = tu_tmpdir();
  char path[4200];
  snprintf(path, sizeof path, "%s/model.safetensors", f->dir);
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(hdr, 1, hlen, fp), hlen);
  for (int i = 0; i < n; i++) {
    size_t len = (size_t)(st[i].end - st[i].begin);
    assert_int_equal(fwrite(t[i].data, 1, len, fp), len);
  }
  assert_int_equal(fclose(fp), 0);
  free(hdr);
  d9_diag diag = {0};
  int rc = d9_catalog_open(f->dir, &f->cat, &diag);
  if (rc) fprintf(stderr, "catalog: %s\n", diag.msg);
  assert_int_equal(rc, 0);
  assert_non_null(f->a = d9_arena_create());
  memset(&f->rc, 0, sizeof f->rc);
  f->rc.cat = f->cat;
  f->rc.be = d9_backend_cpu();
  assert_non_null(f->rc.scratch = malloc(D9_SCRATCH_BYTES));
}

static void fx_close(fx *f) {
  free(f->rc.scratch);
  d9_arena_destroy(f->a);
  d9_catalog_close(f->cat);
  tu_rmrf(f->dir);
  free(f->dir);
}

static d9_node *fx_src(fx *f, const char *name) {
  const d9_src_tensor *t = d9_catalog_find(f->cat, name);
  assert_non_null(t);
  d9_node *n = d9_node_source(f->a, t);
  assert_non_null(n);
  return n;
}

/* Elements [start, start+count) of x; returns the source bytes pulled. */
static uint64_t fx_eval(fx *f, const d9_node *x, int64_t start, int64_t count, void *out) {
  f->rc.src_bytes = 0;
  int r = d9_eval_fill(&f->rc, x, start, count, out);
  assert_int_equal(r, 0);
  assert_int_equal(f->rc.scratch_top, 0);
  return f->rc.src_bytes;
}

/* The whole of x, malloc'd. */
static unsigned char *fx_full(fx *f, const d9_node *x, uint64_t *pulled) {
  size_t es = d9_dtype_size(x->dtype);
  unsigned char *b = malloc((size_t)x->numel * es + 1);
  assert_non_null(b);
  uint64_t p = fx_eval(f, x, 0, x->numel, b);
  if (pulled) *pulled = p;
  return b;
}

/* Random ranges of x equal the same slice of full; single elements and
 * the edges included. */
static void check_ranges(fx *f, const d9_node *x, const unsigned char *full) {
  size_t es = d9_dtype_size(x->dtype);
  int64_t n = x->numel;
  unsigned char *buf = malloc((size_t)n * es + 1), *b;
  assert_non_null(buf);
  for (int it = 0; it < RANGES; it++) {
    int64_t s, c;
    b = buf + (it & 1); /* readers' buffers need not be aligned */
    switch (it % 4) {
      case 0: s = rnd_below(n); c = 1; break;
      case 1: s = rnd_below(n); c = 1 + rnd_below(n - s); break;
      case 2: c = 1 + rnd_below(n < 64 ? n : 64); s = rnd_below(n - c + 1); break;
      default: s = it == 3 ? 0 : rnd_below(n); c = n - s;
    }
    fx_eval(f, x, s, c, b);
    if (memcmp(b, full + (size_t)s * es, (size_t)c * es)) {
      fprintf(stderr, "range [%lld, +%lld) differs from the full evaluation\n",
              (long long)s, (long long)c);
      fail();
    }
  }
  free(buf);
}

/* Every Nth pread fails, then every Nth scratch allocation: the fill
 * returns the error (or succeeds when none hit) and unwinds its scratch. */
static void check_faults(fx *f, const d9_node *x, int expect_allocs) {
  size_t es = d9_dtype_size(x->dtype);
  unsigned char *b = malloc((size_t)x->numel * es + 1);
  assert_non_null(b);
  int saw_eio = 0, saw_enomem = 0;
  for (uint64_t every = 1; every <= 4; every++)
    for (int kind = 0; kind < 2; kind++) {
      d9_faults fl = {0};
      if (kind) fl.alloc_every = every; else fl.pread_every = every;
      f->rc.faults = &fl;
      int r = d9_eval_fill(&f->rc, x, 0, x->numel, b);
      f->rc.faults = NULL;
      f->rc.failed_src = NULL;
      assert_int_equal(f->rc.scratch_top, 0);
      assert_true(r == 0 || r == (kind ? -ENOMEM : -EIO));
      if (r == -EIO) saw_eio = 1;
      if (r == -ENOMEM) saw_enomem = 1;
    }
  assert_true(saw_eio);
  if (expect_allocs) assert_true(saw_enomem);
  free(b);
}

/* ---- permute ---- */

static void naive_permute(unsigned char *dst, const unsigned char *src, const int64_t *ishape,
                          int n, const int *perm, size_t es) {
  int64_t istride[D9_MAX_DIMS], oshape[D9_MAX_DIMS], total = numel(ishape, n);
  for (int k = n - 1; k >= 0; k--) istride[k] = k == n - 1 ? 1 : istride[k + 1] * ishape[k + 1];
  for (int k = 0; k < n; k++) oshape[k] = ishape[perm[k]];
  for (int64_t e = 0; e < total; e++) {
    int64_t rest = e, j = 0;
    for (int k = n - 1; k >= 0; k--) {
      j += rest % oshape[k] * istride[perm[k]];
      rest /= oshape[k];
    }
    memcpy(dst + (size_t)e * es, src + (size_t)j * es, es);
  }
}

static int next_perm(int *p, int n) {
  int i = n - 2;
  while (i >= 0 && p[i] > p[i + 1]) i--;
  if (i < 0) return 0;
  int j = n - 1;
  while (p[j] < p[i]) j--;
  int t = p[i]; p[i] = p[j]; p[j] = t;
  for (int a = i + 1, b = n - 1; a < b; a++, b--) t = p[a], p[a] = p[b], p[b] = t;
  return 1;
}

/* One input; the permutations given (all of them when np == 0). */
static void run_permutes(const int64_t *shape, int n, d9_dtype dt, int perms[][D9_MAX_DIMS],
                         int np, int ranges) {
  size_t es = d9_dtype_size(dt);
  int64_t total = numel(shape, n);
  unsigned char *data = malloc((size_t)total * es + 1), *ref = malloc((size_t)total * es + 1);
  assert_true(data && ref);
  for (size_t i = 0; i < (size_t)total * es; i++) data[i] = (unsigned char)rnd();
  tdef t = {"x", dt, n, {0}, data};
  memcpy(t.shape, shape, sizeof(int64_t) * (size_t)n);
  fx f;
  fx_open(&f, &t, 1);
  d9_node *x = fx_src(&f, "x");
  int p[D9_MAX_DIMS];
  for (int k = 0; k < n; k++) p[k] = k;
  for (int i = 0; np ? i < np : 1; i++) {
    if (np) memcpy(p, perms[i], sizeof p);
    d9_diag diag = {0};
    d9_node *y = d9_node_permute(f.a, x, p, n, "t", &diag);
    assert_non_null(y);
    for (int k = 0; k < n; k++) assert_int_equal(y->shape[k], shape[p[k]]);
    naive_permute(ref, data, shape, n, p, es);
    uint64_t pulled;
    unsigned char *full = fx_full(&f, y, &pulled);
    assert_memory_equal(full, ref, (size_t)total * es);
    assert_int_equal(pulled, (uint64_t)total * es); /* bytes pulled = bytes produced */
    if (ranges) {
      check_ranges(&f, y, full);
      unsigned char *b = malloc((size_t)total * es);
      for (int it = 0; it < 20; it++) {
        int64_t s = rnd_below(total), c = 1 + rnd_below(total - s);
        assert_int_equal(fx_eval(&f, y, s, c, b), (uint64_t)c * es);
      }
      free(b);
    }
    free(full);
    if (!np && !next_perm(p, n)) break;
  }
  fx_close(&f);
  free(data);
  free(ref);
}

static void test_permute(void **state) {
  (void)state;
  run_permutes((int64_t[]){7, 5}, 2, D9_F32, NULL, 0, 1);
  run_permutes((int64_t[]){3, 4, 5}, 3, D9_BF16, NULL, 0, 1);
  run_permutes((int64_t[]){3, 4, 5}, 3, D9_F8_E4M3, NULL, 0, 1);
  run_permutes((int64_t[]){2, 3, 1, 4}, 4, D9_F32, NULL, 0, 1);
  run_permutes((int64_t[]){2, 3, 1, 4}, 4, D9_I64, NULL, 0, 0);
  run_permutes((int64_t[]){11}, 1, D9_F16, NULL, 0, 1);
  int p8[3][D9_MAX_DIMS] = {{7, 6, 5, 4, 3, 2, 1, 0}, {1, 0, 3, 2, 5, 4, 7, 6},
                            {2, 4, 0, 7, 1, 6, 3, 5}};
  run_permutes((int64_t[]){2, 1, 3, 2, 1, 2, 3, 2}, 8, D9_BF16, p8, 3, 1);
  /* pieces capped at PIECE_BYTES: many whole rows, and rows longer than a piece */
  int p2[1][D9_MAX_DIMS] = {{0, 2, 1}}, p1[1][D9_MAX_DIMS] = {{1, 0}};
  run_permutes((int64_t[]){2, 600, 500}, 3, D9_F64, p2, 1, 1);
  run_permutes((int64_t[]){140000, 2}, 2, D9_F64, p1, 1, 0);
}

static void test_permute_errors(void **state) {
  (void)state;
  float data[6] = {0};
  tdef t = {"x", D9_F32, 2, {2, 3}, data};
  fx f;
  fx_open(&f, &t, 1);
  d9_node *x = fx_src(&f, "x");
  d9_diag diag = {0};
  assert_null(d9_node_permute(f.a, x, (int[]){0, 0}, 2, "spec.json: rule 3", &diag));
  assert_string_equal(diag.msg,
                      "spec.json: rule 3: (0, 0) is not a permutation of the dims of [2, 3]");
  d9_diag_clear(&diag);
  assert_null(d9_node_permute(f.a, x, (int[]){2, 0, 1}, 3, "r", &diag));
  assert_string_equal(diag.msg, "r: permutation (2, 0, 1) has 3 dims, tensor [2, 3] has 2");
  d9_diag_clear(&diag);
  assert_null(d9_node_permute(f.a, x, (int[]){-1, 0}, 2, "r", &diag));
  d9_node *y = d9_node_permute(f.a, x, (int[]){1, 0}, 2, "r", &diag);
  assert_non_null(y);
  check_faults(&f, y, 0);
  fx_close(&f);
}

/* ---- dequant ---- */

/* An FP8 code decoded from its fields with ldexp. */
static float ref_fp8(uint8_t v, d9_dtype t) {
  int e4 = t == D9_F8_E4M3, mb = e4 ? 3 : 2, bias = e4 ? 7 : 15, emax = e4 ? 15 : 31;
  int s = v >> 7, e = (v >> mb) & emax, m = v & ((1 << mb) - 1);
  double r;
  if (e4 && e == 15 && m == 7) r = NAN;
  else if (!e4 && e == 31) r = m ? NAN : INFINITY;
  else if (e == 0) r = ldexp(m, 1 - bias - mb);
  else r = ldexp(1.0 + ldexp(m, -mb), e - bias);
  return (float)(s ? -r : r);
}

static float ref_scale(const void *s, d9_dtype t, int64_t i) {
  if (t == D9_F32) return ((const float *)s)[i];
  uint16_t h;
  memcpy(&h, (const unsigned char *)s + 2 * i, 2);
  return tu_ffrom((uint32_t)h << 16);
}

static float canon(float t) { return t != t ? tu_ffrom(0x7fc00000u) : t; }

static void naive_dequant(float *out, const uint8_t *w, d9_dtype wt, const void *s,
                          d9_dtype st, int64_t M, int64_t N, int64_t b0, int64_t b1) {
  int64_t nb = (N + b1 - 1) / b1;
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      float t = ref_fp8(w[i * N + j], wt) * ref_scale(s, st, (i / b0) * nb + j / b1);
      out[i * N + j] = canon(t);
    }
}

static void run_dequant(int64_t M, int64_t N, int64_t b0, int64_t b1, d9_dtype wt,
                        d9_dtype st) {
  int64_t mb = (M + b0 - 1) / b0, nb = (N + b1 - 1) / b1, ns = mb * nb;
  size_t ses = d9_dtype_size(st);
  uint8_t *w = malloc((size_t)(M * N));
  unsigned char *s = malloc((size_t)ns * ses);
  float *ref = malloc((size_t)(M * N) * 4);
  assert_true(w && s && ref);
  for (int64_t i = 0; i < M * N; i++) w[i] = (uint8_t)rnd(); /* every code: NaN, Inf, subnormal */
  for (int64_t k = 0; k < ns; k++) {
    float v = ldexpf(1.0f + (float)(rnd() % 1024) / 1024.0f, (int)rnd_below(24) - 16);
    if (k == 1) v = 0.0f;
    if (k == 2) v = INFINITY;
    if (k == 3) v = tu_ffrom(0x00012345u); /* subnormal scale */
    if (st == D9_F32) memcpy(s + 4 * k, &v, 4);
    else {
      uint16_t h = d9_f32_to_bf16(v);
      memcpy(s + 2 * k, &h, 2);
    }
  }
  naive_dequant(ref, w, wt, s, st, M, N, b0, b1);
  tdef t[2] = {{"w", wt, 2, {M, N}, w}, {"s", st, 2, {mb, nb}, s}};
  fx f;
  fx_open(&f, t, 2);
  d9_diag diag = {0};
  d9_node *y = d9_node_dequant(f.a, fx_src(&f, "w"), fx_src(&f, "s"), b0, b1, "t", &diag);
  assert_non_null(y);
  assert_int_equal(y->dtype, D9_F32);
  uint64_t pulled;
  unsigned char *full = fx_full(&f, y, &pulled);
  for (int64_t i = 0; i < M * N; i++)
    if (tu_fbits(((float *)full)[i]) != tu_fbits(ref[i])) {
      fprintf(stderr, "dequant [%lld] = %08x, want %08x (w %02x)\n", (long long)i,
              tu_fbits(((float *)full)[i]), tu_fbits(ref[i]), w[i]);
      fail();
    }
  assert_int_equal(pulled, (uint64_t)(M * N) + (uint64_t)ns * ses);
  check_ranges(&f, y, full);
  /* whole rows: the weight bytes plus the scale rows of the block rows touched */
  float *b = malloc((size_t)(M * N) * 4);
  for (int it = 0; it < 20; it++) {
    int64_t i0 = rnd_below(M), i1 = i0 + 1 + rnd_below(M - i0);
    uint64_t want = (uint64_t)((i1 - i0) * N) + (uint64_t)((i1 - 1) / b0 - i0 / b0 + 1) * nb * ses;
    assert_int_equal(fx_eval(&f, y, i0 * N, (i1 - i0) * N, b), want);
    /* part of one row: its weight bytes and the scales of its blocks */
    int64_t c0 = rnd_below(N), c1 = c0 + 1 + rnd_below(N - c0);
    want = (uint64_t)(c1 - c0) + (uint64_t)((c1 - 1) / b1 - c0 / b1 + 1) * ses;
    assert_int_equal(fx_eval(&f, y, i0 * N + c0, c1 - c0, b), want);
    /* the last column of a row and the first of the next, same block row */
    if (M > 1 && (i0 + 1 >= M || i0 / b0 != (i0 + 1) / b0)) i0 = i0 / b0 * b0;
    if (M > 1 && i0 / b0 == (i0 + 1) / b0 && i0 + 1 < M) {
      want = 2 + (uint64_t)(nb < 2 ? nb : 2) * ses;
      assert_int_equal(fx_eval(&f, y, i0 * N + N - 1, 2, b), want);
    }
  }
  free(b);
  check_faults(&f, y, 1);
  free(full);
  fx_close(&f);
  free(w);
  free(s);
  free(ref);
}

static void test_dequant(void **state) {
  (void)state;
  run_dequant(576, 200, 128, 128, D9_F8_E4M3, D9_F32);
  run_dequant(576, 200, 128, 128, D9_F8_E5M2, D9_BF16);
  run_dequant(130, 70, 64, 32, D9_F8_E4M3, D9_BF16);
  run_dequant(130, 70, 64, 32, D9_F8_E5M2, D9_F32);
  run_dequant(3, 40000, 2, 16, D9_F8_E4M3, D9_F32); /* > SWIN scale blocks per row */
  run_dequant(1, 1, 128, 128, D9_F8_E4M3, D9_F32);
}

static void test_dequant_errors(void **state) {
  (void)state;
  uint8_t w[576 * 8] = {0};
  float s[10] = {0};
  tdef t[3] = {{"w", D9_F8_E4M3, 2, {576, 8}, w},
               {"s", D9_F32, 2, {4, 1}, s},
               {"x", D9_F32, 2, {5, 1}, s}};
  fx f;
  fx_open(&f, t, 3);
  d9_diag diag = {0};
  d9_node *wn = fx_src(&f, "w"), *sn = fx_src(&f, "s"), *xn = fx_src(&f, "x");
  assert_null(d9_node_dequant(f.a, wn, sn, 128, 128, "spec.json: dequant", &diag));
  assert_string_equal(diag.msg, "spec.json: dequant: dequant scale is [4, 1], want [5, 1] "
                                "for weight [576, 8] in blocks of 128x128");
  d9_diag_clear(&diag);
  assert_non_null(d9_node_dequant(f.a, wn, xn, 128, 128, "r", &diag));
  assert_null(d9_node_dequant(f.a, xn, xn, 128, 128, "r", &diag));
  assert_string_equal(diag.msg, "r: dequant weight is F32 [5, 1], want F8_E4M3 or F8_E5M2 [M, N]");
  d9_diag_clear(&diag);
  assert_null(d9_node_dequant(f.a, wn, xn, 0, 128, "r", &diag));
  assert_string_equal(diag.msg, "r: block size 0x128 must be positive");
  fx_close(&f);
}

/* ---- quant ---- */

static float to_f32(const void *x, d9_dtype t, int64_t i) {
  uint16_t h;
  if (t == D9_F32) return ((const float *)x)[i];
  memcpy(&h, (const unsigned char *)x + 2 * i, 2);
  return t == D9_BF16 ? tu_ffrom((uint32_t)h << 16) : d9_f16_to_f32(h);
}

static void naive_quant(uint8_t *q, float *sc, const void *x, d9_dtype t, int64_t M,
                        int64_t N, int64_t b0, int64_t b1) {
  int64_t mb = (M + b0 - 1) / b0, nb = (N + b1 - 1) / b1;
  for (int64_t B = 0; B < mb; B++)
    for (int64_t K = 0; K < nb; K++) {
      float amax = 0.0f;
      for (int64_t i = B * b0; i < M && i < B * b0 + b0; i++)
        for (int64_t j = K * b1; j < N && j < K * b1 + b1; j++) {
          float a = fabsf(to_f32(x, t, i * N + j));
          if (!isnan(a) && a > amax) amax = a;
        }
      float s = amax / 448.0f;
      if (amax == 0.0f || !isfinite(amax) || s == 0.0f) s = 1.0f;
      sc[B * nb + K] = s;
      for (int64_t i = B * b0; i < M && i < B * b0 + b0; i++)
        for (int64_t j = K * b1; j < N && j < K * b1 + b1; j++) {
          float v = to_f32(x, t, i * N + j), y = v / s;
          uint8_t sign = signbit(v) ? 0x80 : 0; /* NaN keeps it; Inf saturates to 448 */
          q[i * N + j] = isnan(v) ? (uint8_t)(0x7f | sign)
                         : isinf(v) ? (uint8_t)(0x7e | sign) : d9_f32_to_e4m3(y);
        }
    }
}

/* mode: 0 plain values with a wide range inside blocks; 1 with specials */
static void run_quant(int64_t M, int64_t N, int64_t b0, int64_t b1, d9_dtype t, int mode,
                      int streamed) {
  int64_t mb = (M + b0 - 1) / b0, nb = (N + b1 - 1) / b1, n = M * N;
  size_t es = d9_dtype_size(t);
  unsigned char *x = malloc((size_t)n * es);
  uint8_t *qref = malloc((size_t)n);
  float *sref = malloc((size_t)(mb * nb) * 4);
  assert_true(x && qref && sref);
  for (int64_t i = 0; i < n; i++) {
    float v = ldexpf((float)(rnd() % 100000) / 100000.0f, (int)rnd_below(30) - 15);
    if (rnd() & 1) v = -v;
    if (mode && rnd_below(50) == 0) {
      static const float sp[] = {NAN, -NAN, INFINITY, -INFINITY, 1e-42f, -0.0f, 1e30f};
      v = sp[rnd_below(7)];
    }
    if (mode && (i / N) < b0 && (i % N) < b1) v = (i % 3) ? 0.0f : -0.0f; /* zero block */
    if (mode && (i / N) < b0 && (i % N) >= b1 && (i % N) < 2 * b1) v = NAN; /* all-NaN block */
    if (t == D9_F32) memcpy(x + 4 * i, &v, 4);
    else {
      uint16_t h = t == D9_BF16 ? d9_f32_to_bf16(v) : d9_f32_to_f16(v);
      memcpy(x + 2 * i, &h, 2);
    }
  }
  naive_quant(qref, sref, x, t, M, N, b0, b1);
  tdef td = {"x", t, 2, {M, N}, x};
  fx f;
  fx_open(&f, &td, 1);
  d9_node *q[2];
  d9_diag diag = {0};
  assert_int_equal(d9_node_quant(f.a, fx_src(&f, "x"), b0, b1, q, "t", &diag), 0);
  assert_int_equal(q[0]->op, D9_OP_QUANT_W);
  assert_int_equal(q[0]->dtype, D9_F8_E4M3);
  assert_int_equal(q[1]->dtype, D9_F32);
  assert_int_equal(q[1]->shape[0], mb);
  assert_int_equal(q[1]->shape[1], nb);
  uint64_t pw, ps;
  unsigned char *wq = fx_full(&f, q[0], &pw), *sq = fx_full(&f, q[1], &ps);
  assert_memory_equal(sq, sref, (size_t)(mb * nb) * 4);
  for (int64_t i = 0; i < n; i++)
    if (wq[i] != qref[i]) {
      fprintf(stderr, "quant [%lld] = %02x, want %02x (x %g)\n", (long long)i, wq[i], qref[i],
              (double)to_f32(x, t, i));
      fail();
    }
  /* a whole read pulls x once (tiles) or twice (streamed); scales pull x once */
  assert_int_equal(pw, (uint64_t)n * es * (streamed ? 2 : 1));
  assert_int_equal(ps, (uint64_t)n * es);
  check_ranges(&f, q[0], wq);
  check_ranges(&f, q[1], sq);
  /* part of one row: the tile of its blocks (b0 rows x their columns), plus
   * the segment again when streamed; one scale: its block */
  unsigned char *tmp = malloc((size_t)n);
  for (int it = 0; it < 20; it++) {
    int64_t i = rnd_below(M), c0 = rnd_below(N), c1 = c0 + 1 + rnd_below(N - c0);
    int64_t rows = (i / b0 * b0 + b0 < M ? b0 : M - i / b0 * b0);
    int64_t cols = ((c1 - 1) / b1 * b1 + b1 < N ? (c1 - 1) / b1 * b1 + b1 : N) - c0 / b1 * b1;
    uint64_t want = (uint64_t)(rows * cols + (streamed ? c1 - c0 : 0)) * es;
    assert_int_equal(fx_eval(&f, q[0], i * N + c0, c1 - c0, tmp), want);
    int64_t K = c0 / b1, kcols = (K * b1 + b1 < N ? b1 : N - K * b1);
    assert_int_equal(fx_eval(&f, q[1], i / b0 * nb + K, 1, tmp), (uint64_t)(rows * kcols) * es);
  }
  free(tmp);
  /* the round trip through DEQUANT, against the bound derived at the top */
  d9_node *d = d9_node_dequant(f.a, q[0], q[1], b0, b1, "t", &diag);
  assert_non_null(d);
  float *back = (float *)fx_full(&f, d, NULL);
  double worst = 0;
  for (int64_t i = 0; i < n; i++) {
    float s = sref[(i / N / b0) * nb + (i % N) / b1], v = to_f32(x, t, i);
    if (!isfinite(v) || !isnormal(s) || s == 1.0f) continue;
    double err = fabs((double)back[i] - v);
    double bound = ldexp(fabs(v), -4) + ldexp(s, -10) + ldexp(fabs(v) + s, -22);
    if (err > bound) {
      fprintf(stderr, "round trip [%lld]: x %a, back %a, scale %a\n", (long long)i, (double)v,
              (double)back[i], (double)s);
      fail();
    }
    if (err / bound > worst) worst = err / bound;
  }
  if (!mode) assert_true(worst > 0.5); /* the bound is not vacuous */
  free(back);
  if (!mode) check_faults(&f, q[0], 1);
  free(wq);
  free(sq);
  fx_close(&f);
  free(x);
  free(qref);
  free(sref);
}

static void test_quant(void **state) {
  (void)state;
  run_quant(130, 70, 64, 32, D9_F32, 0, 0);
  run_quant(130, 70, 64, 32, D9_BF16, 1, 0);
  run_quant(130, 70, 64, 32, D9_F16, 1, 0);
  run_quant(576, 200, 128, 128, D9_F32, 1, 0);
  run_quant(64, 9000, 64, 32, D9_BF16, 0, 0);   /* several tile windows per row */
  run_quant(700, 900, 600, 500, D9_F32, 0, 1);  /* blocks beyond a tile: streamed */
}

static void test_quant_errors(void **state) {
  (void)state;
  uint8_t w[8] = {0};
  tdef t = {"w", D9_F8_E4M3, 2, {2, 4}, w};
  fx f;
  fx_open(&f, &t, 1);
  d9_diag diag = {0};
  d9_node *q[2];
  assert_int_equal(d9_node_quant(f.a, fx_src(&f, "w"), 128, 128, q, "r", &diag), -EINVAL);
  assert_string_equal(diag.msg, "r: quantised tensor is F8_E4M3 [2, 4], want F32, F16 or BF16 "
                                "[M, N]");
  fx_close(&f);
  assert_true(d9_cpu_fp8_scale(0.0f) == 1.0f);
  assert_true(d9_cpu_fp8_scale(INFINITY) == 1.0f);
  assert_true(d9_cpu_fp8_scale(tu_ffrom(1)) == 1.0f);         /* quotient rounds to 0 */
  assert_true(d9_cpu_fp8_scale(448.0f) == 1.0f);
  assert_true(d9_cpu_fp8_scale(896.0f) == 2.0f);
}

/* ---- affine, pad ---- */

static void run_affine(d9_dtype t, float a, float b) {
  enum { N = 3000 };
  size_t es = d9_dtype_size(t);
  unsigned char x[N * 4], ref[N * 4];
  for (int i = 0; i < N; i++) {
    uint32_t r = (uint32_t)rnd();
    if (t == D9_F32) memcpy(x + 4 * i, &r, 4); /* every pattern: NaN, Inf, subnormal */
    else memcpy(x + 2 * i, &r, 2);
  }
  for (int i = 0; i < N; i++) {
    float v = to_f32(x, t, i), y = v * a;
    y = y + b;
    y = canon(y);
    if (t == D9_F32) memcpy(ref + 4 * i, &y, 4);
    else {
      uint16_t h = d9_f32_to_bf16(y);
      memcpy(ref + 2 * i, &h, 2);
    }
  }
  tdef td = {"x", t, 2, {N / 10, 10}, x};
  fx f;
  fx_open(&f, &td, 1);
  d9_diag diag = {0};
  d9_node *y = d9_node_affine(f.a, fx_src(&f, "x"), a, b, "t", &diag);
  assert_non_null(y);
  uint64_t pulled;
  unsigned char *full = fx_full(&f, y, &pulled);
  assert_memory_equal(full, ref, N * es);
  assert_int_equal(pulled, N * es);
  check_ranges(&f, y, full);
  check_faults(&f, y, 1);
  free(full);
  fx_close(&f);
}

static void test_affine(void **state) {
  (void)state;
  run_affine(D9_BF16, 1.0f, 1.0f);
  run_affine(D9_BF16, 1.0f, -1.0f);
  run_affine(D9_F32, 1.0f, 1.0f);
  run_affine(D9_F32, 1.0f, -1.0f);
  /* w + 1 then - 1 gives w back on values where the sum is exact */
  float w[4] = {0.25f, -0.5f, 3.0f, 0.0f}, out[4];
  tdef td = {"w", D9_F32, 1, {4}, w};
  fx f;
  fx_open(&f, &td, 1);
  d9_diag diag = {0};
  d9_node *p = d9_node_affine(f.a, fx_src(&f, "w"), 1.0f, 1.0f, "t", &diag);
  d9_node *m = d9_node_affine(f.a, p, 1.0f, -1.0f, "t", &diag);
  fx_eval(&f, m, 0, 4, out);
  assert_memory_equal(out, w, sizeof w);
  uint8_t c[2] = {0};
  fx_close(&f);
  tdef tc = {"c", D9_U8, 1, {2}, c};
  fx_open(&f, &tc, 1);
  assert_null(d9_node_affine(f.a, fx_src(&f, "c"), 1, 1, "r", &diag));
  assert_string_equal(diag.msg, "r: affine needs a float tensor, not U8");
  fx_close(&f);
}

static void test_pad(void **state) {
  (void)state;
  uint16_t x[7 * 3];
  for (int i = 0; i < 21; i++) x[i] = (uint16_t)(0x3c00 + i);
  float v[5] = {1, 2, 3, 4, 5};
  tdef td[2] = {{"x", D9_BF16, 2, {7, 3}, x}, {"v", D9_F32, 1, {5}, v}};
  fx f;
  fx_open(&f, td, 2);
  d9_diag diag = {0};
  d9_node *p = d9_node_pad(f.a, fx_src(&f, "x"), 12, "t", &diag);
  assert_non_null(p);
  assert_int_equal(p->shape[0], 12);
  assert_int_equal(p->shape[1], 3);
  uint16_t ref[12 * 3] = {0};
  memcpy(ref, x, sizeof x);
  uint64_t pulled;
  unsigned char *full = fx_full(&f, p, &pulled);
  assert_memory_equal(full, ref, sizeof ref);
  assert_int_equal(pulled, sizeof x);
  check_ranges(&f, p, full);
  uint16_t tail[6];
  assert_int_equal(fx_eval(&f, p, 30, 6, tail), 0); /* padding reads nothing */
  free(full);
  d9_node *pv = d9_node_pad(f.a, fx_src(&f, "v"), 5, "t", &diag); /* no-op pad */
  float out[5];
  fx_eval(&f, pv, 0, 5, out);
  assert_memory_equal(out, v, sizeof v);
  assert_null(d9_node_pad(f.a, fx_src(&f, "x"), 6, "spec.json: vocab", &diag));
  assert_string_equal(diag.msg, "spec.json: vocab: cannot pad [7, 3] to 6 rows");
  check_faults(&f, p, 0);
  fx_close(&f);
}

int main(void) {
  fprintf(stderr, "test_ops: seed %#llx\n", (unsigned long long)SEED);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_permute),  cmocka_unit_test(test_permute_errors),
      cmocka_unit_test(test_dequant),  cmocka_unit_test(test_dequant_errors),
      cmocka_unit_test(test_quant),    cmocka_unit_test(test_quant_errors),
      cmocka_unit_test(test_affine),   cmocka_unit_test(test_pad),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
