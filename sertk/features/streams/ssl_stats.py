"""Pooled statistics of a frozen encoder's hidden states (the `ssl_stats` stream): small vectors for probes.

    whisper_stats: {type: ssl_stats, model: whisper-base, span: utterance}

Each row holds, for every hidden state of the encoder (the input embedding, then each layer), the mean
and the standard deviation (population, over frames) of its frames: [states x 2 x dim], state-major, the
mean before the std (Whisper-base: 7 x 2 x 512 = 7168 floats). That is what SUPERB-style probes and the
EmoBox baselines pool, and it is about 1/300 of the frames on disk.
- span utterance: one row over all frames of the utterance;
- span segment: one row per segment window of the encoder's frames (`segment_length` / `segment_hop` /
  `tail`, cut by `sertk.features.segments.segment_bounds`), so segment voting works as with frames; the
  model's segments must be these windows (training and decoding check it). The encoder still sees the
  whole utterance: windows pool its states, they do not cut the audio.
The encoder options (`model`, `whisper_input`, ...) are the `ssl` stream's (sertk.features.streams.ssl).
"""
from dataclasses import dataclass
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import torch

from sertk.errors import FeatureError
from sertk.features.streams.base import Stream, StreamConfig, check_option
from sertk.features.streams.registry import register_stream
from sertk.features.segments import TAILS, SegmentConfig, SegmentError, segment_bounds
from sertk.features.streams.ssl import EncoderConfig, EncoderInfo, EncoderStates

if TYPE_CHECKING:
    from sertk.features.streams.registry import BuildContext

SPANS = ("utterance", "segment")
STATISTICS = 2   # mean, std


@register_stream("ssl_stats")
@dataclass
class SslStatsConfig(EncoderConfig):
    span: str = "utterance"        # utterance: one row | segment: one row per segment window
    segment_length: float = 2.0    # span segment: the model's segments.length / hop / tail (seconds)
    segment_hop: float = 1.0
    tail: str = "end"

    def __post_init__(self):
        super().__post_init__()
        self._name: Optional[str] = None   # this stream's name in its config, set by resolve

    def check(self, sample_rate: int, where: str) -> None:
        super().check(sample_rate, where)
        check_option(self.span in SPANS, where, f"span must be one of {', '.join(SPANS)}, not '{self.span}'")
        check_option(self.tail in TAILS, where, f"tail must be one of {', '.join(TAILS)}, not '{self.tail}'")
        check_option(self.segment_length > 0 and self.segment_hop > 0, where,
                     "segment_length and segment_hop must be > 0")

    def resolve(self, streams: Dict[str, StreamConfig], sample_rate: int, where: str) -> None:
        self._name = next(name for name, s in streams.items() if s is self)

    @property
    def level(self) -> str:
        return self.span

    def hop_samples(self, sample_rate: int) -> int:
        # segment windows are cut on the encoder's frames, so they are the rows' grid; one row: no grid
        return self.encoder(sample_rate).hop if self.span == "segment" else 0

    def window_length(self, sample_rate: int) -> Optional[float]:
        window = self.encoder(sample_rate).window
        return None if self.span == "utterance" or window is None else window / sample_rate

    def window_frames(self, sample_rate: int) -> Tuple[int, int]:
        """(length, hop) of the segment windows in encoder frames."""
        seg = SegmentConfig(self.segment_length, self.segment_hop, self.tail)
        try:
            return seg.frames(self.hop_samples(sample_rate) / sample_rate, self.window_length(sample_rate))
        except SegmentError as e:
            raise FeatureError(f"ssl_stats stream: {e}") from None

    def windows_info(self, sample_rate: int) -> Optional[Dict]:
        if self.span != "segment":
            return None
        length, hop = self.window_frames(sample_rate)
        return {"grid": self._name, "length": length, "hop": hop, "tail": self.tail}

    def build(self, ctx: "BuildContext") -> Stream:
        return SslStatsStream(self, self.encoder(ctx.sample_rate), ctx.sample_rate)


def pooled_statistics(states: List[torch.Tensor], bounds: List[Tuple[int, int]]) -> torch.Tensor:
    """[windows, states x 2 x dim]: per window [start, end) of frames, each state's mean then std."""
    stacked = torch.stack(states, dim=1)   # [frames, states, dim]
    rows = []
    for start, end in bounds:
        part = stacked[start:end]
        std, mean = torch.std_mean(part, dim=0, unbiased=False)
        rows.append(torch.stack([mean, std], dim=1).flatten())
    return torch.stack(rows)


class SslStatsStream(EncoderStates):
    def __init__(self, config: SslStatsConfig, info: EncoderInfo, sample_rate: int):
        super().__init__(config, info, sample_rate, info.states * STATISTICS * info.dim, config.hop_samples(sample_rate))
        self.window = config.window_frames(sample_rate) if config.span == "segment" else None

    def rows(self, states: List[torch.Tensor]) -> torch.Tensor:
        frames = states[0].shape[0]
        if self.window is None:
            return pooled_statistics(states, [(0, frames)])
        length, hop = self.window
        return pooled_statistics(states, segment_bounds(frames, length, hop, self.config.tail))
