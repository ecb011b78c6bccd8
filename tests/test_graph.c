/* test_graph.c - spec expansion and validation: every mistake is refused
 * before any data is read, with one line naming the spec rule and the
 * tensor. Table driven; each case writes its spec at test time. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "mapper/graph.h"
#include "testutil.h"

#define QKV(groups, hd)                                                                     \
  "{\"op\": \"qkv\", \"heads\": \"num_attention_heads\", \"groups\": " groups              \
  ", \"head_dim\": " hd "}"
#define ATTN                                                                                \
  "{\"q\": \"model.layers.{L}.self_attn.q_proj.weight\", \"k\": "                           \
  "\"model.layers.{L}.self_attn.k_proj.weight\", \"v\": "                                   \
  "\"model.layers.{L}.self_attn.v_proj.weight\"}"

static const struct {
  const char *what, *rules, *extra, *want1, *want2;
} cases[] = {
    {"missing input",
     "{\"name\": \"qkv\", \"inputs\": {\"q\": \"model.layers.{L}.self_attn.q_proj.weight\","
     " \"k\": \"model.layers.{L}.self_attn.kk_proj.weight\"}, \"output\": \"x.{L}\"}",
     "", "rules[0] (qkv)", "missing input 'model.layers.0.self_attn.kk_proj.weight'"},
    {"concat shape mismatch",
     "{\"name\": \"fc\", \"inputs\": {\"g\": \"model.layers.{L}.mlp.gate_proj.weight\","
     " \"d\": \"model.layers.{L}.mlp.down_proj.weight\"},"
     " \"steps\": [{\"op\": \"concat\", \"dim\": 1}], \"output\": \"x.{L}\"}",
     "", "rules[0] (fc).steps[0]: tensor 'model.layers.0.mlp.gate_proj.weight'",
     "concat on dim 1: input 1 is BF16 [64, 128]"},
    {"heads not divisible by groups",
     "{\"name\": \"qkv\", \"inputs\": " ATTN ", \"steps\": [" QKV("3", "16") "],"
     " \"output\": \"x.{L}\"}",
     "", "rules[0] (qkv).steps[0]", "4 attention heads are not divisible by 3 kv groups"},
    {"qkv rows wrong for head_dim",
     "{\"name\": \"qkv\", \"inputs\": " ATTN ", \"steps\": [" QKV("2", "8") "],"
     " \"output\": \"x.{L}\"}",
     "", "tensor 'model.layers.0.self_attn.q_proj.weight'", "q is [64, 64], want 32 rows"},
    {"duplicate targets",
     "{\"name\": \"a\", \"inputs\": \"model.norm.weight\", \"output\": \"same\"},"
     "{\"name\": \"b\", \"inputs\": \"model.embed_tokens.weight\", \"output\": \"same\"}",
     ", \"passthrough\": true", "duplicate target 'same'", "rules[0] (a) and by rules[1] (b)"},
    {"strict: unused source tensor",
     "{\"name\": \"e\", \"inputs\": \"model.embed_tokens.weight\", \"output\": \"e\"}", "",
     "source tensor 'model.layers.0.input_layernorm.weight'", "used by no rule"},
    {"tied flag not set",
     "{\"name\": \"out\", \"inputs\": \"lm_head.missing\", \"tied\": {\"from\":"
     " \"model.embed_tokens.weight\", \"if\": \"no_such_flag\"}, \"output\": \"o\"}",
     ", \"passthrough\": true", "rules[0] (out): missing input 'lm_head.missing'",
     "'no_such_flag' is not set"},
    {"required rule matches nothing",
     "{\"name\": \"r\", \"required\": true, \"inputs\": \"model.nothing.{X}\", \"output\": \"o{X}\"}",
     ", \"passthrough\": true", "rules[0] (r)", "no source tensor matches 'model.nothing.{X}'"},
    {"reserved target name",
     "{\"name\": \"m\", \"inputs\": \"model.norm.weight\", \"output\": \"__metadata__\"}",
     ", \"passthrough\": true", "rules[0] (m)", "'__metadata__' is reserved"},
    {"reshape changes the element count",
     "{\"name\": \"r\", \"inputs\": \"model.norm.weight\","
     " \"steps\": [{\"op\": \"reshape\", \"shape\": [3, 7]}], \"output\": \"o\"}",
     ", \"passthrough\": true", "rules[0] (r).steps[0]: tensor 'model.norm.weight'",
     "changes the element count"},
    {"split sizes do not add up",
     "{\"name\": \"s\", \"inputs\": \"model.norm.weight\","
     " \"steps\": [{\"op\": \"split\", \"sizes\": [10, 20], \"out\": [\"a\", \"b\"]}],"
     " \"output\": {\"a\": \"a\", \"b\": \"b\"}}",
     ", \"passthrough\": true", "tensor 'model.norm.weight'", "split sizes add up to 30, dim 0 is 64"},
    {"chunk not divisible",
     "{\"name\": \"c\", \"inputs\": \"model.norm.weight\","
     " \"steps\": [{\"op\": \"chunk\", \"chunks\": 3, \"out\": [\"a\", \"b\", \"c\"]}],"
     " \"output\": {\"a\": \"a\", \"b\": \"b\", \"c\": \"c\"}}",
     ", \"passthrough\": true", "rules[0] (c).steps[0]", "not divisible into 3 chunks"},
    {"unknown value",
     "{\"name\": \"u\", \"inputs\": \"model.norm.weight\","
     " \"steps\": [{\"op\": \"cast\", \"to\": \"F32\", \"in\": \"nope\"}], \"output\": \"o\"}",
     ", \"passthrough\": true", "rules[0] (u).steps[0]", "unknown value 'nope'"},
    {"cast to an integer type",
     "{\"name\": \"c\", \"inputs\": \"model.norm.weight\","
     " \"steps\": [{\"op\": \"cast\", \"to\": \"I32\"}], \"output\": \"o\"}",
     ", \"passthrough\": true", "rules[0] (c).steps[0]", "\"to\" must be"},
    {"arithmetic overflow",
     "{\"name\": \"r\", \"inputs\": \"model.norm.weight\","
     " \"steps\": [{\"op\": \"reshape\", \"shape\": [\"hidden_size * 9223372036854775807\"]}],"
     " \"output\": \"o\"}",
     ", \"passthrough\": true", "rules[0] (r).steps[0].shape[0]", "multiplication overflows"},
    {"tied flag set but the explicit tensor differs",
     "{\"name\": \"out\", \"inputs\": \"lm_head.weight\", \"tied\": {\"from\":"
     " \"model.norm.weight\", \"if\": \"one\"}, \"output\": \"o\"}",
     ", \"params\": {\"one\": 1}, \"passthrough\": true", "rules[0] (out)",
     "'one' is set but 'lm_head.weight' (BF16 [256, 64]) differs from 'model.norm.weight' (BF16 [64])"},
    {"qkv with two inputs",
     "{\"name\": \"qkv\", \"inputs\": {\"q\": \"model.layers.{L}.self_attn.q_proj.weight\","
     " \"k\": \"model.layers.{L}.self_attn.k_proj.weight\"}, \"steps\": [" QKV("2", "16") "],"
     " \"output\": \"x.{L}\"}",
     ", \"passthrough\": true", "rules[0] (qkv).steps[0]", "qkv takes three inputs (q, k, v), got 2"},
    {"chunks from an expression out of range",
     "{\"name\": \"c\", \"inputs\": \"model.norm.weight\","
     " \"steps\": [{\"op\": \"chunk\", \"chunks\": \"hidden_size\"}], \"output\": \"o\"}",
     ", \"passthrough\": true", "rules[0] (c).steps[0].chunks",
     "'hidden_size' is 64, out of range, the limits are 1..32"},
    {"unstack of more slices than a step makes",
     "{\"name\": \"u\", \"inputs\": \"model.layers.{L}.mlp.gate_proj.weight\","
     " \"steps\": [{\"op\": \"unstack\"}], \"output\": \"o.{L}\"}",
     ", \"passthrough\": true", "rules[0] (u).steps[0]", "unstack of 128 slices, the limit is 1..64"},
    {"output capture unknown",
     "{\"name\": \"o\", \"inputs\": \"model.norm.weight\", \"output\": \"x.{L}\"}",
     ", \"passthrough\": true", "rules[0] (o)", "uses a capture the inputs do not have"},
};

static void test_validation_table(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), src[4200], spec[4200];
  snprintf(src, sizeof src, "%s/src", dir);
  snprintf(spec, sizeof spec, "%s/spec.json", dir);
  d9_gen_params p;
  d9_gen_defaults(&p, "llama"); /* H=64, nh=4, ng=2, I=128 */
  assert_int_equal(d9_gen_write(src, &p, NULL), 0);
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char text[8192];
    snprintf(text, sizeof text, "{\"d9dfs_spec\": 1%s, \"rules\": [%s]}", cases[i].extra,
             cases[i].rules);
    tu_write(spec, text);
    d9_mount_opts o = {.src_dir = src, .spec_path = spec};
    d9_mount *m = NULL;
    d9_diag diag = {0};
    int rc = d9_mount_open(&o, &m, &diag);
    if (rc == 0 || !strstr(diag.msg, cases[i].want1) || !strstr(diag.msg, cases[i].want2))
      fprintf(stderr, "case '%s': rc %d, message: %s\n", cases[i].what, rc, diag.msg);
    assert_true(rc < 0);
    assert_null(m);
    assert_non_null(strstr(diag.msg, cases[i].want1));
    assert_non_null(strstr(diag.msg, cases[i].want2));
    assert_non_null(strstr(diag.msg, spec)); /* names the spec file */
    assert_null(strchr(diag.msg, '\n'));
  }
  tu_rmrf(dir);
  free(dir);
}

/* Ignore patterns and strict mode: ignored tensors vanish, the rest pass;
 * the natural order puts layer 2 before layer 10. */
static void test_ignore_and_order(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), src[4200], spec[4200];
  snprintf(src, sizeof src, "%s/src", dir);
  snprintf(spec, sizeof spec, "%s/spec.json", dir);
  d9_gen_params p;
  d9_gen_defaults(&p, "llama");
  p.layers = 11;
  assert_int_equal(d9_gen_write(src, &p, NULL), 0);
  tu_write(spec,
           "{\"d9dfs_spec\": 1, \"ignore\": [\"model.layers.{L}.mlp.{P}_proj.weight\"],"
           " \"rules\": [{\"inputs\": \"model.layers.{L}.{rest*}\", \"output\": \"L{L}.{rest}\"},"
           " {\"inputs\": \"{x}.{y}\", \"output\": \"top.{x}.{y}\"},"
           " {\"inputs\": \"model.{a}.weight\", \"output\": \"m.{a}\"}]}");
  d9_mount_opts o = {.src_dir = src, .spec_path = spec};
  d9_mount *m = NULL;
  d9_diag diag = {0};
  int rc = d9_mount_open(&o, &m, &diag);
  if (rc) fprintf(stderr, "%s\n", diag.msg);
  assert_int_equal(rc, 0);
  uint64_t len = 0;
  int idx = d9_mount_resolve(m, "model.safetensors");
  assert_true(idx > 0);
  unsigned char *f = tu_read_node(m, idx, &len);
  d9_arena *a = d9_arena_create();
  d9_st_tensor t;
  assert_non_null(tu_find(f, len, "L2.input_layernorm.weight", &t, a));
  uint64_t b2 = t.begin;
  assert_non_null(tu_find(f, len, "L10.input_layernorm.weight", &t, a));
  assert_true(b2 < t.begin);
  assert_null(tu_find(f, len, "L3.mlp.gate_proj.weight", &t, a));
  assert_non_null(tu_find(f, len, "top.lm_head.weight", &t, a));
  assert_non_null(tu_find(f, len, "m.embed_tokens", &t, a));
  assert_non_null(tu_find(f, len, "m.norm", &t, a));
  d9_arena_destroy(a);
  free(f);
  d9_mount_close(m);
  tu_rmrf(dir);
  free(dir);
}

static void test_natural_cmp(void **state) {
  (void)state;
  assert_true(d9_natural_cmp("a.2.b", "a.10.b") < 0);
  assert_true(d9_natural_cmp("a.10", "a.9") > 0);
  assert_true(d9_natural_cmp("a.01", "a.1") != 0);
  assert_int_equal(d9_natural_cmp("x", "x"), 0);
  assert_true(d9_natural_cmp("ab", "abc") < 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_validation_table),
      cmocka_unit_test(test_ignore_and_order),
      cmocka_unit_test(test_natural_cmp),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
