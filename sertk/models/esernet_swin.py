"""esernet_swin: the optional "literal Swin" preset of the ESERNet spec (shared/specs/esernet.md 3.6).
NOT the paper's method: the paper describes no image Swin, no patches, no shifted windows and no
pretrained weights (spec 8.1); `esernet` is the paper's model.

The relationship pathway is replaced by an image Swin Transformer (sertk.models.swin, Swin-T by
default: patch 4, window 7, embed 96, depths 2-2-6-2, heads 3-6-12-24, 27.5 M parameters) over the
log-mel spectrogram as an image: each utterance's valid frames (mel bins up, frames across) resized
bilinearly to 224 x 224 and repeated over 3 channels, so padding never reaches the image. The cue
pathway and the fusion are ESERNet's; the classifier reads [768-d Swin features; 128-d cue]. It trains
from scratch: timm's ImageNet weights cannot be downloaded here, and the spec's pretrained Swin-T is
therefore not what this model is.
"""
from dataclasses import dataclass, field
from typing import List

import torch
from torch.nn import functional as F

from sertk.models import ModelConfigError, check_choices, register
from sertk.models.esernet_cue import CueOptions, CuePathway, ESERNetBase, check_cue_options
from sertk.models.swin import SwinBackbone, SwinConfig
from sertk.models.transformer import xavier_linears


@dataclass
class ESERNetSwinConfig(CueOptions):
    # Swin-T (spec 3.6); see sertk.models.swin.SwinConfig
    image_size: int = 224
    image_channels: int = 3           # the one-channel spectrogram repeated
    patch_size: int = 4
    window_size: int = 7
    embed_dim: int = 96
    swin_depths: List[int] = field(default_factory=lambda: [2, 2, 6, 2])
    swin_heads: List[int] = field(default_factory=lambda: [3, 6, 12, 24])
    drop_path: float = 0.2            # stochastic depth (Swin-T's)


def spectrogram_images(x: torch.Tensor, valid: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """[B, T, F] frames -> [B, channels, size, size]: each utterance's valid frames as an F x frames image
    (bins on the vertical axis), resized bilinearly on its own so that padding never enters it."""
    images = [F.interpolate(x[i, :int(n)].T[None, None], size=(size, size), mode="bilinear", align_corners=False)
              for i, n in enumerate(valid.sum(1).clamp(min=1).tolist())]
    return torch.cat(images).expand(-1, channels, -1, -1)


@register("esernet_swin")
class ESERNetSwin(ESERNetBase):
    Config = ESERNetSwinConfig

    def __init__(self, num_classes: int, cfg: ESERNetSwinConfig):
        super().__init__()
        check_cue_options("esernet_swin", cfg)
        check_choices("esernet_swin", cfg, {"fusion": ("late_concat", "none")})
        self.cfg = cfg
        self._init_streams(cfg)
        try:
            self.swin = SwinBackbone(SwinConfig(
                img_size=cfg.image_size, patch_size=cfg.patch_size, in_chans=cfg.image_channels,
                embed_dim=cfg.embed_dim, depths=list(cfg.swin_depths), num_heads=list(cfg.swin_heads),
                window_size=cfg.window_size, drop_rate=cfg.dropout, attn_drop_rate=cfg.attn_dropout,
                drop_path_rate=cfg.drop_path))
        except ValueError as err:   # the backbone's own message, as a model option error
            raise ModelConfigError(f"esernet_swin: {err}") from None
        if cfg.cue_pathway:
            self.cue = CuePathway(cfg)
            xavier_linears(self.cue)
        self._init_head(cfg, self.swin.num_features, num_classes)
        xavier_linears(self.classifier)

    def relationship(self, x, valid):
        return self.swin(spectrogram_images(x, valid, self.cfg.image_size, self.cfg.image_channels))
