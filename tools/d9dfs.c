/* d9dfs - the command line: mount, plan, convert, cat, demo. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static const char usage[] =
    "usage: d9dfs mount SRC SPEC MNT [-f] [-d] [-o opt[,opt...]] [--reverse] [--lenient]\n"
    "       d9dfs plan SRC SPEC [--reverse] [--lenient]\n"
    "       d9dfs check SRC SPEC\n"
    "       d9dfs convert SRC SPEC OUTDIR\n"
    "       d9dfs cat SRC SPEC FILE [OFFSET LENGTH]\n"
    "       d9dfs demo [--keep]\n"
    "       d9dfs --help | --version\n"
    "\n"
    "Presents the checkpoint in SRC (safetensors shards, index, config.json)\n"
    "converted by the mapping spec SPEC, lazily: reads compute only the bytes\n"
    "they cover.\n"
    "\n"
    "--reverse presents a checkpoint in SPEC's target layout in its source layout;\n"
    "--lenient mounts despite validation findings (listed in .d9dfs/report.json);\n"
    "check converts forward then reverse and compares every tensor with SRC.\n"
    "\n"
    "mount options:\n"
    "  -f                 stay in the foreground\n"
    "  -d                 log every read (implies -f)\n"
    "  -o readahead=KB    kernel readahead for the mount (default: max_read)\n"
    "  -o single_thread   serve requests on one thread\n"
    "  -o max_read=KB     largest read request, 4..1024 (default 1024; 1008 with splice)\n"
    "  -o splice          zero-copy replies for unchanged bytes (a source changed\n"
    "                     mid-read is then logged, not refused; default off)\n"
    "  -o direct_io       read() bypasses the page cache: faster cold streaming\n"
    "                     reads (cp, cat), re-reads not cached; mmap still cached\n"
    "  -o allow_other     let other users read (implies default_permissions)\n"
    "  -o auto_unmount    unmount if the daemon dies\n"
    "  -o shard_size=B    cut output shards at B bytes (overrides the spec)\n"
    "  -o threads=N       threads (1..8) that evaluate one computing read (casts,\n"
    "                     dequant, ...) together (default: CPUs online, at most 8)\n"
    "  -o mem=MiB         evaluation memory budget (default 64): 2 MiB per read in\n"
    "                     flight; reads beyond it wait\n"
    "  -o meta_mib=N      limit on the headers' metadata (tensor tables, names), MiB,\n"
    "                     1..1048576 (default 512)\n"
    "  -o tp=T,ep=E,pp=P  per-rank views under ranks/ (tp0, tp0-ep1, tp0-ep1-pp1, ...)\n"
    "  -o etp=T           expert tensor parallelism: each expert split tp ways too (1 or tp)\n"
    "  -o vocab_divisible_by=N  style vocab pads rows to a multiple of N*T (default 1)\n"
    "  -o pp_layers=A:B:.. layers per pipeline stage (default: the remainder rule)\n"
    "  -o inject_eio=N    testing: every Nth source read fails with EIO\n"
    "  -o inject_enomem=N testing: every Nth scratch allocation fails with ENOMEM\n"
    "\n"
    "plan, convert and cat take the same -o shard_size option.\n";

static int parse_u(const char *s, long long lo, long long hi, long long *out) {
  char *e;
  errno = 0;
  long long v = strtoll(s, &e, 10);
  if (errno || e == s || *e || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

/* pp_layers=3:2:3 - layers per pipeline stage */
static int parse_pp_layers(char *v, d9_mount_opts *mo) {
  int *layers = calloc(4096, sizeof *layers); /* lives as long as the process */
  int n = 0;
  if (!layers) return -1;
  for (char *save = NULL, *t = strtok_r(v, ":", &save); t; t = strtok_r(NULL, ":", &save)) {
    long long x;
    if (n == 4096 || parse_u(t, 0, 1 << 20, &x)) return -1;
    layers[n++] = (int)x;
  }
  mo->pp_layers = layers;
  mo->npp_layers = n;
  return n ? 0 : -1;
}

static int parse_opts(char *s, d9_mount_opts *mo, d9_fs_opts *fo) {
  for (char *save = NULL, *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    long long v;
    char *eq = strchr(tok, '=');
    if (eq) *eq++ = 0;
    if (!strcmp(tok, "readahead") && eq && !parse_u(eq, 0, 1 << 20, &v)) fo->readahead_kb = (int)v;
    else if (!strcmp(tok, "max_read") && eq && !parse_u(eq, 4, 1024, &v)) fo->max_read_kb = (unsigned)v;
    else if (!strcmp(tok, "single_thread") && !eq) fo->single_thread = 1;
    else if (!strcmp(tok, "splice") && !eq) fo->splice = 1;
    else if (!strcmp(tok, "no_splice") && !eq) fo->splice = 0;
    else if (!strcmp(tok, "direct_io") && !eq) fo->direct_io = 1;
    else if (!strcmp(tok, "allow_other") && !eq) fo->allow_other = 1;
    else if (!strcmp(tok, "auto_unmount") && !eq) fo->auto_unmount = 1;
    else if (!strcmp(tok, "tp") && eq && !parse_u(eq, 1, 4096, &v)) mo->tp = (int)v;
    else if (!strcmp(tok, "ep") && eq && !parse_u(eq, 1, 4096, &v)) mo->ep = (int)v;
    else if (!strcmp(tok, "pp") && eq && !parse_u(eq, 1, 4096, &v)) mo->pp = (int)v;
    else if (!strcmp(tok, "etp") && eq && !parse_u(eq, 1, 4096, &v)) mo->etp = (int)v;
    else if (!strcmp(tok, "device") && eq) mo->device = eq;
    else if (!strcmp(tok, "threads") && eq && !parse_u(eq, 1, 8, &v)) mo->threads = (int)v;
    else if (!strcmp(tok, "mem") && eq && !parse_u(eq, 1, 1 << 20, &v))
      mo->mem_budget_mb = (uint64_t)v;
    else if (!strcmp(tok, "meta_mib") && eq && !parse_u(eq, 1, 1 << 20, &v)) mo->meta_mib = (uint64_t)v;
    else if (!strcmp(tok, "vocab_divisible_by") && eq && !parse_u(eq, 1, 1 << 20, &v))
      mo->vocab_divisible_by = (int)v;
    else if (!strcmp(tok, "pp_layers") && eq && !parse_pp_layers(eq, mo)) continue;
    else if (!strcmp(tok, "inject_eio") && eq && !parse_u(eq, 1, LLONG_MAX, &v))
      mo->inject_pread_every = (uint64_t)v;
    else if (!strcmp(tok, "inject_enomem") && eq && !parse_u(eq, 1, LLONG_MAX, &v))
      mo->inject_alloc_every = (uint64_t)v;
    else if (!strcmp(tok, "shard_size") && eq && !parse_u(eq, 1, LLONG_MAX, &v))
      mo->max_shard_size = (uint64_t)v;
    else {
      fprintf(stderr, "d9dfs: -o %s%s%s: unknown option or bad value\n", tok, eq ? "=" : "",
              eq ? eq : "");
      return -1;
    }
  }
  return 0;
}

/* Split argv into positionals and flags; returns the positional count. */
static int parse_args(int argc, char **argv, char **pos, int maxpos, d9_mount_opts *mo,
                      d9_fs_opts *fo, int *keep) {
  int n = 0;
  for (int i = 0; i < argc; i++) {
    char *a = argv[i];
    if (!strcmp(a, "-f")) fo->foreground = 1;
    else if (!strcmp(a, "-d")) fo->debug = fo->foreground = 1, mo->verbose = 1;
    else if (!strcmp(a, "--reverse")) mo->reverse = 1;
    else if (!strcmp(a, "--lenient")) mo->lenient = 1;
    else if (!strcmp(a, "--strict")) mo->lenient = 0;
    else if (!strcmp(a, "--keep")) *keep = 1;
    else if (!strcmp(a, "-o") || !strncmp(a, "-o", 2)) {
      char *v = a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);
      if (!v) {
        fprintf(stderr, "d9dfs: -o needs options\n");
        return -1;
      }
      if (parse_opts(v, mo, fo)) return -1;
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "d9dfs: unknown flag '%s'\n%s", a, usage);
      return -1;
    } else {
      if (n == maxpos) {
        fprintf(stderr, "d9dfs: too many arguments\n%s", usage);
        return -1;
      }
      pos[n++] = a;
    }
  }
  return n;
}

static d9_mount *open_or_die(const char *src, const char *spec, d9_mount_opts *mo) {
  d9_diag diag = {0};
  d9_mount *m = NULL;
  mo->src_dir = src;
  mo->spec_path = spec;
  if (d9_mount_open(mo, &m, &diag)) {
    fprintf(stderr, "d9dfs: %s\n", diag.msg);
    return NULL;
  }
  return m;
}

int d9_cli_copy_node(d9_mount *m, int idx, uint64_t off, uint64_t len, int fd) {
  enum { CHUNK = 4 << 20 };
  char *buf = malloc(CHUNK);
  if (!buf) return -ENOMEM;
  int rc = 0;
  while (len > 0) {
    size_t want = len < CHUNK ? (size_t)len : CHUNK;
    ssize_t r = d9_mount_read(m, idx, off, want, buf);
    if (r < 0) { rc = (int)r; break; }
    if (r == 0) break;
    for (ssize_t done = 0; done < r;) {
      ssize_t w = write(fd, buf + done, (size_t)(r - done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) { rc = -errno; goto out; }
      done += w;
    }
    off += (uint64_t)r;
    len -= (uint64_t)r;
  }
out:
  free(buf);
  return rc;
}

int d9_cli_convert(d9_mount *m, const char *outdir) {
  if (mkdir(outdir, 0755) && errno != EEXIST) {
    fprintf(stderr, "d9dfs: %s: %s\n", outdir, strerror(errno));
    return 1;
  }
  const d9_vnode *root = d9_mount_node(m, 0);
  for (int i = 0; i < root->nchildren; i++) {
    int idx = root->children[i];
    const d9_vnode *v = d9_mount_node(m, idx);
    if (v->kind != D9_NODE_FILE) continue;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", outdir, v->name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
      fprintf(stderr, "d9dfs: %s: %s\n", path, strerror(errno));
      return 1;
    }
    int rc = d9_cli_copy_node(m, idx, 0, v->size, fd);
    if (close(fd) && !rc) rc = -errno;
    if (rc) {
      fprintf(stderr, "d9dfs: %s: %s\n", path, strerror(-rc));
      return 1;
    }
  }
  return 0;
}

static int cmd_cat(d9_mount *m, char **pos, int npos) {
  int idx = d9_mount_resolve(m, pos[2]);
  const d9_vnode *v = idx >= 0 ? d9_mount_node(m, idx) : NULL;
  if (!v || v->kind == D9_NODE_DIR) {
    fprintf(stderr, "d9dfs: %s: %s\n", pos[2], v ? "is a directory" : "no such file in the tree");
    return 1;
  }
  long long off = 0, len = (long long)v->size;
  if (v->kind == D9_NODE_DYNAMIC) {
    char *buf;
    size_t n;
    if (d9_mount_render(m, idx, &buf, &n)) return 1;
    fwrite(buf, 1, n, stdout);
    free(buf);
    return 0;
  }
  if (npos == 5 && (parse_u(pos[3], 0, LLONG_MAX, &off) || parse_u(pos[4], 0, LLONG_MAX, &len))) {
    fprintf(stderr, "d9dfs: cat: OFFSET and LENGTH must be non-negative integers\n");
    return 1;
  }
  int rc = d9_cli_copy_node(m, idx, (uint64_t)off, (uint64_t)len, STDOUT_FILENO);
  if (rc) fprintf(stderr, "d9dfs: %s: %s\n", pos[2], strerror(-rc));
  return rc ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("d9dfs %s\n", D9DFS_VERSION);
    return 0;
  }
  const char *cmd = argv[1];
  char *pos[8];
  d9_mount_opts mo = {0};
  d9_fs_opts fo = {0};
  fo.readahead_kb = -1;
  int keep = 0;
  int npos = parse_args(argc - 2, argv + 2, pos, 8, &mo, &fo, &keep);
  if (npos < 0) return 2;
  if (!strcmp(cmd, "demo")) return d9_cli_demo(argv[0], keep);
  if (!strcmp(cmd, "check")) {
    if (npos != 2) {
      fprintf(stderr, "d9dfs: check: wrong arguments\n%s", usage);
      return 2;
    }
    return d9_cli_check(&mo, pos[0], pos[1]);
  }
  struct { const char *name; int min, max; } cmds[] = {
      {"mount", 3, 3}, {"plan", 2, 2}, {"convert", 3, 3}, {"cat", 3, 5}};
  int k = -1;
  for (int i = 0; i < 4; i++)
    if (!strcmp(cmd, cmds[i].name)) k = i;
  if (k < 0 || npos < cmds[k].min || npos > cmds[k].max || (k == 3 && npos == 4)) {
    fprintf(stderr, "d9dfs: %s: wrong arguments\n%s", cmd, usage);
    return 2;
  }
  if (k == 0 && access(pos[2], F_OK)) {
    fprintf(stderr, "d9dfs: %s: mount point: %s\n", pos[2], strerror(errno));
    return 1;
  }
  /* A buffered (page-cache) reader spends as much CPU in the kernel as
   * the daemon does: leave it a CPU rather than split reads across all
   * of them (docs/performance.md, "Split reads"). */
  if (k == 0 && !mo.threads && !fo.direct_io) {
    long n = sysconf(_SC_NPROCESSORS_ONLN) - 1;
    mo.threads = n < 1 ? 1 : n > 8 ? 8 : (int)n;
  }
  d9_mount *m = open_or_die(pos[0], pos[1], &mo);
  if (!m) return 1;
  int rc = 0;
  if (k == 0) {
    d9_diag diag = {0};
    if (d9_fs_serve(m, pos[2], &fo, &diag)) {
      fprintf(stderr, "d9dfs: %s\n", diag.msg);
      rc = 1;
    }
  } else if (k == 1) {
    rc = d9_mount_print_plan(m, STDOUT_FILENO) ? 1 : 0;
  } else if (k == 2) {
    rc = d9_cli_convert(m, pos[2]);
  } else {
    rc = cmd_cat(m, pos, npos);
  }
  d9_mount_close(m);
  return rc;
}
