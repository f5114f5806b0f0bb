"""Packed models: one file that holds everything needed to run a trained model on new audio.

A `.sertk` file is a zip archive of two members:

- `sertk-model.json`: the resolved experiment config, the label list (the order of posterior columns),
  the feature config with its frame layout, the normalisation statistics, the protocol card of the fold,
  dev and test metrics, where it came from (exp dir, checkpoint digest, epoch) and the training
  environment;
- `weights.pt`: the dev-selected model weights, a `torch.save`d state dict.

This module names the format and holds a pack in memory; the rest of it lives beside it: writing one from an
exp dir (sertk.inference.pack), the file itself (pack_file), what sertk-model.json may hold (pack_schema) and
its checks on reading (pack_check), and `sertk pack --info` (pack_info).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from sertk.errors import SertkError
from sertk.features.streams import DUMP_INFO_KEY

FORMAT = "sertk-model"
FORMAT_VERSION = 1
META_MEMBER = "sertk-model.json"
WEIGHTS_MEMBER = "weights.pt"
# the dump layout a pack carries for the streams its model reads (from the info block of features.yaml)
LAYOUT_KEYS = ("dims", "frame_shift", "levels", "frame_window", "windows", "layers")


class PackError(SertkError):
    """A model cannot be packed, or a file is not a packed model sertk can read."""


@dataclass
class PackedModel:
    meta: Dict[str, Any]                 # everything but the weights (see the module docstring)
    weights: Dict[str, torch.Tensor]
    path: Optional[Path] = None

    @property
    def config(self) -> Dict[str, Any]:
        return self.meta["config"]

    @property
    def classes(self) -> List[str]:
        return list(self.meta["classes"])

    @property
    def feature_config(self) -> Dict[str, Any]:
        """The feature config (loadable by sertk.features.streams.parse_config), without the layout."""
        return {k: v for k, v in self.meta["features"].items() if k != DUMP_INFO_KEY}

    @property
    def layout_info(self) -> Dict[str, Any]:
        return self.meta["features"][DUMP_INFO_KEY]

    @property
    def normalization(self) -> Dict[str, Any]:
        return self.meta["normalization"]
