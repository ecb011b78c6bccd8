/* test_scale_cache.c - the cache of computed FP8 block rows
 * (mapper/scale_cache.h) and the reads that use it.
 *
 * The cache alone: scales and bytes come back as put, partial scale rows
 * and ranges miss, the memory stays under the cap (least recently used
 * block rows go first, a block row being computed never), a second reader
 * of a claimed block row waits for its bytes.
 * Through a mount: a DeepSeek FP8 checkpoint converted to BF16 (the forward
 * mount's files written out) and mounted --reverse. Read whole, it pulls at
 * most 1.1x the BF16 source (stats.json's bytes_read_source, counted not
 * timed); its bytes equal the uncached evaluation (d9_eval_read without a
 * cache) and an independent quantisation of the BF16 values; random ranges
 * read by several threads at once give the same bytes; under -o mem=1 the
 * cache stays under its cap. Built in the TSan build too. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <dirent.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "mapper/eval.h"
#include "mapper/mount_impl.h"
#include "mapper/scale_cache.h"
#include "testutil.h"

enum { MiB = 1 << 20 };

/* ---- the cache alone ---- */

/* A QUANT_W node q over an [M, N] input, blocks b x b. */
typedef struct pair {
  d9_node x, q;
  d9_node *in[1];
} pair;

static void make_pair(pair *p, int64_t M, int64_t N, int64_t b) {
  memset(p, 0, sizeof *p);
  p->x = (d9_node){.op = D9_OP_SOURCE, .dtype = D9_BF16, .ndim = 2, .shape = {M, N},
                   .numel = M * N};
  p->in[0] = &p->x;
  p->q = (d9_node){.op = D9_OP_QUANT_W, .dtype = D9_F8_E4M3, .ndim = 2, .shape = {M, N},
                   .numel = M * N, .nin = 1, .in = p->in, .block = {b, b}};
}

static unsigned char *filled(size_t n, int v) {
  unsigned char *b = malloc(n);
  assert_non_null(b);
  memset(b, v, n);
  return b;
}

static void test_scales_and_bytes(void **state) {
  (void)state;
  d9_scale_cache *c;
  assert_int_equal(d9_scale_cache_create(1 * MiB, &c), 0);
  pair p, other;
  make_pair(&p, 256, 1000, 128); /* 8 scales a block row, the last ragged */
  make_pair(&other, 256, 1000, 128);
  float sc[8] = {1, 2, 3, 4, 5, 6, 7, 8}, got[8];
  assert_int_equal(d9_scale_cache_scales(c, &p.q, 1, 0, 8, got), 0);
  d9_scale_cache_put(c, &p.q, 1, 2, 5, sc + 2, NULL, 0);
  memset(got, 0, sizeof got);
  assert_int_equal(d9_scale_cache_scales(c, &p.q, 1, 2, 5, got), 1);
  assert_memory_equal(got, sc + 2, 3 * sizeof(float));
  assert_int_equal(d9_scale_cache_scales(c, &p.q, 1, 1, 5, got), 0); /* block 1 missing */
  assert_int_equal(d9_scale_cache_scales(c, &p.q, 0, 2, 5, got), 0); /* other block row */
  assert_int_equal(d9_scale_cache_scales(c, &other.q, 1, 2, 5, got), 0); /* other pair */
  d9_scale_cache_put(c, &p.q, 1, 0, 8, sc, NULL, 0);
  assert_int_equal(d9_scale_cache_scales(c, &p.q, 1, 0, 8, got), 1);
  assert_memory_equal(got, sc, sizeof sc);

  /* bytes of a whole block row: any range inside, nothing past it */
  unsigned char *row = malloc(128 * 1000), out[300];
  assert_non_null(row);
  for (int i = 0; i < 128 * 1000; i++) row[i] = (unsigned char)(i * 7 + 3);
  unsigned char *copy = malloc(128 * 1000);
  assert_non_null(copy);
  memcpy(copy, row, 128 * 1000);
  assert_int_equal(d9_scale_cache_bytes(c, &p.q, 1, 0, 10, out, NULL), 0);
  d9_scale_cache_put(c, &p.q, 1, 0, 0, NULL, row, 128 * 1000); /* ownership passes */
  assert_int_equal(d9_scale_cache_bytes(c, &p.q, 1, 12345, 300, out, NULL), 1);
  assert_memory_equal(out, copy + 12345, 300);
  assert_int_equal(d9_scale_cache_bytes(c, &p.q, 1, 128 * 1000 - 10, 11, out, NULL), 0);
  assert_int_equal(d9_scale_cache_bytes(c, &p.q, 0, 0, 10, out, NULL), 0);
  /* a second put of the same bytes is dropped (freed: ASan would see a leak) */
  d9_scale_cache_put(c, &p.q, 1, 0, 0, NULL, filled(128 * 1000, 0), 128 * 1000);
  assert_int_equal(d9_scale_cache_bytes(c, &p.q, 1, 0, 300, out, NULL), 1);
  assert_memory_equal(out, copy, 300);
  free(copy);
  d9_scale_cache_destroy(c);

  /* cap 0 keeps nothing */
  assert_int_equal(d9_scale_cache_create(0, &c), 0);
  d9_scale_cache_put(c, &p.q, 0, 0, 8, sc, filled(100, 1), 100);
  assert_int_equal(d9_scale_cache_scales(c, &p.q, 0, 0, 8, got), 0);
  assert_int_equal(d9_scale_cache_bytes(c, &p.q, 0, 0, 1, out, NULL), 0);
  d9_scale_cache_destroy(c);
  d9_scale_cache_destroy(NULL);
}

/* Many block rows through a small cache: never more than the cap, the
 * least recently used bytes go first, then the least recently used
 * scales; a row larger than row_max is not kept. */
static void test_memory_bound(void **state) {
  (void)state;
  const size_t cap = 256 * 1024, rowb = 128 * 256; /* 32 KiB a block row */
  d9_scale_cache *c;
  assert_int_equal(d9_scale_cache_create(cap, &c), 0);
  assert_int_equal(d9_scale_cache_row_max(c), cap / 4);
  pair p;
  make_pair(&p, 128 * 100, 256, 128);
  float sc[2] = {0.5f, 0.25f}, got[2];
  unsigned char out[16];
  for (int64_t B = 0; B < 100; B++) {
    d9_scale_cache_put(c, &p.q, B, 0, 2, sc, NULL, 0);
    d9_scale_cache_put(c, &p.q, B, 0, 0, NULL, filled(rowb, (int)B), rowb);
    if (B >= 1) /* row 0 stays the most recently used */
      assert_int_equal(d9_scale_cache_bytes(c, &p.q, 0, 0, 16, out, NULL), 1);
    d9_scale_cache_stats st;
    d9_scale_cache_get_stats(c, &st);
    assert_true(st.used <= cap);
  }
  d9_scale_cache_stats st;
  d9_scale_cache_get_stats(c, &st);
  assert_true(st.peak <= cap);
  assert_true(st.evictions > 0);
  assert_int_equal(st.entries, 100); /* the bytes went, every row's scales stayed */
  assert_int_equal(d9_scale_cache_bytes(c, &p.q, 99, 0, 16, out, NULL), 1);
  assert_int_equal(out[0], 99);
  assert_int_equal(d9_scale_cache_bytes(c, &p.q, 0, 0, 16, out, NULL), 1);
  assert_int_equal(out[0], 0);
  assert_int_equal(d9_scale_cache_bytes(c, &p.q, 1, 0, 16, out, NULL), 0); /* evicted */
  assert_int_equal(d9_scale_cache_scales(c, &p.q, 1, 0, 2, got), 1);
  assert_memory_equal(got, sc, sizeof sc);
  /* scales alone past the cap: the oldest block rows go, bytes first */
  for (int64_t B = 100; B < 100 + 20000; B++) {
    d9_scale_cache_put(c, &p.q, B, 0, 2, sc, NULL, 0);
    if (B % 1000 == 0) { /* row 99 is touched: its scales stay longest */
      assert_int_equal(d9_scale_cache_scales(c, &p.q, 99, 0, 2, got), 1);
    }
  }
  d9_scale_cache_get_stats(c, &st);
  assert_true(st.peak <= cap);
  assert_true(st.entries < 20100);
  assert_int_equal(d9_scale_cache_scales(c, &p.q, 1, 0, 2, got), 0);      /* evicted */
  assert_int_equal(d9_scale_cache_scales(c, &p.q, 20099, 0, 2, got), 1); /* the newest */
  assert_int_equal(d9_scale_cache_bytes(c, &p.q, 99, 0, 16, out, NULL), 0); /* bytes first */
  /* larger than row_max: scales kept, bytes dropped */
  pair wide;
  make_pair(&wide, 128, 1024, 128);
  d9_scale_cache_put(c, &wide.q, 0, 0, 2, sc, filled(cap / 4 + 1, 1), cap / 4 + 1);
  assert_int_equal(d9_scale_cache_bytes(c, &wide.q, 0, 0, 1, out, NULL), 0);
  assert_int_equal(d9_scale_cache_scales(c, &wide.q, 0, 0, 2, got), 1);
  d9_scale_cache_destroy(c);
}

typedef struct claimer {
  d9_scale_cache *c;
  const d9_node *q;
  int hit, claimed;
  unsigned char out[8];
} claimer;

static void *second_reader(void *arg) {
  claimer *w = arg;
  w->hit = d9_scale_cache_bytes(w->c, w->q, 3, 0, 8, w->out, &w->claimed);
  if (w->claimed) d9_scale_cache_release(w->c, w->q, 3);
  return NULL;
}

/* A claimed block row: a second claiming reader gets the claimer's bytes
 * (it waited: without the wait it would have missed), or the claim when
 * the claimer gives up. A claimed row is not evicted. */
static void test_claims(void **state) {
  (void)state;
  d9_scale_cache *c;
  assert_int_equal(d9_scale_cache_create(64 * 1024, &c), 0);
  pair p;
  make_pair(&p, 1024, 64, 128);
  unsigned char out[8];
  for (int give_up = 0; give_up < 2; give_up++) {
    int claimed = 0;
    assert_int_equal(d9_scale_cache_bytes(c, &p.q, 3, 0, 8, out, &claimed), 0);
    assert_int_equal(claimed, 1);
    claimer w = {.c = c, .q = &p.q};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, second_reader, &w), 0);
    /* fill the cache past its cap meanwhile: the claimed row must stay */
    for (int64_t B = 100; B < 140; B++)
      d9_scale_cache_put(c, &p.q, B, 0, 0, NULL, filled(8192, 1), 8192);
    if (give_up)
      d9_scale_cache_release(c, &p.q, 3);
    else
      d9_scale_cache_put(c, &p.q, 3, 0, 0, NULL, filled(128 * 64, 0x42), 128 * 64);
    assert_int_equal(pthread_join(th, NULL), 0);
    if (give_up) {
      assert_int_equal(w.hit, 0);
      assert_int_equal(w.claimed, 1);
    } else {
      assert_int_equal(w.hit, 1);
      assert_int_equal(w.claimed, 0);
      assert_int_equal(w.out[0], 0x42);
      assert_int_equal(w.out[7], 0x42);
    }
    d9_scale_cache_destroy(c);
    assert_int_equal(d9_scale_cache_create(64 * 1024, &c), 0);
  }
  d9_scale_cache_destroy(c);
}

/* ---- through a reversed DeepSeek mount ---- */

typedef struct fixture {
  char *dir;      /* holds fp8/ and bf16/ */
  char bf16[4200];
  uint64_t src_bytes; /* the BF16 safetensors files' sizes */
} fixture;

static void write_file(const char *path, const unsigned char *b, uint64_t n) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(b, 1, n, f), n);
  assert_int_equal(fclose(f), 0);
}

/* A DeepSeek FP8 checkpoint and its BF16 conversion (the forward mount's
 * root files written out). Rows of hidden = 1000 columns: block rows do
 * not line up with the reads. */
static fixture *make_fixture(void) {
  fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  f->dir = tu_tmpdir();
  char fp8[4200];
  snprintf(fp8, sizeof fp8, "%s/fp8", f->dir);
  snprintf(f->bf16, sizeof f->bf16, "%s/bf16", f->dir);
  d9_gen_params p;
  d9_gen_defaults(&p, "deepseek_fp8");
  p.layers = 2, p.hidden = 1000, p.heads = 8, p.kv_heads = 8, p.head_dim = 125;
  p.intermediate = 1400, p.vocab = 300, p.shards = 2, p.seed = 11, p.block = 128;
  d9_diag diag = {0};
  if (d9_gen_write(fp8, &p, &diag)) fail_msg("gen: %s", diag.msg);
  d9_mount_opts o = {.src_dir = fp8, .spec_path = D9DFS_SOURCE_DIR
                     "/mounts/deepseek-fp8-to-bf16.json"};
  d9_mount *m = tu_mount(&o);
  assert_int_equal(mkdir(f->bf16, 0755), 0);
  const d9_vnode *root = d9_mount_node(m, 0);
  for (int i = 0; i < root->nchildren; i++) {
    const d9_vnode *v = d9_mount_node(m, root->children[i]);
    if (v->kind != D9_NODE_FILE) continue;
    uint64_t len = 0;
    unsigned char *b = tu_read_node(m, root->children[i], &len);
    assert_non_null(b);
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", f->bf16, v->name);
    write_file(path, b, len);
    if (strstr(v->name, ".safetensors") && !strstr(v->name, ".json")) f->src_bytes += len;
    free(b);
  }
  d9_mount_close(m);
  return f;
}

static void free_fixture(fixture *f) {
  tu_rmrf(f->dir);
  free(f->dir);
  free(f);
}

static d9_mount *open_reverse(const fixture *f, int threads, uint64_t mem) {
  d9_mount_opts o = {.src_dir = f->bf16, .spec_path = D9DFS_SOURCE_DIR
                     "/mounts/deepseek-fp8-to-bf16.json",
                     .reverse = 1, .threads = threads, .mem_budget_mb = mem};
  return tu_mount(&o);
}

/* Bytes [off, off+n) of node idx evaluated without a cache. */
static ssize_t read_uncached(d9_mount *m, int idx, uint64_t off, size_t n, void *buf) {
  d9_read_ctx rc = {.cat = m->cat, .be = m->be};
  return d9_eval_read(&rc, m->vfile_of[idx], off, n, buf);
}

/* The safetensors files of m's root: node indices into idx, count. */
static int tensor_files(d9_mount *m, int *idx, int cap) {
  const d9_vnode *root = d9_mount_node(m, 0);
  int n = 0;
  for (int i = 0; i < root->nchildren && n < cap; i++) {
    const d9_vnode *v = d9_mount_node(m, root->children[i]);
    if (v->kind == D9_NODE_FILE && strstr(v->name, ".safetensors") && !strstr(v->name, ".json"))
      idx[n++] = root->children[i];
  }
  return n;
}

/* Every tensor file of m read whole in reads of `step` bytes, from the end
 * when backwards (each scale tensor before its weight); each equal to the
 * uncached evaluation. Returns the bytes read. */
static uint64_t read_all(d9_mount *m, size_t step, int backwards) {
  int idx[16], nf = tensor_files(m, idx, 16);
  assert_true(nf >= 1);
  uint64_t total = 0;
  for (int k = 0; k < nf; k++) {
    uint64_t size = d9_mount_node(m, idx[k])->size;
    unsigned char *a = malloc(size), *b = malloc(size);
    assert_true(a && b);
    uint64_t nreads = (size + step - 1) / step;
    for (uint64_t i = 0; i < nreads; i++) {
      uint64_t off = (backwards ? nreads - 1 - i : i) * step;
      size_t n = size - off < step ? (size_t)(size - off) : step;
      assert_int_equal(d9_mount_read(m, idx[k], off, n, a + off), (ssize_t)n);
    }
    assert_int_equal(read_uncached(m, idx[k], 0, size, b), (ssize_t)size);
    assert_memory_equal(a, b, size);
    free(a);
    free(b);
    total += size;
  }
  return total;
}

/* Reading the reversed mount whole pulls at most 1.1x its BF16 source,
 * for reads of 1 MiB (FUSE's max_read), 128 KiB and 40 KiB (a block row
 * here is 128 KiB of output), and for 1 MiB reads from the end (scales
 * first); one reading thread, so the count is exact. */
static void test_reverse_reads_source_once(void **state) {
  fixture *f = *state;
  size_t steps[4] = {1 * MiB, 128 * 1024, 40 * 1024, 1 * MiB};
  for (int s = 0; s < 4; s++) {
    d9_mount *m = open_reverse(f, 1, 0);
    read_all(m, steps[s], s == 3);
    d9_stats st;
    d9_mount_get_stats(m, &st);
    double ratio = (double)st.bytes_read_source / (double)f->src_bytes;
    fprintf(stderr, "reads of %zu bytes%s: %llu source bytes for %llu (%.3fx)\n", steps[s],
            s == 3 ? " from the end" : "", (unsigned long long)st.bytes_read_source,
            (unsigned long long)f->src_bytes, ratio);
    assert_true(st.bytes_read_source * 10 <= f->src_bytes * 11);
    assert_int_equal(st.errors, 0);
    d9_mount_close(m);
  }
}

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }

/* The quantised tensors of the reversed mount against the formula on the
 * BF16 values: amax per 128 x 128 block (F32), scale amax / 448 (1 for a
 * zero amax), weight e4m3(x / scale). */
static void test_reverse_values(void **state) {
  fixture *f = *state;
  d9_mount *m = open_reverse(f, 2, 0);
  int idx[16], nf = tensor_files(m, idx, 16);
  unsigned char *file[16];
  uint64_t len[16];
  for (int k = 0; k < nf; k++) assert_non_null(file[k] = tu_read_node(m, idx[k], &len[k]));
  unsigned char *sfile[16]; /* the BF16 source files, from disk */
  uint64_t slen[16];
  int ns = 0;
  DIR *d = opendir(f->bf16);
  assert_non_null(d);
  for (struct dirent *de; (de = readdir(d)) && ns < 16;) {
    size_t l = strlen(de->d_name);
    if (l < 12 || strcmp(de->d_name + l - 12, ".safetensors")) continue;
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", f->bf16, de->d_name);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    struct stat sb;
    assert_int_equal(fstat(fileno(fp), &sb), 0);
    slen[ns] = (uint64_t)sb.st_size;
    assert_non_null(sfile[ns] = malloc(slen[ns]));
    assert_int_equal(fread(sfile[ns], 1, slen[ns], fp), slen[ns]);
    fclose(fp);
    ns++;
  }
  closedir(d);
  assert_true(ns >= 1);
  int checked = 0;
  d9_arena *a = d9_arena_create();
  for (int k = 0; k < nf; k++) {
    uint64_t hl;
    d9_st_header h;
    assert_int_equal(d9_st_header_len(file[k], len[k], "mem", &hl, NULL), 0);
    assert_int_equal(d9_st_parse((const char *)file[k] + 8, hl, len[k], "mem", a, &h, NULL), 0);
    for (int t = 0; t < h.ntensors; t++) {
      const char *sn = h.tensors[t].name;
      size_t l = strlen(sn);
      if (l < 10 || strcmp(sn + l - 10, "_scale_inv")) continue;
      char wn[512];
      snprintf(wn, sizeof wn, "%.*s", (int)(l - 10), sn);
      d9_st_tensor wt = {0}, st = {0}, xt = {0};
      const unsigned char *w = NULL, *s = NULL, *x = NULL;
      for (int j = 0; j < nf && !w; j++) w = tu_find(file[j], len[j], wn, &wt, a);
      for (int j = 0; j < nf && !s; j++) s = tu_find(file[j], len[j], sn, &st, a);
      for (int j = 0; j < ns && !x; j++) x = tu_find(sfile[j], slen[j], wn, &xt, a);
      assert_true(w && s && x);
      assert_int_equal(xt.dtype, D9_BF16);
      int64_t M = xt.shape[0], N = xt.shape[1], nb = (N + 127) / 128;
      for (int64_t B = 0; B * 128 < M; B++)
        for (int64_t kb = 0; kb < nb; kb++) {
          float amax = 0;
          for (int64_t i = B * 128; i < M && i < B * 128 + 128; i++)
            for (int64_t j = kb * 128; j < N && j < kb * 128 + 128; j++) {
              float v = fabsf(d9_bf16_to_f32(rd16(x + 2 * (i * N + j))));
              if (v > amax) amax = v;
            }
          float scale = amax / 448.0f, got;
          if (!(scale > 0)) scale = 1.0f;
          memcpy(&got, s + 4 * (B * nb + kb), 4);
          assert_memory_equal(&got, &scale, 4);
          for (int64_t i = B * 128; i < M && i < B * 128 + 128; i++)
            for (int64_t j = kb * 128; j < N && j < kb * 128 + 128; j++) {
              float v = d9_bf16_to_f32(rd16(x + 2 * (i * N + j)));
              assert_int_equal(w[i * N + j], d9_f32_to_e4m3(v / scale));
            }
        }
      checked++;
    }
  }
  assert_int_equal(checked, 14); /* q, k, v, o, gate, up, down in 2 layers */
  d9_arena_destroy(a);
  for (int k = 0; k < nf; k++) free(file[k]);
  for (int k = 0; k < ns; k++) free(sfile[k]);
  d9_mount_close(m);
}

typedef struct racer {
  d9_mount *m;
  int nf, *idx;
  unsigned char **ref;
  uint64_t seed;
  int bad;
} racer;

static uint64_t next(uint64_t *x) {
  *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
  return *x;
}

static void *race(void *arg) {
  racer *r = arg;
  unsigned char *buf = malloc(3 * MiB);
  if (!buf) abort();
  for (int it = 0; it < 60; it++) {
    int k = (int)(next(&r->seed) % (uint64_t)r->nf);
    uint64_t size = d9_mount_node(r->m, r->idx[k])->size;
    uint64_t off = next(&r->seed) % size;
    size_t n = (size_t)(next(&r->seed) % (2 * MiB)) + 1;
    if (n > size - off) n = (size_t)(size - off);
    ssize_t got = d9_mount_read(r->m, r->idx[k], off, n, buf);
    if (got != (ssize_t)n || memcmp(buf, r->ref[k] + off, n)) r->bad++;
  }
  free(buf);
  return NULL;
}

/* Random ranges from four threads at once (each read split over helper
 * threads too), with a cache big enough and with one so small (-o mem=1)
 * that it evicts all the time: the bytes of the uncached evaluation, and
 * the cache never over its cap. */
static void test_concurrent_ranges(void **state) {
  fixture *f = *state;
  for (int small = 0; small < 2; small++) {
    d9_mount *m = open_reverse(f, 3, small ? 1 : 0);
    int idx[16], nf = tensor_files(m, idx, 16);
    unsigned char *ref[16];
    for (int k = 0; k < nf; k++) {
      uint64_t size = d9_mount_node(m, idx[k])->size;
      ref[k] = malloc(size);
      assert_non_null(ref[k]);
      assert_int_equal(read_uncached(m, idx[k], 0, size, ref[k]), (ssize_t)size);
    }
    racer r[4];
    pthread_t th[4];
    for (int t = 0; t < 4; t++) {
      r[t] = (racer){.m = m, .nf = nf, .idx = idx, .ref = ref, .seed = 77 + (uint64_t)t};
      assert_int_equal(pthread_create(&th[t], NULL, race, &r[t]), 0);
    }
    for (int t = 0; t < 4; t++) {
      assert_int_equal(pthread_join(th[t], NULL), 0);
      assert_int_equal(r[t].bad, 0);
    }
    d9_scale_cache_stats st;
    d9_scale_cache_get_stats(m->qcache, &st);
    assert_int_equal(d9_readpool_mem_mib(m->pool), small ? 2 : 64); /* one 2 MiB buffer at least */
    assert_int_equal(st.cap, (d9_readpool_mem_mib(m->pool) << 20) / 4);
    assert_true(st.peak <= st.cap);
    assert_true(st.hits > 0);
    if (small) assert_true(st.evictions > 0);
    for (int k = 0; k < nf; k++) free(ref[k]);
    d9_mount_close(m);
  }
}

static int setup(void **state) {
  *state = make_fixture();
  return 0;
}

static int teardown(void **state) {
  free_fixture(*state);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scales_and_bytes),
      cmocka_unit_test(test_memory_bound),
      cmocka_unit_test(test_claims),
      cmocka_unit_test(test_reverse_reads_source_once),
      cmocka_unit_test(test_reverse_values),
      cmocka_unit_test(test_concurrent_ranges),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
