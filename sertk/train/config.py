"""Experiment configs: one YAML says everything; any key can be overridden as `key.sub=value`.

The resolved config is the defaults below, then the model's own Config defaults under `model`,
then the YAML file, then the command-line overrides. Every key must exist in the defaults, so a
typo is an error rather than a silently ignored setting.

`grid:` maps dotted config keys to lists of values tried on dev (sertk.train.grid): every key is
checked as `--set` checks it and every value against the key's type when the config is loaded, so
a typo fails before any feature is read. `--grid KEY=[v1,v2]` (a scalar: one value) replaces or adds
a key; `--grid KEY=` (nothing after '=') takes it out.

Every value is checked when the config is loaded, in one place: `CHECKS` (key -> what it takes: type,
choices, range, whether null means something), the model's options by their declared types and by
what their names mean (`model_option_check`: sizes >= 1, rates in [0, 1)), and `COMBINATIONS` (rules
over several keys). So `--set optim.lr=-1`, `--set train.epochs=` or `--set scheduler.name=bogus` is
one line before any feature is read or any file written; `check_config` checks a resolved config the
same way (a packed model's, sertk.inference.pack).
"""
import copy
import dataclasses
import itertools
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import yaml

from sertk.decode import VOTING_RULES
from sertk.errors import FeatureError, SertkError
from sertk.features import CMVN_MODES
from sertk.features.segments import TAILS, TRAIN_WINDOWS
from sertk.yamlutil import load_yaml, read_yaml_file


class ConfigError(SertkError):
    """A config file or override that cannot be applied."""


class FeatureSettingError(ConfigError, FeatureError):
    """A `features.*` setting out of range: a config error, and one the feature code refuses too."""


DEFAULTS: Dict[str, Any] = {
    "model": {"name": None},
    # tag: the feature config conf/features/<tag>.yaml and dump/<tag>/ the recipe uses;
    # cmvn: global | speaker | none, global statistics from the fold's train part only;
    # clip: normalised values are cut to +-clip (null: not cut); speaker_min_rows: cmvn speaker gives a speaker
    # with fewer rows (frames; vectors of pooled streams) the training data's statistics (sertk.features.cmvn)
    "features": {"tag": "logmel64", "cmvn": "global", "clip": None, "speaker_min_rows": 10},
    # seconds; length null: no windows, one segment per utterance; train_hop defaults to hop;
    # tail: end (a last window aligned to the end) | drop; train_windows: all | center (training reads only
    # the centre window of a longer utterance; dev and decoding read all)
    "segments": {"length": 2.0, "hop": 1.0, "train_hop": None, "tail": "end", "train_windows": "all"},
    # select: the dev metric that picks best.pt and drives early stopping: ua | wa_ua (the mean of WA and UA);
    # bucket: batches of segments of similar length (whole utterances pad less), still shuffled;
    # batch_size: the whole batch, cut into one piece per process under torchrun (sertk.train.distributed);
    # num_workers: data-loader processes, null: 0 on the CPU, up to 4 per process on a GPU (pinned memory);
    # sync_batchnorm: under torchrun, BatchNorm statistics of the whole batch over all processes;
    # amp: auto (bfloat16 autocast of the training step where the hardware computes bf16 natively: a GPU, or a
    # CPU with AMX / AVX512-BF16) | true (bf16 anywhere) | false (float32); see sertk.train.precision
    "train": {"epochs": 40, "batch_size": 32, "seed": 0, "patience": 10, "min_epochs": 1,
              "class_weighted": True, "utterance_weighted": False, "grad_clip": 5.0, "amp": "auto", "select": "ua",
              "bucket": False, "num_workers": None, "sync_batchnorm": True},
    # multi-task loss (each model's objective hook, SERModel.objective; SD-CAFF's in sertk/models/sd_caff.py):
    # (1 - gender_weight) (CE + center_weight center) on emotion
    # + gender_weight (CE + center_weight center) on utt2gen; center_lr: SD-CAFF's center gradient scale;
    # reconstruction_weight r: (1 - r) x that + r x the MSE of the model's rebuilt masked frames (ESERNet)
    "loss": {"gender_weight": 0.0, "center_weight": 0.0, "center_lr": None, "reconstruction_weight": 0.0},
    # betas: Adam / AdamW betas, null: torch's (0.9, 0.999)
    "optim": {"name": "adam", "lr": 1.0e-3, "weight_decay": 0.0, "betas": None},
    # step: x gamma every step_size epochs; multistep: x gamma after each epoch in milestones;
    # exponential: x gamma after every epoch; cosine: to 0 over the epochs; warmup_cosine: linear warm-up
    # over warmup_epochs, then cosine to lr x min_lr_ratio at the last epoch
    "scheduler": {"name": "none", "step_size": 10, "gamma": 0.5, "milestones": [], "factor": 0.5, "patience": 3,
                  "warmup_epochs": 0, "min_lr_ratio": 0.0},
    "augment": {"specaugment": False, "time_masks": 2, "time_width": 20, "freq_masks": 2, "freq_width": 8},
    "decode": {"rule": "mean"},
    # dotted config key -> the values to try, e.g. {"optim.lr": [1.0e-3, 1.0e-4]}: every combination is
    # trained and the best on dev (train.select) is kept (sertk.train.grid); {}: one plain run
    "grid": {},
}
# keys a grid may not vary: each model has its own options, and all points read the one feature dump
GRID_FIXED = {"grid": "it is the grid, not a setting",
              "model.name": "each model has its own options; run one experiment per model",
              "features.tag": "all points read the one feature dump given with --feats; run one experiment per "
                              "feature set"}


# --- what every setting takes: one table, checked when a config is loaded -------------------------

@dataclass(frozen=True)
class Check:
    """What a setting takes: `ok(value)` for a value of the default's type (the type is checked first),
    `wants` says it in messages ("an integer >= 1"); `null`: what null means where null is allowed
    (`null_first`: said before the values, "null or two numbers ...")."""
    wants: str
    ok: Callable[[Any], bool] = lambda v: True
    null: Optional[str] = None
    null_first: bool = False


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(low: Optional[int] = None, null: Optional[str] = None, high: Optional[int] = None) -> Check:
    """An integer >= low (and < high)."""
    wants = (f"an integer from {low} to {high - 1}" if high is not None else
             "an integer" + (f" >= {low}" if low is not None else ""))
    return Check(wants, lambda v: _is_int(v) and (low is None or v >= low) and (high is None or v < high), null)


def number(wants: str, ok: Callable[[float], bool] = lambda v: True, null: Optional[str] = None) -> Check:
    """A finite number (an int counts) for which `ok` holds."""
    return Check(wants, lambda v: _is_number(v) and ok(v), null)


def positive(wants: str = "a number > 0", null: Optional[str] = None) -> Check:
    return number(wants, lambda v: v > 0, null)


def interval(low: float, high: float, high_closed: bool = False) -> Check:
    """A number in [low, high) ([low, high] with high_closed)."""
    return number(f"in [{low:g}, {high:g}{']' if high_closed else ')'}",
                  lambda v: low <= v <= high if high_closed else low <= v < high)


def one_of(choices: Iterable[str]) -> Check:
    choices = tuple(choices)
    return Check(f"one of {', '.join(choices)}", lambda v: v in choices)


def folder_name() -> Check:
    """A name that is also a folder's (dump/<tag>): no spaces, no '/'."""
    return Check("a non-empty name without spaces or '/'", lambda v: isinstance(v, str) and bool(v) and
                 not any(c.isspace() or c in "/\\" for c in v) and v not in (".", ".."))


FLAG = Check("true or false", lambda v: isinstance(v, bool))
SEVERAL_TYPES = ("train.amp",)       # a word or a flag: CHECKS alone says what the key takes
SELECT_METRICS = ("ua", "wa_ua")     # sertk.train.trainer.SELECT: the dev score that picks best.pt
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "step", "multistep", "exponential", "plateau", "cosine", "warmup_cosine")

CHECKS: Dict[str, Check] = {
    "features.tag": folder_name(),
    "features.cmvn": one_of(CMVN_MODES),
    "features.clip": positive("a positive number of standard deviations", null="not cut"),
    "features.speaker_min_rows": integer(1),
    "segments.length": positive("a number of seconds > 0", null="no windows, one segment per utterance"),
    "segments.hop": positive("a number of seconds > 0"),
    "segments.train_hop": positive("a number of seconds > 0", null="segments.hop"),
    "segments.tail": one_of(TAILS),
    "segments.train_windows": one_of(TRAIN_WINDOWS),
    "train.epochs": integer(1),
    "train.batch_size": integer(1),
    "train.seed": integer(0, high=2 ** 32),
    "train.patience": integer(1),
    "train.min_epochs": integer(0),
    "train.class_weighted": FLAG,
    "train.utterance_weighted": FLAG,
    "train.grad_clip": number("a number >= 0 (0: no clipping)", lambda v: v >= 0, null="no clipping"),
    "train.amp": Check("auto, true or false", lambda v: v == "auto" or isinstance(v, bool)),
    "train.select": one_of(SELECT_METRICS),
    "train.bucket": FLAG,
    "train.num_workers": integer(0, null="auto"),
    "train.sync_batchnorm": FLAG,
    "loss.gender_weight": interval(0, 1),
    "loss.center_weight": number("a number >= 0", lambda v: v >= 0),
    "loss.center_lr": positive(null="the optimizer's rate"),
    "loss.reconstruction_weight": interval(0, 1),
    "optim.name": one_of(OPTIMIZERS),
    "optim.lr": positive(),
    "optim.weight_decay": number("a number >= 0", lambda v: v >= 0),
    "optim.betas": Check("two numbers in [0, 1) for adam or adamw",
                         lambda v: isinstance(v, list) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v),
                         null="torch's", null_first=True),
    "scheduler.name": one_of(SCHEDULERS),
    "scheduler.step_size": integer(1),
    "scheduler.gamma": positive(),
    "scheduler.milestones": Check("a list of epochs >= 1", lambda v: isinstance(v, list) and
                                  all(_is_int(m) and m >= 1 for m in v)),
    "scheduler.factor": number("in (0, 1)", lambda v: 0 < v < 1),
    "scheduler.patience": integer(0),
    "scheduler.warmup_epochs": integer(0),
    "scheduler.min_lr_ratio": number("a number"),   # its range: COMBINATIONS, with warmup_epochs
    "augment.specaugment": FLAG,
    "augment.time_masks": integer(0),
    "augment.time_width": integer(0),
    "augment.freq_masks": integer(0),
    "augment.freq_width": integer(0),
    "decode.rule": one_of(VOTING_RULES),
}


def _warmup(c: Dict[str, Any]) -> Optional[str]:
    s = c["scheduler"]
    if not 0.0 <= s["min_lr_ratio"] <= 1.0:   # the wording sertk.train.trainer.warmup_cosine uses too
        return (f"scheduler.warmup_epochs must be an integer >= 0 and min_lr_ratio in [0, 1] "
                f"(got {s['warmup_epochs']}, {s['min_lr_ratio']})")
    return None


def _milestones(c: Dict[str, Any]) -> Optional[str]:
    s = c["scheduler"]
    if s["name"] == "multistep" and not s["milestones"]:
        return f"scheduler.milestones must be a list of epochs >= 1 for multistep, not {s['milestones']!r}"
    return None


def _betas(c: Dict[str, Any]) -> Optional[str]:
    o = c["optim"]
    if o["betas"] is not None and o["name"] == "sgd":
        return (f"optim.betas must be null or two numbers in [0, 1) for adam or adamw, not {o['betas']!r} "
                "(optim.name sgd takes none)")
    return None


def _center_lr(c: Dict[str, Any]) -> Optional[str]:
    if c["loss"]["center_lr"] is not None and c["loss"]["center_weight"] <= 0:
        return (f"loss.center_lr {c['loss']['center_lr']} scales the center-loss gradients, so it needs "
                "loss.center_weight > 0 (or center_lr null)")
    return None


def _train_hop(c: Dict[str, Any]) -> Optional[str]:
    if c["segments"]["length"] is None and c["segments"]["train_hop"] is not None:
        return (f"segments.train_hop {c['segments']['train_hop']} needs windows: segments.length is null "
                "(one segment per utterance); set train_hop to null")
    return None


# rules over several keys: the keys each reads, and a function of the config giving the message of a broken rule
COMBINATIONS: List[Tuple[Tuple[str, ...], Callable[[Dict[str, Any]], Optional[str]]]] = [
    (("scheduler.warmup_epochs", "scheduler.min_lr_ratio"), _warmup),
    (("scheduler.name", "scheduler.milestones"), _milestones),
    (("optim.name", "optim.betas"), _betas),
    (("loss.center_lr", "loss.center_weight"), _center_lr),
    (("segments.length", "segments.train_hop"), _train_hop),
]

# model options, checked by their declared types and what their names mean: integers are sizes, counts and
# depths (>= 1) but for these floors; an option ending in a rate's name is a probability in [0, 1)
MODEL_INT_FLOORS = {"word_tokens": 0, "input_projection": 0, "center_dim": 0, "first_padding": 0, "stream_deltas": 0}
MODEL_INDEXES = ("layer",)           # may be negative (from the end); the model checks the range
MODEL_RATES = ("dropout", "drop_path", "mask_rate", "drop_rate")
MODEL_POSITIVE = ("ffn_ratio", "frame_ms", "merge_ms")


def model_option_check(option: str, hint: Any) -> Check:
    """What model option `option`, declared with type `hint` in the model's Config, takes."""
    args = typing.get_args(hint)
    null = "the model's choice" if typing.get_origin(hint) is typing.Union and type(None) in args else None
    if null:
        hint = typing.Union[tuple(a for a in args if a is not type(None))] if len(args) > 2 else \
            next(a for a in args if a is not type(None))
    is_list = typing.get_origin(hint) in (list, List)
    item = typing.get_args(hint)[0] if is_list else hint
    if item is int and option not in MODEL_INDEXES:
        floor = MODEL_INT_FLOORS.get(option, 1)
        one = integer(floor)
    elif item is float and option.endswith(MODEL_RATES):
        one = interval(0, 1)
    elif item is float and option in MODEL_POSITIVE:
        one = positive()
    else:
        one = Check(_type_text(item), lambda v: _fits(v, item))
    if not is_list:
        return Check(one.wants, one.ok, null)
    return Check(f"a list, each item {one.wants}", lambda v: isinstance(v, list) and all(one.ok(x) for x in v), null)


def _fits(value: Any, hint: Any) -> bool:
    """`value` is of the declared type `hint` (int, float, str, bool, lists and unions of them)."""
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return any(_fits(value, a) for a in typing.get_args(hint))
    if origin in (list, List):
        return isinstance(value, list) and all(_fits(v, typing.get_args(hint)[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return _is_number(value)
    if hint is str:
        return isinstance(value, str) and bool(value)
    return True   # a type this table does not know: the model checks it


def _type_text(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Union:
        return " or ".join(_type_text(a) for a in typing.get_args(hint))
    return {int: "an integer", float: "a number", str: "a non-empty string", bool: "true or false",
            type(None): "null"}.get(hint, str(hint))


def make_config(name: str, **options: Any) -> Any:
    """The model's Config (sertk.models.make_config), imported here only when a model is resolved: the models
    import torch, which `sertk config get` of a non-model key does without."""
    from sertk.models import make_config as make
    return make(name, **options)


def _model_checks(model: str) -> Dict[str, Check]:
    from sertk.models import model_class
    cls = model_class(model).Config
    hints = typing.get_type_hints(cls)
    return {f"model.{f.name}": model_option_check(f.name, hints[f.name]) for f in dataclasses.fields(cls)}


def _shown(value: Any) -> str:
    return "null" if value is None else repr(value)


def check_value(key: str, check: Check, value: Any) -> None:
    """Raise ConfigError (FeatureSettingError for features.*) when `value` is not what `check` takes."""
    if value is None:
        if check.null is not None:
            return
    elif check.ok(value):
        return
    error = FeatureSettingError if key.startswith("features.") else ConfigError
    raise error(f"{key} must be {wants_text(check)}, not {_shown(value)}")


def wants_text(check: Check) -> str:
    """What a setting takes, in words: its values, and null where null means something."""
    if check.null is None:
        return check.wants
    if check.null_first:
        return f"null or {check.wants}"
    return f"{check.wants} or null ({check.null})"


def check_config(config: Any, skip: Iterable[str] = (), models: bool = True) -> Dict[str, Any]:
    """`config`, a resolved config (every section and key present, e.g. after `with_new_defaults`), checked:
    its sections, every key known, every value of its default's type and as `CHECKS` (or, for model options,
    `model_option_check`) says, and the `COMBINATIONS`; an int where a float is expected becomes a float.
    Keys in `skip` (and the rules reading them) are left out: a grid sets them per point. `models` False:
    the model's options are left as given, unchecked (no model is imported). Returns the config."""
    skip = set(skip)
    if not isinstance(config, dict):
        raise ConfigError(f"a config must be a mapping of sections, not {_shown(config)}")
    unknown = sorted(set(config) - set(DEFAULTS), key=str)
    if unknown:
        raise ConfigError(f"unknown config section '{unknown[0]}' (known: {', '.join(sorted(DEFAULTS))})")
    for section in DEFAULTS:
        if not isinstance(config.get(section), dict):
            what = "missing" if section not in config else f"not {_shown(config[section])}"
            raise ConfigError(f"config section '{section}' must be a mapping of its keys, {what}")
    model = config["model"].get("name")
    if not isinstance(model, str) or not model:
        raise ConfigError(f"model.name must be a model's name, not {_shown(model)}")
    checks = {**CHECKS, **(_model_checks(model) if models else {})}
    defaults = {**DEFAULTS, "model": {"name": model, **dataclasses.asdict(make_config(model))}} if models else DEFAULTS
    for section, keys in defaults.items():
        if section == "grid" or section == "model" and not models:
            continue
        node = config[section]
        unknown = sorted(set(node) - set(keys), key=str)
        if unknown:
            raise ConfigError(f"unknown config key '{section}.{unknown[0]}' (known: {', '.join(sorted(keys))})")
        for key, default in keys.items():
            dotted = f"{section}.{key}"
            if dotted in skip or dotted == "model.name":
                continue
            if key not in node:
                raise ConfigError(f"config key '{dotted}' is missing")
            node[key] = _checked(dotted, default, node[key])
            check_value(dotted, checks[dotted], node[key])
    for keys, rule in COMBINATIONS:
        if not skip.intersection(keys) and (models or not any(k.startswith("model.") for k in keys)):
            message = rule(config)
            if message:
                raise ConfigError(message)
    return config


def load_config(path: Optional[Path], overrides: Iterable[str] = (), grid: Iterable[str] = (),
                models: bool = True) -> Dict[str, Any]:
    """The resolved config of the YAML at `path` with `overrides` ("a.b=value") applied, and its grid with
    the `grid` entries ("a.b=[v1, v2]"; "a.b=" takes a.b out) applied in turn. `models` False: everything
    but the model's options resolved and checked, without importing the model (nor torch): the model
    section holds only what the file and overrides say (for `sertk config get` of a non-model key)."""
    user = _read_user_config(Path(path)) if path is not None else {}
    overrides = [_parse_override(o) for o in overrides]
    grid_entries = [_parse_override(g, "--grid", "key.sub=[v1, v2]", empty=True) for g in grid]
    user_model = user.get("model")
    if user_model is not None and not isinstance(user_model, dict):
        raise ConfigError(f"{path}: model must be a mapping of the model's name and options, not {user_model!r}")
    name = dict(overrides).get("model.name") or (user_model or {}).get("name")
    if not name:
        raise ConfigError(f"{path or 'config'}: model.name is not set")
    if not isinstance(name, str):
        raise ConfigError(f"{path or 'config'}: model.name must be a model's name, not {name!r}")
    config = copy.deepcopy(DEFAULTS)
    if models:
        config["model"] = {"name": name, **dataclasses.asdict(make_config(name))}
    else:   # the model's options as the file and the overrides give them, unchecked
        config["model"] = {"name": name, **(user_model or {}),
                           **{k[len("model."):]: v for k, v in overrides if k.startswith("model.") and "." not in
                              k[len("model."):]}}
    user = dict(user)
    user_grid = user.pop("grid", {})
    if user_grid is None:
        user_grid = {}
    if not isinstance(user_grid, dict):
        raise ConfigError(f"{path}: grid must be a mapping of config keys to lists of values, not {user_grid!r}")
    _merge(config, user, where=str(path))
    config["grid"] = dict(user_grid)
    for key, value in overrides:
        set_key(config, key, value)
    grid_where = f"{path}: grid" if user_grid and path is not None else "grid"
    for key, value in grid_entries:
        if value is _REMOVE:
            config["grid"].pop(key, None)
        else:
            config["grid"][key] = value if isinstance(value, list) else [value]
    # every value (those the grid sets: per point, below), before any feature is read or file written
    check_config(config, skip=config["grid"], models=models)
    if not models:
        return config
    make_config(name, **model_options(config))  # validates model options
    config["grid"] = _checked_grid(config, config["grid"], grid_where)
    return config


_REMOVE = object()   # `--grid KEY=`: KEY taken out of the grid


def _checked_grid(config: Dict[str, Any], grid: Any, where: str) -> Dict[str, list]:
    """The grid, every key a setting of `config` that may vary and every value of that setting's type;
    each point's model options are checked too."""
    if not isinstance(grid, dict):
        raise ConfigError(f"{where} must be a mapping of config keys to lists of values, not {grid!r}")
    out: Dict[str, list] = {}
    checks = {**CHECKS, **_model_checks(config["model"]["name"])}
    for key, values in grid.items():
        if not isinstance(key, str):
            raise ConfigError(f"{where}: key {key!r} is not a dotted config key like optim.lr")
        if key in GRID_FIXED or key.startswith("grid."):
            raise ConfigError(f"{where}: {key} cannot vary in a grid ({GRID_FIXED.get(key, GRID_FIXED['grid'])})")
        try:
            current = get_key(config, key)
        except ConfigError:
            parent = key.rpartition(".")[0]
            parent = parent if parent and _has_key(config, parent) else ""
            node = get_key(config, parent) if parent else config
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "none"
            raise ConfigError(f"{where}: unknown config key '{key}' (known{' under ' + parent if parent else ''}: "
                              f"{known})") from None
        if isinstance(current, dict):
            raise ConfigError(f"{where}: {key} is a section; a grid key names one setting, e.g. {key}."
                              f"{next(iter(current), 'key')}")
        if not isinstance(values, list):
            raise ConfigError(f"{where}: {key} must be a list of values, e.g. [{values!r}], not {values!r}")
        if not values:
            raise ConfigError(f"{where}: {key} has no values")
        try:
            checked = [_checked(key, current, v) for v in values]
            for v in checked:
                check_value(key, checks[key], v)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        for i, v in enumerate(checked):
            if v in checked[:i]:
                raise ConfigError(f"{where}: {key} lists {v!r} twice")
        out[key] = checked
    models = [k for k in out if k.startswith("model.")]
    if models:
        for point in grid_points(out):
            options = {**model_options(config), **{k[len("model."):]: v for k, v in point.items() if k in models}}
            try:
                make_config(config["model"]["name"], **options)
            except SertkError as e:
                raise ConfigError(f"{where}: point {point_text(point)}: {e}") from None
    rules = [rule for keys, rule in COMBINATIONS if set(keys) & set(out)]
    for point in grid_points(out) if rules else ():
        config_of_point = point_config(config, point)
        for rule in rules:
            message = rule(config_of_point)
            if message:
                raise ConfigError(f"{where}: point {point_text(point)}: {message}")
    return out


def _has_key(config: Dict[str, Any], dotted: str) -> bool:
    try:
        get_key(config, dotted)
        return True
    except ConfigError:
        return False


def grid_points(grid: Dict[str, list]) -> List[Dict[str, Any]]:
    """Every combination of the grid's values, the last key varying fastest; one empty point for {}."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def point_config(config: Dict[str, Any], point: Dict[str, Any]) -> Dict[str, Any]:
    """The config of one grid point: `config` with the point's values set and the grid emptied."""
    out = copy.deepcopy(config)
    out["grid"] = {}
    for key, value in point.items():
        set_key(out, key, copy.deepcopy(value))
    return out


def point_text(point: Dict[str, Any]) -> str:
    """`a.b=1 c.d=[4, 8]`: a point's values as --set would take them."""
    return " ".join(f"{k}={_value_text(v)}" for k, v in point.items()) or "(no values)"


def _value_text(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10 ** 6).strip().removesuffix("\n...").strip()


def _read_user_config(path: Path, chain: tuple = ()) -> Dict[str, Any]:
    """A config file's sections; `base: <file>` (relative to this file) names a config it changes, so a
    corpus's variant of a shared config says only what differs."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file" + (f" (the base of {chain[-1]})" if chain else ""))
    user = read_yaml_file(path, ConfigError, mapping=False) or {}
    if not isinstance(user, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections")
    base = user.pop("base", None)
    if base is None:
        return user
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be the path of another config file, not {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in chain:
        raise ConfigError(f"{path}: base {base} leads back to itself")
    merged = _read_user_config(base_path, chain + (path.resolve(),))
    _overlay(merged, user)
    return merged


def _overlay(base: Dict[str, Any], user: Dict[str, Any]) -> None:
    for key, value in user.items():
        if isinstance(base.get(key), dict) and isinstance(value, dict):
            _overlay(base[key], value)
        else:
            base[key] = value


def with_new_defaults(config: Dict[str, Any]) -> Dict[str, Any]:
    """A config written before some keys existed, with those keys at their defaults (which is how that
    run behaved), so a run from an older sertk resumes instead of being refused as another config."""
    def fill(node: Dict[str, Any], defaults: Dict[str, Any]) -> Dict[str, Any]:
        out = dict(node)
        for key, value in defaults.items():
            if key not in out:
                out[key] = copy.deepcopy(value)
            elif isinstance(value, dict) and isinstance(out[key], dict):
                out[key] = fill(out[key], value)
        return out
    name = (config.get("model") or {}).get("name")
    model_defaults = {"name": name, **dataclasses.asdict(make_config(name))} if name else {}
    return fill(config, {**DEFAULTS, "model": model_defaults})


def _parse_override(text: str, what: str = "override", form: str = "key.sub=value", empty: bool = False):
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{what} '{text}' is not of the form {form}")
    if empty and not value.strip():
        return key.strip(), _REMOVE
    try:
        return key.strip(), load_yaml(value)
    except yaml.YAMLError:
        raise ConfigError(f"{what} '{text}': the value is not valid YAML") from None


def _merge(base: Dict[str, Any], user: Dict[str, Any], where: str, prefix: str = "") -> None:
    for key, value in user.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(f"{where}: unknown key '{dotted}' (known: {', '.join(sorted(base))})")
        if isinstance(base[key], dict) and isinstance(value, dict):
            _merge(base[key], value, where, dotted + ".")
        else:
            base[key] = _checked(dotted, base[key], value)


def set_key(config: Dict[str, Any], dotted: str, value: Any) -> None:
    if dotted.startswith("grid."):
        raise ConfigError(f"'{dotted}': grid keys are set with --grid KEY=[v1,v2] (or in the config's grid: "
                          "section), not --set")
    node = config
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            known = ", ".join(sorted(node)) if isinstance(node, dict) else "none"
            raise ConfigError(f"unknown config key '{dotted}' (at '{'.'.join(parts[:i + 1])}'; known: {known})")
        if i == len(parts) - 1:
            node[part] = _checked(dotted, node[part], value)
        else:
            node = node[part]


def _checked(key: str, default: Any, value: Any) -> Any:
    """`value` if it has the default's type (an int where a float is expected is fine)."""
    if default is None or value is None or key in SEVERAL_TYPES:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and (isinstance(default, float) or isinstance(value, int))
        value = float(value) if ok and isinstance(default, float) else value
    else:
        ok = isinstance(value, type(default))
    if not ok and isinstance(default, dict):
        raise ConfigError(f"config key '{key}' is a section: it expects a mapping of its keys "
                          f"({', '.join(map(str, default))}), got {value!r}")
    if not ok:
        raise ConfigError(f"config key '{key}' expects a {type(default).__name__} like {default!r}, got {value!r}")
    return value


def get_key(config: Dict[str, Any], dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"unknown config key '{dotted}'")
        node = node[part]
    return node


def model_options(config: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in config["model"].items() if k != "name"}
