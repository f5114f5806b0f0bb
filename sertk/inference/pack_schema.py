"""What sertk-model.json holds: one schema (META_SCHEMA) says every key's type, and the statistics of a stream
by its normalisation mode (STREAM_STATS). sertk.inference.pack_check walks them when a pack is read.

A schema's `problem(value, key)` is None, or (the key at fault, what it must be), which becomes one PackError
naming the file and the key, e.g.
`model.sertk: sertk-model.json: 'classes' must be a non-empty list of distinct names, not 'anger'`.
"""
import math
from typing import Any, Callable, Dict, Optional, Tuple

from sertk.features.cmvn import CMVN_MODES
from sertk.features.streams import DUMP_INFO_KEY
from sertk.inference.packed import FORMAT_VERSION


class _Schema:
    wants = "?"

    def problem(self, value: Any, key: str) -> Optional[Tuple[str, str]]:
        """None, or (the key at fault, what it must be)."""
        return None if self.ok(value) else (key, self.wants)

    def ok(self, value: Any) -> bool:
        return True


class _Value(_Schema):
    def __init__(self, wants: str, ok: Callable[[Any], bool]):
        self.wants, self._ok = wants, ok

    def ok(self, value: Any) -> bool:
        return self._ok(value)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


TEXT = _Value("a string", lambda v: isinstance(v, str))
NAME = _Value("a non-empty string", lambda v: isinstance(v, str) and bool(v))
FLAG = _Value("true or false", lambda v: isinstance(v, bool))
ANY = _Value("anything", lambda v: True)
COUNT = _Value("an integer >= 0", lambda v: is_int(v) and v >= 0)
SIZE = _Value("an integer >= 1", lambda v: is_int(v) and v >= 1)
NUMBER = _Value("a number", is_number)
SHARE = _Value("a number in [0, 1]", lambda v: is_number(v) and 0 <= v <= 1)
POSITIVE = _Value("a number > 0", lambda v: is_number(v) and v > 0)
NON_NEGATIVE = _Value("a number >= 0", lambda v: is_number(v) and v >= 0)
# a fold's speakers: a list, or "mixed" for a speaker-dependent protocol (sertk.data.protocols)
SPEAKERS = _Value("a list of speakers or 'mixed'", lambda v: v == "mixed" or (isinstance(v, list) and
                                                                             all(isinstance(x, str) for x in v)))
SHA256 = _Value("64 hex digits", lambda v: isinstance(v, str) and len(v) == 64 and
                all(c in "0123456789abcdef" for c in v.lower()))


class _Null(_Schema):
    """null, or what `inner` takes."""

    def __init__(self, inner: _Schema):
        self.inner, self.wants = inner, f"null or {inner.wants}"

    def problem(self, value, key):
        found = None if value is None else self.inner.problem(value, key)
        return (key, self.wants) if found and found[0] == key and found[1] != "present" else found


class _List(_Schema):
    def __init__(self, item: _Schema, wants: str, least: int = 0, distinct: bool = False):
        self.item, self.wants, self.least, self.distinct = item, wants, least, distinct

    def problem(self, value, key):
        if not isinstance(value, list) or len(value) < self.least:
            return key, self.wants
        for i, v in enumerate(value):
            if self.item.problem(v, f"{key}[{i}]"):
                return key, self.wants
        if self.distinct and len(set(value)) < len(value):
            return key, self.wants
        return None


class _Map(_Schema):
    """A mapping of names (streams, speakers) to what `item` takes."""

    def __init__(self, item: _Schema, wants: str):
        self.item, self.wants = item, wants

    def problem(self, value, key):
        if not isinstance(value, dict):
            return key, self.wants
        for k, v in value.items():
            found = self.item.problem(v, f"{key}.{k}")
            if found:
                return found
        return None


class _Keys(_Schema):
    """A mapping with these keys (`optional` ones may be missing); other keys are left alone."""

    def __init__(self, keys: Dict[str, _Schema], optional: Tuple[str, ...] = ()):
        self.keys, self.optional = keys, optional
        self.wants = f"a mapping of {', '.join(keys)}" if keys else "a mapping"

    def problem(self, value, key):
        if not isinstance(value, dict):
            return key, self.wants
        for k, schema in self.keys.items():
            inner = f"{key}.{k}" if key else k
            if k not in value:
                if k in self.optional:
                    continue
                return inner, "present"
            found = schema.problem(value[k], inner)
            if found:
                return found
        return None


_LAYOUT = _Keys({
    "dims": _Map(SIZE, "a mapping of streams to their dims"),
    "frame_shift": _Map(NON_NEGATIVE, "a mapping of streams to seconds >= 0"),   # > 0 for frame-level ones
    "levels": _Map(_Value("one of frame, segment, utterance", lambda v: v in ("frame", "segment", "utterance")),
                   "a mapping of streams to levels"),
    "frame_window": _Map(_Null(POSITIVE), "a mapping of streams to seconds"),
    "windows": _Map(_Keys({"grid": NAME}), "a mapping of streams to their windows"),
    "layers": _Map(SIZE, "a mapping of streams to layer counts"),
    "encoders": _Map(_Keys({}), "a mapping of streams to encoders"),
}, optional=("levels", "frame_window", "windows", "layers", "encoders"))
_SCORES = {"wa": SHARE, "ua": SHARE}
META_SCHEMA = _Keys({
    "format_version": _Value(f"an integer from 1 to {FORMAT_VERSION}" if FORMAT_VERSION > 1 else "the integer 1",
                             lambda v: is_int(v) and v >= 1),
    "sertk_version": TEXT,
    "created": TEXT,
    "source": _Keys({"exp_dir": TEXT, "checkpoint": TEXT, "checkpoint_sha256": SHA256, "epoch": _Null(COUNT),
                     "feature_dump": _Null(TEXT), "trained_with_sertk": _Null(TEXT)},
                    optional=("feature_dump", "trained_with_sertk")),
    "model": NAME,
    "classes": _List(NAME, "a non-empty list of distinct names", least=1, distinct=True),
    "config": _Keys({"model": _Keys({"name": NAME})}),
    "features": _Keys({"streams": _Map(_Keys({"type": NAME}), "a mapping of stream names to streams"),
                       DUMP_INFO_KEY: _LAYOUT}),
    "normalization": _Keys({"mode": _Value(f"one of {', '.join(CMVN_MODES)}", lambda v: v in CMVN_MODES),
                            "clip": _Null(POSITIVE),
                            "streams": _Map(_Keys({"mode": NAME}), "a mapping of streams to statistics")},
                           optional=("clip",)),
    "protocol": _Null(_Keys({"protocol": NAME, "num_folds": SIZE, "corpus": _Null(TEXT), "description": _Null(TEXT),
                             "dev_policy": _Null(TEXT), "speaker_independent": _Null(FLAG),
                             "fold": _Null(_Keys({"fold": _Null(SIZE), "test_speakers": SPEAKERS,
                                                  "dev_speakers": SPEAKERS},
                                                 optional=("fold", "test_speakers", "dev_speakers")))},
                            optional=("corpus", "description", "dev_policy", "speaker_independent", "fold"))),
    "metrics": _Keys({"dev": _Null(_Keys(_SCORES)),
                      "test": _Null(_Keys({**_SCORES, "rule": NAME, "num_utts": COUNT, "macro_f1": SHARE}))},
                     optional=("dev", "test")),
    "environment": _Null(_Keys({})),
})
# the statistics of one stream, by its mode (sertk.features.cmvn: state_dict, and _portable_normalization)
_GLOBAL_STATS = _Keys({"mode": _Value("global", lambda v: v == "global"), "norm_vars": FLAG, "eps": NON_NEGATIVE,
                       "var_floor": NON_NEGATIVE, "count": COUNT,
                       "mean": _Null(_List(NUMBER, "a non-empty list of numbers", least=1)),
                       "var": _Null(_List(NON_NEGATIVE, "a non-empty list of numbers >= 0", least=1))})
STREAM_STATS = {
    "global": _GLOBAL_STATS,
    "speaker": _Keys({"mode": _Value("speaker", lambda v: v == "speaker"), "min_rows": SIZE, "min_utts": SIZE,
                      "fallback": _Null(_GLOBAL_STATS)}, optional=("min_rows", "min_utts", "fallback")),
    "none": _Keys({"mode": _Value("none", lambda v: v == "none")}),
}
