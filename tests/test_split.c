/* test_split.c - split reads (mapper/readpool.c): a read whose range computes
 * is evaluated in parts on helper threads. Whatever the thread count, every
 * read gives the bytes of the same read on one thread; the pieces API
 * describes split reads as memory; reads that only move bytes are never
 * split; faults in any part end the read with an error, counted and never
 * a crash; concurrent readers share the helpers. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "mapper/eval.h"
#include "testutil.h"

enum { MiB = 1 << 20, BUF = 4 * MiB };

static char *gen(const char *dir, const char *name, const char *family, d9_dtype dt) {
  char *path = malloc(4200);
  assert_non_null(path);
  snprintf(path, 4200, "%s/%s", dir, name);
  d9_gen_params p;
  d9_gen_defaults(&p, family);
  p.hidden = 512, p.heads = 8, p.kv_heads = 2, p.intermediate = 1024, p.vocab = 1000;
  p.layers = 2, p.dtype = dt, p.shards = 2, p.seed = 5;
  if (!strcmp(family, "deepseek_fp8")) p.block = 128;
  d9_diag diag = {0};
  int rc = d9_gen_write(path, &p, &diag);
  if (rc) fprintf(stderr, "gen: %s\n", diag.msg);
  assert_int_equal(rc, 0);
  return path;
}

static d9_mount *open_view(const char *src, const char *spec, int threads, uint64_t eio,
                           uint64_t enomem) {
  d9_mount_opts o = {.src_dir = src, .spec_path = spec, .threads = threads,
                     .inject_pread_every = eio, .inject_alloc_every = enomem};
  return tu_mount(&o);
}

static void spec_path(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/mounts/%s", D9DFS_SOURCE_DIR, name);
}

static uint64_t next(uint64_t *x) {
  *x ^= *x << 13, *x ^= *x >> 7, *x ^= *x << 17;
  return *x;
}

/* A random range of a random file of m: large enough to split most of the
 * time, unaligned a third of the time, sometimes past the end. */
static int pick(d9_mount *m, uint64_t *x, uint64_t *off, size_t *n) {
  const d9_vnode *root = d9_mount_node(m, 0);
  int idx;
  do idx = root->children[next(x) % (uint64_t)root->nchildren];
  while (d9_mount_node(m, idx)->kind != D9_NODE_FILE);
  uint64_t size = d9_mount_node(m, idx)->size;
  *off = next(x) % (size + 4096);
  if (next(x) % 3) *off &= ~(uint64_t)4095;
  *n = (size_t)(next(x) % BUF) + 1;
  return idx;
}

/* Random reads of `one` (threads=1) and `many` (threads=4): the same
 * bytes from d9_mount_read and from the pieces of d9_mount_read_pieces. */
static void same_reads(d9_mount *one, d9_mount *many, uint64_t seed, int iters) {
  unsigned char *a = malloc(BUF), *b = malloc(BUF);
  assert_true(a && b);
  uint64_t x = seed;
  for (int it = 0; it < iters; it++) {
    uint64_t off;
    size_t n;
    int idx = pick(one, &x, &off, &n);
    ssize_t ra = d9_mount_read(one, idx, off, n, a);
    memset(b, 0x5a, BUF);
    ssize_t rb = d9_mount_read(many, idx, off, n, b);
    assert_int_equal(ra, rb);
    if (ra > 0) assert_memory_equal(a, b, (size_t)ra);
    d9_piece p[D9_READ_MAXPIECES];
    int np = -1;
    memset(b, 0x33, BUF);
    rb = d9_mount_read_pieces(many, idx, off, n, b, p, &np);
    assert_int_equal(ra, rb);
    if (ra <= 0) continue;
    size_t pos = 0;
    for (int i = 0; i < np; i++) {
      if (p[i].mem) {
        assert_ptr_equal(p[i].mem, b + pos);
        assert_memory_equal(a + pos, p[i].mem, p[i].len);
      } else {
        unsigned char *t = malloc(p[i].len);
        assert_int_equal(pread(p[i].fd, t, p[i].len, (off_t)p[i].off), (ssize_t)p[i].len);
        assert_memory_equal(a + pos, t, p[i].len);
        free(t);
      }
      pos += p[i].len;
    }
    assert_int_equal(pos, (size_t)ra);
  }
  free(a);
  free(b);
}

static uint64_t splits(d9_mount *m) {
  d9_stats s;
  d9_mount_get_stats(m, &s);
  return s.split_reads;
}

static void test_split_equals_one_thread(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  char *f32 = gen(dir, "f32", "llama", D9_F32);
  char *bf16 = gen(dir, "bf16", "llama", D9_BF16);
  char *fp8 = gen(dir, "fp8", "deepseek_fp8", D9_BF16);
  char spec[4200];
  struct { const char *src, *spec; int computes; } views[] = {
      {f32, "cast-f32-to-bf16.json", 1},      /* every byte cast */
      {fp8, "deepseek-fp8-to-bf16.json", 1},  /* block dequant, scales in other rows */
      {bf16, "llama-to-megatron.json", 0},     /* gathers only: never split */
  };
  for (size_t v = 0; v < sizeof views / sizeof views[0]; v++) {
    spec_path(spec, sizeof spec, views[v].spec);
    d9_mount *one = open_view(views[v].src, spec, 1, 0, 0);
    d9_mount *many = open_view(views[v].src, spec, 4, 0, 0);
    same_reads(one, many, 0x1234 + v, 150);
    assert_int_equal(splits(one), 0);
    if (views[v].computes)
      assert_true(splits(many) > 20);
    else
      assert_int_equal(splits(many), 0);
    d9_mount_close(one);
    d9_mount_close(many);
  }
  /* a transpose and a cast next to moved bytes, in one file */
  char mixed[4200];
  snprintf(mixed, sizeof mixed, "%s/mixed.json", dir);
  tu_write(mixed,
           "{\"d9dfs_spec\": 1, \"passthrough\": true, \"rules\": [\n"
           " {\"name\": \"t\", \"inputs\": \"model.layers.{L}.mlp.down_proj.weight\","
           "  \"steps\": [{\"op\": \"transpose\", \"dim0\": 0, \"dim1\": 1},"
           "             {\"op\": \"cast\", \"to\": \"F16\"}],"
           "  \"output\": \"l{L}.down_t\"}\n"
           "]}\n");
  d9_mount *one = open_view(f32, mixed, 1, 0, 0);
  d9_mount *many = open_view(f32, mixed, 3, 0, 0);
  same_reads(one, many, 99, 150);
  assert_true(splits(many) > 0);
  d9_mount_close(one);
  d9_mount_close(many);
  tu_rmrf(dir);
  free(f32);
  free(bf16);
  free(fp8);
  free(dir);
}

/* Injected EIO and ENOMEM land in the caller's part or a helper's: the
 * read fails with that error (never a short or wrong success), the error
 * is counted, and reads that succeed still equal the one-thread bytes. */
static void test_split_faults(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  char *f32 = gen(dir, "f32", "llama", D9_F32);
  char spec[4200];
  spec_path(spec, sizeof spec, "cast-f32-to-bf16.json");
  d9_mount *ref = open_view(f32, spec, 1, 0, 0);
  unsigned char *a = malloc(BUF), *b = malloc(BUF);
  assert_true(a && b);
  for (int kind = 0; kind < 2; kind++) {
    d9_mount *m = open_view(f32, spec, 4, kind ? 0 : 5, kind ? 3 : 0);
    uint64_t x = 77 + (uint64_t)kind;
    int failed = 0, ok = 0;
    for (int it = 0; it < 200; it++) {
      uint64_t off;
      size_t n;
      int idx = pick(ref, &x, &off, &n);
      ssize_t ra = d9_mount_read(ref, idx, off, n, a);
      ssize_t rb = d9_mount_read(m, idx, off, n, b);
      if (rb < 0) {
        assert_int_equal(rb, kind ? -ENOMEM : -EIO);
        failed++;
      } else {
        assert_int_equal(ra, rb);
        if (ra > 0) assert_memory_equal(a, b, (size_t)ra);
        ok++;
      }
    }
    d9_stats s;
    d9_mount_get_stats(m, &s);
    assert_true(failed > 10 && ok > 10);
    assert_int_equal(s.errors, (uint64_t)failed);
    assert_true(s.split_reads > 0);
    d9_mount_close(m);
  }
  free(a);
  free(b);
  d9_mount_close(ref);
  tu_rmrf(dir);
  free(f32);
  free(dir);
}

/* Readers on several threads at once share the helpers: the bytes stay
 * right (the one-thread mount's), and the mount closes cleanly after. */
typedef struct reader {
  d9_mount *one, *many;
  uint64_t seed;
} reader;

static void *read_loop(void *arg) {
  reader *r = arg;
  same_reads(r->one, r->many, r->seed, 40);
  return NULL;
}

static void test_split_concurrent(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  char *f32 = gen(dir, "f32", "llama", D9_F32);
  char spec[4200];
  spec_path(spec, sizeof spec, "cast-f32-to-bf16.json");
  d9_mount *one = open_view(f32, spec, 1, 0, 0);
  d9_mount *many = open_view(f32, spec, 3, 0, 0);
  pthread_t t[4];
  reader rs[4];
  for (int i = 0; i < 4; i++) {
    rs[i] = (reader){one, many, 1000 + (uint64_t)i};
    assert_int_equal(pthread_create(&t[i], NULL, read_loop, &rs[i]), 0);
  }
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  assert_true(splits(many) > 0);
  d9_mount_close(one);
  d9_mount_close(many);
  tu_rmrf(dir);
  free(f32);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_split_equals_one_thread),
      cmocka_unit_test(test_split_faults),
      cmocka_unit_test(test_split_concurrent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
