"""A trained experiment's records as decoding and inference read them: its checkpoint, the model its config
builds, and a stored config (a packed model's) checked as training checks a config.

The checkpoint format (sertk.checkpoint) and the experiment config (sertk.config) sit below training,
decoding and inference, which all read them; sertk.decode and sertk.inference import nothing of sertk.train.
"""
import copy
from typing import Any, Dict

from torch import nn

from sertk.checkpoint import load_checkpoint
from sertk.config.loading import check_config, model_options, with_new_defaults
from sertk.models import build_model

__all__ = ["build_configured_model", "checked_config", "load_checkpoint"]


def build_configured_model(config: Dict[str, Any], num_classes: int) -> nn.Module:
    """The untrained model `config` names (model.name, with the other model.* keys as its options)."""
    return build_model(config["model"]["name"], num_classes, **model_options(config))


def checked_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """A stored config checked as `sertk train` checks one, with the keys an older sertk did not write at their
    defaults; `config` itself is left as it is. A SertkError (ConfigError) says what is wrong."""
    return check_config(with_new_defaults(copy.deepcopy(config)))
