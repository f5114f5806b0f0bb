#!/usr/bin/env python
"""Share of log-mel frames more than 30 dB below their utterance's loudest frame, per dump.

    python local/quiet_frames.py dump/logmel64 dump/emodb_logmel64

A diagnostic for cross-corpus results (RESULTS.md): corpora whose files carry long silences
give per-speaker normalisation statistics a different meaning than tightly cut ones.
"""
import sys

import numpy as np

from sertk.features.storage import load_feats

QUIET_DB = 30.0


def quiet_share(logmel: np.ndarray) -> float:
    energy = np.logaddexp.reduce(logmel, axis=1)   # log of the frame's summed mel power
    return float(np.mean(energy < energy.max() - QUIET_DB * np.log(10) / 10))


def main(dumps) -> None:
    for dump in dumps:
        feats = load_feats(dump, "logmel")
        shares = [quiet_share(feats[utt]) for utt in feats]
        print(f"{dump}: {len(shares)} utterances, {100 * np.mean(shares):.1f}% of frames more than "
              f"{QUIET_DB:.0f} dB below their utterance's loudest frame")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
