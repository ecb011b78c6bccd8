/* test_pattern.c - tensor name patterns (mapper/pattern.h): syntax check,
 * matching with captures, filling, literal detection.
 *
 * Table driven. Captures are written as "name=value;name=value" both for
 * pre-bound input and for the expected result. A seeded random test builds
 * names and patterns from the same components and checks match and fill
 * against that construction (the seed is printed; D9_TEST_SEED overrides). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mapper/pattern.h"

/* ---- helpers ---- */

/* Fill caps from "a=x;b=y.z" (values point into buf, which must outlive caps). */
static void caps_from(const char *spec, char *buf, size_t bufsz, d9_caps *caps) {
  memset(caps, 0, sizeof *caps);
  if (!spec || !*spec) return;
  assert_true(strlen(spec) < bufsz);
  strcpy(buf, spec);
  for (char *p = buf; p && *p;) {
    char *semi = strchr(p, ';'), *eq = strchr(p, '=');
    if (semi) *semi = 0;
    assert_non_null(eq);
    *eq = 0;
    assert_true(caps->n < D9_MAX_CAPS);
    assert_true(strlen(p) < sizeof caps->c[0].name);
    strcpy(caps->c[caps->n].name, p);
    caps->c[caps->n].val = eq + 1;
    caps->c[caps->n].len = strlen(eq + 1);
    caps->n++;
    p = semi ? semi + 1 : NULL;
  }
}

/* "a=x;b=y" from caps, in slot order. */
static void caps_str(const d9_caps *caps, char *out, size_t cap) {
  size_t o = 0;
  out[0] = 0;
  for (int i = 0; i < caps->n; i++)
    o += (size_t)snprintf(out + o, cap - o, "%s%s=%.*s", i ? ";" : "", caps->c[i].name,
                          (int)caps->c[i].len, caps->c[i].val);
}

static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static uint64_t test_seed(void) {
  const char *e = getenv("D9_TEST_SEED");
  uint64_t seed = e ? strtoull(e, NULL, 0) : (uint64_t)time(NULL);
  printf("test_pattern: seed %llu (set D9_TEST_SEED to replay)\n", (unsigned long long)seed);
  return seed;
}

/* ---- d9_pattern_check ---- */

typedef struct ccase {
  const char *label;
  const char *pat;               /* NULL: use gen */
  char *(*gen)(void);            /* malloc'd pattern */
  const char *msg;               /* NULL: valid */
} ccase;

static char *repeat_caps(int n) {
  char *b = malloc((size_t)n * 8 + 1), *p = b;
  assert_non_null(b);
  for (int i = 0; i < n; i++) p += sprintf(p, "%s{c%d}", i ? "." : "", i);
  return b;
}
static char *gen_8_caps(void) { return repeat_caps(8); }
static char *gen_9_caps(void) { return repeat_caps(9); }
static char *gen_len(size_t n) {
  char *b = malloc(n + 1);
  assert_non_null(b);
  memset(b, 'x', n);
  b[n] = 0;
  return b;
}
static char *gen_1023(void) { return gen_len(1023); }
static char *gen_1024(void) { return gen_len(1024); }
static char *gen_100000(void) { return gen_len(100000); }
static char *gen_name_31(void) {
  char *b = malloc(40);
  assert_non_null(b);
  b[0] = '{';
  memset(b + 1, 'n', 31);
  strcpy(b + 32, "}");
  return b;
}
static char *gen_name_32(void) {
  char *b = malloc(40);
  assert_non_null(b);
  b[0] = '{';
  memset(b + 1, 'n', 32);
  strcpy(b + 33, "}");
  return b;
}

static const ccase ccases[] = {
  /* valid */
  {"literal", "model.embed_tokens.weight", NULL, NULL},
  {"one capture", "model.layers.{L}.self_attn.q_proj.weight", NULL, NULL},
  {"star capture", "{rest*}", NULL, NULL},
  {"underscore digits name", "{_x9}.{A_b}", NULL, NULL},
  {"literal braces", "a{{b}}c", NULL, NULL},
  {"only {{", "{{", NULL, NULL},
  {"only }}", "}}", NULL, NULL},
  {"brace around capture", "{{{L}}}", NULL, NULL},
  {"8 captures", NULL, gen_8_caps, NULL},
  {"31-byte capture name", NULL, gen_name_31, NULL},
  {"1023 bytes", NULL, gen_1023, NULL},
  /* invalid */
  {"empty", "", NULL, "W: empty pattern"},
  {"lone {", "{", NULL, "W: pattern '{': bad capture at byte 0"},
  {"digit first", "{1x}", NULL, "W: pattern '{1x}': bad capture at byte 0"},
  {"lone }", "a}b", NULL, "W: pattern 'a}b': bad capture at byte 1"},
  {"unclosed", "{x", NULL, "W: pattern '{x': bad capture at byte 0"},
  {"unclosed star", "a.{x*", NULL, "bad capture at byte 2"},
  {"two stars", "{x**}", NULL, "bad capture at byte 0"},
  {"dash in name", "{x-y}", NULL, "bad capture at byte 0"},
  {"empty name", "a.{}", NULL, "bad capture at byte 2"},
  {"star only", "{*}", NULL, "bad capture at byte 0"},
  {"dot in name", "{a.b}", NULL, "bad capture at byte 0"},
  {"{{ then lone }", "a{{b}", NULL, "bad capture at byte 4"},
  {"{{ then unclosed", "{{{x", NULL, "bad capture at byte 2"},
  {"9 captures", NULL, gen_9_caps, "more than 8 captures"},
  {"32-byte capture name", NULL, gen_name_32, "bad capture at byte 0"},
  {"1024 bytes", NULL, gen_1024, "W: pattern longer than 1023 bytes"},
  {"100000 bytes", NULL, gen_100000, "W: pattern longer than 1023 bytes"},
};

static void test_check_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof ccases / sizeof *ccases; i++) {
    const ccase *c = &ccases[i];
    char *gen = c->gen ? c->gen() : NULL;
    const char *pat = gen ? gen : c->pat;
    d9_diag diag = {0};
    int rc = d9_pattern_check(pat, "W", &diag);
    if (c->msg) {
      if (rc != -EINVAL || !diag.set || !strstr(diag.msg, c->msg))
        fail_msg("case '%s': want -EINVAL '%s', got rc %d '%s'", c->label, c->msg, rc,
                 diag.msg);
    } else if (rc != 0 || diag.set) {
      fail_msg("case '%s': unexpected rc %d '%s'", c->label, rc, diag.msg);
    }
    free(gen);
  }
  /* NULL pattern and NULL diag are both allowed */
  assert_int_equal(d9_pattern_check(NULL, "W", NULL), -EINVAL);
  assert_int_equal(d9_pattern_check("{", "W", NULL), -EINVAL);
}

/* ---- d9_pattern_match ---- */

typedef struct mcase {
  const char *label;
  const char *pat, *subject;
  const char *pre;   /* captures already bound ("" none) */
  int match;
  const char *caps;  /* caps afterwards (== pre when no match) */
} mcase;

static const mcase mcases[] = {
  {"literal", "model.embed_tokens.weight", "model.embed_tokens.weight", "", 1, ""},
  {"literal differs", "model.embed_tokens.weight", "model.embed_tokens.bias", "", 0, ""},
  {"literal prefix of subject", "model.norm", "model.norm.weight", "", 0, ""},
  {"subject prefix of literal", "model.norm.weight", "model.norm", "", 0, ""},
  {"empty subject", "a", "", "", 0, ""},
  {"one component", "model.layers.{L}.mlp.weight", "model.layers.17.mlp.weight", "", 1, "L=17"},
  {"component is not a number", "model.layers.{L}.mlp.weight", "model.layers.w1.mlp.weight",
   "", 1, "L=w1"},
  {"{L} does not span dots", "model.layers.{L}.mlp.weight", "model.layers.1.2.mlp.weight",
   "", 0, ""},
  {"{L} is not empty", "model.layers.{L}.mlp.weight", "model.layers..mlp.weight", "", 0, ""},
  {"{L} at end", "model.layers.{L}", "model.layers.3", "", 1, "L=3"},
  {"{L} at end, dots after", "model.layers.{L}", "model.layers.3.x", "", 0, ""},
  {"star spans dots", "{rest*}", "model.layers.0.mlp.up_proj.weight", "",
   1, "rest=model.layers.0.mlp.up_proj.weight"},
  {"star then literal", "{x*}.weight", "a.b.c.weight", "", 1, "x=a.b.c"},
  {"star is not empty", "{x*}.weight", ".weight", "", 0, ""},
  {"star, suffix absent", "{x*}.weight", "a.b.c.bias", "", 0, ""},
  {"capture then star", "model.layers.{L}.{rest*}", "model.layers.3.self_attn.q_proj.weight",
   "", 1, "L=3;rest=self_attn.q_proj.weight"},
  {"three captures", "model.layers.{L}.mlp.experts.{E}.{proj}.weight",
   "model.layers.3.mlp.experts.12.gate_proj.weight", "", 1, "L=3;E=12;proj=gate_proj"},
  {"two captures, shortest first for {a}", "{a}_{b}", "q_k_v", "", 1, "a=q;b=k_v"},
  {"two captures, longest first for {a*}", "{a*}_{b}", "q_k_v", "", 1, "a=q_k;b=v"},
  {"adjacent stars backtrack", "{a*}{b*}", "ab", "", 1, "a=a;b=b"},
  {"repeated name, same text", "{a}.{a}", "x.x", "", 1, "a=x"},
  {"repeated name, longer same text", "{a}.{a}", "xy.xy", "", 1, "a=xy"},
  {"repeated name, different text", "{a}.{a}", "x.y", "", 0, ""},
  {"repeated name, prefix text", "{a}.{a}", "x.xy", "", 0, ""},
  {"repeated name, shorter text", "{a}.{a}", "xy.x", "", 0, ""},
  {"repeated star name", "{p*}.to.{p*}", "a.b.to.a.b", "", 1, "p=a.b"},
  {"literal braces", "x{{y}}", "x{y}", "", 1, ""},
  {"literal braces, subject without", "x{{y}}", "xy", "", 0, ""},
  {"brace around capture", "w{{{L}}}", "w{7}", "", 1, "L=7"},
  {"8 captures", "{a}.{b}.{c}.{d}.{e}.{f}.{g}.{h}", "1.2.3.4.5.6.7.8", "",
   1, "a=1;b=2;c=3;d=4;e=5;f=6;g=7;h=8"},
  /* pre-bound captures: a second input matched consistently */
  {"pre-bound, same text", "model.layers.{L}.k.weight", "model.layers.3.k.weight", "L=3",
   1, "L=3"},
  {"pre-bound, other text", "model.layers.{L}.k.weight", "model.layers.4.k.weight", "L=3",
   0, "L=3"},
  {"pre-bound, longer text", "model.layers.{L}.k.weight", "model.layers.31.k.weight", "L=3",
   0, "L=3"},
  {"pre-bound plus a new one", "layers.{L}.{p}", "layers.3.q", "L=3", 1, "L=3;p=q"},
  {"pre-bound unrelated kept", "{L}", "5", "E=1", 1, "E=1;L=5"},
  {"pre-bound star value", "{x}.w", "a.b.w", "x=a.b", 1, "x=a.b"},
  {"no match after partial capture", "{a}.{b}.z", "x.y.w", "E=1", 0, "E=1"},
  {"no match after backtracking", "{a*}.{b}.z", "p.q.r.s", "", 0, ""},
  {"caps full, new name", "{i}", "x", "a=1;b=2;c=3;d=4;e=5;f=6;g=7;h=8",
   0, "a=1;b=2;c=3;d=4;e=5;f=6;g=7;h=8"},
  {"caps full, known name", "{h}.x", "8.x", "a=1;b=2;c=3;d=4;e=5;f=6;g=7;h=8",
   1, "a=1;b=2;c=3;d=4;e=5;f=6;g=7;h=8"},
};

static void test_match_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof mcases / sizeof *mcases; i++) {
    const mcase *c = &mcases[i];
    d9_diag diag = {0};
    if (d9_pattern_check(c->pat, "W", &diag))
      fail_msg("case '%s': pattern rejected: %s", c->label, diag.msg);
    char buf[256], got[512];
    d9_caps caps;
    caps_from(c->pre, buf, sizeof buf, &caps);
    d9_caps before = caps;
    int m = d9_pattern_match(c->pat, c->subject, &caps);
    caps_str(&caps, got, sizeof got);
    if (m != c->match || strcmp(got, c->caps))
      fail_msg("case '%s': '%s' ~ '%s': got %d '%s', want %d '%s'", c->label, c->pat,
               c->subject, m, got, c->match, c->caps);
    if (!m) assert_memory_equal(&caps, &before, sizeof caps); /* untouched */
  }
}

/* Captured values are borrowed from the subject, not copied. */
static void test_match_borrows_subject(void **state) {
  (void)state;
  const char *s = "model.layers.12.mlp.down_proj.weight";
  d9_caps caps = {0};
  assert_int_equal(d9_pattern_match("model.layers.{L}.mlp.{p}.weight", s, &caps), 1);
  size_t len = 0;
  const char *v = d9_caps_get(&caps, "L", &len);
  assert_ptr_equal(v, s + 13);
  assert_int_equal(len, 2);
  v = d9_caps_get(&caps, "p", &len);
  assert_ptr_equal(v, s + 20);
  assert_int_equal(len, 9);
  assert_null(d9_caps_get(&caps, "q", &len));
  assert_null(d9_caps_get(&caps, "", NULL));
  assert_non_null(d9_caps_get(&caps, "L", NULL)); /* len may be NULL */
}

/* ---- d9_pattern_fill ---- */

typedef struct fcase {
  const char *label;
  const char *pat;
  const char *caps;
  size_t cap;       /* output buffer bytes (exactly this much is allocated) */
  int rc;           /* length or -errno */
  const char *out;  /* on success */
} fcase;

static const fcase fcases[] = {
  {"capture", "model.layers.{L}.w", "L=3;x=a.b", 64, 16, "model.layers.3.w"},
  {"literal", "lm_head.weight", "", 64, 14, "lm_head.weight"},
  {"value with dots, twice", "{x}.{L}.{x}", "L=3;x=a.b", 64, 9, "a.b.3.a.b"},
  {"star form", "pre.{x*}", "x=a.b", 64, 7, "pre.a.b"},
  {"literal braces", "a{{b}}c", "", 64, 5, "a{b}c"},
  {"brace around capture", "{{{L}}}", "L=3", 64, 3, "{3}"},
  {"exact fit", "abc", "", 4, 3, "abc"},
  {"no room for the nul", "abc", "", 3, -ENAMETOOLONG, NULL},
  {"room for the nul only", "abc", "", 1, -ENAMETOOLONG, NULL},
  {"zero bytes", "abc", "", 0, -ENAMETOOLONG, NULL},
  {"capture exact fit", "{x}", "x=a.b", 4, 3, "a.b"},
  {"capture one short", "{x}", "x=a.b", 3, -ENAMETOOLONG, NULL},
  {"capture after literal one short", "ab{x}", "x=a.b", 5, -ENAMETOOLONG, NULL},
  {"missing capture", "{M}.w", "L=3", 64, -ENOENT, NULL},
  {"missing after present", "{L}.{M}", "L=3", 64, -ENOENT, NULL},
};

static void test_fill_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof fcases / sizeof *fcases; i++) {
    const fcase *c = &fcases[i];
    char buf[256];
    d9_caps caps;
    caps_from(c->caps, buf, sizeof buf, &caps);
    char *out = malloc(c->cap ? c->cap : 1); /* ASan catches a write past cap */
    assert_non_null(out);
    char missing[D9_CAP_NAME_MAX] = "";
    int rc = d9_pattern_fill(c->pat, &caps, out, c->cap, missing);
    if (rc != c->rc) fail_msg("case '%s': rc %d, want %d", c->label, rc, c->rc);
    if (c->out) assert_string_equal(out, c->out);
    if (rc == -ENOENT) {
      assert_string_equal(missing, "M"); /* the missing name */
    }
    /* missing may be NULL */
    assert_int_equal(d9_pattern_fill(c->pat, &caps, out, c->cap, NULL), c->rc);
    free(out);
  }
}

/* On -ENOENT the missing capture's name comes back NUL-terminated (an
 * earlier version pointed into the pattern, so %s printed "M}.w"). */
static void test_fill_missing_is_the_name(void **state) {
  (void)state;
  d9_caps caps = {0};
  char out[64];
  char missing[D9_CAP_NAME_MAX] = "";
  assert_int_equal(d9_pattern_fill("{M}.w", &caps, out, sizeof out, missing), -ENOENT);
  assert_string_equal(missing, "M");
}

/* ---- d9_pattern_is_literal ---- */

static void test_is_literal(void **state) {
  (void)state;
  static const struct { const char *pat; int want; } lc[] = {
      {"model.embed_tokens.weight", 1}, {"a{{b}}c", 1}, {"{{", 1},
      {"{L}", 0}, {"model.layers.{L}.w", 0}, {"a.{x*}", 0}, {"{{{L}}}", 0},
  };
  for (size_t i = 0; i < sizeof lc / sizeof *lc; i++)
    if (d9_pattern_is_literal(lc[i].pat) != lc[i].want)
      fail_msg("is_literal('%s') != %d", lc[i].pat, lc[i].want);
}

/* ---- seeded: names built from components, patterns from the same ---- */

static void test_match_fill_random(void **state) {
  (void)state;
  uint64_t st = test_seed();
  static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789_";
  for (int iter = 0; iter < 20000; iter++) {
    int ncomp = 1 + (int)(splitmix64(&st) % 7);
    char comp[8][8];
    for (int k = 0; k < ncomp; k++) {
      int l = 1 + (int)(splitmix64(&st) % 5);
      for (int j = 0; j < l; j++) comp[k][j] = alphabet[splitmix64(&st) % (sizeof alphabet - 1)];
      comp[k][l] = 0;
    }
    /* the last `tail` components become one {rest*}; others are literal or {cK} */
    int tail = splitmix64(&st) % 3 == 0 ? 1 + (int)(splitmix64(&st) % ncomp) : 0;
    char subject[128] = "", pat[256] = "", want[256] = "";
    int iscap[8] = {0}, ncap = 0, lit[8], nlit = 0;
    for (int k = 0; k < ncomp; k++) {
      if (k) strcat(subject, ".");
      strcat(subject, comp[k]);
    }
    for (int k = 0; k < ncomp - tail; k++) {
      if (k) strcat(pat, ".");
      iscap[k] = ncap < 7 && splitmix64(&st) % 2;
      if (iscap[k]) {
        char t[64];
        snprintf(t, sizeof t, "{c%d}", k);
        strcat(pat, t);
        snprintf(t, sizeof t, "%sc%d=%s", ncap ? ";" : "", k, comp[k]);
        strcat(want, t);
        ncap++;
      } else {
        strcat(pat, comp[k]);
        lit[nlit++] = k;
      }
    }
    if (tail) {
      const char *rest = subject;
      for (int k = 0; k < ncomp - tail; k++) rest = strchr(rest, '.') + 1;
      strcat(pat, ncomp - tail ? ".{rest*}" : "{rest*}");
      char t[160];
      snprintf(t, sizeof t, "%srest=%s", ncap ? ";" : "", rest);
      strcat(want, t);
    }
    d9_diag diag = {0};
    if (d9_pattern_check(pat, "W", &diag)) fail_msg("'%s' rejected: %s", pat, diag.msg);
    d9_caps caps = {0};
    char got[512];
    int m = d9_pattern_match(pat, subject, &caps);
    caps_str(&caps, got, sizeof got);
    if (m != 1 || strcmp(got, want))
      fail_msg("'%s' ~ '%s': %d '%s', want 1 '%s'", pat, subject, m, got, want);
    char out[D9_NAME_MAX];
    int n = d9_pattern_fill(pat, &caps, out, sizeof out, NULL);
    if (n != (int)strlen(subject) || strcmp(out, subject))
      fail_msg("fill '%s' -> %d '%s', want '%s'", pat, n, out, subject);
    assert_int_equal(d9_pattern_is_literal(pat), ncap == 0 && !tail);
    /* change one character of a literal component: no match, caps untouched */
    if (nlit) {
      int k = lit[splitmix64(&st) % (uint64_t)nlit];
      char sub2[128];
      strcpy(sub2, subject);
      const char *q = sub2;
      for (int j = 0; j < k; j++) q = strchr(q, '.') + 1;
      char *c = (char *)q + splitmix64(&st) % strlen(comp[k]);
      *c = *c == 'Z' ? 'Y' : 'Z';
      d9_caps c2 = {0};
      if (d9_pattern_match(pat, sub2, &c2) || c2.n)
        fail_msg("'%s' ~ '%s' matched", pat, sub2);
    }
  }
}

/* ---- cost: polynomial whatever the captures ---- */

/* The naive backtracking matcher (the one the memoised search replaced), as
 * the independent reference for which match and which captures come first.
 * Exponential: only for short subjects. */
static int ref_match(const char *p, const char *s, d9_caps *caps) {
  while (*p) {
    if ((p[0] == '{' && p[1] == '{') || (p[0] == '}' && p[1] == '}')) {
      if (*s != p[0]) return 0;
      p += 2, s++;
      continue;
    }
    if (p[0] != '{') {
      if (*s != *p) return 0;
      p++, s++;
      continue;
    }
    const char *q = p + 1;
    while (*q != '}' && *q != '*') q++;
    size_t nlen = (size_t)(q - (p + 1));
    int any = *q == '*';
    const char *next = q + (any ? 2 : 1);
    int known = -1;
    for (int i = 0; i < caps->n; i++)
      if (strlen(caps->c[i].name) == nlen && !memcmp(caps->c[i].name, p + 1, nlen)) known = i;
    if (known >= 0) {
      size_t l = caps->c[known].len;
      if (strncmp(s, caps->c[known].val, l)) return 0;
      p = next, s += l;
      continue;
    }
    if (caps->n >= D9_MAX_CAPS) return 0;
    size_t maxlen = 0;
    while (s[maxlen] && (any || s[maxlen] != '.')) maxlen++;
    for (size_t k = 0; k < maxlen; k++) {
      size_t len = any ? maxlen - k : k + 1;
      int slot = caps->n++;
      memcpy(caps->c[slot].name, p + 1, nlen);
      caps->c[slot].name[nlen] = 0;
      caps->c[slot].val = s;
      caps->c[slot].len = len;
      if (ref_match(next, s + len, caps)) return 1;
      caps->n = slot;
    }
    return 0;
  }
  return *s == 0;
}

/* Seeded: short random patterns (repeated names, {X*}, literals with
 * dots and braces, pre-bound captures) against short random subjects; the
 * result and the captures must equal the naive matcher's. */
static void test_match_same_as_backtracking(void **state) {
  (void)state;
  uint64_t st = test_seed() ^ 0x5bd1e995u;
  static const char *const pieces[] = {"{a}", "{b}", "{c}", "{a*}", "{r*}", "{b}",
                                       ".", "x", "xy", "{{", "}}", "{d}", "{e}"};
  static const char letters[] = "xy.{}";
  int matched = 0;
  for (int iter = 0; iter < 50000; iter++) {
    char pat[64] = "", subj[16], pre[8] = "x.y";
    int np = 1 + (int)(splitmix64(&st) % 6);
    for (int k = 0; k < np; k++)
      strcat(pat, pieces[splitmix64(&st) % (sizeof pieces / sizeof *pieces)]);
    d9_diag diag = {0};
    if (d9_pattern_check(pat, "W", &diag)) continue; /* e.g. 3 {X*} */
    size_t ns = splitmix64(&st) % 12;
    for (size_t k = 0; k < ns; k++) subj[k] = letters[splitmix64(&st) % 5];
    subj[ns] = 0;
    d9_caps want = {0}, got = {0};
    if (splitmix64(&st) % 4 == 0) { /* a pre-bound capture */
      size_t l = splitmix64(&st) % 4;
      strcpy(want.c[0].name, splitmix64(&st) % 2 ? "a" : "z");
      want.c[0].val = pre, want.c[0].len = l, want.n = 1;
      got = want;
    }
    int r = ref_match(pat, subj, &want), m = d9_pattern_match(pat, subj, &got);
    char ws[256], gs[256];
    caps_str(&want, ws, sizeof ws);
    caps_str(&got, gs, sizeof gs);
    if (r != m || (r && strcmp(ws, gs)) || (!m && got.n != want.n))
      fail_msg("'%s' ~ '%s': %d '%s', the backtracking matcher says %d '%s'", pat, subj,
               m, gs, r, ws);
    matched += m;
  }
  assert_true(matched > 1000); /* the random cases do reach matches */
}

/* 8 captures then a literal that never comes: the backtracking matcher
 * tried about n^8 / 8! splits (n = 60 ran over a minute); the memoised one
 * takes O(captures * n^2) steps. Counted through the test hook, so the
 * bound holds on any machine; plus a wall-clock check far above what the
 * search needs (~10 ms at n = 200) and far below the old cost. */
static void test_match_cost_is_polynomial(void **state) {
  (void)state;
  static const char *const pats[] = {
      "{a}{b}{c}{d}{e}{f}{g}{h}X",       /* one component, no dot to anchor */
      "{a*}{b*}{c}{d}{e}{f}{g}{h}X",     /* the {X*} captures span dots too */
      "{a}{b}{c}{d}{a}{e}{f}X",          /* a back-reference */
      "x{a}.{b}{c}.{d}{e}.{f}{g}.{h}.X", /* dotted components */
  };
  for (size_t p = 0; p < sizeof pats / sizeof *pats; p++) {
    for (size_t n = 25; n <= 400; n *= 2) {
      char *s = malloc(n + 1);
      assert_non_null(s);
      for (size_t i = 0; i < n; i++) s[i] = p == 3 && i % 5 == 4 ? '.' : 'x';
      s[n] = 0;
      d9_caps caps = {0};
      uint64_t steps = 0;
      int m = d9_pattern_match_counted(pats[p], s, &caps, &steps);
      assert_int_equal(m, 0);
      assert_int_equal(caps.n, 0);
      /* states: 8 captures x (n+1) positions (x n more with the live
       * back-reference), each trying <= n lengths through <= 17 tokens */
      uint64_t bound = 8 * 17 * (uint64_t)(n + 1) * (n + 1) * (p == 2 ? n + 1 : 1);
      if (steps > bound)
        fail_msg("'%s' on %zu bytes: %llu steps, over the bound %llu", pats[p], n,
                 (unsigned long long)steps, (unsigned long long)bound);
      free(s);
    }
  }
  /* and a match at the end of that search still gives the first captures */
  d9_caps caps = {0};
  assert_int_equal(d9_pattern_match("{a}{b}{c}{d}{e}{f}{g}{h}X", "xxxxxxxxxxxxX", &caps), 1);
  char got[256];
  caps_str(&caps, got, sizeof got);
  assert_string_equal(got, "a=x;b=x;c=x;d=x;e=x;f=x;g=x;h=xxxxx");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_check_table),
      cmocka_unit_test(test_match_table),
      cmocka_unit_test(test_match_borrows_subject),
      cmocka_unit_test(test_fill_table),
      cmocka_unit_test(test_fill_missing_is_the_name),
      cmocka_unit_test(test_is_literal),
      cmocka_unit_test(test_match_fill_random),
      cmocka_unit_test(test_match_same_as_backtracking),
      cmocka_unit_test(test_match_cost_is_polynomial),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
