"""A fold's data as a run trains on it: the train and dev data dirs, their features normalised with the
fold's statistics and cut into segments for the model (`load_fold`), and how an epoch draws its batches.

The config's values are checked when it is loaded (sertk.config.loading); what is checked here needs the data,
the feature dump or the model: the class lists, the dump's frames against the model's, utt2gen.
"""
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from torch.utils.data import BatchSampler, RandomSampler

from sertk.checkpoint import load_checkpoint
from sertk.data.datadir import DataDir
from sertk.data.ops import combine
from sertk.data.protocols import split_checksum
from sertk.features.dataset import SegmentDataset, check_model_length
from sertk.features.model_features import check_model_features
from sertk.features.reading import Normalization, StreamLayout, load_streams
from sertk.features.segments import SegmentConfig
from sertk.features.storage import read_dump_config
from sertk.models.base import SERModel
from sertk.config.loading import ConfigError
from sertk.train.data import length_batches
from sertk.train.distributed import Ranks

log = logging.getLogger(__name__)


@dataclass
class Fold:
    train_dd: DataDir            # a refit's: train and dev together
    dev_dd: Optional[DataDir]    # None in a refit (train.refit_epochs): nothing is chosen on dev
    classes: List[str]
    model: SERModel              # as `make_model` built it: the caller puts it behind the layout's layer sums
    norm: Normalization          # the fold's statistics (from its training part)
    layout: StreamLayout         # what the dump says about the streams the model reads
    train_set: SegmentDataset
    dev_set: Optional[SegmentDataset]
    checksums: Dict[str, str]    # the fold's train and dev lists as given (fold_checksums)


def fold_checksums(train_dd: DataDir, dev_dd: DataDir) -> Dict[str, str]:
    """A fold's train and dev lists digested as `sertk data check` digests them; checkpoints keep them, so a
    refit can check that it is given the fold its source was trained on."""
    return {"train": split_checksum(train_dd), "dev": split_checksum(dev_dd)}


def differing_lists(recorded: Dict[str, str], fold_dir: Path) -> str:
    """Which of the lists of the fold in `fold_dir` ("train", "dev", "train and dev") differ from those a
    checkpoint `recorded` (its fold_checksums); "" if none. Reads the lists only, no features."""
    given = fold_checksums(DataDir.load(fold_dir / "train"), DataDir.load(fold_dir / "dev"))
    return " and ".join(split for split in ("train", "dev") if recorded.get(split) != given[split])


def check_trained_inputs(checkpoint: Path, fold_dir: Path, dump_dir: Path, use: str) -> None:
    """ConfigError (FeatureError) unless `fold_dir`'s train and dev lists (`dump_dir`'s features of the model's
    streams) are those `checkpoint` was trained on, for a finished run reused without training: a grid's
    choice, a refit's source. `use` ends the message: what to give. Records an older checkpoint lacks are not
    checked. Reads the lists and the dump's config only."""
    state = load_checkpoint(checkpoint, mmap=True)
    if not state.get("fold_checksums"):
        log.warning("%s records no fold lists (trained before sertk kept them): check that %s is the fold it was "
                    "trained on", checkpoint, fold_dir)
    changed = differing_lists(state["fold_checksums"], fold_dir) if state.get("fold_checksums") else ""
    if changed:
        raise ConfigError(f"{fold_dir}: not the fold {checkpoint.parent} was trained on (its {changed} list differs "
                          f"from the one in {checkpoint}); {use}")
    recorded = state.get("features")
    if recorded is not None:
        check_model_features(recorded, read_dump_config(dump_dir), list(recorded.get("streams") or {}), dump_dir,
                             f"the run in {checkpoint.parent}")


def _check_dev_held_out(fold_dir: Path, train_dd: DataDir, dev_dd: DataDir) -> None:
    """Dev chooses the checkpoint: a dev set that repeats training utterances (by id or by audio file) would
    choose the model that memorised them. `sertk data check` finds this too, but training may be run without it."""
    shared = [u for u in dev_dd.utts if u in train_dd.utt2spk]
    if not train_dd.segments and not dev_dd.segments:   # with segments, wav.scp names recordings, which parts share
        train_audio = set(train_dd.tables["wav.scp"].values())
        shared += [u for u in dev_dd.utts if u not in train_dd.utt2spk and dev_dd.tables["wav.scp"][u] in train_audio]
    if shared:
        raise ConfigError(f"{fold_dir}: dev repeats {len(shared)} training utterance(s) or their audio (e.g. "
                          f"{shared[0]}); dev must be held out (sertk data check on the protocol dir says more)")


def load_fold(config: Dict[str, Any], fold_dir: Path, dump_dir: Path,
              make_model: Callable[[int], SERModel]) -> Fold:
    """The fold in `fold_dir` (train/, dev/) with its features from `dump_dir`, for the model that
    `make_model(number of classes)` builds, segmented as config["segments"] says. A refit
    (train.refit_epochs) trains on train and dev together and has no dev set."""
    train_dd, dev_dd = DataDir.load(fold_dir / "train"), DataDir.load(fold_dir / "dev")
    classes = list(train_dd.labels.classes)
    if list(dev_dd.labels.classes) != classes:
        raise ConfigError(f"{fold_dir}: train and dev have different class lists")
    _check_dev_held_out(fold_dir, train_dd, dev_dd)
    checksums = fold_checksums(train_dd, dev_dd)
    if config["train"]["refit_epochs"] is not None:
        train_dd = combine([train_dd, dev_dd], [str(fold_dir / "train"), str(fold_dir / "dev")])
        dev_dd = None
    dev_dirs = [dev_dd] if dev_dd is not None else []
    model = make_model(len(classes))
    layout = StreamLayout.for_model(dump_dir, model)   # the streams' levels and widths, before reading them
    feats = load_streams(dump_dir, list(model.streams), train_dd.utts + [u for d in dev_dirs for u in d.utts])
    norm = Normalization.fit(config["features"]["cmvn"], feats, train_dd, dev_dirs, clip=config["features"]["clip"],
                             speaker_min_rows=config["features"]["speaker_min_rows"],
                             speaker_min_utts=config["features"]["speaker_min_utts"])
    seg = SegmentConfig.from_config(config["segments"])
    length, hop = layout.frames(seg)
    fixed = model.fixed_frames
    if fixed is not None and fixed != length:
        raise ConfigError(f"model {config['model']['name']} takes {fixed}-frame segments, but segments.length "
                          f"{seg.length} s is {length} frames of {layout.frame_shift} s; set model.frames={length}")
    train_seg = SegmentConfig(seg.length, config["segments"]["train_hop"] or seg.hop, seg.tail)
    train_hop = layout.frames(train_seg, "segments (train_hop)")[1]
    windows = train_windows(config["segments"], layout)
    with_gender = config["loss"]["gender_weight"] > 0
    train_set = SegmentDataset(train_dd, feats, length, train_hop, norm.apply, classes, seg.tail,
                               with_gender=with_gender, levels=layout.levels, windows=windows)
    if with_gender:
        check_genders(train_set, fold_dir / "train")
    dev_set = (SegmentDataset(dev_dd, feats, length, hop, norm.apply, classes, seg.tail, levels=layout.levels)
               if dev_dd is not None else None)
    for name, dataset in (("train", train_set), ("dev", dev_set)):
        if dataset is not None:
            check_model_length(model, dataset, str(fold_dir / name))
    return Fold(train_dd, dev_dd, classes, model, norm, layout, train_set, dev_set, checksums)


def train_windows(segments: Dict[str, Any], layout: StreamLayout) -> str:
    """segments.train_windows for this dump: a centre crop is not one of the windows segment-level rows follow."""
    windows = segments["train_windows"]
    if windows == "center" and layout.windows:
        raise ConfigError(f"segments.train_windows center cuts windows that the segment-level stream(s) "
                          f"{sorted(layout.windows)} hold no rows for; use all")
    return windows


def check_genders(train_set: SegmentDataset, train_dir: Path) -> None:
    """The gender task learns from utt2gen: none at all is an error, a few missing are counted and skipped."""
    utts = len(train_set.labels)
    known = len(train_set.genders)
    if known == 0:
        raise ConfigError(f"{train_dir}: loss.gender_weight > 0 needs utt2gen (f/m per utterance), and this data dir "
                          "has none; set loss.gender_weight=0")
    if known < utts:
        log.warning("%s: %d of %d training utterances have no utt2gen entry; the gender loss skips them",
                    train_dir, utts - known, utts)


def epoch_batches(train_set: SegmentDataset, batch_size: int, bucket: bool,
                  generator: torch.Generator) -> Tuple[Union[BatchSampler, List[List[int]]], bool]:
    """The epoch's global batches (the same on every process), and whether the loader draws its seed
    from `generator` (as a shuffling DataLoader does, so one-process runs stay as they were)."""
    # a last incomplete batch is dropped (BatchNorm never sees a batch of 1), unless it is the only one
    drop_last = len(train_set) > batch_size
    if bucket:   # train.bucket: batches of similar lengths, still shuffled
        lengths = [train_set.frames(i) for i in range(len(train_set))]
        return length_batches(lengths, batch_size, generator, drop_last), False
    return BatchSampler(RandomSampler(train_set, generator=generator), batch_size, drop_last), True


def loader_options(num_workers: Optional[int], device: str, ranks: Ranks) -> Dict[str, Any]:
    """DataLoader options: on a GPU, worker processes collate the next batches into pinned memory while the
    GPU computes (auto: up to 4 per process); on the CPU the features are in memory already and workers would
    only take cores from the model (auto: 0)."""
    on_gpu = device.startswith("cuda")
    if num_workers is None:
        num_workers = min(4, max(1, (os.cpu_count() or 1) // ranks.world - 1)) if on_gpu else 0
    options: Dict[str, Any] = {"num_workers": num_workers, "pin_memory": on_gpu}
    if num_workers:
        options["prefetch_factor"] = 4
    return options
