"""Masked sequence helpers shared by the models: an LSTM that skips padded frames, masked softmax."""
from typing import Tuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def run_lstm(lstm: nn.LSTM, x: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """A batch-first LSTM over the valid frames of x [B, T, D] only (packed).

    Returns the outputs [B, T, H * directions] (zero at padded frames) and the last layer's final
    states [B, H * directions]: forward at each sequence's last valid frame, backward at its first."""
    lengths = mask.sum(1).clamp(min=1)
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, (h_n, _) = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    directions = 2 if lstm.bidirectional else 1
    final = torch.cat(list(h_n[-directions:]), dim=-1)
    return out, final


def masked_softmax(scores: torch.Tensor, valid: torch.Tensor, dim: int) -> torch.Tensor:
    """softmax of `scores` along `dim` over the entries where `valid` (broadcastable) is True."""
    return torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid frames of x [B, T, D] -> [B, D]."""
    weights = mask.to(x.dtype)[..., None]
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1)
