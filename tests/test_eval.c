/* test_eval.c - lazy evaluation against naive references.
 *
 * Every conversion is compared byte for byte with a naive implementation of
 * the documented formula (docs/spec.md) computed from the source files; random
 * byte ranges of every virtual file are compared with the same slice of the
 * whole file; the bytes pulled from the source per read are bounded. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <glob.h>

#include "kernels/kernels.h"
#include "testutil.h"

#define SPEC_DIR D9DFS_SOURCE_DIR "/mounts"

/* ---- the source side, read without the library under test ---- */

typedef struct src_files {
  int n;
  unsigned char *data[16];
  uint64_t len[16];
  d9_arena *a;
} src_files;

static void src_load(src_files *s, const char *dir) {
  char pat[4200];
  glob_t g;
  snprintf(pat, sizeof pat, "%s/*.safetensors", dir);
  assert_int_equal(glob(pat, 0, NULL, &g), 0);
  s->n = 0;
  s->a = d9_arena_create();
  for (size_t i = 0; i < g.gl_pathc && i < 16; i++) {
    FILE *f = fopen(g.gl_pathv[i], "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long l = ftell(f);
    fseek(f, 0, SEEK_SET);
    s->data[s->n] = malloc((size_t)l);
    assert_int_equal(fread(s->data[s->n], 1, (size_t)l, f), (size_t)l);
    s->len[s->n++] = (uint64_t)l;
    fclose(f);
  }
  globfree(&g);
}

static void src_free(src_files *s) {
  for (int i = 0; i < s->n; i++) free(s->data[i]);
  d9_arena_destroy(s->a);
}

static const unsigned char *src_get(src_files *s, const char *name, d9_st_tensor *t) {
  for (int i = 0; i < s->n; i++) {
    const unsigned char *p = tu_find(s->data[i], s->len[i], name, t, s->a);
    if (p) return p;
  }
  return NULL;
}

/* ---- the mount side ---- */

typedef struct view {
  d9_mount *m;
  int n;
  unsigned char *data[64];
  uint64_t len[64];
  const char *name[64];
  d9_arena *a;
} view;

static void view_open(view *v, const char *src, const char *spec, uint64_t shard) {
  d9_mount_opts o = {.src_dir = src, .spec_path = spec, .max_shard_size = shard};
  d9_diag diag = {0};
  int rc = d9_mount_open(&o, &v->m, &diag);
  if (rc) fprintf(stderr, "mount: %s\n", diag.msg);
  assert_int_equal(rc, 0);
  const d9_vnode *root = d9_mount_node(v->m, 0);
  v->n = 0;
  v->a = d9_arena_create();
  for (int i = 0; i < root->nchildren; i++) {
    const d9_vnode *x = d9_mount_node(v->m, root->children[i]);
    if (x->kind != D9_NODE_FILE) continue;
    v->name[v->n] = x->name;
    v->data[v->n] = tu_read_node(v->m, root->children[i], &v->len[v->n]);
    assert_non_null(v->data[v->n]);
    v->n++;
  }
}

static void view_close(view *v) {
  for (int i = 0; i < v->n; i++) free(v->data[i]);
  d9_arena_destroy(v->a);
  d9_mount_close(v->m);
}

static const unsigned char *view_get(view *v, const char *name, d9_st_tensor *t) {
  for (int i = 0; i < v->n; i++) {
    size_t l = strlen(v->name[i]);
    if (l < 12 || strcmp(v->name[i] + l - 12, ".safetensors")) continue;
    const unsigned char *p = tu_find(v->data[i], v->len[i], name, t, v->a);
    if (p) return p;
  }
  return NULL;
}

static char *gen(const char *dir, const char *family, int64_t nh, int64_t ng, int64_t hd,
                 int64_t H, d9_dtype dt, int bias, int tied, int shards) {
  static char path[4200];
  snprintf(path, sizeof path, "%s/%s-%lld-%lld", dir, family, (long long)nh, (long long)ng);
  d9_gen_params p;
  d9_gen_defaults(&p, family);
  p.heads = nh, p.kv_heads = ng, p.head_dim = hd, p.hidden = H, p.dtype = dt;
  p.bias = bias, p.tied = tied, p.shards = shards, p.layers = 2, p.intermediate = 96;
  p.vocab = 100, p.seed = (uint64_t)(nh * 131 + ng);
  d9_diag diag = {0};
  int rc = d9_gen_write(path, &p, &diag);
  if (rc) fprintf(stderr, "gen: %s\n", diag.msg);
  assert_int_equal(rc, 0);
  return path;
}

/* Naive QKV (docs/spec.md, qkv): target row r: w=(g+2)d, grp=r/w, o=r%w. */
static void naive_qkv(const unsigned char *q, const unsigned char *k, const unsigned char *v,
                      unsigned char *out, int64_t nh, int64_t ng, int64_t d, size_t rowbytes) {
  int64_t g = nh / ng, w = (g + 2) * d, rows = (nh + 2 * ng) * d;
  for (int64_t r = 0; r < rows; r++) {
    int64_t grp = r / w, o = r % w;
    const unsigned char *src;
    if (o < g * d) src = q + (size_t)(grp * g * d + o) * rowbytes;
    else if (o < (g + 1) * d) src = k + (size_t)(grp * d + (o - g * d)) * rowbytes;
    else src = v + (size_t)(grp * d + (o - (g + 1) * d)) * rowbytes;
    memcpy(out + (size_t)r * rowbytes, src, rowbytes);
  }
}

static void check_megatron(const char *src, int64_t nh, int64_t ng, int64_t d, int bias,
                           int tied) {
  src_files s;
  view v;
  src_load(&s, src);
  view_open(&v, src, SPEC_DIR "/llama-to-megatron.json", 20000);
  for (int L = 0; L < 2; L++) {
    for (int isb = 0; isb <= bias; isb++) {
      const char *suf = isb ? "bias" : "weight";
      char n[3][256], tn[256];
      const char *pn[3] = {"q", "k", "v"};
      d9_st_tensor t[3], ft;
      const unsigned char *p[3];
      for (int i = 0; i < 3; i++) {
        snprintf(n[i], sizeof n[i], "model.layers.%d.self_attn.%s_proj.%s", L, pn[i], suf);
        assert_non_null(p[i] = src_get(&s, n[i], &t[i]));
      }
      snprintf(tn, sizeof tn, "decoder.layers.%d.self_attention.linear_qkv.%s", L, suf);
      const unsigned char *f = view_get(&v, tn, &ft);
      assert_non_null(f);
      size_t es = d9_dtype_size(t[0].dtype);
      size_t rowbytes = es * (size_t)(isb ? 1 : t[0].shape[1]);
      assert_int_equal(ft.shape[0], (nh + 2 * ng) * d);
      size_t total = rowbytes * (size_t)ft.shape[0];
      assert_int_equal(ft.end - ft.begin, total);
      unsigned char *ref = malloc(total);
      naive_qkv(p[0], p[1], p[2], ref, nh, ng, d, rowbytes);
      assert_memory_equal(f, ref, total);
      free(ref);
    }
    if (!bias) {
      char tn[256];
      d9_st_tensor ft;
      snprintf(tn, sizeof tn, "decoder.layers.%d.self_attention.linear_qkv.bias", L);
      assert_null(view_get(&v, tn, &ft));
    }
    /* fc1 = [gate; up] */
    char gn[256], un[256], fn[256];
    d9_st_tensor gt, ut, ft;
    snprintf(gn, sizeof gn, "model.layers.%d.mlp.gate_proj.weight", L);
    snprintf(un, sizeof un, "model.layers.%d.mlp.up_proj.weight", L);
    snprintf(fn, sizeof fn, "decoder.layers.%d.mlp.linear_fc1.weight", L);
    const unsigned char *gp = src_get(&s, gn, &gt), *up = src_get(&s, un, &ut);
    const unsigned char *fp = view_get(&v, fn, &ft);
    assert_non_null(gp);
    assert_non_null(up);
    assert_non_null(fp);
    assert_int_equal(ft.shape[0], gt.shape[0] + ut.shape[0]);
    assert_memory_equal(fp, gp, gt.end - gt.begin);
    assert_memory_equal(fp + (gt.end - gt.begin), up, ut.end - ut.begin);
  }
  d9_st_tensor et, ot;
  const unsigned char *op = view_get(&v, "output_layer.weight", &ot);
  if (tied) {
    assert_null(op); /* shared embedding: Megatron-Core has no output layer of its own */
  } else {
    const unsigned char *ep = src_get(&s, "lm_head.weight", &et);
    assert_non_null(ep);
    assert_non_null(op);
    assert_int_equal(et.end - et.begin, ot.end - ot.begin);
    assert_memory_equal(ep, op, et.end - et.begin);
  }
  view_close(&v);
  src_free(&s);
}

static void test_qkv_gqa_shapes(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  static const struct { int64_t nh, ng, hd, H; d9_dtype dt; int bias, tied; } cases[] = {
      {8, 2, 0, 64, D9_BF16, 0, 0},   /* GQA */
      {16, 4, 0, 128, D9_F32, 0, 0},  /* the 16 heads / 4 groups */
      {4, 4, 0, 64, D9_F16, 0, 0},    /* MHA */
      {6, 1, 0, 48, D9_BF16, 0, 0},   /* MQA */
      {12, 3, 24, 96, D9_F32, 1, 1},  /* explicit head_dim != H/nh, biases, tied */
      {14, 2, 0, 56, D9_BF16, 1, 1},  /* Qwen2-like: biases, tied, odd sizes */
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    int64_t d = cases[i].hd ? cases[i].hd : cases[i].H / cases[i].nh;
    char *src = gen(dir, cases[i].bias ? "qwen2" : "llama", cases[i].nh, cases[i].ng,
                    cases[i].hd, cases[i].H, cases[i].dt, cases[i].bias, cases[i].tied, 3);
    check_megatron(src, cases[i].nh, cases[i].ng, d, cases[i].bias, cases[i].tied);
  }
  tu_rmrf(dir);
  free(dir);
}

/* Random (off, len) reads, unaligned, across header/tensor/file ends, equal
 * the same slice of the whole file. */
static void random_ranges(const char *src, const char *spec, uint64_t shard, uint64_t seed) {
  view v;
  view_open(&v, src, spec, shard);
  const d9_vnode *root = d9_mount_node(v.m, 0);
  uint64_t x = seed;
  unsigned char *buf = malloc(1 << 20);
  for (int it = 0; it < 3000; it++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    int fi = (int)(x % (uint64_t)v.n);
    uint64_t len = v.len[fi];
    uint64_t off = (x >> 8) % (len + 16);
    uint64_t n = (x >> 32) % 5 == 0 ? (x >> 40) % 16 : (x >> 24) % (len / 3 + 2);
    if (n > (1 << 20)) n = 1 << 20;
    int idx = -1;
    for (int c = 0; c < root->nchildren; c++)
      if (!strcmp(d9_mount_node(v.m, root->children[c])->name, v.name[fi])) idx = root->children[c];
    ssize_t r = d9_mount_read(v.m, idx, off, n, buf);
    uint64_t want = off >= len ? 0 : (n < len - off ? n : len - off);
    assert_int_equal(r, (ssize_t)want);
    if (want) assert_memory_equal(buf, v.data[fi] + off, want);
  }
  free(buf);
  /* every emitted safetensors header passes the strict parser */
  for (int i = 0; i < v.n; i++) {
    size_t l = strlen(v.name[i]);
    if (l < 12 || strcmp(v.name[i] + l - 12, ".safetensors")) continue;
    uint64_t hl;
    d9_st_header h;
    d9_diag diag = {0};
    assert_int_equal(d9_st_header_len(v.data[i], v.len[i], v.name[i], &hl, &diag), 0);
    int rc = d9_st_parse((const char *)v.data[i] + 8, hl, v.len[i], v.name[i], v.a, &h, &diag);
    if (rc) fprintf(stderr, "%s\n", diag.msg);
    assert_int_equal(rc, 0);
    assert_int_equal((8 + hl) % 8, 0);
  }
  view_close(&v);
}

static const char ops_spec[] =
    "{\"d9dfs_spec\": 1, \"passthrough\": true, \"rules\": [\n"
    " {\"name\": \"cast\", \"inputs\": \"model.embed_tokens.weight\","
    "  \"steps\": [{\"op\": \"cast\", \"to\": \"BF16\"}], \"output\": \"emb_bf16\"},\n"
    " {\"name\": \"cast16\", \"inputs\": \"model.norm.weight\","
    "  \"steps\": [{\"op\": \"cast\", \"to\": \"F16\"}, {\"op\": \"cast\", \"to\": \"F32\"}],"
    "  \"output\": \"norm_f16_f32\"},\n"
    " {\"name\": \"cat1\", \"inputs\": {\"g\": \"model.layers.{L}.mlp.gate_proj.weight\","
    "  \"u\": \"model.layers.{L}.mlp.up_proj.weight\"},"
    "  \"steps\": [{\"op\": \"concat\", \"dim\": 1, \"out\": \"gu\"},"
    "             {\"op\": \"chunk\", \"chunks\": 2, \"dim\": 1, \"out\": [\"g2\", \"u2\"]}],"
    "  \"output\": {\"gu\": \"l{L}.gu\", \"g2\": \"l{L}.g2\", \"u2\": \"l{L}.u2\"}},\n"
    " {\"name\": \"stack\", \"inputs\": {\"k\": \"model.layers.{L}.self_attn.k_proj.weight\","
    "  \"v\": \"model.layers.{L}.self_attn.v_proj.weight\"},"
    "  \"steps\": [{\"op\": \"stack\", \"dim\": 1}], \"output\": \"l{L}.kv\"},\n"
    " {\"name\": \"split\", \"inputs\": \"model.layers.{L}.self_attn.o_proj.weight\","
    "  \"steps\": [{\"op\": \"split\", \"sizes\": [5, \"hidden_size - 5\"], \"dim\": 0,"
    "              \"out\": [\"a\", \"b\"]},"
    "             {\"op\": \"reshape\", \"in\": \"b\", \"shape\": [-1], \"out\": \"bflat\"}],"
    "  \"output\": {\"a\": \"l{L}.o_a\", \"bflat\": \"l{L}.o_rest\"}},\n"
    " {\"name\": \"rt\", \"inputs\": {\"q\": \"model.layers.{L}.self_attn.q_proj.weight\","
    "  \"k\": \"model.layers.{L}.self_attn.k_proj.weight\", \"v\": \"model.layers.{L}.self_attn.v_proj.weight\"},"
    "  \"steps\": [{\"op\": \"qkv\", \"heads\": \"num_attention_heads\", \"groups\": \"num_key_value_heads\","
    "              \"head_dim\": \"hidden_size / num_attention_heads\"},"
    "             {\"op\": \"qkv_split\", \"heads\": \"num_attention_heads\", \"groups\": \"num_key_value_heads\","
    "              \"head_dim\": \"hidden_size / num_attention_heads\", \"out\": [\"q2\", \"k2\", \"v2\"]}],"
    "  \"output\": {\"q2\": \"l{L}.q_rt\", \"k2\": \"l{L}.k_rt\", \"v2\": \"l{L}.v_rt\"}}\n"
    "]}\n";

static void test_ops_against_naive(void **state) {
  (void)state;
  char *dir = tu_tmpdir(), spec[4200];
  snprintf(spec, sizeof spec, "%s/ops.json", dir);
  tu_write(spec, ops_spec);
  char *src = gen(dir, "llama", 8, 2, 0, 64, D9_F32, 0, 0, 2);
  src_files s;
  view v;
  src_load(&s, src);
  view_open(&v, src, spec, 0);
  d9_st_tensor a, b, c, d;
  /* cast F32 -> BF16 equals the scalar round-to-nearest-even conversion */
  const float *e32 = (const float *)src_get(&s, "model.embed_tokens.weight", &a);
  const uint16_t *e16 = (const uint16_t *)view_get(&v, "emb_bf16", &b);
  assert_non_null(e32);
  assert_non_null(e16);
  assert_string_equal(d9_dtype_name(b.dtype), "BF16");
  int64_t n = a.shape[0] * a.shape[1];
  for (int64_t i = 0; i < n; i++) {
    float f = e32[i];
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint32_t r = bits + 0x7fff + ((bits >> 16) & 1); /* RNE, finite inputs */
    assert_int_equal(e16[i], (uint16_t)(r >> 16));
  }
  /* F32 -> F16 -> F32 chain equals the scalar pair */
  const float *nsrc = (const float *)src_get(&s, "model.norm.weight", &a);
  const float *nrt = (const float *)view_get(&v, "norm_f16_f32", &b);
  for (int64_t i = 0; i < a.shape[0]; i++) {
    float want = d9_f16_to_f32(d9_f32_to_f16(nsrc[i]));
    assert_memory_equal(&nrt[i], &want, 4);
  }
  for (int L = 0; L < 2; L++) {
    char nm[256];
    snprintf(nm, sizeof nm, "model.layers.%d.mlp.gate_proj.weight", L);
    const float *g = (const float *)src_get(&s, nm, &a);
    snprintf(nm, sizeof nm, "model.layers.%d.mlp.up_proj.weight", L);
    const float *up = (const float *)src_get(&s, nm, &b);
    snprintf(nm, sizeof nm, "l%d.gu", L);
    const float *gu = (const float *)view_get(&v, nm, &c);
    assert_non_null(gu);
    int64_t I = a.shape[0], H = a.shape[1];
    assert_int_equal(c.shape[1], 2 * H);
    for (int64_t r = 0; r < I; r++)
      for (int64_t j = 0; j < 2 * H; j++) {
        float want = j < H ? g[r * H + j] : up[r * H + j - H];
        assert_memory_equal(&gu[r * 2 * H + j], &want, 4);
      }
    snprintf(nm, sizeof nm, "l%d.g2", L);
    assert_memory_equal(view_get(&v, nm, &c), g, (size_t)(I * H * 4));
    snprintf(nm, sizeof nm, "l%d.u2", L);
    assert_memory_equal(view_get(&v, nm, &c), up, (size_t)(I * H * 4));
    /* stack k, v on dim 1: out[i][s][j] = (s ? v : k)[i][j] */
    snprintf(nm, sizeof nm, "model.layers.%d.self_attn.k_proj.weight", L);
    const float *k = (const float *)src_get(&s, nm, &a);
    snprintf(nm, sizeof nm, "model.layers.%d.self_attn.v_proj.weight", L);
    const float *vv = (const float *)src_get(&s, nm, &b);
    snprintf(nm, sizeof nm, "l%d.kv", L);
    const float *kv = (const float *)view_get(&v, nm, &c);
    assert_non_null(kv);
    assert_int_equal(c.ndim, 3);
    assert_int_equal(c.shape[1], 2);
    for (int64_t i = 0; i < a.shape[0]; i++)
      for (int st = 0; st < 2; st++)
        assert_memory_equal(&kv[(i * 2 + st) * a.shape[1]], &(st ? vv : k)[i * a.shape[1]],
                            (size_t)a.shape[1] * 4);
    /* split rows [0,5) and the rest flattened */
    snprintf(nm, sizeof nm, "model.layers.%d.self_attn.o_proj.weight", L);
    const unsigned char *o = src_get(&s, nm, &a);
    snprintf(nm, sizeof nm, "l%d.o_a", L);
    const unsigned char *oa = view_get(&v, nm, &c);
    snprintf(nm, sizeof nm, "l%d.o_rest", L);
    const unsigned char *ob = view_get(&v, nm, &d);
    size_t row = (size_t)a.shape[1] * 4;
    assert_int_equal(c.shape[0], 5);
    assert_memory_equal(oa, o, 5 * row);
    assert_int_equal(d.ndim, 1);
    assert_memory_equal(ob, o + 5 * row, (size_t)(a.shape[0] - 5) * row);
    /* qkv then qkv_split gives the sources back */
    const char *pn[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++) {
      snprintf(nm, sizeof nm, "model.layers.%d.self_attn.%s_proj.weight", L, pn[i]);
      const unsigned char *x = src_get(&s, nm, &a);
      snprintf(nm, sizeof nm, "l%d.%s_rt", L, pn[i]);
      const unsigned char *y = view_get(&v, nm, &b);
      assert_non_null(y);
      assert_int_equal(a.end - a.begin, b.end - b.begin);
      assert_memory_equal(x, y, a.end - a.begin);
    }
  }
  view_close(&v);
  src_free(&s);
  random_ranges(src, spec, 30000, 7);
  tu_rmrf(dir);
  free(dir);
}

static void test_random_ranges(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  char *src = gen(dir, "qwen2", 8, 2, 0, 64, D9_BF16, 1, 1, 3);
  random_ranges(src, SPEC_DIR "/llama-to-megatron.json", 25000, 1);
  random_ranges(src, SPEC_DIR "/llama-to-megatron.json", 0, 2); /* one file */
  random_ranges(src, SPEC_DIR "/identity.json", 40000, 3);
  tu_rmrf(dir);
  free(dir);
}

/* Reading one fused tensor pulls about its own size from the source; a
 * single element pulls one element per input touched. */
static void test_read_amplification(void **state) {
  (void)state;
  char *dir = tu_tmpdir();
  char *src = gen(dir, "llama", 16, 4, 0, 128, D9_BF16, 0, 0, 2);
  view v;
  view_open(&v, src, SPEC_DIR "/llama-to-megatron.json", 0);
  d9_st_tensor t;
  const unsigned char *p = view_get(&v, "decoder.layers.1.self_attention.linear_qkv.weight", &t);
  assert_non_null(p);
  uint64_t off = (uint64_t)(p - v.data[0]), size = t.end - t.begin;
  int idx = d9_mount_resolve(v.m, "model.safetensors");
  assert_true(idx > 0);
  d9_stats s0, s1;
  unsigned char *buf = malloc(size);
  d9_mount_get_stats(v.m, &s0);
  assert_int_equal(d9_mount_read(v.m, idx, off, size, buf), (ssize_t)size);
  d9_mount_get_stats(v.m, &s1);
  assert_memory_equal(buf, p, size);
  uint64_t pulled = s1.bytes_read_source - s0.bytes_read_source;
  assert_true(pulled <= size + size / 10);
  assert_true(pulled >= size);
  /* 3 unaligned bytes in the middle: at most two elements pulled */
  d9_mount_get_stats(v.m, &s0);
  assert_int_equal(d9_mount_read(v.m, idx, off + size / 2 + 1, 3, buf), 3);
  d9_mount_get_stats(v.m, &s1);
  assert_memory_equal(buf, p + size / 2 + 1, 3);
  assert_true(s1.bytes_read_source - s0.bytes_read_source <= 4);
  free(buf);
  view_close(&v);
  tu_rmrf(dir);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_qkv_gqa_shapes),
      cmocka_unit_test(test_ops_against_naive),
      cmocka_unit_test(test_random_ranges),
      cmocka_unit_test(test_read_amplification),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
