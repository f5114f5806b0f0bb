"""Experiment configs: one YAML says everything; any key can be overridden as `key.sub=value`.

The resolved config is the defaults (sertk.config.schema), then the model's own Config defaults under
`model`, then the YAML file (with the files it names as `base:` under it), then the command-line overrides.
Every key must exist in the defaults, so a typo is an error rather than a silently ignored setting.

`grid:` maps dotted config keys to lists of values tried on dev (sertk.train.grid): every key is
checked as `--set` checks it and every value against the key's type when the config is loaded, so
a typo fails before any feature is read. `--grid KEY=[v1,v2]` (a scalar: one value) replaces or adds
a key; `--grid KEY=` (nothing after '=') takes it out.

Every value is checked when the config is loaded, against the tables of sertk.config.schema (`CHECKS`,
`model_option_check`, `COMBINATIONS`). So `--set optim.lr=-1`, `--set train.epochs=` or
`--set scheduler.name=bogus` is one line before any feature is read or any file written; `check_config`
checks a resolved config the same way (a packed model's, sertk.inference.pack_check).
"""
import copy
import dataclasses
import itertools
import typing
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

import yaml

from sertk.errors import SertkError
# ConfigError and DEFAULTS are used here and imported from here by the rest of sertk (trainer, grid, pack)
from sertk.config.schema import (CHECKS, COMBINATIONS, DEFAULTS, GRID_FIXED, SEVERAL_TYPES, Check,
                                       ConfigError, check_value, model_option_check, shown)
from sertk.yamlutil import DuplicateKeyError, load_yaml, read_yaml_file


# the model section's defaults and checks come from the model's own Config, so they live here with the lazy
# import of the models rather than in the torch-free tables of config_schema
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


def check_config(config: Any, skip: Iterable[str] = (), models: bool = True) -> Dict[str, Any]:
    """`config`, a resolved config (every section and key present, e.g. after `with_new_defaults`), checked:
    its sections, every key known, every value of its default's type and as `CHECKS` (or, for model options,
    `model_option_check`) says, and the `COMBINATIONS`; an int where a float is expected becomes a float.
    Keys in `skip` (and the rules reading them) are left out: a grid sets them per point. `models` False:
    the model's options are left as given, unchecked (no model is imported). Returns the config."""
    skip = set(skip)
    if not isinstance(config, dict):
        raise ConfigError(f"a config must be a mapping of sections, not {shown(config)}")
    unknown = sorted(set(config) - set(DEFAULTS), key=str)
    if unknown:
        raise ConfigError(f"unknown config section '{unknown[0]}' (known: {', '.join(sorted(DEFAULTS))})")
    for section in DEFAULTS:
        if not isinstance(config.get(section), dict):
            what = "missing" if section not in config else f"not {shown(config[section])}"
            raise ConfigError(f"config section '{section}' must be a mapping of its keys, {what}")
    model = config["model"].get("name")
    if not isinstance(model, str) or not model:
        raise ConfigError(f"model.name must be a model's name, not {shown(model)}")
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
    for key, _ in overrides:   # a value every point would replace: the grid's values are what trains
        if key in config["grid"]:
            raise ConfigError(f"--set {key}: {key} is in the grid ({config['grid'][key]}), whose values every point "
                              f"trains with; give --grid {key}=[...] instead (or --grid {key}= to take it out first)")
    # every value (those the grid sets: per point, below), before any feature is read or file written
    check_config(config, skip=config["grid"], models=models)
    if models:
        make_config(name, **model_options(config))  # validates model options
    config["grid"] = _checked_grid(config, config["grid"], grid_where, models=models)
    return config


_REMOVE = object()   # `--grid KEY=`: KEY taken out of the grid


def _checked_grid(config: Dict[str, Any], grid: Any, where: str, models: bool = True) -> Dict[str, list]:
    """The grid, every key a setting of `config` that may vary and every value of that setting's type;
    each point's model options are checked too (`models` false: model keys are kept unchecked, so that no
    model, nor torch, is imported: `sertk config get` of a key outside `model.`)."""
    if not isinstance(grid, dict):
        raise ConfigError(f"{where} must be a mapping of config keys to lists of values, not {grid!r}")
    out: Dict[str, list] = {}
    checks = {**CHECKS, **_model_checks(config["model"]["name"])} if models else CHECKS
    for key, values in grid.items():
        if not models and isinstance(key, str) and key.startswith("model."):
            out[key] = values
            continue
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
    model_keys = [k for k in out if k.startswith("model.")] if models else []
    if model_keys:
        for point in grid_points(out):
            options = {**model_options(config), **{k[len("model."):]: v for k, v in point.items() if k in model_keys}}
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
    user = read_yaml_file(path, ConfigError, mapping=False, config=True) or {}
    if not isinstance(user, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections")
    base = user.pop("base", None)
    if base is not None or chain:   # one file of a chain: its keys checked with its own name (errors in a
        _check_own_keys(user, path)  # base were blamed on the file naming it, the merged whole's name)
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


def _check_own_keys(user: Dict[str, Any], path: Path) -> None:
    """The sections of one file of a `base:` chain (not its model's options, nor its grid, which are checked
    once merged) are known keys of the right types: an error names the file that holds the key."""
    own = {k: v for k, v in user.items() if k not in ("model", "grid")}
    try:
        _merge(copy.deepcopy({k: v for k, v in DEFAULTS.items() if k != "model"}), own, where=str(path))
    except ConfigError as e:
        raise ConfigError(str(e) if str(e).startswith(str(path)) else f"{path}: {e}") from None


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
        return key.strip(), load_yaml(value, config=True)
    except DuplicateKeyError as e:
        raise ConfigError(f"{what} '{text}': the value gives key {e.key!r} twice") from None
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
            # a section would be replaced, not merged (but `grid={}` clears the grid, as meant)
            if dotted != "grid" and isinstance(node[part], dict) and isinstance(value, dict):
                raise ConfigError(f"--set {dotted}: {dotted} is a section; set its keys one by one, e.g. --set "
                                  f"{dotted}.{next(iter(value), next(iter(node[part]), 'key'))}=...")
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
