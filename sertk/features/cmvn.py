"""Mean and variance normalisation of frame-level features [frames, dim].

Modes (`make_cmvn(mode, ...)`):

- ``global``:  one mean and variance over the training utterances of a fold. Callers pass only the
  fold's train utterances: statistics that saw dev or test frames would leak into the model.
- ``speaker``: each speaker's frames are normalised with that speaker's own statistics, computed from
  all of that speaker's utterances (a test speaker's from its test utterances). It is unsupervised:
  it uses speaker ids only, never labels, as in speaker-wise normalisation in SER papers.
  A speaker with fewer than `min_rows` rows (frames, or vectors for pooled streams: one per utterance),
  or fewer than `min_utts` utterances, has no reliable statistics of its own (one pooled vector would
  normalise to zeros; one utterance's frames normalise away what the model reads: crnn on EmoDB fold 1's
  dev speaker in groups of 1 utterance scored dev UA 28.7 with their own statistics, 64.5 with the
  fallback, and with its own statistics 65.6 from 3 utterances, 75.1 from 5; docs/features.md): its rows
  are normalised with the fallback statistics, the fold's training data pooled (global mode's statistics).
  `sertk infer` on a single file takes that rule.
- ``none``:    the features as stored.

Statistics are accumulated in float64 with Chan's pairwise update (no large sum-of-squares
cancellation). `apply(x)` is (x - mean) / sqrt(max(var, var_floor) + eps). `state_dict()` holds only
tensors, numbers and strings, so it can go into a checkpoint that `torch.load(weights_only=True)` reads
(`plain_state` turns it into lists for JSON; states with lists, as older checkpoints hold, load alike).
"""
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Union

import numpy as np
import torch

from sertk.errors import FeatureError
from sertk.features import CMVN_MODES  # re-exported: defined where reading a config needs no torch

Array = Union[np.ndarray, torch.Tensor]


class GlobalCMVN:
    def __init__(self, norm_vars: bool = True, eps: float = 1e-8, var_floor: float = 1e-10):
        self.norm_vars, self.eps, self.var_floor = norm_vars, eps, var_floor
        self.count = 0
        self.mean: Optional[np.ndarray] = None   # float64 [dim]
        self.var: Optional[np.ndarray] = None    # float64 [dim], population variance (ddof 0)

    # -- statistics --
    def fit(self, arrays: Iterable[np.ndarray]) -> "GlobalCMVN":
        """Statistics over all frames of `arrays` (each [frames, dim]); replaces earlier ones."""
        self.count, self.mean, self.var = 0, None, None
        m2 = None
        for x in arrays:
            x = np.asarray(x, dtype=np.float64)
            if x.ndim != 2:
                raise FeatureError(f"CMVN needs [frames, dim] arrays, got shape {x.shape}")
            if not len(x):
                continue
            if self.mean is not None and x.shape[1] != len(self.mean):
                raise FeatureError(f"CMVN: feature dim {x.shape[1]} differs from {len(self.mean)} seen before")
            n_b, mean_b = len(x), x.mean(axis=0)
            m2_b = ((x - mean_b) ** 2).sum(axis=0)
            if self.mean is None:
                self.count, self.mean, m2 = n_b, mean_b, m2_b
                continue
            n = self.count + n_b
            delta = mean_b - self.mean
            self.mean = self.mean + delta * (n_b / n)
            m2 = m2 + m2_b + delta ** 2 * (self.count * n_b / n)
            self.count = n
        if self.mean is None:
            raise FeatureError("CMVN: no frames to compute statistics from")
        self.var = m2 / self.count
        return self

    # -- normalising --
    def apply(self, x: Array) -> Array:
        """(x - mean) / sqrt(max(var, var_floor) + eps), in x's dtype (numpy array or torch tensor)."""
        if self.mean is None:
            raise FeatureError("CMVN: apply() before fit()")
        if x.shape[-1] != len(self.mean):   # numpy would broadcast, or fail with a shape error
            raise FeatureError(f"CMVN: features with {x.shape[-1]} values per row, statistics of {len(self.mean)}: "
                               "these are not the features the statistics (and the model) were made from")
        shift = -self.mean
        scale = 1.0 / np.sqrt(np.maximum(self.var, self.var_floor) + self.eps) if self.norm_vars else None
        if isinstance(x, torch.Tensor):
            out = x + torch.as_tensor(shift, dtype=x.dtype, device=x.device)
            return out * torch.as_tensor(scale, dtype=x.dtype, device=x.device) if scale is not None else out
        out = x + shift.astype(x.dtype)
        return out * scale.astype(x.dtype) if scale is not None else out

    def normalize(self, x: Array, utt: Optional[str] = None) -> Array:
        return self.apply(x)

    # -- storing --
    def state_dict(self) -> Dict[str, Any]:
        return {"mode": "global", "norm_vars": self.norm_vars, "eps": self.eps, "var_floor": self.var_floor,
                "count": int(self.count),
                # float64 tensors, not lists: a checkpoint pickles a list element by element, which made saving
                # a pooled-vector model's 7168-dim statistics every epoch cost more than training it
                "mean": None if self.mean is None else torch.from_numpy(self.mean.copy()),
                "var": None if self.var is None else torch.from_numpy(self.var.copy())}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "GlobalCMVN":
        cmvn = cls(bool(state["norm_vars"]), float(state["eps"]), float(state["var_floor"]))
        cmvn.count = int(state["count"])
        if state["mean"] is not None:
            cmvn.mean = np.asarray(state["mean"], dtype=np.float64)
            cmvn.var = np.asarray(state["var"], dtype=np.float64)
        return cmvn

    def save(self, path) -> None:
        _save_npz(path, self.state_dict())

    @classmethod
    def load(cls, path) -> "GlobalCMVN":
        return cls.from_state_dict(_load_npz(path, "global"))


class SpeakerCMVN:
    """Per-speaker statistics from each speaker's own utterances; `normalize(x, utt)` uses the
    statistics of the utterance's speaker. Uses no labels."""

    def __init__(self, utt2spk: Mapping[str, str], norm_vars: bool = True, eps: float = 1e-8,
                 var_floor: float = 1e-10, min_rows: int = 1, fallback: Optional[GlobalCMVN] = None,
                 min_utts: int = 1):
        self.utt2spk = dict(utt2spk)
        self.options = {"norm_vars": norm_vars, "eps": eps, "var_floor": var_floor}
        self.speakers: Dict[str, GlobalCMVN] = {}
        self.speaker_utts: Dict[str, int] = {}
        # speakers with fewer rows than min_rows, or fewer utterances than min_utts, are normalised with
        # `fallback` (see the module doc)
        self.min_rows, self.min_utts, self.fallback = min_rows, min_utts, fallback

    def fit(self, feats: Mapping[str, np.ndarray], utts: Optional[Iterable[str]] = None) -> "SpeakerCMVN":
        """Statistics of every speaker over its utterances in `utts` (default: every utterance of utt2spk)."""
        spk2utt: Dict[str, list] = {}
        for utt in sorted(self.utt2spk if utts is None else utts):
            if utt not in self.utt2spk:
                raise FeatureError(f"CMVN: utterance '{utt}' has no speaker in utt2spk")
            spk2utt.setdefault(self.utt2spk[utt], []).append(utt)
        self.speakers = {spk: GlobalCMVN(**self.options).fit(feats[u] for u in us) for spk, us in spk2utt.items()}
        self.speaker_utts = {spk: len(us) for spk, us in spk2utt.items()}
        return self

    def statistics_of(self, speaker: str) -> GlobalCMVN:
        """The speaker's own statistics, or the fallback when it has fewer than min_rows rows or min_utts
        utterances."""
        if speaker not in self.speakers:
            raise FeatureError(f"CMVN: no statistics for speaker '{speaker}'")
        own = self.speakers[speaker]
        utts = self.speaker_utts.get(speaker, self.min_utts)   # states saved before the count: not counted
        if own.count < self.min_rows or utts < self.min_utts:
            if self.fallback is None:
                raise FeatureError(f"CMVN: speaker '{speaker}' has {own.count} row(s) in {utts} utterance(s), fewer "
                                   f"than the {self.min_rows} rows and {self.min_utts} utterances speaker statistics "
                                   "need, and there are no fallback statistics")
            return self.fallback
        return own

    def apply(self, x: Array, speaker: str) -> Array:
        return self.statistics_of(speaker).apply(x)

    def normalize(self, x: Array, utt: Optional[str] = None) -> Array:
        if utt not in self.utt2spk:
            raise FeatureError(f"CMVN: utterance '{utt}' has no speaker in utt2spk")
        return self.apply(x, self.utt2spk[utt])

    def state_dict(self) -> Dict[str, Any]:
        state = {"mode": "speaker", **self.options, "utt2spk": dict(self.utt2spk),
                 "speakers": {spk: c.state_dict() for spk, c in self.speakers.items()}}
        if self.min_rows > 1 or self.min_utts > 1:   # states of runs without the rules read as before
            state.update(min_rows=self.min_rows, fallback=None if self.fallback is None else self.fallback.state_dict())
        if self.min_utts > 1:
            state.update(min_utts=self.min_utts, speaker_utts=dict(self.speaker_utts))
        return state

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "SpeakerCMVN":
        fallback = state.get("fallback")
        cmvn = cls(state["utt2spk"], bool(state["norm_vars"]), float(state["eps"]), float(state["var_floor"]),
                   int(state.get("min_rows", 1)), None if fallback is None else GlobalCMVN.from_state_dict(fallback),
                   int(state.get("min_utts", 1)))
        cmvn.speakers = {spk: GlobalCMVN.from_state_dict(s) for spk, s in state["speakers"].items()}
        cmvn.speaker_utts = {spk: int(n) for spk, n in (state.get("speaker_utts") or {}).items()}
        return cmvn

    def save(self, path) -> None:
        _save_npz(path, self.state_dict())

    @classmethod
    def load(cls, path) -> "SpeakerCMVN":
        return cls.from_state_dict(_load_npz(path, "speaker"))


class NoCMVN:
    def normalize(self, x: Array, utt: Optional[str] = None) -> Array:
        return x

    def state_dict(self) -> Dict[str, Any]:
        return {"mode": "none"}


Normalizer = Union[GlobalCMVN, SpeakerCMVN, NoCMVN]


def make_cmvn(mode: str, feats: Mapping[str, np.ndarray], utt2spk: Optional[Mapping[str, str]] = None,
              train_utts: Optional[Iterable[str]] = None, **options) -> Normalizer:
    """A fitted normaliser: `global` over `train_utts` only; `speaker` per speaker over every utterance
    of `utt2spk`; `none` the identity. Use `normalize(x, utt)` on any utterance afterwards."""
    if mode == "global":
        if train_utts is None:
            raise FeatureError("global CMVN needs the fold's training utterances (train_utts)")
        return GlobalCMVN(**options).fit(feats[u] for u in sorted(train_utts))
    if mode == "speaker":
        if utt2spk is None:
            raise FeatureError("speaker CMVN needs utt2spk")
        min_rows, min_utts = options.pop("min_rows", 1), options.pop("min_utts", 1)
        fallback = options.pop("fallback", None)
        if fallback is None and (min_rows > 1 or min_utts > 1) and train_utts is not None:
            fallback = GlobalCMVN(**options).fit(feats[u] for u in sorted(train_utts))
        return SpeakerCMVN(utt2spk, min_rows=min_rows, fallback=fallback, min_utts=min_utts, **options).fit(feats)
    if mode == "none":
        return NoCMVN()
    raise FeatureError(f"unknown CMVN mode '{mode}'; known: {', '.join(CMVN_MODES)}")


def plain_state(state: Any) -> Any:
    """A state dict with its tensors as (nested) lists, for JSON."""
    if isinstance(state, torch.Tensor):
        return state.tolist()
    if isinstance(state, dict):
        return {k: plain_state(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [plain_state(v) for v in state]
    return state


def cmvn_from_state_dict(state: Mapping[str, Any]) -> Normalizer:
    mode = state.get("mode")
    if mode == "global":
        return GlobalCMVN.from_state_dict(state)
    if mode == "speaker":
        return SpeakerCMVN.from_state_dict(state)
    if mode == "none":
        return NoCMVN()
    raise FeatureError(f"unknown CMVN mode '{mode}' in saved statistics; known: {', '.join(CMVN_MODES)}")


# .npz keeps the state dict as arrays: per-speaker stats stacked, options and ids as 0-d / string arrays

def _save_npz(path, state: Mapping[str, Any]) -> None:
    path = Path(path)
    stats = [state] if state["mode"] == "global" else list(state["speakers"].values())
    if not stats or any(s["mean"] is None for s in stats):
        raise FeatureError(f"{path}: CMVN statistics must be fitted before they are saved")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"mode": np.array(state["mode"]), "norm_vars": np.array(state["norm_vars"]),
              "eps": np.array(state["eps"]), "var_floor": np.array(state["var_floor"]),
              "count": np.array([s["count"] for s in stats], dtype=np.int64),
              "mean": np.array([s["mean"] for s in stats], dtype=np.float64),
              "var": np.array([s["var"] for s in stats], dtype=np.float64)}
    if state["mode"] == "speaker":
        arrays["speakers"] = np.array(list(state["speakers"]), dtype=str)
        arrays["utts"] = np.array(list(state["utt2spk"]), dtype=str)
        arrays["utt_speakers"] = np.array(list(state["utt2spk"].values()), dtype=str)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _load_npz(path, mode: str) -> Dict[str, Any]:
    try:
        with np.load(Path(path), allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise FeatureError(f"{path}: not CMVN statistics ({e})") from None
    if str(data.get("mode")) != mode:
        raise FeatureError(f"{path}: holds '{data.get('mode')}' CMVN statistics, not '{mode}'")
    options = {"mode": mode, "norm_vars": bool(data["norm_vars"]), "eps": float(data["eps"]),
               "var_floor": float(data["var_floor"])}
    stats = [{**options, "mode": "global", "count": int(c), "mean": m, "var": v}
             for c, m, v in zip(data["count"], data["mean"], data["var"])]
    if mode == "global":
        return stats[0]
    return {**options, "utt2spk": dict(zip(data["utts"].tolist(), data["utt_speakers"].tolist())),
            "speakers": dict(zip(data["speakers"].tolist(), stats))}
