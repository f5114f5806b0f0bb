#!/usr/bin/env bash
# Kaldi-style option parsing for recipe scripts (our own implementation, same rules, but only declared
# options are options).
#
# Set every option's default, declare the options, then source this file:
#     stage=0; model=crnn; use_gpu=false
#     script_options=(stage model use_gpu)
#     . ../../tools/parse_options.sh
# Then `--stage 3`, `--stage=3` and `--foo-bar v` (same as `--foo_bar v`) set declared options. Kaldi's
# parser takes any variable that exists as an option, so `--PATH /x` or `--corpus x` would silently
# rewrite the script's own state; here an option that is not declared is an error, as are a missing
# value and a value other than true/false for an option whose default is true or false (exit 1, one
# line). `--config FILE` reads FILE's `name=value` lines (blank lines and # comments allowed), each
# name a declared option, the value taken literally (one pair of surrounding quotes removed, no shell
# expansion: a config must not run code or set anything else). `--help`/`-h` prints $help_message.
# Parsing stops at `--` or the first argument that is not an option; positional arguments remain in "$@".

_po_die() { echo "$0: $*" >&2; exit 1; }

# A script that forgets to declare its options is the script's bug: say so rather than accept nothing.
# shellcheck disable=SC2154  # script_options is the sourcing script's
declare -p script_options >/dev/null 2>&1 && [ "${#script_options[@]}" -gt 0 ] \
  || _po_die "parse_options.sh: declare the options in script_options=(...) before sourcing it"
for _po_name in "${script_options[@]}"; do
  [[ $_po_name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || _po_die "parse_options.sh: '$_po_name' cannot be an option name"
  [ -n "${!_po_name+set}" ] || _po_die "parse_options.sh: option $_po_name is declared but has no default"
done

_po_declared() {  # NAME: is NAME one of script_options?
  local o
  for o in "${script_options[@]}"; do [ "$o" = "$1" ] && return 0; done
  return 1
}

_po_set() {  # NAME VALUE WHERE: set a declared option; a true/false option takes only true or false
  [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || _po_die "${3}invalid option name --$1"
  _po_declared "$1" || _po_die "${3}unknown option --$1 (run with --help)"
  case "${!1}" in
    true|false)
      case "$2" in true|false) ;; *) _po_die "${3}--$1 takes true or false, not '$2'" ;; esac ;;
  esac
  printf -v "$1" '%s' "$2"
}

_po_config() {  # FILE: the name=value lines of a config file, each through _po_set
  local _po_line _po_n=0 _po_key _po_value
  [ -f "$1" ] || _po_die "config file $1 does not exist"
  while IFS= read -r _po_line || [ -n "$_po_line" ]; do
    _po_n=$((_po_n + 1))
    [[ $_po_line =~ ^[[:space:]]*(#.*)?$ ]] && continue
    [[ $_po_line =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] \
      || _po_die "config file $1, line $_po_n: not a name=value line"
    _po_key=${BASH_REMATCH[1]}
    _po_value=${BASH_REMATCH[2]}
    if [[ $_po_value =~ ^\"(.*)\"[[:space:]]*(#.*)?$ ]] || [[ $_po_value =~ ^\'(.*)\'[[:space:]]*(#.*)?$ ]]; then
      _po_value=${BASH_REMATCH[1]}
    else  # unquoted: a trailing comment and blanks are not part of the value, as in the shell
      [[ $_po_value =~ ^(.*[^[:space:]])?[[:space:]]+#.*$ ]] && _po_value=${BASH_REMATCH[1]}
      [[ $_po_value =~ ^(.*[^[:space:]])?[[:space:]]*$ ]] && _po_value=${BASH_REMATCH[1]}
    fi
    _po_set "$_po_key" "$_po_value" "config file $1, line $_po_n: "
  done < "$1"
}

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) printf '%s\n' "${help_message:-Usage: $0 [options]}"; exit 0 ;;
    --) shift; break ;;
    --*=*) _po_name=${1%%=*}; _po_value=${1#*=}; shift ;;
    --*)
      [ $# -ge 2 ] || _po_die "option $1 needs a value"
      _po_name=$1; _po_value=$2; shift 2 ;;
    *) break ;;
  esac
  _po_name=${_po_name#--}
  _po_name=${_po_name//-/_}
  if [ "$_po_name" = config ]; then _po_config "$_po_value"; continue; fi
  _po_set "$_po_name" "$_po_value" ""
done
unset _po_name _po_value
unset -f _po_die _po_declared _po_set _po_config
true
