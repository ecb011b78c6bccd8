/* test_concurrency.c - a d9_mount read by many threads at once.
 *
 * Opens mounts in-process (mapper/mount.h, no FUSE) on generated
 * checkpoints, reads every file whole on one thread as the reference, then
 * has 8 threads read random, unaligned ranges (across header/tensor
 * boundaries, and running past EOF) of random files at the same time and
 * compares every byte with the reference. Also checks that the statistics
 * counters add up afterwards. Built in the TSan build (tools/test.sh,
 * build-tsan) to catch data races in the evaluator, the scratch pool and
 * the counters; in the normal build it is a plain correctness test.
 *
 * Mounts: llama -> Megatron (QKV interleave, gated MLP concat, renames,
 * several output shards) and DeepSeek FP8 -> BF16 (block dequant + cast
 * through scratch memory). Seeded: each thread draws from its own
 * splitmix64 stream, so a failure is reproducible.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>

#include "testutil.h"

#define SPEC_DIR D9DFS_SOURCE_DIR "/mounts"

enum {
  NTHREADS = 8,
  READS_PER_THREAD = 1000,
  MAX_READ = 96 * 1024, /* bytes */
};

typedef struct fileref {
  int node;
  uint64_t size;
  unsigned char *data; /* whole file, read single-threaded */
} fileref;

typedef struct shared {
  d9_mount *m;
  int nfiles;
  fileref *files;
} shared;

typedef struct worker {
  const shared *sh;
  uint64_t seed;
  int reads;       /* d9_mount_read calls made */
  uint64_t bytes;  /* bytes returned */
  int mismatches;  /* ranges whose bytes differ from the reference */
  int errors;      /* negative returns */
  char first_error[256];
} worker;

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* A random range of f: often straddling the end of the header or of a
 * tensor, sometimes reaching past EOF. */
static void pick_range(uint64_t *s, const fileref *f, uint64_t *off, size_t *n) {
  uint64_t r = splitmix(s);
  uint64_t len = 1 + splitmix(s) % MAX_READ;
  switch (r % 4) {
  case 0: /* anywhere */
    *off = f->size ? splitmix(s) % f->size : 0;
    break;
  case 1: { /* around the end of the header */
    uint64_t h = f->size >= 8 ? 8 : 0;
    if (f->size >= 8) {
      uint64_t hl = 0;
      for (int i = 7; i >= 0; i--) hl = hl << 8 | f->data[i];
      if (hl <= f->size - 8) h += hl;
    }
    uint64_t back = splitmix(s) % 4096;
    *off = h > back ? h - back : 0;
    break;
  }
  case 2: /* near EOF, often past it */
    *off = f->size > 2048 ? f->size - splitmix(s) % 2048 : 0;
    break;
  default: /* tiny unaligned reads */
    *off = f->size ? splitmix(s) % f->size : 0;
    len = 1 + splitmix(s) % 7;
  }
  *n = (size_t)len;
}

static void *work(void *arg) {
  worker *w = arg;
  const shared *sh = w->sh;
  unsigned char *buf = malloc(MAX_READ);
  if (!buf) abort();
  for (int i = 0; i < READS_PER_THREAD; i++) {
    const fileref *f = &sh->files[splitmix(&w->seed) % (uint64_t)sh->nfiles];
    uint64_t off;
    size_t n;
    pick_range(&w->seed, f, &off, &n);
    ssize_t r = d9_mount_read(sh->m, f->node, off, n, buf);
    w->reads++;
    uint64_t want = off >= f->size ? 0 : f->size - off < n ? f->size - off : n;
    if (r < 0) {
      if (!w->errors++)
        snprintf(w->first_error, sizeof w->first_error, "node %d [%llu, +%zu): error %zd",
                 f->node, (unsigned long long)off, n, r);
      continue;
    }
    w->bytes += (uint64_t)r;
    if ((uint64_t)r != want || (r && memcmp(buf, f->data + off, (size_t)r))) {
      if (!w->mismatches++ && !w->errors)
        snprintf(w->first_error, sizeof w->first_error,
                 "node %d [%llu, +%zu): %zd bytes, want %llu, or different bytes", f->node,
                 (unsigned long long)off, n, r, (unsigned long long)want);
    }
  }
  free(buf);
  return NULL;
}

static void run_mount(const char *family, const char *spec, uint64_t shard_size,
                      int threads_seed) {
  char *dir = tu_tmpdir();
  d9_gen_params p;
  d9_diag diag = {0};
  d9_gen_defaults(&p, family);
  p.layers = 3;
  p.hidden = 256;
  p.heads = 8;
  p.kv_heads = 2;
  p.intermediate = 384;
  p.vocab = 1000;
  p.shards = 3;
  if (!strcmp(family, "llama")) p.dtype = D9_F32;
  if (!strcmp(family, "deepseek_fp8")) p.block = 64;
  if (d9_gen_write(dir, &p, &diag)) fail_msg("gen: %s", diag.msg);

  d9_mount_opts o = {.src_dir = dir, .spec_path = spec, .max_shard_size = shard_size};
  d9_mount *m = tu_mount(&o);

  /* the reference: every fixed-size file, whole, on this thread */
  shared sh = {.m = m};
  sh.files = calloc((size_t)d9_mount_nnodes(m), sizeof *sh.files);
  assert_non_null(sh.files);
  for (int i = 0; i < d9_mount_nnodes(m); i++) {
    const d9_vnode *v = d9_mount_node(m, i);
    if (v->kind != D9_NODE_FILE) continue;
    fileref *f = &sh.files[sh.nfiles++];
    f->node = i;
    f->data = tu_read_node(m, i, &f->size);
    assert_non_null(f->data);
  }
  assert_true(sh.nfiles >= 3); /* several shards, the index, config.json */
  d9_stats before;
  d9_mount_get_stats(m, &before);

  pthread_t th[NTHREADS];
  worker w[NTHREADS];
  for (int t = 0; t < NTHREADS; t++) {
    w[t] = (worker){.sh = &sh, .seed = (uint64_t)threads_seed * 1000 + (uint64_t)t};
    assert_int_equal(pthread_create(&th[t], NULL, work, &w[t]), 0);
  }
  int reads = 0;
  uint64_t bytes = 0;
  for (int t = 0; t < NTHREADS; t++) {
    assert_int_equal(pthread_join(th[t], NULL), 0);
    if (w[t].errors || w[t].mismatches)
      fail_msg("%s: thread %d: %d errors, %d mismatches; first: %s", family, t, w[t].errors,
               w[t].mismatches, w[t].first_error);
    reads += w[t].reads;
    bytes += w[t].bytes;
  }
  d9_stats after;
  d9_mount_get_stats(m, &after);
  /* every call counted once, every byte served counted, no errors */
  assert_int_equal(after.reads - before.reads, (uint64_t)reads);
  assert_int_equal(after.bytes_served - before.bytes_served, bytes);
  assert_int_equal(after.errors, 0);

  for (int i = 0; i < sh.nfiles; i++) free(sh.files[i].data);
  free(sh.files);
  d9_mount_close(m);
  tu_rmrf(dir);
  free(dir);
}

static void test_llama_megatron_8_threads(void **state) {
  (void)state;
  run_mount("llama", SPEC_DIR "/llama-to-megatron.json", 1u << 20, 1);
}

static void test_deepseek_dequant_8_threads(void **state) {
  (void)state;
  run_mount("deepseek_fp8", SPEC_DIR "/deepseek-fp8-to-bf16.json", 1u << 20, 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_llama_megatron_8_threads),
      cmocka_unit_test(test_deepseek_dequant_8_threads),
  };
  return cmocka_run_group_tests(tests, 0, NULL);
}
