"""Unmodified-loader check: the real `safetensors` package opens every file
of a d9dfs tree made with mounts/llama-to-megatron.json, and every tensor
equals an independent numpy implementation of the documented formulas
(docs/design.md, "Exact layouts"), computed from the source checkpoint.

usage: check_megatron.py SRC_DIR TREE_DIR
"""
import glob
import json
import os
import sys

import numpy as np
from safetensors import safe_open


def load_dir(d):
    out, where = {}, {}
    files = sorted(glob.glob(os.path.join(d, "*.safetensors")))
    assert files, f"{d}: no safetensors files"
    for f in files:
        with safe_open(f, framework="np") as h:
            for k in h.keys():
                assert k not in out, f"{k} in two files"
                out[k] = h.get_tensor(k)
                where[k] = os.path.basename(f)
    return out, where


def qkv_reference(q, k, v, nh, ng, d):
    """Megatron's fused layout by the row formula, one row at a time."""
    g = nh // ng
    w = (g + 2) * d
    rows = (nh + 2 * ng) * d
    out = np.empty((rows,) + q.shape[1:], dtype=q.dtype)
    for r in range(rows):
        grp, o = divmod(r, w)
        if o < g * d:
            out[r] = q[grp * g * d + o]
        elif o < (g + 1) * d:
            out[r] = k[grp * d + (o - g * d)]
        else:
            out[r] = v[grp * d + (o - (g + 1) * d)]
    return out


def megatron_reference(S, cfg):
    """The full view of llama-/mixtral-to-megatron.json computed from the
    source tensors S (name -> numpy array) by the formulas of docs/design.md."""
    nh = cfg["num_attention_heads"]
    ng = cfg.get("num_key_value_heads") or nh
    d = cfg.get("head_dim") or cfg["hidden_size"] // nh
    out = {"embedding.word_embeddings.weight": S["model.embed_tokens.weight"],
           "decoder.final_layernorm.weight": S["model.norm.weight"]}
    if not cfg.get("tie_word_embeddings"):
        # tied: Megatron-Core's shared embedding, no output layer of its own
        out["output_layer.weight"] = S["lm_head.weight"]
    for L in range(cfg["num_hidden_layers"]):
        p, t = f"model.layers.{L}.", f"decoder.layers.{L}."
        for suf in ("weight", "bias"):
            if p + f"self_attn.q_proj.{suf}" in S:
                out[t + f"self_attention.linear_qkv.{suf}"] = qkv_reference(
                    *(S[p + f"self_attn.{x}_proj.{suf}"] for x in "qkv"), nh, ng, d)
        out[t + "self_attention.linear_qkv.layer_norm_weight"] = S[p + "input_layernorm.weight"]
        out[t + "self_attention.linear_proj.weight"] = S[p + "self_attn.o_proj.weight"]
        if p + "mlp.gate_proj.weight" in S:
            out[t + "mlp.linear_fc1.weight"] = np.concatenate(
                [S[p + "mlp.gate_proj.weight"], S[p + "mlp.up_proj.weight"]], 0)
            out[t + "mlp.linear_fc1.layer_norm_weight"] = S[p + "post_attention_layernorm.weight"]
            out[t + "mlp.linear_fc2.weight"] = S[p + "mlp.down_proj.weight"]
        else:
            out[t + "pre_mlp_layernorm.weight"] = S[p + "post_attention_layernorm.weight"]
            out[t + "mlp.router.weight"] = S[p + "block_sparse_moe.gate.weight"]
            for e in range(cfg["num_local_experts"]):
                x = p + f"block_sparse_moe.experts.{e}."
                out[t + f"mlp.experts.linear_fc1.weight{e}"] = np.concatenate(
                    [S[x + "w1.weight"], S[x + "w3.weight"]], 0)
                out[t + f"mlp.experts.linear_fc2.weight{e}"] = S[x + "w2.weight"]
    return out


def same(a, b, name):
    assert a.dtype == b.dtype, f"{name}: dtype {a.dtype} != {b.dtype}"
    assert a.shape == b.shape, f"{name}: shape {a.shape} != {b.shape}"
    assert a.tobytes() == b.tobytes(), f"{name}: values differ"


def main(src, tree):
    cfg = json.load(open(os.path.join(src, "config.json")))
    nh = cfg["num_attention_heads"]
    ng = cfg.get("num_key_value_heads") or nh
    d = cfg.get("head_dim") or cfg["hidden_size"] // nh
    S, _ = load_dir(src)
    T, where = load_dir(tree)
    if "lm_head.weight" not in S:
        assert cfg.get("tie_word_embeddings"), "no lm_head and not tied"
    expect = megatron_reference(S, cfg)
    assert set(T) == set(expect), f"tensor sets differ: extra {set(T) - set(expect)}, missing {set(expect) - set(T)}"
    for name, ref in expect.items():
        same(T[name], ref, name)
    idx = os.path.join(tree, "model.safetensors.index.json")
    if len(set(where.values())) > 1:
        wm = json.load(open(idx))["weight_map"]
        assert wm == where, "index weight_map does not match the files"
        total = json.load(open(idx))["metadata"]["total_size"]
        assert total == sum(a.nbytes for a in T.values()), "index total_size wrong"
    with open(os.path.join(tree, "config.json"), "rb") as a, open(os.path.join(src, "config.json"), "rb") as b:
        assert a.read() == b.read(), "config.json not copied verbatim"
    print(f"ok: {len(T)} tensors in {len(set(where.values()))} files equal the reference "
          f"(heads {nh}, kv groups {ng}, head_dim {d}, "
          f"{'biases' if any('bias' in k for k in T) else 'no biases'}, "
          f"{'tied' if 'lm_head.weight' not in S else 'untied'})")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
