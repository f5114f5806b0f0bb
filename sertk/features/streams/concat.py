"""The concat stream: torch streams with the same hop stacked frame by frame.

    lld: {type: concat, parts: [{type: zcr}, {type: energy}, {type: log_energy}, {type: mfcc, n_mfcc: 13, deltas: 2}]}

Each part is built as a stream of its own (with its deltas; parts with the same STFT share it), then the
concat's own deltas, if any, are taken of the stacked frames.
"""
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List

import torch
from torch import nn

from sertk.features.streams.base import Stream, StreamConfig, check_option
from sertk.features.streams.registry import STREAM_TYPES, register_stream

if TYPE_CHECKING:
    from sertk.features.streams.registry import BuildContext


@register_stream("concat")
@dataclass
class ConcatConfig(StreamConfig):
    parts: List[StreamConfig] = field(default_factory=list)   # stacked frame by frame; same hop

    def check(self, sample_rate: int, where: str) -> None:
        super().check(sample_rate, where)
        check_option(bool(self.parts), where, "a concat stream needs at least one part")
        check_option(all(p.concatenable for p in self.parts), where,
                     "parts must be torch streams (" + ", ".join(n for n, c in STREAM_TYPES.items() if c.concatenable)
                     + "); give openSMILE streams their own name")
        hops = {p.hop_samples(sample_rate) for p in self.parts}
        check_option(len(hops) == 1, where, f"all parts must share hop_length (frame rate); got {sorted(hops)} samples")

    def hop_samples(self, sample_rate: int) -> int:
        return self.parts[0].hop_samples(sample_rate)

    def build(self, ctx: "BuildContext") -> Stream:
        return Concat([ctx.build(p) for p in self.parts])


class Concat(Stream):
    def __init__(self, parts: List[Stream]):
        super().__init__(sum(p.dim for p in parts), parts[0].hop)
        self.parts = nn.ModuleList(parts)

    def compute(self, wave, lengths, frame_lengths):
        return torch.cat([p.compute(wave, lengths, frame_lengths) for p in self.parts], dim=-1)
