"""Per-rank trees through a real mount: the real `safetensors` package opens
every rank's files, and every tensor equals the Megatron layout computed
here independently from the SOURCE checkpoint (fused QKV by the row
formula, then split by the style), for llama-to-megatron.json with tp=T, or
mixtral-to-megatron.json with ep=P (experts owned by the remainder rule,
renumbered from 0), or pp=S (layers by the remainder rule, renumbered), or
etp=N: mixtral-to-megatron.json with tp=N, ep=N, etp=N (each rank's experts
split by TP as well: fc1 gated, fc2 row).
With --amplification, also read all of ranks/tp1 and check the source
bytes pulled (stats.json) against 1.1 x (split / T + replicated).

linear_qkv under tp is built head by head from the source q, k, v
(qkv_rank): Megatron-Core keeps it one column-parallel tensor, so with
fewer KV groups than ranks, T/groups ranks share each group's rows. With
tie_word_embeddings set there is no output_layer.weight, except on the last
stage when pp > 1 (the embedding, as Megatron keeps a copy there).

usage: check_ranks.py MNT SRC tp|ep|pp|etp N [--amplification]
"""
import glob
import json
import os
import sys

import numpy as np
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(__file__))
from check_megatron import load_dir, megatron_reference  # noqa: E402


def share(total, r, n):
    base, rem = divmod(total, n)
    return r * base + min(r, rem), base + (1 if r < rem else 0)


def qkv_rank(q, k, v, nh, ng, d, t, T):
    """Rank t's linear_qkv: the groups it touches laid out whole ([q heads
    of the group; k; v]), then its piece of them: all of them when
    ng >= T (groups t*ng/T ...), else piece t % (T/ng) of group t // (T/ng)."""
    g = nh // ng
    if ng >= T:
        gs, piece, at = range(t * ng // T, (t + 1) * ng // T), None, 0
    else:
        m = T // ng
        gs, piece = [t // m], (g + 2) * d // m
        at = (t % m) * piece
    blk = np.concatenate([np.concatenate([q[i * g * d:(i + 1) * g * d], k[i * d:(i + 1) * d],
                                          v[i * d:(i + 1) * d]], 0) for i in gs], 0)
    return blk if piece is None else blk[at:at + piece]


def tp_slice(name, a, r, T):
    if name.endswith("linear_qkv.weight") or name.endswith("linear_qkv.bias"):
        return np.split(a, T, 0)[r]
    if (name.endswith("linear_proj.weight") or name.endswith("linear_fc2.weight")
            or ".experts.linear_fc2.weight" in name):
        return np.split(a, T, 1)[r]
    if name.endswith("linear_fc1.weight") or ".experts.linear_fc1.weight" in name:
        g, u = np.split(a, 2, 0)
        return np.concatenate([np.split(g, T, 0)[r], np.split(u, T, 0)[r]], 0)
    if name in ("embedding.word_embeddings.weight", "output_layer.weight"):
        rows = -(-a.shape[0] // T) * T
        pad = np.zeros((rows,) + a.shape[1:], a.dtype)
        pad[:a.shape[0]] = a
        return np.split(pad, T, 0)[r]
    return a


def main(mnt, src, kind, n, *flags):
    n = int(n)
    cfg = json.load(open(os.path.join(src, "config.json")))
    S, _ = load_dir(src)
    F = megatron_reference(S, cfg)
    nl = cfg["num_hidden_layers"]
    if "--amplification" in flags:
        def stats():
            return json.load(open(os.path.join(mnt, ".d9dfs", "stats.json")))
        split = sum(v.nbytes for v in F.values() if v.ndim == 2)
        repl = sum(v.nbytes for v in F.values() if v.ndim != 2)
        s0 = stats()
        d = os.path.join(mnt, "ranks", "tp1")
        for f in sorted(os.listdir(d)):
            with open(os.path.join(d, f), "rb") as fh:
                while fh.read(1 << 20):
                    pass
        pulled = stats()["bytes_read_source"] - s0["bytes_read_source"]
        limit = 1.1 * (split / n + repl)
        print(f"ranks/tp1 read whole: {pulled} source bytes, limit {limit:.0f}")
        assert pulled <= limit, "read amplification over the limit"
        assert pulled >= split / n, "less than the rank's split bytes: the reads did not reach d9dfs"

    ranks = [(r, r) for r in range(n)] if kind != "etp" else [(t, e) for t in range(n) for e in range(n)]
    for r, re in ranks:
        d = os.path.join(mnt, "ranks", {"tp": f"tp{r}", "ep": f"tp0-ep{r}", "pp": f"tp0-pp{r}",
                                        "etp": f"tp{r}-ep{re}"}[kind])
        R, _ = load_dir(d)
        if kind == "tp":
            want = {k: tp_slice(k, v, r, n) for k, v in F.items()}
            nh = cfg["num_attention_heads"]
            ng = cfg.get("num_key_value_heads") or nh
            hd = cfg.get("head_dim") or cfg["hidden_size"] // nh
            for L in range(nl):
                for suf in ("weight", "bias"):
                    p = f"model.layers.{L}.self_attn."
                    if p + f"q_proj.{suf}" in S:
                        want[f"decoder.layers.{L}.self_attention.linear_qkv.{suf}"] = qkv_rank(
                            *(S[p + f"{x}_proj.{suf}"] for x in "qkv"), nh, ng, hd, r, n)
        elif kind in ("ep", "etp"):
            E = cfg["num_local_experts"]
            e_rank, t_rank, T = (r, 0, 1) if kind == "ep" else (re, r, n)
            st, cnt = share(E, e_rank, n)
            want = {}
            for k, v in F.items():
                if ".mlp.experts.linear_fc" in k:
                    base, e = k.rsplit("weight", 1)
                    if st <= int(e) < st + cnt:
                        want[f"{base}weight{int(e) - st}"] = tp_slice(k, v, t_rank, T)
                else:
                    want[k] = tp_slice(k, v, t_rank, T)
        else:
            l0, ln = share(nl, r, n)
            want = {}
            for k, v in F.items():
                if k.startswith("decoder.layers."):
                    L = int(k.split(".")[2])
                    if l0 <= L < l0 + ln:
                        want[k.replace(f"decoder.layers.{L}.", f"decoder.layers.{L - l0}.", 1)] = v
                elif k.startswith("embedding."):
                    if r == 0:
                        want[k] = v
                elif r == n - 1:
                    want[k] = v
            if cfg.get("tie_word_embeddings") and r == n - 1:
                want["output_layer.weight"] = F["embedding.word_embeddings.weight"]
        assert set(R) == set(want), f"{d}: extra {sorted(set(R) - set(want))[:4]} missing {sorted(set(want) - set(R))[:4]}"
        for k in want:
            assert R[k].shape == want[k].shape and R[k].tobytes() == want[k].tobytes(), f"{d}: {k} differs"
    print(f"ok: {kind}={n}: {len(ranks)} rank trees open in safetensors and equal the Megatron reference")


if __name__ == "__main__":
    main(*sys.argv[1:])
