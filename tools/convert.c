/* convert.c - `d9dfs convert SRC SPEC OUTDIR`: the bytes the mount would
 * serve, written out safely. Each file is written under a temporary name
 * in OUTDIR (.NAME.d9dfs-tmp), fsync'ed, and only once every file is
 * complete are they renamed into place (then the directory is fsync'ed),
 * so an interrupted or failed run leaves no file under a final name.
 * SIGINT and SIGTERM remove the temporaries and exit 130 / 143. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"

enum {
  CHUNK = 4 << 20,          /* bytes per read of the tree */
  JOBS_MAX = 64,            /* threads converting files at once */
  PROGRESS_NS = 250000000,  /* at most four progress updates a second */
  HEADER_MAX = 100 << 20,   /* bytes; a safetensors header we count tensors in */
};

/* Set by the SIGINT/SIGTERM handler, read by the copy loops: the one
 * file-scope mutable, as a signal handler can reach nothing else. */
static volatile sig_atomic_t conv_signal;

static void on_signal(int sig) { conv_signal = sig; }

typedef struct conv_file {
  int idx;                /* node of the tree */
  char tmp[PATH_MAX];     /* OUTDIR/.NAME.d9dfs-tmp */
  char final[PATH_MAX];   /* OUTDIR/NAME */
  atomic_int created;     /* tmp exists: remove it unless renamed */
  int tensors;            /* tensors in the file (safetensors), counted from its header */
} conv_file;

typedef struct conv {
  d9_mount *m;
  conv_file *files;
  int nfiles;
  atomic_int next;            /* next file to take */
  atomic_int failed;          /* a file failed: the others stop */
  _Atomic uint64_t done;      /* bytes written */
  uint64_t total;             /* bytes in all files */
  int progress;               /* print a progress line */
  struct timespec t0;
  pthread_mutex_t lock;       /* guards last and the progress line */
  struct timespec last;
} conv;

static double secs(const struct timespec *a, const struct timespec *b) {
  return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/* "1.6 GiB" */
static const char *human(uint64_t n, char *buf, size_t cap) {
  const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)n;
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, u++;
  snprintf(buf, cap, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
  return buf;
}

static void show_progress(conv *c, int force) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  pthread_mutex_lock(&c->lock);
  if (force || secs(&c->last, &now) * 1e9 >= PROGRESS_NS) {
    c->last = now;
    uint64_t done = atomic_load(&c->done);
    double t = secs(&c->t0, &now), rate = t > 0 ? (double)done / t : 0;
    double eta = rate > 0 ? (double)(c->total - done) / rate : 0;
    char a[32], b[32];
    fprintf(stderr, "\r%s / %s  %3d%%  %.1f MB/s  ETA %dm%02ds\033[K", human(done, a, sizeof a),
            human(c->total, b, sizeof b), c->total ? (int)(done * 100 / c->total) : 100,
            rate / 1e6, (int)eta / 60, (int)eta % 60);
  }
  pthread_mutex_unlock(&c->lock);
}

/* Tensors in the safetensors file open as fd: the header's entries besides
 * __metadata__; 0 for any other file. */
static int count_tensors(int fd, const char *name) {
  size_t len = strlen(name);
  uint64_t n = 0;
  if (len < 12 || strcmp(name + len - 12, ".safetensors")) return 0;
  if (pread(fd, &n, 8, 0) != 8 || n > HEADER_MAX) return 0;
  char *h = malloc((size_t)n + 1);
  int count = 0;
  if (h && pread(fd, h, (size_t)n, 8) == (ssize_t)n) {
    h[n] = 0;
    cJSON *j = cJSON_Parse(h);
    for (cJSON *e = j ? j->child : NULL; e; e = e->next)
      count += strcmp(e->string, "__metadata__") != 0;
    cJSON_Delete(j);
  }
  free(h);
  return count;
}

/* Write file f to its temporary name. 0, -EINTR when a signal stopped
 * it, or -errno (message printed). */
static int convert_one(conv *c, conv_file *f) {
  const d9_vnode *v = d9_mount_node(c->m, f->idx);
  int fd = open(f->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644); /* read back: the header */
  if (fd < 0) {
    fprintf(stderr, "\nd9dfs: convert: %s: %s\n", f->tmp, strerror(errno));
    return -errno;
  }
  atomic_store(&f->created, 1);
  char *buf = malloc(CHUNK);
  int rc = buf ? 0 : -ENOMEM;
  for (uint64_t off = 0; !rc && off < v->size;) {
    if (conv_signal || atomic_load(&c->failed)) {
      rc = -EINTR;
      break;
    }
    size_t want = v->size - off < CHUNK ? (size_t)(v->size - off) : CHUNK;
    ssize_t r = d9_mount_read(c->m, f->idx, off, want, buf);
    if (r <= 0) {
      rc = r < 0 ? (int)r : -EIO;
      break;
    }
    for (ssize_t done = 0; !rc && done < r;) {
      ssize_t w = pwrite(fd, buf + done, (size_t)(r - done), (off_t)(off + (uint64_t)done));
      if (w > 0) done += w;
      else if (w == 0 || errno != EINTR) rc = w < 0 ? -errno : -EIO;
    }
    off += (uint64_t)r;
    atomic_fetch_add(&c->done, (uint64_t)r);
    if (c->progress) show_progress(c, 0);
  }
  free(buf);
  if (!rc && fsync(fd)) rc = -errno;
  if (!rc) f->tensors = count_tensors(fd, v->name);
  if (close(fd) && !rc) rc = -errno;
  if (rc && rc != -EINTR)
    fprintf(stderr, "\nd9dfs: convert: %s: %s\n", v->name, strerror(-rc));
  return rc;
}

static void *worker(void *arg) {
  conv *c = arg;
  for (int i; (i = atomic_fetch_add(&c->next, 1)) < c->nfiles;) {
    int rc = convert_one(c, &c->files[i]);
    if (rc == -EINTR) break;
    if (rc) {
      atomic_store(&c->failed, 1);
      break;
    }
  }
  return NULL;
}

/* Entries in dir besides . and ..: 0, 1 (some), or -errno. */
static int dir_has_entries(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -errno;
  int some = 0;
  for (struct dirent *e; !some && (e = readdir(d));)
    some = strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
  closedir(d);
  return some;
}

int d9_cli_convert(d9_mount *m, const char *outdir, const d9_convert_opts *o) {
  static const d9_convert_opts defaults = {.force = 1, .jobs = 1, .quiet = 1};
  if (!o) o = &defaults;
  if (mkdir(outdir, 0755) && errno != EEXIST) {
    fprintf(stderr, "d9dfs: convert: %s: %s\n", outdir, strerror(errno));
    return 1;
  }
  int some = dir_has_entries(outdir);
  if (some < 0) {
    fprintf(stderr, "d9dfs: convert: %s: %s\n", outdir, strerror(-some));
    return 1;
  }
  if (some && !o->force) {
    fprintf(stderr, "d9dfs: convert: %s: directory not empty; refusing to write into it "
            "(--force writes anyway, replacing files of the same names)\n", outdir);
    return 1;
  }
  const d9_vnode *root = d9_mount_node(m, 0);
  conv c = {.m = m, .progress = o->progress};
  c.files = calloc((size_t)root->nchildren + 1, sizeof *c.files);
  if (!c.files) {
    fprintf(stderr, "d9dfs: convert: out of memory\n");
    return 1;
  }
  for (int i = 0; i < root->nchildren; i++) {
    const d9_vnode *v = d9_mount_node(m, root->children[i]);
    if (v->kind != D9_NODE_FILE) continue; /* ranks/ and .d9dfs/ stay virtual */
    conv_file *f = &c.files[c.nfiles++];
    f->idx = root->children[i];
    snprintf(f->final, sizeof f->final, "%s/%s", outdir, v->name);
    snprintf(f->tmp, sizeof f->tmp, "%s/.%s.d9dfs-tmp", outdir, v->name);
    c.total += v->size;
  }
  d9_stats before, after;
  d9_mount_get_stats(m, &before);
  pthread_mutex_init(&c.lock, NULL);
  clock_gettime(CLOCK_MONOTONIC, &c.t0);
  c.last = (struct timespec){0}; /* the first chunk shows the line at once */
  struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART}, old_int, old_term;
  sigemptyset(&sa.sa_mask);
  conv_signal = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  int jobs = o->jobs < 1 ? 1 : o->jobs > JOBS_MAX ? JOBS_MAX : o->jobs;
  if (jobs > c.nfiles) jobs = c.nfiles ? c.nfiles : 1;
  pthread_t th[JOBS_MAX];
  int started = 0;
  for (; started < jobs - 1; started++) /* this thread is the last job */
    if (pthread_create(&th[started], NULL, worker, &c)) break;
  worker(&c);
  for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
  if (c.progress) { /* the final state, then the line makes way for the summary */
    show_progress(&c, 1);
    fprintf(stderr, "\r\033[K");
  }

  int rc = conv_signal ? 128 + conv_signal : atomic_load(&c.failed) ? 1 : 0;
  int tensors = 0;
  for (int i = 0; !rc && i < c.nfiles; i++) {
    if (rename(c.files[i].tmp, c.files[i].final)) {
      fprintf(stderr, "d9dfs: convert: %s: %s\n", c.files[i].final, strerror(errno));
      rc = 1;
      break;
    }
    atomic_store(&c.files[i].created, 0);
    tensors += c.files[i].tensors;
  }
  if (!rc) { /* the renames themselves */
    int dfd = open(outdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd)) {
      fprintf(stderr, "d9dfs: convert: %s: fsync: %s\n", outdir, strerror(errno));
      rc = 1;
    }
    if (dfd >= 0) close(dfd);
  }
  for (int i = 0; i < c.nfiles; i++)
    if (atomic_load(&c.files[i].created)) unlink(c.files[i].tmp);
  if (conv_signal)
    fprintf(stderr, "d9dfs: convert: interrupted by %s; temporaries removed, nothing written "
            "under a final name\n", conv_signal == SIGINT ? "SIGINT" : "SIGTERM");
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);

  struct timespec t1;
  clock_gettime(CLOCK_MONOTONIC, &t1);
  d9_mount_get_stats(m, &after);
  double t = secs(&c.t0, &t1);
  if (!rc && !o->quiet)
    fprintf(stderr, "d9dfs: convert: %d file%s, %d tensors, %llu bytes in %.2f s (%.1f MB/s), "
            "%llu source bytes read\n", c.nfiles, c.nfiles == 1 ? "" : "s", tensors,
            (unsigned long long)c.total, t, t > 0 ? (double)c.total / t / 1e6 : 0.0,
            (unsigned long long)(after.bytes_read_source - before.bytes_read_source));
  pthread_mutex_destroy(&c.lock);
  free(c.files);
  return rc;
}
