/* applies.c - the spec's "applies_to" and "description", and the check that
 * a spec fits the source it is mounted on (see applies.h). */
#include "applies.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "pattern.h"

/* A name or a non-empty list of at most D9_APPLIES_MAX names. */
static int names(d9_spec *s, const cJSON *v, const char *key, int *n, const char ***out,
                 d9_diag *diag) {
  int cnt = cJSON_IsString(v) ? 1 : cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 0;
  if (cnt < 1 || cnt > D9_APPLIES_MAX)
    return d9_diag_fail(diag, EINVAL, "%s: applies_to.%s: want a name or a list of 1 to %d "
                        "names", s->path, key, D9_APPLIES_MAX);
  const char **l = d9_arena_calloc(s->arena, (size_t)cnt, sizeof *l);
  if (!l) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", s->path);
  if (cJSON_IsString(v)) l[0] = v->valuestring;
  int i = 0;
  const cJSON *e;
  if (cJSON_IsArray(v))
    cJSON_ArrayForEach(e, v) {
      if (!cJSON_IsString(e) || !e->valuestring[0])
        return d9_diag_fail(diag, EINVAL, "%s: applies_to.%s[%d]: not a non-empty string",
                            s->path, key, i);
      l[i++] = e->valuestring;
    }
  *n = cnt;
  *out = l;
  return 0;
}

static int parse_object(d9_spec *s, const cJSON *j, d9_applies *a, d9_diag *diag) {
  static const char *const keys[] = {"model_type", "architectures", "tensors", "dtypes",
                                     "comment"};
  const cJSON *e;
  int rc;
  cJSON_ArrayForEach(e, j) {
    size_t k = 0;
    while (k < sizeof keys / sizeof *keys && strcmp(e->string, keys[k])) k++;
    if (k == sizeof keys / sizeof *keys) {
      char show[D9_DIAG_SHOW_MAX + 8];
      d9_diag_show(show, sizeof show, e->string);
      return d9_diag_fail(diag, EINVAL, "%s: applies_to: unknown key '%s' (want model_type, "
                          "architectures, tensors or dtypes)", s->path, show);
    }
  }
  const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "model_type");
  const cJSON *ar = cJSON_GetObjectItemCaseSensitive(j, "architectures");
  const cJSON *te = cJSON_GetObjectItemCaseSensitive(j, "tensors");
  const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtypes");
  if (!mt && !ar && !te && !dt)
    return d9_diag_fail(diag, EINVAL, "%s: applies_to: names no condition (model_type, "
                        "architectures, tensors, dtypes); write \"applies_to\": \"any\" for "
                        "a spec that fits every checkpoint", s->path);
  if ((mt && (rc = names(s, mt, "model_type", &a->nmodel_types, &a->model_types, diag))) ||
      (ar && (rc = names(s, ar, "architectures", &a->narchs, &a->archs, diag))) ||
      (te && (rc = names(s, te, "tensors", &a->ntensors, &a->tensors, diag))))
    return rc;
  for (int i = 0; i < a->ntensors; i++) {
    char *w = d9_arena_printf(s->arena, "%s: applies_to.tensors[%d]", s->path, i);
    if (!w) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", s->path);
    if ((rc = d9_pattern_check(a->tensors[i], w, diag))) return rc;
  }
  if (dt) {
    const char **l;
    if ((rc = names(s, dt, "dtypes", &a->ndtypes, &l, diag))) return rc;
    for (int i = 0; i < a->ndtypes; i++) {
      a->dtypes[i] = d9_dtype_parse(l[i], strlen(l[i]));
      if (a->dtypes[i] == D9_DTYPE_INVALID) {
        char show[D9_DIAG_SHOW_MAX + 8];
        d9_diag_show(show, sizeof show, l[i]);
        return d9_diag_fail(diag, EINVAL, "%s: applies_to.dtypes[%d]: unknown dtype '%s'",
                            s->path, i, show);
      }
    }
  }
  return 0;
}

int d9_applies_parse(d9_spec *s, d9_diag *diag) {
  const cJSON *d = cJSON_GetObjectItemCaseSensitive(s->root, "description");
  if (d && !cJSON_IsString(d))
    return d9_diag_fail(diag, EINVAL, "%s: \"description\" must be a string", s->path);
  s->description = d ? d->valuestring : NULL;
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(s->root, "applies_to");
  if (!j) return 0;
  d9_applies *a = d9_arena_calloc(s->arena, 1, sizeof *a);
  if (!a) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", s->path);
  if (cJSON_IsString(j) && !strcmp(j->valuestring, "any")) {
    a->any = 1;
  } else if (!cJSON_IsObject(j)) {
    return d9_diag_fail(diag, EINVAL, "%s: \"applies_to\" must be \"any\" or an object "
                        "{model_type, architectures, tensors, dtypes}", s->path);
  } else {
    int rc = parse_object(s, j, a, diag);
    if (rc) return rc;
  }
  s->applies = a;
  return 0;
}

/* "a, b, c" into buf (cut with "..." when it does not fit). */
static void join(char *buf, size_t cap, const char *const *l, int n) {
  size_t at = 0;
  buf[0] = 0;
  for (int i = 0; i < n && at < cap; i++) {
    char show[D9_DIAG_SHOW_MAX + 8];
    d9_diag_show(show, sizeof show, l[i]);
    int w = snprintf(buf + at, cap - at, "%s%s", i ? ", " : "", show);
    if (w < 0 || (size_t)w >= cap - at) {
      if (cap > 4) strcpy(buf + cap - 4, "...");
      return;
    }
    at += (size_t)w;
  }
}

static int in_list(const char *v, const char *const *l, int n) {
  for (int i = 0; v && i < n; i++)
    if (!strcmp(v, l[i])) return 1;
  return 0;
}

/* Write the mismatch into diag (or warn, when forced). */
static int mismatch(int force, d9_diag *warn, d9_diag *diag, const char *msg) {
  if (force) {
    if (warn) d9_diag_fail(warn, EMEDIUMTYPE, "%s; going ahead (--force)", msg);
    return 0;
  }
  return d9_diag_fail(diag, EMEDIUMTYPE, "%s (--force to go ahead anyway)", msg);
}

enum { MSG_MAX = D9_DIAG_MAX - 64, LIST_MAX = 320 };

/* model_type / architectures against config.json. 1 if they fit, else 0
 * with msg filled. */
static int family_fits(const d9_spec *s, const d9_applies *a, const cJSON *config, char *msg) {
  if (!a->nmodel_types && !a->narchs) return 1;
  const cJSON *mt = cJSON_GetObjectItemCaseSensitive(config, "model_type");
  const cJSON *ar = cJSON_GetObjectItemCaseSensitive(config, "architectures"), *e;
  const char *type = cJSON_IsString(mt) ? mt->valuestring : NULL;
  if (in_list(type, a->model_types, a->nmodel_types)) return 1;
  const char *have[D9_APPLIES_MAX];
  int nhave = 0;
  const cJSON *list = cJSON_IsArray(ar) ? ar : NULL;
  cJSON_ArrayForEach(e, list) {
    if (!cJSON_IsString(e) || nhave == D9_APPLIES_MAX) continue;
    if (in_list(e->valuestring, a->archs, a->narchs)) return 1;
    have[nhave++] = e->valuestring;
  }
  char want[LIST_MAX], got[LIST_MAX], typ[LIST_MAX];
  const char *key = a->nmodel_types ? "model_type" : "architectures";
  join(want, sizeof want, a->nmodel_types ? a->model_types : a->archs,
       a->nmodel_types ? a->nmodel_types : a->narchs);
  join(got, sizeof got, have, nhave);
  if (type) d9_diag_show(typ, sizeof typ, type);
  if (!config)
    snprintf(msg, MSG_MAX, "%s applies to %s %s; the source has no config.json", s->path, key,
             want);
  else if (type && nhave && !a->nmodel_types)
    snprintf(msg, MSG_MAX, "%s applies to architectures %s; config.json says %s (model_type %s)",
             s->path, want, got, typ);
  else if (type && nhave)
    snprintf(msg, MSG_MAX, "%s applies to model_type %s; config.json says %s (%s)", s->path,
             want, typ, got);
  else if (type)
    snprintf(msg, MSG_MAX, "%s applies to %s %s; config.json says model_type %s", s->path,
             key, want, typ);
  else if (nhave)
    snprintf(msg, MSG_MAX, "%s applies to %s %s; config.json has no model_type "
             "(architectures %s)", s->path, key, want, got);
  else
    snprintf(msg, MSG_MAX, "%s applies to %s %s; config.json names neither model_type nor "
             "architectures", s->path, key, want);
  return 0;
}

/* tensors and dtypes against the source tensors. */
static int tensors_fit(const d9_spec *s, const d9_applies *a, const d9_catalog *c, char *msg) {
  for (int k = 0; k < a->ntensors; k++) {
    int found = 0;
    for (int i = 0; i < c->ntensors && !found; i++) {
      d9_caps caps = {0};
      found = d9_pattern_match(a->tensors[k], c->tensors[i].name, &caps);
    }
    if (!found) {
      char pat[LIST_MAX];
      d9_diag_show(pat, sizeof pat, a->tensors[k]);
      snprintf(msg, MSG_MAX, "%s applies to checkpoints with tensors '%s'; the source has none",
               s->path, pat);
      return 0;
    }
  }
  for (int i = 0; a->ndtypes && i < c->ntensors; i++) {
    int ok = 0;
    for (int k = 0; k < a->ndtypes; k++) ok |= c->tensors[i].dtype == a->dtypes[k];
    if (ok) continue;
    const char *dn[D9_APPLIES_MAX];
    for (int k = 0; k < a->ndtypes; k++) dn[k] = d9_dtype_name(a->dtypes[k]);
    char want[LIST_MAX], name[LIST_MAX];
    join(want, sizeof want, dn, a->ndtypes);
    d9_diag_show(name, sizeof name, c->tensors[i].name);
    snprintf(msg, MSG_MAX, "%s applies to tensors of dtype %s; the source's '%s' is %s",
             s->path, want, name, d9_dtype_name(c->tensors[i].dtype));
    return 0;
  }
  return 1;
}

int d9_applies_check(const d9_spec *s, int reverse, const d9_catalog *c, const d9_graph *g,
                     int force, d9_diag *warn, d9_diag *diag) {
  char msg[MSG_MAX];
  if (g) {
    /* nskipped: a rule matched, but an optional input was absent */
    if (!s->nrules || reverse || g->nignored || g->nskipped) return 0;
    for (int i = 0; i < g->ntargets; i++)
      if (g->targets[i].rule) return 0;
    snprintf(msg, MSG_MAX, "%s transforms nothing in this source: no tensor matches %s of its "
             "%d rule%s", s->path, s->nrules == 1 ? "the pattern" : "any", s->nrules,
             s->nrules == 1 ? "" : "s");
    return mismatch(force, warn, diag, msg);
  }
  const d9_applies *a = s->applies;
  if (!a || a->any) return 0;
  if (!family_fits(s, a, c->config, msg) || (!reverse && !tensors_fit(s, a, c, msg)))
    return mismatch(force, warn, diag, msg);
  return 0;
}
