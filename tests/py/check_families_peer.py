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

Megatron-Bridge has no Phi-3 bridge. For phi3-to-llama the peer is
transformers itself: per layer, its Phi3Attention and Phi3MLP, holding the
source's fused qkv_proj and gate_up_proj, and its LlamaAttention and
LlamaMLP, holding the tree's q/k/v_proj and gate/up_proj, run on the same
input (the identity matrix as H tokens, so each projection is exactly its
weight) and hand attention the same q, k, v and the MLP activation and
down_proj the same gate and up * gate, bit for bit; every other tensor of
the tree is the source's, byte for byte.

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


def check_phi3(src, tree):
    """transformers' Phi-3 modules on the source feed attention and the MLP
    activation the bits its Llama modules feed them on the tree"""
    try:
        import torch
        from transformers import LlamaConfig, Phi3Config
        from transformers.models.llama import modeling_llama as LL
        from transformers.models.phi3 import modeling_phi3 as PH
    except ImportError as e:
        print(f"SKIP: transformers cannot be imported ({e})")
        sys.exit(77)
    cfg = json.load(open(os.path.join(src, "config.json")))
    nh, H = cfg["num_attention_heads"], cfg["hidden_size"]
    ng = cfg.get("num_key_value_heads") or nh
    common = dict(vocab_size=cfg["vocab_size"], hidden_size=H, intermediate_size=cfg["intermediate_size"],
                  num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=nh,
                  num_key_value_heads=ng, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    pc, lc = Phi3Config(**common), LlamaConfig(**common, head_dim=H // nh)
    for c in (pc, lc):
        c._attn_implementation = "eager"
    S, T = load(src, torch), load(tree, torch)
    # Record what each module hands to attention (q, k, v) and to the MLP's
    # activation and down_proj. Plumbing only: rope, the attention kernel and
    # the activation are left out (identity or a stand-in output), as their
    # vectorised paths may round differently on strided views; what is
    # compared is how each module reads its weights.
    seen = []

    def attend(module, q, k, v, *a, **kw):
        seen.append((q, k, v))
        return torch.zeros(q.shape[0], q.shape[2], q.shape[1] * q.shape[3]), None

    for mod in (PH, LL):
        mod.apply_rotary_pos_emb = lambda q, k, cos, sin, *a, **kw: (q, k)
        mod.eager_attention_forward = attend
    x = torch.eye(H).unsqueeze(0)  # H tokens: each projection is exactly its weight
    cos = sin = torch.zeros(1, H, H // nh)

    def build(mod, tensors, pre):
        mod.load_state_dict({k: tensors[pre + k].float() for k in mod.state_dict()})
        return mod.eval()

    class Record(torch.nn.Module):  # the activation, as the identity
        def __init__(self, rec):
            super().__init__()
            self.rec = rec

        def forward(self, g):
            self.rec.append(g)
            return g

    def mlp_inputs(mod):
        rec = []
        for name in ("act_fn", "activation_fn"):
            if hasattr(mod, name):
                setattr(mod, name, Record(rec))
        mod.down_proj.register_forward_pre_hook(lambda m, a: rec.append(a[0]) and None)
        mod(x)
        return rec

    n = 0
    with torch.no_grad():
        for L in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{L}."
            seen.clear()
            build(PH.Phi3Attention(pc, L), S, p + "self_attn.")(x, (cos, sin), None)
            build(LL.LlamaAttention(lc, L), T, p + "self_attn.")(x, (cos, sin), None)
            assert len(seen) == 2, f"{p}self_attn: attention ran {len(seen)} times, want 2"
            for what, a, b in zip("qkv", *seen):
                assert raw(a) == raw(b), f"{p}self_attn: Phi3Attention and LlamaAttention differ in {what}"
            got = mlp_inputs(build(PH.Phi3MLP(pc), S, p + "mlp."))
            want = mlp_inputs(build(LL.LlamaMLP(lc), T, p + "mlp."))
            assert len(got) == len(want) == 2, f"{p}mlp: {len(got)}, {len(want)} records"
            for what, a, b in zip(("gate", "up * gate"), got, want):
                assert raw(a) == raw(b), f"{p}mlp: Phi3MLP and LlamaMLP differ in {what}"
            n += 2
    fused = (".self_attn.qkv_proj.", ".mlp.gate_up_proj.")
    split = (".self_attn.q_proj.", ".self_attn.k_proj.", ".self_attn.v_proj.",
             ".mlp.gate_proj.", ".mlp.up_proj.")
    rest_s = {k: v for k, v in S.items() if not any(f in k for f in fused)}
    rest_t = {k: v for k, v in T.items() if not any(f in k for f in split)}
    assert set(rest_s) == set(rest_t), f"other tensors differ: {sorted(set(rest_s) ^ set(rest_t))[:5]}"
    for k in rest_s:
        assert rest_s[k].dtype == rest_t[k].dtype and raw(rest_s[k]) == raw(rest_t[k]), f"{k} changed"
    print(f"ok: phi3-to-llama: transformers' Phi3Attention/Phi3MLP on the source and "
          f"LlamaAttention/LlamaMLP on the tree read the same q, k, v, gate and up bits "
          f"in {n} modules; the other {len(rest_s)} tensors unchanged")


def main(*args):
    assert args and len(args) % 3 == 0, "usage: check_families_peer.py SPEC SRC TREE [...]"
    triples = [args[i:i + 3] for i in range(0, len(args), 3)]
    for spec, _, _ in triples:
        if spec not in BRIDGES and spec != "phi3-to-llama":
            print(f"SKIP: Megatron-Bridge has no bridge for {spec}")
            sys.exit(77)
    for t in triples:
        (check_phi3(*t[1:]) if t[0] == "phi3-to-llama" else check(*t))


if __name__ == "__main__":
    main(*sys.argv[1:])
