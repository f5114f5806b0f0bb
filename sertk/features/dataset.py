"""Segment datasets: stored features of a data dir, normalised, cut into the windows a model reads.

Training, decoding and inference all read segments through `SegmentDataset` (sertk.features.segments
cuts the windows; sertk.features.reading reads and normalises the dump).
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from sertk.data.datadir import DataDir
from sertk.data.validate import GENDERS
from sertk.errors import SertkError
from sertk.features.segments import center_bounds, cut, segment_bounds, segment_id

# frames two streams of one model may differ by (framing edge effects) before it is an error
FRAME_SLACK = 2


@dataclass(frozen=True)
class Segment:
    seg: str
    utt: str
    start: int
    end: int
    window: int = 0   # the how-manieth window of its utterance (the row of segment-level streams)


class SegmentDataset(Dataset):
    """All windows of every utterance in `datadir`; features held in memory, normalised once.

    `feats` maps stream -> utt -> [frames, dim] array; `normalize(stream, utt, x)` applies the
    fold's statistics. Items are dicts of numpy arrays: one per stream, `mask`, `label` (-1 when
    the data dir has no labels) and `index` (into `segments`); with `with_gender`, also `gender`
    (the index in GENDERS of the utterance's utt2gen, -1 where it has none).
    `length` None: no windows, every utterance is one segment (padded to the longest).
    `windows` "center" keeps only the centre window of an utterance longer than one segment (a training
    crop); "all" keeps every window.
    `levels` gives streams that are not frame-level (sertk.features.reading.StreamLayout): a segment-level
    stream holds one row per window, which the segment takes whole ([dim]); an utterance-level one holds
    one row, which every segment of the utterance takes.
    """

    def __init__(self, datadir: DataDir, feats: Dict[str, Dict[str, np.ndarray]], length: Optional[int],
                 hop: Optional[int], normalize: Callable[[str, str, np.ndarray], np.ndarray],
                 classes: Sequence[str], tail: str = "end", with_gender: bool = False,
                 levels: Optional[Dict[str, str]] = None, windows: str = "all"):
        self.streams = list(feats)
        self.levels = {s: (levels or {}).get(s, "frame") for s in self.streams}
        frame_streams = [s for s in self.streams if self.levels[s] == "frame"]
        self.features: Dict[str, Dict[str, np.ndarray]] = {s: {} for s in self.streams}
        self.segments: List[Segment] = []
        labels = datadir.tables.get("utt2emo", {})
        index = {c: i for i, c in enumerate(classes)}
        self.labels: Dict[str, int] = {u: index[labels[u]] for u in datadir.utts if u in labels}
        genders = datadir.tables.get("utt2gen", {})
        self.genders: Optional[Dict[str, int]] = {u: GENDERS.index(genders[u]) for u in datadir.utts
                                                  if genders.get(u) in GENDERS} if with_gender else None
        longest = 0
        for utt in datadir.utts:
            arrays = {s: feats[s].get(utt) for s in self.streams}
            missing = [s for s, a in arrays.items() if a is None]
            if missing:
                raise SertkError(f"utterance '{utt}' has no stored features for stream(s) {missing}; "
                                 "run feature extraction on this data dir")
            if not frame_streams:   # vectors only: each row of a segment-level stream is a window, else one row
                frames = _vector_rows(utt, arrays, self.levels)
                bounds = [(k, k + 1) for k in range(frames)] if windows == "all" else center_bounds(frames, 1)
            else:
                frames = _common_frames(utt, {s: arrays[s] for s in frame_streams})
                if length is None:
                    bounds = [(0, frames)]
                elif windows == "center":
                    bounds = center_bounds(frames, length)
                else:
                    bounds = segment_bounds(frames, length, hop, tail)
            for s, a in arrays.items():
                rows = {"frame": frames, "segment": len(bounds), "utterance": 1}[self.levels[s]]
                if self.levels[s] != "frame" and a.shape[0] != rows:
                    raise SertkError(f"utterance '{utt}': stream '{s}' has {a.shape[0]} {self.levels[s]}-level "
                                     f"row(s) where its segments need {rows}; extract its features again")
                self.features[s][utt] = normalize(s, utt, np.asarray(a[:rows], dtype=np.float32))
            longest = max(longest, frames)
            for window, (start, end) in enumerate(bounds):
                self.segments.append(Segment(segment_id(utt, start, end), utt, start, end, window))
        # whole utterances (length None): each item is its own length, and `collate` pads a batch to its
        # longest, not the data set's
        self.length = (longest if length is None else length) if frame_streams else 1   # vectors: one position
        self.whole = length is None

    def frames(self, i: int) -> int:
        """Frames segment i covers (its padded length is `length`, or its own for whole utterances)."""
        return self.segments[i].end - self.segments[i].start

    def utterance_shares(self) -> np.ndarray:
        """Per segment, 1 / the number of segments of its utterance: every utterance sums to 1."""
        counts: Dict[str, int] = {}
        for seg in self.segments:
            counts[seg.utt] = counts.get(seg.utt, 0) + 1
        return np.array([1.0 / counts[seg.utt] for seg in self.segments], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, i: int) -> Dict[str, np.ndarray]:
        seg = self.segments[i]
        item = {"mask": np.ones(1, dtype=bool)}   # vector-only models: one valid position
        for s in self.streams:
            rows = self.features[s][seg.utt]
            if self.levels[s] == "frame":
                item[s], item["mask"] = cut(rows, seg.start, seg.end,
                                            seg.end - seg.start if self.whole else self.length)
            else:
                item[s] = rows[seg.window if self.levels[s] == "segment" else 0]
        item["label"] = np.int64(self.labels.get(seg.utt, -1))
        item["index"] = np.int64(i)
        if self.genders is not None:
            item["gender"] = np.int64(self.genders.get(seg.utt, -1))
        return item


def check_model_length(model, dataset: SegmentDataset, where: str) -> None:
    """A model built for at most `max_frames` frames (e.g. ESERNet's word tokens) refuses longer segments."""
    limit = model.max_frames
    if limit is not None and dataset.length > limit:
        raise SertkError(f"{where}: segments of {dataset.length} frames, but model {model.name} takes at most "
                         f"model.max_frames = {limit}; set segments.length to at most {limit} frames' worth")


def _vector_rows(utt: str, arrays: Dict[str, np.ndarray], levels: Dict[str, str]) -> int:
    """A vector-only model's segments: the rows of its segment-level streams (which must agree), else 1."""
    counts = {s: a.shape[0] for s, a in arrays.items() if levels[s] == "segment"}
    if len(set(counts.values())) > 1:
        raise SertkError(f"utterance '{utt}': segment-level streams hold different numbers of windows {counts}; "
                         "extract them with the same windows")
    return next(iter(counts.values()), 1)


def _common_frames(utt: str, arrays: Dict[str, np.ndarray]) -> int:
    counts = {s: a.shape[0] for s, a in arrays.items()}
    if max(counts.values()) - min(counts.values()) > FRAME_SLACK:
        raise SertkError(f"utterance '{utt}': streams disagree on the number of frames {counts}; "
                         "a model's streams must share one frame rate")
    return min(counts.values())


def collate(items: List[Dict[str, np.ndarray]]) -> Dict[str, torch.Tensor]:
    """Stacked items; arrays of different lengths (whole utterances) zero-padded to the longest first."""
    out = {}
    for k in items[0]:
        arrays = [it[k] for it in items]
        if arrays[0].ndim:   # scalars (label, index) stack as they are
            longest = max(a.shape[0] for a in arrays)
            arrays = [np.pad(a, [(0, longest - len(a))] + [(0, 0)] * (a.ndim - 1)) if len(a) < longest else a
                      for a in arrays]
        out[k] = torch.from_numpy(np.stack(arrays))
    return out
