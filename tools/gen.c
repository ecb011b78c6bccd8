/* gen.c - the seeded synthetic checkpoint generator (see gen.h). */
#include "gen.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kernels/kernels.h"
#include "../mapper/st_header.h"

enum {
  CHUNK = 1 << 20,           /* bytes of tensor data generated at a time */
  SHARDS_MAX = 99999,        /* file names carry five digits */
  TENSORS_MAX = 1 << 24,
};
#define DIM_MAX INT64_C(0x7fffffff)       /* any single parameter */
#define SHAPE_MAX (INT64_C(1) << 53)      /* any tensor dimension */

typedef enum { K_WEIGHT, K_NORM, K_FP8, K_SCALE, K_MXFP4, K_E8M0 } val_kind;

typedef struct gtensor {
  char *name;          /* owned (malloc) */
  d9_dtype dtype;
  int ndim;            /* 1 or 2; up to 4 for gpt_oss's MXFP4 blocks */
  int64_t shape[4];    /* elements */
  val_kind kind;
  uint64_t nbytes;
  int shard;           /* 0-based file index */
  int pair;            /* deepseek_fp8: weight <-> its scale; else -1 */
  int values_of;       /* adapters: 1 + the index of the tensor whose values
                          this one repeats; 0 = its own */
} gtensor;

typedef struct glist {
  gtensor *v;          /* owned */
  int n, cap;
} glist;

/* Parameters with the family defaults resolved. */
typedef struct resolved {
  int fam;
  int64_t L, H, nh, ng, d, I, V, E, b;
  d9_dtype dt;
  int bias, tied, shards;
  uint64_t seed;
} resolved;

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

static int is_moe(int fam) {
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
  p->experts = is_moe(p->family) ? 4 : 0;
  if (p->family == D9_GEN_DEEPSEEK_V3) p->kv_heads = p->heads;
  p->dtype = D9_BF16;
  p->bias = -1;
  p->tied = -1;
  p->shards = 1;
  p->block = 128;
  p->seed = 1;
}

static int is_fp8(int fam) {
  return fam == D9_GEN_DEEPSEEK_FP8 || fam == D9_GEN_DEEPSEEK_V3;
}

/* ---- parameters ---- */

static int check_dim(const char *what, int64_t v, int64_t lo, d9_diag *diag) {
  if (v < lo || v > DIM_MAX)
    return d9_diag_fail(diag, EINVAL, "%s %lld out of range [%lld, %lld]",
                        what, (long long)v, (long long)lo, (long long)DIM_MAX);
  return 0;
}

static int resolve(const d9_gen_params *p, resolved *r, d9_diag *diag) {
  int rc;
  if (!p) return d9_diag_fail(diag, EINVAL, "no parameters");
  if (p->family < 0 || p->family >= D9_GEN_FAMILY_COUNT)
    return d9_diag_fail(diag, EINVAL, "unknown family (want llama, qwen2, "
                        "mixtral, qwen3_moe, deepseek_fp8, gemma, gpt_oss, qwen3, phi3 or "
                        "deepseek_v3)");
  if ((rc = check_dim("layers", p->layers, 1, diag)) ||
      (rc = check_dim("hidden", p->hidden, 1, diag)) ||
      (rc = check_dim("heads", p->heads, 1, diag)) ||
      (rc = check_dim("kv_heads", p->kv_heads, 1, diag)) ||
      (rc = check_dim("head_dim", p->head_dim, 0, diag)) ||
      (rc = check_dim("intermediate", p->intermediate, 1, diag)) ||
      (rc = check_dim("vocab", p->vocab, 1, diag)) ||
      (rc = check_dim("experts", p->experts, is_moe(p->family) ? 1 : 0, diag)) ||
      (rc = check_dim("block", p->block, 1, diag)))
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
  r->E = is_moe(p->family) ? p->experts : 0;
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

static void list_free(glist *l) {
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
static int add(glist *l, d9_dtype dt, val_kind k, int64_t d0, int64_t d1,
               d9_diag *diag, const char *fmt, ...) {
  int64_t shape[2] = {d0, d1 < 0 ? 0 : d1};
  va_list ap;
  va_start(ap, fmt);
  int rc = add_v(l, dt, k, d1 < 0 ? 1 : 2, shape, diag, fmt, ap);
  va_end(ap);
  return rc;
}

/* add() for any number of dims (1..4). */
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
  if ((rc = add(l, r->dt, K_WEIGHT, H, -1, diag, "%s%lld.self_attn.o_proj.bias", pre, li)) < 0 ||
      (rc = add(l, r->dt, K_WEIGHT, r->nh, -1, diag, "%s%lld.self_attn.sinks", pre, li)) < 0 ||
      (rc = add(l, r->dt, K_WEIGHT, E, H, diag, "%s%lld.mlp.router.weight", pre, li)) < 0 ||
      (rc = add(l, r->dt, K_WEIGHT, E, -1, diag, "%s%lld.mlp.router.bias", pre, li)) < 0)
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
    int rc = add(l, D9_F32, K_SCALE, ceil_div(m, r->b), ceil_div(n, r->b), diag,
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
    if ((rc = add(l, dt, k, a, b, diag, __VA_ARGS__)) < 0) return rc; \
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
    if ((rc = add(l, dt, k, a, b, diag, __VA_ARGS__)) < 0) return rc; \
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

/* The MLA sizes deepseek_v3 derives from the parameters (see gen.h). */
typedef struct mla_dims {
  int64_t nope, rope, v, q_lora, kv_lora, moe_i;
} mla_dims;

static mla_dims mla_of(const resolved *r) {
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
  const mla_dims m = mla_of(r);
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
  if (!is_fp8(r->fam) || r->shards < 2) return 0;
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
static int prepare(const d9_gen_params *p, resolved *r, glist *l,
                   uint64_t *sum, d9_diag *diag) {
  int rc = resolve(p, r, diag);
  if (rc == 0) rc = build(r, l, diag);
  *sum = 0;
  for (int i = 0; rc == 0 && i < l->n; i++) {
    if (l->v[i].nbytes > UINT64_MAX - *sum)
      rc = d9_diag_fail(diag, EOVERFLOW, "checkpoint size overflows");
    else
      *sum += l->v[i].nbytes;
  }
  if (rc == 0) rc = shard_all(l, r, diag); /* sums no longer overflow */
  if (rc) list_free(l);
  return rc;
}

int d9_gen_count(const d9_gen_params *p, int *ntensors, uint64_t *data_bytes,
                 d9_diag *diag) {
  resolved r;
  glist l = {0};
  uint64_t sum;
  int rc = prepare(p, &r, &l, &sum, diag);
  if (rc) return rc;
  if (ntensors) *ntensors = l.n;
  if (data_bytes) *data_bytes = sum;
  list_free(&l);
  return 0;
}

/* ---- values ---- */

static uint64_t fnv1a(const char *s) {
  uint64_t h = UINT64_C(0xcbf29ce484222325);
  for (; *s; s++) h = (h ^ (unsigned char)*s) * UINT64_C(0x100000001b3);
  return h;
}

/* splitmix64: advance *s and return the next output. */
static uint64_t next64(uint64_t *s) {
  uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

/* The next value for kind k, as f32. u is exact: 24 bits. */
static float next_value(uint64_t *s, val_kind k, int zero_norm) {
  uint32_t top = (uint32_t)(next64(s) >> 40);                   /* [0, 2^24) */
  float u = (float)((int32_t)top - (1 << 23)) * (1.0f / (1 << 23)); /* [-1,1) */
  switch (k) {
  case K_NORM: return zero_norm ? u * 0.1f : 1.0f + u * 0.1f;
  case K_FP8: return u * 448.0f;
  case K_SCALE: return 1e-3f + (float)top * (1.0f / (1 << 24)) * 0.099f;
  case K_MXFP4: return (float)(top >> 16);     /* a byte: two random E2M1 codes */
  case K_E8M0: return (float)(118 + top % 16); /* 2^-9 .. 2^6 */
  default: return u;
  }
}

static void put_le(unsigned char *p, uint32_t v, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Fill n elements of tensor t into buf, continuing the stream in *s. */
static void fill(unsigned char *buf, int64_t n, const gtensor *t, uint64_t *s,
                 int zero_norm) {
  size_t es = d9_dtype_size(t->dtype);
  for (int64_t i = 0; i < n; i++) {
    float f = next_value(s, t->kind, zero_norm);
    unsigned char *o = buf + (size_t)i * es;
    switch (t->dtype) {
    case D9_F32: {
      uint32_t bits;
      memcpy(&bits, &f, 4);
      put_le(o, bits, 4);
      break;
    }
    case D9_F16: put_le(o, d9_f32_to_f16(f), 2); break;
    case D9_BF16: put_le(o, d9_f32_to_bf16(f), 2); break;
    case D9_U8: o[0] = (unsigned char)f; break; /* K_MXFP4, K_E8M0: exact bytes */
    default: o[0] = d9_f32_to_e4m3(f); break; /* D9_F8_E4M3 */
    }
  }
}

/* ---- files ---- */

static const char *reason(int err, char *buf, size_t n) {
  snprintf(buf, n, "%s", strerror(err));
  buf[0] = (char)tolower((unsigned char)buf[0]);
  return buf;
}

static char *join(const char *dir, const char *name, d9_diag *diag) {
  size_t a = strlen(dir), b = strlen(name);
  char *p = malloc(a + b + 2);
  if (!p) {
    d9_diag_fail(diag, ENOMEM, "out of memory");
    return NULL;
  }
  memcpy(p, dir, a);
  p[a] = '/';
  memcpy(p + a + 1, name, b + 1);
  return p;
}

static int write_all(int fd, const void *data, size_t len) {
  const unsigned char *p = data;
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

static int make_dirs(const char *dir, d9_diag *diag) {
  char why[128];
  if (!*dir) return d9_diag_fail(diag, EINVAL, "empty output directory name");
  char *p = strdup(dir);
  if (!p) return d9_diag_fail(diag, ENOMEM, "out of memory");
  int rc = 0;
  for (char *s = p + 1;; s++) {
    if (*s != '/' && *s != 0) continue;
    char c = *s;
    *s = 0;
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
      rc = d9_diag_fail(diag, errno, "%s: cannot create directory: %s", p,
                        reason(errno, why, sizeof why));
      break;
    }
    *s = c;
    if (!c) break;
  }
  free(p);
  struct stat st;
  if (rc == 0 && stat(dir, &st) != 0)
    rc = d9_diag_fail(diag, errno, "%s: %s", dir, reason(errno, why, sizeof why));
  if (rc == 0 && !S_ISDIR(st.st_mode))
    rc = d9_diag_fail(diag, ENOTDIR, "%s: not a directory", dir);
  return rc;
}

/* An open temporary file that becomes dir/name on commit. */
typedef struct outfile {
  char *path, *tmp;
  int fd;
} outfile;

static int out_open(outfile *o, const char *dir, const char *name, d9_diag *diag) {
  char why[128], tname[64];
  o->fd = -1;
  o->tmp = NULL;
  if (!(o->path = join(dir, name, diag))) return -ENOMEM;
  snprintf(tname, sizeof tname, ".%.32s.%ld.tmp", name, (long)getpid());
  if (!(o->tmp = join(dir, tname, diag))) {
    free(o->path);
    return -ENOMEM;
  }
  o->fd = open(o->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (o->fd < 0) {
    int rc = d9_diag_fail(diag, errno, "%s: cannot create: %s", o->tmp,
                          reason(errno, why, sizeof why));
    free(o->tmp);
    free(o->path);
    return rc;
  }
  return 0;
}

static int out_write(outfile *o, const void *data, size_t len, d9_diag *diag) {
  char why[128];
  int rc = write_all(o->fd, data, len);
  if (rc) d9_diag_fail(diag, -rc, "%s: write failed: %s", o->tmp,
                       reason(-rc, why, sizeof why));
  return rc;
}

/* Close and, if ok, rename into place; otherwise remove the temporary. */
static int out_close(outfile *o, int ok, d9_diag *diag) {
  char why[128];
  int rc = 0;
  if (close(o->fd) != 0 && ok)
    rc = d9_diag_fail(diag, errno, "%s: close failed: %s", o->tmp,
                      reason(errno, why, sizeof why));
  if (ok && rc == 0 && rename(o->tmp, o->path) != 0)
    rc = d9_diag_fail(diag, errno, "%s: cannot rename into place: %s", o->path,
                      reason(errno, why, sizeof why));
  if (!ok || rc) unlink(o->tmp);
  free(o->tmp);
  free(o->path);
  return rc;
}

static int write_small(const char *dir, const char *name, const char *text,
                       d9_diag *diag) {
  outfile o;
  int rc = out_open(&o, dir, name, diag);
  if (rc) return rc;
  rc = out_write(&o, text, strlen(text), diag);
  int rc2 = out_close(&o, rc == 0, diag);
  return rc ? rc : rc2;
}

/* A growable string for the JSON files (sized by tensor count, not data). */
typedef struct sbuf {
  char *s;
  size_t len, cap;
  int oom;
} sbuf;

__attribute__((format(printf, 2, 3)))
static void sb_printf(sbuf *b, const char *fmt, ...) {
  if (b->oom) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) {
    b->oom = 1;
    return;
  }
  if (b->len + (size_t)n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + (size_t)n + 1) cap *= 2;
    char *s = realloc(b->s, cap);
    if (!s) {
      b->oom = 1;
      return;
    }
    b->s = s;
    b->cap = cap;
  }
  va_start(ap, fmt);
  vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

static void shard_name(char *out, size_t n, int k, int ns) {
  if (ns == 1)
    snprintf(out, n, "model.safetensors");
  else
    snprintf(out, n, "model-%05d-of-%05d.safetensors", k + 1, ns);
}

/* Write file fname: tensors [from, to) of the list. */
static int write_file(const char *dir, const char *fname, const glist *l, int from, int to,
                      const resolved *r, unsigned char *buf, d9_diag *diag) {
  int n = to - from, rc;
  d9_st_tensor *tt = calloc((size_t)n, sizeof *tt);
  if (!tt) return d9_diag_fail(diag, ENOMEM, "%s: out of memory", fname);
  for (int i = 0; i < n; i++) {
    const gtensor *g = &l->v[from + i];
    tt[i].name = g->name;
    tt[i].dtype = g->dtype;
    tt[i].ndim = g->ndim;
    for (int d = 0; d < g->ndim; d++) tt[i].shape[d] = g->shape[d];
  }
  unsigned char *hdr = NULL;
  uint64_t hlen = 0;
  rc = d9_st_write_header(tt, n, NULL, NULL, 0, &hdr, &hlen);
  if (rc) {
    d9_diag_fail(diag, -rc, "%s: cannot build the safetensors header", fname);
    goto out_tensors;
  }
  outfile o;
  if ((rc = out_open(&o, dir, fname, diag))) goto out_header;
  rc = out_write(&o, hdr, (size_t)hlen, diag);
  const int zero_norm = r->fam == D9_GEN_GEMMA;
  for (int i = 0; rc == 0 && i < n; i++) {
    const gtensor *g = &l->v[from + i];
    size_t es = d9_dtype_size(g->dtype);
    int64_t left = (int64_t)(g->nbytes / es), per = (int64_t)(CHUNK / es);
    uint64_t s = r->seed ^ fnv1a(g->values_of ? l->v[g->values_of - 1].name : g->name);
    while (rc == 0 && left > 0) {
      int64_t m = left < per ? left : per;
      fill(buf, m, g, &s, zero_norm);
      rc = out_write(&o, buf, (size_t)m * es, diag);
      left -= m;
    }
  }
  int rc2 = out_close(&o, rc == 0, diag);
  if (rc == 0) rc = rc2;
out_header:
  free(hdr);
out_tensors:
  free(tt);
  return rc;
}

/* Write shard k: tensors [from, to) of the list. */
static int write_shard(const char *dir, const glist *l, int from, int to,
                       const resolved *r, int k, unsigned char *buf,
                       d9_diag *diag) {
  char fname[64];
  shard_name(fname, sizeof fname, k, r->shards);
  return write_file(dir, fname, l, from, to, r, buf, diag);
}

static int write_index(const char *dir, const glist *l, const resolved *r,
                       uint64_t total, d9_diag *diag) {
  sbuf b = {0};
  char fname[64];
  sb_printf(&b, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n"
            "  \"weight_map\": {\n", (unsigned long long)total);
  for (int i = 0; i < l->n; i++) {
    shard_name(fname, sizeof fname, l->v[i].shard, r->shards);
    sb_printf(&b, "    \"%s\": \"%s\"%s\n", l->v[i].name, fname,
              i + 1 < l->n ? "," : "");
  }
  sb_printf(&b, "  }\n}\n");
  int rc = b.oom ? d9_diag_fail(diag, ENOMEM, "out of memory for the index")
                 : write_small(dir, "model.safetensors.index.json", b.s, diag);
  free(b.s);
  return rc;
}

static int write_config(const char *dir, const resolved *r,
                        const d9_gen_params *p, d9_diag *diag) {
  static const char *const arch[] = {
      "LlamaForCausalLM", "Qwen2ForCausalLM", "MixtralForCausalLM",
      "Qwen3MoeForCausalLM", "DeepseekV3ForCausalLM", "GemmaForCausalLM",
      "GptOssForCausalLM", "Qwen3ForCausalLM", "Phi3ForCausalLM", "DeepseekV3ForCausalLM"};
  static const char *const mtype[] = {"llama", "qwen2", "mixtral", "qwen3_moe", "deepseek_v3",
                                      "gemma", "gpt_oss", "qwen3", "phi3", "deepseek_v3"};
  const char *tdt = r->dt == D9_F32 ? "float32"
                    : r->dt == D9_F16 ? "float16" : "bfloat16";
  sbuf b = {0};
  sb_printf(&b, "{\n  \"architectures\": [\"%s\"],\n  \"model_type\": \"%s\",\n",
            arch[r->fam], mtype[r->fam]);
  sb_printf(&b, "  \"hidden_size\": %lld,\n  \"intermediate_size\": %lld,\n"
            "  \"num_attention_heads\": %lld,\n  \"num_key_value_heads\": %lld,\n"
            "  \"num_hidden_layers\": %lld,\n  \"vocab_size\": %lld,\n",
            (long long)r->H, (long long)r->I, (long long)r->nh,
            (long long)r->ng, (long long)r->L, (long long)r->V);
  if ((p->head_dim != 0 || r->fam == D9_GEN_GEMMA) && r->fam != D9_GEN_DEEPSEEK_V3)
    sb_printf(&b, "  \"head_dim\": %lld,\n", (long long)r->d);
  sb_printf(&b, "  \"rms_norm_eps\": 1e-05,\n  \"tie_word_embeddings\": %s,\n"
            "  \"attention_bias\": %s,\n  \"hidden_act\": \"%s\",\n"
            "  \"max_position_embeddings\": 4096,\n  \"bos_token_id\": 1,\n"
            "  \"eos_token_id\": 2,\n",
            r->tied ? "true" : "false", r->bias ? "true" : "false",
            r->fam == D9_GEN_GEMMA ? "gelu_pytorch_tanh" : "silu");
  if (r->fam == D9_GEN_MIXTRAL)
    sb_printf(&b, "  \"num_local_experts\": %lld,\n  \"num_experts_per_tok\": 2,\n",
              (long long)r->E);
  if (r->fam == D9_GEN_QWEN3_MOE)
    sb_printf(&b, "  \"num_experts\": %lld,\n  \"moe_intermediate_size\": %lld,\n"
              "  \"num_experts_per_tok\": 2,\n", (long long)r->E, (long long)r->I);
  if (r->fam == D9_GEN_DEEPSEEK_V3) {
    const mla_dims m = mla_of(r);
    sb_printf(&b, "  \"q_lora_rank\": %lld,\n  \"kv_lora_rank\": %lld,\n"
              "  \"qk_nope_head_dim\": %lld,\n  \"qk_rope_head_dim\": %lld,\n"
              "  \"v_head_dim\": %lld,\n  \"n_routed_experts\": %lld,\n"
              "  \"n_shared_experts\": 1,\n  \"moe_intermediate_size\": %lld,\n"
              "  \"first_k_dense_replace\": 1,\n  \"num_experts_per_tok\": 2,\n"
              "  \"n_group\": 1,\n  \"topk_group\": 1,\n",
              (long long)m.q_lora, (long long)m.kv_lora, (long long)m.nope,
              (long long)m.rope, (long long)m.v, (long long)r->E, (long long)m.moe_i);
  }
  if (is_fp8(r->fam))
    sb_printf(&b, "  \"quantization_config\": {\"quant_method\": \"fp8\", "
              "\"fmt\": \"e4m3\", \"activation_scheme\": \"dynamic\", "
              "\"weight_block_size\": [%lld, %lld]},\n",
              (long long)r->b, (long long)r->b);
  if (r->fam == D9_GEN_GPT_OSS)
    sb_printf(&b, "  \"num_local_experts\": %lld,\n  \"num_experts_per_tok\": 2,\n"
              "  \"quantization_config\": {\"quant_method\": \"mxfp4\", "
              "\"modules_to_not_convert\": [\"model.layers.*.self_attn\", "
              "\"model.layers.*.mlp.router\", \"model.embed_tokens\", \"lm_head\"]},\n",
              (long long)r->E);
  sb_printf(&b, "  \"torch_dtype\": \"%s\"\n}\n", tdt);
  int rc = b.oom ? d9_diag_fail(diag, ENOMEM, "out of memory for config.json")
                 : write_small(dir, "config.json", b.s, diag);
  free(b.s);
  return rc;
}

static const char tokenizer_config[] =
    "{\n  \"tokenizer_class\": \"PreTrainedTokenizerFast\",\n"
    "  \"bos_token\": \"<s>\",\n  \"eos_token\": \"</s>\",\n"
    "  \"model_max_length\": 4096\n}\n";
static const char generation_config[] =
    "{\n  \"_from_model_config\": true,\n  \"bos_token_id\": 1,\n"
    "  \"eos_token_id\": 2,\n  \"transformers_version\": \"4.44.0\"\n}\n";

int d9_gen_write(const char *dir, const d9_gen_params *p, d9_diag *diag) {
  resolved r;
  glist l = {0};
  unsigned char *buf = NULL;
  uint64_t total;
  int rc;
  if (!dir) return d9_diag_fail(diag, EINVAL, "no output directory");
  if ((rc = prepare(p, &r, &l, &total, diag))) return rc;
  if ((rc = make_dirs(dir, diag))) goto out_list;
  if (!(buf = malloc(CHUNK))) {
    rc = d9_diag_fail(diag, ENOMEM, "%s: out of memory", dir);
    goto out_list;
  }
  for (int k = 0, from = 0; k < r.shards; k++) {
    int to = from;
    while (to < l.n && l.v[to].shard == k) to++;
    if ((rc = write_shard(dir, &l, from, to, &r, k, buf, diag))) goto out_buf;
    from = to;
  }
  if (r.shards > 1 && (rc = write_index(dir, &l, &r, total, diag)))
    goto out_buf;
  if ((rc = write_config(dir, &r, p, diag)) ||
      (rc = write_small(dir, "tokenizer_config.json", tokenizer_config, diag)) ||
      (rc = write_small(dir, "generation_config.json", generation_config, diag)))
    goto out_buf;
out_buf:
  free(buf);
out_list:
  list_free(&l);
  return rc;
}

/* ---- PEFT adapters (gen.h) ---- */

static const char *const lora_names[] = {
#define D9_X(e, name) name,
    D9_GEN_LORA_TARGET_TABLE(D9_X)
#undef D9_X
};

int d9_gen_lora_targets(const char *list, unsigned *out) {
  unsigned m = 0;
  const char *p = list;
  if (!list || !*list) return -EINVAL;
  for (;;) {
    size_t n = strcspn(p, ",");
    int k = 0;
    while (k < D9_GEN_LORA_TARGET_COUNT &&
           (strlen(lora_names[k]) != n || strncmp(lora_names[k], p, n)))
      k++;
    if (k == D9_GEN_LORA_TARGET_COUNT || (m & (1u << k))) return -EINVAL;
    m |= 1u << k;
    if (!p[n]) break;
    p += n + 1;
  }
  *out = m;
  return 0;
}

/* The adapter's tensors, layer by layer in module order. */
static int build_adapter(const resolved *r, const d9_gen_adapter *a, glist *l, d9_diag *diag) {
  const int64_t qd = r->nh * r->d, kvd = r->ng * r->d;
  const int64_t in[] = {r->H, r->H, r->H, qd, r->H, r->H, r->I};
  const int64_t out[] = {qd, kvd, kvd, r->H, r->I, r->I, r->H};
  for (int64_t i = 0; i < r->L; i++) {
    int first_a[2] = {-1, -1}; /* lora_A of q (attention) and gate (MLP) */
    for (int k = 0; k < D9_GEN_LORA_TARGET_COUNT; k++) {
      if (!(a->targets & (1u << k))) continue;
      const char *mod = k <= D9_GEN_LORA_O_BIT ? "self_attn" : "mlp";
      int rc, mlp = k > D9_GEN_LORA_O_BIT;
      char pre[160];
      snprintf(pre, sizeof pre, "base_model.model.model.layers.%lld.%s.%s_proj", (long long)i,
               mod, lora_names[k]);
      if ((rc = add(l, r->dt, K_WEIGHT, a->rank, in[k], diag, "%s.lora_A.weight", pre)) < 0)
        return rc;
      int shares = k == D9_GEN_LORA_K_BIT || k == D9_GEN_LORA_V_BIT || k == D9_GEN_LORA_UP_BIT;
      if (a->shared_a && shares && first_a[mlp] >= 0) l->v[rc].values_of = first_a[mlp] + 1;
      if ((k == D9_GEN_LORA_Q_BIT || k == D9_GEN_LORA_GATE_BIT) && first_a[mlp] < 0)
        first_a[mlp] = rc;
      if ((rc = add(l, r->dt, K_WEIGHT, out[k], a->rank, diag, "%s.lora_B.weight", pre)) < 0 ||
          (a->dora &&
           (rc = add(l, r->dt, K_NORM, out[k], -1, diag, "%s.lora_magnitude_vector", pre)) < 0))
        return rc;
    }
  }
  return 0;
}

static int write_adapter_config(const char *dir, const d9_gen_adapter *a, d9_diag *diag) {
  sbuf b = {0};
  sb_printf(&b, "{\n  \"base_model_name_or_path\": \"d9gen\",\n  \"bias\": \"none\",\n"
            "  \"lora_alpha\": %lld,\n  \"lora_dropout\": 0.0,\n  \"peft_type\": \"LORA\",\n"
            "  \"r\": %lld,\n  \"target_modules\": [", (long long)(2 * a->rank),
            (long long)a->rank);
  for (int k = 0, n = 0; k < D9_GEN_LORA_TARGET_COUNT; k++)
    if (a->targets & (1u << k)) sb_printf(&b, "%s\"%s_proj\"", n++ ? ", " : "", lora_names[k]);
  sb_printf(&b, "],\n  \"task_type\": \"CAUSAL_LM\",\n  \"use_dora\": %s\n}\n",
            a->dora ? "true" : "false");
  int rc = b.oom ? d9_diag_fail(diag, ENOMEM, "out of memory for adapter_config.json")
                 : write_small(dir, "adapter_config.json", b.s, diag);
  free(b.s);
  return rc;
}

int d9_gen_write_adapter(const char *dir, const d9_gen_params *p, const d9_gen_adapter *a,
                         d9_diag *diag) {
  resolved r;
  glist l = {0};
  unsigned char *buf = NULL;
  int rc;
  if (!dir || !a) return d9_diag_fail(diag, EINVAL, "no output directory or adapter");
  if ((rc = resolve(p, &r, diag))) return rc;
  if (is_moe(r.fam) || r.fam == D9_GEN_DEEPSEEK_FP8)
    return d9_diag_fail(diag, EINVAL, "adapters are generated for dense families (llama, "
                        "qwen2, gemma), not %s", d9_gen_family_name(r.fam));
  if ((rc = check_dim("lora rank", a->rank, 1, diag))) return rc;
  if (!a->targets || a->targets > D9_GEN_LORA_ALL)
    return d9_diag_fail(diag, EINVAL, "no lora target modules");
  if ((rc = build_adapter(&r, a, &l, diag))) goto out;
  if ((rc = make_dirs(dir, diag))) goto out;
  if (!(buf = malloc(CHUNK))) {
    rc = d9_diag_fail(diag, ENOMEM, "%s: out of memory", dir);
    goto out;
  }
  if ((rc = write_file(dir, "adapter_model.safetensors", &l, 0, l.n, &r, buf, diag)) ||
      (rc = write_adapter_config(dir, a, diag)) || (rc = write_config(dir, &r, p, diag)))
    goto out;
out:
  free(buf);
  list_free(&l);
  return rc;
}
