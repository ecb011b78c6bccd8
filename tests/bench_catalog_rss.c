/* bench_catalog_rss - open a source directory's catalog (every header
 * parsed, the index cross-checked) and print the peak resident memory
 * (VmHWM) and the time it took; the memory figures of header metadata.
 *
 * usage: bench_catalog_rss SRC [META_MIB]   (META_MIB: the limit, default 512)
 * Generate large headers with tests/py/gen_big_headers.py. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mapper/catalog.h"

static long vm_kb(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  size_t l = strlen(key);
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, key, l)) v = strtol(line + l + 1, NULL, 10);
  if (f) fclose(f);
  return v;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench_catalog_rss SRC [META_MIB]\n");
    return 2;
  }
  uint64_t mib = argc > 2 ? strtoull(argv[2], NULL, 10) : D9_ST_META_MIB_DEFAULT;
  d9_catalog *c = NULL;
  d9_diag diag = {0};
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int rc = d9_catalog_open_limited(argv[1], mib << 20, &c, &diag);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double s = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  printf("rc %d%s%s\ntensors %d\nmetadata charged %.1f MiB (limit %llu MiB)\n"
         "peak rss (VmHWM) %.1f MiB\nrss after open (VmRSS) %.1f MiB\ntime %.2f s\n",
         rc, rc ? ": " : "", rc ? diag.msg : "", c ? c->ntensors : 0,
         c ? c->meta.used / 1048576.0 : 0.0, (unsigned long long)mib,
         vm_kb("VmHWM:") / 1024.0, vm_kb("VmRSS:") / 1024.0, s);
  d9_catalog_close(c);
  return rc ? 1 : 0;
}
