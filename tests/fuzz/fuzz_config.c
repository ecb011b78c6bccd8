/* fuzz_config.c - libFuzzer target for the config patch and its undo
 * (mapper/config_patch.h: d9_spec_apply_config, d9_spec_undo_config).
 *
 * Input: the bytes of a config.json. The undo runs on them as they are (a
 * converted tree's config.json, whose _d9dfs_config_patch record may be
 * anything); then, when the strict JSON parser accepts them as an object
 * (as the catalog does at mount), each of a few fixed spec patches is
 * applied and undone.
 *
 * Properties, besides no crash and no sanitizer report: the undo of
 * arbitrary text returns 1, 0 or -EINVAL, never reads past the text; a
 * patched text is strict JSON (no duplicate key) and holds every member the
 * patch did not touch with the same value; its undo gives the input back
 * byte for byte.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapper/catalog.h"
#include "mapper/config_patch.h"
#include "mapper/json_strict.h"
#include "mapper/spec.h"
#include "mapper/st_header.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                 \
  do {                                                                           \
    if (!(c)) {                                                                  \
      fprintf(stderr, "fuzz_config: property failed: %s (line %d)\n", #c, __LINE__); \
      abort();                                                                   \
    }                                                                            \
  } while (0)

static const char *const patches[] = {
    "{\"d9dfs_spec\": 1, \"config\": {\"delete\": [\"quantization_config\", \"a\"], "
    "\"set\": {\"torch_dtype\": \"bfloat16\"}}}",
    "{\"d9dfs_spec\": 1, \"config\": {\"set\": {\"a\": [1, {\"b\": null}], \"n\": 1.5, "
    "\"dtype\": \"float16\"}}}",
    "{\"d9dfs_spec\": 1, \"config\": {\"delete\": [\"_d9dfs_config_patch\", \"b\"], "
    "\"set\": {\"b\": 2}}}",
};

/* 1 if key is deleted and not set by the patch. */
static int deleted(const d9_spec *s, const char *key) {
  if (cJSON_GetObjectItemCaseSensitive(s->config_set, key)) return 0;
  if (!strcmp(key, D9_CONFIG_UNDO_KEY)) return 1;
  for (int i = 0; i < s->nconfig_delete; i++)
    if (!strcmp(s->config_delete[i], key)) return 1;
  return 0;
}

static int touched(const d9_spec *s, const char *key) {
  return deleted(s, key) || cJSON_GetObjectItemCaseSensitive(s->config_set, key) ||
         !strcmp(key, "torch_dtype") || !strcmp(key, "dtype");
}

/* Same JSON value (printed alike: cJSON_Compare fails on 1e999 == 1e999). */
static int same(const cJSON *a, const cJSON *b) {
  char *x = cJSON_PrintUnformatted(a), *y = cJSON_PrintUnformatted(b);
  int eq = x && y && !strcmp(x, y);
  cJSON_free(x);
  cJSON_free(y);
  return eq;
}

static void one_patch(const char *spec, const char *text, size_t size, cJSON *config) {
  d9_spec *s = NULL;
  CHECK(d9_spec_parse(spec, strlen(spec), "fuzz.json", &s, NULL) == 0);
  d9_catalog c = {0};
  c.config_text = (char *)text;
  c.config_len = size;
  c.config = config;
  char *out = NULL, *back = NULL;
  size_t len, blen;
  d9_diag diag = {0};
  CHECK(d9_spec_apply_config(s, &c, &out, &len, &diag) == 0);
  CHECK(strlen(out) == len);
  cJSON *p = d9_json_parse(out, len, D9_JSON_MAX_DEPTH + 2, 0, "patched", &diag);
  CHECK(p != NULL);
  const cJSON *e;
  cJSON_ArrayForEach(e, config) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(p, e->string);
    if (!touched(s, e->string)) CHECK(v && same(v, e));
    if (deleted(s, e->string)) CHECK(!v || !strcmp(e->string, D9_CONFIG_UNDO_KEY));
  }
  CHECK(d9_spec_undo_config(out, len, &back, &blen) == 1);
  CHECK(blen == size && !memcmp(back, text, size));
  cJSON_Delete(p);
  free(out);
  free(back);
  d9_spec_destroy(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *text = (const char *)data;
  char *back = NULL;
  size_t blen;
  int rc = d9_spec_undo_config(text, size, &back, &blen);
  CHECK(rc == 1 || rc == 0 || rc == -EINVAL || rc == -ENOMEM);
  CHECK(rc == 1 ? back != NULL : back == NULL);
  free(back);
  cJSON *config = d9_json_parse(text, size, D9_JSON_MAX_DEPTH, 0, "config.json", NULL);
  if (!cJSON_IsObject(config)) {
    cJSON_Delete(config);
    return 0;
  }
  /* the patch needs a NUL-terminated text, as the catalog keeps it */
  char *t = malloc(size + 1);
  CHECK(t != NULL);
  memcpy(t, data, size);
  t[size] = 0;
  for (size_t i = 0; i < sizeof patches / sizeof *patches; i++) one_patch(patches[i], t, size, config);
  free(t);
  cJSON_Delete(config);
  return 0;
}
