/* demo.c - `d9dfs demo`: generate a small Llama-style checkpoint, mount it
 * with mounts/llama-to-megatron.json, show it, verify every byte through
 * the mount against the core library, and unmount. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "tools/gen.h"

/* Run argv, wait; returns its exit status or -1. */
static int run(char *const argv[]) {
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    execvp(argv[0], argv);
    _exit(127);
  }
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *find_spec(char *buf, size_t cap) {
  const char *cands[] = {D9DFS_SOURCE_DIR "/mounts/llama-to-megatron.json",
                         "mounts/llama-to-megatron.json"};
  for (int i = 0; i < 2; i++)
    if (!access(cands[i], R_OK)) {
      snprintf(buf, cap, "%s", cands[i]);
      return buf;
    }
  return NULL;
}

/* Compare every file under mnt with the library's bytes. */
static int verify(d9_mount *m, const char *mnt, uint64_t *total) {
  enum { CHUNK = 1 << 20 };
  char *a = malloc(CHUNK), *b = malloc(CHUNK);
  int bad = 0;
  const d9_vnode *root = d9_mount_node(m, 0);
  for (int i = 0; a && b && i < root->nchildren && !bad; i++) {
    const d9_vnode *v = d9_mount_node(m, root->children[i]);
    if (v->kind != D9_NODE_FILE) continue;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", mnt, v->name);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
      fprintf(stderr, "demo: %s: %s\n", path, strerror(errno));
      bad = 1;
      break;
    }
    for (uint64_t off = 0; off < v->size && !bad;) {
      ssize_t ra = pread(fd, a, CHUNK, (off_t)off);
      ssize_t rb = d9_mount_read(m, root->children[i], off, CHUNK, b);
      if (ra <= 0 || ra != rb || memcmp(a, b, (size_t)ra)) {
        fprintf(stderr, "demo: %s differs from the library at offset %llu\n", path,
                (unsigned long long)off);
        bad = 1;
      }
      off += ra > 0 ? (uint64_t)ra : 1;
      *total += ra > 0 ? (uint64_t)ra : 0;
    }
    close(fd);
  }
  free(a);
  free(b);
  return bad || !a || !b ? -1 : 0;
}

static void show_header(const char *path) {
  int fd = open(path, O_RDONLY);
  unsigned char len8[8];
  if (fd < 0 || pread(fd, len8, 8, 0) != 8) {
    if (fd >= 0) close(fd);
    return;
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = n << 8 | len8[i];
  char buf[1024];
  size_t want = n < sizeof buf - 1 ? (size_t)n : sizeof buf - 1;
  ssize_t r = pread(fd, buf, want, 8);
  close(fd);
  if (r <= 0) return;
  buf[r] = 0;
  printf("\n$ head of %s: header length %llu, JSON begins:\n%s%s\n", path,
         (unsigned long long)n, buf, (uint64_t)r < n ? " ..." : "");
}

int d9_cli_demo(const char *self, int keep) {
  char tmpl[] = "/tmp/d9dfs-demo.XXXXXX", spec[PATH_MAX], src[PATH_MAX], mnt[PATH_MAX];
  char exe[PATH_MAX];
  ssize_t el = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (el <= 0) snprintf(exe, sizeof exe, "%s", self);
  else exe[el] = 0;
  if (!find_spec(spec, sizeof spec)) {
    fprintf(stderr, "demo: cannot find mounts/llama-to-megatron.json\n");
    return 1;
  }
  if (!mkdtemp(tmpl)) {
    fprintf(stderr, "demo: mkdtemp: %s\n", strerror(errno));
    return 1;
  }
  snprintf(src, sizeof src, "%s/llama", tmpl);
  snprintf(mnt, sizeof mnt, "%s/mnt", tmpl);
  d9_gen_params gp;
  d9_gen_defaults(&gp, "llama");
  gp.layers = 4, gp.hidden = 512, gp.heads = 8, gp.kv_heads = 2, gp.intermediate = 1408;
  gp.vocab = 4096, gp.shards = 2, gp.seed = 42, gp.dtype = D9_BF16;
  d9_diag diag = {0};
  printf("== d9dfs demo: a GQA Llama-style checkpoint (4 layers, hidden 512, 8 heads, 2 kv "
         "groups, BF16) in %s\n", src);
  if (d9_gen_write(src, &gp, &diag) || mkdir(mnt, 0755)) {
    fprintf(stderr, "demo: %s\n", diag.set ? diag.msg : strerror(errno));
    return 1;
  }
  char *ls_src[] = {"ls", "-l", src, NULL};
  printf("\n$ ls -l %s\n", src);
  fflush(stdout);
  run(ls_src);
  printf("\n$ d9dfs mount %s %s %s -o shard_size=8000000\n", src, spec, mnt);
  fflush(stdout);
  char *mount_argv[] = {exe, "mount", src, spec, mnt, "-o", "shard_size=8000000", NULL};
  if (run(mount_argv) != 0) {
    fprintf(stderr, "demo: the mount failed\n");
    return 1;
  }
  int rc = 1;
  char *ls_mnt[] = {"ls", "-l", mnt, NULL};
  printf("\n$ ls -l %s\n", mnt);
  fflush(stdout);
  run(ls_mnt);
  d9_mount_opts mo = {.src_dir = src, .spec_path = spec, .max_shard_size = 8000000};
  d9_mount *m = NULL;
  uint64_t total = 0;
  if (d9_mount_open(&mo, &m, &diag)) {
    fprintf(stderr, "demo: %s\n", diag.msg);
  } else {
    char first[PATH_MAX];
    const d9_vnode *root = d9_mount_node(m, 0);
    snprintf(first, sizeof first, "%s/%s", mnt, d9_mount_node(m, root->children[0])->name);
    show_header(first);
    if (verify(m, mnt, &total) == 0) {
      printf("\nverified: %llu bytes read through the mount equal the core library's bytes\n",
             (unsigned long long)total);
      rc = 0;
    }
  }
  d9_mount_close(m);
  char stats[PATH_MAX];
  snprintf(stats, sizeof stats, "%s/.d9dfs/stats.json", mnt);
  char *cat_stats[] = {"cat", stats, NULL};
  printf("\n$ cat %s\n", stats);
  fflush(stdout);
  run(cat_stats);
  char *umount_argv[] = {"fusermount3", "-u", mnt, NULL};
  printf("\n$ fusermount3 -u %s\n", mnt);
  fflush(stdout);
  if (run(umount_argv) != 0) {
    fprintf(stderr, "demo: unmount failed\n");
    rc = 1;
  }
  if (!keep) {
    char *rm[] = {"rm", "-rf", tmpl, NULL};
    run(rm);
  } else {
    printf("kept %s\n", tmpl);
  }
  printf(rc ? "demo: FAILED\n" : "demo: ok\n");
  return rc;
}
