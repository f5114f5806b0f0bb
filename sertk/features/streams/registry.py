"""The stream types by name, feature configs (YAML -> checked dataclasses and back), and building modules.

A stream family registers each of its config classes with `@register_stream("name")`; the families are
listed in sertk.features.streams, whose import registers them all. Every config builds its own module
(`StreamConfig.build(ctx)`); `BuildContext.build` appends the deltas a config asks for.
"""
import dataclasses
import re
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Hashable

from sertk.errors import FeatureError
from sertk.features.preprocess import PreprocessConfig, parse_preprocess
from sertk.features.streams.base import Stream, StreamConfig
from sertk.features.streams.deltas import WithDeltas

STREAM_TYPES: Dict[str, type] = {}   # type name -> config class, in registration order
TYPE_NAMES: Dict[type, str] = {}


def register_stream(name: str) -> Callable[[type], type]:
    """Class decorator: the config class of stream type `name`."""
    def add(cls: type) -> type:
        if name in STREAM_TYPES:
            raise RuntimeError(f"stream type '{name}' registered twice")
        STREAM_TYPES[name] = cls
        TYPE_NAMES[cls] = name
        return cls
    return add


@dataclass
class FeatureConfig:
    sample_rate: int = 16000   # audio is resampled to this rate (only when it differs)
    streams: Dict[str, StreamConfig] = field(default_factory=dict)   # name -> stream; names are dir names
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)   # before every stream

    def to_dict(self) -> Dict[str, Any]:
        """The resolved config: every option spelled out, loadable again by `parse_config`."""
        doc: Dict[str, Any] = {"sample_rate": self.sample_rate}
        if self.preprocess.active:   # configs without preprocessing read as they always did
            doc["preprocess"] = self.preprocess.to_dict()
        doc["streams"] = {name: stream_to_dict(s) for name, s in self.streams.items()}
        return doc


# keys that `extract` writes into features.yaml beside the config; ignored when it is read back
DUMP_INFO_KEY = "dump"
MIN_SAMPLE_RATE = 8000   # Hz: telephone speech; below it there is no speech band left to compute features on
STREAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_config(doc: Any, source: str = "feature config") -> FeatureConfig:
    """Check a feature config (the YAML document as a dict) and fill in every default."""
    if not isinstance(doc, dict):
        raise FeatureError(f"{source}: a feature config is a mapping with 'sample_rate' and 'streams'")
    unknown = set(doc) - {"sample_rate", "preprocess", "streams", DUMP_INFO_KEY}
    if unknown:
        raise FeatureError(f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                           "known: sample_rate, preprocess, streams")
    sr = doc.get("sample_rate", FeatureConfig.sample_rate)
    if not isinstance(sr, int) or isinstance(sr, bool) or sr <= 0:
        raise FeatureError(f"{source}: sample_rate must be a positive integer, not {sr!r}")
    if sr < MIN_SAMPLE_RATE:
        raise FeatureError(f"{source}: sample_rate {sr} Hz is below {MIN_SAMPLE_RATE} Hz (telephone speech), the "
                           "lowest rate speech features are computed at; give the rate in Hz, e.g. 16000")
    streams = doc.get("streams")
    if not isinstance(streams, dict) or not streams:
        raise FeatureError(f"{source}: 'streams' must be a non-empty mapping of name -> stream")
    parsed = {}
    for name, spec in streams.items():
        if not isinstance(name, str) or not STREAM_NAME.match(name):
            raise FeatureError(f"{source}: stream name {name!r} must be letters, digits, '_', '.', '-'")
        parsed[name] = parse_stream(spec, sr, f"{source}: streams.{name}")
    for name, stream in parsed.items():
        stream.resolve(parsed, sr, f"{source}: streams.{name}")
    return FeatureConfig(sr, parsed, parse_preprocess(doc.get("preprocess"), sr, f"{source}: preprocess"))


def parse_stream(spec: Any, sample_rate: int, where: str = "stream") -> StreamConfig:
    """One stream spec (`{type: logmel, n_mels: 64, ...}`) -> its checked config dataclass."""
    if isinstance(spec, StreamConfig):
        spec = stream_to_dict(spec)
    if not isinstance(spec, dict) or "type" not in spec:
        raise FeatureError(f"{where}: a stream is a mapping with a 'type' ({', '.join(STREAM_TYPES)})")
    kind = spec["type"]
    if kind not in STREAM_TYPES:
        raise FeatureError(f"{where}: unknown stream type {kind!r}; known: {', '.join(STREAM_TYPES)}")
    cls = STREAM_TYPES[kind]
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = set(spec) - set(names) - {"type"}
    if unknown:
        raise FeatureError(f"{where}: unknown option(s) {', '.join(sorted(map(str, unknown)))} for type "
                           f"'{kind}'; known: {', '.join(names)}")
    values = {}
    for name in names:
        if name not in spec:
            continue
        if name == "parts":
            parts = spec["parts"]
            if not isinstance(parts, list):
                raise FeatureError(f"{where}: parts must be a list of streams")
            values[name] = [parse_stream(p, sample_rate, f"{where}.parts[{i}]") for i, p in enumerate(parts)]
        else:
            values[name] = _typed(spec[name], hints[name], f"{where}.{name}")
    config = cls(**values)
    config.check(sample_rate, where)
    return config


def stream_to_dict(config: StreamConfig) -> Dict[str, Any]:
    out: Dict[str, Any] = {"type": TYPE_NAMES[type(config)]}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        out[f.name] = [stream_to_dict(p) for p in value] if f.name == "parts" else value
    return out


def _typed(value: Any, hint: Any, where: str) -> Any:
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Union and type(None) in args:
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is float and is_number:
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (bool, str) and isinstance(value, hint):
        return value
    raise FeatureError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


# --- building -----------------------------------------------------------------------------------

class BuildContext:
    """What a config's `build` may use: the sample rate, the feature config's streams by name, and modules
    that several streams share (`shared`), so that a batch computes each spectrogram once."""

    def __init__(self, sample_rate: int, streams: Dict[str, StreamConfig]):
        self.sample_rate, self.streams = sample_rate, streams
        self._shared: Dict[Hashable, Any] = {}

    def shared(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The module made for `key` by the first stream that asked for it."""
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    def build(self, config: StreamConfig) -> Stream:
        """`config`'s module, with the deltas it asks for appended."""
        stream = config.build(self)
        if not config.deltas:
            return stream
        return WithDeltas(stream, config.deltas, config.delta_width, config.delta_axis, config.delta_chain)


def build_frontend(stream_config, sample_rate: int) -> Stream:
    """A stream module from its config (a dict as in YAML, or a parsed config)."""
    return BuildContext(sample_rate, {}).build(parse_stream(stream_config, sample_rate))


def build_frontends(config: FeatureConfig) -> Dict[str, Stream]:
    """Every stream of a feature config; streams with the same STFT / filterbank share one module,
    so a batch computes each spectrogram once."""
    ctx = BuildContext(config.sample_rate, config.streams)
    return {name: ctx.build(s) for name, s in config.streams.items()}
