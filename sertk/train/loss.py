"""Training losses: the segment-level cross-entropy (optionally class- and utterance-weighted), and
the multi-task objective built on it: a gender task, center losses, masked-frame reconstruction;
`build_objective` makes a run's from its config."""
from typing import Any, Callable, Dict, Optional

import torch
from torch import nn
from torch.nn import functional as F

from sertk.data.validate import GENDERS   # utt2gen values; their order gives the gender labels (f 0, m 1)
from sertk.train.config import ConfigError
from sertk.train.data import SegmentDataset, class_weights


class SegmentLoss:
    """Weighted mean cross-entropy over a batch of segments.

    class_weights [C] (e.g. inverse class frequency) weight a segment by its label, as
    torch.nn.CrossEntropyLoss(weight=...) does; segment_weights [num_segments], indexed by the
    batch's `index`, weight it by its own share (e.g. 1 / segments of its utterance, so a long
    utterance does not count more than a short one). The mean is over the weights' sum."""

    def __init__(self, class_weights: Optional[torch.Tensor] = None,
                 segment_weights: Optional[torch.Tensor] = None,
                 weight_total: Optional[Callable[[torch.Tensor, int], torch.Tensor]] = None):
        self.class_weights, self.segment_weights = class_weights, segment_weights
        # under torchrun: (this piece's weight sum, its size) -> the denominator that makes the piece's
        # share of the whole batch's weighted mean (sertk.train.distributed.piece_weight_total)
        self.weight_total = weight_total

    def to(self, device) -> "SegmentLoss":
        move = lambda t: None if t is None else t.to(device)   # noqa: E731
        return SegmentLoss(move(self.class_weights), move(self.segment_weights), self.weight_total)

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        nll = F.cross_entropy(logits, labels, reduction="none")
        weights = torch.ones_like(nll)
        if self.class_weights is not None:
            weights = weights * self.class_weights[labels]
        if self.segment_weights is not None:
            weights = weights * self.segment_weights[index]
        total = weights.sum() if self.weight_total is None else self.weight_total(weights.sum(), len(nll))
        return (weights * nll).sum() / total.clamp(min=torch.finfo(nll.dtype).tiny)


class CenterLoss(nn.Module):
    """Wen et al. 2016: the mean over labelled samples of ||e_i - c_{y_i}||^2, distances clamped to
    [1e-12, 1e12] (the KaiyangZhou implementation SD-CAFF uses); centers start as randn(classes, dim)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, dim))

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        known = labels >= 0
        if not bool(known.any()):
            return embedding.sum() * 0.0
        diff = embedding[known] - self.centers[labels[known]]
        return diff.square().sum(dim=1).clamp(1e-12, 1e12).mean()


def masked_frame_mse(out: Dict[str, torch.Tensor]) -> torch.Tensor:
    """ESERNet's L1 (spec esernet.md 4, Eq. 11): the mean squared error of the rebuilt frames over the
    hidden (frame, bin) elements only; 0 when the batch hid none."""
    hidden = out["reconstruction_mask"]
    if not bool(hidden.any()):
        return out["reconstruction"].sum() * 0.0
    diff = out["reconstruction"].float()[hidden] - out["reconstruction_target"].float()[hidden]
    return diff.square().mean()


class Objective(nn.Module):
    """The training loss over a batch of model outputs (SD-CAFF's joint loss, spec sd_caff.md 4):

        (1 - g) (CE_emotion + λ center_emotion) + g (CE_gender + λ center_gender)

    with g = gender_weight and λ = center_weight; with both 0 it is the emotion `SegmentLoss` alone.
    With r = reconstruction_weight > 0 (ESERNet, spec esernet.md 4, Eq. 13 with π = 1 - r) the total is
    (1 - r) x that + r x `masked_frame_mse`; a batch the model returns no reconstruction for (it hid
    nothing) adds 0.
    The emotion CE keeps the SegmentLoss weights; the gender CE is plain, over segments whose gender is
    known (batch["gender"] >= 0). Centers are parameters here, trained with the model's optimizer;
    center_dims gives each task's embedding width (the model's `center_dims`)."""

    def __init__(self, emotion: SegmentLoss, num_classes: int, gender_weight: float = 0.0,
                 center_weight: float = 0.0, center_dims: Optional[Dict[str, int]] = None,
                 reconstruction_weight: float = 0.0):
        super().__init__()
        self.emotion, self.gender_weight, self.center_weight = emotion, gender_weight, center_weight
        self.reconstruction_weight = reconstruction_weight
        self.centers = nn.ModuleDict()
        if center_weight > 0:
            self.centers["emotion"] = CenterLoss(num_classes, center_dims["emotion"])
            if gender_weight > 0:
                self.centers["gender"] = CenterLoss(len(GENDERS), center_dims["gender"])

    def to(self, device) -> "Objective":
        self.emotion = self.emotion.to(device)
        return super().to(device)

    def forward(self, out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        loss = self._tasks(out, batch)
        r = self.reconstruction_weight
        if r <= 0 or "reconstruction" not in out:
            return loss
        return (1 - r) * loss + r * masked_frame_mse(out)

    def _tasks(self, out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        loss = self.emotion(out["logits"].float(), batch["label"], batch["index"])
        if "emotion" in self.centers:
            loss = loss + self.center_weight * self.centers["emotion"](out["center_embedding"].float(), batch["label"])
        if self.gender_weight <= 0:
            return loss
        gender = batch["gender"]
        known = gender >= 0
        gen_loss = F.cross_entropy(out["gender_logits"].float()[known], gender[known]) if bool(known.any()) \
            else out["gender_logits"].sum() * 0.0
        if "gender" in self.centers:
            gen_loss = gen_loss + self.center_weight * self.centers["gender"](
                out["gender_center_embedding"].float(), gender)
        return (1 - self.gender_weight) * loss + self.gender_weight * gen_loss

    def scale_center_gradients(self, center_lr: float, lr: float) -> None:
        """SD-CAFF's center-loss learning rate (spec 4, lr_cent): after backward, the emotion centers'
        gradients times center_lr / (center_weight * lr), a leftover of SGD center-loss code that Adam's
        normalisation all but cancels; the gender centers are left alone, as in the released code."""
        centers = self.centers["emotion"].centers if "emotion" in self.centers else None
        if centers is not None and centers.grad is not None:
            centers.grad.mul_(center_lr / (self.center_weight * lr))


def build_objective(config: Dict[str, Any], model: nn.Module, train_set: SegmentDataset, num_classes: int) -> Objective:
    """The loss of config["loss"] on top of the emotion SegmentLoss (class- and utterance-weighted as config["train"]
    says). The weights' ranges are checked when the config is loaded (sertk.train.config); what is checked here is
    that the model has what the auxiliary parts read: a gender head, center-loss embeddings, rebuilt frames."""
    cfg, name = config["loss"], config["model"]["name"]
    gender, center, reconstruction = cfg["gender_weight"], cfg["center_weight"], cfg["reconstruction_weight"]
    tasks = getattr(model, "tasks", ("emotion",))
    if gender > 0 and "gender" not in tasks:
        raise ConfigError(f"model {name} has no gender head; set loss.gender_weight=0")
    center_dims = getattr(model, "center_dims", None)
    if center > 0 and not center_dims:
        raise ConfigError(f"model {name} gives no center-loss embedding; set loss.center_weight=0")
    if reconstruction > 0 and "reconstruction" not in tasks:
        raise ConfigError(f"model {name} rebuilds no masked frames; set loss.reconstruction_weight=0")
    weights = class_weights(list(train_set.labels.values()), num_classes) \
        if config["train"]["class_weighted"] else None
    shares = torch.from_numpy(train_set.utterance_shares()) if config["train"]["utterance_weighted"] else None
    return Objective(SegmentLoss(weights, shares), num_classes, gender, center, center_dims, reconstruction)
