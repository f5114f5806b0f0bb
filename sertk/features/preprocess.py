"""Waveform preprocessing before the frontends: silence removal, then a fixed length.

A feature config may carry a `preprocess` section; every stream of the dump then sees the
processed audio (so the frame grid and utterance lengths in the dump are those of the processed
waveform):

    preprocess:
      silence: energy_zcr   # none | energy_zcr | split
      fixed_length: 6.0     # seconds: zero-pad at the end, or keep only the first 6 s; null: as is

Silence removers:
- `energy_zcr`: the endpoint remover of SD-CAFF's released preprocessing (spec sd_caff.md 2.4):
  a frame is silent if its zero-crossing rate is high or its square-root-Hann-windowed amplitude
  sum is low, with thresholds relative to the utterance's own extremes; voiced runs are kept and
  concatenated. When it finds no run (or only a run that never ends) the audio is kept as it is.
- `split`: `librosa.effects.split(top_db=...)`, the voiced intervals concatenated.

What was removed, padded and cut is counted (`PreprocessStats`) and reported by the extractor,
so the loss of audio by design (the 6 s cut) is never silent.
"""
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional

import librosa
import numpy as np

from sertk.errors import FeatureError

SILENCE_METHODS = ("none", "energy_zcr", "split")


@dataclass
class PreprocessConfig:
    silence: str = "none"                 # none | energy_zcr | split
    silence_frame: int = 2048             # samples per analysis frame (both removers)
    silence_hop: int = 512                # samples between frames
    split_top_db: float = 60.0            # split: frames this far below the utterance's peak are silent
    fixed_length: Optional[float] = None  # seconds; zero-pad at the end or keep the first part

    def check(self, sample_rate: int, where: str) -> None:
        if self.silence not in SILENCE_METHODS:
            raise FeatureError(f"{where}.silence must be one of {', '.join(SILENCE_METHODS)}, not {self.silence!r}")
        if self.silence_frame < 2 or self.silence_hop < 1 or self.silence_hop > self.silence_frame:
            raise FeatureError(f"{where}: need 1 <= silence_hop <= silence_frame and silence_frame >= 2 "
                               f"(got {self.silence_hop}, {self.silence_frame})")
        if self.split_top_db <= 0:
            raise FeatureError(f"{where}.split_top_db must be > 0")
        if self.fixed_length is not None and round(self.fixed_length * sample_rate) < 1:
            raise FeatureError(f"{where}.fixed_length must be at least one sample, or null")

    @property
    def active(self) -> bool:
        return self.silence != "none" or self.fixed_length is not None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def parse_preprocess(doc: Any, sample_rate: int, where: str = "preprocess") -> PreprocessConfig:
    if doc is None:
        return PreprocessConfig()
    if not isinstance(doc, dict):
        raise FeatureError(f"{where}: expected a mapping of options, got {doc!r}")
    fields = {f.name: f for f in dataclasses.fields(PreprocessConfig)}
    unknown = set(doc) - set(fields)
    if unknown:
        raise FeatureError(f"{where}: unknown option(s) {', '.join(sorted(map(str, unknown)))}; "
                           f"known: {', '.join(fields)}")
    values = {}
    for name, value in doc.items():
        default = fields[name].default
        if name == "silence" and not isinstance(value, str):
            raise FeatureError(f"{where}.silence: expected one of {', '.join(SILENCE_METHODS)}, got {value!r}")
        if name in ("silence_frame", "silence_hop") and (not isinstance(value, int) or isinstance(value, bool)):
            raise FeatureError(f"{where}.{name}: expected an integer number of samples, got {value!r}")
        if name in ("split_top_db", "fixed_length"):
            if value is None and default is None:
                pass
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                value = float(value)
            else:
                raise FeatureError(f"{where}.{name}: expected a number{' or null' if default is None else ''}, "
                                   f"got {value!r}")
        values[name] = value
    config = PreprocessConfig(**values)
    config.check(sample_rate, where)
    return config


@dataclass
class PreprocessStats:
    utts: int = 0
    input_samples: int = 0
    silence_samples: int = 0      # removed as silence
    kept_whole: int = 0           # utterances the remover left as they were (no voiced run found)
    padded: int = 0               # utterances zero-padded up to fixed_length
    cut: int = 0                  # utterances cut to fixed_length
    cut_samples: int = 0          # voiced samples dropped by the cut

    def add(self, other: "PreprocessStats") -> None:
        for f in ("utts", "input_samples", "silence_samples", "kept_whole", "padded", "cut", "cut_samples"):
            setattr(self, f, getattr(self, f) + getattr(other, f))

    def summary(self, sample_rate: int) -> Dict[str, Any]:
        return {"utterances": self.utts, "input_seconds": round(self.input_samples / sample_rate, 3),
                "silence_removed_seconds": round(self.silence_samples / sample_rate, 3),
                "kept_whole": self.kept_whole, "padded": self.padded, "cut": self.cut,
                "cut_seconds": round(self.cut_samples / sample_rate, 3)}


def preprocess(y: np.ndarray, config: PreprocessConfig, sample_rate: int,
               stats: Optional[PreprocessStats] = None) -> np.ndarray:
    """Silence removal, then the fixed length; `stats` (if given) counts what happened."""
    stats = stats if stats is not None else PreprocessStats()
    stats.utts += 1
    stats.input_samples += len(y)
    if config.silence != "none":
        remove = remove_silence_energy_zcr if config.silence == "energy_zcr" else remove_silence_split
        kept = remove(y, config)
        if kept is None:
            stats.kept_whole += 1
        else:
            stats.silence_samples += len(y) - len(kept)
            y = kept
    if config.fixed_length is not None:
        n = int(round(config.fixed_length * sample_rate))
        if len(y) < n:
            stats.padded += 1
        elif len(y) > n:
            stats.cut += 1
            stats.cut_samples += len(y) - n
        y = fix_length(y, n)
    return y


def fix_length(y: np.ndarray, n: int) -> np.ndarray:
    """The first n samples of y, zero-padded at the end when y is shorter."""
    out = np.zeros(n, dtype=np.float32)
    out[:min(n, len(y))] = y[:n]
    return out


def remove_silence_energy_zcr(y: np.ndarray, config: PreprocessConfig) -> Optional[np.ndarray]:
    """SD-CAFF's endpoint remover (spec 2.4); None when it finds no voiced run to keep."""
    frame, hop = config.silence_frame, config.silence_hop
    silent = silent_frames_energy_zcr(y, frame, hop)
    voiced = ~silent
    # runs begin where a frame is followed by a voiced one after silence (the released code marks
    # the silent frame before the run), and end at a voiced frame followed by silence
    starts = ([0] if voiced[0] else []) + [i for i in range(len(silent) - 1) if silent[i] and voiced[i + 1]]
    ends = [i for i in range(len(silent) - 1) if voiced[i] and silent[i + 1]]
    if not starts or not ends:
        return None   # as the released code: no complete run, keep the audio
    bounds = [(max(0, (i - 1) * hop), (j - 1) * hop + frame) for i, j in zip(starts, ends)]
    if len(starts) > len(ends):   # the last run lasts to the end of the utterance
        bounds.append((max(0, (starts[-1] - 1) * hop), len(y)))
    return _concatenate(y, bounds)


def silent_frames_energy_zcr(y: np.ndarray, frame: int, hop: int) -> np.ndarray:
    """Per frame: silent if zcr >= zcr_high or amplitude <= amp_low (thresholds of spec 2.4)."""
    zcr = librosa.feature.zero_crossing_rate(y, frame_length=frame, hop_length=hop, center=True)[0]
    padded = np.concatenate([np.zeros(frame // 2, y.dtype), y, np.zeros(frame // 2, y.dtype)])
    n = int(np.ceil((len(padded) - frame) / hop))
    window = np.sqrt(np.hanning(frame))
    amp = np.array([np.abs(padded[k * hop:k * hop + frame] * window).sum() for k in range(n)])
    # the two framings can differ by one frame at the end; the released code compares them frame by frame
    m = min(len(zcr), len(amp))
    zcr, amp = zcr[:m], amp[:m]
    zcr_high = max(0.8 * zcr.max(), 2.0 * zcr.min())
    amp_low = min(10.0 * amp.min(), 0.05 * amp.max() + 5.0 * amp.min(), 0.1 * amp.max())
    return (zcr >= zcr_high) | (amp <= amp_low)


def remove_silence_split(y: np.ndarray, config: PreprocessConfig) -> Optional[np.ndarray]:
    """librosa.effects.split's non-silent intervals, concatenated; None when all of it is silent."""
    intervals = librosa.effects.split(y, top_db=config.split_top_db, frame_length=config.silence_frame,
                                      hop_length=config.silence_hop)
    if len(intervals) == 0:
        return None
    return _concatenate(y, [(int(a), int(b)) for a, b in intervals])


def _concatenate(y: np.ndarray, bounds) -> np.ndarray:
    """The samples of the (sorted) runs [start, end), overlapping runs merged, in order."""
    merged = []
    for start, end in bounds:
        end = min(end, len(y))
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        elif end > start:
            merged.append([start, end])
    return np.concatenate([y[a:b] for a, b in merged]).astype(np.float32, copy=False)
