"""Transformer pieces shared by the attention models: sinusoidal positions, multi-head attention with a
boolean key mask, and the post-LayerNorm encoder layer (Vaswani et al. 2017)."""
import math
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from sertk.models import dropout_attention as cpu_dropout


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """[length, dim]: sin at even dims, cos at odd dims, wavelengths 2 pi .. 10000 * 2 pi."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)[:, :dim // 2]
    return table


def xavier_linears(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every Linear in `module` (SpeechFormer's init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MultiHeadAttention(nn.Module):
    """Q, K, V from one Linear(D, 3D), an output Linear(D, D): 4 D^2 + 4 D parameters. `heads_of` and
    `merge` expose the per-head projections, so attention patterns other than global ones can share them."""

    def __init__(self, dim: int, heads: int, attn_dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim, self.attn_dropout = heads, dim // heads, attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def heads_of(self, x: torch.Tensor):
        """x [B, N, D] -> q, k, v, each [B, H, N, D / H]."""
        b, n, _ = x.shape
        return self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)

    def merge(self, heads: torch.Tensor) -> torch.Tensor:
        """[B, H, N, D / H] -> out-projected [B, N, D]."""
        b, _, n, _ = heads.shape
        return self.out(heads.transpose(1, 2).reshape(b, n, -1))

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
        """Global self-attention of x [B, N, D]; keys where key_valid [B, N] is False get no weight."""
        q, k, v = self.heads_of(x)
        p = self.attn_dropout if self.training else 0.0
        if cpu_dropout.FAST_CPU_DROPOUT_ATTENTION and cpu_dropout.use_dropout_attention(q, p):
            out = cpu_dropout.dropout_attention(q, k, v, key_valid, p)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_valid[:, None, None, :], dropout_p=p)
        return self.merge(out)


class FeedForward(nn.Sequential):
    """Linear(D, hidden) -> ReLU -> dropout -> Linear(hidden, D)."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


class PostNormLayer(nn.Module):
    """h = LN(h + drop(MHSA(h))); h = LN(h + drop(FFN(h))). `residual` False drops the first residual
    (ESERNet's Eq. 2 as printed); with D = 128 and hidden 512 it has 198,272 parameters."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float, attn_dropout: float,
                 residual: bool = True):
        super().__init__()
        self.attn = MultiHeadAttention(dim, heads, attn_dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, hidden, dropout)
        self.drop = nn.Dropout(dropout)
        self.residual = residual

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor,
                attended: Optional[torch.Tensor] = None) -> torch.Tensor:
        """`attended`, when given, is the attention output to use (a subclass's own pattern)."""
        att = self.attn(x, key_valid) if attended is None else attended
        x = self.norm1((x if self.residual else 0) + self.drop(att))
        return self.norm2(x + self.drop(self.ffn(x)))


# How banded_attention computes: "blocks" (queries in blocks of BANDED_BLOCK, each block's scores one matrix
# product) or "offsets" (one elementwise product per offset in the widest window: what sertk trained MSFPN with
# before, kept for benchmarks/train.py's old path). The same function but for float rounding.
BANDED_ATTENTION = "blocks"
BANDED_BLOCK = 32   # fastest of 8-140 for MSFPN on EmoDB lengths (bf16, one CPU thread)


def banded_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor,
                     radius: torch.Tensor, block: int = BANDED_BLOCK) -> torch.Tensor:
    """Local attention of q, k, v [B, H, N, d]: the query at n of head h sees the valid keys in
    [n - radius[h], n + radius[h]]. The queries go in blocks of `block`; each block's scores against the
    keys it can reach (block + 2 r of them, r the widest radius) are one matrix product, so the work is
    two batched GEMMs (fast in bf16 on a CPU with AMX) and memory grows with N x (block + 2 r), not N^2.
    A query with no valid key (a padded frame) gets finite weights; its output is meant to be discarded."""
    if BANDED_ATTENTION == "offsets":
        return _banded_attention_by_offsets(q, k, v, valid, radius)
    b, h, n, d = q.shape
    r = int(radius.max())
    c = max(1, min(block, n))
    blocks = -(-n // c)
    extra = blocks * c - n                                    # padded queries of the last block
    width = c + 2 * r                                         # the keys a block of queries can reach
    q_blocks = F.pad(q, (0, 0, 0, extra)).view(b, h, blocks, c, d)
    k_blocks = F.pad(k, (0, 0, r, r + extra)).unfold(2, width, c)                # [B, H, blocks, d, width]
    v_blocks = F.pad(v, (0, 0, r, r + extra)).unfold(2, width, c)
    scores = torch.matmul(q_blocks, k_blocks) * d ** -0.5                         # [B, H, blocks, c, width]
    offset = torch.arange(width, device=q.device)[None, :] - r - torch.arange(c, device=q.device)[:, None]
    in_band = offset.abs()[None] <= radius[:, None, None]                      # [H, c, width]
    key_valid = F.pad(valid, (r, r + extra)).unfold(1, width, c)              # [B, blocks, width]
    allowed = in_band[None, :, None] & key_valid[:, None, :, None, :]
    weights = torch.softmax(scores.masked_fill(~allowed, torch.finfo(scores.dtype).min), dim=-1)
    out = torch.matmul(weights, v_blocks.transpose(-1, -2))                      # [B, H, blocks, c, d]
    return out.reshape(b, h, blocks * c, d)[:, :, :n]


def _banded_attention_by_offsets(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor,
                                 radius: torch.Tensor) -> torch.Tensor:
    """banded_attention one offset at a time: 2 (2 r + 1) elementwise products over [B, H, N, d]."""
    r = int(radius.max())
    n = q.shape[2]
    k_pad, v_pad = F.pad(k, (0, 0, r, r)), F.pad(v, (0, 0, r, r))
    offsets = torch.arange(-r, r + 1, device=q.device)
    scores = torch.stack([(q * k_pad[:, :, j:j + n]).sum(-1) for j in range(2 * r + 1)], -1) * q.shape[-1] ** -0.5
    allowed = (offsets.abs()[None, :] <= radius[:, None])[None, :, None, :] \
        & F.pad(valid, (r, r)).unfold(1, 2 * r + 1, 1)[:, None]          # [B, H, N, window]
    weights = torch.softmax(scores.masked_fill(~allowed, torch.finfo(scores.dtype).min), dim=-1)
    out = weights[..., 0, None] * v_pad[:, :, :n]
    for j in range(1, 2 * r + 1):
        out = out + weights[..., j, None] * v_pad[:, :, j:j + n]
    return out
