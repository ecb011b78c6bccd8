/* fuzz_spec.c - libFuzzer target for the mapping spec parser and the graph
 * expansion (mapper/spec.h, mapper/graph.h).
 *
 * Input: the bytes of a spec file. Each run parses them with
 * d9_spec_parse(); then, against each of three small fixed source
 * checkpoints, the params of an accepted spec are resolved against that
 * checkpoint's config.json (d9_spec_resolve_params) and the graph is built
 * (d9_graph_build); last the spec is reversed (d9_spec_reverse, as
 * --reverse does) and the inverse's graph built over the llama one. The
 * checkpoints are generated once per process with tools/gen.h into a
 * mkdtemp directory (removed at exit) and their catalogs stay open:
 *
 *   0  llama         2 layers, H 64, 4 heads / 2 groups, biases, 2 shards, BF16
 *   1  mixtral       2 layers, 4 experts, F32, tied embeddings      (lenient)
 *   2  deepseek_fp8  H 80, I 96, FP8 blocks of 32 (ragged edges), 2 shards
 *
 * The mixtral build runs with spec->lenient set (as -o lenient does), so
 * the report path is fuzzed too. For every graph that builds, a few element
 * ranges of some targets are evaluated (mapper/eval.h d9_eval_fill: the
 * first, last and a middle run of at most 64 elements), once whole and once
 * split in two at an input-derived point; the two results must be the same
 * bytes. Each graph is also cut into per-rank views (mapper/rank.h
 * d9_rank_targets) for tp, ep, pp in {1, 2}, etp 1 or tp and a vocab
 * multiple from the input hash, and a few runs of some rank targets are
 * evaluated the same way. This drives the node constructors and the lazy evaluator with
 * shapes no hand-written test thought of, while staying bounded: reads
 * are a few hundred bytes of small source tensors.
 *
 * Properties: no crash or sanitizer report, a refusal comes with a one-line
 * message naming the spec, and whole == split evaluation.
 */
#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "mapper/catalog.h"
#include "mapper/eval.h"
#include "mapper/graph.h"
#include "mapper/rank.h"
#include "mapper/spec.h"
#include "tools/gen.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A property that must hold; on failure print it (and the diagnostic
 * when there is one) and abort, which libFuzzer reports as a crash. */
#define CHECK_MSG(c, msg)                                                     \
  do {                                                                        \
    if (!(c)) {                                                               \
      fprintf(stderr, "fuzz_spec: property failed: %s (line %d)%s%s\n", #c,  \
              __LINE__, (msg) ? ": " : "", (msg) ? (msg) : "");               \
      abort();                                                                \
    }                                                                         \
  } while (0)
#define CHECK(c) CHECK_MSG(c, (const char *)NULL)

enum {
  NCAT = 3,
  RUN = 64,          /* elements per evaluated range */
  TARGETS_MAX = 24,  /* targets evaluated per graph */
};

/* The per-process fixture (a harness-only static; the library keeps none). */
static struct {
  char root[256];
  d9_catalog *cat[NCAT];
  unsigned char *scratch; /* D9_SCRATCH_BYTES */
} fx;

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(p);
}

static void fixture_remove(void) {
  for (int i = 0; i < NCAT; i++) d9_catalog_close(fx.cat[i]);
  free(fx.scratch);
  if (fx.root[0]) nftw(fx.root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void fixture_make(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(fx.root, sizeof fx.root, "%s/d9fuzz-spec.XXXXXX", tmp && *tmp ? tmp : "/tmp");
  CHECK(mkdtemp(fx.root));
  atexit(fixture_remove);
  d9_gen_params p[NCAT];
  d9_gen_defaults(&p[0], "llama");
  p[0].bias = 1, p[0].shards = 2;
  d9_gen_defaults(&p[1], "mixtral");
  p[1].dtype = D9_F32, p[1].tied = 1;
  d9_gen_defaults(&p[2], "deepseek_fp8");
  p[2].hidden = 80, p[2].intermediate = 96, p[2].block = 32, p[2].shards = 2;
  for (int i = 0; i < NCAT; i++) {
    char dir[300];
    d9_diag diag = {0};
    snprintf(dir, sizeof dir, "%s/c%d", fx.root, i);
    if (d9_gen_write(dir, &p[i], &diag) || d9_catalog_open(dir, &fx.cat[i], &diag)) {
      fprintf(stderr, "fuzz_spec: fixture %d: %s\n", i, diag.msg);
      abort();
    }
  }
  CHECK(fx.scratch = malloc(D9_SCRATCH_BYTES));
}

#if defined(__clang__)
#define NO_WRAP_CHECK __attribute__((no_sanitize("unsigned-integer-overflow")))
#else
#define NO_WRAP_CHECK
#endif

/* FNV-1a of the input: picks split points, so a run is reproducible. */
NO_WRAP_CHECK /* the multiply wraps by design */
static uint64_t input_hash(const uint8_t *d, size_t n) {
  uint64_t h = 0xcbf29ce484222325u;
  for (size_t i = 0; i < n; i++) h = (h ^ d[i]) * 0x100000001b3u;
  return h;
}

static int fill(const d9_catalog *c, const d9_node *x, int64_t start, int64_t n, void *out) {
  d9_read_ctx rc = {.cat = c, .be = d9_backend_cpu(), .scratch = fx.scratch};
  return d9_eval_fill(&rc, x, start, n, out);
}

/* Elements [start, start + n) of x whole, and split at start + cut. */
static void eval_range(const d9_catalog *c, const d9_node *x, int64_t start, int64_t n,
                       int64_t cut) {
  size_t es = d9_dtype_size(x->dtype);
  unsigned char whole[RUN * 8], split[RUN * 8];
  CHECK(es >= 1 && es <= 8 && n >= 0 && n <= RUN);
  memset(whole, 0xa5, sizeof whole);
  memset(split, 0x5a, sizeof split);
  int r = fill(c, x, start, n, whole);
  if (r) {
    CHECK(r < 0);
    return; /* an errno (ENOMEM, EIO) is an answer; only crashes are not */
  }
  if (n < 2) return;
  cut = 1 + cut % (n - 1);
  CHECK(fill(c, x, start, cut, split) == 0);
  CHECK(fill(c, x, start + cut, n - cut, split + (size_t)cut * es) == 0);
  CHECK(!memcmp(whole, split, (size_t)n * es));
}

static void eval_graph(const d9_catalog *c, const d9_graph *g, uint64_t h) {
  int step = g->ntargets > TARGETS_MAX ? g->ntargets / TARGETS_MAX : 1;
  for (int i = 0; i < g->ntargets; i += step) {
    const d9_node *x = g->targets[i].node;
    CHECK(x && x->numel >= 0);
    int64_t n = x->numel < RUN ? x->numel : RUN;
    int64_t cut = (int64_t)(h >> 8 & 0xffff);
    eval_range(c, x, 0, n, cut);
    eval_range(c, x, x->numel - n, n, cut + 1);
    eval_range(c, x, (x->numel - n) / 2, n, cut + 2);
  }
}

/* Every rank view of g for sizes taken from h; a refusal is one line. */
static void rank_views(const d9_spec *s, const d9_catalog *c, const d9_graph *g, uint64_t h) {
  d9_rank_opts o = {.tp = 1 + (int)(h >> 20 & 1), .ep = 1 + (int)(h >> 21 & 1),
                    .pp = 1 + (int)(h >> 22 & 1), .vocab_divisible_by = 1 + (int)(h >> 23 & 3)};
  o.etp = h >> 25 & 1 ? o.tp : 1;
  d9_arena *a = d9_arena_create();
  CHECK(a);
  for (int t = 0; t < o.tp; t++)
    for (int e = 0; e < o.ep; e++)
      for (int p = 0; p < o.pp; p++) {
        d9_diag diag = {0};
        d9_target *tg = NULL;
        int n = 0;
        int rc = d9_rank_targets(s, c, g, &o, t, e, p, a, &tg, &n, &diag);
        if (rc) {
          CHECK_MSG(rc < 0 && diag.set && !strchr(diag.msg, '\n'), diag.msg);
          d9_arena_destroy(a);
          return;
        }
        CHECK(n >= 0 && n <= g->ntargets);
        for (int i = 0; i < n; i++) {
          const d9_node *x = tg[i].node;
          CHECK(tg[i].name && x && x->numel >= 0);
          if (i % (n / 4 + 1)) continue; /* a few targets per rank */
          int64_t m = x->numel < RUN ? x->numel : RUN;
          eval_range(c, x, (x->numel - m) / 2, m, (int64_t)(h >> 8 & 0xff));
        }
      }
  d9_arena_destroy(a);
}

static void one_catalog(d9_spec *s, int k, uint64_t h) {
  d9_diag diag = {0};
  const d9_catalog *c = fx.cat[k];
  s->lenient = k == 1;
  int rc = d9_spec_resolve_params(s, c->config, &diag);
  if (rc) {
    CHECK_MSG(rc < 0 && diag.set && !strchr(diag.msg, '\n'), diag.msg);
    return;
  }
  d9_graph *g = NULL;
  rc = d9_graph_build(s, c, &g, &diag);
  if (rc) {
    CHECK_MSG(rc < 0 && diag.set && !strchr(diag.msg, '\n') && !g, diag.msg);
    return;
  }
  CHECK(g && g->ntargets >= 0 && g->nreport >= 0 && g->nreport <= D9_REPORT_MAX);
  for (int i = 0; i < g->ntargets; i++) CHECK(g->targets[i].name && g->targets[i].node);
  eval_graph(c, g, h);
  rank_views(s, c, g, h);
  d9_graph_destroy(g);
}

/* --reverse as d9_mount_open does it: resolve the params of s against the
 * llama config, invert, resolve the inverse's params, build its graph. */
static void reverse_once(d9_spec *s) {
  d9_diag diag = {0};
  const d9_catalog *c = fx.cat[0];
  s->lenient = 0;
  if (d9_spec_resolve_params(s, c->config, &diag)) return; /* checked in one_catalog */
  d9_spec *r = NULL;
  int rc = d9_spec_reverse(s, c->config, &r, &diag);
  if (rc) {
    CHECK_MSG(rc < 0 && !r && diag.set && !strchr(diag.msg, '\n'), diag.msg);
    return;
  }
  if (d9_spec_resolve_params(r, c->config, &diag) == 0) {
    d9_graph *g = NULL;
    if (d9_graph_build(r, c, &g, &diag) == 0) d9_graph_destroy(g);
  }
  d9_spec_destroy(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!fx.root[0]) fixture_make();
  d9_diag diag = {0};
  d9_spec *s = NULL;
  int rc = d9_spec_parse((const char *)data, size, "fuzz.json", &s, &diag);
  if (rc) {
    CHECK_MSG(rc < 0 && !s && diag.set && !strchr(diag.msg, '\n'), diag.msg);
    CHECK_MSG(!strncmp(diag.msg, "fuzz.json", 9), diag.msg); /* names the spec file */
    return 0;
  }
  uint64_t h = input_hash(data, size);
  for (int k = 0; k < NCAT; k++) one_catalog(s, k, h);
  reverse_once(s);
  d9_spec_destroy(s);
  return 0;
}

#ifdef D9_FUZZ_STRUCTURED
/* ---- structure-aware mutation (json_mutate.h; libFuzzer builds only) ----
 * Tree mutations of the spec (through the public parser only) plus a
 * special one aimed at the spec's limits: a rules, steps, inputs, ignore or
 * exclude container grown to a count near a limit (many targets, 64 / 65 /
 * 300 step inputs), or a pattern (an inputs / output / ignore string)
 * replaced by one with 1 to 16 captures, dotted or not, {X*} and repeated
 * names included. */
#include "json_mutate.h"

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned seed);

static const char *const spec_names[] = {
    "rules", "steps", "inputs", "output", "name", "op", "params", "ignore", "exclude",
    "required", "default", "cast", "to", "dim", "concat", "split", "slice", "chunk", "qkv",
    "reshape", "transpose", "permute", "pad", "stack", "unstack", "dequant_fp8", "rope",
    "affine", "interleave", "deinterleave", "truncate", "squeeze", "hidden_size",
    "num_attention_heads", "model.embed_tokens.weight", "lm_head.weight",
    "model.layers.{L}.self_attn.q_proj.weight", "model.layers.{L}.mlp.experts.{E}.w1.weight",
    "model.layers.{L}.input_layernorm.weight", "{rest*}", "{L}", "{E}"};
enum { NSPEC_NAMES = sizeof spec_names / sizeof *spec_names };

static int spec_container(const cJSON *it) {
  static const char *const keys[] = {"rules", "steps", "inputs", "ignore", "exclude", "params"};
  if (!it->string || !(cJSON_IsArray(it) || cJSON_IsObject(it))) return 0;
  for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
    if (!strcmp(it->string, keys[i])) return 1;
  return 0;
}

static int spec_pattern(const cJSON *it) {
  return cJSON_IsString(it) && strchr(it->valuestring, '.') != NULL;
}

/* ctx: the output capacity (size_t), which bounds the clones */
static void spec_limits(cJSON **root, d9_fz_rng *r, void *ctx) {
  size_t cap = *(const size_t *)ctx;
  size_t n;
  cJSON **v = d9_fz_nodes(*root, &n);
  if (!v) return;
  int want_pattern = (int)d9_fz_below(r, 2);
  size_t start = d9_fz_below(r, n);
  for (size_t k = 0; k < n; k++) {
    cJSON *it = v[(start + k) % n];
    if (want_pattern && spec_pattern(it)) {
      cJSON *p = d9_fz_pattern(r, 1 + (int)d9_fz_below(r, 16));
      if (p) {
        cJSON_SetValuestring(it, p->valuestring);
        cJSON_Delete(p);
      }
      break;
    }
    if (!want_pattern && spec_container(it) && it->child) {
      int have = cJSON_GetArraySize(it), want = d9_fz_limit_count(r);
      cJSON *src = it->child;
      size_t one = d9_fz_printed_size(src) + 16;
      if (want > have && (size_t)(want - have) * one > cap / 2) want = have + (int)(cap / 2 / one);
      for (int i = have; i < want; i++) {
        cJSON *d = cJSON_Duplicate(src, 1);
        if (!d) break;
        if (cJSON_IsObject(it)) {
          char key[300];
          snprintf(key, sizeof key, "%.200s%d", src->string ? src->string : "k", i);
          cJSON_AddItemToObject(it, key, d);
        } else {
          /* a rule clone needs its own name and output to be one more target */
          cJSON *nm = cJSON_GetObjectItemCaseSensitive(d, "name");
          cJSON *out = cJSON_GetObjectItemCaseSensitive(d, "output");
          char buf[600];
          if (cJSON_IsString(nm)) {
            snprintf(buf, sizeof buf, "%.200s_%d", nm->valuestring, i);
            cJSON_SetValuestring(nm, buf);
          }
          if (cJSON_IsString(out)) {
            snprintf(buf, sizeof buf, "x%d.%.500s", i, out->valuestring);
            cJSON_SetValuestring(out, buf);
          }
          cJSON_AddItemToArray(it, d);
        }
      }
      break;
    }
  }
  free(v);
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned seed) {
  d9_fz_rng r = {seed};
  if (d9_fz_below(&r, 5) == 0) return LLVMFuzzerMutate(data, size, max_size);
  d9_fz_cfg cfg = {spec_names, NSPEC_NAMES, spec_limits, NULL, &max_size};
  uint8_t *out = malloc(max_size);
  size_t len = out ? d9_fz_mutate(data, size, out, max_size, seed, &cfg) : 0;
  if (len) memcpy(data, out, len);
  free(out);
  return len ? len : LLVMFuzzerMutate(data, size, max_size);
}
#endif
