"""Inference speed on a long recording: `sertk infer`'s whole path as a real-time factor (RTF).

    python benchmarks/infer.py [--model egs/emodb/exp/loso/crnn/fold1/model.sertk] [--minutes 60]
                               [--device cpu] [--emodb DIR]

The recording is built from the real EmoDB (../shared/corpora/emodb, or $SERTK_CORPORA/emodb, or --emodb):
its utterances in file order, each followed by 1 s of silence, cycled until --minutes, written as a
16 kHz WAV file. The model is a packed one (the default is the crnn baseline of an EmoDB run:
`cd egs/emodb && ./run.sh --model crnn --folds 1`, which packs it in stage 6).

Rows (RTF = wall seconds / audio seconds, lower is faster; target <= 0.01 on a 2-core CPU):
- vad <backend>:  reading the file, VAD, features, model and voting per speech chunk (`--segment vad`)
- vad only:       the VAD alone on audio in memory
- fixed 10 s:     the same path without VAD, the recording cut into 10 s pieces (`--segment fixed`)
- silero's own:   silero-vad's `get_speech_timestamps` (one 32 ms frame at a time) on the first 5 minutes,
                  for comparison with sertk's batched pieces
Loading the packed model (and the silero model) is timed apart: it happens once per run.
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from sertk.envinfo import environment
from sertk.inference.inferencer import Inferencer
from sertk.inference.inputs import Recording
from sertk.inference.run import infer_recordings
from sertk.inference.vad import VadConfig, detect_speech, make_backend, silero_available

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def default_emodb() -> Path:
    corpora = Path(os.environ.get("SERTK_CORPORA", ROOT / ".." / "shared" / "corpora"))
    return corpora / "emodb"


def build_recording(emodb: Path, minutes: float, path: Path) -> float:
    files = sorted((emodb / "wav").glob("*.wav"))
    if not files:
        raise SystemExit(f"{emodb}/wav: no EmoDB files (give --emodb DIR)")
    target = int(minutes * 60 * SR)
    pause = np.zeros(SR, dtype=np.float32)
    parts, n, i = [], 0, 0
    while n < target:
        audio, sr = sf.read(files[i % len(files)], dtype="float32")
        assert sr == SR, f"{files[i % len(files)]}: {sr} Hz"
        parts += [audio, pause]
        n += len(audio) + len(pause)
        i += 1
    wave = np.concatenate(parts)[:target]
    sf.write(path, wave, SR)
    return len(wave) / SR


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "egs/emodb/exp/loso/crnn/fold1/model.sertk")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--emodb", type=Path, default=default_emodb())
    args = ap.parse_args()
    if not args.model.is_file():
        raise SystemExit(f"{args.model}: no packed model; run `cd egs/emodb && ./run.sh --model crnn --folds 1` "
                         "(stage 6 packs it) or give --model")
    env = environment()
    print(f"machine  {env['cpu']}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; device "
          f"{args.device}; torch {torch.__version__}")
    t0 = time.perf_counter()
    inf = Inferencer.from_file(args.model, device=args.device)
    print(f"model    {args.model} ({inf.packed.meta['model']}), loaded in {time.perf_counter() - t0:.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "long.wav"
        seconds = build_recording(args.emodb, args.minutes, wav)
        print(f"audio    {seconds:.0f} s ({seconds / 60:.1f} min) of EmoDB utterances with 1 s pauses, 16 kHz WAV")
        wave = sf.read(wav, dtype="float32")[0]
        backends = (["silero"] if silero_available() else []) + ["energy"]
        for name in backends:
            t0 = time.perf_counter()
            make_backend(name)
            load = time.perf_counter() - t0
            vad = VadConfig(name)
            t0 = time.perf_counter()
            chunks = detect_speech(wave, SR, vad)
            vad_seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            result = infer_recordings(inf, [Recording("long", wav)], "vad", vad, progress=False)
            wall = time.perf_counter() - t0
            print(f"vad {name:7s} RTF {wall / seconds:.5f}  ({wall:.1f} s; {len(result.rows)} chunks; VAD model "
                  f"loaded in {load:.2f} s)")
            print(f"  vad only     RTF {vad_seconds / seconds:.5f}  ({vad_seconds:.1f} s; {len(chunks.spans)} chunks, "
                  f"{chunks.dropped} shorter than {vad.min_chunk} s dropped)")
        t0 = time.perf_counter()
        result = infer_recordings(inf, [Recording("long", wav)], "fixed", VadConfig(max_chunk=10.0), progress=False)
        wall = time.perf_counter() - t0
        print(f"fixed 10 s   RTF {wall / seconds:.5f}  ({wall:.1f} s; {len(result.rows)} pieces)")
        if silero_available():
            from silero_vad import get_speech_timestamps
            head = torch.from_numpy(wave[:5 * 60 * SR])
            t0 = time.perf_counter()
            get_speech_timestamps(head, make_backend("silero").model, sampling_rate=SR)
            wall = time.perf_counter() - t0
            print(f"silero's own RTF {wall / (len(head) / SR):.5f}  ({wall:.1f} s for the first "
                  f"{len(head) / SR / 60:.1f} min, frame by frame)")


if __name__ == "__main__":
    main()
