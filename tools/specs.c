/* specs.c - specs and sources by name: SPEC as a name looked up in the
 * spec directories, `d9dfs specs` listing them, and SRC as a Hugging Face
 * model id resolved to a snapshot in the local hub cache (never a
 * download). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"

enum {
  DIRS_MAX = 32,          /* spec directories searched */
  SPEC_JSON_MAX = 16 << 20, /* bytes; larger files are not read for a description */
  NAMES_MAX = 1024,       /* specs listed or compared */
};

typedef struct spec_dirs {
  int n;
  char path[DIRS_MAX][PATH_MAX];
} spec_dirs;

static int is_dir(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static void add_dir(spec_dirs *d, const char *fmt, const char *a, const char *b) {
  if (d->n == DIRS_MAX || !a || !*a) return;
  int w = snprintf(d->path[d->n], PATH_MAX, fmt, a, b ? b : "");
  if (w > 0 && w < PATH_MAX) d->n++;
}

/* The executable's directory, or "" when /proc/self/exe cannot be read. */
static void exe_dir(char *out) {
  ssize_t n = readlink("/proc/self/exe", out, PATH_MAX - 1);
  out[n > 0 ? n : 0] = 0;
  char *slash = strrchr(out, '/');
  if (slash) *slash = 0;
  else out[0] = 0;
}

/* The spec directories, in search order (see d9_cli_find_spec). */
static void spec_dirs_get(spec_dirs *d) {
  d->n = 0;
  const char *env = getenv("D9DFS_SPEC_PATH");
  if (env) {
    char tmp[PATH_MAX * 4];
    snprintf(tmp, sizeof tmp, "%s", env);
    for (char *t = tmp, *next; t; t = next) {
      if ((next = strchr(t, ':'))) *next++ = 0;
      add_dir(d, "%s%s", t, NULL);
    }
  }
  const char *xdg = getenv("XDG_CONFIG_HOME");
  if (xdg && *xdg) add_dir(d, "%s/d9dfs/mounts%s", xdg, NULL);
  else add_dir(d, "%s/.config/d9dfs/mounts%s", getenv("HOME"), NULL);
  char exe[PATH_MAX];
  exe_dir(exe);
  char prefix[PATH_MAX];
  snprintf(prefix, sizeof prefix, "%s", exe);
  char *up = strrchr(prefix, '/'); /* PREFIX/bin -> PREFIX */
  if (up) *up = 0;
  if (*exe && up) add_dir(d, "%s/share/d9dfs/mounts%s", *prefix ? prefix : "", NULL);
#if defined(D9DFS_SOURCE_DIR) && defined(D9DFS_BUILD_DIR)
  /* an uninstalled build: the binary still sits in the build tree */
  char real[PATH_MAX];
  if (*exe && realpath(D9DFS_BUILD_DIR, real) && !strcmp(real, exe))
    add_dir(d, "%s/mounts%s", D9DFS_SOURCE_DIR, NULL);
#endif
}

/* NAME.json in dir into out: 1 if it is a file. */
static int spec_in(const char *dir, const char *name, char *out) {
  size_t n = strlen(name);
  int has_ext = n > 5 && !strcmp(name + n - 5, ".json");
  int w = snprintf(out, PATH_MAX, "%s/%s%s", dir, name, has_ext ? "" : ".json");
  return w > 0 && w < PATH_MAX && is_file(out);
}

/* Levenshtein distance of a and b (names are short), capped at 99. */
static int edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 98 || lb > 98) return 99;
  int prev[100], cur[100];
  for (size_t j = 0; j <= lb; j++) prev[j] = (int)j;
  for (size_t i = 1; i <= la; i++) {
    cur[0] = (int)i;
    for (size_t j = 1; j <= lb; j++) {
      int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
      int del = prev[j] + 1, ins = cur[j - 1] + 1;
      cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
    }
    memcpy(prev, cur, sizeof(int) * (lb + 1));
  }
  return prev[lb];
}

/* The spec names (file names without .json) in dir, sorted; returns how
 * many went into names (malloc'd strings the caller frees). */
static int list_names(const char *dir, char **names, int max) {
  DIR *d = opendir(dir);
  int n = 0;
  if (!d) return 0;
  for (struct dirent *e; (e = readdir(d)) && n < max;) {
    size_t len = strlen(e->d_name);
    if (e->d_name[0] == '.' || len <= 5 || strcmp(e->d_name + len - 5, ".json")) continue;
    if ((names[n] = strndup(e->d_name, len - 5))) n++;
  }
  closedir(d);
  for (int i = 1; i < n; i++) /* insertion sort: a handful of names */
    for (int j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
      char *t = names[j];
      names[j] = names[j - 1];
      names[j - 1] = t;
    }
  return n;
}

int d9_cli_find_spec(const char *spec, char *out) {
  if (strchr(spec, '/') || is_file(spec)) { /* a path: the spec loader reports */
    snprintf(out, PATH_MAX, "%s", spec);
    return 0;
  }
  spec_dirs d;
  spec_dirs_get(&d);
  for (int i = 0; i < d.n; i++)
    if (spec_in(d.path[i], spec, out)) return 0;
  fprintf(stderr, "d9dfs: %s: no such spec file, and no spec of that name in", spec);
  for (int i = 0; i < d.n; i++) fprintf(stderr, "%s %s", i ? "," : "", d.path[i]);
  fprintf(stderr, "%s\n", d.n ? "" : " (no spec directory)");
  /* near matches: a small edit distance, or one name inside the other */
  char *names[NAMES_MAX];
  int shown = 0;
  size_t sl = strlen(spec);
  for (int i = 0; i < d.n; i++) {
    int n = list_names(d.path[i], names, NAMES_MAX);
    for (int k = 0; k < n; k++) {
      int dist = edit_distance(spec, names[k]);
      int limit = sl < 6 ? 2 : (int)sl / 3;
      if (dist <= limit || (sl >= 4 && strstr(names[k], spec))) {
        fprintf(stderr, "%s%s", shown++ ? ", " : "d9dfs: did you mean: ", names[k]);
      }
      free(names[k]);
    }
  }
  fprintf(stderr, "%s", shown ? "\n" : "d9dfs: `d9dfs specs` lists the specs found by name\n");
  return -1;
}

/* The top-level "description" of the spec file at path, in buf; "" when it
 * has none or cannot be read. */
static void spec_description(const char *path, char *buf, size_t cap) {
  buf[0] = 0;
  FILE *f = fopen(path, "re");
  if (!f) return;
  char *text = malloc(SPEC_JSON_MAX + 1);
  size_t n = text ? fread(text, 1, SPEC_JSON_MAX + 1, f) : 0;
  fclose(f);
  if (text && n <= SPEC_JSON_MAX) {
    text[n] = 0;
    cJSON *j = cJSON_Parse(text);
    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(j, "description");
    if (cJSON_IsString(desc)) {
      snprintf(buf, cap, "%s", desc->valuestring);
      for (char *p = buf; *p; p++) /* one line */
        if (*p == '\n' || *p == '\t') *p = ' ';
    }
    cJSON_Delete(j);
  }
  free(text);
}

/* Whether the spec at path applies to the checkpoint src: 1 (it plans),
 * 0 with why set (its applies_to does not fit, or it does not plan). */
static int spec_applies(const char *src, const char *path, char *why, size_t cap) {
  d9_mount_opts o = {.src_dir = src, .spec_path = path, .threads = 1};
  d9_diag diag = {0};
  d9_mount *m = NULL;
  int rc = d9_mount_open(&o, &m, &diag);
  d9_mount_close(m);
  if (!rc) return 1;
  snprintf(why, cap, "%s", rc == -EMEDIUMTYPE ? diag.msg : diag.msg[0] ? diag.msg : strerror(-rc));
  return 0;
}

int d9_cli_specs(const char *src) {
  spec_dirs d;
  spec_dirs_get(&d);
  char *names[NAMES_MAX], *seen[NAMES_MAX];
  char real[PATH_MAX];
  int nseen = 0, total = 0, napply = 0;
  if (src) {
    if (d9_cli_find_src(src, real)) return 1;
    printf("# the specs that apply to %s (applies_to checked, the plan built)\n", real);
  }
  for (int i = 0; i < d.n; i++) {
    if (!is_dir(d.path[i])) continue;
    int n = list_names(d.path[i], names, NAMES_MAX);
    if (n) printf("# %s\n", d.path[i]);
    for (int k = 0; k < n; k++) {
      int shadowed = 0;
      for (int s = 0; s < nseen && !shadowed; s++) shadowed = !strcmp(seen[s], names[k]);
      char path[PATH_MAX], desc[512], why[1024];
      spec_in(d.path[i], names[k], path);
      spec_description(path, desc, sizeof desc);
      total++;
      if (src && !shadowed && !spec_applies(real, path, why, sizeof why)) {
        printf("%-32s (does not apply: %s)\n", names[k], why);
      } else {
        napply += !shadowed;
        printf("%-32s %s%s\n", names[k], shadowed ? "(shadowed by the one above) " : "", desc);
      }
      if (!shadowed && nseen < NAMES_MAX) seen[nseen++] = names[k];
      else free(names[k]);
    }
  }
  for (int s = 0; s < nseen; s++) free(seen[s]);
  if (!total) {
    fprintf(stderr, "d9dfs: specs: no spec files in");
    for (int i = 0; i < d.n; i++) fprintf(stderr, "%s %s", i ? "," : "", d.path[i]);
    fprintf(stderr, "\n");
    return 1;
  }
  if (src && !napply) {
    fprintf(stderr, "d9dfs: specs: no spec applies to %s\n", real);
    return 1;
  }
  return 0;
}

/* 1 if s is 40 hex digits (a commit hash). */
static int is_commit(const char *s) {
  size_t n = 0;
  while (isxdigit((unsigned char)s[n])) n++;
  return n == 40 && !s[n];
}

/* 1 if s is a plain path component usable in a hub cache path. */
static int plain_part(const char *s, size_t n) {
  if (!n || (n <= 2 && s[0] == '.' && (n == 1 || s[1] == '.'))) return 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] == '/' || (unsigned char)s[i] < 0x20) return 0;
  return 1;
}

int d9_cli_find_src(const char *src, char *out) {
  const char *slash = strchr(src, '/'), *at = strrchr(src, '@');
  if (is_dir(src) || !slash || strchr(slash + 1, '/') || src[0] == '.' ||
      (at && at < slash)) { /* not ORG/NAME[@REV]: a path */
    snprintf(out, PATH_MAX, "%s", src);
    return 0;
  }
  size_t lorg = (size_t)(slash - src), lname = at ? (size_t)(at - slash - 1) : strlen(slash + 1);
  const char *rev = at ? at + 1 : "main";
  if (!plain_part(src, lorg) || !plain_part(slash + 1, lname) ||
      !plain_part(rev, strlen(rev))) {
    fprintf(stderr, "d9dfs: %s: not a directory, nor a model id ORG/NAME[@REVISION]\n", src);
    return -1;
  }
  char hub[PATH_MAX], repo[PATH_MAX], ref[PATH_MAX], hash[64] = "";
  const char *env;
  if ((env = getenv("HF_HUB_CACHE")) && *env) snprintf(hub, sizeof hub, "%s", env);
  else if ((env = getenv("HF_HOME")) && *env) snprintf(hub, sizeof hub, "%s/hub", env);
  else if ((env = getenv("XDG_CACHE_HOME")) && *env)
    snprintf(hub, sizeof hub, "%s/huggingface/hub", env);
  else snprintf(hub, sizeof hub, "%s/.cache/huggingface/hub", getenv("HOME") ? getenv("HOME") : "");
  snprintf(repo, sizeof repo, "%s/models--%.*s--%.*s", hub, (int)lorg, src, (int)lname,
           slash + 1);
  if (is_commit(rev)) {
    snprintf(hash, sizeof hash, "%s", rev);
    ref[0] = 0;
  } else {
    snprintf(ref, sizeof ref, "%s/refs/%s", repo, rev);
    FILE *f = fopen(ref, "re");
    if (f) {
      if (!fgets(hash, sizeof hash, f)) hash[0] = 0;
      fclose(f);
      hash[strcspn(hash, "\r\n")] = 0;
    }
  }
  int w = snprintf(out, PATH_MAX, "%s/snapshots/%s", repo, hash);
  if (*hash && is_commit(hash) && w > 0 && w < PATH_MAX && is_dir(out)) return 0;
  char refinfo[PATH_MAX + 96] = "";
  if (*ref)
    snprintf(refinfo, sizeof refinfo, "%s (%s%s), ", ref, *hash ? "-> " : "missing", hash);
  fprintf(stderr, "d9dfs: %s: not a directory, and no snapshot of model %.*s/%.*s revision "
          "%s in the local Hugging Face cache: tried %s%s (d9dfs never downloads: fetch it "
          "first, or set HF_HUB_CACHE or HF_HOME)\n", src, (int)lorg, src, (int)lname,
          slash + 1, rev, refinfo, *hash ? out : repo);
  return -1;
}
