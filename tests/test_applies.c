/* test_applies.c - which checkpoints a spec is for (mapper/applies.h):
 * parsing "applies_to" and "description", the check against config.json,
 * the source tensors and the built graph, and every shipped spec refusing
 * d9gen checkpoints of the other families (by their real HF model_type
 * names, written in the table below) while mounting its own. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapper/applies.h"
#include "mapper/catalog.h"
#include "mapper/graph.h"
#include "mapper/json_strict.h"
#include "mapper/spec.h"
#include "testutil.h"

/* ' stands for " in the spec texts below */
static int parse(const char *text, d9_spec **s, d9_diag *diag) {
  char *t = strdup(text);
  assert_non_null(t);
  for (char *p = t; *p; p++)
    if (*p == '\'') *p = '"';
  int rc = d9_spec_parse(t, strlen(t), "spec.json", s, diag);
  free(t);
  return rc;
}

static d9_spec *spec_from(const char *text) {
  d9_diag diag = {0};
  d9_spec *s = NULL;
  if (parse(text, &s, &diag)) fail_msg("spec did not parse: %s", diag.msg);
  return s;
}

/* ---- parsing ---- */

static const struct {
  const char *spec, *msg; /* msg NULL: accepted */
} parse_cases[] = {
    {"{'d9dfs_spec':1,'applies_to':'any','description':'x'}", NULL},
    {"{'d9dfs_spec':1,'applies_to':{'model_type':'llama'}}", NULL},
    {"{'d9dfs_spec':1,'applies_to':{'model_type':['a','b'],'architectures':['A'],"
     "'tensors':['{X*}.weight_scale_inv'],'dtypes':['F32','BF16'],'comment':'c'}}", NULL},
    {"{'d9dfs_spec':1,'applies_to':'all'}", "spec.json: \"applies_to\" must be \"any\" or an object"},
    {"{'d9dfs_spec':1,'applies_to':3}", "spec.json: \"applies_to\" must be \"any\" or an object"},
    {"{'d9dfs_spec':1,'applies_to':{}}", "spec.json: applies_to: names no condition"},
    {"{'d9dfs_spec':1,'applies_to':{'comment':'x'}}", "spec.json: applies_to: names no condition"},
    {"{'d9dfs_spec':1,'applies_to':{'model_type':[]}}",
     "spec.json: applies_to.model_type: want a name or a list of 1 to 32 names"},
    {"{'d9dfs_spec':1,'applies_to':{'model_type':3}}",
     "spec.json: applies_to.model_type: want a name or a list"},
    {"{'d9dfs_spec':1,'applies_to':{'architectures':['A',1]}}",
     "spec.json: applies_to.architectures[1]: not a non-empty string"},
    {"{'d9dfs_spec':1,'applies_to':{'model_type':['']}}",
     "spec.json: applies_to.model_type[0]: not a non-empty string"},
    {"{'d9dfs_spec':1,'applies_to':{'family':'llama'}}",
     "spec.json: applies_to: unknown key 'family'"},
    {"{'d9dfs_spec':1,'applies_to':{'tensors':['a.{b']}}", "spec.json: applies_to.tensors[0]"},
    {"{'d9dfs_spec':1,'applies_to':{'dtypes':['F33']}}",
     "spec.json: applies_to.dtypes[0]: unknown dtype 'F33'"},
    {"{'d9dfs_spec':1,'applies_to':{'dtypes':['f32']}}",
     "spec.json: applies_to.dtypes[0]: unknown dtype 'f32'"},
    {"{'d9dfs_spec':1,'description':5}", "spec.json: \"description\" must be a string"},
    {"{'d9dfs_spec':1,'applies':'any'}", "spec.json: top level: unknown key 'applies'"},
};

static void test_parse(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof parse_cases / sizeof *parse_cases; i++) {
    d9_diag diag = {0};
    d9_spec *s = NULL;
    int rc = parse(parse_cases[i].spec, &s, &diag);
    if (!parse_cases[i].msg) {
      if (rc) fail_msg("case %zu refused: %s", i, diag.msg);
    } else if (rc != -EINVAL || !strstr(diag.msg, parse_cases[i].msg)) {
      fail_msg("case %zu: rc %d, message '%s', want '%s'", i, rc, diag.msg, parse_cases[i].msg);
    }
    d9_spec_destroy(s);
  }
  /* 33 names: one past the limit */
  char big[1024] = "{'d9dfs_spec':1,'applies_to':{'model_type':[";
  for (int i = 0; i < 33; i++) snprintf(big + strlen(big), sizeof big - strlen(big), "%s'm%d'", i ? "," : "", i);
  strcat(big, "]}}");
  d9_diag diag = {0};
  d9_spec *s = NULL;
  assert_int_equal(parse(big, &s, &diag), -EINVAL);
  assert_non_null(strstr(diag.msg, "list of 1 to 32 names"));
  /* the parsed form */
  s = spec_from("{'d9dfs_spec':1,'description':'one line','applies_to':{'model_type':['a','b'],"
                "'architectures':'A','tensors':['x.{y}'],'dtypes':['F32','BF16']}}");
  assert_string_equal(s->description, "one line");
  const d9_applies *a = s->applies;
  assert_non_null(a);
  assert_int_equal(a->any, 0);
  assert_int_equal(a->nmodel_types, 2);
  assert_string_equal(a->model_types[1], "b");
  assert_int_equal(a->narchs, 1);
  assert_string_equal(a->archs[0], "A");
  assert_int_equal(a->ntensors, 1);
  assert_int_equal(a->ndtypes, 2);
  assert_int_equal(a->dtypes[0], D9_F32);
  assert_int_equal(a->dtypes[1], D9_BF16);
  d9_spec_destroy(s);
  s = spec_from("{'d9dfs_spec':1}");
  assert_null(s->applies);
  assert_null(s->description);
  d9_spec_destroy(s);
}

/* ---- the check ---- */

static char *workdir;

static char *gen(const char *name, const char *family, d9_dtype dt) {
  char *path = malloc(4200);
  assert_non_null(path);
  snprintf(path, 4200, "%s/%s", workdir, name);
  d9_gen_params p;
  d9_gen_defaults(&p, family);
  p.dtype = dt, p.shards = 2, p.seed = 3;
  d9_diag diag = {0};
  if (d9_gen_write(path, &p, &diag)) fail_msg("gen %s: %s", family, diag.msg);
  return path;
}

static d9_catalog *cat(const char *dir) {
  d9_catalog *c = NULL;
  d9_diag diag = {0};
  if (d9_catalog_open(dir, &c, &diag)) fail_msg("catalog %s: %s", dir, diag.msg);
  return c;
}

/* Check spec text against c (source checks, then the graph when the
 * source passes); rc and the message. */
static int check(const char *spec, const d9_catalog *c, int reverse, int force, d9_diag *warn,
                 d9_diag *diag) {
  d9_spec *s = spec_from(spec);
  int rc = d9_applies_check(s, reverse, c, NULL, force, warn, diag);
  if (!rc) {
    d9_graph *g = NULL;
    d9_diag gd = {0};
    assert_int_equal(d9_spec_resolve_params(s, c->config, &gd), 0);
    if (d9_graph_build(s, c, &g, &gd)) fail_msg("graph: %s", gd.msg);
    rc = d9_applies_check(s, reverse, c, g, force, warn, diag);
    d9_graph_destroy(g);
  }
  d9_spec_destroy(s);
  return rc;
}

static void expect(const char *spec, const d9_catalog *c, int reverse, const char *msg) {
  d9_diag diag = {0}, warn = {0};
  int rc = check(spec, c, reverse, 0, &warn, &diag);
  if (!msg) {
    if (rc) fail_msg("%s on %s refused: %s", spec, c->dir, diag.msg);
    assert_false(warn.set);
    return;
  }
  if (rc != -EMEDIUMTYPE || !strstr(diag.msg, msg))
    fail_msg("%s on %s: rc %d '%s', want '%s'", spec, c->dir, rc, diag.msg, msg);
  assert_non_null(strstr(diag.msg, "(--force to go ahead anyway)"));
  /* forced: accepted, the same line as a warning */
  d9_diag diag2 = {0}, warn2 = {0};
  assert_int_equal(check(spec, c, reverse, 1, &warn2, &diag2), 0);
  assert_false(diag2.set);
  assert_true(warn2.set);
  assert_non_null(strstr(warn2.msg, msg));
  assert_non_null(strstr(warn2.msg, "going ahead (--force)"));
}

static void test_check_source(void **state) {
  (void)state;
  char *dl = gen("llama", "llama", D9_BF16), *dg = gen("gemma", "gemma", D9_BF16);
  char *d32 = gen("llama32", "llama", D9_F32), *dfp8 = gen("fp8", "deepseek_fp8", D9_BF16);
  d9_catalog *l = cat(dl), *g = cat(dg), *l32 = cat(d32), *f8 = cat(dfp8);
  const char *gemma = "{'d9dfs_spec':1,'passthrough':true,'applies_to':{'model_type':['gemma','gemma2']}}";
  expect(gemma, g, 0, NULL);
  expect(gemma, l, 0, "spec.json applies to model_type gemma, gemma2; config.json says llama "
                      "(LlamaForCausalLM)");
  expect(gemma, l, 1, "spec.json applies to model_type gemma, gemma2; config.json says llama");
  /* model_type or architectures: either fits */
  const char *both = "{'d9dfs_spec':1,'passthrough':true,'applies_to':{'model_type':'mistral',"
                     "'architectures':['LlamaForCausalLM']}}";
  expect(both, l, 0, NULL);
  expect(both, g, 0, "spec.json applies to model_type mistral; config.json says gemma "
                     "(GemmaForCausalLM)");
  const char *arch = "{'d9dfs_spec':1,'passthrough':true,'applies_to':{'architectures':"
                     "['GemmaForCausalLM']}}";
  expect(arch, g, 0, NULL);
  expect(arch, l, 0, "spec.json applies to architectures GemmaForCausalLM; config.json says "
                     "LlamaForCausalLM (model_type llama)");
  /* tensors: forward only */
  const char *fp8 = "{'d9dfs_spec':1,'passthrough':true,'applies_to':{'tensors':"
                    "['{X*}.weight_scale_inv']}}";
  expect(fp8, f8, 0, NULL);
  expect(fp8, l, 0, "spec.json applies to checkpoints with tensors '{X*}.weight_scale_inv'; "
                    "the source has none");
  expect(fp8, l, 1, NULL);
  /* dtypes: every tensor */
  const char *f32 = "{'d9dfs_spec':1,'passthrough':true,'applies_to':{'dtypes':'F32'}}";
  expect(f32, l32, 0, NULL);
  expect(f32, l, 0, "spec.json applies to tensors of dtype F32; the source's '");
  expect(f32, f8, 0, "' is BF16");
  expect("{'d9dfs_spec':1,'passthrough':true,'applies_to':{'dtypes':['BF16','F8_E4M3','F32']}}",
         f8, 0, NULL);
  expect("{'d9dfs_spec':1,'passthrough':true,'applies_to':'any'}", l, 0, NULL);
  expect("{'d9dfs_spec':1,'passthrough':true}", l, 0, NULL);
  d9_catalog_close(l32);
  d9_catalog_close(f8);

  /* config.json without model_type / architectures, or none at all */
  char path[4300];
  snprintf(path, sizeof path, "%s/config.json", dl);
  d9_catalog_close(l);
  tu_write(path, "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64}");
  l = cat(dl);
  expect(gemma, l, 0, "spec.json applies to model_type gemma, gemma2; config.json has no "
                      "model_type (architectures LlamaForCausalLM)");
  d9_catalog_close(l);
  tu_write(path, "{\"model_type\": 3}");
  l = cat(dl);
  expect(gemma, l, 0, "config.json names neither model_type nor architectures");
  d9_catalog_close(l);
  unlink(path);
  l = cat(dl);
  expect(gemma, l, 0, "spec.json applies to model_type gemma, gemma2; the source has no "
                      "config.json");
  d9_catalog_close(l);
  d9_catalog_close(g);
  free(dl), free(dg), free(d32), free(dfp8);
}

/* A spec whose rules match nothing transforms nothing: refused; a rule
 * instance, an ignored tensor or no rules at all (a pass-through spec) is
 * fine; --reverse does not count instances. */
static void test_check_graph(void **state) {
  (void)state;
  char *dl = gen("llama-g", "llama", D9_BF16);
  d9_catalog *l = cat(dl);
  const char *none = "{'d9dfs_spec':1,'passthrough':true,'rules':[{'name':'experts','inputs':"
                     "'model.layers.{L}.block_sparse_moe.gate.weight','output':'x.{L}'}]}";
  expect(none, l, 0, "spec.json transforms nothing in this source: no tensor matches the "
                     "pattern of its 1 rule");
  expect(none, l, 1, NULL);
  const char *two = "{'d9dfs_spec':1,'passthrough':true,'applies_to':'any','rules':["
                    "{'inputs':'a.{x}','output':'b.{x}'},{'inputs':'c.{x}','output':'d.{x}'}]}";
  expect(two, l, 0, "spec.json transforms nothing in this source: no tensor matches any of "
                    "its 2 rules");
  expect("{'d9dfs_spec':1,'passthrough':true,'rules':[{'inputs':'model.norm.weight',"
         "'output':'final_norm.weight'}]}", l, 0, NULL);
  expect("{'d9dfs_spec':1,'passthrough':true,'ignore':['lm_head.weight'],'rules':["
         "{'inputs':'a.{x}','output':'b.{x}'}]}", l, 0, NULL);
  expect("{'d9dfs_spec':1,'passthrough':true}", l, 0, NULL);
  d9_catalog_close(l);
  free(dl);
}

/* ---- the shipped specs ---- */

/* The real HF model_type of each d9gen family, as config.json says it. */
static const struct {
  const char *family, *model_type;
} fams[] = {
    {"llama", "llama"},         {"qwen2", "qwen2"},
    {"mixtral", "mixtral"},     {"qwen3_moe", "qwen3_moe"},
    {"deepseek_fp8", "deepseek_v3"}, {"gemma", "gemma"},
    {"gpt_oss", "gpt_oss"},
    {"qwen3", "qwen3"},         {"phi3", "phi3"},
    {"deepseek_v3", "deepseek_v3"},
};
enum { NFAM = sizeof fams / sizeof *fams };

/* Which checkpoints each shipped spec is for: the d9gen families (BF16
 * main dtype) it accepts, and whether an F32 llama is accepted. */
static const struct {
  const char *file;
  const char *right[3];
  int f32_llama; /* 1 accepted, 0 refused */
  const char *why; /* in the message on a wrong family */
} shipped[] = {
    {"identity.json", {"*"}, 1, NULL},
    {"llama-to-megatron.json", {"llama", "qwen2"}, 1, "applies to model_type llama, mistral, qwen2"},
    {"mixtral-to-megatron.json", {"mixtral"}, 0, "applies to model_type mixtral;"},
    {"mixtral-to-hf-fused-experts.json", {"mixtral"}, 0, "applies to model_type mixtral;"},
    {"qwen3-moe-to-hf-fused-experts.json", {"qwen3_moe"}, 0, "applies to model_type qwen3_moe;"},
    {"deepseek-fp8-to-bf16.json", {"deepseek_fp8", "deepseek_v3"}, 0, "applies to model_type deepseek_v3;"},
    {"gemma-to-standard-norms.json", {"gemma"}, 0, "applies to model_type gemma, gemma2"},
    {"cast-f32-to-bf16.json", {NULL}, 1, "applies to tensors of dtype F32"},
    {"gpt-oss-mxfp4-to-bf16.json", {"gpt_oss"}, 0, "applies to model_type gpt_oss;"},
    {"qwen3-to-megatron.json", {"qwen3"}, 0, "applies to model_type qwen3;"},
    {"qwen3-moe-to-megatron.json", {"qwen3_moe"}, 0, "applies to model_type qwen3_moe;"},
    {"phi3-to-llama.json", {"phi3"}, 0, "applies to model_type phi3;"},
    {"deepseek-v3-to-megatron.json", {"deepseek_v3"}, 0, "applies to model_type deepseek_v3;"},
    {"nemo-automodel-combined.json", {"llama", "qwen2"}, 1,
     "applies to model_type llama, mistral, qwen2"},
    /* adapters only: a base checkpoint of its family has no lora_A tensors */
    {"nemo-automodel-lora.json", {NULL}, 0, "applies to"},
};
enum { NSHIPPED = sizeof shipped / sizeof *shipped };

/* Families of a spec's model_type without the tensors its applies_to
 * names: refused with this message instead of the table's `why`. */
static const struct {
  const char *file, *family, *why;
} lacking[] = {
    {"deepseek-v3-to-megatron.json", "deepseek_fp8",
     "applies to checkpoints with tensors 'model.layers.{L}.self_attn.kv_a_proj_with_mqa.weight'"},
};

static const char *why_wrong(int k, const char *family) {
  for (size_t i = 0; i < sizeof lacking / sizeof *lacking; i++)
    if (!strcmp(lacking[i].file, shipped[k].file) && !strcmp(lacking[i].family, family))
      return lacking[i].why;
  return shipped[k].why;
}

static int is_right(int k, const char *family) {
  for (int i = 0; i < 3 && shipped[k].right[i]; i++)
    if (!strcmp(shipped[k].right[i], "*") || !strcmp(shipped[k].right[i], family)) return 1;
  return 0;
}

/* Every file in mounts/ is in the table, declares applies_to and a
 * one-line description. */
static void test_shipped_declare(void **state) {
  (void)state;
  DIR *d = opendir(D9DFS_SOURCE_DIR "/mounts");
  assert_non_null(d);
  struct dirent *e;
  int n = 0;
  while ((e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (len < 5 || strcmp(e->d_name + len - 5, ".json")) continue;
    int k = 0;
    while (k < NSHIPPED && strcmp(shipped[k].file, e->d_name)) k++;
    if (k == NSHIPPED) fail_msg("mounts/%s: not in this test's table", e->d_name);
    char path[4300], *text;
    size_t tl;
    snprintf(path, sizeof path, "%s/mounts/%s", D9DFS_SOURCE_DIR, e->d_name);
    d9_diag diag = {0};
    d9_spec *s = NULL;
    assert_int_equal(d9_read_small_file(AT_FDCWD, path, 1 << 20, &text, &tl, &diag), 0);
    if (d9_spec_parse(text, tl, path, &s, &diag)) fail_msg("%s", diag.msg);
    if (!s->applies) fail_msg("%s: no applies_to", e->d_name);
    if (!s->description || !s->description[0] || strchr(s->description, '\n'))
      fail_msg("%s: description missing or not one line", e->d_name);
    d9_spec_destroy(s);
    free(text);
    n++;
  }
  closedir(d);
  assert_int_equal(n, NSHIPPED);
}

/* Each shipped spec on every d9gen family (and an F32 llama): its own
 * mount; the others are refused naming what the spec wants and the
 * config's model_type (at least two wrong families per spec), and pass
 * the check with force. */
static void test_shipped_families(void **state) {
  (void)state;
  char *dirs[NFAM + 1];
  for (int f = 0; f < NFAM; f++) dirs[f] = gen(fams[f].family, fams[f].family, D9_BF16);
  dirs[NFAM] = gen("llama-f32", "llama", D9_F32);
  for (int k = 0; k < NSHIPPED; k++) {
    char spec[4300];
    snprintf(spec, sizeof spec, "%s/mounts/%s", D9DFS_SOURCE_DIR, shipped[k].file);
    int wrong = 0;
    for (int f = 0; f <= NFAM; f++) {
      int right = f < NFAM ? is_right(k, fams[f].family) : shipped[k].f32_llama;
      const char *mt = fams[f < NFAM ? f : 0].model_type;
      for (int force = 0; force < 2; force++) {
        d9_mount_opts o = {.src_dir = dirs[f], .spec_path = spec, .force = force};
        d9_mount *m = NULL;
        d9_diag diag = {0};
        int rc = d9_mount_open(&o, &m, &diag);
        d9_mount_close(m);
        if (right && rc)
          fail_msg("%s on %s: refused: %s", shipped[k].file, dirs[f], diag.msg);
        if (right || force) {
          if (rc == -EMEDIUMTYPE)
            fail_msg("%s on %s (force): still refused: %s", shipped[k].file, dirs[f], diag.msg);
          continue;
        }
        char says[64];
        snprintf(says, sizeof says, "config.json says %s (", mt);
        const char *why = why_wrong(k, fams[f < NFAM ? f : 0].family);
        if (rc != -EMEDIUMTYPE || !strstr(diag.msg, why) || !strstr(diag.msg, spec) ||
            (strstr(why, "model_type") && !strstr(diag.msg, says)))
          fail_msg("%s on %s: rc %d '%s'", shipped[k].file, dirs[f], rc, diag.msg);
        wrong++;
      }
    }
    if (strcmp(shipped[k].file, "identity.json") && wrong < 2)
      fail_msg("%s: only %d wrong families tried", shipped[k].file, wrong);
  }
  for (int f = 0; f <= NFAM; f++) free(dirs[f]);
}

/* --reverse checks the family against the (restored) config.json too: a
 * tree whose config says llama is refused by the reversed mixtral spec;
 * the reversed llama spec passes the check (and then fails on the tensors,
 * since this tree is not in its target layout). */
static void test_shipped_reverse(void **state) {
  (void)state;
  char *dl = gen("llama-rev", "llama", D9_BF16);
  static const struct {
    const char *spec;
    int refused;
  } cases[] = {{"mixtral-to-megatron.json", 1}, {"gemma-to-standard-norms.json", 1},
               {"llama-to-megatron.json", 0}};
  for (int i = 0; i < 3; i++) {
    char spec[4300];
    snprintf(spec, sizeof spec, "%s/mounts/%s", D9DFS_SOURCE_DIR, cases[i].spec);
    d9_mount_opts o = {.src_dir = dl, .spec_path = spec, .reverse = 1};
    d9_mount *m = NULL;
    d9_diag diag = {0};
    int rc = d9_mount_open(&o, &m, &diag);
    d9_mount_close(m);
    if (cases[i].refused ? rc != -EMEDIUMTYPE || !strstr(diag.msg, "config.json says llama (")
                         : rc == -EMEDIUMTYPE)
      fail_msg("%s reversed on llama: rc %d '%s'", cases[i].spec, rc, diag.msg);
  }
  free(dl);
}

static int setup(void **state) {
  (void)state;
  workdir = tu_tmpdir();
  return 0;
}

static int teardown(void **state) {
  (void)state;
  tu_rmrf(workdir);
  free(workdir);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse),
      cmocka_unit_test(test_check_source),
      cmocka_unit_test(test_check_graph),
      cmocka_unit_test(test_shipped_declare),
      cmocka_unit_test(test_shipped_families),
      cmocka_unit_test(test_shipped_reverse),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
