/* opts.c - the -o option list of d9dfs mount (and of mount(8) and fstab,
 * which pass theirs through mount.fuse3): one table of every option, its
 * kind and its valid range, so that an error names both. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef enum { FLAG, INT, STR } opt_kind;

typedef enum {
  O_READAHEAD, O_MAX_READ, O_SINGLE_THREAD, O_SPLICE, O_NO_SPLICE, O_DIRECT_IO,
  O_ALLOW_OTHER, O_AUTO_UNMOUNT, O_TP, O_EP, O_PP, O_ETP, O_DEVICE, O_THREADS, O_MEM,
  O_VOCAB_DIV, O_PP_LAYERS, O_INJECT_EIO, O_INJECT_ENOMEM, O_INJECT_DELAY, O_SHARD_SIZE, O_SPEC, O_LOG,
  O_FSNAME, O_SUBTYPE, O_UID, O_GID, O_RO, O_RW, O_DEFAULT_PERMISSIONS, O_KERNEL_CACHE,
  O_UMASK, O_FORCE, O_FOLLOW_LINKS, O_META_MIB, O_SOURCE_CACHE, O_IGNORED,
} opt_id;

typedef struct opt_def {
  const char *name;
  opt_kind kind;
  long long lo, hi; /* INT: the valid range */
  opt_id id;
} opt_def;

enum { PP_LAYERS_MAX = 4096, LAYERS_MAX = 1 << 20 };

static const opt_def opts[] = {
    {"readahead", INT, 0, 1 << 20, O_READAHEAD},
    {"max_read", INT, 4, 1024, O_MAX_READ},
    {"single_thread", FLAG, 0, 0, O_SINGLE_THREAD},
    {"splice", FLAG, 0, 0, O_SPLICE},
    {"no_splice", FLAG, 0, 0, O_NO_SPLICE},
    {"direct_io", FLAG, 0, 0, O_DIRECT_IO},
    {"allow_other", FLAG, 0, 0, O_ALLOW_OTHER},
    {"follow_links", FLAG, 0, 0, O_FOLLOW_LINKS},
    {"force", FLAG, 0, 0, O_FORCE},
    {"auto_unmount", FLAG, 0, 0, O_AUTO_UNMOUNT},
    {"tp", INT, 1, 4096, O_TP},
    {"ep", INT, 1, 4096, O_EP},
    {"pp", INT, 1, 4096, O_PP},
    {"etp", INT, 1, 4096, O_ETP},
    {"device", STR, 0, 0, O_DEVICE},
    {"threads", INT, 1, 8, O_THREADS},
    {"mem", INT, 1, 1 << 20, O_MEM},
    {"meta_mib", INT, 1, 1 << 20, O_META_MIB},
    {"source_cache", STR, 0, 0, O_SOURCE_CACHE},
    {"vocab_divisible_by", INT, 1, 1 << 20, O_VOCAB_DIV},
    {"pp_layers", STR, 0, 0, O_PP_LAYERS},
    {"inject_eio", INT, 1, LLONG_MAX, O_INJECT_EIO},
    {"inject_enomem", INT, 1, LLONG_MAX, O_INJECT_ENOMEM},
    {"inject_delay", INT, 1, 60000, O_INJECT_DELAY},
    {"shard_size", INT, 1, LLONG_MAX, O_SHARD_SIZE},
    {"spec", STR, 0, 0, O_SPEC},
    {"log", STR, 0, 0, O_LOG},
    {"fsname", STR, 0, 0, O_FSNAME},
    {"subtype", STR, 0, 0, O_SUBTYPE},
    {"uid", INT, 0, 4294967294LL, O_UID},
    {"gid", INT, 0, 4294967294LL, O_GID},
    {"ro", FLAG, 0, 0, O_RO},
    {"rw", FLAG, 0, 0, O_RW},
    {"default_permissions", FLAG, 0, 0, O_DEFAULT_PERMISSIONS},
    {"kernel_cache", FLAG, 0, 0, O_KERNEL_CACHE},
    {"umask", STR, 0, 0, O_UMASK},
    /* mount-table options: mount(8) and systemd act on them, the
     * filesystem has nothing to do (no devices, no setuid files, no
     * executables, a read-only tree that keeps no access times) */
    {"defaults", FLAG, 0, 0, O_IGNORED}, {"auto", FLAG, 0, 0, O_IGNORED},
    {"noauto", FLAG, 0, 0, O_IGNORED},   {"nofail", FLAG, 0, 0, O_IGNORED},
    {"_netdev", FLAG, 0, 0, O_IGNORED},  {"user", FLAG, 0, 0, O_IGNORED},
    {"users", FLAG, 0, 0, O_IGNORED},    {"nouser", FLAG, 0, 0, O_IGNORED},
    {"dev", FLAG, 0, 0, O_IGNORED},      {"nodev", FLAG, 0, 0, O_IGNORED},
    {"suid", FLAG, 0, 0, O_IGNORED},     {"nosuid", FLAG, 0, 0, O_IGNORED},
    {"exec", FLAG, 0, 0, O_IGNORED},     {"noexec", FLAG, 0, 0, O_IGNORED},
    {"atime", FLAG, 0, 0, O_IGNORED},    {"noatime", FLAG, 0, 0, O_IGNORED},
    {"relatime", FLAG, 0, 0, O_IGNORED}, {"async", FLAG, 0, 0, O_IGNORED},
};

int d9_cli_parse_int(const char *s, long long lo, long long hi, long long *out) {
  char *e;
  if (*s < '0' || *s > '9') return -1; /* no sign, no blanks */
  errno = 0;
  long long v = strtoll(s, &e, 10);
  if (errno || e == s || *e || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

/* pp_layers=3:2:3 - layers per pipeline stage; names the bad part. */
static int parse_pp_layers(const char *v, d9_mount_opts *mo) {
  size_t len = strlen(v);
  char *copy = malloc(len + 1);
  int *layers = calloc(PP_LAYERS_MAX, sizeof *layers); /* lives as long as the process */
  int n = 0, rc = -1;
  if (!copy || !layers) {
    fprintf(stderr, "d9dfs: -o pp_layers: out of memory\n");
    goto out;
  }
  memcpy(copy, v, len + 1);
  for (char *t = copy, *next; t; t = next) {
    long long x;
    if ((next = strchr(t, ':'))) *next++ = 0;
    if (n == PP_LAYERS_MAX) {
      fprintf(stderr, "d9dfs: -o pp_layers=%s: more than %d stages\n", v, PP_LAYERS_MAX);
      goto out;
    }
    if (d9_cli_parse_int(t, 0, LAYERS_MAX, &x)) {
      fprintf(stderr, "d9dfs: -o pp_layers=%s: '%s' is not a layer count (0..%d); "
              "write the layers of each stage, e.g. pp_layers=3:2:3\n", v, t, LAYERS_MAX);
      goto out;
    }
    layers[n++] = (int)x;
  }
  mo->pp_layers = layers;
  mo->npp_layers = n;
  layers = NULL;
  rc = 0;
out:
  free(copy);
  free(layers);
  return rc;
}

static const opt_def *find_opt(const char *name) {
  for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
    if (!strcmp(opts[i].name, name)) return &opts[i];
  return NULL;
}

/* Apply one checked option. Returns 0 or -1 (message printed). */
static int apply(const opt_def *d, const char *v, long long x, d9_cli *c) {
  d9_mount_opts *mo = &c->mo;
  d9_fs_opts *fo = &c->fo;
  switch (d->id) {
    case O_READAHEAD: fo->readahead_kb = (int)x; break;
    case O_MAX_READ: fo->max_read_kb = (unsigned)x; break;
    case O_SINGLE_THREAD: fo->single_thread = 1; break;
    case O_SPLICE: fo->splice = 1; break;
    case O_NO_SPLICE: fo->splice = 0; break;
    case O_DIRECT_IO: fo->direct_io = 1; break;
    case O_ALLOW_OTHER: fo->allow_other = mo->confine_links = 1; break;
    case O_FOLLOW_LINKS: mo->follow_links = 1; break;
    case O_FORCE: mo->force = 1; break;
    case O_AUTO_UNMOUNT: fo->auto_unmount = 1; break;
    case O_TP: mo->tp = (int)x; break;
    case O_EP: mo->ep = (int)x; break;
    case O_PP: mo->pp = (int)x; break;
    case O_ETP: mo->etp = (int)x; break;
    case O_DEVICE: mo->device = v; break;
    case O_THREADS: mo->threads = (int)x; break;
    case O_MEM: mo->mem_budget_mb = (uint64_t)x; break;
    case O_META_MIB: mo->meta_mib = (uint64_t)x; break;
    case O_SOURCE_CACHE:
      if (strcmp(v, "keep") && strcmp(v, "drop")) {
        fprintf(stderr, "d9dfs: -o source_cache=%s: must be keep or drop\n", v);
        return -1;
      }
      mo->source_cache = v[0] == 'd' ? D9_SOURCE_CACHE_DROP : D9_SOURCE_CACHE_KEEP;
      break;
    case O_VOCAB_DIV: mo->vocab_divisible_by = (int)x; break;
    case O_PP_LAYERS: return parse_pp_layers(v, mo);
    case O_INJECT_EIO: mo->inject_pread_every = (uint64_t)x; break;
    case O_INJECT_ENOMEM: mo->inject_alloc_every = (uint64_t)x; break;
    case O_INJECT_DELAY: mo->inject_delay_ms = (uint64_t)x; break;
    case O_SHARD_SIZE: mo->max_shard_size = (uint64_t)x; break;
    case O_SPEC: c->spec = v; break;
    case O_LOG: fo->log_file = v; break;
    case O_FSNAME: fo->fsname = v; break;
    case O_SUBTYPE: fo->subtype = v; break;
    case O_UID: fo->has_uid = 1, fo->uid = (unsigned)x; break;
    case O_GID: fo->has_gid = 1, fo->gid = (unsigned)x; break;
    case O_RO: case O_DEFAULT_PERMISSIONS: case O_IGNORED: break; /* always so / no-op */
    case O_KERNEL_CACHE: break; /* always: every file is opened with keep_cache */
    case O_RW:
      /* mount(8) adds rw to the helper's options unless ro is given, so
       * only the d9dfs mount form can tell that someone asked for it */
      if (c->helper) break;
      fprintf(stderr, "d9dfs: -o rw: read-only filesystem: d9dfs mounts are always "
              "read-only (drop rw)\n");
      return -1;
    case O_UMASK:
      fprintf(stderr, "d9dfs: -o umask=%s: not supported: modes come from the source "
              "files, read-only (use uid=, gid= or allow_other to share)\n", v);
      return -1;
  }
  return 0;
}

int d9_cli_parse_opts(char *s, d9_cli *c) {
  for (char *tok = s, *next; tok; tok = next) {
    if ((next = strchr(tok, ','))) *next++ = 0;
    if (!*tok) continue; /* "a,,b" */
    char *v = strchr(tok, '=');
    if (v) *v++ = 0;
    const opt_def *d = find_opt(tok);
    long long x = 0;
    if (!d && (!strncmp(tok, "x-", 2) || !strcmp(tok, "comment"))) continue; /* x-systemd.* */
    if (!d) {
      fprintf(stderr, "d9dfs: -o %s: unknown option (d9dfs mount --help lists them)\n", tok);
      return -1;
    }
    if (d->kind == FLAG && v) {
      fprintf(stderr, "d9dfs: -o %s=%s: %s takes no value\n", tok, v, tok);
      return -1;
    }
    if (d->kind != FLAG && (!v || !*v)) {
      if (d->kind == INT)
        fprintf(stderr, "d9dfs: -o %s: needs a value, %s=N with N in %lld..%lld\n", tok, tok,
                d->lo, d->hi);
      else
        fprintf(stderr, "d9dfs: -o %s: needs a value (%s=...)\n", tok, tok);
      return -1;
    }
    if (d->kind == INT && d9_cli_parse_int(v, d->lo, d->hi, &x)) {
      fprintf(stderr, "d9dfs: -o %s=%s: must be %lld..%lld\n", tok, v, d->lo, d->hi);
      return -1;
    }
    if (apply(d, v, x, c)) return -1;
  }
  return 0;
}
