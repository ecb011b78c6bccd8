#include "fs/host.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* Undo /proc/self/mountinfo's octal escapes (\040 for space) in place. */
static void unescape_octal(char *p) {
  char *w = p;
  for (; *p; p++) {
    if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' &&
        p[2] <= '7' && p[3] >= '0' && p[3] <= '7') {
      *w++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
      p += 3;
    } else {
      *w++ = *p;
    }
  }
  *w = 0;
}

/* Look up the topmost mount at canonical path in /proc/self/mountinfo.
 * Returns 1 with its device numbers, 0 if path is not a mount point, or
 * -errno if mountinfo cannot be read. */
static int mountinfo_find(const char *path, unsigned *maj, unsigned *min) {
  FILE *f = fopen("/proc/self/mountinfo", "re");
  if (!f) return -errno;
  char *line = NULL, mnt[PATH_MAX * 4];
  size_t cap = 0;
  int found = 0;
  unsigned a, b;
  while (getline(&line, &cap, f) > 0) {
    if (sscanf(line, "%*d %*d %u:%u %*s %16383s", &a, &b, mnt) != 3) continue;
    unescape_octal(mnt);
    if (strcmp(mnt, path)) continue;
    found = 1; /* keep going: a later line is mounted on top */
    *maj = a;
    *min = b;
  }
  free(line);
  fclose(f);
  return found;
}

/* Check that mountpoint is an existing directory nobody is mounted on, and
 * put its canonical path in real. Returns 0 or -errno with diag set. */
int d9_host_check_mountpoint(const char *mountpoint, char *real, d9_diag *diag) {
  struct stat st, pst;
  struct statvfs sv;
  /* stat() of a dead FUSE mount's root can be answered from the attribute
   * cache; statfs always asks the (gone) daemon and fails with ENOTCONN */
  int dead = statvfs(mountpoint, &sv) < 0 && errno == ENOTCONN;
  if (dead || stat(mountpoint, &st) < 0) {
    int e = dead ? ENOTCONN : errno;
    if (e == ENOENT) return d9_diag_fail(diag, e, "%s: no such directory", mountpoint);
    if (e == ENOTCONN)
      return d9_diag_fail(diag, e, "%s: stale mount (try fusermount3 -u %s)",
                          mountpoint, mountpoint);
    return d9_diag_fail(diag, e, "%s: %s", mountpoint, strerror(e));
  }
  if (!S_ISDIR(st.st_mode))
    return d9_diag_fail(diag, ENOTDIR, "%s: not a directory", mountpoint);
  if (!realpath(mountpoint, real))
    return d9_diag_fail(diag, errno, "%s: %s", mountpoint, strerror(errno));
  char parent[PATH_MAX + 4];
  unsigned maj, min;
  snprintf(parent, sizeof parent, "%s/..", real);
  int busy = stat(parent, &pst) == 0 &&
             (pst.st_dev != st.st_dev || pst.st_ino == st.st_ino);
  if (busy || mountinfo_find(real, &maj, &min) == 1) /* also bind mounts */
    return d9_diag_fail(diag, EBUSY, "%s: already a mount point (busy)", mountpoint);
  return 0;
}

/* Set our mount's backing-device readahead to kb KiB. Needs root (the sysfs
 * file is 0644); without it the kernel default (128 KiB) stays, which caps
 * buffered read requests at that size. Warns only when asked for explicitly. */
void d9_host_set_readahead(const char *real, unsigned kb, int explicit) {
  unsigned maj, min;
  char path[64], val[32];
  int r = mountinfo_find(real, &maj, &min), e = ENOENT;
  if (r == 1) {
    snprintf(path, sizeof path, "/sys/class/bdi/%u:%u/read_ahead_kb", maj, min);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    int len = snprintf(val, sizeof val, "%u\n", kb);
    if (fd >= 0 && write(fd, val, (size_t)len) == len) e = 0;
    else e = errno;
    if (fd >= 0) close(fd);
  } else if (r < 0) {
    e = -r;
  }
  if (e && explicit)
    fprintf(stderr, "d9dfs: %s: cannot set readahead to %u KiB: %s\n", real,
            kb, strerror(e));
}
