"""Training losses: the segment-level cross-entropy (optionally class- and utterance-weighted), and
`build_objective`, a run's objective from its config: that loss, which the model's own objective
(sertk.models.base.SERModel.objective) combines with its auxiliary losses: SD-CAFF's gender task and
center losses (sertk.models.sd_caff), ESERNet's masked-frame reconstruction (sertk.models.esernet_cue)."""
from typing import Any, Callable, Dict, Optional

import torch
from torch.nn import functional as F

from sertk.features.dataset import SegmentDataset
from sertk.models.base import Objective, SERModel
from sertk.config.loading import ConfigError
from sertk.train.data import class_weights

__all__ = ["Objective", "SegmentLoss", "build_objective"]


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


def build_objective(config: Dict[str, Any], model: SERModel, train_set: SegmentDataset, num_classes: int) -> Objective:
    """The model's objective (its `objective` hook) on the emotion SegmentLoss, class- and utterance-weighted as
    config["train"] says. The weights' ranges are checked when the config is loaded (sertk.config.loading); what is
    checked here is that the model has what a loss weight set in config["loss"] needs: a gender head, center-loss
    embeddings, rebuilt frames (its `tasks` and `center_dims`)."""
    cfg, name = config["loss"], config["model"]["name"]
    if cfg["gender_weight"] > 0 and "gender" not in model.tasks:
        raise ConfigError(f"model {name} has no gender head; set loss.gender_weight=0")
    if cfg["center_weight"] > 0 and not model.center_dims:
        raise ConfigError(f"model {name} gives no center-loss embedding; set loss.center_weight=0")
    if cfg["reconstruction_weight"] > 0 and "reconstruction" not in model.tasks:
        raise ConfigError(f"model {name} rebuilds no masked frames; set loss.reconstruction_weight=0")
    by_utterance = config["train"]["utterance_weighted"]
    # counted over what the loss weighs, so that every class carries the same share of it: utterances when
    # each utterance's segments share one weight, else segments (counted over utterances, a class of longer
    # utterances, cut into more windows, weighed more)
    counted = (list(train_set.labels.values()) if by_utterance
               else [train_set.labels[s.utt] for s in train_set.segments if s.utt in train_set.labels])
    weights = class_weights(counted, num_classes) if config["train"]["class_weighted"] else None
    shares = torch.from_numpy(train_set.utterance_shares()) if by_utterance else None
    return model.objective(SegmentLoss(weights, shares), cfg)
