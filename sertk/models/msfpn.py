"""msfpn: MSFPN, a multi-scale feature pyramid over frame-level speech-encoder embeddings.

Y. Wang, J. Huang, Z. Zhao, H. Lan, X. Zhang, "Speech Emotion Recognition Using Multi-Scale Global-Local
Representation Learning with Feature Pyramid Network", Preprints.org 2024 (Applied Sciences 14(24) 11494).
Implemented from the spec `shared/specs/msfpn.md` (section numbers below are the spec's); [P] paper,
[D] the spec's default, [I] the spec's reading of ambiguous text.

Input: frozen HuBERT-Large embeddings [B, T, 1024] at 50 frames/s (feature stream `ssl`, spec 2), the
whole utterance, padded with a mask. For runs without encoder weights the same model reads a log-mel
stream through a 1x1 input projection (`input_projection`, config msfpn_logmel); results from it say so.
Shapes for the defaults:
- Three groups X, Y, Z (kernel widths 3, 5, 7 [P]), each three ConvBlocks deep (3.2): [max-pool 2 at
  levels 2 and 3 [I]] -> Conv1d(kw) -> BN -> ReLU -> dropout 0.1 -> improved CSA (3.3: 8 heads, two per
  window 3 / 7 / 11 / 15 frames, Q/K/V/O, residual + LN) -> Conv1d(kw) -> BN -> ReLU. Widths 1024, 512,
  256 per level [P]; lengths T, ceil(T / 2), ceil(T / 4).
- Forward fusion (3.4): y_i = BY_i(y_{i-1}) + x_i, z_i = BZ_i(z_{i-1}) + y_i [I].
- Backward fusion (3.5): G_i = sum_g softmax_g(w2 tanh(W1 f_ig)) f_ig, per frame, d_a = C_i / 4 [D].
- Top-down (3.6): P3 = G3, P2 = G2 + ConvT(P3), P1 = G1 + ConvT(P2) (k 2, stride 2, cropped).
- Three BiLSTMs (128 per direction [D]) read P1, P2, P3; their last states are concatenated (R, 768) [I]
  -> dropout 0.3 -> Linear(768, 128) -> ReLU -> dropout 0.3 -> Linear(128, C) (3.8).

Padding never changes a posterior (3.10): padded frames are zeroed after every conv, CSA and fusion
step, are never attention keys, are skipped by the max-pool (filled with -inf first) and by the packed
BiLSTMs. BatchNorm statistics in training still see the zeros (as the spec says); decoding is exact.
Parameters with the defaults: 66,772,999 for 4 classes, the spec's section 9 estimate of 66.8 M.

The paper reports IEMOCAP 4-class, 10-fold leave-one-speaker-out UA 73.39 / WA 71.79 (7), with no
dev policy stated; sertk's `loso_speaker` protocol develops on the test speaker's session partner.
Measured numbers are in the README's results table and egs/*/RESULTS.md.
"""
from dataclasses import dataclass, field
from typing import Dict, List

import torch
from torch import nn
from torch.nn import functional as F

from sertk.models import ModelConfigError, SERModel, check_choices, check_counts, check_rates, register
from sertk.models.sequence import masked_mean, run_lstm
from sertk.models.transformer import MultiHeadAttention, banded_attention

CHOICES = {
    "forward_fusion": ("post_add", "pre_add", "none"),
    "backward_fusion": ("attn_frame", "attn_utt", "mean", "none"),
    "lstm_inputs": ("P", "G"),
    "rep_merge": ("concat", "sum"),
}


@dataclass
class MSFPNConfig:
    stream: str = "ssl"                  # frame-level stream read: HuBERT-Large embeddings (spec 2) [D]
    input_dim: int = 1024                # its dims per frame
    input_projection: bool = False       # a 1x1 Conv1d(input_dim -> widths[0]) first (log-mel frontend)
    widths: List[int] = field(default_factory=lambda: [1024, 512, 256])   # per level [P]
    kernel_widths: List[int] = field(default_factory=lambda: [3, 5, 7])   # one group each [P]; [3]: w/o MSCNN
    downsample_levels: List[int] = field(default_factory=lambda: [2, 3])  # max-pool 2 before these (1-based) [I]
    conv_dropout: float = 0.1            # after the first conv of a ConvBlock [D]
    use_csa: bool = True                 # false: w/o CSA (Table 2)
    csa_windows: List[int] = field(default_factory=lambda: [3, 7, 11, 15])   # frames, centred [P/I]
    csa_heads_per_window: int = 2        # 8 heads [D]
    csa_out_proj: bool = True            # W_O [D]
    csa_dropout: float = 0.1             # on the CSA output before the residual [D]
    forward_fusion: str = "post_add"     # post_add: y_i = BY(y_{i-1}) + x_i | pre_add: y_i = BY(y_{i-1} + x_{i-1}) | none
    backward_fusion: str = "attn_frame"  # attn_frame | attn_utt (one weight per utterance) | mean | none (G = last group)
    fusion_ratio: int = 4                # d_a = C_i / fusion_ratio [D]
    topdown: bool = True                 # FPN top-down additions (false with mean: w/o backward fusion)
    lstm_inputs: str = "P"               # the BiLSTMs read P_i (top-down maps) or G_i (no top-down path) [I]
    lstm_hidden: int = 128               # per direction [D]
    lstm_on_input: bool = False          # a fourth BiLSTM on the input embeddings (spec 8.9) [I]
    rep_merge: str = "concat"            # concat (R 768) | sum (R 256) of the BiLSTM states [I]
    fc_hidden: int = 128                 # [D]
    head_dropout: float = 0.3            # [D]


def _check(cfg: MSFPNConfig) -> None:
    check_choices("msfpn", cfg, CHOICES)
    check_counts("msfpn", cfg, ("input_dim", "csa_heads_per_window", "fusion_ratio", "lstm_hidden", "fc_hidden"))
    check_rates("msfpn", cfg, ("conv_dropout", "csa_dropout", "head_dropout"))
    levels = len(cfg.widths)
    if not cfg.widths or min(cfg.widths) < 1 or not cfg.kernel_widths:
        raise ModelConfigError(f"msfpn: widths and kernel_widths need at least one value each, all >= 1 "
                               f"(got {cfg.widths}, {cfg.kernel_widths})")
    if any(k < 1 or k % 2 == 0 for k in cfg.kernel_widths + cfg.csa_windows):
        raise ModelConfigError(f"msfpn: kernel_widths {cfg.kernel_widths} and csa_windows {cfg.csa_windows} "
                               "must be odd and >= 1 (centred)")
    if any(not 2 <= level <= levels for level in cfg.downsample_levels):
        raise ModelConfigError(f"msfpn: downsample_levels {cfg.downsample_levels} must be levels 2..{levels}")
    heads = len(cfg.csa_windows) * cfg.csa_heads_per_window
    if cfg.use_csa and (not cfg.csa_windows or any(w % heads for w in cfg.widths)):
        raise ModelConfigError(f"msfpn: every width {cfg.widths} must divide into {heads} CSA heads "
                               f"({len(cfg.csa_windows)} windows x {cfg.csa_heads_per_window})")
    if any(w < cfg.fusion_ratio for w in cfg.widths):
        raise ModelConfigError(f"msfpn: fusion_ratio {cfg.fusion_ratio} leaves no attention width for {cfg.widths}")


# --- the pieces -------------------------------------------------------------------------------------

def pool_mask(valid: torch.Tensor) -> torch.Tensor:
    """The frame mask after a max-pool of 2 with ceil_mode (a pooled frame is valid if any input was)."""
    return F.max_pool1d(valid[:, None].float(), 2, 2, ceil_mode=True)[:, 0] > 0


def zero_padding(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """x [B, C, T] with padded frames zero."""
    return x * valid[:, None].to(x.dtype)


class MultiWindowCSA(nn.Module):
    """Improved convolutional self-attention (3.3): local multi-head attention whose heads use different
    centred windows (heads_per_window heads for each window), keys limited to valid frames; then
    LN(x + dropout(W_O [heads])). No positions: the windows and the convolutions carry them."""

    def __init__(self, dim: int, windows: List[int], heads_per_window: int, dropout: float, out_proj: bool):
        super().__init__()
        self.attn = MultiHeadAttention(dim, len(windows) * heads_per_window, 0.0)
        if not out_proj:
            self.attn.out = nn.Identity()
        self.register_buffer("radius", torch.tensor([w // 2 for w in windows for _ in range(heads_per_window)]),
                             persistent=False)
        self.drop, self.norm = nn.Dropout(dropout), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x [B, T, D], valid [B, T] -> [B, T, D]."""
        q, k, v = self.attn.heads_of(x)
        return self.norm(x + self.drop(self.attn.merge(banded_attention(q, k, v, valid, self.radius))))


class ConvBlock(nn.Module):
    """[max-pool 2] -> Conv1d(kw) -> BN -> ReLU -> dropout -> CSA -> Conv1d(kw) -> BN -> ReLU (3.2)."""

    def __init__(self, c_in: int, c_out: int, kw: int, downsample: bool, cfg: MSFPNConfig):
        super().__init__()
        self.downsample = downsample
        self.conv1 = nn.Sequential(nn.Conv1d(c_in, c_out, kw, padding=kw // 2), nn.BatchNorm1d(c_out), nn.ReLU(),
                                   nn.Dropout(cfg.conv_dropout))
        self.csa = (MultiWindowCSA(c_out, cfg.csa_windows, cfg.csa_heads_per_window, cfg.csa_dropout,
                                   cfg.csa_out_proj) if cfg.use_csa else None)
        self.conv2 = nn.Sequential(nn.Conv1d(c_out, c_out, kw, padding=kw // 2), nn.BatchNorm1d(c_out), nn.ReLU())

    def forward(self, x: torch.Tensor, valid_in: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """x [B, C_in, T_in] (valid_in) -> [B, C_out, T] (valid: this level's mask)."""
        if self.downsample:   # padded frames never win the max
            x = F.max_pool1d(x.masked_fill(~valid_in[:, None], float("-inf")), 2, 2, ceil_mode=True)
            x = x.masked_fill(~valid[:, None], 0.0)
        x = zero_padding(self.conv1(x), valid)
        if self.csa is not None:
            x = zero_padding(self.csa(x.transpose(1, 2), valid).transpose(1, 2), valid)
        return zero_padding(self.conv2(x), valid)


class LevelFusion(nn.Module):
    """Backward fusion at one level (3.5): weights over the groups from w2^T tanh(W1 f + b1), softmax over
    the groups, per frame (attn_frame) or per utterance from the score's mean over valid frames (attn_utt)."""

    def __init__(self, dim: int, hidden: int, per_utterance: bool):
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.per_utterance = per_utterance

    def forward(self, groups: List[torch.Tensor], valid: torch.Tensor) -> torch.Tensor:
        f = torch.stack(groups, 1).transpose(2, 3)                 # [B, G, T, C]
        s = self.score(f)                                          # [B, G, T, 1]
        if self.per_utterance:
            s = masked_mean(s.flatten(0, 1), valid.repeat_interleave(len(groups), 0)).view(*s.shape[:2], 1, 1)
        return (torch.softmax(s, dim=1) * f).sum(1).transpose(1, 2)


# --- the model --------------------------------------------------------------------------------------

@register("msfpn")
class MSFPN(SERModel):
    Config = MSFPNConfig

    def __init__(self, num_classes: int, cfg: MSFPNConfig):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        self.streams = (cfg.stream,)
        self.stream_dims = {cfg.stream: cfg.input_dim}
        self.fixed_frames = None
        widths = list(cfg.widths)
        self.project = nn.Conv1d(cfg.input_dim, widths[0], 1) if cfg.input_projection else None
        first = widths[0] if cfg.input_projection else cfg.input_dim
        self.downsample = [level + 1 in cfg.downsample_levels for level in range(len(widths))]
        self.groups = nn.ModuleList(
            nn.ModuleList(ConvBlock(c_in, c_out, kw, down, cfg)
                          for c_in, c_out, down in zip([first] + widths[:-1], widths, self.downsample))
            for kw in cfg.kernel_widths)
        attention = cfg.backward_fusion.startswith("attn")
        self.fusions = nn.ModuleList(LevelFusion(w, w // cfg.fusion_ratio, cfg.backward_fusion == "attn_utt")
                                     for w in widths) if attention else None
        # P_i = G_i + ConvT(P_{i+1}): stride 2 where level i + 1 halved the frames, else 1 x 1
        self.up = nn.ModuleList(nn.ConvTranspose1d(widths[i + 1], widths[i], 2 if self.downsample[i + 1] else 1,
                                                   2 if self.downsample[i + 1] else 1)
                                for i in range(len(widths) - 1)) if cfg.topdown and cfg.lstm_inputs == "P" else None
        lstm_dims = widths + ([cfg.input_dim] if cfg.lstm_on_input else [])
        self.lstms = nn.ModuleList(nn.LSTM(d, cfg.lstm_hidden, batch_first=True, bidirectional=True)
                                   for d in lstm_dims)
        rep = 2 * cfg.lstm_hidden * (len(lstm_dims) if cfg.rep_merge == "concat" else 1)
        self.head = nn.Sequential(nn.Dropout(cfg.head_dropout), nn.Linear(rep, cfg.fc_hidden), nn.ReLU(),
                                  nn.Dropout(cfg.head_dropout), nn.Linear(cfg.fc_hidden, num_classes))

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        e, valid = batch[self.cfg.stream], batch["mask"]
        if e.shape[-1] != self.cfg.input_dim:
            raise ModelConfigError(f"msfpn expects {self.cfg.input_dim} dims per frame of '{self.cfg.stream}', got "
                                   f"{e.shape[-1]}; set model.input_dim")
        e = zero_padding(e.transpose(1, 2), valid)                  # [B, D, T]; the convolutions read past ends
        x0 = zero_padding(self.project(e), valid) if self.project is not None else e
        masks, fused = self._bottom_up(x0, valid)
        tops = self._top_down(fused, masks)
        reads = tops if self.cfg.lstm_inputs == "P" else fused
        inputs = list(zip(reads, masks)) + ([(e, valid)] if self.cfg.lstm_on_input else [])
        states = [run_lstm(lstm, x.transpose(1, 2), m)[1] for lstm, (x, m) in zip(self.lstms, inputs)]
        rep = torch.cat(states, -1) if self.cfg.rep_merge == "concat" else torch.stack(states).sum(0)
        return {"logits": self.head(rep)}

    def _bottom_up(self, x0: torch.Tensor, valid: torch.Tensor):
        """The groups level by level with forward fusion (3.4), and each level's fused map G_i (3.5)."""
        masks, fused = [], []
        previous, mask_in = [x0] * len(self.groups), valid
        for level, down in enumerate(self.downsample):
            mask = pool_mask(mask_in) if down else mask_in
            outputs: List[torch.Tensor] = []
            for g, group in enumerate(self.groups):
                x = previous[g]
                if self.cfg.forward_fusion == "pre_add" and g and level:   # level 1 inputs are all x0
                    x = x + previous[g - 1]
                out = group[level](x, mask_in, mask)
                if self.cfg.forward_fusion == "post_add" and g:
                    out = out + outputs[-1]
                outputs.append(out)
            masks.append(mask)
            fused.append(zero_padding(self._fuse(level, outputs, mask), mask))
            previous, mask_in = outputs, mask
        return masks, fused

    def _fuse(self, level: int, outputs: List[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        if self.fusions is not None:
            return self.fusions[level](outputs, mask)
        if self.cfg.backward_fusion == "mean":
            return torch.stack(outputs).mean(0)
        return outputs[-1]   # none: the last group, which forward fusion has given the others' features

    def _top_down(self, fused: List[torch.Tensor], masks: List[torch.Tensor]) -> List[torch.Tensor]:
        """P_L = G_L, P_i = G_i + ConvT(P_{i+1}) cropped to level i (3.6); P_i = G_i without top-down."""
        if self.up is None:
            return list(fused)
        tops = [fused[-1]]
        for i in range(len(fused) - 2, -1, -1):
            up = self.up[i](tops[0])[..., :fused[i].shape[-1]]
            tops.insert(0, zero_padding(fused[i] + up, masks[i]))
        return tops
