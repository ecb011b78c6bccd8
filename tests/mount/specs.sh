#!/usr/bin/env bash
# Every shipped spec through a real mount: the safetensors package opens the
# tree and every tensor equals the naive reference (tests/py/check_specs.py);
# random reads equal `d9dfs convert`; `d9dfs check` passes (lossless specs:
# every tensor back byte for byte); the reversed mount of the converted tree
# gives the source tensors back; FP8 weight and scale in different shards
# are read lazily.
# usage: specs.sh D9DFS D9GEN
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@" d9specs

# spec_case NAME SPEC LOSSLESS(0|1) d9gen-args...
spec_case() {
  local name=$1 spec=$2 lossless=$3; shift 3
  local src=$WORK/$name.src mnt=$WORK/$name.mnt ref=$WORK/$name.ref rmnt=$WORK/$name.rev
  "$D9GEN" "$@" --shards 3 "$src" >/dev/null
  mkdir -p "$mnt" "$rmnt"; MOUNTS+=("$mnt" "$rmnt")
  check "$spec on $name: mounts" "$D9DFS" mount "$src" "$SPECS/$spec.json" "$mnt" -o shard_size=300000
  "$D9DFS" convert "$src" "$SPECS/$spec.json" "$ref" -o shard_size=300000
  check "$spec on $name: random reads and mmap equal convert output" \
    "$PY" "$HERE/tests/py/random_reads.py" "$mnt" "$ref" 600 3
  check "$spec on $name: safetensors opens it; tensors equal the reference" \
    "$PY" "$HERE/tests/py/check_specs.py" "$spec" "$src" "$mnt"
  local out; out=$("$D9DFS" check "$src" "$SPECS/$spec.json" 2>&1) && st=0 || st=$?
  if [ "$lossless" = 1 ]; then
    check "$spec on $name: d9dfs check: lossless, every tensor back byte for byte" \
      bash -c "[ $st = 0 ] && grep -q ' 0 differ, 0 missing, 0 extra (lossless spec)' <<<'$out'"
    check "$spec on $name: mount --reverse of the converted tree gives the source back" \
      bash -c "'$D9DFS' mount '$ref' '$SPECS/$spec.json' '$rmnt' --reverse && '$PY' '$HERE/tests/py/check_specs.py' roundtrip '$src' '$rmnt'"
  else
    check "$spec on $name: d9dfs check reports the lossy steps and errors" \
      bash -c "[ $st = 0 ] && grep -q 'lossy spec' <<<'$out' && grep -q 'lossy step:' <<<'$out'"
    check "$spec on $name: mount --reverse works and safetensors opens it" \
      bash -c "'$D9DFS' mount '$ref' '$SPECS/$spec.json' '$rmnt' --reverse && '$PY' -c \"import glob,sys; from safetensors import safe_open; [list(safe_open(f,'np').keys()) for f in glob.glob('$rmnt/*.safetensors')]\""
  fi
  fusermount3 -u "$mnt"
  mountpoint -q "$rmnt" && fusermount3 -u "$rmnt"
  return 0
}

spec_case mixtral mixtral-to-hf-fused-experts 1 --family mixtral --layers 2 --experts 5 --hidden 48 --intermediate 40 --dtype F32
spec_case mixtral-mg mixtral-to-megatron 1 --family mixtral --layers 2 --experts 3 --hidden 64 --heads 8 --kv-heads 2 --dtype F32
spec_case qwen3moe qwen3-moe-to-hf-fused-experts 1 --family qwen3_moe --layers 2 --experts 6 --hidden 40 --heads 4 --kv-heads 2 --intermediate 24 --dtype F32
spec_case deepseek deepseek-fp8-to-bf16 0 --family deepseek_fp8 --layers 2 --hidden 200 --heads 4 --kv-heads 2 --intermediate 96 --block 64 --dtype BF16
spec_case gemma gemma-to-standard-norms 0 --family gemma --layers 2 --dtype F32

# llama-to-megatron both ways: Megatron -> HF through --reverse
for fam in "llama --bias 0 --tied 0" "qwen2 --bias 1 --tied 1"; do
  set -- $fam
  name=$1; shift
  src=$WORK/$name-mg.src ref=$WORK/$name-mg.ref rmnt=$WORK/$name-mg.rev
  "$D9GEN" --family $name "$@" --layers 3 --heads 8 --kv-heads 2 --dtype F32 --shards 2 "$src" >/dev/null
  out=$("$D9DFS" check "$src" "$SPECS/llama-to-megatron.json" 2>&1) && st=0 || st=$?
  check "llama-to-megatron on $name: d9dfs check: lossless, every tensor back" \
    bash -c "[ $st = 0 ] && grep -q ' 0 differ, 0 missing, 0 extra (lossless spec)' <<<'$out'"
  "$D9DFS" convert "$src" "$SPECS/llama-to-megatron.json" "$ref"
  mkdir -p "$rmnt"; MOUNTS+=("$rmnt")
  check "llama-to-megatron on $name: mount --reverse gives the HF checkpoint back" \
    bash -c "'$D9DFS' mount '$ref' '$SPECS/llama-to-megatron.json' '$rmnt' --reverse && '$PY' '$HERE/tests/py/check_specs.py' roundtrip '$src' '$rmnt'"
  fusermount3 -u "$rmnt"
done

# FP8: weight and scale live in different shards; reading one dequantised
# tensor pulls its FP8 bytes plus its scales (about half the BF16 bytes served)
src=$WORK/lazy.src mnt=$WORK/lazy.mnt
"$D9GEN" --family deepseek_fp8 --layers 2 --hidden 256 --heads 4 --kv-heads 2 --intermediate 512 --block 128 --shards 2 --dtype BF16 "$src" >/dev/null
check "deepseek: weights and their scales are in different source shards" "$PY" -c "
import json; wm = json.load(open('$src/model.safetensors.index.json'))['weight_map']
assert any(wm[k] != wm[k + '_scale_inv'] for k in wm if k + '_scale_inv' in wm)"
mkdir -p "$mnt"; MOUNTS+=("$mnt")
"$D9DFS" mount "$src" "$SPECS/deepseek-fp8-to-bf16.json" "$mnt" -o readahead=0
check "deepseek: one dequantised tensor pulls 0.5-0.55x its BF16 size from the source" \
  "$PY" "$HERE/tests/py/amplification.py" "$mnt" model.safetensors mlp.down_proj.weight 0.55 0.5
fusermount3 -u "$mnt"

# lenient mode: findings listed in .d9dfs/report.json instead of refusing
src=$WORK/lenient.src mnt=$WORK/lenient.mnt
"$D9GEN" --family llama --layers 1 "$src" >/dev/null
echo '{"d9dfs_spec": 1, "rules": [{"name": "emb", "inputs": "model.embed_tokens.weight", "output": "e"}]}' > "$WORK/partial.json"
check "strict (default): a spec leaving tensors unused is refused" bash -c "! '$D9DFS' plan '$src' '$WORK/partial.json' 2>/dev/null"
mkdir -p "$mnt"; MOUNTS+=("$mnt")
check "--lenient: mounts and lists the findings in .d9dfs/report.json" bash -c \
  "'$D9DFS' mount '$src' '$WORK/partial.json' '$mnt' --lenient && grep -q 'used by no rule' '$mnt/.d9dfs/report.json' && ls '$mnt' | grep -q model.safetensors"
fusermount3 -u "$mnt"

finish
