/* test_nemo.c - NeMo AutoModel's combined projections and their PEFT
 * adapters: the copy and dedup ops (mapper/op_copy.c), optional rule inputs
 * (graph.c), d9gen's adapters (tools/gen.h), and the shipped specs
 * mounts/nemo-automodel-combined.json and mounts/nemo-automodel-lora.json,
 * each target against a naive reference written here from the layout
 * (docs/spec.md "qkv", "interleave", "copy", "dedup"), and each spec's
 * round trip byte for byte. */
#include "steps_fixture.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mapper/op_table.h"
#include "mapper/spec.h"

#define COMBINED SPEC_DIR "/nemo-automodel-combined.json"
#define LORA SPEC_DIR "/nemo-automodel-lora.json"

/* The fused QKV by its row formula: w = (g+2)d rows per KV group; row o of
 * a group is q row grp*g*d + o, then k row grp*d + (o - g*d), then v. */
static ref *qkv_ref(const ref *q, const ref *k, const ref *v, int64_t nh, int64_t ng,
                    int64_t d) {
  int64_t g = nh / ng, w = (g + 2) * d, rows = (nh + 2 * ng) * d, sh[D9_MAX_DIMS];
  memcpy(sh, q->sh, sizeof sh);
  sh[0] = rows;
  ref *out = ref_new(q->dt, q->nd, sh);
  int64_t per = q->numel / q->sh[0];
  for (int64_t r = 0; r < rows; r++) {
    int64_t grp = r / w, o = r % w;
    const ref *x = o < g * d ? q : o < (g + 1) * d ? k : v;
    int64_t xr = o < g * d ? grp * g * d + o : o < (g + 1) * d ? grp * d + (o - g * d)
                                                                : grp * d + (o - (g + 1) * d);
    for (int64_t j = 0; j < per; j++) copy_el(out, r * per + j, x->b, xr * per + j);
  }
  return out;
}

/* gate/up rows g0, u0, g1, u1, ... */
static ref *gate_up_ref(const ref *gt, const ref *up) {
  int64_t sh[D9_MAX_DIMS];
  memcpy(sh, gt->sh, sizeof sh);
  sh[0] = 2 * gt->sh[0];
  ref *out = ref_new(gt->dt, gt->nd, sh);
  int64_t per = gt->numel / gt->sh[0];
  for (int64_t r = 0; r < sh[0]; r++)
    for (int64_t j = 0; j < per; j++)
      copy_el(out, r * per + j, (r % 2 ? up : gt)->b, (r / 2) * per + j);
  return out;
}

static ref *qkv_of(const tree *st, const char *fmt, int L, int64_t nh, int64_t ng, int64_t d) {
  char n[3][256];
  ref *x[3];
  for (int i = 0; i < 3; i++) {
    snprintf(n[i], sizeof n[i], fmt, L, "qkv"[i]);
    x[i] = ref_of(must(st, n[i]));
  }
  ref *out = qkv_ref(x[0], x[1], x[2], nh, ng, d);
  for (int i = 0; i < 3; i++) ref_free(x[i]);
  return out;
}

static ref *gate_up_of(const tree *st, const char *fmt, int L) {
  char g[256], u[256];
  snprintf(g, sizeof g, fmt, L, "gate");
  snprintf(u, sizeof u, fmt, L, "up");
  ref *a = ref_of(must(st, g)), *b = ref_of(must(st, u));
  ref *out = gate_up_ref(a, b);
  ref_free(a), ref_free(b);
  return out;
}

/* A whole file, NUL-terminated (malloc'd). */
static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char *b = calloc(1, 1 << 20);
  assert_non_null(b);
  size_t n = fread(b, 1, (1 << 20) - 1, f);
  b[n] = 0;
  fclose(f);
  return b;
}

/* ---- the combined base weights ---- */

static void test_combined(void **state) {
  fixture *fx = *state;
  d9_gen_params p;
  d9_gen_defaults(&p, "qwen2"); /* biases, tied */
  p.layers = 2, p.hidden = 30, p.heads = 6, p.kv_heads = 2, p.head_dim = 10;
  p.intermediate = 21, p.vocab = 37, p.dtype = D9_F32, p.seed = 14;
  char *src = gen_ckpt(fx, &p);
  tree *st = tree_from_dir(src);
  d9_mount *m = must_mount(src, COMBINED, 0, 0);
  tree *out = tree_from_mount(m);
  char b[256];
  for (int L = 0; L < 2; L++) {
    expect(out, nm(b, "model.layers.%d.self_attn.qkv_proj.weight", L),
           qkv_of(st, "model.layers.%d.self_attn.%c_proj.weight", L, 6, 2, 10));
    expect(out, nm(b, "model.layers.%d.self_attn.qkv_proj.bias", L),
           qkv_of(st, "model.layers.%d.self_attn.%c_proj.bias", L, 6, 2, 10));
    expect(out, nm(b, "model.layers.%d.mlp.gate_up_proj.weight", L),
           gate_up_of(st, "model.layers.%d.mlp.%s_proj.weight", L));
    expect(out, nm(b, "model.layers.%d.mlp.down_proj.weight", L),
           src_ref(st, "model.layers.%d.mlp.down_proj.weight", L));
    assert_null(tree_get(out, nm(b, "model.layers.%d.self_attn.q_proj.weight", L)));
    assert_null(tree_get(out, nm(b, "model.layers.%d.mlp.up_proj.weight", L)));
  }
  /* tied: lm_head is the embedding, as from_hf adds it */
  expect(out, "lm_head.weight", src_ref(st, "model.embed_tokens.weight"));
  expect(out, "model.embed_tokens.weight", src_ref(st, "model.embed_tokens.weight"));
  assert_int_equal(out->nt, 2 * 7 + 3); /* per layer: 2 norms, qkv w+b, o, gate_up, down */
  tree_free(out);
  d9_mount_close(m);
  assert_lossless(fx, src, st, COMBINED);
  /* untied, without biases (llama): lm_head renamed as is */
  m = must_mount(fx->llama, COMBINED, 0, 0);
  out = tree_from_mount(m);
  expect(out, "lm_head.weight", src_ref(fx->src, "lm_head.weight"));
  expect(out, "model.layers.1.self_attn.qkv_proj.weight",
         qkv_of(fx->src, "model.layers.%d.self_attn.%c_proj.weight", 1, 6, 2, 10));
  assert_null(tree_get(out, "model.layers.1.self_attn.qkv_proj.bias"));
  tree_free(out);
  d9_mount_close(m);
  assert_lossless(fx, fx->llama, fx->src, COMBINED);
  tree_free(st);
  free(src);
}

/* ---- adapters ---- */

static char *gen_adapter(fixture *fx, const char *targets, int dora, int shared, tree **st) {
  d9_gen_params p;
  d9_gen_defaults(&p, "llama");
  p.layers = 2, p.hidden = 30, p.heads = 6, p.kv_heads = 2, p.head_dim = 10;
  p.intermediate = 21, p.dtype = D9_F32, p.seed = 5;
  d9_gen_adapter a = {.rank = 3, .dora = dora, .shared_a = shared};
  assert_int_equal(d9_gen_lora_targets(targets, &a.targets), 0);
  char *dir = work_dir(fx, "adapter");
  d9_diag diag = {0};
  if (d9_gen_write_adapter(dir, &p, &a, &diag)) fail_msg("gen adapter: %s", diag.msg);
  *st = tree_from_dir(dir);
  return dir;
}

#define AP "base_model.model.model.layers.%d."

static void test_gen_adapter(void **state) {
  fixture *fx = *state;
  tree *st;
  char *dir = gen_adapter(fx, "q,k,v,o,gate,up,down", 1, 1, &st);
  assert_int_equal(st->nt, 2 * 7 * 3);
  const tens *a = must(st, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  const tens *bq = must(st, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight");
  const tens *mk = must(st, "base_model.model.model.layers.0.self_attn.k_proj.lora_magnitude_vector");
  const tens *ad = must(st, "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight");
  assert_true(a->nd == 2 && a->sh[0] == 3 && a->sh[1] == 30);
  assert_true(bq->nd == 2 && bq->sh[0] == 60 && bq->sh[1] == 3);
  assert_true(mk->nd == 1 && mk->sh[0] == 20);
  assert_true(ad->sh[0] == 3 && ad->sh[1] == 21);
  /* shared lora_A: k and v repeat q's, up repeats gate's; o's is its own */
  const tens *k = must(st, "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight");
  const tens *o = must(st, "base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight");
  const tens *g = must(st, "base_model.model.model.layers.1.mlp.gate_proj.lora_A.weight");
  const tens *u = must(st, "base_model.model.model.layers.1.mlp.up_proj.lora_A.weight");
  assert_memory_equal(a->p, k->p, a->nbytes);
  assert_memory_equal(g->p, u->p, g->nbytes);
  assert_memory_not_equal(a->p, o->p, 4 * 30);
  char path[4300];
  snprintf(path, sizeof path, "%s/adapter_config.json", dir);
  char *cfg = slurp(path);
  assert_non_null(strstr(cfg, "\"use_dora\": true"));
  assert_non_null(strstr(cfg, "\"r\": 3"));
  free(cfg);
  tree_free(st);
  free(dir);
  /* not shared: every lora_A its own; q,v only */
  dir = gen_adapter(fx, "q,v", 0, 0, &st);
  assert_int_equal(st->nt, 2 * 2 * 2);
  a = must(st, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  const tens *v = must(st, "base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight");
  assert_memory_not_equal(a->p, v->p, a->nbytes);
  assert_null(tree_get(st, "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"));
  tree_free(st);
  free(dir);
  /* refused before anything is written, naming the parameter */
  d9_gen_params p;
  d9_gen_defaults(&p, "mixtral");
  d9_gen_adapter bad = {.rank = 2, .targets = D9_GEN_LORA_ALL};
  d9_diag diag = {0};
  dir = work_dir(fx, "bad-adapter");
  assert_int_equal(d9_gen_write_adapter(dir, &p, &bad, &diag), -EINVAL);
  assert_non_null(strstr(diag.msg, "dense families"));
  d9_gen_defaults(&p, "llama");
  bad.rank = 0;
  d9_diag_clear(&diag);
  assert_int_equal(d9_gen_write_adapter(dir, &p, &bad, &diag), -EINVAL);
  assert_non_null(strstr(diag.msg, "lora rank 0 out of range"));
  bad.rank = 2;
  bad.targets = 0;
  d9_diag_clear(&diag);
  assert_int_equal(d9_gen_write_adapter(dir, &p, &bad, &diag), -EINVAL);
  assert_non_null(strstr(diag.msg, "no lora target modules"));
  assert_int_equal(access(dir, F_OK), -1);
  free(dir);
  unsigned t;
  assert_int_equal(d9_gen_lora_targets("q,q", &t), -EINVAL);
  assert_int_equal(d9_gen_lora_targets("q,x", &t), -EINVAL);
  assert_int_equal(d9_gen_lora_targets("", &t), -EINVAL);
  assert_int_equal(d9_gen_lora_targets("down,q", &t), 0);
  assert_int_equal(t, (1u << D9_GEN_LORA_DOWN_BIT) | (1u << D9_GEN_LORA_Q_BIT));
}

static void test_lora(void **state) {
  fixture *fx = *state;
  tree *st;
  char *dir = gen_adapter(fx, "q,k,v,o,gate,up,down", 1, 1, &st);
  d9_mount *m = must_mount(dir, LORA, 0, 0);
  tree *out = tree_from_mount(m);
  char b[256];
  for (int L = 0; L < 2; L++) {
    expect(out, nm(b, AP "self_attn.qkv_proj.lora_A.weight", L),
           src_ref(st, AP "self_attn.q_proj.lora_A.weight", L));
    expect(out, nm(b, AP "self_attn.qkv_proj.lora_B.weight", L),
           qkv_of(st, AP "self_attn.%c_proj.lora_B.weight", L, 6, 2, 10));
    expect(out, nm(b, AP "self_attn.qkv_proj.lora_magnitude_vector", L),
           qkv_of(st, AP "self_attn.%c_proj.lora_magnitude_vector", L, 6, 2, 10));
    expect(out, nm(b, AP "mlp.gate_up_proj.lora_A.weight", L),
           src_ref(st, AP "mlp.gate_proj.lora_A.weight", L));
    expect(out, nm(b, AP "mlp.gate_up_proj.lora_B.weight", L),
           gate_up_of(st, AP "mlp.%s_proj.lora_B.weight", L));
    expect(out, nm(b, AP "mlp.gate_up_proj.lora_magnitude_vector", L),
           gate_up_of(st, AP "mlp.%s_proj.lora_magnitude_vector", L));
    expect(out, nm(b, AP "self_attn.o_proj.lora_B.weight", L),
           src_ref(st, AP "self_attn.o_proj.lora_B.weight", L));
  }
  assert_int_equal(out->nt, 2 * 3 * 4); /* qkv, o, gate_up, down: A, B, magnitude */
  /* the tree keeps the adapter's file names and copies both configs */
  int names = 0;
  for (int i = 0; i < out->nf; i++)
    names += !strcmp(out->fname[i], "adapter_model.safetensors") +
             !strcmp(out->fname[i], "adapter_config.json") + !strcmp(out->fname[i], "config.json");
  assert_int_equal(names, 3);
  tree_free(out);
  d9_mount_close(m);
  /* --reverse copies lora_A back to q, k and v (gate and up) */
  assert_lossless(fx, dir, st, LORA);
  tree_free(st);
  free(dir);
}

/* A LoRA on q and v only (k absent): no finding in strict mode, nothing
 * combined, every tensor passed through as it is (as AutoModel's from_hf
 * leaves it); the spec still applies (its rules matched). */
static void test_lora_subset(void **state) {
  fixture *fx = *state;
  tree *st;
  char *dir = gen_adapter(fx, "q,v,gate,up", 0, 1, &st);
  d9_mount *m = must_mount(dir, LORA, 0, 0);
  tree *out = tree_from_mount(m);
  char b[256];
  for (int L = 0; L < 2; L++) {
    expect(out, nm(b, AP "self_attn.q_proj.lora_A.weight", L),
           src_ref(st, AP "self_attn.q_proj.lora_A.weight", L));
    expect(out, nm(b, AP "self_attn.v_proj.lora_B.weight", L),
           src_ref(st, AP "self_attn.v_proj.lora_B.weight", L));
    assert_null(tree_get(out, nm(b, AP "self_attn.qkv_proj.lora_A.weight", L)));
    expect(out, nm(b, AP "mlp.gate_up_proj.lora_B.weight", L),
           gate_up_of(st, AP "mlp.%s_proj.lora_B.weight", L));
  }
  assert_int_equal(out->nt, 2 * 2 * 2 + 2 * 2);
  tree_free(out);
  d9_mount_close(m);
  assert_lossless(fx, dir, st, LORA);
  tree_free(st);
  free(dir);
  /* q and v only: the rules transform nothing, but they matched */
  dir = gen_adapter(fx, "q,v", 0, 1, &st);
  m = must_mount(dir, LORA, 0, 0);
  out = tree_from_mount(m);
  assert_int_equal(same_tensors(st, out, b, sizeof b), 1);
  tree_free(out);
  d9_mount_close(m);
  tree_free(st);
  free(dir);
}

/* ---- optional inputs: skipped instances consume nothing ---- */

static void test_optional(void **state) {
  fixture *fx = *state;
  /* "z" never is there: each instance is skipped without a finding and
   * consumes nothing, so q is passed through */
  char *spec = spec_write(fx,
      "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'o',\n"
      " 'inputs': {'q': 'model.layers.{L}.self_attn.q_proj.weight',\n"
      "            'z': 'model.layers.{L}.nope'},\n"
      " 'optional': ['z'], 'steps': [{'op': 'dedup'}], 'output': 'x.{L}'}]}");
  d9_mount *m = must_mount(fx->llama, spec, 0, 0);
  tree *out = tree_from_mount(m);
  assert_int_equal(same_tensors(fx->src, out, (char[256]){0}, 256), 1);
  tree_free(out);
  d9_mount_close(m);
  free(spec);
  /* not optional: the missing input is a finding naming it */
  expect_refused(fx, 0, "missing input 'model.layers.0.nope' (z)", NULL,
                 "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'o',\n"
                 " 'inputs': {'q': 'model.layers.{L}.self_attn.q_proj.weight',\n"
                 "            'z': 'model.layers.{L}.nope'},\n"
                 " 'steps': [{'op': 'dedup'}], 'output': 'x.{L}'}]}");
  /* present optional inputs are used as usual; a later rule still sees
   * the tensors of a skipped instance */
  spec = spec_write(fx,
      "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
      " {'name': 'skip', 'inputs': {'q': 'model.layers.{L}.self_attn.q_proj.weight',\n"
      "   'z': 'model.layers.{L}.nope'}, 'optional': ['z'], 'steps': [{'op': 'dedup'}],\n"
      "   'output': 'never.{L}'},\n"
      " {'name': 'kv', 'inputs': {'k': 'model.layers.{L}.self_attn.k_proj.weight',\n"
      "   'v': 'model.layers.{L}.self_attn.v_proj.weight'}, 'optional': ['v'],\n"
      "   'steps': [{'op': 'interleave'}], 'output': 'kv.{L}'},\n"
      " {'name': 'q', 'inputs': 'model.layers.{L}.self_attn.q_proj.weight', 'output': 'q.{L}'}]}");
  m = must_mount(fx->llama, spec, 0, 0);
  out = tree_from_mount(m);
  char b[256];
  ref *in[2] = {src_ref(fx->src, "model.layers.1.self_attn.k_proj.weight"),
                src_ref(fx->src, "model.layers.1.self_attn.v_proj.weight")};
  expect(out, "kv.1", ref_interleave(in, 2, 1));
  ref_free(in[0]), ref_free(in[1]);
  expect(out, "q.0", src_ref(fx->src, "model.layers.0.self_attn.q_proj.weight"));
  assert_null(tree_get(out, "never.0"));
  assert_null(tree_get(out, nm(b, "model.layers.%d.self_attn.q_proj.weight", 0)));
  tree_free(out);
  d9_mount_close(m);
  free(spec);
}

/* ---- copy and dedup ---- */

static void test_copy_dedup(void **state) {
  fixture *fx = *state;
  const char *t = "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [\n"
                  " {'name': 'dup', 'inputs': 'model.layers.{L}.self_attn.o_proj.weight',\n"
                  "  'steps': [{'op': 'copy', 'copies': 3, 'out': ['a', 'b', 'c']}],\n"
                  "  'output': {'a': 'a.{L}', 'b': 'b.{L}', 'c': 'c.{L}'}}]}";
  char *spec = spec_write(fx, t);
  d9_mount *m = must_mount(fx->llama, spec, 0, 0);
  tree *out = tree_from_mount(m);
  char b[256];
  for (int L = 0; L < 2; L++)
    for (int k = 0; k < 3; k++) {
      char n[32];
      snprintf(n, sizeof n, "%c.%d", 'a' + k, L);
      expect(out, n, src_ref(fx->src, "model.layers.%d.self_attn.o_proj.weight", L));
    }
  assert_null(tree_get(out, nm(b, "model.layers.%d.self_attn.o_proj.weight", 0)));
  tree_free(out);
  d9_mount_close(m);
  /* the reverse dedups: the three copies become the one tensor again */
  assert_lossless(fx, fx->llama, fx->src, spec);
  /* the reversed spec holds a dedup of 3 inputs; the forward dedup a copy of 3 */
  d9_spec *f = NULL, *r = NULL;
  d9_diag diag = {0};
  char *text = slurp(LORA);
  assert_int_equal(d9_spec_parse(text, strlen(text), LORA, &f, &diag), 0);
  assert_int_equal(d9_spec_reverse(f, NULL, &r, &diag), 0);
  const d9_step *rs = &r->rules[0].steps[0];
  assert_int_equal(rs->kind, D9_STEP_COPY);
  assert_int_equal(rs->args->copies.lit, 3);
  assert_int_equal(rs->nout, 3);
  assert_int_equal(r->nlossy, 0);
  assert_int_equal(r->rules[0].noptional, 0);
  d9_spec_destroy(r);
  d9_spec_destroy(f);
  free(text);
  free(spec);
  /* dedup needs same-shaped copies: refused naming both */
  expect_refused(fx, 0, "dedup input 1 (F32 [20, 30]) is not shaped like input 0 (F32 [60, 30])",
                 NULL,
                 "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'd',\n"
                 " 'inputs': {'q': 'model.layers.{L}.self_attn.q_proj.weight',\n"
                 "            'k': 'model.layers.{L}.self_attn.k_proj.weight'},\n"
                 " 'steps': [{'op': 'dedup'}], 'output': 'x.{L}'}]}");
  /* copy's "out" must name as many values as it makes */
  expect_refused(fx, 0, "op 'copy' makes 2 outputs, \"out\" names 3", NULL,
                 "{'d9dfs_spec': 1, 'passthrough': true, 'rules': [{'name': 'c',\n"
                 " 'inputs': 'model.norm.weight',\n"
                 " 'steps': [{'op': 'copy', 'copies': 2, 'out': ['a', 'b', 'c']}],\n"
                 " 'output': {'a': 'a', 'b': 'b'}}]}");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_combined),   cmocka_unit_test(test_gen_adapter),
      cmocka_unit_test(test_lora),       cmocka_unit_test(test_lora_subset),
      cmocka_unit_test(test_optional),   cmocka_unit_test(test_copy_dedup),
  };
  return cmocka_run_group_tests(tests, steps_setup, steps_teardown);
}
