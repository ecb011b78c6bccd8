#include "fs/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

enum { LINE_MAX_BYTES = 4096 }; /* longer lines are relayed in pieces */

typedef enum { SINK_FD, SINK_SYSLOG } sink_kind;

struct d9_log {
  char *mnt;           /* the mount point, as named in every line */
  sink_kind kind;
  int sink_fd;         /* SINK_FD: where lines go; -1 with syslog */
  int pipe_rd;         /* the relay's end; -1 until started */
  pthread_t thread;
  int started;
};

int d9_log_open(const char *mountpoint, int foreground, const char *log_file, d9_log **out,
                d9_diag *diag) {
  d9_log *l = calloc(1, sizeof *l);
  if (!l || !(l->mnt = strdup(mountpoint))) {
    free(l);
    return d9_diag_fail(diag, ENOMEM, "out of memory");
  }
  l->pipe_rd = l->sink_fd = -1;
  struct stat st;
  if (log_file) {
    l->sink_fd = open(log_file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (l->sink_fd < 0) {
      int e = errno;
      free(l->mnt);
      free(l);
      return d9_diag_fail(diag, e, "-o log=%s: %s", log_file, strerror(e));
    }
  } else if (foreground || (fstat(2, &st) == 0 && S_ISREG(st.st_mode))) {
    l->sink_fd = fcntl(2, F_DUPFD_CLOEXEC, 3);
  }
  l->kind = l->sink_fd >= 0 ? SINK_FD : SINK_SYSLOG;
  *out = l;
  return 0;
}

/* What to do about a message, or NULL. */
static const char *advice(const char *line) {
  if (strstr(line, "changed under the mount") || strstr(line, "Stale file handle") ||
      strstr(line, "served while its source changed"))
    return "a source file changed since the mount: remount to serve the new version "
           "(umount, then mount again)";
  if (strstr(line, "Input/output error"))
    return "the source could not be read: check the file system holding the source, then "
           "remount";
  return NULL;
}

/* One line (without its newline) to the sink. */
static void relay_line(d9_log *l, char *line) {
  const char *msg = strncmp(line, "d9dfs: ", 7) ? line : line + 7;
  const char *what = advice(msg);
  if (l->kind == SINK_SYSLOG) {
    syslog(LOG_ERR, "%s: %s%s%s", l->mnt, msg, what ? " - " : "", what ? what : "");
    return;
  }
  dprintf(l->sink_fd, "d9dfs: %s: %s%s%s\n", l->mnt, msg, what ? " - " : "", what ? what : "");
}

static void *relay(void *arg) {
  d9_log *l = arg;
  char buf[LINE_MAX_BYTES + 1];
  size_t have = 0;
  for (;;) {
    ssize_t r = read(l->pipe_rd, buf + have, LINE_MAX_BYTES - have);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    have += (size_t)r;
    size_t start = 0;
    for (size_t i = 0; i < have; i++)
      if (buf[i] == '\n') {
        buf[i] = 0;
        relay_line(l, buf + start);
        start = i + 1;
      }
    if (start == 0 && have == LINE_MAX_BYTES) { /* a very long line: in pieces */
      buf[have] = 0;
      relay_line(l, buf);
      start = have;
    }
    memmove(buf, buf + start, have - start);
    have -= start;
  }
  if (have) {
    buf[have] = 0;
    relay_line(l, buf);
  }
  return NULL;
}

int d9_log_start(d9_log *l) {
  int p[2];
  if (pipe2(p, O_CLOEXEC)) return -errno;
  if (l->kind == SINK_SYSLOG) openlog("d9dfs", LOG_PID | LOG_NDELAY, LOG_DAEMON);
  l->pipe_rd = p[0];
  if (pthread_create(&l->thread, NULL, relay, l)) {
    close(p[0]);
    close(p[1]);
    l->pipe_rd = -1;
    return -EAGAIN;
  }
  l->started = 1;
  fflush(stderr);
  dup2(p[1], 2); /* fd 2 is now the only write end besides p[1] */
  close(p[1]);
  return 0;
}

void d9_log_close(d9_log *l) {
  if (!l) return;
  if (l->started) {
    fflush(stderr);
    int fd = l->sink_fd >= 0 ? l->sink_fd : open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) dup2(fd, 2); /* closes the pipe's last write end: the relay ends */
    else close(2);
    if (fd >= 0 && fd != l->sink_fd) close(fd);
    pthread_join(l->thread, NULL);
  }
  if (l->pipe_rd >= 0) close(l->pipe_rd);
  if (l->sink_fd >= 0) close(l->sink_fd); /* fd 2 keeps its own copy */
  if (l->kind == SINK_SYSLOG && l->started) closelog();
  free(l->mnt);
  free(l);
}
