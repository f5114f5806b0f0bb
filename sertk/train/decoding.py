"""`sertk decode`: segment posteriors of a data dir with a trained model, then voting.

Test hygiene: a set named `test` is decoded with the dev-selected `best.pt`, once. Decoding it
again (after retraining) or with any other checkpoint needs `retest=True`, so looking at test
results can never quietly become part of model selection.
"""
import logging
from pathlib import Path
from typing import Optional

from sertk.data.datadir import DataDir
from sertk.decode import read_decode_dir, write_decode_dir
from sertk.errors import SertkError
from sertk.features.segments import SegmentConfig
from sertk.fsutil import sha256_file
from sertk.models import build_model
from sertk.train.checkpoint import load_checkpoint
from sertk.train.config import model_options
from sertk.train.data import SegmentDataset
from sertk.train.features import Normalization, frame_hop, load_streams
from sertk.train.infer import as_seg_posteriors, seg2utt, segment_posteriors

log = logging.getLogger(__name__)
DEV_SELECTED = "best.pt"


class DecodeError(SertkError):
    """A decode request that would break test hygiene or cannot be served."""


def decode_data_dir(exp_dir: Path, data_dir: Path, feats_dir: Path, out_dir: Path, checkpoint: str = DEV_SELECTED,
                    retest: bool = False, protocol_dir: Optional[Path] = None, batch_size: int = 64,
                    device: str = "cpu") -> str:
    exp_dir, data_dir, out_dir = Path(exp_dir), Path(data_dir), Path(out_dir)
    ckpt_path = exp_dir / checkpoint
    digest = sha256_file(ckpt_path) if ckpt_path.is_file() else None
    is_test = data_dir.name == "test"
    if is_test and checkpoint != DEV_SELECTED and not retest:
        raise DecodeError(f"{data_dir} is a test set: decode it with the dev-selected {DEV_SELECTED}, "
                          f"not {checkpoint} (pass --retest if you really mean it)")
    if (out_dir / "decode.yaml").is_file():
        previous = read_decode_dir(out_dir).info
        if previous.get("checkpoint_sha256") == digest and previous.get("data_dir") == str(data_dir.resolve()):
            return "already decoded with this checkpoint; skipping"
        if is_test and not retest:
            raise DecodeError(f"{out_dir}: this test set was already decoded with another checkpoint; "
                              "decoding it again needs --retest")
    ckpt = load_checkpoint(ckpt_path, device)
    config, classes = ckpt["config"], list(ckpt["classes"])
    dd = DataDir.load(data_dir)
    if list(dd.labels.classes) != classes:
        raise DecodeError(f"{data_dir} has classes {list(dd.labels.classes)} but the model was trained on "
                          f"{classes}")
    model = build_model(config["model"]["name"], len(classes), **model_options(config)).to(device)
    model.load_state_dict(ckpt["model"])
    streams = list(model.streams)
    feats = load_streams(feats_dir, streams, dd.utts)
    norm = Normalization.from_state_dict(ckpt["normalization"], feats, dd)
    length, hop = SegmentConfig(config["segments"]["length"], config["segments"]["hop"]).frames(
        frame_hop(feats_dir, streams))
    dataset = SegmentDataset(dd, feats, length, hop, norm.apply, classes)
    post = segment_posteriors(model, dataset, batch_size, device)
    info = {"exp_dir": str(exp_dir.resolve()), "checkpoint": checkpoint, "checkpoint_sha256": digest,
            "checkpoint_epoch": ckpt.get("epoch"), "data_dir": str(data_dir.resolve()),
            "protocol_dir": str(Path(protocol_dir).resolve()) if protocol_dir else None,
            "features": {"tag": config["features"]["tag"], "dump": str(Path(feats_dir).resolve()),
                         "streams": streams, "cmvn": config["features"]["cmvn"]},
            "segments": dict(config["segments"]), "rule": config["decode"]["rule"], "model": config["model"]["name"]}
    write_decode_dir(out_dir, as_seg_posteriors(dataset, post), seg2utt(dataset), classes, info,
                     default_rule=config["decode"]["rule"])
    return f"{len(dd.utts)} utterances, {len(dataset)} segments (checkpoint {checkpoint}, epoch {ckpt.get('epoch')})"

