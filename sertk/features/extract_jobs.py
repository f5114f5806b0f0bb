"""One feature-extraction job and the pool that runs several: a job reads its batches of audio (checking
and preprocessing it), computes every stream on each batch and writes one ark per stream.

Jobs run in spawned processes; when one fails, the others stop after their current batch.
"""
import concurrent.futures
import multiprocessing
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sertk.audio import (MIN_SECONDS, band_limit_reason, load_audio, load_audio_and_rate, silence_reason,
                         too_short_reason, truncation)
from sertk.errors import AudioError, FeatureError
from sertk.features import storage
from sertk.features.preprocess import PreprocessConfig, PreprocessStats, preprocess
from sertk.features.streams import FeatureConfig, Stream

# audio that decodes but holds less than it should (sertk.features.extract_report counts them)
TRUNCATED, TOO_SHORT, SILENT, BAND_LIMITED = "truncated", "too_short", "silent", "band_limited"


@dataclass
class Job:
    index: int                                 # 1-based; names feats.<index>.ark
    batches: List[List[Tuple[str, str]]]       # (utt, wav path)
    # built once by the caller and pickled to workers, so they need not import librosa's filters
    # (about a second of start-up each)
    streams: Dict[str, Stream]
    sample_rate: int
    out_dir: str                               # the temp dump dir
    device: str
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    min_seconds: float = MIN_SECONDS           # shorter audio is counted as too short (min_audio_seconds)
    check_only: bool = False                   # the dump will not be written: only decode, to find bad files


@dataclass
class JobResult:
    entries: Dict[str, List[storage.Entry]]
    dims: Dict[str, int]
    samples: int = 0
    load_seconds: float = 0.0
    stream_seconds: Dict[str, float] = field(default_factory=dict)
    preprocess: PreprocessStats = field(default_factory=PreprocessStats)
    # per stream, what its module counted (e.g. openSMILE: utterances padded, non-finite values)
    stream_counts: Dict[str, Dict[str, int]] = field(default_factory=dict)
    bad_audio: List[List[str]] = field(default_factory=list)     # [utt, why it cannot be used]
    # [utt, TRUNCATED | TOO_SHORT | SILENT, what is wrong (naming the file)]: extracted, but counted
    audio_issues: List[List[str]] = field(default_factory=list)


_ABORT: Optional[Any] = None   # a multiprocessing Event in worker processes: another job failed


def _init_worker(abort, threads: int) -> None:
    global _ABORT
    _ABORT = abort
    torch.set_num_threads(threads)


def run_job(job: Job) -> JobResult:
    device = torch.device(job.device)
    streams = {name: m.to(device) for name, m in job.streams.items()}
    result = JobResult({name: [] for name in streams}, {name: m.dim for name, m in streams.items()},
                       stream_seconds={name: 0.0 for name in streams})
    writers = {name: storage.ArkWriter(Path(job.out_dir) / name / storage.ark_name(job.index)) for name in streams}
    try:
        for batch in job.batches:
            if _ABORT is not None and _ABORT.is_set():
                break
            t0 = time.perf_counter()
            kept, audio = [], []
            for utt, path in batch:
                try:
                    samples, source_rate = load_audio_and_rate(path, job.sample_rate)
                except AudioError as e:
                    result.bad_audio.append([utt, str(e)])
                    continue
                result.audio_issues += [[utt, kind, f"{path}: {why}"] for kind, why
                                        in audio_issues(path, samples, job.sample_rate, job.min_seconds, source_rate)]
                kept.append(utt)
                audio.append(samples)
            if result.bad_audio or job.check_only:   # no dump: look at the remaining files only
                result.load_seconds += time.perf_counter() - t0
                continue
            if job.preprocess.active:
                audio = [preprocess(a, job.preprocess, job.sample_rate, result.preprocess) for a in audio]
            result.load_seconds += time.perf_counter() - t0
            result.samples += sum(len(a) for a in audio)
            feats = compute_streams(streams, audio, device, result.stream_seconds)
            for name, arrays in feats.items():
                for utt, array in zip(kept, arrays):
                    writers[name].write(utt, array)
    finally:
        for name, w in writers.items():
            w.close()
            result.entries[name] = w.entries
        result.stream_counts = {name: dict(m.counts) for name, m in streams.items() if getattr(m, "counts", None)}
    return result


def audio_issues(path: str, samples: np.ndarray, sample_rate: int, min_seconds: float,
                 source_rate: int) -> List[Tuple[str, str]]:
    """(kind, reason) for each way the file at `path`, recorded at `source_rate` and decoded to `samples` at
    `sample_rate`, holds less than it should."""
    seconds = len(samples) / sample_rate
    found = [(TRUNCATED, truncation(path, seconds)), (TOO_SHORT, too_short_reason(seconds, min_seconds)),
             (SILENT, silence_reason(float(np.abs(samples).max()))),
             (BAND_LIMITED, band_limit_reason(source_rate, sample_rate))]   # upsampled: say so
    return [(kind, why) for kind, why in found if why]


def min_audio_seconds(cfg: FeatureConfig) -> float:
    """Audio shorter than this is counted as too short: one analysis window, the longest of the config's
    streams (framed streams' win_length, openSMILE and encoder windows), at least sertk.audio.MIN_SECONDS."""
    windows = [MIN_SECONDS]
    for stream in cfg.streams.values():
        win = getattr(stream, "win_length", None)
        if isinstance(win, (int, float)) and not isinstance(win, bool):
            windows.append(float(win))
        windows.append(stream.window_length(cfg.sample_rate) or 0.0)
    return max(windows)


def load_preprocessed(paths: Sequence[str], sample_rate: int, config: PreprocessConfig,
                      stats: PreprocessStats) -> List[np.ndarray]:
    """Each file at `sample_rate`, mono, preprocessed as the feature config says (counted in `stats`)."""
    audio = [load_audio(p, sample_rate) for p in paths]
    if config.active:
        audio = [preprocess(a, config, sample_rate, stats) for a in audio]
    return audio


@torch.inference_mode()
def compute_streams(streams: Dict[str, Stream], audio: Sequence[np.ndarray], device: torch.device,
                    seconds: Optional[Dict[str, float]] = None) -> Dict[str, List[np.ndarray]]:
    """stream -> one [frames, dim] array per waveform of `audio`, computed as one zero-padded batch
    (streams already on `device`); the time each stream took is added to `seconds`."""
    lengths = np.array([len(a) for a in audio], dtype=np.int64)
    wave = np.zeros((len(audio), int(lengths.max())), dtype=np.float32)
    for i, a in enumerate(audio):
        wave[i, :len(a)] = a
    wave_t, lengths_t = torch.from_numpy(wave).to(device), torch.from_numpy(lengths).to(device)
    out: Dict[str, List[np.ndarray]] = {}
    for name, stream in streams.items():
        t0 = time.perf_counter()
        feats, frame_lengths = stream(wave_t, lengths_t)
        feats, frame_lengths = feats.cpu().numpy(), frame_lengths.tolist()
        out[name] = [feats[i, :n] for i, n in enumerate(frame_lengths)]
        if seconds is not None:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t0
    return out


def run_jobs(jobs: List[Job]) -> List[JobResult]:
    if len(jobs) == 1:
        return [run_job(jobs[0])]
    # spawn, not fork: a forked child of a process that has used torch's OpenMP pool can hang
    ctx = multiprocessing.get_context("spawn")
    abort = ctx.Event()
    threads = max(1, torch.get_num_threads() // len(jobs))
    with concurrent.futures.ProcessPoolExecutor(len(jobs), mp_context=ctx, initializer=_init_worker,
                                                initargs=(abort, threads)) as pool:
        futures = [pool.submit(run_job, job) for job in jobs]
        try:
            return [f.result() for f in futures]
        except BrokenProcessPool:
            abort.set()
            raise FeatureError("a feature extraction job died (out of memory? try a smaller --batch-size "
                               "or fewer --nj)") from None
        except BaseException:
            abort.set()   # the other jobs stop after their current batch
            raise
