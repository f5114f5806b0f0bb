"""`sertk decode`: segment posteriors of a data dir with a trained model, then voting.

Test hygiene: a set named `test` is decoded with the dev-selected `best.pt`, once. Decoding it
again (after retraining) or with any other checkpoint needs `retest=True`, so looking at test
results can never quietly become part of model selection.

Cross-corpus: with a class mapping (`sertk.data.cross`) a model decodes another corpus's data dir.
The data dir is relabelled onto the shared classes (other classes left out, counted) and each
segment's posteriors over the model's classes are collapsed onto the shared ones before voting,
so every voting rule decides among the shared classes only.
"""
import logging
from pathlib import Path
from typing import List, Optional

from sertk.data.cross import collapse, dropped_text, load_class_mapping, relabel
from sertk.data.datadir import DataDir
from sertk.decode.decodedir import read_decode_dir, write_decode_dir
from sertk.decode.forward import as_seg_posteriors, seg2utt, segment_dataset, segment_posteriors
from sertk.decode.restore import restore_model
from sertk.errors import FeatureError, SertkError
from sertk.features.model_features import check_model_features, dump_fingerprint
from sertk.features.reading import Normalization, StreamLayout, load_streams
from sertk.features.storage import read_dump_config
from sertk.features.segments import SegmentConfig
from sertk.fsutil import sha256_file
from sertk.gridrecord import GRID_FILE, read_grid_record
from sertk.results_dev import KEPT_LAST
from sertk.experiment import load_checkpoint

log = logging.getLogger(__name__)
DEV_SELECTED = "best.pt"
LAST_CHECKPOINT = "last.pt"
TRAIN_LOG = "train.log"


class DecodeError(SertkError):
    """A decode request that would break test hygiene or cannot be served."""


def still_training(exp_dir: Path) -> List[str]:
    """'<run>: epoch N' for every training run in `exp_dir` (the run, a grid's points) whose last.pt says it
    has not finished: it is training now, or was stopped and resumes when started again; either way its
    best.pt is not yet the one dev will choose. A grid's point recorded as diverged is done: it was left out."""
    exp_dir = Path(exp_dir)
    done = _diverged_points(exp_dir)
    runs = []

    def add(run: Path, what: str) -> None:
        if run not in done:
            where = run.relative_to(exp_dir).as_posix()
            runs.append(("" if where == "." else f"{where}: ") + what)
    for last in sorted(exp_dir.rglob(LAST_CHECKPOINT)):
        state = load_checkpoint(last, mmap=True)   # the small fields only: the tensors stay on disk
        if not state.get("finished", True):        # (checkpoints from before the flag: finished)
            add(last.parent, f"epoch {state.get('epoch')}")
    # best.pt is written before last.pt in an epoch: a run stopped between the two has a best.pt and no
    # last.pt (nor a kept record's last.yaml), and its next start trains from the beginning. A grid's E holds
    # a copy of the chosen point's best.pt beside grid.yaml; its points have their own last.pt.
    for best in sorted(exp_dir.rglob(DEV_SELECTED)):
        if not any((best.parent / name).is_file() for name in (LAST_CHECKPOINT, KEPT_LAST, GRID_FILE)):
            add(best.parent, "stopped in its first epoch (best.pt, no last.pt)")
    # a run writes config.yaml and train.log as it starts: with neither checkpoint yet, it is in its first epoch
    # (a grid's E, before its choice, holds grid.yaml and no run of its own)
    for config in sorted(exp_dir.rglob("config.yaml")):
        run = config.parent
        if (run / TRAIN_LOG).is_file() and not any((run / name).is_file() for name in
                                                   (DEV_SELECTED, LAST_CHECKPOINT, KEPT_LAST, GRID_FILE)):
            add(run, "in its first epoch (no checkpoint yet)")
    return runs


def _diverged_points(exp_dir: Path) -> set:
    """The dirs of a grid's points that grid.yaml records as diverged (sertk.train.grid)."""
    if not (exp_dir / GRID_FILE).is_file():
        return set()
    record = read_grid_record(exp_dir / GRID_FILE, DecodeError)
    return {exp_dir / p["dir"] for p in record["points"] if p.get("diverged") and isinstance(p.get("dir"), str)}


def decode_data_dir(exp_dir: Path, data_dir: Path, feats_dir: Path, out_dir: Path, checkpoint: str = DEV_SELECTED,
                    retest: bool = False, protocol_dir: Optional[Path] = None, batch_size: int = 64,
                    device: str = "cpu", class_map: Optional[Path] = None) -> str:
    exp_dir, data_dir, out_dir = Path(exp_dir), Path(data_dir), Path(out_dir)
    ckpt_path = exp_dir / checkpoint
    digest = sha256_file(ckpt_path) if ckpt_path.is_file() else None
    is_test = data_dir.name == "test"
    if is_test and checkpoint != DEV_SELECTED and not retest:
        raise DecodeError(f"{data_dir} is a test set: decode it with the dev-selected {DEV_SELECTED}, "
                          f"not {checkpoint} (pass --retest if you really mean it)")
    if is_test and not retest:
        training = still_training(exp_dir)
        if training:   # decoded now, test would be final for a best.pt that later epochs may replace
            raise DecodeError(f"{exp_dir} is still training ({', '.join(training)}): decode its test set once "
                              "training has finished (or pass --retest to decode the best.pt of now)")
    mapping = load_class_mapping(class_map) if class_map is not None else None
    if (out_dir / "decode.yaml").is_file():
        previous = read_decode_dir(out_dir).info
        previous_map = previous.get("class_map") or None
        same_map = (previous_map is None and mapping is None) or (
            previous_map is not None and mapping is not None
            and all(previous_map.get(k) == v for k, v in mapping.to_dict().items() if k != "file"))
        changed = [what for what, same in (
            ("another checkpoint", previous.get("checkpoint_sha256") == digest),
            ("another data dir", previous.get("data_dir") == str(data_dir.resolve())),
            ("another class mapping", same_map),
            ("other features", _same_features(previous.get("features") or {}, Path(feats_dir)))) if not same]
        if not changed:
            return "already decoded with this checkpoint; skipping"
        if is_test and not retest:
            raise DecodeError(f"{out_dir}: this test set was already decoded with {' and '.join(changed)}; "
                              "decoding it again needs --retest")
    # on the CPU whatever `device` is: the normalization state is read with numpy (a CUDA tensor cannot be),
    # and restore_model puts the weights on `device`
    ckpt = load_checkpoint(ckpt_path)
    config, model_classes = ckpt["config"], list(ckpt["classes"])
    dd = DataDir.load(data_dir)
    dropped = None
    if mapping is not None:
        mapping.check("source", model_classes, f"the model in {exp_dir}")
        dd, dropped = relabel(dd, mapping, "target", str(data_dir))
        log.info("%s: %s", data_dir, dropped_text(dropped))
        if not dd.utts:
            raise DecodeError(f"{data_dir}: no utterance is left on the shared classes of {class_map}")
    elif list(dd.labels.classes) != model_classes:
        raise DecodeError(f"{data_dir} has classes {list(dd.labels.classes)} but the model was trained on "
                          f"{model_classes} (to decode another corpus, give a class mapping with --class-map)")
    classes = list(dd.labels.classes)
    model, layout = restore_model(config, len(model_classes), ckpt["model"],
                                  lambda streams: StreamLayout.read(feats_dir, streams), device)
    streams = list(model.streams)
    check_model_features(ckpt.get("features"), read_dump_config(feats_dir), streams, feats_dir,
                         f"the model in {exp_dir}")
    feats = load_streams(feats_dir, streams, dd.utts)
    norm = Normalization.from_state_dict(ckpt["normalization"], feats, dd)
    dataset = segment_dataset(dd, feats, layout, SegmentConfig.from_config(config["segments"]), norm, classes)
    post = segment_posteriors(model, dataset, batch_size, device)
    if mapping is not None:
        post = collapse(post, model_classes, mapping)
    info = {"exp_dir": str(exp_dir.resolve()), "checkpoint": checkpoint, "checkpoint_sha256": digest,
            "checkpoint_epoch": ckpt.get("epoch"), "data_dir": str(data_dir.resolve()),
            "protocol_dir": str(Path(protocol_dir).resolve()) if protocol_dir else None,
            "features": {"tag": config["features"]["tag"], "dump": str(Path(feats_dir).resolve()),
                         "streams": streams, "cmvn": config["features"]["cmvn"],
                         "fingerprint": dump_fingerprint(feats_dir, streams)},
            "segments": dict(config["segments"]), "rule": config["decode"]["rule"], "model": config["model"]["name"]}
    if mapping is not None:
        info["class_map"] = {**mapping.to_dict(), "model_classes": model_classes, "dropped": dict(dropped)}
    write_decode_dir(out_dir, as_seg_posteriors(dataset, post), seg2utt(dataset), classes, info,
                     default_rule=config["decode"]["rule"])
    return f"{len(dd.utts)} utterances, {len(dataset)} segments (checkpoint {checkpoint}, epoch {ckpt.get('epoch')})"


def _same_features(previous: dict, feats_dir: Path) -> bool:
    """Whether a decode dir's features (its decode.yaml's `features`) are `feats_dir`'s as they are now: the
    same dump fingerprint; a decode dir from before sertk recorded one, the same dump folder."""
    if previous.get("fingerprint") is None:
        return previous.get("dump") == str(feats_dir.resolve())
    try:
        return dump_fingerprint(feats_dir, previous.get("streams") or []) == previous["fingerprint"]
    except (FeatureError, OSError):   # not the dump it was decoded from; what is wrong with it is said below
        return False
