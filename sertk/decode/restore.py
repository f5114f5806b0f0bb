"""A trained model rebuilt from its config and weights, checked against the layout of the streams it reads."""
from typing import Any, Callable, Dict, Sequence, Tuple

import torch

from sertk.features.reading import StreamLayout
from sertk.models.layer_sum import with_layer_sums
from sertk.experiment import build_configured_model


def restore_model(config: Dict[str, Any], num_classes: int, weights: Dict[str, torch.Tensor],
                  layout_of: Callable[[Sequence[str]], StreamLayout], device: str
                  ) -> Tuple[torch.nn.Module, StreamLayout]:
    """The model of `config` with trained `weights`, in eval mode on `device`, and the layout of the
    streams it reads (`layout_of(streams)`: from a dump, or from a packed model's feature info)."""
    model = build_configured_model(config, num_classes)
    layout = layout_of(list(model.streams))
    layout.check_model(model)
    model = with_layer_sums(model, layout.layers).to(device)
    model.load_state_dict(weights)
    return model.eval(), layout
