/* serve.c - d9_fs_serve (fs.h): check the mount point, set up the
 * session (options, the custom I/O that adds INIT flags, signal handlers),
 * mount, daemonize, start the log relay, run the loop, unwind. */
#include "fs/fs_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "fs/fs.h"
#include "fs/host.h"
#include "fs/log.h"
#include "fs/pipe.h"

/* "fsname=" and the like take a string through libfuse's option parser:
 * escape its separators (',' and '\\') into out (cap bytes). 0, or -1
 * when it does not fit. */
static int opt_escape(const char *v, char *out, size_t cap) {
  size_t n = 0;
  for (; *v; v++) {
    if (n + 3 > cap) return -1;
    if (*v == ',' || *v == '\\') out[n++] = '\\';
    out[n++] = *v;
  }
  out[n] = 0;
  return 0;
}

int d9_fs_serve(d9_mount *m, const char *mountpoint, const d9_fs_opts *o,
                d9_diag *diag) {
  static const d9_fs_opts defaults = {.readahead_kb = -1};
  if (!o) o = &defaults;
  if (!m || !mountpoint) return d9_diag_fail(diag, EINVAL, "no mount or mount point");

  char real[PATH_MAX];
  int err = d9_host_check_mountpoint(mountpoint, real, diag);
  if (!err) err = d9_mount_check_mountpoint(m, real, diag);
  if (err) return err;
  int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return d9_diag_fail(diag, errno, "/dev/fuse: %s", strerror(errno));
  close(fd);

  fs_state s;
  memset(&s, 0, sizeof s);
  s.m = m;
  s.nnodes = d9_mount_nnodes(m);
  s.has_uid = o->has_uid, s.uid = (uid_t)o->uid; /* -o uid=, gid=: override the sources' */
  s.has_gid = o->has_gid, s.gid = (gid_t)o->gid;
  clock_gettime(CLOCK_REALTIME, &s.mtime);
  s.direct_io = o->direct_io;
  if (o->splice) { /* see "Zero-copy replies" above */
    s.pipe_size = d9_pipe_max_size(2 * (size_t)FS_MAX_READ);
    s.splice_max = s.pipe_size > 4 * FS_PAGE ? s.pipe_size - 4 * FS_PAGE : 0;
    if (s.splice_max > FS_MAX_READ) s.splice_max = FS_MAX_READ;
    if (s.splice_max < FS_MIN_READ) s.pipe_size = s.splice_max = 0;
  }
  /* Requests that splice by default: readahead alone would not do, as the
   * kernel sends a window and its async part as max_read-sized pieces. */
  unsigned kb = o->max_read_kb       ? o->max_read_kb
                : s.splice_max != 0 ? (unsigned)(s.splice_max / 1024)
                                    : FS_MAX_READ / 1024;
  s.max_read = kb >= FS_MAX_READ / 1024 ? FS_MAX_READ
               : kb * 1024 < FS_MIN_READ ? FS_MIN_READ : kb * 1024;
  unsigned ra_kb = o->readahead_kb >= 0 ? (unsigned)o->readahead_kb
                                        : s.max_read / 1024;
  if (ra_kb > 1024 * 1024) ra_kb = 1024 * 1024; /* 1 GiB is plenty */
  s.readahead = ra_kb * 1024;
  for (int i = 0; i < s.nnodes; i++) {
    const d9_vnode *n = d9_mount_node(m, i);
    if (n && n->kind == D9_NODE_FILE) s.total_bytes += n->size;
  }
  char fsname[2 * PATH_MAX], subtype[256], mopts[2 * PATH_MAX + 512];
  if (opt_escape(o->fsname ? o->fsname : "d9dfs", fsname, sizeof fsname) ||
      opt_escape(o->subtype ? o->subtype : "d9dfs", subtype, sizeof subtype))
    return d9_diag_fail(diag, ENAMETOOLONG, "-o fsname or subtype: too long");
  /* The log's sink before anything is mounted: -o log=FILE is relative to
   * the working directory, which fuse_daemonize() leaves for / */
  d9_log *log = NULL;
  if ((err = d9_log_open(real, o->foreground || o->debug, o->log_file, &log, diag)))
    return err;
  if ((err = pthread_key_create(&s.buf_key, d9_fs_rbuf_free)) != 0) {
    d9_log_close(log);
    return d9_diag_fail(diag, err, "cannot create a thread key: %s", strerror(err));
  }

  snprintf(mopts, sizeof mopts,
           "fsname=%s,subtype=%s,ro,default_permissions,max_read=%u%s%s", fsname, subtype,
           s.max_read, o->allow_other ? ",allow_other" : "",
           o->auto_unmount ? ",auto_unmount" : "");
  char *argv[] = {"d9dfs", "-o", mopts, "-d", NULL};
  struct fuse_args args = FUSE_ARGS_INIT(o->debug ? 4 : 3, argv);
  struct fuse_session *se = fuse_session_new(&args, &d9_fs_ops, sizeof d9_fs_ops, &s);
  if (!se) {
    err = d9_diag_fail(diag, EINVAL, "cannot create a fuse session with -o %s", mopts);
    goto out_key;
  }
  if (fuse_set_signal_handlers(se) != 0) {
    err = d9_diag_fail(diag, EIO, "cannot install signal handlers");
    goto out_session;
  }
  if (fuse_session_mount(se, real) != 0) { /* libfuse printed why */
    err = d9_diag_fail(diag, EIO, "%s: fuse mount failed", mountpoint);
    goto out_signals;
  }
  if (fuse_session_custom_io(se, &d9_fs_io, fuse_session_fd(se)) != 0) {
    err = d9_diag_fail(diag, EIO, "%s: cannot set the session's I/O", mountpoint);
    goto out_unmount;
  }
  /* Before the loop answers INIT, so the kernel's min(read_ahead_kb,
   * max_readahead) sees the raised value. */
  d9_host_set_readahead(real, ra_kb, o->readahead_kb >= 0);
  /* The parent exits in here once the child is set up: the mount is live.
   * The child's stdio then points at /dev/null, and fd 2 becomes the
   * relay to the log (fs/log.h). */
  if (fuse_daemonize(o->foreground || o->debug) != 0) {
    err = d9_diag_fail(diag, EIO, "%s: cannot daemonize", mountpoint);
    goto out_unmount;
  }
  if (d9_log_start(log) != 0) /* messages then go where stderr went */
    fprintf(stderr, "d9dfs: %s: cannot start the log relay\n", real);
  if (o->single_thread) {
    err = fuse_session_loop(se);
  } else {
    struct fuse_loop_config cfg = {.clone_fd = 0, .max_idle_threads = 10};
    err = fuse_session_loop_mt(se, &cfg);
  }
  if (err > 0) err = 0; /* ended by SIGINT/SIGTERM/SIGHUP: a clean exit */
  if (err < 0) d9_diag_fail(diag, -err, "%s: fuse session: %s", mountpoint, strerror(-err));

out_unmount:
  fuse_session_unmount(se);
out_signals:
  fuse_remove_signal_handlers(se);
out_session:
  fuse_session_destroy(se);
out_key:
  d9_fs_rbuf_free(pthread_getspecific(s.buf_key)); /* the destructor skips this thread */
  pthread_key_delete(s.buf_key);
  fuse_opt_free_args(&args);
  d9_log_close(log); /* last: the session's own last words go through it */
  return err;
}
