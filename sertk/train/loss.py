"""The segment-level training loss: cross-entropy, optionally class-weighted and utterance-weighted."""
from typing import Optional

import torch
from torch.nn import functional as F


class SegmentLoss:
    """Weighted mean cross-entropy over a batch of segments.

    class_weights [C] (e.g. inverse class frequency) weight a segment by its label, as
    torch.nn.CrossEntropyLoss(weight=...) does; segment_weights [num_segments], indexed by the
    batch's `index`, weight it by its own share (e.g. 1 / segments of its utterance, so a long
    utterance does not count more than a short one). The mean is over the weights' sum."""

    def __init__(self, class_weights: Optional[torch.Tensor] = None,
                 segment_weights: Optional[torch.Tensor] = None):
        self.class_weights, self.segment_weights = class_weights, segment_weights

    def to(self, device) -> "SegmentLoss":
        move = lambda t: None if t is None else t.to(device)   # noqa: E731
        return SegmentLoss(move(self.class_weights), move(self.segment_weights))

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        nll = F.cross_entropy(logits, labels, reduction="none")
        weights = torch.ones_like(nll)
        if self.class_weights is not None:
            weights = weights * self.class_weights[labels]
        if self.segment_weights is not None:
            weights = weights * self.segment_weights[index]
        return (weights * nll).sum() / weights.sum().clamp(min=torch.finfo(nll.dtype).tiny)
