"""The F8_E4M3 cast against torch (test tooling; tests/mount/e4m3.sh).

make SRC: SRC/model.safetensors with one F32 tensor "x" holding every F32
  bit pattern whose low 12 mantissa bits are 0, 0x555, 0x800 (a tie when
  the mantissa bits below E4M3's are exactly half), 0xfff - 2^20 x 4
  values: every exponent and sign, +-0, subnormals, values around 448/464,
  +-Inf and NaN payloads - plus a config.json.
torch SRC TREE: TREE/model.safetensors's "x" (F8_E4M3, the d9dfs cast)
  equals torch's x.to(torch.float8_e4m3fn) byte for byte, NaN as NaN of
  the same sign; exit 77 when torch cannot be imported.
"""
import json, os, struct, sys

import numpy as np


def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        out[k] = (v["dtype"], v["shape"], data[a:b])
    return out


def make(src):
    hi = np.arange(1 << 20, dtype=np.uint32) << np.uint32(12)
    bits = np.concatenate([hi | np.uint32(low) for low in (0, 0x555, 0x800, 0xFFF)])
    data = bits.astype("<u4").tobytes()
    hdr = {"x": {"dtype": "F32", "shape": [int(bits.size)], "data_offsets": [0, len(data)]}}
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + data)
    with open(os.path.join(src, "config.json"), "w") as f:
        json.dump({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, f)


def check_torch(src, tree):
    try:
        import torch
    except Exception as e:  # no peer here
        print(f"skip: torch cannot be imported: {e}")
        return 77
    s = read_st(os.path.join(src, "model.safetensors"))["x"]
    t = read_st(os.path.join(tree, "model.safetensors"))["x"]
    if t[0] != "F8_E4M3" or t[1] != s[1]:
        print(f"FAIL: the tree's x is {t[0]} {t[1]}, want F8_E4M3 {s[1]}")
        return 1
    x = torch.frombuffer(bytearray(s[2]), dtype=torch.float32)
    want = x.to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    got = np.frombuffer(t[2], dtype=np.uint8)
    nan_w = (want & 0x7F) == 0x7F
    nan_g = (got & 0x7F) == 0x7F
    bad = (want != got) & ~(nan_w & nan_g & ((want & 0x80) == (got & 0x80)))
    n = int(bad.sum())
    print(f"torch {torch.__version__}: {got.size} values, {n} differ "
          f"({int((np.isinf(x.numpy())).sum())} infinities, {int(nan_w.sum())} NaN)")
    for i in np.nonzero(bad)[0][:8]:
        print(f"  x bits {s[2][4*i:4*i+4][::-1].hex()}: d9dfs {got[i]:#04x}, torch {want[i]:#04x}")
    return 1 if n else 0


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
        sys.exit(0)
    sys.exit(check_torch(sys.argv[2], sys.argv[3]))
