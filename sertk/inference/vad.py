"""Voice-activity detection: a long recording -> speech chunks (start, end) in seconds.

Two backends give a speech probability per frame, and one post-processor turns probabilities into chunks,
so both obey the same chunk-length rules:

- `silero`: the silero-vad model (PyPI package `silero-vad`, which ships its weights: nothing is downloaded),
  32 ms frames at 16 kHz. The recording is cut into 64 pieces (at least 6 s each) run side by side as one
  batch, each piece starting 1 s early so that its recurrent state has warmed up by its first frame: a
  call costs about the same for one row as for 64, so this is what keeps hour-long recordings cheap
  (benchmarks/infer.py). On real speech the frames agree with a frame-by-frame run at threshold 0.5 to
  within about 0.3 % (tests/test_inference.py).
- `energy`: 30 ms frames every 10 ms; a frame is speech when its level is well above the recording's noise
  floor (the floor is the 10th percentile of frame levels, never below -70 dBFS; the threshold sits 30 % of
  the way from the floor to the loud end). No model, no dependency: for clean recordings, and the fallback
  when silero-vad is not installed.

Post-processing (hysteresis as in silero's own `get_speech_timestamps`): speech starts at probability >=
`threshold` and ends below `threshold - 0.15`; pauses shorter than `min_silence` do not end a chunk; chunks
get `pad` seconds of context on both sides (never past the middle of the pause to the next one); chunks longer
than `max_chunk` are cut into equal parts no longer than it; chunks shorter than `min_chunk` are dropped and
counted.
"""
import logging
import math
import warnings
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch

from sertk.errors import SertkError

log = logging.getLogger(__name__)

VAD_RATE = 16000
BACKENDS = ("auto", "silero", "energy")
HYSTERESIS = 0.15


class VadError(SertkError):
    """A VAD setting is invalid or its backend is not available."""


@dataclass(frozen=True)
class VadConfig:
    backend: str = "auto"       # auto: silero when silero-vad is installed, else energy
    threshold: float = 0.5      # speech probability that starts a chunk
    min_chunk: float = 0.5      # seconds; shorter chunks are dropped (counted)
    max_chunk: float = 10.0     # seconds; longer chunks are cut into equal parts
    min_silence: float = 0.3    # seconds; shorter pauses do not end a chunk
    pad: float = 0.1            # seconds of context added on each side of a chunk

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise VadError(f"VAD backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if not HYSTERESIS < self.threshold < 1:
            raise VadError(f"VAD threshold must be between {HYSTERESIS} and 1, not {self.threshold}")
        if not 0 <= self.min_chunk < self.max_chunk:
            raise VadError(f"need 0 <= min chunk ({self.min_chunk} s) < max chunk ({self.max_chunk} s)")
        if self.min_silence < 0 or self.pad < 0:
            raise VadError(f"min silence ({self.min_silence} s) and pad ({self.pad} s) must be >= 0")


@dataclass
class Chunks:
    spans: List[Tuple[float, float]]   # seconds, in order, not overlapping
    backend: str
    dropped: int = 0                   # speech chunks shorter than min_chunk


# --- backends: a speech probability per frame -----------------------------------------------------

class EnergyVad:
    name = "energy"
    hop = 0.010          # seconds between frames
    span = 3             # hops per frame (30 ms)
    floor_db = -70.0     # the noise floor is never taken below this (digital silence is not a floor)
    rise = 0.3           # threshold: this far from the floor to the loud end (99.5th percentile)
    softness_db = 3.0    # dB per unit of logit: probability 0.5 at the threshold

    def probabilities(self, wave: np.ndarray) -> np.ndarray:
        block = int(self.hop * VAD_RATE)
        n = len(wave) // block
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        power = np.square(wave[:n * block].reshape(n, block), dtype=np.float64).mean(axis=1)
        power = np.convolve(power, np.ones(self.span) / self.span, mode="same")   # 30 ms, centred
        level = 10 * np.log10(power + 1e-12)
        floor = max(float(np.percentile(level, 10)), self.floor_db)
        loud = max(float(np.percentile(level, 99.5)), floor)
        threshold = floor + self.rise * (loud - floor)
        return (1 / (1 + np.exp(-(level - threshold) / self.softness_db))).astype(np.float32)


class SileroVad:
    name = "silero"
    frame = 512               # samples at 16 kHz (32 ms), what the model takes per call
    rows = 64                 # pieces run side by side; each call costs about the same for 1 or 64 rows
    min_piece_frames = 188    # 6 s: shorter pieces would spend too much on warming up
    warm_frames = 32          # 1 s run before each piece and thrown away

    def __init__(self):
        try:
            threads = torch.get_num_threads()
            from silero_vad import load_silero_vad
            with warnings.catch_warnings():   # its loader's deprecation notices are not the user's business
                warnings.simplefilter("ignore", DeprecationWarning)
                self.model = load_silero_vad()
            torch.set_num_threads(threads)   # loading it sets one thread for the whole process
        except ImportError:
            raise VadError("the silero VAD needs the silero-vad package: pip install 'sertk[infer]' "
                           "(or use --vad energy)") from None
        self._warm_up()

    @torch.inference_mode()
    def _warm_up(self) -> None:
        # TorchScript's profiling executor optimises the graph over its first runs, which take tens of
        # times longer; a few runs on silence here keep that out of the first recording
        for _ in range(3):
            self.model.reset_states()
            for _ in range(3):
                self.model(torch.zeros(self.rows, self.frame), VAD_RATE)

    @property
    def hop(self) -> float:
        return self.frame / VAD_RATE

    @torch.inference_mode()
    def probabilities(self, wave: np.ndarray) -> np.ndarray:
        n = len(wave) // self.frame   # a last partial frame (< 32 ms) is left out
        piece_frames = max(self.min_piece_frames, math.ceil(n / self.rows))
        starts = list(range(0, n, piece_frames))
        rows = piece_frames + self.warm_frames
        out = np.zeros(n, dtype=np.float32)
        for first in range(0, len(starts), self.rows):
            group = starts[first:first + self.rows]
            batch = np.zeros((len(group), rows * self.frame), dtype=np.float32)
            for r, p in enumerate(group):
                lo = max(0, p - self.warm_frames)
                piece = wave[lo * self.frame:min(n, p + piece_frames) * self.frame]
                batch[r, :len(piece)] = piece
            x = torch.from_numpy(batch)
            self.model.reset_states()
            probs = torch.stack([self.model(x[:, i * self.frame:(i + 1) * self.frame], VAD_RATE)[:, 0]
                                 for i in range(rows)], dim=1).numpy()
            for r, p in enumerate(group):
                skip = p - max(0, p - self.warm_frames)
                count = min(piece_frames, n - p)
                out[p:p + count] = probs[r, skip:skip + count]
        return out


_SILERO: Optional[SileroVad] = None


def silero_available() -> bool:
    try:
        import silero_vad  # noqa: F401
    except ImportError:
        return False
    return True


def make_backend(name: str):
    """The backend called `name`; `auto` is silero when installed, else energy (logged)."""
    global _SILERO
    if name == "auto":
        name = "silero" if silero_available() else "energy"
        if name == "energy":
            log.info("silero-vad is not installed: using the energy VAD (pip install 'sertk[infer]' for silero)")
    if name == "energy":
        return EnergyVad()
    if _SILERO is None:   # loading the model takes a moment: once per process
        _SILERO = SileroVad()
    return _SILERO


# --- post-processing: probabilities -> chunks ---------------------------------------------------

def speech_chunks(probs: np.ndarray, hop: float, duration: float, cfg: VadConfig) -> Tuple[List[Tuple[float, float]], int]:
    """(chunks in seconds, how many were dropped as shorter than cfg.min_chunk)."""
    spans = _merge(_runs(probs, cfg.threshold), cfg.min_silence / hop)
    seconds = [(s * hop, min(e * hop, duration)) for s, e in spans]
    seconds = _pad(seconds, cfg.pad, duration)
    split = [part for span in seconds for part in split_evenly(span, cfg.max_chunk)]
    kept = [(s, e) for s, e in split if e - s >= cfg.min_chunk]
    return kept, len(split) - len(kept)


def _runs(probs: np.ndarray, threshold: float) -> List[Tuple[int, int]]:
    """[start, end) frame runs of speech, with hysteresis."""
    on, keep = probs >= threshold, probs >= threshold - HYSTERESIS
    runs, start = [], None
    for i in range(len(probs)):
        if start is None and on[i]:
            start = i
        elif start is not None and not keep[i]:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(probs)))
    return runs


def _merge(runs: List[Tuple[int, int]], min_gap: float) -> List[Tuple[int, int]]:
    out: List[Tuple[int, int]] = []
    for s, e in runs:
        if out and s - out[-1][1] < min_gap:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def _pad(spans: List[Tuple[float, float]], pad: float, duration: float) -> List[Tuple[float, float]]:
    out = []
    for i, (s, e) in enumerate(spans):
        lo = 0.0 if i == 0 else (spans[i - 1][1] + s) / 2
        hi = duration if i == len(spans) - 1 else (e + spans[i + 1][0]) / 2
        out.append((max(lo, s - pad), min(hi, e + pad)))
    return out


def split_evenly(span: Tuple[float, float], max_len: float) -> List[Tuple[float, float]]:
    """`span` cut into the fewest equal parts no longer than `max_len`."""
    s, e = span
    parts = max(1, math.ceil((e - s) / max_len - 1e-9))
    step = (e - s) / parts
    return [(s + k * step, s + (k + 1) * step if k < parts - 1 else e) for k in range(parts)]


def detect_speech(wave: np.ndarray, sample_rate: int, cfg: VadConfig = VadConfig()) -> Chunks:
    """Speech chunks of a mono recording; the VAD runs on a 16 kHz copy."""
    if sample_rate != VAD_RATE:
        import soxr
        wave = soxr.resample(wave, sample_rate, VAD_RATE, quality="HQ").astype(np.float32, copy=False)
    backend = make_backend(cfg.backend)
    spans, dropped = speech_chunks(backend.probabilities(wave), backend.hop, len(wave) / VAD_RATE, cfg)
    return Chunks(spans, backend.name, dropped)
