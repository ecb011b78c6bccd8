#!/usr/bin/env bash
# Scale: the model cached once, and the bytes each rank tree pulls.
# usage: scale.sh D9DFS D9GEN   (PYTHON=a python3; only the standard library is used)
#
#   source_cache   with the default policy (drop, on a buffered mount) a cat
#                  of every file of an identity and of a llama-to-megatron
#                  mount (read() and mmap) leaves at most 10% of the source's
#                  bytes in the page cache (mincore), the mount's files fully
#                  cached, and the bytes equal `d9dfs cat`; with
#                  -o source_cache=keep the source stays cached (>= 90%);
#                  with -o direct_io the default keeps it; a bad value is
#                  refused, naming keep and drop
#   MoE ranks      a tp=2,ep=2 Mixtral mount lists each shared file once
#                  (one inode, two links); its four rank trees read at once
#                  pull <= 1.1x the model (exactly what `plan --bytes` says
#                  one mount pulls) and cache <= 1.15x
#   plan --bytes   for the full view and every ranks/ tree of tp=2 and
#                  tp=2,pp=2 mounts, the bytes `d9dfs plan --bytes` prints
#                  equal stats.json's bytes_read_source after a cat of that
#                  tree (a fresh mount per tree)
# Exits 77 (skip) only when /dev/fuse is truly absent and CI is not set.
set -uo pipefail
. "$(dirname "$0")/lib.sh" "$@" d9scale
SRC=$WORK/src
"$D9GEN" --family llama --layers 4 --hidden 512 --heads 8 --kv-heads 8 --intermediate 1024 \
  --vocab 8192 --tied 0 --shards 2 --seed 5 "$SRC" >/dev/null || { bad "d9gen"; finish; exit; }

# resident PATH...: bytes of the files in the page cache (mincore), then
# their size, on one line
resident() {
  "$PY" - "$@" <<'PYEOF'
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
res = size = 0
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    n = os.fstat(fd).st_size
    if n:
        a = libc.mmap(None, n, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if a in (None, ctypes.c_void_p(-1).value):
            sys.exit("mmap %s failed" % p)
        vec = (ctypes.c_ubyte * ((n + 4095) // 4096))()
        if libc.mincore(a, n, vec):
            sys.exit("mincore %s failed" % p)
        res += sum(v & 1 for v in vec) * 4096
        libc.munmap(a, n)
    os.close(fd)
    size += n
print(min(res, size), size)
PYEOF
}

# evict PATH...: drop the files from the page cache
evict() {
  "$PY" -c 'import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$@"
}

# mmap_read PATH...: touch every page through a shared mapping
mmap_read() {
  "$PY" -c 'import mmap, os, sys
for p in sys.argv[1:]:
    with open(p, "rb") as f:
        n = os.fstat(f.fileno()).st_size
        if n:
            m = mmap.mmap(f.fileno(), n, prot=mmap.PROT_READ)
            s = sum(m[o] for o in range(0, n, 4096)); m.close()' "$@"
}

# ratio_ok "R S" LO HI: LO <= R/S <= HI (percent)
ratio_ok() {
  local r=${1% *} s=${1#* }
  [ "$s" -gt 0 ] && [ $((100 * r / s)) -ge "$2" ] && [ $((100 * r / s)) -le "$3" ] ||
    { echo "resident $r of $s bytes: not within $2..$3%"; return 1; }
}

SHARDS=("$SRC"/*.safetensors)
source_bytes() { grep -o '"bytes_read_source": [0-9]*' "$1/.d9dfs/stats.json" | grep -o '[0-9]*$'; }
# source_within LO HI: the source's residency is within LO..HI %
source_within() { ratio_ok "$(resident "${SHARDS[@]}")" "$1" "$2"; }
# cache_case SPEC HOW OPTS LO HI: a cat (or mmap) of every tensor file of a
# fresh mount; the source's residency after it within LO..HI %, the mount's
# files fully cached, the bytes those of d9dfs cat
cache_case() {
  local spec=$1 how=$2 opts=$3 lo=$4 hi=$5 mnt=$WORK/mnt-$1-$2-${3//[=,]/_} f n e=0
  evict "${SHARDS[@]}"
  do_mount "$SRC" "$SPECS/$spec.json" "$mnt" $opts || { echo "mount failed"; return 1; }
  local files=("$mnt"/*.safetensors)
  if [ "$how" = cat ]; then cat "${files[@]}" >/dev/null; else mmap_read "${files[@]}"; fi
  local src_res mnt_res
  # the last drops of a shard come from the daemon's sweeper, 0.1 s and 1 s
  # after its last tensor (src_cache.h): wait for them, bounded
  eventually source_within "$lo" "$hi" >/dev/null
  src_res=$(resident "${SHARDS[@]}") && mnt_res=$(resident "${files[@]}") || return 1
  for f in "${files[@]}"; do
    n=${f##*/}
    cmp -s <("$D9DFS" cat "$SRC" "$SPECS/$spec.json" "$n") "$f" || { echo "$n differs"; e=1; }
  done
  fusermount3 -u "$mnt"
  echo "source resident: $src_res; mount: $mnt_res"
  ratio_ok "$src_res" "$lo" "$hi" && ratio_ok "$mnt_res" 99 100 && [ $e -eq 0 ]
}

for spec in identity llama-to-megatron; do
  for how in cat mmap; do
    check "source_cache: default, $spec, $how: the source dropped (<= 10% cached), the mount cached, bytes = d9dfs cat" \
      cache_case $spec $how "" 0 10
  done
done
for how in cat mmap; do
  check "source_cache: default, identity, $how, -o splice: the source dropped (<= 10% cached), the mount cached, bytes = d9dfs cat" \
    cache_case identity $how "-o splice" 0 10
done
check "source_cache=keep, llama-to-megatron, cat: the source stays cached (>= 90%)" \
  cache_case llama-to-megatron cat "-o source_cache=keep" 90 100
# direct_io: read() is not cached by the mount, so the default keeps the
# source (the mount's own residency is not checked here)
dio_case() {
  local mnt=$WORK/mnt-dio
  evict "${SHARDS[@]}"
  do_mount "$SRC" "$SPECS/identity.json" "$mnt" -o direct_io || return 1
  cat "$mnt"/*.safetensors >/dev/null
  local r; r=$(resident "${SHARDS[@]}")
  fusermount3 -u "$mnt"
  ratio_ok "$r" 90 100
}
check "source_cache: default with -o direct_io keeps the source cached (>= 90%)" dio_case
bad_value() {
  local out
  out=$("$D9DFS" mount "$SRC" "$SPECS/identity.json" "$WORK/mnt-bad" -o source_cache=some 2>&1) &&
    { echo "accepted"; return 1; }
  grep -q "source_cache=some: must be keep or drop" <<<"$out" || { echo "$out"; return 1; }
}
mkdir -p "$WORK/mnt-bad"
check "-o source_cache=some: refused, naming keep and drop" bad_value

# ranks: two readers of a tp=2 mount at once; a tensor both read (the
# norms, replicated) is dropped after the second (d9_mount_rank_need)
ranks_case() {
  local mnt=$WORK/mnt-ranks model src_res got
  evict "${SHARDS[@]}"
  do_mount "$SRC" "$SPECS/llama-to-megatron.json" "$mnt" -o tp=2 || return 1
  cat "$mnt"/ranks/tp0/*.safetensors >/dev/null & local p0=$!
  cat "$mnt"/ranks/tp1/*.safetensors >/dev/null & local p1=$!
  wait $p0 && wait $p1 || { echo "a reader failed"; return 1; }
  eventually source_within 0 10 >/dev/null
  src_res=$(resident "${SHARDS[@]}")
  got=$(grep -o '"bytes_read_source": [0-9]*' "$mnt/.d9dfs/stats.json" | grep -o '[0-9]*$')
  fusermount3 -u "$mnt"
  model=${src_res#* }
  echo "source resident: $src_res; source bytes read $got of $model"
  ratio_ok "$src_res" 0 10 && [ $((100 * got / model)) -le 110 ]
}
check "source_cache: default, tp=2, both rank trees read at once: <= 10% of the source cached, <= 1.1x the model read" \
  ranks_case

# MoE ranks: the dense part is shared by the EP ranks of a TP rank and,
# under etp=1, the experts by the TP ranks (mapper/plan.h: one inode each,
# nlink 2); four readers of a tp=2,ep=2 mount at once pull <= 1.1x the
# model from the source and leave <= 1.15x of it in the page cache (the
# source's pages plus the mount's distinct files)
MOE=$WORK/moe
"$D9GEN" --family mixtral --layers 2 --hidden 512 --intermediate 512 --experts 4 --shards 2 \
  --seed 7 "$MOE" >/dev/null || bad "d9gen mixtral"
moe_ranks_case() {
  local mnt=$WORK/mnt-moe shards=("$MOE"/*.safetensors) got model=0 f d pids=() links
  for f in "${shards[@]}"; do model=$((model + $(stat -c %s "$f"))); done
  evict "${shards[@]}"
  do_mount "$MOE" "$SPECS/mixtral-to-megatron.json" "$mnt" -o tp=2,ep=2 || return 1
  links=$(stat -c '%i %h' "$mnt"/ranks/tp0-ep{0,1}/model-00001-of-00001.safetensors \
            "$mnt"/ranks/tp{0,1}-ep1/experts-00001-of-00001.safetensors | sort -u | wc -l)
  [ "$links" = 2 ] || { stat -c '%i %h %n' "$mnt"/ranks/*/*.safetensors; echo "not linked"; return 1; }
  for d in "$mnt"/ranks/*/; do cat "$d"*.safetensors >/dev/null & pids+=($!); done
  for f in "${pids[@]}"; do wait "$f" || { echo "a reader failed"; return 1; }; done
  got=$(source_bytes "$mnt")
  local want
  want=$("$D9DFS" plan "$MOE" "$SPECS/mixtral-to-megatron.json" --bytes -o tp=2,ep=2 |
           sed -n 's/^one mount, every tree read (shared files once): \([0-9]*\) bytes.*/\1/p')
  [ -n "$want" ] && [ "$got" = "$want" ] ||
    { echo "source bytes $got, plan --bytes (one mount) '$want'"; fusermount3 -u "$mnt"; return 1; }
  eventually ratio_ok "$(resident "${shards[@]}")" 0 10 >/dev/null
  # the mount's distinct files (one path per inode)
  local distinct=() src_res mnt_res
  mapfile -t distinct < <(stat -c '%i %n' "$mnt"/ranks/*/*.safetensors | sort -u -k1,1 | cut -d' ' -f2-)
  src_res=$(resident "${shards[@]}") && mnt_res=$(resident "${distinct[@]}") || return 1
  fusermount3 -u "$mnt"
  local cached=$(( ${src_res% *} + ${mnt_res% *} ))
  echo "source bytes read $got, page cache $cached (source $src_res, mount $mnt_res), model $model"
  [ $((100 * got / model)) -le 110 ] && [ $((100 * cached / model)) -le 115 ]
}
check "MoE ranks, tp=2,ep=2: shared files linked; 4 readers at once: <= 1.1x the model read (= plan --bytes), <= 1.15x cached" \
  moe_ranks_case

# ==== plan --bytes against stats.json ====
# bytes_case OPTS: every tree of the plan; 0 when all equal
bytes_case() {
  local opts=$1 plan line tree want got mnt=$WORK/mnt-bytes e=0 n=0
  plan=$("$D9DFS" plan "$SRC" "$SPECS/llama-to-megatron.json" --bytes ${opts:+-o $opts}) ||
    { echo "plan --bytes failed"; return 1; }
  while read -r tree want _; do
    case $tree in ranks/*|"(full") ;; *) continue ;; esac
    local dir=$mnt
    [ "$tree" = "(full" ] && want=$(awk '$1 == "(full" {print $3}' <<<"$plan") || dir=$mnt/$tree
    do_mount "$SRC" "$SPECS/llama-to-megatron.json" "$mnt" ${opts:+-o $opts} || return 1
    cat "$dir"/*.safetensors >/dev/null
    got=$(source_bytes "$mnt")
    fusermount3 -u "$mnt"
    n=$((n + 1))
    [ "$got" = "$want" ] || { echo "$tree: plan --bytes $want, stats.json $got"; e=1; }
  done <<<"$plan"
  [ $n -gt 0 ] || { echo "no trees in: $plan"; return 1; }
  echo "$n trees"
  return $e
}
check "plan --bytes: the full view's bytes = stats.json after a full read" bytes_case ""
check "plan --bytes: each ranks/ tree of tp=2 = stats.json after reading it" bytes_case "tp=2"
check "plan --bytes: each ranks/ tree of tp=2,pp=2 = stats.json after reading it" bytes_case "tp=2,pp=2"
finish
