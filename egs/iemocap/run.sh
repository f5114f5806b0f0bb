#!/usr/bin/env bash
# IEMOCAP: 4 classes (excited merged into happiness), 10 speakers in 5 sessions.
#   ./run.sh --iemocap_root /path/to/IEMOCAP_full_release      # the folder holding Session1 .. Session5
#   ./run.sh ... --protocol loso_speaker                      # 10 folds instead of 5
#   ./run.sh ... --improvised_only true                       # the improvised dialogs only (data/all_impro)
# See ../TEMPLATE/ser.sh for the stages and options.
cd "$(dirname "$0")"
corpus=iemocap
protocol=loso_session
iemocap_root=
improvised_only=false
corpus_source="IEMOCAP is licensed by USC SAIL (https://sail.usc.edu/iemocap/, release form); give the folder holding Session1 .. Session5 (IEMOCAP_full_release)"
recipe_help="[--improvised_only true|false]"

configure_recipe() {  # called by ser.sh once the options are parsed
  if [ "$improvised_only" = true ]; then
    prepare_args="$prepare_args --improvised-only"
    data_variant=impro
  fi
}

. ../TEMPLATE/ser.sh
