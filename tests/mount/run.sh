#!/usr/bin/env bash
# Real FUSE mount tests, through the d9dfs CLI.
# usage: run.sh D9DFS D9GEN   (PYTHON=venv python with safetensors + numpy)
# Exits 77 (skip) only when /dev/fuse is truly absent and CI is not set;
# in CI a mount that cannot be made fails.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@" d9mount
"$PY" -c "import safetensors, numpy" || { echo "FAIL - $PY lacks safetensors/numpy"; exit 1; }

family_test() {
  local name=$1; shift
  local src=$WORK/$name mnt=$WORK/$name.mnt ref=$WORK/$name.ref
  "$D9GEN" "$@" --dtype F32 --shards 3 "$src" >/dev/null
  check "$name: mount returns with the mount ready" \
    do_mount "$src" "$SPECS/llama-to-megatron.json" "$mnt" -o shard_size=64000000,readahead=0
  check "$name: mountpoint is a fuse mount" mountpoint -q "$mnt"
  check "$name: ls -l lists shards, index and config" \
    bash -c "ls -l '$mnt' | grep -q 'model-00001-of-' && ls '$mnt' | grep -qx model.safetensors.index.json && ls '$mnt' | grep -qx config.json"
  check "$name: hexdump shows the header" bash -c "hexdump -C '$mnt'/model-00001-of-*.safetensors | head -1 | grep -qF '{\"__meta|'"
  local f1; f1=$(ls "$mnt" | grep -m1 'model-0000')
  check "$name: reading one fused tensor pulls <= 1.1x its size from the source" \
    "$PY" "$HERE/tests/py/amplification.py" "$mnt" "$f1" linear_qkv.weight 1.1
  "$D9DFS" convert "$src" "$SPECS/llama-to-megatron.json" "$ref" -o shard_size=64000000
  local allsame=1
  for f in "$ref"/*; do cmp -s "$f" "$mnt/$(basename "$f")" || allsame=0; done
  check "$name: every file through the mount equals d9dfs convert output" test $allsame = 1
  check "$name: d9dfs cat OFFSET LENGTH equals the same slice" bash -c \
    "cmp -s <('$D9DFS' cat '$src' '$SPECS/llama-to-megatron.json' '$f1' 100 5000 -o shard_size=64000000) <(tail -c +101 '$ref/$f1' | head -c 5000)"
  check "$name: random reads and mmap equal convert output" "$PY" "$HERE/tests/py/random_reads.py" "$mnt" "$ref" 1500 7
  check "$name: safetensors opens every file; tensors equal the reference" \
    "$PY" "$HERE/tests/py/check_megatron.py" "$src" "$mnt"
  check "$name: cp -r copies the tree" bash -c "cp -r '$mnt' '$WORK/$name.cp' && diff -r -x .d9dfs '$ref' '$WORK/$name.cp' >/dev/null"
  check "$name: writes are refused (EROFS)" bash -c "! (echo x > '$mnt/config.json') 2>/dev/null && ! touch '$mnt/new' 2>/dev/null"
  check "$name: stats.json has the counters" bash -c "grep -q bytes_read_source '$mnt/.d9dfs/stats.json' && grep -q tensors_evaluated '$mnt/.d9dfs/stats.json'"
  check "$name: fusermount3 -u unmounts" fusermount3 -u "$mnt"
  check "$name: the mount is gone" bash -c "! mountpoint -q '$mnt'"
}

family_test llama --family llama --layers 8 --hidden 1024 --heads 16 --kv-heads 4 --intermediate 1024 --vocab 4096 --bias 0 --tied 0
family_test qwen2 --family qwen2 --layers 4 --hidden 896 --heads 14 --kv-heads 2 --intermediate 1216 --vocab 3000 --bias 1 --tied 1

# a Hugging Face hub cache snapshot: every file a symlink to ../../blobs/HASH
HUB=$WORK/hub/models--org--tiny
mkdir -p "$HUB/blobs" "$HUB/snapshots/abc123"
"$D9GEN" --family llama --layers 2 --hidden 256 --heads 4 --kv-heads 2 --intermediate 512 \
  --vocab 300 --dtype F32 --shards 2 "$WORK/hubsrc" >/dev/null
for f in "$WORK/hubsrc"/*; do
  h=$(sha256sum "$f" | cut -c1-40)
  mv "$f" "$HUB/blobs/$h"
  ln -s "../../blobs/$h" "$HUB/snapshots/abc123/$(basename "$f")"
done
"$D9DFS" convert "$HUB/snapshots/abc123" "$SPECS/llama-to-megatron.json" "$WORK/hub.ref"
check "hub cache snapshot: mounts (links into ../../blobs followed)" \
  do_mount "$HUB/snapshots/abc123" "$SPECS/llama-to-megatron.json" "$WORK/hub.mnt"
check "hub cache snapshot: safetensors opens every file; tensors equal the reference" \
  "$PY" "$HERE/tests/py/check_megatron.py" "$HUB/snapshots/abc123" "$WORK/hub.mnt"
check "hub cache snapshot: equals d9dfs convert" diff -r -x .d9dfs "$WORK/hub.ref" "$WORK/hub.mnt"
mkdir -p "$WORK/nothub/x"
ln -s "$HUB/blobs" "$WORK/nothub/blobs"
for f in "$HUB/snapshots/abc123"/*; do ln -s "../blobs/$(basename "$(readlink "$f")")" "$WORK/nothub/x/$(basename "$f")"; done
st=0; out=$("$D9DFS" plan "$WORK/nothub/x" "$SPECS/identity.json" -o allow_other 2>&1) || st=$?
check "links out of a directory that is not a hub snapshot: refused with allow_other, naming the file" bash -c \
  "[ $st -ne 0 ] && grep -q \"model.*resolves outside the source directory\" <<<'$out'"

# memory budget under load: -o mem=4 (two 2 MiB scratch buffers), 16 readers
# in parallel get the right bytes and the daemon's peak RSS stays within the
# budget + 64 MiB
mnt=$WORK/membudget
do_mount "$WORK/llama" "$SPECS/llama-to-megatron.json" "$mnt" -o shard_size=64000000,mem=4
mpid=$(pgrep -f "d9dfs mount $WORK/llama $SPECS/llama-to-megatron.json $mnt" | head -1 || true)
check "mem=4: 4 processes x 4 threads of random reads equal convert output" \
  "$PY" "$HERE/tests/py/stress.py" "$mnt" "$WORK/llama.ref" 4 4 150 11
hwm=$(awk '/VmHWM/ {print $2}' /proc/"$mpid"/status 2>/dev/null || echo 999999999)
echo "daemon peak RSS under load with mem=4: ${hwm} KiB"
check "mem=4: daemon peak RSS ${hwm} KiB <= (4 + 64) MiB" test "$hwm" -le $(( (4 + 64) * 1024 ))
fusermount3 -u "$mnt"

# per-rank views: tp=2,4,8 (8 KV groups), ep=2,3 (5 experts), pp=2,3
# rank_trees LABEL SRC SPEC OPTS KIND N [--amplification]: mount SRC with
# -o OPTS, check every rank tree with check_ranks.py KIND N, unmount
rank_trees() {
  local label=$1 src=$2 spec=$3 opts=$4 mnt=$WORK/ranks-${4//[=,]/-}
  shift 4
  do_mount "$src" "$SPECS/$spec" "$mnt" -o "$opts"
  check "$label" "$PY" "$HERE/tests/py/check_ranks.py" "$mnt" "$src" "$@"
  fusermount3 -u "$mnt"
}
rsrc=$WORK/ranks-llama
"$D9GEN" --family llama --layers 3 --hidden 256 --heads 16 --kv-heads 8 --intermediate 384 --vocab 1001 --dtype F32 --shards 2 "$rsrc" >/dev/null
for T in 4 2 8; do
  extra=""; [ $T = 4 ] && extra=--amplification
  rank_trees "tp=$T: every rank tree opens in safetensors and equals the reference" \
    "$rsrc" llama-to-megatron.json tp=$T tp $T $extra
done
for S in 2 3; do
  rank_trees "pp=$S: stage trees equal the reference (layers renumbered)" \
    "$rsrc" llama-to-megatron.json pp=$S pp $S
done
msrc=$WORK/ranks-mixtral
"$D9GEN" --family mixtral --layers 2 --experts 5 --hidden 64 --heads 4 --kv-heads 2 --dtype F32 --shards 2 "$msrc" >/dev/null
for P in 2 3; do
  rank_trees "ep=$P: expert ranks own their experts (remainder rule), renumbered from 0" \
    "$msrc" mixtral-to-megatron.json ep=$P ep $P
done
rank_trees "tp=2,ep=2,etp=2: each rank's experts split by TP too (fc1 gated, fc2 row)" \
  "$msrc" mixtral-to-megatron.json tp=2,ep=2,etp=2 etp 2
out=$("$D9DFS" plan "$rsrc" "$SPECS/llama-to-megatron.json" -o tp=32 2>&1) && st=0 || st=$?
check "tp=32 with 16 heads: refused with the tensor, style and sizes" bash -c \
  "[ $st -ne 0 ] && grep -q 'linear_qkv.*style qkv.*16 attention heads are not divisible by tp=32' <<<'$out'"
# fewer KV groups than TP ranks (the Qwen2 case: 2 groups, tp=4) and tied
# embeddings: the reference, then Megatron-Bridge's own splits when the peer
# venv (torch, megatron-core, megatron-bridge) is there: D9DFS_PEER_PYTHON,
# default .venv-peer/bin/python
qsrc=$WORK/ranks-qwen2
"$D9GEN" --family qwen2 --layers 2 --hidden 192 --heads 12 --kv-heads 2 --intermediate 256 --vocab 1000 --dtype F32 --shards 2 "$qsrc" >/dev/null
rank_trees "tp=4 with 2 KV groups (qwen2, tied): rank trees equal the reference" \
  "$qsrc" llama-to-megatron.json tp=4 tp 4
rank_trees "pp=2 tied: the last stage holds the embedding as output_layer" \
  "$qsrc" llama-to-megatron.json pp=2 pp 2
PEER_PY=${D9DFS_PEER_PYTHON:-$HERE/.venv-peer/bin/python}
if [ -x "$PEER_PY" ] && "$PEER_PY" -c "import torch, megatron.core" 2>/dev/null; then
  usrc=$WORK/ranks-untied
  "$D9GEN" --family llama --layers 2 --hidden 128 --heads 8 --kv-heads 2 --intermediate 192 --vocab 512 --tied 0 --dtype F32 --shards 2 "$usrc" >/dev/null
  for q in "$qsrc tp=4" "$qsrc tp=2" "$usrc tp=8"; do
    set -- $q
    mnt=$WORK/peer-${1##*/}-${2#tp=}
    do_mount "$1" "$SPECS/llama-to-megatron.json" "$mnt" -o "$2"
    check "$2 ${1##*/}: every rank's splits equal Megatron-Bridge's, byte for byte" \
      "$PEER_PY" "$HERE/tests/py/check_ranks_peer.py" "$mnt" "$1" "${2#tp=}"
    fusermount3 -u "$mnt"
  done
else
  echo "skip - Megatron-Bridge parity: no peer venv at $PEER_PY (torch, megatron-core, megatron-bridge)"
fi

# lifecycle: SIGTERM and SIGINT unmount cleanly, exit 0
src=$WORK/llama
for sig in TERM INT; do
  mnt=$WORK/sig$sig
  do_mount "$src" "$SPECS/identity.json" "$mnt"
  pid=$(pgrep -f "d9dfs mount $src $SPECS/identity.json $mnt" | head -1 || true)
  if [ -n "$pid" ]; then
    kill -$sig "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    check "SIG$sig: daemon exits and the mount is gone" bash -c "! kill -0 $pid 2>/dev/null && ! mountpoint -q '$mnt'"
  else
    bad "SIG$sig: no daemon process found"
  fi
done

# foreground mode: -f stays attached; fusermount3 -u ends it with exit 0
mnt=$WORK/fg; mkdir -p "$mnt"; MOUNTS+=("$mnt")
"$D9DFS" mount "$src" "$SPECS/identity.json" "$mnt" -f & fgpid=$!
for _ in $(seq 100); do mountpoint -q "$mnt" && break; sleep 0.05; done
check "-f: mounted in the foreground" mountpoint -q "$mnt"
fusermount3 -u "$mnt"
check "-f: exits 0 after fusermount3 -u" wait $fgpid

# errors: missing mount point, busy mount point, bad spec
out=$("$D9DFS" mount "$src" "$SPECS/identity.json" "$WORK/nonexistent" 2>&1) && st=0 || st=$?
check "missing mount point: non-zero exit and a clear message" bash -c "[ $st -ne 0 ] && grep -q nonexistent <<<'$out'"
mnt=$WORK/busy; do_mount "$src" "$SPECS/identity.json" "$mnt"
out=$("$D9DFS" mount "$src" "$SPECS/identity.json" "$mnt" 2>&1) && st=0 || st=$?
check "busy mount point: non-zero exit and a clear message" bash -c "[ $st -ne 0 ] && grep -qi busy <<<'$out'"
fusermount3 -u "$mnt"
sed 's/self_attn.k_proj.weight/self_attn.kx_proj.weight/' "$SPECS/llama-to-megatron.json" > "$WORK/bad.json"
out=$("$D9DFS" plan "$src" "$WORK/bad.json" 2>&1) && st=0 || st=$?
check "plan with a spec mistake: non-zero exit, one line naming rule and tensor" bash -c \
  "[ $st -ne 0 ] && [ \$(wc -l <<<'$out') -eq 1 ] && grep -q 'rules\[1\] (qkv)' <<<'$out' && grep -q 'model.layers.0.self_attn.kx_proj.weight' <<<'$out'"
check "plan on a good spec: exit 0 and lists the fused tensor" bash -c \
  "'$D9DFS' plan '$src' '$SPECS/llama-to-megatron.json' | grep -q 'linear_qkv.weight.*<- rules\[1\] (qkv)'"

finish
