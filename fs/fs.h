/* fs.h - the FUSE front end: serves a d9_mount at a mount point.
 * The only file in the project that sees FUSE types is fs/fuse_ll.c. */
#ifndef D9_FS_H
#define D9_FS_H

#include "mapper/diag.h"
#include "mapper/mount.h"

typedef struct d9_fs_opts {
  int foreground;       /* -f: do not daemonize */
  int debug;            /* -d: log every request to stderr (implies foreground) */
  int single_thread;    /* -o single_thread: one-thread session loop */
  int allow_other;      /* -o allow_other (implies default_permissions) */
  int auto_unmount;     /* -o auto_unmount */
  unsigned max_read_kb; /* largest read request, KiB; 0 = with splice the
                           largest that splices (1008 with pipe-max-size 1 MiB),
                           else 1024 */
  int splice;           /* -o splice: unchanged source runs go to the kernel
                           through a pipe (zero-copy). Off by default: a source
                           changed in the microseconds between the staleness
                           check and the kernel's copy would be served as it
                           then was (logged and counted, not refused) */
  int direct_io;        /* -o direct_io: read() of tensor files bypasses the
                           kernel page cache (faster cold streaming reads;
                           re-reads come back to the daemon) */
  int readahead_kb;     /* -o readahead=KB: kernel readahead; -1 = max_read */
  const char *fsname;   /* -o fsname=: the mount table's SOURCE (findmnt); NULL =
                           "d9dfs". The CLI passes SRC. Borrowed */
  const char *subtype;  /* -o subtype=: FSTYPE fuse.SUBTYPE; NULL = "d9dfs" */
  int has_uid, has_gid; /* -o uid=, gid= given: owner of every node (else the sources') */
  unsigned uid, gid;
  const char *log_file; /* -o log=FILE: daemon messages appended there instead
                           of syslog (NULL: stderr in the foreground, syslog
                           LOG_DAEMON ident "d9dfs" once daemonized). Borrowed */
} d9_fs_opts;

/* Mount m at mountpoint and serve it until unmounted (umount, fusermount3
 * -u) or SIGINT/SIGTERM/SIGHUP, which unmount cleanly. Every line the
 * daemon writes to stderr (read errors from the core included) is relayed,
 * prefixed with the mount point, to stderr in the foreground, else to
 * o->log_file or syslog (see fs/log.h). Unless foreground, the
 * process daemonizes after the mount is in place, so the parent returns
 * (exit 0) only once the mount is ready. Returns 0 after a clean unmount,
 * or -errno with diag set (missing or busy mount point, /dev/fuse absent). */
int d9_fs_serve(d9_mount *m, const char *mountpoint, const d9_fs_opts *o,
                d9_diag *diag);

#endif
