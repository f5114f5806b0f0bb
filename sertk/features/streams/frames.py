"""Time-domain frame streams: energy, log-energy and zero-crossing rate over the STFT's frames.

energy = sum of squared samples over the STFT window's span (weighted: of the samples times the window);
log_energy = log(energy + eps); zcr = librosa.feature.zero_crossing_rate with frame_length = the window in
samples. Frames are centred as the spectral streams' (frame f on sample f * hop), so they stack with them.
"""
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple

import torch

from sertk.features.streams.base import FramedConfig, Stream, check_option, num_frames
from sertk.features.streams.registry import register_stream

if TYPE_CHECKING:
    from sertk.features.streams.registry import BuildContext


@register_stream("energy")
@dataclass
class EnergyConfig(FramedConfig):
    """Sum of squared samples over the STFT window's span; with `weighted`, of the windowed samples."""
    weighted: bool = False   # sum (w[n] x[n])^2 with the `window` (e.g. Hamming-windowed short-time energy)

    def build(self, ctx: "BuildContext") -> Stream:
        return Energy(self, ctx.sample_rate)


@register_stream("log_energy")
@dataclass
class LogEnergyConfig(EnergyConfig):
    eps: float = 1e-6   # log(energy + eps)

    def check(self, sample_rate: int, where: str) -> None:
        super().check(sample_rate, where)
        check_option(self.eps > 0, where, "eps must be > 0")

    def build(self, ctx: "BuildContext") -> Stream:
        return Energy(self, ctx.sample_rate, log_eps=self.eps)


@register_stream("zcr")
@dataclass
class ZcrConfig(FramedConfig):
    """librosa.feature.zero_crossing_rate with frame_length = the window length in samples."""
    threshold: float = 1e-10   # |x| <= threshold counts as zero (positive)

    def build(self, ctx: "BuildContext") -> Stream:
        return ZeroCrossingRate(self, ctx.sample_rate)


# --- modules ------------------------------------------------------------------------------------

class _WindowSpan:
    """The samples the STFT window covers in each frame: [f * hop - n_fft // 2 + (n_fft - win) // 2, + win)."""

    def __init__(self, config: FramedConfig, sample_rate: int):
        self.win, self.hop = config.samples(sample_rate)
        self.offset = -(config.n_fft // 2) + (config.n_fft - self.win) // 2

    def bounds(self, n_samples: int, device) -> Tuple[torch.Tensor, torch.Tensor]:
        start = torch.arange(num_frames(n_samples, self.hop), device=device) * self.hop + self.offset
        return start, start + self.win


class Energy(Stream):
    """Frame energy sum(x^2) over the window span (zero outside the signal), or sum((w x)^2) when
    `weighted`; log(energy + eps) for log_energy."""

    def __init__(self, config: EnergyConfig, sample_rate: int, log_eps: Optional[float] = None):
        span = _WindowSpan(config, sample_rate)
        super().__init__(1, span.hop)
        self.span = span
        self.log_eps = log_eps
        self.weighted = config.weighted
        make = torch.hann_window if config.window == "hann" else torch.hamming_window
        self.register_buffer("window_sq", make(span.win, periodic=True, dtype=torch.float64).square(),
                             persistent=False)

    def compute(self, wave, lengths, frame_lengths):
        energy = self._weighted(wave) if self.weighted else self._plain(wave)
        if self.log_eps is not None:
            energy = torch.log(energy + self.log_eps)
        return energy[..., None]

    def _plain(self, wave):
        # cumulative sums make each frame O(1); float64 keeps quiet frames after loud ones exact enough
        T = wave.shape[1]
        csum = torch.nn.functional.pad(torch.cumsum(wave.double().pow(2), dim=1), (1, 0))
        start, end = self.span.bounds(T, wave.device)
        return (csum[:, end.clamp(0, T)] - csum[:, start.clamp(0, T)]).clamp(min=0).float()

    def _weighted(self, wave):
        # a strided correlation of x^2 with w^2 over each frame's span, zero padded like the STFT
        T = wave.shape[1]
        frames = int(num_frames(T, self.span.hop))
        left = -self.span.offset
        right = max(0, (frames - 1) * self.span.hop + self.span.win - left - T)
        squared = torch.nn.functional.pad(wave.double().square(), (left, right))[:, None]
        energy = torch.nn.functional.conv1d(squared, self.window_sq[None, None], stride=self.span.hop)
        return energy[:, 0, :frames].float()


class ZeroCrossingRate(Stream):
    """librosa.feature.zero_crossing_rate(center=True): edge padding adds no crossings, so a frame counts
    the sign changes between neighbouring samples of its own utterance, divided by the frame length."""

    def __init__(self, config: ZcrConfig, sample_rate: int):
        span = _WindowSpan(config, sample_rate)
        super().__init__(1, span.hop)
        self.span, self.threshold = span, config.threshold

    def compute(self, wave, lengths, frame_lengths):
        T = wave.shape[1]
        negative = wave < -self.threshold   # librosa: |x| <= threshold is zero, and zero is positive
        change = negative[:, 1:] != negative[:, :-1]           # change[j - 1]: between samples j - 1 and j
        inside = torch.arange(1, T, device=wave.device)[None, :] < lengths[:, None]
        counts = torch.cumsum((change & inside).int(), dim=1)
        csum = torch.nn.functional.pad(counts, (2, 0))           # csum[k] = changes at samples j < k
        start, end = self.span.bounds(T, wave.device)
        # pairs (j - 1, j) with both samples in the frame: j in [start + 1, end - 1]
        n = csum[:, end.clamp(0, T)] - csum[:, (start + 1).clamp(0, T)]
        return (n.float() / self.span.win)[..., None]
