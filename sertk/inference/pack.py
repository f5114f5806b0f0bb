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
import datetime
import io
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from sertk import __version__
from sertk.data.protocols import load_card
from sertk.errors import ProtocolError, SertkError
from sertk.features.cmvn import plain_state
from sertk.features.encoder_cache import encoder_identity
from sertk.features.extract import stream_layout
from sertk.features.frontends import DUMP_INFO_KEY, build_frontends, parse_config
from sertk.features.storage import CONFIG_FILE, is_feature_dump, read_dump_config
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
        """The feature config (loadable by sertk.features.frontends.parse_config), without the layout."""
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
    except (zipfile.BadZipFile, OSError) as e:
        raise PackError(f"{path}: not a packed sertk model ({e})") from None
    names = set(zf.namelist())
    if not {META_MEMBER, WEIGHTS_MEMBER} <= names:
        zf.close()
        raise PackError(f"{path}: not a packed sertk model (no {META_MEMBER} / {WEIGHTS_MEMBER}); "
                        "make one with 'sertk pack EXP_DIR -o model.sertk'")
    return zf


def _read_meta(zf: zipfile.ZipFile, path: Path) -> Dict[str, Any]:
    try:
        meta = json.loads(zf.read(META_MEMBER).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, zipfile.BadZipFile) as e:
        raise PackError(f"{path}: damaged packed model ({e.__class__.__name__} reading {META_MEMBER})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PackError(f"{path}: {META_MEMBER} is not a sertk model description")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise PackError(f"{path}: packed with a newer sertk (format {meta.get('format_version')}, sertk "
                        f"{meta.get('sertk_version')}); this sertk ({__version__}) reads format {FORMAT_VERSION}")
    return meta


def read_meta(path: Path) -> Dict[str, Any]:
    """The description only (no weights are read)."""
    path = Path(path)
    with _open(path) as zf:
        return _read_meta(zf, path)


def read_pack(path: Path) -> PackedModel:
    path = Path(path)
    with _open(path) as zf:
        meta = _read_meta(zf, path)
        try:
            weights = torch.load(io.BytesIO(zf.read(WEIGHTS_MEMBER)), map_location="cpu", weights_only=True)
        except Exception as e:  # truncated, or not plain tensors: never fall back to full unpickling
            raise PackError(f"{path}: damaged packed model, its weights cannot be read "
                            f"({e.__class__.__name__})") from None
    return PackedModel(meta, weights, path)


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
                     f"{', '.join(fold.get('test_speakers', []))}, dev speakers {', '.join(fold.get('dev_speakers', []))}")
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


def _segments_text(seg: Dict[str, Any]) -> str:
    if seg.get("length") is None:
        return "whole utterances"
    return f"{seg['length']} s windows every {seg['hop']} s"
