/* cli.h - pieces of the d9dfs command shared by its subcommands. */
#ifndef D9_CLI_H
#define D9_CLI_H

#include "fs/fs.h"
#include "mapper/mount.h"

/* Write all of node idx to fd, reading in chunks. 0 or -errno. */
int d9_cli_copy_node(d9_mount *m, int idx, uint64_t off, uint64_t len, int fd);
/* Write every file of the tree into outdir (created). Returns exit code. */
int d9_cli_convert(d9_mount *m, const char *outdir);
/* `d9dfs check SRC SPEC`: forward, then reverse, compare with the source.
 * Returns exit code. */
int d9_cli_check(const d9_mount_opts *base, const char *src, const char *spec);
/* `d9dfs demo`: generate, mount, show, verify, unmount. Returns exit code. */
int d9_cli_demo(const char *self, int keep);

#endif
