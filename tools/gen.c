/* gen.c - the seeded synthetic checkpoint generator (see gen.h): families,
 * parameters, the tensor list each family builds, and sharding; the files
 * are written by gen_write.c, adapters by gen_adapter.c (gen_impl.h). */
#include "gen_impl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../mapper/st_header.h"

enum {
  SHARDS_MAX = 99999,        /* file names carry five digits */
  TENSORS_MAX = 1 << 24,
};
#define DIM_MAX INT64_C(0x7fffffff)       /* any single parameter */
#define SHAPE_MAX (INT64_C(1) << 53)      /* any tensor dimension */

static const char *const family_names[] = {
#define D9_X(e, name) name,
    D9_GEN_FAMILY_TABLE(D9_X)
#undef D9_X
};

int d9_gen_family_parse(const char *name) {
  if (!name) return -1;
  for (int i = 0; i < D9_GEN_FAMILY_COUNT; i++)
    if (strcmp(name, family_names[i]) == 0) return i;
  return -1;
}

const char *d9_gen_family_name(int family) {
  return (family >= 0 && family < D9_GEN_FAMILY_COUNT) ? family_names[family]
                                                       : "?";
}

int gen_is_moe(int fam) {
  return fam == D9_GEN_MIXTRAL || fam == D9_GEN_QWEN3_MOE || fam == D9_GEN_GPT_OSS ||
         fam == D9_GEN_DEEPSEEK_V3;
}

void d9_gen_defaults(d9_gen_params *p, const char *family) {
  memset(p, 0, sizeof *p);
  p->family = d9_gen_family_parse(family ? family : "llama");
  p->layers = 2;
  p->hidden = 64;
  p->heads = 4;
  p->kv_heads = 2;
  p->head_dim = (p->family == D9_GEN_GEMMA || p->family == D9_GEN_QWEN3) ? 32 : 0;
  p->intermediate = 128;
  p->vocab = 256;
  p->experts = gen_is_moe(p->family) ? 4 : 0;
  if (p->family == D9_GEN_DEEPSEEK_V3) p->kv_heads = p->heads;
  p->dtype = D9_BF16;
  p->bias = -1;
  p->tied = -1;
  p->shards = 1;
  p->block = 128;
  p->seed = 1;
}

int gen_is_fp8(int fam) {
  return fam == D9_GEN_DEEPSEEK_FP8 || fam == D9_GEN_DEEPSEEK_V3;
}

/* ---- parameters ---- */

int gen_check_dim(const char *what, int64_t v, int64_t lo, d9_diag *diag) {
  if (v < lo || v > DIM_MAX)
    return d9_diag_fail(diag, EINVAL, "%s %lld out of range [%lld, %lld]",
                        what, (long long)v, (long long)lo, (long long)DIM_MAX);
  return 0;
}

int gen_resolve(const d9_gen_params *p, resolved *r, d9_diag *diag) {
  int rc;
  if (!p) return d9_diag_fail(diag, EINVAL, "no parameters");
  if (p->family < 0 || p->family >= D9_GEN_FAMILY_COUNT)
    return d9_diag_fail(diag, EINVAL, "unknown family (want llama, qwen2, "
                        "mixtral, qwen3_moe, deepseek_fp8, gemma, gpt_oss, qwen3, phi3 or "
                        "deepseek_v3)");
  if ((rc = gen_check_dim("layers", p->layers, 1, diag)) ||
      (rc = gen_check_dim("hidden", p->hidden, 1, diag)) ||
      (rc = gen_check_dim("heads", p->heads, 1, diag)) ||
      (rc = gen_check_dim("kv_heads", p->kv_heads, 1, diag)) ||
      (rc = gen_check_dim("head_dim", p->head_dim, 0, diag)) ||
      (rc = gen_check_dim("intermediate", p->intermediate, 1, diag)) ||
      (rc = gen_check_dim("vocab", p->vocab, 1, diag)) ||
      (rc = gen_check_dim("experts", p->experts, gen_is_moe(p->family) ? 1 : 0, diag)) ||
      (rc = gen_check_dim("block", p->block, 1, diag)))
    return rc;
  if (p->heads % p->kv_heads != 0)
    return d9_diag_fail(diag, EINVAL, "heads %lld is not a multiple of "
                        "kv_heads %lld", (long long)p->heads,
                        (long long)p->kv_heads);
  if (p->head_dim == 0 && p->hidden % p->heads != 0)
    return d9_diag_fail(diag, EINVAL, "hidden %lld is not a multiple of heads "
                        "%lld (give head_dim)", (long long)p->hidden,
                        (long long)p->heads);
  if (p->dtype != D9_F32 && p->dtype != D9_F16 && p->dtype != D9_BF16)
    return d9_diag_fail(diag, EINVAL, "dtype %s not supported (want BF16, F16 "
                        "or F32)", d9_dtype_name(p->dtype));
  if (p->family == D9_GEN_GPT_OSS && (p->hidden % 32 || p->intermediate % 32))
    return d9_diag_fail(diag, EINVAL, "gpt_oss: hidden %lld and intermediate %lld must be "
                        "multiples of 32 (the MXFP4 group)", (long long)p->hidden,
                        (long long)p->intermediate);
  if (p->bias < -1 || p->bias > 1 || p->tied < -1 || p->tied > 1)
    return d9_diag_fail(diag, EINVAL, "bias and tied must be -1, 0 or 1");
  if (p->shards < 1 || p->shards > SHARDS_MAX)
    return d9_diag_fail(diag, EINVAL, "shards %d out of range [1, %d]",
                        p->shards, SHARDS_MAX);
  r->fam = p->family;
  r->L = p->layers;
  r->H = p->hidden;
  r->nh = p->heads;
  r->ng = p->kv_heads;
  r->d = p->head_dim ? p->head_dim : p->hidden / p->heads;
  r->I = p->intermediate;
  r->V = p->vocab;
  r->E = gen_is_moe(p->family) ? p->experts : 0;
  r->b = p->block;
  r->dt = p->dtype;
  r->bias = p->bias >= 0 ? p->bias : (p->family == D9_GEN_QWEN2 || p->family == D9_GEN_GPT_OSS);
  r->tied = p->tied >= 0 ? p->tied
                         : (p->family == D9_GEN_QWEN2 || p->family == D9_GEN_GEMMA);
  r->shards = p->shards;
  r->seed = p->seed;
  if (r->nh * r->d > SHAPE_MAX)  /* both <= 2^31: no overflow */
    return d9_diag_fail(diag, EOVERFLOW, "heads * head_dim is too large");
  /* tensors per layer <= 16 + 3E (deepseek_v3: 24 + 6E, scales included);
   * keep the list itself bounded */
  if ((r->fam == D9_GEN_DEEPSEEK_V3 ? 24 + 6 * r->E : 16 + 3 * r->E) >
      TENSORS_MAX / r->L)
    return d9_diag_fail(diag, EINVAL, "layers * experts gives more than %d "
                        "tensors", TENSORS_MAX);
  return 0;
}

/* ---- the tensor list ---- */

void gen_list_free(glist *l) {
  for (int i = 0; i < l->n; i++) free(l->v[i].name);
  free(l->v);
  l->v = NULL;
  l->n = l->cap = 0;
}

/* Append a tensor of ndim (1..4) dims; returns its index or -errno. */
static int add_v(glist *l, d9_dtype dt, val_kind k, int ndim, const int64_t *shape,
                 d9_diag *diag, const char *fmt, va_list ap0) {
  if (l->n == l->cap) {
    int cap = l->cap ? 2 * l->cap : 64;
    gtensor *v = realloc(l->v, (size_t)cap * sizeof *v);
    if (!v) return d9_diag_fail(diag, ENOMEM, "out of memory for the tensor list");
    l->v = v;
    l->cap = cap;
  }
  gtensor *t = &l->v[l->n];
  memset(t, 0, sizeof *t);
  va_list ap;
  va_copy(ap, ap0);
  int len = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (len < 0 || !(t->name = malloc((size_t)len + 1)))
    return d9_diag_fail(diag, ENOMEM, "out of memory for a tensor name");
  va_copy(ap, ap0);
  vsnprintf(t->name, (size_t)len + 1, fmt, ap);
  va_end(ap);
  t->dtype = dt;
  t->kind = k;
  t->ndim = ndim;
  for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
  t->pair = -1;
  l->n++; /* owns the name from here, even if the size check fails */
  if (d9_st_nbytes(t->shape, t->ndim, dt, &t->nbytes) != 0)
    return d9_diag_fail(diag, EOVERFLOW, "tensor '%s': byte size overflows",
                        t->name);
  return l->n - 1;
}

/* Append a tensor; d1 < 0 makes it 1-D. Returns its index or -errno. */
__attribute__((format(printf, 7, 8)))
int gen_add(glist *l, d9_dtype dt, val_kind k, int64_t d0, int64_t d1,
               d9_diag *diag, const char *fmt, ...) {
  int64_t shape[2] = {d0, d1 < 0 ? 0 : d1};
  va_list ap;
  va_start(ap, fmt);
  int rc = add_v(l, dt, k, d1 < 0 ? 1 : 2, shape, diag, fmt, ap);
  va_end(ap);
  return rc;
}

/* gen_add() for any number of dims (1..4). */
__attribute__((format(printf, 7, 8)))
static int add_nd(glist *l, d9_dtype dt, val_kind k, int ndim, const int64_t *shape,
                  d9_diag *diag, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = add_v(l, dt, k, ndim, shape, diag, fmt, ap);
  va_end(ap);
  return rc;
}

/* The gpt_oss tensors of layer li after post_attention_layernorm: the
 * attention's o_proj bias and sinks, the router, and the MXFP4 experts
 * (blocks [E, R, C/32, 16] U8, scales [E, R, C/32] U8, biases [E, R]). */
static int gpt_oss_layer(glist *l, const resolved *r, long long li, d9_diag *diag) {
  const char *pre = "model.layers.";
  const int64_t H = r->H, I = r->I, E = r->E;
  int rc;
  if ((rc = gen_add(l, r->dt, K_WEIGHT, H, -1, diag, "%s%lld.self_attn.o_proj.bias", pre, li)) < 0 ||
      (rc = gen_add(l, r->dt, K_WEIGHT, r->nh, -1, diag, "%s%lld.self_attn.sinks", pre, li)) < 0 ||
      (rc = gen_add(l, r->dt, K_WEIGHT, E, H, diag, "%s%lld.mlp.router.weight", pre, li)) < 0 ||
      (rc = gen_add(l, r->dt, K_WEIGHT, E, -1, diag, "%s%lld.mlp.router.bias", pre, li)) < 0)
    return rc;
  static const char *const proj[2] = {"gate_up_proj", "down_proj"};
  for (int k = 0; k < 2; k++) {
    int64_t rows = k ? H : 2 * I, cols = k ? I : H;
    int64_t bs[4] = {E, rows, cols / 32, 16}, bias[2] = {E, rows};
    if ((rc = add_nd(l, D9_U8, K_MXFP4, 4, bs, diag, "%s%lld.mlp.experts.%s_blocks", pre, li,
                     proj[k])) < 0 ||
        (rc = add_nd(l, D9_U8, K_E8M0, 3, bs, diag, "%s%lld.mlp.experts.%s_scales", pre, li,
                     proj[k])) < 0 ||
        (rc = add_nd(l, r->dt, K_WEIGHT, 2, bias, diag, "%s%lld.mlp.experts.%s_bias", pre, li,
                     proj[k])) < 0)
      return rc;
  }
  return 0;
}

static int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); }

/* After everything else: an F32 "X.weight_scale_inv" for each F8 "X.weight",
 * paired with it. */
static int add_scales(const resolved *r, glist *l, d9_diag *diag) {
  int nw = l->n;
  for (int i = 0; i < nw; i++) {
    if (l->v[i].kind != K_FP8) continue;
    int64_t m = l->v[i].shape[0], n = l->v[i].shape[1];
    int rc = gen_add(l, D9_F32, K_SCALE, ceil_div(m, r->b), ceil_div(n, r->b), diag,
                 "%s_scale_inv", l->v[i].name);
    if (rc < 0) return rc;
    l->v[i].pair = rc;
    l->v[rc].pair = i;
  }
  return 0;
}

static int build_phi3(const resolved *r, glist *l, d9_diag *diag);
static int build_mla(const resolved *r, glist *l, d9_diag *diag);

/* Build the tensor list in natural order. Returns 0 or -errno. */
static int build(const resolved *r, glist *l, d9_diag *diag) {
  if (r->fam == D9_GEN_PHI3) return build_phi3(r, l, diag);
  if (r->fam == D9_GEN_DEEPSEEK_V3) return build_mla(r, l, diag);
  const int fp8 = r->fam == D9_GEN_DEEPSEEK_FP8;
  const d9_dtype lin = fp8 ? D9_F8_E4M3 : r->dt;   /* layer linears */
  const val_kind lk = fp8 ? K_FP8 : K_WEIGHT;
  const int64_t H = r->H, I = r->I, E = r->E, qd = r->nh * r->d,
                kvd = r->ng * r->d;
  int rc;
#define ADD(dt, k, a, b, ...)                                   \
  do {                                                          \
    if ((rc = gen_add(l, dt, k, a, b, diag, __VA_ARGS__)) < 0) return rc; \
  } while (0)
  ADD(r->dt, K_WEIGHT, r->V, H, "model.embed_tokens.weight");
  for (int64_t i = 0; i < r->L; i++) {
    const char *pre = "model.layers.";
    long long li = (long long)i;
    ADD(r->dt, K_NORM, H, -1, "%s%lld.input_layernorm.weight", pre, li);
    ADD(lin, lk, qd, H, "%s%lld.self_attn.q_proj.weight", pre, li);
    if (r->bias) ADD(r->dt, K_WEIGHT, qd, -1, "%s%lld.self_attn.q_proj.bias", pre, li);
    ADD(lin, lk, kvd, H, "%s%lld.self_attn.k_proj.weight", pre, li);
    if (r->bias) ADD(r->dt, K_WEIGHT, kvd, -1, "%s%lld.self_attn.k_proj.bias", pre, li);
    ADD(lin, lk, kvd, H, "%s%lld.self_attn.v_proj.weight", pre, li);
    if (r->bias) ADD(r->dt, K_WEIGHT, kvd, -1, "%s%lld.self_attn.v_proj.bias", pre, li);
    ADD(lin, lk, H, qd, "%s%lld.self_attn.o_proj.weight", pre, li);
    if (r->fam == D9_GEN_QWEN3_MOE || r->fam == D9_GEN_QWEN3) {
      ADD(r->dt, K_NORM, r->d, -1, "%s%lld.self_attn.q_norm.weight", pre, li);
      ADD(r->dt, K_NORM, r->d, -1, "%s%lld.self_attn.k_norm.weight", pre, li);
    }
    ADD(r->dt, K_NORM, H, -1, "%s%lld.post_attention_layernorm.weight", pre, li);
    if (r->fam == D9_GEN_MIXTRAL) {
      const char *m = "block_sparse_moe";
      ADD(r->dt, K_WEIGHT, E, H, "%s%lld.%s.gate.weight", pre, li, m);
      for (int64_t e = 0; e < E; e++) {
        long long le = (long long)e;
        ADD(r->dt, K_WEIGHT, I, H, "%s%lld.%s.experts.%lld.w1.weight", pre, li, m, le);
        ADD(r->dt, K_WEIGHT, I, H, "%s%lld.%s.experts.%lld.w3.weight", pre, li, m, le);
        ADD(r->dt, K_WEIGHT, H, I, "%s%lld.%s.experts.%lld.w2.weight", pre, li, m, le);
      }
    } else if (r->fam == D9_GEN_QWEN3_MOE) {
      ADD(r->dt, K_WEIGHT, E, H, "%s%lld.mlp.gate.weight", pre, li);
      for (int64_t e = 0; e < E; e++) {
        long long le = (long long)e;
        ADD(r->dt, K_WEIGHT, I, H, "%s%lld.mlp.experts.%lld.gate_proj.weight", pre, li, le);
        ADD(r->dt, K_WEIGHT, I, H, "%s%lld.mlp.experts.%lld.up_proj.weight", pre, li, le);
        ADD(r->dt, K_WEIGHT, H, I, "%s%lld.mlp.experts.%lld.down_proj.weight", pre, li, le);
      }
    } else if (r->fam == D9_GEN_GPT_OSS) {
      if ((rc = gpt_oss_layer(l, r, li, diag)) < 0) return rc;
    } else {
      ADD(lin, lk, I, H, "%s%lld.mlp.gate_proj.weight", pre, li);
      ADD(lin, lk, I, H, "%s%lld.mlp.up_proj.weight", pre, li);
      ADD(lin, lk, H, I, "%s%lld.mlp.down_proj.weight", pre, li);
    }
  }
  ADD(r->dt, K_NORM, H, -1, "model.norm.weight");
  if (!r->tied) ADD(r->dt, K_WEIGHT, r->V, H, "lm_head.weight");
  if (fp8) return add_scales(r, l, diag);
#undef ADD
  return 0;
}

#define ADD(dt, k, a, b, ...)                                   \
  do {                                                          \
    if ((rc = gen_add(l, dt, k, a, b, diag, __VA_ARGS__)) < 0) return rc; \
  } while (0)

/* phi3: fused qkv_proj [q; k; v] and gate_up_proj [gate; up] (see gen.h). */
static int build_phi3(const resolved *r, glist *l, d9_diag *diag) {
  const int64_t H = r->H, I = r->I, qd = r->nh * r->d, kvd = r->ng * r->d;
  const d9_dtype dt = r->dt;
  int rc;
  ADD(dt, K_WEIGHT, r->V, H, "model.embed_tokens.weight");
  for (int64_t i = 0; i < r->L; i++) {
    long long li = (long long)i;
    ADD(dt, K_NORM, H, -1, "model.layers.%lld.input_layernorm.weight", li);
    ADD(dt, K_WEIGHT, qd + 2 * kvd, H, "model.layers.%lld.self_attn.qkv_proj.weight", li);
    ADD(dt, K_WEIGHT, H, qd, "model.layers.%lld.self_attn.o_proj.weight", li);
    ADD(dt, K_NORM, H, -1, "model.layers.%lld.post_attention_layernorm.weight", li);
    ADD(dt, K_WEIGHT, 2 * I, H, "model.layers.%lld.mlp.gate_up_proj.weight", li);
    ADD(dt, K_WEIGHT, H, I, "model.layers.%lld.mlp.down_proj.weight", li);
  }
  ADD(dt, K_NORM, H, -1, "model.norm.weight");
  if (!r->tied) ADD(dt, K_WEIGHT, r->V, H, "lm_head.weight");
  return 0;
}

mla_dims gen_mla_of(const resolved *r) {
  mla_dims m;
  m.nope = m.v = r->d;
  m.rope = r->d / 2 > 0 ? r->d / 2 : 1;
  m.q_lora = 3 * r->H / 4 > 0 ? 3 * r->H / 4 : 1;
  m.kv_lora = r->H / 2 > 0 ? r->H / 2 : 1;
  m.moe_i = r->I / 2 > 0 ? r->I / 2 : 1;
  return m;
}

/* deepseek_v3: MLA attention, one dense layer, then MoE layers with a
 * shared expert; 2-D linears in FP8 with their scales last. */
static int build_mla(const resolved *r, glist *l, d9_diag *diag) {
  const mla_dims m = gen_mla_of(r);
  const int64_t H = r->H, I = r->I, nh = r->nh;
  const d9_dtype dt = r->dt, f8 = D9_F8_E4M3;
  int rc;
  ADD(dt, K_WEIGHT, r->V, H, "model.embed_tokens.weight");
  for (int64_t i = 0; i < r->L; i++) {
    char pre[48];
    snprintf(pre, sizeof pre, "model.layers.%lld.", (long long)i);
    ADD(dt, K_NORM, H, -1, "%sinput_layernorm.weight", pre);
    ADD(f8, K_FP8, m.q_lora, H, "%sself_attn.q_a_proj.weight", pre);
    ADD(dt, K_NORM, m.q_lora, -1, "%sself_attn.q_a_layernorm.weight", pre);
    ADD(f8, K_FP8, nh * (m.nope + m.rope), m.q_lora, "%sself_attn.q_b_proj.weight", pre);
    ADD(f8, K_FP8, m.kv_lora + m.rope, H, "%sself_attn.kv_a_proj_with_mqa.weight", pre);
    ADD(dt, K_NORM, m.kv_lora, -1, "%sself_attn.kv_a_layernorm.weight", pre);
    ADD(f8, K_FP8, nh * (m.nope + m.v), m.kv_lora, "%sself_attn.kv_b_proj.weight", pre);
    ADD(f8, K_FP8, H, nh * m.v, "%sself_attn.o_proj.weight", pre);
    ADD(dt, K_NORM, H, -1, "%spost_attention_layernorm.weight", pre);
    if (i == 0) { /* first_k_dense_replace = 1 */
      ADD(f8, K_FP8, I, H, "%smlp.gate_proj.weight", pre);
      ADD(f8, K_FP8, I, H, "%smlp.up_proj.weight", pre);
      ADD(f8, K_FP8, H, I, "%smlp.down_proj.weight", pre);
      continue;
    }
    ADD(dt, K_WEIGHT, r->E, H, "%smlp.gate.weight", pre);
    ADD(D9_F32, K_WEIGHT, r->E, -1, "%smlp.gate.e_score_correction_bias", pre);
    for (int64_t e = 0; e < r->E; e++) {
      long long le = (long long)e;
      ADD(f8, K_FP8, m.moe_i, H, "%smlp.experts.%lld.gate_proj.weight", pre, le);
      ADD(f8, K_FP8, m.moe_i, H, "%smlp.experts.%lld.up_proj.weight", pre, le);
      ADD(f8, K_FP8, H, m.moe_i, "%smlp.experts.%lld.down_proj.weight", pre, le);
    }
    ADD(f8, K_FP8, m.moe_i, H, "%smlp.shared_experts.gate_proj.weight", pre);
    ADD(f8, K_FP8, m.moe_i, H, "%smlp.shared_experts.up_proj.weight", pre);
    ADD(f8, K_FP8, H, m.moe_i, "%smlp.shared_experts.down_proj.weight", pre);
  }
  ADD(dt, K_NORM, H, -1, "model.norm.weight");
  if (!r->tied) ADD(dt, K_WEIGHT, r->V, H, "lm_head.weight");
  return add_scales(r, l, diag);
}
#undef ADD

/* ---- shard assignment ---- */

/* floor(total * k / ns) without overflow (k <= ns <= SHARDS_MAX). */
static uint64_t frac(uint64_t total, int k, int ns) {
  return total / (uint64_t)ns * (uint64_t)k +
         total % (uint64_t)ns * (uint64_t)k / (uint64_t)ns;
}

/* Give tensors [from, to) to shards s0 .. s0+ns-1 in order, cutting where a
 * tensor's midpoint passes an equal-bytes boundary; every shard gets at
 * least one tensor (to - from >= ns). */
static void assign(gtensor *t, int from, int to, int s0, int ns) {
  uint64_t total = 0, acc = 0;
  for (int i = from; i < to; i++) total += t[i].nbytes;
  int shard = 0, count = 0;
  for (int i = from; i < to; i++) {
    if (count > 0 && shard < ns - 1 &&
        (to - i <= ns - 1 - shard ||
         acc + t[i].nbytes / 2 >= frac(total, shard + 1, ns))) {
      shard++;
      count = 0;
    }
    t[i].shard = s0 + shard;
    acc += t[i].nbytes;
    count++;
  }
}

static int shard_all(glist *l, const resolved *r, d9_diag *diag) {
  if (r->shards > l->n)
    return d9_diag_fail(diag, EINVAL, "shards %d exceeds the %d tensors",
                        r->shards, l->n);
  assign(l->v, 0, l->n, 0, r->shards);
  if (!gen_is_fp8(r->fam) || r->shards < 2) return 0;
  int first_scale = -1;
  for (int i = 0; i < l->n; i++) {
    if (l->v[i].kind == K_SCALE && first_scale < 0) first_scale = i;
    if (l->v[i].pair >= 0 && l->v[i].shard != l->v[l->v[i].pair].shard)
      return 0; /* some weight and its scale are already apart */
  }
  /* Fall back: all scales alone in the last file. */
  if (first_scale < r->shards - 1)
    return d9_diag_fail(diag, EINVAL, "shards %d too many to keep a weight "
                        "and its scale apart", r->shards);
  assign(l->v, 0, first_scale, 0, r->shards - 1);
  for (int i = first_scale; i < l->n; i++) l->v[i].shard = r->shards - 1;
  return 0;
}

/* Resolve, build and shard; *sum gets the data bytes. On failure the list
 * is freed. */
int gen_prepare(const d9_gen_params *p, resolved *r, glist *l,
                   uint64_t *sum, d9_diag *diag) {
  int rc = gen_resolve(p, r, diag);
  if (rc == 0) rc = build(r, l, diag);
  *sum = 0;
  for (int i = 0; rc == 0 && i < l->n; i++) {
    if (l->v[i].nbytes > UINT64_MAX - *sum)
      rc = d9_diag_fail(diag, EOVERFLOW, "checkpoint size overflows");
    else
      *sum += l->v[i].nbytes;
  }
  if (rc == 0) rc = shard_all(l, r, diag); /* sums no longer overflow */
  if (rc) gen_list_free(l);
  return rc;
}

int d9_gen_count(const d9_gen_params *p, int *ntensors, uint64_t *data_bytes,
                 d9_diag *diag) {
  resolved r;
  glist l = {0};
  uint64_t sum;
  int rc = gen_prepare(p, &r, &l, &sum, diag);
  if (rc) return rc;
  if (ntensors) *ntensors = l.n;
  if (data_bytes) *data_bytes = sum;
  gen_list_free(&l);
  return 0;
}
