/* test_spec.c - the spec parser and its params / lookup part
 * (d9_spec_parse, d9_spec_resolve_params, d9_spec_int, d9_spec_lookup in
 * mapper/spec.h). Table driven; every failing case checks the return code
 * and a substring of the diag message. Spec and config texts are written
 * here; in the tables ' stands for " to keep the JSON readable. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mapper/expr.h"
#include "mapper/json_strict.h"
#include "mapper/op_table.h"
#include "mapper/spec.h"


/* ---- helpers ---- */

/* Copy of s with ' turned into " (malloc'd, NUL-terminated). */
static char *dq(const char *s) {
  char *b = strdup(s);
  assert_non_null(b);
  for (char *p = b; *p; p++)
    if (*p == '\'') *p = '"';
  return b;
}

static cJSON *config_from(const char *text) {
  char *t = dq(text);
  d9_diag diag = {0};
  cJSON *j = d9_json_parse(t, strlen(t), 64, 0, "config.json", &diag);
  if (!j) fail_msg("config did not parse: %s", diag.msg);
  free(t);
  return j;
}

static d9_spec *spec_from(const char *text) {
  char *t = dq(text);
  d9_diag diag = {0};
  d9_spec *s = NULL;
  int rc = d9_spec_parse(t, strlen(t), "spec.json", &s, &diag);
  if (rc) fail_msg("spec did not parse: %d %s", rc, diag.msg);
  free(t);
  return s;
}

/* ---- spec params and lookup ---- */

static const char *spec_text =
    "{'d9dfs_spec':1,'params':{'head_dim':{'default':'hidden_size / num_attention_heads'},"
    "'g':'num_attention_heads / num_key_value_heads','c':7},'rules':[]}";
static const char *config_text =
    "{'hidden_size':1024,'num_attention_heads':16,'num_key_value_heads':4,"
    "'tie_word_embeddings':true,'quantization_config':{'weight_block_size':[128,64]},"
    "'rope_theta':10000.5,'model_type':'llama','big':9007199254740993,'nothing':null,"
    "'fl':false}";

static int64_t lookup_ok(const d9_spec *s, const cJSON *config, const char *name) {
  int64_t v = -12345;
  d9_diag diag = {0};
  int rc = d9_spec_lookup(s, config, name, strlen(name), &v, &diag);
  if (rc) fail_msg("lookup '%s': rc %d '%s'", name, rc, diag.msg);
  return v;
}

static void test_params_resolve(void **state) {
  (void)state;
  d9_spec *s = spec_from(spec_text);
  cJSON *config = config_from(config_text);
  d9_diag diag = {0};
  assert_int_equal(d9_spec_resolve_params(s, config, &diag), 0);
  assert_false(diag.set);
  assert_int_equal(s->nparams, 3);
  assert_string_equal(s->params[0].name, "head_dim");
  assert_int_equal(lookup_ok(s, config, "head_dim"), 64); /* absent: the default */
  assert_int_equal(lookup_ok(s, config, "g"), 4);
  assert_int_equal(lookup_ok(s, config, "c"), 7);
  assert_int_equal(lookup_ok(s, config, "tie_word_embeddings"), 1);
  assert_int_equal(lookup_ok(s, config, "fl"), 0);
  assert_int_equal(lookup_ok(s, config, "quantization_config.weight_block_size.0"), 128);
  assert_int_equal(lookup_ok(s, config, "quantization_config.weight_block_size.1"), 64);
  assert_int_equal(lookup_ok(s, config, "hidden_size"), 1024);
  /* a name is len bytes, not up to the NUL */
  int64_t v;
  assert_int_equal(d9_spec_lookup(s, config, "cxyz", 1, &v, NULL), 0);
  assert_int_equal(v, 7);
  /* resolving again gives the same (not doubled) parameters */
  assert_int_equal(d9_spec_resolve_params(s, config, &diag), 0);
  assert_int_equal(s->nparams, 3);
  cJSON_Delete(config);

  /* config.json has head_dim: it wins over the default */
  config = config_from("{'hidden_size':1024,'num_attention_heads':16,'num_key_value_heads':4,"
                       "'head_dim':128}");
  assert_int_equal(d9_spec_resolve_params(s, config, &diag), 0);
  assert_int_equal(lookup_ok(s, config, "head_dim"), 128);
  assert_int_equal(lookup_ok(s, config, "g"), 4);
  cJSON_Delete(config);

  /* null in config.json counts as absent */
  config = config_from("{'hidden_size':1024,'num_attention_heads':16,'num_key_value_heads':4,"
                       "'head_dim':null}");
  assert_int_equal(d9_spec_resolve_params(s, config, &diag), 0);
  assert_int_equal(lookup_ok(s, config, "head_dim"), 64);
  cJSON_Delete(config);
  d9_spec_destroy(s);
}

/* Parameters shadow config.json, see earlier parameters only, and a
 * {"default"} parameter takes config.json's value of its own name. */
static void test_params_order_and_shadowing(void **state) {
  (void)state;
  d9_spec *s = spec_from(
      "{'d9dfs_spec':1,'params':{'hidden_size':5,'twice':'hidden_size * 2',"
      "'num_attention_heads':{'default':3},'h':'num_attention_heads'}}");
  cJSON *config = config_from(config_text);
  d9_diag diag = {0};
  assert_int_equal(d9_spec_resolve_params(s, config, &diag), 0);
  assert_int_equal(lookup_ok(s, config, "twice"), 10);
  assert_int_equal(lookup_ok(s, config, "h"), 16);
  cJSON_Delete(config);
  /* no config at all */
  assert_int_equal(d9_spec_resolve_params(s, NULL, &diag), 0);
  assert_int_equal(lookup_ok(s, NULL, "h"), 3);
  int64_t v;
  assert_int_equal(d9_spec_lookup(s, NULL, "tie_word_embeddings", 19, &v, &diag), -ENOENT);
  d9_spec_destroy(s);
}

typedef struct lcase {
  const char *name;
  int rc;
  const char *msg; /* for -EINVAL */
} lcase;

static const lcase lcases[] = {
  {"nope", -ENOENT, NULL},
  {"nothing", -ENOENT, NULL},                                   /* null */
  {"quantization_config.weight_block_size.2", -ENOENT, NULL},   /* past the end */
  {"quantization_config.weight_block_size.x", -ENOENT, NULL},
  {"quantization_config.weight_block_size.-1", -ENOENT, NULL},
  {"quantization_config.nope", -ENOENT, NULL},
  {"hidden_size.0", -ENOENT, NULL},                             /* into a number */
  {"rope_theta", -EINVAL, "config.json: 'rope_theta' is not an integer"},
  {"model_type", -EINVAL, "config.json: 'model_type' is not an integer"},
  {"big", -EINVAL, "config.json: 'big' is not an integer"},     /* above 2^53 */
  {"quantization_config", -EINVAL, "config.json: 'quantization_config' is not an integer"},
  {"quantization_config.weight_block_size", -EINVAL,
   "'quantization_config.weight_block_size' is not an integer"},
};

static void test_lookup_table(void **state) {
  (void)state;
  d9_spec *s = spec_from(spec_text);
  cJSON *config = config_from(config_text);
  d9_diag diag = {0};
  assert_int_equal(d9_spec_resolve_params(s, config, &diag), 0);
  for (size_t i = 0; i < sizeof lcases / sizeof *lcases; i++) {
    const lcase *c = &lcases[i];
    d9_diag_clear(&diag);
    int64_t v = -12345;
    int rc = d9_spec_lookup(s, config, c->name, strlen(c->name), &v, &diag);
    if (rc != c->rc) fail_msg("lookup '%s': rc %d, want %d (%s)", c->name, rc, c->rc, diag.msg);
    if (c->msg && !strstr(diag.msg, c->msg))
      fail_msg("lookup '%s': message '%s', want '%s'", c->name, diag.msg, c->msg);
    if (!c->msg && diag.set) fail_msg("lookup '%s': unexpected message '%s'", c->name, diag.msg);
  }
  cJSON_Delete(config);
  d9_spec_destroy(s);
}

/* BUG (fails on purpose): an empty path component in a config name
 * silently selects element 0 of an array: "quantization_config.
 * weight_block_size.." (note the trailing double dot) resolves to 128, the
 * first element, because the empty component "" goes through strtol, which
 * reads it as 0 without complaint. The expression grammar lets such a name
 * through ([A-Za-z_][A-Za-z0-9_.]*). Expected -ENOENT, as for any name that
 * does not reach an integer. */
static void test_lookup_empty_component(void **state) {
  (void)state;
  d9_spec *s = spec_from(spec_text);
  cJSON *config = config_from(config_text);
  assert_int_equal(d9_spec_resolve_params(s, config, NULL), 0);
  int64_t v = -12345;
  const char *n = "quantization_config.weight_block_size..";
  int rc = d9_spec_lookup(s, config, n, strlen(n), &v, NULL);
  cJSON_Delete(config);
  d9_spec_destroy(s);
  if (rc != -ENOENT) fail_msg("lookup '%s': rc %d value %" PRId64 ", want -ENOENT", n, rc, v);
}

/* d9_spec_int: a JSON integer or an expression string over params and config. */
typedef struct icase {
  const char *json;   /* the argument, ' for " */
  int rc;
  int64_t want;
  const char *msg;
} icase;

static const icase icases[] = {
  {"12", 0, 12, NULL},
  {"-3", 0, -3, NULL},
  {"1e2", -EINVAL, 0, "spec.json: W: not an integer"}, /* integers are written as integers */
  {"'head_dim * 2'", 0, 128, NULL},
  {"'g * c + quantization_config.weight_block_size.1'", 0, 92, NULL},
  {"'tie_word_embeddings + 1'", 0, 2, NULL},
  {"1.5", -EINVAL, 0, "spec.json: W: not an integer"},
  {"9007199254740993", -EINVAL, 0, "spec.json: W: not an integer"},
  {"true", -EINVAL, 0, "spec.json: W: want an integer or an expression string"},
  {"[1]", -EINVAL, 0, "spec.json: W: want an integer or an expression string"},
  {"null", -EINVAL, 0, "spec.json: W: want an integer or an expression string"},
  {"'zz'", -EINVAL, 0, "spec.json: W: expression 'zz': unknown name 'zz'"},
  {"'rope_theta * 2'", -EINVAL, 0, "config.json: 'rope_theta' is not an integer"},
  {"'2 * model_type'", -EINVAL, 0, "config.json: 'model_type' is not an integer"},
  {"'head_dim / 0'", -EINVAL, 0, "spec.json: W: expression 'head_dim / 0': division by zero"},
  {"''", -EINVAL, 0, "spec.json: W: expression '': unexpected end"},
};

static void test_spec_int_table(void **state) {
  (void)state;
  d9_spec *s = spec_from(spec_text);
  cJSON *config = config_from(config_text);
  d9_diag diag = {0};
  assert_int_equal(d9_spec_resolve_params(s, config, &diag), 0);
  for (size_t i = 0; i < sizeof icases / sizeof *icases; i++) {
    const icase *c = &icases[i];
    char text[128];
    snprintf(text, sizeof text, "[%s]", c->json);
    for (char *p = text; *p; p++)
      if (*p == '\'') *p = '"';
    cJSON *arr = config_from(text); /* strict parse: marks inexact numbers */
    d9_diag_clear(&diag);
    int64_t v = -12345;
    int rc = d9_spec_int(s, config, arr->child, "W", &v, &diag);
    if (rc != c->rc || (rc == 0 && v != c->want))
      fail_msg("%s: rc %d value %" PRId64 ", want rc %d value %" PRId64 " (%s)", c->json, rc,
               v, c->rc, c->want, diag.msg);
    if (rc && !strstr(diag.msg, c->msg))
      fail_msg("%s: message '%s', want '%s'", c->json, diag.msg, c->msg);
    cJSON_Delete(arr);
  }
  cJSON_Delete(config);
  d9_spec_destroy(s);
}

/* d9_spec_resolve_params errors: (params object, config) -> message. */
typedef struct pcase {
  const char *params;   /* the value of "params", ' for " */
  const char *config;   /* NULL: the default config_text */
  const char *msg;
} pcase;

static const pcase pcases[] = {
  {"{'x':'hidden_size * 2','y':'model_type'}", NULL,
   "config.json: 'model_type' is not an integer"},
  {"{'y':'rope_theta / 2'}", NULL, "config.json: 'rope_theta' is not an integer"},
  {"{'head_dim':{'default':8}}", "{'head_dim':'big'}",
   "config.json: 'head_dim' is not an integer"},
  {"{'head_dim':{'default':8}}", "{'head_dim':64.5}",
   "config.json: 'head_dim' is not an integer"},
  {"{'x':{'default':1,'extra':2}}", NULL, "spec.json: params.x: unknown key 'extra'"},
  {"{'x':{}}", NULL, "spec.json: params.x: missing \"default\""},
  {"{'x':'later','later':1}", NULL,
   "spec.json: params.x: expression 'later': unknown name 'later'"},
  {"{'x':[1]}", NULL, "spec.json: params.x: want an integer or an expression string"},
  {"{'x':true}", NULL, "spec.json: params.x: want an integer or an expression string"},
  {"{'x':1.5}", NULL, "spec.json: params.x: not an integer"},
  {"{'x':{'default':'1 +'}}", NULL, "spec.json: params.x: expression '1 +': unexpected end"},
  {"{'x':'num_attention_heads / (num_key_value_heads - 4)'}", NULL,
   "spec.json: params.x: expression 'num_attention_heads / (num_key_value_heads - 4)': "
   "division by zero"},
  {"{'a':1,'b':'a * 9223372036854775807 * 2'}", NULL,
   "spec.json: params.b: expression 'a * 9223372036854775807 * 2': multiplication overflows"},
};

static void test_params_errors(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof pcases / sizeof *pcases; i++) {
    const pcase *c = &pcases[i];
    char text[512];
    snprintf(text, sizeof text, "{'d9dfs_spec':1,'params':%s}", c->params);
    d9_spec *s = spec_from(text);
    cJSON *config = config_from(c->config ? c->config : config_text);
    d9_diag diag = {0};
    int rc = d9_spec_resolve_params(s, config, &diag);
    if (rc != -EINVAL || !strstr(diag.msg, c->msg))
      fail_msg("params %s: rc %d '%s', want -EINVAL '%s'", c->params, rc, diag.msg, c->msg);
    cJSON_Delete(config);
    d9_spec_destroy(s);
  }
}

/* BUG (fails on purpose): whether a non-integer config.json value of a
 * {"default"} parameter is an error depends on whether the caller passed a
 * diag. d9_spec_resolve_params tests `diag && diag->set` instead of the
 * lookup's return code, so with diag == NULL, params {"head_dim":
 * {"default": 8}} and config {"head_dim": "big"} resolve to 0 with
 * head_dim = 8 (the string is silently ignored); with a diag the same input
 * is -EINVAL. Expected -EINVAL either way. (The same test also makes a
 * diag that already holds an earlier message turn every absent {"default"}
 * name into -EINVAL.) */
static void test_params_error_without_diag(void **state) {
  (void)state;
  d9_spec *s = spec_from("{'d9dfs_spec':1,'params':{'head_dim':{'default':8}}}");
  cJSON *config = config_from("{'head_dim':'big'}");
  int rc = d9_spec_resolve_params(s, config, NULL);
  int64_t v = -1;
  if (!rc) d9_spec_lookup(s, config, "head_dim", 8, &v, NULL);
  cJSON_Delete(config);
  d9_spec_destroy(s);
  if (rc != -EINVAL)
    fail_msg("resolve with a NULL diag: rc %d (head_dim = %" PRId64 "), want -EINVAL", rc, v);
}

/* ---- d9_spec_parse ---- */

typedef struct scase {
  const char *label;
  const char *text;  /* ' for " */
  const char *msg;   /* NULL: must parse */
} scase;

#define RULE0 "'inputs':'a.{L}','output':'b.{L}'"

static const scase scases[] = {
  /* valid */
  {"minimal", "{'d9dfs_spec':1}", NULL},
  {"all top-level keys",
   "{'d9dfs_spec':1,'description':'x','params':{},'ignore':['x.{L}'],'rules':[],"
   "'passthrough':true,'strict':false,'output':{'max_shard_size':'512MiB',"
   "'single_file':true,'copy':['config.json','tokenizer*']}}", NULL},
  {"rule with everything",
   "{'d9dfs_spec':1,'rules':[{'name':'fc1','comment':'c','required':true,"
   "'inputs':{'gate':'m.{L}.gate','up':'m.{L}.up'},"
   "'steps':[{'op':'concat','dim':0,'in':['gate','up'],'out':'y'},"
   "{'op':'cast','to':'BF16'}],'output':{'y':'d.{L}.fc1'}}]}", NULL},
  {"tied rule",
   "{'d9dfs_spec':1,'rules':[{'inputs':'lm_head.weight','output':'output.weight',"
   "'tied':{'from':'model.embed_tokens.weight','if':'tie_word_embeddings'}}]}", NULL},
  {"every op",
   "{'d9dfs_spec':1,'rules':[{" RULE0 ",'steps':[{'op':'cast','to':'F32'},"
   "{'op':'concat','dim':0},{'op':'stack','dim':0},{'op':'chunk','chunks':2,'dim':0},"
   "{'op':'split','sizes':[1,2],'dim':0},{'op':'qkv','heads':1,'groups':1,'head_dim':1},"
   "{'op':'qkv_split','heads':1,'groups':1,'head_dim':1},{'op':'reshape','shape':[1]}]}]}",
   NULL},
  {"copy empty list", "{'d9dfs_spec':1,'output':{'copy':[]}}", NULL},
  {"optional inputs",
   "{'d9dfs_spec':1,'rules':[{'inputs':{'q':'a.{L}.q','k':'a.{L}.k','v':'a.{L}.v'},"
   "'optional':['k','v'],'steps':[{'op':'dedup'}],'output':'b.{L}'}]}", NULL},
  {"optional one name", "{'d9dfs_spec':1,'rules':[{'inputs':{'q':'a.{L}.q','k':'a.{L}.k'},"
   "'optional':'k','steps':[{'op':'dedup'}],'output':'b.{L}'}]}", NULL},
  {"optional the driving input", "{'d9dfs_spec':1,'rules':[{'inputs':{'q':'a.{L}.q',"
   "'k':'a.{L}.k'},'optional':['q'],'output':{'q':'b.{L}','k':'c.{L}'}}]}",
   "spec.json: rules[0]: optional 'q' is not an input after the first"},
  {"optional unknown input", "{'d9dfs_spec':1,'rules':[{'name':'n','inputs':{'q':'a.{L}.q',"
   "'k':'a.{L}.k'},'optional':['z'],'output':{'q':'b.{L}','k':'c.{L}'}}]}",
   "spec.json: rules[0] (n): optional 'z' is not an input after the first"},
  {"optional not names", "{'d9dfs_spec':1,'rules':[{'inputs':{'q':'a.{L}.q','k':'a.{L}.k'},"
   "'optional':[1],'output':{'q':'b.{L}','k':'c.{L}'}}]}", "'optional'[0] is not a string"},
  {"optional empty", "{'d9dfs_spec':1,'rules':[{'inputs':{'q':'a.{L}.q','k':'a.{L}.k'},"
   "'optional':[],'output':{'q':'b.{L}','k':'c.{L}'}}]}",
   "'optional' must be a name or a non-empty list of names"},
  {"optional with over", "{'d9dfs_spec':1,'rules':[{'over':'E','inputs':{'q':'a.{E}.q',"
   "'k':'a.{E}.k'},'optional':['k'],'steps':[{'op':'stack'}],'output':'b'}]}",
   "rules[0]: \"optional\" and \"over\" exclude each other"},
  /* top level */
  {"not json", "{'d9dfs_spec':1,", "spec.json: "},
  {"duplicate key", "{'d9dfs_spec':1,'rules':[],'rules':[]}", "duplicate key 'rules'"},
  {"not an object", "[]", "spec.json: the spec must be a json object"},
  {"unknown top-level key", "{'d9dfs_spec':1,'rulez':[]}",
   "spec.json: top level: unknown key 'rulez'"},
  {"missing version", "{'rules':[]}", "spec.json: \"d9dfs_spec\": must be 1"},
  {"version 2", "{'d9dfs_spec':2}", "spec.json: \"d9dfs_spec\": must be 1"},
  {"version 0", "{'d9dfs_spec':0}", "\"d9dfs_spec\": must be 1"},
  {"version string", "{'d9dfs_spec':'1'}", "\"d9dfs_spec\": must be 1"},
  {"version fraction", "{'d9dfs_spec':1.5}", "\"d9dfs_spec\": must be 1"},
  {"params not an object", "{'d9dfs_spec':1,'params':[]}",
   "spec.json: \"params\" must be an object"},
  {"ignore bad pattern", "{'d9dfs_spec':1,'ignore':['ok','{x']}",
   "spec.json: ignore[1]: pattern '{x': bad capture at byte 0"},
  {"ignore not a list", "{'d9dfs_spec':1,'ignore':5}",
   "top level: 'ignore' must be a name or a non-empty list of names"},
  {"ignore not strings", "{'d9dfs_spec':1,'ignore':['a',1]}", "'ignore'[1] is not a string"},
  {"passthrough not bool", "{'d9dfs_spec':1,'passthrough':'yes'}",
   "\"passthrough\" must be true or false"},
  {"strict not bool", "{'d9dfs_spec':1,'strict':1}", "\"strict\" must be true or false"},
  {"rules not array", "{'d9dfs_spec':1,'rules':{}}", "\"rules\" must be an array"},
  /* rules */
  {"rule not an object", "{'d9dfs_spec':1,'rules':[{" RULE0 "},5]}",
   "spec.json: rules[1]: a rule must be an object"},
  {"unknown key in a rule", "{'d9dfs_spec':1,'rules':[{" RULE0 ",'frob':1}]}",
   "spec.json: rules[0]: unknown key 'frob'"},
  {"unknown key in a named rule", "{'d9dfs_spec':1,'rules':[{" RULE0 "},{'name':'qkv',"
   RULE0 ",'input':'x'}]}", "spec.json: rules[1] (qkv): unknown key 'input'"},
  {"missing inputs", "{'d9dfs_spec':1,'rules':[{'output':'b'}]}",
   "rules[0]: \"inputs\" must be a pattern or a non-empty object of patterns"},
  {"empty inputs", "{'d9dfs_spec':1,'rules':[{'inputs':{},'output':'b'}]}",
   "rules[0]: \"inputs\" must be a pattern"},
  {"input not a string", "{'d9dfs_spec':1,'rules':[{'inputs':{'q':1},'output':'b'}]}",
   "rules[0]: input 'q' must be a pattern string"},
  {"bad input pattern", "{'d9dfs_spec':1,'rules':[{'inputs':'a.{L','output':'b'}]}",
   "spec.json: rules[0].inputs.x: pattern 'a.{L': bad capture at byte 2"},
  {"bad named input pattern",
   "{'d9dfs_spec':1,'rules':[{'name':'n','inputs':{'p':'a','q':'{1}'},'output':'b'}]}",
   "rules[0] (n).inputs.q: pattern '{1}': bad capture at byte 0"},
  {"empty input pattern", "{'d9dfs_spec':1,'rules':[{'inputs':'','output':'b'}]}",
   "rules[0].inputs.x: empty pattern"},
  {"bad output pattern", "{'d9dfs_spec':1,'rules':[{'inputs':'a','output':'b}'}]}",
   "spec.json: rules[0].output: pattern 'b}': bad capture at byte 1"},
  {"missing output", "{'d9dfs_spec':1,'rules':[{'inputs':'a'}]}",
   "rules[0]: \"output\" must be a pattern or a non-empty object of patterns"},
  {"output value not a string", "{'d9dfs_spec':1,'rules':[{'inputs':'a','output':{'y':2}}]}",
   "rules[0]: output 'y' must be a pattern string"},
  {"output __metadata__", "{'d9dfs_spec':1,'rules':[{'inputs':'a','output':'__metadata__'}]}",
   "spec.json: rules[0]: target name '__metadata__' is reserved"},
  {"output object __metadata__",
   "{'d9dfs_spec':1,'rules':[{'inputs':'a','output':{'x':'b','y':'__metadata__'}}]}",
   "rules[0]: target name '__metadata__' is reserved"},
  {"steps not array", "{'d9dfs_spec':1,'rules':[{" RULE0 ",'steps':{}}]}",
   "rules[0]: \"steps\" must be an array"},
  {"step not an object", "{'d9dfs_spec':1,'rules':[{" RULE0 ",'steps':['cast']}]}",
   "spec.json: rules[0].steps[0]: a step must be an object"},
  {"step without op", "{'d9dfs_spec':1,'rules':[{" RULE0 ",'steps':[{'to':'F32'}]}]}",
   "rules[0].steps[0]: missing \"op\""},
  {"op not a string", "{'d9dfs_spec':1,'rules':[{" RULE0 ",'steps':[{'op':3}]}]}",
   "rules[0].steps[0]: missing \"op\""},
  {"unknown op", "{'d9dfs_spec':1,'rules':[{" RULE0 ",'steps':[{'op':'frobnicate'}]}]}",
   "spec.json: rules[0].steps[0]: unknown op 'frobnicate'"},
  {"unknown op in a named rule's second step",
   "{'d9dfs_spec':1,'rules':[{" RULE0 "},{'name':'fuse'," RULE0 ",'steps':[{'op':'cast',"
   "'to':'F32'},{'op':'frobnicate'}]}]}",
   "spec.json: rules[1] (fuse).steps[1]: unknown op 'frobnicate'"},
  {"op names are case-sensitive", "{'d9dfs_spec':1,'rules':[{" RULE0 ",'steps':[{'op':'Cast'}]}]}",
   "unknown op 'Cast'"},
  {"argument of another op", "{'d9dfs_spec':1,'rules':[{" RULE0 ",'steps':[{'op':'cast','dim':0}]}]}",
   "rules[0].steps[0]: unknown key 'dim'"},
  {"step in empty", "{'d9dfs_spec':1,'rules':[{" RULE0 ",'steps':[{'op':'cast','in':[]}]}]}",
   "rules[0].steps[0]: 'in' must be a name or a non-empty list of names"},
  {"step out not strings",
   "{'d9dfs_spec':1,'rules':[{" RULE0 ",'steps':[{'op':'cast','out':['a',1]}]}]}",
   "rules[0].steps[0]: 'out'[1] is not a string"},
  {"required not bool", "{'d9dfs_spec':1,'rules':[{" RULE0 ",'required':'yes'}]}",
   "rules[0]: \"required\" must be true or false"},
  {"tied without from",
   "{'d9dfs_spec':1,'rules':[{'inputs':'lm_head.weight','output':'o','tied':{'if':'t'}}]}",
   "spec.json: rules[0]: \"tied\" needs \"from\""},
  {"tied without if",
   "{'d9dfs_spec':1,'rules':[{'inputs':'lm_head.weight','output':'o','tied':{'from':'e'}}]}",
   "spec.json: rules[0]: \"tied\" needs \"from\""},
  {"tied from a pattern",
   "{'d9dfs_spec':1,'rules':[{'inputs':'lm_head.weight','output':'o','tied':{'from':'e.{L}',"
   "'if':'t'}}]}", "rules[0]: \"tied\" needs \"from\""},
  {"tied on a pattern input",
   "{'d9dfs_spec':1,'rules':[{'inputs':'h.{L}','output':'o.{L}','tied':{'from':'e','if':'t'}}]}",
   "rules[0]: \"tied\" needs \"from\""},
  {"tied not an object",
   "{'d9dfs_spec':1,'rules':[{'inputs':'lm_head.weight','output':'o','tied':'e'}]}",
   "rules[0]: \"tied\" must be an object"},
  {"tied unknown key",
   "{'d9dfs_spec':1,'rules':[{'name':'lm_head','inputs':'lm_head.weight','output':'o',"
   "'tied':{'from':'e','if':'t','when':1}}]}", "rules[0] (lm_head): unknown key 'when'"},
  /* output */
  {"output not an object", "{'d9dfs_spec':1,'output':5}", "spec.json: output: must be an object"},
  {"output unknown key", "{'d9dfs_spec':1,'output':{'shard':1}}",
   "spec.json: output: unknown key 'shard'"},
  {"max_shard_size bad suffix", "{'d9dfs_spec':1,'output':{'max_shard_size':'5XB'}}",
   "spec.json: output.max_shard_size: want bytes or a size like"},
  {"max_shard_size lowercase suffix", "{'d9dfs_spec':1,'output':{'max_shard_size':'5gb'}}",
   "output.max_shard_size: want bytes"},
  {"max_shard_size space", "{'d9dfs_spec':1,'output':{'max_shard_size':'5 GB'}}",
   "output.max_shard_size: want bytes"},
  {"max_shard_size 0", "{'d9dfs_spec':1,'output':{'max_shard_size':0}}",
   "output.max_shard_size: want bytes"},
  {"max_shard_size '0'", "{'d9dfs_spec':1,'output':{'max_shard_size':'0GB'}}",
   "output.max_shard_size: want bytes"},
  {"max_shard_size negative", "{'d9dfs_spec':1,'output':{'max_shard_size':-5}}",
   "output.max_shard_size: want bytes"},
  {"max_shard_size fraction", "{'d9dfs_spec':1,'output':{'max_shard_size':1.5}}",
   "output.max_shard_size: want bytes"},
  {"max_shard_size over 2^53", "{'d9dfs_spec':1,'output':{'max_shard_size':1e17}}",
   "output.max_shard_size: want bytes"},
  {"max_shard_size empty", "{'d9dfs_spec':1,'output':{'max_shard_size':''}}",
   "output.max_shard_size: want bytes"},
  {"max_shard_size no digits", "{'d9dfs_spec':1,'output':{'max_shard_size':'GB'}}",
   "output.max_shard_size: want bytes"},
  {"max_shard_size beyond 64 bits", "{'d9dfs_spec':1,'output':{'max_shard_size':'99999999999999999999'}}",
   "output.max_shard_size: want bytes"},
  {"max_shard_size product overflows", "{'d9dfs_spec':1,'output':{'max_shard_size':'20000000000GB'}}",
   "output.max_shard_size: want bytes"},
  {"max_shard_size bool", "{'d9dfs_spec':1,'output':{'max_shard_size':true}}",
   "output.max_shard_size: want bytes"},
  {"single_file not bool", "{'d9dfs_spec':1,'output':{'single_file':'yes'}}",
   "spec.json: output.single_file: must be true or false"},
  {"copy with '/'", "{'d9dfs_spec':1,'output':{'copy':['config.json','sub/x.json']}}",
   "spec.json: output.copy[1]: 'sub/x.json' must name files in the source directory itself"},
  {"copy '..'", "{'d9dfs_spec':1,'output':{'copy':['..']}}", "output.copy[0]: '..' must name"},
  {"copy '.'", "{'d9dfs_spec':1,'output':{'copy':'.'}}", "output.copy[0]: '.' must name"},
  {"copy absolute", "{'d9dfs_spec':1,'output':{'copy':['/etc/passwd']}}",
   "output.copy[0]: '/etc/passwd' must name"},
  {"copy empty name", "{'d9dfs_spec':1,'output':{'copy':['']}}", "output.copy[0]: '' must name"},
  {"copy not a list", "{'d9dfs_spec':1,'output':{'copy':5}}",
   "output: 'copy' must be a name or a non-empty list of names"},
};

static void test_spec_parse_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof scases / sizeof *scases; i++) {
    const scase *c = &scases[i];
    char *t = dq(c->text);
    d9_diag diag = {0};
    d9_spec *s = (d9_spec *)1;
    int rc = d9_spec_parse(t, strlen(t), "spec.json", &s, &diag);
    if (c->msg) {
      if (rc != -EINVAL || !diag.set || !strstr(diag.msg, c->msg) ||
          strncmp(diag.msg, "spec.json: ", 11))
        fail_msg("case '%s': want -EINVAL '%s', got rc %d '%s'", c->label, c->msg, rc, diag.msg);
      assert_ptr_equal(s, (d9_spec *)1); /* *out untouched on error */
    } else {
      if (rc) fail_msg("case '%s': rc %d '%s'", c->label, rc, diag.msg);
      d9_spec_destroy(s);
    }
    free(t);
  }
  d9_spec_destroy(NULL);
}

/* BUG (fails on purpose): output.max_shard_size "-1" is accepted as
 * 18446744073709551615 bytes, because parse_size in spec.c uses strtoull,
 * which takes a sign (and negates) and skips leading white space, so
 * " 5GB" is accepted too. Expected -EINVAL with "output.max_shard_size:
 * want bytes ...", as for the number -1 and for "5 GB". */
static void test_spec_negative_size_string(void **state) {
  (void)state;
  static const char *const texts[] = {
      "{\"d9dfs_spec\":1,\"output\":{\"max_shard_size\":\"-1\"}}",
      "{\"d9dfs_spec\":1,\"output\":{\"max_shard_size\":\" 5GB\"}}",
  };
  char failures[512] = "";
  for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
    d9_diag diag = {0};
    d9_spec *s = NULL;
    int rc = d9_spec_parse(texts[i], strlen(texts[i]), "spec.json", &s, &diag);
    if (rc != -EINVAL || !strstr(diag.msg, "output.max_shard_size: want bytes")) {
      size_t o = strlen(failures);
      snprintf(failures + o, sizeof failures - o, "[%s: rc %d, max_shard_size %llu] ", texts[i],
               rc, s ? (unsigned long long)s->max_shard_size : 0ull);
    }
    d9_spec_destroy(s);
  }
  if (failures[0]) fail_msg("accepted: %s", failures);
}

/* The parsed form of a valid spec. */
static void test_spec_parsed_values(void **state) {
  (void)state;
  d9_spec *s = spec_from("{'d9dfs_spec':1}");
  assert_int_equal(s->strict, 1);
  assert_int_equal(s->passthrough, 0);
  assert_int_equal(s->single_file, 0);
  assert_int_equal(s->max_shard_size, 5000000000ull);
  assert_int_equal(s->ncopy, 10);
  assert_string_equal(s->copy[0], "config.json");
  assert_string_equal(s->copy[9], "adapter_config.json"); /* PEFT adapter directories */
  assert_int_equal(s->nrules, 0);
  assert_int_equal(s->nignore, 0);
  d9_spec_destroy(s);

  static const struct { const char *size; uint64_t want; } sizes[] = {
      {"1000", 1000}, {"'1000'", 1000}, {"'7B'", 7}, {"'5GB'", 5000000000ull},
      {"'500MB'", 500000000ull}, {"'3KB'", 3000}, {"'2GiB'", 2ull << 30},
      {"'512MiB'", 512ull << 20}, {"'4KiB'", 4096}, {"9007199254740992", 1ull << 53},
  };
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    char text[128];
    snprintf(text, sizeof text, "{'d9dfs_spec':1,'output':{'max_shard_size':%s}}", sizes[i].size);
    s = spec_from(text);
    if (s->max_shard_size != sizes[i].want)
      fail_msg("max_shard_size %s -> %llu", sizes[i].size, (unsigned long long)s->max_shard_size);
    d9_spec_destroy(s);
  }

  s = spec_from("{'d9dfs_spec':1,'ignore':'x.{L}','strict':false,'passthrough':true,"
                "'output':{'single_file':true,'copy':'tok*'},'rules':["
                "{'inputs':'a.{L}','output':'b.{L}'},"
                "{'name':'fc1','inputs':{'gate':'g.{L}','up':'u.{L}'},"
                "'steps':[{'op':'concat','dim':0,'in':['gate','up'],'out':'y'}],"
                "'output':{'y':'fc1.{L}'},'required':true},"
                "{'inputs':'lm_head.weight','output':'output.weight',"
                "'tied':{'from':'embed.weight','if':'tie_word_embeddings'}}]}");
  assert_int_equal(s->strict, 0);
  assert_int_equal(s->passthrough, 1);
  assert_int_equal(s->single_file, 1);
  assert_int_equal(s->ncopy, 1);
  assert_string_equal(s->copy[0], "tok*");
  assert_int_equal(s->nignore, 1);
  assert_string_equal(s->ignore[0], "x.{L}");
  assert_int_equal(s->nrules, 3);
  const d9_rule *r = &s->rules[0];
  assert_string_equal(r->name, "rules[0]");
  assert_string_equal(r->where, "rules[0]");
  assert_int_equal(r->ninputs, 1);
  assert_string_equal(r->in_names[0], "x");
  assert_string_equal(r->in_pats[0], "a.{L}");
  assert_int_equal(r->nsteps, 0);
  assert_int_equal(r->nout, 1);
  assert_null(r->out_names[0]);
  assert_string_equal(r->out_pats[0], "b.{L}");
  assert_int_equal(r->required, 0);
  r = &s->rules[1];
  assert_string_equal(r->name, "fc1");
  assert_string_equal(r->where, "rules[1] (fc1)");
  assert_int_equal(r->ninputs, 2);
  assert_string_equal(r->in_names[1], "up");
  assert_string_equal(r->in_pats[1], "u.{L}");
  assert_int_equal(r->nsteps, 1);
  assert_int_equal(r->steps[0].kind, D9_STEP_CONCAT);
  assert_string_equal(r->steps[0].where, "rules[1] (fc1).steps[0]");
  assert_int_equal(r->steps[0].nin, 2);
  assert_string_equal(r->steps[0].in[1], "up");
  assert_int_equal(r->steps[0].nout, 1);
  assert_string_equal(r->steps[0].out[0], "y");
  assert_string_equal(r->out_names[0], "y");
  assert_int_equal(r->required, 1);
  r = &s->rules[2];
  assert_string_equal(r->tied_from, "embed.weight");
  assert_string_equal(r->tied_if, "tie_word_embeddings");
  d9_spec_destroy(s);
}

/* ---- step arguments: decoded and checked at parse, no catalog ---- */

/* Every op with bad arguments (wrong type, out of range, unknown key,
 * missing key, bad expression syntax, wrong value counts): d9_spec_parse
 * refuses each, naming spec.json, the step's location (and the key) and
 * the reason. Steps are in rules[1] (r) at steps[1]. */
static const struct {
  const char *step; /* ' for " */
  const char *msg;  /* after "spec.json: rules[1] (r).steps[1]" */
} bad_args[] = {
  {"{'op':'cast'}", ": missing \"to\""},
  {"{'op':'cast','to':5}", ": \"to\" must be F32, F16, BF16, F8_E4M3 or F8_E5M2"},
  {"{'op':'cast','to':'I32'}", ": \"to\" must be F32"},
  {"{'op':'cast','to':'F32','from':'F64'}", ": \"from\" must be F32"},
  {"{'op':'cast','to':'F32','dim':0}", ": unknown key 'dim'"},
  {"{'op':'concat','dim':'a +'}", ".dim: expression 'a +': unexpected end at byte 3"},
  {"{'op':'concat','dim':9}", ".dim: 9 is out of range, the limits are -9..8"},
  {"{'op':'concat','sizes':5}", ".sizes: want a list of integers (at least 1)"},
  {"{'op':'concat','sizes':[]}", ".sizes: 0 values, want at least 1"},
  {"{'op':'concat','sizes':[1,-2]}", ".sizes[1]: -2 is out of range, the limits are 0..9007199254740992"},
  {"{'op':'concat','chunks':2}", ": unknown key 'chunks'"},
  {"{'op':'stack','dim':true}", ".dim: want an integer or an expression string"},
  {"{'op':'stack','dim':-10}", ".dim: -10 is out of range"},
  {"{'op':'stack','sizes':[1]}", ": unknown key 'sizes'"},
  {"{'op':'unstack','dim':1.5}", ".dim: not an integer"},
  {"{'op':'unstack','group':2}", ": unknown key 'group'"},
  {"{'op':'chunk'}", ": missing \"chunks\""},
  {"{'op':'chunk','chunks':0}", ".chunks: 0 is out of range, the limits are 1..32"},
  {"{'op':'chunk','chunks':33}", ".chunks: 33 is out of range, the limits are 1..32"},
  {"{'op':'chunk','chunks':'n)'}", ".chunks: expression 'n)': unexpected trailing text at byte 1"},
  {"{'op':'split'}", ": missing \"sizes\""},
  {"{'op':'split','sizes':[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}",
   ".sizes: 33 values, want 1..32"},
  {"{'op':'split','sizes':['a',{}]}", ".sizes[1]: want an integer or an expression string"},
  {"{'op':'split','sizes':[1],'rows':1}", ": unknown key 'rows'"},
  {"{'op':'qkv','groups':1,'head_dim':1}", ": missing \"heads\""},
  {"{'op':'qkv','heads':0,'groups':1,'head_dim':1}", ".heads: 0 is out of range, the limits are 1..2147483647"},
  {"{'op':'qkv','heads':1,'groups':1,'head_dim':[1]}", ".head_dim: want an integer"},
  {"{'op':'qkv','heads':1,'groups':1,'head_dim':1,'in':['a','b']}", ": \"in\" names 2 values, op 'qkv' takes 3"},
  {"{'op':'qkv_split','heads':2147483648,'groups':1,'head_dim':1}", ".heads: 2147483648 is out of range"},
  {"{'op':'qkv_split','heads':1,'groups':1,'head_dim':1,'dim':0}", ": unknown key 'dim'"},
  {"{'op':'qkv_split','heads':1,'groups':1,'head_dim':1,'out':['q','k']}", ": \"out\" names 2 values, op 'qkv_split' makes 3"},
  {"{'op':'reshape'}", ": missing \"shape\""},
  {"{'op':'reshape','shape':[1,1,1,1,1,1,1,1,1]}", ".shape: 9 values, want 0..8"},
  {"{'op':'reshape','shape':[-2]}", ".shape[0]: -2 is out of range"},
  {"{'op':'reshape','shape':[1],'from_shape':'x'}", ".from_shape: want a list of integers (0..8)"},
  {"{'op':'squeeze'}", ": missing \"dim\""},
  {"{'op':'squeeze','dim':[0]}", ".dim: want an integer"},
  {"{'op':'unsqueeze','dim':'a b'}", ".dim: expression 'a b': unexpected trailing text at byte 2"},
  {"{'op':'unsqueeze','dim':0,'dims':[0]}", ": unknown key 'dims'"},
  {"{'op':'transpose','dim1':100}", ".dim1: 100 is out of range"},
  {"{'op':'transpose','dim0':null}", ".dim0: want an integer"},
  {"{'op':'permute'}", ": missing \"dims\""},
  {"{'op':'permute','dims':['0']}", ".dims[0]: want an integer"},
  {"{'op':'permute','dims':[0,0]}", ".dims[1]: dim 0 is listed twice"},
  {"{'op':'permute','dims':[0,2]}", ".dims[1]: 2 is not a dim of 2"},
  {"{'op':'permute','dims':[0,1,2,3,4,5,6,7,8]}", ".dims: 9 values, want 0..8"},
  {"{'op':'slice','start':1e300}", ".start: not an integer"},
  {"{'op':'slice','end':'x * '}", ".end: expression 'x * ': unexpected end"},
  {"{'op':'slice','rows':1}", ": unknown key 'rows'"},
  {"{'op':'interleave','group':0}", ".group: 0 is out of range, the limits are 1.."},
  {"{'op':'interleave','group':'g-'}", ".group: expression 'g-': unexpected end"},
  {"{'op':'interleave','parts':2}", ": unknown key 'parts'"},
  {"{'op':'deinterleave'}", ": missing \"parts\""},
  {"{'op':'deinterleave','parts':33}", ".parts: 33 is out of range, the limits are 1..32"},
  {"{'op':'deinterleave','parts':2,'group':'(g'}", ".group: expression '(g': expected ')'"},
  {"{'op':'dequant','block':[1,2,3]}", ".block: 3 values, want 2"},
  {"{'op':'dequant','block':0}", ".block: 0 is out of range, the limits are 1..1048576"},
  {"{'op':'dequant','block':[1,2097152]}", ".block[1]: 2097152 is out of range"},
  {"{'op':'dequant','in':['w','s','x']}", ": \"in\" names 3 values, op 'dequant' takes 2"},
  {"{'op':'quant','block':true}", ".block: want an integer"},
  {"{'op':'quant','out':['a','b','c']}", ": \"out\" names 3 values, op 'quant' makes 2"},
  {"{'op':'quant','to':'F8_E4M3'}", ": unknown key 'to'"},
  {"{'op':'affine','mul':'x'}", ".mul: want a number"},
  {"{'op':'affine','add':[]}", ".add: want a number"},
  {"{'op':'affine','multiple':2}", ": unknown key 'multiple'"},
  {"{'op':'pad'}", ": pad needs \"rows\" or \"multiple\""},
  {"{'op':'pad','multiple':0}", ".multiple: 0 is out of range"},
  {"{'op':'pad','rows':-1}", ".rows: -1 is out of range"},
  {"{'op':'pad','rows':2,'from_rows':'a*'}", ".from_rows: expression 'a*': unexpected end"},
  {"{'op':'truncate'}", ": missing \"rows\""},
  {"{'op':'truncate','rows':-5}", ".rows: -5 is out of range"},
  {"{'op':'truncate','rows':1,'multiple':2}", ": unknown key 'multiple'"},
  {"{'op':'rope','heads':1}", ": missing \"to\""},
  {"{'op':'rope','to':'half'}", ": missing \"heads\""},
  {"{'op':'rope','heads':1,'to':'full'}", ": \"to\" must be \"half\" or \"interleaved\""},
  {"{'op':'rope','heads':0,'to':'half'}", ".heads: 0 is out of range"},
  {"{'op':'rope','heads':1,'to':'half','dim':0}", ": unknown key 'dim'"},
  {"{'op':'mxfp4_dequant','to':'F16'}", ".to: mxfp4 dequantises to F32 or BF16, not F16"},
  {"{'op':'mxfp4_dequant','group':33}", ".group: 33 is odd (two values per byte)"},
  {"{'op':'mxfp4_dequant','block':32}", ": unknown key 'block'"},
  {"{'op':'mxfp4_quant','group':0}", ".group: 0 is out of range"},
  {"{'op':'mxfp4_quant','group':'x','to':'I8'}", ": \"to\" must be F32, F16, BF16"},
  {"{'op':'mxfp4_quant','to':'F8_E4M3'}", ".to: mxfp4 dequantises to F32 or BF16, not F8_E4M3"},
  {"{'op':'copy'}", ": missing \"copies\""},
  {"{'op':'copy','copies':0}", ".copies: 0 is out of range"},
  {"{'op':'copy','copies':65}", ".copies: 65 is out of range"},
  {"{'op':'copy','copies':2,'dim':0}", ": unknown key 'dim'"},
  {"{'op':'dedup','copies':2}", ": unknown key 'copies'"},
  {"{'op':'dedup','in':['a','b'],'out':['c','d']}", ": \"out\" names 2 values, op 'dedup' makes 1"},
};

static void test_step_args_refused_at_parse(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof bad_args / sizeof *bad_args; i++) {
    char text[1024], want[512];
    snprintf(text, sizeof text, "{'d9dfs_spec':1,'rules':[{" RULE0 "},{'name':'r'," RULE0
             ",'steps':[{'op':'cast','to':'F32'},%s]}]}", bad_args[i].step);
    snprintf(want, sizeof want, "spec.json: rules[1] (r).steps[1]%s", bad_args[i].msg);
    char *t = dq(text), *w = want;
    d9_diag diag = {0};
    d9_spec *s = NULL;
    int rc = d9_spec_parse(t, strlen(t), "spec.json", &s, &diag);
    if (rc != -EINVAL || !strstr(diag.msg, w) || strncmp(diag.msg, "spec.json: ", 11))
      fail_msg("step %s: want -EINVAL '%s', got rc %d '%s'", bad_args[i].step, w, rc, diag.msg);
    assert_null(s);
    free(t);
  }
  /* every op of the table has cases above: adding an op adds its cases */
  for (int k = 0; k < D9_STEP_COUNT; k++) {
    char key[64];
    int found = 0;
    snprintf(key, sizeof key, "{'op':'%s'", d9_step_name((d9_step_kind)k));
    for (size_t i = 0; i < sizeof bad_args / sizeof *bad_args && !found; i++)
      found = !strncmp(bad_args[i].step, key, strlen(key)) &&
              strchr(",}", bad_args[i].step[strlen(key)]);
    if (!found) fail_msg("op '%s' has no bad-argument case", d9_step_name((d9_step_kind)k));
  }
}

/* The typed arguments of valid steps: literals, expressions (kept as
 * text), defaults (given = 0), lists, dtypes and words. */
static void test_step_args_decoded(void **state) {
  (void)state;
  d9_spec *s = spec_from(
      "{'d9dfs_spec':1,'rules':[{" RULE0 ",'steps':["
      "{'op':'split','sizes':[128,'hidden_size - 128'],'dim':1},"
      "{'op':'transpose','dim0':-1},"
      "{'op':'cast','to':'BF16','from':'F32'},"
      "{'op':'rope','heads':'num_attention_heads','to':'interleaved'},"
      "{'op':'dequant','block':64},"
      "{'op':'affine','add':1.5},"
      "{'op':'permute','dims':[1,-1,0]}]}]}");
  const d9_rule *r = &s->rules[0];
  assert_int_equal(r->nsteps, 7);
  const d9_step_args *a = r->steps[0].args;
  assert_ptr_equal(r->steps[0].def, d9_op_get(D9_STEP_SPLIT));
  assert_string_equal(r->steps[0].op, "split");
  assert_int_equal(a->sizes.n, 2);
  assert_null(a->sizes.v[0].expr);
  assert_int_equal(a->sizes.v[0].lit, 128);
  assert_string_equal(a->sizes.v[1].expr, "hidden_size - 128");
  assert_int_equal(a->dim.lit, 1);
  assert_int_equal(a->dim.given, 1);
  a = r->steps[1].args;
  assert_int_equal(a->dim0.lit, -1);
  assert_int_equal(a->dim1.lit, 1); /* the default */
  assert_int_equal(a->dim1.given, 0);
  a = r->steps[2].args;
  assert_int_equal(a->to, D9_BF16);
  assert_int_equal(a->from, D9_F32);
  a = r->steps[3].args;
  assert_string_equal(a->heads.expr, "num_attention_heads");
  assert_int_equal(a->word, 1);
  a = r->steps[4].args;
  assert_int_equal(a->block.n, 1);
  assert_int_equal(a->block.scalar, 1);
  assert_int_equal(a->block.v[0].lit, 64);
  a = r->steps[5].args;
  assert_true(a->mul == 1.0 && a->add == 1.5);
  a = r->steps[6].args;
  assert_int_equal(a->dims.n, 3);
  assert_int_equal(a->dims.v[1].lit, -1);
  d9_spec_destroy(s);
  assert_null(d9_op_find("Cast"));
  for (int k = 0; k < D9_STEP_COUNT; k++) {
    const d9_op_def *d = d9_op_get((d9_step_kind)k);
    assert_non_null(d);
    assert_int_equal(d->kind, k);
    assert_ptr_equal(d9_op_find(d->name), d);
    assert_non_null(d->build);
    assert_non_null(d->invert);
    assert_true(d->nout > 0 || d->nouts);
  }
}

/* Each op's inverse from the table (d9_op_def.invert): the op it becomes,
 * the arguments it carries, lossy exactly as the entry says, and the
 * inverse of the inverse is the op again. Refusals name the reason. */
static void test_step_inverses(void **state) {
  (void)state;
  static const struct {
    const char *step;       /* ' for " */
    int nin;                /* the forward step's inputs */
    d9_step_kind inv;       /* D9_STEP_COUNT: refused */
    int lossy;
    const char *refuse;
  } cases[] = {
    {"{'op':'cast','to':'BF16','from':'F32'}", 1, D9_STEP_CAST, 1, NULL},
    {"{'op':'cast','to':'F32','from':'BF16'}", 1, D9_STEP_CAST, 0, NULL},
    {"{'op':'cast','to':'F16','from':'F8_E4M3'}", 1, D9_STEP_CAST, 0, NULL},
    {"{'op':'cast','to':'F32'}", 1, D9_STEP_COUNT, 0, "without \"from\""},
    {"{'op':'concat','sizes':[3,'h'],'dim':1}", 2, D9_STEP_SPLIT, 0, NULL},
    {"{'op':'concat'}", 2, D9_STEP_COUNT, 0, "without \"sizes\""},
    {"{'op':'split','sizes':[3,4]}", 1, D9_STEP_CONCAT, 0, NULL},
    {"{'op':'chunk','chunks':2,'dim':-1}", 1, D9_STEP_CONCAT, 0, NULL},
    {"{'op':'stack','dim':1}", 3, D9_STEP_UNSTACK, 0, NULL},
    {"{'op':'unstack','dim':1}", 1, D9_STEP_STACK, 0, NULL},
    {"{'op':'qkv','heads':4,'groups':2,'head_dim':'d'}", 3, D9_STEP_QKV_SPLIT, 0, NULL},
    {"{'op':'qkv_split','heads':4,'groups':2,'head_dim':8}", 1, D9_STEP_QKV, 0, NULL},
    {"{'op':'reshape','shape':[-1],'from_shape':[4,8]}", 1, D9_STEP_RESHAPE, 0, NULL},
    {"{'op':'reshape','shape':[-1]}", 1, D9_STEP_COUNT, 0, "without \"from_shape\""},
    {"{'op':'squeeze','dim':0}", 1, D9_STEP_UNSQUEEZE, 0, NULL},
    {"{'op':'unsqueeze','dim':-1}", 1, D9_STEP_SQUEEZE, 0, NULL},
    {"{'op':'transpose','dim0':1,'dim1':2}", 1, D9_STEP_TRANSPOSE, 0, NULL},
    {"{'op':'permute','dims':[1,2,0]}", 1, D9_STEP_PERMUTE, 0, NULL},
    {"{'op':'slice','end':4}", 1, D9_STEP_COUNT, 0, "slice drops data"},
    {"{'op':'interleave','group':8}", 2, D9_STEP_DEINTERLEAVE, 0, NULL},
    {"{'op':'interleave'}", 33, D9_STEP_COUNT, 0, "more than 32 inputs"},
    {"{'op':'deinterleave','parts':2}", 1, D9_STEP_INTERLEAVE, 0, NULL},
    {"{'op':'dequant','block':[128,64]}", 2, D9_STEP_QUANT, 1, NULL},
    {"{'op':'quant'}", 1, D9_STEP_DEQUANT, 1, NULL},
    {"{'op':'affine','mul':2,'add':1}", 1, D9_STEP_AFFINE, 1, NULL},
    {"{'op':'affine','mul':0}", 1, D9_STEP_COUNT, 0, "no inverse"},
    {"{'op':'pad','rows':8,'from_rows':6}", 1, D9_STEP_TRUNCATE, 0, NULL},
    {"{'op':'pad','multiple':8}", 1, D9_STEP_COUNT, 0, "without \"from_rows\""},
    {"{'op':'truncate','rows':6,'from_rows':8}", 1, D9_STEP_PAD, 1, NULL},
    {"{'op':'rope','heads':4,'to':'half'}", 1, D9_STEP_ROPE, 0, NULL},
    {"{'op':'mxfp4_dequant','group':32}", 2, D9_STEP_MXFP4_QUANT, 1, NULL},
    {"{'op':'mxfp4_quant','to':'F32'}", 1, D9_STEP_MXFP4_DEQUANT, 1, NULL},
    {"{'op':'copy','copies':3}", 1, D9_STEP_DEDUP, 0, NULL},
    {"{'op':'dedup'}", 3, D9_STEP_COPY, 0, NULL},
    {"{'op':'dedup'}", 65, D9_STEP_COUNT, 0, "more than 64 inputs"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    char text[512];
    snprintf(text, sizeof text, "{'d9dfs_spec':1,'rules':[{" RULE0 ",'steps':[%s]}]}",
             cases[i].step);
    d9_spec *s = spec_from(text);
    const d9_step *st = &s->rules[0].steps[0];
    d9_arena *a = d9_arena_create();
    d9_op_inv inv = {.arena = a, .nin = cases[i].nin, .kind = D9_STEP_COUNT};
    int rc = st->def->invert(st, &inv);
    if (cases[i].inv == D9_STEP_COUNT) {
      if (rc != -EINVAL || !inv.refuse || !strstr(inv.refuse, cases[i].refuse))
        fail_msg("%s: rc %d refuse '%s', want '%s'", cases[i].step, rc,
                 inv.refuse ? inv.refuse : "", cases[i].refuse);
    } else {
      if (rc || inv.kind != cases[i].inv || !inv.lossy != !cases[i].lossy)
        fail_msg("%s: rc %d kind %s lossy '%s'", cases[i].step, rc, d9_step_name(inv.kind),
                 inv.lossy ? inv.lossy : "");
      d9_op_lossy want = st->def->lossy;
      if (want == D9_LOSSY_NEVER) assert_null(inv.lossy);
      if (want == D9_LOSSY_ALWAYS) assert_non_null(inv.lossy);
      /* the inverse of the inverse is the forward op again */
      d9_step back = {.kind = inv.kind, .def = d9_op_get(inv.kind), .args = &inv.args,
                      .where = "back"};
      d9_op_inv inv2 = {.arena = a, .nin = 1, .kind = D9_STEP_COUNT};
      int rc2 = back.def->invert(&back, &inv2);
      /* split and chunk become a concat without "sizes", which has none */
      int parts = st->kind == D9_STEP_CHUNK || st->kind == D9_STEP_SPLIT;
      if (parts && rc2 != -EINVAL) fail_msg("%s: the concat it becomes has an inverse", cases[i].step);
      if (!parts && (rc2 || inv2.kind != st->kind))
        fail_msg("%s: inverse of the inverse: rc %d kind %s", cases[i].step, rc2,
                 d9_step_name(inv2.kind));
    }
    d9_arena_destroy(a);
    d9_spec_destroy(s);
  }
  /* arguments carried over */
  d9_spec *s = spec_from("{'d9dfs_spec':1,'rules':[{" RULE0 ",'steps':["
                         "{'op':'permute','dims':[1,2,0]},{'op':'affine','mul':4,'add':1},"
                         "{'op':'pad','rows':'v + 8','from_rows':'v'},"
                         "{'op':'cast','to':'BF16','from':'F32'},{'op':'rope','heads':4,'to':'half'}]}]}");
  d9_arena *a = d9_arena_create();
  const d9_step *st = s->rules[0].steps;
  d9_op_inv inv = {.arena = a, .nin = 1};
  assert_int_equal(st[0].def->invert(&st[0], &inv), 0);
  assert_int_equal(inv.args.dims.n, 3);
  assert_int_equal(inv.args.dims.v[0].lit, 2); /* out dim 0 is in dim 2: 0 <- 2 */
  assert_int_equal(inv.args.dims.v[1].lit, 0);
  assert_int_equal(inv.args.dims.v[2].lit, 1);
  inv = (d9_op_inv){.arena = a, .nin = 1};
  assert_int_equal(st[1].def->invert(&st[1], &inv), 0);
  assert_true(inv.args.mul == 0.25 && inv.args.add == -0.25);
  inv = (d9_op_inv){.arena = a, .nin = 1};
  assert_int_equal(st[2].def->invert(&st[2], &inv), 0);
  assert_string_equal(inv.args.rows.expr, "v");
  assert_string_equal(inv.args.from_rows.expr, "v + 8");
  inv = (d9_op_inv){.arena = a, .nin = 1};
  assert_int_equal(st[3].def->invert(&st[3], &inv), 0);
  assert_int_equal(inv.args.to, D9_F32);
  assert_int_equal(inv.args.from, D9_BF16);
  inv = (d9_op_inv){.arena = a, .nin = 1};
  assert_int_equal(st[4].def->invert(&st[4], &inv), 0);
  assert_int_equal(inv.args.word, 1); /* interleaved */
  d9_arena_destroy(a);
  d9_spec_destroy(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_params_resolve),
      cmocka_unit_test(test_params_order_and_shadowing),
      cmocka_unit_test(test_lookup_table),
      cmocka_unit_test(test_lookup_empty_component),
      cmocka_unit_test(test_spec_int_table),
      cmocka_unit_test(test_params_errors),
      cmocka_unit_test(test_params_error_without_diag),
      cmocka_unit_test(test_spec_parse_table),
      cmocka_unit_test(test_spec_negative_size_string),
      cmocka_unit_test(test_spec_parsed_values),
      cmocka_unit_test(test_step_args_refused_at_parse),
      cmocka_unit_test(test_step_args_decoded),
      cmocka_unit_test(test_step_inverses),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
