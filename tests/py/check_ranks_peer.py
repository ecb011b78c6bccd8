"""Per-rank trees against the peer: every TP rank's tensors of a d9dfs mount
made with mounts/llama-to-megatron.json (-o tp=T, pp = 1) equal, byte for
byte, what Megatron-Bridge's own parameter mappings hand that rank when it
loads the same HF checkpoint: QKVMapping (merge_qkv_weights, then the
column-parallel chunk of linear_qkv), GatedMLPMapping (fc1), the row- and
column-parallel mappings (linear_proj, fc2; the embedding and output layer
padded to the Megatron vocab size), and no output_layer.weight at all when
tie_word_embeddings is set (Megatron-Core's shared embedding has none).

Only the collective plumbing is replaced: the mappings run as TP rank 0,
which computes the split of every rank, and the scatter hands that list back
instead of sending it. The split rules themselves are the peer's code.

Needs torch, megatron-core and megatron-bridge (not the project venv): run
it with the peer venv's python. Exits 77 with the reason when they cannot be
imported.

usage: check_ranks_peer.py MNT SRC T [VOCAB_DIVISIBLE_BY]
"""
import importlib
import json
import os
import sys
import types
import warnings

sys.path.insert(0, os.path.dirname(__file__))
from check_megatron import load_dir  # noqa: E402


def import_peer():
    """Megatron-Bridge's param_mapping module without running the package's
    __init__ chain (it imports the whole training stack: transformers,
    transformer_engine...). Returns the module or exits 77."""
    warnings.filterwarnings("ignore")  # megatron-core's notes on absent TE/Apex
    try:
        import torch  # noqa: F401
        import megatron.core  # noqa: F401
        import megatron
        base = next(os.path.join(p, "bridge") for p in megatron.__path__
                    if os.path.isdir(os.path.join(p, "bridge")))
    except (ImportError, StopIteration) as e:
        print(f"SKIP: the peer is not installed ({e}); install torch, megatron-core and "
              f"megatron-bridge (--no-deps) in a venv and pass its python")
        sys.exit(77)
    for name, sub in [("megatron.bridge", ""), ("megatron.bridge.models", "/models"),
                      ("megatron.bridge.models.conversion", "/models/conversion")]:
        m = types.ModuleType(name)
        m.__path__ = [base + sub]
        sys.modules[name] = m
    return importlib.import_module("megatron.bridge.models.conversion.param_mapping")


def main(mnt, src, T, vdiv="1"):
    T, vdiv = int(T), int(vdiv)
    pm = import_peer()
    import numpy as np
    import torch
    from torch import nn

    # the plumbing: rank 0 of T, and the scatter returns every rank's split
    pm.MegatronParamMapping.tp_rank = property(lambda self: 0)
    pm.MegatronParamMapping.tp_size = property(lambda self: T)
    pm.MegatronParamMapping.scatter_to_tp_ranks = lambda self, splits, *a, **k: list(splits)

    cfg = json.load(open(os.path.join(src, "config.json")))
    nh, H = cfg["num_attention_heads"], cfg["hidden_size"]
    ng = cfg.get("num_key_value_heads") or nh
    d = cfg.get("head_dim") or H // nh
    tied = bool(cfg.get("tie_word_embeddings"))
    config = types.SimpleNamespace(num_attention_heads=nh, num_query_groups=ng, kv_channels=d,
                                   hidden_size=H, attention_output_gate=False)
    S, _ = load_dir(src)
    ranks = [load_dir(os.path.join(mnt, "ranks", f"tp{t}"))[0] for t in range(T)]

    def module(kind, name, full_shape, split_dim):
        """A stand-in Megatron module of class `kind` (what AutoMapping reads
        to pick the parallel style) owning `name` with its local shape."""
        shape = list(full_shape)
        if split_dim is not None:
            shape[split_dim] //= T
        leaf = type(kind, (nn.Module,), {})()
        leaf.register_parameter(name.rsplit(".", 1)[1],
                                nn.Parameter(torch.empty(shape, dtype=torch.float32),
                                             requires_grad=False))
        leaf.config = config
        return leaf

    def t(a):
        return torch.from_numpy(np.ascontiguousarray(a).astype(np.float32))

    def compare(name, splits, dtype):
        assert len(splits) == T, f"{name}: the peer made {len(splits)} splits for tp={T}"
        for r in range(T):
            got = ranks[r].get(name)
            assert got is not None, f"ranks/tp{r}: {name} missing (the peer has it)"
            want = splits[r].contiguous().numpy().astype(dtype)
            assert got.shape == want.shape, f"ranks/tp{r}: {name}: shape {got.shape} != peer {want.shape}"
            assert got.tobytes() == want.tobytes(), f"ranks/tp{r}: {name}: bytes differ from the peer"
        return 1

    # every source tensor here is float (F32/BF16 in, F32 through torch and
    # back: lossless), so the comparison is exact in the served dtype
    n = 0
    for L in range(cfg["num_hidden_layers"]):
        p, o = f"model.layers.{L}.", f"decoder.layers.{L}."
        for suf in ("weight", "bias"):
            if p + f"self_attn.q_proj.{suf}" not in S:
                continue
            name = o + f"self_attention.linear_qkv.{suf}"
            full = (nh + 2 * ng) * d
            m = pm.QKVMapping(name, *(p + f"self_attn.{x}_proj.{suf}" for x in "qkv"))
            leaf = module("ColumnParallelLinear", name, (full, H) if suf == "weight" else (full,), 0)
            dt = S[p + f"self_attn.q_proj.{suf}"].dtype
            n += compare(name, m.hf_to_megatron({x: t(S[p + f"self_attn.{x}_proj.{suf}"])
                                                  for x in "qkv"}, leaf), dt)
        name = o + "self_attention.linear_proj.weight"
        w = S[p + "self_attn.o_proj.weight"]
        m = pm.AutoMapping(name, p + "self_attn.o_proj.weight")
        n += compare(name, m.hf_to_megatron(t(w), module("RowParallelLinear", name, w.shape, 1)),
                     w.dtype)
        name = o + "mlp.linear_fc1.weight"
        g, u = S[p + "mlp.gate_proj.weight"], S[p + "mlp.up_proj.weight"]
        m = pm.GatedMLPMapping(name, p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight")
        leaf = module("ColumnParallelLinear", name, (2 * g.shape[0], g.shape[1]), 0)
        n += compare(name, m.hf_to_megatron({"gate": t(g), "up": t(u)}, leaf), g.dtype)
        name = o + "mlp.linear_fc2.weight"
        w = S[p + "mlp.down_proj.weight"]
        m = pm.AutoMapping(name, p + "mlp.down_proj.weight")
        n += compare(name, m.hf_to_megatron(t(w), module("RowParallelLinear", name, w.shape, 1)),
                     w.dtype)
    # vocab: Megatron pads the rows to a multiple of make_vocab_size_divisible_by * tp
    V = S["model.embed_tokens.weight"].shape[0]
    mult = vdiv * T
    padded = -(-V // mult) * mult
    outs = [("embedding.word_embeddings.weight", "model.embed_tokens.weight", "VocabParallelEmbedding")]
    if tied:
        for r in range(T):
            assert "output_layer.weight" not in ranks[r], (
                f"ranks/tp{r}: output_layer.weight with tie_word_embeddings set: Megatron-Core "
                f"shares the embedding and has no such parameter")
    else:
        outs.append(("output_layer.weight", "lm_head.weight", "ColumnParallelLinear"))
    for name, hf, kind in outs:
        w = S[hf]
        m = pm.AutoMapping(name, hf)
        n += compare(name, m.hf_to_megatron(t(w), module(kind, name, (padded, w.shape[1]), 0)),
                     w.dtype)
    print(f"ok: tp={T}: {n} split tensors on each of the {T} ranks equal Megatron-Bridge's "
          f"splits byte for byte ({nh} heads, {ng} kv groups, "
          f"{'tied: no output_layer' if tied else 'untied'})")


if __name__ == "__main__":
    main(*sys.argv[1:])
