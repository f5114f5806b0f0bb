"""`sertk pack`: a fold's dev-selected model written as one packed file (sertk.inference.packed says what it
holds): the model's description gathered from its exp dir, checked as a reader checks it, then written.
"""
import datetime
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from sertk import __version__
from sertk.data.protocols import load_card, test_split_mismatch
from sertk.errors import ProtocolError, SertkError
from sertk.features.cmvn import plain_state
from sertk.features.encoder_cache import encoder_identity
from sertk.features.extract import stream_layout
from sertk.features.model_features import check_model_features, model_feature_config, streams_with_grids
from sertk.features.storage import CONFIG_FILE, is_feature_dump, read_dump_config
from sertk.features.streams import DUMP_INFO_KEY, build_frontends, parse_config
from sertk.fsutil import check_file_replaceable, sha256_file
from sertk.inference.pack_check import check_meta, non_finite_tensor
from sertk.inference.pack_file import intact_description, is_pack_file, write_pack
from sertk.inference.packed import FORMAT, FORMAT_VERSION, LAYOUT_KEYS, PackError
from sertk.results import ENV_FILE, SUMMARY_KEYS, find_fold_dirs, resolve_path
from sertk.score import score_decode_dir
from sertk.experiment import build_configured_model, load_checkpoint
from sertk.yamlutil import read_yaml_file

log = logging.getLogger(__name__)

CHECKPOINT = "best.pt"            # the dev-selected checkpoint: what a packed model is made from
DECODE_DIRS = ("decode_test", "decode_dev")
# what a dump's info section says about the frame layout (sertk.features.extract.stream_layout),
# the rest (utterance checksum, counts) describes the training data and is left out
ENCODER_STREAMS = ("ssl", "ssl_stats")   # stream types that run a pretrained encoder


def pack_experiment(exp_dir: Path, out: Path, feats_dir: Optional[Path] = None) -> str:
    """Pack the dev-selected model of one fold's exp dir into `out`; a one-line summary.

    The feature dump (for its config and frame layout) is `feats_dir`, else the one the fold's decode
    dirs name. An `out` already packed from the same checkpoint is left alone; any other pack there is
    replaced, and an existing `out` that is not a pack is refused (it is somebody's file).
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
    check_file_replaceable(out, "a packed sertk model", is_pack_file,
                           "move it away or give another -o, e.g. model.sertk")
    if out.is_file() and _packed_from(out, exp_dir, digest):
        return f"{out}: already packed from this {CHECKPOINT}; skipping"
    ckpt = load_checkpoint(ckpt_path)
    broken = non_finite_tensor(ckpt["model"])
    if broken:
        raise PackError(f"{ckpt_path}: tensor {broken} holds NaN or Inf (a diverged or damaged model); not packed")
    decodes = _decode_infos(exp_dir)
    dump_dir = _dump_dir(exp_dir, feats_dir, decodes)
    model_streams = _model_streams(ckpt)
    meta = make_meta(
        ckpt["config"], list(ckpt["classes"]), _feature_doc(dump_dir, model_streams, ckpt.get("features")),
        ckpt["normalization"],
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


def _packed_from(out: Path, exp_dir: Path, digest: str) -> bool:
    """Whether the pack at `out` is whole and packed from this checkpoint (nothing to do). Otherwise it is
    replaced when it is this exp dir's own (inside it, or packed from it: an older checkpoint's) or damaged;
    another exp dir's model, or a newer sertk's pack, is refused: not this command's file to replace."""
    meta = intact_description(out)
    if meta is None:
        return False   # damaged: replaced
    version = meta.get("format_version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise PackError(f"{out}: a model packed by a newer sertk (format {version}); not replaced: move it away "
                        "or give another -o")
    source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    if source.get("checkpoint_sha256") == digest:   # this very best.pt, however its exp dir is reached now
        try:
            check_meta(meta, out)
            return True
        except PackError:
            return False   # an older format: replaced
    exp = exp_dir.resolve()
    if not out.resolve().is_relative_to(exp) and source.get("exp_dir") not in (None, str(exp)):
        raise PackError(f"{out}: holds the packed model of {source['exp_dir']}, another exp dir; not replaced: "
                        "move it away or give another -o")
    return False   # this exp dir's pack of an earlier best.pt: replaced


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
    return list(build_configured_model(ckpt["config"], len(ckpt["classes"])).streams)


def _feature_doc(dump_dir: Path, streams: List[str], recorded: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The dump's feature config cut down to the streams the model reads (and the LLD grids their
    windows follow), with the frame layout they were stored with; checked against the features the
    checkpoint `recorded` (sertk.features.model_features)."""
    doc = read_dump_config(dump_dir)
    info = doc.get(DUMP_INFO_KEY) or {}
    missing = [s for s in streams if s not in doc.get("streams", {})]
    if missing:
        raise PackError(f"{dump_dir}: the model reads stream(s) {missing}, which this dump does not hold; "
                        "give the model's dump with --feats")
    check_model_features(recorded, doc, streams, dump_dir, "the model")
    keep = streams_with_grids(doc, streams)
    layout = {}
    for key in LAYOUT_KEYS:
        value = {s: v for s, v in (info.get(key) or {}).items() if s in keep}
        if value:
            layout[key] = value
    features = model_feature_config(doc, streams)
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
    kept = ("mode", "min_rows", "min_utts", "fallback")
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
        data_dir = resolve_path(str(info["data_dir"]), decode_dir)
        fold = _fold_number(exp_dir)
        if info.get("protocol_dir") and fold is not None:
            wrong = test_split_mismatch(resolve_path(str(info["protocol_dir"]), decode_dir), fold, data_dir)
            if wrong:
                log.warning("%s: decoded %s; the pack has no test score", decode_dir, wrong)
                return None
        result = score_decode_dir(decode_dir, data_dir, write=False)
    except SertkError as e:
        log.warning("the test set cannot be scored (%s); the pack has no test score", e)
        return None
    m = result["utterance"][result["default_rule"]]
    return {"rule": result["default_rule"], "num_utts": m["num_utts"], **{key: m[key] for key, _ in SUMMARY_KEYS},
            "data_dir": result["data_dir"]}


def _training_environment(exp_dir: Path) -> Optional[Dict[str, Any]]:
    path = exp_dir / ENV_FILE
    return read_yaml_file(path, PackError) if path.is_file() else None
