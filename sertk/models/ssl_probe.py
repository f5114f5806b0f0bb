"""ssl_probe: a small head on pooled statistics of a frozen encoder's hidden states (SUPERB / EmoBox style).

Reads one vector per utterance (or per segment window) of an `ssl_stats` stream: for each of `states`
hidden states its mean and std over frames, [states x 2 x input_dim] (sertk.features.streams.ssl_stats). Which
hidden states the head sees (`layer`):
- an integer: that state alone (0: the input embedding, -1: the last layer);
- `all` (or null, the default): every state side by side (states x 2 x input_dim);
- `sum`: a learned softmax-weighted sum of the states (SUPERB's featurizer), initialised equal.
Head: `linear` (logistic regression when trained with weight decay) or `mlp` (one hidden layer).
The vectors are normalised before the model sees them (features.cmvn: speaker, the recipe's default);
which layer and which weight decay is chosen per fold on dev with the config's grid.
"""
from dataclasses import dataclass
from typing import Dict, Optional, Union

import torch
from torch import nn

from sertk.models import ModelConfigError, SERModel, check_choices, check_counts, check_rates, register

HEADS = ("linear", "mlp")
POOLED = ("all", "sum")
STATISTICS = 2   # mean, std per state


@dataclass
class SslProbeConfig:
    stream: str = "whisper_stats"   # the ssl_stats stream read: [states x 2 x input_dim] per row
    input_dim: int = 512            # encoder width (Whisper-base 512)
    states: int = 7                 # hidden states stored: layers + 1 (Whisper-base: 6 + 1)
    # a state's index, all (every state concatenated; null means all too, which lets the config take an
    # index or a word for this key) or sum (learned weights)
    layer: Optional[Union[int, str]] = None
    head: str = "linear"            # linear | mlp
    hidden: int = 256               # mlp: hidden units
    dropout: float = 0.0            # on the head's input (and the mlp's hidden layer)


@register("ssl_probe")
class SslProbe(SERModel):
    Config = SslProbeConfig

    def __init__(self, num_classes: int, cfg: SslProbeConfig):
        super().__init__()
        check_counts("ssl_probe", cfg, ("input_dim", "states", "hidden"))
        check_choices("ssl_probe", cfg, {"head": HEADS})
        check_rates("ssl_probe", cfg, ("dropout",))
        self.cfg = cfg
        self.pooled = "all" if cfg.layer is None else cfg.layer
        self.index = _state_index(self.pooled, cfg.states)
        self.streams = (cfg.stream,)
        self.vector_streams = (cfg.stream,)
        self.stream_dims = {cfg.stream: cfg.states * STATISTICS * cfg.input_dim}
        self.fixed_frames = None
        width = STATISTICS * cfg.input_dim * (cfg.states if self.pooled == "all" else 1)
        self.state_logits = nn.Parameter(torch.zeros(cfg.states)) if self.pooled == "sum" else None
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.head == "linear":
            self.head = nn.Linear(width, num_classes)
        else:
            self.head = nn.Sequential(nn.Linear(width, cfg.hidden), nn.ReLU(), nn.Dropout(cfg.dropout),
                                      nn.Linear(cfg.hidden, num_classes))

    def state_weights(self) -> Optional[torch.Tensor]:
        return None if self.state_logits is None else torch.softmax(self.state_logits, dim=0)

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        x = batch[self.cfg.stream]
        expected = self.stream_dims[self.cfg.stream]
        if x.dim() != 2 or x.shape[-1] != expected:
            raise ModelConfigError(f"ssl_probe expects vectors of {expected} = {self.cfg.states} states x "
                                   f"{STATISTICS} x {self.cfg.input_dim}, got shape {tuple(x.shape)}; the stream must "
                                   "be an ssl_stats stream of an encoder of that width and depth")
        stacked = x.view(x.shape[0], self.cfg.states, STATISTICS * self.cfg.input_dim)
        if self.pooled == "all":
            h = x
        elif self.pooled == "sum":
            h = torch.einsum("bsd,s->bd", stacked, self.state_weights())
        else:
            h = stacked[:, self.index]
        return {"logits": self.head(self.dropout(h))}


def _state_index(layer, states: int) -> Optional[int]:
    if layer in POOLED:
        return None
    if isinstance(layer, bool) or not isinstance(layer, int) or not -states <= layer < states:
        raise ModelConfigError(f"ssl_probe: layer must be a hidden state's index in -{states}..{states - 1}, "
                               f"'all' or 'sum', not {layer!r}")
    return layer
