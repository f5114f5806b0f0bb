"""`sertk infer`'s loop: recordings -> (optional) chunks -> decisions, a group of recordings at a time.

A group is what is normalised and batched together: with speaker normalisation, all recordings of one
speaker (a recording without a known speaker is its own); otherwise consecutive recordings up to
GROUP_SECONDS of audio, so memory stays bounded however many files there are. Unreadable files and
recordings that give no decision (no speech found, too short for the model) become counted skips, and so do
recordings a decision on would mean nothing for: shorter than one analysis window of the model's features
(sertk.features.extract.min_audio_seconds, at least 25 ms) or digitally silent (peak below -80 dBFS, see
sertk.audio); with --segment vad the VAD is the judge of those (no chunk: "no speech found"). A truncated
file (its header promises more audio than it holds) is decided on what it holds, and its rows say so
(`Row.note`), as do the log and the summary's count.
"""
import logging
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from sertk.audio import audio_info, band_limit_reason, read_audio, unusable_reason
from sertk.errors import AudioError
from sertk.features.extract import min_audio_seconds
from sertk.inference.inferencer import Decision, Inferencer, Utterance
from sertk.inference.inputs import Recording, Skip
from sertk.inference.vad import VadConfig, detect_speech, split_evenly

log = logging.getLogger(__name__)

GROUP_SECONDS = 600.0
GROUP_FILES = 256


@dataclass
class Row:
    id: str
    path: str
    chunk: Optional[int]          # 1-based chunk number; None: the whole recording
    decision: Decision
    note: str = ""                # what is wrong with the recording short of a skip (truncated), else empty

    @property
    def start(self) -> float:     # seconds in the recording
        return self.decision.start

    @property
    def end(self) -> float:
        return self.decision.end


@dataclass
class InferResult:
    rows: List[Row] = field(default_factory=list)
    skips: List[Skip] = field(default_factory=list)
    vad_backend: Optional[str] = None
    dropped_chunks: int = 0       # speech chunks shorter than the minimum chunk length
    audio_seconds: float = 0.0
    truncated: List[Skip] = field(default_factory=list)   # decided on what they hold; the reason says how much
    band_limited: List[Skip] = field(default_factory=list)   # recorded below the model's rate, decided upsampled


def infer_recordings(inf: Inferencer, recordings: List[Recording], segment: str = "none",
                     vad: VadConfig = VadConfig(), progress: bool = True) -> InferResult:
    result = InferResult()
    durations: Dict[str, float] = {}
    readable = []
    for rec in recordings:
        try:
            durations[rec.id] = audio_info(rec.path).duration
            readable.append(rec)
        except AudioError as e:
            result.skips.append(Skip(rec.id, str(rec.path), str(e)))
    bar = tqdm(total=len(readable), unit="file", desc="infer", disable=not progress or None, leave=False)
    for group in _groups(readable, durations, inf.normalization_mode == "speaker"):
        _infer_group(inf, group, segment, vad, result)
        bar.update(len(group))
    bar.close()
    order = {rec.id: i for i, rec in enumerate(recordings)}   # rows in input order, whatever the grouping
    result.rows.sort(key=lambda r: (order[r.id], r.start))
    return result


def _groups(recordings: List[Recording], durations: Dict[str, float], by_speaker: bool) -> Iterator[List[Recording]]:
    if by_speaker:
        speakers: Dict[str, List[Recording]] = {}
        for rec in recordings:
            speakers.setdefault(_speaker(rec), []).append(rec)
        yield from speakers.values()
        return
    group: List[Recording] = []
    seconds = 0.0
    for rec in recordings:
        if group and (seconds + durations[rec.id] > GROUP_SECONDS or len(group) == GROUP_FILES):
            yield group
            group, seconds = [], 0.0
        group.append(rec)
        seconds += durations[rec.id]
    if group:
        yield group


def _speaker(rec: Recording) -> str:
    """A recording without a known speaker is its own (all of its chunks share statistics)."""
    return f"spk:{rec.speaker}" if rec.speaker is not None else f"rec:{rec.id}"


def _infer_group(inf: Inferencer, group: List[Recording], segment: str, vad: VadConfig, result: InferResult) -> None:
    utts: List[Utterance] = []
    pieces: Dict[str, Tuple[Recording, Optional[int]]] = {}   # utterance key -> its recording and chunk number
    notes: Dict[str, str] = {}                                 # recording id -> its truncation, its band limit
    for rec in group:
        try:
            audio = read_audio(rec.path, inf.sample_rate)
        except AudioError as e:
            result.skips.append(Skip(rec.id, str(rec.path), str(e)))
            continue
        # with --segment vad the VAD judges (silence and sub-minimum chunks give "no speech found")
        unusable = None if segment == "vad" else unusable_reason(audio, min_audio_seconds(inf.features))
        if unusable:
            result.skips.append(Skip(rec.id, str(rec.path), unusable))
            continue
        if audio.truncated:
            result.truncated.append(Skip(rec.id, str(rec.path), audio.truncated))
            notes[rec.id] = audio.truncated
        band = band_limit_reason(audio.source_rate, inf.sample_rate)
        if band:
            result.band_limited.append(Skip(rec.id, str(rec.path), band))
            notes[rec.id] = "; ".join(filter(None, (notes.get(rec.id), band)))
        wave = audio.samples
        duration = len(wave) / inf.sample_rate
        result.audio_seconds += duration
        spans = _spans(wave, inf.sample_rate, segment, vad, result)
        if not spans:
            result.skips.append(Skip(rec.id, str(rec.path), f"no speech found ({duration:.1f} s, VAD "
                                                            f"{result.vad_backend})"))
            continue
        for n, utt in enumerate(inf.cut(wave, spans, _speaker(rec), first=len(utts)), start=1):
            utts.append(utt)
            pieces[utt.key] = (rec, None if segment == "none" else n)
    decisions, undecided = inf.decide(utts)
    by_key = {u.key: u for u in utts}
    for key, reason in undecided.items():
        (rec, chunk), u = pieces[key], by_key[key]
        where = "" if chunk is None else f"chunk {chunk} ({u.start:.2f}-{u.end:.2f} s): "
        result.skips.append(Skip(rec.id, str(rec.path), where + reason))
    for key, d in decisions.items():
        rec, chunk = pieces[key]
        result.rows.append(Row(rec.id, str(rec.path), chunk, d, notes.get(rec.id, "")))


def _spans(wave: np.ndarray, sr: int, segment: str, vad: VadConfig, result: InferResult) -> List[Tuple[float, float]]:
    duration = len(wave) / sr
    if segment == "none":
        return [(0.0, duration)]
    if segment == "fixed":
        return split_evenly((0.0, duration), vad.max_chunk)
    chunks = detect_speech(wave, sr, vad)
    result.vad_backend = chunks.backend
    result.dropped_chunks += chunks.dropped
    return chunks.spans
