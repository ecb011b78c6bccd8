#include "catalog.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json_strict.h"
#include "src_cache.h"

enum { INDEX_MAX = 256u << 20, CONFIG_MAX = 16u << 20 };
#define ADAPTER "adapter_model.safetensors" /* a PEFT adapter's weights */

/* Full pread: 0, or -EIO on an error or a short read. */
static int pread_full(int fd, void *buf, size_t n, uint64_t off) {
  char *p = buf;
  while (n) {
    ssize_t r = pread(fd, p, n, (off_t)off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return -EIO;
    p += r, n -= (size_t)r, off += (uint64_t)r;
  }
  return 0;
}

/* Is real (a canonical path) dir itself or under it? */
static int under(const char *real, const char *dir) {
  size_t l = strlen(dir);
  return dir[0] && strncmp(real, dir, l) == 0 && (real[l] == '/' || real[l] == 0);
}

/* A Hugging Face hub cache snapshot, .../models--ORG--NAME/snapshots/REV,
 * links its files to ../../blobs/HASH. When root (canonical) is such a
 * snapshot and .../models--ORG--NAME/blobs is a real directory (lstat: a
 * symlinked blobs would widen the allowed root to wherever it points), put
 * that path in blobs (PATH_MAX bytes); else blobs is "". root is canonical,
 * so no component above blobs is a symlink either. */
static void hub_blobs(const char *root, char *blobs) {
  blobs[0] = 0;
  const char *rev = strrchr(root, '/');
  if (!rev || rev == root) return;
  size_t snap_end = (size_t)(rev - root); /* root[0, snap_end) = .../snapshots */
  if (snap_end < 10 || strncmp(root + snap_end - 10, "/snapshots", 10)) return;
  size_t repo_end = snap_end - 10;         /* root[0, repo_end) = .../models--X */
  if (repo_end == 0 || repo_end + 7 >= PATH_MAX) return;
  memcpy(blobs, root, repo_end);
  memcpy(blobs + repo_end, "/blobs", 7);
  struct stat st;
  if (lstat(blobs, &st) || !S_ISDIR(st.st_mode)) blobs[0] = 0;
}

static int safe_relative(const char *name) {
  if (!*name || name[0] == '/') return 0;
  for (const char *p = name; *p;) {
    const char *e = strchr(p, '/');
    size_t l = e ? (size_t)(e - p) : strlen(p);
    if (l == 0 || (l == 2 && p[0] == '.' && p[1] == '.') || (l == 1 && p[0] == '.'))
      return 0;
    p += l + (e ? 1 : 0);
  }
  return 1;
}

/* Confinement: 1 if name, fully resolved now, lies inside the source
 * directory or its hub blobs and, when fd >= 0, is the file fd has open
 * (same device and inode: the name was not swapped between the open and
 * this check). A name that does not resolve answers 1 when fd < 0 (the
 * open reports it) and 0 when fd >= 0. */
static int resolves_inside(const d9_catalog *c, const char *name, int fd) {
  char path[PATH_MAX], real[PATH_MAX];
  if ((size_t)snprintf(path, sizeof path, "%s/%s", c->root, name) >= sizeof path) return 0;
  if (!realpath(path, real)) return fd < 0;
  if (!under(real, c->root) && !under(real, c->blobs)) return 0;
  if (fd < 0) return 1;
  struct stat a, b;
  return !stat(real, &a) && !fstat(fd, &b) && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int refuse_outside(const d9_catalog *c, const char *name, d9_diag *diag) {
  return d9_diag_fail(diag, EINVAL, "%s: '%s' resolves outside the source directory", c->dir,
                      name);
}

static int refuse_special(const char *name, d9_diag *diag) {
  return d9_diag_fail(diag, EINVAL, "%s: not a regular file", name);
}

int d9_catalog_open_file(const d9_catalog *c, const char *name, struct stat *st,
                         d9_diag *diag) {
  if (!safe_relative(name))
    return d9_diag_fail(diag, EINVAL, "%s: '%s': path must be relative, without '..'",
                        c->dir, name);
  if (c->confine && !resolves_inside(c, name, -1)) return refuse_outside(c, name, diag);
  /* refuse FIFOs, devices and sockets before opening them */
  if (fstatat(c->dirfd, name, st, 0)) return d9_diag_errno(diag, errno, name);
  if (!S_ISREG(st->st_mode)) return refuse_special(name, diag);
  int fd = openat(c->dirfd, name, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return d9_diag_errno(diag, errno, name);
  if (fstat(fd, st) || !S_ISREG(st->st_mode)) {
    close(fd);
    return refuse_special(name, diag);
  }
  if (c->confine && !resolves_inside(c, name, fd)) {
    close(fd);
    return refuse_outside(c, name, diag);
  }
  return fd;
}

/* A small source file (the index, config.json) into a malloc'd,
 * NUL-terminated buffer, read through d9_catalog_open_file. */
static int read_small(const d9_catalog *c, const char *name, size_t max, char **out,
                      size_t *out_len, d9_diag *diag) {
  struct stat st;
  int fd = d9_catalog_open_file(c, name, &st, diag), rc = 0;
  if (fd < 0) return fd;
  char *buf = NULL;
  if ((uint64_t)st.st_size > max) {
    rc = d9_diag_fail(diag, EFBIG, "%s: file is %lld bytes, more than the limit of %zu", name,
                      (long long)st.st_size, max);
    goto close_fd;
  }
  size_t size = (size_t)st.st_size;
  if (!(buf = malloc(size + 1))) {
    rc = d9_diag_fail(diag, ENOMEM, "%s: out of memory reading %zu bytes", name, size);
    goto close_fd;
  }
  if (pread_full(fd, buf, size, 0)) {
    rc = d9_diag_fail(diag, EIO, "%s: read error", name);
    goto close_fd;
  }
  if ((rc = d9_catalog_check_file(c, name, fd, &st, diag))) goto close_fd;
  buf[size] = 0;
  *out = buf, *out_len = size;
  buf = NULL;
close_fd:
  free(buf);
  close(fd);
  return rc;
}

static int add_shard(d9_catalog *c, const char *name, d9_diag *diag) {
  for (int i = 0; i < c->nshards; i++)
    if (!strcmp(c->shards[i].name, name)) return i;
  d9_shard *sh = &c->shards[c->nshards];
  sh->name = d9_arena_strdup(c->arena, name);
  if (!sh->name) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", name);
  int fd = d9_catalog_open_file(c, name, &sh->st, diag);
  if (fd < 0) return fd;
  sh->fd = fd;
  return c->nshards++;
}

/* Parse one shard's header and append its tensors. */
static int load_shard(d9_catalog *c, int s, d9_src_tensor **tens, int *cap,
                      d9_diag *diag) {
  d9_shard *sh = &c->shards[s];
  unsigned char prefix[8];
  uint64_t size = (uint64_t)sh->st.st_size, hlen;
  if (size >= 8 && pread_full(sh->fd, prefix, 8, 0))
    return d9_diag_fail(diag, EIO, "%s: read error in the header", sh->name);
  int rc = d9_st_header_len(prefix, size, sh->name, &hlen, diag);
  if (rc) return rc;
  char *json = malloc(hlen + 1);
  if (!json) return d9_diag_fail(diag, ENOMEM, "%s: out of memory for the header", sh->name);
  if (pread_full(sh->fd, json, hlen, 8)) {
    free(json);
    return d9_diag_fail(diag, EIO, "%s: read error in the header", sh->name);
  }
  json[hlen] = 0;
  d9_st_header h;
  rc = d9_st_parse_budget(json, hlen, size, sh->name, c->arena, &c->meta, &h, diag);
  free(json);
  if (rc) return rc;
  sh->data_start = h.data_start;
  if (c->ntensors > INT32_MAX - h.ntensors)
    return d9_diag_fail(diag, EOVERFLOW, "%s: too many tensors", sh->name);
  if (c->ntensors + h.ntensors > *cap) {
    int ncap = (c->ntensors + h.ntensors) * 2;
    d9_src_tensor *n = realloc(*tens, (size_t)ncap * sizeof **tens);
    if (!n) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", sh->name);
    *tens = n, *cap = ncap;
  }
  for (int i = 0; i < h.ntensors; i++) {
    const d9_st_tensor *t = &h.tensors[i];
    d9_src_tensor *o = &(*tens)[c->ntensors++];
    o->name = t->name;
    o->dtype = t->dtype;
    o->ndim = t->ndim;
    memcpy(o->shape, t->shape, sizeof o->shape);
    o->shard = s;
    o->offset = h.data_start + t->begin;
    o->nbytes = t->end - t->begin;
  }
  return 0;
}

static int cmp_by_name(const void *a, const void *b, void *ctx) {
  const d9_src_tensor *t = ctx;
  return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

static int find_idx(const d9_catalog *c, const char *name) {
  int lo = 0, hi = c->ntensors - 1;
  while (lo <= hi) {
    int mid = lo + (hi - lo) / 2;
    int r = strcmp(c->tensors[c->by_name[mid]].name, name);
    if (!r) return c->by_name[mid];
    if (r < 0) lo = mid + 1; else hi = mid - 1;
  }
  return -1;
}

const d9_src_tensor *d9_catalog_find(const d9_catalog *c, const char *name) {
  int i = find_idx(c, name);
  return i < 0 ? NULL : &c->tensors[i];
}

/* Shard list from the index; checks entries and records the expected shard
 * of each listed tensor in *listed (cJSON tree owned by the caller). */
static int read_index(d9_catalog *c, cJSON **index, d9_diag *diag) {
  char *text;
  size_t len;
  const char *iname = "model.safetensors.index.json";
  int rc = read_small(c, iname, INDEX_MAX, &text, &len, diag);
  if (rc) return rc;
  cJSON *j;
  rc = d9_json_read(text, len, D9_JSON_MAX_DEPTH, 0, iname, &j, diag);
  free(text);
  if (rc) return rc; /* -EINVAL, or -ENOMEM */
  cJSON *wm = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
  if (!cJSON_IsObject(j) || !cJSON_IsObject(wm)) {
    cJSON_Delete(j);
    return d9_diag_fail(diag, EINVAL, "%s: no \"weight_map\" object", iname);
  }
  int n = cJSON_GetArraySize(wm);
  c->shards = d9_arena_calloc(c->arena, (size_t)n + 1, sizeof *c->shards);
  if (!c->shards) {
    cJSON_Delete(j);
    return d9_diag_fail(diag, ENOMEM, "%s: out of memory", iname);
  }
  cJSON *e;
  cJSON_ArrayForEach(e, wm) {
    if (!cJSON_IsString(e)) {
      rc = d9_diag_fail(diag, EINVAL, "%s: tensor '%s': shard name is not a string", iname,
                        e->string);
      cJSON_Delete(j);
      return rc;
    }
    rc = add_shard(c, e->valuestring, diag);
    if (rc < 0) {
      d9_diag_prefix(diag, "%s: tensor '%s'", iname, e->string);
      cJSON_Delete(j);
      return rc;
    }
  }
  *index = j;
  return 0;
}

static int cross_check(d9_catalog *c, cJSON *index, d9_diag *diag) {
  const char *iname = "model.safetensors.index.json";
  for (int i = 0; i + 1 < c->ntensors; i++) {
    const d9_src_tensor *a = &c->tensors[c->by_name[i]], *b = &c->tensors[c->by_name[i + 1]];
    if (!strcmp(a->name, b->name))
      return d9_diag_fail(diag, EINVAL, "tensor '%s' is in two shards: %s and %s",
                          a->name, c->shards[a->shard].name, c->shards[b->shard].name);
  }
  if (!index) return 0;
  cJSON *wm = cJSON_GetObjectItemCaseSensitive(index, "weight_map"), *e;
  int listed = 0;
  cJSON_ArrayForEach(e, wm) {
    const d9_src_tensor *t = d9_catalog_find(c, e->string);
    if (!t)
      return d9_diag_fail(diag, EINVAL, "%s: tensor '%s' is listed in %s but absent from it",
                          iname, e->string, e->valuestring);
    if (strcmp(c->shards[t->shard].name, e->valuestring))
      return d9_diag_fail(diag, EINVAL, "%s: tensor '%s' is listed in %s but stored in %s",
                          iname, e->string, e->valuestring, c->shards[t->shard].name);
    listed++;
  }
  if (listed != c->ntensors) {
    /* some tensor is present but unlisted: name it */
    for (int i = 0; i < c->ntensors; i++)
      if (!cJSON_GetObjectItemCaseSensitive(wm, c->tensors[i].name))
        return d9_diag_fail(diag, EINVAL, "%s: tensor '%s' is present but not listed in %s",
                            c->shards[c->tensors[i].shard].name, c->tensors[i].name, iname);
  }
  return 0;
}

int d9_catalog_open(const char *dir, d9_catalog **out, d9_diag *diag) {
  return d9_catalog_open_ex(dir, D9_CATALOG_CONFINE, (uint64_t)D9_ST_META_MIB_DEFAULT << 20,
                            out, diag);
}

int d9_catalog_open_flags(const char *dir, unsigned flags, d9_catalog **out, d9_diag *diag) {
  return d9_catalog_open_ex(dir, flags, (uint64_t)D9_ST_META_MIB_DEFAULT << 20, out, diag);
}

int d9_catalog_open_limited(const char *dir, uint64_t meta_limit, d9_catalog **out,
                            d9_diag *diag) {
  return d9_catalog_open_ex(dir, D9_CATALOG_CONFINE, meta_limit, out, diag);
}

int d9_catalog_open_ex(const char *dir, unsigned flags, uint64_t meta_limit, d9_catalog **out,
                       d9_diag *diag) {
  int rc = -ENOMEM;
  cJSON *index = NULL;
  d9_src_tensor *tens = NULL;
  int cap = 0;
  d9_catalog *c = calloc(1, sizeof *c);
  if (!c) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", dir);
  c->dirfd = -1;
  c->confine = (flags & D9_CATALOG_CONFINE) != 0;
  /* per tensor: load_shard's growing array and the final copy, by_name */
  c->meta = (d9_st_budget){meta_limit, 0, 2 * sizeof(d9_src_tensor) + sizeof(int),
                           "-o meta_mib=N raises it"};
  if (!(c->arena = d9_arena_create()) || !(c->dir = d9_arena_strdup(c->arena, dir))) {
    rc = d9_diag_fail(diag, ENOMEM, "%s: out of memory", dir);
    goto fail;
  }
  c->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (c->dirfd < 0) {
    rc = d9_diag_errno(diag, errno, dir);
    goto fail;
  }
  {
    char root[PATH_MAX], blobs[PATH_MAX];
    if (!realpath(dir, root)) {
      rc = d9_diag_errno(diag, errno, dir);
      goto fail;
    }
    hub_blobs(root, blobs);
    if (!(c->root = d9_arena_strdup(c->arena, root)) ||
        !(c->blobs = d9_arena_strdup(c->arena, blobs))) {
      rc = d9_diag_fail(diag, ENOMEM, "%s: out of memory", dir);
      goto fail;
    }
  }
  struct stat st;
  if (!fstatat(c->dirfd, "model.safetensors.index.json", &st, 0)) {
    c->has_index = 1;
    if ((rc = read_index(c, &index, diag))) goto fail;
  } else if (!fstatat(c->dirfd, "model.safetensors", &st, 0) ||
             !fstatat(c->dirfd, ADAPTER, &st, 0)) {
    c->shards = d9_arena_calloc(c->arena, 1, sizeof *c->shards);
    if (!c->shards) goto fail;
    const char *single = !fstatat(c->dirfd, "model.safetensors", &st, 0) ? "model.safetensors"
                                                                        : ADAPTER;
    c->adapter = single[0] == 'a';
    if ((rc = add_shard(c, single, diag)) < 0) goto fail;
  } else {
    rc = d9_diag_fail(diag, ENOENT,
                      "%s: no model.safetensors or model.safetensors.index.json (nor "
                      ADAPTER ")", dir);
    goto fail;
  }
  for (int s = 0; s < c->nshards; s++)
    if ((rc = load_shard(c, s, &tens, &cap, diag))) goto fail;
  c->tensors = d9_arena_calloc(c->arena, (size_t)c->ntensors + 1, sizeof *tens);
  c->by_name = d9_arena_calloc(c->arena, (size_t)c->ntensors + 1, sizeof(int));
  if (!c->tensors || !c->by_name) {
    rc = d9_diag_fail(diag, ENOMEM, "%s: out of memory", dir);
    goto fail;
  }
  if (c->ntensors) memcpy(c->tensors, tens, (size_t)c->ntensors * sizeof *tens);
  for (int i = 0; i < c->ntensors; i++) c->by_name[i] = i;
  qsort_r(c->by_name, (size_t)c->ntensors, sizeof(int), cmp_by_name, c->tensors);
  if ((rc = cross_check(c, index, diag))) goto fail;
  if (!fstatat(c->dirfd, "config.json", &st, 0)) {
    c->config_st = st;
    if ((rc = read_small(c, "config.json", CONFIG_MAX, &c->config_text, &c->config_len,
                         diag)))
      goto fail;
    if ((rc = d9_json_read(c->config_text, c->config_len, D9_JSON_MAX_DEPTH, 0, "config.json",
                           &c->config, diag)))
      goto fail;
    if (!cJSON_IsObject(c->config)) {
      rc = d9_diag_fail(diag, EINVAL, "config.json: not a json object");
      goto fail;
    }
  }
  free(tens);
  cJSON_Delete(index);
  *out = c;
  return 0;
fail:
  free(tens);
  cJSON_Delete(index);
  d9_catalog_close(c);
  return rc < 0 ? rc : -EINVAL;
}

void d9_catalog_close(d9_catalog *c) {
  if (!c) return;
  for (int i = 0; i < c->nshards; i++)
    if (c->shards[i].fd > 0) close(c->shards[i].fd);
  if (c->dirfd >= 0) close(c->dirfd);
  cJSON_Delete(c->config);
  free(c->config_text);
  d9_arena_destroy(c->arena);
  free(c);
}

static int same_time(struct timespec a, struct timespec b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

int d9_catalog_check_file(const d9_catalog *c, const char *name, int fd,
                          const struct stat *was, d9_diag *diag) {
  struct stat now;
  if (fstat(fd, &now))
    return d9_diag_fail(diag, EIO, "%s/%s: cannot check it for changes: %s", c->dir, name,
                        strerror(errno));
  char what[96];
  what[0] = 0;
  if (now.st_size != was->st_size)
    snprintf(what, sizeof what, "size %lld, was %lld bytes", (long long)now.st_size,
             (long long)was->st_size);
  else if (!same_time(now.st_mtim, was->st_mtim))
    snprintf(what, sizeof what, "mtime");
  else if (!same_time(now.st_ctim, was->st_ctim)) /* rewritten with its mtime set back */
    snprintf(what, sizeof what, "ctime: written or its metadata changed");
  else {
    struct stat path; /* through the links, to the target */
    if (fstatat(c->dirfd, name, &path, 0))
      snprintf(what, sizeof what, "the name no longer opens: %s", strerror(errno));
    else if (path.st_ino != was->st_ino || path.st_dev != was->st_dev)
      snprintf(what, sizeof what, "the name now leads to another file");
  }
  if (!what[0]) return 0;
  return d9_diag_fail(diag, ESTALE,
                      "%s/%s: changed under the mount (%s): remount after a source changed",
                      c->dir, name, what);
}

/* d9_catalog_check_file, logging a change (the read's caller logs the
 * errno; this says which file and what changed). */
static int check_logged(const d9_catalog *c, const char *name, int fd, const struct stat *st) {
  d9_diag diag = {0};
  int r = d9_catalog_check_file(c, name, fd, st, &diag);
  if (r) fprintf(stderr, "d9dfs: %s\n", diag.msg);
  return r;
}

void d9_catalog_set_config(d9_catalog *c, cJSON *config, char *text, size_t len) {
  cJSON_Delete(c->config);
  free(c->config_text);
  c->config = config;
  c->config_text = text;
  c->config_len = text ? len : 0;
}

int d9_catalog_check(const d9_catalog *c, int s) {
  const d9_shard *sh = &c->shards[s];
  return check_logged(c, sh->name, sh->fd, &sh->st);
}

ssize_t d9_catalog_read_file(const d9_catalog *c, const char *name, int fd,
                             const struct stat *st, void *buf, size_t n, uint64_t off) {
  int r = pread_full(fd, buf, n, off);
  int e = check_logged(c, name, fd, st); /* after the read: a change mid-read is caught */
  return e ? e : r ? r : (ssize_t)n;
}

int d9_catalog_pread_unchecked(const d9_catalog *c, int s, void *buf, size_t n, uint64_t off) {
  int rc = pread_full(c->shards[s].fd, buf, n, off);
  if (!rc) d9_src_cache_note(c->src_cache, s, off, n);
  return rc;
}

int d9_catalog_pread(const d9_catalog *c, int s, void *buf, size_t n, uint64_t off) {
  int rc = pread_full(c->shards[s].fd, buf, n, off);
  if (!rc) d9_src_cache_note(c->src_cache, s, off, n);
  int st = d9_catalog_check(c, s);
  return st ? st : rc;
}

int d9_catalog_drop_cache(const d9_catalog *c, int s, uint64_t off, uint64_t n) {
  if (s < 0 || s >= c->nshards) return -EINVAL;
  return -posix_fadvise(c->shards[s].fd, (off_t)off, (off_t)n, POSIX_FADV_DONTNEED);
}
