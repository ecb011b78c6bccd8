# bash completion for d9dfs: subcommands, flags, -o options, spec names
# (from `d9dfs specs`), directories for SRC, MNT and OUTDIR.
_d9dfs() {
  local cur prev cmd
  cur=${COMP_WORDS[COMP_CWORD]}
  prev=${COMP_WORDS[COMP_CWORD-1]}
  cmd=${COMP_WORDS[1]}
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "mount plan check convert cat specs demo --help --version" -- "$cur"))
    compopt -o default 2>/dev/null # mount(8)'s form: d9dfs SRC MNT -o spec=...
    return
  fi
  if [ "$prev" = "-o" ]; then
    local opts="readahead= max_read= single_thread splice no_splice direct_io allow_other
      auto_unmount shard_size= threads= mem= device= tp= ep= pp= etp= vocab_divisible_by=
      pp_layers= log= spec= fsname= subtype= uid= gid= ro default_permissions kernel_cache"
    compopt -o nospace 2>/dev/null
    COMPREPLY=($(compgen -W "$opts" -- "${cur##*,}"))
    local head=${cur%"${cur##*,}"}
    COMPREPLY=("${COMPREPLY[@]/#/$head}")
    return
  fi
  if [[ $cur == -* ]]; then
    local flags="--help"
    case $cmd in
      mount) flags="-f -d -o --reverse --lenient --strict --help" ;;
      plan) flags="-v --dot -o --reverse --lenient --help" ;;
      convert) flags="--force --jobs -o --reverse --lenient --help" ;;
      cat|check) flags="-o --reverse --lenient --help" ;;
      demo) flags="--keep --help" ;;
    esac
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
    return
  fi
  # the positional index among non-flag words after the subcommand
  local i n=0
  for ((i = 2; i < COMP_CWORD; i++)); do
    case ${COMP_WORDS[i]} in
      -o|--jobs) ((i++)) ;;
      -*) ;;
      *) ((n++)) ;;
    esac
  done
  if [ "$n" -eq 1 ] && [[ $cmd =~ ^(mount|plan|check|convert|cat)$ ]]; then
    local specs
    specs=$(d9dfs specs 2>/dev/null | awk '!/^#/ {print $1}')
    COMPREPLY=($(compgen -W "$specs" -- "$cur") $(compgen -f -X '!*.json' -- "$cur"))
    return
  fi
  COMPREPLY=($(compgen -d -- "$cur"))
}
complete -F _d9dfs d9dfs
complete -W "--family --layers --hidden --heads --kv-heads --head-dim --intermediate --vocab
  --experts --dtype --bias --tied --shards --block --seed --help --version" -o dirnames d9gen
