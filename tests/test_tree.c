/* test_tree.c - the virtual tree of a mount (mapper/tree.c, render.c and
 * d9_mount_check_mountpoint), in-process, without FUSE.
 *
 *   modes      each file's mode and owner against its sources' stat,
 *              worked out here from the source index and the output index
 *              (not from the tree): the read bits common to the shards
 *              behind it, the owner of the first; config.json its own;
 *              directories the source directory's read and search bits
 *   names      a copied source file named ranks beside tp=2: -EEXIST,
 *              both origins named; without it the mount opens
 *   sizes      .d9dfs/stats.json and report.json: the node's size equals
 *              the rendered length before and after reads and after the
 *              front end's note changes
 *   mountpoint the source directory, inside it, above it: -EINVAL naming
 *              both paths; beside it: 0
 * The cases that change owners run as root only; the mode cases run for
 * any user.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "testutil.h"

#define SPEC_DIR D9DFS_SOURCE_DIR "/mounts"

static char *gen_llama(int shards) {
  char *dir = tu_tmpdir();
  d9_gen_params p;
  d9_diag diag = {0};
  d9_gen_defaults(&p, "llama");
  p.shards = shards;
  p.seed = 11;
  if (d9_gen_write(dir, &p, &diag)) fail_msg("gen: %s", diag.msg);
  return dir;
}

static cJSON *read_json(const char *path) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  static char buf[1 << 20];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  cJSON *j = cJSON_Parse(buf);
  assert_non_null(j);
  return j;
}

/* The source shard file of tensor `name`, from SRC's own index. */
static const char *src_shard(cJSON *src_index, const char *name) {
  cJSON *s = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItem(src_index, "weight_map"), name);
  assert_true(cJSON_IsString(s));
  return s->valuestring;
}

static struct stat stat_in(const char *dir, const char *name) {
  char path[PATH_MAX];
  struct stat st;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  assert_int_equal(stat(path, &st), 0);
  return st;
}

static void chmod_in(const char *dir, const char *name, mode_t mode) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  assert_int_equal(chmod(path, mode), 0);
}

/* One tensor per output file: each file's mode and owner are its shard's. */
static void test_modes_per_file(void **state) {
  (void)state;
  char *dir = gen_llama(2);
  const char *s1 = "model-00001-of-00002.safetensors", *s2 = "model-00002-of-00002.safetensors";
  chmod_in(dir, s1, 0600);
  chmod_in(dir, s2, 0640);
  chmod_in(dir, "config.json", 0604);
  int root = geteuid() == 0;
  if (root) { /* a second owner, so that "the first source's owner" is seen */
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, s2);
    assert_int_equal(chown(path, 12345, 23456), 0);
  }
  chmod(dir, 0751);
  d9_mount_opts o = {.src_dir = dir, .spec_path = SPEC_DIR "/identity.json",
                     .max_shard_size = 1};
  d9_mount *m = tu_mount(&o);
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
  cJSON *src_index = read_json(path);
  /* the output index, read through the mount */
  int ii = d9_mount_resolve(m, "model.safetensors.index.json");
  assert_true(ii > 0);
  uint64_t len = 0;
  unsigned char *text = tu_read_node(m, ii, &len);
  assert_non_null(text);
  cJSON *out_index = cJSON_ParseWithLength((const char *)text, len);
  free(text);
  assert_non_null(out_index);
  int nfiles = 0, n1 = 0, n2 = 0;
  cJSON *e;
  cJSON_ArrayForEach(e, cJSON_GetObjectItem(out_index, "weight_map")) {
    int idx = d9_mount_resolve(m, e->valuestring);
    assert_true(idx > 0);
    const d9_vnode *v = d9_mount_node(m, idx);
    const char *sh = src_shard(src_index, e->string);
    struct stat st = stat_in(dir, sh);
    assert_int_equal(v->mode, st.st_mode & 0444);
    assert_int_equal(v->uid, st.st_uid);
    assert_int_equal(v->gid, st.st_gid);
    nfiles++;
    if (!strcmp(sh, s1)) n1++; else n2++;
  }
  assert_true(n1 > 0 && n2 > 0 && nfiles == n1 + n2);
  /* the index names every shard's tensors: the common bits, 0400 */
  assert_int_equal(d9_mount_node(m, ii)->mode, 0444 & 0600 & 0640);
  const d9_vnode *cfg = d9_mount_node(m, d9_mount_resolve(m, "config.json"));
  struct stat cst = stat_in(dir, "config.json");
  assert_int_equal(cfg->mode, 0404);
  assert_int_equal(cfg->uid, cst.st_uid);
  struct stat dst = stat_in(dir, ".");
  const char *dirs[] = {"", ".d9dfs"};
  for (int i = 0; i < 2; i++) {
    const d9_vnode *v = d9_mount_node(m, d9_mount_resolve(m, dirs[i]));
    assert_int_equal(v->kind, D9_NODE_DIR);
    assert_int_equal(v->mode, 0551);
    assert_int_equal(v->uid, dst.st_uid);
  }
  assert_int_equal(d9_mount_node(m, d9_mount_resolve(m, ".d9dfs/stats.json"))->mode, 0440);
  cJSON_Delete(src_index);
  cJSON_Delete(out_index);
  d9_mount_close(m);
  tu_rmrf(dir);
  free(dir);
}

/* One output file from both shards: the common read bits, the owner of
 * the shard of its first tensor. */
static void test_modes_mixed(void **state) {
  (void)state;
  char *dir = gen_llama(2);
  const char *s1 = "model-00001-of-00002.safetensors", *s2 = "model-00002-of-00002.safetensors";
  chmod_in(dir, s1, 0644);
  chmod_in(dir, s2, 0640);
  if (geteuid() == 0) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, s1);
    assert_int_equal(chown(path, 12345, 23456), 0);
  }
  d9_mount_opts o = {.src_dir = dir, .spec_path = SPEC_DIR "/identity.json"};
  d9_mount *m = tu_mount(&o);
  int idx = d9_mount_resolve(m, "model.safetensors");
  assert_true(idx > 0);
  const d9_vnode *v = d9_mount_node(m, idx);
  assert_int_equal(v->mode, 0440);
  /* its first tensor, from the file's own header */
  uint64_t len = 0;
  unsigned char *file = tu_read_node(m, idx, &len);
  assert_non_null(file);
  d9_arena *a = d9_arena_create();
  d9_st_header h;
  uint64_t hl;
  assert_int_equal(d9_st_header_len(file, len, "mem", &hl, NULL), 0);
  assert_int_equal(d9_st_parse((const char *)file + 8, hl, len, "mem", a, &h, NULL), 0);
  const char *first = h.tensors[0].name;
  for (int i = 1; i < h.ntensors; i++)
    if (h.tensors[i].begin < h.tensors[0].begin) first = h.tensors[i].name; /* file order */
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
  cJSON *src_index = read_json(path);
  struct stat st = stat_in(dir, src_shard(src_index, first));
  assert_int_equal(v->uid, st.st_uid);
  assert_int_equal(v->gid, st.st_gid);
  cJSON_Delete(src_index);
  d9_arena_destroy(a);
  free(file);
  d9_mount_close(m);
  tu_rmrf(dir);
  free(dir);
}

static void test_names(void **state) {
  (void)state;
  char *dir = gen_llama(1);
  cJSON *spec = read_json(SPEC_DIR "/llama-to-megatron.json");
  cJSON *out = cJSON_AddObjectToObject(spec, "output");
  cJSON_AddItemToObject(out, "copy", cJSON_CreateStringArray((const char *[]){"*"}, 1));
  char *text = cJSON_Print(spec);
  cJSON_Delete(spec);
  char spec_path[PATH_MAX];
  snprintf(spec_path, sizeof spec_path, "%s.spec.json", dir);
  tu_write(spec_path, text);
  free(text);
  d9_mount_opts o = {.src_dir = dir, .spec_path = spec_path, .tp = 2};
  d9_mount *m = tu_mount(&o);
  assert_true(d9_mount_resolve(m, "ranks/tp0/model.safetensors") > 0);
  d9_mount_close(m);
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/ranks", dir);
  tu_write(path, "a source file named like the rank views\n");
  d9_diag diag = {0};
  m = NULL;
  assert_int_equal(d9_mount_open(&o, &m, &diag), -EEXIST);
  assert_null(m);
  assert_non_null(strstr(diag.msg, "two entries named 'ranks'"));
  assert_non_null(strstr(diag.msg, "\"copy\""));
  assert_non_null(strstr(diag.msg, "rank views"));
  /* without the rank views the file is simply copied */
  o.tp = 0;
  m = tu_mount(&o);
  int idx = d9_mount_resolve(m, "ranks");
  assert_true(idx > 0);
  assert_int_equal(d9_mount_node(m, idx)->kind, D9_NODE_FILE);
  d9_mount_close(m);
  unlink(spec_path);
  tu_rmrf(dir);
  free(dir);
}

/* The node's size equals the rendering's length. */
static void expect_rendered_size(d9_mount *m, const char *name, char **text) {
  int idx = d9_mount_resolve(m, name);
  assert_true(idx > 0);
  size_t len;
  assert_int_equal(d9_mount_render(m, idx, text, &len), 0);
  assert_int_equal(d9_mount_node(m, idx)->size, len);
  assert_int_equal(strlen(*text), len);
  cJSON *j = cJSON_ParseWithLength(*text, len); /* trailing padding is whitespace */
  assert_non_null(j);
  cJSON_Delete(j);
}

static void test_dynamic_sizes(void **state) {
  (void)state;
  char *dir = gen_llama(1);
  d9_mount_opts o = {.src_dir = dir, .spec_path = SPEC_DIR "/llama-to-megatron.json"};
  d9_mount *m = tu_mount(&o);
  char *a, *b, *c, *r;
  expect_rendered_size(m, ".d9dfs/stats.json", &a);
  expect_rendered_size(m, ".d9dfs/report.json", &r);
  int idx = d9_mount_resolve(m, "model.safetensors");
  uint64_t len = 0;
  free(tu_read_node(m, idx, &len));
  expect_rendered_size(m, ".d9dfs/stats.json", &b);
  assert_string_not_equal(a, b); /* the counters moved, the size did not */
  assert_int_equal(d9_mount_set_frontend(m, "\"direct_io\": true, \"splice\": false, "
                                            "\"max_read\": 1048576"), 0);
  expect_rendered_size(m, ".d9dfs/stats.json", &c);
  assert_non_null(strstr(c, "\"max_read\": 1048576"));
  free(a), free(b), free(c), free(r);
  d9_mount_close(m);
  tu_rmrf(dir);
  free(dir);
}

static void test_mountpoint(void **state) {
  (void)state;
  char *top = tu_tmpdir(), src[PATH_MAX], real[PATH_MAX], sub[PATH_MAX + 8],
       beside[PATH_MAX + 8], up[PATH_MAX];
  snprintf(src, sizeof src, "%s/src", top);
  d9_gen_params p;
  d9_diag diag = {0};
  d9_gen_defaults(&p, "llama");
  if (d9_gen_write(src, &p, &diag)) fail_msg("gen: %s", diag.msg);
  assert_non_null(realpath(src, real));
  assert_non_null(realpath(top, up));
  snprintf(sub, sizeof sub, "%s/sub", real);
  snprintf(beside, sizeof beside, "%s/mnt", up);
  d9_mount_opts o = {.src_dir = src, .spec_path = SPEC_DIR "/identity.json"};
  d9_mount *m = tu_mount(&o);
  const char *bad[] = {real, sub, up, "/"};
  for (int i = 0; i < 4; i++) {
    d9_diag d = {0};
    assert_int_equal(d9_mount_check_mountpoint(m, bad[i], &d), -EINVAL);
    assert_non_null(strstr(d.msg, real));
    assert_non_null(strstr(d.msg, bad[i]));
  }
  assert_int_equal(d9_mount_check_mountpoint(m, beside, &diag), 0);
  char prefix[PATH_MAX + 8]; /* a sibling whose name starts like the source's */
  snprintf(prefix, sizeof prefix, "%s2", real);
  assert_int_equal(d9_mount_check_mountpoint(m, prefix, &diag), 0);
  d9_mount_close(m);
  tu_rmrf(top);
  free(top);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_modes_per_file),
      cmocka_unit_test(test_modes_mixed),
      cmocka_unit_test(test_names),
      cmocka_unit_test(test_dynamic_sizes),
      cmocka_unit_test(test_mountpoint),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
