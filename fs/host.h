/* host.h - what the FUSE front end asks of the host system, without FUSE
 * types: mount point checks (/proc/self/mountinfo) and the mount's
 * readahead (/sys/class/bdi). */
#ifndef D9_HOST_H
#define D9_HOST_H

#include "mapper/diag.h"

/* Check that mountpoint is an existing directory nobody is mounted on (also
 * bind mounts and a dead FUSE daemon's stale mount), and put its canonical
 * path in real (PATH_MAX bytes). Returns 0 or -errno with diag set. */
int d9_host_check_mountpoint(const char *mountpoint, char *real, d9_diag *diag);

/* Set the readahead of the mount at canonical path real to kb KiB (needs
 * root); warns on stderr only when explicit. */
void d9_host_set_readahead(const char *real, unsigned kb, int explicit);

#endif
