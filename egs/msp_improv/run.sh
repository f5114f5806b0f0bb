#!/usr/bin/env bash
# MSP-IMPROV: 4 classes, 12 speakers in 6 sessions, leave-one-session-out.
#   ./run.sh --msp_improv_root /path/to/MSP-IMPROV   # the folder holding Evaluation.txt and Audio/
# See ../TEMPLATE/ser.sh for the stages and options.
cd "$(dirname "$0")"
corpus=msp_improv
protocol=loso_session
msp_improv_root=
corpus_source="MSP-IMPROV is licensed by the MSP lab, UT Dallas (https://ecs.utdallas.edu/research/researchlabs/msp-lab/MSP-Improv.html, academic licence); give the folder holding Evaluation.txt and Audio/"

. ../TEMPLATE/ser.sh
