"""The model contract: what the trainer, the decoder and the inferencer read from a model, and the hook through
which a model brings its own auxiliary losses. A new model is one file in sertk/models holding a `SERModel`
subclass decorated with `@register(name)` (found on first use), plus its YAML (docs/models.md).

`SERModel` declares the attributes with their defaults; a model sets those that differ, in `__init__` when
they depend on its options. `Objective` is the training loss of a batch; a model with auxiliary tasks returns
its own subclass from `SERModel.objective`. This module imports nothing of sertk, so the trainer and the
models can both build on it.
"""
from types import MappingProxyType
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch
from torch import nn

EmotionLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Objective(nn.Module):
    """The training loss of a batch of model outputs. This base is the emotion loss alone:
    `emotion(logits, labels, index)`, the trainer's class- and utterance-weighted cross-entropy
    (sertk.train.loss.SegmentLoss). A model's subclass combines it with the model's auxiliary losses in `forward`.

    Parameters a subclass holds (SD-CAFF's centers) train with the model's optimizer, are averaged over
    processes under torchrun, and are saved in last.pt as its "objective" state, under their names here."""

    def __init__(self, emotion: EmotionLoss):
        super().__init__()
        self.emotion = emotion

    def to(self, device) -> "Objective":
        self.emotion = self.emotion.to(device)
        return super().to(device)

    def emotion_loss(self, out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.emotion(out["logits"].float(), batch["label"], batch["index"])

    def forward(self, out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.emotion_loss(out, batch)

    def after_backward(self, lr: float) -> None:
        """Called after each backward pass, before gradient clipping and the optimizer step, with the
        optimizer's current rate (SD-CAFF rescales its centers' gradients here). Nothing by default."""


class SERModel(nn.Module):
    """The base of every registered model.

    Class attributes:
      name            the registry name (set by `register`)
      Config          the options dataclass: field defaults are the model's defaults (the spec's, for published
                      models); every field is a `model.<field>` config key, checked by its type hint
    Built as `Model(num_classes, cfg)`; the instance declares:
      streams         the feature streams it reads (required)
      stream_dims     {stream: values per frame (per row for a vector stream)} for each of them (required)
      vector_streams  the streams it reads as one vector per segment or utterance ([B, D], no frames); default none
      fixed_frames    the segment length in frames it was built for; None (default): any length
      max_frames      the longest segment in frames it takes; None (default): no limit
      tasks           the outputs it gives beyond the emotion `logits`, by task: "gender" (`gender_logits`, for
                      loss.gender_weight), "reconstruction" (rebuilt frames, for loss.reconstruction_weight);
                      default ("emotion",)
      center_dims     {task: width of its center-loss embedding} (for loss.center_weight); default none
      channels_last   True: it trains faster with its 2-D convolutions in channels-last memory layout (measured
                      by benchmarks/train.py, per model: it pays for crnn and STRL-SER, slows MPAF-CNN and
                      SD-CAFF); the values and results are the same either way; default False
    `forward(batch)` takes {stream: [B, T, D] (vector streams [B, D]), "mask": [B, T] bool} and returns a dict
    with `logits` [B, num_classes] and whatever its objective reads.

    The hook: `objective(emotion, loss)` builds the model's training loss from the trainer's emotion loss and
    config["loss"]; the default is the emotion loss alone. A model with auxiliary losses (ESERNet's
    reconstruction, SD-CAFF's gender task and center losses) returns its own `Objective` subclass. The trainer
    has checked that any loss weight set is one the model's `tasks` / `center_dims` can serve; weights of its
    own (not in config["loss"]) are model options.
    """

    name: str = ""
    Config: type
    streams: Tuple[str, ...]
    stream_dims: Mapping[str, int]
    vector_streams: Tuple[str, ...] = ()
    fixed_frames: Optional[int] = None
    max_frames: Optional[int] = None
    tasks: Tuple[str, ...] = ("emotion",)
    center_dims: Mapping[str, int] = MappingProxyType({})
    channels_last: bool = False

    def objective(self, emotion: EmotionLoss, loss: Mapping[str, Any]) -> Objective:
        return Objective(emotion)
