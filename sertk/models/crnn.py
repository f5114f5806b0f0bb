"""crnn: the baseline. A 2-D CNN over log-mel, a BiLSTM over time, masked attention pooling.

Not a published model: a small, honest reference point for the recipes. Each conv block is
conv 3x3 -> batch norm -> ReLU -> 2x2 max pool (time and frequency); padded frames are zeroed
before every convolution and before every max pool (ReLU outputs are >= 0, so a zeroed frame never
wins over a real one: a pool window at the end of an odd-length segment sees what it would see
without the padding), and skipped by the LSTM (sertk.models.sequence.run_lstm) and by the pooling, so
a segment's posterior depends on its own frames only, not on how far it is padded.
"""
from dataclasses import dataclass, field
from typing import Dict, List

import torch
from torch import nn

from sertk.models import ModelConfigError, SERModel, register
from sertk.models.pooling import AttentionPooling, downsample_mask
from sertk.models.sequence import run_lstm


@dataclass
class CRNNConfig:
    stream: str = "logmel"               # feature stream read: [T, n_mels]
    n_mels: int = 64                     # input width (mel bands, or an encoder's hidden size)
    # > 0: a linear projection of each frame to this width before the CNN, as SUPERB/s3prl's downstream
    # "projector" does for self-supervised features, whose dimensions have no frequency order for 3x3
    # kernels and 2x2 pooling to exploit. 0 (default): the CNN reads the input as it is.
    input_projection: int = 0
    channels: List[int] = field(default_factory=lambda: [16, 32, 64])
    lstm_hidden: int = 64
    lstm_layers: int = 1
    attention_hidden: int = 64
    dropout: float = 0.3


@register("crnn")
class CRNN(SERModel):
    Config = CRNNConfig
    channels_last = True   # faster in bf16 on an AMX CPU (benchmarks/train.py; docs/training.md)

    def __init__(self, num_classes: int, cfg: CRNNConfig):
        super().__init__()
        self.cfg = cfg
        self.streams = (cfg.stream,)
        self.stream_dims = {cfg.stream: cfg.n_mels}
        self.fixed_frames = None
        width = cfg.input_projection or cfg.n_mels
        self.projection = nn.Linear(cfg.n_mels, width) if cfg.input_projection else None
        blocks, in_ch = [], 1
        for ch in cfg.channels:
            blocks.append(nn.Sequential(nn.Conv2d(in_ch, ch, 3, padding=1), nn.BatchNorm2d(ch), nn.ReLU(),
                                        nn.MaxPool2d(2, ceil_mode=True)))
            in_ch = ch
        self.blocks = nn.ModuleList(blocks)
        freq = width
        for _ in cfg.channels:
            freq = -(-freq // 2)
        self.lstm = nn.LSTM(in_ch * freq, cfg.lstm_hidden, num_layers=cfg.lstm_layers, batch_first=True,
                            bidirectional=True, dropout=cfg.dropout if cfg.lstm_layers > 1 else 0.0)
        self.pool = AttentionPooling(2 * cfg.lstm_hidden, cfg.attention_hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(2 * cfg.lstm_hidden, num_classes)

    def forward(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        x, mask = batch[self.cfg.stream], batch["mask"]
        if x.shape[-1] != self.cfg.n_mels:
            raise ModelConfigError(f"crnn expects {self.cfg.n_mels} mel bands, got {x.shape[-1]}; set model.n_mels "
                                   "to the width of the features")
        if self.projection is not None:
            x = self.projection(x)
        h = x.unsqueeze(1)                                    # [B, 1, T, F]
        for block in self.blocks:   # conv, BN, ReLU, max pool (one Sequential: the checkpoints' keys)
            h = block[:3](h * mask[:, None, :, None]) * mask[:, None, :, None]
            h = block[3](h)
            mask = downsample_mask(mask, 2, h.shape[2])
        h = h * mask[:, None, :, None]
        h = h.permute(0, 2, 1, 3).flatten(2)                  # [B, T', C * F']
        h, _ = run_lstm(self.lstm, h, mask)
        pooled = self.pool(h, mask)
        return {"logits": self.out(self.dropout(pooled))}
