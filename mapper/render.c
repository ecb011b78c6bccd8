/* render.c - what the mount says about itself: .d9dfs/stats.json (the
 * counters, rendered at each open), .d9dfs/report.json (the validation
 * findings) and the plan text of `d9dfs plan`.
 *
 * stat must give the size a read returns, and stats.json's counters grow
 * while the mount serves. So stats.json is padded: its size is that of the
 * rendering with every counter at its widest (20 digits), and a rendering
 * fills the room its counters leave with spaces after the closing brace
 * (JSON allows trailing whitespace), then a newline. The size depends only
 * on the front end's members, set once before serving
 * (d9_mount_set_frontend). */
#include "mount_impl.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json_strict.h"

/* .d9dfs/report.json: the validation findings (lenient mounts), a JSON
 * array of strings. */
static int render_report(const d9_mount *m, char **out, size_t *out_len) {
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; a && i < m->graph->nreport; i++)
    cJSON_AddItemToArray(a, cJSON_CreateString(m->graph->report[i]));
  char *t = a ? cJSON_Print(a) : NULL;
  cJSON_Delete(a);
  if (!t) return -ENOMEM;
  size_t n = strlen(t);
  char *buf = realloc(t, n + 2);
  if (!buf) {
    free(t);
    return -ENOMEM;
  }
  buf[n] = '\n';
  buf[n + 1] = 0;
  *out = buf;
  *out_len = n + 1;
  return 0;
}

/* stats.json without its padding and final newline into buf (cap bytes,
 * buf may be NULL for cap 0); returns the length it takes, as snprintf. */
static int stats_text(const d9_stats *s, int threads, uint64_t mem_mib, const char *fe,
                      char *buf, size_t cap) {
  return snprintf(buf, cap,
                  "{\n  \"bytes_served\": %llu,\n  \"bytes_read_source\": %llu,\n"
                  "  \"reads\": %llu,\n  \"tensors_evaluated\": %llu,\n  \"errors\": %llu,\n"
                  "  \"split_reads\": %llu,\n  \"threads\": %d,\n  \"mem_mib\": %llu,\n"
                  "  \"frontend\": {%s}\n}",
                  (unsigned long long)s->bytes_served, (unsigned long long)s->bytes_read_source,
                  (unsigned long long)s->reads, (unsigned long long)s->tensors_evaluated,
                  (unsigned long long)s->errors, (unsigned long long)s->split_reads, threads,
                  (unsigned long long)mem_mib, fe);
}

/* stats.json's size with front end members fe: every counter at its
 * widest, plus the newline. */
static uint64_t stats_size(const d9_mount *m, const char *fe) {
  d9_stats most = {UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX};
  return (uint64_t)stats_text(&most, INT_MAX, d9_readpool_mem_mib(m->pool), fe, NULL, 0) + 1;
}

static int render_stats(const d9_mount *m, char **out, size_t *out_len) {
  d9_stats s;
  d9_mount_get_stats(m, &s);
  const char *fe = __atomic_load_n(&m->frontend, __ATOMIC_ACQUIRE);
  if (!fe) fe = "";
  size_t size = (size_t)stats_size(m, fe);
  char *buf = malloc(size + 1);
  if (!buf) return -ENOMEM;
  int n = stats_text(&s, d9_readpool_threads(m->pool), d9_readpool_mem_mib(m->pool), fe, buf,
                     size + 1);
  if (n < 0 || (size_t)n >= size) { /* cannot happen: the widest rendering fits */
    free(buf);
    return -EIO;
  }
  memset(buf + n, ' ', size - 1 - (size_t)n);
  buf[size - 1] = '\n';
  buf[size] = 0;
  *out = buf;
  *out_len = size;
  return 0;
}

int d9_mount_size_dynamic(d9_mount *m) {
  char *t;
  size_t n;
  int rc = render_report(m, &t, &n);
  if (rc) return rc;
  free(t);
  m->nodes[m->report_node].size = n;
  m->nodes[m->stats_node].size = stats_size(m, m->frontend ? m->frontend : "");
  return 0;
}

int d9_mount_set_frontend(d9_mount *m, const char *members) {
  char *c = strdup(members);
  if (!c) return -ENOMEM;
  free(__atomic_exchange_n(&m->frontend, c, __ATOMIC_ACQ_REL));
  m->nodes[m->stats_node].size = stats_size(m, c);
  return 0;
}

int d9_mount_render(d9_mount *m, int idx, char **out, size_t *out_len) {
  if (idx == m->report_node) return render_report(m, out, out_len);
  if (idx == m->stats_node) return render_stats(m, out, out_len);
  return -EINVAL;
}

int d9_mount_print_plan(const d9_mount *m, int fd) {
  FILE *f = fdopen(dup(fd), "w");
  if (!f) return -errno;
  const d9_plan *p = m->plan;
  fprintf(f, "source: %s (%d tensors in %d shard%s)\nspec: %s (%d rules)\n", m->cat->dir,
          m->cat->ntensors, m->cat->nshards, m->cat->nshards == 1 ? "" : "s", m->spec->path,
          m->spec->nrules);
  for (int i = 0; i < m->spec->nparams; i++)
    fprintf(f, "param %s = %lld\n", m->spec->params[i].name,
            (long long)m->spec->params[i].value);
  for (int i = 0; i < p->nfiles; i++) {
    const d9_vfile *vf = &p->files[i];
    fprintf(f, "%s  %llu bytes%s\n", vf->name, (unsigned long long)vf->size,
            vf->kind == D9_VF_COPY ? "  (copied)" : vf->kind == D9_VF_BLOB ? "  (generated)" : "");
    for (int e = 0; e < vf->nextents; e++) {
      const d9_target *t = vf->extents[e].target;
      char sh[160];
      fprintf(f, "  %-64s %-8s %-20s <- %s\n", t->name, d9_dtype_name(t->node->dtype),
              d9_shape_str(t->node->shape, t->node->ndim, sh, sizeof sh),
              t->rule ? t->rule->where : "pass-through");
    }
  }
  for (int i = 0; i < m->graph->nreport; i++) fprintf(f, "finding: %s\n", m->graph->report[i]);
  for (int i = 0; i < m->spec->nlossy; i++) fprintf(f, "lossy: %s\n", m->spec->lossy[i]);
  fprintf(f, "validation: %s (%d targets in %d groups, %d finding%s)\n",
          m->graph->nreport ? "mounted leniently" : "ok", m->graph->ntargets, m->graph->ngroups,
          m->graph->nreport, m->graph->nreport == 1 ? "" : "s");
  return fclose(f) ? -EIO : 0;
}
