/* test_config_patch.c - a spec's config patch as an edit of config.json's
 * text (d9_spec_apply_config, d9_spec_undo_config in mapper/config_patch.h).
 *
 * The expected texts are written here by hand; the random cases build each
 * config text from members whose raw bytes the test knows, and check the
 * patched text member by member against them (every untouched member's
 * bytes present as written, the changed ones as the spec says) and that
 * the undo gives the original back byte for byte. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapper/catalog.h"
#include "mapper/config_patch.h"
#include "mapper/json_strict.h"
#include "mapper/spec.h"

/* ' stands for " in the spec texts below */
static d9_spec *spec_from(const char *text) {
  char *t = strdup(text);
  assert_non_null(t);
  for (char *p = t; *p; p++)
    if (*p == '\'') *p = '"';
  d9_diag diag = {0};
  d9_spec *s = NULL;
  if (d9_spec_parse(t, strlen(t), "spec.json", &s, &diag))
    fail_msg("spec did not parse: %s", diag.msg);
  free(t);
  return s;
}

/* Patch text with spec s: the patched text (malloc'd). */
static char *patch(const d9_spec *s, const char *text, size_t *len) {
  d9_catalog c = {0};
  d9_diag diag = {0};
  c.config_text = (char *)text;
  c.config_len = strlen(text);
  c.config = d9_json_parse(text, c.config_len, 64, 0, "config.json", &diag);
  if (!c.config) fail_msg("config did not parse: %s", diag.msg);
  char *out = NULL;
  int rc = d9_spec_apply_config(s, &c, &out, len, &diag);
  cJSON_Delete(c.config);
  if (rc) fail_msg("patch failed: %d %s", rc, diag.msg);
  assert_int_equal(strlen(out), *len);
  /* what is served parses strictly (no duplicate key, valid JSON) */
  cJSON *j = d9_json_parse(out, *len, 64, 0, "patched config.json", &diag);
  if (!j) fail_msg("patched config does not parse: %s\n%s", diag.msg, out);
  cJSON_Delete(j);
  return out;
}

/* undo(patched) must be orig, byte for byte. */
static void undo_gives(const char *patched, const char *orig) {
  char *back = NULL;
  size_t len = 0;
  assert_int_equal(d9_spec_undo_config(patched, strlen(patched), &back, &len), 1);
  if (len != strlen(orig) || memcmp(back, orig, len))
    fail_msg("undo differs:\n--- want\n%s\n--- got\n%.*s", orig, (int)len, back);
  free(back);
}

/* The record's part of the patched text: from the undo key's line to the end. */
static void assert_prefix(const char *out, const char *want) {
  if (strncmp(out, want, strlen(want)))
    fail_msg("patched text differs:\n--- want (prefix)\n%s\n--- got\n%s", want, out);
}

/* ---- a config as transformers writes it ---- */

static const char *hf_config =
    "{\n"
    "  \"architectures\": [\n"
    "    \"DeepseekV3ForCausalLM\"\n"
    "  ],\n"
    "  \"attention_dropout\": 0.0,\n"
    "  \"hidden_size\": 7168,\n"
    "  \"quantization_config\": {\n"
    "    \"activation_scheme\": \"dynamic\",\n"
    "    \"fmt\": \"e4m3\",\n"
    "    \"quant_method\": \"fp8\",\n"
    "    \"weight_block_size\": [\n"
    "      128,\n"
    "      128\n"
    "    ]\n"
    "  },\n"
    "  \"rms_norm_eps\": 1e-06,\n"
    "  \"rope_scaling\": {\n"
    "    \"factor\": 40.0,\n"
    "    \"type\": \"yarn\"\n"
    "  },\n"
    "  \"rope_theta\": 10000.0,\n"
    "  \"torch_dtype\": \"float8_e4m3fn\",\n"
    "  \"transformers_version\": \"4.46.3\"\n"
    "}\n";

/* deepseek-fp8-to-bf16's patch: the untouched members keep their bytes
 * (0.0, 40.0, 10000.0, 1e-06 as written), quantization_config goes with
 * its separator, torch_dtype is replaced in place, and the undo gives the
 * file back byte for byte. */
static void test_deepseek_patch(void **state) {
  (void)state;
  d9_spec *s = spec_from("{'d9dfs_spec':1,'passthrough':true,'config':{'delete':"
                         "['quantization_config'],'set':{'torch_dtype':'bfloat16'}}}");
  size_t len;
  char *out = patch(s, hf_config, &len);
  assert_prefix(out,
                "{\n"
                "  \"architectures\": [\n"
                "    \"DeepseekV3ForCausalLM\"\n"
                "  ],\n"
                "  \"attention_dropout\": 0.0,\n"
                "  \"hidden_size\": 7168,\n"
                "  \"rms_norm_eps\": 1e-06,\n"
                "  \"rope_scaling\": {\n"
                "    \"factor\": 40.0,\n"
                "    \"type\": \"yarn\"\n"
                "  },\n"
                "  \"rope_theta\": 10000.0,\n"
                "  \"torch_dtype\": \"bfloat16\",\n"
                "  \"transformers_version\": \"4.46.3\",\n"
                "  \"_d9dfs_config_patch\": {");
  assert_string_equal(out + len - 4, "}\n}\n"); /* record closed, the file's own ending */
  /* the record holds the old values as they were written */
  cJSON *j = cJSON_Parse(out);
  cJSON *rec = cJSON_GetObjectItemCaseSensitive(j, "_d9dfs_config_patch");
  cJSON *old = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(rec, "replaced"),
                                                "torch_dtype");
  assert_string_equal(cJSON_GetStringValue(old), "float8_e4m3fn");
  assert_non_null(cJSON_GetObjectItemCaseSensitive(
      cJSON_GetObjectItemCaseSensitive(rec, "removed"), "quantization_config"));
  assert_null(cJSON_GetObjectItemCaseSensitive(j, "dtype")); /* not added: torch_dtype was there */
  cJSON_Delete(j);
  undo_gives(out, hf_config);
  free(out);
  d9_spec_destroy(s);
}

/* torch_dtype and dtype are one setting: a v5 config (dtype only) gets
 * dtype replaced and no torch_dtype; a config with both gets both; one with
 * neither gets the named key appended with the file's indentation. */
static void test_dtype_alias(void **state) {
  (void)state;
  d9_spec *s = spec_from("{'d9dfs_spec':1,'passthrough':true,'config':{'set':"
                         "{'torch_dtype':'bfloat16'}}}");
  static const struct {
    const char *in, *want_prefix;
  } cases[] = {
      {"{\n  \"dtype\": \"float32\",\n  \"x\": 1.50\n}\n",
       "{\n  \"dtype\": \"bfloat16\",\n  \"x\": 1.50,\n  \"_d9dfs_config_patch\": "},
      {"{\n  \"dtype\": \"float32\",\n  \"torch_dtype\": \"float32\"\n}",
       "{\n  \"dtype\": \"bfloat16\",\n  \"torch_dtype\": \"bfloat16\",\n  \"_d9dfs_config_patch\": "},
      {"{\n    \"x\": 2.0e3\n}",
       "{\n    \"x\": 2.0e3,\n    \"torch_dtype\": \"bfloat16\",\n    \"_d9dfs_config_patch\": "},
      {"{\"x\":1}", "{\"x\":1,\"torch_dtype\":\"bfloat16\",\"_d9dfs_config_patch\":"},
      {"{\n\t\"x\": -0.0,\n\t\"y\": 1E+2\n}",
       "{\n\t\"x\": -0.0,\n\t\"y\": 1E+2,\n\t\"torch_dtype\": \"bfloat16\",\n\t\"_d9dfs_config_patch\": "},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    size_t len;
    char *out = patch(s, cases[i].in, &len);
    assert_prefix(out, cases[i].want_prefix);
    undo_gives(out, cases[i].in);
    free(out);
  }
  d9_spec_destroy(s);
  /* both named: each set as given, no aliasing */
  s = spec_from("{'d9dfs_spec':1,'config':{'set':{'torch_dtype':'bfloat16','dtype':'float16'}}}");
  size_t len;
  char *out = patch(s, "{\n  \"torch_dtype\": \"float32\",\n  \"dtype\": \"float32\"\n}\n", &len);
  assert_prefix(out, "{\n  \"torch_dtype\": \"bfloat16\",\n  \"dtype\": \"float16\",\n");
  free(out);
  d9_spec_destroy(s);
}

/* New values are written as the spec writes them: 500000.0 stays a float,
 * 1e-6 keeps its exponent, escapes and spacing inside the value stay. */
static void test_values_as_written(void **state) {
  (void)state;
  d9_spec *s = spec_from("{'d9dfs_spec':1,'config':{'set':{'rope_theta': 500000.0,"
                         " 'eps':1e-6, 'o': {'a': 2.50, 'b': [0.0]}, 's': '\\u00e9'}}}");
  size_t len;
  char *out = patch(s, "{\n  \"rope_theta\": 10000.0,\n  \"s\": \"x\"\n}\n", &len);
  assert_prefix(out, "{\n  \"rope_theta\": 500000.0,\n  \"s\": \"\\u00e9\",\n"
                     "  \"eps\": 1e-6,\n  \"o\": {\"a\": 2.50, \"b\": [0.0]},\n");
  undo_gives(out, "{\n  \"rope_theta\": 10000.0,\n  \"s\": \"x\"\n}\n");
  free(out);
  d9_spec_destroy(s);
}

/* Deleting the first members, the last one, or all; an empty object. */
static void test_delete_positions(void **state) {
  (void)state;
  static const struct {
    const char *spec, *in, *want_prefix;
  } cases[] = {
      {"{'d9dfs_spec':1,'config':{'delete':['a','b']}}",
       "{\n  \"a\": 1,\n  \"b\": [1, 2],\n  \"c\": 3.0\n}\n",
       "{\n  \"c\": 3.0,\n  \"_d9dfs_config_patch\": "},
      {"{'d9dfs_spec':1,'config':{'delete':['c']}}",
       "{\n  \"a\": 1,\n  \"b\": 2,\n  \"c\": 3.0\n}\n",
       "{\n  \"a\": 1,\n  \"b\": 2,\n  \"_d9dfs_config_patch\": "},
      {"{'d9dfs_spec':1,'config':{'delete':['b'],'set':{'n':{'k':[1.5,true,null]}}}}",
       "{\"a\": 1, \"b\": 2, \"c\": 3.0}",
       "{\"a\": 1, \"c\": 3.0, \"n\": {\"k\":[1.5,true,null]}, \"_d9dfs_config_patch\": "},
      {"{'d9dfs_spec':1,'config':{'delete':['a'],'set':{'a':'x'}}}",
       "{\n  \"a\": 1,\n  \"b\": 2\n}\n", "{\n  \"a\": \"x\",\n  \"b\": 2,\n"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    d9_spec *s = spec_from(cases[i].spec);
    size_t len;
    char *out = patch(s, cases[i].in, &len);
    assert_prefix(out, cases[i].want_prefix);
    undo_gives(out, cases[i].in);
    free(out);
    d9_spec_destroy(s);
  }
  /* every member deleted, and empty objects: the record keeps the bytes
   * between the braces */
  static const char *const all[][2] = {
      {"{'d9dfs_spec':1,'config':{'delete':['a','b']}}", "{\n  \"a\": 1.0,\n  \"b\": \"x\"\n}\n"},
      {"{'d9dfs_spec':1,'config':{'delete':['a'],'set':{'b':1}}}", "{ \"a\" :0.0 }"},
      {"{'d9dfs_spec':1,'config':{'set':{'a':2}}}", "{}"},
      {"{'d9dfs_spec':1,'config':{'set':{'a':2}}}", "{\r\n \t}\n"},
  };
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
    d9_spec *s = spec_from(all[i][0]);
    size_t len;
    char *out = patch(s, all[i][1], &len);
    undo_gives(out, all[i][1]);
    free(out);
    d9_spec_destroy(s);
  }
}

/* Converted twice: the first record is a removed member of the second;
 * two undos give the original. A record written before "layout" existed
 * still restores every value. Texts without a record, or whose record is
 * not an object, are left alone; a text that is not an object is refused. */
static void test_twice_and_old_records(void **state) {
  (void)state;
  d9_spec *s1 = spec_from("{'d9dfs_spec':1,'config':{'set':{'a':1},'delete':['q']}}");
  d9_spec *s2 = spec_from("{'d9dfs_spec':1,'config':{'set':{'b':2.5,'a':7}}}");
  const char *orig = "{\n  \"q\": {\"x\": 1e3},\n  \"a\": 0.0,\n  \"z\": \"\\u00e9\\\"\"\n}\n";
  size_t l1, l2, l3, l4;
  char *p1 = patch(s1, orig, &l1);
  char *p2 = patch(s2, p1, &l2);
  char *u1 = NULL, *u2 = NULL;
  assert_int_equal(d9_spec_undo_config(p2, l2, &u1, &l3), 1);
  assert_int_equal(l3, l1);
  assert_memory_equal(u1, p1, l1);
  assert_int_equal(d9_spec_undo_config(u1, l3, &u2, &l4), 1);
  assert_int_equal(l4, strlen(orig));
  assert_memory_equal(u2, orig, l4);
  free(p1), free(p2), free(u1), free(u2);
  d9_spec_destroy(s1), d9_spec_destroy(s2);

  const char *old = "{\n  \"a\": 2,\n  \"t\": \"bfloat16\",\n  \"n\": 5,\n  \"_d9dfs_config_patch\": "
                    "{\"removed\": {\"q\": {\"k\": 1.0}}, \"replaced\": {\"t\": \"float32\"}, "
                    "\"added\": [\"n\"]}\n}\n";
  char *back;
  size_t blen;
  assert_int_equal(d9_spec_undo_config(old, strlen(old), &back, &blen), 1);
  assert_string_equal(back, "{\n  \"a\": 2,\n  \"t\": \"float32\",\n  \"q\": {\"k\": 1.0}\n}\n");
  free(back);

  back = (char *)1;
  assert_int_equal(d9_spec_undo_config("{\"a\": 1}", 8, &back, &blen), 0);
  assert_null(back);
  const char *notobj = "{\"a\": 1, \"_d9dfs_config_patch\": [1]}";
  assert_int_equal(d9_spec_undo_config(notobj, strlen(notobj), &back, &blen), 0);
  assert_int_equal(d9_spec_undo_config("[1, 2]", 6, &back, &blen), -EINVAL);
  assert_int_equal(d9_spec_undo_config("{\"a\": ", 6, &back, &blen), -EINVAL);
}

/* ---- random configs ---- */

static uint64_t rng;
static unsigned rnd(unsigned n) {
  rng = rng * 6364136223846793005ull + 1442695040888963407ull;
  return (unsigned)((rng >> 33) % n);
}

static const char *const raw_values[] = {
    "10000.0", "0.0", "-0.0", "1e-05", "1E+2", "40", "-3", "true", "false", "null",
    "\"bfloat16\"", "\"t\\u00e9\\\"x\\\\\"", "[]", "{}", "[1.0, 2, \"a\"]",
    "{\"factor\": 40.0, \"type\": \"yarn\", \"l\": [0.5, {\"x\": null}]}",
    "{\n    \"a\": 1.0,\n    \"b\": [\n      2\n    ]\n  }"};

/* Random config texts in several layouts; a random spec deleting and
 * setting random members (present or not). Checked: the patched text
 * parses; every member neither deleted nor set appears with its bytes as
 * written ("key": RAW with the file's own separator); deleted members are
 * gone, set ones hold the spec's value; undo gives the text back byte for
 * byte. */
static void test_random_round_trips(void **state) {
  (void)state;
  static const char *const indents[] = {"  ", "    ", "\t", ""};
  static const char *const colons[] = {": ", ":", " : "};
  rng = 20261203;
  for (int iter = 0; iter < 3000; iter++) {
    int nkeys = (int)rnd(7), style = (int)rnd(4);
    const char *ind = indents[style], *colon = colons[rnd(3)];
    const char *nl = style == 3 ? "" : "\n";
    char text[8192], keys[8][16];
    const char *raw[8];
    size_t at = (size_t)snprintf(text, sizeof text, "%s{", rnd(4) ? "" : " \n");
    for (int k = 0; k < nkeys; k++) {
      snprintf(keys[k], sizeof keys[k], rnd(6) ? "k%d" : "k\\u0041%d", k);
      raw[k] = raw_values[rnd(sizeof raw_values / sizeof *raw_values)];
      at += (size_t)snprintf(text + at, sizeof text - at, "%s%s%s\"%s\"%s%s", k ? "," : "",
                             nl, ind, keys[k], colon, raw[k]);
    }
    snprintf(text + at, sizeof text - at, "%s}%s", nkeys ? nl : "", rnd(2) ? "\n" : "");
    /* the spec: each key deleted, set, both or neither; maybe a new key */
    char spec[2048], del[512] = "", set[512] = "";
    int act[8], ndel = 0, nset = 0;
    for (int k = 0; k < nkeys; k++) {
      act[k] = (int)rnd(5); /* 0,1 keep; 2 delete; 3 set; 4 delete and set */
      char dk[24];
      snprintf(dk, sizeof dk, "k%s%d", strchr(keys[k], '\\') ? "A" : "", k);
      if (act[k] == 2 || act[k] == 4)
        snprintf(del + strlen(del), sizeof del - strlen(del), "%s'%s'", ndel++ ? "," : "", dk);
      if (act[k] >= 3)
        snprintf(set + strlen(set), sizeof set - strlen(set), "%s'%s':[%d,'v']", nset++ ? "," : "",
                 dk, k);
    }
    int add_new = (int)rnd(2);
    if (add_new)
      snprintf(set + strlen(set), sizeof set - strlen(set), "%s'new':2.5", nset++ ? "," : "");
    if (!ndel && !nset) snprintf(del, sizeof del, "'absent'"), ndel = 1;
    snprintf(spec, sizeof spec, "{'d9dfs_spec':1,'config':{%s%s%s%s%s%s}}",
             ndel ? "'delete':[" : "", del, ndel ? "]" : "", ndel && nset ? "," : "",
             nset ? "'set':{" : "", nset ? "}" : "");
    if (nset) { /* put the set members inside the braces */
      char *p = strstr(spec, "'set':{");
      memmove(p + 7 + strlen(set), p + 7, strlen(p + 7) + 1);
      memcpy(p + 7, set, strlen(set));
    }
    d9_spec *s = spec_from(spec);
    size_t len;
    char *out = patch(s, text, &len);
    cJSON *j = cJSON_Parse(out);
    for (int k = 0; k < nkeys; k++) {
      char want[512], dk[24];
      snprintf(dk, sizeof dk, "k%s%d", strchr(keys[k], '\\') ? "A" : "", k);
      cJSON *v = cJSON_GetObjectItemCaseSensitive(j, dk);
      if (act[k] <= 1) {
        snprintf(want, sizeof want, "\"%s\"%s%s", keys[k], colon, raw[k]);
        if (!strstr(out, want)) fail_msg("iter %d: '%s' lost from\n%s\nin\n%s", iter, want, text, out);
      } else if (act[k] == 2) {
        assert_null(v);
      } else {
        assert_true(cJSON_IsArray(v) && cJSON_GetArrayItem(v, 0)->valueint == k);
      }
    }
    if (add_new) assert_true(cJSON_GetObjectItemCaseSensitive(j, "new")->valuedouble == 2.5);
    cJSON_Delete(j);
    char *back;
    size_t blen;
    assert_int_equal(d9_spec_undo_config(out, len, &back, &blen), 1);
    if (blen != strlen(text) || memcmp(back, text, blen))
      fail_msg("iter %d: undo differs\nspec %s\n--- orig\n%s\n--- patched\n%s\n--- back\n%s",
               iter, spec, text, out, back);
    cJSON *a = cJSON_Parse(text), *b = cJSON_Parse(back);
    assert_true(cJSON_Compare(a, b, 1));
    cJSON_Delete(a), cJSON_Delete(b);
    free(back), free(out);
    d9_spec_destroy(s);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_deepseek_patch),
      cmocka_unit_test(test_dtype_alias),
      cmocka_unit_test(test_values_as_written),
      cmocka_unit_test(test_delete_positions),
      cmocka_unit_test(test_twice_and_old_records),
      cmocka_unit_test(test_random_round_trips),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
