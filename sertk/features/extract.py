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

This module checks the request and plans the batches and jobs; sertk.features.extract_jobs runs the jobs
and sertk.features.extract_report judges and records what they made.
"""
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch

from sertk.audio import audio_info
from sertk.data.datadir import DataDir
from sertk.device import check_device
from sertk.errors import AudioError, FeatureError
from sertk.features import storage
from sertk.features.extract_jobs import Job, compute_streams, min_audio_seconds, run_jobs
from sertk.features.extract_report import (
    ExtractReport,
    fail_on_bad_audio,
    finish_dump,
    log_audio_issues,
    stream_layout,
    up_to_date_report,
)
from sertk.features.streams import FeatureConfig, Stream, build_frontends, parse_config
from sertk.fsutil import atomic_output_dir
from sertk.yamlutil import read_yaml_file

# the stage's entry: sertk.inference, the CLI and the benchmarks import these from here (listed, so that the
# re-exported ones count as used)
__all__ = ["DEFAULT_BATCH_SIZE", "MAX_BATCH_SAMPLES", "Request", "compute_streams", "default_device",
           "extract_features", "load_config", "min_audio_seconds", "plan_batches", "stream_layout"]

DEFAULT_BATCH_SIZE = 32
# A batch also ends at this many padded samples (batch size x longest utterance): on CPU the FFT
# slows down several times per frame once a batch's spectrogram no longer fits in cache (2^20
# samples is about 65 s at 16 kHz); on GPU the cap only bounds memory.
MAX_BATCH_SAMPLES = {"cpu": 2 ** 20, "cuda": 2 ** 24}


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
        results = run_jobs(jobs)
        fail_on_bad_audio(request.bad_audio, results, len(request.dd.utts))
        log_audio_issues(results)
        report = finish_dump(tmp, request.out_dir, request.cfg, results, request.checksum)
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
        device = check_device(device)   # the one check every command uses: cpu, cuda, cuda:N of this machine
        dd = DataDir.load(data_dir, audio="none")   # missing audio is reported by load_audio, naming the file
        checksum = _utterance_checksum(dd.utts, dd.tables["wav.scp"])
        out_dir = Path(out_dir).resolve()
        request = cls(cfg, dd, out_dir, device, batch_size, checksum, up_to_date_report(out_dir, cfg, checksum))
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
