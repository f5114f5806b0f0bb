"""Whisper-base encoder cost: each utterance's own length against Whisper's padded 30 s window.

    python benchmarks/whisper_input.py [--files N] [--threads T] [--repeat R]

The `ssl_stats` stream of `whisper-base` (the named encoder, from sertk's cache; pip install 'sertk[whisper]')
computes the pooled statistics of the first N real EmoDB files (../shared/corpora/emodb, or
$SERTK_CORPORA/emodb) with `whisper_input: utterance` and `whisper_input: window`, in one process, after a
warm-up; each timing is the best of --repeat. Prints seconds, times real time and the ratio, with the CPU.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import torch

from sertk.audio import load_audio
from sertk.features.streams import build_frontends, parse_config

CORPORA = Path(os.environ.get("SERTK_CORPORA", Path(__file__).resolve().parents[2] / "shared" / "corpora"))


def stream(whisper_input: str):
    config = parse_config({"sample_rate": 16000, "streams": {"st": {
        "type": "ssl_stats", "model": "whisper-base", "whisper_input": whisper_input}}})
    return build_frontends(config)["st"]


def seconds_for(module, waves) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for w in waves:
            module(w[None], torch.tensor([len(w)]))
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    wav_dir = CORPORA / "emodb" / "wav"
    if not wav_dir.is_dir():
        sys.exit(f"no real EmoDB at {wav_dir}")
    torch.set_num_threads(args.threads)
    files = sorted(wav_dir.glob("*.wav"))[:args.files]
    waves = [torch.from_numpy(load_audio(f, 16000)) for f in files]
    audio = sum(len(w) for w in waves) / 16000
    from sertk.envinfo import cpu_model
    cpu = cpu_model() or "unknown"
    print(f"{len(files)} EmoDB files, {audio:.1f} s of audio; CPU {cpu}, {args.threads} thread(s), torch "
          f"{torch.__version__}")
    times = {}
    for mode in ("utterance", "window"):
        module = stream(mode)
        seconds_for(module, waves[:2])   # warm-up: loads the encoder
        times[mode] = min(seconds_for(module, waves) for _ in range(args.repeat))
        print(f"whisper_input {mode:<9}  {times[mode]:7.2f} s  {audio / times[mode]:6.1f}x real time")
    print(f"window / utterance: {times['window'] / times['utterance']:.1f}x the compute")


if __name__ == "__main__":
    main()
