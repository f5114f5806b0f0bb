"""Packed models: one file that holds everything needed to run a trained model on new audio.

A `.sertk` file is a zip archive of two members:

- `sertk-model.json`: the resolved experiment config, the label list (the order of posterior columns),
  the feature config with its frame layout, the normalisation statistics, the protocol card of the fold,
  dev and test metrics, where it came from (exp dir, checkpoint digest, epoch) and the training
  environment;
- `weights.pt`: the dev-selected model weights, a `torch.save`d state dict.

Reading never unpickles arbitrary objects: the JSON is JSON, and the weights load with
`torch.load(weights_only=True)`, which accepts tensors and plain containers only.
"""
import copy
import dataclasses
import datetime
import io
import json
import logging
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from sertk import __version__
from sertk.data.protocols import load_card
from sertk.errors import FeatureError, ProtocolError, SertkError
from sertk.features.cmvn import CMVN_MODES, plain_state
from sertk.features.encoder_cache import encoder_identity
from sertk.features.extract import stream_layout
from sertk.features.storage import CONFIG_FILE, is_feature_dump, read_dump_config
from sertk.features.streams import DUMP_INFO_KEY, build_frontends, parse_config
from sertk.fsutil import atomic_write_bytes, sha256_file
from sertk.results import ENV_FILE, SUMMARY_KEYS, find_fold_dirs, resolve_path
from sertk.score import score_decode_dir
from sertk.train.checkpoint import load_checkpoint
from sertk.yamlutil import read_yaml_file

log = logging.getLogger(__name__)

FORMAT = "sertk-model"
FORMAT_VERSION = 1
META_MEMBER = "sertk-model.json"
WEIGHTS_MEMBER = "weights.pt"
CHECKPOINT = "best.pt"            # the dev-selected checkpoint: what a packed model is made from
DECODE_DIRS = ("decode_test", "decode_dev")
# what a dump's info section says about the frame layout (sertk.features.extract.stream_layout),
# the rest (utterance checksum, counts) describes the training data and is left out
LAYOUT_KEYS = ("dims", "frame_shift", "levels", "frame_window", "windows", "layers")
ENCODER_STREAMS = ("ssl", "ssl_stats")   # stream types that run a pretrained encoder


class PackError(SertkError):
    """A model cannot be packed, or a file is not a packed model sertk can read."""


@dataclass
class PackedModel:
    meta: Dict[str, Any]                 # everything but the weights (see the module docstring)
    weights: Dict[str, torch.Tensor]
    path: Optional[Path] = None

    @property
    def config(self) -> Dict[str, Any]:
        return self.meta["config"]

    @property
    def classes(self) -> List[str]:
        return list(self.meta["classes"])

    @property
    def feature_config(self) -> Dict[str, Any]:
        """The feature config (loadable by sertk.features.streams.parse_config), without the layout."""
        return {k: v for k, v in self.meta["features"].items() if k != DUMP_INFO_KEY}

    @property
    def layout_info(self) -> Dict[str, Any]:
        return self.meta["features"][DUMP_INFO_KEY]

    @property
    def normalization(self) -> Dict[str, Any]:
        return self.meta["normalization"]


# --- packing ------------------------------------------------------------------------------------

def pack_experiment(exp_dir: Path, out: Path, feats_dir: Optional[Path] = None) -> str:
    """Pack the dev-selected model of one fold's exp dir into `out`; a one-line summary.

    The feature dump (for its config and frame layout) is `feats_dir`, else the one the fold's decode
    dirs name. An `out` already packed from the same checkpoint is left alone.
    """
    exp_dir, out = Path(exp_dir), Path(out)
    ckpt_path = exp_dir / CHECKPOINT
    if not ckpt_path.is_file():
        folds = find_fold_dirs(exp_dir) if exp_dir.is_dir() else {}
        if folds:
            raise PackError(f"{exp_dir} holds {len(folds)} fold(s); pack one fold's model, "
                            f"e.g. {exp_dir / ('fold%d' % next(iter(folds)))}")
        raise PackError(f"{exp_dir}: no {CHECKPOINT}; train the model first (sertk train / run.sh stage 3)")
    digest = sha256_file(ckpt_path)
    if out.is_file():
        try:
            if read_meta(out)["source"]["checkpoint_sha256"] == digest:
                return f"{out}: already packed from this {CHECKPOINT}; skipping"
        except (PackError, KeyError, TypeError):
            pass   # not a pack of ours, or damaged: replaced below
    ckpt = load_checkpoint(ckpt_path)
    decodes = _decode_infos(exp_dir)
    dump_dir = _dump_dir(exp_dir, feats_dir, decodes)
    model_streams = _model_streams(ckpt)
    meta = make_meta(
        ckpt["config"], list(ckpt["classes"]), _feature_doc(dump_dir, model_streams), ckpt["normalization"],
        source={"exp_dir": str(exp_dir.resolve()), "checkpoint": CHECKPOINT, "checkpoint_sha256": digest,
                "epoch": ckpt.get("epoch"), "feature_dump": str(dump_dir.resolve()),
                "trained_with_sertk": ckpt.get("sertk_version")},
        protocol=_protocol(exp_dir, decodes),
        metrics={"dev": ckpt.get("dev"), "test": _test_metrics(exp_dir, decodes, digest)},
        environment=_training_environment(exp_dir))
    try:   # a pack sertk writes is one it reads
        check_meta(json.loads(json.dumps(meta, allow_nan=False)), out)
    except ValueError:
        raise PackError(f"{exp_dir}: the model's description holds a non-finite number (NaN or Inf); "
                        "not packed") from None
    write_pack(out, meta, ckpt["model"])
    test = meta["metrics"]["test"]
    scored = (f"test UA {100 * test['ua']:.2f} ({test['num_utts']} utts)" if test else "no test score")
    return (f"{out}: {meta['model']}, {len(meta['classes'])} classes, epoch {meta['source']['epoch']}, {scored}, "
            f"{out.stat().st_size / 2 ** 20:.1f} MiB")


def make_meta(config: Dict[str, Any], classes: List[str], features: Dict[str, Any], normalization: Dict[str, Any],
              source: Dict[str, Any], protocol: Optional[Dict[str, Any]] = None,
              metrics: Optional[Dict[str, Any]] = None, environment: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A packed model's description. `features`: a feature config with its frame layout under `dump:` (from
    a dump, or `features_from_config`); `normalization`: the checkpoint's state dict."""
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "sertk_version": __version__,
        "created": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "source": source, "model": config["model"]["name"], "classes": list(classes), "config": config,
        "features": features, "normalization": _portable_normalization(normalization),
        "protocol": protocol, "metrics": metrics or {"dev": None, "test": None}, "environment": environment,
    }


def features_from_config(doc: Dict[str, Any]) -> Dict[str, Any]:
    """A feature config with the frame layout a dump of it would record (for models not trained from a
    dump sertk made, e.g. to pack weights trained elsewhere)."""
    cfg = parse_config(doc)
    sr = cfg.sample_rate
    frontends = build_frontends(cfg)
    info = {"dims": {n: m.dim for n, m in frontends.items()},
            "frame_shift": {n: s.hop_samples(sr) / sr for n, s in cfg.streams.items()}, **stream_layout(cfg)}
    return {**cfg.to_dict(), DUMP_INFO_KEY: info}


def _decode_infos(exp_dir: Path) -> Dict[str, Dict[str, Any]]:
    """decode dir name -> its decode.yaml, for the fold's decode dirs that have one."""
    out = {}
    for name in DECODE_DIRS:
        path = exp_dir / name / "decode.yaml"
        if path.is_file():
            out[name] = read_yaml_file(path, PackError)
    return out


def _dump_dir(exp_dir: Path, feats_dir: Optional[Path], decodes: Dict[str, Dict[str, Any]]) -> Path:
    if feats_dir is not None:
        candidates = [Path(feats_dir)]
    else:
        candidates = [resolve_path(str(info["features"]["dump"]), exp_dir / name)
                      for name, info in decodes.items() if (info.get("features") or {}).get("dump")]
        if not candidates:
            raise PackError(f"{exp_dir}: no decode dir names the feature dump the model was trained on; "
                            "give it with --feats dump/<tag>")
    dump = candidates[0]
    if not is_feature_dump(dump):
        raise PackError(f"{dump}: not a feature dump (no {CONFIG_FILE}); give the model's dump with --feats")
    return dump


def _model_streams(ckpt: Dict[str, Any]) -> List[str]:
    from sertk.models import build_model
    from sertk.train.config import model_options
    config = ckpt["config"]
    return list(build_model(config["model"]["name"], len(ckpt["classes"]), **model_options(config)).streams)


def _feature_doc(dump_dir: Path, streams: List[str]) -> Dict[str, Any]:
    """The dump's feature config cut down to the streams the model reads (and the LLD grids their
    windows follow), with the frame layout they were stored with."""
    doc = read_dump_config(dump_dir)
    info = doc.get(DUMP_INFO_KEY) or {}
    missing = [s for s in streams if s not in doc.get("streams", {})]
    if missing:
        raise PackError(f"{dump_dir}: the model reads stream(s) {missing}, which this dump does not hold; "
                        "give the model's dump with --feats")
    keep = set(streams) | {w["grid"] for s, w in (info.get("windows") or {}).items() if s in streams}
    layout = {}
    for key in LAYOUT_KEYS:
        value = {s: v for s, v in (info.get(key) or {}).items() if s in keep}
        if value:
            layout[key] = value
    features = {k: v for k, v in doc.items() if k not in ("streams", DUMP_INFO_KEY)}
    features["streams"] = {s: spec for s, spec in doc["streams"].items() if s in keep}
    features[DUMP_INFO_KEY] = layout
    encoders = encoder_identities(features["streams"])
    if encoders:
        features[DUMP_INFO_KEY]["encoders"] = encoders
    return features


def encoder_identities(streams: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """stream -> the pretrained encoder it runs (name, and the SHA-256 of its weights where sertk knows it),
    for the encoder streams among `streams` (stream specs of a feature config)."""
    return {s: encoder_identity(spec["model"]) for s, spec in streams.items()
            if isinstance(spec, dict) and spec.get("type") in ENCODER_STREAMS}


def _portable_normalization(state: Dict[str, Any]) -> Dict[str, Any]:
    """Speaker statistics are recomputed for the speakers a model is run on: the training speakers'
    statistics and utterance ids stay behind; the fallback for speakers with too few rows (the training
    data's statistics, sertk.features.cmvn) travels."""
    state = plain_state(state)
    if state["mode"] != "speaker":
        return state
    kept = ("mode", "min_rows", "fallback")
    return {"mode": "speaker", "clip": state.get("clip"),
            "streams": {s: {k: v for k, v in st.items() if k in kept} for s, st in state["streams"].items()}}


def _protocol(exp_dir: Path, decodes: Dict[str, Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The protocol card, with this fold's entry (speakers, counts) instead of every fold's."""
    for name, info in decodes.items():
        if not info.get("protocol_dir"):
            continue
        try:
            card = load_card(resolve_path(str(info["protocol_dir"]), exp_dir / name))
        except ProtocolError as e:
            log.warning("no protocol card: %s", e)
            return None
        fold = _fold_number(exp_dir)
        out = {k: v for k, v in card.items() if k != "folds"}
        out["fold"] = next((f for f in card.get("folds", []) if f.get("fold") == fold), {"fold": fold})
        return out
    log.warning("%s: no decode dir names a protocol dir; the pack has no protocol card", exp_dir)
    return None


def _fold_number(exp_dir: Path) -> Optional[int]:
    name = exp_dir.resolve().name
    return int(name[4:]) if name.startswith("fold") and name[4:].isdigit() else None


def _test_metrics(exp_dir: Path, decodes: Dict[str, Dict[str, Any]], digest: str) -> Optional[Dict[str, Any]]:
    """The fold's test score (default voting rule), if its test set was decoded with these weights."""
    info = decodes.get("decode_test")
    if info is None:
        log.warning("%s: decode_test/ is missing; the pack has no test score", exp_dir)
        return None
    if info.get("checkpoint_sha256") != digest:
        log.warning("%s: decode_test/ was decoded with another checkpoint; the pack has no test score", exp_dir)
        return None
    decode_dir = exp_dir / "decode_test"
    try:
        result = score_decode_dir(decode_dir, resolve_path(str(info["data_dir"]), decode_dir), write=False)
    except SertkError as e:
        log.warning("the test set cannot be scored (%s); the pack has no test score", e)
        return None
    m = result["utterance"][result["default_rule"]]
    return {"rule": result["default_rule"], "num_utts": m["num_utts"], **{key: m[key] for key, _ in SUMMARY_KEYS},
            "data_dir": result["data_dir"]}


def _training_environment(exp_dir: Path) -> Optional[Dict[str, Any]]:
    path = exp_dir / ENV_FILE
    return read_yaml_file(path, PackError) if path.is_file() else None


# --- the file -----------------------------------------------------------------------------------

def write_pack(path: Path, meta: Dict[str, Any], weights: Dict[str, torch.Tensor]) -> None:
    weights_buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in weights.items()}, weights_buf)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(META_MEMBER, json.dumps(meta, indent=1, allow_nan=False), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(WEIGHTS_MEMBER, weights_buf.getvalue(), compress_type=zipfile.ZIP_STORED)
    atomic_write_bytes(Path(path), buf.getvalue())


def _open(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise PackError(f"{path}: no such packed model")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise PackError(f"{path}: not a packed sertk model ({e})") from None
    names = set(zf.namelist())
    if not {META_MEMBER, WEIGHTS_MEMBER} <= names:
        zf.close()
        raise PackError(f"{path}: not a packed sertk model (no {META_MEMBER} / {WEIGHTS_MEMBER}); "
                        "make one with 'sertk pack EXP_DIR -o model.sertk'")
    return zf


def _read_meta(zf: zipfile.ZipFile, path: Path) -> Dict[str, Any]:
    try:
        meta = json.loads(zf.read(META_MEMBER).decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError,
            RecursionError) as e:   # bytes damaged (the deflated text, its CRC, its offsets), or not JSON
        what = "a zlib error" if isinstance(e, zlib.error) else e.__class__.__name__
        raise PackError(f"{path}: damaged packed model ({what} reading {META_MEMBER})") from None
    return check_meta(meta, path)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")   # sertk writes packs with allow_nan=False


def read_meta(path: Path) -> Dict[str, Any]:
    """The description only (no weights are read), checked (`check_meta`)."""
    path = Path(path)
    with _open(path) as zf:
        return _read_meta(zf, path)


def read_pack(path: Path) -> PackedModel:
    """The description (checked) and the weights, checked to fit the model the description builds."""
    path = Path(path)
    with _open(path) as zf:
        meta = _read_meta(zf, path)
        try:
            weights = torch.load(io.BytesIO(zf.read(WEIGHTS_MEMBER)), map_location="cpu", weights_only=True)
        except Exception as e:  # truncated, or not plain tensors: never fall back to full unpickling
            raise PackError(f"{path}: damaged packed model, its weights cannot be read "
                            f"({e.__class__.__name__})") from None
    packed = PackedModel(meta, weights, path)
    check_fit(packed)
    return packed


# --- what sertk-model.json holds: checked on reading -----------------------------------------------
#
# One schema (META_SCHEMA) says every key's type; `check_meta` walks it, then checks the resolved config with
# sertk.train.config.check_config and the feature config with parse_config, and the sections against each
# other. Every problem is one PackError naming the file and the key, e.g.
# `model.sertk: sertk-model.json: 'classes' must be a non-empty list of distinct names, not 'anger'`.

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


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


TEXT = _Value("a string", lambda v: isinstance(v, str))
NAME = _Value("a non-empty string", lambda v: isinstance(v, str) and bool(v))
FLAG = _Value("true or false", lambda v: isinstance(v, bool))
ANY = _Value("anything", lambda v: True)
COUNT = _Value("an integer >= 0", lambda v: _is_int(v) and v >= 0)
SIZE = _Value("an integer >= 1", lambda v: _is_int(v) and v >= 1)
NUMBER = _Value("a number", _is_number)
SHARE = _Value("a number in [0, 1]", lambda v: _is_number(v) and 0 <= v <= 1)
POSITIVE = _Value("a number > 0", lambda v: _is_number(v) and v > 0)
NON_NEGATIVE = _Value("a number >= 0", lambda v: _is_number(v) and v >= 0)
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
                             lambda v: _is_int(v) and v >= 1),
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
_STREAM_STATS = {
    "global": _GLOBAL_STATS,
    "speaker": _Keys({"mode": _Value("speaker", lambda v: v == "speaker"), "min_rows": SIZE,
                      "fallback": _Null(_GLOBAL_STATS)}, optional=("min_rows", "fallback")),
    "none": _Keys({"mode": _Value("none", lambda v: v == "none")}),
}


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
    """`meta` (the parsed sertk-model.json) checked against META_SCHEMA, its config as sertk.train.config checks
    a config (an older pack's missing keys at their defaults), its feature config as sertk.features does, and
    its sections against each other; one PackError naming the key otherwise. Returns the checked description
    (the config resolved)."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PackError(f"{path}: {META_MEMBER} is not a sertk model description")
    version = meta.get("format_version")
    if _is_int(version) and version > FORMAT_VERSION:
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
    for key in ("dims", "frame_shift", "levels", "frame_window", "windows", "layers"):
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
    from sertk.train.config import check_config, with_new_defaults
    where = f"{path}: {META_MEMBER}: config"
    try:
        return check_config(with_new_defaults(copy.deepcopy(config)))
    except SertkError as e:
        raise PackError(f"{where}: {e}") from None


def _check_normalization(norm: Dict[str, Any], layout: Dict[str, Any], path: Path) -> None:
    for stream, state in norm["streams"].items():
        key = f"normalization.streams.{stream}"
        if state["mode"] != norm["mode"]:
            raise _bad(path, f"{key}.mode", f"normalization.mode ({norm['mode']!r})", state["mode"])
        _refuse(_STREAM_STATS[norm["mode"]].problem(state, key), {"normalization": norm}, path)
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
    from sertk.models import build_model
    from sertk.models.layer_sum import with_layer_sums
    from sertk.train.config import model_options
    path, meta = packed.path or Path("packed model"), packed.meta
    config, layout = meta["config"], meta["features"][DUMP_INFO_KEY]
    where = f"{path}: {META_MEMBER}"
    try:
        model = build_model(config["model"]["name"], len(meta["classes"]), **model_options(config))
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
    dims = getattr(model, "stream_dims", {})
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


# --- describing ---------------------------------------------------------------------------------

def info_text(meta: Dict[str, Any], path: Optional[Path] = None) -> str:
    """What `sertk pack --info` prints: the model, its inputs, where it came from and how it scored."""
    config, src = meta["config"], meta["source"]
    features = {k: v for k, v in meta["features"].items() if k != DUMP_INFO_KEY}
    lines = [f"packed model: {path}" if path else "packed model",
             f"model: {meta['model']}",
             f"classes ({len(meta['classes'])}, posterior column order): {', '.join(meta['classes'])}",
             f"features: tag {config['features']['tag']}, sample rate {features.get('sample_rate')} Hz, streams "
             + ", ".join(f"{s} ({spec.get('type')}, dim {meta['features'][DUMP_INFO_KEY]['dims'].get(s)})"
                         for s, spec in features["streams"].items()),
             f"normalisation: {meta['normalization']['mode']}",
             f"segments: {_segments_text(config['segments'])}; voting rule: {config['decode']['rule']}",
             f"source: {src['exp_dir']} ({src['checkpoint']}, epoch {src['epoch']}, sha256 "
             f"{src['checkpoint_sha256'][:12]}...)",
             f"packed: {meta['created']} with sertk {meta['sertk_version']}"]
    card = meta.get("protocol")
    if card:
        fold = card.get("fold") or {}
        lines.append(f"protocol: {card.get('corpus')} {card['protocol']} ({card.get('description', '')}); "
                     f"fold {fold.get('fold')} of {card['num_folds']}: test speakers "
                     f"{_speakers_text(fold.get('test_speakers', []))}, dev speakers "
                     f"{_speakers_text(fold.get('dev_speakers', []))}")
        lines.append(f"dev policy: {card.get('dev_policy')}; speaker-independent: "
                     f"{'yes' if card.get('speaker_independent') else 'no'}")
    else:
        lines.append("protocol: unknown (no protocol card)")
    dev, test = meta["metrics"].get("dev"), meta["metrics"].get("test")
    if dev:
        lines.append(f"dev (checkpoint choice): WA {100 * dev['wa']:.2f}, UA {100 * dev['ua']:.2f}")
    lines.append(f"test ({test['num_utts']} utterances, rule {test['rule']}): WA {100 * test['wa']:.2f}, "
                 f"UA {100 * test['ua']:.2f}, macro-F1 {100 * test['macro_f1']:.2f}" if test else "test: not scored")
    env = meta.get("environment") or {}
    if env:
        lines.append(f"trained on: {env.get('cpu') or ''} {env.get('gpu') or 'no GPU'}, torch {env.get('torch')}, "
                     f"git {env.get('git_hash')}".replace("  ", " "))
    return "\n".join(lines)


def _speakers_text(speakers: Any) -> str:
    """A fold's speakers: a list, or 'mixed' (a speaker-dependent protocol)."""
    return speakers if isinstance(speakers, str) else ", ".join(speakers)


def _segments_text(seg: Dict[str, Any]) -> str:
    if seg.get("length") is None:
        return "whole utterances"
    return f"{seg['length']} s windows every {seg['hop']} s"
