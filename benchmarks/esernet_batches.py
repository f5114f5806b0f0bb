"""The frame counts ESERNet's training batches are trimmed to: the longest utterance (capped at 800
frames, 10 ms each) of each batch of 32 in random shuffles of a training list, as the trainer draws
them (last incomplete batch dropped). Feeds `esernet_step.py --frames` for epoch-time estimates.

    python benchmarks/esernet_batches.py egs/emodb/data/loso/fold1/train/wav.scp
    python benchmarks/esernet_batches.py --ravdess ../shared/corpora/ravdess --skip-actors 8

The RAVDESS form takes actor6 fold 1's training actors (9-24) straight from the release folders.
"""
import argparse
import random
import statistics
from pathlib import Path

import soundfile as sf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wav_scp", nargs="?", help="a data dir's wav.scp (utt path)")
    parser.add_argument("--ravdess", help="the RAVDESS release folder instead of a wav.scp")
    parser.add_argument("--skip-actors", type=int, default=8, help="RAVDESS actors 1..N are test and dev")
    parser.add_argument("--shuffles", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    if args.ravdess:
        paths = [p for p in sorted(Path(args.ravdess).glob("Actor_*/*.wav"))
                 if int(p.stem.split("-")[-1]) > args.skip_actors]
    else:
        paths = [line.split(maxsplit=1)[1].strip() for line in open(args.wav_scp)]
    frames = [min(800, sf.info(str(p)).frames // 160 + 1) for p in paths]
    longest, b = [], args.batch_size
    for seed in range(args.shuffles):
        order = frames[:]
        random.Random(seed).shuffle(order)
        longest += [max(order[i:i + b]) for i in range(0, len(order) - len(order) % b, b)]
    print(f"{len(frames)} utterances, {len(frames) // b} batches per epoch; longest per batch over "
          f"{args.shuffles} shuffles: mean {statistics.mean(longest):.0f}, min {min(longest)}, max {max(longest)}")


if __name__ == "__main__":
    main()
