/* test_catalog_links.c - the catalog's symlink rules and staleness rule
 * (mapper/catalog.h): sources as users keep them (a directory of links into
 * shared storage, a PEFT adapter directory), confinement for mounts other
 * users read (the hub cache's blobs must be a real directory), and change
 * detection by size, mtime, ctime and the inode behind the name.
 *
 * Checkpoints come from d9_gen_write (seeded) under a fresh mkdtemp
 * directory. Bytes read through the catalog are compared with plain pread
 * of the real files. Tests that need a file's ctime to move first wait
 * (polled, bounded) until the coarse clock the kernel stamps with has
 * passed it, so a rewrite cannot land in the same tick. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "mapper/catalog.h"
#include "testutil.h"

#define S1 "model-00001-of-00003.safetensors"
#define S2 "model-00002-of-00003.safetensors"
#define S3 "model-00003-of-00003.safetensors"
#define INDEX "model.safetensors.index.json"

typedef struct fx {
  char *tmp;                /* mkdtemp; removed at teardown */
  char store[PATH_MAX];     /* the real checkpoint ("shared storage") */
  char links[PATH_MAX];     /* a directory of absolute links into store */
} fx;

static void path_in(char *out, const char *dir, const char *name) {
  if ((size_t)snprintf(out, PATH_MAX, "%s/%s", dir, name) >= PATH_MAX) fail();
}

static void gen(const char *dir, int shards, uint64_t seed) {
  d9_gen_params p;
  d9_gen_defaults(&p, "llama");
  p.shards = shards;
  p.seed = seed;
  d9_diag diag = {0};
  if (d9_gen_write(dir, &p, &diag)) fail_msg("gen %s: %s", dir, diag.msg);
}

static void link_all(const char *store, const char *links, const char *const *names, int n) {
  assert_int_equal(mkdir(links, 0755), 0);
  for (int i = 0; i < n; i++) {
    char t[PATH_MAX], l[PATH_MAX];
    path_in(t, store, names[i]);
    path_in(l, links, names[i]);
    assert_int_equal(symlink(t, l), 0);
  }
}

static const char *const sharded[] = {S1, S2, S3, INDEX, "config.json",
                                      "tokenizer_config.json"};

static int setup(void **state) {
  fx *f = calloc(1, sizeof *f);
  if (!f) return -1;
  f->tmp = tu_tmpdir();
  path_in(f->store, f->tmp, "store");
  path_in(f->links, f->tmp, "links");
  gen(f->store, 3, 11);
  link_all(f->store, f->links, sharded, 6);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx *f = *state;
  tu_rmrf(f->tmp);
  free(f->tmp);
  free(f);
  return 0;
}

/* Every tensor read through c equals the bytes of the real file it names
 * in store, at the same offset. */
static void check_bytes(const d9_catalog *c, const char *store) {
  for (int i = 0; i < c->ntensors; i++) {
    const d9_src_tensor *t = &c->tensors[i];
    char p[PATH_MAX];
    path_in(p, store, c->shards[t->shard].name);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    unsigned char *a = malloc(t->nbytes + 1), *b = malloc(t->nbytes + 1);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(d9_catalog_pread(c, t->shard, a, t->nbytes, t->offset), 0);
    assert_int_equal(pread(fd, b, t->nbytes, (off_t)t->offset), (ssize_t)t->nbytes);
    assert_memory_equal(a, b, t->nbytes);
    free(a);
    free(b);
    close(fd);
  }
}

static d9_catalog *open_ok(const char *dir, unsigned flags) {
  d9_catalog *c = NULL;
  d9_diag diag = {0};
  int rc = d9_catalog_open_flags(dir, flags, &c, &diag);
  if (rc) fail_msg("open %s: %d %s", dir, rc, diag.msg);
  return c;
}

static void open_refused(const char *dir, unsigned flags, int want, const char *msg) {
  d9_catalog *c = NULL;
  d9_diag diag = {0};
  int rc = d9_catalog_open_flags(dir, flags, &c, &diag);
  if (rc != want || !strstr(diag.msg, msg))
    fail_msg("open %s: got %d '%s', want %d '%s'", dir, rc, diag.msg, want, msg);
  assert_null(c);
}

/* ---- a directory of links into shared storage ---- */

static void test_links_followed(void **state) {
  fx *f = *state;
  char t[PATH_MAX];
  path_in(t, f->store, S2);
  assert_int_equal(chmod(t, 0640), 0);
  d9_catalog *c = open_ok(f->links, 0);
  d9_catalog *real = open_ok(f->store, D9_CATALOG_CONFINE);
  assert_int_equal(c->nshards, 3);
  assert_int_equal(c->ntensors, real->ntensors);
  for (int i = 0; i < c->ntensors; i++) {
    assert_string_equal(c->tensors[i].name, real->tensors[i].name);
    assert_int_equal(c->tensors[i].offset, real->tensors[i].offset);
  }
  check_bytes(c, f->store);
  assert_non_null(c->config);
  /* the recorded stat is the target's: its inode and its mode */
  struct stat st;
  for (int s = 0; s < c->nshards; s++) {
    path_in(t, f->store, c->shards[s].name);
    assert_int_equal(stat(t, &st), 0);
    assert_int_equal(c->shards[s].st.st_ino, st.st_ino);
    assert_int_equal(c->shards[s].st.st_mode, st.st_mode);
    assert_true(S_ISREG(c->shards[s].st.st_mode));
  }
  for (int s = 0; s < c->nshards; s++)
    if (!strcmp(c->shards[s].name, S2)) assert_int_equal(c->shards[s].st.st_mode & 0777, 0640);
  /* a copied file behind a link: opened, the target's stat */
  struct stat fst;
  d9_diag diag = {0};
  int fd = d9_catalog_open_file(c, "tokenizer_config.json", &fst, &diag);
  if (fd < 0) fail_msg("%s", diag.msg);
  path_in(t, f->store, "tokenizer_config.json");
  assert_int_equal(stat(t, &st), 0);
  assert_int_equal(fst.st_ino, st.st_ino);
  close(fd);
  d9_catalog_close(real);
  d9_catalog_close(c);
  /* confined (a mount other users read): refused, naming the file */
  open_refused(f->links, D9_CATALOG_CONFINE, -EINVAL,
               "'" INDEX "' resolves outside the source directory");
}

/* Followed links still lead to regular files only, and index entries stay
 * plain relative paths. */
static void test_links_special_refused(void **state) {
  fx *f = *state;
  char p[PATH_MAX], t[PATH_MAX];
  struct { const char *target, *msg; } cases[] = {
      {"fifo", S3 ": not a regular file"},
      {"dir", S3 ": not a regular file"},
      {"/dev/null", S3 ": not a regular file"},
  };
  path_in(t, f->tmp, "fifo");
  assert_int_equal(mkfifo(t, 0600), 0);
  path_in(t, f->tmp, "dir");
  assert_int_equal(mkdir(t, 0755), 0);
  path_in(p, f->links, S3);
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    assert_int_equal(unlink(p), 0);
    if (cases[i].target[0] == '/') snprintf(t, sizeof t, "%s", cases[i].target);
    else path_in(t, f->tmp, cases[i].target);
    assert_int_equal(symlink(t, p), 0);
    alarm(20); /* a FIFO opened would hang: fail instead */
    open_refused(f->links, 0, -EINVAL, cases[i].msg);
    alarm(0);
  }
  /* index entries with '..' or an absolute path: refused even when followed */
  path_in(p, f->links, INDEX);
  assert_int_equal(unlink(p), 0);
  char idx[PATH_MAX + 64];
  snprintf(idx, sizeof idx, "{\"weight_map\": {\"model.norm.weight\": \"%s/%s\"}}", f->store,
           S3);
  tu_write(p, idx);
  open_refused(f->links, 0, -EINVAL, "path must be relative, without '..'");
  tu_write(p, "{\"weight_map\": {\"model.norm.weight\": \"../store/" S3 "\"}}");
  open_refused(f->links, 0, -EINVAL, "path must be relative, without '..'");
}

/* ---- the hub cache exception ---- */

/* SRC = X/snapshots/r with X/blobs a symlink to another directory and
 * tokenizer.json -> ../../blobs/shadow: confined, the link is refused (the
 * symlinked blobs does not widen the allowed root); a real X/blobs is
 * allowed. Before the fix, /etc/shadow was served this way. */
static void test_hub_symlinked_blobs(void **state) {
  fx *f = *state;
  char repo[PATH_MAX], snap[PATH_MAX], p[PATH_MAX], secret[PATH_MAX];
  path_in(repo, f->tmp, "models--o--n");
  path_in(secret, f->tmp, "etc");
  assert_int_equal(mkdir(repo, 0755), 0);
  assert_int_equal(mkdir(secret, 0755), 0);
  path_in(p, secret, "shadow");
  tu_write(p, "root:secret\n");
  path_in(p, repo, "snapshots");
  assert_int_equal(mkdir(p, 0755), 0);
  path_in(snap, p, "r");
  gen(snap, 1, 12); /* the checkpoint itself is plain files in the snapshot */
  path_in(p, repo, "blobs");
  assert_int_equal(symlink(secret, p), 0);
  path_in(p, snap, "tokenizer.json");
  assert_int_equal(symlink("../../blobs/shadow", p), 0);

  d9_catalog *c = open_ok(snap, D9_CATALOG_CONFINE);
  struct stat st;
  d9_diag diag = {0};
  int fd = d9_catalog_open_file(c, "tokenizer.json", &st, &diag);
  if (fd >= 0) close(fd);
  assert_int_equal(fd, -EINVAL);
  assert_non_null(strstr(diag.msg, "'tokenizer.json' resolves outside the source directory"));
  assert_string_equal(c->blobs, ""); /* a symlinked blobs is no hub blobs */
  d9_catalog_close(c);

  /* through a mount: refused at mount time, naming the file */
  char spec[PATH_MAX];
  path_in(spec, D9DFS_SOURCE_DIR, "mounts/identity.json");
  d9_mount_opts o = {.src_dir = snap, .spec_path = spec, .confine_links = 1};
  d9_mount *m = NULL;
  memset(&diag, 0, sizeof diag);
  assert_int_equal(d9_mount_open(&o, &m, &diag), -EINVAL);
  assert_null(m);
  assert_non_null(strstr(diag.msg, "'tokenizer.json' resolves outside"));
  /* a private mount follows the link (the daemon's user can read it) */
  o.confine_links = 0;
  m = tu_mount(&o);
  int idx = d9_mount_resolve(m, "tokenizer.json");
  assert_true(idx > 0);
  char buf[64] = {0};
  assert_int_equal(d9_mount_read(m, idx, 0, sizeof buf - 1, buf), 12);
  assert_string_equal(buf, "root:secret\n");
  d9_mount_close(m);

  /* a real blobs directory: its files are allowed */
  path_in(p, repo, "blobs");
  assert_int_equal(unlink(p), 0);
  assert_int_equal(mkdir(p, 0755), 0);
  path_in(p, repo, "blobs/shadow");
  tu_write(p, "{}\n");
  c = open_ok(snap, D9_CATALOG_CONFINE);
  assert_string_not_equal(c->blobs, "");
  memset(&diag, 0, sizeof diag);
  fd = d9_catalog_open_file(c, "tokenizer.json", &st, &diag);
  if (fd < 0) fail_msg("%s", diag.msg);
  close(fd);
  /* ... but a blob that links on out of blobs is not */
  assert_int_equal(unlink(p), 0);
  char out[PATH_MAX];
  path_in(out, secret, "shadow");
  assert_int_equal(symlink(out, p), 0);
  memset(&diag, 0, sizeof diag);
  assert_int_equal(d9_catalog_open_file(c, "tokenizer.json", &st, &diag), -EINVAL);
  assert_non_null(strstr(diag.msg, "resolves outside the source directory"));
  d9_catalog_close(c);
}

/* ---- staleness: ctime ---- */

/* Wait until the kernel's coarse clock has passed ts (bounded: 2 s). */
static void clock_past(struct timespec ts) {
  for (int i = 0; i < 2000000; i++) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME_COARSE, &now);
    if (now.tv_sec > ts.tv_sec || (now.tv_sec == ts.tv_sec && now.tv_nsec > ts.tv_nsec))
      return;
  }
  fail_msg("the clock did not pass the file's ctime");
}

/* Rewrite n bytes at off of path in place (same size) with their
 * complement, then set its mtime back: rsync -t --inplace, touch -r. */
static void rewrite_keep_mtime(const char *path, uint64_t off, size_t n) {
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  clock_past(st.st_ctim);
  int fd = open(path, O_RDWR | O_CLOEXEC);
  assert_true(fd >= 0);
  unsigned char *b = malloc(n);
  assert_non_null(b);
  assert_int_equal(pread(fd, b, n, (off_t)off), (ssize_t)n);
  for (size_t i = 0; i < n; i++) b[i] = (unsigned char)~b[i];
  assert_int_equal(pwrite(fd, b, n, (off_t)off), (ssize_t)n);
  struct timespec ts[2] = {st.st_atim, st.st_mtim};
  assert_int_equal(futimens(fd, ts), 0);
  close(fd);
  free(b);
  struct stat after;
  assert_int_equal(stat(path, &after), 0);
  assert_int_equal(after.st_size, st.st_size);
  assert_int_equal(after.st_mtim.tv_sec, st.st_mtim.tv_sec);
  assert_int_equal(after.st_mtim.tv_nsec, st.st_mtim.tv_nsec);
}

static void test_stale_ctime_shard(void **state) {
  fx *f = *state;
  for (int k = 0; k < 2; k++) { /* the real directory, then through links */
    const char *dir = k ? f->links : f->store;
    d9_catalog *c = open_ok(dir, k ? 0 : D9_CATALOG_CONFINE);
    const d9_src_tensor *t = d9_catalog_find(c, "model.norm.weight");
    assert_non_null(t);
    unsigned char *buf = malloc(t->nbytes);
    assert_non_null(buf);
    assert_int_equal(d9_catalog_pread(c, t->shard, buf, t->nbytes, t->offset), 0);
    char p[PATH_MAX];
    path_in(p, f->store, c->shards[t->shard].name);
    rewrite_keep_mtime(p, t->offset, t->nbytes);
    assert_int_equal(d9_catalog_pread(c, t->shard, buf, t->nbytes, t->offset), -ESTALE);
    assert_int_equal(d9_catalog_check(c, t->shard), -ESTALE);
    d9_diag diag = {0};
    const d9_shard *sh = &c->shards[t->shard];
    assert_int_equal(d9_catalog_check_file(c, sh->name, sh->fd, &sh->st, &diag), -ESTALE);
    assert_non_null(strstr(diag.msg, sh->name));
    assert_non_null(strstr(diag.msg, "ctime"));
    assert_non_null(strstr(diag.msg, "remount after a source changed"));
    /* the other shards are unaffected */
    for (int s = 0; s < c->nshards; s++)
      if (s != t->shard) assert_int_equal(d9_catalog_check(c, s), 0);
    free(buf);
    d9_catalog_close(c);
  }
}

/* A copied file: d9_catalog_read_file serves the bytes, then refuses them
 * once the file is rewritten in place with its mtime set back, or once its
 * link is pointed at another file with the same bytes. */
static void test_stale_copied_file(void **state) {
  fx *f = *state;
  d9_catalog *c = open_ok(f->links, 0);
  const char *name = "tokenizer_config.json";
  struct stat st;
  d9_diag diag = {0};
  int fd = d9_catalog_open_file(c, name, &st, &diag);
  if (fd < 0) fail_msg("%s", diag.msg);
  char real[PATH_MAX], want[4096] = {0}, got[4096] = {0};
  path_in(real, f->store, name);
  int rfd = open(real, O_RDONLY | O_CLOEXEC);
  assert_true(rfd >= 0);
  size_t n = (size_t)st.st_size;
  assert_true(n > 2 && n < sizeof want);
  assert_int_equal(pread(rfd, want, n, 0), (ssize_t)n);
  close(rfd);
  assert_int_equal(d9_catalog_read_file(c, name, fd, &st, got, n, 0), (ssize_t)n);
  assert_memory_equal(got, want, n);
  assert_int_equal(d9_catalog_read_file(c, name, fd, &st, got, n - 1, 1), (ssize_t)(n - 1));
  assert_memory_equal(got, want + 1, n - 1);
  /* the link now names a copy with the same bytes: another file */
  char copy[PATH_MAX], l[PATH_MAX];
  path_in(copy, f->tmp, "copy.json");
  tu_write(copy, want);
  path_in(l, f->links, name);
  assert_int_equal(unlink(l), 0);
  assert_int_equal(symlink(copy, l), 0);
  assert_int_equal(d9_catalog_read_file(c, name, fd, &st, got, n, 0), -ESTALE);
  memset(&diag, 0, sizeof diag);
  assert_int_equal(d9_catalog_check_file(c, name, fd, &st, &diag), -ESTALE);
  assert_non_null(strstr(diag.msg, "another file"));
  assert_int_equal(unlink(l), 0);
  assert_int_equal(symlink(real, l), 0);
  assert_int_equal(d9_catalog_read_file(c, name, fd, &st, got, n, 0), (ssize_t)n);
  /* rewritten in place, same size, mtime set back: refused */
  rewrite_keep_mtime(real, 0, n);
  assert_int_equal(d9_catalog_read_file(c, name, fd, &st, got, n, 0), -ESTALE);
  close(fd);
  d9_catalog_close(c);
}

/* ---- a PEFT adapter directory ---- */

static void test_adapter_dir(void **state) {
  fx *f = *state;
  char dir[PATH_MAX], a[PATH_MAX], b[PATH_MAX];
  path_in(dir, f->tmp, "adapter");
  gen(dir, 1, 13);
  path_in(a, dir, "model.safetensors");
  path_in(b, dir, "adapter_model.safetensors");
  assert_int_equal(rename(a, b), 0);
  path_in(a, dir, "config.json");
  path_in(b, dir, "adapter_config.json");
  assert_int_equal(rename(a, b), 0);
  d9_catalog *c = open_ok(dir, D9_CATALOG_CONFINE);
  assert_int_equal(c->nshards, 1);
  assert_string_equal(c->shards[0].name, "adapter_model.safetensors");
  assert_int_equal(c->has_index, 0);
  assert_int_equal(c->adapter, 1);
  assert_true(c->ntensors > 0);
  d9_catalog_close(c);
  /* mounted: the tree keeps the names, adapter_config.json copied as is */
  char spec[PATH_MAX];
  path_in(spec, f->tmp, "adapter.json");
  tu_write(spec, "{\"d9dfs_spec\": 1, \"passthrough\": true,"
                 " \"output\": {\"copy\": [\"*.json\"]}}");
  d9_mount_opts o = {.src_dir = dir, .spec_path = spec, .confine_links = 1};
  d9_mount *m = tu_mount(&o);
  assert_true(d9_mount_resolve(m, "adapter_model.safetensors") > 0);
  assert_true(d9_mount_resolve(m, "model.safetensors") < 0);
  int idx = d9_mount_resolve(m, "adapter_config.json");
  assert_true(idx > 0);
  uint64_t len;
  unsigned char *got = tu_read_node(m, idx, &len);
  assert_non_null(got);
  FILE *fp = fopen(b, "rb");
  assert_non_null(fp);
  unsigned char want[4096];
  size_t wn = fread(want, 1, sizeof want, fp);
  fclose(fp);
  assert_int_equal(len, wn);
  assert_memory_equal(got, want, wn);
  free(got);
  d9_mount_close(m);
  /* model.safetensors wins when both are there */
  path_in(a, dir, "adapter_model.safetensors");
  path_in(b, dir, "model.safetensors");
  assert_int_equal(link(a, b), 0);
  c = open_ok(dir, D9_CATALOG_CONFINE);
  assert_string_equal(c->shards[0].name, "model.safetensors");
  d9_catalog_close(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_links_followed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_links_special_refused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_hub_symlinked_blobs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stale_ctime_shard, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stale_copied_file, setup, teardown),
      cmocka_unit_test_setup_teardown(test_adapter_dir, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
