#!/usr/bin/env bash
# Kaldi-style option parsing for recipe scripts (our own implementation, same rules).
#
# Set every option's default, then source this file:
#     stage=0; model=crnn; use_gpu=false
#     . ../../tools/parse_options.sh
# Then `--stage 3`, `--stage=3` and `--foo-bar v` (same as `--foo_bar v`) set variables that already
# exist. An unknown option, a missing value, or a value other than true/false for a variable whose
# default is true or false is an error (exit 1). `--config FILE` sources FILE (shell assignments).
# `--help`/`-h` prints $help_message. Parsing stops at `--` or the first argument that is not an
# option; positional arguments remain in "$@".

_po_die() { echo "$0: $*" >&2; exit 1; }

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
  [[ $_po_name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || _po_die "invalid option name --$_po_name"
  if [ "$_po_name" = config ]; then
    [ -f "$_po_value" ] || _po_die "config file $_po_value does not exist"
    # shellcheck disable=SC1090
    . "$_po_value"
    continue
  fi
  [ -n "${!_po_name+set}" ] || _po_die "unknown option --$_po_name (run with --help)"
  case "${!_po_name}" in
    true|false)
      case "$_po_value" in true|false) ;; *) _po_die "--$_po_name takes true or false, not '$_po_value'" ;; esac ;;
  esac
  printf -v "$_po_name" '%s' "$_po_value"
done
unset _po_name _po_value
true
