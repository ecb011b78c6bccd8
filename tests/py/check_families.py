"""Unmodified-loader checks for the model-family specs (qwen3-to-megatron,
qwen3-moe-to-megatron, deepseek-v3-to-megatron, phi3-to-llama): the real
`safetensors` package opens every file of a mounted tree, and every tensor
equals an independent numpy computation from the source checkpoint: the
fused GQA QKV by its row formula (docs/design.md), [gate; up] row
concatenation, the FP8 block dequantisation by the format definition (one
F32 multiply, round to nearest even to BF16), Phi-3's row splits, and each
family's Megatron-Core names written out here one by one.

With `ranks`, the per-rank trees of a mount made with -o tp=T,ep=P are
checked against the mount's full view (itself checked above): each rank
holds exactly its slice, by an independent implementation of the styles
(docs/design.md) chosen here by the Megatron-Core parameter each name is:
linear_qkv (KV groups a multiple of T: whole groups, chunk t of the rows),
linear_q_up_proj / linear_kv_up_proj column, linear_fc1 gated [G_t; U_t],
linear_proj / linear_fc2 row, embedding and output_layer vocab (rows
padded with zeros to a multiple of T), everything else replicated; expert
E's linear_fc1/fc2 only on its EP owner (the first E % P ranks own one
more), renumbered from the owner's first expert, not split by TP.

usage: check_families.py SPEC_NAME SRC_DIR TREE_DIR
       check_families.py ranks SPEC_NAME FULL_TREE_DIR MNT T P
"""
import re
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from check_megatron import qkv_reference  # noqa: E402
from check_specs import f32_to_bf16, read_raw, same, to_f32  # noqa: E402


def gqa(cfg):
    nh = cfg["num_attention_heads"]
    ng = cfg.get("num_key_value_heads") or nh
    d = cfg.get("head_dim") or cfg["hidden_size"] // nh
    return nh, ng, d


def attention(S, cfg, p, t, want):
    """Llama-style attention with q/k norms (Qwen3) in Megatron names."""
    nh, ng, d = gqa(cfg)
    dt = S[p + "self_attn.q_proj.weight"][0]
    want[t + "self_attention.linear_qkv.weight"] = (dt, qkv_reference(
        *(S[p + f"self_attn.{x}_proj.weight"][1] for x in "qkv"), nh, ng, d))
    want[t + "self_attention.linear_qkv.layer_norm_weight"] = S[p + "input_layernorm.weight"]
    want[t + "self_attention.linear_proj.weight"] = S[p + "self_attn.o_proj.weight"]
    want[t + "self_attention.q_layernorm.weight"] = S[p + "self_attn.q_norm.weight"]
    want[t + "self_attention.k_layernorm.weight"] = S[p + "self_attn.k_norm.weight"]


def ends(S, cfg, want):
    want["embedding.word_embeddings.weight"] = S["model.embed_tokens.weight"]
    want["decoder.final_layernorm.weight"] = S["model.norm.weight"]
    if not cfg.get("tie_word_embeddings"):
        want["output_layer.weight"] = S["lm_head.weight"]


def cat(S, names):
    return (S[names[0]][0], np.concatenate([S[n][1] for n in names], 0))


def expect_qwen3(S, cfg):
    want = {}
    ends(S, cfg, want)
    for L in range(cfg["num_hidden_layers"]):
        p, t = f"model.layers.{L}.", f"decoder.layers.{L}."
        attention(S, cfg, p, t, want)
        want[t + "mlp.linear_fc1.weight"] = cat(S, [p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"])
        want[t + "mlp.linear_fc1.layer_norm_weight"] = S[p + "post_attention_layernorm.weight"]
        want[t + "mlp.linear_fc2.weight"] = S[p + "mlp.down_proj.weight"]
    return want


def expect_qwen3_moe(S, cfg):
    want = {}
    ends(S, cfg, want)
    for L in range(cfg["num_hidden_layers"]):
        p, t = f"model.layers.{L}.", f"decoder.layers.{L}."
        attention(S, cfg, p, t, want)
        want[t + "pre_mlp_layernorm.weight"] = S[p + "post_attention_layernorm.weight"]
        want[t + "mlp.router.weight"] = S[p + "mlp.gate.weight"]
        for e in range(cfg["num_experts"]):
            x = p + f"mlp.experts.{e}."
            want[t + f"mlp.experts.linear_fc1.weight{e}"] = cat(S, [x + "gate_proj.weight", x + "up_proj.weight"])
            want[t + f"mlp.experts.linear_fc2.weight{e}"] = S[x + "down_proj.weight"]
    return want


def dequant(S, cfg, name):
    """BF16 of f32(w[i, j]) * s[i / b0, j / b1]"""
    b0, b1 = cfg["quantization_config"]["weight_block_size"]
    wdt, w = S[name]
    sdt, s = S[name + "_scale_inv"]
    M, N = w.shape
    full = np.repeat(np.repeat(to_f32(sdt, s), b0, 0), b1, 1)[:M, :N]
    return to_f32(wdt, w) * full  # one F32 multiply


def bf16(x):
    return ("BF16", f32_to_bf16(x.astype(np.float32)))


def expect_deepseek_v3(S, cfg):
    want = {}
    ends(S, cfg, want)
    # the names, one by one, as Megatron-Core's MLA layer with TE has them
    attn = {"self_attn.q_a_proj": "self_attention.linear_q_down_proj",
            "self_attn.q_b_proj": "self_attention.linear_q_up_proj",
            "self_attn.kv_a_proj_with_mqa": "self_attention.linear_kv_down_proj",
            "self_attn.kv_b_proj": "self_attention.linear_kv_up_proj",
            "self_attn.o_proj": "self_attention.linear_proj"}
    for L in range(cfg["num_hidden_layers"]):
        p, t = f"model.layers.{L}.", f"decoder.layers.{L}."
        want[t + "input_layernorm.weight"] = S[p + "input_layernorm.weight"]
        for hf, mg in attn.items():
            want[t + mg + ".weight"] = bf16(dequant(S, cfg, p + hf + ".weight"))
        want[t + "self_attention.linear_q_up_proj.layer_norm_weight"] = S[p + "self_attn.q_a_layernorm.weight"]
        want[t + "self_attention.linear_kv_up_proj.layer_norm_weight"] = S[p + "self_attn.kv_a_layernorm.weight"]

        def fc(hf, mg):
            g, u = (dequant(S, cfg, hf + x + "_proj.weight") for x in ("gate", "up"))
            want[mg + "linear_fc1.weight"] = bf16(np.concatenate([g, u], 0))

        if L < cfg["first_k_dense_replace"]:
            fc(p + "mlp.", t + "mlp.")
            want[t + "mlp.linear_fc1.layer_norm_weight"] = S[p + "post_attention_layernorm.weight"]
            want[t + "mlp.linear_fc2.weight"] = bf16(dequant(S, cfg, p + "mlp.down_proj.weight"))
            continue
        want[t + "pre_mlp_layernorm.weight"] = S[p + "post_attention_layernorm.weight"]
        want[t + "mlp.router.weight"] = S[p + "mlp.gate.weight"]
        want[t + "mlp.router.expert_bias"] = S[p + "mlp.gate.e_score_correction_bias"]
        for e in range(cfg["n_routed_experts"]):
            x = p + f"mlp.experts.{e}."
            g, u = (dequant(S, cfg, x + y + "_proj.weight") for y in ("gate", "up"))
            want[t + f"mlp.experts.linear_fc1.weight{e}"] = bf16(np.concatenate([g, u], 0))
            want[t + f"mlp.experts.linear_fc2.weight{e}"] = bf16(dequant(S, cfg, x + "down_proj.weight"))
        fc(p + "mlp.shared_experts.", t + "mlp.shared_experts.")
        want[t + "mlp.shared_experts.linear_fc2.weight"] = bf16(
            dequant(S, cfg, p + "mlp.shared_experts.down_proj.weight"))
    return want


def expect_phi3(S, cfg):
    """qkv_proj rows [q; k; v] and gate_up_proj rows [gate; up], as
    transformers' Phi3Attention slices its output and Phi3MLP chunks it"""
    nh, ng, d = gqa(cfg)
    I = cfg["intermediate_size"]
    want = dict(S)
    for L in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{L}."
        dt, qkv = want.pop(p + "self_attn.qkv_proj.weight")
        cuts = [0, nh * d, (nh + ng) * d, (nh + 2 * ng) * d]
        assert qkv.shape[0] == cuts[3], f"{p}qkv_proj: {qkv.shape[0]} rows, want {cuts[3]}"
        for k, x in enumerate("qkv"):
            want[p + f"self_attn.{x}_proj.weight"] = (dt, qkv[cuts[k]:cuts[k + 1]])
        dt, gu = want.pop(p + "mlp.gate_up_proj.weight")
        assert gu.shape[0] == 2 * I, f"{p}gate_up_proj: {gu.shape[0]} rows, want {2 * I}"
        want[p + "mlp.gate_proj.weight"] = (dt, gu[:I])
        want[p + "mlp.up_proj.weight"] = (dt, gu[I:])
    return want


EXPECT = {"qwen3-to-megatron": expect_qwen3,
          "qwen3-moe-to-megatron": expect_qwen3_moe,
          "deepseek-v3-to-megatron": expect_deepseek_v3,
          "phi3-to-llama": expect_phi3}


def tp_slice(name, a, t, T):
    if T == 1:
        return a
    if name.endswith("linear_fc1.weight"):  # gated: [G_t; U_t]
        g, u = np.split(a, 2, 0)
        return np.concatenate([np.split(g, T, 0)[t], np.split(u, T, 0)[t]], 0)
    if re.search(r"(linear_proj|linear_fc2)\.weight$", name):
        return np.split(a, T, 1)[t]
    if name in ("embedding.word_embeddings.weight", "output_layer.weight"):
        rows = -(-a.shape[0] // T) * T
        a = np.concatenate([a, np.zeros((rows - a.shape[0],) + a.shape[1:], a.dtype)], 0)
        return np.split(a, T, 0)[t]
    if re.search(r"(linear_qkv|linear_q_up_proj|linear_kv_up_proj)\.weight$", name):
        return np.split(a, T, 0)[t]
    return a


def ranks(spec, full, mnt, T, P):
    T, P = int(T), int(P)
    F = read_raw(full)
    expert = re.compile(r"^(.*\.mlp\.experts\.linear_fc[12]\.weight)(\d+)$")
    n_exp = {}
    for k in F:
        m = expert.match(k)
        if m:
            n_exp[m.group(1)] = n_exp.get(m.group(1), 0) + 1
    assert P == 1 or n_exp, f"{spec}: ep={P} but the full view has no expert tensors"
    checked = 0
    for t in range(T):
        for e in range(P):
            rank = f"tp{t}" + (f"-ep{e}" if P > 1 else "")
            R = read_raw(os.path.join(mnt, "ranks", rank))
            want = {}
            for k, (dt, a) in F.items():
                m = expert.match(k)
                if m:
                    n = n_exp[m.group(1)]
                    base, rem = divmod(n, P)
                    start, count = e * base + min(e, rem), base + (e < rem)
                    i = int(m.group(2))
                    if start <= i < start + count:
                        want[f"{m.group(1)}{i - start}"] = (dt, a)
                    continue
                want[k] = (dt, tp_slice(k, a, t, T))
            assert set(R) == set(want), (f"ranks/{rank}: extra {sorted(set(R) - set(want))[:4]}, "
                                         f"missing {sorted(set(want) - set(R))[:4]}")
            for k in want:
                same(f"ranks/{rank}: {k}", R[k], want[k])
            checked += len(want)
    print(f"ok: {spec}: tp={T} ep={P}: {T * P} rank trees, {checked} tensors equal their slices "
          f"of the full view")


def main(spec, src, tree, *rest):
    if spec == "ranks":
        return ranks(src, tree, *rest)
    cfg = json.load(open(os.path.join(src, "config.json")))
    S, T = read_raw(src), read_raw(tree)
    want = EXPECT[spec](S, cfg)
    assert set(T) == set(want), (f"extra {sorted(set(T) - set(want))[:5]}, "
                                 f"missing {sorted(set(want) - set(T))[:5]}")
    for k in want:
        same(k, T[k], want[k])
    tcfg = json.load(open(os.path.join(tree, "config.json")))
    if spec == "deepseek-v3-to-megatron":
        assert "quantization_config" not in tcfg and tcfg["torch_dtype"] == "bfloat16", "config not patched"
    print(f"ok: {spec}: {len(T)} tensors equal the numpy reference")


if __name__ == "__main__":
    main(*sys.argv[1:])
