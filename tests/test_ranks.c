/* test_ranks.c - per-rank views against naive references of the Megatron
 * layouts (docs/design.md "TP styles"), for every style, T = 2, 4, 8,
 * and PP = 2, 3, fewer KV groups than TP ranks and shared tied embeddings
 * (against references built from the source tensors): each rank's slice
 * equals the reference slice of the full view's tensor, reassembling the slices by the style's rule gives the full
 * tensor back, divisibility errors are refused at mount, and one rank's
 * tree reads about 1/T of the split bytes. */
#include "ranks_fixture.h"

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
        const unsigned char *f = tree_get(&ft, nm, &a), *s = tree_get(&rt, nm, &b);
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
        const unsigned char *q = tree_get(&st, nm[0], &qt), *k = tree_get(&st, nm[1], &kt),
                            *v = tree_get(&st, nm[2], &vt), *o = tree_get(&rt, out, &ot);
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
  const unsigned char *emb = tree_get(&st, "model.embed_tokens.weight", &et);
  assert_non_null(emb);
  assert_null(tree_get(&st, "lm_head.weight", &z));
  assert_null(tree_get(&ft, "output_layer.weight", &z));
  assert_non_null(tree_get(&ft, "embedding.word_embeddings.weight", &z));
  for (int t = 0; t < 2; t++) {
    char d[32];
    tree rt;
    snprintf(d, sizeof d, "ranks/tp%d", t);
    tree_load(tp, d, &rt);
    assert_null(tree_get(&rt, "output_layer.weight", &z));
    tree_free(&rt);
    for (int s = 0; s < 2; s++) {
      snprintf(d, sizeof d, "ranks/tp%d-pp%d", t, s);
      tree_load(pp, d, &rt);
      size_t n;
      unsigned char *ref = ref_slice("vocab", emb, &et, t, 2, 4, &n);
      const char *have = s ? "output_layer.weight" : "embedding.word_embeddings.weight";
      const char *lack = s ? "embedding.word_embeddings.weight" : "output_layer.weight";
      const unsigned char *x = tree_get(&rt, have, &z);
      assert_non_null(x);
      assert_int_equal(z.end - z.begin, n);
      assert_memory_equal(x, ref, n);
      assert_null(tree_get(&rt, lack, &z));
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
  assert_null(tree_get(&ft, "output_layer.weight", &z));
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
        const unsigned char *f = tree_get(&ft, a1, &x), *r = tree_get(&rt, a2, &y);
        assert_non_null(r);
        assert_memory_equal(f, r, x.end - x.begin);
      }
      char beyond[160];
      d9_st_tensor z;
      snprintf(beyond, sizeof beyond, "decoder.layers.%lld.mlp.linear_fc2.weight", (long long)ln);
      assert_null(tree_get(&rt, beyond, &z));
      assert_true(!!tree_get(&rt, "embedding.word_embeddings.weight", &z) == (s == 0));
      assert_true(!!tree_get(&rt, "output_layer.weight", &z) == (s == P - 1));
      assert_true(!!tree_get(&rt, "decoder.final_layernorm.weight", &z) == (s == P - 1));
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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tp_styles),
      cmocka_unit_test(test_divisibility_errors),
      cmocka_unit_test(test_qkv_fewer_groups_than_tp),
      cmocka_unit_test(test_tied_shared),
      cmocka_unit_test(test_pipeline),
      cmocka_unit_test(test_rank_read_amplification),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
