/* small_file.c - d9_read_small_file (declared in json_strict.h): a whole
 * regular file of bounded size, read for a JSON parser. */
#include "json_strict.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail_errno(d9_diag *diag, int err, const char *path) {
  return d9_diag_errno(diag, err, path);
}

int d9_read_small_file(int dirfd, const char *path, size_t max, char **out,
                       size_t *out_len, d9_diag *diag) {
  struct stat st;
  char *buf = NULL;
  int rc;
  *out = NULL;
  *out_len = 0;
  int fd = openat(dirfd, path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return fail_errno(diag, errno, path);
  if (fstat(fd, &st) < 0) {
    rc = fail_errno(diag, errno, path);
    goto close_fd;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = d9_diag_fail(diag, EINVAL, "%s: not a regular file", path);
    goto close_fd;
  }
  if (st.st_size < 0 || (uint64_t)st.st_size > max ||
      (uint64_t)st.st_size >= SIZE_MAX) {
    rc = d9_diag_fail(diag, EFBIG, "%s: file is %lld bytes, more than the limit of %zu",
                      path, (long long)st.st_size, max);
    goto close_fd;
  }
  size_t size = (size_t)st.st_size, got = 0;
  buf = malloc(size + 1);
  if (!buf) {
    rc = d9_diag_fail(diag, ENOMEM, "%s: out of memory reading %zu bytes", path, size);
    goto close_fd;
  }
  /* read size bytes, then one more to see that the file did not grow */
  for (;;) {
    char extra;
    int probing = got == size;
    ssize_t n = probing ? read(fd, &extra, 1) : read(fd, buf + got, size - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      rc = fail_errno(diag, errno, path);
      goto free_buf;
    }
    if (n == 0 && !probing) {
      rc = d9_diag_fail(diag, EIO, "%s: file shrank while being read (%zu of %zu bytes)",
                        path, got, size);
      goto free_buf;
    }
    if (n > 0 && probing) {
      rc = d9_diag_fail(diag, EIO, "%s: file grew while being read", path);
      goto free_buf;
    }
    if (probing) break;
    got += (size_t)n;
  }
  buf[size] = 0;
  close(fd);
  *out = buf;
  *out_len = size;
  return 0;
free_buf:
  free(buf);
close_fd:
  close(fd);
  return rc;
}
