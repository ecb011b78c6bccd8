/* test_steps_rules.c - the rule keys of the spec language (docs/spec.md):
 * over/unstack, exclude, tied/required/ignore, config patches and their
 * undo record, and the validation report (strict refuses, lenient mounts
 * and lists), on generated checkpoints against naive references
 * (steps_fixture.h). */
#include "steps_fixture.h"

#include <math.h>
#include <string.h>

/* ---- rule keys: over, unstack, exclude ---- */

static const char over_spec[] =
    "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
    " {'name': 'gate_up', 'over': 'E',\n"
    "  'inputs': {'w1': 'model.layers.{L}.block_sparse_moe.experts.{E}.w1.weight',\n"
    "             'w3': 'model.layers.{L}.block_sparse_moe.experts.{E}.w3.weight'},\n"
    "  'steps': [{'op': 'concat', 'dim': 0, 'sizes': ['intermediate_size', 'intermediate_size']}],\n"
    "  'output': 'model.layers.{L}.mlp.experts.gate_up_proj'},\n"
    " {'name': 'down', 'over': 'E', 'inputs': 'model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight',\n"
    "  'output': 'model.layers.{L}.mlp.experts.down_proj'}\n"
    "]}\n";

static void test_over_unstack(void **state) {
  fixture *fx = *state;
  tree *st;
  char *src = gen_mixtral(fx, 11, &st); /* experts 0..10: "10" must come after "9" */
  char *spec = spec_write(fx, over_spec);
  d9_mount *m = must_mount(src, spec, 0, 20000);
  tree *out = tree_from_mount(m);
  char b[256];
  for (int L = 0; L < 2; L++) {
    ref *gu[11], *dn[11];
    for (int e = 0; e < 11; e++) {
      ref *in[2] = {src_ref(st, "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", L, e),
                    src_ref(st, "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", L, e)};
      gu[e] = ref_concat(in, 2, 0);
      ref_free(in[0]), ref_free(in[1]);
      dn[e] = src_ref(st, "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", L, e);
    }
    /* row [e, r] = w1_e[r] for r < I, else w3_e[r - I], e numeric */
    ref *g = ref_stack(gu, 11, 0);
    const tens *w1_10 = must(st, nm(b, "model.layers.%d.block_sparse_moe.experts.10.w1.weight", L));
    assert_memory_equal(g->b + 10 * 20 * 18 * 4, w1_10->p, 10 * 18 * 4);
    expect(out, nm(b, "model.layers.%d.mlp.experts.gate_up_proj", L), g);
    expect(out, nm(b, "model.layers.%d.mlp.experts.down_proj", L), ref_stack(dn, 11, 0));
    for (int e = 0; e < 11; e++) ref_free(gu[e]), ref_free(dn[e]);
  }
  for (int i = 0; i < out->nt; i++) assert_null(strstr(out->t[i].name, "experts.0."));
  tree_free(out);
  d9_mount_close(m);
  /* over <-> unstack under --reverse: the experts come back */
  assert_lossless(fx, src, st, spec);
  /* the shipped spec agrees */
  m = must_mount(src, SPEC_DIR "/mixtral-to-hf-fused-experts.json", 0, 0);
  out = tree_from_mount(m);
  char *fdir = forward_dir(fx, src, spec, 0);
  tree *mine = tree_from_dir(fdir);
  for (int L = 0; L < 2; L++) {
    nm(b, "model.layers.%d.mlp.experts.gate_up_proj", L);
    expect(out, b, ref_of(must(mine, b)));
    nm(b, "model.layers.%d.mlp.experts.down_proj", L);
    expect(out, b, ref_of(must(mine, b)));
  }
  tree_free(out);
  d9_mount_close(m);
  free(spec);

  /* forward "unstack": a hand-written inverse over the fused tree, every
   * input cut along dim 0, the capture E filled with 0..n-1 */
  spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'split_experts', 'unstack': 'E',\n"
          "  'inputs': {'gu': 'model.layers.{L}.mlp.experts.gate_up_proj',\n"
          "             'd': 'model.layers.{L}.mlp.experts.down_proj'},\n"
          "  'steps': [{'op': 'chunk', 'in': 'gu', 'chunks': 2, 'out': ['w1', 'w3']}],\n"
          "  'output': {'w1': 'model.layers.{L}.block_sparse_moe.experts.{E}.w1.weight',\n"
          "             'w3': 'model.layers.{L}.block_sparse_moe.experts.{E}.w3.weight',\n"
          "             'd': 'model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight'}}\n"
          "]}\n");
  m = must_mount(fdir, spec, 0, 0);
  out = tree_from_mount(m);
  assert_same_tensors(st, out);
  tree_free(out);
  d9_mount_close(m);
  tree_free(mine);
  free(fdir);
  free(spec);

  /* unstack of a source tensor's rows, and back with over */
  spec = spec_write(fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'rows',"
                        " 'unstack': 'R', 'inputs': 'model.embed_tokens.weight',"
                        " 'output': 'emb.{R}'}]}");
  m = must_mount(src, spec, 0, 0);
  out = tree_from_mount(m);
  ref *e = src_ref(st, "model.embed_tokens.weight");
  for (int r = 0; r < 23; r++) {
    snprintf(b, sizeof b, "emb.%d", r);
    expect(out, b, ref_reshape(ref_slice(e, 0, r, 1), 1, (int64_t[]){18}));
  }
  ref_free(e);
  assert_null(tree_get(out, "model.embed_tokens.weight"));
  tree_free(out);
  d9_mount_close(m);
  assert_lossless(fx, src, st, spec);
  free(spec);

  /* exclude: a missing expert index is refused, naming it */
  spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'down', 'over': 'E', 'exclude': ['model.layers.1.{x*}.5.w2.weight'],\n"
          "  'inputs': 'model.layers.{L}.block_sparse_moe.experts.{E}.w2.weight',\n"
          "  'output': 'model.layers.{L}.mlp.experts.down_proj'}]}\n");
  d9_diag diag = {0};
  assert_null(try_mount(src, spec, 0, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "index 5 is missing"));
  assert_non_null(strstr(diag.msg, "model.layers.1.mlp.experts.down_proj"));
  free(spec);

  /* a capture that is not an index cannot be stacked over */
  spec = spec_write(fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'o',"
                        " 'over': 'P', 'inputs': 'model.layers.0.self_attn.{P}.weight',"
                        " 'output': 'all'}]}");
  memset(&diag, 0, sizeof diag);
  assert_null(try_mount(src, spec, 0, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "is not an index"));
  free(spec);
  tree_free(st);
  free(src);
}

/* exclude in the forward direction: the driver names it matches are left
 * to later rules and pass-through */
static void test_exclude(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'x2', 'inputs': 'model.layers.{L}.{m}.{p}_proj.weight',\n"
          "  'exclude': ['model.layers.1.{x*}', '{x*}.q_proj.weight'],\n"
          "  'steps': [{'op': 'affine', 'mul': 2}], 'output': 'model.layers.{L}.{m}.{p}_proj.weight'}\n"
          "]}\n");
  d9_mount *m = must_mount(fx->llama, spec, 0, 0);
  tree *out = tree_from_mount(m);
  for (int i = 0; i < fx->src->nt; i++) {
    const tens *t = &fx->src->t[i];
    int doubled = !strncmp(t->name, "model.layers.0.", 15) && strstr(t->name, "_proj.") &&
                  !strstr(t->name, "q_proj");
    expect(out, t->name, doubled ? ref_affine(ref_of(t), 2, 0) : ref_of(t));
  }
  assert_int_equal(out->nt, fx->src->nt);
  tree_free(out);
  d9_mount_close(m);
  free(spec);
}

/* ---- tied alias, required, ignore ---- */

static void test_tied(void **state) {
  fixture *fx = *state;
  tree *st;
  char *src = gen_tied(fx, 1, &st);
  assert_null(tree_get(st, "lm_head.weight"));
  char *spec = spec_write(fx, tied_spec);
  d9_mount *m = must_mount(src, spec, 0, 0);
  tree *out = tree_from_mount(m);
  /* the alias reads the embedding without consuming it */
  expect(out, "lm_head.weight", src_ref(st, "model.embed_tokens.weight"));
  expect(out, "model.embed_tokens.weight", src_ref(st, "model.embed_tokens.weight"));
  assert_int_equal(out->nt, st->nt + 1);
  tree_free(out);
  d9_mount_close(m);
  /* reversed: the alias is dropped when the flag is set */
  assert_lossless(fx, src, st, spec);
  tree_free(st);
  free(src);
  /* untied: the explicit lm_head is used */
  src = gen_tied(fx, 0, &st);
  m = must_mount(src, spec, 0, 0);
  out = tree_from_mount(m);
  expect(out, "lm_head.weight", src_ref(st, "lm_head.weight"));
  assert_int_equal(out->nt, st->nt);
  tree_free(out);
  d9_mount_close(m);
  assert_lossless(fx, src, st, spec);
  free(spec);
  /* the flag unset and lm_head missing: refused, naming both */
  /* the checkpoint without lm_head, written through a spec that ignores it */
  spec = spec_write(fx, "{'d9dfs_spec': 1, 'passthrough': true, 'ignore': ['lm_head.weight']}");
  char *nolm = forward_dir(fx, src, spec, 0);
  free(spec);
  spec = spec_write(fx, tied_spec);
  d9_diag diag = {0};
  assert_null(try_mount(nolm, spec, 0, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "tie_word_embeddings"));
  assert_non_null(strstr(diag.msg, "lm_head.weight"));
  free(spec);
  /* required: no match is an error */
  spec = spec_write(fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'lm',"
                        " 'required': true, 'inputs': 'lm_head.weight', 'output': 'out'}]}");
  memset(&diag, 0, sizeof diag);
  assert_null(try_mount(nolm, spec, 0, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "no source tensor matches"));
  free(spec);
  /* ignore: dropped, counted, and a rule does not see it */
  spec = spec_write(fx, "{'d9dfs_spec': 1, 'passthrough': true, 'ignore': ['model.layers.{L}.{n}norm.weight'],"
                        " 'rules': [{'name': 'all_norms', 'inputs': '{x*}norm.weight',"
                        " 'steps': [{'op': 'affine', 'add': 1}], 'output': '{x}norm.weight'}]}");
  m = must_mount(src, spec, 0, 0);
  out = tree_from_mount(m);
  assert_int_equal(d9_mount_nignored(m), 2);
  assert_null(tree_get(out, "model.layers.0.input_layernorm.weight"));
  expect(out, "model.norm.weight", ref_affine(src_ref(st, "model.norm.weight"), 1, 1));
  assert_int_equal(out->nt, st->nt - 2);
  tree_free(out);
  d9_mount_close(m);
  free(spec);
  free(nolm);
  tree_free(st);
  free(src);
}

/* ---- config patches ---- */

static void test_config_patch(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true,\n"
          " 'config': {'set': {'torch_dtype': 'bfloat16', 'new_key': {'a': [1, 2]}, 'hidden_size': 30},\n"
          "            'delete': ['rms_norm_eps', 'no_such_key']}}\n");
  d9_mount *m = must_mount(fx->llama, spec, 0, 0);
  tree *out = tree_from_mount(m);
  cJSON *orig = cJSON_ParseWithLength((const char *)fx->src->config, fx->src->config_len);
  cJSON *cfg = cJSON_ParseWithLength((const char *)out->config, out->config_len);
  assert_non_null(orig);
  assert_non_null(cfg);
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(cfg, "torch_dtype")->valuestring, "bfloat16");
  assert_int_equal(cJSON_GetObjectItemCaseSensitive(cfg, "hidden_size")->valueint, 30);
  cJSON *nk = cJSON_GetObjectItemCaseSensitive(cfg, "new_key");
  assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(nk, "a")), 2);
  assert_null(cJSON_GetObjectItemCaseSensitive(cfg, "rms_norm_eps"));
  /* the undo record: what was removed, replaced and added */
  cJSON *u = cJSON_GetObjectItemCaseSensitive(cfg, "_d9dfs_config_patch");
  assert_non_null(u);
  cJSON *rem = cJSON_GetObjectItemCaseSensitive(u, "removed");
  assert_true(cJSON_Compare(cJSON_GetObjectItemCaseSensitive(rem, "rms_norm_eps"),
                            cJSON_GetObjectItemCaseSensitive(orig, "rms_norm_eps"), 1));
  assert_int_equal(cJSON_GetArraySize(rem), 1);
  cJSON *rep = cJSON_GetObjectItemCaseSensitive(u, "replaced");
  assert_string_equal(cJSON_GetObjectItemCaseSensitive(rep, "torch_dtype")->valuestring, "float32");
  assert_non_null(cJSON_GetObjectItemCaseSensitive(rep, "hidden_size"));
  cJSON *add = cJSON_GetObjectItemCaseSensitive(u, "added");
  assert_int_equal(cJSON_GetArraySize(add), 1);
  assert_string_equal(cJSON_GetArrayItem(add, 0)->valuestring, "new_key");
  /* every other key unchanged */
  cJSON *e;
  cJSON_ArrayForEach(e, orig) {
    if (!strcmp(e->string, "torch_dtype") || !strcmp(e->string, "rms_norm_eps")) continue;
    assert_true(cJSON_Compare(e, cJSON_GetObjectItemCaseSensitive(cfg, e->string), 1));
  }
  /* the other copied files are byte for byte the source's */
  for (int f = 0; f < fx->src->nf; f++)
    if (strstr(fx->src->fname[f], "tokenizer") || strstr(fx->src->fname[f], "generation")) {
      int found = 0;
      for (int g = 0; g < out->nf; g++)
        if (!strcmp(out->fname[g], fx->src->fname[f])) {
          found = 1;
          assert_int_equal(out->len[g], fx->src->len[f]);
          assert_memory_equal(out->data[g], fx->src->data[f], out->len[g]);
        }
      assert_true(found);
    }
  cJSON_Delete(cfg);
  tree_free(out);
  d9_mount_close(m);
  /* --reverse restores the original config (same keys and values) */
  d9_mount *r = reverse_mount(fx, fx->llama, spec, NULL);
  tree *back = tree_from_mount(r);
  cfg = cJSON_ParseWithLength((const char *)back->config, back->config_len);
  assert_non_null(cfg);
  assert_true(cJSON_Compare(orig, cfg, 1));
  assert_same_tensors(fx->src, back);
  cJSON_Delete(cfg);
  cJSON_Delete(orig);
  tree_free(back);
  d9_mount_close(r);
  free(spec);
  /* malformed patches are refused at parse */
  static const char *const bad[] = {"'config': {'set': 3}", "'config': {'drop': []}",
                                    "'config': {'delete': [1]}", "'config': []"};
  for (int i = 0; i < 4; i++) {
    char t[256];
    snprintf(t, sizeof t, "{'d9dfs_spec': 1, 'passthrough': true, %s}", bad[i]);
    expect_refused(fx, 0, "config", NULL, t);
  }
}

/* ---- validation report: strict refuses, lenient mounts and lists ---- */

static void test_report(void **state) {
  fixture *fx = *state;
  char *spec = spec_write(
      fx, "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
          " {'name': 'needs_x', 'inputs': {'q': 'model.layers.{L}.self_attn.q_proj.weight',\n"
          "                                'x': 'model.layers.{L}.self_attn.x_proj.weight'},\n"
          "  'steps': [{'op': 'concat'}], 'output': 'qx.{L}'},\n"
          " {'name': 'fine', 'inputs': 'model.norm.weight', 'output': 'final_norm'}]}\n");
  d9_diag diag = {0};
  assert_null(try_mount(fx->llama, spec, 0, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "needs_x"));
  assert_non_null(strstr(diag.msg, "x_proj"));
  d9_mount *m = try_mount(fx->llama, spec, 0, 1, 0, &diag);
  assert_non_null(m);
  int idx = d9_mount_resolve(m, ".d9dfs/report.json");
  assert_true(idx > 0);
  assert_int_equal(d9_mount_node(m, idx)->kind, D9_NODE_DYNAMIC);
  char *text;
  size_t len;
  assert_int_equal(d9_mount_render(m, idx, &text, &len), 0);
  cJSON *rep = cJSON_ParseWithLength(text, len);
  assert_non_null(rep);
  assert_int_equal(cJSON_GetArraySize(rep), 2); /* one per layer */
  assert_non_null(strstr(cJSON_GetArrayItem(rep, 1)->valuestring, "model.layers.1.self_attn.x_proj"));
  cJSON_Delete(rep);
  free(text);
  tree *out = tree_from_mount(m);
  assert_null(tree_get(out, "qx.0"));
  expect(out, "final_norm", src_ref(fx->src, "model.norm.weight"));
  expect(out, "model.layers.0.self_attn.k_proj.weight", src_ref(fx->src, "model.layers.0.self_attn.k_proj.weight"));
  tree_free(out);
  d9_mount_close(m);
  free(spec);
  /* an unused source tensor in strict mode (no pass-through) is a finding */
  spec = spec_write(fx, "{'d9dfs_spec': 1, 'rules': [{'inputs': '{n*}.weight', 'output': '{n}.weight',"
                        " 'exclude': ['lm_head.weight']}]}");
  memset(&diag, 0, sizeof diag);
  assert_null(try_mount(fx->llama, spec, 0, 0, 0, &diag));
  assert_non_null(strstr(diag.msg, "lm_head.weight"));
  assert_non_null(strstr(diag.msg, "used by no rule"));
  free(spec);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_over_unstack),
      cmocka_unit_test(test_exclude),
      cmocka_unit_test(test_tied),
      cmocka_unit_test(test_config_patch),
      cmocka_unit_test(test_report),
  };
  return cmocka_run_group_tests(tests, steps_setup, steps_teardown);
}
