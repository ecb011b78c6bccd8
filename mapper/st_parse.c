/* st_parse.c - the safetensors header reader (format and rules: st_header.h).
 *
 * No JSON tree: d9_json_check first proves the text well-formed (UTF-8, NUL,
 * grammar, escapes, depth, padding) without allocating, and counts the
 * top-level members and their key bytes. That count sizes the tensor table
 * and lets the metadata budget refuse a header before anything is built.
 * Then one pass of a tokenizer over the (now valid) bytes fills the table
 * directly: names decoded into the arena, dtype, shape and offsets read as
 * integers from their literals. What stays resident is the table, the names
 * and the metadata strings; the transient extra is one int per tensor for
 * the duplicate-name and layout sorts.
 */
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
#define MIB (UINT64_C(1) << 20)

typedef char shown[4 * D9_DIAG_SHOW_MAX + 8]; /* a name quoted in a message */

static void show(char *dst, const char *s) { d9_diag_show(dst, sizeof(shown), s); }

/* The reader over validated text. */
typedef struct rd {
  const char *s;
  size_t len, pos;
  const char *what;  /* the file, for tensor messages */
  const char *hwhat; /* "FILE: header", for json-level messages */
  d9_diag *diag;
  d9_arena *a;
  d9_st_budget *budget; /* or NULL */
  uint64_t need;        /* bytes this header is charged so far */
} rd;

/* "WHAT: tensor 'NAME': REASON"; returns -EINVAL. */
static int tfail(const rd *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int tfail(const rd *r, const char *name, const char *fmt, ...) {
  char reason[D9_DIAG_MAX];
  shown n;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(reason, sizeof reason, fmt, ap);
  va_end(ap);
  show(n, name);
  return d9_diag_fail(r->diag, EINVAL, "%s: tensor '%s': %s", r->what, n, reason);
}

static int oom(const rd *r) { return d9_diag_fail(r->diag, ENOMEM, "%s: out of memory", r->what); }

/* ---- the budget ---- */

static uint64_t mib_up(uint64_t b) { return b / MIB + (b % MIB != 0); }

/* Charge n more bytes to this header; -EFBIG when over the limit. */
static int charge(rd *r, uint64_t n) {
  d9_st_budget *b = r->budget;
  r->need += n;
  if (!b || !b->limit || b->used + r->need <= b->limit) return 0;
  char already[128] = "";
  if (b->used)
    snprintf(already, sizeof already, ", which with the %" PRIu64 " MiB of the headers before it is",
             mib_up(b->used));
  return d9_diag_fail(r->diag, EFBIG,
                      "%s: header metadata needs %" PRIu64 " MiB%s over the limit of %" PRIu64
                      " MiB (%s)",
                      r->what, mib_up(r->need), already, b->limit / MIB,
                      b->option ? b->option : "the metadata limit");
}

/* ---- the tokenizer (the text is known to be valid json) ---- */

static void ws(rd *r) {
  while (r->pos < r->len && (r->s[r->pos] == ' ' || r->s[r->pos] == '\t' ||
                             r->s[r->pos] == '\n' || r->s[r->pos] == '\r'))
    r->pos++;
}

/* At the opening quote: past the closing one. */
static void skip_string(rd *r) {
  size_t p = r->pos + 1;
  while (r->s[p] != '"') p += r->s[p] == '\\' ? 2 : 1;
  r->pos = p + 1;
}

static int is_atom(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '-' || c == '+' ||
         c == '.' || c == 'E';
}

/* Past one value (any kind), iteratively. */
static void skip_value(rd *r) {
  int depth = 0;
  do {
    ws(r);
    char c = r->s[r->pos];
    if (c == '"') {
      skip_string(r);
    } else if (c == '{' || c == '[') {
      depth++, r->pos++;
    } else if (c == '}' || c == ']') {
      depth--, r->pos++;
    } else if (c == ',' || c == ':') {
      r->pos++;
    } else { /* number or literal: letters, digits, '-', '+', '.' */
      while (r->pos < r->len && is_atom(r->s[r->pos])) r->pos++;
    }
  } while (depth > 0);
}

/* In an object or array at the separator after a member: 1 if another
 * member follows (pos on it), 0 at the end (pos past the close). */
static int next_member(rd *r) {
  ws(r);
  int more = r->s[r->pos] == ',';
  r->pos++;
  ws(r);
  return more;
}

/* At '{' or '[': 1 if it has a member (pos on it), 0 if empty (pos past). */
static int first_member(rd *r) {
  r->pos++;
  ws(r);
  if (r->s[r->pos] != '}' && r->s[r->pos] != ']') return 1;
  r->pos++;
  return 0;
}

static unsigned hexval(const char *p) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v = v << 4 | (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
  }
  return v;
}

/* One character of a string at *p (not the closing quote): its UTF-8 bytes
 * into u, their count returned, *p advanced. */
static int next_char(const char *s, size_t *p, char u[4]) {
  unsigned char c = (unsigned char)s[*p];
  if (c != '\\') {
    int n = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    memcpy(u, s + *p, (size_t)n);
    *p += (size_t)n;
    return n;
  }
  char e = s[*p + 1];
  *p += 2;
  if (e != 'u') {
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    u[0] = to[strchr(from, e) - from];
    return 1;
  }
  unsigned cp = hexval(s + *p);
  *p += 4;
  if (cp >= 0xD800 && cp <= 0xDBFF) { /* the scanner checked the pair */
    cp = 0x10000 + ((cp - 0xD800) << 10) + (hexval(s + *p + 2) - 0xDC00);
    *p += 6;
  }
  if (cp < 0x80) return u[0] = (char)cp, 1;
  if (cp < 0x800) {
    u[0] = (char)(0xC0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    u[0] = (char)(0xE0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  u[0] = (char)(0xF0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 0x3F));
  u[2] = (char)(0x80 | (cp >> 6 & 0x3F)), u[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* The string at pos decoded into dst (at most cap - 1 bytes, whole
 * characters only, NUL-terminated); pos moves past it. Returns the decoded
 * length; *whole says whether all of it fitted. */
static size_t read_str(rd *r, char *dst, size_t cap, int *whole) {
  size_t p = r->pos + 1, o = 0;
  *whole = 1;
  while (r->s[p] != '"') {
    size_t run = p; /* plain bytes: copy the run at once */
    while (r->s[run] != '"' && r->s[run] != '\\') run++;
    if (run > p) {
      size_t n = run - p;
      if (n > cap - 1 - o) { /* cut on a character boundary */
        n = cap - 1 - o;
        while (n && ((unsigned char)r->s[p + n] & 0xC0) == 0x80) n--;
        *whole = 0;
      }
      memcpy(dst + o, r->s + p, n);
      o += n;
      if (!*whole) break;
      p = run;
      continue;
    }
    char u[4];
    int n = next_char(r->s, &p, u);
    if ((size_t)n > cap - 1 - o) {
      *whole = 0;
      break;
    }
    memcpy(dst + o, u, (size_t)n);
    o += (size_t)n;
  }
  dst[o] = 0;
  skip_string(r);
  return o;
}

/* The string at pos, whole, into the arena; charged to the budget when
 * `charged` (names were charged with the table). */
static int arena_str(rd *r, int charged, char **out) {
  size_t start = r->pos;
  skip_string(r);
  size_t raw = r->pos - start - 2; /* decoding never lengthens */
  r->pos = start;
  int whole, rc = charged ? charge(r, (raw + 16) & ~(uint64_t)15) : 0;
  if (rc) return rc;
  if (!(*out = d9_arena_alloc(r->a, raw + 1))) return oom(r);
  read_str(r, *out, raw + 1, &whole);
  return 0;
}

/* ---- integers ---- */

/* The item at pos as an integer in [0, 2^53], pos moved past it. Returns
 * NULL, or why not (in buf). */
static const char *read_int(rd *r, int64_t *v, char *buf, size_t cap) {
  const char *s = r->s;
  size_t start = r->pos, p = start;
  char c = s[p];
  if (c != '-' && (c < '0' || c > '9')) {
    const char *kind = c == '"' ? "a string" : c == '[' ? "an array" : c == '{' ? "an object"
                                                                                : "not a number";
    skip_value(r);
    snprintf(buf, cap, "it is %s", kind);
    return buf;
  }
  int neg = c == '-';
  p += (size_t)neg;
  uint64_t x = 0;
  int big = 0;
  for (; s[p] >= '0' && s[p] <= '9'; p++) {
    if (x > (uint64_t)ST_INT_MAX) big = 1;
    else x = x * 10 + (uint64_t)(s[p] - '0');
  }
  int frac = s[p] == '.' || s[p] == 'e' || s[p] == 'E';
  skip_value(r);
  int n = (int)(r->pos - start); /* <= 63: the scanner bounds numbers */
  if (frac)
    snprintf(buf, cap, "%.*s is not written as an integer (no '.', no exponent)", n, s + start);
  else if (big || x > (uint64_t)ST_INT_MAX)
    snprintf(buf, cap, "%.*s is beyond 2^53", n, s + start);
  else if (neg && x)
    snprintf(buf, cap, "%.*s is negative", n, s + start);
  else
    return *v = (int64_t)x, NULL; /* "-0" reads as 0, as a double does */
  return buf;
}

/* Items of the array at pos (pos unmoved). */
static int count_items(rd *r) {
  size_t save = r->pos;
  int n = 0;
  if (first_member(r))
    do {
      skip_value(r);
      if (n < INT_MAX) n++;
    } while (next_member(r));
  r->pos = save;
  return n;
}

/* shape or data_offsets at pos: at most max items, each in [0, 2^53] */
static int read_ints(rd *r, const char *key, const char *name, int max, int exact,
                     int64_t *out, int *n) {
  if (r->s[r->pos] != '[') return tfail(r, name, "%s is not an array", key);
  *n = count_items(r);
  if (exact && *n != max)
    return tfail(r, name, "%s must have %d items [begin, end], not %d", key, max, *n);
  if (*n > max)
    return tfail(r, name, "%s has %d dimensions, more than %d", key, *n, max);
  int i = 0;
  if (first_member(r))
    do {
      char why[160];
      const char *bad = read_int(r, &out[i], why, sizeof why);
      if (bad)
        return tfail(r, name, "%s[%d] is not an integer in [0, 2^53]: %s", key, i, bad);
      i++;
    } while (next_member(r));
  return 0;
}

/* ---- entries ---- */

/* "[4, 8]" into buf (large enough for D9_MAX_DIMS 16-digit dims) */
static const char *fmt_shape(char *buf, size_t cap, const int64_t *shape, int ndim) {
  size_t o = 0;
  buf[o++] = '[';
  for (int i = 0; i < ndim && o < cap; i++)
    o += (size_t)snprintf(buf + o, cap - o, "%s%" PRId64, i ? ", " : "", shape[i]);
  if (o < cap - 1) {
    buf[o++] = ']';
    buf[o] = 0;
  } else {
    buf[cap - 1] = 0;
  }
  return buf;
}

static int check_sizes(rd *r, d9_st_tensor *t, uint64_t data_len) {
  char sh[D9_MAX_DIMS * 24 + 4];
  uint64_t nbytes;
  fmt_shape(sh, sizeof sh, t->shape, t->ndim);
  if (t->begin > t->end)
    return tfail(r, t->name, "data_offsets [%" PRIu64 ", %" PRIu64 ") end before they begin",
                 t->begin, t->end);
  if (d9_st_nbytes(t->shape, t->ndim, t->dtype, &nbytes))
    return tfail(r, t->name, "shape %s of %s overflows the element count or byte length", sh,
                 d9_dtype_name(t->dtype));
  if (t->end - t->begin != nbytes)
    return tfail(r, t->name,
                 "data_offsets [%" PRIu64 ", %" PRIu64 ") hold %" PRIu64
                 " bytes, but shape %s of %s needs %" PRIu64 " (byte length mismatch)",
                 t->begin, t->end, t->end - t->begin, sh, d9_dtype_name(t->dtype), nbytes);
  if (t->end > data_len)
    return tfail(r, t->name,
                 "data_offsets [%" PRIu64 ", %" PRIu64
                 ") go past the end of the data section (%" PRIu64 " bytes): the file is too short",
                 t->begin, t->end, data_len);
  return 0;
}

static const char *const entry_keys[3] = {"dtype", "shape", "data_offsets"};

/* The entry {dtype, shape, data_offsets} at pos, into t (name set). */
static int read_entry(rd *r, d9_st_tensor *t, uint64_t data_len) {
  size_t at[3] = {0, 0, 0}; /* value positions, 0: absent */
  if (!t->name[0]) return d9_diag_fail(r->diag, EINVAL, "%s: a tensor has an empty name", r->what);
  if (r->s[r->pos] != '{') return tfail(r, t->name, "entry is not an object");
  if (first_member(r))
    do {
      char key[64];
      int whole, k = 0;
      size_t kpos = r->pos;
      read_str(r, key, sizeof key, &whole);
      while (k < 3 && (!whole || strcmp(key, entry_keys[k]))) k++;
      if (k == 3) {
        shown ks;
        show(ks, key);
        return tfail(r, t->name, "unknown key '%s%s'", ks, whole ? "" : "...");
      }
      if (at[k]) {
        size_t line, col;
        d9_json_line_col(r->s, kpos, &line, &col);
        return d9_diag_fail(r->diag, EINVAL, "%s: duplicate key '%s' at byte %zu (line %zu, column %zu)",
                            r->hwhat, entry_keys[k], kpos, line, col);
      }
      ws(r);
      r->pos++; /* ':' */
      ws(r);
      at[k] = r->pos;
      skip_value(r);
    } while (next_member(r));
  size_t end = r->pos;
  for (int k = 0; k < 3; k++)
    if (!at[k]) return tfail(r, t->name, "missing key '%s'", entry_keys[k]);

  char dt[32];
  int whole, n, rc;
  r->pos = at[0];
  if (r->s[r->pos] != '"') return tfail(r, t->name, "dtype is not a string");
  size_t dl = read_str(r, dt, sizeof dt, &whole);
  t->dtype = whole ? d9_dtype_parse(dt, dl) : D9_DTYPE_INVALID;
  if (t->dtype == D9_DTYPE_INVALID) {
    shown d;
    show(d, dt);
    return tfail(r, t->name, "unknown dtype '%s%s'", d, whole ? "" : "...");
  }
  r->pos = at[1];
  if ((rc = read_ints(r, "shape", t->name, D9_MAX_DIMS, 0, t->shape, &n))) return rc;
  t->ndim = n;
  int64_t off[2];
  r->pos = at[2];
  if ((rc = read_ints(r, "data_offsets", t->name, 2, 1, off, &n))) return rc;
  t->begin = (uint64_t)off[0];
  t->end = (uint64_t)off[1];
  r->pos = end;
  return check_sizes(r, t, data_len);
}

/* ---- sorts: duplicate names, layout ---- */

static int cmp_name(const void *a, const void *b, void *ctx) {
  const d9_st_tensor *t = ctx;
  return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

static int cmp_layout(const void *pa, const void *pb, void *ctx) {
  const d9_st_tensor *a = (const d9_st_tensor *)ctx + *(const int *)pa,
                     *b = (const d9_st_tensor *)ctx + *(const int *)pb;
  if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
  if (a->end != b->end) return a->end < b->end ? -1 : 1;
  return (a > b) - (a < b); /* JSON order, the tie-break */
}

static int dup_fail(const rd *r, const char *name) {
  shown n;
  show(n, name);
  return d9_diag_fail(r->diag, EINVAL, "%s: duplicate key '%s'", r->hwhat, n);
}

/* Sorted by (begin, end): start at 0, strictly contiguous, end at data_len.
 * k: n indices (scratch). */
static int check_layout(const rd *r, const d9_st_tensor *ts, int *k, int n, uint64_t data_len) {
  qsort_r(k, (size_t)n, sizeof *k, cmp_layout, (void *)ts);
  uint64_t pos = 0; /* end of the covered prefix */
  for (int i = 0; i < n; i++) {
    const d9_st_tensor *t = &ts[k[i]];
    if (i == 0 && t->begin != 0)
      return tfail(r, t->name,
                   "data_offsets [%" PRIu64 ", %" PRIu64
                   ") leave a gap at the start of the data section "
                   "(the first tensor must start at 0)",
                   t->begin, t->end);
    if (i > 0 && t->begin != pos) {
      const d9_st_tensor *p = &ts[k[i - 1]];
      shown pn;
      show(pn, p->name);
      if (t->begin > pos)
        return tfail(r, t->name,
                     "data_offsets [%" PRIu64 ", %" PRIu64 ") leave a gap of %" PRIu64
                     " bytes after the previous tensor '%s' [%" PRIu64 ", %" PRIu64 ")",
                     t->begin, t->end, t->begin - pos, pn, p->begin, p->end);
      if (t->begin == p->begin && t->end == p->end)
        return tfail(r, t->name, "data_offsets [%" PRIu64 ", %" PRIu64 ") alias tensor '%s' (same range)",
                     t->begin, t->end, pn);
      return tfail(r, t->name,
                   "data_offsets [%" PRIu64 ", %" PRIu64
                   ") overlap the previous tensor '%s' [%" PRIu64 ", %" PRIu64 ")",
                   t->begin, t->end, pn, p->begin, p->end);
    }
    pos = t->end;
  }
  if (pos != data_len) /* pos > data_len was refused per tensor */
    return d9_diag_fail(r->diag, EINVAL,
                        "%s: trailing bytes: the data section is %" PRIu64
                        " bytes, the tensors end at %" PRIu64,
                        r->what, data_len, pos);
  return 0;
}

/* Names unique (k: n indices, scratch), then the layout. */
static int check_table(const rd *r, const d9_st_tensor *ts, int n, uint64_t data_len) {
  int *k = malloc((size_t)(n ? n : 1) * sizeof *k);
  int rc = 0;
  if (!k) return oom(r);
  for (int i = 0; i < n; i++) k[i] = i;
  qsort_r(k, (size_t)n, sizeof *k, cmp_name, (void *)ts);
  for (int i = 1; i < n && !rc; i++)
    if (!strcmp(ts[k[i - 1]].name, ts[k[i]].name)) rc = dup_fail(r, ts[k[i]].name);
  if (!rc) rc = check_layout(r, ts, k, n, data_len);
  free(k);
  return rc;
}

/* ---- __metadata__ ---- */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int read_meta(rd *r, d9_st_header *out) {
  if (r->s[r->pos] != '{')
    return d9_diag_fail(r->diag, EINVAL, "%s: __metadata__ is not an object", r->what);
  size_t save = r->pos;
  int n = 0, rc;
  if (first_member(r))
    do {
      skip_string(r);
      ws(r);
      r->pos++; /* ':' */
      skip_value(r);
      if (++n == INT_MAX) return d9_diag_fail(r->diag, EINVAL, "%s: __metadata__ is too large", r->what);
    } while (next_member(r));
  r->pos = save;
  uint64_t arrays = 2 * (((uint64_t)n + 1) * sizeof(char *) + 16);
  if ((rc = charge(r, arrays))) return rc;
  out->meta_keys = d9_arena_calloc(r->a, (size_t)n + 1, sizeof(char *));
  out->meta_values = d9_arena_calloc(r->a, (size_t)n + 1, sizeof(char *));
  if (!out->meta_keys || !out->meta_values) return oom(r);
  if (first_member(r))
    do {
      char *k, *v;
      if ((rc = arena_str(r, 1, &k))) return rc;
      ws(r);
      r->pos++; /* ':' */
      ws(r);
      if (r->s[r->pos] != '"') {
        shown ks;
        show(ks, k);
        return d9_diag_fail(r->diag, EINVAL, "%s: __metadata__ value of '%s' is not a string",
                            r->what, ks);
      }
      if ((rc = arena_str(r, 1, &v))) return rc;
      out->meta_keys[out->nmeta] = k;
      out->meta_values[out->nmeta++] = v;
    } while (next_member(r));
  /* duplicate keys: a sorted copy of the key pointers */
  if (n > 1) {
    const char **sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) return oom(r);
    memcpy(sorted, out->meta_keys, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_str);
    for (int i = 1; i < n && !rc; i++)
      if (!strcmp(sorted[i - 1], sorted[i])) rc = dup_fail(r, sorted[i]);
    free(sorted);
  }
  return rc;
}

/* ---- the header ---- */

static int read_header(rd *r, uint64_t data_len, const d9_json_shape *shape,
                       d9_st_header *out) {
  size_t members = shape->top_members;
  int rc, seen_meta = 0;
  if (members >= INT_MAX) return d9_diag_fail(r->diag, EINVAL, "%s: too many tensors", r->what);
  uint64_t extra = r->budget ? r->budget->per_tensor : 0;
  /* the text (held while it is read), the table (one spare), the names
   * (each rounded up to 16 bytes in the arena), the caller's own bytes per
   * tensor, the scratch of the sorts; metadata strings are charged as read */
  uint64_t table = ((members + 1) * sizeof(d9_st_tensor) + 15) & ~(uint64_t)15;
  if ((rc = charge(r, r->len + table + members * (extra + sizeof(int) + 16) +
                          shape->top_key_bytes)))
    return rc;
  out->tensors = d9_arena_calloc(r->a, members + 1, sizeof *out->tensors);
  if (!out->tensors) return oom(r);
  ws(r);
  if (first_member(r))
    do {
      char *name;
      if ((rc = arena_str(r, 0, &name))) return rc;
      ws(r);
      r->pos++; /* ':' */
      ws(r);
      if (!strcmp(name, "__metadata__")) {
        if (seen_meta++) return dup_fail(r, name);
        if ((rc = read_meta(r, out))) return rc;
        continue;
      }
      d9_st_tensor *t = &out->tensors[out->ntensors];
      t->name = name;
      if ((rc = read_entry(r, t, data_len))) return rc;
      out->ntensors++;
    } while (next_member(r));
  return check_table(r, out->tensors, out->ntensors, data_len);
}

int d9_st_parse_budget(const char *json, uint64_t header_len, uint64_t file_size,
                       const char *what, d9_arena *a, d9_st_budget *budget,
                       d9_st_header *out, d9_diag *diag) {
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
    return d9_diag_fail(diag, EINVAL, "%s: not a json object (does not start with '{')", hwhat);
  d9_json_shape shape;
  if ((rc = d9_json_check(json, (size_t)n, D9_JSON_MAX_DEPTH, 1, hwhat, &shape, diag)))
    return rc;
  rd r = {.s = json, .len = (size_t)n, .what = what, .hwhat = hwhat, .diag = diag,
          .a = a, .budget = budget};
  size_t before = d9_arena_used(a);
  if ((rc = read_header(&r, data_len, &shape, out))) {
    memset(out, 0, sizeof *out);
    return rc;
  }
  if (budget)
    budget->used += (uint64_t)(d9_arena_used(a) - before) +
                    (uint64_t)out->ntensors * budget->per_tensor;
  out->header_len = n;
  out->data_start = 8 + n;
  return 0;
}

int d9_st_parse(const char *json, uint64_t header_len, uint64_t file_size,
                const char *what, d9_arena *a, d9_st_header *out, d9_diag *diag) {
  return d9_st_parse_budget(json, header_len, file_size, what, a, NULL, out, diag);
}
