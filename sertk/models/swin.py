"""Swin Transformer image backbone (Liu et al. 2021, "Swin Transformer: Hierarchical Vision
Transformer using Shifted Windows"), written from scratch.

With the default `SwinConfig` it mirrors timm's `swin_tiny_patch4_window7_224` layer for layer,
without the classification head: 27,519,354 parameters (timm's 28,288,354 less its 768 x 1000 + 1000
head). Module names follow the original code (patch_embed, layers.i.blocks.j, layers.i.downsample,
norm). No pretrained weights are loaded: the backbone is trained from scratch.
`forward` maps images [B, in_chans, H, W] to pooled features [B, num_features].
"""
from dataclasses import dataclass, field
from typing import List, Optional

import torch
from torch import nn


@dataclass
class SwinConfig:
    img_size: int = 224           # square input side; inputs of any other size are refused
    patch_size: int = 4           # patch embedding kernel = stride
    in_chans: int = 3
    embed_dim: int = 96           # channels of stage 1; doubled by each patch merging
    depths: List[int] = field(default_factory=lambda: [2, 2, 6, 2])        # blocks per stage
    num_heads: List[int] = field(default_factory=lambda: [3, 6, 12, 24])   # attention heads per stage
    window_size: int = 7          # M: attention windows are M x M tokens
    mlp_ratio: float = 4.0        # MLP hidden width / channels
    qkv_bias: bool = True
    drop_rate: float = 0.0        # dropout after patch embedding, attention projection and MLP layers
    attn_drop_rate: float = 0.0   # dropout on attention weights
    drop_path_rate: float = 0.2   # stochastic depth of the last block; rises linearly from 0 over all blocks


class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch for whole samples, rescaling the kept ones."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


def window_partition(x: torch.Tensor, m: int) -> torch.Tensor:
    """[B, H, W, C] -> [B * nW, m * m, C], windows in row-major order."""
    b, h, w, c = x.shape
    x = x.view(b, h // m, m, w // m, m, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, m * m, c)


def window_reverse(windows: torch.Tensor, m: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `window_partition`: [B * nW, m * m, C] -> [B, H, W, C]."""
    c = windows.shape[-1]
    x = windows.view(-1, h // m, w // m, m, m, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def relative_position_index(m: int) -> torch.Tensor:
    """[m*m, m*m] index into the (2m-1)^2 bias table for each (query, key) pair of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (m - 1)  # offsets shifted to [0, 2m-2]
    return rel[..., 0] * (2 * m - 1) + rel[..., 1]


def shifted_window_mask(h: int, w: int, m: int, shift: int) -> torch.Tensor:
    """[nW, m*m, m*m] additive mask for windows after a cyclic shift by -shift: 0 between tokens of
    one region of the unshifted map, -100 between tokens the roll brought together from different
    regions (they are not neighbours in the image, so must not attend to each other)."""
    regions = torch.zeros(1, h, w, 1)
    bands = (slice(0, -m), slice(-m, -shift), slice(-shift, None))
    for i, rows in enumerate(bands):
        for j, cols in enumerate(bands):
            regions[:, rows, cols, :] = 3 * i + j
    labels = window_partition(regions, m).squeeze(-1)   # [nW, m*m]
    diff = labels[:, None, :] - labels[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention within each window, plus a learned relative position bias."""

    def __init__(self, dim: int, heads: int, m: int, cfg: SwinConfig):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * m - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # derived from m, so kept out of the state dict
        self.register_buffer("relative_position_index", relative_position_index(m), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=cfg.qkv_bias)
        self.attn_drop = nn.Dropout(cfg.attn_drop_rate)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        bw, n, c = x.shape                     # bw = batch * windows, n = m * m tokens
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:                   # one mask per window position, shared by the batch
            nw = mask.shape[0]
            attn = (attn.view(bw // nw, nw, self.heads, n, n) + mask[None, :, None]).view(bw, self.heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SwinBlock(nn.Module):
    """LN -> (shifted) window attention -> residual; LN -> MLP -> residual, on [B, H*W, C] tokens."""

    def __init__(self, dim: int, resolution: int, heads: int, m: int, shift: int, drop_path: float,
                 cfg: SwinConfig):
        super().__init__()
        if resolution <= m:                    # one window covers the map: shrink it, a shift would only wrap
            m, shift = resolution, 0
        self.resolution, self.window_size, self.shift = resolution, m, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, m, cfg)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.drop_rate)
        mask = shifted_window_mask(resolution, resolution, m, shift) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        r, m, s = self.resolution, self.window_size, self.shift
        h = self.norm1(x).view(b, r, r, c)
        if s:
            h = torch.roll(h, shifts=(-s, -s), dims=(1, 2))
        h = window_reverse(self.attn(window_partition(h, m), self.attn_mask), m, r, r)
        if s:
            h = torch.roll(h, shifts=(s, s), dims=(1, 2))
        x = x + self.drop_path(h.reshape(b, n, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Halves the resolution: concatenates each 2x2 neighbourhood (4C), LN, linear to 2C."""

    def __init__(self, dim: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, self.resolution, self.resolution, c)
        # the original code's order: (0,0), (1,0), (0,1), (1,1) as (row, column) offsets
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: SwinConfig):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, stride=cfg.patch_size)
        self.norm = nn.LayerNorm(cfg.embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(images).flatten(2).transpose(1, 2))   # [B, H*W, C]


class SwinStage(nn.Module):
    def __init__(self, blocks: List[SwinBlock], downsample: Optional[PatchMerging]):
        super().__init__()
        self.blocks, self.downsample = nn.Sequential(*blocks), downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x)
        return x if self.downsample is None else self.downsample(x)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class SwinBackbone(nn.Module):
    """Swin Transformer without a head: images [B, in_chans, H, W] -> features [B, num_features]."""

    def __init__(self, cfg: SwinConfig):
        super().__init__()
        if len(cfg.depths) != len(cfg.num_heads):
            raise ValueError(f"swin: depths and num_heads must have one entry per stage, got depths "
                             f"{cfg.depths} and num_heads {cfg.num_heads}")
        if cfg.img_size % cfg.patch_size:
            raise ValueError(f"swin: img_size {cfg.img_size} is not divisible by patch_size {cfg.patch_size}")
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        res, dim, stages = cfg.img_size // cfg.patch_size, cfg.embed_dim, []
        for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
            m = min(res, cfg.window_size)
            if res % m:
                raise ValueError(f"swin: stage {i} resolution {res}x{res} is not divisible by its window size {m}")
            if dim % heads:
                raise ValueError(f"swin: stage {i} width {dim} is not divisible by its {heads} heads")
            last = i == len(cfg.depths) - 1
            if not last and res % 2:
                raise ValueError(f"swin: stage {i} resolution {res}x{res} is odd, so patch merging cannot halve it")
            blocks = [SwinBlock(dim, res, heads, cfg.window_size, (cfg.window_size // 2) * (j % 2), rates.pop(0), cfg)
                      for j in range(depth)]
            stages.append(SwinStage(blocks, None if last else PatchMerging(dim, res)))
            if not last:
                res, dim = res // 2, dim * 2
        self.layers = nn.Sequential(*stages)
        self.num_features = dim
        self.norm = nn.LayerNorm(dim)
        self.apply(_init_weights)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        expected = (cfg.in_chans, cfg.img_size, cfg.img_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"swin: expected images of shape [B, {', '.join(map(str, expected))}] "
                             f"(the configured in_chans and img_size), got {list(images.shape)}")
        x = self.layers(self.pos_drop(self.patch_embed(images)))
        return self.norm(x).mean(dim=1)     # global average pool over tokens
