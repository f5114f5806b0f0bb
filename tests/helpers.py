"""Small helpers shared by several test files."""
import contextlib
import logging
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import torch

from sertk.data.corpora import prepare_corpus
from sertk.data.validate import validate_dir
from sertk.decode import write_decode_dir


def prepare_valid(corpus: str, root: Path, out: Path, **options):
    """Prepare a replica and insist that the data dir it writes validates clean."""
    report = prepare_corpus(corpus, root, out, **options)
    assert validate_dir(out) == []
    return report


def write_utt_segments(out, utt_segments: Dict[str, Sequence[Sequence[float]]], classes, info=None, **kw):
    """A decode dir from utt -> its segments' posteriors (segments named `<utt>-s<j>`). Shared by the
    scoring and results tests."""
    seg_post = {f"{u}-s{j}": np.asarray(p, dtype=float) for u, segs in utt_segments.items()
                for j, p in enumerate(segs)}
    seg2utt = {f"{u}-s{j}": u for u, segs in utt_segments.items() for j in range(len(segs))}
    write_decode_dir(out, seg_post, seg2utt, classes, info if info is not None else {"checkpoint": "best.pt"}, **kw)
    return out


def batch_for(model, batch=4, frames=200, valid=None, seed=0):
    """A random model input: each frame stream the model reads [batch, frames, dim] (its vector streams
    [batch, dim]), and `mask`; utterance i has valid[i] frames (zeros after them), all frames when
    `valid` is None."""
    g = torch.Generator().manual_seed(seed)
    vectors = getattr(model, "vector_streams", ())
    out = {s: torch.randn(batch, *(() if s in vectors else (frames,)), model.stream_dims[s], generator=g)
           for s in model.streams}
    mask = torch.ones(batch, frames, dtype=torch.bool)
    if valid is not None:
        for i, v in enumerate(valid):
            mask[i, v:] = False
            for s in model.streams:
                if s not in vectors:
                    out[s][i, v:] = 0
    out["mask"] = mask
    return out


def emodb_loso(base: Path, speakers=("03", "08", "09"), texts=("a01", "b02"), emotions="WLA") -> Path:
    """A generated EmoDB replica in `base`/emodb, prepared into `base`/all with loso folds in `base`/loso."""
    from replicas import make_emodb
    from sertk.data.protocols import make_folds
    root = make_emodb(Path(base) / "emodb", speakers=speakers, texts=texts, emotions=emotions)
    make_folds(prepare_corpus("emodb", root, Path(base) / "all").datadir, "loso", Path(base) / "loso")
    return Path(base)


def interrupt_training_after(epoch: int, monkeypatch) -> None:
    """Make sertk.train.trainer stop with KeyboardInterrupt right after it wrote last.pt of `epoch`, as a
    run cut by the end of a session; monkeypatch.undo() (or setattr back) lets the next run finish."""
    from sertk.train import trainer as trainer_module
    real_save = trainer_module.save_checkpoint

    def save_then_die(path, state):
        real_save(path, state)
        if path.name == "last.pt" and state["epoch"] == epoch:
            raise KeyboardInterrupt
    monkeypatch.setattr(trainer_module, "save_checkpoint", save_then_die)


@contextlib.contextmanager
def kept_logger():
    """The CLI reconfigures the 'sertk' logger; a module fixture runs outside conftest's per-test restore."""
    logger = logging.getLogger("sertk")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    try:
        yield
    finally:
        logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


def module_cli(*args):
    """`sertk ARGS` in-process (arguments may be paths) from a module-scoped fixture, the logger kept."""
    from click.testing import CliRunner
    from sertk.cli import main
    with kept_logger():
        return CliRunner().invoke(main, [str(a) for a in args])


# a 16-band log-mel stream and a crnn small enough to train in a second: the set-up of the trainer tests
LOGMEL16 = {"sample_rate": 16000, "streams": {"logmel": {"type": "logmel", "n_mels": 16}}}
TINY_CRNN = ["model.name=crnn", "model.n_mels=16", "model.channels=[4,8]", "model.lstm_hidden=8",
             "model.attention_hidden=8", "train.batch_size=4", "segments.length=0.3", "segments.hop=0.1"]


def logmel_loso(base: Path) -> Path:
    """emodb_loso(base) with LOGMEL16 features in `base`/dump."""
    from sertk.features.extract import extract_features
    emodb_loso(base)
    extract_features(Path(base) / "all", LOGMEL16, Path(base) / "dump")
    return Path(base)
