#!/usr/bin/env bash
# Specs for another model family are refused, through the CLI and a real
# mount: every shipped spec (identity aside) on two d9gen checkpoints of
# other families - `d9dfs plan` and `d9dfs mount` fail with one line naming
# what the spec wants and config.json's model_type, nothing is mounted;
# --force / -o force go ahead with a warning. The right family mounts with
# config.json unchanged. The deepseek and cast specs' config.json through
# the mount keeps every untouched member's bytes (floats as written, key
# order) and records the new dtype; the reversed mount of the converted
# deepseek tree serves the source config.json byte for byte.
# usage: applies.sh D9DFS D9GEN
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@" d9applies

for fam in llama qwen2 mixtral qwen3_moe deepseek_fp8 gemma; do
  "$D9GEN" --family $fam --layers 2 --shards 2 "$WORK/$fam" >/dev/null
done
"$D9GEN" --family llama --layers 2 --dtype F32 --shards 2 "$WORK/llama32" >/dev/null
# floats written with a decimal point, as transformers writes them
for d in deepseek_fp8 llama32; do
  sed -i 's/^  "rms_norm_eps": 1e-05,$/  "rms_norm_eps": 1e-05,\n  "rope_theta": 10000.0,\n  "attention_dropout": 0.0,\n  "rope_scaling": {\n    "factor": 40.0,\n    "type": "yarn"\n  },/' "$WORK/$d/config.json"
  grep -q '"factor": 40.0' "$WORK/$d/config.json"
done

# refused SPEC FAMILY WANT SAYS: plan and mount refuse; forced, they go ahead
refused() {
  local spec=$1 fam=$2 want=$3 says=$4 mnt=$WORK/mnt-$1-$2 err
  err=$("$D9DFS" plan "$WORK/$fam" "$SPECS/$spec.json" 2>&1 >/dev/null) && st=0 || st=$?
  check "$spec on $fam: plan refused naming '$want' and '$says'" \
    bash -c "[ $st = 1 ] && [ \$(wc -l <<<\"\$1\") = 1 ] && grep -qF -- '$want' <<<\"\$1\" && grep -qF -- '$says' <<<\"\$1\" && grep -qF -- '--force' <<<\"\$1\"" _ "$err"
  mkdir -p "$mnt"; MOUNTS+=("$mnt")
  "$D9DFS" mount "$WORK/$fam" "$SPECS/$spec.json" "$mnt" 2>"$mnt.err" && st=0 || st=$?
  check "$spec on $fam: mount refused, nothing mounted" \
    bash -c "[ $st = 1 ] && grep -qF -- '$want' '$mnt.err' && ! mountpoint -q '$mnt'"
  err=$("$D9DFS" plan "$WORK/$fam" "$SPECS/$spec.json" --force 2>&1 >/dev/null) || true
  check "$spec on $fam: --force goes ahead with a warning" \
    bash -c "grep -qF -- 'd9dfs: warning: ' <<<\"\$1\" && grep -qF -- '$says' <<<\"\$1\" && grep -qF -- 'going ahead (--force)' <<<\"\$1\" && ! grep -qF -- 'go ahead anyway' <<<\"\$1\"" _ "$err"
}

refused gemma-to-standard-norms llama "applies to model_type gemma, gemma2" "config.json says llama"
refused gemma-to-standard-norms qwen2 "applies to model_type gemma, gemma2" "config.json says qwen2"
refused mixtral-to-hf-fused-experts llama "applies to model_type mixtral;" "config.json says llama"
refused mixtral-to-hf-fused-experts qwen3_moe "applies to model_type mixtral;" "config.json says qwen3_moe"
refused mixtral-to-megatron llama "applies to model_type mixtral;" "config.json says llama"
refused mixtral-to-megatron gemma "applies to model_type mixtral;" "config.json says gemma"
refused qwen3-moe-to-hf-fused-experts llama "applies to model_type qwen3_moe;" "config.json says llama"
refused qwen3-moe-to-hf-fused-experts mixtral "applies to model_type qwen3_moe;" "config.json says mixtral"
refused deepseek-fp8-to-bf16 llama "applies to model_type deepseek_v3;" "config.json says llama"
refused deepseek-fp8-to-bf16 gemma "applies to model_type deepseek_v3;" "config.json says gemma"
refused llama-to-megatron mixtral "applies to model_type llama, mistral, qwen2;" "config.json says mixtral"
refused llama-to-megatron deepseek_fp8 "applies to model_type llama, mistral, qwen2;" "config.json says deepseek_v3"
refused cast-f32-to-bf16 llama "applies to tensors of dtype F32;" "is BF16"
refused cast-f32-to-bf16 mixtral "applies to tensors of dtype F32;" "is BF16"

# -o force on a real mount: mounted, the warning on stderr
mnt=$WORK/forced; mkdir -p "$mnt"; MOUNTS+=("$mnt")
"$D9DFS" mount "$WORK/llama" "$SPECS/gemma-to-standard-norms.json" "$mnt" -o force 2>"$mnt.err" && st=0 || st=$?
check "gemma spec on llama with -o force: mounted, warned" \
  bash -c "[ $st = 0 ] && mountpoint -q '$mnt' && grep -qF 'd9dfs: warning: ' '$mnt.err' && [ -s '$mnt/config.json' ]"
fusermount3 -u "$mnt" 2>/dev/null || true

# the right family: mounted, config.json as the source's
mnt=$WORK/gemma.mnt; mkdir -p "$mnt"; MOUNTS+=("$mnt")
"$D9DFS" mount "$WORK/gemma" "$SPECS/gemma-to-standard-norms.json" "$mnt" 2>"$mnt.err" && st=0 || st=$?
check "gemma spec on gemma: mounted without a warning, config.json the source's bytes" \
  bash -c "[ $st = 0 ] && [ ! -s '$mnt.err' ] && cmp -s '$mnt/config.json' '$WORK/gemma/config.json'"
fusermount3 -u "$mnt"

# config_kept SRC MNT DELETED...: the served config.json keeps every other
# member's raw value (numbers as written) in the source's order, torch_dtype
# says bfloat16, the deleted members are gone, and ls -l shows its size
config_kept() {
  "$PY" - "$@" <<'EOF'
import json, os, sys
src, mnt, deleted = sys.argv[1], sys.argv[2], set(sys.argv[3:])
raw = lambda t: json.loads(t, object_pairs_hook=list, parse_float=lambda s: ("float", s),
                           parse_int=lambda s: ("int", s))
a = raw(open(os.path.join(src, "config.json")).read())
text = open(os.path.join(mnt, "config.json")).read()
b = raw(text)
assert os.stat(os.path.join(mnt, "config.json")).st_size == len(text.encode())
changed = deleted | {"torch_dtype"}
want = [kv for kv in a if kv[0] not in changed]
got = [kv for kv in b if kv[0] not in changed | {"_d9dfs_config_patch"}]
assert got == want, (got, want)
assert dict(b)["torch_dtype"] == "bfloat16", dict(b)["torch_dtype"]
assert not deleted & set(dict(b)), deleted & set(dict(b))
# the text itself: every source line of an untouched member is served as is
lines = open(os.path.join(src, "config.json")).read().splitlines()
for l in lines:
    if not any('"%s"' % k in l for k in changed) and l.strip() not in ("{", "}") and \
            "weight_block_size" not in l:
        assert l in text.splitlines() or l.rstrip(",") in text.splitlines(), l
EOF
}

mnt=$WORK/ds.mnt; mkdir -p "$mnt"; MOUNTS+=("$mnt")
do_mount "$WORK/deepseek_fp8" "$SPECS/deepseek-fp8-to-bf16.json" "$mnt"
check "deepseek spec: config.json keeps every untouched member and type, records bfloat16" \
  config_kept "$WORK/deepseek_fp8" "$mnt" quantization_config
fusermount3 -u "$mnt"
"$D9DFS" convert "$WORK/deepseek_fp8" "$SPECS/deepseek-fp8-to-bf16.json" "$WORK/ds.fwd"
rmnt=$WORK/ds.rev; mkdir -p "$rmnt"; MOUNTS+=("$rmnt")
do_mount "$WORK/ds.fwd" "$SPECS/deepseek-fp8-to-bf16.json" "$rmnt" --reverse
check "deepseek spec reversed: config.json is the source's, byte for byte" \
  cmp "$rmnt/config.json" "$WORK/deepseek_fp8/config.json"
fusermount3 -u "$rmnt"

mnt=$WORK/cast.mnt; mkdir -p "$mnt"; MOUNTS+=("$mnt")
do_mount "$WORK/llama32" "$SPECS/cast-f32-to-bf16.json" "$mnt"
check "cast spec: config.json keeps every untouched member and type, records bfloat16" \
  config_kept "$WORK/llama32" "$mnt"
fusermount3 -u "$mnt"

finish
