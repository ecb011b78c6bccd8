/* test_ranks_experts.c - expert-parallel rank views against naive
 * references (docs/design.md "Experts"): EP = 2, 3 with the remainder
 * rule, per-expert tensors renumbered and stacked [E, ...] tensors cut on
 * dim 0; expert tensor parallelism (etp = tp = 2, 4); and the files rank
 * views share (plan.h: a dense part over EP ranks, the experts over TP
 * ranks under etp = 1, one node each). */
#include "ranks_fixture.h"

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
        const unsigned char *r = tree_get(&rt, ln, &y);
        if (k == cnt) {
          assert_null(r); /* only the rank's own experts */
          continue;
        }
        const unsigned char *f = tree_get(&ft, gn, &x);
        assert_non_null(r);
        assert_memory_equal(f, r, x.end - x.begin);
      }
      d9_st_tensor z;
      assert_non_null(tree_get(&rt, "decoder.layers.0.mlp.router.weight", &z)); /* replicated */
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
  const unsigned char *f = tree_get(&ft, "model.layers.0.mlp.experts.gate_up_proj", &x);
  size_t per = (x.end - x.begin) / 5, off = 0;
  for (int e = 0; e < 3; e++) {
    char d[32];
    snprintf(d, sizeof d, "ranks/tp0-ep%d", e);
    tree rt;
    tree_load(m, d, &rt);
    d9_st_tensor y;
    const unsigned char *r = tree_get(&rt, "model.layers.0.mlp.experts.gate_up_proj", &y);
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
            const unsigned char *f = tree_get(&ft, gn, &x), *r = tree_get(&rt, ln, &y);
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
        const unsigned char *f = tree_get(&ft, "decoder.layers.0.self_attention.linear_proj.weight", &x);
        const unsigned char *r = tree_get(&rt, "decoder.layers.0.self_attention.linear_proj.weight", &y);
        size_t n;
        unsigned char *ref = ref_slice("row", f, &x, t, T, 1, &n);
        assert_int_equal(y.end - y.begin, n);
        assert_memory_equal(r, ref, n);
        free(ref);
        f = tree_get(&ft, "decoder.layers.0.mlp.router.weight", &x);
        r = tree_get(&rt, "decoder.layers.0.mlp.router.weight", &y);
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
        const unsigned char *f = tree_get(&fft, names[w], &x), *r = tree_get(&rt, names[w], &y);
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
      cmocka_unit_test(test_experts),
      cmocka_unit_test(test_expert_tp),
      cmocka_unit_test(test_shared_files),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
