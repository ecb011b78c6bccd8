#!/usr/bin/env bash
# The man pages are in step with the code and docs/spec.md: every
# subcommand, flag and -o option the CLI accepts (tools/d9dfs.c's command
# table and flags, tools/opts.c's option table) is in d9dfs(1); every
# operation, top-level key and rule key of docs/spec.md is in
# d9dfs-spec(5); man -l renders both without a warning; the bash
# completion loads and completes.
# usage: man.sh SOURCE_DIR
set -uo pipefail
SRCDIR=$1
pass=0 fail=0
ok() { echo "ok   - $*"; pass=$((pass + 1)); }
bad() { echo "FAIL - $*"; fail=$((fail + 1)); }

# the page's text with roff escapes undone: \- is -, fonts dropped
page_text() { sed -e 's/\\-/-/g' -e 's/\\f[BIRP]//g' "$1"; }
MAN1=$(page_text "$SRCDIR/docs/man/d9dfs.1")
MAN5=$(page_text "$SRCDIR/docs/man/d9dfs-spec.5")
has_word() { grep -qE "(^|[^A-Za-z0-9_-])$(sed 's/[.*]/\\&/g' <<<"$2")([^A-Za-z0-9_]|$)" <<<"$1"; }

words_in() { # WHAT PAGE_TEXT WORDS...
  local what=$1 text=$2 w missing=(); shift 2
  [ $# -gt 0 ] || { bad "$what: found nothing to check (a parser above broke)"; return; }
  for w in "$@"; do has_word "$text" "$w" || missing+=("$w"); done
  if [ ${#missing[@]} -eq 0 ]; then ok "$what ($# names)"; else bad "$what: missing ${missing[*]}"; fi
}

subcmds=$(grep -o '{"[a-z]*", [a-z]*_usage' "$SRCDIR/tools/d9dfs.c" | sed 's/{"\([a-z]*\)".*/\1/')
words_in "d9dfs(1) names every subcommand of tools/d9dfs.c" "$MAN1" $subcmds
flags=$(grep -o 'strcmp(a, "-[-a-z]*")' "$SRCDIR/tools/d9dfs.c" | sed 's/.*"\(.*\)")/\1/' | sort -u)
words_in "d9dfs(1) names every flag of tools/d9dfs.c" "$MAN1" $flags
opts=$(sed -n 's/.*{"\([a-z_]*\)", \(FLAG\|INT\|STR\),.*/\1/p' "$SRCDIR/tools/opts.c" | sort -u)
words_in "d9dfs(1) names every -o option of tools/opts.c" "$MAN1" $opts
helpopts=$(sed -n 's/^ *"  -o \([a-z_]*\).*/\1/p' "$SRCDIR/tools/d9dfs.c" | sort -u)
words_in "d9dfs(1) names every -o option of d9dfs mount --help" "$MAN1" $helpopts

# docs/spec.md: the ops (### headings of "Operations" and its summary
# table), the top-level keys (the "Top level" table), the rule keys (the
# "Rules" table)
SPEC=$SRCDIR/docs/spec.md
section() { awk -v h="$1" '/^## /{on = ($0 == "## " h)} on' "$SPEC"; }
ops=$(section Operations | sed -n 's/^| `\([a-z_]*\)` | [0-9n].*/\1/p' | sort -u)
words_in "d9dfs-spec(5) names every operation of docs/spec.md" "$MAN5" $ops
top=$(section "Top level" | sed -n 's/^| `\([a-z_.]*\)` |.*/\1/p' | sed 's/^output\.//' | sort -u)
words_in "d9dfs-spec(5) names every top-level key of docs/spec.md" "$MAN5" $top
rulekeys=$(section Rules | sed -n 's/^| `\([a-z_]*\)` |.*/\1/p' | sort -u)
words_in "d9dfs-spec(5) names every rule key of docs/spec.md" "$MAN5" $rulekeys

for p in d9dfs.1 d9dfs-spec.5; do
  out=$(MANWIDTH=80 man --warnings -l "$SRCDIR/docs/man/$p" 2>&1 >/dev/null)
  if [ -z "$out" ]; then ok "man -l $p renders without a warning"; else bad "man -l $p: $out"; fi
  if MANWIDTH=80 man -l "$SRCDIR/docs/man/$p" 2>/dev/null | grep -q '^NAME'; then
    ok "man -l $p has a NAME section"
  else bad "man -l $p: no NAME section"; fi
done
# the bash completion loads and completes subcommands and spec names
comp=$(bash -c '. "$0"; complete -p d9dfs; COMP_WORDS=(d9dfs pl); COMP_CWORD=1; _d9dfs;
  echo "${COMPREPLY[*]}"' "$SRCDIR/tools/completion/d9dfs.bash" 2>&1)
if grep -q "complete -F _d9dfs d9dfs" <<<"$comp" && grep -qx plan <<<"$(tail -1 <<<"$comp")"; then
  ok "bash completion: registered, completes 'pl' to plan"
else bad "bash completion: $comp"; fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
