#!/usr/bin/env bash
# The model-family specs through real mounts: qwen3-to-megatron,
# qwen3-moe-to-megatron, deepseek-v3-to-megatron (FP8) and phi3-to-llama,
# each on a generated checkpoint of its family: plan; mount; random reads
# equal `d9dfs convert`; the safetensors package opens the tree and every
# tensor equals the numpy reference (tests/py/check_families.py); every
# tensor of the mount equals Megatron-Bridge's own mapping of the same HF checkpoint
# (tests/py/check_families_peer.py, when the peer venv is there:
# D9DFS_PEER_PYTHON, default .venv-peer/bin/python; Bridge has no Phi-3
# bridge, so for phi3 transformers' Phi3 modules on the source must give the
# bits its Llama modules give on the tree); `d9dfs check` (lossless: every tensor back byte for byte; the FP8
# spec: lossy steps and errors reported); mount --reverse of the converted
# tree; per-rank trees under tp and ep against the full view.
# usage: families.sh D9DFS D9GEN
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@" d9families

PEER_PY=${D9DFS_PEER_PYTHON:-$HERE/.venv-peer/bin/python}
PEER_ARGS=()

# family_case NAME SPEC LOSSLESS(0|1) d9gen-args...
family_case() {
  local name=$1 spec=$2 lossless=$3; shift 3
  local src=$WORK/$name.src mnt=$WORK/$name.mnt ref=$WORK/$name.ref rmnt=$WORK/$name.rev
  "$D9GEN" "$@" --shards 3 "$src" >/dev/null
  check "$spec on $name: plan: validation ok, no findings" \
    bash -c "'$D9DFS' plan '$src' '$SPECS/$spec.json' | grep -q 'validation: ok (.*, 0 findings)'"
  do_mount "$src" "$SPECS/$spec.json" "$mnt" -o shard_size=200000
  "$D9DFS" convert "$src" "$SPECS/$spec.json" "$ref" -o shard_size=200000 2>/dev/null
  check "$spec on $name: random reads and mmap equal convert output" \
    "$PY" "$HERE/tests/py/random_reads.py" "$mnt" "$ref" 600 5
  check "$spec on $name: safetensors opens it; every tensor equals the numpy reference" \
    "$PY" "$HERE/tests/py/check_families.py" "$spec" "$src" "$mnt"
  # the mount stays up for the peer's check below
  PEER_ARGS+=("$spec" "$src" "$mnt")
  local out st
  out=$("$D9DFS" check "$src" "$SPECS/$spec.json" 2>&1) && st=0 || st=$?
  mkdir -p "$rmnt"; MOUNTS+=("$rmnt")
  if [ "$lossless" = 1 ]; then
    check "$spec on $name: d9dfs check: lossless, every tensor back byte for byte" \
      bash -c "[ $st = 0 ] && grep -q ' 0 differ, 0 missing, 0 extra (lossless spec)' <<<'$out'"
    check "$spec on $name: mount --reverse of the converted tree gives the source back" \
      bash -c "'$D9DFS' mount '$ref' '$SPECS/$spec.json' '$rmnt' --reverse && '$PY' '$HERE/tests/py/check_specs.py' roundtrip '$src' '$rmnt'"
  else
    check "$spec on $name: d9dfs check reports the lossy steps and the largest error" \
      bash -c "[ $st = 0 ] && grep -q 'lossy spec' <<<'$out' && grep -q 'lossy step:.*quantised back' <<<'$out' && grep -q 'largest error' <<<'$out'"
    check "$spec on $name: mount --reverse gives every source name, dtype and shape back" \
      bash -c "'$D9DFS' mount '$ref' '$SPECS/$spec.json' '$rmnt' --reverse && '$PY' -c \"
import sys; sys.path.insert(0, '$HERE/tests/py')
from check_specs import read_raw
S, R = read_raw('$src'), read_raw('$rmnt')
assert set(S) == set(R), (set(S) ^ set(R))
assert all(S[k][0] == R[k][0] and S[k][1].shape == R[k][1].shape for k in S)\""
  fi
  mountpoint -q "$rmnt" && fusermount3 -u "$rmnt"
  return 0
}

family_case qwen3 qwen3-to-megatron 1 --family qwen3 --layers 2 --hidden 64 --heads 8 --kv-heads 2 --head-dim 24 --intermediate 96 --dtype BF16
family_case qwen3-tied qwen3-to-megatron 1 --family qwen3 --layers 2 --heads 4 --kv-heads 1 --tied 1 --dtype F32
family_case qwen3moe qwen3-moe-to-megatron 1 --family qwen3_moe --layers 2 --experts 5 --hidden 48 --heads 6 --kv-heads 2 --intermediate 40 --dtype BF16
# FP8 with ragged 32x32 blocks; three layers: one dense, two MoE
family_case deepseek-v3 deepseek-v3-to-megatron 0 --family deepseek_v3 --layers 3 --experts 5 --hidden 80 --heads 4 --intermediate 72 --block 32 --dtype BF16
family_case phi3 phi3-to-llama 1 --family phi3 --layers 2 --hidden 96 --heads 6 --kv-heads 2 --intermediate 80 --dtype BF16

if [ -x "$PEER_PY" ] && "$PEER_PY" -c "import torch, megatron.core" 2>/dev/null; then
  check "qwen3, qwen3-moe, deepseek-v3: every tensor equals Megatron-Bridge's mapping, byte for byte; phi3: transformers' Phi3 and Llama modules agree bit for bit" \
    "$PEER_PY" "$HERE/tests/py/check_families_peer.py" "${PEER_ARGS[@]}"
else
  echo "skip - Megatron-Bridge parity: no peer venv at $PEER_PY (torch, megatron-core, megatron-bridge)"
fi
for m in "${MOUNTS[@]}"; do mountpoint -q "$m" && fusermount3 -u "$m"; done

# per-rank trees: TP styles (qkv, gated, row, vocab, column for MLA's up
# projections) and EP (experts by the remainder rule, renumbered)
for c in "qwen3 qwen3-to-megatron tp=2 2 1" "qwen3moe qwen3-moe-to-megatron tp=2,ep=2 2 2" \
         "deepseek-v3 deepseek-v3-to-megatron tp=2,ep=3 2 3"; do
  set -- $c
  mnt=$WORK/$1-ranks
  do_mount "$WORK/$1.src" "$SPECS/$2.json" "$mnt" -o "$3"
  check "$2 $3: each rank tree holds exactly its slices of the full view" \
    "$PY" "$HERE/tests/py/check_families.py" ranks "$2" "$mnt" "$mnt" "$4" "$5"
  fusermount3 -u "$mnt"
done

finish
