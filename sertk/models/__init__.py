"""Model registry (timm style): `build_model(name, num_classes, **cfg)`.

Each model file holds one family: an `nn.Module` whose `Config` dataclass carries the defaults
(the spec's, for the published models), whose `streams` names the feature streams it reads,
`stream_dims` their dims per frame, and `fixed_frames` the segment length in frames it was built
for (None when it takes any length); `vector_streams`, when a model has it, names the streams it
reads as one vector per segment (a segment- or utterance-level stream, e.g. functionals).
`forward(batch)` takes a dict of padded tensors `{stream: [B, T, D] (vector streams [B, D]),
"mask": [B, T] bool}` and returns a dict with `logits` [B, C] (plus any auxiliary outputs its loss
needs).
"""
import dataclasses
import importlib
from typing import Callable, Dict, Type

from torch import nn

from sertk.errors import SertkError

_REGISTRY: Dict[str, Type[nn.Module]] = {}
# model files imported on first use, so `import sertk` stays light
_MODULES = ("crnn", "esernet", "esernet_swin", "mpaf_cnn", "msfpn", "sd_caff", "ssl_probe", "strl_ser")


class ModelConfigError(SertkError):
    """A model name or option that does not exist."""


def check_choices(model: str, cfg, choices: Dict[str, tuple]) -> None:
    """Each option named in `choices` holds one of its allowed values, else a ModelConfigError naming them."""
    for option, allowed in choices.items():
        if getattr(cfg, option) not in allowed:
            raise ModelConfigError(f"{model}: {option} must be one of {', '.join(allowed)}, not "
                                   f"{getattr(cfg, option)!r}")


def check_counts(model: str, cfg, names) -> None:
    """Each option in `names` (a size, a depth, a count) is >= 1, else a ModelConfigError naming it."""
    for name in names:
        if getattr(cfg, name) < 1:
            raise ModelConfigError(f"{model}: {name} must be >= 1, not {getattr(cfg, name)}")


def check_rates(model: str, cfg, names) -> None:
    """Each option in `names` (a dropout or masking rate) is in [0, 1), else a ModelConfigError naming it."""
    for name in names:
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ModelConfigError(f"{model}: {name} must be in [0, 1), not {getattr(cfg, name)}")


def register(name: str) -> Callable[[Type[nn.Module]], Type[nn.Module]]:
    def add(cls: Type[nn.Module]) -> Type[nn.Module]:
        if name in _REGISTRY:
            raise RuntimeError(f"model '{name}' registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return add


def _load_all() -> None:
    for module in _MODULES:
        importlib.import_module(f"sertk.models.{module}")


def available_models():
    _load_all()
    return sorted(_REGISTRY)


def model_class(name: str) -> Type[nn.Module]:
    _load_all()
    if name not in _REGISTRY:
        raise ModelConfigError(f"unknown model '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def make_config(name: str, **cfg):
    """The model's Config with `cfg` applied; unknown options are an error naming them."""
    cls = model_class(name)
    known = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ModelConfigError(f"model '{name}' has no option(s) {unknown}; options: {sorted(known)}")
    return cls.Config(**cfg)


def build_model(name: str, num_classes: int, **cfg) -> nn.Module:
    return model_class(name)(num_classes, make_config(name, **cfg))
