#!/usr/bin/env python
"""A conversation-like recording made of one EmoDB speaker's utterances, for `sertk infer --segment vad`.

    python local/demo_recording.py --emodb ../../../shared/corpora/emodb --speaker 03 --out demo.wav

Blocks of `--per-block` utterances of one emotion each, in the order of `--emotions` (EmoDB letters:
N neutral, W anger, T sadness, F happiness, L boredom, A fear, E disgust), every utterance followed by
`--pause` seconds of silence. Writes the WAV and, beside it, <out>.truth.csv (start, end, emotion per
utterance). With speaker 03, the fold-1 model of the loso protocol has never heard the voice.
"""
import argparse
import csv
from pathlib import Path

import numpy as np
import soundfile as sf

from sertk.data.labels import default_label_map

SR = 16000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--emodb", type=Path, required=True, help="the EmoDB release folder (holding wav/)")
    ap.add_argument("--speaker", default="03")
    ap.add_argument("--emotions", default="NWTFL")
    ap.add_argument("--per-block", type=int, default=3)
    ap.add_argument("--pause", type=float, default=0.8)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    labels = default_label_map("emodb")
    files = sorted((args.emodb / "wav").glob(f"{args.speaker}*.wav"))
    parts, truth, n = [], [], 0
    for letter in args.emotions:
        chosen = [f for f in files if f.stem[5] == letter][:args.per_block]
        if len(chosen) < args.per_block:
            raise SystemExit(f"speaker {args.speaker} has {len(chosen)} '{letter}' utterances, not {args.per_block}")
        for f in chosen:
            audio, sr = sf.read(str(f), dtype="float32")
            if sr != SR:
                raise SystemExit(f"{f}: {sr} Hz, expected {SR}")
            truth.append((n / SR, (n + len(audio)) / SR, labels.map(letter), f.name))
            parts += [audio, np.zeros(int(args.pause * SR), np.float32)]
            n += len(audio) + int(args.pause * SR)
    sf.write(str(args.out), np.concatenate(parts), SR)
    with open(args.out.with_suffix(".truth.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["start", "end", "emotion", "file"])
        writer.writerows([(f"{s:.3f}", f"{e:.3f}", emo, name) for s, e, emo, name in truth])
    print(f"{args.out}: {n / SR:.1f} s, {len(truth)} utterances of speaker {args.speaker}")


if __name__ == "__main__":
    main()
