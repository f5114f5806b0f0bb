"""The segment loss: class weights as torch's weighted cross-entropy, utterance shares."""
import numpy as np
import pytest
import torch

from sertk.features.dataset import SegmentDataset
from sertk.models.esernet_cue import ReconstructionObjective, masked_frame_mse
from sertk.train.loss import SegmentLoss


def test_class_weights_are_torchs_weighted_mean():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 3, generator=g), torch.tensor([0, 1, 2, 2, 1, 0])
    weights = torch.tensor([0.5, 2.0, 1.0])
    index = torch.arange(6)
    expected = torch.nn.CrossEntropyLoss(weight=weights)(logits, labels)
    torch.testing.assert_close(SegmentLoss(weights)(logits, labels, index), expected)
    torch.testing.assert_close(SegmentLoss()(logits, labels, index),
                               torch.nn.functional.cross_entropy(logits, labels))


def test_utterance_shares_make_each_utterance_count_once():
    # utterance a: 3 segments, all wrong-ish; utterance b: 1 segment. With shares, a weighs as much as b.
    logits = torch.tensor([[0.0, 2.0], [0.0, 2.0], [0.0, 2.0], [2.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 0])
    shares = torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0])
    nll = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    got = SegmentLoss(segment_weights=shares)(logits, labels, torch.arange(4))
    torch.testing.assert_close(got, (nll[0] + nll[3]) / 2)
    # only the batch's own segments count, found through their dataset index
    got = SegmentLoss(segment_weights=shares)(logits[[3, 0]], labels[:2], torch.tensor([3, 0]))
    torch.testing.assert_close(got, (nll[3] + nll[0] / 3) / (1 + 1 / 3))


def test_dataset_shares_sum_to_one_per_utterance():
    class DD:   # the two attributes SegmentDataset reads
        utts = ["short", "long"]
        tables = {"utt2emo": {"short": "a", "long": "b"}}
    feats = {"x": {"short": np.zeros((5, 2), np.float32), "long": np.zeros((35, 2), np.float32)}}
    data = SegmentDataset(DD(), feats, 10, 5, lambda s, u, x: x, ["a", "b"])
    shares = data.utterance_shares()
    per_utt = {}
    for seg, share in zip(data.segments, shares):
        per_utt[seg.utt] = per_utt.get(seg.utt, 0.0) + share
    assert len(data) == 1 + 6 and np.allclose(list(per_utt.values()), 1.0)


def test_masked_frame_mse_counts_the_hidden_elements_only():
    rebuilt = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    target = torch.tensor([[[0.0, 0.0], [3.0, 1.0]]])
    hidden = torch.tensor([[[True, False], [False, True]]])   # errors 1 and 3 count; the 2 is not hidden
    out = {"reconstruction": rebuilt, "reconstruction_target": target, "reconstruction_mask": hidden}
    assert masked_frame_mse(out).item() == (1 + 9) / 2
    assert masked_frame_mse({**out, "reconstruction_mask": torch.zeros_like(hidden)}).item() == 0.0


def test_the_reconstruction_weight_mixes_the_two_losses():
    """ESERNet's Eq. 13 with pi = 1 - r: (1 - r) CE + r MSE; a batch without reconstruction is CE alone."""
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    out = {"logits": logits, "reconstruction": torch.ones(1, 1, 1), "reconstruction_target": torch.zeros(1, 1, 1),
           "reconstruction_mask": torch.ones(1, 1, 1, dtype=torch.bool)}
    batch = {"label": labels, "index": torch.arange(2)}
    ce = torch.nn.functional.cross_entropy(logits, labels).item()
    objective = ReconstructionObjective(SegmentLoss(), reconstruction_weight=0.25)
    assert objective(out, batch).item() == pytest.approx(0.75 * ce + 0.25 * 1.0)
    assert objective({"logits": logits}, batch).item() == pytest.approx(ce)
