/* st_header.c - strict safetensors header reader and the header writer.
 * The format and the rules are documented in st_header.h. */
#include "st_header.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_strict.h"

#define ST_INT_MAX (INT64_C(1) << 53) /* largest shape / offset value */


/* ---- messages ---- */


typedef char shown[4 * D9_DIAG_SHOW_MAX + 8]; /* a name quoted in a message */

static void show(char *dst, const char *s) { d9_diag_show(dst, sizeof(shown), s); }

/* "WHAT: tensor 'NAME': REASON"; returns -EINVAL. */
static int tfail(d9_diag *d, const char *what, const char *name,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int tfail(d9_diag *d, const char *what, const char *name,
                 const char *fmt, ...) {
  char reason[D9_DIAG_MAX];
  shown n;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(reason, sizeof reason, fmt, ap);
  va_end(ap);
  show(n, name);
  return d9_diag_fail(d, EINVAL, "%s: tensor '%s': %s", what, n, reason);
}

/* "[4, 8]" into buf (large enough for D9_MAX_DIMS 16-digit dims) */
static const char *fmt_shape(char *buf, size_t cap, const int64_t *shape,
                             int ndim) {
  size_t o = 0;
  buf[o++] = '[';
  for (int i = 0; i < ndim && o < cap; i++)
    o += (size_t)snprintf(buf + o, cap - o, "%s%" PRId64, i ? ", " : "",
                          shape[i]);
  if (o < cap - 1) {
    buf[o++] = ']';
    buf[o] = 0;
  } else {
    buf[cap - 1] = 0;
  }
  return buf;
}

/* ---- checked sizes ---- */

int d9_st_numel(const int64_t *shape, int ndim, int64_t *numel) {
  if (ndim < 0 || ndim > D9_MAX_DIMS) return -EINVAL;
  int64_t n = 1;
  /* in order, as the reference does: an overflow before a 0 dim is an error */
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) return -EINVAL;
    if (shape[i] != 0 && n > INT64_MAX / shape[i]) return -EOVERFLOW;
    n *= shape[i];
  }
  *numel = n;
  return 0;
}

int d9_st_nbytes(const int64_t *shape, int ndim, d9_dtype t, uint64_t *nbytes) {
  int64_t n;
  size_t es = d9_dtype_size(t);
  int rc = d9_st_numel(shape, ndim, &n);
  if (rc) return rc;
  if (es == 0) return -EINVAL;
  if ((uint64_t)n > UINT64_MAX / es) return -EOVERFLOW;
  *nbytes = (uint64_t)n * es;
  return 0;
}

/* ---- reader ---- */

int d9_st_header_len(const unsigned char prefix[8], uint64_t file_size,
                     const char *what, uint64_t *header_len, d9_diag *diag) {
  if (file_size < 8)
    return d9_diag_fail(diag, EINVAL,
                        "%s: file is %" PRIu64
                        " bytes, shorter than the 8-byte header length",
                        what, file_size);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = n << 8 | prefix[i];
  if (n == 0)
    return d9_diag_fail(diag, EINVAL, "%s: header is empty (header length 0)",
                        what);
  if (n > D9_ST_HEADER_MAX)
    return d9_diag_fail(diag, EINVAL,
                        "%s: header length %" PRIu64
                        " is more than the limit of %u bytes",
                        what, n, D9_ST_HEADER_MAX);
  if (n > file_size - 8)
    return d9_diag_fail(diag, EINVAL,
                        "%s: header length %" PRIu64
                        " goes past the end of the file (%" PRIu64 " bytes)",
                        what, n, file_size);
  *header_len = n;
  return 0;
}

static int parse_meta(const cJSON *m, const char *what, d9_arena *a,
                      d9_st_header *out, d9_diag *diag) {
  if (!cJSON_IsObject(m))
    return d9_diag_fail(diag, EINVAL, "%s: __metadata__ is not an object", what);
  int n = 0;
  for (const cJSON *c = m->child; c; c = c->next) n++;
  out->meta_keys = d9_arena_calloc(a, (size_t)n + 1, sizeof(char *));
  out->meta_values = d9_arena_calloc(a, (size_t)n + 1, sizeof(char *));
  if (!out->meta_keys || !out->meta_values) goto oom;
  for (const cJSON *c = m->child; c; c = c->next) {
    if (!cJSON_IsString(c)) {
      shown k;
      show(k, c->string);
      return d9_diag_fail(diag, EINVAL,
                          "%s: __metadata__ value of '%s' is not a string",
                          what, k);
    }
    const char *k = d9_arena_strdup(a, c->string);
    const char *v = d9_arena_strdup(a, c->valuestring);
    if (!k || !v) goto oom;
    out->meta_keys[out->nmeta] = k;
    out->meta_values[out->nmeta++] = v;
  }
  return 0;
oom:
  return d9_diag_fail(diag, ENOMEM, "%s: out of memory", what);
}

static int parse_shape(const cJSON *v, const char *what, d9_st_tensor *t,
                       d9_diag *diag) {
  if (!cJSON_IsArray(v))
    return tfail(diag, what, t->name, "shape is not an array");
  int n = cJSON_GetArraySize(v);
  if (n > D9_MAX_DIMS)
    return tfail(diag, what, t->name,
                 "shape has %d dimensions, more than %d", n, D9_MAX_DIMS);
  int i = 0;
  for (const cJSON *c = v->child; c; c = c->next, i++)
    if (d9_json_int(c, 0, ST_INT_MAX, &t->shape[i]))
      return tfail(diag, what, t->name,
                   "shape[%d] is not an integer in [0, 2^53]", i);
  t->ndim = n;
  return 0;
}

static int parse_offsets(const cJSON *v, const char *what, d9_st_tensor *t,
                         d9_diag *diag) {
  int64_t off[2];
  if (!cJSON_IsArray(v))
    return tfail(diag, what, t->name, "data_offsets is not an array");
  int n = cJSON_GetArraySize(v);
  if (n != 2)
    return tfail(diag, what, t->name,
                 "data_offsets must have 2 items [begin, end], not %d", n);
  int i = 0;
  for (const cJSON *c = v->child; c; c = c->next, i++)
    if (d9_json_int(c, 0, ST_INT_MAX, &off[i]))
      return tfail(diag, what, t->name,
                   "data_offsets[%d] is not an integer in [0, 2^53]", i);
  t->begin = (uint64_t)off[0];
  t->end = (uint64_t)off[1];
  if (t->begin > t->end)
    return tfail(diag, what, t->name,
                 "data_offsets [%" PRIu64 ", %" PRIu64 ") end before they begin",
                 t->begin, t->end);
  return 0;
}

/* One "name": {dtype, shape, data_offsets} entry; data_len: bytes of data. */
static int parse_tensor(const cJSON *e, const char *what, uint64_t data_len,
                        d9_st_tensor *t, d9_diag *diag) {
  const cJSON *dtype = NULL, *shape = NULL, *offs = NULL;
  if (!t->name[0])
    return d9_diag_fail(diag, EINVAL, "%s: a tensor has an empty name", what);
  if (!cJSON_IsObject(e))
    return tfail(diag, what, t->name, "entry is not an object");
  for (const cJSON *c = e->child; c; c = c->next) {
    if (!strcmp(c->string, "dtype")) {
      dtype = c;
    } else if (!strcmp(c->string, "shape")) {
      shape = c;
    } else if (!strcmp(c->string, "data_offsets")) {
      offs = c;
    } else {
      shown k;
      show(k, c->string);
      return tfail(diag, what, t->name, "unknown key '%s'", k);
    }
  }
  if (!dtype || !shape || !offs)
    return tfail(diag, what, t->name, "missing key '%s'",
                 !dtype ? "dtype" : !shape ? "shape" : "data_offsets");

  if (!cJSON_IsString(dtype))
    return tfail(diag, what, t->name, "dtype is not a string");
  t->dtype = d9_dtype_parse(dtype->valuestring, strlen(dtype->valuestring));
  if (t->dtype == D9_DTYPE_INVALID) {
    shown d;
    show(d, dtype->valuestring);
    return tfail(diag, what, t->name, "unknown dtype '%s'", d);
  }
  int rc = parse_shape(shape, what, t, diag);
  if (rc) return rc;
  if ((rc = parse_offsets(offs, what, t, diag))) return rc;

  char sh[D9_MAX_DIMS * 24 + 4];
  uint64_t nbytes;
  fmt_shape(sh, sizeof sh, t->shape, t->ndim);
  if (d9_st_nbytes(t->shape, t->ndim, t->dtype, &nbytes))
    return tfail(diag, what, t->name,
                 "shape %s of %s overflows the element count or byte length",
                 sh, d9_dtype_name(t->dtype));
  if (t->end - t->begin != nbytes)
    return tfail(diag, what, t->name,
                 "data_offsets [%" PRIu64 ", %" PRIu64 ") hold %" PRIu64
                 " bytes, but shape %s of %s needs %" PRIu64
                 " (byte length mismatch)",
                 t->begin, t->end, t->end - t->begin, sh,
                 d9_dtype_name(t->dtype), nbytes);
  if (t->end > data_len)
    return tfail(diag, what, t->name,
                 "data_offsets [%" PRIu64 ", %" PRIu64
                 ") go past the end of the data section (%" PRIu64
                 " bytes): the file is too short",
                 t->begin, t->end, data_len);
  return 0;
}

typedef struct layout_key {
  uint64_t begin, end;
  int idx; /* JSON order, the tie-break */
} layout_key;

static int cmp_layout(const void *pa, const void *pb) {
  const layout_key *a = pa, *b = pb;
  if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
  if (a->end != b->end) return a->end < b->end ? -1 : 1;
  return (a->idx > b->idx) - (a->idx < b->idx);
}

/* Sorted by (begin, end): start at 0, strictly contiguous, end at data_len. */
static int check_layout(const d9_st_tensor *ts, int n, uint64_t data_len,
                        const char *what, d9_diag *diag) {
  layout_key *k = malloc((size_t)(n ? n : 1) * sizeof *k);
  int rc = 0;
  if (!k) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", what);
  for (int i = 0; i < n; i++)
    k[i] = (layout_key){ts[i].begin, ts[i].end, i};
  qsort(k, (size_t)n, sizeof *k, cmp_layout);
  uint64_t pos = 0; /* end of the covered prefix */
  for (int i = 0; i < n; i++) {
    const d9_st_tensor *t = &ts[k[i].idx];
    if (i == 0 && t->begin != 0) {
      rc = tfail(diag, what, t->name,
                 "data_offsets [%" PRIu64 ", %" PRIu64
                 ") leave a gap at the start of the data section "
                 "(the first tensor must start at 0)",
                 t->begin, t->end);
      goto out;
    }
    if (i > 0 && t->begin != pos) {
      const d9_st_tensor *p = &ts[k[i - 1].idx];
      shown pn;
      show(pn, p->name);
      if (t->begin > pos)
        rc = tfail(diag, what, t->name,
                   "data_offsets [%" PRIu64 ", %" PRIu64 ") leave a gap of %" PRIu64
                   " bytes after the previous tensor '%s' [%" PRIu64 ", %" PRIu64 ")",
                   t->begin, t->end, t->begin - pos, pn, p->begin, p->end);
      else if (t->begin == p->begin && t->end == p->end)
        rc = tfail(diag, what, t->name,
                   "data_offsets [%" PRIu64 ", %" PRIu64
                   ") alias tensor '%s' (same range)",
                   t->begin, t->end, pn);
      else
        rc = tfail(diag, what, t->name,
                   "data_offsets [%" PRIu64 ", %" PRIu64
                   ") overlap the previous tensor '%s' [%" PRIu64 ", %" PRIu64 ")",
                   t->begin, t->end, pn, p->begin, p->end);
      goto out;
    }
    pos = t->end;
  }
  if (pos != data_len) /* pos > data_len was refused per tensor */
    rc = d9_diag_fail(diag, EINVAL,
                      "%s: trailing bytes: the data section is %" PRIu64
                      " bytes, the tensors end at %" PRIu64,
                      what, data_len, pos);
out:
  free(k);
  return rc;
}

int d9_st_parse(const char *json, uint64_t header_len, uint64_t file_size,
                const char *what, d9_arena *a, d9_st_header *out,
                d9_diag *diag) {
  memset(out, 0, sizeof *out);
  unsigned char prefix[8];
  uint64_t n;
  for (int i = 0; i < 8; i++) prefix[i] = (unsigned char)(header_len >> (8 * i));
  int rc = d9_st_header_len(prefix, file_size, what, &n, diag);
  if (rc) return rc;
  uint64_t data_len = file_size - 8 - n;

  char hwhat[512];
  snprintf(hwhat, sizeof hwhat, "%s: header", what);
  if (json[0] != '{') /* the reference's InvalidHeaderStart */
    return d9_diag_fail(diag, EINVAL,
                        "%s: not a json object (does not start with '{')", hwhat);
  cJSON *root = d9_json_parse(json, (size_t)n, D9_JSON_MAX_DEPTH, 1, hwhat, diag);
  if (!root) return -EINVAL;
  if (!cJSON_IsObject(root)) {
    rc = d9_diag_fail(diag, EINVAL, "%s: not a json object", hwhat);
    goto free_root;
  }
  int count = 0;
  for (const cJSON *c = root->child; c; c = c->next)
    if (strcmp(c->string, "__metadata__") && ++count == INT_MAX) {
      rc = d9_diag_fail(diag, EINVAL, "%s: too many tensors", what);
      goto free_root;
    }
  out->tensors = d9_arena_calloc(a, (size_t)count + 1, sizeof *out->tensors);
  if (!out->tensors) {
    rc = d9_diag_fail(diag, ENOMEM, "%s: out of memory", what);
    goto free_root;
  }
  for (const cJSON *c = root->child; c; c = c->next) {
    if (!strcmp(c->string, "__metadata__")) {
      if ((rc = parse_meta(c, what, a, out, diag))) goto free_root;
      continue;
    }
    d9_st_tensor *t = &out->tensors[out->ntensors];
    /* the strict parser refused \u0000, so the key has no NUL inside */
    t->name = c->string;
    if ((rc = parse_tensor(c, what, data_len, t, diag))) goto free_root;
    if (!(t->name = d9_arena_strdup(a, c->string))) {
      rc = d9_diag_fail(diag, ENOMEM, "%s: out of memory", what);
      goto free_root;
    }
    out->ntensors++;
  }
  if ((rc = check_layout(out->tensors, out->ntensors, data_len, what, diag)))
    goto free_root;
  out->header_len = n;
  out->data_start = 8 + n;
  cJSON_Delete(root);
  return 0;
free_root:
  cJSON_Delete(root);
  memset(out, 0, sizeof *out);
  return rc;
}

/* ---- writer ---- */

typedef struct wbuf {
  unsigned char *p;
  size_t len, cap;
  int err; /* first error, sticky */
} wbuf;

static void put(wbuf *b, const void *s, size_t n) {
  if (b->err) return;
  if (n > SIZE_MAX - b->len || b->len + n > 8 + (size_t)D9_ST_HEADER_MAX + 8) {
    b->err = -EINVAL; /* the header would be over the limit */
    return;
  }
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n) cap *= 2; /* <= 2 * (100 MB + 16): no overflow */
    unsigned char *np = realloc(b->p, cap);
    if (!np) {
      b->err = -ENOMEM;
      return;
    }
    b->p = np;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void put_str(wbuf *b, const char *s) { put(b, s, strlen(s)); }

static void put_escaped(wbuf *b, const char *s) {
  static const char hex[] = "0123456789abcdef";
  put(b, "\"", 1);
  for (const char *run = s;; s++) {
    unsigned char c = (unsigned char)*s;
    if (c && c != '"' && c != '\\' && c >= 0x20) continue;
    put(b, run, (size_t)(s - run));
    if (!c) break;
    if (c == '"' || c == '\\') {
      char e[2] = {'\\', (char)c};
      put(b, e, 2);
    } else {
      char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      put(b, e, 6);
    }
    run = s + 1;
  }
  put(b, "\"", 1);
}

/* Well-formed UTF-8 (no overlong, surrogate or > U+10FFFF), so the output
 * parses back. */
static int utf8_ok(const char *str) {
  const unsigned char *s = (const unsigned char *)str;
  while (*s) {
    unsigned char c = *s;
    int n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
      s++;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF) n = 1;
    else if (c >= 0xE0 && c <= 0xEF) n = 2, lo = c == 0xE0 ? 0xA0 : 0x80,
                                      hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) n = 3, lo = c == 0xF0 ? 0x90 : 0x80,
                                      hi = c == 0xF4 ? 0x8F : 0xBF;
    else return 0;
    if (s[1] < lo || s[1] > hi) return 0; /* also stops at the NUL */
    for (int k = 2; k <= n; k++)
      if ((s[k] & 0xC0) != 0x80) return 0;
    s += n + 1;
  }
  return 1;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* 1 if names[0..n) (plus `also` when not NULL) has a duplicate. */
static int has_dup(const char *const *names, int n, const char *also, int *err) {
  const char **v = malloc(((size_t)n + 1) * sizeof *v);
  int dup = 0, m = 0;
  if (!v) {
    *err = -ENOMEM;
    return 0;
  }
  for (int i = 0; i < n; i++) v[m++] = names[i];
  if (also) v[m++] = also;
  qsort(v, (size_t)m, sizeof *v, cmp_str);
  for (int i = 1; i < m && !dup; i++) dup = !strcmp(v[i - 1], v[i]);
  free(v);
  return dup;
}

int d9_st_write_header(d9_st_tensor *tensors, int n, const char **meta_keys,
                       const char **meta_values, int nmeta,
                       unsigned char **out, uint64_t *out_len) {
  wbuf b = {0};
  const char **names = NULL;
  int rc = 0;
  *out = NULL;
  *out_len = 0;
  if (n < 0 || nmeta < 0 || (n && !tensors) ||
      (nmeta && (!meta_keys || !meta_values)))
    return -EINVAL;
  for (int i = 0; i < nmeta; i++)
    if (!meta_keys[i] || !meta_values[i] || !utf8_ok(meta_keys[i]) ||
        !utf8_ok(meta_values[i]))
      return -EINVAL;
  names = malloc(((size_t)(n > nmeta ? n : nmeta) + 1) * sizeof *names);
  if (!names) return -ENOMEM;

  /* metadata keys: unique once the caller's "format" is dropped */
  int m = 0;
  for (int i = 0; i < nmeta; i++)
    if (strcmp(meta_keys[i], "format")) names[m++] = meta_keys[i];
  if (has_dup(names, m, "format", &rc) || rc) {
    rc = rc ? rc : -EINVAL;
    goto free_names;
  }
  /* tensors: valid, unique names, "__metadata__" is taken */
  for (int i = 0; i < n; i++) {
    const d9_st_tensor *t = &tensors[i];
    if (!t->name || !t->name[0] || !utf8_ok(t->name) ||
        d9_dtype_size(t->dtype) == 0 || t->ndim < 0 || t->ndim > D9_MAX_DIMS) {
      rc = -EINVAL;
      goto free_names;
    }
    for (int d = 0; d < t->ndim; d++)
      if (t->shape[d] < 0 || t->shape[d] > ST_INT_MAX) {
        rc = -EINVAL;
        goto free_names;
      }
    names[i] = t->name;
  }
  if (has_dup(names, n, "__metadata__", &rc) || rc) {
    rc = rc ? rc : -EINVAL;
    goto free_names;
  }

  put(&b, "\0\0\0\0\0\0\0\0", 8); /* the length, filled in at the end */
  put_str(&b, "{\"__metadata__\":{\"format\":\"pt\"");
  for (int i = 0; i < nmeta; i++) {
    if (!strcmp(meta_keys[i], "format")) continue;
    put(&b, ",", 1);
    put_escaped(&b, meta_keys[i]);
    put(&b, ":", 1);
    put_escaped(&b, meta_values[i]);
  }
  put(&b, "}", 1);
  uint64_t off = 0;
  for (int i = 0; i < n && !b.err; i++) {
    d9_st_tensor *t = &tensors[i];
    uint64_t nbytes;
    char num[48];
    if (d9_st_nbytes(t->shape, t->ndim, t->dtype, &nbytes) ||
        nbytes > (uint64_t)ST_INT_MAX - off) { /* offsets must read back */
      rc = -EINVAL;
      goto free_buf;
    }
    t->begin = off;
    t->end = off + nbytes;
    off = t->end;
    put(&b, ",", 1);
    put_escaped(&b, t->name);
    put_str(&b, ":{\"dtype\":\"");
    put_str(&b, d9_dtype_name(t->dtype));
    put_str(&b, "\",\"shape\":[");
    for (int d = 0; d < t->ndim; d++) {
      snprintf(num, sizeof num, "%s%" PRId64, d ? "," : "", t->shape[d]);
      put_str(&b, num);
    }
    snprintf(num, sizeof num, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}",
             t->begin, t->end);
    put_str(&b, num);
  }
  put(&b, "}", 1);
  while (!b.err && (b.len - 8) % 8) put(&b, " ", 1);
  if (b.err) {
    rc = b.err;
    goto free_buf;
  }
  uint64_t hlen = b.len - 8;
  if (hlen > D9_ST_HEADER_MAX) {
    rc = -EINVAL;
    goto free_buf;
  }
  for (int i = 0; i < 8; i++) b.p[i] = (unsigned char)(hlen >> (8 * i));
  *out = b.p;
  *out_len = b.len;
  free(names);
  return 0;
free_buf:
  free(b.p);
free_names:
  free(names);
  return rc;
}
