/* test_src_cache.c - -o source_cache=drop (mapper/src_cache.h): a source
 * tensor is dropped exactly when the bytes counted against it reach its
 * need (its size, or what the rank views pull together), notes spanning
 * several tensors count for each, and the dropped pages really leave the
 * page cache (mincore), and what comes back into the cache right after a
 * shard's last drop is dropped by the sweeper. Through a mount: a zero-copy read whose source
 * pieces are handed back with d9_mount_pieces_sent, as the front end does
 * after each spliced reply, leaves none of the source cached - including
 * the last reply, which nothing reads after. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <cmocka.h>

#include "mapper/catalog.h"
#include "mapper/src_cache.h"
#include "testutil.h"

/* A two-shard llama, written to disk (fsync'ed: dirty pages cannot be
 * dropped). */
static char *gen_src(char **dir) {
  *dir = tu_tmpdir();
  char *src = malloc(4200);
  assert_non_null(src);
  snprintf(src, 4200, "%s/src", *dir);
  d9_gen_params p;
  d9_gen_defaults(&p, "llama");
  p.hidden = 256, p.heads = 4, p.kv_heads = 2, p.intermediate = 512, p.vocab = 512;
  p.layers = 2, p.shards = 2, p.seed = 3;
  d9_diag diag = {0};
  assert_int_equal(d9_gen_write(src, &p, &diag), 0);
  assert_int_equal(system("sync"), 0);
  return src;
}

/* Bytes of fd's file in the page cache. */
static uint64_t resident(int fd) {
  struct stat st;
  assert_int_equal(fstat(fd, &st), 0);
  size_t n = (size_t)st.st_size, pages = (n + 4095) / 4096;
  if (!n) return 0;
  void *a = mmap(NULL, n, PROT_READ, MAP_SHARED, fd, 0);
  assert_true(a != MAP_FAILED);
  unsigned char *vec = malloc(pages);
  assert_non_null(vec);
  assert_int_equal(mincore(a, n, vec), 0);
  uint64_t r = 0;
  for (size_t i = 0; i < pages; i++) r += (vec[i] & 1) * 4096u;
  free(vec);
  munmap(a, n);
  return r;
}

/* Read shard s whole (into the page cache) and return its size. */
static uint64_t warm(const d9_catalog *c, int s) {
  struct stat st;
  assert_int_equal(fstat(c->shards[s].fd, &st), 0);
  unsigned char *b = malloc((size_t)st.st_size);
  assert_non_null(b);
  assert_int_equal(pread(c->shards[s].fd, b, (size_t)st.st_size, 0), st.st_size);
  free(b);
  return (uint64_t)st.st_size;
}

static void test_counts_and_drops(void **state) {
  (void)state;
  char *dir, *src = gen_src(&dir);
  d9_catalog *c = NULL;
  d9_diag diag = {0};
  assert_int_equal(d9_catalog_open(src, &c, &diag), 0);
  d9_src_cache *sc = NULL;
  assert_int_equal(d9_src_cache_create(c, &sc), 0);
  d9_src_cache_note(NULL, 0, 0, 1); /* no tracker: a no-op */

  const d9_src_tensor *t = &c->tensors[0];
  assert_true(t->nbytes >= 2);
  d9_src_cache_note(sc, t->shard, t->offset, t->nbytes / 2);
  assert_int_equal(d9_src_cache_ndropped(sc), 0); /* half read: kept */
  d9_src_cache_note(sc, t->shard, t->offset + t->nbytes / 2, t->nbytes - t->nbytes / 2);
  assert_int_equal(d9_src_cache_ndropped(sc), 1); /* all of it: dropped, once */
  d9_src_cache_note(sc, t->shard, t->offset, t->nbytes);
  assert_int_equal(d9_src_cache_ndropped(sc), 1);

  /* one note over tensors 1 and 2 of the same shard completes both */
  assert_int_equal(c->tensors[1].shard, t->shard);
  assert_int_equal(c->tensors[2].shard, t->shard);
  uint64_t lo = c->tensors[1].offset, hi = c->tensors[2].offset + c->tensors[2].nbytes;
  d9_src_cache_note(sc, t->shard, lo, hi - lo);
  assert_int_equal(d9_src_cache_ndropped(sc), 3);
  d9_src_cache_destroy(sc);

  /* a need of twice the size (two ranks read it): dropped after the second */
  uint64_t *need = calloc((size_t)c->ntensors, sizeof *need);
  assert_non_null(need);
  need[0] = 2 * t->nbytes;
  assert_int_equal(d9_src_cache_create(c, &sc), 0);
  d9_src_cache_set_need(sc, need);
  d9_src_cache_note(sc, t->shard, t->offset, t->nbytes);
  assert_int_equal(d9_src_cache_ndropped(sc), 0);
  d9_src_cache_note(sc, t->shard, t->offset, t->nbytes);
  assert_int_equal(d9_src_cache_ndropped(sc), 1);
  d9_src_cache_destroy(sc);
  free(need);

  /* every tensor of every shard counted: every page leaves the cache */
  assert_int_equal(d9_src_cache_create(c, &sc), 0);
  for (int s = 0; s < c->nshards; s++) {
    uint64_t size = warm(c, s);
    assert_true(resident(c->shards[s].fd) >= size / 2);
  }
  for (int i = 0; i < c->ntensors; i++)
    d9_src_cache_note(sc, c->tensors[i].shard, c->tensors[i].offset, c->tensors[i].nbytes);
  assert_int_equal(d9_src_cache_ndropped(sc), (uint64_t)c->ntensors);
  for (int s = 0; s < c->nshards; s++) assert_int_equal(resident(c->shards[s].fd), 0);
  d9_src_cache_destroy(sc);

  /* readahead that lands after a shard's last drop (here: the shard read
   * again right after it) is dropped by the sweeper 0.1 s or 1 s later;
   * a try whose re-read ended later than 0.9 s (a busy machine) is redone */
  int swept = 0;
  for (int try = 0; try < 5 && !swept; try++) {
    assert_int_equal(d9_src_cache_create(c, &sc), 0);
    for (int i = 0; i < c->ntensors; i++)
      d9_src_cache_note(sc, c->tensors[i].shard, c->tensors[i].offset, c->tensors[i].nbytes);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t size = warm(c, 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (dt < 0.9) {
      assert_true(resident(c->shards[0].fd) >= size / 2); /* back in the cache */
      for (int k = 0; k < 100 && resident(c->shards[0].fd); k++) usleep(50000); /* <= 5 s */
      assert_int_equal(resident(c->shards[0].fd), 0);
      swept = 1;
    }
    d9_src_cache_destroy(sc);
  }
  assert_true(swept);
  d9_catalog_close(c);
  tu_rmrf(dir);
  free(dir);
  free(src);
}

/* Every file of an identity mount read in 128 KiB requests as the FUSE
 * front end answers them: pieces, source ranges copied out, then
 * d9_mount_pieces_sent. Afterwards no page of a shard is cached. */
static void test_mount_pieces_sent(void **state) {
  (void)state;
  char *dir, *src = gen_src(&dir);
  char spec[4200];
  snprintf(spec, sizeof spec, "%s/mounts/identity.json", D9DFS_SOURCE_DIR);
  d9_mount_opts o = {.src_dir = src, .spec_path = spec, .source_cache = D9_SOURCE_CACHE_DROP};
  d9_mount *m = tu_mount(&o);
  d9_catalog *c = NULL;
  d9_diag diag = {0};
  assert_int_equal(d9_catalog_open(src, &c, &diag), 0); /* the same files, to look at */
  for (int s = 0; s < c->nshards; s++) warm(c, s);

  enum { REQ = 128 << 10 };
  unsigned char *buf = malloc(REQ), *out = malloc(REQ);
  assert_true(buf && out);
  uint64_t spliced = 0;
  const d9_vnode *root = d9_mount_node(m, 0);
  for (int k = 0; k < root->nchildren; k++) {
    int idx = root->children[k];
    const d9_vnode *v = d9_mount_node(m, idx);
    if (v->kind != D9_NODE_FILE || !strstr(v->name, ".safetensors")) continue;
    for (uint64_t off = 0; off < v->size; off += REQ) {
      d9_piece p[D9_READ_MAXPIECES];
      int np = 0;
      ssize_t r = d9_mount_read_pieces(m, idx, off, REQ, buf, p, &np);
      assert_true(r > 0);
      for (int i = 0; i < np; i++)
        if (!p[i].mem) {
          assert_int_equal(pread(p[i].fd, out, p[i].len, (off_t)p[i].off), (ssize_t)p[i].len);
          spliced += p[i].len;
        }
      assert_int_equal(d9_mount_check_pieces(m, idx, p, np), 0);
      d9_mount_pieces_sent(m, p, np);
    }
  }
  assert_true(spliced > 0); /* identity: the tensors came as source pieces */
  for (int s = 0; s < c->nshards; s++) {
    uint64_t r = resident(c->shards[s].fd);
    if (r) fprintf(stderr, "shard %s: %llu bytes still cached\n", c->shards[s].name,
                   (unsigned long long)r);
    assert_int_equal(r, 0);
  }
  free(buf);
  free(out);
  d9_catalog_close(c);
  d9_mount_close(m);
  tu_rmrf(dir);
  free(dir);
  free(src);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_counts_and_drops),
      cmocka_unit_test(test_mount_pieces_sent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
