/* log.h - where a mount's messages go. The daemon's messages (read errors
 * from the core, warnings of the front end, -d's per-read lines) are
 * written to stderr by whoever has something to say; d9_log_start() makes
 * fd 2 a pipe whose lines one thread relays, each naming the mount point
 * and, for a source that changed or failed, what to do, to:
 *   - the original stderr in the foreground (-f, -d);
 *   - FILE (appended) with -o log=FILE;
 *   - the original stderr when it is a regular file (2>>FILE);
 *   - else syslog, facility LOG_DAEMON, ident "d9dfs".
 * No FUSE types. */
#ifndef D9_LOG_H
#define D9_LOG_H

#include "mapper/diag.h"

typedef struct d9_log d9_log;

/* Open the sink. Call before daemonizing (log_file is opened relative to
 * the working directory then). mountpoint is copied. Returns 0 or -errno
 * with diag set (log_file cannot be opened). */
int d9_log_open(const char *mountpoint, int foreground, const char *log_file, d9_log **out,
                d9_diag *diag);

/* Start relaying: call after daemonizing (which points fd 2 at /dev/null).
 * Returns 0 or -errno; on failure fd 2 is left as it was. */
int d9_log_start(d9_log *l);

/* Stop relaying (the lines written so far are delivered), put the sink
 * itself on fd 2 (so that later output, a sanitizer's report at exit,
 * still lands there) and free l. Accepts NULL. */
void d9_log_close(d9_log *l);

#endif
