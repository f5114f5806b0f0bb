#!/usr/bin/env bash
# EmoDB (Berlin Database of Emotional Speech): 7 classes, 10 speakers, leave-one-speaker-out.
#   ./run.sh --emodb_root /path/to/emodb       # the folder holding wav/ (or wav/ itself)
#   ./run.sh                                   # stage 0 downloads the official zip into downloads/
# See ../TEMPLATE/ser.sh for the stages and options.
cd "$(dirname "$0")"
corpus=emodb
protocol=loso
emodb_root=
downloadable=true

. ../TEMPLATE/ser.sh
