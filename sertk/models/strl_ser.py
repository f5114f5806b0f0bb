"""STRL-SER: spatio-temporal representation learning with multi-head attention fusion (Chen et al.,
Knowledge-Based Systems; implementation spec shared/specs/strl_ser.md, section numbers below are its).

Per segment (2.0 s, or 1.4 s on RAVDESS), three branches (section 3):
- A, attentional multi-scale CNN on the 76 x T IS10 LLD matrix (rows = descriptors, columns = frames):
  a (b x 1) "frequency" and a (1 x d) "time" convolution side by side (16 channels each, concatenated),
  three 3x3 blocks of 48 channels in Eq. 4's order Conv, ReLU, MaxPool 2x2, BN, then softmax attention
  pooling (Eqs. 6-7) over the time columns (432-d tokens) -> X~;
- B, a BiLSTM over the same frames -> H (every frame kept);
- C, one fully connected layer on the z-scored 1582-d IS10 functionals -> UL.
Fusion (3.4, "sequence"): the tokens [P(X~); h_1 .. h_T; UL] (P: a 432 -> 256 projection, glue the paper
does not have) go through N = 8 heads of scaled dot-product attention with 1x1-convolution Q/K/V of
width 32 each, heads concatenated, no output projection; the classifier takes the token mean.
The other readings of 3.4 are switches: `fusion: broadcast` (tokens f_t = [h_t; X~; UL] over the
frames) and `fusion: feature_dim` (each of the 944 scalars of [X~; mean H; UL] is a position).
`sequence` is the default because it is the spec's: it is the one reading that keeps Eq. 16's
concatenation of X~, H and UL as it stands and gives every head the 1x1-conv projections of Eqs. 17-19
at a cost that grows with the head count as the paper says; broadcast repeats X~ and UL in every frame's
token and feature_dim needs a 944 x 944 attention map per head (3.6 GB per batch of 128).

Padded frames never change a posterior: they are zeroed before each convolution, the pools keep
floor(valid / 2) columns (at least one), and the attention pooling, the packed BiLSTM, the fusion keys
and the token mean all skip them. Full segments (the paper's set-up) have no padding.

Reported (spec 7.1, a random 80/20 utterance split, speaker-dependent, tuned on the reported part):
IEMOCAP 4 classes WA 81.60 / UA 79.32; RAVDESS 8 classes WA 88.88 / UA 87.85. What sertk measures
on speaker-independent folds is in the README's results table and the recipes' RESULTS.md.
"""
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import nn

from sertk.models import ModelConfigError, SERModel, check_choices, register
from sertk.models.sequence import masked_mean, masked_softmax, run_lstm

CHOICES = {
    "block_order": ("paper", "conv_bn_relu_pool"),
    "cnn_att_tokens": ("time", "position"),
    "fusion": ("sequence", "broadcast", "feature_dim"),
    "pool": ("mean", "flatten"),
}


@dataclass
class STRLSERConfig:
    lld_stream: str = "is10_lld"     # IS10 LLDs + deltas, 128 ms / 32 ms frames (features is10_seg*)
    hsf_stream: str = "is10_func"    # IS10 functionals of each segment (or of the utterance)
    n_lld: int = 76                  # [P]
    n_hsf: int = 1582                # [P]
    freq_kernel: int = 7             # b of the (b x 1) kernel along the descriptor rows [P]
    time_kernel: int = 5             # d of the (1 x d) kernel along the frames: 5 IEMOCAP, 3 RAVDESS [P]
    parallel_channels: int = 16      # [P]
    parallel_bn_relu: bool = True    # BN + ReLU after each parallel conv; Eq. 3 shows bare convs [D]
    cnn_channels: int = 48           # [P] for the last block, every block [D]
    cnn_blocks: int = 3              # [P]
    # paper: Conv, ReLU, MaxPool, BN (Eq. 4, 8.8) | conv_bn_relu_pool: the common order
    block_order: str = "paper"
    # time: a token per pooled frame, all channels x rows (432-d) | position: a 48-d token per position [D/I]
    cnn_att_tokens: str = "time"
    lstm_hidden: int = 128           # per direction [D]
    lstm_layers: int = 1             # [D]
    utt_dim: int = 256               # UL width [D]; sequence fusion needs 2 x lstm_hidden
    utt_dropout: float = 0.3         # [D]
    fusion: str = "sequence"         # sequence | broadcast | feature_dim (3.4, 8.6)
    heads: int = 8                   # [P]
    head_dim: int = 32               # fixed per head, so more heads cost more (8.6) [D]
    classifier_dropout: float = 0.5  # [D]
    pool: str = "mean"               # mean over tokens [D] | flatten: all tokens, "W O" literally (3.5)
    frames: Optional[int] = None     # pool flatten: the segment length in frames (59 at 2.0 s, 40 at 1.4 s)


def _valid_after_pool(lengths: torch.Tensor) -> torch.Tensor:
    """Columns a floor 2x max-pool leaves valid: floor(v / 2), at least one (a segment shorter than the
    pools keeps the column its frames reach)."""
    return (lengths // 2).clamp(min=1)


def _column_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


def _zero_columns(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x [B, C, F, T] with columns at or past each length set to zero (what an unpadded conv would see)."""
    if bool((lengths >= x.shape[-1]).all()):
        return x
    return x * _column_mask(lengths, x.shape[-1])[:, None, None, :].to(x.dtype)


class CNNBlock(nn.Module):
    """3x3 conv, ReLU, 2x2 max-pool (floor), BN (Eq. 4), or conv, BN, ReLU, pool."""

    def __init__(self, c_in: int, c_out: int, order: str):
        super().__init__()
        self.conv, self.bn, self.order = nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), order
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        x = self.conv(_zero_columns(x, lengths))
        if self.order == "paper":
            x = self.bn(self.pool(torch.relu(x)))
        else:
            x = self.pool(torch.relu(self.bn(x)))
        return x, _valid_after_pool(lengths)


class SpatialBranch(nn.Module):
    """Branch A: parallel frequency / time convs, 3x3 blocks, attention pooling -> X~ [B, token_dim]."""

    def __init__(self, cfg: STRLSERConfig):
        super().__init__()
        b, d, c = cfg.freq_kernel, cfg.time_kernel, cfg.parallel_channels
        for name, size in (("freq_kernel", b), ("time_kernel", d)):
            if size < 1 or size % 2 == 0:
                raise ModelConfigError(f"strl_ser: {name} must be odd (same padding), not {size}")
        self.freq_conv = self._parallel(nn.Conv2d(1, c, (b, 1), padding=(b // 2, 0)), c, cfg.parallel_bn_relu)
        self.time_conv = self._parallel(nn.Conv2d(1, c, (1, d), padding=(0, d // 2)), c, cfg.parallel_bn_relu)
        widths = [2 * c] + [cfg.cnn_channels] * cfg.cnn_blocks
        self.blocks = nn.ModuleList(CNNBlock(i, o, cfg.block_order) for i, o in zip(widths, widths[1:]))
        rows = cfg.n_lld
        for _ in range(cfg.cnn_blocks):
            rows //= 2
        if rows < 1:
            raise ModelConfigError(f"strl_ser: {cfg.cnn_blocks} pools leave none of the {cfg.n_lld} descriptor rows")
        self.rows, self.tokens = rows, cfg.cnn_att_tokens
        self.token_dim = cfg.cnn_channels * rows if self.tokens == "time" else cfg.cnn_channels
        self.attention = nn.Linear(self.token_dim, 1, bias=False)   # w of Eq. 6
        self.min_frames = 2 ** cfg.cnn_blocks

    @staticmethod
    def _parallel(conv: nn.Module, channels: int, bn_relu: bool) -> nn.Module:
        return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU()) if bn_relu else conv

    def forward(self, lld: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = lld.transpose(1, 2).unsqueeze(1)                          # [B, 1, 76, T]
        if x.shape[-1] < self.min_frames:                             # every pool keeps a column
            x = nn.functional.pad(x, (0, self.min_frames - x.shape[-1]))
        x = _zero_columns(x, lengths)
        x = torch.cat([self.freq_conv(x), self.time_conv(x)], dim=1)  # [B, 32, 76, T]
        for block in self.blocks:
            x, lengths = block(x, lengths)                            # [B, 48, 9, T3] at the end
        b, c, f, t = x.shape
        valid = _column_mask(lengths, t)
        if self.tokens == "time":
            tokens = x.permute(0, 3, 1, 2).reshape(b, t, c * f)      # a column of channels x rows
        else:
            tokens = x.permute(0, 3, 2, 1).reshape(b, t * f, c)      # a position: its channels
            valid = valid.repeat_interleave(f, dim=1)
        alpha = masked_softmax(self.attention(tokens).squeeze(-1), valid, dim=1)   # Eq. 6
        return torch.bmm(alpha.unsqueeze(1), tokens).squeeze(1)                   # Eq. 7


class MultiHeadFusion(nn.Module):
    """Eqs. 17-21: per head Q, K, V by 1x1 convolutions, softmax(Q K^T / sqrt(d)) V, heads concatenated."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.q, self.k, self.v = (nn.Conv1d(dim, heads * head_dim, 1) for _ in range(3))

    def forward(self, tokens: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
        """tokens [B, L, dim], valid [B, L] (None: all) -> [B, L, heads * head_dim]."""
        b, n, _ = tokens.shape
        x = tokens.transpose(1, 2)
        q, k, v = (proj(x).view(b, self.heads, self.head_dim, n).transpose(2, 3) for proj in (self.q, self.k, self.v))
        mask = None if valid is None else valid[:, None, None, :]
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)   # keys: valid tokens only
        return out.transpose(1, 2).reshape(b, n, self.heads * self.head_dim)


@register("strl_ser")
class STRLSER(SERModel):
    Config = STRLSERConfig
    channels_last = True   # faster in bf16 on an AMX CPU (benchmarks/train.py; docs/training.md)

    def __init__(self, num_classes: int, cfg: Optional[STRLSERConfig] = None):
        super().__init__()
        cfg = cfg or STRLSERConfig()
        check_choices("strl_ser", cfg, CHOICES)
        self.cfg = cfg
        self.streams = (cfg.lld_stream, cfg.hsf_stream)
        self.stream_dims = {cfg.lld_stream: cfg.n_lld, cfg.hsf_stream: cfg.n_hsf}
        self.vector_streams = (cfg.hsf_stream,)   # one row of functionals per segment
        if cfg.pool == "flatten" and not cfg.frames:
            raise ModelConfigError("strl_ser: pool flatten needs model.frames, the segment length in frames")
        self.fixed_frames = cfg.frames if cfg.pool == "flatten" else None
        d_model = 2 * cfg.lstm_hidden
        self.spatial = SpatialBranch(cfg)
        self.bilstm = nn.LSTM(cfg.n_lld, cfg.lstm_hidden, cfg.lstm_layers, batch_first=True, bidirectional=True)
        self.utterance = nn.Sequential(nn.Linear(cfg.n_hsf, cfg.utt_dim), nn.ReLU(), nn.Dropout(cfg.utt_dropout))
        if cfg.fusion == "sequence":
            if cfg.utt_dim != d_model:
                raise ModelConfigError(f"strl_ser: sequence fusion stacks UL with the BiLSTM states, so utt_dim must "
                                       f"be 2 x lstm_hidden = {d_model}, not {cfg.utt_dim}")
            self.spatial_proj = nn.Linear(self.spatial.token_dim, d_model)
            token_dim, tokens = d_model, (cfg.frames or 0) + 2
        elif cfg.fusion == "broadcast":
            token_dim, tokens = d_model + self.spatial.token_dim + cfg.utt_dim, cfg.frames or 0
        else:
            token_dim, tokens = 1, self.spatial.token_dim + d_model + cfg.utt_dim
        self.fusion = MultiHeadFusion(token_dim, cfg.heads, cfg.head_dim)
        fused = cfg.heads * cfg.head_dim
        self.classifier = nn.Sequential(nn.Dropout(cfg.classifier_dropout),
                                        nn.Linear(fused * (tokens if cfg.pool == "flatten" else 1), num_classes))

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        cfg = self.cfg
        lld, hsf, mask = batch[cfg.lld_stream], batch[cfg.hsf_stream], batch["mask"]
        if lld.dim() != 3 or hsf.dim() != 2:
            raise ModelConfigError(f"strl_ser: takes {cfg.lld_stream} as [B, T, {cfg.n_lld}] frames and "
                                   f"{cfg.hsf_stream} as [B, {cfg.n_hsf}] (one row per segment); got "
                                   f"{list(lld.shape)} and {list(hsf.shape)}")
        if self.fixed_frames is not None and lld.shape[1] != self.fixed_frames:
            raise ModelConfigError(f"strl_ser: pool flatten was built for {self.fixed_frames}-frame segments, "
                                   f"got {lld.shape[1]}")
        if lld.shape[-1] != cfg.n_lld or hsf.shape[-1] != cfg.n_hsf:
            raise ModelConfigError(f"strl_ser: streams have {lld.shape[-1]} and {hsf.shape[-1]} dims, the model "
                                   f"takes {cfg.n_lld} ({cfg.lld_stream}) and {cfg.n_hsf} ({cfg.hsf_stream})")
        lengths = mask.sum(1).clamp(min=1)
        spatial = self.spatial(lld, lengths)                          # X~
        temporal, _ = run_lstm(self.bilstm, lld, mask)               # H [B, T, 2 hidden]
        utterance = self.utterance(hsf)                              # UL
        tokens, valid = self._tokens(spatial, temporal, utterance, mask)
        fused = self.fusion(tokens, valid)
        if cfg.pool == "flatten":
            pooled = (fused if valid is None else fused * valid[..., None].to(fused.dtype)).flatten(1)
        else:
            pooled = fused.mean(1) if valid is None else masked_mean(fused, valid)
        return {"logits": self.classifier(pooled)}

    def _tokens(self, spatial, temporal, utterance, mask):
        if self.cfg.fusion == "sequence":
            ones = mask.new_ones(mask.shape[0], 1)
            tokens = torch.cat([self.spatial_proj(spatial).unsqueeze(1), temporal, utterance.unsqueeze(1)], dim=1)
            return tokens, torch.cat([ones, mask, ones], dim=1)
        if self.cfg.fusion == "broadcast":
            t = temporal.shape[1]
            tokens = torch.cat([temporal, spatial.unsqueeze(1).expand(-1, t, -1),
                                utterance.unsqueeze(1).expand(-1, t, -1)], dim=-1)
            return tokens, mask
        vector = torch.cat([spatial, masked_mean(temporal, mask), utterance], dim=-1)
        return vector.unsqueeze(-1), None
