"""A model's view of a feature dump: the layout of the streams it reads, those streams in memory for the
utterances it needs, normalised with statistics from the fold's training part only. Training, decoding and
inference (a packed model's layout) all read features through here."""
from pathlib import Path
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from sertk.data.datadir import DataDir
from sertk.errors import FeatureError
from sertk.features.cmvn import GlobalCMVN, Normalizer, cmvn_from_state_dict, make_cmvn
from sertk.features.segments import SegmentConfig
from sertk.features.storage import feats_index, read_dump_config, read_feats
from sertk.features.streams import DUMP_INFO_KEY

Feats = Dict[str, Dict[str, np.ndarray]]   # stream -> utt -> [rows, dim]: frames, windows or one row


@dataclass(frozen=True)
class StreamLayout:
    """What a dump says about the streams a model reads: their frame grid and the level of each."""
    dump_dir: Path
    frame_shift: Optional[float]       # seconds, shared by the frame-level streams (None: vectors only)
    frame_window: Optional[float]      # non-centred frames: each frame's span (see SegmentConfig.frames)
    levels: Dict[str, str]             # stream -> frame | segment (a row per window) | utterance (one row)
    windows: Dict[str, Dict]           # segment-level stream -> {grid, length, hop, tail}, in frames
    layers: Dict[str, int] = field(default_factory=dict)   # stream -> encoder layers stored side by side
    dims: Dict[str, int] = field(default_factory=dict)     # stream -> values per row (dumps that record them)

    @classmethod
    def read(cls, dump_dir: Path, streams: Sequence[str]) -> "StreamLayout":
        return cls.from_info(read_dump_config(dump_dir).get(DUMP_INFO_KEY) or {}, streams, Path(dump_dir))

    @classmethod
    def from_info(cls, info: Dict, streams: Sequence[str], dump_dir: Path) -> "StreamLayout":
        """From a dump's info section (`dump:` of its config.yaml, also carried by packed models);
        `dump_dir` names where it came from in messages."""
        shifts = info.get("frame_shift", {})
        missing = [s for s in streams if s not in shifts]
        if missing:
            raise FeatureError(f"{dump_dir}: no stream(s) {missing} in this dump (streams: {sorted(shifts)})")
        levels = {s: (info.get("levels") or {}).get(s, "frame") for s in streams}
        windows = {s: info["windows"][s] for s in streams if levels[s] == "segment"}
        grids = [s for s in streams if levels[s] == "frame"] + [w["grid"] for w in windows.values()]
        framing = {s: (float(shifts[s]), (info.get("frame_window") or {}).get(s)) for s in grids}
        if len(set(framing.values())) > 1:
            raise FeatureError(f"{dump_dir}: the model's streams are framed differently (shift, window) {framing}")
        # utterance-level vectors only (a probe on pooled statistics): no frames, one segment per utterance
        shift, window = next(iter(framing.values())) if framing else (None, None)
        layers = {s: int(n) for s, n in (info.get("layers") or {}).items() if s in streams}
        dims = {s: int(n) for s, n in (info.get("dims") or {}).items() if s in streams}
        return cls(Path(dump_dir), shift, window, levels, windows, layers, dims)

    @classmethod
    def for_model(cls, dump_dir: Path, model) -> "StreamLayout":
        """The layout of the streams `model` reads, checked against the levels and widths it reads them at."""
        layout = cls.read(dump_dir, list(model.streams))
        layout.check_model(model)
        return layout

    def check_model(self, model) -> None:
        """The model reads its vector streams from segment- or utterance-level rows, the others per frame, each
        as wide as the dump's rows (its `stream_dims`; times the layers stored side by side, which a LayerSum
        in front of it sums): found here, before any features are read or anything is written."""
        vectors = set(model.vector_streams)   # a SERModel's, () by default
        for stream, level in self.levels.items():
            if (stream in vectors) != (level != "frame"):
                wanted = "one vector per segment" if stream in vectors else "frames"
                raise FeatureError(f"{self.dump_dir}: model {model.name} reads '{stream}' as {wanted}, but this "
                                   f"dump holds it as {level}-level rows; extract the features its config names")
            reads, have, n = model.stream_dims.get(stream), self.dims.get(stream), self.layers.get(stream, 1)
            if reads is not None and have is not None and have != reads * n:
                row = "frame" if level == "frame" else "row"
                stacked = f" ({n} layers of {have // n})" if n > 1 else ""
                raise FeatureError(f"{self.dump_dir}: stream '{stream}' has {have} values per {row}{stacked}, but "
                                   f"model {model.name} reads {reads}; give the dump of the features the model was "
                                   f"trained (or is configured) for, or train it with its input width (model.n_mels, "
                                   f"model.input_dim, ...) set to {have // n}")

    @property
    def vectors_only(self) -> bool:
        """The model reads one vector per segment or utterance from every stream (no frames)."""
        return all(level != "frame" for level in self.levels.values())

    def frames(self, seg: SegmentConfig, what: str = "segments") -> Tuple[Optional[int], Optional[int]]:
        """(length, hop) of `seg` in frames; segment-level streams must hold exactly these windows."""
        if self.frame_shift is None:
            if seg.length is not None:
                raise FeatureError(f"{self.dump_dir}: the model reads one vector per utterance "
                                   f"({', '.join(self.levels)}), which cannot be cut into {what} of {seg.length} s; "
                                   "set segments.length: null")
            return None, None
        length, hop = seg.frames(self.frame_shift, self.frame_window)
        for stream, w in self.windows.items():
            if (length, hop, seg.tail) != (w["length"], w["hop"], w["tail"]):
                cut = "whole utterances" if length is None else f"{length} frames every {hop} (tail {seg.tail})"
                raise FeatureError(
                    f"{self.dump_dir}: stream '{stream}' holds a row per window of {w['length']} frames every "
                    f"{w['hop']} (tail {w['tail']}), but the model's {what} cut {cut}; make the feature config's "
                    f"segment_length / segment_hop / tail those of the model's segments, or the other way round")
        return length, hop


def load_streams(dump_dir: Path, streams: Sequence[str], utts: Sequence[str]) -> Feats:
    """Every stream of every utterance in memory; utterances missing from the dump are an error."""
    out: Feats = {}
    for stream in streams:
        index = feats_index(dump_dir, stream)
        missing = [u for u in utts if u not in index]
        if missing:
            raise FeatureError(f"{dump_dir}/{stream}: {len(missing)} utterance(s) have no features, e.g. "
                               f"'{missing[0]}'; extract features for the data dir they come from")
        out[stream] = read_feats(dump_dir, stream, utts)
    return out


class Normalization:
    """The fold's normaliser for each stream the model reads (see sertk.features.cmvn for the modes).

    global statistics come from the training utterances only and travel in the checkpoint;
    speaker statistics are each speaker's own, so a decoded set's speakers get theirs afresh.
    """

    def __init__(self, mode: str, per_stream: Dict[str, Normalizer], clip: Optional[float] = None):
        self.mode, self.per_stream, self.clip = mode, per_stream, clip

    @classmethod
    def fit(cls, mode: str, feats: Feats, train: DataDir, others: Sequence[DataDir] = (),
            clip: Optional[float] = None, speaker_min_rows: int = 1, speaker_min_utts: int = 1) -> "Normalization":
        """Fit on `train`; in speaker mode also give the speakers of `others` (e.g. dev) their statistics, and
        speakers with fewer than `speaker_min_rows` rows or `speaker_min_utts` utterances the training data's
        (sertk.features.cmvn)."""
        if clip is not None and not clip > 0:
            raise FeatureError(f"features.clip must be a positive number of standard deviations or null, not {clip!r}")
        utt2spk = {u: s for d in (train, *others) for u, s in d.utt2spk.items()}
        options = {"min_rows": speaker_min_rows, "min_utts": speaker_min_utts} if mode == "speaker" else {}
        return cls(mode, {s: make_cmvn(mode, feats[s], utt2spk=utt2spk, train_utts=train.utts, **options)
                          for s in feats}, clip)

    @classmethod
    def from_state_dict(cls, state: Dict, feats: Feats, data: DataDir) -> "Normalization":
        clip = state.get("clip")   # checkpoints from before features.clip: none
        if state["mode"] == "speaker":   # the data's own speakers; the training fallback from the state
            utt2spk = dict(data.utt2spk)
            per_stream = {}
            for s in feats:
                saved = state.get("streams", {}).get(s, {})
                fallback = saved.get("fallback")
                per_stream[s] = make_cmvn("speaker", feats[s], utt2spk=utt2spk, min_rows=saved.get("min_rows", 1),
                                          min_utts=saved.get("min_utts", 1),
                                          fallback=None if fallback is None else GlobalCMVN.from_state_dict(fallback))
            return cls("speaker", per_stream, clip)
        return cls(state["mode"], {s: cmvn_from_state_dict(st) for s, st in state["streams"].items()}, clip)

    def apply(self, stream: str, utt: str, x: np.ndarray) -> np.ndarray:
        out = np.asarray(self.per_stream[stream].normalize(x, utt), dtype=np.float32)
        # clip: z-scored values beyond +-clip (e.g. IS10 functionals of near-constant dims) are cut there
        return out if self.clip is None else np.clip(out, -self.clip, self.clip)

    def state_dict(self) -> Dict:
        """Lists, numbers and strings only, so checkpoints load with weights_only=True."""
        return {"mode": self.mode, "clip": self.clip,
                "streams": {s: n.state_dict() for s, n in self.per_stream.items()}}
