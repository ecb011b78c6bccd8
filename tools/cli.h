/* cli.h - pieces of the d9dfs command shared by its subcommands:
 * options (opts.c), specs and sources by name (specs.c), convert
 * (convert.c), check (check.c), demo (demo.c). Every function prints its
 * own one-line errors on stderr, prefixed "d9dfs: ". */
#ifndef D9_CLI_H
#define D9_CLI_H

#include <limits.h>

#include "fs/fs.h"
#include "mapper/mount.h"

/* Everything the command line says, parsed. */
typedef struct d9_cli {
  d9_mount_opts mo;
  d9_fs_opts fo;
  int helper;          /* mount(8)'s form: d9dfs SRC MNT -o spec=NAME,... */
  const char *spec;    /* -o spec=NAME (helper form); borrowed from argv */
  int keep;            /* demo --keep */
  int force;           /* convert --force: write into a non-empty OUTDIR */
  int jobs;            /* convert --jobs N: files converted at once (0 = 1) */
  int dot;             /* plan --dot: Graphviz instead of the table */
  int bytes;           /* plan --bytes: source bytes per tree (bytes_report.c) */
  int verbose;         /* plan -v: per target tensor its sources and op chain */
} d9_cli;

/* All of s as a decimal integer in [lo, hi] (no sign, no blanks): 0, or
 * -1. */
int d9_cli_parse_int(const char *s, long long lo, long long hi, long long *out);

/* Parse one -o list (comma-separated, modified in place) into c. Each
 * error names the option and the valid values ("-o threads=16: must be
 * 1..8"). Returns 0 or -1 (message printed). */
int d9_cli_parse_opts(char *s, d9_cli *c);

/* Resolve SPEC: an existing file or anything with a '/' is a path; a bare
 * name NAME (or NAME.json) is looked up in $D9DFS_SPEC_PATH (a colon
 * list), ~/.config/d9dfs/mounts, the installed share/d9dfs/mounts next to
 * the executable's prefix, and for an uninstalled build the source tree's
 * mounts/. out gets the path (PATH_MAX bytes). Returns 0, or -1 after an
 * error that lists the directories searched and the near matches. */
int d9_cli_find_spec(const char *spec, char *out);

/* `d9dfs specs [SRC]`: every spec found by name, one line each with its
 * top-level "description". Returns the exit code. */
int d9_cli_specs(const char *src);

/* Resolve SRC: a directory is itself; ORG/NAME[@REVISION] that is not a
 * directory names a snapshot in the local Hugging Face hub cache
 * ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub;
 * REVISION a ref under refs/ or a commit hash; default main). Never
 * downloads. out gets the path (PATH_MAX bytes). Returns 0, or -1 after an
 * error naming the paths tried. */
int d9_cli_find_src(const char *src, char *out);

/* Write all of node idx to fd, reading in chunks. 0 or -errno. */
int d9_cli_copy_node(d9_mount *m, int idx, uint64_t off, uint64_t len, int fd);

/* Convert options (convert.c). */
typedef struct d9_convert_opts {
  int force;     /* write into a non-empty OUTDIR */
  int jobs;      /* files converted in parallel (>= 1) */
  int progress;  /* a progress line on stderr (a terminal) */
  int quiet;     /* no summary line (check's own conversions) */
} d9_convert_opts;

/* Write every file of the tree into outdir (created if missing) under
 * temporary names (.NAME.d9dfs-tmp), fsync each, then rename them all into
 * place and fsync the directory. SIGINT/SIGTERM remove the temporaries
 * and exit 130/143. A non-empty outdir is refused unless o->force. One
 * summary line on stderr at the end unless o->quiet. o may be NULL (one
 * job, no progress, quiet, force). Returns the exit code. */
int d9_cli_convert(d9_mount *m, const char *outdir, const d9_convert_opts *o);

/* `d9dfs check SRC SPEC`: forward, then reverse, compare with the source.
 * Returns exit code. */
int d9_cli_check(const d9_mount_opts *base, const char *src, const char *spec);
/* `d9dfs demo`: generate, mount, show, verify, unmount. Returns exit code. */
int d9_cli_demo(const char *self, int keep);

#endif
