"""A model's forward pass over a segment dataset: softmax posteriors per segment, then by utterance or by
segment id. Decoding, inference and the trainer's per-epoch dev evaluation all score segments here."""
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from sertk.data.datadir import DataDir
from sertk.decode.voting import decide
from sertk.features.dataset import SegmentDataset, collate
from sertk.features.reading import Feats, Normalization, StreamLayout
from sertk.features.segments import SegmentConfig


def segment_dataset(dd: DataDir, feats: Feats, layout: StreamLayout, segments: SegmentConfig,
                    norm: Normalization, classes: Sequence[str]) -> SegmentDataset:
    """Every window of every utterance of `dd`, cut as the model's segments say, normalised by `norm`."""
    length, hop = layout.frames(segments)
    return SegmentDataset(dd, feats, length, hop, norm.apply, classes, segments.tail, levels=layout.levels)


@torch.no_grad()
def segment_posteriors(model: torch.nn.Module, dataset: SegmentDataset, batch_size: int,
                       device: str, indices: Optional[Sequence[int]] = None) -> np.ndarray:
    """Softmax posteriors [num_segments, C], in `dataset.segments` order (the model is put in eval mode);
    with `indices`, of those segments only, in that order. Segments are batched by length (whole utterances
    pad less); posteriors do not depend on batching."""
    model.eval()
    indices = list(range(len(dataset)) if indices is None else indices)
    order = sorted(indices, key=dataset.frames)
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    out: List[np.ndarray] = []
    for batch in DataLoader(dataset, batch_sampler=batches, collate_fn=collate):
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(batch)["logits"].float()
        out.append(torch.softmax(logits, dim=-1).cpu().numpy())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    in_batch_order = np.concatenate(out)
    row = {segment: k for k, segment in enumerate(indices)}
    post = np.empty_like(in_batch_order)
    post[[row[i] for b in batches for i in b]] = in_batch_order
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
