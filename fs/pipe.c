#include "fs/pipe.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

enum { PAGE = 4096 }; /* bytes; the pipe's unit: one page per slot */

size_t d9_pipe_slots(const d9_piece *p, int np) {
  size_t slots = 0;
  for (int i = 0; i < np; i++)
    slots += p[i].mem ? (p[i].len + PAGE - 1) / PAGE + 1
                      : (p[i].off % PAGE + p[i].len + PAGE - 1) / PAGE;
  return slots;
}

int d9_pipe_fill(int wfd, const d9_piece *p, int np) {
  for (int i = 0; i < np; i++) {
    loff_t off = (loff_t)p[i].off;
    size_t left = p[i].len;
    const char *mem = p[i].mem;
    while (left > 0) {
      ssize_t r = mem ? write(wfd, mem, left)
                      : splice(p[i].fd, &off, wfd, NULL, left, SPLICE_F_NONBLOCK);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return errno == EIO ? -EIO : -EAGAIN;
      if (r == 0) return -EIO;
      left -= (size_t)r;
      if (mem) mem += r;
    }
  }
  return 0;
}

int d9_pipe_pending(int rfd) {
  int n = 0;
  return ioctl(rfd, FIONREAD, &n) == 0 ? n : 1;
}

size_t d9_pipe_max_size(size_t cap) {
  FILE *f = fopen("/proc/sys/fs/pipe-max-size", "re");
  unsigned long v = 0;
  if (f) {
    if (fscanf(f, "%lu", &v) != 1) v = 0;
    fclose(f);
  }
  size_t p = PAGE;
  while (p * 2 <= v && p * 2 <= cap) p *= 2;
  return v >= PAGE ? p : 0;
}
