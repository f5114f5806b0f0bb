"""Feature extraction speed: sertk (torch, batched) next to a plain librosa per-file loop.

Features, both ways: log-mel (64) and MFCC (40, from the same 64 mels), each with deltas and
delta-deltas (width 9); 25 ms windows, 10 ms hop, n_fft 512, 16 kHz.

    python benchmarks/features.py [--data DIR] [--nj N] [--batch-size B] [--device D] [--repeat R]

Without --data the real EmoDB (../shared/corpora/emodb, or $SERTK_CORPORA/emodb) is prepared into
a temp dir. Speeds are in times real time (seconds of audio per second). Rows:

- audio loading:            sertk.audio.load_audio over every file (reported apart from compute)
- sertk compute:            the torch streams on audio already in memory (batched as `extract` does)
- sertk extract end to end: `extract_features` (data dir check, loading, compute, ark/scp writing)
- librosa loop compute:     per file: melspectrogram, log, power_to_db + mfcc, delta x 4
- librosa loop + loading:   the same with soundfile.read per file

Each timing is the median of --repeat runs after a warm-up. Targets: >= 1000x real time and >= 5x
the librosa loop on a 2-core CPU.

--processes times what a user waits for instead, process start-up included: the recipe's stage 2 as a
whole (`egs/emodb/run.sh --stage 2 --stop_stage 2`, crnn's logmel64 features, in a copy of the recipe whose
stage 1 ran untimed; the dump removed before each run) against a plain librosa log-mel loop run as its own
Python process (soundfile.read, melspectrogram 64 bands with the same STFT, log; nothing written).
Target (issue 26): stage 2 >= 500x real time and faster than that loop.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch

from sertk.audio import load_audio
from sertk.data.corpora import prepare_corpus
from sertk.data.datadir import DataDir
from sertk.envinfo import cpu_model
from sertk.features.extract import (DEFAULT_BATCH_SIZE, MAX_BATCH_SAMPLES, default_device, extract_features,
                                    plan_batches)
from sertk.features.streams import build_frontends, parse_config

SR, N_MELS, N_MFCC = 16000, 64, 40
CONFIG = {
    "sample_rate": SR,
    "streams": {
        "logmel": {"type": "logmel", "n_mels": N_MELS, "deltas": 2},
        "mfcc": {"type": "mfcc", "n_mfcc": N_MFCC, "n_mels": N_MELS, "deltas": 2},
    },
}
STFT = dict(n_fft=512, win_length=400, hop_length=160, center=True, pad_mode="constant")


def librosa_features(y: np.ndarray):
    """The same two streams, the plain librosa way (one mel spectrogram shared, as sertk does)."""
    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_mels=N_MELS, **STFT)
    logmel = np.log(mel + 1e-6)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=N_MFCC)
    return [np.concatenate([x, librosa.feature.delta(x), librosa.feature.delta(x, order=2)]).T
            for x in (logmel, mfcc)]


def sertk_compute(streams, waves, batches, device: torch.device, keep: bool = False):
    """The streams over `batches` (lists of indices into `waves`, as `extract` plans them), per-utterance
    arrays back on the CPU. Like `extract`, each batch's output is dropped once used (unless `keep`)."""
    kept = {}
    with torch.inference_mode():
        for idx in batches:
            lengths = np.array([len(waves[i]) for i in idx], dtype=np.int64)
            wave = np.zeros((len(idx), int(lengths.max())), dtype=np.float32)   # zero-padded, as extract does
            for row, i in enumerate(idx):
                wave[row, :len(waves[i])] = waves[i]
            wave, lengths = torch.from_numpy(wave).to(device), torch.from_numpy(lengths).to(device)
            results = [(f.cpu().numpy(), n.tolist()) for f, n in (s(wave, lengths) for s in streams.values())]
            for row, i in enumerate(idx):
                utt = [f[row, :n[row]] for f, n in results]
                if keep:
                    kept[i] = [u.copy() for u in utt]
    return [kept[i] for i in sorted(kept)]


def plan(waves, batch_size: int, device: torch.device):
    durations = {i: len(w) / SR for i, w in enumerate(waves)}
    cap = MAX_BATCH_SAMPLES.get(device.type, MAX_BATCH_SAMPLES["cpu"]) / SR
    return plan_batches(durations, batch_size, cap)


def timed(fn, repeat: int):
    """(best, median) seconds over `repeat` runs: other load on a shared machine only adds time, so the
    best run is the closest to the code's own speed; the median shows how noisy the machine was."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


LIBROSA_PROCESS = """
import sys, warnings
import librosa, numpy as np, soundfile as sf
warnings.filterwarnings("ignore", message="n_fft=.*is too large")
for path in sys.argv[1:]:
    y, sr = sf.read(path, dtype="float32")
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_mels=64, n_fft=512, win_length=400, hop_length=160,
                                         center=True, pad_mode="constant")
    np.log(mel + 1e-10)
"""


def run_processes(emodb: Path, work: Path, repeat: int) -> None:
    """Stage 2 of the EmoDB recipe as processes, and the librosa loop as a process, wall clock each."""
    repo = Path(__file__).resolve().parents[1]
    for part in ("egs/emodb", "egs/TEMPLATE", "tools"):
        shutil.copytree(repo / part, work / part, ignore=shutil.ignore_patterns("data", "dump", "exp", "downloads"))
    recipe = work / "egs" / "emodb"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def recipe_stages(*stages: str) -> None:
        subprocess.run(["./run.sh", "--emodb_root", str(emodb), *stages], cwd=recipe, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    recipe_stages("--stage", "0", "--stop_stage", "1")   # data/all and the folds: not timed
    dd = DataDir.load(recipe / "data" / "all", audio="none")
    paths = [dd.tables["wav.scp"][u] for u in dd.utts]
    audio_s = sum(float(v) for v in dd.tables["utt2dur"].values())

    def stage2():
        shutil.rmtree(recipe / "dump", ignore_errors=True)
        recipe_stages("--stage", "2", "--stop_stage", "2")

    def librosa_process():
        subprocess.run([sys.executable, "-c", LIBROSA_PROCESS, *paths], check=True)
    stage2()            # warm-up: the file cache, as for the in-process rows
    librosa_process()
    ours, lib = timed(stage2, repeat), timed(librosa_process, repeat)
    print(f"data          {emodb}: {len(paths)} utterances, {audio_s / 3600:.3f} h of audio")
    print(f"machine       {cpu_model() or 'unknown CPU'}, {os.cpu_count()} CPUs; torch {torch.__version__}; "
          f"librosa {librosa.__version__}; python {sys.version.split()[0]}; {repeat} runs each")
    print(f"{'processes, start-up included':34s} {'best s':>8s} {'x RT':>9s} {'median s':>8s} {'x RT':>9s}")
    for name, (best, median) in (("stage 2 (run.sh, logmel64)", ours), ("librosa log-mel loop (python)", lib)):
        print(f"{name:34s} {best:8.3f} {audio_s / best:8.0f}x {median:8.3f} {audio_s / median:8.0f}x")
    print(f"stage 2 vs the librosa process (best runs): {lib[0] / ours[0]:.2f}x")


def default_emodb() -> Path:
    corpora = Path(os.environ.get("SERTK_CORPORA", Path(__file__).resolve().parents[1] / ".." / "shared" / "corpora"))
    return corpora / "emodb"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="a prepared data dir [default: EmoDB prepared into a temp dir]")
    ap.add_argument("--nj", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--device", default=default_device())
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--processes", action="store_true",
                    help="time the recipe's stage 2 and a librosa loop as whole processes (real EmoDB)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sertk-bench-"))
    try:
        if args.processes:
            run_processes(default_emodb(), work, args.repeat)
            return
        data = args.data
        if data is None:
            data = work / "data"
            prepare_corpus("emodb", default_emodb(), data)
        run(data, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(data: Path, work: Path, args) -> None:
    dd = DataDir.load(data, audio="none")
    paths = [dd.tables["wav.scp"][u] for u in dd.utts]
    device = torch.device(args.device)
    streams = {n: m.to(device) for n, m in build_frontends(parse_config(CONFIG)).items()}
    warnings.filterwarnings("ignore", message="n_fft=.*is too large")   # librosa on very short files

    # warm-up: first calls allocate, plan FFTs and import lazily-loaded modules
    warm = [load_audio(p, SR) for p in paths[:8]]
    sertk_compute(streams, warm, plan(warm, args.batch_size, device), device)
    [librosa_features(y) for y in warm]

    waves = [load_audio(p, SR) for p in paths]
    audio_s = sum(len(w) for w in waves) / SR
    load = timed(lambda: [load_audio(p, SR) for p in paths], args.repeat)
    batches = plan(waves, args.batch_size, device)
    compute = timed(lambda: sertk_compute(streams, waves, batches, device), args.repeat)
    lib = timed(lambda: [librosa_features(y) for y in waves], args.repeat)
    lib_load = timed(lambda: [librosa_features(sf.read(p, dtype="float32")[0]) for p in paths], args.repeat)
    out = work / "dump"

    def end_to_end():
        shutil.rmtree(out, ignore_errors=True)
        extract_features(data, CONFIG, out, nj=args.nj, device=args.device, batch_size=args.batch_size)
    e2e = timed(end_to_end, args.repeat)
    report = extract_features(data, CONFIG, out)   # up to date: only reads the dump's summary

    ours = sertk_compute(streams, waves[:20], plan(waves[:20], args.batch_size, device), device, keep=True)
    diff = max(float(np.abs(a - b).max()) for o, y in zip(ours, waves[:20]) for a, b in zip(o, librosa_features(y)))
    def row(name, times, note=""):
        best, median = times
        print(f"{name:26s} {best:8.3f} {audio_s / best:8.0f}x {median:8.3f} {audio_s / median:8.0f}x{note}")

    print(f"data          {data}: {len(paths)} utterances, {audio_s / 3600:.3f} h of audio")
    print(f"machine       {cpu_model() or 'unknown CPU'}, {os.cpu_count()} CPUs; device {device}; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); librosa {librosa.__version__}; python {sys.version.split()[0]}")
    print(f"settings      nj {args.nj} (end to end only), batch size {args.batch_size}, {args.repeat} runs each")
    print(f"features      log-mel {N_MELS} + MFCC {N_MFCC}, each with deltas and delta-deltas "
          f"(dims {', '.join(f'{s.name} {s.dim}' for s in report.streams)})")
    print(f"{'':26s} {'best s':>8s} {'x RT':>9s} {'median s':>8s} {'x RT':>9s}")
    row("audio loading", load)
    row("sertk compute", compute)
    row("sertk extract end to end", e2e, "   (load + compute + write ark/scp)")
    row("librosa loop compute", lib)
    row("librosa loop + loading", lib_load)
    print(f"speed-up over librosa (best runs): compute {lib[0] / compute[0]:.1f}x; "
          f"end to end {lib_load[0] / e2e[0]:.1f}x (librosa writes nothing)")
    print(f"max |sertk - librosa| over 20 utterances: {diff:.2e}")


if __name__ == "__main__":
    main()
