/* gen.h - a seeded synthetic HuggingFace-style checkpoint generator.
 *
 * d9_gen_write() fills a directory with:
 *   config.json                    the family's HF config (see below)
 *   model.safetensors              when shards == 1, or
 *   model-0000K-of-0000N.safetensors, K = 1..N, plus
 *   model.safetensors.index.json   {"metadata":{"total_size":T},
 *                                   "weight_map":{name: file, ...}}
 *                                  (T = sum of tensor data bytes)
 *   tokenizer_config.json, generation_config.json   tiny, for copy rules
 *
 * Tensors, in their natural order (this is also the shard order):
 *   model.embed_tokens.weight [V,H]
 *   per layer i, prefix model.layers.i.:
 *     input_layernorm.weight [H]
 *     self_attn.{q,k,v}_proj.weight [nh*d,H] [ng*d,H] [ng*d,H]
 *     self_attn.{q,k,v}_proj.bias   [nh*d] [ng*d] [ng*d]      if bias
 *     self_attn.o_proj.weight [H,nh*d]
 *     self_attn.{q,k}_norm.weight [d]                          qwen3, qwen3_moe
 *     post_attention_layernorm.weight [H]
 *     dense: mlp.{gate,up}_proj.weight [I,H], mlp.down_proj.weight [H,I]
 *     mixtral: block_sparse_moe.gate.weight [E,H],
 *       block_sparse_moe.experts.e.{w1,w3}.weight [I,H], .w2.weight [H,I]
 *     qwen3_moe: mlp.gate.weight [E,H],
 *       mlp.experts.e.{gate,up}_proj.weight [I,H], .down_proj.weight [H,I]
 *     gpt_oss: self_attn.o_proj.bias [H], self_attn.sinks [nh],
 *       mlp.router.weight [E,H], mlp.router.bias [E], and per P in
 *       gate_up_proj (R = 2I, C = H), down_proj (R = H, C = I):
 *       mlp.experts.P_blocks U8 [E,R,C/32,16] (random bytes: two E2M1
 *       codes each), mlp.experts.P_scales U8 [E,R,C/32] (E8M0 in
 *       118..133), mlp.experts.P_bias [E,R]
 *   model.norm.weight [H]
 *   lm_head.weight [V,H]                                       unless tied
 *   deepseek_fp8 and deepseek_v3, after everything else: for each F8_E4M3 weight
 *     "X.weight" [M,N], "X.weight_scale_inv" F32 [ceil(M/b), ceil(N/b)]
 *
 * deepseek_fp8 is llama-shaped; its 2-D layer linears (q/k/v/o and
 * gate/up/down) are F8_E4M3, everything else is in `dtype`. With shards >=
 * 2 at least one weight and its scale land in different files. Its
 * config.json says model_type "deepseek_v3" (DeepseekV3ForCausalLM), the
 * family whose FP8 format it has; the others their HF names (llama, qwen2,
 * mixtral, qwen3_moe, gemma, gpt_oss, qwen3, phi3, deepseek_v3). gpt_oss (GptOssForCausalLM) has
 * q/k/v biases on by default, hidden and intermediate multiples of 32, and
 * quantization_config {"quant_method": "mxfp4", ...} in config.json.
 *
 * qwen3 is llama-shaped plus self_attn.{q,k}_norm.weight [d], head_dim 32
 * by default (written to config.json; nh*d != H).
 *
 * phi3 fuses: per layer, prefix model.layers.i.:
 *   input_layernorm.weight [H], self_attn.qkv_proj.weight [(nh+2ng)*d, H]
 *   (rows [q; k; v], not interleaved), self_attn.o_proj.weight [H,nh*d],
 *   post_attention_layernorm.weight [H], mlp.gate_up_proj.weight [2I,H]
 *   (rows [gate; up]), mlp.down_proj.weight [H,I]
 *
 * deepseek_v3 is DeepSeek-V3's real layout, FP8 as deepseek_fp8 (scales
 * last, kept apart from some weight when shards >= 2). MLA sizes derive from
 * the parameters: qk_nope_head_dim = v_head_dim = d, qk_rope_head_dim =
 * max(1, d/2), q_lora_rank = max(1, 3H/4), kv_lora_rank = max(1, H/2),
 * moe_intermediate_size mI = max(1, I/2), first_k_dense_replace 1,
 * n_shared_experts 1. Per layer i, prefix model.layers.i.:
 *   input_layernorm.weight [H]
 *   self_attn.q_a_proj.weight [q_lora,H] F8, q_a_layernorm.weight [q_lora],
 *   self_attn.q_b_proj.weight [nh*(nope+rope), q_lora] F8,
 *   self_attn.kv_a_proj_with_mqa.weight [kv_lora+rope, H] F8,
 *   self_attn.kv_a_layernorm.weight [kv_lora],
 *   self_attn.kv_b_proj.weight [nh*(nope+v), kv_lora] F8,
 *   self_attn.o_proj.weight [H, nh*v] F8, post_attention_layernorm.weight [H]
 *   i == 0 (dense): mlp.{gate,up}_proj.weight [I,H] F8, down_proj [H,I] F8
 *   else (MoE): mlp.gate.weight [E,H], mlp.gate.e_score_correction_bias [E]
 *     F32, mlp.experts.e.{gate,up}_proj.weight [mI,H] F8, .down_proj [H,mI]
 *     F8, mlp.shared_experts.{gate,up}_proj.weight [mI,H] F8, down [H,mI] F8
 * Its config.json carries the MLA and MoE keys DeepseekV3Config reads
 * (no head_dim).
 *
 * Values depend only on (seed, tensor name), never on sharding: a
 * splitmix64 stream seeded from seed ^ FNV-1a(name) yields uniform u in
 * [-1, 1) (24-bit), converted with round-to-nearest-even:
 *   linear weights, embeddings, biases, router gates   u
 *   norms                                              1 + u/10 (gemma: u/10)
 *   F8_E4M3 weights                                    448 * u
 *   F32 scales (weight_scale_inv)                      in [1e-3, 1e-1)
 * Data is little-endian and streamed in 1 MiB chunks, so memory stays
 * bounded whatever the checkpoint size. Every file is written under a
 * temporary name in the directory and renamed into place.
 */
#ifndef D9_GEN_H
#define D9_GEN_H

#include <stdint.h>

#include "../kernels/dtype.h"
#include "../mapper/diag.h"

/* X(enum suffix, name) */
#define D9_GEN_FAMILY_TABLE(X) \
  X(LLAMA, "llama")            \
  X(QWEN2, "qwen2")            \
  X(MIXTRAL, "mixtral")        \
  X(QWEN3_MOE, "qwen3_moe")    \
  X(DEEPSEEK_FP8, "deepseek_fp8") \
  X(GEMMA, "gemma")            \
  X(GPT_OSS, "gpt_oss")        \
  X(QWEN3, "qwen3")            \
  X(PHI3, "phi3")              \
  X(DEEPSEEK_V3, "deepseek_v3")

typedef enum {
#define D9_X(e, name) D9_GEN_##e,
  D9_GEN_FAMILY_TABLE(D9_X)
#undef D9_X
  D9_GEN_FAMILY_COUNT
} d9_gen_family;

typedef struct d9_gen_params {
  int family;           /* a d9_gen_family; -1 = unknown (rejected) */
  int64_t layers;       /* L, >= 1 */
  int64_t hidden;       /* H */
  int64_t heads;        /* nh, query heads */
  int64_t kv_heads;     /* ng, KV groups; heads % kv_heads == 0 */
  int64_t head_dim;     /* d; 0 = hidden / heads (which must divide). When
                           nonzero it is written to config.json ("head_dim") */
  int64_t intermediate; /* I; per expert for the MoE families */
  int64_t vocab;        /* V */
  int64_t experts;      /* E; MoE families only (>= 1 there, ignored else) */
  d9_dtype dtype;       /* D9_F32, D9_F16 or D9_BF16: the main dtype */
  int bias;             /* q/k/v biases: -1 = family default (qwen2, gpt_oss on), 0, 1 */
  int tied;             /* tie_word_embeddings: -1 = family default
                           (qwen2, gemma tied), 0, 1 */
  int shards;           /* safetensors files, 1 .. number of tensors */
  int64_t block;        /* FP8 block size b (deepseek_fp8, deepseek_v3), >= 1 */
  uint64_t seed;
} d9_gen_params;

/* Small defaults for `family` (a name as d9_gen_family_parse takes; NULL =
 * "llama"): L=2, H=64, nh=4, ng=2, I=128, V=256, BF16, shards 1, block 128,
 * seed 1; E=4 for the MoE families (mixtral, qwen3_moe, gpt_oss, deepseek_v3);
 * gemma and qwen3 head_dim 32; deepseek_v3 kv_heads = heads. An unknown name sets
 * family to -1, which d9_gen_write rejects. */
void d9_gen_defaults(d9_gen_params *p, const char *family);

/* The family for a name ("llama", "qwen2", "mixtral", "qwen3_moe",
 * "deepseek_fp8", "gemma", "gpt_oss", "qwen3", "phi3", "deepseek_v3"), or -1
 * if unknown or NULL. */
int d9_gen_family_parse(const char *name);
/* The name of a family, or "?" when out of range. Static storage. */
const char *d9_gen_family_name(int family);

/* Validate p and report what d9_gen_write would produce without writing:
 * the number of tensors and the sum of their data bytes. Either out
 * pointer may be NULL. Returns 0, or -EINVAL (bad parameter, named in
 * diag) / -EOVERFLOW / -ENOMEM. */
int d9_gen_count(const d9_gen_params *p, int *ntensors, uint64_t *data_bytes,
                 d9_diag *diag);

/* Write the checkpoint into dir, creating it (and missing parents) if
 * needed; existing files of the same names are replaced. Returns 0, or
 * -errno with diag holding one line naming the parameter or the path and
 * the reason. Parameters are validated before anything is created. */
int d9_gen_write(const char *dir, const d9_gen_params *p, d9_diag *diag);

/* ---- PEFT adapters ----
 *
 * d9_gen_write_adapter() writes a LoRA (or DoRA) adapter for the base
 * model p describes (its layers, hidden, heads, kv_heads, head_dim,
 * intermediate, dtype, seed; a dense family: llama, qwen2, gemma), as PEFT
 * saves one:
 *   adapter_model.safetensors   per layer i and target module m in the
 *                               order q, k, v, o, gate, up, down, with
 *                               P = base_model.model.model.layers.i. and
 *                               M = self_attn.m_proj (mlp.m_proj for MLP):
 *     P.M.lora_A.weight [r, in]
 *     P.M.lora_B.weight [out, r]
 *     P.M.lora_magnitude_vector [out]                 DoRA only
 *   adapter_config.json         peft_type LORA, r, lora_alpha 2r,
 *                               target_modules, use_dora
 *   config.json                 the base model's (PEFT does not save it; a
 *                               conversion needs its head counts)
 * in/out: q [H -> nh*d], k and v [H -> ng*d], o [nh*d -> H], gate and up
 * [H -> I], down [I -> H]. Values as for the base model: lora_A and lora_B
 * u, magnitudes 1 + u/10. With shared_a, the lora_A of k and v hold q's
 * values and up's holds gate's (the form NeMo AutoModel's to_hf writes,
 * one lora_A per combined projection duplicated); without it each has its
 * own (an adapter trained on separate projections). */
#define D9_GEN_LORA_TARGET_TABLE(X) \
  X(Q, "q") X(K, "k") X(V, "v") X(O, "o") X(GATE, "gate") X(UP, "up") X(DOWN, "down")

enum {
#define D9_X(e, name) D9_GEN_LORA_##e##_BIT,
  D9_GEN_LORA_TARGET_TABLE(D9_X)
#undef D9_X
  D9_GEN_LORA_TARGET_COUNT
};
#define D9_GEN_LORA_ALL ((1u << D9_GEN_LORA_TARGET_COUNT) - 1)

typedef struct d9_gen_adapter {
  int64_t rank;      /* r, >= 1 */
  unsigned targets;  /* bit (1 << D9_GEN_LORA_*_BIT) per target module; nonzero */
  int dora;          /* also write lora_magnitude_vector */
  int shared_a;      /* k, v repeat q's lora_A; up repeats gate's */
} d9_gen_adapter;

/* Parse a comma-separated target list ("q,v", "q,k,v,o,gate,up,down") into
 * a bit mask. 0 or -EINVAL (an unknown or repeated name, an empty list). */
int d9_gen_lora_targets(const char *list, unsigned *out);

/* Write the adapter into dir (created if needed). 0 or -errno with diag. */
int d9_gen_write_adapter(const char *dir, const d9_gen_params *p, const d9_gen_adapter *a,
                         d9_diag *diag);

#endif
