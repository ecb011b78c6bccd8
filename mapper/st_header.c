/* st_header.c - the safetensors header length, checked sizes and the header
 * writer. The reader is st_parse.c; the format and the rules are documented
 * in st_header.h. */
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
