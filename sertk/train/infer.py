"""Segment posteriors of a model over a segment dataset."""
from typing import Dict, List

import numpy as np
import torch
from torch.utils.data import DataLoader

from sertk.decode import decide
from sertk.train.data import SegmentDataset, collate


@torch.no_grad()
def segment_posteriors(model: torch.nn.Module, dataset: SegmentDataset, batch_size: int,
                       device: str) -> np.ndarray:
    """Softmax posteriors [num_segments, C], in `dataset.segments` order (the model is put in eval mode).
    Segments are batched by length (whole utterances pad less); posteriors do not depend on batching."""
    model.eval()
    order = sorted(range(len(dataset)), key=dataset.frames)
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    out: List[np.ndarray] = []
    for batch in DataLoader(dataset, batch_sampler=batches, collate_fn=collate):
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(batch)["logits"].float()
        out.append(torch.softmax(logits, dim=-1).cpu().numpy())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    in_batch_order = np.concatenate(out)
    post = np.empty_like(in_batch_order)
    post[np.concatenate(batches)] = in_batch_order
    return post


def by_utterance(dataset: SegmentDataset, posteriors: np.ndarray) -> Dict[str, np.ndarray]:
    """utt -> [segments of that utt, C]."""
    rows: Dict[str, List[int]] = {}
    for i, seg in enumerate(dataset.segments):
        rows.setdefault(seg.utt, []).append(i)
    return {utt: posteriors[idx] for utt, idx in rows.items()}


def utterance_decisions(dataset: SegmentDataset, posteriors: np.ndarray, rule: str) -> Dict[str, int]:
    return {utt: int(decide(p, rule)) for utt, p in by_utterance(dataset, posteriors).items()}


def as_seg_posteriors(dataset: SegmentDataset, posteriors: np.ndarray) -> Dict[str, np.ndarray]:
    return {seg.seg: posteriors[i] for i, seg in enumerate(dataset.segments)}


def seg2utt(dataset: SegmentDataset) -> Dict[str, str]:
    return {seg.seg: seg.utt for seg in dataset.segments}
