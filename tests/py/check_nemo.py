"""NeMo AutoModel combined projections, checked against numpy implementations
of the formulas written here from the layout (docs/spec.md, "qkv",
"interleave", "copy"/"dedup"), not from the code under test.

  qkv_proj   = rows grouped by KV group: for group j, q rows [j*g*d, (j+1)*g*d),
               then k rows [j*d, (j+1)*d), then v rows [j*d, (j+1)*d)
               (g = heads / kv_heads, d = head_dim); weights, biases, LoRA B
               matrices and DoRA magnitude vectors alike
  gate_up    = rows g0, u0, g1, u1, ...
  lora_A     = one matrix for the combined projection (q's, gate's); the
               HF side holds it once per projection
  lm_head    = model.embed_tokens.weight when absent and tie_word_embeddings

usage: check_nemo.py from_hf HF_DIR TREE     the forward tree (combined)
       check_nemo.py to_hf COMBINED_DIR TREE the reversed tree (HF)
HF_DIR / COMBINED_DIR hold config.json. Every tensor of TREE must be the
expected one (name, dtype, shape, bytes); nothing missing, nothing extra.
"""
import json
import os
import sys

import numpy as np

# safetensors dtypes; BF16 (which numpy lacks) as a 2-byte record, so that
# its bytes move and compare like any other and it never equals a U16
DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype([("bf16", "<u2")]),
          "F64": np.dtype("<f8"), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
          "U8": np.dtype("u1"), "I8": np.dtype("i1")}


def load_dir(d):
    """Every tensor of every *.safetensors file of d, read from the format
    itself (8-byte header length, JSON header, data)."""
    out = {}
    files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
    assert files, f"{d}: no safetensors files"
    for f in files:
        raw = open(os.path.join(d, f), "rb").read()
        n = int.from_bytes(raw[:8], "little")
        head = json.loads(raw[8:8 + n])
        for k, v in head.items():
            if k == "__metadata__":
                continue
            assert k not in out, f"{k} in two files"
            a, b = v["data_offsets"]
            out[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=DTYPES[v["dtype"]]) \
                .reshape(v["shape"])
    return out, None

QKV = ".self_attn.%s_proj."
GU = ".mlp.%s_proj."


def dims(cfg):
    nh = cfg["num_attention_heads"]
    ng = cfg.get("num_key_value_heads") or nh
    d = cfg.get("head_dim") or cfg["hidden_size"] // nh
    return nh, ng, d


def qkv_rows(q, k, v, nh, ng, d):
    """Group by group, row by row."""
    g = nh // ng
    out = []
    for j in range(ng):
        out += [q[j * g * d + r] for r in range(g * d)]
        out += [k[j * d + r] for r in range(d)]
        out += [v[j * d + r] for r in range(d)]
    return np.stack(out)


def qkv_unrows(x, nh, ng, d):
    g = nh // ng
    w = (g + 2) * d
    q, k, v = [], [], []
    for r in range(x.shape[0]):
        o = r % w
        (q if o < g * d else k if o < (g + 1) * d else v).append(x[r])
    return np.stack(q), np.stack(k), np.stack(v)


def from_hf(S, cfg):
    nh, ng, d = dims(cfg)
    out, used = {}, set()
    for name in S:
        if QKV % "q" in name:
            kn, vn = name.replace(QKV % "q", QKV % "k"), name.replace(QKV % "q", QKV % "v")
            if kn not in S or vn not in S:
                continue  # a LoRA on a subset: left as it is
            cn = name.replace(QKV % "q", QKV % "qkv")
            if ".lora_A." in name:
                out[cn] = S[name]
            else:
                out[cn] = qkv_rows(S[name], S[kn], S[vn], nh, ng, d)
            used |= {name, kn, vn}
        elif GU % "gate" in name:
            un = name.replace(GU % "gate", GU % "up")
            if un not in S:
                continue
            cn = name.replace(GU % "gate", GU % "gate_up")
            if ".lora_A." in name:
                out[cn] = S[name]
            else:
                gt, up = S[name], S[un]
                out[cn] = np.stack([gt[i // 2] if i % 2 == 0 else up[i // 2]
                                    for i in range(2 * gt.shape[0])])
            used |= {name, un}
    for name in S:
        if name not in used:
            out[name] = S[name]
    if cfg.get("tie_word_embeddings") and "lm_head.weight" not in out \
            and "model.embed_tokens.weight" in out:
        out["lm_head.weight"] = out["model.embed_tokens.weight"]
    return out


def to_hf(C, cfg):
    nh, ng, d = dims(cfg)
    out = {}
    for name, x in C.items():
        if QKV % "qkv" in name:
            parts = [x, x, x] if ".lora_A." in name else qkv_unrows(x, nh, ng, d)
            for m, p in zip("qkv", parts):
                out[name.replace(QKV % "qkv", QKV % m)] = p
        elif GU % "gate_up" in name:
            parts = [x, x] if ".lora_A." in name else [x[0::2], x[1::2]]
            for m, p in zip(("gate", "up"), parts):
                out[name.replace(GU % "gate_up", GU % m)] = p
        else:
            out[name] = x
    if cfg.get("tie_word_embeddings"):
        out.pop("lm_head.weight", None)  # the HF form of a tied checkpoint
    return out


def main():
    mode, src, tree = sys.argv[1:4]
    cfg = json.load(open(os.path.join(src, "config.json")))
    S, _ = load_dir(src)
    T, _ = load_dir(tree)
    want = (from_hf if mode == "from_hf" else to_hf)(S, cfg)
    bad = 0
    for name in sorted(set(want) | set(T)):
        if name not in T or name not in want:
            print(f"{name}: {'missing from the tree' if name not in T else 'not expected'}")
            bad += 1
            continue
        a, b = np.ascontiguousarray(want[name]), T[name]
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            print(f"{name}: differs ({b.dtype} {b.shape}, want {a.dtype} {a.shape})")
            bad += 1
    print(f"{mode}: {len(want)} tensors, {bad} wrong")
    sys.exit(1 if bad or not want else 0)


if __name__ == "__main__":
    main()
