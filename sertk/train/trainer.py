"""`sertk train`: one model on one fold, selected on dev UA, resumable from `last.pt`.

An exp dir holds config.yaml (resolved), environment.yaml, train.log, tensorboard/, best.pt
(best dev UA: what decoding uses) and last.pt (everything needed to resume). Each epoch starts
from seeds derived from (seed, epoch) and last.pt is written at every epoch's end, so a run that
was interrupted and resumed ends with the same weights as one that never stopped.

This module runs the loop; its parts live beside it: the fold's data (sertk.train.folddata), the objective
(sertk.train.loss.build_objective: the model's own, see sertk.models.base), the optimizer and schedule
(sertk.train.optim), what an epoch reports to train.log and TensorBoard (sertk.train.reporter). Config values
are checked when the config is loaded (sertk.config.loading); what is checked here needs the run: a resumed
run's config, the processes.
"""
import copy
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from sertk import __version__
from sertk.decode.forward import segment_posteriors, utterance_decisions
from sertk.envinfo import add_resume, environment, write_run_environment
from sertk.features.dataset import SegmentDataset, collate
from sertk.features.model_features import check_model_features, model_feature_config
from sertk.features.storage import read_dump_config
from sertk.fsutil import atomic_write_text
from sertk.models import build_model
from sertk.models.layer_sum import with_layer_sums
from sertk.score import metrics
from sertk.checkpoint import load_checkpoint, save_checkpoint
from sertk.config.loading import ConfigError, model_options, with_new_defaults
from sertk.config.schema import SELECT_METRICS
from sertk.train import distributed
from sertk.train.data import spec_augment
from sertk.train.distributed import PieceSampler, Ranks
from sertk.train.extend import (check_best_without_last, check_nothing_made_from, early_stopped, raised_values,
                                stops_at)
from sertk.train.folddata import differing_lists, epoch_batches, load_fold, loader_options
from sertk.train.loss import Objective, build_objective
from sertk.train.optim import build_optimizer, build_schedule
from sertk.train.precision import LEGACY_TRUE, autocast_dtype, precision_record
from sertk.train.reporter import EpochSpeed, Reporter, log_to, log_to_memory, remove_handlers

log = logging.getLogger(__name__)
RANK_SEED_STRIDE = 100_003   # process r > 0 of a distributed run draws dropout etc. from seed + r x this


@dataclass
class TrainSummary:
    best_epoch: int
    best_dev_score: float   # of the train.select metric
    epochs_run: int
    resumed_from: Optional[int]
    metric: str = "UA"


# The models that say so (SERModel.channels_last) train with their 2-D convolutions in channels-last memory
# layout: the same values, stored as oneDNN's bf16 kernels want them, so fewer layout conversions around
# convolutions and pooling (docs/training.md). False: the plain layout of before (benchmarks/train.py's `old`).
CHANNELS_LAST = True


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
    handlers = [log_to_memory()] if ranks.main else []
    distributed.start(ranks, device)
    run = None
    try:
        run = _Run(config, fold_dir, dump_dir, exp_dir, device, ranks)
        if ranks.main:
            exp_dir.mkdir(parents=True, exist_ok=True)
            handlers.append(log_to(exp_dir / "train.log", handlers[0]))
        summary = run.fit()
        # the model, optimizer and loaders go while the process group is still there: a gloo group whose
        # last reference went with them after it was destroyed once hung a rank at exit (see distributed.finish)
        del run
        distributed.finish(ranks)
        return summary
    except BaseException as error:   # the same on the way out with an error: the run, and what its traceback holds
        run = None
        distributed.release(ranks, error)
        raise
    finally:
        distributed.stop(ranks)
        remove_handlers(handlers)


class TrainingDiverged(ConfigError):
    """The training loss went non-finite: the run cannot go on with these settings (a grid records the point
    as diverged and goes on with the others)."""


class _Run:
    def __init__(self, config, fold_dir: Path, dump_dir: Path, exp_dir: Path, device: str, ranks: Ranks):
        self.config, self.exp_dir, self.device, self.ranks = config, exp_dir, device, ranks
        self.resume = load_checkpoint(exp_dir / "last.pt") if (exp_dir / "last.pt").is_file() else None
        self.amp = config["train"]["amp"]
        self.resumed_config = self.resume["config"] if self.resume is not None else None   # as last.pt holds it
        legacy = _legacy_amp(self.resume, config) if self.resume is not None else None
        if legacy is not None:   # begun before `auto` existed: it resumes in the precision it began with
            self.resume["config"] = {**self.resume["config"],
                                     "train": {**self.resume["config"]["train"], "amp": config["train"]["amp"]}}
            self.amp = legacy
        # the same config, or the same run with train.epochs / train.patience raised, to train on (sertk.train.extend)
        self.raised = (raised_values(with_new_defaults(self.resume["config"]), config, exp_dir)
                       if self.resume is not None else {})
        if self.resume is None and (exp_dir / "best.pt").is_file():
            check_best_without_last(exp_dir, config, load_checkpoint(exp_dir / "best.pt", mmap=True))

        def make_model(num_classes: int) -> torch.nn.Module:
            seed_everything(config["train"]["seed"])
            return build_model(config["model"]["name"], num_classes, **model_options(config)).to(device)
        if self.resume is not None and self.resume.get("fold_checksums"):   # before reading any features
            # another fold's lists (a fold dir made again with other options, or another fold's) would train
            # the rest of the run on other speakers than it began with
            changed = differing_lists(self.resume["fold_checksums"], fold_dir)
            if changed:
                raise ConfigError(f"{fold_dir}: not the fold the run in {exp_dir} began on (its {changed} list "
                                  f"differs from the one in {exp_dir / 'last.pt'}); give that fold, or a new exp dir")
        fold = load_fold(config, fold_dir, dump_dir, make_model)
        self.train_dd, self.dev_dd, self.classes, self.norm = fold.train_dd, fold.dev_dd, fold.classes, fold.norm
        self.train_set, self.dev_set, self.fold_checksums = fold.train_set, fold.dev_set, fold.checksums
        self.streams = list(fold.model.streams)
        # what has a time axis in a batch: the mask and the frame-level streams (whole utterances vary in it)
        self._time_keys = ["mask"] + [s for s in self.streams if fold.train_set.levels[s] == "frame"]
        # what the model's streams hold, kept in its checkpoints for decode and pack to check dumps against;
        # a resumed run goes on only with features computed as those it began with
        dump_config = read_dump_config(dump_dir)
        if self.resume is not None:
            check_model_features(self.resume.get("features"), dump_config, self.streams, dump_dir,
                                 f"the run in {exp_dir}")
        self.features = model_feature_config(dump_config, self.streams)
        self.model = with_layer_sums(fold.model, fold.layout.layers).to(device)
        if CHANNELS_LAST and fold.model.channels_last:   # 4-D weights (2-D convolutions) laid out as NHWC
            self.model.to(memory_format=torch.channels_last)
        # what a step trains on: the batch size, or the whole (small) training set (see epoch_batches)
        self.global_batch = min(config["train"]["batch_size"], len(self.train_set))
        if self.global_batch < ranks.world:
            raise ConfigError(f"train.batch_size {config['train']['batch_size']} is the global batch, cut into one "
                              f"piece per process: it (and the {len(self.train_set)} training segments) must be at "
                              f"least the {ranks.world} processes")
        if ranks.distributed and config["optim"]["name"] == "lbfgs":   # its line search reads this process's loss only
            raise ConfigError("optim.name lbfgs trains in one process: run sertk train without torchrun")
        self.objective = build_objective(config, self.model, self.train_set, len(self.classes)).to(device)
        if ranks.distributed:
            self.objective.emotion.weight_total = distributed.piece_weight_total(ranks, self.global_batch)
        if ranks.distributed and config["train"]["sync_batchnorm"]:
            self.model = distributed.sync_batchnorm(self.model, device)
        self.step = _Step(self.model, self.objective)
        if ranks.distributed:   # one module, so the gradients of the objective's centers are averaged too
            self.step = DistributedDataParallel(
                self.step, device_ids=[ranks.local_rank] if device.startswith("cuda") else None,
                find_unused_parameters=_leaves_parameters_unused(self.step, self.train_set, config, device))
        self.loader_options = loader_options(config["train"]["num_workers"], device, ranks)
        self.optimizer = build_optimizer(config["optim"], list(self.model.parameters()) +
                                         list(self.objective.parameters()))
        self.schedule = build_schedule(config["scheduler"], self.optimizer, config["train"]["epochs"])
        # a resumed run keeps the precision it began with, even on another machine
        self.autocast = (autocast_dtype(self.amp, device) if self.resume is None or "autocast" not in self.resume
                         else getattr(torch, self.resume["autocast"]) if self.resume["autocast"] else None)

    def _record_config(self, config: Optional[Dict[str, Any]] = None) -> None:
        """config.yaml: the config last.pt holds (`config`, default this run's), written only when the file
        says something else."""
        config = self.config if config is None else config
        path = self.exp_dir / "config.yaml"
        try:
            same = path.is_file() and yaml.safe_load(path.read_text()) == config
        except yaml.YAMLError:
            same = False
        if not same:
            atomic_write_text(path, yaml.safe_dump(config, sort_keys=False))

    def fit(self) -> TrainSummary:
        cfg = self.config["train"]
        state = {"epoch": 0, "best_ua": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": []}
        resumed = None
        if self.resume is not None:
            if not self.raised and self.ranks.main:   # a train-on stopped before it rewrote config.yaml
                self._record_config(self.resumed_config)
            trains_on = bool(self.raised) and not stops_at(self.resume, cfg)   # a stopped run, values raised
            if self.resume["finished"] and not trains_on:
                if self.raised:   # e.g. a longer patience for a run that ran all its epochs
                    log.info("%s: %s leaves the run finished, with nothing to train on", self.exp_dir,
                             _change_text(self.raised))
                if cfg["refit_epochs"] is not None:
                    log.info("%s: refit already finished (%d epochs); skipping", self.exp_dir, self.resume["epoch"])
                else:
                    log.info("%s: training already finished (best dev %s %.4f at epoch %d); skipping", self.exp_dir,
                             SELECT_METRICS[cfg["select"]], self.resume["best_ua"], self.resume["best_epoch"])
                if not (self.exp_dir / "best.pt").is_file():   # nothing can make it again but training anew
                    raise ConfigError(f"{self.exp_dir}: training has finished, but its best.pt (the dev-chosen model, "
                                      "or a refit's) is missing; train in a new exp dir, or remove this one to train "
                                      "it again")
                return TrainSummary(self.resume["best_epoch"], self.resume["best_ua"], self.resume["epoch"], None,
                                    SELECT_METRICS[cfg["select"]])
            if self.raised:
                check_nothing_made_from(self.exp_dir)
                log.info("%s: %s (the same run, trained on from last.pt)", self.exp_dir, _change_text(self.raised))
            self._restore(self.resume)
            state = {k: self.resume[k] for k in state}
            resumed = state["epoch"]
            if self.ranks.main:   # the commit and machine it goes on under, beside the ones it started with
                add_resume(self.exp_dir, resumed, self._environment())
            log.info("%s: %s after epoch %d", self.exp_dir,
                     "training on" if self.resume["finished"] else "resuming", resumed)
        elif self.ranks.main:
            if (self.exp_dir / "best.pt").is_file():   # its train.log goes on below the stopped run's lines
                log.info("%s: best.pt but no last.pt (a run stopped before its first epoch's checkpoint was "
                         "written): training from epoch 1, and best.pt will be replaced", self.exp_dir)
            self._record_config()
            write_run_environment(self.exp_dir, self._environment())
            dev = (f"{len(self.dev_set)} dev segments ({len(self.dev_dd.utts)} utts)" if self.dev_set is not None
                   else f"no dev set (a refit on train + dev: {cfg['refit_epochs']} epochs, the last one's model kept)")
            log.info("%s: %d train segments (%d utts), %s, %d parameters, device %s%s",
                     self.exp_dir, len(self.train_set), len(self.train_dd.utts), dev,
                     sum(p.numel() for p in self.model.parameters()), self.device,
                     f", {self.ranks.world} processes" if self.ranks.distributed else "")
            present = set(self.dev_dd.utt2emo.values()) if self.dev_dd is not None else set(self.classes)
            absent = [c for c in self.classes if c not in present]
            if absent:   # dev UA averages the classes present: the choice is blind to these
                log.warning("%s: dev has no %s: the dev %s that chooses the checkpoint averages the other %d classes",
                            self.exp_dir, ", ".join(absent), SELECT_METRICS[cfg["select"]],
                            len(self.classes) - len(absent))
        refit = cfg["refit_epochs"] is not None
        config_pending = bool(self.raised)
        run_epochs = cfg["refit_epochs"] if refit else cfg["epochs"]   # a refit: the first N of the schedule's
        with Reporter(self.exp_dir / "tensorboard", self.ranks, self.classes, resumed) as reporter:
            while state["epoch"] < run_epochs:
                epoch = state["epoch"] + 1
                seed_everything(cfg["seed"] * 1000 + epoch + RANK_SEED_STRIDE * self.ranks.rank)
                started = time.perf_counter()
                speed = self._train_epoch(epoch)
                dev = self._evaluate() if not refit else None
                epoch_seconds = round(time.perf_counter() - started, 3)   # training pass and dev scoring
                lr = self.optimizer.param_groups[0]["lr"]   # the rate this epoch trained with
                self.schedule.step(dev["ua"] if dev else None)   # plateau, the one on dev UA, refuses a refit
                # state keeps the name best_ua for runs written before train.select; it holds the select score
                improved = dev["score"] > state["best_ua"] if dev else epoch == run_epochs
                if improved:
                    state.update(best_ua=dev["score"] if dev else state["best_ua"], best_epoch=epoch, bad_epochs=0)
                    self._save_best(epoch, dev)
                else:
                    state["bad_epochs"] += 1
                state["epoch"] = epoch
                scores = {"dev_loss": dev["loss"], "dev_wa": dev["wa"], "dev_ua": dev["ua"]} if dev else {}
                state["history"].append({"epoch": epoch, "train_loss": speed.loss, **scores, "lr": lr,
                                         **speed.record(), "epoch_seconds": epoch_seconds})
                reporter.epoch(epoch, {**speed.stats(), **scores, "lr": lr,
                                       **({"confusion": dev["confusion"]} if dev else {})}, improved and not refit)
                stop = dev is not None and early_stopped(state, cfg)
                finished = stop or epoch >= run_epochs
                if self.ranks.main:
                    save_checkpoint(self.exp_dir / "last.pt", self._full_state(state, finished))
                    if config_pending:   # config.yaml says the raised values once last.pt holds them too
                        self._record_config()
                        config_pending = False
                if stop:
                    log.info("early stop: dev %s has not improved for %d epochs", SELECT_METRICS[cfg["select"]],
                             cfg["patience"])
                    break
        distributed.barrier(self.ranks)   # no process leaves before rank 0 has written last.pt
        if refit:
            log.info("refit: the model after epoch %d is best.pt", state["epoch"])
        else:
            log.info("best dev %s %.4f at epoch %d", SELECT_METRICS[cfg["select"]], state["best_ua"],
                     state["best_epoch"])
        return TrainSummary(state["best_epoch"], state["best_ua"], state["epoch"], resumed,
                            SELECT_METRICS[cfg["select"]])

    def _environment(self) -> Dict[str, Any]:
        # "gpu" names the machine's GPUs; "device" the one this run trained on (cuda:N on a multi-GPU machine)
        env = {**environment(), "device": self.device, "precision": precision_record(self.amp, self.device)}
        if self.ranks.distributed:
            env["distributed"] = {"processes": self.ranks.world, "backend": distributed.backend_name(self.ranks)}
        return env

    def _train_epoch(self, epoch: int) -> EpochSpeed:
        self.step.train()
        generator = torch.Generator().manual_seed(self.config["train"]["seed"] * 1000 + epoch)
        batches, seeded = epoch_batches(self.train_set, self.config["train"]["batch_size"],
                                        self.config["train"]["bucket"], generator)
        pieces = PieceSampler(batches, self.ranks, self.train_set.frames if self.train_set.whole else None) \
            if self.ranks.distributed else None
        loader = DataLoader(self.train_set, collate_fn=collate, generator=generator if seeded else None,
                            batch_sampler=pieces if pieces is not None else batches, **self.loader_options)
        speed = EpochSpeed()
        total, count = 0.0, 0
        waited = time.perf_counter()
        for batch in tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=None if self.ranks.main else True):
            speed.wait += time.perf_counter() - waited
            piece = len(batch["label"])
            if pieces is not None and self.train_set.whole:
                batch = distributed.pad_to_batch_longest(batch, self._time_keys, pieces.longest.popleft())
            if self.config["augment"]["specaugment"]:   # every process draws the whole batch's bands
                spec_augment(batch, self.streams, self.config["augment"], generator,
                             *((self.ranks.rows(self.global_batch), self.global_batch) if self.ranks.distributed
                               else ()))
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            losses = []
            self.optimizer.step(lambda: self._loss_and_gradients(batch, piece, losses))
            total += losses[0].item() * piece   # the batch's loss before the step (L-BFGS computes several)
            count += piece
            waited = time.perf_counter()
        speed.seconds = time.perf_counter() - speed.started
        total, count, speed.wait = distributed.all_sum([total, count, speed.wait], self.ranks)
        speed.wait /= self.ranks.world   # the mean process's wait
        speed.segments, speed.loss = int(count), total / max(count, 1)
        if not math.isfinite(total):
            raise TrainingDiverged(f"epoch {epoch}: the training loss is not finite; lower optim.lr")
        return speed

    def _loss_and_gradients(self, batch: Dict[str, torch.Tensor], piece: int, losses: list) -> torch.Tensor:
        """The optimizer's closure: the batch's loss, with fresh gradients (appended to `losses` too)."""
        with torch.autocast(self.device.split(":")[0], dtype=self.autocast or torch.bfloat16,
                            enabled=self.autocast is not None):
            loss = self.step(batch)
        self.optimizer.zero_grad(set_to_none=True)
        # DDP averages gradients over processes: scaled by its share, each piece weighs as in one batch
        (loss * self.ranks.share(piece, self.global_batch) if self.ranks.distributed else loss).backward()
        self.objective.after_backward(self.optimizer.param_groups[0]["lr"])   # e.g. SD-CAFF's center_lr
        if self.config["train"]["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config["train"]["grad_clip"])
        losses.append(loss.detach())
        return loss

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

    def _save_best(self, epoch: int, dev: Optional[Dict[str, Any]]) -> None:
        """best.pt: the model of `epoch`, with its dev scores (None: a refit's final model)."""
        if not self.ranks.main:
            return
        save_checkpoint(self.exp_dir / "best.pt", {
            "model": self.model.state_dict(), "config": self.config, "classes": self.classes,
            "normalization": self.norm.state_dict(), "epoch": epoch,
            "dev": {"wa": dev["wa"], "ua": dev["ua"], "loss": dev["loss"]} if dev else None,
            "fold_checksums": self.fold_checksums, "features": self.features, "sertk_version": __version__})

    def _full_state(self, state: Dict[str, Any], finished: bool) -> Dict[str, Any]:
        return {**state, "finished": finished, "config": self.config, "classes": self.classes,
                "model": self.model.state_dict(), "objective": self.objective.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.schedule.state_dict(),
                "normalization": self.norm.state_dict(), "fold_checksums": self.fold_checksums,
                "features": self.features,
                "sertk_version": __version__, "autocast": str(self.autocast).replace("torch.", "") if self.autocast is not None else None}

    def _restore(self, ckpt: Dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.objective.load_state_dict(ckpt.get("objective", {}))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.schedule.load_state_dict(ckpt["scheduler"])


def _change_text(raised: Dict[str, Any]) -> str:
    return ", ".join(f"train.{k} {before} -> {now}" for k, (before, now) in raised.items())


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
