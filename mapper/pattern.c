#include "pattern.h"

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
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
                          "%s: pattern '%s': more than %d {NAME*} captures (several "
                          "{NAME*} in a row make the split of a name ambiguous)",
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

/* ---- matching ----
 *
 * The pattern is compiled into at most 2 * D9_MAX_CAPS + 1 tokens: literal
 * runs and captures. A capture is "new" at its first occurrence when its
 * name is not bound yet (it branches over the lengths it may take) or a
 * reference (it must repeat a bound text: no choice). The search is the
 * plain depth-first one - {X} shortest first, {X*} longest first - so the
 * first match, and so the captures, are those of a backtracking matcher.
 * What keeps it polynomial is a memo of failed states: a state is (new
 * capture token, subject position, the texts bound so far that a later
 * token still refers to). The rest of the search depends on nothing else,
 * so a state that failed once fails again and is not re-explored. Without
 * back-references the states are at most D9_MAX_CAPS * (n + 1) and each
 * tries at most n lengths: O(D9_MAX_CAPS * n^2) steps; each back-reference
 * live across a capture multiplies the state count by at most n^2. */

enum { MAX_TOKS = 2 * D9_MAX_CAPS + 1 };

typedef struct ctok {
  const char *lit; /* literal run (pattern bytes, braces still doubled) */
  size_t litlen;   /* bytes of text it matches */
  int slot;        /* capture: local slot (0..) for new, or -1 literal */
  int ref;         /* capture: slot to repeat (local) or -1 */
  const char *fixed; /* capture: pre-bound text to repeat, or NULL */
  size_t fixedlen;
  int any;         /* {NAME*} */
  unsigned live;   /* new captures: local slots bound before, used at or after */
  const char *name;
  size_t nlen;
} ctok;

typedef struct matcher {
  const char *s;
  size_t n;        /* strlen(s) */
  ctok t[MAX_TOKS];
  int ntok, nnew;
  size_t off[D9_MAX_CAPS], len[D9_MAX_CAPS]; /* local slot bindings */
  uint64_t *steps; /* test hook, or NULL */
  /* memo of failed states: open addressing over keys kept in pool as
   * [klen, key...]; slots hold pool offset + 1 (0: empty) */
  uint32_t *slots, *pool;
  size_t nslots, nused, plen, pcap;
  int memo_off;    /* an allocation failed: search on without the memo */
  uint32_t slots0[128], pool0[1024];
} matcher;

/* literal run at p: bytes it matches, advancing *pp past it */
static size_t lit_run(const char **pp) {
  const char *p = *pp;
  size_t n = 0;
  tok t;
  while (*p && !next_tok(p, &t) && !t.is_cap) p += t.used, n++;
  *pp = p;
  return n;
}

/* does literal token k match s at pos? (its bytes, braces undoubled) */
static int lit_eq(const ctok *k, const char *s) {
  const char *p = k->lit;
  for (size_t i = 0; i < k->litlen; i++) {
    tok t;
    next_tok(p, &t);
    if (s[i] != t.ch) return 0;
    p += t.used;
  }
  return 1;
}

/* Compile pat against the captures already bound. Returns 0, or -1 when
 * the pattern cannot match (more captures than slots). */
static int compile(matcher *m, const char *pat, const d9_caps *caps) {
  m->ntok = m->nnew = 0;
  for (const char *p = pat; *p;) {
    ctok *k = &m->t[m->ntok];
    tok t;
    memset(k, 0, sizeof *k);
    k->slot = k->ref = -1;
    if (next_tok(p, &t)) return -1;
    if (!t.is_cap) {
      k->lit = p;
      k->litlen = lit_run(&p);
    } else {
      int known = find_cap(caps, t.name, t.nlen);
      k->name = t.name, k->nlen = t.nlen, k->any = t.any;
      if (known >= 0) {
        k->fixed = caps->c[known].val, k->fixedlen = caps->c[known].len;
      } else {
        for (int j = 0; j < m->ntok; j++)
          if (m->t[j].slot >= 0 && m->t[j].nlen == t.nlen &&
              !memcmp(m->t[j].name, t.name, t.nlen))
            k->ref = m->t[j].slot;
        if (k->ref < 0) {
          if (caps->n + m->nnew >= D9_MAX_CAPS) return -1;
          k->slot = m->nnew++;
        }
      }
      p += t.used;
    }
    if (++m->ntok == MAX_TOKS && *p) return -1; /* not a checked pattern */
  }
  /* liveness: slots bound before token i and referenced at or after it */
  unsigned bound = 0, used_after = 0, after[MAX_TOKS];
  for (int i = m->ntok - 1; i >= 0; i--) {
    if (m->t[i].ref >= 0) used_after |= 1u << m->t[i].ref;
    after[i] = used_after;
  }
  for (int i = 0; i < m->ntok; i++) {
    if (m->t[i].slot < 0) continue;
    m->t[i].live = bound & after[i];
    bound |= 1u << m->t[i].slot;
  }
  return 0;
}

static uint32_t hash_key(const uint32_t *k, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) /* FNV-1a, mod 2^32 without an unsigned wrap */
    h = (uint32_t)((uint64_t)(h ^ k[i]) * 16777619u);
  return h;
}

/* 1 if the key is in the memo */
static int memo_has(const matcher *m, const uint32_t *k, size_t n) {
  if (!m->nused) return 0;
  for (size_t i = hash_key(k, n) & (m->nslots - 1);; i = (i + 1) & (m->nslots - 1)) {
    uint32_t o = m->slots[i];
    if (!o) return 0;
    if (m->pool[o - 1] == n && !memcmp(m->pool + o, k, n * sizeof *k)) return 1;
  }
}

static void memo_put_slot(matcher *m, uint32_t o) {
  const uint32_t *k = m->pool + o;
  size_t i = hash_key(k, m->pool[o - 1]) & (m->nslots - 1);
  while (m->slots[i]) i = (i + 1) & (m->nslots - 1);
  m->slots[i] = o;
}

/* Grow buffers that may still be the in-struct ones. */
static uint32_t *grow(uint32_t *p, const uint32_t *inner, size_t keep, size_t cap) {
  uint32_t *np = p == inner ? malloc(cap * sizeof *np) : realloc(p, cap * sizeof *np);
  if (np && p == inner) memcpy(np, inner, keep * sizeof *np);
  return np;
}

static void memo_add(matcher *m, const uint32_t *k, size_t n) {
  if (m->memo_off) return;
  if (m->plen + n + 1 > m->pcap) {
    size_t cap = 2 * m->pcap + n + 1;
    uint32_t *np = cap < UINT32_MAX ? grow(m->pool, m->pool0, m->plen, cap) : NULL;
    if (!np) goto off;
    m->pool = np, m->pcap = cap;
  }
  if (2 * (m->nused + 1) > m->nslots) {
    size_t cap = 2 * m->nslots;
    uint32_t *ns = m->slots == m->slots0 ? malloc(cap * sizeof *ns)
                                         : realloc(m->slots, cap * sizeof *ns);
    if (!ns) goto off;
    memset(ns, 0, cap * sizeof *ns);
    m->slots = ns, m->nslots = cap;
    for (size_t o = 0; o < m->plen; o += 1 + m->pool[o]) memo_put_slot(m, (uint32_t)o + 1);
  }
  m->pool[m->plen] = (uint32_t)n;
  memcpy(m->pool + m->plen + 1, k, n * sizeof *k);
  memo_put_slot(m, (uint32_t)m->plen + 1);
  m->plen += n + 1;
  m->nused++;
  return;
off:
  m->memo_off = 1;
}

static void tick(matcher *m) {
  if (m->steps) ++*m->steps;
}

/* Does the subject from pos match tokens [i, ntok)? */
static int search(matcher *m, int i, size_t pos) {
  for (; i < m->ntok; i++) {
    ctok *k = &m->t[i];
    tick(m);
    if (k->slot < 0) { /* literal or reference: no choice */
      const char *v = k->ref >= 0 ? m->s + m->off[k->ref] : k->fixed;
      size_t l = k->lit ? k->litlen : k->ref >= 0 ? m->len[k->ref] : k->fixedlen;
      if (l > m->n - pos) return 0;
      if (k->lit ? !lit_eq(k, m->s + pos) : memcmp(m->s + pos, v, l) != 0) return 0;
      pos += l;
      continue;
    }
    uint32_t key[2 + 2 * D9_MAX_CAPS];
    size_t nk = 0;
    key[nk++] = (uint32_t)i;
    key[nk++] = (uint32_t)pos;
    for (int b = 0; b < D9_MAX_CAPS; b++)
      if (k->live & (1u << b))
        key[nk++] = (uint32_t)m->off[b], key[nk++] = (uint32_t)m->len[b];
    if (memo_has(m, key, nk)) return 0;
    size_t maxlen = 0;
    while (pos + maxlen < m->n && (k->any || m->s[pos + maxlen] != '.')) maxlen++;
    for (size_t j = 0; j < maxlen; j++) {
      size_t len = k->any ? maxlen - j : j + 1;
      tick(m);
      m->off[k->slot] = pos, m->len[k->slot] = len;
      if (search(m, i + 1, pos + len)) return 1;
    }
    memo_add(m, key, nk);
    return 0;
  }
  return pos == m->n;
}

int d9_pattern_match_counted(const char *pat, const char *s, d9_caps *caps,
                             uint64_t *steps) {
  matcher mm, *m = &mm; /* ~5 KB of stack; the memo starts inside it */
  int ok = 0;
  m->s = s;
  m->n = strlen(s);
  m->steps = steps;
  m->slots = m->slots0, m->nslots = sizeof m->slots0 / sizeof m->slots0[0];
  m->pool = m->pool0, m->pcap = sizeof m->pool0 / sizeof m->pool0[0];
  m->nused = m->plen = 0;
  m->memo_off = m->n >= UINT32_MAX; /* keys hold positions as 32 bits */
  memset(m->slots0, 0, sizeof m->slots0);
  if (!compile(m, pat, caps) && search(m, 0, 0)) {
    ok = 1;
    for (int i = 0; i < m->ntok; i++) {
      const ctok *k = &m->t[i];
      if (k->slot < 0) continue;
      int c = caps->n++;
      memcpy(caps->c[c].name, k->name, k->nlen);
      caps->c[c].name[k->nlen] = 0;
      caps->c[c].val = s + m->off[k->slot];
      caps->c[c].len = m->len[k->slot];
    }
  }
  if (m->slots != m->slots0) free(m->slots);
  if (m->pool != m->pool0) free(m->pool);
  return ok;
}

int d9_pattern_match(const char *pat, const char *s, d9_caps *caps) {
  return d9_pattern_match_counted(pat, s, caps, NULL);
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
