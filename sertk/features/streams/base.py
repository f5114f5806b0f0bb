"""What every stream shares: the config base classes and the `Stream` module base class.

A stream config is a dataclass whose defaults are the documented defaults; `check` refuses bad values, and
`build(ctx)` makes the stream's module (sertk.features.streams.registry.BuildContext: the sample rate, the
config's other streams, modules shared between streams). A stream module's `forward(wave [B, T], lengths [B])`
gives (feats [B, rows, dim], row counts [B]).
"""
import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from sertk.errors import FeatureError

if TYPE_CHECKING:   # the registry imports this module
    from sertk.features.streams.registry import BuildContext

WINDOWS = ("hann", "hamming")   # periodic, as scipy.signal.get_window(..., fftbins=True)
MAX_DELTAS = 2
DELTA_AXES = ("time", "coefficient")


def check_option(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise FeatureError(f"{where}: {message}")


@dataclass
class StreamConfig:
    deltas: int = 0          # 0: none; 1: + deltas; 2: + deltas and delta-deltas, appended along dim
    delta_width: int = 9     # frames (or coefficients); odd, >= 3 (librosa.feature.delta, mode 'interp')
    # time: along frames (the usual deltas); coefficient: across the feature dims of each frame, as
    # librosa.feature.delta(mfcc, axis=-2) (SD-CAFF's deltas, spec sd_caff.md 2.2)
    delta_axis: str = "time"
    # false: the k-th deltas are librosa.feature.delta(x, order=k); true: the first-order delta of
    # the (k-1)-th, delta(delta(x)) (SD-CAFF's released code)
    delta_chain: bool = False

    def check(self, sample_rate: int, where: str) -> None:
        for f in fields(self):   # .nan / .inf read from YAML would fail later, as a traceback, in int(round(...))
            value = getattr(self, f.name)
            check_option(not isinstance(value, float) or math.isfinite(value), where,
                         f"{f.name} must be a finite number, not {value}")
        check_option(0 <= self.deltas <= MAX_DELTAS, where, f"deltas must be 0, 1 or 2, not {self.deltas}")
        check_option(self.delta_width >= 3 and self.delta_width % 2 == 1, where,
                 f"delta_width must be an odd number >= 3, not {self.delta_width}")
        check_option(self.delta_axis in DELTA_AXES, where,
                 f"delta_axis must be one of {', '.join(DELTA_AXES)}, not '{self.delta_axis}'")

    def hop_samples(self, sample_rate: int) -> int:
        raise NotImplementedError

    def build(self, ctx: "BuildContext") -> "Stream":
        """This stream's module, before deltas (the registry appends those)."""
        raise NotImplementedError

    # what a stream's rows are: frame (one per frame) | segment (one per segment window) | utterance (one)
    level = "frame"
    # torch streams: computed here from the waveform, cheap to build, and stackable by a concat stream; streams
    # computed by another tool (openSMILE) or a pretrained encoder are none of these
    concatenable = True

    def window_length(self, sample_rate: int) -> Optional[float]:
        """Seconds each frame's analysis window spans when frames are not centred (frame f covers
        [f * hop, f * hop + window)); None for the centred frames of the torch streams."""
        return None

    def windows_info(self, sample_rate: int) -> Optional[Dict[str, Any]]:
        """For segment-level streams, the windows their rows follow; else None."""
        return None

    def stacked_layers(self, sample_rate: int) -> Optional[int]:
        """For streams that store several layers side by side ([frames, layers x dim]), how many; else None."""
        return None

    def resolve(self, streams: Dict[str, "StreamConfig"], sample_rate: int, where: str) -> None:
        """Check references to the other streams of the config (none by default)."""


@dataclass
class FramedConfig(StreamConfig):
    """Frames of the torch streams: a window every hop, centred on f * hop (the STFT's framing)."""
    win_length: float = 0.025   # seconds
    hop_length: float = 0.010   # seconds
    n_fft: int = 512            # samples; even, >= the window length in samples
    window: str = "hann"        # hann | hamming

    def check(self, sample_rate: int, where: str) -> None:
        super().check(sample_rate, where)
        check_option(self.window in WINDOWS, where, f"window must be one of {', '.join(WINDOWS)}, not '{self.window}'")
        win, hop = self.samples(sample_rate)
        check_option(win >= 2 and hop >= 1, where, "win_length and hop_length must be at least 2 and 1 samples")
        check_option(self.n_fft % 2 == 0, where, f"n_fft must be even (so frames are centred), not {self.n_fft}")
        check_option(self.n_fft >= win, where, f"n_fft ({self.n_fft}) must be >= win_length in samples ({win}); "
                 "raise n_fft")

    def samples(self, sample_rate: int) -> Tuple[int, int]:
        """(window, hop) in samples."""
        return int(round(self.win_length * sample_rate)), int(round(self.hop_length * sample_rate))

    def hop_samples(self, sample_rate: int) -> int:
        return self.samples(sample_rate)[1]


# --- modules ------------------------------------------------------------------------------------

def num_frames(lengths, hop: int):
    """Frames of an utterance of `lengths` samples (int or tensor): frame f is centred on f * hop."""
    return 1 + lengths // hop


class Stream(nn.Module):
    """Base class: subclasses compute feats for every frame of the padded batch in `compute`;
    `forward` adds the frame lengths and zeroes frames past each utterance."""

    def __init__(self, dim: int, hop: int):
        super().__init__()
        self.dim, self.hop = dim, hop

    def compute(self, wave: torch.Tensor, lengths: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        frame_lengths = num_frames(lengths, self.hop)
        feats = self.compute(wave, lengths, frame_lengths)
        return mask_frames_(feats, frame_lengths), frame_lengths


def stack_rows(rows: List[torch.Tensor], dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Streams computed one utterance at a time: rows [n_i, dim] -> zero-padded [B, max n_i, dim] and the
    row counts [B], on the rows' device."""
    counts = [len(r) for r in rows]
    out = rows[0].new_zeros(len(rows), max(counts), dim)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out, torch.tensor(counts, device=out.device)


def frame_mask(frame_lengths: torch.Tensor, n: int) -> torch.Tensor:
    return torch.arange(n, device=frame_lengths.device)[None, :] < frame_lengths[:, None]


def mask_frames_(feats: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """Zero frames past each length, in place; only frames past the shortest length can need it."""
    first = int(frame_lengths.min())
    tail = feats[:, first:]
    tail.masked_fill_(~frame_mask(frame_lengths - first, tail.shape[1])[..., None], 0.0)
    return feats
