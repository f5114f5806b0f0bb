"""Masked sequence helpers shared by the models: an LSTM that skips padded frames, masked softmax."""
from typing import Tuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# False: every LSTM runs on packed sequences, as sertk did before (benchmarks/train.py's `old` path)
PADDED_LSTM = True


def run_lstm(lstm: nn.LSTM, x: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """A batch-first LSTM over the valid frames of x [B, T, D] only.

    Returns the outputs [B, T, H * directions] (zero at padded frames) and the last layer's final
    states [B, H * directions]: forward at each sequence's last valid frame, backward at its first.

    A packed sequence would do, but on a CPU it takes torch's step-by-step path (a few small ops per
    frame and direction, forward and backward), where a padded batch takes the fused oneDNN kernel,
    bfloat16 under autocast included: 2x faster for MPAF-CNN's BiLSTM. So a one-layer LSTM runs on the
    padded batch, which is exact for the forward direction (padding comes after the valid frames) and for
    the backward direction of full-length sequences; the backward direction of the shorter ones is run
    again on a copy of them aligned to the end, so that it starts at their last valid frame. Deeper LSTMs
    are packed unless every sequence is full."""
    lengths = mask.sum(1).clamp(min=1)
    full = bool((lengths == x.shape[1]).all())
    if PADDED_LSTM and (full or lstm.num_layers == 1):
        return _run_padded(lstm, x, mask, lengths, full)
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, (h_n, _) = lstm(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    directions = 2 if lstm.bidirectional else 1
    final = torch.cat(list(h_n[-directions:]), dim=-1)
    return out, final


def _run_padded(lstm: nn.LSTM, x: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor, full: bool):
    batch, frames = x.shape[:2]
    hidden = lstm.hidden_size
    out, _ = lstm(x)
    if lstm.bidirectional and not full:
        short = (lengths < frames).nonzero().flatten()
        time = torch.arange(frames, device=x.device)
        shift = (frames - lengths[short])[:, None]                      # frame t sits at t + shift
        source = (time[None, :] - shift).clamp(min=0)
        aligned = torch.gather(x[short], 1, source[..., None].expand(-1, -1, x.shape[-1]))
        backward = lstm(aligned)[0][..., hidden:]
        back_to_start = (time[None, :] + shift).clamp(max=frames - 1)
        backward = torch.gather(backward, 1, back_to_start[..., None].expand(-1, -1, hidden))
        out = torch.cat([out[..., :hidden], out[..., hidden:].index_copy(0, short, backward.to(out.dtype))], -1)
    last = out[torch.arange(batch, device=x.device), lengths - 1, :hidden]
    final = torch.cat([last, out[:, 0, hidden:]], dim=-1) if lstm.bidirectional else last
    return out * mask[..., None].to(out.dtype), final


def masked_softmax(scores: torch.Tensor, valid: torch.Tensor, dim: int) -> torch.Tensor:
    """softmax of `scores` along `dim` over the entries where `valid` (broadcastable) is True."""
    return torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid frames of x [B, T, D] -> [B, D]."""
    weights = mask.to(x.dtype)[..., None]
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1)
