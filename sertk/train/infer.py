"""A trained model rebuilt from its checkpoint, and its segment posteriors over a segment dataset."""
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from sertk.data.datadir import DataDir
from sertk.decode import decide
from sertk.features.segments import SegmentConfig
from sertk.models import build_model
from sertk.models.layer_sum import with_layer_sums
from sertk.train.config import model_options
from sertk.train.data import SegmentDataset, collate
from sertk.train.features import Feats, Normalization, StreamLayout


def restore_model(config: Dict[str, Any], num_classes: int, weights: Dict[str, torch.Tensor],
                  layout_of: Callable[[Sequence[str]], StreamLayout], device: str
                  ) -> Tuple[torch.nn.Module, StreamLayout]:
    """The model of `config` with trained `weights`, in eval mode on `device`, and the layout of the
    streams it reads (`layout_of(streams)`: from a dump, or from a packed model's feature info)."""
    model = build_model(config["model"]["name"], num_classes, **model_options(config))
    layout = layout_of(list(model.streams))
    layout.check_model(model)
    model = with_layer_sums(model, layout.layers).to(device)
    model.load_state_dict(weights)
    return model.eval(), layout


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
