"""Every registered model: shapes, batch and padding invariance, and that it can learn."""
import dataclasses

import pytest
import torch

from helpers import batch_for
from sertk.models import ModelConfigError, available_models, build_model, model_class


# models too heavy for CPU tests at their defaults, built small (their defaults are tested in their own files)
SMALL = {"esernet_swin": dict(image_size=32, patch_size=2, embed_dim=16, swin_depths=[2, 2], swin_heads=[2, 4],
                              window_size=4),
         "msfpn": dict(input_dim=24, widths=[32, 16, 16], lstm_hidden=16, fc_hidden=16)}


def build_for_frames(name, frames, num_classes=5, **cfg):
    """A model for `frames`-frame segments (models with fixed-length segments are built for them)."""
    cfg = {**SMALL.get(name, {}), **cfg}
    if "frames" in {f.name for f in dataclasses.fields(model_class(name).Config)}:
        cfg["frames"] = frames
    torch.manual_seed(0)
    return build_model(name, num_classes, **cfg)


@pytest.fixture(params=available_models())
def model(request):
    return build_for_frames(request.param, 200)


@pytest.mark.parametrize("name", available_models())
def test_logit_shape(name):
    for frames in (50, 200, 333):
        model = build_for_frames(name, frames)
        assert model(batch_for(model, frames=frames))["logits"].shape == (4, 5)


def test_posteriors_do_not_depend_on_the_batch(model):
    model.eval()
    batch = batch_for(model, batch=5, valid=[200, 120, 37, 200, 199])
    together = model(batch)["logits"]
    for i in range(5):
        alone = model({k: v[i:i + 1] for k, v in batch.items()})["logits"]
        torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=1e-5)


def test_posteriors_do_not_depend_on_how_far_a_segment_is_padded(model):
    """An utterance cut to its own frames decides as it does padded to a batch's longest (whole-utterance
    batches, segments.length null). Lengths that are not multiples of the models' pooling strides."""
    if model.fixed_frames:
        pytest.skip("the model takes fixed-length segments only")
    model.eval()
    valid = [200, 121, 37, 83]
    batch = batch_for(model, batch=4, valid=valid)
    together = model(batch)["logits"]
    vectors = getattr(model, "vector_streams", ())
    for i, n in enumerate(valid):
        alone = {k: v[i:i + 1] if k in vectors else v[i:i + 1, :n] for k, v in batch.items()}
        torch.testing.assert_close(model(alone)["logits"][0], together[i], atol=1e-5, rtol=1e-5)


def test_padding_content_is_ignored(model):
    model.eval()
    batch = batch_for(model, batch=2, valid=[120, 200])
    noisy = {k: v.clone() for k, v in batch.items()}
    for s in model.streams:
        if s not in getattr(model, "vector_streams", ()):   # a vector stream has no padded frames
            noisy[s][0, 120:] = 99.0
    torch.testing.assert_close(model(batch)["logits"], model(noisy)["logits"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", available_models())
def test_features_of_another_width_are_a_model_config_error(name):
    """Not a ValueError or a torch shape error: the CLI turns a ModelConfigError into one line."""
    model = build_for_frames(name, 50)
    batch = batch_for(model, frames=50)
    for s in model.streams:   # one value too many per row
        batch[s] = torch.cat([batch[s], batch[s][..., :1]], dim=-1)
    with pytest.raises(ModelConfigError, match=str(model.stream_dims[model.streams[0]] + 1)):
        model(batch)


# post-LN Transformers diverge at 3e-3 without warm-up; they learn at their config's step size
OVERFIT_LR = {"esernet": 5e-4, "esernet_swin": 5e-4}


@pytest.mark.parametrize("name", available_models())
def test_overfits_a_tiny_batch(name):
    model = build_for_frames(name, 50)
    batch = batch_for(model, batch=8, frames=50)
    labels = torch.arange(8) % 5
    opt = torch.optim.Adam(model.parameters(), lr=OVERFIT_LR.get(name, 3e-3))
    model.train()
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(batch)["logits"], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert (model(batch)["logits"].argmax(1) == labels).all()


def test_crnn_parameter_count_and_registry():
    assert model_class("crnn").__name__ == "CRNN"
    assert sum(p.numel() for p in build_model("crnn", 7).parameters()) == 328_680
