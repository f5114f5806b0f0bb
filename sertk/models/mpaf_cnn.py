"""mpaf_cnn: MPAF-CNN, multiperspective-aware CNN with fine-grained (frame-level) fusion.

G. Li, J. Hou, Y. Liu, J. Wei, "MPAF-CNN: Multiperspective aware and fine-grained fusion strategy
for speech emotion recognition", Applied Acoustics 214 (2023) 109658. Implemented from the spec
`shared/specs/mpaf_cnn.md` (section numbers below are the spec's); tags: [P] stated in the paper,
[D] the spec's default for something the paper leaves open, [I] the spec's reading of unclear text.

Two branches read one 2 s segment (200 frames at 10 ms):
- MS: 64-band log-mel as a 1-channel image -> L MPAM-2D layers (16 channels) [P 2-D CNN, D sizes];
- LLD: ZCR, short-time energy, log energy, 13 MFCC + deltas + delta-deltas (42-d) -> L MPAM-1D
  layers (64 channels) [P list, D sizes].
Each MPAM layer (3.2-3.4) is a multiscale layer (k=3 and k=5 convs, BN, residual, ReLU), a
frame-level aggregated attention (one scalar query and key per frame, a T x T softmax map that
re-mixes the frames, no value projection, no residual [P]) and global vectors: TDGR = (Q + K) / 2
per frame, and a learned weighted sum over time, FDGR (MS, averaged over channels [I]) or CDGR (LLD).
The global vectors are summed over layers [P]; each branch's summed TDGR is appended to its frames
as one more feature, the fine-grained fusion strategy (FFS, 3.6) cross-attends the two frame
sequences with scalar queries and keys and maps back with a residual, a BiLSTM reads the fused
frames, and one linear layer classifies [final BiLSTM states ‖ FDGR + CDGR] (3.7). Training: plain
cross-entropy, Adam 1e-4, batch 16, 50 epochs [P]; an utterance is the mean of its segments'
posteriors [P].

Padded frames (a segment shorter than 2 s) are excluded everywhere: zeroed before every
convolution, never attended to, skipped by the BiLSTM and the weighted sums, so a segment's
posterior depends on its own frames only. A full 2 s segment is computed exactly as the spec says.

Every [D] and [I] choice is a field of `MPAFCNNConfig`; each alternative reading the spec lists is
a switch, and so is each ablation of its section 7.3 (M2-M9). Parameters with the defaults and
4 classes: 1,503,628, the spec's section 9 count.

Results: the paper reports WA 72.19 / UA 72.88 on IEMOCAP 4-class with one random 80/20 split
that shares speakers between train and test, selected without a dev set (7.2, 8.14). sertk's
EmoDB and RAVDESS runs are speaker-independent with the checkpoint chosen on dev; their numbers,
with the commands that produced them, are in docs/models/mpaf_cnn.md and egs/*/RESULTS.md, not
comparable with the paper's.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from sertk.models import ModelConfigError, SERModel, check_choices, check_counts, check_rates, register
from sertk.models.pooling import zero_padded_frames
from sertk.models.sequence import masked_mean, masked_softmax, run_lstm

CHOICES = {
    "multiscale": ("sum", "concat", "single"),
    "attention_softmax": ("key", "query"),
    "fdgr_reduce": ("channel_mean", "linear"),
    "tdgr_source": ("own", "all"),
    "branches": ("both", "ms", "lld"),
    "ffs_mode": ("literal", "standard"),
    "ffs_activation": ("none", "relu"),
    "combine": ("concat", "sum"),
    "lstm": ("joint", "separate"),
    "lstm_pooling": ("final", "mean"),
}


@dataclass
class MPAFCNNConfig:
    mel_stream: str = "logmel"        # [T, n_mels] log-mel (2.1)
    lld_stream: str = "lld"           # [T, n_lld] frame-level descriptors (2.2)
    n_mels: int = 64                  # [D]
    n_lld: int = 42                   # [D] 3 + 13 x 3; 48 with deltas on every LLD (features mpaf_lld48)
    frames: int = 200                 # T per segment [D]; W_F and W_C are sized by it [P], so it is fixed
    layers: int = 3                   # MPAM layers per branch [D] ("multiple layers")
    ms_channels: int = 16             # MPAM-2D channels [D]
    lld_channels: int = 64            # MPAM-1D channels [D]; = n_mels so FDGR + CDGR can be added
    multiscale: str = "sum"           # sum of the k=3 and k=5 paths [D] | concat + 1x1 conv | single k=3 (M5)
    mpam: bool = True                 # False: plain Conv-BN-ReLU layers, no attention or globals (M4)
    attention: bool = True            # False: X = M, q and k kept for TDGR (M6)
    attention_softmax: str = "key"    # MPAM attention normalised over keys (rows sum to 1) [I] | query
    attention_residual: bool = False  # x_i = m_i + sum_j A_ij m_j instead of X = AM [D option, 8.13]
    fdgr_reduce: str = "channel_mean"  # FDGR (C, F) -> F by the channel mean [I] | linear C*F -> lld_channels
    tdgr: bool = True                 # append the summed TDGR to each branch's frames (False: M7)
    tdgr_source: str = "own"          # each branch its own [D] | all: MS + LLD appended to both (8.5)
    global_features: bool = True      # classifier reads FDGR + CDGR (False: M8)
    branches: str = "both"            # both | ms (M2) | lld (M3)
    ffs: bool = True                  # False: the two sequences go to the BiLSTM unfused (M9)
    ffs_mode: str = "literal"         # literal: A_1 normalised over T1 then transposed [I] | standard rows
    ffs_activation: str = "none"      # none: linear q/k [I] | relu ("linear rectification layer", 8.6)
    ffs_layernorm: bool = False       # LayerNorm on A X before W_Y [D option, 8.3]
    combine: str = "concat"           # Y_1 and Y_2 for the BiLSTM: feature concat [D] | sum (needs d_a = d_b)
    ms_freq_pool: int = 1             # average-pool X_MS over frequency by this factor (8.7); 1 = none
    lstm: str = "joint"               # one BiLSTM on the combined frames [D] | separate: one per stream
    lstm_hidden: int = 128            # per direction [D]
    lstm_pooling: str = "final"       # final fwd ‖ bwd states [D] | mean over frames
    dropout: float = 0.3              # before the classifier [D]


def _check(cfg: MPAFCNNConfig) -> None:
    check_choices("mpaf_cnn", cfg, CHOICES)
    check_counts("mpaf_cnn", cfg, ("n_mels", "n_lld", "frames", "layers", "ms_channels", "lld_channels",
                                   "ms_freq_pool", "lstm_hidden"))
    if cfg.n_mels % cfg.ms_freq_pool:
        raise ModelConfigError(f"mpaf_cnn: ms_freq_pool ({cfg.ms_freq_pool}) must divide n_mels ({cfg.n_mels})")
    check_rates("mpaf_cnn", cfg, ("dropout",))


def _conv_bn(dim: int, cin: int, cout: int, kernel: int) -> nn.Sequential:
    conv, norm = (nn.Conv1d, nn.BatchNorm1d) if dim == 1 else (nn.Conv2d, nn.BatchNorm2d)
    return nn.Sequential(conv(cin, cout, kernel, padding=kernel // 2, bias=False), norm(cout))


class MultiScale(nn.Module):
    """3.2, local perspective: ReLU(BN(conv3 x) + BN(conv5 x) + shortcut(x)), stride 1, "same" padding."""

    def __init__(self, dim: int, cin: int, cout: int, mode: str):
        super().__init__()
        kernels = (3,) if mode == "single" else (3, 5)
        self.paths = nn.ModuleList(_conv_bn(dim, cin, cout, k) for k in kernels)
        self.fuse = _conv_bn(dim, len(kernels) * cout, cout, 1) if mode == "concat" else None
        self.shortcut = nn.Identity() if cin == cout else _conv_bn(dim, cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fuse is not None:
            local = self.fuse(torch.cat([p(x) for p in self.paths], dim=1))
        else:
            local = sum(p(x) for p in self.paths)
        return torch.relu(local + self.shortcut(x))


class FrameAttention(nn.Module):
    """3.3, frame-level perspective (eqs. 1-4): q_t = w_Q . m_t, k_t = w_K . m_t, A = softmax(q k^T),
    x_i = sum_j A_ij m_j; also returns TDGR = (q + k) / 2 (eq. 5)."""

    def __init__(self, d: int, enabled: bool, softmax_over: str, residual: bool):
        super().__init__()
        self.w_q = nn.Parameter(torch.randn(d) / d ** 0.5)   # N(0, 1/d): q, k about unit scale on BN'd input
        self.w_k = nn.Parameter(torch.randn(d) / d ** 0.5)
        self.enabled, self.softmax_over, self.residual = enabled, softmax_over, residual

    def forward(self, m: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """m [B, d, T] (zero at padded frames) -> (X [B, d, T], TDGR [B, T])."""
        q = torch.einsum("bdt,d->bt", m, self.w_q)
        k = torch.einsum("bdt,d->bt", m, self.w_k)
        x = m
        if self.enabled:
            scores = q[:, :, None] * k[:, None, :]                    # [B, T_i, T_j], d_k = 1: no scaling
            if self.softmax_over == "key":
                attn = masked_softmax(scores, mask[:, None, :], dim=2)
            else:
                attn = masked_softmax(scores, mask[:, :, None], dim=1)
            x = torch.bmm(m, attn.transpose(1, 2))                    # x_i = sum_j A_ij m_j
            if self.residual:
                x = x + m
        return x, 0.5 * (q + k)


class MPAM(nn.Module):
    """One multiperspective aware module (3.2-3.4): -> (X, TDGR [B, T], FDGR or CDGR [B, d])."""

    def __init__(self, dim: int, cin: int, cout: int, n_freq: int, cfg: MPAFCNNConfig):
        super().__init__()
        self.dim = dim
        self.local = MultiScale(dim, cin, cout, cfg.multiscale)
        flat = cout * n_freq if dim == 2 else cout                       # 2-D: d = C * F per frame [I]
        self.attend = FrameAttention(flat, cfg.attention, cfg.attention_softmax, cfg.attention_residual)
        # W_F or W_C, the mean over time at init; none when the classifier reads no global vector (M8)
        self.w_time = nn.Parameter(torch.full((cfg.frames,), 1.0 / cfg.frames)) if cfg.global_features else None
        linear = dim == 2 and cfg.fdgr_reduce == "linear" and cfg.global_features
        self.to_global = nn.Linear(flat, cfg.lld_channels) if linear else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        m = zero_padded_frames(self.local(zero_padded_frames(x, mask)), mask)
        flat, tdgr = self.attend(m.flatten(1, -2), mask)
        x = zero_padded_frames(flat.view(m.shape), mask)
        pooled = None
        if self.w_time is not None:
            pooled = torch.einsum("b...t,t->b...", x, self.w_time)     # [B, C, F] or [B, C]
            if self.dim == 2:
                pooled = self.to_global(pooled.flatten(1)) if self.to_global is not None else pooled.mean(1)
        return x, tdgr * mask.to(tdgr.dtype), pooled


class PlainLayer(nn.Module):
    """Ablation M4: Conv(k=3)-BN-ReLU in place of an MPAM; no TDGR and no global vector."""

    def __init__(self, dim: int, cin: int, cout: int):
        super().__init__()
        self.block = _conv_bn(dim, cin, cout, 3)

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        return zero_padded_frames(torch.relu(self.block(zero_padded_frames(x, mask))), mask), None, None


class Branch(nn.Module):
    """A stack of MPAMs; TDGRs and global vectors are summed over the layers [P]."""

    def __init__(self, dim: int, cin: int, channels: int, n_freq: int, cfg: MPAFCNNConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            MPAM(dim, cin if i == 0 else channels, channels, n_freq, cfg) if cfg.mpam
            else PlainLayer(dim, cin if i == 0 else channels, channels)
            for i in range(cfg.layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        tdgr_sum: Optional[torch.Tensor] = None
        global_sum: Optional[torch.Tensor] = None
        for layer in self.layers:
            x, tdgr, pooled = layer(x, mask)
            if tdgr is not None:
                tdgr_sum = tdgr if tdgr_sum is None else tdgr_sum + tdgr
            if pooled is not None:
                global_sum = pooled if global_sum is None else global_sum + pooled
        return x, tdgr_sum, global_sum


class FineGrainedFusion(nn.Module):
    """3.6, FFS (eqs. 10-15): scalar queries and keys per frame, frame-to-frame cross-attention
    maps A_1 [T1, T2] and A_2 [T2, T1], then Y_1 = (A_1 X_b) W_Y1 + X_a and Y_2 = (A_2 X_a) W_Y2 + X_b.

    literal: A_1 = (softmax over T1 of Q_b K_a^T)^T, so its columns sum to 1, as the paper writes;
    standard: A_1 = softmax over T2 of Q_a K_b^T (rows sum to 1), as ordinary cross-attention."""

    def __init__(self, d_a: int, d_b: int, cfg: MPAFCNNConfig):
        super().__init__()
        self.q_a, self.k_a = nn.Linear(d_a, 1, bias=False), nn.Linear(d_a, 1, bias=False)
        self.q_b, self.k_b = nn.Linear(d_b, 1, bias=False), nn.Linear(d_b, 1, bias=False)
        self.w_y1, self.w_y2 = nn.Linear(d_b, d_a), nn.Linear(d_a, d_b)
        self.norm_1 = nn.LayerNorm(d_b) if cfg.ffs_layernorm else nn.Identity()
        self.norm_2 = nn.LayerNorm(d_a) if cfg.ffs_layernorm else nn.Identity()
        self.activation = torch.relu if cfg.ffs_activation == "relu" else (lambda t: t)
        self.literal = cfg.ffs_mode == "literal"

    def maps(self, x_a: torch.Tensor, x_b: torch.Tensor, mask: torch.Tensor):
        """A_1 [B, T1, T2] and A_2 [B, T2, T1]; padded frames get no weight."""
        q_a, k_a = self.activation(self.q_a(x_a)), self.activation(self.k_a(x_a))
        q_b, k_b = self.activation(self.q_b(x_b)), self.activation(self.k_b(x_b))
        valid = mask[:, None, :]                                         # over the last axis
        if self.literal:
            a_1 = masked_softmax(q_b @ k_a.transpose(1, 2), valid, dim=2).transpose(1, 2)
            a_2 = masked_softmax(q_a @ k_b.transpose(1, 2), valid, dim=2).transpose(1, 2)
        else:
            a_1 = masked_softmax(q_a @ k_b.transpose(1, 2), valid, dim=2)
            a_2 = masked_softmax(q_b @ k_a.transpose(1, 2), valid, dim=2)
        return a_1, a_2

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor, mask: torch.Tensor):
        """x_a [B, T, d_a], x_b [B, T, d_b], both zero at padded frames -> Y_1, Y_2 (zero there too)."""
        a_1, a_2 = self.maps(x_a, x_b, mask)
        frames = mask[..., None].to(x_a.dtype)
        y_1 = (self.w_y1(self.norm_1(a_1 @ x_b)) + x_a) * frames
        y_2 = (self.w_y2(self.norm_2(a_2 @ x_a)) + x_b) * frames
        return y_1, y_2


@register("mpaf_cnn")
class MPAFCNN(SERModel):
    Config = MPAFCNNConfig

    def __init__(self, num_classes: int, cfg: MPAFCNNConfig):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        use_ms, use_lld = cfg.branches in ("both", "ms"), cfg.branches in ("both", "lld")
        self.streams = tuple(s for s, used in ((cfg.mel_stream, use_ms), (cfg.lld_stream, use_lld)) if used)
        self.stream_dims = {s: d for s, d in ((cfg.mel_stream, cfg.n_mels), (cfg.lld_stream, cfg.n_lld))
                            if s in self.streams}
        self.fixed_frames = cfg.frames
        self.ms = Branch(2, 1, cfg.ms_channels, cfg.n_mels, cfg) if use_ms else None
        self.lld = Branch(1, cfg.n_lld, cfg.lld_channels, 1, cfg) if use_lld else None
        self.with_tdgr = cfg.mpam and cfg.tdgr
        self.with_global = cfg.mpam and cfg.global_features
        extra = int(self.with_tdgr)
        widths = ([cfg.ms_channels * cfg.n_mels // cfg.ms_freq_pool + extra] if use_ms else []) + \
                 ([cfg.lld_channels + extra] if use_lld else [])
        self.ffs = FineGrainedFusion(*widths, cfg) if len(widths) == 2 and cfg.ffs else None
        if cfg.combine == "sum" and cfg.lstm == "joint" and len(set(widths)) > 1:
            raise ModelConfigError(f"mpaf_cnn: combine=sum needs both fused streams equally wide, got {widths} "
                                   "(d_a = ms_channels * n_mels / ms_freq_pool + 1, d_b = lld_channels + 1)")
        if cfg.lstm == "separate":
            lstm_inputs = widths
        else:
            lstm_inputs = [widths[0] if cfg.combine == "sum" else sum(widths)]
        self.lstms = nn.ModuleList(nn.LSTM(w, cfg.lstm_hidden, batch_first=True, bidirectional=True)
                                   for w in lstm_inputs)
        global_dims = ([cfg.lld_channels if cfg.fdgr_reduce == "linear" else cfg.n_mels] if use_ms else []) + \
                      ([cfg.lld_channels] if use_lld else [])
        if self.with_global and len(set(global_dims)) > 1:
            raise ModelConfigError(f"mpaf_cnn: FDGR ({global_dims[0]}) and CDGR ({global_dims[1]}) are added, so "
                                   "they must be equally long: set lld_channels = n_mels or fdgr_reduce=linear")
        classifier_in = 2 * cfg.lstm_hidden * len(self.lstms) + (global_dims[0] if self.with_global else 0)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(classifier_in, num_classes)

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        mask = batch["mask"]
        self._check_input(batch)
        seqs: List[torch.Tensor] = []
        tdgrs: List[torch.Tensor] = []
        globals_: List[torch.Tensor] = []
        if self.ms is not None:
            image = batch[self.cfg.mel_stream].transpose(1, 2).unsqueeze(1)        # [B, 1, F, T]
            x, tdgr, pooled = self.ms(image, mask)
            if self.cfg.ms_freq_pool > 1:
                x = nn.functional.avg_pool2d(x, (self.cfg.ms_freq_pool, 1))
            seqs.append(x.flatten(1, 2).transpose(1, 2))                         # X_MS [B, T, C * F]
            tdgrs.append(tdgr)
            globals_.append(pooled)
        if self.lld is not None:
            x, tdgr, pooled = self.lld(batch[self.cfg.lld_stream].transpose(1, 2), mask)
            seqs.append(x.transpose(1, 2))                                       # X_llds [B, T, C]
            tdgrs.append(tdgr)
            globals_.append(pooled)
        if self.with_tdgr:
            if self.cfg.tdgr_source == "all":
                tdgrs = [sum(tdgrs)] * len(tdgrs)
            seqs = [torch.cat([s, t[..., None]], dim=-1) for s, t in zip(seqs, tdgrs)]   # X_a, X_b
        if self.ffs is not None:
            seqs = list(self.ffs(seqs[0], seqs[1], mask))
        if len(self.lstms) == 1 and len(seqs) == 2:
            seqs = [seqs[0] + seqs[1] if self.cfg.combine == "sum" else torch.cat(seqs, dim=-1)]
        summaries = []
        for lstm, seq in zip(self.lstms, seqs):
            out, final = run_lstm(lstm, seq, mask)
            summaries.append(final if self.cfg.lstm_pooling == "final" else masked_mean(out, mask))
        if self.with_global:
            summaries.append(sum(globals_))                                      # G = FDGR + CDGR
        return {"logits": self.classifier(self.dropout(torch.cat(summaries, dim=-1)))}

    def _check_input(self, batch: Dict[str, torch.Tensor]) -> None:
        frames = batch["mask"].shape[1]
        if frames != self.cfg.frames:
            raise ModelConfigError(
                f"mpaf_cnn was built for {self.cfg.frames}-frame segments (its time weights are sized by "
                f"them) but got {frames}; set model.frames to segments.length / the frame hop")
        for stream in self.streams:
            dim = batch[stream].shape[-1]
            if dim != self.stream_dims[stream]:
                option = "n_mels" if stream == self.cfg.mel_stream else "n_lld"
                raise ModelConfigError(f"mpaf_cnn: stream '{stream}' has {dim} dims per frame but the model "
                                       f"expects {self.stream_dims[stream]}; set model.{option}")
