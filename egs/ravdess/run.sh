#!/usr/bin/env bash
# RAVDESS, audio-only speech: 8 classes, 24 actors, 6 folds of 4 actors (actor6).
#   ./run.sh --ravdess_root /path/to/ravdess   # the folder holding Actor_01 .. Actor_24
#   ./run.sh                                   # stage 0 downloads the official speech zip into downloads/
# See ../TEMPLATE/ser.sh for the stages and options.
cd "$(dirname "$0")"
corpus=ravdess
protocol=actor6
ravdess_root=
downloadable=true

. ../TEMPLATE/ser.sh
