"""Unmodified-loader checks for the shipped specs: the real `safetensors`
package opens every file of a mounted tree (and lists its tensors); every
tensor equals an independent numpy implementation of the spec's documented
formula, computed from the source checkpoint. BF16 and FP8 have no numpy
dtype, so values are read by a small raw reader (header JSON + bytes) and
decoded here from the format definitions.

usage: check_specs.py SPEC_NAME SRC_DIR TREE_DIR
"""
import glob
import json
import os
import struct
import sys

import numpy as np
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(__file__))
from check_megatron import megatron_reference  # noqa: E402


def fp8_table(ebits, mbits, bias, ieee):
    """The value of every code of an FP8 format: E4M3fn (ieee False: no Inf,
    only S.1111.111 is NaN) or E5M2 (ieee True: exponent all ones is Inf
    or NaN)."""
    t = np.zeros(256, dtype=np.float64)
    emax, mmax = (1 << ebits) - 1, (1 << mbits) - 1
    for c in range(256):
        s, e, m = c >> 7, (c >> mbits) & emax, c & mmax
        if e == emax and (ieee or m == mmax):
            v = (np.inf if m == 0 else np.nan) if ieee else np.nan
        elif e == 0:
            v = m / (mmax + 1) * 2.0 ** (1 - bias)
        else:
            v = (1 + m / (mmax + 1)) * 2.0 ** (e - bias)
        t[c] = -v if s else v
    return t


def e4m3_table():
    return fp8_table(4, 3, 7, False)


def e5m2_table():
    return fp8_table(5, 2, 15, True)


RAW = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F8_E4M3": np.uint8,
       "F8_E5M2": np.uint8, "I64": np.int64, "I32": np.int32, "U8": np.uint8}


def read_raw(d):
    """{name: (dtype string, numpy array of the raw element type)}"""
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        with safe_open(f, framework="np") as h:  # the real package opens it
            keys = set(h.keys())
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            hdr = json.loads(fh.read(n))
            base = 8 + n
            for k, v in hdr.items():
                if k == "__metadata__":
                    continue
                assert k in keys, f"{f}: {k} not listed by safetensors"
                b, e = v["data_offsets"]
                fh.seek(base + b)
                a = np.frombuffer(fh.read(e - b), dtype=RAW[v["dtype"]]).reshape(v["shape"])
                assert k not in out, f"{k} in two files"
                out[k] = (v["dtype"], a)
    return out


def to_f32(dt, a):
    if dt == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    if dt == "F8_E4M3":
        return e4m3_table()[a].astype(np.float32)
    if dt == "F8_E5M2":
        return e5m2_table()[a].astype(np.float32)
    return a.astype(np.float32)


def f32_to_bf16(x):
    """round to nearest even; NaN kept quiet"""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    r[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return r


def same(name, got, want):
    gdt, g = got
    wdt, w = want
    assert gdt == wdt, f"{name}: dtype {gdt}, want {wdt}"
    assert g.shape == w.shape, f"{name}: shape {g.shape}, want {w.shape}"
    assert g.tobytes() == np.ascontiguousarray(w).tobytes(), f"{name}: values differ"


def fused_experts(S, layer_prefix, names, mlp_prefix, E):
    """gate_up [E, 2I, H] = stack_e [a_e; b_e], down [E, H, I] = stack_e c_e"""
    a, b, c = names
    gu = np.stack([np.concatenate([S[layer_prefix(e, a)][1], S[layer_prefix(e, b)][1]], 0)
                   for e in range(E)])
    dn = np.stack([S[layer_prefix(e, c)][1] for e in range(E)])
    dt = S[layer_prefix(0, a)][0]
    return {mlp_prefix + "gate_up_proj": (dt, gu), mlp_prefix + "down_proj": (dt, dn)}


def expect_mixtral_hf(S, cfg):
    want = {}
    used = set()
    for L in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{L}.block_sparse_moe."
        E = cfg["num_local_experts"]
        want.update(fused_experts(S, lambda e, w: f"{p}experts.{e}.{w}.weight",
                                  ("w1", "w3", "w2"), f"model.layers.{L}.mlp.experts.", E))
        want[f"model.layers.{L}.mlp.gate.weight"] = S[p + "gate.weight"]
        used |= {k for k in S if k.startswith(p)}
    want.update({k: v for k, v in S.items() if k not in used})
    return want


def expect_qwen3(S, cfg):
    want = {}
    used = set()
    for L in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{L}.mlp.experts."
        want.update(fused_experts(S, lambda e, w: f"{p}{e}.{w}.weight",
                                  ("gate_proj", "up_proj", "down_proj"), p, cfg["num_experts"]))
        used |= {k for k in S if k.startswith(p)}
    want.update({k: v for k, v in S.items() if k not in used})
    return want


def expect_mixtral_megatron(S, cfg):
    """check_megatron's reference on the raw arrays; every tensor keeps the
    source dtype (the spec casts nothing)."""
    dt = S["model.embed_tokens.weight"][0]
    full = megatron_reference({k: a for k, (_, a) in S.items()}, cfg)
    return {k: (dt, v) for k, v in full.items()}


def expect_deepseek(S, cfg):
    want = {}
    b0, b1 = cfg["quantization_config"]["weight_block_size"]
    scales = {k[:-len("_scale_inv")] for k in S if k.endswith(".weight_scale_inv")}
    for k, (dt, a) in S.items():
        if k.endswith("_scale_inv"):
            continue
        if k in scales:
            sdt, s = S[k + "_scale_inv"]
            M, N = a.shape
            sf = to_f32(sdt, s)
            full = np.repeat(np.repeat(sf, b0, 0), b1, 1)[:M, :N]
            w = (to_f32(dt, a) * full).astype(np.float32)  # one F32 multiply
            want[k] = ("BF16", f32_to_bf16(w))
        else:
            want[k] = (dt, a)
    return want


def expect_gemma(S, cfg):
    want = {}
    for k, (dt, a) in S.items():
        if k.endswith("norm.weight"):
            assert dt == "F32", "the gemma check generates F32 checkpoints"
            want[k] = (dt, (a.astype(np.float32) + np.float32(1)).astype(np.float32))
        else:
            want[k] = (dt, a)
    if "lm_head.weight" not in S:
        assert cfg.get("tie_word_embeddings")
        want["lm_head.weight"] = S["model.embed_tokens.weight"]
    return want


EXPECT = {"mixtral-to-hf-fused-experts": expect_mixtral_hf,
          "mixtral-to-megatron": expect_mixtral_megatron,
          "qwen3-moe-to-hf-fused-experts": expect_qwen3,
          "deepseek-fp8-to-bf16": expect_deepseek,
          "gemma-to-standard-norms": expect_gemma}


def roundtrip(src, tree):
    """--reverse of the forward tree gives every source tensor back, byte for byte"""
    S, T = read_raw(src), read_raw(tree)
    assert set(S) == set(T), f"extra {sorted(set(T) - set(S))[:5]}, missing {sorted(set(S) - set(T))[:5]}"
    for k in S:
        same(k, T[k], S[k])
    print(f"ok: the reversed tree gives back all {len(S)} source tensors byte for byte")


def main(spec, src, tree):
    if spec == "roundtrip":
        return roundtrip(src, tree)
    cfg = json.load(open(os.path.join(src, "config.json")))
    S, T = read_raw(src), read_raw(tree)
    want = EXPECT[spec](S, cfg)
    assert set(T) == set(want), f"extra {sorted(set(T) - set(want))[:5]}, missing {sorted(set(want) - set(T))[:5]}"
    for k in want:
        same(k, T[k], want[k])
    tcfg = json.load(open(os.path.join(tree, "config.json")))
    if spec == "deepseek-fp8-to-bf16":
        assert "quantization_config" not in tcfg and tcfg["torch_dtype"] == "bfloat16", "config not patched"
    print(f"ok: {spec}: {len(T)} tensors equal the reference")


if __name__ == "__main__":
    main(*sys.argv[1:])
