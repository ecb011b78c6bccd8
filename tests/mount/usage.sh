#!/usr/bin/env bash
# The recipes of docs/usage.md marked "verified: tests/mount/usage.sh NAME"
# run as written (only their MNT line pointed at this test's mount), plus
# the checks the document claims for them: the HF-layout safetensors recipe
# loads every tensor equal to the source's; the per-rank recipe loads every
# rank tree, and the rank slices put together equal the full view.
# usage: usage.sh D9DFS D9GEN
# Exits 77 (skip) only when /dev/fuse is truly absent and CI is not set.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@" d9usage
DOC=$HERE/docs/usage.md

# the python block after the marker NAME, with its MNT line set to $2
recipe() {
  awk -v tag="<!-- verified: tests/mount/usage.sh $1 -->" '
    $0 == tag {want = 1; next}
    want && /^```python$/ {on = 1; next}
    on && /^```$/ {exit}
    on {print}' "$DOC" | sed "s|^MNT = .*|MNT = \"$2\"|"
}

SRC=$WORK/llama
"$D9GEN" --family llama --layers 4 --hidden 128 --heads 4 --kv-heads 2 --intermediate 256 \
  --vocab 512 --shards 2 --dtype F16 "$SRC" >/dev/null

HF=$WORK/hf
do_mount "$SRC" identity "$HF"
recipe hf_safetensors "$HF" >"$WORK/hf.py"
check "docs/usage.md has the hf_safetensors recipe" grep -q safe_open "$WORK/hf.py"
check "hf_safetensors: the recipe runs on an identity mount" \
  bash -c '"$0" "$1" | grep -q "^39 tensors$"' "$PY" "$WORK/hf.py"
check "hf_safetensors: every tensor loaded from the mount equals the source's" \
  "$PY" - "$SRC" "$HF" <<'PY'
import glob, os, sys
import numpy as np
from safetensors import safe_open
def load(d):
    out = {}
    for p in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        with safe_open(p, framework="numpy") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
    return out
src, mnt = load(sys.argv[1]), load(sys.argv[2])
assert sorted(src) == sorted(mnt), "names differ"
bad = [k for k in src if src[k].dtype != mnt[k].dtype or not np.array_equal(src[k], mnt[k])]
assert not bad, bad[:3]
PY

MC=$WORK/mcore
do_mount "$SRC" llama-to-megatron "$MC" -o tp=2,pp=2
recipe per_rank "$MC" >"$WORK/rank.py"
check "docs/usage.md has the per_rank recipe" grep -q ranks "$WORK/rank.py"
check "per_rank: the recipe loads all four rank trees" \
  bash -c '"$0" "$1" | grep -c "^tp[01]-pp[01]: [0-9]* tensors$" | grep -qx 4' "$PY" "$WORK/rank.py"
check "per_rank: slices equal the full view, layers renumbered per stage" \
  "$PY" - "$MC" <<'PY'
import glob, os, sys
import numpy as np
from safetensors import safe_open
M = sys.argv[1]
def load(d):
    out = {}
    for p in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        with safe_open(p, framework="numpy") as f:
            for k in f.keys():
                out[k] = f.get_tensor(k)
    return out
full = load(M)
r = {(t, p): load(f"{M}/ranks/tp{t}-pp{p}") for t in range(2) for p in range(2)}
for p in range(2):
    for local in range(2):
        k = "decoder.layers.%d.self_attention.linear_proj.weight" % local
        g = "decoder.layers.%d.self_attention.linear_proj.weight" % (2 * p + local)
        cat = np.concatenate([r[0, p][k], r[1, p][k]], axis=1)
        assert np.array_equal(cat, full[g]), (p, k)
    assert not any("layers.2." in k for k in r[0, p]), "layers not renumbered"
assert "embedding.word_embeddings.weight" in r[0, 0] and "embedding.word_embeddings.weight" not in r[0, 1]
assert "output_layer.weight" in r[0, 1] and "output_layer.weight" not in r[0, 0]
PY
finish
