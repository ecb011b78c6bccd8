#!/usr/bin/env bash
# gpt-oss MXFP4 -> BF16 (mounts/gpt-oss-mxfp4-to-bf16.json) through a real
# mount, on a generated gpt_oss checkpoint whose first gate_up_proj is
# patched to hold every E2M1 code with every E8M0 scale (0..255): every
# tensor equals an independent numpy reference bit for bit, and, when a
# Python with torch and transformers >= 5 is given (D9DFS_TF5_PYTHON,
# default .venv-peer/bin/python), transformers' convert_moe_packed_tensors;
# random reads equal `d9dfs convert`; a dequantised tensor is read lazily;
# `d9dfs check` reports the lossy steps and errors; the reversed mount gives
# every on-grid group back byte for byte and config.json back as it was.
# usage: mxfp4.sh D9DFS D9GEN
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@" d9mxfp4
CHECK=$HERE/tests/py/check_mxfp4_peer.py
SPEC=$SPECS/gpt-oss-mxfp4-to-bf16.json

src=$WORK/gptoss mnt=$WORK/mnt ref=$WORK/ref rmnt=$WORK/rev
"$D9GEN" --family gpt_oss --layers 2 --experts 3 --hidden 64 --intermediate 96 --shards 3 "$src" >/dev/null
check "the checkpoint holds every code with every scale" "$PY" "$CHECK" patch "$src"
check "mounts" do_mount "$src" "$SPEC" "$mnt"
check "every tensor equals the numpy reference bit for bit" "$PY" "$CHECK" numpy "$src" "$mnt"
TF5=${D9DFS_TF5_PYTHON:-${D9DFS_PEER_PYTHON:-$HERE/.venv-peer/bin/python}}
if [ -x "$TF5" ]; then
  out=$("$TF5" "$CHECK" transformers "$src" "$mnt" 2>&1) && st=0 || st=$?
  echo "$out"
  if [ $st = 77 ]; then
    echo "skip - transformers peer: $TF5 cannot import torch and transformers >= 5"
  else
    check "every tensor equals transformers' convert_moe_packed_tensors bit for bit" [ $st = 0 ]
  fi
else
  echo "skip - transformers peer: no Python at $TF5 (set D9DFS_TF5_PYTHON)"
fi
"$D9DFS" convert "$src" "$SPEC" "$ref" 2>/dev/null
check "random reads and mmap equal convert output" "$PY" "$HERE/tests/py/random_reads.py" "$mnt" "$ref" 400 3
# the checker can fail: one changed byte of a dequantised tensor is caught
cp -r "$ref" "$WORK/bad"
f=$(grep -l gate_up_proj "$WORK"/bad/*.safetensors | head -1)
"$PY" - "$f" <<'PYEOF'
import json, struct, sys
f = sys.argv[1]
with open(f, "r+b") as fh:
    n = struct.unpack("<Q", fh.read(8))[0]
    h = json.loads(fh.read(n))
    k = next(k for k in h if k.endswith("gate_up_proj"))
    fh.seek(8 + n + h[k]["data_offsets"][0] + 2)
    b = fh.read(1)
    fh.seek(-1, 1)
    fh.write(bytes([b[0] ^ 1]))
PYEOF
check "the numpy check catches one changed byte" bash -c "! '$PY' '$CHECK' numpy '$src' '$WORK/bad' >/dev/null 2>&1"
fusermount3 -u "$mnt"
do_mount "$src" "$SPEC" "$mnt" -o readahead=0
# lazy: the dequantised (and transposed) tensor pulls its blocks and scales,
# 0.53125 source bytes per value, for 2 BF16 bytes served: ratio 0.266, plus
# the neighbours' bytes in its first and last pages (0.11 here: the tensor
# starts mid-page) and the transposed tiles' single-element edges at page
# boundaries (measured 0.408 in all; 0.351 without the transpose)
check "one dequantised tensor pulls 0.26-0.45x its BF16 size from the source" "$PY" - "$mnt" <<'PYEOF'
import json, os, struct, sys
mnt = sys.argv[1]
stats = lambda: json.load(open(os.path.join(mnt, ".d9dfs", "stats.json")))["bytes_read_source"]
fd = os.open(os.path.join(mnt, "model.safetensors"), os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
n = struct.unpack("<Q", os.pread(fd, 8, 0))[0]
b, e = json.loads(os.pread(fd, n, 8))["model.layers.1.mlp.experts.down_proj"]["data_offsets"]
s0, got = stats(), 0
while got < e - b:
    got += len(os.pread(fd, min(1 << 17, e - b - got), 8 + n + b + got))
ratio = (stats() - s0) / (e - b)
print(f"down_proj: {e - b} bytes served, ratio {ratio:.3f} source bytes per byte")
assert 0.26 <= ratio <= 0.45
PYEOF
fusermount3 -u "$mnt"
out=$("$D9DFS" check "$src" "$SPEC" 2>&1) && st=0 || st=$?
echo "$out" | tail -4
check "d9dfs check reports the lossy steps and the patched tensor's error" bash -c \
  "[ $st = 0 ] && grep -q 'lossy step: rules\[0\] (gate_up).steps\[0\]' <<<'$out' && grep -q 'lossy spec' <<<'$out' && grep -q 'layers.0.mlp.experts.gate_up_proj_blocks: max abs error [0-9]' <<<'$out'"
mkdir -p "$rmnt"
check "mount --reverse of the converted tree gives every on-grid group back" bash -c \
  "'$D9DFS' mount '$ref' '$SPEC' '$rmnt' --reverse && '$PY' '$CHECK' roundtrip '$src' '$rmnt'"
MOUNTS+=("$rmnt")
check "mount --reverse: config.json is the source's, byte for byte" cmp "$rmnt/config.json" "$src/config.json"
fusermount3 -u "$rmnt"
finish
