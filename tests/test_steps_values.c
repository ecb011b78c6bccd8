/* test_steps_values.c - the value step ops of the spec language
 * (docs/spec.md): affine, cast and FP8 block dequant/quant (DeepSeek-V3
 * style), against naive references of the formulas (steps_fixture.h);
 * reversed mounts give lossless ops back byte for byte and check lossy
 * ones against their inverse's formula (the quantisation error bound). */
#include "steps_fixture.h"

#include <math.h>
#include <string.h>

/* ---- affine ---- */

static void test_affine(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'p1', 'inputs': 'model.layers.{L}.input_layernorm.weight',\n"
          "  'steps': [{'op': 'affine', 'add': 1}], 'output': 'a.{L}.in'},\n"
          " {'name': 'm1', 'inputs': 'model.layers.{L}.post_attention_layernorm.weight',\n"
          "  'steps': [{'op': 'affine', 'mul': 1, 'add': -1}], 'output': 'a.{L}.post'},\n"
          " {'name': 'ma', 'inputs': 'model.layers.{L}.mlp.down_proj.weight',\n"
          "  'steps': [{'op': 'affine', 'mul': 0.5, 'add': -0.25}], 'output': 'a.{L}.down'},\n"
          " {'name': 'bf', 'inputs': 'model.norm.weight',\n"
          "  'steps': [{'op': 'cast', 'to': 'BF16', 'from': 'F32'},\n"
          "            {'op': 'affine', 'mul': 3, 'add': 0.1}], 'output': 'a.norm_bf16'},\n"
          " {'name': 'h', 'inputs': 'model.embed_tokens.weight',\n"
          "  'steps': [{'op': 'cast', 'to': 'F16', 'from': 'F32'},\n"
          "            {'op': 'affine', 'mul': -2.5, 'add': 1}], 'output': 'a.emb_f16'}\n"
          "]}\n");
  d9_mount *m = must_mount(fx->llama, spec, 0, 0);
  tree *out = tree_from_mount(m);
  char b[256];
  for (int L = 0; L < 2; L++) {
    expect(out, nm(b, "a.%d.in", L), ref_affine(src_ref(fx->src, "model.layers.%d.input_layernorm.weight", L), 1, 1));
    expect(out, nm(b, "a.%d.post", L),
           ref_affine(src_ref(fx->src, "model.layers.%d.post_attention_layernorm.weight", L), 1, -1));
    expect(out, nm(b, "a.%d.down", L), ref_affine(src_ref(fx->src, "model.layers.%d.mlp.down_proj.weight", L), 0.5f, -0.25f));
  }
  expect(out, "a.norm_bf16", ref_affine(ref_cast(src_ref(fx->src, "model.norm.weight"), D9_BF16), 3, (float)0.1));
  expect(out, "a.emb_f16",
         ref_affine(ref_cast(src_ref(fx->src, "model.embed_tokens.weight"), D9_F16), -2.5f, 1));
  tree_free(out);
  d9_mount_close(m);
  /* --reverse: x*a+b <-> x*(1/a) + (-b/a), each rounded: lossy, listed,
   * and equal to the same formula applied to the forward output */
  tree *fwd;
  d9_mount *r = reverse_mount(fx, fx->llama, spec, &fwd);
  assert_int_equal(d9_mount_nlossy(r), 7); /* 5 affines, 2 narrowing casts */
  tree *back = tree_from_mount(r);
  for (int L = 0; L < 2; L++) {
    char c[256];
    expect(back, nm(b, "model.layers.%d.input_layernorm.weight", L),
           ref_affine(ref_of(must(fwd, nm(c, "a.%d.in", L))), 1, -1));
    expect(back, nm(b, "model.layers.%d.post_attention_layernorm.weight", L),
           ref_affine(ref_of(must(fwd, nm(c, "a.%d.post", L))), 1, 1));
    expect(back, nm(b, "model.layers.%d.mlp.down_proj.weight", L),
           ref_affine(ref_of(must(fwd, nm(c, "a.%d.down", L))), 2, 0.5f));
    /* and close to the source: |x' - x| <= 2^-25 + 2^-24 + 2^-25 (the
     * add of -0.25 and of 0.5 round; the scalings by 0.5 and 2 are exact) */
    const tens *x = must(fx->src, b), *y = must(back, b);
    for (int64_t i = 0; i < x->numel; i++)
      assert_true(fabsf(f32_at(y->p, i) - f32_at(x->p, i)) <= 0x1p-23f);
  }
  expect(back, "model.norm.weight",
         ref_cast(ref_affine(ref_of(must(fwd, "a.norm_bf16")), (float)(1.0 / 3.0), (float)(-0.1 / 3.0)), D9_F32));
  expect(back, "model.embed_tokens.weight",
         ref_cast(ref_affine(ref_of(must(fwd, "a.emb_f16")), (float)(1.0 / -2.5), (float)(-1.0 / -2.5)), D9_F32));
  tree_free(back);
  tree_free(fwd);
  d9_mount_close(r);
  free(spec);
  /* mul 0 has no inverse: --reverse refused */
  expect_refused(fx, 1, "no inverse", NULL,
                 "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'z',"
                  " 'inputs': 'model.norm.weight', 'steps': [{'op': 'affine', 'mul': 0}],"
                  " 'output': 'x'}]}");
}

/* ---- cast ---- */

static void test_cast(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'c16', 'inputs': 'model.layers.{L}.self_attn.q_proj.weight',\n"
          "  'steps': [{'op': 'cast', 'to': 'F16', 'from': 'F32'}], 'output': 'c.{L}.q16'},\n"
          " {'name': 'cbf', 'inputs': 'model.layers.{L}.self_attn.k_proj.weight',\n"
          "  'steps': [{'op': 'cast', 'to': 'BF16', 'from': 'F32'}], 'output': 'c.{L}.kbf'},\n"
          " {'name': 'ce4', 'inputs': 'model.layers.{L}.self_attn.v_proj.weight',\n"
          "  'steps': [{'op': 'cast', 'to': 'F8_E4M3', 'from': 'F32'}], 'output': 'c.{L}.ve4'},\n"
          " {'name': 'ce5', 'inputs': 'model.layers.{L}.self_attn.o_proj.weight',\n"
          "  'steps': [{'op': 'cast', 'to': 'F8_E5M2', 'from': 'F32'}], 'output': 'c.{L}.oe5'},\n"
          " {'name': 'same', 'inputs': 'model.norm.weight',\n"
          "  'steps': [{'op': 'cast', 'to': 'F32', 'from': 'F32'}], 'output': 'c.norm'}\n"
          "]}\n");
  d9_mount *m = must_mount(fx->llama, spec, 0, 0);
  tree *out = tree_from_mount(m);
  char b[256];
  static const struct { const char *src, *dst; d9_dtype to; } cs[] = {
      {"q_proj", "q16", D9_F16}, {"k_proj", "kbf", D9_BF16},
      {"v_proj", "ve4", D9_F8_E4M3}, {"o_proj", "oe5", D9_F8_E5M2}};
  for (int L = 0; L < 2; L++)
    for (int i = 0; i < 4; i++) {
      snprintf(b, sizeof b, "c.%d.%s", L, cs[i].dst);
      expect(out, b, ref_cast(src_ref(fx->src, "model.layers.%d.self_attn.%s.weight", L, cs[i].src), cs[i].to));
    }
  expect(out, "c.norm", src_ref(fx->src, "model.norm.weight"));
  tree_free(out);
  d9_mount_close(m);
  /* --reverse casts back (to <-> from): the narrowings are listed lossy
   * and the values are f32(narrow(x)) */
  d9_mount *r = reverse_mount(fx, fx->llama, spec, NULL);
  assert_int_equal(d9_mount_nlossy(r), 4);
  tree *back = tree_from_mount(r);
  for (int L = 0; L < 2; L++)
    for (int i = 0; i < 4; i++) {
      snprintf(b, sizeof b, "model.layers.%d.self_attn.%s.weight", L, cs[i].src);
      expect(back, b, ref_cast(ref_cast(ref_of(must(fx->src, b)), cs[i].to), D9_F32));
    }
  expect(back, "model.norm.weight", src_ref(fx->src, "model.norm.weight"));
  tree_free(back);
  d9_mount_close(r);
  free(spec);
  /* widening casts are lossless: BF16 and F16 checkpoints -> F32 -> back */
  d9_dtype dts[2] = {D9_BF16, D9_F16};
  for (int k = 0; k < 2; k++) {
    d9_gen_params p;
    d9_gen_defaults(&p, "qwen2");
    p.layers = 1, p.hidden = 22, p.heads = 2, p.kv_heads = 1, p.intermediate = 13, p.vocab = 19;
    p.dtype = dts[k], p.seed = 99 + (uint64_t)k;
    char *src = gen_ckpt(fx, &p);
    tree *st = tree_from_dir(src);
    char t[512];
    snprintf(t, sizeof t, "{'d9dfs_spec': 1, 'rules': [{'name': 'widen', 'inputs': '{n*}',"
             " 'steps': [{'op': 'cast', 'to': 'F32', 'from': '%s'}], 'output': '{n}'}]}",
             d9_dtype_name(dts[k]));
    spec = spec_write(fx, t);
    m = must_mount(src, spec, 0, 0);
    out = tree_from_mount(m);
    for (int i = 0; i < st->nt; i++) expect(out, st->t[i].name, ref_cast(ref_of(&st->t[i]), D9_F32));
    assert_int_equal(out->nt, st->nt);
    tree_free(out);
    d9_mount_close(m);
    assert_lossless(fx, src, st, spec);
    tree_free(st);
    free(spec);
    free(src);
  }
  /* "from" must name the input's dtype; "to" must be a float type */
  static const char *const bad[] = {"{'op': 'cast', 'to': 'F16', 'from': 'BF16'}", "says \"from\"",
                                    "{'op': 'cast', 'to': 'I32'}", "\"to\" must be"};
  for (int i = 0; i < 4; i += 2) {
    snprintf(b, sizeof b, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'bad',"
             " 'inputs': 'model.norm.weight', 'steps': [%s], 'output': 'x'}]}", bad[i]);
    spec = spec_write(fx, b);
    d9_diag diag = {0};
    assert_null(try_mount(fx->llama, spec, 0, 0, 0, &diag));
    if (!strstr(diag.msg, bad[i + 1])) fail_msg("%s: got '%s'", bad[i], diag.msg);
    free(spec);
  }
  /* a cast without "from" has no inverse */
  spec = spec_write(fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'nf',"
                        " 'inputs': 'model.norm.weight', 'steps': [{'op': 'cast', 'to': 'F16'}],"
                        " 'output': 'x'}]}");
  d9_diag diag = {0};
  assert_null(try_mount(fx->llama, spec, 1, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "without \"from\""));
  free(spec);
}

/* ---- FP8 block dequant / quant (DeepSeek-V3 style) ---- */

static const char *const fp8_lin[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                      "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                      "mlp.down_proj"};

static const char dequant_spec[] =
    "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
    " {'name': 'dq', 'inputs': {'s': '{X*}.weight_scale_inv', 'w': '{X*}.weight'},\n"
    "  'steps': [{'op': 'dequant', 'in': ['w', 's']}], 'output': '{X}.weight',\n"
    "  'exclude': ['model.embed_tokens.weight', 'lm_head.weight', '{x*}norm.weight']}\n"
    "], 'config': {'delete': ['quantization_config'], 'set': {'torch_dtype': 'float32'}}}\n";

/* Quantisation round trip bound, for x finite and the block scale s =
 * fl(amax / 448) a normal F32 (u = 2^-24 the F32 unit roundoff):
 *   y = fl(x / s) = (x / s)(1 + d1), |d1| <= u.
 *   q = e4m3(y): with 3 mantissa bits, in the normal range (|y| >= 2^-6)
 *   round to nearest errs by at most half an ulp, 2^-3 / 2 = 2^-4 of the
 *   binade's lower end, so <= 2^-4 |y|; in the subnormal range the spacing
 *   is 2^-9, so the error is <= 2^-10 (absolute). |x| <= amax and s >=
 *   (amax / 448)(1 - u) give |y| <= 448 (1 + 3u): saturation at 448 costs
 *   less than 2^-4 |y|. So |q - y| <= 2^-4 |y| + 2^-10.
 *   d = fl(q s) = q s (1 + d2), |d2| <= u.
 *   |d - x| <= |q s - y s| + |y s - x| + u |q s|
 *          <= s (2^-4 |y| + 2^-10) + u |x| + u (1.0625 (1 + u) |x| + 2^-10 s)
 *          <= 2^-4 |x| (1 + u) + 2^-10 s + u (2.07 |x| + 2^-10 s)
 *          <= 2^-4 |x| + 2^-10 s + 2^-22 (|x| + s).
 * The 2^-10 s term is the subnormal absolute error scaled back; it
 * matters only for |x| < 2^-6 s, i.e. small values in a block with a
 * large amax. */
static double quant_bound(double x, double s) {
  return ldexp(fabs(x), -4) + ldexp(s, -10) + ldexp(fabs(x) + s, -22);
}

static void test_dequant_quant(void **state) {
  fixture *fx = *state;
  tree *st;
  char *src = gen_fp8(fx, &st);
  char *spec = spec_write(fx, dequant_spec);
  d9_mount *m = must_mount(src, spec, 0, 60000);
  tree *out = tree_from_mount(m);
  char b[256], c[256];
  /* weight and scale of some pair live in different source shards */
  int apart = 0;
  for (int L = 0; L < 2; L++)
    for (int i = 0; i < 7; i++) {
      snprintf(b, sizeof b, "model.layers.%d.%s.weight", L, fp8_lin[i]);
      snprintf(c, sizeof c, "model.layers.%d.%s.weight_scale_inv", L, fp8_lin[i]);
      const tens *w = must(st, b), *s = must(st, c);
      for (int f = 0; f < st->nf; f++)
        if ((w->p >= st->data[f] && w->p < st->data[f] + st->len[f]) !=
            (s->p >= st->data[f] && s->p < st->data[f] + st->len[f]))
          apart = 1;
      assert_int_equal(s->sh[0], (w->sh[0] + 63) / 64);
      assert_int_equal(s->sh[1], (w->sh[1] + 63) / 64);
      expect(out, b, ref_dequant(w, s, 64, 64));
      assert_null(tree_get(out, c));
    }
  assert_true(apart);
  expect(out, "model.embed_tokens.weight", src_ref(st, "model.embed_tokens.weight"));
  expect(out, "model.norm.weight", src_ref(st, "model.norm.weight"));
  /* the patched config: quantization_config gone, undo record present */
  cJSON *cfg = cJSON_ParseWithLength((const char *)out->config, out->config_len);
  assert_non_null(cfg);
  assert_null(cJSON_GetObjectItemCaseSensitive(cfg, "quantization_config"));
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cfg, "torch_dtype")->valuestring, "float32");
  assert_non_null(cJSON_GetObjectItemCaseSensitive(cfg, "_d9dfs_config_patch"));
  cJSON_Delete(cfg);
  tree_free(out);
  d9_mount_close(m);

  /* the shipped spec: the same product, rounded to BF16 */
  m = must_mount(src, SPEC_DIR "/deepseek-fp8-to-bf16.json", 0, 0);
  out = tree_from_mount(m);
  for (int L = 0; L < 2; L++)
    for (int i = 0; i < 7; i++) {
      snprintf(b, sizeof b, "model.layers.%d.%s.weight", L, fp8_lin[i]);
      snprintf(c, sizeof c, "model.layers.%d.%s.weight_scale_inv", L, fp8_lin[i]);
      expect(out, b, ref_cast(ref_dequant(must(st, b), must(st, c), 64, 64), D9_BF16));
    }
  tree_free(out);
  d9_mount_close(m);

  /* --reverse: quant of the F32 forward output. Scale = amax / 448 of the
   * block (F32), weight = e4m3(x / scale), and dequant(quant(x)) is within
   * the bound above of x; the block size comes back from the restored
   * config (64, not the default 128). */
  tree *fwd;
  d9_mount *r = reverse_mount(fx, src, spec, &fwd);
  assert_int_equal(d9_mount_nlossy(r), 1);
  tree *back = tree_from_mount(r);
  double worst = 0;
  for (int L = 0; L < 2; L++)
    for (int i = 0; i < 7; i++) {
      snprintf(b, sizeof b, "model.layers.%d.%s.weight", L, fp8_lin[i]);
      snprintf(c, sizeof c, "model.layers.%d.%s.weight_scale_inv", L, fp8_lin[i]);
      const tens *x = must(fwd, b), *w = must(back, b), *s = must(back, c);
      int64_t M = x->sh[0], N = x->sh[1], bm = (M + 63) / 64, bn = (N + 63) / 64;
      assert_int_equal(w->dt, D9_F8_E4M3);
      assert_int_equal(s->dt, D9_F32);
      assert_int_equal(s->sh[0], bm);
      assert_int_equal(s->sh[1], bn);
      for (int64_t bi = 0; bi < bm; bi++)
        for (int64_t bj = 0; bj < bn; bj++) {
          float amax = 0;
          for (int64_t ii = bi * 64; ii < M && ii < bi * 64 + 64; ii++)
            for (int64_t jj = bj * 64; jj < N && jj < bj * 64 + 64; jj++)
              amax = fmaxf(amax, fabsf(f32_at(x->p, ii * N + jj)));
          volatile float want = amax == 0 ? 1.0f : amax / 448.0f;
          float got = f32_at(s->p, bi * bn + bj);
          assert_memory_equal(&got, (const void *)&want, 4);
          for (int64_t ii = bi * 64; ii < M && ii < bi * 64 + 64; ii++)
            for (int64_t jj = bj * 64; jj < N && jj < bj * 64 + 64; jj++) {
              volatile float xv = f32_at(x->p, ii * N + jj);
              volatile float y = xv / want;
              assert_int_equal(w->p[ii * N + jj], d9_f32_to_e4m3(y));
              volatile float d = e4m3_dec(w->p[ii * N + jj]) * want;
              double err = fabs((double)d - (double)xv), bound = quant_bound(xv, want);
              if (err > bound)
                fail_msg("%s [%lld, %lld]: |dequant(quant(x)) - x| = %g > %g", b, (long long)ii,
                         (long long)jj, err, bound);
              if (err / bound > worst) worst = err / bound;
            }
        }
    }
  assert_true(worst > 0.25); /* the bound is not vacuous */
  expect(back, "model.embed_tokens.weight", src_ref(st, "model.embed_tokens.weight"));
  expect(back, "model.layers.1.input_layernorm.weight", src_ref(st, "model.layers.1.input_layernorm.weight"));
  assert_int_equal(back->nt, st->nt);
  /* the original config is back, undo record gone */
  cJSON *a = cJSON_ParseWithLength((const char *)st->config, st->config_len);
  cJSON *z = cJSON_ParseWithLength((const char *)back->config, back->config_len);
  assert_non_null(a);
  assert_non_null(z);
  assert_true(cJSON_Compare(a, z, 1));
  cJSON_Delete(a);
  cJSON_Delete(z);
  tree_free(back);
  tree_free(fwd);
  d9_mount_close(r);
  free(spec);

  /* E4M3 -> F16 / BF16 / F32 widening casts are exact both ways */
  static const char *const wide[] = {"F16", "BF16", "F32"};
  for (int k = 0; k < 3; k++) {
    char t[1024];
    snprintf(t, sizeof t, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'w',"
             " 'inputs': 'model.layers.{L}.{m}.{p}_proj.weight', 'steps': [{'op': 'cast',"
             " 'to': '%s', 'from': 'F8_E4M3'}], 'output': 'model.layers.{L}.{m}.{p}_proj.weight'}]}",
             wide[k]);
    spec = spec_write(fx, t);
    assert_lossless(fx, src, st, spec);
    free(spec);
  }
  /* without "exclude", the reversed rule would quantise the norms too */
  char text[sizeof dequant_spec];
  snprintf(text, sizeof text, "%s", dequant_spec);
  char *ex = strstr(text, ",\n  'exclude'"), *end = strstr(text, "}\n]");
  memmove(ex, end, strlen(end) + 1);
  spec = spec_write(fx, text);
  char *fdir = forward_dir(fx, src, spec, 0);
  d9_diag diag = {0};
  assert_null(try_mount(fdir, spec, 1, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "quantised tensor"));
  free(fdir);
  free(spec);
  tree_free(st);
  free(src);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_affine),
      cmocka_unit_test(test_cast),
      cmocka_unit_test(test_dequant_quant),
  };
  return cmocka_run_group_tests(tests, steps_setup, steps_teardown);
}
