#!/usr/bin/env python3
"""gpt-oss MXFP4 -> BF16 (mounts/gpt-oss-mxfp4-to-bf16.json): every tensor of
a mounted (or converted) tree against a reference, byte for byte.

usage:
  check_mxfp4_peer.py transformers SRC TREE   the peer: transformers'
      convert_moe_packed_tensors(blocks, scales, dtype=torch.bfloat16)
      (exit 77 when torch or transformers >= 5 cannot be imported)
  check_mxfp4_peer.py numpy SRC TREE          an independent numpy reference
      written here from the format (always runs)
  check_mxfp4_peer.py roundtrip SRC REV        REV (the reversed mount of the
      converted tree) gives back every group of SRC that lies on its MXFP4
      grid (largest code magnitude 4 or 6, scale <= 252, no Inf) byte for
      byte, blocks and scale; at least 90% of the groups outside the patched
      tensor must be such, and every other tensor comes back unchanged
  check_mxfp4_peer.py patch SRC               rewrite, in place, the first
      gate_up_proj's blocks and scales so that they hold every byte value
      (every code pair) and every scale byte 0..255, so that the checks above
      cover every E2M1 code with every E8M0 scale

Both checks: every *_blocks / *_scales pair of SRC appears in TREE as the
dequantised, transposed tensor (its bytes equal the reference's), the pair
itself is gone, every other source tensor is in TREE unchanged (dtype, shape,
bytes), nothing else is, and TREE's config.json has no quantization_config.
Safetensors files are read with a small parser of the format (BF16 has no
numpy dtype), so the tree is read through plain file reads.
"""
import glob
import json
import os
import struct
import sys

import numpy as np

SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
         "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def headers(d):
    """name -> (file, dtype, shape, data offset in the file, nbytes)"""
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        with open(f, "rb") as fh:
            n = struct.unpack("<Q", fh.read(8))[0]
            h = json.loads(fh.read(n))
        for k, v in h.items():
            if k == "__metadata__":
                continue
            b, e = v["data_offsets"]
            out[k] = (f, v["dtype"], tuple(v["shape"]), 8 + n + b, e - b)
    return out


def raw(entry):
    f, _, _, off, nb = entry
    with open(f, "rb") as fh:
        fh.seek(off)
        data = fh.read(nb)
    assert len(data) == nb, f"{f}: short read"
    return data


def ref_numpy(blocks, scales):
    """BF16 bytes of the dequantised [E, R, G*2B] tensor transposed to [E, G*2B, R]"""
    mag = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float64)
    codes = np.stack([blocks & 15, blocks >> 4], axis=-1).reshape(*blocks.shape[:-1], -1)
    val = mag[codes & 7] * np.exp2(scales.astype(np.float64) - 127)[..., None]
    val = np.where(codes & 8, -val, val)
    big = np.abs(val) >= 2.0 ** 128
    with np.errstate(over="ignore"):
        f32 = np.where(big, np.copysign(np.inf, val), val).astype(np.float32)
    assert np.array_equal(f32.astype(np.float64)[~big], val[~big]), "value not exact in F32"
    bits = f32.view(np.uint32)
    assert not (bits & 0xffff).any(), "value not exact in BF16"
    bf16 = (bits >> 16).astype(np.uint16).reshape(*blocks.shape[:-2], -1)
    return np.ascontiguousarray(bf16.swapaxes(1, 2)).tobytes()


def ref_transformers():
    try:
        import torch
        import transformers
        from transformers.integrations.mxfp4 import convert_moe_packed_tensors
    except Exception as e:  # noqa: BLE001 - any import failure means "no peer"
        print(f"skip: the peer cannot be imported ({e})")
        sys.exit(77)
    if int(transformers.__version__.split(".")[0]) < 5:
        print(f"skip: transformers {transformers.__version__} is not v5")
        sys.exit(77)

    def ref(blocks, scales):
        out = convert_moe_packed_tensors(torch.from_numpy(blocks.copy()), torch.from_numpy(scales.copy()),
                                         dtype=torch.bfloat16)
        return out.contiguous().view(torch.int16).numpy().tobytes()
    print(f"peer: transformers {transformers.__version__}, torch {torch.__version__}")
    return ref


def check(mode, src, tree):
    ref = ref_numpy if mode == "numpy" else ref_transformers()
    S, T = headers(src), headers(tree)
    pairs = sorted(k[:-len("_blocks")] for k in S if k.endswith("_blocks"))
    assert pairs, f"{src}: no *_blocks tensors"
    want = set(S) - {p + "_blocks" for p in pairs} - {p + "_scales" for p in pairs}
    want |= set(pairs)
    assert set(T) == want, (f"extra {sorted(set(T) - want)[:5]}, "
                            f"missing {sorted(want - set(T))[:5]}")
    for p in pairs:
        b, s = S[p + "_blocks"], S[p + "_scales"]
        assert b[1] == "U8" and s[1] == "U8", f"{p}: blocks {b[1]}, scales {s[1]}"
        blocks = np.frombuffer(raw(b), np.uint8).reshape(b[2])
        scales = np.frombuffer(raw(s), np.uint8).reshape(s[2])
        E, R, G, B = blocks.shape
        t = T[p]
        assert t[1] == "BF16" and t[2] == (E, G * 2 * B, R), f"{p}: tree has {t[1]} {t[2]}"
        got, exp = raw(t), ref(blocks, scales)
        if got != exp:
            g16, e16 = np.frombuffer(got, np.uint16), np.frombuffer(exp, np.uint16)
            i = int(np.argmax(g16 != e16))
            raise AssertionError(f"{p}: element {i} is {g16[i]:#06x}, the {mode} reference "
                                 f"{e16[i]:#06x} ({int((g16 != e16).sum())} differ)")
    for k in sorted(want - set(pairs)):
        assert S[k][1:3] == T[k][1:3], f"{k}: {T[k][1:3]} != source {S[k][1:3]}"
        assert raw(S[k]) == raw(T[k]), f"{k}: bytes differ from the source"
    cfg = json.load(open(os.path.join(tree, "config.json")))
    assert "quantization_config" not in cfg, "config.json keeps quantization_config"
    print(f"ok: {len(pairs)} MXFP4 tensors equal the {mode} reference bit for bit, "
          f"{len(want) - len(pairs)} others unchanged, quantization_config removed")


def roundtrip(src, rev):
    S, R = headers(src), headers(rev)
    assert set(S) == set(R), f"extra {sorted(set(R) - set(S))[:5]}, missing {sorted(set(S) - set(R))[:5]}"
    on = total = 0
    for k in sorted(S):
        if k.endswith("_scales"):
            continue
        if not k.endswith("_blocks"):
            assert S[k][1:3] == R[k][1:3] and raw(S[k]) == raw(R[k]), f"{k}: differs"
            continue
        p = k[:-len("_blocks")]
        assert R[k][1:3] == S[k][1:3] and R[p + "_scales"][1:3] == S[p + "_scales"][1:3], p
        G, B = S[k][2][2:]
        sb = np.frombuffer(raw(S[k]), np.uint8).reshape(-1, B)
        rb = np.frombuffer(raw(R[k]), np.uint8).reshape(-1, B)
        ss = np.frombuffer(raw(S[p + "_scales"]), np.uint8)
        rs = np.frombuffer(raw(R[p + "_scales"]), np.uint8)
        top = np.maximum((sb & 7).max(axis=1), ((sb >> 4) & 7).max(axis=1))
        grid = (top >= 6) & (ss <= 252)
        same = (sb == rb).all(axis=1) & (ss == rs)
        assert same[grid].all(), f"{p}: {int((~same[grid]).sum())} on-grid groups changed"
        if "layers.0.mlp.experts.gate_up_proj" not in p:
            on, total = on + int(grid.sum()), total + len(grid)
    assert total and on >= 0.9 * total, f"only {on} of {total} groups on the grid"
    print(f"ok: every on-grid group ({on} of {total} outside the patched tensor, and the "
          f"patched tensor's) came back byte for byte; other tensors unchanged")


def patch(src):
    S = headers(src)
    p = sorted(k[:-len("_blocks")] for k in S if k.endswith("gate_up_proj_blocks"))[0]
    for suffix, cycle in (("_blocks", 256), ("_scales", 256)):
        f, _, shape, off, nb = S[p + suffix]
        data = (np.arange(nb, dtype=np.int64) * (7 if suffix == "_blocks" else 1)
                + (np.arange(nb) // cycle if suffix == "_blocks" else 0)) % 256
        with open(f, "r+b") as fh:
            fh.seek(off)
            fh.write(data.astype(np.uint8).tobytes())
    s = np.frombuffer(raw(S[p + "_scales"]), np.uint8)
    b = np.frombuffer(raw(S[p + "_blocks"]), np.uint8)
    G, B = S[p + "_blocks"][2][2:]
    codes = np.stack([b & 15, b >> 4], axis=-1).reshape(-1, 2 * B)
    pairs = {(int(c), int(sc)) for row, sc in zip(codes, s) for c in set(row.tolist())}
    assert len(pairs) == 16 * 256 and len(set(b.tolist())) == 256, \
        f"the checkpoint is too small to hold every code with every scale ({len(pairs)} pairs)"
    print(f"patched {p}: {len(s)} scales and {len(b)} block bytes, every value present")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "patch":
        patch(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "roundtrip":
        roundtrip(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] in ("numpy", "transformers"):
        check(*sys.argv[1:])
    else:
        sys.exit(__doc__)
