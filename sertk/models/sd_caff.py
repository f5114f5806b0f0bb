"""sd_caff: SD-CAFF, dynamic-static cross attentional feature fusion, with a gender auxiliary task.

K. Dong, H. Peng, J. Che, "Dynamic-static Cross Attentional Feature Fusion Method for Speech
Emotion Recognition" (LNCS). Implemented from the spec `shared/specs/sd_caff.md` (section numbers
below are the spec's), which was checked against the authors' released code; tags: [P] paper,
[C] released code, [D] the spec's default where neither says.

Input: one 6 s clip per utterance after silence removal (features `sd_caff`: 60 MFCC, 48 ms / 24 ms,
251 frames, plus their deltas taken across the coefficients, spec 2.2), no normalisation [C].
- Static branch (3.1): MFCC as a 1-channel image (60 x T) -> five conv layers (8, 32, 64, 96, 128
  channels; the first unpadded, max-pool 2x2 before layers 3-5) with BN and DyReLU-B -> dropout -> X_S.
- Dynamic branch (3.2): MFCC ⊕ delta (120-d) per frame -> LSTM (hidden 1024, unidirectional [C];
  bidirectional 2 x 512 is the paper's "BiLSTM") -> dropout -> hidden units average-pooled to 64
  (time is not pooled) -> X_D [B, 64, 1, T].
- Cross AFF (3.3): W_S = σ(L_S(X_S) + g_D(X_D)), W_D = σ(L_D(X_D) + g_S(X_S)), each global branch
  sized to the other branch's channels; z = [GAP(X_S ⊙ W_S) ‖ GAP(X_D ⊙ W_D)] (192-d).
- Heads (3.4): emotion logits, gender logits, and one linear "center" embedding per task that only
  the center loss reads (`SDCAFFObjective`: 0.7 (CE + 0.15 center) + 0.3 (CE + 0.15 center)).
The ablation baselines of 3.5 (cnn, lstm, concat) are `architecture` values.

Padded frames (a batch of unequal clips) are excluded everywhere: zeroed before every convolution,
left out of the DyReLU squeeze, the pools and the global averages, and skipped by the LSTM, so a
clip's posteriors depend on its own frames only. On the 251-frame clips of the paper's set-up
nothing is padded and the model computes the spec's equations as they stand.

Parameters with the defaults and 4 classes: 4,949,998 (spec 9: 4,949,998 plus 20 center values,
which sertk keeps in `SDCAFFObjective`). Results: the paper reports WA 75.78 / UA 74.89 on IEMOCAP improvised
4-class with random utterance-level 5-fold (speakers shared) and the best epoch chosen on the test
fold (6.2-6.3); sertk's EmoDB and RAVDESS runs are speaker-independent with the checkpoint chosen on
dev, so the numbers are not comparable; they are in docs/models/sd_caff.md, with the commands that
produced them, and egs/*/RESULTS.md.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from sertk.models import ModelConfigError, SERModel, check_choices, check_counts, check_rates, register
from sertk.models.base import EmotionLoss, Objective
from sertk.models.pooling import masked_time_mean, zero_padded_frames
from sertk.models.sequence import masked_mean, run_lstm

BLOCKS = ("mfcc", "delta", "delta2")   # the stream's blocks, in order: MFCC, its delta, its delta-delta
GENDER_CLASSES = 2   # utt2gen f, m (sertk.data.validate.GENDERS, whose order gives the labels)
CHOICES = {
    "architecture": ("sd_caff", "cnn", "lstm", "concat"),
    "activation": ("dyrelu_b", "relu"),
    "dynamic_combine": ("concat", "weighted_sum"),
}


@dataclass
class SDCAFFConfig:
    stream: str = "mfcc"              # [T, n_mfcc * (1 + stream_deltas)]: MFCC, then its delta blocks
    n_mfcc: int = 60                  # [P]
    stream_deltas: int = 1            # delta blocks the stream carries (features sd_caff: 1, sd_caff_dd: 2)
    # the LSTM's input (8.1): blocks of the stream, joined by dynamic_combine
    dynamic_inputs: List[str] = field(default_factory=lambda: ["mfcc", "delta"])   # [P] mfcc ⊕ delta
    dynamic_combine: str = "concat"   # concat [P] | weighted_sum (train_SD_CAFF.py: 0.7 MFCC + 0.3 delta)
    dynamic_weights: List[float] = field(default_factory=lambda: [0.7, 0.3])   # weighted_sum only [C]
    channels: List[int] = field(default_factory=lambda: [8, 32, 64, 96, 128])   # [C]
    first_padding: int = 0            # the first conv is unpadded [C] (60 x 251 -> 58 x 249)
    activation: str = "dyrelu_b"      # DyReLU-B [P] | relu (the code's DyRELU=False)
    dyrelu_reduction: int = 4         # R [C]
    dyrelu_k: int = 2                 # K linear pieces [C]
    lstm_hidden: int = 1024           # output width [C]; bidirectional: lstm_hidden / 2 per direction
    bidirectional: bool = False       # unidirectional [C] | the paper's "BiLSTM" (8.2)
    lstm_pool: int = 64               # hidden units average-pooled to this many channels [C] (8.13)
    inter_channels: int = 32          # Cross AFF bottleneck r [C]
    dropout: float = 0.1              # after the CNN and after the LSTM [C]
    architecture: str = "sd_caff"     # sd_caff | cnn | lstm | concat baselines (3.5)
    gender_head: bool = True          # auxiliary gender logits [P]
    center_heads: bool = True         # linear embeddings for the center losses [C]
    center_dim: int = 0               # their width; 0: the task's classes (4 and 2) [C]


def _check(cfg: SDCAFFConfig) -> None:
    check_choices("sd_caff", cfg, CHOICES)
    check_counts("sd_caff", cfg, ("n_mfcc", "dyrelu_reduction", "dyrelu_k", "lstm_hidden", "lstm_pool",
                                  "inter_channels"))
    if not 0 <= cfg.stream_deltas < len(BLOCKS):
        raise ModelConfigError(f"sd_caff: stream_deltas must be 0, 1 or 2, not {cfg.stream_deltas}")
    available = BLOCKS[:cfg.stream_deltas + 1]
    if not cfg.dynamic_inputs or any(b not in available for b in cfg.dynamic_inputs):
        raise ModelConfigError(f"sd_caff: dynamic_inputs {cfg.dynamic_inputs} must be a non-empty list of "
                               f"{', '.join(available)} (the stream carries {cfg.stream_deltas} delta block(s); "
                               "features sd_caff_dd has delta2)")
    if cfg.dynamic_combine == "weighted_sum" and len(cfg.dynamic_weights) != len(cfg.dynamic_inputs):
        raise ModelConfigError(f"sd_caff: dynamic_weights needs one weight per dynamic input "
                               f"({len(cfg.dynamic_inputs)}), got {cfg.dynamic_weights}")
    if len(cfg.channels) < 1 or min(cfg.channels) < 1:
        raise ModelConfigError(f"sd_caff: channels must be a non-empty list of positive widths, not {cfg.channels}")
    if cfg.first_padding not in (0, 1):
        raise ModelConfigError(f"sd_caff: first_padding must be 0 or 1, not {cfg.first_padding}")
    if cfg.architecture != "lstm" and cfg.n_mfcc < cnn_min_size(cfg):
        raise ModelConfigError(f"sd_caff: {cfg.n_mfcc} MFCC rows are too few for the CNN's "
                               f"{max(0, len(cfg.channels) - 2)} 2x2 pools (it needs n_mfcc >= {cnn_min_size(cfg)})")
    if cfg.bidirectional and cfg.lstm_hidden % 2:
        raise ModelConfigError(f"sd_caff: a bidirectional LSTM splits lstm_hidden in two; {cfg.lstm_hidden} is odd")
    if cfg.lstm_pool > cfg.lstm_hidden:
        raise ModelConfigError(f"sd_caff: lstm_pool ({cfg.lstm_pool}) cannot exceed lstm_hidden ({cfg.lstm_hidden})")
    check_rates("sd_caff", cfg, ("dropout",))
    if cfg.center_dim < 0:
        raise ModelConfigError(f"sd_caff: center_dim must be >= 0, not {cfg.center_dim}")


def cnn_min_size(cfg: SDCAFFConfig) -> int:
    """The fewest MFCC rows or frames the CNN takes: the unpadded first conv loses 2, then layers 3-5
    each halve after a 2x2 pool, and at least one row and frame must be left."""
    return (2 if cfg.first_padding == 0 else 0) + 2 ** max(0, len(cfg.channels) - 2)


# How DyReLU-B takes the max of its lines: "relu" (K = 2, the spec's: one line plus the ReLU of the two lines'
# difference, max(l0, l1) = l0 + relu(l1 - l0), each a single fused multiply-add; K > 2: one line at a time)
# or "amax" (all K lines in one [B, C, K, H, T] tensor, then its max: what sertk trained with before, kept for
# benchmarks/train.py's old path). The same values but for float rounding; at an exact tie of the two lines the
# ReLU form passes the gradient to the first, torch's max splits it in halves: both are subgradients.
DYRELU_MAX = "relu"


class DyReLUB(nn.Module):
    """Dynamic ReLU-B (Chen et al. 2020), per sample and channel: y = max_k(a_k x + b_k), with
    [a; b] = init + lambda * (2 sigmoid(fc2(relu(fc1(mean x)))) - 1), the mean over valid positions."""

    def __init__(self, channels: int, reduction: int, k: int):
        super().__init__()
        self.k = k
        self.fc1 = nn.Linear(channels, max(1, channels // reduction))
        self.fc2 = nn.Linear(max(1, channels // reduction), 2 * k * channels)
        self.register_buffer("lambdas", torch.tensor([1.0] * k + [0.5] * k), persistent=False)
        self.register_buffer("init", torch.tensor([1.0] + [0.0] * (2 * k - 1)), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, T], mask [B, T]."""
        theta = 2 * torch.sigmoid(self.fc2(torch.relu(self.fc1(masked_time_mean(x, mask))))) - 1
        coefs = theta.view(x.shape[0], x.shape[1], 2 * self.k) * self.lambdas + self.init   # [B, C, 2K]
        a, b = coefs[..., :self.k, None, None], coefs[..., self.k:, None, None]             # [B, C, K, 1, 1]
        if DYRELU_MAX == "amax":
            return (x.unsqueeze(2) * a + b).amax(dim=2)
        # no [B, C, K, H, T] tensor to fill and search, and (K = 2) no max to take apart in the backward pass,
        # whose eq / where / masked_fill passes over the whole tensor cost more than the forward (docs/training.md)
        y = torch.addcmul(b[:, :, 0], x, a[:, :, 0])
        if self.k == 2:
            return y + torch.relu(torch.addcmul(b[:, :, 1] - b[:, :, 0], x, a[:, :, 1] - a[:, :, 0]))
        for j in range(1, self.k):
            y = torch.maximum(y, torch.addcmul(b[:, :, j], x, a[:, :, j]))
        return y


class ConvLayer(nn.Module):
    """[max-pool 2x2 ->] conv 3x3 -> BN -> DyReLU-B (or ReLU), with the frame mask carried along."""

    def __init__(self, cin: int, cout: int, padding: int, pool: bool, cfg: SDCAFFConfig):
        super().__init__()
        self.pool, self.padding = pool, padding
        self.conv = nn.Conv2d(cin, cout, 3, padding=padding)
        self.norm = nn.BatchNorm2d(cout)
        self.act = DyReLUB(cout, cfg.dyrelu_reduction, cfg.dyrelu_k) if cfg.activation == "dyrelu_b" else None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.pool:
            x = nn.functional.max_pool2d(x, 2)
            mask = mask[:, 1::2][:, :x.shape[-1]]   # a pooled frame is real if both of its frames are
        x = self.norm(self.conv(zero_padded_frames(x, mask)))
        if self.padding == 0:
            mask = mask[:, 2:]                        # an unpadded 3-wide conv reads frames t..t+2
        return (torch.relu(x) if self.act is None else self.act(x, mask)), mask


class StaticBranch(nn.Module):
    """3.1: MFCC image [B, 1, n_mfcc, T] -> X_S [B, C_last, H', T'] and its frame mask."""

    def __init__(self, cfg: SDCAFFConfig):
        super().__init__()
        widths = [1] + list(cfg.channels)
        self.layers = nn.ModuleList(
            ConvLayer(widths[i], widths[i + 1], cfg.first_padding if i == 0 else 1, i >= 2, cfg)
            for i in range(len(cfg.channels)))
        self.dropout = nn.Dropout(cfg.dropout)
        self.min_frames = cnn_min_size(cfg)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        for layer in self.layers:
            x, mask = layer(x, mask)
        return self.dropout(x), mask


class DynamicBranch(nn.Module):
    """3.2: frames [B, T, D] -> LSTM outputs -> dropout -> hidden units average-pooled -> [B, T, pool]."""

    def __init__(self, input_dim: int, cfg: SDCAFFConfig):
        super().__init__()
        hidden = cfg.lstm_hidden // 2 if cfg.bidirectional else cfg.lstm_hidden
        self.lstm = nn.LSTM(input_dim, hidden, batch_first=True, bidirectional=cfg.bidirectional)
        self.dropout = nn.Dropout(cfg.dropout)
        self.pool = nn.AdaptiveAvgPool1d(cfg.lstm_pool)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """-> (pooled outputs [B, T, pool], zero at padded frames; final states [B, lstm_hidden])."""
        out, final = run_lstm(self.lstm, x, mask)
        return self.pool(self.dropout(out)), final


def _attention(cin: int, inter: int, cout: int) -> nn.Sequential:
    """L(.) (pointwise) or, after the caller's masked GAP, g(.): 1x1 conv, BN, ReLU, 1x1 conv, BN."""
    return nn.Sequential(nn.Conv2d(cin, inter, 1), nn.BatchNorm2d(inter), nn.ReLU(inplace=True),
                         nn.Conv2d(inter, cout, 1), nn.BatchNorm2d(cout))


class CrossAFF(nn.Module):
    """3.3: each branch gated by its own local attention plus the other branch's global attention."""

    def __init__(self, static_channels: int, dynamic_channels: int, inter: int):
        super().__init__()
        self.static_local = _attention(static_channels, inter, static_channels)
        self.static_global = _attention(static_channels, inter, dynamic_channels)
        self.dynamic_local = _attention(dynamic_channels, inter, dynamic_channels)
        self.dynamic_global = _attention(dynamic_channels, inter, static_channels)

    def forward(self, x_s, mask_s, x_d, mask_d) -> torch.Tensor:
        """x_s [B, Cs, H, Ts], x_d [B, Cd, 1, Td] with their frame masks -> z [B, Cs + Cd]."""
        g_s = self.static_global(masked_time_mean(x_s, mask_s)[..., None, None])     # [B, Cd, 1, 1]
        g_d = self.dynamic_global(masked_time_mean(x_d, mask_d)[..., None, None])    # [B, Cs, 1, 1]
        w_s = torch.sigmoid(self.static_local(x_s) + g_d)
        w_d = torch.sigmoid(self.dynamic_local(x_d) + g_s)
        return torch.cat([masked_time_mean(x_s * w_s, mask_s), masked_time_mean(x_d * w_d, mask_d)], dim=-1)


@register("sd_caff")
class SDCAFF(SERModel):
    Config = SDCAFFConfig

    def __init__(self, num_classes: int, cfg: SDCAFFConfig):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        self.streams = (cfg.stream,)
        self.stream_dims = {cfg.stream: cfg.n_mfcc * (1 + cfg.stream_deltas)}
        self.fixed_frames = None
        arch = cfg.architecture
        self.static = StaticBranch(cfg) if arch != "lstm" else None
        dynamic_dim = cfg.n_mfcc * (len(cfg.dynamic_inputs) if cfg.dynamic_combine == "concat" else 1)
        self.dynamic = DynamicBranch(dynamic_dim, cfg) if arch != "cnn" else None
        self.fusion = CrossAFF(cfg.channels[-1], cfg.lstm_pool, cfg.inter_channels) if arch == "sd_caff" else None
        self.prelu = nn.PReLU() if arch == "lstm" else None
        width = {"sd_caff": cfg.channels[-1] + cfg.lstm_pool, "concat": cfg.channels[-1] + cfg.lstm_pool,
                 "cnn": cfg.channels[-1], "lstm": cfg.lstm_hidden}[arch]
        self.embedding_dim = width
        self.emotion = nn.Linear(width, num_classes)
        self.gender = nn.Linear(width, GENDER_CLASSES) if cfg.gender_head else None
        self.emotion_center = nn.Linear(width, cfg.center_dim or num_classes) if cfg.center_heads else None
        self.gender_center = nn.Linear(width, cfg.center_dim or GENDER_CLASSES) \
            if cfg.center_heads and cfg.gender_head else None
        # the loss weights it serves (sertk.models.base.SERModel): loss.gender_weight, loss.center_weight
        self.tasks = ("emotion", "gender") if cfg.gender_head else ("emotion",)
        self.center_dims = {task: head.out_features for task, head in
                            (("emotion", self.emotion_center), ("gender", self.gender_center)) if head is not None}

    def objective(self, emotion: EmotionLoss, loss: Mapping[str, Any]) -> "SDCAFFObjective":
        return SDCAFFObjective(emotion, self.emotion.out_features, loss["gender_weight"], loss["center_weight"],
                               self.center_dims, loss["center_lr"])

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        x, mask = batch[self.cfg.stream], batch["mask"]
        self._check_input(x)
        z = self.embed(x, mask)
        out = {"logits": self.emotion(z), "embedding": z}
        if self.gender is not None:
            out["gender_logits"] = self.gender(z)
        if self.emotion_center is not None:
            out["center_embedding"] = self.emotion_center(z)
        if self.gender_center is not None:
            out["gender_center_embedding"] = self.gender_center(z)
        return out

    def embed(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The fused utterance vector z that every head reads."""
        parts: List[torch.Tensor] = []
        x_s = mask_s = x_d = None
        if self.static is not None:
            mfcc = x[..., :self.cfg.n_mfcc].transpose(1, 2).unsqueeze(1)      # [B, 1, n_mfcc, T]
            x_s, mask_s = self.static(mfcc, mask)
        if self.dynamic is not None:
            pooled, final = self.dynamic(self._dynamic_input(x), mask)
            if self.prelu is not None:                                        # lstm baseline: last step
                return self.prelu(final)
            x_d = pooled.transpose(1, 2).unsqueeze(2)                         # X_D [B, pool, 1, T]
        if self.fusion is not None:
            return self.fusion(x_s, mask_s, x_d, mask)
        if x_s is not None:
            parts.append(masked_time_mean(x_s, mask_s))
        if x_d is not None:
            parts.append(masked_mean(pooled, mask))
        return torch.cat(parts, dim=-1)

    def _dynamic_input(self, x: torch.Tensor) -> torch.Tensor:
        n = self.cfg.n_mfcc
        blocks = [x[..., BLOCKS.index(b) * n:(BLOCKS.index(b) + 1) * n] for b in self.cfg.dynamic_inputs]
        if self.cfg.dynamic_combine == "concat":
            return torch.cat(blocks, dim=-1)
        return sum(w * b for w, b in zip(self.cfg.dynamic_weights, blocks))

    def _check_input(self, x: torch.Tensor) -> None:
        dim = x.shape[-1]
        if dim != self.stream_dims[self.cfg.stream]:
            raise ModelConfigError(
                f"sd_caff: stream '{self.cfg.stream}' has {dim} dims per frame but the model expects "
                f"{self.stream_dims[self.cfg.stream]} (n_mfcc {self.cfg.n_mfcc} x (1 + stream_deltas "
                f"{self.cfg.stream_deltas})); set model.n_mfcc / model.stream_deltas to match the features")
        if self.static is not None and x.shape[1] < self.static.min_frames:
            raise ModelConfigError(f"sd_caff: its CNN needs at least {self.static.min_frames} frames, got {x.shape[1]}")


class CenterLoss(nn.Module):
    """Wen et al. 2016: the mean over labelled samples of ||e_i - c_{y_i}||^2, distances clamped to
    [1e-12, 1e12] (the KaiyangZhou implementation SD-CAFF uses); centers start as randn(classes, dim)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, dim))

    def forward(self, embedding: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        known = labels >= 0
        if not bool(known.any()):
            return embedding.sum() * 0.0
        diff = embedding[known] - self.centers[labels[known]]
        return diff.square().sum(dim=1).clamp(1e-12, 1e12).mean()


class SDCAFFObjective(Objective):
    """SD-CAFF's joint loss (spec 4):

        (1 - g) (CE_emotion + λ center_emotion) + g (CE_gender + λ center_gender)

    with g = loss.gender_weight and λ = loss.center_weight; with both 0 it is the emotion loss alone. The emotion
    CE is the trainer's (class- and utterance-weighted); the gender CE is plain, over segments whose gender is
    known (batch["gender"] >= 0). The centers are parameters here (state "centers.<task>.centers"), trained with
    the model's optimizer; center_dims gives each task's embedding width (the model's `center_dims`)."""

    def __init__(self, emotion: EmotionLoss, num_classes: int, gender_weight: float = 0.0,
                 center_weight: float = 0.0, center_dims: Optional[Mapping[str, int]] = None,
                 center_lr: Optional[float] = None):
        super().__init__(emotion)
        self.gender_weight, self.center_weight, self.center_lr = gender_weight, center_weight, center_lr
        self.centers = nn.ModuleDict()
        if center_weight > 0:
            self.centers["emotion"] = CenterLoss(num_classes, center_dims["emotion"])
            if gender_weight > 0:
                self.centers["gender"] = CenterLoss(GENDER_CLASSES, center_dims["gender"])

    def forward(self, out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        loss = self.emotion_loss(out, batch)
        if "emotion" in self.centers:
            loss = loss + self.center_weight * self.centers["emotion"](out["center_embedding"].float(), batch["label"])
        if self.gender_weight <= 0:
            return loss
        gender = batch["gender"]
        known = gender >= 0
        gen_loss = F.cross_entropy(out["gender_logits"].float()[known], gender[known]) if bool(known.any()) \
            else out["gender_logits"].sum() * 0.0
        if "gender" in self.centers:
            gen_loss = gen_loss + self.center_weight * self.centers["gender"](
                out["gender_center_embedding"].float(), gender)
        return (1 - self.gender_weight) * loss + self.gender_weight * gen_loss

    def after_backward(self, lr: float) -> None:
        if self.center_lr is not None:
            self.scale_center_gradients(self.center_lr, lr)

    def scale_center_gradients(self, center_lr: float, lr: float) -> None:
        """SD-CAFF's center-loss learning rate (spec 4, lr_cent, loss.center_lr): after backward, the emotion
        centers' gradients times center_lr / (center_weight * lr), a leftover of SGD center-loss code that Adam's
        normalisation all but cancels; the gender centers are left alone, as in the released code."""
        centers = self.centers["emotion"].centers if "emotion" in self.centers else None
        if centers is not None and centers.grad is not None:
            centers.grad.mul_(center_lr / (self.center_weight * lr))


def parameter_counts(model: SDCAFF) -> Dict[str, int]:
    """Trainable parameters per component, as spec section 9 lists them."""
    parts = {"cnn": model.static, "lstm": model.dynamic, "cross_aff": model.fusion, "prelu": model.prelu}
    counts = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items() if m is not None}
    counts["heads"] = sum(p.numel() for m in (model.emotion, model.gender, model.emotion_center,
                                              model.gender_center) if m is not None for p in m.parameters())
    return counts

