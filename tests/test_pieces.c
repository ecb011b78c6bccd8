/* test_pieces.c - the zero-copy read (d9_mount_read_pieces) against the
 * plain one (d9_mount_read): random ranges of every file of several views
 * give the same bytes once the source pieces are read from their fds;
 * source pieces are unchanged runs of at least D9_REF_MIN bytes and never
 * come out of a computing op (cast, transpose); a shard changed under the
 * mount fails d9_mount_check_pieces. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "mapper/eval.h"
#include "testutil.h"

typedef struct counts {
  uint64_t src_pieces, src_bytes, mem_bytes;
} counts;

/* A llama checkpoint whose tensors are big enough for source pieces. */
static char *gen_llama(const char *dir, const char *name, d9_dtype dt, int shards) {
  char *path = malloc(4200);
  assert_non_null(path);
  snprintf(path, 4200, "%s/%s", dir, name);
  d9_gen_params p;
  d9_gen_defaults(&p, "llama");
  p.hidden = 256, p.heads = 4, p.kv_heads = 2, p.intermediate = 512, p.vocab = 300;
  p.layers = 2, p.dtype = dt, p.shards = shards, p.seed = 11;
  d9_diag diag = {0};
  int rc = d9_gen_write(path, &p, &diag);
  if (rc) fprintf(stderr, "gen: %s\n", diag.msg);
  assert_int_equal(rc, 0);
  return path;
}

static d9_mount *open_view(const char *src, const char *spec, uint64_t shard_size) {
  d9_mount_opts o = {.src_dir = src, .spec_path = spec, .max_shard_size = shard_size};
  return tu_mount(&o);
}

/* The reply that pieces describe, assembled into out (r bytes). */
static void assemble(const d9_piece *p, int np, const unsigned char *buf, size_t r,
                     unsigned char *out, counts *c) {
  size_t pos = 0;
  for (int i = 0; i < np; i++) {
    assert_true(p[i].len <= r - pos);
    if (p[i].mem) {
      assert_ptr_equal(p[i].mem, buf + pos); /* memory pieces sit in place */
      memcpy(out + pos, p[i].mem, p[i].len);
      c->mem_bytes += p[i].len;
    } else {
      assert_true(p[i].len >= D9_REF_MIN);
      assert_int_equal(pread(p[i].fd, out + pos, p[i].len, (off_t)p[i].off),
                       (ssize_t)p[i].len);
      c->src_pieces++;
      c->src_bytes += p[i].len;
    }
    pos += p[i].len;
  }
  assert_int_equal(pos, r);
}

/* Random ranges of every file of m: pieces == d9_mount_read. */
static counts random_ranges(d9_mount *m, uint64_t seed, int iters) {
  counts c = {0, 0, 0};
  const d9_vnode *root = d9_mount_node(m, 0);
  unsigned char *a = malloc(1 << 20), *b = malloc(1 << 20), *out = malloc(1 << 20);
  assert_true(a && b && out);
  uint64_t x = seed;
  for (int it = 0; it < iters; it++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    int idx = root->children[x % (uint64_t)root->nchildren];
    const d9_vnode *v = d9_mount_node(m, idx);
    if (v->kind != D9_NODE_FILE) continue;
    uint64_t off = (x >> 8) % (v->size + 16);
    uint64_t n = (x >> 32) % 7 == 0 ? (x >> 40) % 64 : (x >> 24) % (1 << 20);
    if ((x >> 50) % 4 == 0) off &= ~(uint64_t)4095; /* page-aligned, as the kernel asks */
    ssize_t ra = d9_mount_read(m, idx, off, n, a);
    d9_piece p[D9_READ_MAXPIECES];
    int np = -1;
    memset(b, 0xa5, 1 << 20);
    ssize_t rb = d9_mount_read_pieces(m, idx, off, n, b, p, &np);
    assert_int_equal(ra, rb);
    if (ra < 0) continue;
    assert_true(np >= 1 && np <= D9_READ_MAXPIECES);
    assemble(p, np, b, (size_t)rb, out, &c);
    if (ra) assert_memory_equal(a, out, (size_t)ra);
    assert_int_equal(d9_mount_check_pieces(m, idx, p, np), 0);
  }
  free(a);
  free(b);
  free(out);
  return c;
}

static void spec_path(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/mounts/%s", D9DFS_SOURCE_DIR, name);
}

static void test_pieces_equal_read(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  char *bf16 = gen_llama(dir, "bf16", D9_BF16, 3);
  char *f32 = gen_llama(dir, "f32", D9_F32, 2);
  char spec[4200];

  /* identity and gathers: most bytes come as source pieces */
  spec_path(spec, sizeof spec, "identity.json");
  d9_mount *m = open_view(bf16, spec, 300000);
  counts c = random_ranges(m, 0x9e3779b97f4a7c15ull, 1500);
  assert_true(c.src_pieces > 100 && c.src_bytes > 4 * c.mem_bytes);
  d9_mount_close(m);

  spec_path(spec, sizeof spec, "llama-to-megatron.json");
  m = open_view(bf16, spec, 300000);
  c = random_ranges(m, 77, 1500);
  assert_true(c.src_pieces > 100);
  d9_mount_close(m);

  /* casts compute every byte: no source piece */
  spec_path(spec, sizeof spec, "cast-f32-to-bf16.json");
  m = open_view(f32, spec, 300000);
  c = random_ranges(m, 5, 800);
  assert_int_equal(c.src_pieces, 0);
  d9_mount_close(m);

  /* mixed: transpose (tiles through scratch), chunk, concat, cast, rename */
  char mixed[4200];
  snprintf(mixed, sizeof mixed, "%s/mixed.json", dir);
  tu_write(mixed,
           "{\"d9dfs_spec\": 1, \"passthrough\": true, \"rules\": [\n"
           " {\"name\": \"t\", \"inputs\": \"model.layers.{L}.mlp.down_proj.weight\","
           "  \"steps\": [{\"op\": \"transpose\", \"dim0\": 0, \"dim1\": 1}],"
           "  \"output\": \"l{L}.down_t\"},\n"
           " {\"name\": \"c\", \"inputs\": {\"g\": \"model.layers.{L}.mlp.gate_proj.weight\","
           "  \"u\": \"model.layers.{L}.mlp.up_proj.weight\"},"
           "  \"steps\": [{\"op\": \"concat\", \"dim\": 0, \"out\": \"gu\"},"
           "             {\"op\": \"chunk\", \"chunks\": 4, \"dim\": 0,"
           "              \"out\": [\"a\", \"b\", \"c\", \"d\"]},"
           "             {\"op\": \"cast\", \"in\": \"b\", \"to\": \"BF16\", \"out\": \"b16\"}],"
           "  \"output\": {\"gu\": \"l{L}.gu\", \"a\": \"l{L}.a\", \"b16\": \"l{L}.b16\","
           "              \"d\": \"l{L}.d\"}}\n"
           "]}\n");
  m = open_view(f32, mixed, 300000);
  c = random_ranges(m, 123, 1500);
  assert_true(c.src_pieces > 50);
  d9_mount_close(m);

  tu_rmrf(dir);
  free(bf16);
  free(f32);
  free(dir);
}

/* The source file behind the first source piece of a read of the whole
 * first MiB of the view's only file; its path into shard (cap bytes). */
static int first_source(d9_mount *m, unsigned char *buf, d9_piece *p, int *np, char *shard,
                        size_t cap) {
  int idx = d9_mount_resolve(m, "model.safetensors");
  assert_true(idx >= 0);
  ssize_t r = d9_mount_read_pieces(m, idx, 0, 1 << 20, buf, p, np);
  assert_int_equal(r, 1 << 20);
  int k = 0;
  while (k < *np && p[k].mem) k++;
  assert_true(k < *np); /* there is a source piece */
  char link[64];
  snprintf(link, sizeof link, "/proc/self/fd/%d", p[k].fd);
  ssize_t l = readlink(link, shard, cap - 1);
  assert_true(l > 0);
  shard[l] = 0;
  assert_int_equal(d9_mount_check_pieces(m, idx, p, *np), 0);
  return idx;
}

/* A shard truncated or rewritten after the mount: the check says so. */
static void test_pieces_stale(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  char *src = gen_llama(dir, "src", D9_BF16, 2);
  char spec[4200], shard[4400];
  spec_path(spec, sizeof spec, "identity.json");
  unsigned char *buf = malloc(1 << 20);
  d9_piece p[D9_READ_MAXPIECES];
  int np = 0;

  /* same size, new mtime: stale, and counted as an error */
  d9_mount *m = open_view(src, spec, 0);
  int idx = first_source(m, buf, p, &np, shard, sizeof shard);
  struct timespec ts[2] = {{0, UTIME_NOW}, {1, 0}};
  assert_int_equal(utimensat(AT_FDCWD, shard, ts, 0), 0);
  assert_int_equal(d9_mount_check_pieces(m, idx, p, np), -ESTALE);
  d9_stats st;
  d9_mount_get_stats(m, &st);
  assert_true(st.errors >= 1);
  d9_mount_close(m);

  /* truncated: stale, and the plain read fails too */
  m = open_view(src, spec, 0);
  idx = first_source(m, buf, p, &np, shard, sizeof shard);
  assert_int_equal(truncate(shard, 1000), 0);
  assert_int_equal(d9_mount_check_pieces(m, idx, p, np), -ESTALE);
  assert_true(d9_mount_read(m, idx, 0, 1 << 20, buf) < 0);
  d9_mount_close(m);

  free(buf);
  tu_rmrf(dir);
  free(src);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pieces_equal_read),
      cmocka_unit_test(test_pieces_stale),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
