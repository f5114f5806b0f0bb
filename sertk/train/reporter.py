"""What a run reports: each epoch's stats as one train.log line and TensorBoard scalars, and train.log itself.

An epoch's stats are a dict (`Reporter.epoch`); `METRICS` says, for each of its keys, the TensorBoard scalar
it becomes and its part of the epoch's train.log line, so a new metric is one entry here and one key in the
stats the trainer hands over. train.log gets every INFO record of the `sertk` logger; what is logged before
the exp dir exists is kept back (`log_to_memory`) and opens train.log once it does (`log_to`).
"""
import contextlib
import logging
import logging.handlers
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sertk.score_picture import confusion_image
from sertk.train.distributed import Ranks

log = logging.getLogger(__name__)

# epoch stats key -> (its TensorBoard scalar, its part of the epoch's train.log line (a format over the
# stats; None: not in the line)), in the order both are written
METRICS: Dict[str, Tuple[str, Optional[str]]] = {
    "train_loss": ("train/loss", "train loss {train_loss:.4f}"),
    "dev_loss": ("dev/loss", "dev loss {dev_loss:.4f}"),
    "dev_wa": ("dev/wa", "dev WA {dev_wa:.4f}"),
    "dev_ua": ("dev/ua", "dev UA {dev_ua:.4f}"),
    "lr": ("lr", "lr {lr:.2e}"),
    "segments_per_second": ("speed/segments_per_second",
                            "{segments_per_second:.0f} segments/s ({data_wait_share:.0%} waiting for data)"),
    "data_wait_share": ("speed/data_wait_share", None),
}
CONFUSION = "confusion"   # the stats key of the dev confusion matrix, an image in TensorBoard


@dataclass
class EpochSpeed:
    """How fast an epoch trained: the loader's share of the time is the time spent waiting for batches."""
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0     # the whole training pass (not dev)
    wait: float = 0.0        # blocked on the data loader (collation, and workers when they fall behind)
    segments: int = 0        # over all processes
    loss: float = 0.0

    @property
    def rate(self) -> float:
        return self.segments / self.seconds if self.seconds > 0 else 0.0

    @property
    def wait_share(self) -> float:
        return self.wait / self.seconds if self.seconds > 0 else 0.0

    def record(self) -> Dict[str, float]:
        """What the history in last.pt keeps of it."""
        return {"seconds": round(self.seconds, 3), "train_segments": self.segments,
                "segments_per_second": round(self.rate, 2),
                "data_wait_share": round(self.wait_share, 4)}

    def stats(self) -> Dict[str, float]:
        """Its part of the epoch's stats (`METRICS`)."""
        return {"train_loss": self.loss, "segments_per_second": self.rate, "data_wait_share": self.wait_share}


def epoch_line(epoch: int, stats: Dict[str, Any], best: bool = False) -> str:
    """The epoch's train.log line."""
    parts = [text.format(**stats) for key, (_, text) in METRICS.items() if text is not None and key in stats]
    return f"epoch {epoch}: " + ", ".join(parts) + (" *best*" if best else "")


class Reporter:
    """Writes each epoch's stats: TensorBoard (under `folder`) on rank 0, the train.log line on every process.
    A context manager: the TensorBoard writer is open inside `with`."""

    def __init__(self, folder: Path, ranks: Ranks, classes: Sequence[str], resumed_after: Optional[int] = None):
        self.folder, self.ranks, self.classes = folder, ranks, list(classes)
        self.resumed_after = resumed_after   # the epoch last.pt holds, for a resumed run
        self.writer = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "Reporter":
        if self.ranks.main:
            from torch.utils.tensorboard import SummaryWriter   # heavy import, only when training
            # a run killed after reporting an epoch but before its last.pt reports that epoch again: TensorBoard
            # hides what the stopped run wrote from there on, so each epoch's point is there once
            purge = None if self.resumed_after is None else self.resumed_after + 1
            self.writer = self._stack.enter_context(SummaryWriter(str(self.folder), purge_step=purge))
        return self

    def __exit__(self, *exc) -> None:
        self.writer = None
        self._stack.close()

    def epoch(self, epoch: int, stats: Dict[str, Any], best: bool = False) -> None:
        """`stats`: a value for keys of `METRICS` (a refit has no dev ones), and the dev confusion matrix
        under `CONFUSION` where there is a dev set."""
        if self.writer is not None:
            for key, (tag, _) in METRICS.items():
                if key in stats:
                    self.writer.add_scalar(tag, stats[key], epoch)
            if CONFUSION in stats:
                self.writer.add_image("dev/confusion", confusion_image(np.asarray(stats[CONFUSION]), self.classes),
                                      epoch, dataformats="HWC")
        log.info("%s", epoch_line(epoch, stats, best))


def log_to_memory() -> logging.handlers.MemoryHandler:
    """Records kept back (INFO and up) until train.log exists (`log_to`); dropped if it never does."""
    handler = logging.handlers.MemoryHandler(capacity=10 ** 6, flushLevel=logging.CRITICAL + 1, flushOnClose=False)
    handler.setLevel(logging.INFO)
    _add_info_handler(handler)
    return handler


def log_to(path: Path, early: Optional[logging.handlers.MemoryHandler] = None) -> logging.Handler:
    """train.log, beginning with what `early` kept back (which then stops keeping)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    if early is not None:
        logging.getLogger("sertk").removeHandler(early)
        early.setTarget(handler)
        early.flush()
        early.setTarget(None)
    _add_info_handler(handler)
    return handler


def remove_handlers(handlers: List[logging.Handler]) -> None:
    """Stop and close what `log_to_memory` and `log_to` added."""
    for handler in handlers:
        logging.getLogger("sertk").removeHandler(handler)
        handler.close()


def _add_info_handler(handler: logging.Handler) -> None:
    logger = logging.getLogger("sertk")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:  # the log file gets INFO even when the console is quiet
        logger.setLevel(logging.INFO)
