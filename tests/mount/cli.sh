#!/usr/bin/env bash
# The command line as users meet it: every subcommand's --help, option
# errors that name the valid range, specs by name (and the near matches of a
# wrong one), model ids from a local Hugging Face cache, plan -v and --dot,
# a safe convert (progress on a terminal, a summary line, temporaries
# renamed only at the end, SIGINT/SIGTERM leave no file under a final name,
# a non-empty OUTDIR refused, --jobs), and mount(8)'s helper form: the
# command mount.fuse3 runs for `mount -t fuse.d9dfs` (findmnt SOURCE is SRC,
# umount ends it) and the daemon's log (-o log=FILE) naming the mount
# point, the file, the tensor, the shard and what to do.
# usage: cli.sh D9DFS D9GEN
# Exits 77 (skip) only when /dev/fuse is truly absent and CI is not set.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@" d9cli

# ---- help and versions ----
for sub in mount plan check convert cat specs demo; do
  out=$("$D9DFS" "$sub" --help) && rc=0 || rc=$?
  check "d9dfs $sub --help: exit 0 with its usage" \
    test "$rc" = 0 -a -n "$(grep "^usage: d9dfs $sub" <<<"$out")"
  check "d9dfs $sub -h: exit 0" "$D9DFS" "$sub" -h >/dev/null
done
check "d9dfs --help: exit 0" "$D9DFS" --help >/dev/null
check "d9dfs --version" grep -q '^d9dfs [0-9]' <<<"$("$D9DFS" --version)"
check "d9gen --version" grep -q '^d9gen [0-9]' <<<"$("$D9GEN" --version)"
check "d9dfs with no arguments: usage, exit 2" bash -c '"$0" 2>/dev/null; test $? = 2' "$D9DFS"

# ---- option errors name the valid range and the bad value ----
SRC=$WORK/src
"$D9GEN" --family llama --layers 2 --hidden 64 --heads 4 --kv-heads 2 --intermediate 128 \
  --vocab 300 --shards 2 "$SRC" >/dev/null
mkdir -p "$WORK/m0"
opt_error() { # WHAT EXPECTED OPTS...
  local what=$1 want=$2 err; shift 2
  err=$("$D9DFS" mount "$SRC" llama-to-megatron "$WORK/m0" "$@" 2>&1) && return 1
  grep -qF -- "$want" <<<"$err" || { echo "  got: $err"; return 1; }
}
check "-o threads=16 says 1..8" opt_error threads "-o threads=16: must be 1..8" -o threads=16
check "-o pp_layers=3:-1 names the bad value, not pp_layers=3" \
  opt_error pp "-o pp_layers=3:-1: '-1' is not a layer count" -o pp_layers=3:-1
check "-o max_read=2 says 4..1024" opt_error max_read "must be 4..1024" -o max_read=2
check "-o rw is refused: read-only filesystem" opt_error rw "read-only filesystem" -o rw
check "-o umask=022 is refused with a reason" opt_error umask "modes come from the source files" -o umask=022
check "-o nosuchopt: unknown option" opt_error unknown "-o nosuchopt: unknown option" -o nosuchopt
check "-o splice=1: takes no value" opt_error flag "takes no value" -o splice=1
check "--jobs 0 says 1..64" bash -c '"$0" convert "$1" llama-to-megatron "$2" --jobs 0 2>&1 |
  grep -qF -- "--jobs 0: must be 1..64"' "$D9DFS" "$SRC" "$WORK/nojobs"
check "no mount is left behind by the refusals" bash -c "! mountpoint -q '$WORK/m0'"

# ---- specs by name ----
REF=$WORK/ref
"$D9DFS" cat "$SRC" "$SPECS/llama-to-megatron.json" model.safetensors >"$WORK/ref.st"
check "SPEC by name (source tree's mounts/, uninstalled build) serves the spec file's bytes" \
  bash -c '"$0" cat "$1" llama-to-megatron model.safetensors | cmp -s - "$2"' \
  "$D9DFS" "$SRC" "$WORK/ref.st"
mkdir -p "$WORK/specdir"
python3 - "$SPECS/identity.json" "$WORK/specdir/mine.json" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
spec["description"] = "my own copy"
json.dump(spec, open(sys.argv[2], "w"))
PY
check "D9DFS_SPEC_PATH: a spec found by name" \
  bash -c 'D9DFS_SPEC_PATH=$1 "$0" plan "$2" mine | grep -qF "spec: $3 "' "$D9DFS" \
  "$WORK/nowhere:$WORK/specdir" "$SRC" "$WORK/specdir/mine.json"
check "d9dfs specs lists D9DFS_SPEC_PATH's spec with its description" \
  bash -c 'D9DFS_SPEC_PATH=$1 "$0" specs | grep -qE "^mine +my own copy$"' "$D9DFS" "$WORK/specdir"
check "d9dfs specs lists every shipped spec" bash -c '
  out=$("$0" specs); for f in "$1"/*.json; do
    n=$(basename "$f" .json); grep -qE "^$n( |$)" <<<"$out" || { echo "missing $n"; exit 1; }; done' \
  "$D9DFS" "$SPECS"
out=$("$D9DFS" specs "$SRC")
check "d9dfs specs SRC: llama-to-megatron applies to a llama, with its description" \
  grep -qE "^llama-to-megatron +[^(]" <<<"$out"
check "d9dfs specs SRC: gemma-to-standard-norms does not, with the model types named" \
  grep -qE "^gemma-to-standard-norms +\(does not apply: .*gemma.*config.json says llama" <<<"$out"
check "d9dfs specs SRC: deepseek-fp8-to-bf16 does not apply to a llama" \
  grep -qE "^deepseek-fp8-to-bf16 +\(does not apply" <<<"$out"
err=$("$D9DFS" plan "$SRC" llama-to-megatorn 2>&1) && rc=0 || rc=$?
check "an unknown spec name fails and lists the near match" \
  test "$rc" != 0 -a -n "$(grep 'did you mean: llama-to-megatron' <<<"$err")"
check "an unknown spec name lists the directories searched" grep -qF "$SPECS" <<<"$err"

# ---- SRC as a model id in a local Hugging Face cache ----
HASH=0123456789abcdef0123456789abcdef01234567
mkdir -p "$WORK/hub/models--acme--tiny/snapshots/$HASH" "$WORK/hub/models--acme--tiny/refs"
cp "$SRC"/* "$WORK/hub/models--acme--tiny/snapshots/$HASH/"
echo "$HASH" >"$WORK/hub/models--acme--tiny/refs/main"
(
  cd "$WORK"
  check "ORG/NAME resolves refs/main in HF_HUB_CACHE" bash -c 'HF_HUB_CACHE=$1 "$0" cat acme/tiny \
    llama-to-megatron model.safetensors | cmp -s - "$2"' "$D9DFS" "$WORK/hub" "$WORK/ref.st"
  check "ORG/NAME@COMMIT and HF_HOME/hub" bash -c 'HF_HOME=$1 "$0" cat acme/tiny@$3 \
    llama-to-megatron model.safetensors | cmp -s - "$2"' "$D9DFS" "$WORK" "$WORK/ref.st" "$HASH" \
    || true
)
mkdir -p "$WORK/hfhome" && ln -sfn "$WORK/hub" "$WORK/hfhome/hub"
check "ORG/NAME@COMMIT under HF_HOME/hub" bash -c 'cd /; HF_HOME=$1 "$0" cat acme/tiny@$3 \
  llama-to-megatron model.safetensors | cmp -s - "$2"' "$D9DFS" "$WORK/hfhome" "$WORK/ref.st" "$HASH"
err=$(cd / && HF_HUB_CACHE=$WORK/hub "$D9DFS" plan acme/absent llama-to-megatron 2>&1) && rc=0 || rc=$?
check "an absent model id fails naming the paths tried, no download" \
  test "$rc" != 0 -a -n "$(grep -F "$WORK/hub/models--acme--absent/refs/main" <<<"$err")"

# ---- plan -v and --dot ----
"$D9DFS" plan "$SRC" llama-to-megatron >"$WORK/plan.txt"
"$D9DFS" plan "$SRC" llama-to-megatron -v >"$WORK/plan-v.txt"
"$D9DFS" plan "$SRC" llama-to-megatron --dot >"$WORK/plan.dot"
targets=$(awk '/^  / && NF >= 4 {print $1}' "$WORK/plan.txt")
check "plan -v: every target of plan, each with its sources and ops" bash -c '
  for t in $1; do grep -A2 -F "  $t " "$0" | grep -q "^    sources: " || { echo "$t"; exit 1; }
    grep -A2 -F "  $t " "$0" | grep -q "^    ops: " || exit 1; done' "$WORK/plan-v.txt" "$targets"
check "plan -v: the fused QKV names its q, k and v sources" bash -c '
  grep -A1 -F "decoder.layers.0.self_attention.linear_qkv.weight " "$0" | grep "sources:" |
  grep -F q_proj.weight | grep -F k_proj.weight | grep -qF v_proj.weight' "$WORK/plan-v.txt"
check "plan --dot: a digraph holding every target and file" bash -c '
  head -1 "$0" | grep -q "^digraph" && tail -1 "$0" | grep -q "^}" || exit 1
  for t in $1 model.safetensors; do grep -qF "label=\"$t\\n" "$0" || { echo "$t"; exit 1; }; done' \
  "$WORK/plan.dot" "$targets"
check "plan --dot: the same bytes every run (ids do not depend on addresses)" \
  bash -c '"$0" plan "$1" llama-to-megatron --dot | cmp -s - "$2"' "$D9DFS" "$SRC" "$WORK/plan.dot"
check "plan --dot: every edge joins declared nodes" bash -c '
  declared=$(sed -n "s/^  \([ntf][0-9]*\) \[.*/\1/p" "$0" | sort -u)
  for id in $(sed -n "s/^  \([ntf][0-9]*\) -> \([ntf][0-9]*\);$/\1 \2/p" "$0"); do
    grep -qx "$id" <<<"$declared" || { echo "undeclared $id"; exit 1; }; done' "$WORK/plan.dot"
check "plan --dot: llama-to-megatron has no lossy step" bash -c '! grep -q lossy "$0"' "$WORK/plan.dot"
F32=$WORK/f32
"$D9GEN" --family llama --layers 2 --hidden 64 --heads 4 --kv-heads 2 --intermediate 128 \
  --vocab 300 --dtype F32 "$F32" >/dev/null
check "plan --dot: cast-f32-to-bf16 marks its casts lossy" bash -c '
  "$0" plan "$1" cast-f32-to-bf16 --dot | grep "cast to BF16" | grep -q "xlabel=\"lossy\""' \
  "$D9DFS" "$F32"

# ---- a safe convert ----
same_as_cat() { # SRC SPEC OUTDIR [opts]: every file of OUTDIR equals d9dfs cat, and no more
  local src=$1 spec=$2 out=$3 f n=0; shift 3
  for f in $("$D9DFS" plan "$src" "$spec" "$@" | awk '/^[^ ].*  [0-9]+ bytes/ {print $1}'); do
    "$D9DFS" cat "$src" "$spec" "$f" "$@" | cmp -s - "$out/$f" || { echo "  $f differs"; return 1; }
    n=$((n + 1))
  done
  [ "$n" -gt 0 ] && [ "$(ls -A "$out" | wc -l)" = "$n" ]
}
"$D9DFS" convert "$SRC" llama-to-megatron "$WORK/conv1" -o shard_size=100000 2>"$WORK/conv1.err"
check "convert: the files equal d9dfs cat, nothing else in OUTDIR" \
  same_as_cat "$SRC" llama-to-megatron "$WORK/conv1" -o shard_size=100000
nfiles=$(ls "$WORK/conv1" | wc -l)
nbytes=$(cat "$WORK/conv1"/* | wc -c)
ntensors=$(python3 - "$WORK/conv1" <<'PY'
import json, os, struct, sys
n = 0
for f in os.listdir(sys.argv[1]):
    if f.endswith(".safetensors"):
        with open(os.path.join(sys.argv[1], f), "rb") as fh:
            h = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        n += len([k for k in h if k != "__metadata__"])
print(n)
PY
)
check "convert: one summary line: $nfiles files, $ntensors tensors, $nbytes bytes, seconds, source bytes" \
  grep -qE "^d9dfs: convert: $nfiles files, $ntensors tensors, $nbytes bytes in [0-9.]+ s .*, [0-9]+ source bytes read$" \
  "$WORK/conv1.err"
check "convert without a terminal: no progress line" bash -c '! grep -q "ETA" "$0"' "$WORK/conv1.err"
"$D9DFS" convert "$SRC" llama-to-megatron "$WORK/conv2" -o shard_size=100000 --jobs 3 2>/dev/null
check "convert --jobs 3: the same files" diff -r "$WORK/conv1" "$WORK/conv2"
echo keep >"$WORK/conv2/mine.txt"
err=$("$D9DFS" convert "$SRC" llama-to-megatron "$WORK/conv2" 2>&1) && rc=0 || rc=$?
check "convert into a non-empty OUTDIR is refused" \
  test "$rc" != 0 -a -n "$(grep 'not empty' <<<"$err")" -a "$(cat "$WORK/conv2/mine.txt")" = keep
check "convert --force writes into it, other files kept" bash -c '"$0" convert "$1" \
  llama-to-megatron "$2" --force -o shard_size=100000 2>/dev/null && test -f "$2/mine.txt" &&
  cmp -s "$2/model-00001-of-$(ls "$2" | grep -c safetensors$ | xargs printf "%05d").safetensors" \
  "$3/model-00001-of-$(ls "$3" | grep -c safetensors$ | xargs printf "%05d").safetensors"' \
  "$D9DFS" "$SRC" "$WORK/conv2" "$WORK/conv1"

# A conversion long enough to catch in the middle whatever the machine's
# speed (every source read waits 20 ms): frozen (SIGSTOP) once its first
# temporary file exists, checked, then interrupted.
BIG=$WORK/big
"$D9GEN" --family llama --layers 2 --hidden 1024 --heads 8 --kv-heads 2 --intermediate 2048 \
  --vocab 16000 --dtype F32 "$BIG" >/dev/null
interrupt() { # SIGNAL EXPECTED_STATUS
  local out=$WORK/int-$1 pid rc
  "$D9DFS" convert "$BIG" cast-f32-to-bf16 "$out" -o inject_delay=20 2>"$out.err" &
  pid=$!
  eventually test -e "$out/.model.safetensors.d9dfs-tmp" || { echo "  no temporary seen"; return 1; }
  kill -STOP "$pid"
  if [ -e "$out/model.safetensors" ]; then echo "  finished before it could be stopped"; return 1; fi
  kill "-$1" "$pid"
  kill -CONT "$pid"
  wait "$pid" && rc=0 || rc=$?
  [ "$rc" = "$2" ] || { echo "  exit $rc, want $2"; return 1; }
  [ -z "$(ls -A "$out")" ] || { echo "  left: $(ls -A "$out")"; return 1; }
}
check "convert interrupted by SIGINT: exit 130, no file under a final name, no temporary" \
  interrupt INT 130
check "convert interrupted by SIGTERM: exit 143, OUTDIR left empty" interrupt TERM 143
script -qec "'$D9DFS' convert '$BIG' cast-f32-to-bf16 '$WORK/tty'" /dev/null >"$WORK/tty.out" 2>&1 || true
check "convert on a terminal: progress with bytes, %, rate and ETA" \
  grep -qaE "MiB / [0-9.]+ MiB +[0-9]+%  [0-9.]+ MB/s  ETA [0-9]+m[0-9]{2}s" "$WORK/tty.out"
check "convert on a terminal: the summary line too" grep -qa "d9dfs: convert: 4 files" "$WORK/tty.out"
check "convert on a terminal: the files equal d9dfs cat" same_as_cat "$BIG" cast-f32-to-bf16 "$WORK/tty"

# ---- mount(8)'s helper form, as mount.fuse3 runs it ----
M=$WORK/m1
mkdir -p "$M"
MOUNTS+=("$M")
# the arguments mount(8) -> mount.fuse3 hand over for
#   mount -t fuse.d9dfs SRC MNT -o spec=llama-to-megatron,nofail,x-systemd.automount
check "mount.fuse3 runs d9dfs SRC MNT -o rw,spec=NAME,...,dev,suid: mounted" \
  env PATH="$(dirname "$D9DFS"):$PATH" mount.fuse3 "$SRC" "$M" -t d9dfs \
  -o spec=llama-to-megatron,nofail,x-systemd.automount,dev,suid
check "findmnt: SOURCE is SRC, FSTYPE fuse.d9dfs, read-only" \
  test "$(findmnt -n -o SOURCE,FSTYPE,OPTIONS "$M" | awk '{print $1, $2, substr($3, 1, 3)}')" \
  = "$(readlink -f "$SRC") fuse.d9dfs ro,"
check "the helper-form mount serves d9dfs cat's bytes" cmp -s "$WORK/ref.st" "$M/model.safetensors"
daemon=$(for p in /proc/[0-9]*; do
  tr '\0' '\n' 2>/dev/null <"$p/cmdline" | sed -n '2,3p' | paste -sd ' ' |
    grep -qxF "$SRC $M" && basename "$p"; done || true)
check "the daemon runs as d9dfs SRC MNT (pid ${daemon:-none})" test -n "$daemon"
check "umount MNT ends it" umount "$M"
check "the daemon exits after umount" eventually test ! -e "/proc/${daemon:-0}"
check "the helper form without spec= fails with a hint" bash -c '
  "$0" "$1" "$2" -o ro 2>&1 | grep -q "spec=SPEC is missing"' "$D9DFS" "$SRC" "$M"

# ---- the log: -o log=FILE once daemonized ----
check "-o log= in a missing directory is refused before mounting" opt_error log \
  "-o log=$WORK/no/such/dir/log: No such file or directory" -o "log=$WORK/no/such/dir/log"
check "... and nothing was mounted" bash -c "! mountpoint -q '$WORK/m0'"
LOG=$WORK/daemon.log
do_mount "$SRC" llama-to-megatron "$M" -o log="$LOG",inject_eio=1
check "inject_eio: a read fails" bash -c "! cat '$M/model.safetensors' >/dev/null 2>&1"
eventually grep -q "Input/output error" "$LOG" || true
line=$(grep -m1 "tensor '" "$LOG" || true)
echo "  log: $line"
check "the log line names the mount point" grep -qF "d9dfs: $(readlink -f "$M"): read" <<<"$line"
check "the log line names the virtual file" grep -qF "model.safetensors" <<<"$line"
check "the log line names a tensor (not '-') and the source shard" \
  grep -qE "tensor '[a-z][^']*' \(source shard model-0000[12]-of-00002\.safetensors\)" <<<"$line"
check "the log line says what to do" grep -qF "then remount" <<<"$line"
check "nothing went to the terminal's stderr ($M.log)" test ! -s "$M.log"
check "one line per failed read: the front end does not repeat the core's" \
  bash -c "! grep -q ': offset [0-9]* length [0-9]*:' '$LOG'"
fusermount3 -u "$M"

# ---- syslog once daemonized (no -o log=, stderr not a file): facility
# daemon, ident d9dfs. Checked through a /dev/log of our own when the
# machine has none (no syslog daemon: the CI containers). ----
if [ -e /dev/log ]; then
  echo "note: syslog not checked: /dev/log belongs to this machine's syslog daemon"
else
  "$PY" - "$WORK/syslog.txt" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log")
with open(sys.argv[1], "ab", buffering=0) as out:
    while True:
        out.write(s.recv(65536) + b"\n")
PY
  BGPIDS+=($!)
  trap 'rm -f /dev/log; cleanup' EXIT
  eventually test -S /dev/log
  "$D9DFS" mount "$SRC" llama-to-megatron "$M" -o inject_eio=1 2>/dev/null
  check "syslog: a read fails" bash -c "! cat '$M/model.safetensors' >/dev/null 2>&1"
  eventually grep -q "Input/output error" "$WORK/syslog.txt" || true
  line=$(grep -am1 "tensor '" "$WORK/syslog.txt" || true)
  echo "  syslog: $line"
  check "syslog: facility daemon, priority err, ident d9dfs, the mount point" \
    grep -qE "^<27>.* d9dfs\[[0-9]+\]: $(readlink -f "$M"): read model\.safetensors" <<<"$line"
  fusermount3 -u "$M"
  kill "${BGPIDS[-1]}" 2>/dev/null || true
  rm -f /dev/log
fi

# a sanitizer build's daemons: none may have reported anything
check "no daemon log holds a sanitizer report" \
  bash -c "! grep -l 'Sanitizer\|runtime error' '$WORK'/*.log '$WORK'/*.txt 2>/dev/null"

finish
