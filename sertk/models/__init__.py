"""Model registry (timm style): `build_model(name, num_classes, **cfg)`.

Each model file holds one family: a `SERModel` (sertk.models.base: the contract, with what every
model declares, streams, stream_dims, fixed_frames and so on, and the hook for its own auxiliary
losses) registered with `@register(name)`. The files in this package are imported on first use of
the registry, so `import sertk` stays light and a new model is its file alone.
"""
import dataclasses
import importlib
import pkgutil
from typing import Callable, Dict, Type

from sertk.errors import SertkError
from sertk.models.base import Objective, SERModel

__all__ = ["ModelConfigError", "Objective", "SERModel", "available_models", "build_model", "check_choices",
           "check_counts", "check_rates", "make_config", "model_class", "register"]
_REGISTRY: Dict[str, Type[SERModel]] = {}


class ModelConfigError(SertkError):
    """A model name or option that does not exist, or a model given features its options do not fit (another
    width per frame than its input width, more frames than it takes)."""


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


def register(name: str) -> Callable[[Type[SERModel]], Type[SERModel]]:
    def add(cls: Type[SERModel]) -> Type[SERModel]:
        if not (isinstance(cls, type) and issubclass(cls, SERModel)):
            raise TypeError(f"model '{name}': {getattr(cls, '__name__', cls)} must subclass "
                            "sertk.models.base.SERModel")
        if not dataclasses.is_dataclass(getattr(cls, "Config", None)):
            raise TypeError(f"model '{name}': {cls.__name__} needs a Config dataclass of its options")
        if name in _REGISTRY:
            raise RuntimeError(f"model '{name}' registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return add


def _load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def available_models():
    _load_all()
    return sorted(_REGISTRY)


def model_class(name: str) -> Type[SERModel]:
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


def build_model(name: str, num_classes: int, **cfg) -> SERModel:
    return model_class(name)(num_classes, make_config(name, **cfg))
