/* json_strict.c - strict JSON front end for cJSON.
 *
 * cJSON is lenient: it treats every byte <= 0x20 as whitespace, skips a
 * UTF-8 BOM, accepts raw control characters inside strings, "+1", ".5",
 * "01", decodes "\u0000" into a string it then truncates, recurses once per
 * nesting level and keeps the last of duplicate keys. So d9_json_parse runs
 * three passes over untrusted text before and after cJSON:
 *   1. UTF-8 / NUL: the whole buffer, byte by byte;
 *   2. grammar: a non-recursive RFC 8259 scanner with an explicit stack
 *      bounded by max_depth (escapes, surrogate pairs, number syntax,
 *      whitespace, trailing bytes). It also marks numbers whose literal a
 *      double cannot hold exactly when it matters (below);
 *   3. cJSON builds the tree; an iterative walk rejects duplicate keys
 *      (sorted key pointers: O(n log n) per object).
 * d9_json_check runs passes 1 and 2 only, for a reader that walks the text
 * itself (the safetensors header, st_parse.c). Errors in the text name the
 * byte offset and its line and column (counted on failure only).
 *
 * Inexact numbers: cJSON keeps only a double, so "9007199254740993" reads
 * as 2^53 and "1.0000000000000001" as 1. The scanner flags every literal
 * with more than 15 significant digits that is not an exact integer
 * <= 2^53, and every literal not written as an integer ("1.0", "1e3"); the
 * walk sets D9_JSON_INEXACT in that item's type (outside the 0xFF type
 * mask, so cJSON_IsNumber and cJSON itself are unaffected) and d9_json_int
 * refuses flagged items. Floats (e.g. an affine "mul") are read from
 * valuedouble and are unaffected.
 */
#include "json_strict.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
  D9_JSON_INEXACT = 1 << 12, /* private cJSON type bit, see the top */
  D9_JSON_NOT_INT = 1 << 13, /* ... and why: not written as an integer */
  NUM_MAX_CHARS = 63         /* cJSON copies at most 63 number chars */
};

/* ---- messages ---- */

static void show(char *dst, size_t cap, const char *s) { d9_diag_show(dst, cap, s); }

void d9_json_line_col(const char *text, size_t at, size_t *line, size_t *col) {
  size_t l = 1, bol = 0;
  for (size_t i = 0; i < at; i++)
    if (text[i] == '\n') l++, bol = i + 1;
  *line = l;
  *col = at - bol + 1;
}

static void line_col(const unsigned char *s, size_t at, size_t *line, size_t *col) {
  d9_json_line_col((const char *)s, at, line, col);
}

/* "WHAT: REASON at byte N (line L, column C)"; returns -EINVAL. */
static int fail_text(d9_diag *diag, const char *what, const unsigned char *s,
                     size_t at, const char *reason) {
  size_t line, col;
  line_col(s, at, &line, &col);
  return d9_diag_fail(diag, EINVAL, "%s: %s at byte %zu (line %zu, column %zu)",
                      what, reason, at, line, col);
}

/* ---- pass 1: UTF-8 and NUL ---- */

/* Returns the offset of the first bad byte or len; *nul set if it is a NUL. */
static size_t utf8_scan(const unsigned char *s, size_t len, int *nul) {
  size_t i = 0;
  *nul = 0;
  while (i < len) {
    unsigned char c = s[i];
    if (c < 0x80) {
      if (c == 0) {
        *nul = 1;
        return i;
      }
      i++;
      continue;
    }
    size_t n;                 /* continuation bytes */
    unsigned char lo = 0x80, hi = 0xBF; /* range of the first one */
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0;      /* overlong */
      else if (c == 0xED) hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90;      /* overlong */
      else if (c == 0xF4) hi = 0x8F; /* above U+10FFFF */
    } else {
      return i; /* stray continuation, C0/C1 overlong, F5..FF */
    }
    if (len - i <= n) return i; /* truncated */
    if (s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k <= n; k++)
      if ((s[i + k] & 0xC0) != 0x80) return i;
    i += n + 1;
  }
  return len;
}

/* ---- pass 2: grammar ---- */

typedef struct scan {
  const unsigned char *s;
  size_t len, pos;
  int spaces_only; /* after the value: only 0x20 */
  const char *what;
  d9_diag *diag;
  size_t nnum;              /* numbers seen so far */
  size_t *inexact;          /* 2 * ordinal + (not written as an integer) of
                               the flagged numbers, ascending */
  size_t ninexact, capinexact;
  int no_flags;             /* d9_json_check: no tree, so no number flags */
  d9_json_shape shape;      /* counts for d9_json_check */
} scan;

static int fail_at(scan *sc, size_t at, const char *reason) {
  return fail_text(sc->diag, sc->what, sc->s, at, reason);
}

static int is_ws(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void skip_ws(scan *sc) {
  while (sc->pos < sc->len && is_ws(sc->s[sc->pos])) sc->pos++;
}

static int hex4(const unsigned char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    unsigned char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

/* A string starting at the opening quote; leaves pos after the closing one. */
static int scan_string(scan *sc) {
  const unsigned char *s = sc->s;
  size_t start = sc->pos, p = sc->pos + 1, len = sc->len;
  for (;;) {
    if (p >= len) return fail_at(sc, start, "unterminated string starting");
    unsigned char c = s[p];
    if (c == '"') break;
    if (c < 0x20) {
      char r[64];
      snprintf(r, sizeof r, "control character 0x%02x in a string", c);
      return fail_at(sc, p, r);
    }
    if (c != '\\') {
      p++;
      continue;
    }
    if (p + 1 >= len) return fail_at(sc, start, "unterminated string starting");
    unsigned char e = s[p + 1];
    if (e && strchr("\"\\/bfnrt", e)) {
      p += 2;
      continue;
    }
    if (e != 'u') {
      char r[64];
      if (e > 0x20 && e < 0x7f)
        snprintf(r, sizeof r, "invalid escape '\\%c' in a string", e);
      else
        snprintf(r, sizeof r, "invalid escape '\\' + 0x%02x in a string", e);
      return fail_at(sc, p, r);
    }
    unsigned u, u2;
    if (len - p < 6 || hex4(s + p + 2, &u))
      return fail_at(sc, p, "invalid \\u escape in a string");
    if (u == 0) return fail_at(sc, p, "\\u0000 (nul) in a string");
    if (u >= 0xDC00 && u <= 0xDFFF)
      return fail_at(sc, p, "lone low surrogate \\u escape in a string");
    if (u >= 0xD800 && u <= 0xDBFF) {
      if (len - p < 12 || s[p + 6] != '\\' || s[p + 7] != 'u' ||
          hex4(s + p + 8, &u2) || u2 < 0xDC00 || u2 > 0xDFFF)
        return fail_at(sc, p, "unpaired high surrogate \\u escape in a string");
      p += 12;
    } else {
      p += 6;
    }
  }
  sc->pos = p + 1;
  return 0;
}

/* Is the literal (digits dig[0..n), value dig * 10^exp10) exactly an integer
 * <= 2^53, or short enough (<= 15 significant digits, not tiny) that the
 * double keeps its integrality and its integer value exactly? */
static int number_exact(const char *dig, size_t n, long exp10) {
  size_t a = 0;
  while (a < n && dig[a] == '0') a++;
  while (n > a && dig[n - 1] == '0') {
    n--;
    exp10++;
  }
  size_t sig = n - a;
  if (sig == 0) return 1;
  /* below 1e-300 (sub-normal or flushed to 0): fractional, yet it may read
   * as 0.0; otherwise 15 digits round-trip through a double */
  if (sig <= 15) return exp10 + (long)sig > -300;
  if (exp10 < 0 || (long)sig + exp10 > 16) return 0;
  uint64_t v = 0;
  for (size_t i = a; i < n; i++) v = v * 10 + (uint64_t)(dig[i] - '0');
  for (long i = 0; i < exp10; i++) v *= 10;
  return v <= (UINT64_C(1) << 53);
}

static int scan_number(scan *sc) {
  const unsigned char *s = sc->s;
  size_t start = sc->pos, p = sc->pos, len = sc->len;
  char dig[NUM_MAX_CHARS + 1];
  size_t nd = 0, nfrac = 0;
  long exp = 0;
  if (s[p] == '-') p++;
  if (p < len && s[p] == '0') {
    dig[nd++] = '0';
    p++;
    if (p < len && s[p] >= '0' && s[p] <= '9')
      return fail_at(sc, start, "leading zero in a number");
  } else if (p < len && s[p] >= '1' && s[p] <= '9') {
    while (p < len && s[p] >= '0' && s[p] <= '9') {
      if (nd < NUM_MAX_CHARS) dig[nd++] = (char)s[p];
      p++;
    }
  } else {
    return fail_at(sc, start, "invalid number");
  }
  if (p < len && s[p] == '.') {
    p++;
    if (p >= len || s[p] < '0' || s[p] > '9')
      return fail_at(sc, start, "invalid number (no digit after '.')");
    while (p < len && s[p] >= '0' && s[p] <= '9') {
      if (nd < NUM_MAX_CHARS) dig[nd++] = (char)s[p];
      nfrac++;
      p++;
    }
  }
  if (p < len && (s[p] == 'e' || s[p] == 'E')) {
    int neg = 0;
    p++;
    if (p < len && (s[p] == '+' || s[p] == '-')) neg = s[p++] == '-';
    if (p >= len || s[p] < '0' || s[p] > '9')
      return fail_at(sc, start, "invalid number (no digit in the exponent)");
    while (p < len && s[p] >= '0' && s[p] <= '9') {
      if (exp < 100000) exp = exp * 10 + (s[p] - '0');
      p++;
    }
    if (neg) exp = -exp;
  }
  if (p - start > NUM_MAX_CHARS)
    return fail_at(sc, start, "number longer than 63 characters");
  /* integers are written as integers: the reference safetensors parser
   * refuses "1.0" and "1e0" as shapes and offsets, and so does d9_json_int */
  int written_int = memchr(s + start, '.', p - start) == NULL &&
                    memchr(s + start, 'e', p - start) == NULL &&
                    memchr(s + start, 'E', p - start) == NULL;
  if (!sc->no_flags && (!written_int || !number_exact(dig, nd, exp - (long)nfrac))) {
    if (sc->ninexact == sc->capinexact) {
      size_t cap = sc->capinexact ? 2 * sc->capinexact : 16;
      size_t *n = realloc(sc->inexact, cap * sizeof *n);
      if (!n) return d9_diag_fail(sc->diag, ENOMEM, "%s: out of memory",
                                  sc->what);
      sc->inexact = n;
      sc->capinexact = cap;
    }
    sc->inexact[sc->ninexact++] = 2 * sc->nnum + !written_int;
  }
  sc->nnum++;
  sc->pos = p;
  return 0;
}

enum { ST_VALUE, ST_VALUE_OR_CLOSE, ST_KEY, ST_KEY_OR_CLOSE, ST_COLON };

/* Validates the whole text; *is_object tells what the top value was. */
static int scan_json(scan *sc, int max_depth, int *is_object) {
  const unsigned char *s = sc->s;
  unsigned char *stack = malloc((size_t)max_depth + 1); /* '{' or '[' */
  int depth = 0, state = ST_VALUE, rc = 0;
  if (!stack) return d9_diag_fail(sc->diag, ENOMEM, "%s: out of memory", sc->what);
  skip_ws(sc);
  if (sc->pos >= sc->len) {
    rc = d9_diag_fail(sc->diag, EINVAL, "%s: empty json text", sc->what);
    goto out;
  }
  *is_object = s[sc->pos] == '{';
  for (;;) {
    skip_ws(sc);
    if (sc->pos >= sc->len) {
      rc = fail_at(sc, sc->pos, "unexpected end of the json");
      goto out;
    }
    unsigned char c = s[sc->pos];
    int done_value = 0; /* a complete value was just consumed */
    switch (state) {
    case ST_VALUE_OR_CLOSE:
    case ST_KEY_OR_CLOSE:
      if (c == (state == ST_KEY_OR_CLOSE ? '}' : ']')) {
        depth--;
        sc->pos++;
        done_value = 1;
        break;
      }
      if (state == ST_KEY_OR_CLOSE) goto key;
      /* fall through */
    case ST_VALUE:
      if (c == '{' || c == '[') {
        if (depth >= max_depth) {
          char r[64];
          snprintf(r, sizeof r, "json nested deeper than %d", max_depth);
          rc = fail_at(sc, sc->pos, r);
          goto out;
        }
        stack[depth++] = c;
        sc->pos++;
        state = c == '{' ? ST_KEY_OR_CLOSE : ST_VALUE_OR_CLOSE;
        continue;
      }
      if (c == '"') {
        if ((rc = scan_string(sc))) goto out;
      } else if (c == '-' || (c >= '0' && c <= '9')) {
        if ((rc = scan_number(sc))) goto out;
      } else if (sc->len - sc->pos >= 4 && !memcmp(s + sc->pos, "true", 4)) {
        sc->pos += 4;
      } else if (sc->len - sc->pos >= 5 && !memcmp(s + sc->pos, "false", 5)) {
        sc->pos += 5;
      } else if (sc->len - sc->pos >= 4 && !memcmp(s + sc->pos, "null", 4)) {
        sc->pos += 4;
      } else {
        rc = fail_at(sc, sc->pos, "expected a json value");
        goto out;
      }
      done_value = 1;
      break;
    case ST_KEY:
    key:
      if (c != '"') {
        rc = fail_at(sc, sc->pos, "expected a string key");
        goto out;
      }
      size_t kstart = sc->pos;
      if ((rc = scan_string(sc))) goto out;
      if (depth == 1) {
        sc->shape.top_members++;
        sc->shape.top_key_bytes += sc->pos - kstart - 2;
      }
      state = ST_COLON;
      continue;
    case ST_COLON:
      if (c != ':') {
        rc = fail_at(sc, sc->pos, "expected ':'");
        goto out;
      }
      sc->pos++;
      state = ST_VALUE;
      continue;
    }
    if (!done_value) continue;
    /* after a value: end of text, or ',' / the closing bracket */
    for (;;) {
      if (depth == 0) goto top_done;
      skip_ws(sc);
      if (sc->pos >= sc->len) {
        rc = fail_at(sc, sc->pos, "unexpected end of the json");
        goto out;
      }
      c = s[sc->pos];
      unsigned char close = stack[depth - 1] == '{' ? '}' : ']';
      if (c == ',') {
        sc->pos++;
        state = stack[depth - 1] == '{' ? ST_KEY : ST_VALUE;
        break;
      }
      if (c != close) {
        rc = fail_at(sc, sc->pos, close == '}' ? "expected ',' or '}'"
                                               : "expected ',' or ']'");
        goto out;
      }
      depth--;
      sc->pos++;
    }
  }
top_done:
  while (sc->pos < sc->len &&
         (sc->spaces_only ? s[sc->pos] == ' ' : is_ws(s[sc->pos])))
    sc->pos++;
  if (sc->pos < sc->len)
    rc = fail_at(sc, sc->pos, *is_object ? "trailing bytes after the json object"
                                         : "trailing bytes after the json value");
out:
  free(stack);
  return rc;
}

/* ---- pass 3: the tree ---- */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Pre-order walk (document order): duplicate keys, inexact-number flags.
 * The scanner bounded the nesting, so the stack holds max_depth + 1 items. */
static int walk_tree(cJSON *root, int max_depth, const scan *sc) {
  cJSON **stack = malloc(((size_t)max_depth + 1) * sizeof *stack);
  const char **keys = NULL;
  size_t capkeys = 0, nnum = 0, nexti = 0;
  int sp = 0, rc = 0;
  if (!stack) return d9_diag_fail(sc->diag, ENOMEM, "%s: out of memory", sc->what);
  for (cJSON *it = root;;) {
    if (cJSON_IsNumber(it)) {
      if (nexti < sc->ninexact && sc->inexact[nexti] / 2 == nnum) {
        it->type |= D9_JSON_INEXACT | (sc->inexact[nexti] % 2 ? D9_JSON_NOT_INT : 0);
        nexti++;
      }
      nnum++;
    }
    if (cJSON_IsObject(it) && it->child && it->child->next) {
      size_t n = 0;
      for (cJSON *k = it->child; k; k = k->next) {
        if (n == capkeys) {
          size_t cap = capkeys ? 2 * capkeys : 64;
          const char **nk = realloc(keys, cap * sizeof *nk);
          if (!nk) {
            rc = d9_diag_fail(sc->diag, ENOMEM, "%s: out of memory", sc->what);
            goto out;
          }
          keys = nk;
          capkeys = cap;
        }
        keys[n++] = k->string;
      }
      const char *dup = NULL;
      if (n <= 8) { /* small objects (tensor entries): pairwise */
        for (size_t i = 1; i < n && !dup; i++)
          for (size_t j = 0; j < i && !dup; j++)
            if (!strcmp(keys[i], keys[j])) dup = keys[i];
      } else {
        qsort(keys, n, sizeof *keys, cmp_str);
        for (size_t i = 1; i < n && !dup; i++)
          if (!strcmp(keys[i - 1], keys[i])) dup = keys[i];
      }
      if (dup) {
        char k[D9_DIAG_SHOW_MAX * 4 + 8];
        show(k, sizeof k, dup);
        rc = d9_diag_fail(sc->diag, EINVAL, "%s: duplicate key '%s'", sc->what, k);
        goto out;
      }
    }
    if ((cJSON_IsObject(it) || cJSON_IsArray(it)) && it->child &&
        sp <= max_depth) {
      stack[sp++] = it;
      it = it->child;
      continue;
    }
    while (sp > 0 && !it->next) it = stack[--sp];
    if (sp == 0) break;
    it = it->next;
  }
out:
  free(keys);
  free(stack);
  return rc;
}

/* Passes 1 and 2; returns 0 or -errno with diag set. */
static int check_text(scan *sc, int max_depth, int *is_object) {
  int nul;
  size_t bad = utf8_scan(sc->s, sc->len, &nul);
  if (bad < sc->len)
    return fail_text(sc->diag, sc->what, sc->s, bad,
                     nul ? "nul byte in the json" : "invalid utf-8");
  return scan_json(sc, max_depth, is_object);
}

static int clamp_depth(int max_depth) {
  if (max_depth < 0) return 0;
  return max_depth > CJSON_NESTING_LIMIT ? CJSON_NESTING_LIMIT : max_depth;
}

int d9_json_check(const char *buf, size_t len, int max_depth,
                  int spaces_only_after, const char *what, d9_json_shape *shape,
                  d9_diag *diag) {
  scan sc = {.s = (const unsigned char *)buf, .len = len,
             .spaces_only = spaces_only_after, .what = what, .diag = diag,
             .no_flags = 1};
  int is_object = 0;
  int rc = check_text(&sc, max_depth < 0 ? 0 : max_depth, &is_object);
  if (!rc && shape) *shape = sc.shape;
  return rc;
}

int d9_json_read(const char *buf, size_t len, int max_depth,
                 int spaces_only_after, const char *what, cJSON **out,
                 d9_diag *diag) {
  const unsigned char *s = (const unsigned char *)buf;
  max_depth = clamp_depth(max_depth);
  *out = NULL;
  scan sc = {.s = s, .len = len, .spaces_only = spaces_only_after,
             .what = what, .diag = diag};
  int is_object = 0, rc;
  cJSON *root = NULL;
  if ((rc = check_text(&sc, max_depth, &is_object))) goto fail;

  const char *end = NULL;
  root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
  if (!root) {
    /* the text is valid and within cJSON's nesting limit: only an
     * allocation can have failed */
    rc = d9_diag_fail(diag, ENOMEM,
                      "%s: out of memory building the json tree of %zu bytes",
                      what, len);
    goto fail;
  }
  /* belt and braces: the scanner already checked what follows the value */
  for (size_t i = end ? (size_t)(end - buf) : len; i < len; i++)
    if (spaces_only_after ? s[i] != ' ' : !is_ws(s[i])) {
      rc = fail_text(diag, what, s, i, is_object ? "trailing bytes after the json object"
                                                : "trailing bytes after the json value");
      goto fail;
    }
  if ((rc = walk_tree(root, max_depth, &sc))) goto fail;
  free(sc.inexact);
  *out = root;
  return 0;
fail:
  cJSON_Delete(root);
  free(sc.inexact);
  return rc;
}

cJSON *d9_json_parse(const char *buf, size_t len, int max_depth,
                     int spaces_only_after, const char *what, d9_diag *diag) {
  cJSON *root;
  return d9_json_read(buf, len, max_depth, spaces_only_after, what, &root, diag)
             ? NULL : root;
}

const char *d9_json_int_why(const cJSON *v, int64_t lo, int64_t hi,
                            char *buf, size_t cap) {
  const int64_t lim = INT64_C(1) << 53;
  if (hi > lim) hi = lim;
  if (lo < -lim) lo = -lim;
  if (!cJSON_IsNumber(v)) return "is not a number";
  double d = v->valuedouble;
  if (v->type & D9_JSON_NOT_INT)
    return "is not written as an integer (no '.', no exponent)";
  if (v->type & D9_JSON_INEXACT)
    return "is beyond 2^53, where a json number (a double) loses integers";
  if (d < (double)lo || d > (double)hi) {
    snprintf(buf, cap, "%.0f is outside [%lld, %lld]", d, (long long)lo,
             (long long)hi);
    return buf;
  }
  return NULL;
}

int d9_json_int(const cJSON *v, int64_t lo, int64_t hi, int64_t *out) {
  const int64_t lim = INT64_C(1) << 53;
  if (!cJSON_IsNumber(v) || (v->type & D9_JSON_INEXACT)) return -EINVAL;
  if (hi > lim) hi = lim;
  if (lo < -lim) lo = -lim;
  double d = v->valuedouble;
  /* NaN fails both comparisons; |lo|, |hi| <= 2^53 convert exactly */
  if (!(d >= (double)lo && d <= (double)hi)) return -EINVAL;
  int64_t i = (int64_t)d;
  if ((double)i != d) return -EINVAL; /* fractional */
  *out = i;
  return 0;
}
