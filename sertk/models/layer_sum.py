"""A learned weighted sum of an encoder's layers in front of any model (SUPERB's featurizer).

An `ssl` stream extracted with `all_layers: true` holds every hidden state side by side ([frames,
layers x dim]; the dump says how many layers). `LayerSum` turns each such stream into softmax(w)-weighted
sums of its layers [frames, dim] before the wrapped model sees the batch, with w learned along with the
model (initialised equal). Everything else about the model (streams, options, attributes) is the wrapped
model's, so trainers, losses and decoders treat the pair as the model.
"""
from typing import Dict

import torch
from torch import nn


class LayerSum(nn.Module):
    def __init__(self, model: nn.Module, layers: Dict[str, int]):
        super().__init__()
        self.model = model
        self.layers = dict(layers)
        self.layer_logits = nn.ParameterDict({s: nn.Parameter(torch.zeros(n)) for s, n in self.layers.items()})
        # the dims the dump holds per frame (the wrapped model's, times the layers)
        self.stream_dims = {s: d * self.layers.get(s, 1) for s, d in model.stream_dims.items()}

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)

    def layer_weights(self, stream: str) -> torch.Tensor:
        return torch.softmax(self.layer_logits[stream], dim=0)

    def forward(self, batch: Dict[str, torch.Tensor]):
        batch = dict(batch)
        for stream, n in self.layers.items():
            x = batch[stream]
            stacked = x.view(*x.shape[:-1], n, x.shape[-1] // n)
            batch[stream] = torch.einsum("...ld,l->...d", stacked, self.layer_weights(stream))
        return self.model(batch)


def with_layer_sums(model: nn.Module, layers: Dict[str, int]) -> nn.Module:
    """`model` behind a LayerSum for the streams it reads that hold several layers; itself when none do."""
    stacked = {s: n for s, n in layers.items() if s in model.streams and n > 1}
    return LayerSum(model, stacked) if stacked else model
