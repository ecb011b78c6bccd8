/* test_ranks.c - per-rank views against naive references of the Megatron
 * layouts (docs/design.md "TP styles", "Experts"), for every style, T = 2, 4, 8,
 * EP = 2, 3 (remainder rule), expert tensor parallelism (etp = tp = 2, 4)
 * and PP = 2, 3, fewer KV groups than TP ranks and shared tied embeddings
 * (against references built from the source tensors): each rank's slice
 * equals the reference slice of the full view's tensor, reassembling the slices by the style's rule gives the full
 * tensor back, divisibility errors are refused at mount, and one rank's
 * tree reads about 1/T of the split bytes. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "mapper/rank.h"
#include "testutil.h"

#define SPEC_DIR D9DFS_SOURCE_DIR "/mounts"

enum { TREE_MAX_FILES = 8 };

typedef struct tree {
  unsigned char *data; /* the first file (model.safetensors when alone) */
  uint64_t len;
  int nfiles;
  unsigned char *file[TREE_MAX_FILES];
  uint64_t flen[TREE_MAX_FILES];
  d9_arena *a;
} tree;

/* The tensor files of dir (relative to the mount root), whole: its
 * model.safetensors, or every *.safetensors in it (a split rank view:
 * model-*, experts-*). */
static void tree_load(d9_mount *m, const char *dir, tree *t) {
  memset(t, 0, sizeof *t);
  int d = d9_mount_resolve(m, dir);
  assert_true(d >= 0);
  const d9_vnode *n = d9_mount_node(m, d);
  for (int i = 0; i < n->nchildren; i++) {
    const char *name = d9_mount_node(m, n->children[i])->name;
    size_t l = strlen(name);
    if (l < 12 || strcmp(name + l - 12, ".safetensors")) continue;
    assert_true(t->nfiles < TREE_MAX_FILES);
    t->file[t->nfiles] = tu_read_node(m, n->children[i], &t->flen[t->nfiles]);
    assert_non_null(t->file[t->nfiles]);
    t->nfiles++;
  }
  if (!t->nfiles) fprintf(stderr, "no tensor files in '%s'\n", dir);
  assert_true(t->nfiles > 0);
  t->data = t->file[0], t->len = t->flen[0];
  t->a = d9_arena_create();
}

static void tree_free(tree *t) {
  for (int i = 0; i < t->nfiles; i++) free(t->file[i]);
  d9_arena_destroy(t->a);
}

static const unsigned char *get(tree *t, const char *name, d9_st_tensor *st) {
  for (int i = 0; i < t->nfiles; i++) {
    memset(st, 0, sizeof *st); /* set on success only */
    const unsigned char *p = tu_find(t->file[i], t->flen[i], name, st, t->a);
    if (p) return p;
  }
  memset(st, 0, sizeof *st);
  return NULL;
}

static d9_mount *open_ranks_etp(const char *src, const char *spec, int tp, int ep, int pp,
                                int etp, int vdiv, d9_diag *diag) {
  d9_mount_opts o = {.src_dir = src, .spec_path = spec, .tp = tp, .ep = ep, .pp = pp,
                     .etp = etp, .vocab_divisible_by = vdiv,
                     .max_shard_size = (uint64_t)1 << 40};
  d9_mount *m = NULL;
  int rc = d9_mount_open(&o, &m, diag);
  if (rc && diag && !diag->set) fprintf(stderr, "rc %d\n", rc);
  return rc ? NULL : m;
}

static d9_mount *open_ranks(const char *src, const char *spec, int tp, int ep, int pp, int vdiv,
                            d9_diag *diag) {
  return open_ranks_etp(src, spec, tp, ep, pp, 1, vdiv, diag);
}

static size_t row_bytes(const d9_st_tensor *t) {
  size_t r = d9_dtype_size(t->dtype);
  for (int i = 1; i < t->ndim; i++) r *= (size_t)t->shape[i];
  return r;
}

/* Reference slice for TP rank r of T by style, from the full tensor f. */
static unsigned char *ref_slice(const char *style, const unsigned char *f, const d9_st_tensor *ft,
                                int r, int T, int vdiv, size_t *outn) {
  size_t rb = row_bytes(ft), es = d9_dtype_size(ft->dtype);
  int64_t rows = ft->shape[0];
  unsigned char *o;
  if (!strcmp(style, "column") || !strcmp(style, "qkv")) {
    *outn = rb * (size_t)(rows / T);
    o = malloc(*outn);
    memcpy(o, f + rb * (size_t)(r * rows / T), *outn);
  } else if (!strcmp(style, "row")) {
    int64_t cols = ft->shape[1], part = cols / T;
    *outn = (size_t)rows * (size_t)part * es;
    o = malloc(*outn);
    for (int64_t i = 0; i < rows; i++)
      memcpy(o + (size_t)(i * part) * es, f + (size_t)(i * cols + r * part) * es, (size_t)part * es);
  } else if (!strcmp(style, "gated")) {
    int64_t half = rows / 2, part = half / T;
    *outn = rb * (size_t)(2 * part);
    o = malloc(*outn);
    memcpy(o, f + rb * (size_t)(r * part), rb * (size_t)part);
    memcpy(o + rb * (size_t)part, f + rb * (size_t)(half + r * part), rb * (size_t)part);
  } else { /* vocab: zero rows up to a multiple of vdiv*T, then column */
    int64_t mult = (int64_t)vdiv * T, padded = (rows + mult - 1) / mult * mult, part = padded / T;
    *outn = rb * (size_t)part;
    o = calloc(1, *outn);
    for (int64_t i = 0; i < part; i++)
      if (r * part + i < rows) memcpy(o + rb * (size_t)i, f + rb * (size_t)(r * part + i), rb);
  }
  return o;
}

/* Every TP style of llama-to-megatron for T, against the references. */
static void check_tp(const char *src, int T, int L, int vdiv) {
  d9_diag diag = {0};
  d9_mount *full = open_ranks(src, SPEC_DIR "/llama-to-megatron.json", 1, 1, 1, 1, &diag);
  d9_mount *m = open_ranks(src, SPEC_DIR "/llama-to-megatron.json", T, 1, 1, vdiv, &diag);
  if (!m) fprintf(stderr, "%s\n", diag.msg);
  assert_non_null(full);
  assert_non_null(m);
  tree ft;
  tree_load(full, "", &ft);
  static const struct { const char *fmt, *style; } names[] = {
      {"decoder.layers.%d.self_attention.linear_qkv.weight", "qkv"},
      {"decoder.layers.%d.self_attention.linear_proj.weight", "row"},
      {"decoder.layers.%d.mlp.linear_fc1.weight", "gated"},
      {"decoder.layers.%d.mlp.linear_fc2.weight", "row"},
      {"decoder.layers.%d.self_attention.linear_qkv.layer_norm_weight", "replicated"},
      {"embedding.word_embeddings.weight", "vocab"},
      {"output_layer.weight", "vocab"},
      {"decoder.final_layernorm.weight", "replicated"},
  };
  for (int r = 0; r < T; r++) {
    char dir[32];
    snprintf(dir, sizeof dir, "ranks/tp%d", r);
    tree rt;
    tree_load(m, dir, &rt);
    for (size_t k = 0; k < sizeof names / sizeof *names; k++)
      for (int l = 0; l < L; l++) {
        char nm[256];
        snprintf(nm, sizeof nm, names[k].fmt, l);
        d9_st_tensor a, b;
        const unsigned char *f = get(&ft, nm, &a), *s = get(&rt, nm, &b);
        assert_non_null(f);
        assert_non_null(s);
        assert_int_equal(a.dtype, b.dtype);
        size_t n;
        unsigned char *ref;
        if (!strcmp(names[k].style, "replicated")) {
          n = a.end - a.begin;
          ref = malloc(n);
          memcpy(ref, f, n);
        } else {
          ref = ref_slice(names[k].style, f, &a, r, T, vdiv, &n);
        }
        assert_int_equal(b.end - b.begin, n);
        assert_memory_equal(s, ref, n);
        free(ref);
      }
    tree_free(&rt);
  }
  tree_free(&ft);
  d9_mount_close(m);
  d9_mount_close(full);
}

static char *gen_llama(const char *dir, const char *name, int64_t nh, int64_t ng, int64_t H,
                       int64_t I, int64_t V, int64_t L) {
  static char path[4200];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  d9_gen_params p;
  d9_gen_defaults(&p, "llama");
  p.heads = nh, p.kv_heads = ng, p.hidden = H, p.intermediate = I, p.vocab = V, p.layers = L;
  p.shards = 2;
  assert_int_equal(d9_gen_write(path, &p, NULL), 0);
  return path;
}

static void test_tp_styles(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  char *src = gen_llama(dir, "l8", 16, 8, 128, 96, 1001, 2); /* 8 KV groups, odd vocab */
  for (int T = 2; T <= 8; T *= 2) check_tp(src, T, 2, 1);
  check_tp(src, 4, 2, 64); /* vocab padded to a multiple of 64*4 */
  tu_rmrf(dir);
  free(dir);
}

/* Uneven splits and KV groups not divisible by T are refused at mount,
 * naming the tensor, the style and the sizes. */
static void test_divisibility_errors(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  char *src = strdup(gen_llama(dir, "l2", 6, 3, 48, 96, 256, 2)); /* gen_llama's buffer is reused */
  d9_diag diag = {0};
  assert_null(open_ranks(src, SPEC_DIR "/llama-to-megatron.json", 2, 1, 1, 1, &diag));
  assert_non_null(strstr(diag.msg, "style qkv"));
  assert_non_null(strstr(diag.msg, "3 kv groups are neither a multiple nor a divisor of tp=2"));
  assert_non_null(strstr(diag.msg, "linear_qkv.weight"));
  d9_diag_clear(&diag);
  char *src4 = gen_llama(dir, "l4", 4, 2, 64, 96, 256, 1); /* Megatron-Core: heads % tp == 0 */
  assert_null(open_ranks(src4, SPEC_DIR "/llama-to-megatron.json", 8, 1, 1, 1, &diag));
  assert_non_null(strstr(diag.msg, "4 attention heads are not divisible by tp=8"));
  assert_non_null(strstr(diag.msg, "linear_qkv"));
  d9_diag_clear(&diag);
  char *src2 = gen_llama(dir, "l3", 6, 6, 60, 90, 256, 1);
  assert_null(open_ranks(src2, SPEC_DIR "/llama-to-megatron.json", 4, 1, 1, 1, &diag));
  assert_true(strstr(diag.msg, "not divisible") || strstr(diag.msg, "neither a multiple"));
  d9_diag_clear(&diag);
  assert_null(open_ranks(src, SPEC_DIR "/llama-to-megatron.json", 1, 1, 3, 1, &diag));
  assert_non_null(strstr(diag.msg, "pp=3: more stages than the 2 layers"));
  free(src);
  tu_rmrf(dir);
  free(dir);
}

/* The source tensors of src, through the identity spec. */
static d9_mount *open_source(const char *src) {
  d9_diag diag = {0};
  d9_mount *m = open_ranks(src, SPEC_DIR "/identity.json", 1, 1, 1, 1, &diag);
  assert_non_null(m);
  return m;
}

/* Fewer KV groups (ng) than TP ranks (T), as Megatron-Core lays them out:
 * linear_qkv stays one column-parallel tensor, so rank t holds piece
 * t % (T/ng) of the T/ng even pieces of group t / (T/ng), a group being
 * [its nh/ng q heads; its k head; its v head]. (With ng >= T, the groups
 * [t*ng/T, (t+1)*ng/T) whole.) Built here head by head from the source
 * q, k, v (weights and biases) and compared byte for byte. */
static void check_qkv_ranks(const char *dir, const char *name, int64_t nh, int64_t ng, int64_t H,
                            int T) {
  char src[4200];
  snprintf(src, sizeof src, "%s/%s", dir, name);
  d9_gen_params p;
  d9_gen_defaults(&p, "llama");
  p.heads = nh, p.kv_heads = ng, p.hidden = H, p.intermediate = 64, p.vocab = 96, p.layers = 2;
  p.bias = 1, p.shards = 2;
  assert_int_equal(d9_gen_write(src, &p, NULL), 0);
  d9_diag diag = {0};
  d9_mount *sm = open_source(src), *m = open_ranks(src, SPEC_DIR "/llama-to-megatron.json", T, 1,
                                                   1, 1, &diag);
  if (!m) fprintf(stderr, "%s\n", diag.msg);
  assert_non_null(m);
  tree st;
  tree_load(sm, "", &st);
  int64_t d = H / nh, g = nh / ng, w = (g + 2) * d;
  for (int t = 0; t < T; t++) {
    char rd[32];
    snprintf(rd, sizeof rd, "ranks/tp%d", t);
    tree rt;
    tree_load(m, rd, &rt);
    for (int l = 0; l < 2; l++)
      for (int bias = 0; bias < 2; bias++) {
        const char *suf = bias ? "bias" : "weight";
        char nm[3][160], out[160];
        d9_st_tensor qt, kt, vt, ot;
        for (int x = 0; x < 3; x++)
          snprintf(nm[x], sizeof nm[x], "model.layers.%d.self_attn.%c_proj.%s", l, "qkv"[x], suf);
        snprintf(out, sizeof out, "decoder.layers.%d.self_attention.linear_qkv.%s", l, suf);
        const unsigned char *q = get(&st, nm[0], &qt), *k = get(&st, nm[1], &kt),
                            *v = get(&st, nm[2], &vt), *o = get(&rt, out, &ot);
        assert_non_null(q);
        assert_non_null(k);
        assert_non_null(v);
        assert_non_null(o);
        size_t rb = row_bytes(&qt); /* bytes of one row (one element for biases) */
        /* the groups this rank touches, whole, then the rank's rows of them */
        int64_t g0 = ng >= T ? t * (ng / T) : t / (T / ng), gn = ng >= T ? ng / T : 1;
        unsigned char *blk = malloc(rb * (size_t)(w * gn)), *b = blk;
        for (int64_t gi = g0; gi < g0 + gn; gi++) {
          memcpy(b, q + rb * (size_t)(gi * g * d), rb * (size_t)(g * d)), b += rb * (size_t)(g * d);
          memcpy(b, k + rb * (size_t)(gi * d), rb * (size_t)d), b += rb * (size_t)d;
          memcpy(b, v + rb * (size_t)(gi * d), rb * (size_t)d), b += rb * (size_t)d;
        }
        int64_t piece = ng >= T ? w * gn : w / (T / ng), at = ng >= T ? 0 : (t % (T / ng)) * piece;
        assert_int_equal(ot.end - ot.begin, rb * (size_t)piece);
        assert_memory_equal(o, blk + rb * (size_t)at, rb * (size_t)piece);
        free(blk);
      }
    tree_free(&rt);
  }
  tree_free(&st);
  d9_mount_close(m);
  d9_mount_close(sm);
}

static void test_qkv_fewer_groups_than_tp(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  check_qkv_ranks(dir, "q12g2", 12, 2, 192, 4); /* the qwen2 case: 2 ranks per group */
  check_qkv_ranks(dir, "q16g2", 16, 2, 128, 8); /* 4 ranks per group, d = 8 */
  check_qkv_ranks(dir, "q8g1", 8, 1, 64, 2);    /* one KV head (MQA) */
  check_qkv_ranks(dir, "q12g4", 12, 4, 96, 2);  /* ng >= T: whole groups, as before */
  tu_rmrf(dir);
  free(dir);
}

/* Tied embeddings (the "shared" tied rule): as Megatron-Core with
 * share_embeddings_and_output_weights, the full view and every pp = 1 rank
 * have no output_layer.weight; with pp > 1 the last stage holds the
 * embedding under that name (vocab-split like the embedding), the first
 * stage the embedding itself. */
static void test_tied_shared(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  char src[4200];
  snprintf(src, sizeof src, "%s/tied", dir);
  d9_gen_params p;
  d9_gen_defaults(&p, "llama");
  p.heads = 4, p.kv_heads = 2, p.hidden = 32, p.intermediate = 64, p.vocab = 101, p.layers = 2;
  p.tied = 1, p.shards = 2;
  assert_int_equal(d9_gen_write(src, &p, NULL), 0);
  d9_diag diag = {0};
  d9_mount *sm = open_source(src);
  d9_mount *full = open_ranks(src, SPEC_DIR "/llama-to-megatron.json", 1, 1, 1, 1, &diag);
  d9_mount *tp = open_ranks(src, SPEC_DIR "/llama-to-megatron.json", 2, 1, 1, 1, &diag);
  d9_mount *pp = open_ranks(src, SPEC_DIR "/llama-to-megatron.json", 2, 1, 2, 4, &diag);
  assert_non_null(full);
  assert_non_null(tp);
  assert_non_null(pp);
  tree st, ft;
  tree_load(sm, "", &st);
  tree_load(full, "", &ft);
  d9_st_tensor et, z;
  const unsigned char *emb = get(&st, "model.embed_tokens.weight", &et);
  assert_non_null(emb);
  assert_null(get(&st, "lm_head.weight", &z));
  assert_null(get(&ft, "output_layer.weight", &z));
  assert_non_null(get(&ft, "embedding.word_embeddings.weight", &z));
  for (int t = 0; t < 2; t++) {
    char d[32];
    tree rt;
    snprintf(d, sizeof d, "ranks/tp%d", t);
    tree_load(tp, d, &rt);
    assert_null(get(&rt, "output_layer.weight", &z));
    tree_free(&rt);
    for (int s = 0; s < 2; s++) {
      snprintf(d, sizeof d, "ranks/tp%d-pp%d", t, s);
      tree_load(pp, d, &rt);
      size_t n;
      unsigned char *ref = ref_slice("vocab", emb, &et, t, 2, 4, &n);
      const char *have = s ? "output_layer.weight" : "embedding.word_embeddings.weight";
      const char *lack = s ? "embedding.word_embeddings.weight" : "output_layer.weight";
      const unsigned char *x = get(&rt, have, &z);
      assert_non_null(x);
      assert_int_equal(z.end - z.begin, n);
      assert_memory_equal(x, ref, n);
      assert_null(get(&rt, lack, &z));
      free(ref);
      tree_free(&rt);
    }
  }
  tree_free(&ft);
  tree_free(&st);
  d9_mount_close(pp);
  d9_mount_close(tp);
  d9_mount_close(full);
  d9_mount_close(sm);
  /* the flag set over an explicit lm_head.weight: still no output layer,
   * and the dropped tensor is counted (d9dfs check: --reverse loses it) */
  snprintf(src, sizeof src, "%s/tied-explicit", dir);
  p.tied = 0;
  assert_int_equal(d9_gen_write(src, &p, NULL), 0);
  char cmd[4400];
  snprintf(cmd, sizeof cmd, "sed -i 's/\"tie_word_embeddings\": false/\"tie_word_embeddings\": "
           "true/' '%s/config.json'", src);
  assert_int_equal(system(cmd), 0);
  full = open_ranks(src, SPEC_DIR "/llama-to-megatron.json", 1, 1, 1, 1, &diag);
  assert_non_null(full);
  assert_int_equal(d9_mount_nshadowed(full), 1);
  tree_load(full, "", &ft);
  assert_null(get(&ft, "output_layer.weight", &z));
  tree_free(&ft);
  d9_mount_close(full);
  tu_rmrf(dir);
  free(dir);
}

/* PP: stage s holds its share of the layers (remainder rule), renumbered
 * from 0; the embedding on the first stage, norm and output on the last. */
static void test_pipeline(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  char *src = gen_llama(dir, "l5", 4, 2, 64, 64, 128, 5);
  for (int P = 2; P <= 3; P++) {
    d9_diag diag = {0};
    d9_mount *full = open_ranks(src, SPEC_DIR "/llama-to-megatron.json", 1, 1, 1, 1, &diag);
    d9_mount *m = open_ranks(src, SPEC_DIR "/llama-to-megatron.json", 1, 1, P, 1, &diag);
    assert_non_null(m);
    tree ft;
    tree_load(full, "", &ft);
    int64_t seen = 0;
    for (int s = 0; s < P; s++) {
      char d[32];
      snprintf(d, sizeof d, "ranks/tp0-pp%d", s);
      tree rt;
      tree_load(m, d, &rt);
      int64_t l0, ln;
      d9_rank_share(5, s, P, &l0, &ln);
      assert_int_equal(l0, seen);
      seen += ln;
      for (int64_t l = 0; l < ln; l++) {
        char a1[160], a2[160];
        d9_st_tensor x, y;
        snprintf(a1, sizeof a1, "decoder.layers.%lld.mlp.linear_fc2.weight", (long long)(l0 + l));
        snprintf(a2, sizeof a2, "decoder.layers.%lld.mlp.linear_fc2.weight", (long long)l);
        const unsigned char *f = get(&ft, a1, &x), *r = get(&rt, a2, &y);
        assert_non_null(r);
        assert_memory_equal(f, r, x.end - x.begin);
      }
      char beyond[160];
      d9_st_tensor z;
      snprintf(beyond, sizeof beyond, "decoder.layers.%lld.mlp.linear_fc2.weight", (long long)ln);
      assert_null(get(&rt, beyond, &z));
      assert_true(!!get(&rt, "embedding.word_embeddings.weight", &z) == (s == 0));
      assert_true(!!get(&rt, "output_layer.weight", &z) == (s == P - 1));
      assert_true(!!get(&rt, "decoder.final_layernorm.weight", &z) == (s == P - 1));
      tree_free(&rt);
    }
    assert_int_equal(seen, 5);
    tree_free(&ft);
    d9_mount_close(m);
    d9_mount_close(full);
  }
  tu_rmrf(dir);
  free(dir);
}

/* EP with the remainder rule: per-expert tensors owned by their rank and
 * renumbered from 0 (mixtral-to-megatron), and stacked [E, ...] tensors cut
 * on dim 0 (mixtral-to-hf-fused-experts with a parallel style added). */
/* A Mixtral-style checkpoint in dir/mix (path in src): 5 experts, one
 * layer, 4 KV groups (so TP up to 4 splits attention). */
static void gen_moe(const char *dir, char *src, size_t cap) {
  snprintf(src, cap, "%s/mix", dir);
  d9_gen_params p;
  d9_gen_defaults(&p, "mixtral");
  p.experts = 5, p.layers = 1, p.shards = 2, p.heads = 8, p.kv_heads = 4;
  assert_int_equal(d9_gen_write(src, &p, NULL), 0);
}

/* gen_moe's checkpoint and its full mixtral-to-megatron view, loaded. */
static d9_mount *moe_full(const char *dir, char *src, size_t cap, tree *ft) {
  gen_moe(dir, src, cap);
  d9_diag diag = {0};
  d9_mount *full = open_ranks(src, SPEC_DIR "/mixtral-to-megatron.json", 1, 1, 1, 1, &diag);
  assert_non_null(full);
  tree_load(full, "", ft);
  return full;
}

static void test_experts(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), src[4200], spec[4200];
  gen_moe(dir, src, sizeof src);
  for (int P = 2; P <= 3; P++) {
    d9_diag diag = {0};
    d9_mount *m = open_ranks(src, SPEC_DIR "/mixtral-to-megatron.json", 1, P, 1, 1, &diag);
    d9_mount *full = open_ranks(src, SPEC_DIR "/mixtral-to-megatron.json", 1, 1, 1, 1, &diag);
    if (!m) fprintf(stderr, "%s\n", diag.msg);
    assert_non_null(m);
    tree ft;
    tree_load(full, "", &ft);
    int64_t covered = 0;
    for (int e = 0; e < P; e++) {
      char d[32];
      snprintf(d, sizeof d, "ranks/tp0-ep%d", e);
      tree rt;
      tree_load(m, d, &rt);
      int64_t st = e * (5 / P) + (e < 5 % P ? e : 5 % P), cnt = 5 / P + (e < 5 % P);
      assert_int_equal(st, covered);
      covered += cnt;
      for (int64_t k = 0; k < cnt + 1; k++) {
        char gn[160], ln[160];
        d9_st_tensor x, y;
        snprintf(gn, sizeof gn, "decoder.layers.0.mlp.experts.linear_fc1.weight%lld", (long long)(st + k));
        snprintf(ln, sizeof ln, "decoder.layers.0.mlp.experts.linear_fc1.weight%lld", (long long)k);
        const unsigned char *r = get(&rt, ln, &y);
        if (k == cnt) {
          assert_null(r); /* only the rank's own experts */
          continue;
        }
        const unsigned char *f = get(&ft, gn, &x);
        assert_non_null(r);
        assert_memory_equal(f, r, x.end - x.begin);
      }
      d9_st_tensor z;
      assert_non_null(get(&rt, "decoder.layers.0.mlp.router.weight", &z)); /* replicated */
      tree_free(&rt);
    }
    assert_int_equal(covered, 5);
    tree_free(&ft);
    d9_mount_close(m);
    d9_mount_close(full);
  }
  /* stacked experts: the fused [E, 2I, H] tensor cut on dim 0 */
  snprintf(spec, sizeof spec, "%s/fused-ep.json", dir);
  tu_write(spec,
           "{\"d9dfs_spec\": 1, \"passthrough\": true,"
           " \"parallel\": [{\"pattern\": \"model.layers.{L}.mlp.experts.{w}\", \"style\": \"expert\"}],"
           " \"rules\": [{\"over\": \"E\", \"inputs\": {\"a\": \"model.layers.{L}.block_sparse_moe.experts.{E}.w1.weight\","
           " \"b\": \"model.layers.{L}.block_sparse_moe.experts.{E}.w3.weight\"},"
           " \"steps\": [{\"op\": \"concat\"}], \"output\": \"model.layers.{L}.mlp.experts.gate_up_proj\"},"
           " {\"over\": \"E\", \"inputs\": \"model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight\","
           " \"output\": \"model.layers.{L}.mlp.experts.down_proj\"}]}");
  d9_diag diag = {0};
  d9_mount *full = open_ranks(src, spec, 1, 1, 1, 1, &diag);
  d9_mount *m = open_ranks(src, spec, 1, 3, 1, 1, &diag);
  assert_non_null(m);
  tree ft;
  tree_load(full, "", &ft);
  d9_st_tensor x;
  const unsigned char *f = get(&ft, "model.layers.0.mlp.experts.gate_up_proj", &x);
  size_t per = (x.end - x.begin) / 5, off = 0;
  for (int e = 0; e < 3; e++) {
    char d[32];
    snprintf(d, sizeof d, "ranks/tp0-ep%d", e);
    tree rt;
    tree_load(m, d, &rt);
    d9_st_tensor y;
    const unsigned char *r = get(&rt, "model.layers.0.mlp.experts.gate_up_proj", &y);
    assert_non_null(r);
    assert_int_equal(y.shape[0], e < 2 ? 2 : 1); /* 5 experts over 3 ranks: 2, 2, 1 */
    assert_memory_equal(r, f + off, y.end - y.begin);
    off += (size_t)y.shape[0] * per;
    tree_free(&rt);
  }
  assert_int_equal(off, x.end - x.begin); /* reassembled = the full tensor */
  tree_free(&ft);
  d9_mount_close(m);
  d9_mount_close(full);
  tu_rmrf(dir);
  free(dir);
}

/* Expert tensor parallelism (etp = tp): rank (t, e) holds, for each of
 * its experts, the TP slice t by the expert entry's "tp" style - per-expert
 * Megatron tensors (fc1 gated, fc2 row) and stacked [E, ...] tensors (the
 * style on the expert's own dims); non-expert tensors split as with TP
 * alone; etp other than 1 or tp, or an expert entry without "tp", are
 * refused. References: ref_slice on each expert's full tensor. */
static void test_expert_tp(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), src[4200], spec[4200];
  d9_diag diag = {0};
  tree ft;
  d9_mount *full = moe_full(dir, src, sizeof src, &ft);
  for (int T = 2; T <= 4; T += 2) {
    int P = 2;
    d9_mount *m = open_ranks_etp(src, SPEC_DIR "/mixtral-to-megatron.json", T, P, 1, T, 1, &diag);
    if (!m) fprintf(stderr, "%s\n", diag.msg);
    assert_non_null(m);
    for (int t = 0; t < T; t++)
      for (int e = 0; e < P; e++) {
        char d[32];
        snprintf(d, sizeof d, "ranks/tp%d-ep%d", t, e);
        tree rt;
        tree_load(m, d, &rt);
        int64_t st = e * (5 / P) + (e < 5 % P ? e : 5 % P), cnt = 5 / P + (e < 5 % P);
        for (int64_t k = 0; k < cnt; k++)
          for (int fc = 1; fc <= 2; fc++) {
            char gn[160], ln[160];
            d9_st_tensor x, y;
            snprintf(gn, sizeof gn, "decoder.layers.0.mlp.experts.linear_fc%d.weight%lld", fc,
                     (long long)(st + k));
            snprintf(ln, sizeof ln, "decoder.layers.0.mlp.experts.linear_fc%d.weight%lld", fc,
                     (long long)k);
            const unsigned char *f = get(&ft, gn, &x), *r = get(&rt, ln, &y);
            assert_non_null(f);
            assert_non_null(r);
            size_t n;
            unsigned char *ref = ref_slice(fc == 1 ? "gated" : "row", f, &x, t, T, 1, &n);
            assert_int_equal(y.end - y.begin, n);
            assert_memory_equal(r, ref, n);
            free(ref);
          }
        /* attention is split as with TP alone; the router is whole */
        d9_st_tensor x, y;
        const unsigned char *f = get(&ft, "decoder.layers.0.self_attention.linear_proj.weight", &x);
        const unsigned char *r = get(&rt, "decoder.layers.0.self_attention.linear_proj.weight", &y);
        size_t n;
        unsigned char *ref = ref_slice("row", f, &x, t, T, 1, &n);
        assert_int_equal(y.end - y.begin, n);
        assert_memory_equal(r, ref, n);
        free(ref);
        f = get(&ft, "decoder.layers.0.mlp.router.weight", &x);
        r = get(&rt, "decoder.layers.0.mlp.router.weight", &y);
        assert_int_equal(y.end - y.begin, x.end - x.begin);
        assert_memory_equal(r, f, x.end - x.begin);
        tree_free(&rt);
      }
    d9_mount_close(m);
  }
  /* etp must be 1 or tp */
  memset(&diag, 0, sizeof diag);
  assert_null(open_ranks_etp(src, SPEC_DIR "/mixtral-to-megatron.json", 2, 2, 1, 4, 1, &diag));
  assert_non_null(strstr(diag.msg, "etp=4: the expert tensor parallel size must be 1 or equal tp=2"));
  memset(&diag, 0, sizeof diag);
  assert_null(open_ranks_etp(src, SPEC_DIR "/mixtral-to-megatron.json", 1, 1, 1, 2, 1, &diag));
  assert_non_null(strstr(diag.msg, "etp=2"));

  /* stacked experts with an inner style: gate_up_proj [E, 2I, H] gated on
   * dim 1, down_proj [E, H, I] row on dim 2 */
  snprintf(spec, sizeof spec, "%s/fused-etp.json", dir);
  tu_write(spec,
           "{\"d9dfs_spec\": 1, \"passthrough\": true,"
           " \"parallel\": [{\"pattern\": \"model.layers.{L}.mlp.experts.gate_up_proj\", \"style\": \"expert\", \"tp\": \"gated\"},"
           "  {\"pattern\": \"model.layers.{L}.mlp.experts.down_proj\", \"style\": \"expert\", \"tp\": \"row\"}],"
           " \"rules\": [{\"over\": \"E\", \"inputs\": {\"a\": \"model.layers.{L}.block_sparse_moe.experts.{E}.w1.weight\","
           " \"b\": \"model.layers.{L}.block_sparse_moe.experts.{E}.w3.weight\"},"
           " \"steps\": [{\"op\": \"concat\"}], \"output\": \"model.layers.{L}.mlp.experts.gate_up_proj\"},"
           " {\"over\": \"E\", \"inputs\": \"model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight\","
           " \"output\": \"model.layers.{L}.mlp.experts.down_proj\"}]}");
  d9_mount *ff = open_ranks(src, spec, 1, 1, 1, 1, &diag);
  d9_mount *m = open_ranks_etp(src, spec, 2, 3, 1, 2, 1, &diag);
  if (!m) fprintf(stderr, "%s\n", diag.msg);
  assert_non_null(ff);
  assert_non_null(m);
  tree fft;
  tree_load(ff, "", &fft);
  static const char *const names[] = {"model.layers.0.mlp.experts.gate_up_proj",
                                      "model.layers.0.mlp.experts.down_proj"};
  for (int t = 0; t < 2; t++)
    for (int e = 0; e < 3; e++) {
      char d[32];
      snprintf(d, sizeof d, "ranks/tp%d-ep%d", t, e);
      tree rt;
      tree_load(m, d, &rt);
      int64_t st = e * (5 / 3) + (e < 5 % 3 ? e : 5 % 3), cnt = 5 / 3 + (e < 5 % 3);
      for (int w = 0; w < 2; w++) {
        d9_st_tensor x, y;
        const unsigned char *f = get(&fft, names[w], &x), *r = get(&rt, names[w], &y);
        assert_non_null(f);
        assert_non_null(r);
        assert_int_equal(y.shape[0], cnt);
        /* expert k of the full tensor as a 2-D tensor, sliced by the style */
        d9_st_tensor one = x;
        one.ndim = 2, one.shape[0] = x.shape[1], one.shape[1] = x.shape[2];
        size_t per = (x.end - x.begin) / (size_t)x.shape[0], got = 0;
        for (int64_t k = 0; k < cnt; k++) {
          size_t n;
          unsigned char *ref = ref_slice(w == 0 ? "gated" : "row", f + (size_t)(st + k) * per,
                                         &one, t, 2, 1, &n);
          assert_memory_equal(r + got, ref, n);
          got += n;
          free(ref);
        }
        assert_int_equal(y.end - y.begin, got);
      }
      tree_free(&rt);
    }
  tree_free(&fft);
  d9_mount_close(m);
  d9_mount_close(ff);

  /* an expert entry without "tp" under etp > 1 */
  char bare[4200];
  snprintf(bare, sizeof bare, "%s/fused-bare.json", dir);
  tu_write(bare,
           "{\"d9dfs_spec\": 1, \"passthrough\": true,"
           " \"parallel\": [{\"pattern\": \"model.layers.{L}.mlp.experts.{w}\", \"style\": \"expert\"}],"
           " \"rules\": [{\"over\": \"E\", \"inputs\": \"model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight\","
           " \"output\": \"model.layers.{L}.mlp.experts.down_proj\"}]}");
  memset(&diag, 0, sizeof diag);
  assert_null(open_ranks_etp(src, bare, 2, 1, 1, 2, 1, &diag));
  assert_non_null(strstr(diag.msg, "tensor 'model.layers.0.mlp.experts.down_proj': style expert"));
  assert_non_null(strstr(diag.msg, "etp=2 needs \"tp\""));

  /* "tp" belongs to expert entries and names a splitting style */
  static const struct { const char *entry, *msg; } bad[] = {
      {"{\"pattern\": \"x.{w}\", \"style\": \"row\", \"tp\": \"row\"}",
       "parallel[0]: \"tp\" (the TP style inside an expert) goes with style expert"},
      {"{\"pattern\": \"x.{w}\", \"style\": \"expert\", \"tp\": \"qkv\"}",
       "parallel[0]: \"tp\" must be column, row, gated or replicated"},
      {"{\"pattern\": \"x.{w}\", \"style\": \"expert\", \"tp\": 2}",
       "parallel[0]: \"tp\" must be column, row, gated or replicated"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char text[512];
    snprintf(text, sizeof text,
             "{\"d9dfs_spec\": 1, \"passthrough\": true, \"parallel\": [%s], \"rules\": []}",
             bad[i].entry);
    tu_write(bare, text);
    memset(&diag, 0, sizeof diag);
    assert_null(open_ranks(src, bare, 1, 1, 1, 1, &diag));
    if (!strstr(diag.msg, bad[i].msg)) fail_msg("got '%s', want '%s'", diag.msg, bad[i].msg);
  }

  tree_free(&ft);
  d9_mount_close(full);
  tu_rmrf(dir);
  free(dir);
}

/* Reading one rank's whole tree with TP = 4 pulls at most 1.1 x (split
 * bytes / 4 + replicated bytes) from the source. */
static void test_rank_read_amplification(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  char *src = gen_llama(dir, "amp", 16, 8, 256, 512, 1024, 2);
  d9_diag diag = {0};
  d9_mount *m = open_ranks(src, SPEC_DIR "/llama-to-megatron.json", 4, 1, 1, 1, &diag);
  d9_mount *full = open_ranks(src, SPEC_DIR "/llama-to-megatron.json", 1, 1, 1, 1, &diag);
  assert_non_null(m);
  tree ft;
  tree_load(full, "", &ft);
  /* split and replicated bytes of the full view, from its header */
  uint64_t hl, split = 0, repl = 0;
  d9_st_header h;
  assert_int_equal(d9_st_header_len(ft.data, ft.len, "full", &hl, NULL), 0);
  assert_int_equal(d9_st_parse((const char *)ft.data + 8, hl, ft.len, "full", ft.a, &h, NULL), 0);
  for (int i = 0; i < h.ntensors; i++) {
    uint64_t n = h.tensors[i].end - h.tensors[i].begin;
    if (h.tensors[i].ndim == 2) split += n; else repl += n;
  }
  d9_stats s0, s1;
  d9_mount_get_stats(m, &s0);
  int idx = d9_mount_resolve(m, "ranks/tp1/model.safetensors");
  uint64_t len;
  unsigned char *b = tu_read_node(m, idx, &len);
  assert_non_null(b);
  d9_mount_get_stats(m, &s1);
  uint64_t pulled = s1.bytes_read_source - s0.bytes_read_source;
  double limit = 1.1 * ((double)split / 4 + (double)repl);
  fprintf(stderr, "tp=4 rank 1: %llu bytes from the source, limit %.0f (split %llu, replicated %llu)\n",
          (unsigned long long)pulled, limit, (unsigned long long)split, (unsigned long long)repl);
  assert_true((double)pulled <= limit);
  assert_true(pulled >= split / 4);
  free(b);
  tree_free(&ft);
  d9_mount_close(m);
  d9_mount_close(full);
  tu_rmrf(dir);
  free(dir);
}

/* A file of the split rank views (plan.h): its node, nlink checked > 0. */
static int split_node(d9_mount *m, int t, int e, const char *file) {
  char path[160];
  snprintf(path, sizeof path, "ranks/tp%d-ep%d/%s", t, e, file);
  int i = d9_mount_resolve(m, path);
  if (i < 0) fprintf(stderr, "no %s\n", path);
  assert_true(i >= 0);
  assert_true(d9_mount_node(m, i)->nlink > 0);
  return i;
}

/* Rank views holding the same bytes share one file: with ep > 1 the dense
 * part of rank (t, e) is the one of (t, 0), and with etp = 1 the experts'
 * part of (t, e) is the one of (0, e) - one node listed in each view's
 * directory (a hard link, nlink = the views). The views' tensors are those
 * test_experts and test_expert_tp check; a tensor-only model has no split;
 * reading each distinct file once pulls each source byte about once
 * (replicated norms and routers aside), where reading every view pulled
 * the dense part ep times. */
static void test_shared_files(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), src[4200];
  d9_diag diag = {0};
  tree ft;
  d9_mount *full = moe_full(dir, src, sizeof src, &ft);
  uint64_t hl, model;
  assert_int_equal(d9_st_header_len(ft.data, ft.len, "full", &hl, NULL), 0);
  model = ft.len - 8 - hl;
  for (int etp = 1; etp <= 2; etp++) {
    d9_mount *m = open_ranks_etp(src, SPEC_DIR "/mixtral-to-megatron.json", 2, 2, 1, etp, 1,
                                 &diag);
    if (!m) fprintf(stderr, "%s\n", diag.msg);
    assert_non_null(m);
    int dn[2][2], xn[2][2];
    for (int t = 0; t < 2; t++)
      for (int e = 0; e < 2; e++) {
        dn[t][e] = split_node(m, t, e, "model-00001-of-00001.safetensors");
        xn[t][e] = split_node(m, t, e, "experts-00001-of-00001.safetensors");
        split_node(m, t, e, "model.safetensors.index.json");
        char path[160];
        snprintf(path, sizeof path, "ranks/tp%d-ep%d/model.safetensors", t, e);
        assert_int_equal(d9_mount_resolve(m, path), -ENOENT); /* the index names both */
      }
    for (int t = 0; t < 2; t++) {
      assert_int_equal(dn[t][0], dn[t][1]); /* dense: shared over ep */
      assert_int_equal(d9_mount_node(m, dn[t][0])->nlink, 2);
    }
    assert_int_not_equal(dn[0][0], dn[1][0]); /* tp slices differ */
    for (int e = 0; e < 2; e++) {
      if (etp == 1) {
        assert_int_equal(xn[0][e], xn[1][e]); /* whole experts: shared over tp */
        assert_int_equal(d9_mount_node(m, xn[0][e])->nlink, 2);
      } else {
        assert_int_not_equal(xn[0][e], xn[1][e]);
        assert_int_equal(d9_mount_node(m, xn[0][e])->nlink, 1);
      }
      assert_int_not_equal(xn[0][0], xn[0][1]); /* other experts */
    }
    /* every distinct file once: each source byte about once */
    int seen[8], nseen = 0;
    d9_stats s0, s1;
    d9_mount_get_stats(m, &s0);
    for (int t = 0; t < 2; t++)
      for (int e = 0; e < 2; e++)
        for (int k = 0; k < 2; k++) {
          int i = k ? xn[t][e] : dn[t][e], dup = 0;
          for (int j = 0; j < nseen; j++) dup |= seen[j] == i;
          if (dup) continue;
          seen[nseen++] = i;
          uint64_t len;
          unsigned char *b = tu_read_node(m, i, &len);
          assert_non_null(b);
          free(b);
        }
    d9_mount_get_stats(m, &s1);
    uint64_t pulled = s1.bytes_read_source - s0.bytes_read_source;
    fprintf(stderr, "tp=2 ep=2 etp=%d: %d distinct files, %llu source bytes for a %llu-byte model\n",
            etp, nseen, (unsigned long long)pulled, (unsigned long long)model);
    assert_int_equal(nseen, etp == 1 ? 4 : 6);
    assert_true(pulled >= model && (double)pulled <= 1.02 * (double)model);
    d9_mount_close(m);
  }
  /* no experts, or nothing shared: the unsplit layout */
  d9_mount *m = open_ranks_etp(src, SPEC_DIR "/mixtral-to-megatron.json", 2, 1, 1, 2, 1, &diag);
  assert_non_null(m);
  assert_true(d9_mount_resolve(m, "ranks/tp0/model.safetensors") >= 0);
  assert_int_equal(d9_mount_node(m, d9_mount_resolve(m, "ranks/tp0/model.safetensors"))->nlink, 1);
  d9_mount_close(m);
  tree_free(&ft);
  d9_mount_close(full);
  tu_rmrf(dir);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tp_styles),
      cmocka_unit_test(test_divisibility_errors),
      cmocka_unit_test(test_qkv_fewer_groups_than_tp),
      cmocka_unit_test(test_tied_shared),
      cmocka_unit_test(test_pipeline),
      cmocka_unit_test(test_experts),
      cmocka_unit_test(test_expert_tp),
      cmocka_unit_test(test_rank_read_amplification),
      cmocka_unit_test(test_shared_files),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
