#!/usr/bin/env python3
"""gen_big_headers.py - a source directory whose safetensors headers are as
large as the format allows, for measuring the memory header metadata takes.

usage: gen_big_headers.py OUTDIR [--shards N] [--header-mb M]

Each shard holds 1-byte U8 tensors with long names until its JSON header
reaches about M MB (default 99, under the 100 MB header limit); the data
section is one byte per tensor. With N > 1 shards a
model.safetensors.index.json lists them all. Standard library only.
"""
import argparse
import json
import os
import struct


def shard(path, first, target):
    parts, off, n = ['{"__metadata__":{"format":"pt"}'], 0, 0
    size = len(parts[0])
    names = []
    while size < target:
        name = "model.layers.%d.mlp.experts.%d.gate_up_proj.weight" % ((first + n) // 512, (first + n) % 512)
        e = ',"%s":{"dtype":"U8","shape":[1],"data_offsets":[%d,%d]}' % (name, off, off + 1)
        parts.append(e)
        names.append(name)
        size += len(e)
        off += 1
        n += 1
    parts.append("}")
    text = "".join(parts).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(b"\0" * off)
    return names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--header-mb", type=float, default=99.0)
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    target = int(a.header_mb * 1e6) - 128
    if a.shards == 1:
        n = len(shard(os.path.join(a.outdir, "model.safetensors"), 0, target))
        print("model.safetensors: %d tensors" % n)
        return
    wm, first = {}, 0
    for s in range(a.shards):
        fn = "model-%05d-of-%05d.safetensors" % (s + 1, a.shards)
        names = shard(os.path.join(a.outdir, fn), first, target)
        first += len(names)
        for nm in names:
            wm[nm] = fn
        print("%s: %d tensors" % (fn, len(names)))
    with open(os.path.join(a.outdir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": wm}, f)


if __name__ == "__main__":
    main()
