"""`sertk train`: one model on one fold, selected on dev UA, resumable from `last.pt`.

An exp dir holds config.yaml (resolved), environment.yaml, train.log, tensorboard/, best.pt
(best dev UA: what decoding uses) and last.pt (everything needed to resume). Each epoch starts
from seeds derived from (seed, epoch) and last.pt is written at every epoch's end, so a run that
was interrupted and resumed ends with the same weights as one that never stopped.
"""
import contextlib
import copy
import logging
import logging.handlers
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, RandomSampler
from tqdm import tqdm

from sertk import __version__
from sertk.data.datadir import DataDir
from sertk.envinfo import environment
from sertk.features.segments import TRAIN_WINDOWS, SegmentConfig
from sertk.fsutil import atomic_write_text
from sertk.models import build_model
from sertk.models.layer_sum import with_layer_sums
from sertk.score import confusion_image, metrics
from sertk.train.checkpoint import load_checkpoint, save_checkpoint
from sertk.train.config import ConfigError, model_options, with_new_defaults
from sertk.train import distributed
from sertk.train.data import (SegmentDataset, check_model_length, class_weights, collate, length_batches,
                              spec_augment)
from sertk.train.distributed import PieceSampler, Ranks
from sertk.train.precision import LEGACY_TRUE, autocast_dtype, precision_record
from sertk.train.features import Normalization, StreamLayout, load_streams
from sertk.train.infer import segment_posteriors, utterance_decisions
from sertk.train.loss import Objective, SegmentLoss

log = logging.getLogger(__name__)
RANK_SEED_STRIDE = 100_003   # process r > 0 of a distributed run draws dropout etc. from seed + r x this
SELECT = {"ua": "UA", "wa_ua": "(WA + UA) / 2"}   # train.select: the dev score that picks best.pt


@dataclass
class TrainSummary:
    best_epoch: int
    best_dev_score: float   # of the train.select metric
    epochs_run: int
    resumed_from: Optional[int]
    metric: str = "UA"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(config: Dict[str, Any], fold_dir: Path, dump_dir: Path, exp_dir: Path, device: str = "cpu",
          ranks: Optional[Ranks] = None) -> TrainSummary:
    """Train in this process, or as one process of a torchrun job (`ranks`: from torchrun's environment
    when not given; see sertk.train.distributed)."""
    fold_dir, dump_dir, exp_dir = Path(fold_dir), Path(dump_dir), Path(exp_dir)
    ranks = ranks or distributed.ranks_from_environment()
    device = distributed.process_device(ranks, device)
    # the exp dir and train.log are made once the run is set up (data, features, model and the config checked
    # against them): a problem found before is one line that leaves nothing behind; what was logged while
    # setting up is kept back and goes into train.log first
    handlers = [_log_to_memory()] if ranks.main else []
    distributed.start(ranks, device)
    try:
        run = _Run(config, fold_dir, dump_dir, exp_dir, device, ranks)
        if ranks.main:
            exp_dir.mkdir(parents=True, exist_ok=True)
            handlers.append(_log_to(exp_dir / "train.log", handlers[0]))
        return run.fit()
    finally:
        distributed.stop(ranks)
        for handler in handlers:
            logging.getLogger("sertk").removeHandler(handler)
            handler.close()


class _Run:
    def __init__(self, config, fold_dir: Path, dump_dir: Path, exp_dir: Path, device: str, ranks: Ranks):
        self.config, self.exp_dir, self.device, self.ranks = config, exp_dir, device, ranks
        self.resume = load_checkpoint(exp_dir / "last.pt") if (exp_dir / "last.pt").is_file() else None
        self.amp = config["train"]["amp"]
        legacy = _legacy_amp(self.resume, config) if self.resume is not None else None
        if legacy is not None:   # begun before `auto` existed: it resumes in the precision it began with
            self.resume["config"] = {**self.resume["config"],
                                     "train": {**self.resume["config"]["train"], "amp": config["train"]["amp"]}}
            self.amp = legacy
        if self.resume is not None and with_new_defaults(self.resume["config"]) != config:
            raise ConfigError(f"{exp_dir} was trained with another config; give a new exp dir or remove it "
                              f"(compare {exp_dir / 'config.yaml'})")
        self.train_dd, self.dev_dd = DataDir.load(fold_dir / "train"), DataDir.load(fold_dir / "dev")
        self.classes = list(self.train_dd.labels.classes)
        if list(self.dev_dd.labels.classes) != self.classes:
            raise ConfigError(f"{fold_dir}: train and dev have different class lists")
        seed_everything(config["train"]["seed"])
        self.model = build_model(config["model"]["name"], len(self.classes), **model_options(config)).to(device)
        self.streams = list(self.model.streams)
        feats = load_streams(dump_dir, self.streams, self.train_dd.utts + self.dev_dd.utts)
        self.norm = Normalization.fit(config["features"]["cmvn"], feats, self.train_dd, [self.dev_dd],
                                      clip=config["features"]["clip"],
                                      speaker_min_rows=config["features"]["speaker_min_rows"])
        seg = SegmentConfig.from_config(config["segments"])
        layout = StreamLayout.for_model(dump_dir, self.model)
        self.model = with_layer_sums(self.model, layout.layers).to(device)
        length, hop = layout.frames(seg)
        fixed = getattr(self.model, "fixed_frames", None)
        if fixed is not None and fixed != length:
            raise ConfigError(f"model {config['model']['name']} takes {fixed}-frame segments, but segments.length "
                              f"{seg.length} s is {length} frames of {layout.frame_shift} s; set model.frames={length}")
        train_seg = SegmentConfig(seg.length, config["segments"]["train_hop"] or seg.hop, seg.tail)
        train_hop = layout.frames(train_seg, "segments (train_hop)")[1]
        train_windows = _train_windows(config["segments"], layout)
        if config["train"]["select"] not in SELECT:
            raise ConfigError(f"train.select must be one of {', '.join(SELECT)}, not {config['train']['select']!r}")
        with_gender = config["loss"]["gender_weight"] > 0
        self.train_set = SegmentDataset(self.train_dd, feats, length, train_hop, self.norm.apply, self.classes,
                                        seg.tail, with_gender=with_gender, levels=layout.levels, windows=train_windows)
        if with_gender:
            _check_genders(self.train_set, fold_dir / "train")
        self.dev_set = SegmentDataset(self.dev_dd, feats, length, hop, self.norm.apply, self.classes, seg.tail,
                                      levels=layout.levels)
        for name, dataset in (("train", self.train_set), ("dev", self.dev_set)):
            check_model_length(self.model, dataset, str(fold_dir / name))
        # what a step trains on: the batch size, or the whole (small) training set (see _batches)
        self.global_batch = min(config["train"]["batch_size"], len(self.train_set))
        if self.global_batch < ranks.world:
            raise ConfigError(f"train.batch_size {config['train']['batch_size']} is the global batch, cut into one "
                              f"piece per process: it (and the {len(self.train_set)} training segments) must be at "
                              f"least the {ranks.world} processes")
        self.objective = _objective(config, self.model, self.train_set, len(self.classes)).to(device)
        if ranks.distributed:
            self.objective.emotion.weight_total = distributed.piece_weight_total(ranks, self.global_batch)
        if ranks.distributed and config["train"]["sync_batchnorm"]:
            self.model = distributed.sync_batchnorm(self.model, device)
        self.step = _Step(self.model, self.objective)
        if ranks.distributed:   # one module, so the gradients of the objective's centers are averaged too
            self.step = DistributedDataParallel(
                self.step, device_ids=[ranks.local_rank] if device.startswith("cuda") else None,
                find_unused_parameters=_leaves_parameters_unused(self.step, self.train_set, config, device))
        self.loader_options = _loader_options(config["train"]["num_workers"], device, ranks)
        self.optimizer = _optimizer(config["optim"], list(self.model.parameters()) +
                                    list(self.objective.parameters()))
        self.scheduler = _scheduler(config["scheduler"], self.optimizer, config["train"]["epochs"])
        # a resumed run keeps the precision it began with, even on another machine
        self.autocast = (autocast_dtype(self.amp, device) if self.resume is None or "autocast" not in self.resume
                         else getattr(torch, self.resume["autocast"]) if self.resume["autocast"] else None)

    def fit(self) -> TrainSummary:
        cfg = self.config["train"]
        state = {"epoch": 0, "best_ua": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": []}
        resumed = None
        if self.resume is not None:
            if self.resume["finished"]:
                log.info("%s: training already finished (best dev %s %.4f at epoch %d); skipping",
                         self.exp_dir, SELECT[cfg["select"]], self.resume["best_ua"], self.resume["best_epoch"])
                return TrainSummary(self.resume["best_epoch"], self.resume["best_ua"], self.resume["epoch"], None,
                                    SELECT[cfg["select"]])
            self._restore(self.resume)
            state = {k: self.resume[k] for k in state}
            resumed = state["epoch"]
            log.info("%s: resuming after epoch %d", self.exp_dir, resumed)
        elif self.ranks.main:
            atomic_write_text(self.exp_dir / "config.yaml", yaml.safe_dump(self.config, sort_keys=False))
            atomic_write_text(self.exp_dir / "environment.yaml", yaml.safe_dump(self._environment(), sort_keys=False))
            log.info("%s: %d train segments (%d utts), %d dev segments (%d utts), %d parameters, device %s%s",
                     self.exp_dir, len(self.train_set), len(self.train_dd.utts), len(self.dev_set),
                     len(self.dev_dd.utts), sum(p.numel() for p in self.model.parameters()), self.device,
                     f", {self.ranks.world} processes" if self.ranks.distributed else "")
        with _writer(self.exp_dir / "tensorboard", self.ranks) as writer:
            while state["epoch"] < cfg["epochs"]:
                epoch = state["epoch"] + 1
                seed_everything(cfg["seed"] * 1000 + epoch + RANK_SEED_STRIDE * self.ranks.rank)
                speed = self._train_epoch(epoch)
                dev = self._evaluate()
                lr = self.optimizer.param_groups[0]["lr"]   # the rate this epoch trained with
                self._step_scheduler(dev["ua"])
                # state keeps the name best_ua for runs written before train.select; it holds the select score
                improved = dev["score"] > state["best_ua"]
                if improved:
                    state.update(best_ua=dev["score"], best_epoch=epoch, bad_epochs=0)
                    self._save_best(epoch, dev)
                else:
                    state["bad_epochs"] += 1
                state["epoch"] = epoch
                state["history"].append({"epoch": epoch, "train_loss": speed.loss, "dev_loss": dev["loss"],
                                         "dev_wa": dev["wa"], "dev_ua": dev["ua"], "lr": lr,
                                         **speed.record()})
                self._log_epoch(writer, epoch, speed, dev, lr, improved)
                stop = state["bad_epochs"] >= cfg["patience"] and epoch >= cfg["min_epochs"]
                finished = stop or epoch >= cfg["epochs"]
                if self.ranks.main:
                    save_checkpoint(self.exp_dir / "last.pt", self._full_state(state, finished))
                if stop:
                    log.info("early stop: dev %s has not improved for %d epochs", SELECT[cfg["select"]], cfg["patience"])
                    break
        distributed.barrier(self.ranks)   # no process leaves before rank 0 has written last.pt
        log.info("best dev %s %.4f at epoch %d", SELECT[cfg["select"]], state["best_ua"], state["best_epoch"])
        return TrainSummary(state["best_epoch"], state["best_ua"], state["epoch"], resumed, SELECT[cfg["select"]])

    def _environment(self) -> Dict[str, Any]:
        env = {**environment(), "precision": precision_record(self.amp, self.device)}
        if self.ranks.distributed:
            env["distributed"] = {"processes": self.ranks.world, "backend": distributed.backend_name(self.ranks)}
        return env

    def _batches(self, generator: torch.Generator):
        """The epoch's global batches (the same on every process), and whether the loader draws its seed
        from `generator` (as a shuffling DataLoader does, so one-process runs stay as they were)."""
        # a last incomplete batch is dropped (BatchNorm never sees a batch of 1), unless it is the only one
        batch_size = self.config["train"]["batch_size"]
        drop_last = len(self.train_set) > batch_size
        if self.config["train"]["bucket"]:
            lengths = [self.train_set.frames(i) for i in range(len(self.train_set))]
            return length_batches(lengths, batch_size, generator, drop_last), False
        return BatchSampler(RandomSampler(self.train_set, generator=generator), batch_size, drop_last), True

    def _train_epoch(self, epoch: int) -> "EpochSpeed":
        self.step.train()
        generator = torch.Generator().manual_seed(self.config["train"]["seed"] * 1000 + epoch)
        batches, seeded = self._batches(generator)
        loader = DataLoader(self.train_set, collate_fn=collate, generator=generator if seeded else None,
                            batch_sampler=PieceSampler(batches, self.ranks) if self.ranks.distributed else batches,
                            **self.loader_options)
        speed = EpochSpeed()
        total, count = 0.0, 0
        waited = time.perf_counter()
        for batch in tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=None if self.ranks.main else True):
            speed.wait += time.perf_counter() - waited
            piece = len(batch["label"])
            if self.config["augment"]["specaugment"]:   # every process draws the whole batch's bands
                spec_augment(batch, self.streams, self.config["augment"], generator,
                             *((self.ranks.rows(self.global_batch), self.global_batch) if self.ranks.distributed
                               else ()))
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(self.device.split(":")[0], dtype=self.autocast or torch.bfloat16,
                                enabled=self.autocast is not None):
                loss = self.step(batch)
            self.optimizer.zero_grad(set_to_none=True)
            # DDP averages gradients over processes: scaled by its share, each piece weighs as in one batch
            (loss * self.ranks.share(piece, self.global_batch) if self.ranks.distributed else loss).backward()
            if self.config["loss"]["center_lr"] is not None:
                self.objective.scale_center_gradients(self.config["loss"]["center_lr"],
                                                      self.optimizer.param_groups[0]["lr"])
            if self.config["train"]["grad_clip"]:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config["train"]["grad_clip"])
            self.optimizer.step()
            total += loss.item() * piece
            count += piece
            waited = time.perf_counter()
        speed.seconds = time.perf_counter() - speed.started
        total, count, speed.wait = distributed.all_sum([total, count, speed.wait], self.ranks)
        speed.wait /= self.ranks.world   # the mean process's wait
        speed.segments, speed.loss = int(count), total / max(count, 1)
        if not math.isfinite(total):
            raise ConfigError(f"epoch {epoch}: the training loss is not finite; lower optim.lr")
        return speed

    def _evaluate(self) -> Dict[str, Any]:
        # every process scores a slice of dev; all get every posterior and so take the same decisions
        distributed.broadcast_buffers(self.model, self.ranks)
        mine = self.ranks.slice(len(self.dev_set))
        post = segment_posteriors(self.model, self.dev_set, self.config["train"]["batch_size"], self.device,
                                  indices=mine if self.ranks.distributed else None)
        post = distributed.gather_rows(post, self.ranks)
        seg_labels = np.array([self.dev_set.labels[s.utt] for s in self.dev_set.segments])
        loss = float(-np.mean(np.log(np.maximum(post[np.arange(len(post)), seg_labels], 1e-12))))
        hyp = utterance_decisions(self.dev_set, post, self.config["decode"]["rule"])
        utts = sorted(hyp)
        m = metrics([self.dev_set.labels[u] for u in utts], [hyp[u] for u in utts], self.classes)
        score = m["ua"] if self.config["train"]["select"] == "ua" else (m["wa"] + m["ua"]) / 2
        return {"loss": loss, "wa": m["wa"], "ua": m["ua"], "score": score, "confusion": m["confusion"]}

    def _step_scheduler(self, dev_ua: float) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(dev_ua)
        elif self.scheduler is not None:
            self.scheduler.step()

    def _log_epoch(self, writer, epoch, speed: "EpochSpeed", dev, lr, improved) -> None:
        if writer is not None:
            for key, value in (("train/loss", speed.loss), ("dev/loss", dev["loss"]), ("dev/wa", dev["wa"]),
                               ("dev/ua", dev["ua"]), ("lr", lr), ("speed/segments_per_second", speed.rate),
                               ("speed/data_wait_share", speed.wait_share)):
                writer.add_scalar(key, value, epoch)
            writer.add_image("dev/confusion", confusion_image(np.asarray(dev["confusion"]), self.classes),
                             epoch, dataformats="HWC")
        log.info("epoch %d: train loss %.4f, dev loss %.4f, dev WA %.4f, dev UA %.4f, lr %.2e, %.0f segments/s "
                 "(%.0f%% waiting for data)%s", epoch, speed.loss, dev["loss"], dev["wa"], dev["ua"], lr, speed.rate,
                 100 * speed.wait_share, " *best*" if improved else "")

    def _save_best(self, epoch: int, dev: Dict[str, Any]) -> None:
        if not self.ranks.main:
            return
        save_checkpoint(self.exp_dir / "best.pt", {
            "model": self.model.state_dict(), "config": self.config, "classes": self.classes,
            "normalization": self.norm.state_dict(), "epoch": epoch,
            "dev": {"wa": dev["wa"], "ua": dev["ua"], "loss": dev["loss"]}, "sertk_version": __version__})

    def _full_state(self, state: Dict[str, Any], finished: bool) -> Dict[str, Any]:
        return {**state, "finished": finished, "config": self.config, "classes": self.classes,
                "model": self.model.state_dict(), "objective": self.objective.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "normalization": self.norm.state_dict(), "sertk_version": __version__,
                "autocast": str(self.autocast).replace("torch.", "") if self.autocast is not None else None}

    def _restore(self, ckpt: Dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.objective.load_state_dict(ckpt.get("objective", {}))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt["scheduler"] is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])


def _legacy_amp(checkpoint: Dict[str, Any], config: Dict[str, Any]) -> Any:
    """For a checkpoint older than `train.amp: auto` (no "autocast" record) resumed with the new default, or
    with the same value as it was written: the setting that gives the precision it began with (`true` then
    meant bf16 on a GPU only). None where the checkpoint is newer or the settings differ."""
    if "autocast" in checkpoint:
        return None
    old, new = checkpoint["config"].get("train", {}).get("amp"), config["train"]["amp"]
    if old is True and new in ("auto", True):
        return LEGACY_TRUE
    if old is False and new in ("auto", False):
        return False
    return None


class _Step(torch.nn.Module):
    """The model and its objective as one module: the loss of a batch. DistributedDataParallel wraps this, so
    the objective's own parameters (SD-CAFF's center-loss centers) are averaged over processes too."""

    def __init__(self, model: torch.nn.Module, objective: Objective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.objective(self.model(batch), batch)


def _leaves_parameters_unused(step: _Step, train_set: SegmentDataset, config: Dict[str, Any], device: str) -> bool:
    """Whether a training step can leave parameters without a gradient (a head the loss does not use), which
    DDP must then search for at every step: a trial step of a copy on a few training segments, RNG untouched.
    The gender task skips segments without utt2gen, so a batch of them could leave its head unused."""
    if config["loss"]["gender_weight"] > 0:
        return True
    trial = copy.deepcopy(step).train()
    with torch.random.fork_rng(devices=[device] if device.startswith("cuda") else []):
        batch = collate([train_set[i] for i in range(min(len(train_set), 4))])
        trial({k: v.to(device) for k, v in batch.items()}).backward()
    return any(p.requires_grad and p.grad is None for p in trial.parameters())


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
        return {"seconds": round(self.seconds, 3), "train_segments": self.segments,
                "segments_per_second": round(self.rate, 2),
                "data_wait_share": round(self.wait_share, 4)}


def _writer(folder: Path, ranks: Ranks):
    """TensorBoard's writer on rank 0; nothing elsewhere."""
    if not ranks.main:
        return contextlib.nullcontext()
    from torch.utils.tensorboard import SummaryWriter   # heavy import, only when training
    return SummaryWriter(str(folder))


def _loader_options(num_workers: Optional[int], device: str, ranks: Ranks) -> Dict[str, Any]:
    """DataLoader options: on a GPU, worker processes collate the next batches into pinned memory while the
    GPU computes (auto: up to 4 per process); on the CPU the features are in memory already and workers would
    only take cores from the model (auto: 0)."""
    on_gpu = device.startswith("cuda")
    if num_workers is None:
        num_workers = min(4, max(1, (os.cpu_count() or 1) // ranks.world - 1)) if on_gpu else 0
    if not isinstance(num_workers, int) or isinstance(num_workers, bool) or num_workers < 0:
        raise ConfigError(f"train.num_workers must be null (auto) or an integer >= 0, not {num_workers!r}")
    options: Dict[str, Any] = {"num_workers": num_workers, "pin_memory": on_gpu}
    if num_workers:
        options["prefetch_factor"] = 4
    return options


def _optimizer(cfg: Dict[str, Any], params) -> torch.optim.Optimizer:
    optimizers = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    if cfg["name"] not in optimizers:
        raise ConfigError(f"optim.name '{cfg['name']}' is not one of {sorted(optimizers)}")
    options = {}
    betas = cfg.get("betas")
    if betas is not None:
        if cfg["name"] == "sgd" or not (isinstance(betas, list) and len(betas) == 2 and all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
            raise ConfigError(f"optim.betas must be null or two numbers in [0, 1) for adam or adamw, not {betas!r}")
        options["betas"] = tuple(float(b) for b in betas)
    return optimizers[cfg["name"]](params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], **options)


def _scheduler(cfg: Dict[str, Any], optimizer, epochs: int):
    name = cfg["name"]
    if name == "none":
        return None
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, cfg["step_size"], cfg["gamma"])
    if name == "exponential":   # x gamma after every epoch
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, cfg["gamma"])
    if name == "multistep":
        milestones = cfg["milestones"]
        if not milestones or any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in milestones):
            raise ConfigError(f"scheduler.milestones must be a list of epochs >= 1 for multistep, not {milestones!r}")
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, sorted(milestones), cfg["gamma"])
    if name == "plateau":  # on dev UA, which should go up
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "max", cfg["factor"], cfg["patience"])
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    if name == "warmup_cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg["warmup_epochs"], cfg["min_lr_ratio"],
                                                                          epochs))
    raise ConfigError(f"scheduler.name '{name}' is not one of none, step, multistep, exponential, plateau, cosine, "
                      "warmup_cosine")


def warmup_cosine(warmup: int, min_ratio: float, epochs: int):
    """The lr factor of each epoch (0-based: epochs already trained): warmup linear steps 1/W .. 1, then
    a cosine from 1 down to min_ratio at the last epoch (SpeechFormer++'s schedule, ESERNet spec 4).
    A run of no more epochs than warmup (a smoke test) is all warm-up."""
    if not (isinstance(warmup, int) and warmup >= 0) or not 0.0 <= min_ratio <= 1.0:
        raise ConfigError(f"scheduler.warmup_epochs must be an integer >= 0 and min_lr_ratio in [0, 1] "
                          f"(got {warmup}, {min_ratio})")

    def factor(done: int) -> float:
        if done < warmup:
            return (done + 1) / warmup
        span = max(epochs - 1 - warmup, 1)
        progress = min((done - warmup) / span, 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def _objective(config: Dict[str, Any], model, train_set: SegmentDataset, num_classes: int) -> Objective:
    """The loss of config["loss"] on top of the emotion SegmentLoss; auxiliary parts need model heads."""
    cfg, name = config["loss"], config["model"]["name"]
    gender, center = cfg["gender_weight"], cfg["center_weight"]
    if not 0.0 <= gender < 1.0 or center < 0:
        raise ConfigError(f"loss.gender_weight must be in [0, 1) and loss.center_weight >= 0 (got {gender}, {center})")
    tasks = getattr(model, "tasks", ("emotion",))
    if gender > 0 and "gender" not in tasks:
        raise ConfigError(f"model {name} has no gender head; set loss.gender_weight=0")
    center_dims = getattr(model, "center_dims", None)
    if center > 0 and not center_dims:
        raise ConfigError(f"model {name} gives no center-loss embedding; set loss.center_weight=0")
    if cfg["center_lr"] is not None and (center <= 0 or cfg["center_lr"] <= 0):
        raise ConfigError("loss.center_lr needs loss.center_weight > 0 and a positive value (or null)")
    reconstruction = cfg["reconstruction_weight"]
    if not 0.0 <= reconstruction < 1.0:
        raise ConfigError(f"loss.reconstruction_weight must be in [0, 1), not {reconstruction}")
    if reconstruction > 0 and "reconstruction" not in tasks:
        raise ConfigError(f"model {name} rebuilds no masked frames; set loss.reconstruction_weight=0")
    weights = class_weights(list(train_set.labels.values()), num_classes) \
        if config["train"]["class_weighted"] else None
    shares = torch.from_numpy(train_set.utterance_shares()) if config["train"]["utterance_weighted"] else None
    return Objective(SegmentLoss(weights, shares), num_classes, gender, center, center_dims, reconstruction)


def _train_windows(segments: Dict[str, Any], layout: StreamLayout) -> str:
    """segments.train_windows, checked: a centre crop is not one of the windows segment-level rows follow."""
    windows = segments["train_windows"]
    if windows not in TRAIN_WINDOWS:
        raise ConfigError(f"segments.train_windows must be one of {', '.join(TRAIN_WINDOWS)}, not {windows!r}")
    if windows == "center" and layout.windows:
        raise ConfigError(f"segments.train_windows center cuts windows that the segment-level stream(s) "
                          f"{sorted(layout.windows)} hold no rows for; use all")
    return windows


def _check_genders(train_set: SegmentDataset, train_dir: Path) -> None:
    """The gender task learns from utt2gen: none at all is an error, a few missing are counted and skipped."""
    utts = len(train_set.labels)
    known = len(train_set.genders)
    if known == 0:
        raise ConfigError(f"{train_dir}: loss.gender_weight > 0 needs utt2gen (f/m per utterance), and this data dir "
                          "has none; set loss.gender_weight=0")
    if known < utts:
        log.warning("%s: %d of %d training utterances have no utt2gen entry; the gender loss skips them",
                    train_dir, utts - known, utts)


def _log_to_memory() -> logging.handlers.MemoryHandler:
    """Records kept back (INFO and up) until train.log exists (`_log_to`); dropped if it never does."""
    handler = logging.handlers.MemoryHandler(capacity=10 ** 6, flushLevel=logging.CRITICAL + 1, flushOnClose=False)
    handler.setLevel(logging.INFO)
    _add_info_handler(handler)
    return handler


def _log_to(path: Path, early: Optional[logging.handlers.MemoryHandler] = None) -> logging.Handler:
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


def _add_info_handler(handler: logging.Handler) -> None:
    logger = logging.getLogger("sertk")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:  # the log file gets INFO even when the console is quiet
        logger.setLevel(logging.INFO)
