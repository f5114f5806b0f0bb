"""Masked pooling over time: padded frames never change a pooled vector."""
import torch
from torch import nn

from sertk.models.sequence import masked_softmax


class AttentionPooling(nn.Module):
    """Softmax attention over valid frames: sum_t a_t h_t with a = softmax(w^T tanh(W h_t))."""

    def __init__(self, dim: int, hidden: int = 64):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h: [B, T, D]; mask: [B, T] bool, at least one True per row -> [B, D]."""
        weights = masked_softmax(self.score(h).squeeze(-1), mask, dim=1)
        return torch.bmm(weights.unsqueeze(1), h).squeeze(1)


def downsample_mask(mask: torch.Tensor, factor: int, length: int) -> torch.Tensor:
    """The frame mask after pooling time by `factor` (a pooled frame is valid if any input was)."""
    if factor == 1:
        return mask[:, :length]
    pooled = nn.functional.max_pool1d(mask.float().unsqueeze(1), factor, factor, ceil_mode=True).squeeze(1) > 0
    return pooled[:, :length]


def zero_padded_frames(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x [B, C, ..., T] with frames where mask [B, T] is False set to zero."""
    if bool(mask.all()):   # full segments (most of training): skip the multiply and its backward
        return x
    return x * mask.view(mask.shape[0], *([1] * (x.dim() - 2)), mask.shape[1]).to(x.dtype)


def masked_time_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of x [B, C, ..., T] over every axis after C, valid frames (mask [B, T]) only -> [B, C]."""
    weights = mask.view(mask.shape[0], *([1] * (x.dim() - 2)), mask.shape[1]).to(x.dtype)
    per_frame = x[0, 0].numel() // x.shape[-1]   # entries per frame (e.g. frequency bins)
    count = (weights.sum(dim=-1).flatten(1)[:, :1] * per_frame).clamp(min=1)
    if bool(mask.all()):   # full segments: x * 1 is x, so skip the multiply (and its backward) over all of x
        return x.flatten(2).sum(-1) / count
    return (x * weights).flatten(2).sum(-1) / count
