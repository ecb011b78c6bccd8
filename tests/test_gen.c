/* test_gen.c - the synthetic checkpoint generator (tools/gen.c).
 *
 * Each test generates into a fresh mkdtemp directory, re-reads every shard
 * with the strict safetensors parser and checks names, shapes, dtypes and
 * order against an independent expectation per family, the index, the
 * config and the values. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "mapper/json_strict.h"
#include "mapper/st_header.h"
#include "tools/gen.h"

/* ---- scratch directories ---- */

static void rm_tree(const char *path) {
  DIR *d = opendir(path);
  if (!d) {
    unlink(path);
    return;
  }
  struct dirent *e;
  char sub[1024];
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
    rm_tree(sub);
  }
  closedir(d);
  rmdir(path);
}

typedef struct scratch {
  char root[64];  /* mkdtemp'd */
  char dir[128];  /* root/a/b/: created, parents and all, by the generator */
} scratch;

static void scratch_make(scratch *s) {
  strcpy(s->root, "/tmp/d9gen-test-XXXXXX");
  assert_non_null(mkdtemp(s->root));
  snprintf(s->dir, sizeof s->dir, "%s/a/b/", s->root);
}

/* ---- reading a checkpoint back ---- */

typedef struct rt {
  char name[160];
  char file[64];
  d9_dtype dtype;
  int ndim;
  int64_t shape[D9_MAX_DIMS];
  uint64_t off;     /* file offset of the data, bytes */
  uint64_t nbytes;
} rt;

typedef struct ckpt {
  char dir[128];
  rt *t;
  int n;
} ckpt;

static void shard_name(char *out, size_t n, int k, int ns) {
  if (ns == 1) snprintf(out, n, "model.safetensors");
  else snprintf(out, n, "model-%05d-of-%05d.safetensors", k + 1, ns);
}

/* dir/name, NUL-terminated, or NULL if it does not exist. */
static char *slurp(const char *dir, const char *name, size_t *len) {
  char path[256], *b = NULL;
  size_t n;
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (access(path, F_OK) != 0) return NULL;
  assert_int_equal(d9_read_small_file(AT_FDCWD, path, 1 << 26, &b, &n, NULL), 0);
  if (len) *len = n;
  return b;
}

/* Parse every shard strictly; each must hold at least one tensor. */
static void load(ckpt *c, const char *dir, int shards) {
  memset(c, 0, sizeof *c);
  snprintf(c->dir, sizeof c->dir, "%s", dir);
  for (int k = 0; k < shards; k++) {
    char fname[64], path[256];
    shard_name(fname, sizeof fname, k, shards);
    snprintf(path, sizeof path, "%s/%s", dir, fname);
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    unsigned char prefix[8];
    assert_int_equal(pread(fd, prefix, 8, 0), 8);
    uint64_t hlen;
    d9_diag diag = {0};
    assert_int_equal(d9_st_header_len(prefix, (uint64_t)st.st_size, fname, &hlen,
                                      &diag), 0);
    assert_int_equal(hlen % 8, 0);
    char *json = malloc(hlen);
    assert_non_null(json);
    assert_int_equal(pread(fd, json, hlen, 8), (ssize_t)hlen);
    close(fd);
    d9_arena *a = d9_arena_create();
    d9_st_header h;
    int rc = d9_st_parse(json, hlen, (uint64_t)st.st_size, fname, a, &h, &diag);
    if (rc) fprintf(stderr, "parse: %s\n", diag.msg);
    assert_int_equal(rc, 0);
    assert_true(h.ntensors > 0);
    c->t = realloc(c->t, (size_t)(c->n + h.ntensors) * sizeof *c->t);
    assert_non_null(c->t);
    for (int i = 0; i < h.ntensors; i++) {
      rt *t = &c->t[c->n++];
      const d9_st_tensor *s = &h.tensors[i];
      assert_true(strlen(s->name) < sizeof t->name);
      strcpy(t->name, s->name);
      strcpy(t->file, fname);
      t->dtype = s->dtype;
      t->ndim = s->ndim;
      memcpy(t->shape, s->shape, sizeof t->shape);
      t->off = h.data_start + s->begin;
      t->nbytes = s->end - s->begin;
    }
    d9_arena_destroy(a);
    free(json);
  }
}

static const rt *find(const ckpt *c, const char *name) {
  for (int i = 0; i < c->n; i++)
    if (!strcmp(c->t[i].name, name)) return &c->t[i];
  return NULL;
}

static unsigned char *data_of(const ckpt *c, const rt *t) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", c->dir, t->file);
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  unsigned char *b = malloc(t->nbytes ? t->nbytes : 1);
  assert_non_null(b);
  assert_int_equal(pread(fd, b, t->nbytes, (off_t)t->off), (ssize_t)t->nbytes);
  close(fd);
  return b;
}

static float elem(const unsigned char *b, d9_dtype dt, uint64_t i) {
  switch (dt) {
  case D9_F32: {
    uint32_t u = (uint32_t)b[4 * i] | (uint32_t)b[4 * i + 1] << 8 |
                 (uint32_t)b[4 * i + 2] << 16 | (uint32_t)b[4 * i + 3] << 24;
    float f;
    memcpy(&f, &u, 4);
    return f;
  }
  case D9_F16: return d9_f16_to_f32((uint16_t)(b[2 * i] | b[2 * i + 1] << 8));
  case D9_BF16: return d9_bf16_to_f32((uint16_t)(b[2 * i] | b[2 * i + 1] << 8));
  case D9_F8_E4M3: return d9_e4m3_to_f32(b[i]);
  default: fail(); return 0;
  }
}

/* All values of tensor `name` lie in [lo, hi]; they are not all equal. */
static void check_range(const ckpt *c, const char *name, float lo, float hi) {
  const rt *t = find(c, name);
  assert_non_null(t);
  unsigned char *b = data_of(c, t);
  uint64_t n = t->nbytes / d9_dtype_size(t->dtype);
  float first = elem(b, t->dtype, 0);
  int varied = 0;
  for (uint64_t i = 0; i < n; i++) {
    float f = elem(b, t->dtype, i);
    if (!(f >= lo && f <= hi)) fail_msg("%s[%llu] = %g", name, (unsigned long long)i, f);
    varied |= f != first;
  }
  assert_true(varied);
  free(b);
}

/* ---- the expectation, built independently of gen.c ---- */

typedef struct expect {
  struct { char name[160]; d9_dtype dt; int ndim; int64_t s0, s1; } v[512];
  int n;
} expect;

static void ex(expect *e, d9_dtype dt, int64_t s0, int64_t s1, const char *fmt, ...) {
  assert_true(e->n < 512);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->v[e->n].name, sizeof e->v[0].name, fmt, ap);
  va_end(ap);
  e->v[e->n].dt = dt;
  e->v[e->n].ndim = s1 ? 2 : 1;
  e->v[e->n].s0 = s0;
  e->v[e->n].s1 = s1;
  e->n++;
}

/* The family defaults for bias and tie_word_embeddings, as gen.h states. */
static int want_bias(const d9_gen_params *p) {
  return p->bias >= 0 ? p->bias : p->family == D9_GEN_QWEN2 || p->family == D9_GEN_GPT_OSS;
}
static int want_tied(const d9_gen_params *p) {
  return p->tied >= 0 ? p->tied
                      : p->family == D9_GEN_QWEN2 || p->family == D9_GEN_GEMMA;
}

/* An F32 scale for each F8 weight listed so far, in order. */
static void ex_scales(expect *e, int64_t b) {
  int nw = e->n;
  for (int i = 0; i < nw; i++)
    if (e->v[i].dt == D9_F8_E4M3)
      ex(e, D9_F32, (e->v[i].s0 + b - 1) / b, (e->v[i].s1 + b - 1) / b, "%s_scale_inv",
         e->v[i].name);
}

/* phi3: fused qkv_proj [(nh+2ng)d, H] and gate_up_proj [2I, H]. */
static void expected_phi3(const d9_gen_params *p, expect *e) {
  int64_t H = p->hidden, I = p->intermediate, d = p->head_dim ? p->head_dim : H / p->heads;
  d9_dtype m = p->dtype;
  e->n = 0;
  ex(e, m, p->vocab, H, "model.embed_tokens.weight");
  for (int i = 0; i < p->layers; i++) {
    ex(e, m, H, 0, "model.layers.%d.input_layernorm.weight", i);
    ex(e, m, (p->heads + 2 * p->kv_heads) * d, H, "model.layers.%d.self_attn.qkv_proj.weight", i);
    ex(e, m, H, p->heads * d, "model.layers.%d.self_attn.o_proj.weight", i);
    ex(e, m, H, 0, "model.layers.%d.post_attention_layernorm.weight", i);
    ex(e, m, 2 * I, H, "model.layers.%d.mlp.gate_up_proj.weight", i);
    ex(e, m, H, I, "model.layers.%d.mlp.down_proj.weight", i);
  }
  ex(e, m, H, 0, "model.norm.weight");
  if (!want_tied(p)) ex(e, m, p->vocab, H, "lm_head.weight");
}

/* deepseek_v3's MLA sizes, as gen.h derives them. */
typedef struct mla { int64_t nope, rope, v, ql, kvl, mi; } mla;
static mla mla_want(const d9_gen_params *p) {
  int64_t d = p->head_dim ? p->head_dim : p->hidden / p->heads;
  mla x = {d, d / 2 ? d / 2 : 1, d, 3 * p->hidden / 4 ? 3 * p->hidden / 4 : 1,
           p->hidden / 2 ? p->hidden / 2 : 1, p->intermediate / 2 ? p->intermediate / 2 : 1};
  return x;
}

/* deepseek_v3: MLA attention, layer 0 dense, the others MoE with a shared
 * expert; F8 linears with their scales last. */
static void expected_mla(const d9_gen_params *p, expect *e) {
  mla x = mla_want(p);
  int64_t H = p->hidden, I = p->intermediate, nh = p->heads;
  d9_dtype m = p->dtype, f8 = D9_F8_E4M3;
  const char *pr[3] = {"gate", "up", "down"};
  e->n = 0;
  ex(e, m, p->vocab, H, "model.embed_tokens.weight");
  for (int i = 0; i < p->layers; i++) {
    ex(e, m, H, 0, "model.layers.%d.input_layernorm.weight", i);
    ex(e, f8, x.ql, H, "model.layers.%d.self_attn.q_a_proj.weight", i);
    ex(e, m, x.ql, 0, "model.layers.%d.self_attn.q_a_layernorm.weight", i);
    ex(e, f8, nh * (x.nope + x.rope), x.ql, "model.layers.%d.self_attn.q_b_proj.weight", i);
    ex(e, f8, x.kvl + x.rope, H, "model.layers.%d.self_attn.kv_a_proj_with_mqa.weight", i);
    ex(e, m, x.kvl, 0, "model.layers.%d.self_attn.kv_a_layernorm.weight", i);
    ex(e, f8, nh * (x.nope + x.v), x.kvl, "model.layers.%d.self_attn.kv_b_proj.weight", i);
    ex(e, f8, H, nh * x.v, "model.layers.%d.self_attn.o_proj.weight", i);
    ex(e, m, H, 0, "model.layers.%d.post_attention_layernorm.weight", i);
    if (i == 0) {
      for (int j = 0; j < 3; j++)
        ex(e, f8, j < 2 ? I : H, j < 2 ? H : I, "model.layers.0.mlp.%s_proj.weight", pr[j]);
      continue;
    }
    ex(e, m, p->experts, H, "model.layers.%d.mlp.gate.weight", i);
    ex(e, D9_F32, p->experts, 0, "model.layers.%d.mlp.gate.e_score_correction_bias", i);
    for (int k = 0; k < p->experts; k++)
      for (int j = 0; j < 3; j++)
        ex(e, f8, j < 2 ? x.mi : H, j < 2 ? H : x.mi, "model.layers.%d.mlp.experts.%d.%s_proj.weight",
           i, k, pr[j]);
    for (int j = 0; j < 3; j++)
      ex(e, f8, j < 2 ? x.mi : H, j < 2 ? H : x.mi, "model.layers.%d.mlp.shared_experts.%s_proj.weight",
         i, pr[j]);
  }
  ex(e, m, H, 0, "model.norm.weight");
  if (!want_tied(p)) ex(e, m, p->vocab, H, "lm_head.weight");
  ex_scales(e, p->block);
}

static void expected(const d9_gen_params *p, expect *e) {
  if (p->family == D9_GEN_PHI3) return expected_phi3(p, e);
  if (p->family == D9_GEN_DEEPSEEK_V3) return expected_mla(p, e);
  int f = p->family, fp8 = f == D9_GEN_DEEPSEEK_FP8;
  int bias = want_bias(p), tied = want_tied(p);
  int64_t H = p->hidden, I = p->intermediate, d = p->head_dim ? p->head_dim : H / p->heads;
  int64_t q = p->heads * d, kv = p->kv_heads * d, b = p->block;
  d9_dtype m = p->dtype, lin = fp8 ? D9_F8_E4M3 : m;
  e->n = 0;
  ex(e, m, p->vocab, H, "model.embed_tokens.weight");
  for (int i = 0; i < p->layers; i++) {
    ex(e, m, H, 0, "model.layers.%d.input_layernorm.weight", i);
    const char *pr[3] = {"q", "k", "v"};
    for (int j = 0; j < 3; j++) {
      ex(e, lin, j ? kv : q, H, "model.layers.%d.self_attn.%s_proj.weight", i, pr[j]);
      if (bias) ex(e, m, j ? kv : q, 0, "model.layers.%d.self_attn.%s_proj.bias", i, pr[j]);
    }
    ex(e, lin, H, q, "model.layers.%d.self_attn.o_proj.weight", i);
    if (f == D9_GEN_QWEN3_MOE || f == D9_GEN_QWEN3) {
      ex(e, m, d, 0, "model.layers.%d.self_attn.q_norm.weight", i);
      ex(e, m, d, 0, "model.layers.%d.self_attn.k_norm.weight", i);
    }
    ex(e, m, H, 0, "model.layers.%d.post_attention_layernorm.weight", i);
    if (f == D9_GEN_MIXTRAL) {
      ex(e, m, p->experts, H, "model.layers.%d.block_sparse_moe.gate.weight", i);
      for (int x = 0; x < p->experts; x++) {
        ex(e, m, I, H, "model.layers.%d.block_sparse_moe.experts.%d.w1.weight", i, x);
        ex(e, m, I, H, "model.layers.%d.block_sparse_moe.experts.%d.w3.weight", i, x);
        ex(e, m, H, I, "model.layers.%d.block_sparse_moe.experts.%d.w2.weight", i, x);
      }
    } else if (f == D9_GEN_QWEN3_MOE) {
      ex(e, m, p->experts, H, "model.layers.%d.mlp.gate.weight", i);
      for (int x = 0; x < p->experts; x++) {
        ex(e, m, I, H, "model.layers.%d.mlp.experts.%d.gate_proj.weight", i, x);
        ex(e, m, I, H, "model.layers.%d.mlp.experts.%d.up_proj.weight", i, x);
        ex(e, m, H, I, "model.layers.%d.mlp.experts.%d.down_proj.weight", i, x);
      }
    } else {
      ex(e, lin, I, H, "model.layers.%d.mlp.gate_proj.weight", i);
      ex(e, lin, I, H, "model.layers.%d.mlp.up_proj.weight", i);
      ex(e, lin, H, I, "model.layers.%d.mlp.down_proj.weight", i);
    }
  }
  ex(e, m, H, 0, "model.norm.weight");
  if (!tied) ex(e, m, p->vocab, H, "lm_head.weight");
  if (fp8) {
    int nw = e->n;
    for (int i = 0; i < nw; i++)
      if (e->v[i].dt == D9_F8_E4M3)
        ex(e, D9_F32, (e->v[i].s0 + b - 1) / b, (e->v[i].s1 + b - 1) / b,
           "%s_scale_inv", e->v[i].name);
  }
}

/* Names, order, dtypes and shapes; the index; the file set. */
static void check_layout(const ckpt *c, const d9_gen_params *p) {
  expect *ep = calloc(1, sizeof *ep);
  assert_non_null(ep);
  expected(p, ep);
  assert_int_equal(c->n, ep->n);
  uint64_t total = 0;
  for (int i = 0; i < ep->n; i++) {
    const rt *t = &c->t[i];
    assert_string_equal(t->name, ep->v[i].name);
    assert_int_equal(t->dtype, ep->v[i].dt);
    assert_int_equal(t->ndim, ep->v[i].ndim);
    assert_int_equal(t->shape[0], ep->v[i].s0);
    if (t->ndim == 2) assert_int_equal(t->shape[1], ep->v[i].s1);
    total += t->nbytes;
  }
  int ntensors = 0;
  uint64_t bytes = 0;
  assert_int_equal(d9_gen_count(p, &ntensors, &bytes, NULL), 0);
  assert_int_equal(ntensors, ep->n);
  assert_int_equal(bytes, total);

  size_t len;
  char *idx = slurp(c->dir, "model.safetensors.index.json", &len);
  int nfiles = p->shards + 4 - (p->shards == 1);
  if (p->shards == 1) {
    assert_null(idx);
  } else {
    assert_non_null(idx);
    cJSON *j = cJSON_Parse(idx);
    assert_non_null(j);
    cJSON *ts = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(j, "metadata"), "total_size");
    assert_true(cJSON_IsNumber(ts));
    assert_true(ts->valuedouble == (double)total);
    cJSON *wm = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    assert_int_equal(cJSON_GetArraySize(wm), ep->n);
    for (int i = 0; i < c->n; i++) {
      cJSON *f = cJSON_GetObjectItemCaseSensitive(wm, c->t[i].name);
      assert_true(cJSON_IsString(f));
      assert_string_equal(f->valuestring, c->t[i].file);
    }
    int seen = 0;  /* every weight_map key is a tensor: with the count, once each */
    cJSON *it;
    cJSON_ArrayForEach(it, wm) seen += find(c, it->string) != NULL;
    assert_int_equal(seen, ep->n);
    cJSON_Delete(j);
  }
  free(idx);
  /* nothing but the expected files: no temporaries left behind */
  DIR *d = opendir(c->dir);
  assert_non_null(d);
  struct dirent *de;
  int n = 0;
  while ((de = readdir(d))) n += de->d_name[0] != '.';
  closedir(d);
  assert_int_equal(n, nfiles);
  char *tok = slurp(c->dir, "tokenizer_config.json", NULL);
  char *gen = slurp(c->dir, "generation_config.json", NULL);
  cJSON *jt = cJSON_Parse(tok), *jg = cJSON_Parse(gen);
  assert_true(cJSON_IsObject(jt) && cJSON_IsObject(jg));
  cJSON_Delete(jt);
  cJSON_Delete(jg);
  free(tok);
  free(gen);
  free(ep);
}

static cJSON *config(const ckpt *c) {
  char *s = slurp(c->dir, "config.json", NULL);
  assert_non_null(s);
  cJSON *j = cJSON_Parse(s);
  free(s);
  assert_non_null(j);
  return j;
}

static double num(cJSON *j, const char *k) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
  if (!cJSON_IsNumber(v)) fail_msg("config.json: %s missing", k);
  return v->valuedouble;
}

static const char *str(cJSON *j, const char *k) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
  if (!cJSON_IsString(v)) fail_msg("config.json: %s missing", k);
  return v->valuestring;
}

/* The fields every family writes. */
static void check_config(cJSON *j, const d9_gen_params *p) {
  static const char *const mtypes[] = {"llama", "qwen2", "mixtral",
                                       "qwen3_moe", "deepseek_v3", "gemma", "gpt_oss",
                                       "qwen3", "phi3", "deepseek_v3"};
  static const char *const archs[] = {
      "LlamaForCausalLM", "Qwen2ForCausalLM", "MixtralForCausalLM",
      "Qwen3MoeForCausalLM", "DeepseekV3ForCausalLM", "GemmaForCausalLM",
      "GptOssForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM", "DeepseekV3ForCausalLM"};
  const char *mtype = mtypes[p->family], *arch = archs[p->family];
  int tied = want_tied(p);
  assert_string_equal(str(j, "model_type"), mtype);
  cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "architectures");
  assert_int_equal(cJSON_GetArraySize(a), 1);
  assert_string_equal(cJSON_GetArrayItem(a, 0)->valuestring, arch);
  assert_true(num(j, "hidden_size") == p->hidden);
  assert_true(num(j, "intermediate_size") == p->intermediate);
  assert_true(num(j, "num_attention_heads") == p->heads);
  assert_true(num(j, "num_key_value_heads") == p->kv_heads);
  assert_true(num(j, "num_hidden_layers") == p->layers);
  assert_true(num(j, "vocab_size") == p->vocab);
  assert_true(num(j, "rms_norm_eps") == 1e-5);
  assert_true(cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(j, "tie_word_embeddings")));
  assert_int_equal(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "tie_word_embeddings")),
                   tied);
  const char *want = p->dtype == D9_F32 ? "float32"
                     : p->dtype == D9_F16 ? "float16" : "bfloat16";
  assert_string_equal(str(j, "torch_dtype"), want);
  cJSON *hd = cJSON_GetObjectItemCaseSensitive(j, "head_dim");
  if (p->family == D9_GEN_DEEPSEEK_V3)
    assert_null(hd); /* DeepseekV3Config derives it from qk_rope_head_dim */
  else if (p->head_dim)
    assert_true(cJSON_IsNumber(hd) && hd->valuedouble == p->head_dim);
  else
    assert_null(hd);
}

/* One generated checkpoint, parsed back, layout and config checked. */
typedef struct run {
  scratch s;
  ckpt c;
  cJSON *cfg;
} run;

static void gen(scratch *s, const d9_gen_params *p, ckpt *c) {
  d9_diag diag = {0};
  int rc = d9_gen_write(s->dir, p, &diag);
  if (rc) fail_msg("d9_gen_write: %s", diag.msg);
  assert_false(diag.set);
  load(c, s->dir, p->shards);
}

static void run_start(run *r, const d9_gen_params *p) {
  scratch_make(&r->s);
  gen(&r->s, p, &r->c);
  check_layout(&r->c, p);
  r->cfg = config(&r->c);
  check_config(r->cfg, p);
}

static void run_end(run *r) {
  cJSON_Delete(r->cfg);
  free(r->c.t);
  rm_tree(r->s.root);
}

/* ---- tests ---- */

static void test_family_names(void **state) {
  (void)state;
  for (int f = 0; f < D9_GEN_FAMILY_COUNT; f++)
    assert_int_equal(d9_gen_family_parse(d9_gen_family_name(f)), f);
  assert_int_equal(d9_gen_family_parse("deepseek_fp8"), D9_GEN_DEEPSEEK_FP8);
  assert_int_equal(d9_gen_family_parse("Llama"), -1);
  assert_int_equal(d9_gen_family_parse(NULL), -1);
  assert_string_equal(d9_gen_family_name(99), "?");
  d9_gen_params p;
  d9_gen_defaults(&p, NULL);
  assert_int_equal(p.family, D9_GEN_LLAMA);
  assert_int_equal(p.shards, 1);
  assert_int_equal(p.dtype, D9_BF16);
  d9_gen_defaults(&p, "mixtral");
  assert_true(p.experts > 0);
  d9_gen_defaults(&p, "nope");
  assert_int_equal(p.family, -1);
  d9_diag diag = {0};
  assert_int_equal(d9_gen_count(&p, NULL, NULL, &diag), -EINVAL);
  assert_non_null(strstr(diag.msg, "unknown family"));
}

static void test_llama(void **state) {
  (void)state;
  run r;
  d9_gen_params p;
  d9_gen_defaults(&p, "llama");
  run_start(&r, &p);
  check_range(&r.c, "model.layers.0.input_layernorm.weight", 0.89f, 1.11f);
  check_range(&r.c, "model.norm.weight", 0.89f, 1.11f);
  check_range(&r.c, "model.layers.1.self_attn.q_proj.weight", -1.0f, 1.0f);
  /* different tensors get different streams */
  const rt *g = find(&r.c, "model.layers.0.mlp.gate_proj.weight");
  unsigned char *a = data_of(&r.c, g);
  unsigned char *b = data_of(&r.c, find(&r.c, "model.layers.0.mlp.up_proj.weight"));
  assert_memory_not_equal(a, b, g->nbytes);
  free(a);
  free(b);
  run_end(&r);
}

static void test_llama_sharded(void **state) {
  (void)state;
  run r;
  d9_gen_params p;
  d9_gen_defaults(&p, "llama");
  p.layers = 3;
  p.head_dim = 24;  /* nh*d = 96 != H */
  p.kv_heads = 1;
  p.bias = 1;
  p.tied = 0;
  p.dtype = D9_F32;
  p.shards = 3;
  run_start(&r, &p);
  check_range(&r.c, "lm_head.weight", -1.0f, 1.0f);
  check_range(&r.c, "model.layers.2.self_attn.v_proj.bias", -1.0f, 1.0f);
  /* roughly equal: no shard beyond a third plus the largest tensor */
  uint64_t per[3] = {0}, total = 0, big = 0;
  for (int i = 0; i < r.c.n; i++) {
    per[r.c.t[i].file[10] - '1'] += r.c.t[i].nbytes;  /* model-0000K-... */
    total += r.c.t[i].nbytes;
    if (r.c.t[i].nbytes > big) big = r.c.t[i].nbytes;
  }
  for (int k = 0; k < 3; k++) assert_true(per[k] > 0 && per[k] <= total / 3 + big);
  run_end(&r);
}

static void test_qwen2(void **state) {
  (void)state;
  run r;
  d9_gen_params p;
  d9_gen_defaults(&p, "qwen2");
  p.shards = 2;
  run_start(&r, &p);  /* biases on and tied by default */
  assert_non_null(find(&r.c, "model.layers.1.self_attn.k_proj.bias"));
  assert_null(find(&r.c, "lm_head.weight"));
  run_end(&r);
}

static void test_mixtral(void **state) {
  (void)state;
  run r;
  d9_gen_params p;
  d9_gen_defaults(&p, "mixtral");
  p.experts = 3;
  p.shards = 4;
  p.dtype = D9_F16;
  run_start(&r, &p);
  assert_true(num(r.cfg, "num_local_experts") == 3);
  assert_true(num(r.cfg, "num_experts_per_tok") == 2);
  check_range(&r.c, "model.layers.1.block_sparse_moe.experts.2.w2.weight", -1.0f, 1.0f);
  run_end(&r);
}

static void test_qwen3_moe(void **state) {
  (void)state;
  run r;
  d9_gen_params p;
  d9_gen_defaults(&p, "qwen3_moe");
  p.shards = 2;
  run_start(&r, &p);
  assert_true(num(r.cfg, "num_experts") == p.experts);
  assert_true(num(r.cfg, "moe_intermediate_size") == p.intermediate);
  check_range(&r.c, "model.layers.0.self_attn.k_norm.weight", 0.89f, 1.11f);
  run_end(&r);
}

/* Every F8 weight has an F32 scale of ceil-divided shape with values in
 * [1e-3, 1e-1]; some block is ragged; with >= 2 files some weight and its
 * scale are apart. */
static void check_fp8(const ckpt *c, const d9_gen_params *p) {
  int apart = 0, ragged = 0;
  for (int i = 0; i < c->n; i++) {
    const rt *w = &c->t[i];
    if (w->dtype != D9_F8_E4M3) continue;
    char sname[200];
    snprintf(sname, sizeof sname, "%s_scale_inv", w->name);
    const rt *sc = find(c, sname);
    assert_non_null(sc);
    assert_int_equal(sc->dtype, D9_F32);
    assert_int_equal(sc->shape[0], (w->shape[0] + p->block - 1) / p->block);
    assert_int_equal(sc->shape[1], (w->shape[1] + p->block - 1) / p->block);
    apart |= strcmp(w->file, sc->file) != 0;
    ragged |= w->shape[0] % p->block != 0 || w->shape[1] % p->block != 0;
    check_range(c, sname, 1e-3f, 0.1f);
  }
  assert_true(ragged);
  assert_int_equal(apart, p->shards >= 2);
  check_range(c, "model.layers.0.mlp.down_proj.weight", -448.0f, 448.0f);
}

static void test_deepseek_fp8(void **state) {
  (void)state;
  run r;
  d9_gen_params p;
  d9_gen_defaults(&p, "deepseek_fp8");
  p.hidden = 200;
  p.heads = 5;  /* d = 40 */
  p.kv_heads = 1;
  p.intermediate = 300;
  p.block = 64;
  p.shards = 2;
  run_start(&r, &p);
  check_fp8(&r.c, &p);
  assert_int_equal(find(&r.c, "model.embed_tokens.weight")->dtype, D9_BF16);
  cJSON *q = cJSON_GetObjectItemCaseSensitive(r.cfg, "quantization_config");
  assert_string_equal(str(q, "quant_method"), "fp8");
  assert_string_equal(str(q, "fmt"), "e4m3");
  assert_string_equal(str(q, "activation_scheme"), "dynamic");
  cJSON *bs = cJSON_GetObjectItemCaseSensitive(q, "weight_block_size");
  assert_int_equal(cJSON_GetArraySize(bs), 2);
  assert_true(cJSON_GetArrayItem(bs, 0)->valuedouble == 64);
  assert_true(cJSON_GetArrayItem(bs, 1)->valuedouble == 64);
  run_end(&r);
}

/* A huge embedding (tied, so no lm_head) would put every layer in the last
 * file with the scales; some weight must still be apart from its scale. */
static void test_deepseek_fp8_big_embed(void **state) {
  (void)state;
  for (int shards = 1; shards <= 5; shards++) {
    run r;
    d9_gen_params p;
    d9_gen_defaults(&p, "deepseek_fp8");
    p.vocab = 4096;
    p.layers = 1;
    p.block = 48;
    p.tied = 1;
    p.shards = shards;
    run_start(&r, &p);
    check_fp8(&r.c, &p);
    run_end(&r);
  }
}

static void test_qwen3(void **state) {
  (void)state;
  run r;
  d9_gen_params p;
  d9_gen_defaults(&p, "qwen3");
  assert_int_equal(p.head_dim, 32);  /* nh * d = 128 != H = 64 */
  p.shards = 2;
  run_start(&r, &p);  /* q/k norms of head_dim, head_dim in the config */
  check_range(&r.c, "model.layers.1.self_attn.q_norm.weight", 0.89f, 1.11f);
  assert_null(find(&r.c, "model.layers.0.self_attn.q_proj.bias"));
  run_end(&r);
}

static void test_phi3(void **state) {
  (void)state;
  run r;
  d9_gen_params p;
  d9_gen_defaults(&p, "phi3");
  p.heads = 8;
  p.kv_heads = 2;
  p.shards = 3;
  run_start(&r, &p);
  check_range(&r.c, "model.layers.1.self_attn.qkv_proj.weight", -1.0f, 1.0f);
  check_range(&r.c, "model.layers.0.mlp.gate_up_proj.weight", -1.0f, 1.0f);
  run_end(&r);
}

static void test_deepseek_v3(void **state) {
  (void)state;
  run r;
  d9_gen_params p;
  d9_gen_defaults(&p, "deepseek_v3");
  assert_int_equal(p.kv_heads, p.heads);
  p.layers = 3;
  p.experts = 3;
  p.hidden = 80;
  p.block = 32;  /* ragged: 60 x 80, 80 x 60, ... */
  p.shards = 3;
  run_start(&r, &p);
  check_fp8(&r.c, &p);
  mla x = mla_want(&p);
  static const char *const keys[] = {"q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                                     "qk_rope_head_dim", "v_head_dim", "moe_intermediate_size"};
  int64_t want[] = {x.ql, x.kvl, x.nope, x.rope, x.v, x.mi};
  for (int k = 0; k < 6; k++) assert_true(num(r.cfg, keys[k]) == want[k]);
  assert_true(num(r.cfg, "n_routed_experts") == 3);
  assert_true(num(r.cfg, "n_shared_experts") == 1);
  assert_true(num(r.cfg, "first_k_dense_replace") == 1);
  assert_non_null(cJSON_GetObjectItemCaseSensitive(r.cfg, "quantization_config"));
  check_range(&r.c, "model.layers.2.mlp.gate.e_score_correction_bias", -1.0f, 1.0f);
  check_range(&r.c, "model.layers.1.self_attn.kv_a_layernorm.weight", 0.89f, 1.11f);
  run_end(&r);
}

static void test_gemma(void **state) {
  (void)state;
  run r;
  d9_gen_params p;
  d9_gen_defaults(&p, "gemma");
  assert_true(p.head_dim != 0);
  run_start(&r, &p);  /* tied, head_dim in the config */
  check_range(&r.c, "model.norm.weight", -0.11f, 0.11f);
  check_range(&r.c, "model.layers.1.post_attention_layernorm.weight", -0.11f, 0.11f);
  run_end(&r);
}

/* gpt_oss: the tensor list (written out here from gpt-oss's layout), the
 * MXFP4 experts' dtypes and shapes, varied block bytes, E8M0 scales in
 * 118..133, the config's quantization_config; hidden and intermediate must
 * be multiples of 32. */
static void test_gpt_oss(void **state) {
  (void)state;
  d9_gen_params p;
  d9_gen_defaults(&p, "gpt_oss");
  assert_int_equal(p.experts, 4);
  p.layers = 2, p.hidden = 96, p.intermediate = 64, p.experts = 3, p.shards = 3;
  scratch s;
  ckpt c;
  scratch_make(&s);
  gen(&s, &p, &c);
  int64_t H = p.hidden, I = p.intermediate, E = p.experts, d = H / p.heads;
  static const char *const attn[] = {"q", "k", "v", "o"};
  for (int L = 0; L < p.layers; L++) {
    char n[200];
    struct { const char *suffix; d9_dtype dt; int ndim; int64_t sh[4]; } w[] = {
        {"input_layernorm.weight", D9_BF16, 1, {H}},
        {"post_attention_layernorm.weight", D9_BF16, 1, {H}},
        {"self_attn.q_proj.weight", D9_BF16, 2, {p.heads * d, H}},
        {"self_attn.q_proj.bias", D9_BF16, 1, {p.heads * d}},
        {"self_attn.k_proj.bias", D9_BF16, 1, {p.kv_heads * d}},
        {"self_attn.o_proj.weight", D9_BF16, 2, {H, p.heads * d}},
        {"self_attn.o_proj.bias", D9_BF16, 1, {H}},
        {"self_attn.sinks", D9_BF16, 1, {p.heads}},
        {"mlp.router.weight", D9_BF16, 2, {E, H}},
        {"mlp.router.bias", D9_BF16, 1, {E}},
        {"mlp.experts.gate_up_proj_blocks", D9_U8, 4, {E, 2 * I, H / 32, 16}},
        {"mlp.experts.gate_up_proj_scales", D9_U8, 3, {E, 2 * I, H / 32}},
        {"mlp.experts.gate_up_proj_bias", D9_BF16, 2, {E, 2 * I}},
        {"mlp.experts.down_proj_blocks", D9_U8, 4, {E, H, I / 32, 16}},
        {"mlp.experts.down_proj_scales", D9_U8, 3, {E, H, I / 32}},
        {"mlp.experts.down_proj_bias", D9_BF16, 2, {E, H}},
    };
    for (size_t k = 0; k < sizeof w / sizeof *w; k++) {
      snprintf(n, sizeof n, "model.layers.%d.%s", L, w[k].suffix);
      const rt *t = find(&c, n);
      if (!t) fail_msg("%s missing", n);
      assert_int_equal(t->dtype, w[k].dt);
      assert_int_equal(t->ndim, w[k].ndim);
      for (int i = 0; i < t->ndim; i++) assert_int_equal(t->shape[i], w[k].sh[i]);
    }
    for (int a = 0; a < 4; a++) { /* the attention linears, all plain */
      snprintf(n, sizeof n, "model.layers.%d.self_attn.%s_proj.weight", L, attn[a]);
      assert_non_null(find(&c, n));
      assert_int_equal(find(&c, n)->dtype, D9_BF16);
    }
  }
  /* per layer: 2 norms, 4 linears, 4 biases, sinks, router x2, experts x6 = 19;
   * then embed, norm, lm_head */
  int want_n = 19 * (int)p.layers + 3;
  assert_int_equal(c.n, want_n);
  int ntensors = 0;
  assert_int_equal(d9_gen_count(&p, &ntensors, NULL, NULL), 0);
  assert_int_equal(ntensors, want_n);
  const rt *sc = find(&c, "model.layers.1.mlp.experts.down_proj_scales");
  const rt *bl = find(&c, "model.layers.1.mlp.experts.down_proj_blocks");
  unsigned char *sb = data_of(&c, sc), *bb = data_of(&c, bl);
  int seen[256] = {0}, nseen = 0, lo = 255, hi = 0;
  for (uint64_t i = 0; i < sc->nbytes; i++) lo = sb[i] < lo ? sb[i] : lo, hi = sb[i] > hi ? sb[i] : hi;
  for (uint64_t i = 0; i < bl->nbytes; i++) nseen += !seen[bb[i]]++;
  assert_true(lo >= 118 && hi <= 133 && hi > lo);
  assert_true(nseen > 200); /* random bytes: every code pair likely */
  free(sb);
  free(bb);
  cJSON *cfg = config(&c);
  check_config(cfg, &p);
  cJSON *q = cJSON_GetObjectItemCaseSensitive(cfg, "quantization_config");
  assert_string_equal(str(q, "quant_method"), "mxfp4");
  assert_true(num(cfg, "num_local_experts") == E);
  cJSON_Delete(cfg);
  free(c.t);
  rm_tree(s.root);
  /* the MXFP4 group needs multiples of 32 */
  d9_diag diag = {0};
  p.hidden = 48;
  assert_int_equal(d9_gen_count(&p, NULL, NULL, &diag), -EINVAL);
  assert_non_null(strstr(diag.msg, "multiples of 32"));
}

/* The same values in every dtype: BF16 and F16 data are the scalar
 * round-to-nearest-even conversions of the F32 data. */
static void test_dtypes(void **state) {
  (void)state;
  run r[3];
  d9_dtype dts[3] = {D9_F32, D9_BF16, D9_F16};
  for (int k = 0; k < 3; k++) {
    d9_gen_params p;
    d9_gen_defaults(&p, "qwen3_moe");
    p.dtype = dts[k];
    run_start(&r[k], &p);
  }
  for (int i = 0; i < r[0].c.n; i++) {
    const rt *t = &r[0].c.t[i];
    uint64_t n = t->nbytes / 4;
    unsigned char *f = data_of(&r[0].c, t);
    for (int k = 1; k < 3; k++) {
      const rt *u = find(&r[k].c, t->name);
      assert_int_equal(u->nbytes, 2 * n);
      unsigned char *h = data_of(&r[k].c, u);
      for (uint64_t e = 0; e < n; e++) {
        float x = elem(f, D9_F32, e);
        uint16_t want = k == 1 ? d9_f32_to_bf16(x) : d9_f32_to_f16(x);
        assert_int_equal(h[2 * e] | h[2 * e + 1] << 8, want);
      }
      free(h);
    }
    free(f);
  }
  for (int k = 0; k < 3; k++) run_end(&r[k]);
}

/* Same seed, different sharding: byte-identical tensors. Another seed:
 * different data. The same call twice: byte-identical files. */
static void test_determinism(void **state) {
  (void)state;
  const char *fams[] = {"llama", "mixtral", "deepseek_fp8", "deepseek_v3"};
  for (int f = 0; f < 4; f++) {
    scratch s[4];
    ckpt c[4];
    int shards[4] = {1, 3, 7, 1};
    d9_gen_params p;
    for (int k = 0; k < 4; k++) {
      d9_gen_defaults(&p, fams[f]);
      p.seed = k == 3 ? 0x1234567890abcdefULL : 42;
      p.shards = shards[k];
      scratch_make(&s[k]);
      gen(&s[k], &p, &c[k]);
    }
    for (int i = 0; i < c[0].n; i++) {
      const rt *a = &c[0].t[i];
      unsigned char *da = data_of(&c[0], a);
      for (int k = 1; k < 4; k++) {
        const rt *b = find(&c[k], a->name);
        assert_non_null(b);
        assert_int_equal(a->nbytes, b->nbytes);
        unsigned char *db = data_of(&c[k], b);
        if (k < 3)
          assert_memory_equal(da, db, a->nbytes);
        else if (a->nbytes >= 16)
          assert_memory_not_equal(da, db, a->nbytes);
        free(db);
      }
      free(da);
    }
    /* rewrite the first one in place: identical bytes */
    size_t la, lb;
    char *fa = slurp(s[0].dir, "model.safetensors", &la);
    d9_gen_defaults(&p, fams[f]);
    p.seed = 42;
    assert_int_equal(d9_gen_write(s[0].dir, &p, NULL), 0);
    char *fb = slurp(s[0].dir, "model.safetensors", &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(fa, fb, la);
    free(fa);
    free(fb);
    for (int k = 0; k < 4; k++) {
      free(c[k].t);
      rm_tree(s[k].root);
    }
  }
}

static void test_shards_limits(void **state) {
  (void)state;
  d9_gen_params p;
  d9_gen_defaults(&p, "qwen2");
  p.layers = 1;
  int n = 0;
  assert_int_equal(d9_gen_count(&p, &n, NULL, NULL), 0);
  run r;
  p.shards = n;  /* one tensor per file */
  run_start(&r, &p);
  run_end(&r);
  p.shards = n + 1;
  d9_diag diag = {0};
  assert_int_equal(d9_gen_count(&p, NULL, NULL, &diag), -EINVAL);
  assert_non_null(strstr(diag.msg, "shards"));
}

/* Each bad parameter is rejected with a message naming it, before any
 * directory is created. */
static void test_bad_params(void **state) {
  (void)state;
  enum { N = 14 };
  d9_gen_params b[N];
  for (int i = 0; i < N; i++) d9_gen_defaults(&b[i], "mixtral");
  const char *word[N] = {"kv_heads", "layers", "hidden", "heads", "vocab",
                         "intermediate", "experts", "dtype", "shards", "block",
                         "bias", "hidden", "head_dim", "family"};
  b[0].kv_heads = 3;  /* 4 % 3 != 0 */
  b[1].layers = 0;
  b[2].hidden = -5;
  b[3].heads = 0;
  b[4].vocab = 0;
  b[5].intermediate = 0;
  b[6].experts = 0;
  b[7].dtype = D9_F8_E4M3;
  b[8].shards = 0;
  b[9].block = 0;
  b[10].bias = 2;
  b[11].hidden = 66;  /* 66 % 4 != 0 and no head_dim */
  b[12].head_dim = -1;
  b[13].family = 17;
  scratch s;
  scratch_make(&s);
  for (int i = 0; i < N; i++) {
    d9_diag diag = {0};
    assert_int_equal(d9_gen_write(s.dir, &b[i], &diag), -EINVAL);
    assert_true(diag.set);
    if (!strstr(diag.msg, word[i])) fail_msg("case %d: '%s'", i, diag.msg);
    assert_false(diag.msg[0] >= 'A' && diag.msg[0] <= 'Z');
    struct stat st;
    assert_int_not_equal(stat(s.dir, &st), 0);  /* nothing created */
  }
  d9_gen_params p;
  d9_gen_defaults(&p, "llama");
  assert_int_equal(d9_gen_write(NULL, &p, NULL), -EINVAL);
  assert_int_equal(d9_gen_count(NULL, NULL, NULL, NULL), -EINVAL);
  rm_tree(s.root);
}

/* I/O errors name the path. */
static void test_bad_dir(void **state) {
  (void)state;
  scratch s;
  scratch_make(&s);
  char file[160], under[200];
  snprintf(file, sizeof file, "%s/plain", s.root);
  FILE *f = fopen(file, "w");
  assert_non_null(f);
  fclose(f);
  d9_gen_params p;
  d9_gen_defaults(&p, "llama");
  d9_diag diag = {0};
  assert_int_equal(d9_gen_write(file, &p, &diag), -ENOTDIR);
  assert_non_null(strstr(diag.msg, file));
  snprintf(under, sizeof under, "%s/plain/sub", s.root);
  d9_diag_clear(&diag);
  assert_true(d9_gen_write(under, &p, &diag) < 0);
  assert_non_null(strstr(diag.msg, file));
  assert_null(strchr(diag.msg, '\n'));
  d9_diag_clear(&diag);
  assert_int_equal(d9_gen_write("", &p, &diag), -EINVAL);
  rm_tree(s.root);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_family_names),
      cmocka_unit_test(test_llama),
      cmocka_unit_test(test_llama_sharded),
      cmocka_unit_test(test_qwen2),
      cmocka_unit_test(test_mixtral),
      cmocka_unit_test(test_qwen3_moe),
      cmocka_unit_test(test_deepseek_fp8),
      cmocka_unit_test(test_deepseek_fp8_big_embed),
      cmocka_unit_test(test_gemma),
      cmocka_unit_test(test_gpt_oss),
      cmocka_unit_test(test_qwen3),
      cmocka_unit_test(test_phi3),
      cmocka_unit_test(test_deepseek_v3),
      cmocka_unit_test(test_dtypes),
      cmocka_unit_test(test_determinism),
      cmocka_unit_test(test_shards_limits),
      cmocka_unit_test(test_bad_params),
      cmocka_unit_test(test_bad_dir),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
