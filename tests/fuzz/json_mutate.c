/* json_mutate.c - structure-aware JSON mutation (json_mutate.h). */
#include "json_mutate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint64_t d9_fz_next(d9_fz_rng *r) { /* splitmix64 */
  uint64_t z = (r->s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

int d9_fz_limit_count(d9_fz_rng *r) {
  static const int counts[] = {0, 1, 2, 7, 8, 9, 16, 63, 64, 65, 127, 128, 255, 256, 257, 300,
                               1000, 1023, 1024, 1025, 4096};
  return counts[d9_fz_below(r, sizeof counts / sizeof *counts)];
}

static const char *boundary_number(d9_fz_rng *r) {
  static const char *const nums[] = {
      "0", "1", "-1", "2", "7", "8", "9", "16", "31", "32", "63", "64", "65", "255", "256",
      "1023", "1024", "1025", "65535", "65536", "2147483647", "2147483648", "-2147483649",
      "4294967295", "4294967296", "9007199254740991", "9007199254740992", "9007199254740993",
      "9007199254740994", "-9007199254740993", "9223372036854775807", "9223372036854775808",
      "-9223372036854775808", "-9223372036854775809", "18446744073709551615",
      "18446744073709551616", "1e308", "1e309", "-1e308", "4.9e-324", "0.5", "-0", "1.0",
      "1e3", "100000000", "99999999999999999999999"};
  return nums[d9_fz_below(r, sizeof nums / sizeof *nums)];
}

static int string_len(d9_fz_rng *r) {
  static const int lens[] = {0, 1, 31, 32, 33, 119, 120, 121, 255, 256, 1022, 1023,
                             1024, 1025, 4096, 65536};
  return lens[d9_fz_below(r, sizeof lens / sizeof *lens)];
}

cJSON *d9_fz_pattern(d9_fz_rng *r, int k) {
  static const char *const caps[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j",
                                     "k", "l", "m", "n", "o", "p", "L", "E"};
  char buf[512];
  size_t o = 0;
  int dotted = (int)d9_fz_below(r, 3), any = 0;
  if (dotted) o += (size_t)snprintf(buf + o, sizeof buf - o, "model.layers");
  for (int i = 0; i < k && o < sizeof buf - 64; i++) {
    /* a repeated name now and then, at most a few {X*} */
    const char *c = caps[d9_fz_below(r, 16) == 0 && i ? d9_fz_below(r, (uint64_t)i)
                                                       : (uint64_t)i % 18];
    int star = any < 3 && d9_fz_below(r, 6) == 0;
    any += star;
    o += (size_t)snprintf(buf + o, sizeof buf - o, "%s{%s%s}", dotted ? "." : "", c,
                          star ? "*" : "");
  }
  snprintf(buf + o, sizeof buf - o, "%s", d9_fz_below(r, 2) ? "X" : ".weight");
  return cJSON_CreateString(buf);
}

/* ---- the tree ---- */

typedef struct node {
  cJSON *it, *parent; /* parent NULL: the root */
} node;

static node *collect(cJSON *root, size_t *n) {
  size_t cap = 64, k = 0;
  node *v = malloc(cap * sizeof *v);
  if (!v) goto fail;
  v[k++] = (node){root, NULL};
  for (size_t i = 0; i < k; i++) {
    for (cJSON *c = v[i].it->child; c; c = c->next) {
      if (k == cap) {
        node *nv = realloc(v, 2 * cap * sizeof *v);
        if (!nv) goto fail;
        v = nv, cap *= 2;
      }
      v[k++] = (node){c, v[i].it};
    }
  }
  *n = k;
  return v;
fail:
  free(v);
  *n = 0;
  return NULL;
}

cJSON **d9_fz_nodes(cJSON *root, size_t *n) {
  node *v = collect(root, n);
  cJSON **out = v ? malloc((*n + 1) * sizeof *out) : NULL;
  if (out)
    for (size_t i = 0; i < *n; i++) out[i] = v[i].it;
  free(v);
  return out;
}

size_t d9_fz_printed_size(const cJSON *it) {
  char *s = cJSON_PrintUnformatted(it);
  size_t n = s ? strlen(s) : 0;
  free(s);
  return n;
}

/* Grow a container to about a limit count by cloning its members. */
static void grow(cJSON *c, d9_fz_rng *r, size_t cap) {
  int have = cJSON_GetArraySize(c), want = d9_fz_limit_count(r);
  if (have == 0 || want <= have) return;
  cJSON *src = cJSON_GetArrayItem(c, (int)d9_fz_below(r, (uint64_t)have));
  size_t one = d9_fz_printed_size(src) + 16;
  if ((size_t)(want - have) * one > cap) want = have + (int)(cap / one);
  int same_key = cJSON_IsObject(c) && d9_fz_below(r, 8) == 0;
  for (int i = have; i < want; i++) {
    cJSON *d = cJSON_Duplicate(src, 1);
    if (!d) return;
    if (cJSON_IsObject(c)) {
      char key[600];
      snprintf(key, sizeof key, "%.500s%s%d", src->string ? src->string : "k",
               same_key ? "" : ".", same_key ? 0 : i);
      if (same_key) snprintf(key, sizeof key, "%.500s", src->string ? src->string : "k");
      cJSON_AddItemToObject(c, key, d);
    } else {
      cJSON_AddItemToArray(c, d);
    }
  }
}

static void shrink(cJSON *c, d9_fz_rng *r) {
  int have = cJSON_GetArraySize(c);
  int want = (int)d9_fz_below(r, 3) == 0 ? 0 : d9_fz_below(r, 2) ? 1 : have / 2;
  while (have-- > want) cJSON_DeleteItemFromArray(c, (int)d9_fz_below(r, (uint64_t)have + 1));
}

static cJSON *long_string(d9_fz_rng *r, const char *base) {
  int len = string_len(r);
  char *s = malloc((size_t)len + 1);
  if (!s) return NULL;
  size_t bl = base && *base ? strlen(base) : 0;
  for (int i = 0; i < len; i++) s[i] = bl ? base[(size_t)i % bl] : (char)('a' + i % 26);
  s[len] = 0;
  cJSON *out = cJSON_CreateString(s);
  free(s);
  return out;
}

/* Replace v[i] by repl (freeing the old node); the root cannot be replaced. */
static void replace(node *v, size_t i, cJSON *repl) {
  if (!repl) return;
  if (!v[i].parent) {
    cJSON_Delete(repl);
    return;
  }
  if (repl->string && !(repl->type & cJSON_StringIsConst)) free(repl->string);
  repl->string = NULL;
  if (v[i].it->string) { /* an object member keeps its key */
    repl->string = malloc(strlen(v[i].it->string) + 1);
    if (!repl->string) {
      cJSON_Delete(repl);
      return;
    }
    strcpy(repl->string, v[i].it->string);
    repl->type &= ~cJSON_StringIsConst;
  }
  cJSON_ReplaceItemViaPointer(v[i].parent, v[i].it, repl);
}

static void mutate_once(cJSON **root, d9_fz_rng *r, size_t cap, const d9_fz_cfg *cfg) {
  size_t n;
  node *v = collect(*root, &n);
  if (!v) return;
  size_t i = d9_fz_below(r, n);
  cJSON *it = v[i].it;
  switch (d9_fz_below(r, 10)) {
  case 0: /* grow a container */
  case 1:
    for (size_t k = 0; k < n && !(cJSON_IsArray(it) || cJSON_IsObject(it)); k++)
      it = v[i = (i + 1) % n].it;
    if (cJSON_IsArray(it) || cJSON_IsObject(it)) grow(it, r, cap / 2);
    break;
  case 2: /* shrink a container */
    if (cJSON_IsArray(it) || cJSON_IsObject(it)) shrink(it, r);
    break;
  case 3: /* a boundary number */
    replace(v, i, cJSON_CreateRaw(boundary_number(r)));
    break;
  case 4: /* a long string */
    replace(v, i, long_string(r, cJSON_IsString(it) ? it->valuestring : NULL));
    break;
  case 5: /* a capture pattern */
    replace(v, i, d9_fz_pattern(r, 1 + (int)d9_fz_below(r, 16)));
    break;
  case 6: /* a domain name, as a key or a string */
    if (cfg && cfg->nnames) {
      const char *nm = cfg->names[d9_fz_below(r, (uint64_t)cfg->nnames)];
      if (it->string && d9_fz_below(r, 2)) {
        char *k = malloc(strlen(nm) + 1);
        if (k) {
          strcpy(k, nm);
          if (!(it->type & cJSON_StringIsConst)) free(it->string);
          it->string = k;
          it->type &= ~cJSON_StringIsConst;
        }
      } else {
        replace(v, i, cJSON_CreateString(nm));
      }
    }
    break;
  case 7: /* a member again under the same key (repeated names) */
    if (it->string && v[i].parent && cJSON_IsObject(v[i].parent)) {
      cJSON *d = cJSON_Duplicate(it, 1);
      if (d) cJSON_AddItemToObject(v[i].parent, it->string, d);
    }
    break;
  case 8: { /* a node replaced by a copy of another (not its ancestor) */
    size_t j = d9_fz_below(r, n);
    int anc = 0;
    for (cJSON *p = v[i].parent; p && !anc;) {
      anc = p == v[j].it;
      size_t k = 0;
      while (k < n && v[k].it != p) k++;
      p = k < n ? v[k].parent : NULL;
    }
    if (!anc && v[j].it != it && d9_fz_printed_size(v[j].it) < cap / 4)
      replace(v, i, cJSON_Duplicate(v[j].it, 1));
    break;
  }
  default:
    if (cfg && cfg->special) {
      free(v);
      cfg->special(root, r, cfg->ctx);
      return;
    }
    if (v[i].parent) cJSON_Delete(cJSON_DetachItemViaPointer(v[i].parent, it));
  }
  free(v);
}

size_t d9_fz_mutate(const uint8_t *in, size_t n, uint8_t *out, size_t cap, unsigned seed,
                    const d9_fz_cfg *cfg) {
  d9_fz_rng r = {seed * UINT64_C(0x2545F4914F6CDD1D) + 1};
  cJSON *root = cJSON_ParseWithLength((const char *)in, n);
  if (!root) {
    /* not JSON: the target's special mutation may build a tree from nothing */
    if (!cfg || !cfg->special || d9_fz_below(&r, 4)) return 0;
    root = cJSON_CreateObject();
    if (!root) return 0;
    cfg->special(&root, &r, cfg->ctx);
  } else {
    int k = 1 + (int)d9_fz_below(&r, 3);
    for (int i = 0; i < k && root; i++) mutate_once(&root, &r, cap, cfg);
  }
  if (root && cfg && cfg->fixup) cfg->fixup(root, &r, cfg->ctx);
  char *s = root ? cJSON_PrintUnformatted(root) : NULL;
  cJSON_Delete(root);
  size_t len = s ? strlen(s) : 0;
  if (!s || len > cap) {
    free(s);
    return 0;
  }
  memcpy(out, s, len);
  free(s);
  return len;
}
