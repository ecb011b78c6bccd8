/* d9dfs - the command line: mount, plan, check, convert, cat, specs, demo,
 * and mount(8)'s helper form `d9dfs SRC MNT -o spec=NAME[,opts]`, which
 * mount.fuse3 runs for `mount -t fuse.d9dfs` and fstab lines. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char mount_usage[] =
    "usage: d9dfs mount SRC SPEC MNT [-f] [-d] [-o opt[,opt...]] [--reverse] [--lenient] [--force]\n"
    "       d9dfs SRC MNT -o spec=SPEC[,opt...]   (mount(8)'s form: mount -t fuse.d9dfs)\n"
    "\n"
    "Serve SRC converted by SPEC at MNT, read-only; returns once the mount is ready\n"
    "(umount MNT or fusermount3 -u MNT ends it). SRC is a checkpoint directory or a\n"
    "model id ORG/NAME[@REVISION] in the local Hugging Face cache; SPEC a spec file\n"
    "or a name that `d9dfs specs` lists.\n"
    "\n"
    "  -f                 stay in the foreground (messages on stderr)\n"
    "  -d                 log every read (implies -f)\n"
    "  --reverse          SRC is in SPEC's target layout: present its source layout\n"
    "  --lenient          mount despite validation findings (.d9dfs/report.json)\n"
    "  --strict           refuse the mount on any finding (the default)\n"
    "  --force            use SPEC although its applies_to does not fit SRC (warning)\n"
    "  -o readahead=KB    kernel readahead for the mount, 0..1048576 (default: max_read)\n"
    "  -o single_thread   serve requests on one thread\n"
    "  -o max_read=KB     largest read request, 4..1024 (default 1024; 1008 with splice)\n"
    "  -o splice          zero-copy replies for unchanged bytes (a source changed\n"
    "                     mid-read is then logged, not refused; default off)\n"
    "  -o no_splice       copy every reply (the default)\n"
    "  -o direct_io       read() bypasses the page cache: faster cold streaming\n"
    "                     reads (cp, cat), re-reads not cached; mmap still cached\n"
    "  -o source_cache=P  keep or drop: drop each source tensor from the page cache\n"
    "                     once served, so the model is cached once, by the mount\n"
    "                     (default: drop; keep with direct_io)\n"
    "  -o allow_other     let other users read what they could read in SRC (implies\n"
    "                     default_permissions); source symlinks must stay inside SRC\n"
    "  -o follow_links    with allow_other: follow source symlinks wherever they point\n"
    "  -o force           use SPEC although its applies_to does not fit SRC (warning)\n"
    "  -o auto_unmount    unmount if the daemon dies\n"
    "  -o shard_size=B    cut output shards at B bytes (overrides the spec)\n"
    "  -o threads=N       threads (1..8) that evaluate one computing read (casts,\n"
    "                     dequant, ...) together (default: CPUs online, at most 8)\n"
    "  -o mem=MiB         evaluation memory budget, 1..1048576 (default 64): 2 MiB\n"
    "                     per read in flight; reads beyond it wait\n"
    "  -o device=D        auto or cpu (cuda[:N] is refused until GPU reads are wired)\n"
    "  -o meta_mib=N      limit on the headers' metadata (tensor tables, names), MiB,\n"
    "                     1..1048576 (default 512)\n"
    "  -o tp=T,ep=E,pp=P  per-rank views under ranks/ (tp0, tp0-ep1, tp0-ep1-pp1, ...)\n"
    "  -o etp=T           expert tensor parallelism: each expert split tp ways too (1 or tp)\n"
    "  -o vocab_divisible_by=N  style vocab pads rows to a multiple of N*T (default 1)\n"
    "  -o pp_layers=A:B:.. layers per pipeline stage (default: the remainder rule)\n"
    "  -o log=FILE        once daemonized, append messages to FILE (default: syslog,\n"
    "                     facility daemon, ident d9dfs)\n"
    "  -o spec=SPEC       the spec, in mount(8)'s form\n"
    "  -o fsname=NAME     SOURCE in the mount table (default: SRC's real path)\n"
    "  -o subtype=NAME    FSTYPE fuse.NAME in the mount table (default d9dfs)\n"
    "  -o uid=N,gid=N     owner of every file (default: the owners of the source files)\n"
    "  -o ro              accepted: the mount is always read-only\n"
    "  -o rw              refused (read-only filesystem); accepted in mount(8)'s form,\n"
    "                     which adds it by default, and the mount stays read-only\n"
    "  -o default_permissions, kernel_cache   accepted: always in effect\n"
    "  -o umask=M         refused: modes come from the source files, read-only\n"
    "  -o defaults,auto,noauto,nofail,_netdev,user,users,nouser,dev,nodev,suid,\n"
    "     nosuid,exec,noexec,atime,noatime,relatime,async,x-*,comment=*\n"
    "                     mount-table options: accepted, nothing to do\n"
    "  -o inject_eio=N    testing: every Nth source read fails with EIO\n"
    "  -o inject_enomem=N testing: every Nth scratch allocation fails with ENOMEM\n"
    "  -o inject_delay=MS testing: every source read first waits MS ms (1..60000)\n";

static const char plan_usage[] =
    "usage: d9dfs plan SRC SPEC [--reverse] [--lenient] [--force] [-v | --dot | --bytes]\n"
    "                  [-o shard_size=B] [-o tp=T,ep=E,pp=P]\n"
    "\n"
    "The target tree without reading tensor data: files, tensors, shapes, dtypes, the\n"
    "rule that makes each, findings and lossy steps. Non-zero exit on a mistake.\n"
    "  --force use SPEC although its applies_to does not fit SRC (warning)\n"
    "  -v      per target tensor: its source tensors and the chain of operations\n"
    "  --dot   the plan as a Graphviz graph: source tensors -> rules and operations ->\n"
    "          target tensors -> files, lossy steps in red (d9dfs plan --dot ... | dot -Tsvg)\n"
    "  --bytes per tree (the full view, or each ranks/ view with -o tp=,ep=,pp=): the bytes\n"
    "          a full read pulls from the source, those other trees pull too, the\n"
    "          bytes each node (the tp ranks of one ep/pp cell) pulls, and what one mount\n"
    "          serving every tree pulls (files rank views share read once)\n";

static const char check_usage[] =
    "usage: d9dfs check SRC SPEC [--lenient] [--force]\n"
    "\n"
    "Convert SRC forward into a temporary directory, present that through the\n"
    "reversed spec and compare every tensor with SRC: byte for byte for lossless\n"
    "specs; lossy steps and each tensor's largest error are reported.\n";

static const char convert_usage[] =
    "usage: d9dfs convert SRC SPEC OUTDIR [--force] [--jobs N] [--reverse] [--lenient]\n"
    "                     [-o shard_size=B] [-o threads=N]\n"
    "\n"
    "Write every file of the tree into OUTDIR: the bytes a mount would serve. Files\n"
    "are written under temporary names (.NAME.d9dfs-tmp), fsync'ed and renamed into\n"
    "place once all are complete; SIGINT/SIGTERM remove the temporaries (exit 130/143).\n"
    "Progress on a terminal; one summary line at the end.\n"
    "  --force    write into a non-empty OUTDIR (files of the same names are replaced);\n"
    "             -o force uses SPEC although its applies_to does not fit SRC\n"
    "  --jobs N   convert N files at once, 1..64 (default 1)\n";

static const char cat_usage[] =
    "usage: d9dfs cat SRC SPEC FILE [OFFSET LENGTH] [--reverse] [--lenient] [--force]\n"
    "                   [-o shard_size=B]\n"
    "\n"
    "One file of the tree (or LENGTH bytes at OFFSET) to stdout; FILE is a path in the\n"
    "tree, e.g. model-00001-of-00002.safetensors or ranks/tp0/model.safetensors.\n";

static const char specs_usage[] =
    "usage: d9dfs specs [SRC]\n"
    "\n"
    "The specs that SPEC can name, with their descriptions, from $D9DFS_SPEC_PATH (a\n"
    "colon list), ~/.config/d9dfs/mounts, the installed share/d9dfs/mounts and, for\n"
    "an uninstalled build, the source tree's mounts/. A name found earlier shadows the\n"
    "same name later. With SRC: each spec is planned against it; the ones that do not\n"
    "apply say why (applies_to, or nothing to convert); exit 1 when none applies.\n";

static const char demo_usage[] =
    "usage: d9dfs demo [--keep]\n"
    "\n"
    "Generate a small Llama-style checkpoint, mount it with llama-to-megatron, show\n"
    "the tree, verify every byte through the mount and unmount. --keep keeps the files.\n";

static const char usage[] =
    "usage: d9dfs mount SRC SPEC MNT [-f] [-d] [-o opt[,opt...]] [--reverse] [--lenient] [--force]\n"
    "       d9dfs SRC MNT -o spec=SPEC[,opt...]      (mount -t fuse.d9dfs, fstab)\n"
    "       d9dfs plan SRC SPEC [-v | --dot] [--reverse] [--lenient]\n"
    "       d9dfs check SRC SPEC\n"
    "       d9dfs convert SRC SPEC OUTDIR [--force] [--jobs N]\n"
    "       d9dfs cat SRC SPEC FILE [OFFSET LENGTH]\n"
    "       d9dfs specs [SRC]\n"
    "       d9dfs demo [--keep]\n"
    "       d9dfs --help | --version | SUBCOMMAND --help\n"
    "\n"
    "Presents the checkpoint in SRC (safetensors shards, index, config.json)\n"
    "converted by the mapping spec SPEC, lazily: reads compute only the bytes\n"
    "they cover. SRC is a directory or a model id ORG/NAME[@REVISION] in the local\n"
    "Hugging Face cache; SPEC a file or a name listed by `d9dfs specs`.\n"
    "`d9dfs SUBCOMMAND --help` shows each subcommand's options; man d9dfs,\n"
    "man 5 d9dfs-spec.\n";

typedef struct subcmd {
  const char *name;
  const char *usage;
  int min, max; /* positional arguments */
} subcmd;

static const subcmd cmds[] = {
    {"mount", mount_usage, 3, 3},   {"plan", plan_usage, 2, 2},
    {"check", check_usage, 2, 2},   {"convert", convert_usage, 3, 3},
    {"cat", cat_usage, 3, 5},       {"specs", specs_usage, 0, 1},
    {"demo", demo_usage, 0, 0},
};
enum { C_MOUNT, C_PLAN, C_CHECK, C_CONVERT, C_CAT, C_SPECS, C_DEMO, NCMDS };

/* Split argv into positionals and flags; returns the positional count, or
 * -1 after a message. */
static int parse_args(int argc, char **argv, char **pos, int maxpos, d9_cli *c,
                      const char *cmd) {
  int n = 0;
  for (int i = 0; i < argc; i++) {
    char *a = argv[i];
    long long v;
    if (!strcmp(a, "-f")) c->fo.foreground = 1;
    else if (!strcmp(a, "-d")) c->fo.debug = c->fo.foreground = 1, c->mo.verbose = 1;
    else if (!strcmp(a, "--reverse")) c->mo.reverse = 1;
    else if (!strcmp(a, "--lenient")) c->mo.lenient = 1;
    else if (!strcmp(a, "--strict")) c->mo.lenient = 0;
    else if (!strcmp(a, "--keep")) c->keep = 1;
    else if (!strcmp(a, "--force")) c->force = 1; /* convert: OUTDIR; others: applies_to */
    else if (!strcmp(a, "--dot")) c->dot = 1;
    else if (!strcmp(a, "--bytes")) c->bytes = 1;
    else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) c->verbose = 1;
    else if (!strcmp(a, "--jobs") || !strncmp(a, "--jobs=", 7)) {
      const char *s = a[6] ? a + 7 : i + 1 < argc ? argv[++i] : "";
      if (d9_cli_parse_int(s, 1, 64, &v)) {
        fprintf(stderr, "d9dfs: --jobs %s: must be 1..64\n", s);
        return -1;
      }
      c->jobs = (int)v;
    } else if (!strncmp(a, "-o", 2)) {
      char *s = a[2] ? a + 2 : (i + 1 < argc ? argv[++i] : NULL);
      if (!s) {
        fprintf(stderr, "d9dfs: -o needs options (d9dfs mount --help lists them)\n");
        return -1;
      }
      if (d9_cli_parse_opts(s, c)) return -1;
    } else if (a[0] == '-' && a[1]) {
      fprintf(stderr, "d9dfs: %s: unknown flag '%s' (d9dfs %s --help)\n", cmd, a, cmd);
      return -1;
    } else {
      if (n == maxpos) {
        fprintf(stderr, "d9dfs: %s: too many arguments (d9dfs %s --help)\n", cmd, cmd);
        return -1;
      }
      pos[n++] = a;
    }
  }
  return n;
}

static d9_mount *open_or_die(const char *src, const char *spec, d9_mount_opts *mo) {
  d9_diag diag = {0};
  d9_mount *m = NULL;
  mo->src_dir = src;
  mo->spec_path = spec;
  if (d9_mount_open(mo, &m, &diag)) {
    fprintf(stderr, "d9dfs: %s\n", diag.msg);
    return NULL;
  }
  return m;
}

int d9_cli_copy_node(d9_mount *m, int idx, uint64_t off, uint64_t len, int fd) {
  enum { CHUNK = 4 << 20 };
  char *buf = malloc(CHUNK);
  if (!buf) return -ENOMEM;
  int rc = 0;
  while (len > 0) {
    size_t want = len < CHUNK ? (size_t)len : CHUNK;
    ssize_t r = d9_mount_read(m, idx, off, want, buf);
    if (r < 0) { rc = (int)r; break; }
    if (r == 0) break;
    for (ssize_t done = 0; done < r;) {
      ssize_t w = write(fd, buf + done, (size_t)(r - done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) { rc = -errno; goto out; }
      done += w;
    }
    off += (uint64_t)r;
    len -= (uint64_t)r;
  }
out:
  free(buf);
  return rc;
}

static int cmd_cat(d9_mount *m, char **pos, int npos) {
  int idx = d9_mount_resolve(m, pos[2]);
  const d9_vnode *v = idx >= 0 ? d9_mount_node(m, idx) : NULL;
  if (!v || v->kind == D9_NODE_DIR) {
    fprintf(stderr, "d9dfs: %s: %s\n", pos[2], v ? "is a directory" : "no such file in the tree");
    return 1;
  }
  long long off = 0, len = (long long)v->size;
  if (v->kind == D9_NODE_DYNAMIC) {
    char *buf;
    size_t n;
    if (d9_mount_render(m, idx, &buf, &n)) return 1;
    fwrite(buf, 1, n, stdout);
    free(buf);
    return 0;
  }
  if (npos == 5 && (d9_cli_parse_int(pos[3], 0, LLONG_MAX, &off) ||
                    d9_cli_parse_int(pos[4], 0, LLONG_MAX, &len))) {
    fprintf(stderr, "d9dfs: cat: OFFSET and LENGTH must be non-negative integers\n");
    return 1;
  }
  int rc = d9_cli_copy_node(m, idx, (uint64_t)off, (uint64_t)len, STDOUT_FILENO);
  if (rc) fprintf(stderr, "d9dfs: %s: %s\n", pos[2], strerror(-rc));
  return rc ? 1 : 0;
}

static int cmd_plan(d9_mount *m, const d9_cli *c) {
  if (c->dot) return d9_mount_write_dot(m, STDOUT_FILENO) ? 1 : 0;
  if (c->bytes) return d9_mount_print_bytes(m, STDOUT_FILENO) ? 1 : 0;
  if (c->verbose) return d9_mount_print_provenance(m, STDOUT_FILENO) ? 1 : 0;
  return d9_mount_print_plan(m, STDOUT_FILENO) ? 1 : 0;
}

static int cmd_mount(d9_mount *m, const char *src, const char *mnt, d9_cli *c) {
  char real[PATH_MAX];
  if (!c->fo.fsname) /* findmnt's SOURCE: what was mounted */
    c->fo.fsname = realpath(src, real) ? real : src;
  d9_diag diag = {0};
  if (d9_fs_serve(m, mnt, &c->fo, &diag)) {
    fprintf(stderr, "d9dfs: %s\n", diag.msg);
    return 1;
  }
  return 0;
}

/* Each subcommand's exit code once its arguments are parsed. */
static int run(int k, char **pos, int npos, d9_cli *c, const char *self) {
  if (k == C_DEMO) return d9_cli_demo(self, c->keep);
  if (k == C_SPECS) return d9_cli_specs(npos ? pos[0] : NULL);
  char src[PATH_MAX], spec[PATH_MAX];
  if (d9_cli_find_src(pos[0], src) || d9_cli_find_spec(pos[1], spec)) return 1;
  if (k != C_CONVERT && c->force) c->mo.force = 1; /* convert: -o force for applies_to */
  c->mo.confine_links = c->mo.confine_links && !c->mo.follow_links;
  if (k == C_CHECK) return d9_cli_check(&c->mo, src, spec);
  if (k == C_MOUNT && access(pos[2], F_OK)) {
    fprintf(stderr, "d9dfs: %s: mount point: %s\n", pos[2], strerror(errno));
    return 1;
  }
  /* A buffered (page-cache) reader spends as much CPU in the kernel as
   * the daemon does: leave it a CPU rather than split reads across all
   * of them (docs/performance.md, "Split reads"). */
  if (k == C_MOUNT && !c->mo.threads && !c->fo.direct_io) {
    long n = sysconf(_SC_NPROCESSORS_ONLN) - 1;
    c->mo.threads = n < 1 ? 1 : n > 8 ? 8 : (int)n;
  }
  if (c->mo.source_cache < 0) /* the mount's page cache holds what it served */
    c->mo.source_cache = k == C_MOUNT && !c->fo.direct_io ? D9_SOURCE_CACHE_DROP
                                                           : D9_SOURCE_CACHE_KEEP;
  d9_mount *m = open_or_die(src, spec, &c->mo);
  if (!m) return 1;
  int rc;
  if (k == C_MOUNT) {
    rc = cmd_mount(m, src, pos[2], c);
  } else if (k == C_PLAN) {
    rc = cmd_plan(m, c);
  } else if (k == C_CONVERT) {
    d9_convert_opts co = {.force = c->force, .jobs = c->jobs ? c->jobs : 1,
                          .progress = isatty(STDERR_FILENO)};
    rc = d9_cli_convert(m, pos[2], &co);
  } else {
    rc = cmd_cat(m, pos, npos);
  }
  d9_mount_close(m);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
    printf("d9dfs %s\n", D9DFS_VERSION);
    return 0;
  }
  int k = 0;
  while (k < NCMDS && strcmp(argv[1], cmds[k].name)) k++;
  d9_cli c = {0};
  c.fo.readahead_kb = -1;
  c.mo.source_cache = -1; /* unset: run() picks by mount kind */
  /* mount(8)'s helper form: d9dfs SRC MNT -o spec=SPEC,... */
  c.helper = k == NCMDS && argv[1][0] != '-' && argc >= 3;
  if (k == NCMDS && !c.helper) {
    fprintf(stderr, "d9dfs: unknown subcommand '%s'\n%s", argv[1], usage);
    return 2;
  }
  const subcmd *sc = &cmds[c.helper ? C_MOUNT : k];
  for (int i = 2; i < argc; i++)
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      fputs(sc->usage, stdout);
      return 0;
    }
  char *pos[8];
  int first = c.helper ? 1 : 2;
  int npos = parse_args(argc - first, argv + first, pos, 8, &c, sc->name);
  if (npos < 0) return 2;
  if (c.helper) {
    if (npos != 2 || !c.spec) {
      fprintf(stderr, "d9dfs: %s: %s\n%s", argv[1],
              npos != 2 ? "expected SRC MNT -o spec=SPEC (or a subcommand)"
                        : "-o spec=SPEC is missing (mount -t fuse.d9dfs SRC MNT -o spec=NAME)",
              mount_usage);
      return 2;
    }
    char *mpos[3] = {pos[0], (char *)c.spec, pos[1]};
    return run(C_MOUNT, mpos, 3, &c, argv[0]);
  }
  if (c.spec) {
    fprintf(stderr, "d9dfs: %s: -o spec= is for mount(8)'s form; give SPEC as an argument\n",
            sc->name);
    return 2;
  }
  if (npos < sc->min || npos > sc->max || (k == C_CAT && npos == 4)) {
    fprintf(stderr, "d9dfs: %s: wrong arguments\n%s", sc->name, sc->usage);
    return 2;
  }
  return run(k, pos, npos, &c, argv[0]);
}
