#!/usr/bin/env bash
# NeMo AutoModel combined projections through real mounts:
# mounts/nemo-automodel-combined.json on Llama and Qwen2 checkpoints and
# mounts/nemo-automodel-lora.json on PEFT LoRA / DoRA adapters (all seven
# projections, and q/v only), forward (from_hf) and --reverse over the
# forward mount (to_hf). Every tensor is checked against a numpy reference
# of the formulas (tests/py/check_nemo.py, always) and, when the peer venv
# has it, against nemo_automodel 0.3.0's own converter
# (tests/py/check_nemo_peer.py; D9DFS_PEER_PYTHON, default
# .venv-peer/bin/python). d9dfs check round-trips each source, and names
# lora_A copies that differ.
# usage: nemo.sh D9DFS D9GEN   (PYTHON=venv python with safetensors + numpy)
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@" d9nemo
"$PY" -c "import safetensors, numpy" || { echo "FAIL - $PY lacks safetensors/numpy"; exit 1; }
PEER_PY=${D9DFS_PEER_PYTHON:-$HERE/.venv-peer/bin/python}
peer=0
if [ -x "$PEER_PY" ] && "$PEER_PY" "$HERE/tests/py/check_nemo_peer.py" probe 2>/dev/null; then peer=1; fi
[ $peer = 1 ] || echo "skip - AutoModel parity: no nemo_automodel 0.3.0 with torch at $PEER_PY"

# unmount MNT: the reversed mount's daemon may still hold files of the
# forward mount for a moment after its own unmount: retry, bounded (10 s)
unmount() {
  local i
  for i in $(seq 100); do
    fusermount3 -u "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  fusermount3 -u "$1"
}

# both_ways TAG NAME SRC SPEC: mount forward, mount --reverse over that
# mount, check both against the reference (and the peer), and d9dfs check
both_ways() {
  local name=$2 src=$3 spec=$SPECS/$4 fwd=$WORK/$1.fwd rev=$WORK/$1.rev
  check "$name: mounts" do_mount "$src" "$spec" "$fwd"
  check "$name: --reverse over the forward mount mounts" do_mount "$fwd" "$spec" "$rev" --reverse
  check "$name: from_hf tensors equal the numpy reference" \
    "$PY" "$HERE/tests/py/check_nemo.py" from_hf "$src" "$fwd"
  check "$name: to_hf tensors equal the numpy reference" \
    "$PY" "$HERE/tests/py/check_nemo.py" to_hf "$fwd" "$rev"
  if [ $peer = 1 ]; then
    check "$name: from_hf equals nemo_automodel's, byte for byte" \
      "$PEER_PY" "$HERE/tests/py/check_nemo_peer.py" from_hf "$src" "$fwd"
    check "$name: to_hf equals nemo_automodel's, byte for byte" \
      "$PEER_PY" "$HERE/tests/py/check_nemo_peer.py" to_hf "$fwd" "$rev"
  fi
  check "$name: d9dfs check round-trips every tensor" bash -c \
    "'$D9DFS' check '$src' '$spec' | grep -q ' 0 differ, 0 missing, 0 extra (lossless spec)'"
  check "$name: unmounted" bash -c "fusermount3 -u '$rev' && $(declare -f unmount); unmount '$fwd'"
}

"$D9GEN" --family llama --layers 2 --hidden 128 --heads 8 --kv-heads 2 --intermediate 96 \
  --vocab 300 --dtype F32 --tied 0 --shards 2 "$WORK/llama" >/dev/null
"$D9GEN" --family qwen2 --layers 2 --hidden 96 --heads 6 --kv-heads 3 --head-dim 24 \
  --intermediate 80 --vocab 200 --dtype BF16 --tied 1 "$WORK/qwen2" >/dev/null
both_ways llama llama "$WORK/llama" nemo-automodel-combined.json
both_ways qwen2 "qwen2 (biases, tied, BF16)" "$WORK/qwen2" nemo-automodel-combined.json

for a in "lora q,k,v,o,gate,up,down" "dora q,k,v,o,gate,up,down" "lora q,v" "dora q,v,gate,up"; do
  set -- $a
  d=$WORK/$1-${2//,/}
  "$D9GEN" --family llama --layers 2 --hidden 128 --heads 8 --kv-heads 2 --intermediate 96 \
    --dtype F32 --adapter "$1" --lora-rank 4 --lora-targets "$2" "$d" >/dev/null
  both_ways "${d##*/}" "$1 on $2" "$d" nemo-automodel-lora.json
done

check "d9gen --adapter on an MoE family is refused" bash -c \
  "! '$D9GEN' --family mixtral --adapter lora '$WORK/moe-ad' 2>/dev/null && ! [ -e '$WORK/moe-ad' ]"
check "d9gen --lora-targets with an unknown module is refused" bash -c \
  "! '$D9GEN' --adapter lora --lora-targets q,x '$WORK/bad-ad' 2>/dev/null"

# copies that differ (an adapter trained on separate projections) are named
"$D9GEN" --family llama --layers 1 --dtype F32 --adapter lora --lora-shared-a 0 \
  --lora-targets q,k,v "$WORK/own-a" >/dev/null
out=$("$D9DFS" check "$WORK/own-a" "$SPECS/nemo-automodel-lora.json" 2>&1) && st=0 || st=$?
check "separate lora_A per projection: d9dfs check fails naming the copies" bash -c \
  "[ $st = 1 ] && grep -q \"copies differ: rules\\[0\\] (qkv_lora_A).steps\\[0\\]: 'base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight' is not\" <<<\"\$0\"" "$out"

finish
