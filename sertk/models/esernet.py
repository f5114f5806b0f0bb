"""esernet: ESERNet, a crucial-cue (masked-frame reconstruction) pathway and a hierarchical
window-attention relationship pathway over log-mel frames, trained on both tasks at once.

T. Liu, M. Wang, B. Yang, H. Liu, S. Yi, "ESERNet: Learning spectrogram structure relationship for
effective speech emotion recognition with swin transformer in classroom discourse analysis",
Neurocomputing 2024. Implemented from the spec `shared/specs/esernet.md` (section numbers below are
the spec's); tags: [P] paper, [SF++] SpeechFormer++'s reference code, [D] the spec's default where
neither says. The paper's "swin Transformer" is the SpeechFormer++-style hierarchy of 3.2, not an image
Swin; the literal image Swin-T of 3.6 is the separate model `esernet_swin` (not the paper's method).

Input: one 8 s segment (800 frames, padded with a mask) of 128-band dB log-mel, globally normalised
(features `esernet`). Shapes for the defaults, B a batch:
- Cue pathway (3.1): 15 % of the valid frames hidden in 7-frame spans (training only), s' = s (1 - m) +
  Linear(1 -> 128)(m) + positions, 4 post-LN Transformer layers whose keys skip hidden and padded
  frames, a Linear(128 -> 128) head that rebuilds the hidden frames (MSE, loss.reconstruction_weight)
  and c = the mean of the last states over valid frames [B, 128]. It, its loss (`ReconstructionObjective`)
  and the fused classifier are shared with esernet_swin: sertk.models.esernet_cue.
- Relationship pathway (3.2): LN + positions; 10 learnable word tokens; Step I (800 tokens, window 5,
  2 layers), combined block (average over 5 -> 160 tokens, Linear + LN), Step II (window 9, 2 layers),
  combined block (-> 32), Step III (window 9, 4 layers), combined block (adaptive, 32 -> 10: 800 ms);
  4 global layers over [word tokens; merged tokens]; r = their mean [B, 128]. In each hierarchical
  layer a word token attends to itself and its segment, and each frame to its word token and a local
  window, with the layer's shared Q/K/V (`HierarchicalLayer`).
- Fusion (3.4): the classifier Linear(256 -> 128) -> ReLU -> dropout 0.5 -> Linear(128 -> C) reads [r; c].

Padding never changes a posterior: padded frames are never keys, never masked, never pooled, and the
word segments, windows and pooling bins are fixed positions on the `max_frames` grid, so the model also
drops the batch's all-padding tail before computing. Parameters with the defaults: 3,274,372 for 4
classes (spec 9: about 3.3 M), 3,274,759 for EmoDB's 7.

The paper reports IEMOCAP WA 76.79 / UA 77.12 and EmoDB UA 92.73 / WA 92.81 with no split protocol
stated and model selection that reads as test-based (spec 6, 8.11); sertk runs speaker-independent
folds with the checkpoint chosen on dev, so the numbers are not comparable. Measured numbers are in
the README's results table and egs/*/RESULTS.md.
"""
import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from sertk.models import ModelConfigError, check_choices, check_counts, register
from sertk.models.esernet_cue import CueOptions, CuePathway, ESERNetBase, check_cue_options
from sertk.models.sequence import masked_mean
from sertk.models.transformer import PostNormLayer, sinusoidal_positions, xavier_linears

CHOICES = {
    "fusion": ("late_concat", "shared_stem", "none"),
    "backbone": ("hierarchical", "standard"),
    "word_softmax": ("joint", "split"),
    "word_assignment": ("segment", "proportional"),
}


@dataclass
class ESERNetConfig(CueOptions):
    frame_ms: float = 10.0            # the stream's hop, which the merge scales are counted in [D]
    # relationship pathway (3.2)
    backbone: str = "hierarchical"    # hierarchical (Steps I-III) | standard (Table 5's "ST pathway")
    widths: List[int] = field(default_factory=lambda: [128, 128, 128, 128])   # Steps I-III, utterance [SF++]
    heads: int = 8                    # [SF++]
    depths: List[int] = field(default_factory=lambda: [2, 2, 4])   # layers per step [SF++]
    windows: List[int] = field(default_factory=lambda: [5, 9, 9])   # N_o, odd, in tokens of the step [SF++]
    merge_ms: List[float] = field(default_factory=lambda: [50.0, 250.0, 800.0])   # Q1-Q3 [P]
    word_tokens: int = 0              # N_x; 0: ceil(max_frames x frame_ms / merge_ms[-1]) = 10 [P]
    word_softmax: str = "joint"       # joint: one softmax over [word; window] (Eq. 8) [P] | split [SF++]
    # segment: frame j belongs to word j // ceil(N / N_x) (Eqs. 4-5) | proportional: ceil(j N_x / N) (Eq. 8)
    word_assignment: str = "segment"
    utterance_depth: int = 4          # global layers after the last combined block [SF++]
    standard_depth: int = 4           # backbone standard: global layers over the frames [D]


def _check(cfg: ESERNetConfig) -> None:
    check_choices("esernet", cfg, CHOICES)
    check_cue_options("esernet", cfg)
    steps = len(cfg.depths)
    lists = {"windows": cfg.windows, "merge_ms": cfg.merge_ms}
    for name, values in lists.items():
        if len(values) != steps:
            raise ModelConfigError(f"esernet: {name} needs one value per step ({steps}, as depths), got {values}")
    if len(cfg.widths) != steps + 1:
        raise ModelConfigError(f"esernet: widths needs {steps + 1} values (each step, then the utterance "
                               f"layers), got {cfg.widths}")
    check_counts("esernet", cfg, ("heads", "utterance_depth", "standard_depth"))
    if min(cfg.depths) < 1 or any(w < 1 or w % 2 == 0 for w in cfg.windows):
        raise ModelConfigError(f"esernet: depths must be >= 1 and windows odd and >= 1 (got {cfg.depths}, "
                               f"{cfg.windows})")
    if any(w % cfg.heads for w in cfg.widths):
        raise ModelConfigError(f"esernet: every width {cfg.widths} must divide into {cfg.heads} heads")
    scales = [cfg.frame_ms] + list(cfg.merge_ms)
    if cfg.frame_ms <= 0 or any(b <= a for a, b in zip(scales, scales[1:])):
        raise ModelConfigError(f"esernet: merge_ms {cfg.merge_ms} must grow from the frame's {cfg.frame_ms} ms")
    if cfg.word_tokens < 0:
        raise ModelConfigError(f"esernet: word_tokens must be >= 0 (0: from max_frames), not {cfg.word_tokens}")
    if cfg.fusion == "shared_stem":
        if not cfg.cue_pathway:
            raise ModelConfigError("esernet: fusion shared_stem needs cue_pathway true")
        stem = cfg.depths[0] if cfg.backbone == "hierarchical" else cfg.standard_depth
        if cfg.cue_depth < stem or cfg.widths[0] != cfg.n_mels:
            raise ModelConfigError(f"esernet: fusion shared_stem runs the cue pathway through the first {stem} "
                                   f"backbone layer(s): cue_depth must be >= {stem} and widths[0] = n_mels")


# --- positions on the max_frames grid ----------------------------------------------------------------

def merge_bins(nominal: int, kernel: float) -> List[Tuple[int, int]]:
    """[start, end) token bins of a combined block on a `nominal`-token grid: windows of `kernel` tokens
    when it is a whole number; else adaptive-average bins into ceil(nominal / kernel) tokens (800 ms
    after 250 ms tokens is 3.2 of them: integer division would silently give 750 ms, spec 8.7)."""
    if abs(kernel - round(kernel)) < 1e-9:
        k = int(round(kernel))
        return [(s, min(s + k, nominal)) for s in range(0, nominal, k)]
    n_out = math.ceil(nominal / kernel - 1e-9)
    return [((i * nominal) // n_out, -((-(i + 1) * nominal) // n_out)) for i in range(n_out)]


def word_assignment(nominal: int, words: int, mode: str) -> torch.Tensor:
    """The word token (0-based) of each of the `nominal` positions of a step."""
    j = torch.arange(nominal)
    if mode == "segment":   # N_x segments of ceil(N / N_x), the last ones possibly short or empty (Eqs. 4-5)
        return j // math.ceil(nominal / words)
    return torch.div((j + 1) * words + nominal - 1, nominal, rounding_mode="floor") - 1   # ceil(j N_x / N), 1-based j


class CombinedBlock(nn.Module):
    """Eq. 10: fine tokens averaged over fixed bins (valid tokens only), then Linear + LN; word tokens are
    projected and normed by the same Linear and LN, not pooled."""

    def __init__(self, bins: List[Tuple[int, int]], nominal: int, dim_in: int, dim_out: int):
        super().__init__()
        member = torch.zeros(len(bins), nominal)
        for i, (start, end) in enumerate(bins):
            member[i, start:end] = 1.0
        self.register_buffer("member", member, persistent=False)
        self.proj, self.norm = nn.Linear(dim_in, dim_out), nn.LayerNorm(dim_out)

    def forward(self, x, valid, words):
        n = x.shape[1]
        member = self.member[:, :n]
        member = member[member.sum(1) > 0]                        # the bins this (truncated) grid reaches
        weights = member[None] * valid[:, None, :].to(x.dtype)    # [B, bins, n]
        count = weights.sum(-1, keepdim=True)
        pooled = torch.bmm(weights, x) / count.clamp(min=1)
        return self.norm(self.proj(pooled)), count[..., 0] > 0, self.norm(self.proj(words))


def _masked_weights(scores: torch.Tensor, valid: torch.Tensor, dim: int) -> torch.Tensor:
    """softmax along `dim` over valid entries; a row with none gets finite weights (its output is unused)."""
    return torch.softmax(scores.masked_fill(~valid, torch.finfo(scores.dtype).min), dim=dim)


class HierarchicalLayer(PostNormLayer):
    """One layer of a step (3.2): the word encoder (word token j attends to itself and the valid frames of
    its segment, Eq. 6) and the object encoder (each frame attends to its word token's attention output
    and the valid frames of its window, Eqs. 7-8), with one set of Q/K/V; then, for word and fine tokens
    alike, residual + LN, FFN + residual + LN (Eq. 9). As SpeechFormer++ does, the word token's per-head
    attention output is the frames' extra key and value. word_softmax joint normalises the word and window
    weights together (Eq. 8); split normalises the word weight over the frames of the segment, as
    SpeechFormer++'s code."""

    def __init__(self, dim, heads, hidden, dropout, attn_dropout, window: int, split_softmax: bool):
        super().__init__(dim, heads, hidden, dropout, attn_dropout)
        self.window, self.split_softmax = window, split_softmax
        self.attn_drop = nn.Dropout(attn_dropout)

    def forward(self, x, valid, words, assign):
        """x [B, N, D], valid [B, N], words [B, N_x, D], assign [N] (word of each position)."""
        frame_att, word_att = self.attend(x, valid, words, assign)
        return super().forward(x, valid, attended=frame_att), super().forward(words, valid, attended=word_att)

    def attend(self, x, valid, words, assign):
        """The attention outputs (out-projected) of the fine tokens [B, N, D] and the word tokens [B, N_x, D]."""
        n_words, assign = words.shape[1], assign[:x.shape[1]]
        q, k, v = self.attn.heads_of(x)
        qw, kw, vw = self.attn.heads_of(words)
        scale = q.shape[-1] ** -0.5
        # word encoder: [self; member frames]
        member = (assign[None, :] == torch.arange(n_words, device=x.device)[:, None])[None] & valid[:, None, :]
        word_scores = torch.cat([(qw * kw).sum(-1, keepdim=True), qw @ k.transpose(-1, -2)], dim=-1) * scale
        word_keys = torch.cat([member.new_ones(member.shape[0], n_words, 1), member], dim=-1)[:, None]
        word_att = self.attn_drop(_masked_weights(word_scores, word_keys, -1))
        word_out = word_att[..., :1] * vw + word_att[..., 1:] @ v            # [B, H, N_x, d]
        # object encoder: [word output; window]
        r = self.window // 2
        k_win = F.pad(k, (0, 0, r, r)).unfold(2, self.window, 1)             # [B, H, N, d, window]
        v_win = F.pad(v, (0, 0, r, r)).unfold(2, self.window, 1)
        win_valid = F.pad(valid, (r, r)).unfold(1, self.window, 1)[:, None]   # [B, 1, N, window]
        own_word = word_out[:, :, assign]                        # [B, H, N, d]
        s_word = (q * own_word).sum(-1, keepdim=True) * scale
        s_win = torch.einsum("bhnd,bhndw->bhnw", q, k_win) * scale
        if self.split_softmax:
            a_word = _segment_softmax(s_word[..., 0], valid, assign, n_words)[..., None]
            a_win = _masked_weights(s_win, win_valid, -1)
        else:
            att = _masked_weights(torch.cat([s_word, s_win], -1),
                                  torch.cat([win_valid.new_ones(*win_valid.shape[:3], 1), win_valid], -1), -1)
            a_word, a_win = att[..., :1], att[..., 1:]
        a_word, a_win = self.attn_drop(a_word), self.attn_drop(a_win)
        frame_out = a_word * own_word + torch.einsum("bhnw,bhndw->bhnd", a_win, v_win)
        return self.attn.merge(frame_out), self.attn.merge(word_out)


def _segment_softmax(scores: torch.Tensor, valid: torch.Tensor, assign: torch.Tensor, n_words: int) -> torch.Tensor:
    """scores [B, H, N] -> weights that sum to 1 over the valid frames of each word's segment."""
    index = assign.expand_as(scores)
    scores = scores.masked_fill(~valid[:, None], torch.finfo(scores.dtype).min)
    peak = scores.new_full((*scores.shape[:2], n_words), torch.finfo(scores.dtype).min)
    peak = peak.scatter_reduce(2, index, scores, "amax")
    e = torch.exp(scores - peak.gather(2, index)) * valid[:, None]
    total = e.new_zeros(peak.shape).scatter_add(2, index, e)
    return e / total.gather(2, index).clamp(min=torch.finfo(e.dtype).tiny)


class RelationshipPathway(nn.Module):
    """3.2: input LN + positions, Steps I-III with combined blocks between, global layers over
    [word tokens; merged tokens], masked mean -> [B, widths[-1]]. Backbone standard (Table 5's ST
    pathway): global layers over the frames instead of the hierarchy."""

    def __init__(self, cfg: ESERNetConfig):
        super().__init__()
        self.cfg = cfg
        self.input_proj = nn.Linear(cfg.n_mels, cfg.widths[0]) if cfg.widths[0] != cfg.n_mels else nn.Identity()
        self.input_norm = nn.LayerNorm(cfg.widths[0])
        self.register_buffer("positions", sinusoidal_positions(cfg.max_frames, cfg.widths[0]), persistent=False)
        hidden = lambda w: max(1, int(round(cfg.ffn_ratio * w)))   # noqa: E731
        layer = lambda w: PostNormLayer(w, cfg.heads, hidden(w), cfg.dropout, cfg.attn_dropout)   # noqa: E731
        if cfg.backbone == "standard":
            self.layers = nn.ModuleList(layer(cfg.widths[0]) for _ in range(cfg.standard_depth))
            self.out_dim = cfg.widths[0]
            return
        scales = [cfg.frame_ms] + list(cfg.merge_ms)
        self.n_words = cfg.word_tokens or math.ceil(cfg.max_frames * cfg.frame_ms / cfg.merge_ms[-1] - 1e-9)
        self.words = nn.Parameter(torch.empty(self.n_words, cfg.widths[0]))
        self.steps, self.merges = nn.ModuleList(), nn.ModuleList()
        nominal = cfg.max_frames
        for i, depth in enumerate(cfg.depths):
            w = cfg.widths[i]
            self.steps.append(nn.ModuleList(
                HierarchicalLayer(w, cfg.heads, hidden(w), cfg.dropout, cfg.attn_dropout, cfg.windows[i],
                                  cfg.word_softmax == "split") for _ in range(depth)))
            self.register_buffer(f"assign{i}", word_assignment(nominal, self.n_words, cfg.word_assignment),
                                 persistent=False)
            bins = merge_bins(nominal, scales[i + 1] / scales[i])
            self.merges.append(CombinedBlock(bins, nominal, w, cfg.widths[i + 1]))
            nominal = len(bins)
        self.utterance = nn.ModuleList(layer(cfg.widths[-1]) for _ in range(cfg.utterance_depth))
        self.out_dim = cfg.widths[-1]

    def reset_word_tokens(self) -> None:
        if hasattr(self, "words"):
            nn.init.trunc_normal_(self.words, std=0.02)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.input_norm(self.input_proj(x)) + self.positions[:x.shape[1]]

    def stem_layers(self):
        """The layers that read the frames first (Step I, or the standard layers): fusion shared_stem's."""
        return self.layers if self.cfg.backbone == "standard" else self.steps[0]

    def stem_words(self, batch_size: int) -> Optional[torch.Tensor]:
        return None if self.cfg.backbone == "standard" else self.words.expand(batch_size, -1, -1)

    def run_stem(self, h, key_valid, words=None):
        for layer in self.stem_layers():
            if self.cfg.backbone == "standard":
                h = layer(h, key_valid)
            else:
                h, words = layer(h, key_valid, words, self.assign0)
        return h, words

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        if self.cfg.backbone == "standard":
            return masked_mean(self.run_stem(h, valid)[0], valid)
        words = self.stem_words(x.shape[0])
        for i, (step, merge) in enumerate(zip(self.steps, self.merges)):
            assign = getattr(self, f"assign{i}")
            for layer in step:
                h, words = layer(h, valid, words, assign)
            h, valid, words = merge(h, valid, words)
        tokens = torch.cat([words, h], dim=1)
        token_valid = torch.cat([valid.new_ones(words.shape[:2]), valid], dim=1)
        for layer in self.utterance:
            tokens = layer(tokens, token_valid)
        return masked_mean(tokens, token_valid)


@register("esernet")
class ESERNet(ESERNetBase):
    Config = ESERNetConfig

    def __init__(self, num_classes: int, cfg: ESERNetConfig):
        super().__init__()
        _check(cfg)
        self.cfg = cfg
        self._init_streams(cfg)
        self.path = RelationshipPathway(cfg)
        if cfg.cue_pathway:
            self.cue = CuePathway(cfg, self.path if cfg.fusion == "shared_stem" else None)
        self._init_head(cfg, self.path.out_dim, num_classes)
        xavier_linears(self)
        self.path.reset_word_tokens()

    def relationship(self, x, valid):
        return self.path(x, valid)
