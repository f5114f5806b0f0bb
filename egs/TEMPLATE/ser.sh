#!/usr/bin/env bash
# The SER recipe stages, shared by every corpus (ESPnet style). A corpus's run.sh sets
#   corpus=<name>  protocol=<default protocol>  <corpus>_root=<default root or empty>
#   downloadable=true (stage 0 runs `sertk data download <corpus>`) or corpus_source="where to get it"
#   import_csv=true when the corpus has no preparer: <corpus>_root is then a CSV for `sertk data import`
# and may define its own options and a configure_recipe function, called once the options are parsed,
# that turns them into prepare_args and a data_variant name. A recipe option is a variable set before
# sourcing (its default) and shown in recipe_help as `[--name VALUE]`: the options --help documents are
# the only options (tools/parse_options.sh), so corpus, downloadable, corpus_source or import_csv, which
# are the recipe's settings, cannot be changed from the command line, nor can any other shell variable.
# conf/ files the recipe lacks come from TEMPLATE/conf; conf/labels.yaml, when there is one,
# overrides the label map shipped with sertk.
#
# Stages (GUIDE section 2):
#   0 download the corpus where it is public (verified), else say where to get it
#   1 prepare data/all from the release, validate it, write the protocol's folds and check them
#   2 extract the features the model reads into dump/<tag>/
#   3 train one model per fold into exp/<protocol>/<model>/fold<k>/
#   4 decode dev and test with the dev-selected checkpoint (segment posteriors, voting)
#   5 score every fold, pool the folds, write exp/<protocol>/<model>/RESULTS.md
#   6 pack every fold's dev-selected model into exp/<protocol>/<model>/fold<k>/model.sertk (`sertk infer`)
# --refit true: stage 3 also trains each fold's dev choice again on train + dev (`sertk refit`) into
#   exp/<protocol>/<model>_refit/fold<k>/; stages 4-6 decode, score and pack that model's test set instead
# Every stage skips finished work and redoes unfinished work, so a run can be repeated or resumed.
# --stage 7 (past the last stage) runs none: it checks the options and resolves the configs only.
# Every option is checked before any stage runs, and exp/<protocol>/<model>/run.sh, the record of the
# last good command, is written only once the run's stages have succeeded.
#
# Scale-out: cmd.sh in the recipe picks the backend of the parallel jobs (local process pool or Slurm,
# options in conf/slurm.yaml); --nj N > 1 splits stage 2 into N jobs of whole speakers (--nj auto, the
# default: one in-process pass on the local backend when the corpus has under split_hours of audio, where
# a job's Python and torch start-up would cost more than it saves; else 4 jobs), --fold_jobs K
# trains K folds at a time (a log per fold in exp/<protocol>/<model>/log/), and with --ngpu, --jobs_per_gpu G
# lets G of them share each GPU (small models leave a GPU mostly idle). --ngpu N > 1 (or --nproc N
# on CPUs) trains each fold in N processes under torchrun (DistributedDataParallel); --torchrun_args
# replaces its default --standalone for several nodes (e.g. "--nnodes 2 --node_rank 0 --rdzv_backend c10d
# --rdzv_endpoint host:29400").
#
# Cross-corpus (--cross_corpus B): one fold that trains on this corpus (dev: held-out speakers of
# it) and tests on all of corpus B, both relabelled onto their shared classes by
# conf/cross/<corpus>_to_<B>.yaml. Its protocol is cross_<B>: data/cross_<B>, exp/cross_<B>/<model>.
set -euo pipefail
run_args=("$@")

# the options' defaults (set here, not taken from the environment: `stage=5 ./run.sh` would run what the
# exp dir's run.sh record does not say)
stage=0          # first stage to run
stop_stage=6     # last stage to run
model=crnn       # conf/models/<model>.yaml
protocol=${protocol:?run.sh must set protocol}
folds=all        # e.g. 1,3 to run only those folds
ngpu=0           # 0: CPU; 1: one GPU; N > 1: training in N processes, a GPU each (torchrun)
nproc=0          # training processes per node; 0: ngpu's (1 on CPU); N > 1 on CPU: gloo DDP
torchrun_args=--standalone  # torchrun's rendezvous options (several nodes: see above)
nj=auto          # feature-extraction jobs; N > 1: N jobs of whole speakers on the backend; auto: see above
split_hours=5    # --nj auto splits stage 2 into jobs only for a corpus longer than this
fold_jobs=1      # folds trained at a time, on the backend
jobs_per_gpu=1   # local backend with --ngpu: folds that share the same GPU(s) (small models)
backend=local
[ ! -f cmd.sh ] || . ./cmd.sh   # backend=local | slurm
train_args=      # passed to `sertk train`, e.g. "--set optim.lr=1e-4 --set train.epochs=5"
decode_args=
extract_args=    # passed to `sertk features extract`, e.g. "--batch-size 8"
prepare_args=    # passed to `sertk data prepare <corpus>`
cross_corpus=    # test on all of this corpus instead (cross-corpus protocol)
cross_root=      # its release folder (downloaded in stage 0 when it is public)
refit=false      # true: stage 3 then trains each fold's dev-chosen set-up again on train + dev
                 # (sertk refit) into exp/<protocol>/<model>_refit/, whose model stages 4-6 test
corpus=${corpus:?run.sh must set corpus}
root_var="${corpus}_root"
# shellcheck disable=SC2034  # read by parse_options.sh
help_message="Usage: $0 [--stage N] [--stop_stage M] [--model NAME] [--protocol NAME] [--folds 1,3]
          [--ngpu K] [--nproc P] [--torchrun_args ...] [--nj auto|J] [--split_hours H] [--fold_jobs F] [--jobs_per_gpu G] [--backend local|slurm]
          [--${root_var} PATH] [--train_args \"--set key=value ...\"] [--decode_args ...] [--extract_args ...]
          [--prepare_args ...] [--cross_corpus NAME --cross_root PATH] [--refit true|false]${recipe_help:+
          $recipe_help}"

# The options: ser.sh's own, the corpus root and those the recipe documents in recipe_help. Only these
# are parsed, so a mistyped or stray `--PATH`/`--corpus` is an error instead of a changed script.
printf -v "$root_var" '%s' "${!root_var:-}"   # a recipe that sets no default root still has the option
script_options=(stage stop_stage model protocol folds ngpu nproc torchrun_args nj split_hours fold_jobs jobs_per_gpu backend
                train_args decode_args extract_args prepare_args cross_corpus cross_root refit "$root_var")
rest=${recipe_help:-}
while [[ $rest =~ \[--([A-Za-z_][A-Za-z0-9_-]*)(.*)$ ]]; do
  script_options+=("${BASH_REMATCH[1]//-/_}")
  rest=${BASH_REMATCH[2]}
done
unset rest

recipe_protocol=$protocol
recipe_dir=$(pwd)
tools_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../tools" && pwd)
. "${tools_dir}/parse_options.sh"
[ $# -eq 0 ] || { echo "$0: unexpected argument '$1' (options start with --)" >&2; exit 1; }

log() { echo "$(date '+%F %T') [stage ${current_stage:-?}] $*" >&2; }
die() { echo "$0: error: $*" >&2; exit 1; }
run_stage() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

# The stage numbers first: with a stage that is not a number every `run_stage` test failed quietly and
# the run "succeeded" doing nothing. Numbers are matched to a few digits before `[` compares them: it
# prints its own error on a number past 64 bits.
last_stage=6
{ [[ $stage =~ ^[0-9]{1,3}$ ]] && [ "$stage" -le $((last_stage + 1)) ]; } \
  || die "--stage $stage: the stages are 0..$last_stage (--stage $((last_stage + 1)) runs none, checking the options only)"
{ [[ $stop_stage =~ ^[0-9]{1,3}$ ]] && [ "$stop_stage" -le "$last_stage" ]; } \
  || die "--stop_stage $stop_stage: the stages are 0..$last_stage"
[ "$stage" -gt "$last_stage" ] || [ "$stop_stage" -ge "$stage" ] \
  || die "--stop_stage $stop_stage is below --stage $stage: no stage would run"

data_variant=""   # configure_recipe may name a variant of the data (e.g. impro): data/all_<variant>, ...
if [ "$(type -t configure_recipe)" = function ]; then configure_recipe; fi
suffix=${data_variant:+_$data_variant}

command -v sertk >/dev/null || die "the sertk command is not installed (pip install -e . at the repository root)"
template_conf=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/conf
conf_file() {  # conf/<path> from the recipe when it has one, else the shared default in TEMPLATE/conf
  if [ -f "conf/$1" ]; then echo "conf/$1"; elif [ -f "$template_conf/$1" ]; then echo "$template_conf/$1"; fi
}
model_conf=$(conf_file "models/${model}.yaml")
[ -n "$model_conf" ] || die "no model config conf/models/${model}.yaml (models: $(ls conf/models "$template_conf/models" 2>/dev/null | sed -n 's/\.yaml$//p' | sort -u | tr '\n' ' '))"
for n in ngpu nproc fold_jobs jobs_per_gpu split_hours; do [[ ${!n} =~ ^[0-9]{1,6}$ ]] || die "--$n ${!n}: give a whole number (at most 6 digits)"; done
[ "$nj" = auto ] || [[ $nj =~ ^[0-9]{1,6}$ ]] || die "--nj $nj: give auto or a whole number (at most 6 digits)"
{ [ "$nj" = auto ] || [ "$nj" -ge 1 ]; } && [ "$fold_jobs" -ge 1 ] && [ "$jobs_per_gpu" -ge 1 ] \
  || die "--nj, --fold_jobs and --jobs_per_gpu must be at least 1"
case "$backend" in local|slurm) ;; *) die "--backend $backend: use local or slurm (see cmd.sh)";; esac
[ "$jobs_per_gpu" -eq 1 ] || { [ "$backend" = local ] && [ "$ngpu" -ge 1 ]; } \
  || die "--jobs_per_gpu $jobs_per_gpu: for folds sharing GPUs of this machine (--backend local with --ngpu 1 or more)"
[[ $folds =~ ^(all|[0-9]{1,6}(,[0-9]{1,6})*)$ ]] && [[ ! $folds =~ (^|,)0+(,|$) ]] \
  || die "--folds $folds: give all or fold numbers from 1, comma-separated (e.g. 1,3)"
[ -z "$cross_root" ] || [ -n "$cross_corpus" ] || die "--cross_root $cross_root needs --cross_corpus NAME"
# the protocol names `sertk data folds` knows (its --help lists them): a wrong one must not wait until
# stage 1 has prepared data/all. The recipe's own protocol is known (its tests run it), so they are asked
# only for another: each `sertk` start-up costs a third of a second of every run
if [ "$protocol" != "$recipe_protocol" ]; then
  known_protocols=$(sertk data folds --help | sed -n 's/^ *--protocol \[\([^]]*\)\].*/\1/p') || known_protocols=""
  if [ -n "$known_protocols" ] && [[ "|$known_protocols|" != *"|$protocol|"* ]]; then
    die "--protocol $protocol: not a protocol (known: ${known_protocols//|/, })"
  fi
fi
if [ "$ngpu" -ge 1 ]; then device=cuda; else device=cpu; fi
if [ "$nproc" -eq 0 ]; then nproc=$(( ngpu > 1 ? ngpu : 1 )); fi
[ "$ngpu" -eq 0 ] || [ "$nproc" -eq "$ngpu" ] || die "--nproc $nproc with --ngpu $ngpu: a process per GPU"
# folds trained at once must not meet at one rendezvous: they would form one training (gradients averaged
# across folds, a fold's test speaker in another's batches) or hang
if [ "$nproc" -gt 1 ] && [ "$fold_jobs" -gt 1 ] && [[ " $torchrun_args " != *" --standalone "* ]]; then
  die "--fold_jobs $fold_jobs with --torchrun_args '$torchrun_args': folds at once need their own rendezvous; use --fold_jobs 1 (one fold at a time over the nodes), or --standalone"
fi
trainer=(sertk)   # the training command; several processes per fold go through torchrun
if [ "$nproc" -gt 1 ]; then
  command -v torchrun >/dev/null || die "--nproc/--ngpu $nproc needs torchrun (it comes with torch)"
  # shellcheck disable=SC2206
  trainer=(torchrun $torchrun_args --nproc_per_node "$nproc" -m sertk)
fi
slurm_conf=$(conf_file slurm.yaml)
jobs_run() {  # KIND [JOB=...] LOG -- COMMAND...: a batch of jobs on the backend of cmd.sh
  local kind=$1 options=()
  shift
  if [ "$backend" = slurm ] && [ -n "$slurm_conf" ]; then options=(--slurm-conf "$slurm_conf"); fi
  sertk jobs run --backend "$backend" --kind "$kind" --name "${corpus}_${kind}" "${options[@]}" "$@"
}
# with --train_args: a features.tag set there is the dump that training reads, and a typo in a key outside
# model.* is one line now, before stages 1-2 run (model.* keys are checked when training starts)
# shellcheck disable=SC2086
feat_tag=$(sertk -q config get "$model_conf" features.tag $train_args)
if [ "$nproc" -gt 1 ] && run_stage 3; then   # under torchrun a config error is a page of tracebacks per process:
  # shellcheck disable=SC2086                # the whole config (model.* too) is checked here first, once
  sertk -q config show "$model_conf" $train_args >/dev/null
fi
feat_conf=$(conf_file "features/${feat_tag}.yaml")
[ -n "$feat_conf" ] || die "$model_conf asks for features '$feat_tag' but there is no conf/features/${feat_tag}.yaml"
corpus_root=${!root_var:-}
labels_arg=()  # conf/labels.yaml overrides the label map shipped with sertk
if [ -f conf/labels.yaml ]; then labels_arg=(--labels conf/labels.yaml); fi
data_all=data/all${suffix}
dump=dump/${feat_tag}${suffix}
test_dump=$dump
if [ -n "$cross_corpus" ]; then
  [ "$cross_corpus" != "$corpus" ] || die "--cross_corpus $cross_corpus: that is this recipe's own corpus"
  [ "$protocol" = "$recipe_protocol" ] \
    || die "--protocol $protocol and --cross_corpus exclude each other (the cross-corpus protocol is cross_${cross_corpus})"
  cross_map=$(conf_file "cross/${corpus}_to_${cross_corpus}.yaml")
  [ -n "$cross_map" ] || die "--cross_corpus $cross_corpus: no class mapping conf/cross/${corpus}_to_${cross_corpus}.yaml (see $template_conf/cross/ for the format)"
  protocol=cross_${cross_corpus}
  cross_all=data/${cross_corpus}_all
  test_dump=dump/${cross_corpus}_${feat_tag}
fi
data=data/${protocol}${suffix}
exp=exp/${protocol}${suffix}/${model}
final=$exp   # the model whose test set stages 4-6 decode, score and pack: with --refit true, the refit's
if [ "$refit" = true ]; then final=${exp}_refit; fi

fold_list() {  # the folds to run, one per line; an unknown fold is an error
  local n k
  [ -d "$data" ] || die "no folds in $data; run stage 1 first"
  n=$(find "$data" -maxdepth 1 -name 'fold*' -type d | wc -l)
  [ "$n" -gt 0 ] || die "no folds in $data; run stage 1 first"
  if [ "$folds" = all ]; then seq 1 "$n"; return; fi
  for k in ${folds//,/ }; do
    { [[ $k =~ ^[0-9]+$ ]] && [ "$k" -ge 1 ] && [ "$k" -le "$n" ]; } || die "--folds: '$k' is not a fold of $data (1..$n)"
  done
  for k in ${folds//,/ }; do echo "$((10#$k))"; done   # 01 is fold1
}

kept_fold() {  # K: is fold K only a finished run's kept record (`sertk results keep`: last.yaml, no checkpoints)?
  [ -f "$final/fold$1/last.yaml" ] && [ ! -f "$final/fold$1/last.pt" ]
}

folds_to_run() {  # WHAT: fold_list without the kept folds, which have nothing left to train or decode
  local k list
  list=$(fold_list) || exit 1   # its error inside $(...) would not stop the run by itself
  for k in $list; do
    if kept_fold "$k"; then log "fold $k is a kept record without checkpoints (sertk results keep): no $1"
    else echo "$k"; fi
  done
}

# folds already made: a fold that is not one of them is an error now, not after stages 1-2 have run
if [ "$folds" != all ] && [ -f "$data/protocol.yaml" ]; then fold_list >/dev/null; fi

current_stage=0
if run_stage 0; then
  if [ -n "$corpus_root" ]; then
    log "using --${root_var} ${corpus_root}"
  elif [ "${downloadable:-false}" = true ]; then
    corpus_root=$(sertk data download "$corpus" --dest downloads)
  else
    log "${corpus} is not downloadable: ${corpus_source:-see its documentation}; stage 1 needs --${root_var} PATH"
  fi
  if [ -n "$cross_corpus" ] && [ -z "$cross_root" ]; then
    download_log=$(mktemp)
    if cross_root=$(sertk data download "$cross_corpus" --dest downloads 2>"$download_log"); then
      cat "$download_log" >&2; rm -f "$download_log"
    else
      reason=$(tail -n 1 "$download_log"); rm -f "$download_log"
      die "--cross_root PATH is required: ${cross_corpus} could not be downloaded (${reason})"
    fi
  fi
fi
if [ -z "$corpus_root" ] && [ -d "downloads/${corpus}" ]; then corpus_root=downloads/${corpus}; fi
if [ -n "$cross_corpus" ] && [ -z "$cross_root" ] && [ -d "downloads/${cross_corpus}" ]; then
  cross_root=downloads/${cross_corpus}
fi

csv_source() {  # CSV: one line naming a CSV import's file and its content (another or an edited CSV differs)
  printf '%s sha256 %s' "$(readlink -f "$1")" "$(sha256sum < "$1" | cut -c1-16)"   # a link: the file it names
}

check_prepared_from() {  # ROOT OUT OPTION: OUT's audio is under the corpus folder ROOT given now (else that
  local root=$1 out=$2 option=$3 first   # ROOT would be ignored: the data of another folder trained on)
  if [ -n "$root" ] && [ -f "$root" ] && [ -f "$out/csv_source" ]; then   # a CSV import: the same file, unedited
    [ "$(cat "$out/csv_source")" = "$(csv_source "$root")" ] \
      || die "$out was imported from $(cat "$out/csv_source"), not from $option $root as it is now (another or an edited CSV); remove $out and $data to import it again"
    return 0
  fi
  [ -n "$root" ] && [ -d "$root" ] && [ -f "$out/wav.scp" ] || return 0
  first=$(head -n 1 "$out/wav.scp" | cut -d ' ' -f 2-)
  [[ $first == "$(cd "$root" && pwd)"/* || $first == "$(cd "$root" && pwd -P)"/* ]] \
    || die "$out was prepared from another folder than $option $root ($first); remove $out and $data to prepare from it"
}

preparation_record() {  # [prepare args]: one line saying how a data dir is prepared: the arguments, and the
  local arg previous=""    # content of the label map given with --labels (editing conf/labels.yaml changes it)
  for arg in "$@"; do
    if [ "$previous" = --labels ] && [ -f "$arg" ]; then printf '%s(sha256 %s) ' "$arg" "$(sha256sum < "$arg" | cut -c1-16)"
    else printf '%s ' "$arg"; fi
    previous=$arg
  done
}

check_preparation() {  # OUT RECORD: OUT was prepared as RECORD says (other labels or --prepare_args would be
  local out=$1 record=$2 made   # ignored; data dirs from before the record have none: not checked)
  [ -f "$out/prepared_with" ] || return 0
  made=$(cat "$out/prepared_with")
  [ "$made" = "$record" ] || die "$out was prepared with other label settings (then: ${made:-no options}; now: ${record:-no options}); remove $out and $data to prepare again"
}

prepare_data() {  # CORPUS ROOT OUT ROOT_OPTION [prepare args]: prepare and validate OUT unless it exists
  local name=$1 root=$2 out=$3 option=$4 record
  shift 4
  record=$(preparation_record "$@")
  if [ -f "$out/utt2emo" ]; then
    check_prepared_from "$root" "$out" "$option"
    check_preparation "$out" "$record"
    log "$out already prepared; skipping (remove it to prepare again)"; return
  fi
  if [ -z "$root" ]; then
    if [ "$name" = "$corpus" ] && [ "${downloadable:-false}" != true ]; then
      die "$option PATH is required: ${corpus_source:-give the ${name} release folder}"
    fi
    die "$option PATH is required for stage 1 (or run stage 0 to download ${name})"
  fi
  log "preparing $out from $root"
  if [ "$name" = "$corpus" ] && [ "${import_csv:-false}" = true ]; then
    sertk data import --csv "$root" --out "$out" --corpus "$name" "$@"
    csv_source "$root" > "$out/.csv_source.tmp" && mv -f "$out/.csv_source.tmp" "$out/csv_source"   # never half a record
  else
    sertk data prepare "$name" --root "$root" --out "$out" "$@"
  fi
  sertk data validate "$out"
  printf '%s' "$record" > "$out/prepared_with"
}

current_stage=1
if run_stage 1; then
  if [ -f "$data/protocol.yaml" ]; then
    check_prepared_from "$corpus_root" "$data_all" "--${root_var}"
    if [ -n "$cross_corpus" ]; then
      check_prepared_from "$cross_root" "$cross_all" --cross_root
      # the mapping file may have changed (or a recipe's own conf/cross/ appeared) since the protocol was made
      sertk data cross "$data_all" "$cross_all" --map "$cross_map" --out "$data" --verify >/dev/null || exit 1
    fi
    # shellcheck disable=SC2086
    check_preparation "$data_all" "$(preparation_record "${labels_arg[@]}" $prepare_args)"
    log "$data already made; skipping (remove it and ${data_all} to prepare again)"
  else
    # shellcheck disable=SC2086
    prepare_data "$corpus" "$corpus_root" "$data_all" "--${root_var}" "${labels_arg[@]}" $prepare_args
    if [ -n "$cross_corpus" ]; then
      prepare_data "$cross_corpus" "$cross_root" "$cross_all" --cross_root
      sertk data cross "$data_all" "$cross_all" --map "$cross_map" --out "$data"
    else
      sertk data folds "$data_all" --protocol "$protocol" --out "$data"
    fi
    # not `check && log`: a failed check inside an && list would not stop the run (set -e)
    # through a temporary file: a second run at the same time never reads a half-written check.txt
    sertk data check "$data" > "$data/.check.txt.tmp" || { rm -f "$data/.check.txt.tmp"; exit 1; }
    mv -f "$data/.check.txt.tmp" "$data/check.txt"
    log "$(tail -n 1 "$data/check.txt")"
  fi
  # on a first run the folds exist only now: an unknown one stops here, before stage 2 extracts anything
  if [ "$folds" != all ]; then fold_list >/dev/null; fi
fi

extraction_jobs() {  # DATA: --nj, or for auto: 1 on the local backend under split_hours of audio, else 4
  if [ "$nj" != auto ]; then echo "$nj"; return; fi
  if [ "$backend" = local ] && [ -f "$1/utt2dur" ] && \
     awk -v h="$split_hours" '{s += $2} END {exit !(s < h * 3600)}' "$1/utt2dur"; then echo 1; else echo 4; fi
}

extract() {  # DATA DUMP: the features of DATA into DUMP; with more than one job, as jobs of whole speakers
  local data_in=$1 out=$2 cmd jobs
  jobs=$(extraction_jobs "$data_in")
  # shellcheck disable=SC2206
  cmd=(sertk features extract "$data_in" "$out" --conf "$feat_conf" --device "$device" $extract_args)
  if [ "$jobs" -eq 1 ]; then "${cmd[@]}"; return; fi
  jobs_run extract "JOB=1:$jobs" "$(dirname "$out")/log/$(basename "$out").extract.JOB.log" -- \
    "${cmd[@]}" --nj "$jobs" --job JOB
  "${cmd[@]}" --nj "$jobs" --merge
}

current_stage=2
if run_stage 2; then
  log "features '$feat_tag' -> $dump"
  extract "$data_all" "$dump"
  if [ -n "$cross_corpus" ]; then
    log "features '$feat_tag' of ${cross_corpus} -> $test_dump"
    extract "$cross_all" "$test_dump"
  fi
fi

per_fold() {  # NAME WHAT EXP COMMAND...: a training COMMAND (JOB: the fold) for every fold, fold_jobs at a time;
  local name=$1 what=$2 out=$3   # logs EXP/log/NAME.fold<k>.log; the backend's `train` resources
  shift 3
  if [ "$fold_jobs" -gt 1 ] || [ "$backend" != local ]; then
    log "$what on folds $(echo $fold_ids | tr ' ' ,), $fold_jobs at a time ($backend); logs: $out/log/"
    jobs_run train --max-jobs "$fold_jobs" --gpus "$ngpu" --jobs-per-gpu "$jobs_per_gpu" --procs-per-job "$nproc" \
      "JOB=$(echo $fold_ids | tr ' ' ,)" \
      "$out/log/${name}.foldJOB.log" -- "$@"
  else
    for k in $fold_ids; do
      log "$what on fold $k"
      "${@//JOB/$k}"
    done
  fi
}

current_stage=3
if run_stage 3; then
  fold_ids=$(folds_to_run training)
  [ -z "$fold_ids" ] || [ -f "$dump/features.yaml" ] || die "no features in $dump: run stage 2 first"
  mkdir -p "$exp"
  # shellcheck disable=SC2086  # train_args is split into its words
  [ -z "$fold_ids" ] || per_fold train "training $model" "$exp" "${trainer[@]}" train --config "$model_conf" \
    --fold-dir "$data/foldJOB" --feats "$dump" --exp "$exp/foldJOB" --device "$device" $train_args
  if [ "$refit" = true ] && [ -n "$fold_ids" ]; then
    mkdir -p "$final"
    per_fold refit "refitting $model on train + dev" "$final" "${trainer[@]}" refit "$exp/foldJOB" \
      --fold-dir "$data/foldJOB" --feats "$dump" --exp "$final/foldJOB" --device "$device"
  fi
fi

current_stage=4
if run_stage 4; then
  fold_ids=$(folds_to_run decoding)
  for k in $fold_ids; do
    [ -d "$exp/fold$k" ] || die "fold $k has not been trained ($exp/fold$k is missing): run stage 3 first"
    sets=(--data "$data/fold$k/dev" --out "$exp/fold$k/decode_dev")
    test_set=(--data "$data/fold$k/test" --out "$final/fold$k/decode_test")
    # one call decodes both sets (one start-up) when they share a dump and a model; cross-corpus tests read
    # their own dump, a refit's test its own model (its dev set was training data: only the chosen run's is decoded)
    if [ "$test_dump" = "$dump" ] && [ "$final" = "$exp" ]; then sets+=("${test_set[@]}"); test_set=(); fi
    # shellcheck disable=SC2086
    sertk decode --skip-unfinished --exp "$exp/fold$k" "${sets[@]}" --feats "$dump" --protocol-dir "$data" --device "$device" $decode_args
    if [ ${#test_set[@]} -gt 0 ]; then
      # shellcheck disable=SC2086
      sertk decode --skip-unfinished --exp "$final/fold$k" "${test_set[@]}" --feats "$test_dump" --protocol-dir "$data" \
        --device "$device" $decode_args
    fi
  done
fi

current_stage=5
if run_stage 5; then
  fold_ids=$(fold_list)
  for k in $fold_ids; do
    if [ ! -d "$final/fold$k/decode_test" ]; then  # e.g. still training: RESULTS.md lists it as missing
      log "fold $k has no decode_test/ yet (stage 4); scoring the others"
      continue
    fi
    sertk -q score "$final/fold$k/decode_test" --data "$data/fold$k/test" > "$final/fold$k/decode_test/score.txt"
  done
  sertk results collect "$final"
  log "wrote $final/RESULTS.md"
fi

current_stage=6
if run_stage 6; then
  fold_ids=$(fold_list)
  fold_dirs=()
  for k in $fold_ids; do
    if [ -f "$final/fold$k/best.pt" ]; then fold_dirs+=("$final/fold$k")
    elif kept_fold "$k"; then log "fold $k is a kept record without checkpoints (sertk results keep); not packed"
    else log "fold $k has no best.pt yet (stage 3); not packed"; fi
  done
  # one command for all folds: each goes into its own fold<k>/model.sertk
  # (a fold still training, or not yet decoded with its best.pt, is named and left: stage 4 has skipped it)
  if [ ${#fold_dirs[@]} -gt 0 ]; then sertk pack "${fold_dirs[@]}" --feats "$dump" --skip-unfinished; fi
fi

# a run.sh in the exp dir repeats this command: the record of the last good one, so it is written only
# now that every stage asked for has succeeded (a failed or interrupted run leaves the previous record) and
# a stage was asked for (--stage 7 checks the options only: no exp dir for it), through a temporary file so
# that it is never half-written, and never over a run.sh the recipe did not write
record_is_ours() {  # FILE: absent, or the two lines written below
  [ ! -e "$1" ] || { [ "$(sed -n 1p "$1")" = "#!/usr/bin/env bash" ] && [ "$(wc -l < "$1")" -eq 2 ] \
    && [[ $(sed -n 2p "$1") == "cd "*" && ./run.sh "* ]]; }
}
if [ "$stage" -le "$last_stage" ]; then
  mkdir -p "$exp"
  if record_is_ours "$exp/run.sh"; then
    # (no arguments: printf '%q ' would print '', an argument run.sh refuses)
    args_text=""; [ ${#run_args[@]} -eq 0 ] || args_text=$(printf '%q ' "${run_args[@]}")
    { echo "#!/usr/bin/env bash"; echo "cd $(printf '%q' "$recipe_dir") && ./run.sh $args_text"; } \
      > "$exp/.run.sh.tmp"
    chmod +x "$exp/.run.sh.tmp"
    mv -f "$exp/.run.sh.tmp" "$exp/run.sh"
  else
    log "$exp/run.sh is not a record this recipe wrote; left as it is (this command not recorded)"
  fi
fi
