/* fuzz_index.c - libFuzzer target for the index / catalog path
 * (mapper/catalog.h: d9_catalog_open on a directory with
 * model.safetensors.index.json).
 *
 * Input: the bytes of model.safetensors.index.json. Each run writes them
 * into a per-process source directory that holds a fixed set of files the
 * index may name, then opens the catalog and closes it. The directory is
 * made once per process (mkdtemp under $TMPDIR or /tmp, removed at exit):
 *
 *   src/a.safetensors          x F32 [2], y BF16 [3]        valid
 *   src/b.safetensors          z F16 [1, 2]                 valid
 *   src/sub/c.safetensors      w I32 [1]                    valid, in a subdir
 *   src/empty.safetensors      no tensors                   valid
 *   src/dup.safetensors        x F32 [2]                    'x' again
 *   src/bad.safetensors        a header length past the end of the file
 *   src/short.safetensors      3 bytes
 *   src/link_in.safetensors    -> a.safetensors             symlink inside
 *   src/link_out.safetensors   -> ../outside.safetensors    symlink outside
 *   src/link_dev.safetensors   -> /dev/zero                 device outside
 *   src/dir.safetensors/       a directory
 *   src/fifo.safetensors       a FIFO (must not hang: opened non-blocking)
 *   src/config.json            {"hidden_size": 64}
 *   outside.safetensors        valid, beside src/ (never opened when confined)
 *
 * Why files and not an in-memory parse: the checks that matter most for an
 * index - relative paths only, no '..', symlinks resolving outside, shards
 * that are FIFOs, directories or devices, tensors listed but absent or in
 * two shards - live in d9_catalog_open and the filesystem calls it makes,
 * so the target drives the real function end to end (2-4k runs/s under
 * ASan on a 2-core machine, enough for a JSON object of file names).
 * Properties checked on every run, for the confined open (the default)
 * and the one that follows links (D9_CATALOG_CONFINE unset): no crash, no
 * descriptor left open after d9_catalog_close, a refusal comes with a
 * one-line message, an accepted catalog is consistent (every tensor in a
 * regular-file shard - opened inside the directory when confined - found
 * by name, readable at its offset), and whatever the confined open accepts
 * the other accepts too.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mapper/catalog.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A property that must hold; on failure print it (and the diagnostic
 * when there is one) and abort, which libFuzzer reports as a crash. */
#define CHECK_MSG(c, msg)                                                     \
  do {                                                                        \
    if (!(c)) {                                                               \
      fprintf(stderr, "fuzz_index: property failed: %s (line %d)%s%s\n", #c,  \
              __LINE__, (msg) ? ": " : "", (msg) ? (msg) : "");               \
      abort();                                                                \
    }                                                                         \
  } while (0)
#define CHECK(c) CHECK_MSG(c, (const char *)NULL)

/* The per-process fixture: set up on the first run, removed at exit. A
 * harness-only static; the library itself keeps no mutable statics. */
static struct {
  char root[256]; /* the mkdtemp directory */
  char src[300];  /* root/src: the source directory given to the catalog */
  char index[340];/* src/model.safetensors.index.json */
} fx;

/* A valid safetensors file: tensors (name, dtype, ndim, dims) as given. */
static void write_shard(const char *path, int n, const char *const *names,
                        const d9_dtype *dtypes, const int64_t (*shapes)[2],
                        const int *ndims) {
  d9_st_tensor t[4];
  uint64_t data = 0;
  for (int i = 0; i < n; i++) {
    memset(&t[i], 0, sizeof t[i]);
    t[i].name = names[i];
    t[i].dtype = dtypes[i];
    t[i].ndim = ndims[i];
    memcpy(t[i].shape, shapes[i], sizeof shapes[i]);
  }
  unsigned char *hdr;
  uint64_t hlen;
  CHECK(d9_st_write_header(t, n, NULL, NULL, 0, &hdr, &hlen) == 0);
  for (int i = 0; i < n; i++) data += t[i].end - t[i].begin;
  FILE *f = fopen(path, "wb");
  CHECK(f);
  CHECK(fwrite(hdr, 1, hlen, f) == hlen);
  for (uint64_t i = 0; i < data; i++) CHECK(fputc((int)(i * 37 & 0xff), f) != EOF);
  CHECK(fclose(f) == 0);
  free(hdr);
}

static void write_bytes(const char *path, const void *p, size_t n) {
  FILE *f = fopen(path, "wb");
  CHECK(f && fwrite(p, 1, n, f) == n && fclose(f) == 0);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(p);
}

static void fixture_remove(void) {
  if (fx.root[0]) nftw(fx.root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void fixture_make(void) {
  const char *tmp = getenv("TMPDIR");
  char p[400];
  snprintf(fx.root, sizeof fx.root, "%s/d9fuzz-index.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  CHECK(mkdtemp(fx.root));
  atexit(fixture_remove);
  snprintf(fx.src, sizeof fx.src, "%s/src", fx.root);
  snprintf(fx.index, sizeof fx.index, "%s/model.safetensors.index.json", fx.src);
  CHECK(mkdir(fx.src, 0755) == 0);

  static const int64_t sh_a[2][2] = {{2, 0}, {3, 0}}, sh_b[1][2] = {{1, 2}},
                       sh_c[1][2] = {{1, 0}};
  static const int nd1[2] = {1, 1}, nd2[1] = {2};
  static const char *const n_a[2] = {"x", "y"}, *const n_b[1] = {"z"},
                           *const n_c[1] = {"w"};
  static const d9_dtype dt_a[2] = {D9_F32, D9_BF16}, dt_b[1] = {D9_F16},
                        dt_c[1] = {D9_I32};
  snprintf(p, sizeof p, "%s/a.safetensors", fx.src);
  write_shard(p, 2, n_a, dt_a, sh_a, nd1);
  snprintf(p, sizeof p, "%s/b.safetensors", fx.src);
  write_shard(p, 1, n_b, dt_b, sh_b, nd2);
  snprintf(p, sizeof p, "%s/sub", fx.src);
  CHECK(mkdir(p, 0755) == 0);
  snprintf(p, sizeof p, "%s/sub/c.safetensors", fx.src);
  write_shard(p, 1, n_c, dt_c, sh_c, nd1);
  snprintf(p, sizeof p, "%s/empty.safetensors", fx.src);
  write_shard(p, 0, NULL, NULL, NULL, NULL);
  snprintf(p, sizeof p, "%s/dup.safetensors", fx.src);
  write_shard(p, 1, n_a, dt_a, sh_a, nd1);
  snprintf(p, sizeof p, "%s/outside.safetensors", fx.root);
  write_shard(p, 1, n_b, dt_b, sh_b, nd2);

  static const unsigned char bad[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
  snprintf(p, sizeof p, "%s/bad.safetensors", fx.src);
  write_bytes(p, bad, sizeof bad);
  snprintf(p, sizeof p, "%s/short.safetensors", fx.src);
  write_bytes(p, "abc", 3);
  snprintf(p, sizeof p, "%s/config.json", fx.src);
  write_bytes(p, "{\"hidden_size\": 64}\n", 20);

  snprintf(p, sizeof p, "%s/link_in.safetensors", fx.src);
  CHECK(symlink("a.safetensors", p) == 0);
  snprintf(p, sizeof p, "%s/link_out.safetensors", fx.src);
  CHECK(symlink("../outside.safetensors", p) == 0);
  snprintf(p, sizeof p, "%s/link_dev.safetensors", fx.src);
  CHECK(symlink("/dev/zero", p) == 0);
  snprintf(p, sizeof p, "%s/dir.safetensors", fx.src);
  CHECK(mkdir(p, 0755) == 0);
  snprintf(p, sizeof p, "%s/fifo.safetensors", fx.src);
  CHECK(mkfifo(p, 0644) == 0);
}

/* The lowest free descriptor number: equal before and after a run unless
 * the run leaked one. */
static int lowest_free_fd(void) {
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  CHECK(fd >= 0);
  close(fd);
  return fd;
}

/* Is path (relative to the source dir) inside it after resolving links? */
static int inside_src(const char *name) {
  char p[4400], real[4200], rsrc[4200];
  snprintf(p, sizeof p, "%s/%s", fx.src, name);
  if (!realpath(p, real) || !realpath(fx.src, rsrc)) return 0;
  size_t l = strlen(rsrc);
  return !strncmp(real, rsrc, l) && real[l] == '/';
}

static void check_catalog(const d9_catalog *c, int confined) {
  CHECK(c->has_index);
  for (int s = 0; s < c->nshards; s++) {
    struct stat st;
    CHECK(c->shards[s].fd >= 0 && fstat(c->shards[s].fd, &st) == 0);
    CHECK(S_ISREG(st.st_mode));
    CHECK(!confined || inside_src(c->shards[s].name));
  }
  for (int i = 0; i < c->ntensors; i++) {
    const d9_src_tensor *t = &c->tensors[i];
    CHECK(t->shard >= 0 && t->shard < c->nshards);
    CHECK(d9_catalog_find(c, t->name) == t);
    unsigned char b[8];
    size_t n = t->nbytes < sizeof b ? (size_t)t->nbytes : sizeof b;
    if (n) CHECK(d9_catalog_pread(c, t->shard, b, n, t->offset) == 0);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!fx.root[0]) fixture_make();
  int fd = open(fx.index, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  CHECK(fd >= 0);
  for (size_t o = 0; o < size;) {
    ssize_t w = write(fd, data + o, size - o);
    CHECK(w > 0);
    o += (size_t)w;
  }
  CHECK(close(fd) == 0);

  int before = lowest_free_fd();
  d9_diag diag = {0};
  d9_catalog *c = NULL;
  int rc = d9_catalog_open(fx.src, &c, &diag);
  if (rc == 0) {
    CHECK(c);
    check_catalog(c, 1);
    d9_catalog_close(c);
  } else {
    CHECK_MSG(rc < 0 && diag.set && !strchr(diag.msg, '\n'), diag.msg);
  }
  CHECK(lowest_free_fd() == before);
  /* links followed (a private mount): regular files only, still; whatever
   * the confined open accepted is accepted here too */
  d9_diag fdiag = {0};
  d9_catalog *f = NULL;
  int rf = d9_catalog_open_flags(fx.src, 0, &f, &fdiag);
  if (rf == 0) {
    CHECK(f);
    check_catalog(f, 0);
    d9_catalog_close(f);
  } else {
    CHECK_MSG(rf < 0 && fdiag.set && !strchr(fdiag.msg, '\n'), fdiag.msg);
    CHECK_MSG(rc != 0, fdiag.msg);
  }
  CHECK(lowest_free_fd() == before);
  return 0;
}

#ifdef D9_FUZZ_STRUCTURED
/* ---- structure-aware mutation (json_mutate.h; libFuzzer builds only) ----
 * Tree mutations of the index plus a special one that rebuilds
 * "weight_map" with a count near a limit of entries: the fixture's tensor
 * names and made-up ones (some repeated), mapped to the fixture's files,
 * paths with '..', absolute paths and long paths. */
#include "json_mutate.h"

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned seed);

static const char *const index_names[] = {
    "x", "y", "z", "w", "weight_map", "metadata", "total_size", "a.safetensors",
    "b.safetensors", "sub/c.safetensors", "empty.safetensors", "dup.safetensors",
    "bad.safetensors", "short.safetensors", "link_in.safetensors", "link_out.safetensors",
    "link_dev.safetensors", "dir.safetensors", "fifo.safetensors", "../outside.safetensors",
    "/dev/zero", "sub/../a.safetensors", "./a.safetensors", "config.json"};
enum { NINDEX_NAMES = sizeof index_names / sizeof *index_names };

static void big_weight_map(cJSON **root, d9_fz_rng *r, void *ctx) {
  (void)ctx;
  if (!cJSON_IsObject(*root)) {
    cJSON_Delete(*root);
    *root = cJSON_CreateObject();
    if (!*root) return;
  }
  cJSON_DeleteItemFromObjectCaseSensitive(*root, "weight_map");
  cJSON *wm = cJSON_AddObjectToObject(*root, "weight_map");
  int n = d9_fz_limit_count(r);
  for (int i = 0; i < n && wm; i++) {
    char name[64];
    if (d9_fz_below(r, 4) == 0) snprintf(name, sizeof name, "%s", index_names[d9_fz_below(r, 4)]);
    else snprintf(name, sizeof name, "t.%d", (int)d9_fz_below(r, (uint64_t)n + 1));
    const char *file = index_names[7 + d9_fz_below(r, NINDEX_NAMES - 7)];
    cJSON_AddItemToObject(wm, name, d9_fz_below(r, 16) ? cJSON_CreateString(file)
                                                       : cJSON_CreateNumber(1));
  }
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned seed) {
  d9_fz_rng r = {seed};
  if (d9_fz_below(&r, 5) == 0) return LLVMFuzzerMutate(data, size, max_size);
  d9_fz_cfg cfg = {index_names, NINDEX_NAMES, big_weight_map, NULL, NULL};
  uint8_t *out = malloc(max_size);
  size_t len = out ? d9_fz_mutate(data, size, out, max_size, seed, &cfg) : 0;
  if (len) memcpy(data, out, len);
  free(out);
  return len ? len : LLVMFuzzerMutate(data, size, max_size);
}
#endif
