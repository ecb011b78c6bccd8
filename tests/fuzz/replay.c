/* replay.c - run a fuzz target's corpus without libFuzzer.
 *
 * usage: fuzz_replay_X PATH...
 * Each PATH is a file, or a directory whose regular files (not recursing,
 * in name order) are each passed once to LLVMFuzzerTestOneInput, exactly
 * as libFuzzer would pass them. Linked with one fuzz_*.c, this makes the
 * seed corpus (and every crash input added to it) a regression test that
 * runs in the normal build, with or without sanitizers. A failing property
 * aborts inside the target; the file name is printed first so the log says
 * which input it was. Exit 0 when every input ran, 1 on a usage or I/O
 * error, 2 when no input was found at all (an empty corpus is a mistake).
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Read a whole file into a malloc'd buffer (exact size: no padding byte
 * for the target to lean on). Returns 0 or -1 with a message printed. */
static int slurp(const char *path, uint8_t **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  struct stat st;
  if (!f || fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
    fprintf(stderr, "replay: %s: %s\n", path, f ? "not a regular file" : strerror(errno));
    if (f) fclose(f);
    return -1;
  }
  size_t n = (size_t)st.st_size;
  uint8_t *b = malloc(n ? n : 1);
  if (!b || fread(b, 1, n, f) != n) {
    fprintf(stderr, "replay: %s: read error\n", path);
    free(b);
    fclose(f);
    return -1;
  }
  fclose(f);
  *out = b;
  *len = n;
  return 0;
}

static int run_file(const char *path) {
  uint8_t *b;
  size_t n;
  if (slurp(path, &b, &n)) return -1;
  fprintf(stderr, "replay: %s (%zu bytes)\n", path, n);
  LLVMFuzzerTestOneInput(b, n);
  free(b);
  return 0;
}

static int cmp_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every regular file of dir, in name order. Returns the count or -1. */
static int run_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) {
    fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
    return -1;
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  int bad = 0, ran = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      char **nn = realloc(names, cap * sizeof *names);
      if (!nn) {
        bad = 1;
        break;
      }
      names = nn;
    }
    size_t l = strlen(dir) + strlen(e->d_name) + 2;
    if (!(names[n] = malloc(l))) {
      bad = 1;
      break;
    }
    snprintf(names[n++], l, "%s/%s", dir, e->d_name);
  }
  closedir(d);
  if (n) qsort(names, n, sizeof *names, cmp_names);
  for (size_t i = 0; i < n; i++) {
    struct stat st;
    if (!bad && stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
      if (run_file(names[i])) bad = 1;
      else ran++;
    }
    free(names[i]);
  }
  free(names);
  return bad ? -1 : ran;
}

int main(int argc, char **argv) {
  int total = 0;
  if (argc < 2) {
    fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
    return 1;
  }
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st)) {
      fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
      return 1;
    }
    int r = S_ISDIR(st.st_mode) ? run_dir(argv[i]) : run_file(argv[i]) ? -1 : 1;
    if (r < 0) return 1;
    total += r;
  }
  printf("replay: %d input%s ran\n", total, total == 1 ? "" : "s");
  return total ? 0 : 2;
}
