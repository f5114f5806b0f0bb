#!/usr/bin/env bash
# IEMOCAP: 4 classes (excited merged into happiness), 10 speakers in 5 sessions.
#   ./run.sh --iemocap_root /path/to/IEMOCAP_full_release      # the folder holding Session1 .. Session5
#   ./run.sh ... --protocol loso_speaker                      # 10 folds instead of 5
#   ./run.sh ... --improvised_only true                       # the improvised dialogs only (data/all_impro)
#   ./run.sh ... --excited_only true                          # happiness = excited only (SD-CAFF's code; data/all_exc)
# See ../TEMPLATE/ser.sh for the stages and options.
cd "$(dirname "$0")"
corpus=iemocap
protocol=loso_session
iemocap_root=
improvised_only=false
excited_only=false
corpus_source="IEMOCAP is licensed by USC SAIL (https://sail.usc.edu/iemocap/, release form); give the folder holding Session1 .. Session5 (IEMOCAP_full_release)"
recipe_help="[--improvised_only true|false] [--excited_only true|false]"

configure_recipe() {  # called by ser.sh once the options are parsed
  if [ "$improvised_only" = true ]; then
    prepare_args="$prepare_args --improvised-only"
    data_variant=impro
  fi
  if [ "$excited_only" = true ]; then
    [ ! -f conf/labels.yaml ] || die "--excited_only true and conf/labels.yaml both set the label map; keep one"
    prepare_args="$prepare_args --labels conf/labels_excited_only.yaml"
    data_variant=${data_variant:+${data_variant}_}exc
  fi
}

. ../TEMPLATE/ser.sh
