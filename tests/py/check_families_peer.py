"""The model-family specs against the peer: every tensor of a d9dfs tree made
with mounts/qwen3-to-megatron.json, qwen3-moe-to-megatron.json or
deepseek-v3-to-megatron.json equals, byte for byte, what Megatron-Bridge's
own bridge for that family (Qwen3Bridge, Qwen3MoEBridge, DeepSeekV3Bridge:
their mapping_registry()) makes of the same HF checkpoint: the peer's
registry names the HF tensors of each Megatron parameter, and its mapping
(AutoMapping, QKVMapping, GatedMLPMapping) builds the parameter. Every HF
tensor must be used by some parameter of the tree.

DeepSeek-V3 ships FP8; Bridge loads BF16 weights, so the peer's input is
the checkpoint dequantised as DeepSeek's own weight_dequant does it, in
torch: f32(w) * the scale of its 128x128 (weight_block_size) block, one F32
multiply, then .to(bfloat16).

Only plumbing is replaced: the bridge modules are imported without the
package __init__ chain and without transformer_engine (the decorator that
registers a bridge and the provider base classes are stand-ins), the
mappings run as TP rank 0 of 1, and each Megatron module is a stand-in of
the class Megatron-Core's TE layer spec uses (AutoMapping reads the class
name). The registries and mappings themselves are the peer's code.

Needs torch, megatron-core, megatron-bridge and transformers (not the
project venv): run it with the peer venv's python. Exits 77 with the reason
when they cannot be imported.

usage: check_families_peer.py SPEC_NAME SRC_DIR TREE_DIR [SPEC_NAME SRC_DIR TREE_DIR ...]
(several triples share one start of the peer, which takes about 20 s)
"""
import glob
import importlib
import json
import os
import sys
import types

sys.path.insert(0, os.path.dirname(__file__))
from check_ranks_peer import import_peer  # noqa: E402

BRIDGES = {"qwen3-to-megatron": ("qwen", "qwen3_bridge", "Qwen3Bridge"),
           "qwen3-moe-to-megatron": ("qwen", "qwen3_moe_bridge", "Qwen3MoEBridge"),
           "deepseek-v3-to-megatron": ("deepseek", "deepseek_v3_bridge", "DeepSeekV3Bridge")}


def import_bridge(pkg, mod, cls):
    """The family's bridge class from Megatron-Bridge, or exit 77."""
    pm = import_peer()
    import megatron
    base = next(os.path.join(p, "bridge") for p in megatron.__path__
                if os.path.isdir(os.path.join(p, "bridge")))
    name = f"megatron.bridge.models.{pkg}"
    sys.modules[name] = types.ModuleType(name)
    sys.modules[name].__path__ = [f"{base}/models/{pkg}"]

    class MegatronModelBridge:  # stand-in: registration is not under test
        @staticmethod
        def register_bridge(**kw):
            return lambda c: c

    stubs = {"megatron.bridge.models.conversion.model_bridge":
             {"MegatronModelBridge": MegatronModelBridge, "WeightConversionTask": object},
             "megatron.bridge.models.hf_pretrained": {},
             "megatron.bridge.models.hf_pretrained.causal_lm": {"PreTrainedCausalLM": object},
             "megatron.bridge.models.mla_provider": {"MLAModelProvider": object}}
    for n, attrs in stubs.items():
        m = types.ModuleType(n)
        m.__dict__.update(attrs)
        sys.modules[n] = m
    try:
        return pm, getattr(importlib.import_module(f"{name}.{mod}"), cls)
    except ImportError as e:
        print(f"SKIP: the peer's {mod} cannot be imported ({e})")
        sys.exit(77)


def load(d, torch):
    from safetensors import safe_open
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        with safe_open(f, framework="pt") as h:
            for k in h.keys():
                assert k not in out, f"{k} in two files"
                out[k] = h.get_tensor(k)
    assert out, f"{d}: no tensors"
    return out


def dequantised(S, cfg, torch):
    """The BF16 checkpoint Bridge loads: each FP8 X.weight times its
    X.weight_scale_inv block by block, in F32, then bfloat16."""
    b0, b1 = cfg["quantization_config"]["weight_block_size"]
    out = {}
    for k, w in S.items():
        if k.endswith(".weight_scale_inv"):
            continue
        s = S.get(k + "_scale_inv")
        if s is not None:
            M, N = w.shape
            full = s.float().repeat_interleave(b0, 0).repeat_interleave(b1, 1)[:M, :N]
            w = (w.float() * full).to(torch.bfloat16)
        out[k] = w
    return out


def stand_in(name, shape, config, torch):
    """A module of the class Megatron-Core's TE spec has for `name`."""
    from torch import nn
    leaf_name = name.rsplit(".", 1)[1]
    grouped = ".mlp.experts." in name
    if leaf_name.startswith("layer_norm_"):
        kind = "TELayerNormColumnParallelLinear"
    elif ".router." in name:
        kind = "TopKRouter"
    elif "norm" in name:
        kind = "TENorm"
    elif name.startswith("embedding."):
        kind = "VocabParallelEmbedding"
    elif ".linear_proj." in name or ".linear_fc2." in name:
        kind = "TERowParallelGroupedLinear" if grouped else "TERowParallelLinear"
    elif "_down_proj." in name:
        kind = "TELinear"  # MLA's down projections: parallel_mode "duplicated"
    else:
        kind = "TEColumnParallelGroupedLinear" if grouped else "TEColumnParallelLinear"
    leaf = type(kind, (nn.Module,), {})()
    leaf.register_parameter(leaf_name, nn.Parameter(torch.empty(shape, dtype=torch.float32),
                                                    requires_grad=False))
    leaf.config = config
    leaf.parallel_mode = "duplicated"
    return leaf


def raw(t):
    return t.contiguous().reshape(-1).view(__import__("torch").uint8).numpy().tobytes()


def check(spec, src, tree):
    pm, Bridge = import_bridge(*BRIDGES[spec])
    import torch
    pm.MegatronParamMapping.tp_rank = property(lambda self: 0)
    pm.MegatronParamMapping.tp_size = property(lambda self: 1)

    cfg = json.load(open(os.path.join(src, "config.json")))
    nh, H = cfg["num_attention_heads"], cfg["hidden_size"]
    ng = cfg.get("num_key_value_heads") or nh
    d = cfg.get("head_dim") or H // nh
    config = types.SimpleNamespace(num_attention_heads=nh, num_query_groups=ng, kv_channels=d,
                                   hidden_size=H, attention_output_gate=False)
    S = load(src, torch)
    if "quantization_config" in cfg:
        S = dequantised(S, cfg, torch)
    T = load(tree, torch)
    registry = Bridge().mapping_registry()
    used = set()
    for name, got in sorted(T.items()):
        m = registry.megatron_to_hf_lookup(name)
        assert m is not None, f"{name}: the peer's {Bridge.__name__} has no mapping for it"
        hf = m.hf_param
        names = [hf] if isinstance(hf, str) else list(hf.values())
        missing = [n for n in names if n not in S]
        assert not missing, f"{name}: the peer maps it from {missing}, not in the source"
        used.update(names)
        arg = S[hf] if isinstance(hf, str) else {k: S[v] for k, v in hf.items()}
        want = m.hf_to_megatron(arg, stand_in(name, tuple(got.shape), config, torch))
        assert want.dtype == got.dtype, f"{name}: dtype {got.dtype}, the peer's {want.dtype}"
        assert tuple(want.shape) == tuple(got.shape), (
            f"{name}: shape {tuple(got.shape)}, the peer's {tuple(want.shape)}")
        assert raw(want) == raw(got), f"{name}: bytes differ from the peer's ({type(m).__name__})"
    unused = sorted(set(S) - used)
    assert not unused, f"source tensors no tree tensor is made from: {unused[:5]}"
    print(f"ok: {spec}: {len(T)} tensors equal Megatron-Bridge's {Bridge.__name__} mappings "
          f"byte for byte; all {len(S)} {'dequantised ' if 'quantization_config' in cfg else ''}"
          f"HF tensors used")


def main(*args):
    assert args and len(args) % 3 == 0, "usage: check_families_peer.py SPEC SRC TREE [...]"
    triples = [args[i:i + 3] for i in range(0, len(args), 3)]
    for spec, _, _ in triples:
        if spec not in BRIDGES:
            print(f"SKIP: Megatron-Bridge has no bridge for {spec}")
            sys.exit(77)
    for t in triples:
        check(*t)


if __name__ == "__main__":
    main(*sys.argv[1:])
