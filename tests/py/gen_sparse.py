#!/usr/bin/env python3
"""gen_sparse.py - header-only checkpoints of real model shapes.

usage: gen_sparse.py MODEL OUTDIR [--shard-gb N]
       MODEL: llama3-70b | mixtral-8x22b | deepseek-v3 | tiny (a 4-layer
       Llama for tests)

Writes OUTDIR/model-0000k-of-0000n.safetensors with the real header of each
shard (the tensors' names, dtypes, shapes and offsets as the Hugging Face
checkpoints have them) and the data section left as a hole (ftruncate: no
byte of tensor data is written, a 1.3 TB DeepSeek-V3 takes a few MB of
disk), plus model.safetensors.index.json and config.json. Every tensor
reads as zeros. For deepseek-v3 it also writes OUTDIR/ranks-spec.json: the
HF layout passed through, with the parallel styles and pipeline stages of a
tp x ep x pp deployment (MLA projections column/row, experts by EP, dense
and shared-expert MLPs column/row, vocab-split embedding and head), since
no shipped spec splits that layout. Shards are cut at --shard-gb (5) as
save_pretrained does. Only the standard library is used.
"""
import argparse
import json
import os
import struct
import sys

BF16, F32, F8 = "BF16", "F32", "F8_E4M3"
SIZE = {BF16: 2, F32: 4, F8: 1}


def llama(L, H, nh, ng, inter, vocab, tied=False):
    d = H // nh
    t = [("model.embed_tokens.weight", BF16, [vocab, H])]
    for i in range(L):
        p = "model.layers.%d." % i
        t += [(p + "input_layernorm.weight", BF16, [H]),
              (p + "self_attn.q_proj.weight", BF16, [nh * d, H]),
              (p + "self_attn.k_proj.weight", BF16, [ng * d, H]),
              (p + "self_attn.v_proj.weight", BF16, [ng * d, H]),
              (p + "self_attn.o_proj.weight", BF16, [H, nh * d]),
              (p + "post_attention_layernorm.weight", BF16, [H]),
              (p + "mlp.gate_proj.weight", BF16, [inter, H]),
              (p + "mlp.up_proj.weight", BF16, [inter, H]),
              (p + "mlp.down_proj.weight", BF16, [H, inter])]
    t += [("model.norm.weight", BF16, [H])]
    if not tied:
        t += [("lm_head.weight", BF16, [vocab, H])]
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H,
           "num_attention_heads": nh, "num_key_value_heads": ng, "num_hidden_layers": L,
           "intermediate_size": inter, "vocab_size": vocab, "tie_word_embeddings": tied,
           "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16"}
    return t, cfg


def mixtral(L, H, nh, ng, inter, vocab, E):
    d = H // nh
    t = [("model.embed_tokens.weight", BF16, [vocab, H])]
    for i in range(L):
        p = "model.layers.%d." % i
        t += [(p + "input_layernorm.weight", BF16, [H]),
              (p + "self_attn.q_proj.weight", BF16, [nh * d, H]),
              (p + "self_attn.k_proj.weight", BF16, [ng * d, H]),
              (p + "self_attn.v_proj.weight", BF16, [ng * d, H]),
              (p + "self_attn.o_proj.weight", BF16, [H, nh * d]),
              (p + "post_attention_layernorm.weight", BF16, [H]),
              (p + "block_sparse_moe.gate.weight", BF16, [E, H])]
        for e in range(E):
            q = p + "block_sparse_moe.experts.%d." % e
            t += [(q + "w1.weight", BF16, [inter, H]), (q + "w2.weight", BF16, [H, inter]),
                  (q + "w3.weight", BF16, [inter, H])]
    t += [("model.norm.weight", BF16, [H]), ("lm_head.weight", BF16, [vocab, H])]
    cfg = {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_size": H,
           "num_attention_heads": nh, "num_key_value_heads": ng, "num_hidden_layers": L,
           "intermediate_size": inter, "vocab_size": vocab, "num_local_experts": E,
           "num_experts_per_tok": 2, "tie_word_embeddings": False, "rms_norm_eps": 1e-5,
           "torch_dtype": "bfloat16"}
    return t, cfg


def fp8(name, shape, b=128):
    """An FP8 linear weight and its block scale_inv."""
    return [(name + ".weight", F8, shape),
            (name + ".weight_scale_inv", F32, [-(-shape[0] // b), -(-shape[1] // b)])]


def deepseek_v3():
    L, H, vocab, nh = 61, 7168, 129280, 128
    q_lora, kv_lora, nope, rope, vd = 1536, 512, 128, 64, 128
    inter, moe_inter, E, dense = 18432, 2048, 256, 3
    t = [("model.embed_tokens.weight", BF16, [vocab, H])]
    for i in range(L):
        p = "model.layers.%d." % i
        t += [(p + "input_layernorm.weight", BF16, [H])]
        t += fp8(p + "self_attn.q_a_proj", [q_lora, H])
        t += [(p + "self_attn.q_a_layernorm.weight", BF16, [q_lora])]
        t += fp8(p + "self_attn.q_b_proj", [nh * (nope + rope), q_lora])
        t += fp8(p + "self_attn.kv_a_proj_with_mqa", [kv_lora + rope, H])
        t += [(p + "self_attn.kv_a_layernorm.weight", BF16, [kv_lora])]
        t += fp8(p + "self_attn.kv_b_proj", [nh * (nope + vd), kv_lora])
        t += fp8(p + "self_attn.o_proj", [H, nh * vd])
        t += [(p + "post_attention_layernorm.weight", BF16, [H])]
        if i < dense:
            t += fp8(p + "mlp.gate_proj", [inter, H]) + fp8(p + "mlp.up_proj", [inter, H]) + \
                fp8(p + "mlp.down_proj", [H, inter])
            continue
        t += [(p + "mlp.gate.weight", BF16, [E, H]),
              (p + "mlp.gate.e_score_correction_bias", F32, [E])]
        for e in range(E):
            q = p + "mlp.experts.%d." % e
            t += fp8(q + "gate_proj", [moe_inter, H]) + fp8(q + "up_proj", [moe_inter, H]) + \
                fp8(q + "down_proj", [H, moe_inter])
        q = p + "mlp.shared_experts."
        t += fp8(q + "gate_proj", [moe_inter, H]) + fp8(q + "up_proj", [moe_inter, H]) + \
            fp8(q + "down_proj", [H, moe_inter])
    t += [("model.norm.weight", BF16, [H]), ("lm_head.weight", BF16, [vocab, H])]
    cfg = {"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
           "hidden_size": H, "num_attention_heads": nh, "num_key_value_heads": nh,
           "num_hidden_layers": L, "intermediate_size": inter, "moe_intermediate_size": moe_inter,
           "n_routed_experts": E, "n_shared_experts": 1, "first_k_dense_replace": dense,
           "q_lora_rank": q_lora, "kv_lora_rank": kv_lora, "qk_nope_head_dim": nope,
           "qk_rope_head_dim": rope, "v_head_dim": vd, "vocab_size": vocab,
           "tie_word_embeddings": False, "torch_dtype": "bfloat16",
           "quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
                                   "activation_scheme": "dynamic",
                                   "weight_block_size": [128, 128]}}
    return t, cfg


DSV3_SPEC = {
    "d9dfs_spec": 1,
    "description": "DeepSeek-V3 in its HF layout, split for tp x ep x pp ranks (measurements)",
    "applies_to": "any",
    "passthrough": True,
    "parallel": [
        {"pattern": "model.layers.{L}.mlp.experts.{E}.{rest*}", "style": "expert", "capture": "E",
         "renumber": False},
        {"pattern": "model.layers.{L}.self_attn.q_b_proj.{rest*}", "style": "column"},
        {"pattern": "model.layers.{L}.self_attn.kv_b_proj.{rest*}", "style": "column"},
        {"pattern": "model.layers.{L}.self_attn.o_proj.{rest*}", "style": "row"},
        {"pattern": "model.layers.{L}.mlp.gate_proj.{rest*}", "style": "column"},
        {"pattern": "model.layers.{L}.mlp.up_proj.{rest*}", "style": "column"},
        {"pattern": "model.layers.{L}.mlp.down_proj.{rest*}", "style": "row"},
        {"pattern": "model.layers.{L}.mlp.shared_experts.gate_proj.{rest*}", "style": "column"},
        {"pattern": "model.layers.{L}.mlp.shared_experts.up_proj.{rest*}", "style": "column"},
        {"pattern": "model.layers.{L}.mlp.shared_experts.down_proj.{rest*}", "style": "row"},
        {"pattern": "model.embed_tokens.weight", "style": "vocab"},
        {"pattern": "lm_head.weight", "style": "vocab"},
    ],
    "pipeline": {"layers": "model.layers.{L}.{rest*}", "first": ["model.embed_tokens.weight"],
                 "last": ["model.norm.weight", "lm_head.weight"]},
}

MODELS = {
    "llama3-70b": lambda: llama(80, 8192, 64, 8, 28672, 128256),
    "mixtral-8x22b": lambda: mixtral(56, 6144, 48, 8, 16384, 32768, 8),
    "deepseek-v3": deepseek_v3,
    "tiny": lambda: llama(4, 512, 8, 8, 1024, 8192),
}


def nbytes(dtype, shape):
    n = SIZE[dtype]
    for s in shape:
        n *= s
    return n


def write(tensors, cfg, out, shard_bytes):
    os.makedirs(out, exist_ok=True)
    shards, cur, size = [], [], 0
    for t in tensors:
        b = nbytes(t[1], t[2])
        if cur and size + b > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append(t)
        size += b
    if cur:
        shards.append(cur)
    wmap, total = {}, 0
    for k, chunk in enumerate(shards):
        fname = "model-%05d-of-%05d.safetensors" % (k + 1, len(shards))
        hdr, off = {"__metadata__": {"format": "pt"}}, 0
        for name, dtype, shape in chunk:
            b = nbytes(dtype, shape)
            hdr[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + b]}
            off += b
            wmap[name] = fname
        js = json.dumps(hdr, separators=(",", ":")).encode()
        js += b" " * (-len(js) % 8)
        with open(os.path.join(out, fname), "wb") as f:
            f.write(struct.pack("<Q", len(js)))
            f.write(js)
            f.truncate(8 + len(js) + off)  # the data: a hole
        total += off
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wmap}, f)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    return len(shards), len(tensors), total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", choices=sorted(MODELS))
    ap.add_argument("outdir")
    ap.add_argument("--shard-gb", type=float, default=5.0)
    a = ap.parse_args()
    tensors, cfg = MODELS[a.model]()
    n, nt, total = write(tensors, cfg, a.outdir, int(a.shard_gb * 1e9))
    if a.model == "deepseek-v3":
        with open(os.path.join(a.outdir, "ranks-spec.json"), "w") as f:
            json.dump(DSV3_SPEC, f, indent=1)
    print("%s: %d shards, %d tensors, %d bytes (sparse)" % (a.outdir, n, nt, total))


if __name__ == "__main__":
    sys.exit(main())
