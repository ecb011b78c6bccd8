#include "pattern.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>

/* One token of a pattern: a literal char, or a capture. */
typedef struct tok {
  int is_cap;
  char ch;          /* literal */
  const char *name; /* capture name (not NUL-terminated) */
  size_t nlen;
  int any;          /* {NAME*}: dots allowed */
  size_t used;      /* pattern bytes this token spans */
} tok;

static int next_tok(const char *p, tok *t) {
  memset(t, 0, sizeof *t);
  if (p[0] == '{' && p[1] == '{') return t->ch = '{', t->used = 2, 0;
  if (p[0] == '}' && p[1] == '}') return t->ch = '}', t->used = 2, 0;
  if (p[0] == '}') return -1;
  if (p[0] != '{') return t->ch = p[0], t->used = 1, 0;
  const char *q = p + 1;
  if (!(isalpha((unsigned char)*q) || *q == '_')) return -1;
  while (isalnum((unsigned char)*q) || *q == '_') q++;
  t->is_cap = 1;
  t->name = p + 1;
  t->nlen = (size_t)(q - (p + 1));
  if (*q == '*') t->any = 1, q++;
  if (*q != '}' || t->nlen >= sizeof(((d9_caps *)0)->c[0].name)) return -1;
  t->used = (size_t)(q + 1 - p);
  return 0;
}

int d9_pattern_check(const char *pat, const char *where, d9_diag *diag) {
  if (!pat || !*pat) return d9_diag_fail(diag, EINVAL, "%s: empty pattern", where);
  int ncap = 0, nany = 0;
  for (const char *p = pat; *p;) {
    tok t;
    if (next_tok(p, &t))
      return d9_diag_fail(diag, EINVAL,
                          "%s: pattern '%s': bad capture at byte %zu (want "
                          "{NAME} or {NAME*})",
                          where, pat, (size_t)(p - pat));
    if (t.is_cap && t.any && ++nany > D9_MAX_ANY_CAPS)
      return d9_diag_fail(diag, EINVAL,
                          "%s: pattern '%s': more than %d {NAME*} captures (matching "
                          "cost grows as the name length to that power)",
                          where, pat, D9_MAX_ANY_CAPS);
    if (t.is_cap && ++ncap > D9_MAX_CAPS)
      return d9_diag_fail(diag, EINVAL, "%s: pattern '%s': more than %d captures",
                          where, pat, D9_MAX_CAPS);
    p += t.used;
  }
  if (strlen(pat) >= D9_NAME_MAX)
    return d9_diag_fail(diag, EINVAL, "%s: pattern longer than %d bytes", where,
                        D9_NAME_MAX - 1);
  return 0;
}

static int find_cap(const d9_caps *caps, const char *name, size_t nlen) {
  for (int i = 0; i < caps->n; i++)
    if (strlen(caps->c[i].name) == nlen && !memcmp(caps->c[i].name, name, nlen))
      return i;
  return -1;
}

/* Backtracking matcher; depth is bounded by D9_MAX_CAPS captures. */
static int match_at(const char *p, const char *s, d9_caps *caps) {
  while (*p) {
    tok t;
    if (next_tok(p, &t)) return 0;
    if (!t.is_cap) {
      if (*s != t.ch) return 0;
      p += t.used, s++;
      continue;
    }
    int known = find_cap(caps, t.name, t.nlen);
    if (known >= 0) {
      size_t l = caps->c[known].len;
      if (strncmp(s, caps->c[known].val, l)) return 0;
      p += t.used, s += l;
      continue;
    }
    if (caps->n >= D9_MAX_CAPS) return 0;
    /* try every length, longest first for {X*}, shortest first for {X} */
    size_t maxlen = 0;
    while (s[maxlen] && (t.any || s[maxlen] != '.')) maxlen++;
    for (size_t k = 0; k < maxlen; k++) {
      size_t len = t.any ? maxlen - k : k + 1;
      int slot = caps->n++;
      memcpy(caps->c[slot].name, t.name, t.nlen);
      caps->c[slot].name[t.nlen] = 0;
      caps->c[slot].val = s;
      caps->c[slot].len = len;
      if (match_at(p + t.used, s + len, caps)) return 1;
      caps->n = slot;
    }
    return 0;
  }
  return *s == 0;
}

int d9_pattern_match(const char *pat, const char *s, d9_caps *caps) {
  d9_caps work = *caps;
  if (!match_at(pat, s, &work)) return 0;
  *caps = work;
  return 1;
}

int d9_pattern_fill(const char *pat, const d9_caps *caps, char *out, size_t cap,
                    char *missing) {
  size_t o = 0;
  for (const char *p = pat; *p;) {
    tok t;
    if (next_tok(p, &t)) return -EINVAL;
    const char *v = &t.ch;
    size_t l = 1;
    if (t.is_cap) {
      int i = find_cap(caps, t.name, t.nlen);
      if (i < 0) {
        if (missing) {
          memcpy(missing, t.name, t.nlen); /* nlen < D9_CAP_NAME_MAX, by next_tok */
          missing[t.nlen] = 0;
        }
        return -ENOENT;
      }
      v = caps->c[i].val, l = caps->c[i].len;
    }
    if (l >= cap - o) return -ENAMETOOLONG;
    memcpy(out + o, v, l);
    o += l;
    p += t.used;
  }
  out[o] = 0;
  return (int)o;
}

int d9_pattern_is_literal(const char *pat) {
  for (const char *p = pat; *p;) {
    tok t;
    if (next_tok(p, &t) || t.is_cap) return 0;
    p += t.used;
  }
  return 1;
}

const char *d9_caps_get(const d9_caps *caps, const char *name, size_t *len) {
  int i = find_cap(caps, name, strlen(name));
  if (i < 0) return NULL;
  if (len) *len = caps->c[i].len;
  return caps->c[i].val;
}
