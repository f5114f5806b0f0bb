"""The optimizer and the learning-rate schedule of a run, from the config's `optim` and `scheduler` sections.

Both are tables: `OPTIMIZERS` (optim.name -> how the optimizer is built; L-BFGS is torch's with weight decay
added) and `SCHEDULERS` (scheduler.name -> how it is built and what steps it). The config's values are checked
when it is loaded (sertk.config.schema: CHECKS, COMBINATIONS), so nothing here checks them again; a new kind is
one table entry (and its name in config_schema.py).
"""
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Optional

import torch
from torch.optim import lr_scheduler


class L2LBFGS(torch.optim.LBFGS):
    """torch's L-BFGS with a strong-Wolfe line search, and weight decay as torch's other optimizers mean it:
    wd / 2 ||p||^2 added to the loss of every closure call (so the line search sees it too). Full-batch use
    (train.batch_size >= the training set): each optimizer step is up to max_iter iterations on the whole
    set, which makes a linear head on fixed vectors a logistic regression fitted much as scikit-learn's lbfgs
    solver fits one (sklearn's C is 1 / (wd x N) for N training rows with balanced class weights), except that
    the bias is penalised too, as torch's weight decay does and sklearn does not (measured on a probe fit:
    coefficients 2 % apart, probabilities up to 0.016; without the bias penalty 3e-4 and 1.5e-4)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float, max_iter: int,
                 history_size: int):
        super().__init__(params, lr=lr, max_iter=max_iter, history_size=history_size, line_search_fn="strong_wolfe")
        self.weight_decay = weight_decay

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:   # type: ignore[override]
        params = self.param_groups[0]["params"]

        def with_decay() -> torch.Tensor:
            loss = closure()
            penalty = 0.0
            with torch.no_grad():
                for p in params:
                    if p.grad is not None:   # torch's L-BFGS flattens gradients with view(): channels-last ones too
                        p.grad = p.grad.contiguous()
                    if self.weight_decay:
                        penalty += float(p.square().sum())
                        if p.grad is not None:
                            p.grad.add_(p, alpha=self.weight_decay)
            return loss + 0.5 * self.weight_decay * penalty if self.weight_decay else loss
        return super().step(with_decay)


def _first_order(kind: type) -> Callable[..., torch.optim.Optimizer]:
    """Adam, AdamW, SGD: the options that are not theirs (L-BFGS's) left out."""
    def build(params, lr, weight_decay, max_iter=None, history_size=None, **options):
        return kind(params, lr=lr, weight_decay=weight_decay, **options)
    return build


# optim.name -> (params, lr=, weight_decay=, max_iter=, history_size=, [betas=]) -> optimizer; every optimizer is
# stepped with a closure that computes the batch's loss and gradients (L-BFGS calls it several times)
OPTIMIZERS = {"adam": _first_order(torch.optim.Adam), "adamw": _first_order(torch.optim.AdamW),
              "sgd": _first_order(torch.optim.SGD), "lbfgs": L2LBFGS}

EPOCH = "epoch"     # stepped once after every epoch
DEV_UA = "dev_ua"   # stepped with the epoch's dev UA, which should go up


@dataclass(frozen=True)
class SchedulerKind:
    """How a scheduler.name is built, (cfg, optimizer, epochs) -> a torch scheduler (None: a constant
    rate), and what steps it (`EPOCH` or `DEV_UA`)."""
    build: Callable[[Dict[str, Any], torch.optim.Optimizer, int], Optional[Any]]
    steps_on: str = EPOCH
    shaped_by_epochs: bool = False   # its rate at epoch e depends on the run's train.epochs (cosine shapes)


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
    "cosine": SchedulerKind(lambda cfg, optimizer, epochs: lr_scheduler.CosineAnnealingLR(optimizer, epochs),
                            shaped_by_epochs=True),
    # linear warm-up over warmup_epochs, then a cosine to lr x min_lr_ratio at the last epoch
    "warmup_cosine": SchedulerKind(lambda cfg, optimizer, epochs: lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(cfg["warmup_epochs"], cfg["min_lr_ratio"], epochs)), shaped_by_epochs=True),
}


def build_optimizer(cfg: Dict[str, Any], params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer of the config's `optim` section over `params`."""
    options = {}
    if cfg.get("betas") is not None:
        options["betas"] = tuple(float(b) for b in cfg["betas"])
    return OPTIMIZERS[cfg["name"]](params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], max_iter=cfg["max_iter"],
                                   history_size=cfg["history_size"], **options)


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
