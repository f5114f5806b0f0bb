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
    bfloat16 under autocast included (measured: docs/training.md#throughput). So a one-layer LSTM runs on the
    padded batch, which is exact for the forward direction (padding comes after the valid frames) and for
    the backward direction of full-length sequences; when some are shorter, the backward direction runs on
    its own, over a copy of the batch with each sequence reversed within its own length, so that it starts at
    its last valid frame. Deeper LSTMs are packed unless every sequence is full."""
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
    if lstm.bidirectional and not full:
        # each direction on its own: the forward one over x, the backward one run forwards over a copy with every
        # sequence reversed within its own length, so that it starts at its last valid frame (as much computing
        # as one bidirectional call)
        time = torch.arange(frames, device=x.device)
        mirror = (lengths[:, None] - 1 - time[None, :]).clamp(min=0)     # frame t <-> position len - 1 - t
        reversed_x = torch.gather(x, 1, mirror[..., None].expand(-1, -1, x.shape[-1]))
        backward = _one_direction(lstm, reversed_x, "_reverse")
        backward = torch.gather(backward, 1, mirror[..., None].expand(-1, -1, hidden))
        forward = _one_direction(lstm, x, "")
        out = torch.cat([forward, backward], -1)
    else:
        out, _ = lstm(x)
    last = out[torch.arange(batch, device=x.device), lengths - 1, :hidden]
    final = torch.cat([last, out[:, 0, hidden:]], dim=-1) if lstm.bidirectional else last
    return out * mask[..., None].to(out.dtype), final


def _one_direction(lstm: nn.LSTM, x: torch.Tensor, suffix: str) -> torch.Tensor:
    """The outputs [B, T, H] of one direction of a one-layer LSTM (suffix "" forward, "_reverse" backward)
    run forward over x, with that direction's weights: the op nn.LSTM.forward itself calls."""
    names = ["weight_ih_l0", "weight_hh_l0"] + (["bias_ih_l0", "bias_hh_l0"] if lstm.bias else [])
    zeros = x.new_zeros(1, x.shape[0], lstm.hidden_size)
    return torch._VF.lstm(x, (zeros, zeros), [getattr(lstm, n + suffix) for n in names], lstm.bias, 1, 0.0,
                          lstm.training, False, True)[0]


def masked_softmax(scores: torch.Tensor, valid: torch.Tensor, dim: int) -> torch.Tensor:
    """softmax of `scores` along `dim` over the entries where `valid` (broadcastable) is True."""
    return torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid frames of x [B, T, D] -> [B, D]."""
    weights = mask.to(x.dtype)[..., None]
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1)
