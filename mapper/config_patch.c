/* config_patch.c - the spec's config patch as an edit of config.json's
 * text, and its undo (see config_patch.h). The text was parsed strictly
 * before it comes here (catalog.c), so the scanner below only locates
 * members; it still refuses anything it does not understand rather than
 * read past the end. */
#include "config_patch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "json_strict.h"
#include "st_header.h"

/* ---- a growing byte buffer ---- */

typedef struct sbuf {
  char *s;
  size_t n, cap;
  int oom;
} sbuf;

static void sb_add(sbuf *b, const char *p, size_t n) {
  if (b->oom) return;
  if (n >= SIZE_MAX - b->n) {
    b->oom = 1;
    return;
  }
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
      b->oom = 1;
      return;
    }
    b->s = s, b->cap = cap;
  }
  memcpy(b->s + b->n, p, n);
  b->n += n;
  b->s[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

/* s[0..n) as a JSON string: quotes, backslashes and control bytes escaped,
 * everything else (valid UTF-8, checked when it was read) as is. */
static void sb_json_string(sbuf *b, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  sb_add(b, "\"", 1);
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    char e[7] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15], 0};
    if (ch == '"' || ch == '\\') e[1] = (char)ch, e[2] = 0;
    else if (ch == '\n') e[1] = 'n', e[2] = 0;
    else if (ch == '\t') e[1] = 't', e[2] = 0;
    else if (ch == '\r') e[1] = 'r', e[2] = 0;
    if (ch < 0x20 || ch == '"' || ch == '\\') sb_str(b, e);
    else sb_add(b, s + i, 1);
  }
  sb_add(b, "\"", 1);
}

/* ---- locating an object's members ---- */

typedef struct member {
  size_t k, v, vend; /* the key's opening quote; the value's bytes [v, vend) */
  char *key;         /* decoded; malloc'd */
} member;

typedef struct object {
  size_t open, close; /* offsets of '{' and '}' */
  int n;
  member *m;
} object;

static void object_free(object *o) {
  for (int i = 0; i < o->n; i++) free(o->m[i].key);
  free(o->m);
  o->m = NULL;
  o->n = 0;
}

static size_t skip_ws(const char *t, size_t i, size_t n) {
  while (i < n && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r')) i++;
  return i;
}

/* One past the string starting at t[i] == '"', or 0. */
static size_t skip_string(const char *t, size_t i, size_t n) {
  for (i++; i < n; i++) {
    if (t[i] == '\\') i++;
    else if (t[i] == '"') return i + 1;
  }
  return 0;
}

/* One past the value starting at t[i], or 0. */
static size_t skip_value(const char *t, size_t i, size_t n) {
  if (i >= n) return 0;
  if (t[i] == '"') return skip_string(t, i, n);
  if (t[i] != '{' && t[i] != '[') {
    size_t s = i;
    while (i < n && !strchr(",}] \t\r\n", t[i])) i++;
    return i > s ? i : 0;
  }
  int depth = 0;
  for (; i < n; i++) {
    if (t[i] == '"') {
      if (!(i = skip_string(t, i, n))) return 0;
      i--;
    } else if (t[i] == '{' || t[i] == '[') {
      depth++;
    } else if ((t[i] == '}' || t[i] == ']') && --depth == 0) {
      return i + 1;
    }
  }
  return 0;
}

/* The key t[k, kend) (quotes included) decoded into *out (malloc'd).
 * 0, -EINVAL (a bad escape) or -ENOMEM. */
static int decode_key(const char *t, size_t k, size_t kend, char **out) {
  if (!memchr(t + k + 1, '\\', kend - k - 2)) {
    char *s = malloc(kend - k - 1);
    if (!s) return -ENOMEM;
    memcpy(s, t + k + 1, kend - k - 2), s[kend - k - 2] = 0;
    *out = s;
    return 0;
  }
  cJSON *j = cJSON_ParseWithLength(t + k, kend - k);
  int rc = cJSON_IsString(j) ? 0 : -EINVAL;
  if (!rc && !(*out = strdup(j->valuestring))) rc = -ENOMEM;
  cJSON_Delete(j); /* cJSON's own failures read as -EINVAL: the text was checked before */
  return rc;
}

/* The members of the object at t[at..] (after whitespace). 0, -EINVAL
 * (not an object) or -ENOMEM. */
static int scan_object(const char *t, size_t at, size_t n, object *o) {
  memset(o, 0, sizeof *o);
  size_t i = skip_ws(t, at, n);
  if (i >= n || t[i] != '{') return -EINVAL;
  o->open = i;
  i = skip_ws(t, i + 1, n);
  int cap = 0;
  while (i < n && t[i] != '}') {
    member mb = {.k = i};
    size_t kend = t[i] == '"' ? skip_string(t, i, n) : 0;
    if (!kend) goto bad;
    i = skip_ws(t, kend, n);
    if (i >= n || t[i] != ':') goto bad;
    mb.v = skip_ws(t, i + 1, n);
    if (!(mb.vend = skip_value(t, mb.v, n))) goto bad;
    if (o->n == cap) {
      cap = cap ? 2 * cap : 32;
      member *m = realloc(o->m, (size_t)cap * sizeof *m);
      if (!m) goto oom;
      o->m = m;
    }
    int rc = decode_key(t, mb.k, kend, &mb.key);
    if (rc == -ENOMEM) goto oom;
    if (rc) goto bad;
    o->m[o->n++] = mb;
    i = skip_ws(t, mb.vend, n);
    if (i < n && t[i] == ',') i = skip_ws(t, i + 1, n);
    else if (i >= n || t[i] != '}') goto bad;
  }
  if (i >= n) goto bad;
  o->close = i;
  return 0;
bad:
  object_free(o);
  return -EINVAL;
oom:
  object_free(o);
  return -ENOMEM;
}

static int find(const object *o, const char *key) {
  for (int i = 0; i < o->n; i++)
    if (!strcmp(o->m[i].key, key)) return i;
  return -1;
}

/* The file's member separator (",\n  ") and key-value separator (": "). */
static void separators(const char *t, const object *o, sbuf *sep, sbuf *colon) {
  if (o->n >= 2) {
    sb_add(sep, t + o->m[0].vend, o->m[1].k - o->m[0].vend);
  } else if (o->n == 1) {
    sb_str(sep, ",");
    sb_add(sep, t + o->open + 1, o->m[0].k - o->open - 1);
  } else {
    sb_str(sep, ",\n  ");
  }
  if (o->n) {
    size_t kend = skip_string(t, o->m[0].k, o->m[0].v);
    sb_add(colon, t + kend, o->m[0].v - kend);
  } else {
    sb_str(colon, ": ");
  }
}

/* ---- edits: replace t[from, to) by text ---- */

typedef struct edit {
  size_t from, to;
  const char *text;
  size_t len;
} edit;

static int edit_cmp(const void *a, const void *b) {
  const edit *x = a, *y = b;
  if (x->from != y->from) return x->from < y->from ? -1 : 1;
  return (x->to > x->from) - (y->to > y->from); /* an insertion before a cut at one place */
}

/* t[0..n) with the (non-overlapping) edits made, into out. */
static void apply_edits(const char *t, size_t n, edit *e, int ne, sbuf *out) {
  qsort(e, (size_t)ne, sizeof *e, edit_cmp);
  size_t at = 0;
  for (int i = 0; i < ne; i++) {
    if (e[i].from > at) sb_add(out, t + at, e[i].from - at);
    sb_add(out, e[i].text, e[i].len);
    if (e[i].to > at) at = e[i].to;
  }
  sb_add(out, t + at, n - at);
}

/* Members marked cut[i] taken out with their separator; the layout of each
 * (its neighbour and the bytes around it) into *layout as the record's
 * "layout" members when layout is not NULL. Adds edits to e[*ne..]. */
static void cut_members(const char *t, const object *o, const int *cut, edit *e, int *ne,
                        sbuf *layout) {
  int f = 0, any_kept = 0;
  while (f < o->n && cut[f]) f++;
  any_kept = f < o->n;
  if (!any_kept && !layout && o->n) { /* undo: the object was empty */
    e[(*ne)++] = (edit){o->open + 1, o->close, "", 0};
    return;
  }
  for (int i = 0; i < o->n; i++) {
    if (!cut[i]) continue;
    const member *m = &o->m[i];
    edit *x = &e[(*ne)++];
    x->text = "", x->len = 0;
    if (!any_kept) {
      x->from = m->k;
      x->to = i + 1 < o->n ? o->m[i + 1].k : m->vend;
      continue;
    }
    if (i < f) {
      x->from = m->k, x->to = o->m[i + 1].k;
    } else {
      x->from = o->m[i - 1].vend, x->to = m->vend;
    }
    if (!layout) continue;
    if (layout->n > 1) sb_str(layout, ", ");
    sb_json_string(layout, m->key, strlen(m->key));
    if (i < f) {
      sb_str(layout, ": {\"before\": ");
      sb_json_string(layout, o->m[i + 1].key, strlen(o->m[i + 1].key));
      sb_str(layout, ", \"head\": ");
      sb_json_string(layout, t + m->k, m->v - m->k);
      sb_str(layout, ", \"trail\": ");
      sb_json_string(layout, t + m->vend, o->m[i + 1].k - m->vend);
    } else {
      sb_str(layout, ": {\"after\": ");
      sb_json_string(layout, o->m[i - 1].key, strlen(o->m[i - 1].key));
      sb_str(layout, ", \"lead\": ");
      sb_json_string(layout, t + o->m[i - 1].vend, m->k - o->m[i - 1].vend);
      sb_str(layout, ", \"head\": ");
      sb_json_string(layout, t + m->k, m->v - m->k);
    }
    sb_str(layout, "}");
  }
}

/* Where new members go and what precedes the first: after the last member
 * not cut, else at the first member's place (or inside "{}"). */
static size_t append_at(const object *o, const int *cut, const char **lead) {
  for (int i = o->n - 1; i >= 0; i--)
    if (!cut || !cut[i]) return *lead = NULL, o->m[i].vend;
  *lead = "\n  ";
  return o->n ? o->m[0].k : o->open + 1;
}

/* 1 if some member is not cut. */
static int lead_kept(const object *o, const int *cut) {
  for (int i = 0; i < o->n; i++)
    if (!cut[i]) return 1;
  return 0;
}

/* One new member "key": value (value_text of vlen bytes) into b. */
static void add_member(sbuf *b, int first, const char *lead, const sbuf *sep,
                       const sbuf *colon, const char *key, const char *value, size_t vlen) {
  if (first && lead) sb_str(b, lead);
  else sb_add(b, sep->s, sep->n);
  sb_json_string(b, key, strlen(key));
  sb_add(b, colon->s, colon->n);
  sb_add(b, value, vlen);
}

/* ---- the forward patch ---- */

typedef struct setting {
  const char *key;
  const cJSON *value;
  const char *raw; /* the value as the spec writes it, or NULL */
} setting;

int d9_config_set_raw(d9_spec *s, const char *text, size_t len, d9_diag *diag) {
  object top, cfg = {0}, set = {0};
  int rc = scan_object(text, 0, len, &top), k;
  if (rc) goto out;
  if ((k = find(&top, "config")) < 0 || (rc = scan_object(text, top.m[k].v, top.m[k].vend, &cfg)))
    goto out;
  if ((k = find(&cfg, "set")) < 0 || (rc = scan_object(text, cfg.m[k].v, cfg.m[k].vend, &set)))
    goto out;
  if (set.n != cJSON_GetArraySize(s->config_set)) goto out;
  const char **raw = d9_arena_calloc(s->arena, (size_t)set.n + 1, sizeof *raw);
  rc = raw ? 0 : -ENOMEM;
  for (int i = 0; raw && i < set.n; i++)
    if (!(raw[i] = d9_arena_strndup(s->arena, text + set.m[i].v, set.m[i].vend - set.m[i].v)))
      rc = -ENOMEM;
  if (!rc) s->config_set_raw = raw;
out:
  object_free(&top), object_free(&cfg), object_free(&set);
  return rc == -ENOMEM ? d9_diag_fail(diag, ENOMEM, "%s: out of memory", s->path) : 0;
}

/* The spec's "set" with torch_dtype/dtype treated as one setting. */
static int settings(const d9_spec *s, const object *o, setting *out, int max) {
  static const char *const alias[2] = {"torch_dtype", "dtype"};
  int n = 0, i = -1;
  const cJSON *e;
  cJSON_ArrayForEach(e, s->config_set) {
    i++;
    if (!strcmp(e->string, D9_CONFIG_UNDO_KEY) || n + 2 > max) continue;
    const char *raw = s->config_set_raw ? s->config_set_raw[i] : NULL;
    int a = !strcmp(e->string, alias[0]) ? 0 : !strcmp(e->string, alias[1]) ? 1 : -1;
    if (a < 0 || cJSON_GetObjectItemCaseSensitive(s->config_set, alias[!a])) {
      out[n++] = (setting){e->string, e, raw};
      continue;
    }
    int self = find(o, alias[a]) >= 0, other = find(o, alias[!a]) >= 0;
    if (other) out[n++] = (setting){alias[!a], e, raw};
    if (self || !other) out[n++] = (setting){alias[a], e, raw};
  }
  return n;
}

int d9_spec_apply_config(const d9_spec *s, const d9_catalog *c, char **out, size_t *len,
                         d9_diag *diag) {
  const char *t = c->config_text;
  size_t n = c->config_len;
  object o;
  int rc = t ? scan_object(t, 0, n, &o) : -EINVAL;
  if (rc == -ENOMEM) return d9_diag_fail(diag, ENOMEM, "config.json: out of memory");
  if (rc) return d9_diag_fail(diag, EINVAL, "config.json: not a json object");
  int nset = cJSON_GetArraySize(s->config_set), maxset = 2 * nset + 2;
  int *act = calloc((size_t)o.n + 1, sizeof *act); /* 1 cut, 2 replaced */
  int *cut = calloc((size_t)o.n + 1, sizeof *cut);
  setting *set = calloc((size_t)maxset, sizeof *set);
  char **printed = calloc((size_t)maxset, sizeof *printed);
  edit *e = calloc((size_t)o.n + (size_t)maxset + 2, sizeof *e);
  sbuf removed = {0}, replaced = {0}, added = {0}, layout = {0}, adds = {0}, sep = {0},
       colon = {0}, rec = {0}, res = {0};
  int ne = 0, nadd = 0;
  rc = -ENOMEM;
  if (!act || !cut || !set || !printed || !e) goto out;
  for (int i = 0; i < s->nconfig_delete; i++) {
    int k = find(&o, s->config_delete[i]);
    if (k >= 0) act[k] = 1;
  }
  int k = find(&o, D9_CONFIG_UNDO_KEY); /* converted before: the earlier record goes too */
  if (k >= 0) act[k] = 1;
  nset = settings(s, &o, set, maxset);
  separators(t, &o, &sep, &colon);
  for (int i = 0; i < nset; i++) {
    printed[i] = set[i].raw ? strdup(set[i].raw) : cJSON_PrintUnformatted(set[i].value);
    if (!printed[i]) goto out;
    if ((k = find(&o, set[i].key)) >= 0) {
      act[k] = 2; /* set wins over delete: replaced in place */
      e[ne++] = (edit){o.m[k].v, o.m[k].vend, printed[i], strlen(printed[i])};
    }
  }
  sb_str(&removed, "{"), sb_str(&replaced, "{"), sb_str(&added, "["), sb_str(&layout, "{");
  for (int i = 0; i < o.n; i++) {
    sbuf *to = act[i] == 1 ? &removed : act[i] == 2 ? &replaced : NULL;
    if (!to) continue;
    if (to->n > 1) sb_str(to, ", ");
    sb_json_string(to, o.m[i].key, strlen(o.m[i].key));
    sb_str(to, ": ");
    sb_add(to, t + o.m[i].v, o.m[i].vend - o.m[i].v);
  }
  for (int i = 0; i < o.n; i++) cut[i] = act[i] == 1;
  cut_members(t, &o, cut, e, &ne, &layout);
  const char *lead;
  size_t at = append_at(&o, cut, &lead);
  for (int i = 0; i < nset; i++) {
    if (find(&o, set[i].key) >= 0) continue;
    add_member(&adds, nadd == 0, lead, &sep, &colon, set[i].key, printed[i], strlen(printed[i]));
    if (added.n > 1) sb_str(&added, ", ");
    sb_json_string(&added, set[i].key, strlen(set[i].key));
    nadd++;
  }
  sb_str(&removed, "}"), sb_str(&replaced, "}"), sb_str(&added, "]"), sb_str(&layout, "}");
  sb_str(&rec, "{\"removed\": ");
  sb_add(&rec, removed.s, removed.n);
  sb_str(&rec, ", \"replaced\": ");
  sb_add(&rec, replaced.s, replaced.n);
  sb_str(&rec, ", \"added\": ");
  sb_add(&rec, added.s, added.n);
  sb_str(&rec, ", \"layout\": ");
  sb_add(&rec, layout.s, layout.n);
  if (!lead_kept(&o, cut)) { /* no member left: the bytes between the braces */
    sb_str(&rec, ", \"inner\": ");
    sb_json_string(&rec, t + o.open + 1, o.close - o.open - 1);
  }
  sb_str(&rec, "}");
  if (rec.oom) goto out;
  add_member(&adds, nadd == 0, lead, &sep, &colon, D9_CONFIG_UNDO_KEY, rec.s, rec.n);
  if (lead && o.close == o.open + 1) sb_str(&adds, "\n");
  e[ne++] = (edit){at, at, adds.s, adds.n};
  if (adds.oom || sep.oom || colon.oom) goto out;
  apply_edits(t, n, e, ne, &res);
  if (res.oom) goto out;
  *out = res.s, *len = res.n;
  res.s = NULL;
  rc = 0;
out:
  for (int i = 0; printed && i < maxset; i++) free(printed[i]); /* cJSON's hooks are malloc's */
  free(printed), free(set), free(act), free(cut), free(e);
  free(removed.s), free(replaced.s), free(added.s), free(layout.s), free(adds.s);
  free(sep.s), free(colon.s), free(rec.s), free(res.s);
  object_free(&o);
  return rc ? d9_diag_fail(diag, ENOMEM, "config.json: out of memory") : 0;
}

/* ---- the undo ---- */

/* Insert piece a + b + c (lengths la, lb, lc) at `at` of cur into a new text. */
static int insert3(sbuf *cur, size_t at, const char *a, size_t la, const char *b, size_t lb,
                   const char *c, size_t lc) {
  sbuf nb = {0};
  sb_add(&nb, cur->s, at);
  sb_add(&nb, a, la), sb_add(&nb, b, lb), sb_add(&nb, c, lc);
  sb_add(&nb, cur->s + at, cur->n - at);
  free(cur->s);
  *cur = nb;
  return nb.oom ? -ENOMEM : 0;
}

/* Put back the removed member key (old value: raw[0..rlen)) where its
 * layout says, or at the end. */
static int put_back(sbuf *cur, const char *key, const char *raw, size_t rlen,
                    const cJSON *lay) {
  object o;
  int rc = scan_object(cur->s, 0, cur->n, &o);
  if (rc) return rc;
  const cJSON *before = cJSON_GetObjectItemCaseSensitive(lay, "before");
  const cJSON *after = cJSON_GetObjectItemCaseSensitive(lay, "after");
  const cJSON *head = cJSON_GetObjectItemCaseSensitive(lay, "head");
  const cJSON *lead = cJSON_GetObjectItemCaseSensitive(lay, "lead");
  const cJSON *trail = cJSON_GetObjectItemCaseSensitive(lay, "trail");
  int nb = cJSON_IsString(before) ? find(&o, before->valuestring) : -1;
  int na = cJSON_IsString(after) ? find(&o, after->valuestring) : -1;
  if (cJSON_IsString(head) && nb >= 0 && cJSON_IsString(trail)) {
    rc = insert3(cur, o.m[nb].k, head->valuestring, strlen(head->valuestring), raw, rlen,
                 trail->valuestring, strlen(trail->valuestring));
  } else if (cJSON_IsString(head) && na >= 0 && cJSON_IsString(lead)) {
    rc = insert3(cur, o.m[na].vend, lead->valuestring, strlen(lead->valuestring),
                 head->valuestring, strlen(head->valuestring), raw, rlen);
  } else {
    sbuf sep = {0}, colon = {0}, m = {0};
    const char *first;
    size_t at = append_at(&o, NULL, &first);
    separators(cur->s, &o, &sep, &colon);
    add_member(&m, 1, first, &sep, &colon, key, raw, rlen);
    rc = sep.oom || colon.oom || m.oom ? -ENOMEM : insert3(cur, at, m.s, m.n, "", 0, "", 0);
    free(sep.s), free(colon.s), free(m.s);
  }
  object_free(&o);
  return rc;
}

/* The raw value of key in the record's sub-object `which`, or NULL. */
static const member *raw_of(const object *sub, const char *key) {
  int k = find(sub, key);
  return k >= 0 ? &sub->m[k] : NULL;
}

int d9_spec_undo_config(const char *t, size_t n, char **out, size_t *len) {
  object o, r = {0}, rem = {0}, rep = {0};
  cJSON *rec = NULL;
  int *cut = NULL;
  edit *e = NULL;
  sbuf cur = {0};
  *out = NULL;
  int rc = scan_object(t, 0, n, &o);
  if (rc) return rc;
  int u = find(&o, D9_CONFIG_UNDO_KEY);
  if (u < 0 || t[o.m[u].v] != '{') goto none;
  const member *mu = &o.m[u];
  rc = -EINVAL;
  if (!(rec = cJSON_ParseWithLength(t + mu->v, mu->vend - mu->v)) ||
      (rc = scan_object(t, mu->v, mu->vend, &r)))
    goto done;
  const cJSON *added = cJSON_GetObjectItemCaseSensitive(rec, "added"), *x;
  const cJSON *layout = cJSON_GetObjectItemCaseSensitive(rec, "layout");
  int k;
  if ((k = find(&r, "removed")) >= 0 && (rc = scan_object(t, r.m[k].v, r.m[k].vend, &rem)))
    goto done;
  if ((k = find(&r, "replaced")) >= 0 && (rc = scan_object(t, r.m[k].v, r.m[k].vend, &rep)))
    goto done;
  rc = -ENOMEM;
  if (!(cut = calloc((size_t)o.n + 1, sizeof *cut)) ||
      !(e = calloc((size_t)o.n * 2 + 1, sizeof *e)))
    goto done;
  int ne = 0;
  cut[u] = 1;
  if (!cJSON_IsArray(added)) added = NULL;
  cJSON_ArrayForEach(x, added)
    if (cJSON_IsString(x) && (k = find(&o, x->valuestring)) >= 0) cut[k] = 1;
  for (int i = 0; i < o.n; i++) {
    const member *old = raw_of(&rep, o.m[i].key);
    if (old && !cut[i]) e[ne++] = (edit){o.m[i].v, o.m[i].vend, t + old->v, old->vend - old->v};
  }
  /* no member was kept: the record has the bytes between the braces */
  const cJSON *inner = cJSON_GetObjectItemCaseSensitive(rec, "inner");
  int whole = cJSON_IsString(inner) && !lead_kept(&o, cut);
  if (whole) {
    ne = 0;
    e[ne++] = (edit){o.open + 1, o.close, inner->valuestring, strlen(inner->valuestring)};
  } else {
    cut_members(t, &o, cut, e, &ne, NULL);
  }
  apply_edits(t, n, e, ne, &cur);
  if (cur.oom) goto done;
  if (whole) goto restored;
  /* removed members back in place: those that stood before the first kept
   * member from the last one down, then the others in order */
  for (int pass = 0; pass < 2; pass++)
    for (int j = 0; j < rem.n; j++) {
      const member *m = &rem.m[pass == 0 ? rem.n - 1 - j : j];
      const cJSON *lay = cJSON_GetObjectItemCaseSensitive(layout, m->key);
      if ((cJSON_GetObjectItemCaseSensitive(lay, "before") != NULL) != (pass == 0)) continue;
      if ((rc = put_back(&cur, m->key, t + m->v, m->vend - m->v, lay))) goto done;
    }
  /* replaced members the patched text lacks (an older record's own key) */
  for (int j = 0; j < rep.n; j++) {
    int at = find(&o, rep.m[j].key);
    if ((at < 0 || cut[at]) &&
        (rc = put_back(&cur, rep.m[j].key, t + rep.m[j].v, rep.m[j].vend - rep.m[j].v, NULL)))
      goto done;
  }
restored:
  *out = cur.s, *len = cur.n;
  cur.s = NULL;
  rc = 1;
done:
  free(cur.s), free(cut), free(e);
  cJSON_Delete(rec);
  object_free(&r), object_free(&rem), object_free(&rep), object_free(&o);
  return rc;
none:
  object_free(&o);
  return 0;
}

int d9_config_restore(d9_catalog *c, d9_diag *diag) {
  char *text;
  size_t len;
  if (!c->config_text) return 0;
  int rc = d9_spec_undo_config(c->config_text, c->config_len, &text, &len);
  if (rc == -ENOMEM) return d9_diag_fail(diag, ENOMEM, "config.json: out of memory");
  if (rc < 0)
    return d9_diag_fail(diag, EINVAL, "config.json: the undo record '%s' is malformed",
                        D9_CONFIG_UNDO_KEY);
  if (rc == 0) return 0;
  cJSON *j;
  if ((rc = d9_json_read(text, len, D9_JSON_MAX_DEPTH, 0, "config.json (restored)", &j, diag))) {
    free(text);
    return rc; /* -EINVAL, or -ENOMEM */
  }
  if (!cJSON_IsObject(j)) {
    cJSON_Delete(j);
    free(text);
    return d9_diag_fail(diag, EINVAL, "config.json (restored): not a json object");
  }
  d9_catalog_set_config(c, j, text, len);
  return 0;
}
