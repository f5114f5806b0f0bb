"""Digests of three tiny training runs, to show that a change to the trainer keeps its behaviour.

    python tools/train_digests.py [WORK_DIR] > digests.txt

Generates the tests' EmoDB replica (tests/helpers.py `emodb_loso`, 3 speakers), extracts log-mel and MFCC
features as tests/test_train.py does, trains on fold 1 of its loso folds

    crnn            the tests' tiny crnn (TINY)
    crnn_bucketed   the same with train.bucket=true and augment.specaugment=true
    sd_caff         the tests' tiny SD-CAFF (SD_TINY: whole utterances, gender and center losses, multistep)

each with train.amp=false (float32 anywhere), and prints one sha256 per run over last.pt: the model,
optimizer, scheduler and objective state dicts (every tensor's name, dtype, shape and bytes; other values
by repr) and the run's history without its timing fields (seconds, segments_per_second, data_wait_share),
with the best epoch and score. Equal lines before and after a change: the same weights and the same path
there. WORK_DIR (default: a temporary folder, removed afterwards) keeps the corpus, features and exp dirs.
"""
import hashlib
import logging
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]   # tests/helpers.py and tests/replicas.py build the corpus

import torch  # noqa: E402

from helpers import emodb_loso  # noqa: E402
from test_train import FEATURES, SD_TINY, TINY  # noqa: E402  (the tests' tiny runs)
from sertk.features.extract import extract_features  # noqa: E402
from sertk.config.loading import load_config  # noqa: E402
from sertk.train.trainer import train  # noqa: E402

RUNS = {"crnn": TINY,
        "crnn_bucketed": TINY + ["train.bucket=true", "augment.specaugment=true"],
        "sd_caff": SD_TINY}
STATES = ("model", "optimizer", "scheduler", "objective")
TIMING = ("seconds", "segments_per_second", "data_wait_share")


def feed(h: "hashlib._Hash", value: Any) -> None:
    """`value` into `h`, canonically: dicts by sorted key, tensors by dtype, shape and bytes."""
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(value, dict):
        h.update(b"{")
        for key in sorted(value, key=repr):
            h.update(repr(key).encode() + b":")
            feed(h, value[key])
        h.update(b"}")
    elif isinstance(value, (list, tuple)):
        h.update(b"[")
        for item in value:
            feed(h, item)
        h.update(b"]")
    else:
        h.update(repr(value).encode() + b";")


def digest(last_pt: Path) -> str:
    state = torch.load(last_pt, weights_only=True)
    h = hashlib.sha256()
    for part in STATES:
        h.update(part.encode())
        feed(h, state[part])
    feed(h, [{k: v for k, v in epoch.items() if k not in TIMING} for epoch in state["history"]])
    feed(h, {k: state[k] for k in ("epoch", "best_ua", "best_epoch", "bad_epochs", "finished", "autocast")})
    return h.hexdigest()


def main(work: Path) -> None:
    base = emodb_loso(work)
    extract_features(base / "all", FEATURES, base / "dump")
    fold, dump = base / "loso" / "fold1", base / "dump"
    for name, options in RUNS.items():
        exp = base / "exp" / name
        train(load_config(None, options + ["train.amp=false"]), fold, dump, exp)
        print(name, digest(exp / "last.pt"), flush=True)


if __name__ == "__main__":
    logging.getLogger("sertk").setLevel(logging.WARNING)
    torch.set_num_threads(1)   # the same reduction order on any machine
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        tmp = Path(tempfile.mkdtemp(prefix="train_digests."))
        try:
            main(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
