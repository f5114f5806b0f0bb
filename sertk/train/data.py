"""Training batches: length-bucketed shuffled batches, class weights, SpecAugment.

The segment datasets they batch are sertk.features.dataset's (decoding and inference read them too).
"""
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

BUCKET_POOL = 20   # length_batches sorts within pools of this many batches: similar lengths, still shuffled


def length_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                   drop_last: bool) -> List[List[int]]:
    """Shuffled batches of similar lengths (little padding): the indices in random order, sorted by length
    within pools of BUCKET_POOL batches, cut into batches, the batches shuffled. With `drop_last` the
    N mod batch_size indices left over are left out before sorting, so they are random ones, others each
    epoch (after the sort, the short last batch held the longest items: on a set that fits one pool, the
    same longest utterances were never trained on); without it the last batch is the short one."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    if drop_last:
        order = order[:len(order) - len(order) % batch_size]
    pool = batch_size * BUCKET_POOL
    ranked = [i for start in range(0, len(order), pool)
              for i in sorted(order[start:start + pool], key=lambda i: lengths[i])]
    batches = [ranked[s:s + batch_size] for s in range(0, len(ranked), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def class_weights(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """Inverse-frequency weights, N / (C * n_c), over `labels` (one per example counted); a class with no
    example gets 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def spec_augment(batch: Dict[str, torch.Tensor], streams: Sequence[str], cfg: dict,
                 generator: Optional[torch.Generator] = None, rows: Optional[Sequence[int]] = None,
                 whole: Optional[int] = None) -> None:
    """In place: zero random time and frequency bands of each stream (SpecAugment, no warping).
    `rows` of `whole`: the batch is those rows of a batch of `whole` segments (a process's piece under
    torchrun); the bands are drawn for the whole batch, as one process would, and the piece gets its rows'."""
    pick = slice(None) if rows is None else torch.as_tensor(list(rows), dtype=torch.long)
    for s in streams:
        x = batch[s]
        if x.dim() != 3:   # segment- and utterance-level vectors have no time axis to mask
            continue
        b, t, d = x.shape
        drawn = b if whole is None else whole
        for axis, n, width in ((1, cfg["time_masks"], cfg["time_width"]), (2, cfg["freq_masks"], cfg["freq_width"])):
            size = t if axis == 1 else d
            for _ in range(n):
                w = torch.randint(0, width + 1, (drawn,), generator=generator)[pick]
                start = (torch.rand(drawn, generator=generator)[pick] * (size - w).clamp(min=1)).long()
                pos = torch.arange(size)[None, :]
                band = (pos >= start[:, None]) & (pos < (start + w)[:, None])
                x.masked_fill_(band[:, :, None] if axis == 1 else band[:, None, :], 0.0)
