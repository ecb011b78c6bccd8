#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets (tests/fuzz/corpus/*).

usage: python3 tests/fuzz/make_corpus.py [--check]

Deterministic; standard library only. Regenerates the seed files (named
seed-*) of corpus/header, corpus/index and corpus/spec; other files there
(crash-*, the inputs of fixed findings, and anything merged from a fuzz
run) are left alone. With --check it only verifies that the committed seeds
are what this script writes (exit 1 if not).

header: whole safetensors files, valid and each rule of the reference
        implementation broken once (mapper/st_header.h lists the rules).
index:  model.safetensors.index.json texts over the fixture directory of
        fuzz_index.c (a.safetensors: x F32 [2], y BF16 [3]; b.safetensors:
        z F16 [1, 2]; sub/c.safetensors: w I32 [1]; dup.safetensors: x; plus
        bad/short shards, symlinks inside and outside, a dir and a FIFO).
spec:   the shipped mounts/*.json plus one spec per op and per mistake the
        spec checker must refuse, over the llama fixture names of fuzz_spec.c.
"""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
         "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


# ---- header ----

def st_file(header_json, data=b"", pad=True, length=None):
    """8-byte length + JSON (padded with spaces to a multiple of 8) + data."""
    h = header_json.encode() if isinstance(header_json, str) else header_json
    if pad:
        h += b" " * (-len(h) % 8)
    n = len(h) if length is None else length
    return struct.pack("<Q", n) + h + data


def st_valid(tensors, meta=None):
    """tensors: [(name, dtype, shape)]; laid out contiguously in order."""
    hdr, off = {}, 0
    if meta is not None:
        hdr["__metadata__"] = meta
    for name, dt, shape in tensors:
        n = SIZES[dt]
        for d in shape:
            n *= d
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + n]}
        off += n
    return st_file(json.dumps(hdr, separators=(",", ":")), bytes(i * 7 & 255 for i in range(off)))


def t(dt, shape, b, e):
    return {"dtype": dt, "shape": shape, "data_offsets": [b, e]}


def header_seeds():
    s = {}
    s["valid-two"] = st_valid([("a", "F32", [2, 3]), ("b", "BF16", [4])], {"format": "pt"})
    s["valid-all-dtypes"] = st_valid([("t_" + d, d, [2]) for d in SIZES])
    s["valid-empty"] = st_file("{}")
    s["valid-meta-only"] = st_file('{"__metadata__":{"format":"pt","k":"v"}}')
    s["valid-zero-size"] = st_valid([("z", "F32", [0, 5]), ("a", "U8", [3])])
    s["valid-scalar"] = st_valid([("s", "F64", [])])
    s["valid-8dims"] = st_valid([("d", "U8", [1, 2, 1, 2, 1, 2, 1, 2])])
    s["valid-unicode-name"] = st_valid([("w\u00e9ight.\u4e2d", "F16", [2])])
    s["valid-out-of-order"] = st_file(json.dumps({"b": t("U8", [2], 2, 4), "a": t("U8", [2], 0, 2)}),
                                      b"abcd")
    s["valid-escaped-name"] = st_file('{"a\\"b\\\\c\\u00e9":' + json.dumps(t("U8", [1], 0, 1)) + "}", b"x")
    s["short-file"] = b"\x10\x00\x00"
    s["len-zero"] = struct.pack("<Q", 0) + b"{}"
    s["len-over-cap"] = struct.pack("<Q", 100 * 1000 * 1000 + 1) + b"{}      "
    s["len-past-end"] = struct.pack("<Q", 64) + b"{}      "
    s["len-huge"] = struct.pack("<Q", 2 ** 64 - 1) + b"{}      "
    s["len-wraps-8"] = struct.pack("<Q", 2 ** 64 - 8) + b"{}      "
    s["not-utf8"] = st_file(b'{"\xff\xfe":' + json.dumps(t("U8", [1], 0, 1)).encode() + b"}", b"x")
    s["overlong-utf8"] = st_file(b'{"\xc0\xaf":' + json.dumps(t("U8", [1], 0, 1)).encode() + b"}", b"x")
    s["surrogate-utf8"] = st_file(b'{"\xed\xa0\x80":' + json.dumps(t("U8", [1], 0, 1)).encode() + b"}", b"x")
    s["not-json"] = st_file("this is not json")
    s["not-object"] = st_file("[1, 2, 3]")
    s["junk-after"] = st_file('{} {"a": 1}')
    s["tab-padding"] = st_file("{}\t\t\t\t\t\t", pad=False)
    s["nul-padding"] = st_file(b"{}\0\0\0\0\0\0", pad=False)
    s["unterminated"] = st_file('{"a": {"dtype": "F32"')
    s["dtype-unknown"] = st_file(json.dumps({"a": t("F17", [1], 0, 4)}), b"\0" * 4)
    s["dtype-lowercase"] = st_file(json.dumps({"a": t("f32", [1], 0, 4)}), b"\0" * 4)
    s["dtype-not-string"] = st_file(json.dumps({"a": t(4, [1], 0, 4)}), b"\0" * 4)
    s["shape-negative"] = st_file(json.dumps({"a": t("U8", [-1], 0, 0)}))
    s["shape-fraction"] = st_file(json.dumps({"a": t("U8", [1.5], 0, 1)}), b"x")
    s["shape-exponent"] = st_file('{"a":{"dtype":"U8","shape":[1e0],"data_offsets":[0,1]}}', b"x")
    s["shape-2p53"] = st_file(json.dumps({"a": t("U8", [2 ** 53 + 1], 0, 2 ** 53 + 1)}))
    s["shape-9dims"] = st_file(json.dumps({"a": t("U8", [1] * 9, 0, 1)}), b"x")
    s["shape-string"] = st_file(json.dumps({"a": t("U8", ["2"], 0, 2)}), b"xx")
    s["numel-overflow"] = st_file(json.dumps({"a": t("F32", [2 ** 32, 2 ** 32], 0, 0)}))
    s["numel-wraps-to-0"] = st_file(json.dumps({"a": t("U8", [2 ** 32, 2 ** 32, 2 ** 2], 0, 0)}))
    s["overflow-before-zero"] = st_file(json.dumps({"a": t("U8", [2 ** 40, 2 ** 40, 0], 0, 0)}))
    s["bytes-overflow"] = st_file(json.dumps({"a": t("F64", [2 ** 31, 2 ** 31], 0, 0)}))
    s["bytelen-mismatch"] = st_file(json.dumps({"a": t("F32", [2], 0, 4)}), b"\0" * 4)
    s["offsets-three"] = st_file(json.dumps({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1, 2]}}), b"x")
    s["offsets-reversed"] = st_file(json.dumps({"a": t("U8", [0], 4, 0)}), b"\0" * 4)
    s["offsets-not-zero"] = st_file(json.dumps({"a": t("U8", [2], 2, 4)}), b"abcd")
    s["offsets-gap"] = st_file(json.dumps({"a": t("U8", [2], 0, 2), "b": t("U8", [2], 3, 5)}), b"abcde")
    s["offsets-overlap"] = st_file(json.dumps({"a": t("U8", [3], 0, 3), "b": t("U8", [3], 2, 5)}), b"abcde")
    s["offsets-alias"] = st_file(json.dumps({"a": t("U8", [2], 0, 2), "b": t("U8", [2], 0, 2)}), b"ab")
    s["offsets-past-end"] = st_file(json.dumps({"a": t("U8", [8], 0, 8)}), b"abc")
    s["offsets-negative"] = st_file(json.dumps({"a": t("U8", [0], -1, -1)}))
    s["trailing-bytes"] = st_file(json.dumps({"a": t("U8", [2], 0, 2)}), b"abcdef")
    s["duplicate-name"] = st_file('{"a":%s,"a":%s}' % (json.dumps(t("U8", [1], 0, 1)),
                                                        json.dumps(t("U8", [1], 1, 2))), b"xy")
    s["duplicate-key-in-entry"] = st_file('{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"x")
    s["name-nul-escape"] = st_file('{"a\\u0000b":' + json.dumps(t("U8", [1], 0, 1)) + "}", b"x")
    s["name-raw-nul"] = st_file(b'{"a\0b":' + json.dumps(t("U8", [1], 0, 1)).encode() + b"}", b"x")
    s["name-bad-escape"] = st_file('{"a\\qb":' + json.dumps(t("U8", [1], 0, 1)) + "}", b"x")
    s["name-lone-surrogate"] = st_file('{"a\\ud800b":' + json.dumps(t("U8", [1], 0, 1)) + "}", b"x")
    s["name-empty"] = st_file('{"":' + json.dumps(t("U8", [1], 0, 1)) + "}", b"x")
    s["name-control"] = st_file('{"a\\nb\\u001b":' + json.dumps(t("U8", [1], 0, 1)) + "}", b"x")
    s["entry-extra-key"] = st_file(json.dumps({"a": dict(t("U8", [1], 0, 1), extra=1)}), b"x")
    s["entry-missing-key"] = st_file(json.dumps({"a": {"dtype": "U8", "shape": [1]}}), b"x")
    s["entry-not-object"] = st_file(json.dumps({"a": [1, 2]}))
    s["meta-not-object"] = st_file('{"__metadata__":"pt"}')
    s["meta-number-value"] = st_file('{"__metadata__":{"format":1}}')
    s["meta-nested"] = st_file('{"__metadata__":{"format":{"x":"y"}}}')
    s["meta-duplicate"] = st_file('{"__metadata__":{"a":"1"},"__metadata__":{"a":"2"}}')
    s["deep-nesting"] = st_file('{"a":' + "[" * 5000 + "]" * 5000 + "}")
    s["deep-objects"] = st_file('{"a":' + '{"b":' * 100 + "1" + "}" * 100 + "}")
    s["many-tensors"] = st_valid([("t%04d" % i, "U8", [1]) for i in range(300)])
    s["big-numbers"] = st_file('{"a":{"dtype":"U8","shape":[123456789012345678901234567890],'
                               '"data_offsets":[0,1]}}', b"x")
    s["float-offsets"] = st_file('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0.0,1.0]}}', b"x")
    s["bom"] = st_file(b"\xef\xbb\xbf{}")
    # shapes near the named limits (structure-aware fuzzing starts from these)
    s["limit-2000-tensors"] = st_valid([("model.layers.%d.mlp.experts.%d.w" % (i // 64, i % 64), "U8", [1])
                                        for i in range(2000)])
    s["limit-8-dims"] = st_valid([("a", "U8", [1, 2, 1, 2, 1, 2, 1, 2]), ("b", "U8", [0] * 8)])
    s["limit-9-dims"] = st_file('{"a":{"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]}}', b"x")
    s["limit-name-1024"] = st_valid([("n" * 1023, "U8", [1]), ("m" * 1024, "U8", [1]),
                                     ("\u00e9" * 600, "U8", [1])])
    s["limit-2p53-offsets"] = st_file('{"a":{"dtype":"U8","shape":[9007199254740992,0],'
                                      '"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[1],'
                                      '"data_offsets":[9007199254740991,9007199254740992]}}', b"x")
    s["limit-2p63-shape"] = st_file('{"a":{"dtype":"U8","shape":[9223372036854775807],'
                                    '"data_offsets":[0,1]}}', b"x")
    s["limit-repeated-names"] = st_file(
        '{' + ",".join('"w":{"dtype":"U8","shape":[1],"data_offsets":[%d,%d]}' % (i, i + 1)
                       for i in range(3)) + '}', b"xyz")
    s["limit-metadata-300"] = st_valid([("a", "U8", [1])], {("k%d" % i): "v" * i for i in range(300)})
    return s


# ---- index ----

def idx(wm, extra=None):
    d = {"metadata": {"total_size": 14}, "weight_map": wm}
    if extra:
        d.update(extra)
    return json.dumps(d, indent=1)


def index_seeds():
    ok = {"x": "a.safetensors", "y": "a.safetensors", "z": "b.safetensors", "w": "sub/c.safetensors"}
    s = {}
    s["valid"] = idx(ok)
    s["valid-one-shard"] = idx({"x": "a.safetensors", "y": "a.safetensors"})
    s["valid-symlink-inside"] = idx({"x": "link_in.safetensors", "y": "link_in.safetensors"})
    s["valid-extra-keys"] = idx(ok, {"note": "x", "metadata": {"total_size": "?", "a": [1, {}]}})
    s["valid-empty-map"] = idx({})
    s["absolute"] = idx(dict(ok, w="/etc/passwd"))
    s["absolute-self"] = idx(dict(ok, x="/tmp/a.safetensors", y="/tmp/a.safetensors"))
    s["dotdot"] = idx(dict(ok, z="../outside.safetensors"))
    s["dotdot-inner"] = idx(dict(ok, w="sub/../sub/c.safetensors"))
    s["dot"] = idx(dict(ok, z="./b.safetensors"))
    s["trailing-slash"] = idx(dict(ok, z="b.safetensors/"))
    s["double-slash"] = idx(dict(ok, w="sub//c.safetensors"))
    s["empty-name"] = idx(dict(ok, z=""))
    s["symlink-outside"] = idx(dict(ok, z="link_out.safetensors"))
    s["symlink-device"] = idx(dict(ok, z="link_dev.safetensors"))
    s["missing-shard"] = idx(dict(ok, z="nope.safetensors"))
    s["directory"] = idx(dict(ok, z="dir.safetensors"))
    s["fifo"] = idx(dict(ok, z="fifo.safetensors"))
    s["bad-shard"] = idx(dict(ok, z="bad.safetensors"))
    s["short-shard"] = idx(dict(ok, z="short.safetensors"))
    s["index-as-shard"] = idx(dict(ok, z="model.safetensors.index.json"))
    s["config-as-shard"] = idx(dict(ok, z="config.json"))
    s["listed-absent"] = idx(dict(ok, q="a.safetensors"))
    s["listed-wrong-shard"] = idx(dict(ok, x="b.safetensors"))
    s["present-unlisted"] = idx({"x": "a.safetensors", "z": "b.safetensors", "w": "sub/c.safetensors"})
    s["two-shards"] = idx(dict(ok, q="dup.safetensors"))
    s["empty-shard-listed"] = idx(dict(ok, e="empty.safetensors"))
    s["value-number"] = idx(dict(ok, z=3))
    s["value-null"] = idx(dict(ok, z=None))
    s["no-weight-map"] = json.dumps({"metadata": {}})
    s["weight-map-array"] = json.dumps({"weight_map": ["a.safetensors"]})
    s["not-object"] = "[]"
    s["not-json"] = "weight_map: a.safetensors"
    s["duplicate-key"] = ('{"weight_map": {"x": "a.safetensors", "x": "a.safetensors", '
                          '"y": "a.safetensors", "z": "b.safetensors", "w": "sub/c.safetensors"}}')
    s["nul-in-name"] = '{"weight_map": {"x": "a.safetensors\\u0000.txt"}}'
    s["deep"] = '{"metadata": ' + "[" * 3000 + "]" * 3000 + ', "weight_map": {}}'
    s["not-utf8"] = b'{"weight_map": {"x": "a\xff.safetensors"}}'
    s["newline-in-name"] = idx(dict(ok, **{"x\ny\r": "nope.safetensors"}))
    s["long-name"] = idx(dict(ok, z="a" * 5000))
    s["long-path"] = idx(dict(ok, z="/".join(["d"] * 3000)))
    s["empty"] = ""
    s["limit-1000-entries"] = idx(dict(ok, **{("t.%d" % i): "a.safetensors" for i in range(1000)}))
    s["limit-repeated-names"] = ('{"weight_map": {"x": "a.safetensors", "y": "a.safetensors", '
                                 '"x": "dup.safetensors", "z": "b.safetensors", "w": "sub/c.safetensors"}}')
    return s


# ---- spec ----

L = "model.layers.{L}."


def spec(rules, **top):
    d = {"d9dfs_spec": 1}
    d.update(top)
    if rules is not None:
        d["rules"] = rules
    if "passthrough" not in top:
        d["passthrough"] = True
    return json.dumps(d, indent=1)


def rule(inputs, steps, output, **kw):
    r = {"name": kw.pop("name", "r"), "inputs": inputs}
    if steps:
        r["steps"] = steps
    r["output"] = output
    r.update(kw)
    return r


QKV_IN = {"q": L + "self_attn.q_proj.weight", "k": L + "self_attn.k_proj.weight",
          "v": L + "self_attn.v_proj.weight"}
QKV_ARGS = {"heads": "num_attention_heads", "groups": "num_key_value_heads", "head_dim": "head_dim"}
HD = {"head_dim": {"default": "hidden_size / num_attention_heads"},
      "num_key_value_heads": {"default": "num_attention_heads"}}


def spec_seeds():
    s = {}
    for f in sorted(os.listdir(os.path.join(ROOT, "mounts"))):
        if f.endswith(".json"):
            with open(os.path.join(ROOT, "mounts", f), "rb") as fh:
                s["mount-" + f[:-5]] = fh.read()
    norm = "model.norm.weight"
    emb = "model.embed_tokens.weight"
    gate, up, down = (L + "mlp.gate_proj.weight", L + "mlp.up_proj.weight", L + "mlp.down_proj.weight")
    s["op-cast"] = spec([rule(emb, [{"op": "cast", "to": "F32"}], "e")])
    s["op-cast-f8"] = spec([rule(down, [{"op": "cast", "to": "F8_E5M2", "from": "BF16"}], "d.{L}")])
    s["op-concat"] = spec([rule({"g": gate, "u": up}, [{"op": "concat", "dim": 0}], "fc1.{L}")])
    s["op-stack"] = spec([rule({"g": gate, "u": up}, [{"op": "stack", "dim": 1}], "st.{L}")])
    s["op-unstack"] = spec([rule({"g": gate, "u": up}, [{"op": "stack", "dim": 0},
                                                        {"op": "unstack", "dim": 0, "out": ["a", "b"]}],
                                 {"a": "a.{L}", "b": "b.{L}"})])
    s["op-chunk"] = spec([rule(gate, [{"op": "chunk", "chunks": 2, "dim": 0, "out": ["a", "b"]}],
                               {"a": "a.{L}", "b": "b.{L}"})])
    s["op-split"] = spec([rule(gate, [{"op": "split", "sizes": [16, "hidden_size - 16"], "dim": 1,
                                       "out": ["a", "b"]}], {"a": "a.{L}", "b": "b.{L}"})])
    s["op-qkv"] = spec([rule(QKV_IN, [dict({"op": "qkv"}, **QKV_ARGS)], "qkv.{L}")], params=HD)
    s["op-qkv-split"] = spec([rule(QKV_IN, [dict({"op": "qkv"}, **QKV_ARGS),
                                            dict({"op": "qkv_split", "out": ["q", "k", "v"]}, **QKV_ARGS)],
                                   {"q": "q.{L}", "k": "k.{L}", "v": "v.{L}"})], params=HD)
    s["op-reshape"] = spec([rule(gate, [{"op": "reshape", "shape": [-1]}], "flat.{L}")])
    s["op-reshape-from"] = spec([rule(gate, [{"op": "reshape", "shape": [2, -1, 64],
                                              "from_shape": [128, 64]}], "r.{L}")])
    s["op-squeeze"] = spec([rule(norm, [{"op": "unsqueeze", "dim": 0}, {"op": "squeeze", "dim": 0}], "n")])
    s["op-transpose"] = spec([rule(down, [{"op": "transpose", "dim0": 0, "dim1": 1}], "t.{L}")])
    s["op-permute"] = spec([rule(gate, [{"op": "reshape", "shape": [4, 32, 64]},
                                        {"op": "permute", "dims": [2, 0, 1]}], "p.{L}")])
    s["op-slice"] = spec([rule(emb, [{"op": "slice", "dim": 0, "start": 3, "end": -5}], "s")])
    s["op-interleave"] = spec([rule({"g": gate, "u": up}, [{"op": "interleave", "group": 2}], "il.{L}")])
    s["op-deinterleave"] = spec([rule(gate, [{"op": "deinterleave", "parts": 2, "group": 4, "out": ["a", "b"]}],
                                      {"a": "a.{L}", "b": "b.{L}"})])
    s["op-affine"] = spec([rule(norm, [{"op": "affine", "mul": 0.5, "add": -1}], "n")])
    s["op-pad"] = spec([rule(emb, [{"op": "pad", "multiple": 384}], "e")])
    s["op-pad-rows"] = spec([rule(emb, [{"op": "pad", "rows": 300}], "e")])
    s["op-truncate"] = spec([rule(emb, [{"op": "pad", "rows": 300}, {"op": "truncate", "rows": 256}], "e")])
    s["op-rope"] = spec([rule(L + "self_attn.q_proj.weight", [{"op": "rope", "heads": "num_attention_heads",
                                                              "to": "interleaved"}], "q.{L}")])
    s["op-quant-dequant"] = spec([rule(down, [{"op": "quant", "block": [32, 32], "out": ["w", "s"]},
                                              {"op": "dequant", "block": [32, 32], "in": ["w", "s"]}],
                                       "d.{L}")])
    s["op-dequant-fp8"] = spec([rule({"s": "{X*}.weight_scale_inv", "w": "{X*}.weight"},
                                     [{"op": "dequant", "in": ["w", "s"]}, {"op": "cast", "to": "BF16"}],
                                     "{X}.weight")])
    s["over-experts"] = spec([rule("model.layers.{L}.block_sparse_moe.experts.{E}.w1.weight", [],
                                   "m.{L}.w1", over="E")])
    s["tied"] = spec([rule("lm_head.weight", [], "output_layer.weight",
                           tied={"from": emb, "if": "tie_word_embeddings"})])
    s["ignore-exclude"] = spec([rule(L + "{rest*}", [], "layers.{L}.{rest}", exclude=[L + "mlp.{x*}"])],
                               ignore=[L + "self_attn.rotary_emb.inv_freq"])
    s["output-single"] = spec([], output={"single_file": True, "copy": ["config.json", "tokenizer*"]})
    s["output-shards"] = spec([], output={"max_shard_size": "1KB"})
    s["output-shard-int"] = spec([], output={"max_shard_size": 1})
    s["config-patch"] = spec([], config={"set": {"model_type": "x", "n": 3}, "delete": ["torch_dtype"]})
    s["params-arith"] = spec([], params={"a": "hidden_size * 2 + (num_attention_heads - 1) % 3",
                                         "b": {"default": "a / 2"}, "c": 7,
                                         "d": "quantization_config.weight_block_size.0"})
    s["strict-unused"] = spec([rule(emb, [], "e")], passthrough=False, strict=True)
    s["required"] = spec([rule("model.nothing.{X}", [], "o{X}", required=True)])
    # mistakes the checker must refuse with a message
    s["bad-version"] = json.dumps({"d9dfs_spec": 2})
    s["bad-unknown-key"] = spec([], colour="blue")
    s["bad-unknown-rule-key"] = spec([rule(emb, [], "e", colour=1)])
    s["bad-unknown-op"] = spec([rule(emb, [{"op": "explode"}], "e")])
    s["bad-unknown-arg"] = spec([rule(emb, [{"op": "cast", "to": "F32", "size": 3}], "e")])
    s["bad-missing-tensor"] = spec([rule({"a": emb, "b": "model.nope"}, [{"op": "concat"}], "e")])
    s["bad-reshape-count"] = spec([rule(norm, [{"op": "reshape", "shape": [3, 7]}], "n")])
    s["bad-slice-range"] = spec([rule(emb, [{"op": "slice", "dim": 0, "start": 10, "end": 5000}], "e")])
    s["bad-slice-dim"] = spec([rule(emb, [{"op": "slice", "dim": 9, "start": 0, "end": 1}], "e")])
    s["bad-collide"] = spec([rule(emb, [], "same", name="a"), rule(norm, [], "same", name="b")])
    s["bad-collide-passthrough"] = spec([rule(norm, [], emb)])
    s["bad-metadata-target"] = spec([rule(norm, [], "__metadata__")])
    s["bad-overflow"] = spec([], params={"a": "9223372036854775807 + 1"})
    s["bad-mul-overflow"] = spec([], params={"a": "hidden_size * 9223372036854775807"})
    s["bad-div-zero"] = spec([], params={"a": "hidden_size / (num_attention_heads - num_attention_heads)"})
    s["bad-pad-overflow"] = spec([rule(emb, [{"op": "pad", "multiple": 9007199254740993}], "e")])
    s["bad-copy-escape"] = spec([], output={"copy": ["../*", "/etc/passwd"]})
    s["bad-copy-slash"] = spec([], output={"copy": ["sub/*.json"]})
    s["bad-pattern"] = spec([rule("model.{L", [], "x")])
    s["bad-capture-unknown"] = spec([rule(emb, [], "x.{Q}")])
    s["bad-qkv-groups"] = spec([rule(QKV_IN, [dict({"op": "qkv"}, **dict(QKV_ARGS, groups=3))], "q.{L}")],
                               params=HD)
    s["bad-chunk"] = spec([rule(norm, [{"op": "chunk", "chunks": 3, "out": ["a", "b", "c"]}],
                                {"a": "a", "b": "b", "c": "c"})])
    s["bad-shard-size"] = spec([], output={"max_shard_size": "5XB"})
    s["bad-deep"] = '{"d9dfs_spec": 1, "x": ' + "[" * 4000 + "]" * 4000 + "}"
    s["bad-not-object"] = "[1]"
    s["bad-empty"] = ""
    s["bad-dup-key"] = '{"d9dfs_spec": 1, "rules": [], "rules": []}'
    # written by hand in the corpus before this script had them: kept byte for byte
    for tp, style in (("not-expert", "row"), ("qkv", "expert")):
        s["bad-tp-" + tp] = ('{"d9dfs_spec": 1, "passthrough": true, "parallel": [{"pattern": "x.{w}", '
                             '"style": "%s", "tp": "%s"}], "rules": []}' % (style, tp.replace("not-expert", "row")))
    # shapes near the named limits (structure-aware fuzzing starts from these)
    caps8 = "".join("{%s}" % c for c in "abcdefgh")
    s["limit-8-captures"] = spec([rule(caps8 + "X", [], "out." + caps8)])
    s["limit-9-captures"] = spec([rule(caps8 + "{i}X", [], "out." + caps8 + "{i}")])
    s["limit-3-any-captures"] = spec([rule("{a*}.{b*}.{c*}", [], "o.{a}.{b}.{c}")])
    s["limit-repeated-capture"] = spec([rule(L + "mlp.{L}.weight", [], "o.{L}")])
    s["limit-name-1024"] = spec([rule(emb, [], "n" * 1023), rule(norm, [], "m" * 1024, name="m")])
    for n in (64, 65, 300):
        s["limit-%d-inputs" % n] = spec([rule({("i%d" % k): gate for k in range(n)},
                                              [{"op": "concat", "dim": 0}], "fc.{L}")])
    s["limit-64-steps"] = spec([rule(emb, [{"op": "cast", "to": "F32"}] * 64, "e")])
    s["limit-300-targets"] = spec([rule(emb, [], "e.%d" % k, name="r%d" % k) for k in range(300)])
    s["limit-2p53-args"] = spec([rule(emb, [{"op": "slice", "dim": 0, "start": 9007199254740993,
                                             "end": 9223372036854775808}], "e")])
    return s


def main():
    check = "--check" in sys.argv[1:]
    out = {"header": header_seeds(), "index": index_seeds(), "spec": spec_seeds()}
    stale = 0
    for kind, seeds in out.items():
        d = os.path.join(HERE, "corpus", kind)
        os.makedirs(d, exist_ok=True)
        want = set()
        for name, data in seeds.items():
            data = data.encode() if isinstance(data, str) else data
            path = os.path.join(d, "seed-" + name)
            want.add(os.path.basename(path))
            old = open(path, "rb").read() if os.path.exists(path) else None
            if old != data:
                stale += 1
                if not check:
                    with open(path, "wb") as f:
                        f.write(data)
        for f in os.listdir(d):
            if f.startswith("seed-") and f not in want:
                stale += 1
                if not check:
                    os.remove(os.path.join(d, f))
    total = sum(os.path.getsize(os.path.join(HERE, "corpus", k, f))
                for k in out for f in os.listdir(os.path.join(HERE, "corpus", k)))
    print("corpus: %d seeds, %d stale, %d bytes in all" % (sum(map(len, out.values())), stale, total))
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
