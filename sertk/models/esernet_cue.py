"""What esernet and esernet_swin share (shared/specs/esernet.md; section numbers are the spec's): the input
options, the crucial cue pathway (3.1) that hides frames and rebuilds them, its reconstruction loss (4, Eq. 11)
and the joint objective (Eq. 13), and the base model (stream checks, the all-padding tail trimmed, the fused
classifier); the relationship pathways are the two models' own (sertk.models.esernet, sertk.models.esernet_swin).
"""
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from sertk.models import ModelConfigError, SERModel, check_counts, check_rates
from sertk.models.base import EmotionLoss, Objective
from sertk.models.sequence import masked_mean
from sertk.models.transformer import PostNormLayer, sinusoidal_positions


@dataclass
class CueOptions:
    """What ESERNet and esernet_swin share: the input, the crucial cue pathway (3.1), fusion, classifier."""
    stream: str = "logmel"            # [T, n_mels], normalised so that 0 is the average (2, 8.10)
    n_mels: int = 128                 # [SF++]
    max_frames: int = 800             # T_max: 8 s of 10 ms frames [D]; longer segments are refused
    dropout: float = 0.1              # in every Transformer layer [SF++]
    attn_dropout: float = 0.1         # on attention weights [SF++]
    ffn_ratio: float = 4.0            # FFN hidden = ratio x width [D] (SF++: 0.5)
    cue_pathway: bool = True          # false: no cue pathway (Table 5's "S-former pathway" / "ST pathway")
    cue_depth: int = 4                # M [D]
    cue_heads: int = 8                # [D]
    cue_residual: bool = True         # false: Eq. 2 as printed, LN(MSAT(h)) without the residual [D]
    cue_key_mask: bool = True         # hidden frames are not keys, so they must be rebuilt from context [D]
    cue_positions: bool = True        # sinusoidal positions on s' [D]
    mask_rate: float = 0.15           # alpha: share of valid frames hidden per utterance [D]
    mask_span: int = 7                # frames per hidden span (70 ms) [D]
    fusion: str = "late_concat"       # late_concat: classifier on [r; c] | shared_stem | none (3.4) [D]
    classifier_hidden: int = 128      # (3.3) [D]
    classifier_dropout: float = 0.5   # [SF++]


def check_cue_options(model: str, cfg: CueOptions) -> None:
    check_counts(model, cfg, ("n_mels", "max_frames", "cue_depth", "cue_heads", "mask_span", "classifier_hidden"))
    if cfg.n_mels % cfg.cue_heads:
        raise ModelConfigError(f"{model}: n_mels {cfg.n_mels} must divide into cue_heads {cfg.cue_heads}")
    check_rates(model, cfg, ("mask_rate", "dropout", "attn_dropout", "classifier_dropout"))
    if cfg.ffn_ratio <= 0:
        raise ModelConfigError(f"{model}: ffn_ratio must be > 0, not {cfg.ffn_ratio}")


def sample_frame_mask(valid: torch.Tensor, rate: float, span: int) -> torch.Tensor:
    """Mockingjay-style spans to hide [B, T] (True: hidden): about `rate` of each utterance's valid frames
    in spans of `span` frames (shorter for utterances of few frames), starts uniform, never padding,
    never every frame. Uses torch's global generator (seeded per epoch by the trainer)."""
    lengths = valid.sum(1)
    span_len = torch.minimum(torch.full_like(lengths, span), (lengths - 1).clamp(min=0))
    counts = torch.where(span_len > 0, (rate * lengths / span_len.clamp(min=1)).round().clamp(min=1), 0)
    if rate <= 0 or int(counts.max()) == 0:
        return torch.zeros_like(valid)
    n_spans = int(counts.max())
    starts = (torch.rand(valid.shape[0], n_spans, device=valid.device)
              * (lengths - span_len + 1)[:, None]).floor().long()
    pos = torch.arange(valid.shape[1], device=valid.device)
    inside = (pos >= starts[..., None]) & (pos < (starts + span_len[:, None])[..., None])   # [B, spans, T]
    used = torch.arange(n_spans, device=valid.device)[None, :] < counts[:, None]
    return (inside & used[..., None]).any(1) & valid


class CuePathway(nn.Module):
    """3.1: hide frames, add the mask embedding Linear(1 -> F) and positions, M post-LN layers whose keys
    skip hidden frames, a Linear recover head; c = mean of the last states over valid frames. `stem`
    (fusion shared_stem) replaces its first layers by the relationship pathway's (embedding included)."""

    def __init__(self, cfg: CueOptions, stem: Optional[nn.Module] = None):
        super().__init__()
        self.cfg, self.dim = cfg, cfg.n_mels
        self.mask_embedding = nn.Linear(1, cfg.n_mels)
        if cfg.cue_positions:
            self.register_buffer("positions", sinusoidal_positions(cfg.max_frames, cfg.n_mels), persistent=False)
        own = cfg.cue_depth - (len(stem.stem_layers()) if stem is not None else 0)
        self.layers = nn.ModuleList(PostNormLayer(cfg.n_mels, cfg.cue_heads, int(round(cfg.ffn_ratio * cfg.n_mels)),
                                                  cfg.dropout, cfg.attn_dropout, cfg.cue_residual)
                                    for _ in range(own))
        self.recover = nn.Linear(cfg.n_mels, cfg.n_mels)
        self._stem = [stem]   # a plain list: the stem's parameters belong to the relationship pathway

    def forward(self, s: torch.Tensor, valid: torch.Tensor) -> Dict[str, torch.Tensor]:
        hidden = sample_frame_mask(valid, self.cfg.mask_rate, self.cfg.mask_span) if self.training \
            else torch.zeros_like(valid)
        m = hidden.to(s.dtype)[..., None]
        h = s * (1 - m) + self.mask_embedding(m)
        key_valid = valid & ~hidden if self.cfg.cue_key_mask else valid
        stem = self._stem[0]
        if stem is not None:
            h, _ = stem.run_stem(stem.embed(h), key_valid, stem.stem_words(s.shape[0]))
        elif self.cfg.cue_positions:
            h = h + self.positions[:s.shape[1]]
        for layer in self.layers:
            h = layer(h, key_valid)
        return {"cue": masked_mean(h, valid), "reconstruction": self.recover(h),
                "reconstruction_target": s, "reconstruction_mask": hidden}


def masked_frame_mse(out: Dict[str, torch.Tensor]) -> torch.Tensor:
    """ESERNet's L1 (spec 4, Eq. 11): the mean squared error of the rebuilt frames over the hidden (frame, bin)
    elements only; 0 when the batch hid none."""
    hidden = out["reconstruction_mask"]
    if not bool(hidden.any()):
        return out["reconstruction"].sum() * 0.0
    diff = out["reconstruction"].float()[hidden] - out["reconstruction_target"].float()[hidden]
    return diff.square().mean()


class ReconstructionObjective(Objective):
    """ESERNet's joint loss (spec 4, Eq. 13 with π = 1 - r, r = loss.reconstruction_weight):
    (1 - r) x the emotion loss + r x `masked_frame_mse`; a batch the model returns no reconstruction for
    (evaluation, or no cue pathway) is the emotion loss alone, as is r = 0."""

    def __init__(self, emotion: EmotionLoss, reconstruction_weight: float = 0.0):
        super().__init__(emotion)
        self.reconstruction_weight = reconstruction_weight

    def forward(self, out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        loss = self.emotion_loss(out, batch)
        r = self.reconstruction_weight
        if r <= 0 or "reconstruction" not in out:
            return loss
        return (1 - r) * loss + r * masked_frame_mse(out)


class ESERNetBase(SERModel):
    """What ESERNet and its literal-Swin variant share: the stream checks, trimming the all-padding tail,
    the cue pathway and the fused classifier; subclasses give `relationship(x, valid)` and its width."""

    tasks = ("emotion", "reconstruction")   # rebuilt frames, for loss.reconstruction_weight

    def _init_streams(self, cfg) -> None:
        self.streams = (cfg.stream,)
        self.stream_dims = {cfg.stream: cfg.n_mels}
        self.fixed_frames = None
        self.max_frames = cfg.max_frames

    def objective(self, emotion: EmotionLoss, loss: Mapping[str, Any]) -> ReconstructionObjective:
        return ReconstructionObjective(emotion, loss["reconstruction_weight"])

    def _init_head(self, cfg, relationship_dim: int, num_classes: int) -> None:
        fused = relationship_dim + (cfg.n_mels if cfg.cue_pathway and cfg.fusion == "late_concat" else 0)
        self.classifier = nn.Sequential(nn.Linear(fused, cfg.classifier_hidden), nn.ReLU(),
                                        nn.Dropout(cfg.classifier_dropout),
                                        nn.Linear(cfg.classifier_hidden, num_classes))

    def relationship(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        cfg = self.cfg
        x, valid = batch[cfg.stream], batch["mask"]
        if x.shape[-1] != cfg.n_mels:
            raise ModelConfigError(f"{self.name} expects {cfg.n_mels} mel bands, got {x.shape[-1]}; set model.n_mels "
                                   "to the width of the features")
        if x.shape[1] > cfg.max_frames:
            raise ModelConfigError(f"{self.name} takes at most model.max_frames = {cfg.max_frames} frames, "
                                   f"got {x.shape[1]}")
        keep = max(1, int(valid.sum(1).max()))      # every position is fixed on the max_frames grid, so
        x, valid = x[:, :keep] * valid[:, :keep, None], valid[:, :keep]   # the padded tail can go
        out: Dict[str, torch.Tensor] = {}
        features = [self.relationship(x, valid)]
        if cfg.cue_pathway and (self.training or cfg.fusion == "late_concat"):
            cue = self.cue(x, valid)
            if self.training:
                out.update({k: v for k, v in cue.items() if k.startswith("reconstruction")})
            if cfg.fusion == "late_concat":
                features.append(cue["cue"])
        out["logits"] = self.classifier(torch.cat(features, dim=-1))
        return out
