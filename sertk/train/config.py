"""Experiment configs: one YAML says everything; any key can be overridden as `key.sub=value`.

The resolved config is the defaults below, then the model's own Config defaults under `model`,
then the YAML file, then the command-line overrides. Every key must exist in the defaults, so a
typo is an error rather than a silently ignored setting.

`grid:` maps dotted config keys to lists of values tried on dev (sertk.train.grid): every key is
checked as `--set` checks it and every value against the key's type when the config is loaded, so
a typo fails before any feature is read. `--grid KEY=[v1,v2]` (a scalar: one value) replaces or adds
a key; `--grid KEY=` (nothing after '=') takes it out.
"""
import copy
import dataclasses
import itertools
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import yaml

from sertk.errors import SertkError
from sertk.models import make_config
from sertk.yamlutil import load_yaml, read_yaml_file


class ConfigError(SertkError):
    """A config file or override that cannot be applied."""


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
    # sync_batchnorm: under torchrun, BatchNorm statistics of the whole batch over all processes
    "train": {"epochs": 40, "batch_size": 32, "seed": 0, "patience": 10, "min_epochs": 1,
              "class_weighted": True, "utterance_weighted": False, "grad_clip": 5.0, "amp": True, "select": "ua",
              "bucket": False, "num_workers": None, "sync_batchnorm": True},
    # multi-task loss (sertk.train.loss.Objective): (1 - gender_weight) (CE + center_weight center) on emotion
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


def load_config(path: Optional[Path], overrides: Iterable[str] = (), grid: Iterable[str] = ()) -> Dict[str, Any]:
    """The resolved config of the YAML at `path` with `overrides` ("a.b=value") applied, and its grid with
    the `grid` entries ("a.b=[v1, v2]"; "a.b=" takes a.b out) applied in turn."""
    user = _read_user_config(Path(path)) if path is not None else {}
    overrides = [_parse_override(o) for o in overrides]
    grid_entries = [_parse_override(g, "--grid", "key.sub=[v1, v2]", empty=True) for g in grid]
    name = dict(overrides).get("model.name") or (user.get("model") or {}).get("name")
    if not name:
        raise ConfigError(f"{path or 'config'}: model.name is not set")
    config = copy.deepcopy(DEFAULTS)
    config["model"] = {"name": name, **dataclasses.asdict(make_config(name))}
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
    make_config(name, **model_options(config))  # validates model options
    grid_where = f"{path}: grid" if user_grid and path is not None else "grid"
    for key, value in grid_entries:
        if value is _REMOVE:
            config["grid"].pop(key, None)
        else:
            config["grid"][key] = value if isinstance(value, list) else [value]
    config["grid"] = _checked_grid(config, config["grid"], grid_where)
    return config


_REMOVE = object()   # `--grid KEY=`: KEY taken out of the grid


def _checked_grid(config: Dict[str, Any], grid: Any, where: str) -> Dict[str, list]:
    """The grid, every key a setting of `config` that may vary and every value of that setting's type;
    each point's model options are checked too."""
    if not isinstance(grid, dict):
        raise ConfigError(f"{where} must be a mapping of config keys to lists of values, not {grid!r}")
    out: Dict[str, list] = {}
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
    if default is None or value is None:
        return value
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(default, bool) and isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and (isinstance(default, float) or isinstance(value, int))
        value = float(value) if ok and isinstance(default, float) else value
    else:
        ok = isinstance(value, type(default))
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
