"""A packed model's description checked on reading: sertk-model.json against its schema
(sertk.inference.pack_schema), its config as training checks a config (an older pack's missing keys at
their defaults), its feature config as sertk.features does, its sections against each other
(`check_meta`); and the weights against the model the description builds (`check_fit`). Every problem is one
PackError naming the file and the key.
"""
import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from sertk import __version__
from sertk.errors import FeatureError, SertkError
from sertk.features.streams import DUMP_INFO_KEY, build_frontends, parse_config
from sertk.inference.pack_schema import META_SCHEMA, STREAM_STATS, is_int
from sertk.inference.packed import (FORMAT, FORMAT_VERSION, LAYOUT_KEYS, META_MEMBER, WEIGHTS_MEMBER, PackedModel,
                                    PackError)
from sertk.models.layer_sum import with_layer_sums
from sertk.experiment import build_configured_model, checked_config


def _bad(path: Path, key: str, wants: str, value: Any = None, missing: bool = False) -> PackError:
    if missing:
        return PackError(f"{path}: {META_MEMBER}: '{key}' is missing")
    shown = json.dumps(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return PackError(f"{path}: {META_MEMBER}: '{key}' must be {wants}, not {shown}")


def _refuse(found: Optional[Tuple[str, str]], doc: Any, path: Path) -> None:
    """A schema's problem (key, what it must be) as a PackError; nothing when there is none."""
    if found:
        key, wants = found
        raise _bad(path, key, wants, missing=True) if wants == "present" else _bad(path, key, wants, _at(doc, key))


def _at(doc: Any, key: str) -> Any:
    node = doc
    for part in key.replace("[", ".[").split("."):
        if part.startswith("["):
            node = node[int(part[1:-1])]
        elif part:
            node = node[part]
    return node


def check_meta(meta: Any, path: Path) -> Dict[str, Any]:
    """`meta` (the parsed sertk-model.json) checked against META_SCHEMA, its config as training checks a config
    (sertk.experiment.checked_config: an older pack's missing keys at their defaults), its feature config as
    sertk.features does, and its sections against each other; one PackError naming the key otherwise. Returns
    the checked description (the config resolved)."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PackError(f"{path}: {META_MEMBER} is not a sertk model description")
    version = meta.get("format_version")
    if is_int(version) and version > FORMAT_VERSION:
        raise PackError(f"{path}: packed with a newer sertk (format {version}, sertk "
                        f"{meta.get('sertk_version')}); this sertk ({__version__}) reads format {FORMAT_VERSION}")
    _refuse(META_SCHEMA.problem(meta, ""), meta, path)
    meta = dict(meta)
    meta["config"] = _checked_config(meta["config"], path)
    if meta["config"]["model"]["name"] != meta["model"]:
        raise _bad(path, "model", f"the model of config.model.name ({meta['config']['model']['name']!r})",
                   meta["model"])
    features = {k: v for k, v in meta["features"].items() if k != DUMP_INFO_KEY}
    try:
        cfg = parse_config(features, f"{path}: {META_MEMBER}: features")
    except FeatureError as e:
        raise PackError(str(e)) from None
    layout = meta["features"][DUMP_INFO_KEY]
    for key in LAYOUT_KEYS:
        stray = sorted(set(layout.get(key) or {}) - set(cfg.streams))
        if stray:
            raise _bad(path, f"features.{DUMP_INFO_KEY}.{key}.{stray[0]}", "a stream of features.streams", stray[0])
    for stream, shift in layout["frame_shift"].items():
        if (layout.get("levels") or {}).get(stream, "frame") == "frame" and not shift > 0:
            raise _bad(path, f"features.{DUMP_INFO_KEY}.frame_shift.{stream}", "a number > 0 (seconds per frame)",
                       shift)
    for stream, window in (layout.get("windows") or {}).items():
        if window["grid"] not in layout["frame_shift"]:
            raise _bad(path, f"features.{DUMP_INFO_KEY}.windows.{stream}.grid", "a stream with a frame_shift",
                       window["grid"])
    _check_normalization(meta["normalization"], layout, path)
    return meta


def _checked_config(config: Dict[str, Any], path: Path) -> Dict[str, Any]:
    where = f"{path}: {META_MEMBER}: config"
    try:
        return checked_config(config)
    except SertkError as e:
        raise PackError(f"{where}: {e}") from None


def _check_normalization(norm: Dict[str, Any], layout: Dict[str, Any], path: Path) -> None:
    for stream, state in norm["streams"].items():
        key = f"normalization.streams.{stream}"
        if state["mode"] != norm["mode"]:
            raise _bad(path, f"{key}.mode", f"normalization.mode ({norm['mode']!r})", state["mode"])
        _refuse(STREAM_STATS[norm["mode"]].problem(state, key), {"normalization": norm}, path)
        if stream not in layout["dims"]:
            raise _bad(path, key, "statistics of a stream of features.dump.dims", stream)
        stats, at = ((state.get("fallback"), f"{key}.fallback") if norm["mode"] == "speaker"
                     else (state, key) if norm["mode"] == "global" else (None, key))
        if stats is not None and (stats["mean"] is None) != (stats["var"] is None):
            raise _bad(path, f"{at}.mean", "null exactly when var is null", stats["mean"])
        if stats is not None and stats["mean"] is not None:
            dims = layout["dims"][stream]
            for name in ("mean", "var"):
                if len(stats[name]) != dims:
                    raise _bad(path, f"{at}.{name}", f"{dims} numbers (features.dump.dims.{stream})", stats[name])


def check_fit(packed: PackedModel) -> None:
    """The model the description builds takes the weights (every tensor, of its shape), reads streams the
    description has a frame layout, normalisation and features of that width for; a PackError otherwise."""
    path, meta = packed.path or Path("packed model"), packed.meta
    config, layout = meta["config"], meta["features"][DUMP_INFO_KEY]
    where = f"{path}: {META_MEMBER}"
    try:
        model = build_configured_model(config, len(meta["classes"]))
    except SertkError as e:
        raise PackError(f"{where}: config.model: {e}") from None
    except (ValueError, TypeError, RuntimeError) as e:   # options torch refuses (the config checks let through)
        raise PackError(f"{where}: config.model: the model cannot be built ({_first_line(e)})") from None
    streams = list(model.streams)
    missing = [s for s in streams if s not in layout["frame_shift"]]
    if missing:
        raise PackError(f"{where}: 'features.{DUMP_INFO_KEY}.frame_shift' has no stream {missing[0]}, which the "
                        f"model reads")
    if meta["normalization"]["mode"] != "speaker":
        missing = [s for s in streams if s not in meta["normalization"]["streams"]]
        if missing:
            raise PackError(f"{where}: 'normalization.streams' has no statistics for {missing[0]}, which the model "
                            "reads")
    layers = layout.get("layers") or {}
    dims = model.stream_dims   # every model declares it (the SERModel contract)
    for s in streams:
        if s not in layers and s in dims and s in layout["dims"] and dims[s] != layout["dims"][s]:
            raise PackError(f"{where}: 'features.{DUMP_INFO_KEY}.dims.{s}' is {layout['dims'][s]}, but the model "
                            f"of config.model reads {dims[s]} per row")
    _check_frontend_dims(packed, streams, where)
    model = with_layer_sums(model, {s: int(n) for s, n in layers.items() if s in streams})
    expected = model.state_dict()
    weights = packed.weights
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise PackError(f"{path}: {WEIGHTS_MEMBER} is not a state dict of tensors")
    unknown = sorted(set(weights) - set(expected))
    absent = sorted(set(expected) - set(weights))
    shapes = [k for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)]
    if unknown or absent or shapes:
        detail = (f"no tensor {absent[0]}" if absent else f"a tensor {unknown[0]} the model does not have" if unknown
                  else f"{shapes[0]} is {tuple(weights[shapes[0]].shape)}, the model's "
                       f"{tuple(expected[shapes[0]].shape)}")
        raise PackError(f"{path}: {WEIGHTS_MEMBER} does not fit the model {META_MEMBER} describes (config.model, "
                        f"{len(meta['classes'])} classes): {detail}")
    broken = non_finite_tensor(weights)
    if broken:
        raise PackError(f"{path}: {WEIGHTS_MEMBER}: tensor {broken} holds NaN or Inf; the model cannot decide")


def non_finite_tensor(weights: Dict[str, torch.Tensor]) -> Optional[str]:
    """The name of the first floating-point tensor holding NaN or Inf (a diverged or damaged model), else None."""
    return next((k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)


def _check_frontend_dims(packed: PackedModel, streams: List[str], where: str) -> None:
    """The width the feature config's own frontends give each stream the model reads is the recorded one
    (streams of types built elsewhere, e.g. encoders, are left to their frontends: building them is costly)."""
    cfg = parse_config(packed.feature_config)
    own = {s: spec for s, spec in cfg.streams.items() if s in streams and not _built_elsewhere(spec)}
    if not own:
        return
    built = build_frontends(dataclasses.replace(cfg, streams=own))
    recorded = packed.layout_info["dims"]
    for s, frontend in built.items():
        if recorded.get(s) != frontend.dim:
            raise PackError(f"{where}: 'features.{DUMP_INFO_KEY}.dims.{s}' is {recorded.get(s)}, but "
                            f"features.streams.{s} gives {frontend.dim} per frame")


def _built_elsewhere(spec) -> bool:
    """Computed by another tool (openSMILE) or a pretrained encoder: not a torch stream (sertk.features.streams.base)."""
    parts = getattr(spec, "parts", None) or []
    return not spec.concatenable or any(_built_elsewhere(p) for p in parts)


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0][:200]}" if text else e.__class__.__name__
