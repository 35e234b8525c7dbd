#!/usr/bin/env bash
# Shell helpers shared by the launch scripts; sourced, not run (each script sources it from its own launch/ folder).
set -euo pipefail

q() {  # shell-quote each argument where needed (--flag='value' style), joined by spaces
  local out=() a flag
  for a in "$@"; do
    flag=""
    if [[ $a =~ ^(--?[A-Za-z0-9_.-]+=)(.*)$ ]]; then flag=${BASH_REMATCH[1]}; a=${BASH_REMATCH[2]}; fi
    if [[ -n $a && $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then out+=("$flag$a")
    elif [[ $a != *[\$\`\\\"\!]* ]]; then out+=("$flag\"$a\"")
    else out+=("$flag'${a//\'/\'\\\'\'}'"); fi
  done
  printf '%s\n' "${out[*]}"
}
