"""The trainer's view of a feature dump: the streams a model reads, for the utterances it needs,
normalised with statistics from the fold's training part only."""
from pathlib import Path
from typing import Dict, Sequence

import numpy as np

from sertk.data.datadir import DataDir
from sertk.errors import FeatureError
from sertk.features.cmvn import Normalizer, cmvn_from_state_dict, make_cmvn
from sertk.features.frontends import DUMP_INFO_KEY
from sertk.features.storage import load_feats, read_dump_config

Feats = Dict[str, Dict[str, np.ndarray]]   # stream -> utt -> [frames, dim]


def frame_hop(dump_dir: Path, streams: Sequence[str]) -> float:
    """The frame shift in seconds shared by `streams` (a model's streams must share one)."""
    shifts = (read_dump_config(dump_dir).get(DUMP_INFO_KEY) or {}).get("frame_shift", {})
    missing = [s for s in streams if s not in shifts]
    if missing:
        raise FeatureError(f"{dump_dir}: no stream(s) {missing} in this dump (streams: {sorted(shifts)})")
    values = {s: float(shifts[s]) for s in streams}
    if len(set(values.values())) > 1:
        raise FeatureError(f"{dump_dir}: the model's streams have different frame shifts {values}")
    return next(iter(values.values()))


def load_streams(dump_dir: Path, streams: Sequence[str], utts: Sequence[str]) -> Feats:
    """Every stream of every utterance in memory; utterances missing from the dump are an error."""
    out: Feats = {}
    for stream in streams:
        table = load_feats(dump_dir, stream)
        missing = [u for u in utts if u not in table]
        if missing:
            raise FeatureError(f"{dump_dir}/{stream}: {len(missing)} utterance(s) have no features, e.g. "
                               f"'{missing[0]}'; extract features for the data dir they come from")
        out[stream] = {u: np.asarray(table[u], dtype=np.float32) for u in utts}
    return out


class Normalization:
    """The fold's normaliser for each stream the model reads (see sertk.features.cmvn for the modes).

    global statistics come from the training utterances only and travel in the checkpoint;
    speaker statistics are each speaker's own, so a decoded set's speakers get theirs afresh.
    """

    def __init__(self, mode: str, per_stream: Dict[str, Normalizer]):
        self.mode, self.per_stream = mode, per_stream

    @classmethod
    def fit(cls, mode: str, feats: Feats, train: DataDir, others: Sequence[DataDir] = ()) -> "Normalization":
        """Fit on `train`; in speaker mode also give the speakers of `others` (e.g. dev) their statistics."""
        utt2spk = {u: s for d in (train, *others) for u, s in d.utt2spk.items()}
        return cls(mode, {s: make_cmvn(mode, feats[s], utt2spk=utt2spk, train_utts=train.utts) for s in feats})

    @classmethod
    def from_state_dict(cls, state: Dict, feats: Feats, data: DataDir) -> "Normalization":
        if state["mode"] == "speaker":
            return cls.fit("speaker", feats, data)
        return cls(state["mode"], {s: cmvn_from_state_dict(st) for s, st in state["streams"].items()})

    def apply(self, stream: str, utt: str, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.per_stream[stream].normalize(x, utt), dtype=np.float32)

    def state_dict(self) -> Dict:
        """Lists, numbers and strings only, so checkpoints load with weights_only=True."""
        return {"mode": self.mode, "streams": {s: n.state_dict() for s, n in self.per_stream.items()}}
