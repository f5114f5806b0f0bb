"""Segments: fixed-length windows over an utterance's frames (GUIDE section 4).

Windows are cut from stored frame-level features, so segmentation never re-reads audio. An
utterance shorter than one window becomes one segment padded at the end (its mask says which
frames are real); otherwise windows start every `hop` frames and, if the last one stops short of
the end, one more window aligned to the end covers the tail (tail "end"), or the frames after the
last full window are left out (tail "drop").
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from sertk.errors import SertkError

TAILS = ("end", "drop")
# which windows of an utterance longer than one segment train the model: all of them, or only the
# centre one (ESERNet's centre crop, spec esernet.md 2); decoding always reads all of them
TRAIN_WINDOWS = ("all", "center")


class SegmentError(SertkError, ValueError):
    """Segment settings that cannot cut any window."""


@dataclass(frozen=True)
class SegmentConfig:
    length: Optional[float] = 2.0   # seconds; None: no windows, each utterance is one segment
    hop: float = 1.0      # seconds
    tail: str = "end"     # end: one more window aligned to the utterance's end | drop

    @classmethod
    def from_config(cls, section: dict) -> "SegmentConfig":
        """From an experiment config's `segments` section (configs written before `tail` existed: end)."""
        return cls(section["length"], section["hop"], section.get("tail", "end"))

    def __post_init__(self):
        if self.tail not in TAILS:
            raise SegmentError(f"segments.tail must be one of {', '.join(TAILS)}, not {self.tail!r}")

    def frames(self, frame_hop_s: float, frame_window_s: Optional[float] = None) -> Tuple[Optional[int], Optional[int]]:
        """(window, hop) in frames for features with the given frame hop in seconds; (None, None) for
        whole utterances. Centred frames (frame_window_s None): length / hop frames, rounded. Frames
        that each span frame_window_s from their start (openSMILE, Kaldi's snip-edges): the frames
        whose whole span fits in `length` seconds, 1 + (length - frame_window) // hop."""
        if self.length is None:
            return None, None
        if frame_window_s is None:
            length = round(self.length / frame_hop_s)
        else:   # the epsilon keeps 1.4 s of 32 ms frames at 40, not 39, whatever the float rounding
            length = 1 + math.floor((self.length - frame_window_s) / frame_hop_s + 1e-6)
        hop = round(self.hop / frame_hop_s)
        if length < 1 or hop < 1:
            raise SegmentError(f"segment length {self.length} s and hop {self.hop} s must each span at "
                               f"least one frame of {frame_hop_s} s")
        return length, hop


def segment_bounds(num_frames: int, length: int, hop: int, tail: str = "end") -> List[Tuple[int, int]]:
    """[start, end) frame bounds of the windows of one utterance; end - start <= length."""
    if num_frames <= 0:
        raise ValueError("an utterance needs at least one frame")
    if num_frames <= length:
        return [(0, num_frames)]
    starts = list(range(0, num_frames - length + 1, hop))
    if starts[-1] + length < num_frames and tail == "end":
        starts.append(num_frames - length)
    return [(s, s + length) for s in starts]


def center_bounds(num_frames: int, length: int) -> List[Tuple[int, int]]:
    """The one window of `length` frames in the middle of the utterance (all of it when shorter)."""
    if num_frames <= length:
        return [(0, num_frames)]
    start = (num_frames - length) // 2
    return [(start, start + length)]


def segment_id(utt: str, start: int, end: int) -> str:
    return f"{utt}-{start:06d}-{end:06d}"


def cut(feats: np.ndarray, start: int, end: int, length: int) -> Tuple[np.ndarray, np.ndarray]:
    """The window [start, end) of `feats` [frames, dim], zero-padded to `length`, and its frame mask."""
    window = np.zeros((length, feats.shape[1]), dtype=np.float32)
    window[:end - start] = feats[start:end]
    mask = np.zeros(length, dtype=bool)
    mask[:end - start] = True
    return window, mask
