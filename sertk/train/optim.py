"""The optimizer and the learning-rate schedule of a run, from the config's `optim` and `scheduler` sections.

Both are tables: `OPTIMIZERS` (optim.name -> torch optimizer) and `SCHEDULERS` (scheduler.name -> how it is
built and what steps it). The config's values are checked when it is loaded (sertk.config.schema: CHECKS,
COMBINATIONS), so nothing here checks them again; a new kind is one table entry (and its name in config_schema.py).
"""
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Optional

import torch
from torch.optim import lr_scheduler

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}

EPOCH = "epoch"     # stepped once after every epoch
DEV_UA = "dev_ua"   # stepped with the epoch's dev UA, which should go up


@dataclass(frozen=True)
class SchedulerKind:
    """How a scheduler.name is built, (cfg, optimizer, epochs) -> a torch scheduler (None: a constant
    rate), and what steps it (`EPOCH` or `DEV_UA`)."""
    build: Callable[[Dict[str, Any], torch.optim.Optimizer, int], Optional[Any]]
    steps_on: str = EPOCH


def warmup_cosine(warmup: int, min_ratio: float, epochs: int) -> Callable[[int], float]:
    """The lr factor of each epoch (0-based: epochs already trained): warmup linear steps 1/W .. 1, then
    a cosine from 1 down to min_ratio at the last epoch (SpeechFormer++'s schedule, ESERNet spec 4).
    A run of no more epochs than warmup (a smoke test) is all warm-up."""
    def factor(done: int) -> float:
        if done < warmup:
            return (done + 1) / warmup
        span = max(epochs - 1 - warmup, 1)
        progress = min((done - warmup) / span, 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


SCHEDULERS: Dict[str, SchedulerKind] = {
    "none": SchedulerKind(lambda cfg, optimizer, epochs: None),
    # x gamma every step_size epochs
    "step": SchedulerKind(lambda cfg, optimizer, epochs: lr_scheduler.StepLR(optimizer, cfg["step_size"],
                                                                              cfg["gamma"])),
    # x gamma after each epoch in milestones
    "multistep": SchedulerKind(lambda cfg, optimizer, epochs: lr_scheduler.MultiStepLR(
        optimizer, sorted(cfg["milestones"]), cfg["gamma"])),
    # x gamma after every epoch
    "exponential": SchedulerKind(lambda cfg, optimizer, epochs: lr_scheduler.ExponentialLR(optimizer, cfg["gamma"])),
    # x factor when dev UA has not gone up for patience epochs
    "plateau": SchedulerKind(lambda cfg, optimizer, epochs: lr_scheduler.ReduceLROnPlateau(
        optimizer, "max", cfg["factor"], cfg["patience"]), DEV_UA),
    # to 0 over the epochs
    "cosine": SchedulerKind(lambda cfg, optimizer, epochs: lr_scheduler.CosineAnnealingLR(optimizer, epochs)),
    # linear warm-up over warmup_epochs, then a cosine to lr x min_lr_ratio at the last epoch
    "warmup_cosine": SchedulerKind(lambda cfg, optimizer, epochs: lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(cfg["warmup_epochs"], cfg["min_lr_ratio"], epochs))),
}


def build_optimizer(cfg: Dict[str, Any], params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer of the config's `optim` section over `params`."""
    options = {}
    if cfg.get("betas") is not None:
        options["betas"] = tuple(float(b) for b in cfg["betas"])
    return OPTIMIZERS[cfg["name"]](params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], **options)


class Schedule:
    """The run's learning-rate schedule: its torch scheduler (None for scheduler.name none), stepped once
    per epoch as its kind says; `state_dict` is the scheduler's (None without one), as last.pt keeps it."""

    def __init__(self, kind: SchedulerKind, scheduler: Optional[Any]):
        self.kind, self.scheduler = kind, scheduler

    def step(self, dev_ua: float) -> None:
        """After an epoch whose dev UA is `dev_ua`."""
        if self.scheduler is None:
            return
        if self.kind.steps_on == DEV_UA:
            self.scheduler.step(dev_ua)
        else:
            self.scheduler.step()

    def state_dict(self) -> Optional[Dict[str, Any]]:
        return self.scheduler.state_dict() if self.scheduler is not None else None

    def load_state_dict(self, state: Optional[Dict[str, Any]]) -> None:
        if self.scheduler is not None and state is not None:
            self.scheduler.load_state_dict(state)


def build_schedule(cfg: Dict[str, Any], optimizer: torch.optim.Optimizer, epochs: int) -> Schedule:
    """The schedule of the config's `scheduler` section for a run of `epochs` epochs."""
    kind = SCHEDULERS[cfg["name"]]
    return Schedule(kind, kind.build(cfg, optimizer, epochs))
