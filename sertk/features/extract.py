"""Stage 2: a data dir -> a feature dump (see `storage` for the layout).

Utterances are grouped into blocks of whole speakers, sorted by duration within a block and cut into
batches (little padding), and the batches are shared out over `nj` jobs balanced by audio length; each
job writes its own ark per stream. The batches do not depend on `nj`, so any `nj` gives the same arrays. The dump is built in a temp
dir and moved into place only when every job has finished, and a dump whose config and
utterance list match the request is left alone.

Bad audio (missing, unreadable, empty, NaN) fails the extraction, but only after every file has been
looked at: each bad file is logged and the one error line counts them and names the first few, so one run
finds them all (once a job has met a bad file it only decodes the rest, computing no features). Files that
decode but hold less than they should (truncated, shorter than one analysis window, digitally silent; see
sertk.audio) are extracted as they are, each logged and counted in the summary and in features.yaml
(`dump.audio`).
"""
import concurrent.futures
import hashlib
import logging
import math
import multiprocessing
import os
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from sertk.audio import MIN_SECONDS, SILENCE_PEAK, audio_info, load_audio, silence_reason, too_short_reason, truncation
from sertk.data.datadir import DataDir
from sertk.errors import AudioError, FeatureError
from sertk.features import storage
from sertk.features.preprocess import PreprocessConfig, PreprocessStats, preprocess
from sertk.features.streams import (
    DUMP_INFO_KEY,
    FeatureConfig,
    Stream,
    build_frontends,
    parse_config,
)
from sertk.fsutil import atomic_output_dir
from sertk.yamlutil import read_yaml_file

DEFAULT_BATCH_SIZE = 32
# A batch also ends at this many padded samples (batch size x longest utterance): on CPU the FFT
# slows down several times per frame once a batch's spectrogram no longer fits in cache (2^20
# samples is about 65 s at 16 kHz); on GPU the cap only bounds memory.
MAX_BATCH_SAMPLES = {"cpu": 2 ** 20, "cuda": 2 ** 24}
# bad audio named in the error line (all of them are logged)
BAD_AUDIO_SHOWN = 3
# audio that decodes but holds less than it should: counted in features.yaml under dump.audio, and in the
# report's notes under "audio files" (printed like a stream's notes; stream names hold no space)
AUDIO_INFO_KEY = "audio"
AUDIO_NOTES = "audio files"
TRUNCATED, TOO_SHORT, SILENT = "truncated", "too_short", "silent"

log = logging.getLogger(__name__)


@dataclass
class StreamReport:
    name: str
    utts: int
    frames: int
    dim: int
    frame_shift: float        # seconds
    compute_seconds: float    # summed over jobs; a spectrogram shared by streams counts for the first


@dataclass
class ExtractReport:
    out_dir: Path
    skipped: bool             # the dump was already up to date
    utts: int
    audio_seconds: float
    streams: List[StreamReport]
    nj: int = 1               # jobs actually run (no more than there are batches)
    device: str = "cpu"
    load_seconds: float = 0.0   # reading, resampling and preprocessing audio, summed over jobs
    setup_seconds: float = 0.0  # checking config and data dir, planning, building the frontends
    wall_seconds: float = 0.0   # everything, set-up included
    preprocess: Optional[Dict[str, Any]] = None   # PreprocessStats.summary when the config preprocesses
    notes: Optional[Dict[str, Dict[str, int]]] = None   # stream -> what its module counted (non-zero only)
    merged: bool = False        # made from separately run jobs (sertk.features.split): no wall-clock times


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_config(path) -> Dict[str, Any]:
    """Read a feature config YAML file (checked later by `parse_config`)."""
    path = Path(path)
    if not path.is_file():
        raise FeatureError(f"{path}: no such feature config")
    return read_yaml_file(path, FeatureError, mapping=False)


def extract_features(data_dir, config: Dict[str, Any], out_dir, nj: int = 1, device: str = "cpu",
                     batch_size: int = DEFAULT_BATCH_SIZE, source: str = "feature config") -> ExtractReport:
    """Compute every stream of `config` for every utterance of `data_dir` into the dump `out_dir`."""
    start = time.perf_counter()
    request = Request.make(data_dir, config, out_dir, nj, device, batch_size, source)
    if request.previous is not None:
        return request.previous
    parts = _share_out(request.batches(), request.durations(), nj)
    streams = build_frontends(request.cfg)
    setup_seconds = time.perf_counter() - start
    with atomic_output_dir(request.out_dir, "feature dump", storage.owns_feature_dump) as tmp:
        for name in request.cfg.streams:
            (tmp / name).mkdir()
        # a file whose header already failed means no dump: the jobs then only look for more bad files
        jobs = [request.job(j, part, streams, tmp, check_only=bool(request.bad_audio))
                for j, part in enumerate(parts, start=1)]
        results = _run_jobs(jobs)
        fail_on_bad_audio(request.bad_audio, results, len(request.dd.utts))
        log_audio_issues(results)
        report = _finish(tmp, request.out_dir, request.cfg, results, request.checksum)
    report.nj, report.device = len(jobs), device
    report.setup_seconds, report.wall_seconds = setup_seconds, time.perf_counter() - start
    return report


@dataclass
class Request:
    """A checked extraction request: the config, the data dir's utterances and their checksum, and the
    report of the dump already there when it is up to date (`previous`)."""
    cfg: FeatureConfig
    dd: DataDir
    out_dir: Path
    device: str
    batch_size: int
    checksum: str
    previous: Optional[ExtractReport]
    _seconds: Optional[Dict[str, float]] = field(default=None, init=False, repr=False)
    # utt -> why its audio cannot be used, from the header read for batching (see `durations`)
    bad_audio: Dict[str, str] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def make(cls, data_dir, config: Dict[str, Any], out_dir, nj: int, device: str, batch_size: int,
             source: str) -> "Request":
        cfg = parse_config(config, source)
        if nj < 1 or batch_size < 1:
            raise FeatureError(f"nj and batch_size must be >= 1 (got {nj}, {batch_size})")
        _check_device(device)
        dd = DataDir.load(data_dir, audio="none")   # missing audio is reported by load_audio, naming the file
        checksum = _utterance_checksum(dd.utts, dd.tables["wav.scp"])
        out_dir = Path(out_dir).resolve()
        request = cls(cfg, dd, out_dir, device, batch_size, checksum, _up_to_date(out_dir, cfg, checksum))
        if request.previous is None and not dd.utts:
            raise FeatureError(f"{data_dir}: the data dir has no utterances")
        return request

    def durations(self, utts: Optional[Sequence[str]] = None) -> Dict[str, float]:
        """Seconds of each utterance (of `utts`, default all), read once."""
        if self._seconds is None:
            self._seconds = _durations(self.dd, self.dd.utts, self.bad_audio)
        return self._seconds if utts is None else {u: self._seconds[u] for u in utts}

    def blocks(self) -> List[List[str]]:
        """Consecutive whole speakers (in id order) gathered until a block holds a batch of utterances.
        Batches never cross a block, so a job given whole blocks (sertk.features.split) computes each
        utterance in the very batch one command would: the same arrays, to the bit (a matrix product's
        rounding can depend on the shape of the batch it is in)."""
        blocks: List[List[str]] = [[]]
        for spk, utts in sorted(self.dd.spk2utt.items()):
            if len(blocks[-1]) >= self.batch_size:
                blocks.append([])
            blocks[-1].extend(utts)
        return [b for b in blocks if b]

    def batches(self, blocks: Optional[List[List[str]]] = None) -> List[List[str]]:
        """The batches of `blocks` (default: all), each block's utterances by duration (see plan_batches)."""
        max_samples = MAX_BATCH_SAMPLES.get(torch.device(self.device).type, MAX_BATCH_SAMPLES["cpu"])
        return [batch for block in (self.blocks() if blocks is None else blocks)
                for batch in plan_batches(self.durations(block), self.batch_size, max_samples / self.cfg.sample_rate)]

    def job(self, index: int, batches: List[List[str]], streams: Dict[str, Stream], out: Path,
            check_only: bool = False) -> "Job":
        wav_scp = self.dd.tables["wav.scp"]
        return Job(index, [[(u, wav_scp[u]) for u in batch] for batch in batches], streams, self.cfg.sample_rate,
                   str(out), self.device, self.cfg.preprocess, min_audio_seconds(self.cfg), check_only)


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


# --- planning -----------------------------------------------------------------------------------

def _utterance_checksum(utts: Sequence[str], wav_scp: Dict[str, str]) -> str:
    """Ids, paths, sizes and modification times: a dump is reused only for the very same audio."""
    h = hashlib.sha256()
    for utt in utts:
        try:
            st = os.stat(wav_scp[utt])
            stamp = f"{st.st_size} {st.st_mtime_ns}"
        except OSError:
            stamp = "missing"   # load_audio will say so, naming the file
        h.update(f"{utt} {wav_scp[utt]} {stamp}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise FeatureError(f"unknown device '{device}' (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FeatureError(f"device '{device}' was asked for, but CUDA is not available here")


def _durations(dd: DataDir, utts: Sequence[str], bad: Dict[str, str]) -> Dict[str, float]:
    """Seconds per utterance, for batching only: utt2dur when the data dir has it, else the header. A header
    that cannot be read is recorded in `bad` (utt -> why) and counts 0 s, so every bad file is found."""
    utt2dur = dd.tables.get("utt2dur", {})
    out = {}
    for utt in utts:
        try:
            out[utt] = float(utt2dur[utt])
        except (KeyError, ValueError):
            try:
                out[utt] = audio_info(dd.tables["wav.scp"][utt]).duration
            except AudioError as e:
                bad[utt] = str(e)
                out[utt] = 0.0
    return out


def plan_batches(durations: Dict[str, float], batch_size: int, max_seconds: float) -> List[List[str]]:
    """Utterances sorted by duration (so a batch pads little), cut into batches of at most `batch_size`
    utterances and `max_seconds` of padded audio (batch size x its longest utterance)."""
    batches: List[List[str]] = [[]]
    for utt in sorted(durations, key=lambda u: (durations[u], u)):
        batch = batches[-1]
        if batch and (len(batch) == batch_size or (len(batch) + 1) * durations[utt] > max_seconds):
            batches.append([])
        batches[-1].append(utt)
    return [b for b in batches if b]


def _share_out(batches: List[List[str]], durations: Dict[str, float], nj: int) -> List[List[List[str]]]:
    """Batches over at most `nj` jobs, longest first to the least loaded job."""
    nj = min(nj, len(batches))
    parts: List[List[List[str]]] = [[] for _ in range(nj)]
    load = [0.0] * nj
    for batch in sorted(batches, key=lambda b: -sum(durations[u] for u in b)):
        j = load.index(min(load))
        parts[j].append(batch)
        load[j] += sum(durations[u] for u in batch)
    return [sorted(p, key=lambda b: durations[b[0]]) for p in parts if p]


# --- jobs ---------------------------------------------------------------------------------------

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
                    samples = load_audio(path, job.sample_rate)
                except AudioError as e:
                    result.bad_audio.append([utt, str(e)])
                    continue
                result.audio_issues += [[utt, kind, f"{path}: {why}"]
                                        for kind, why in audio_issues(path, samples, job.sample_rate, job.min_seconds)]
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


def audio_issues(path: str, samples: np.ndarray, sample_rate: int, min_seconds: float) -> List[Tuple[str, str]]:
    """(kind, reason) for each way the file at `path`, decoded to `samples`, holds less than it should."""
    seconds = len(samples) / sample_rate
    found = [(TRUNCATED, truncation(path, seconds)), (TOO_SHORT, too_short_reason(seconds, min_seconds)),
             (SILENT, silence_reason(float(np.abs(samples).max())))]
    return [(kind, why) for kind, why in found if why]


def fail_on_bad_audio(header_bad: Dict[str, str], results: Sequence[JobResult], total: int,
                      utts: Optional[Sequence[str]] = None) -> None:
    """Raise one AudioError counting every bad file (of `utts`, default all) found by the header read and the
    jobs, naming the first few; when there are several, each one is logged first."""
    wanted = None if utts is None else set(utts)
    bad = {u: why for u, why in header_bad.items() if wanted is None or u in wanted}
    for r in results:
        bad.update((u, why) for u, why in r.bad_audio)
    if not bad:
        return
    if len(bad) > 1:
        for utt in sorted(bad):
            log.warning("bad audio of %s: %s", utt, bad[utt])
    shown = "; ".join(bad[u] for u in sorted(bad)[:BAD_AUDIO_SHOWN])
    more = f"; and {len(bad) - BAD_AUDIO_SHOWN} more" if len(bad) > BAD_AUDIO_SHOWN else ""
    logged = "; each is logged above" if len(bad) > 1 else ""
    # the first file's own message leads, so a single bad file reads as it always did
    raise AudioError(f"{shown}{more} ({len(bad)} of {total} audio file(s) cannot be used, so no dump was "
                     f"written{logged})")


def log_audio_issues(results: Sequence[JobResult]) -> None:
    for utt, kind, why in sorted(i for r in results for i in r.audio_issues):
        if kind == SILENT and "every sample is zero" in why:
            continue   # load_audio has said so already (where it decoded the file)
        log.warning("%s (utterance %s)", why, utt)


def audio_notes(results: Sequence[JobResult], cfg: FeatureConfig) -> Dict[str, int]:
    """What the summary and features.yaml count under AUDIO_NOTES (non-zero only)."""
    text = {TRUNCATED: "truncated (the header promises more audio than the file holds; extracted as far as it goes)",
            TOO_SHORT: f"too short (under one {1000 * min_audio_seconds(cfg):.0f} ms analysis window; extracted, "
                       "zero-padded by the frontends)",
            SILENT: f"silent (digital silence: peak below {20 * math.log10(SILENCE_PEAK):.0f} dBFS; extracted)"}
    counts: Dict[str, int] = {}
    for r in results:
        for _, kind, _ in r.audio_issues:
            counts[text[kind]] = counts.get(text[kind], 0) + 1
    return counts


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


def _run_jobs(jobs: List[Job]) -> List[JobResult]:
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


# --- finishing ----------------------------------------------------------------------------------

def _finish(tmp: Path, out_dir: Path, cfg: FeatureConfig, results: List[JobResult], checksum: str) -> ExtractReport:
    audio_seconds = sum(r.samples for r in results) / cfg.sample_rate
    reports = []
    for name in cfg.streams:
        entries = [e for r in results for e in r.entries[name]]
        storage.write_stream_index(tmp / name, out_dir / name, entries)
        reports.append(StreamReport(name, len(entries), sum(e[3] for e in entries), results[0].dims[name],
                                    cfg.streams[name].hop_samples(cfg.sample_rate) / cfg.sample_rate,
                                    sum(r.stream_seconds[name] for r in results)))
    doc = cfg.to_dict()
    doc[DUMP_INFO_KEY] = {"utterances": reports[0].utts, "utt_checksum": checksum,
                          "audio_seconds": round(audio_seconds, 3),
                          "dims": {r.name: r.dim for r in reports},
                          "frame_shift": {r.name: r.frame_shift for r in reports}}
    doc[DUMP_INFO_KEY].update(stream_layout(cfg))
    notes = _stream_notes(results)
    if notes:
        doc[DUMP_INFO_KEY]["notes"] = notes
    counted = audio_notes(results, cfg)
    if counted:
        doc[DUMP_INFO_KEY][AUDIO_INFO_KEY] = counted
    summary = None
    if cfg.preprocess.active:
        stats = PreprocessStats()
        for r in results:
            stats.add(r.preprocess)
        summary = doc[DUMP_INFO_KEY]["preprocess"] = stats.summary(cfg.sample_rate)
    storage.write_dump_config(tmp, doc)
    return ExtractReport(out_dir, False, reports[0].utts, audio_seconds, reports,
                         load_seconds=sum(r.load_seconds for r in results), preprocess=summary,
                         notes=_with_audio_notes(notes, counted))


def _with_audio_notes(notes: Optional[Dict[str, Dict[str, int]]], counted: Optional[Dict[str, int]]):
    """The report's notes: the streams' counts and, under AUDIO_NOTES, the audio's (printed alike)."""
    return {**(notes or {}), AUDIO_NOTES: counted} if counted else notes


def stream_layout(cfg: FeatureConfig) -> Dict[str, Any]:
    """What a reader needs beyond the frame shift (only written when some stream needs it, so dumps of
    torch streams read as before): levels other than frame, non-centred frame windows, segment windows,
    layers stored side by side."""
    sr = cfg.sample_rate
    layout: Dict[str, Any] = {}
    levels = {n: s.level for n, s in cfg.streams.items() if s.level != "frame"}
    windows = {n: s.window_length(sr) for n, s in cfg.streams.items() if s.window_length(sr) is not None}
    segment_windows = {n: s.windows_info(sr) for n, s in cfg.streams.items() if s.windows_info(sr) is not None}
    layers = {n: s.stacked_layers(sr) for n, s in cfg.streams.items() if s.stacked_layers(sr) is not None}
    for key, value in (("levels", levels), ("frame_window", windows), ("windows", segment_windows),
                       ("layers", layers)):
        if value:
            layout[key] = value
    return layout


def _stream_notes(results: List[JobResult]) -> Dict[str, Dict[str, int]]:
    """Counts summed over jobs, only the non-zero ones."""
    notes: Dict[str, Dict[str, int]] = {}
    for r in results:
        for name, counts in r.stream_counts.items():
            for key, n in counts.items():
                if n:
                    notes.setdefault(name, {}).setdefault(key, 0)
                    notes[name][key] += n
    return notes


def _up_to_date(out_dir: Path, cfg: FeatureConfig, checksum: str) -> Optional[ExtractReport]:
    """The report of an existing dump made with the same config from the same utterances, else None."""
    if not storage.is_feature_dump(out_dir):
        return None
    try:
        doc = storage.read_dump_config(out_dir)
        info = doc.get(DUMP_INFO_KEY) or {}
        # parsed again, so options added since the dump was made compare at their defaults
        same = (parse_config({k: v for k, v in doc.items() if k != DUMP_INFO_KEY}).to_dict() == cfg.to_dict()
                and info.get("utt_checksum") == checksum)
        if not same:
            return None
        streams = [StreamReport(name, len(n), sum(n.values()), int(info["dims"][name]),
                                float(info["frame_shift"][name]), 0.0)
                   for name, n in ((name, storage.num_frames(out_dir, name)) for name in cfg.streams)]
    except (FeatureError, KeyError, TypeError, ValueError):
        return None   # damaged or from an older layout: rebuild
    return ExtractReport(out_dir, True, int(info["utterances"]), float(info["audio_seconds"]), streams,
                         preprocess=info.get("preprocess"),
                         notes=_with_audio_notes(info.get("notes"), info.get(AUDIO_INFO_KEY)))
