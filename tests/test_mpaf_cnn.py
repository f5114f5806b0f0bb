"""MPAF-CNN against its spec (shared/specs/mpaf_cnn.md): parameter counts, equations, switches."""
import dataclasses
import inspect

import pytest
import torch

from helpers import batch_for
from sertk.models import ModelConfigError, build_model
from sertk.models.mpaf_cnn import CHOICES, FineGrainedFusion, FrameAttention, MPAFCNNConfig

FRAMES = 50   # switches are checked on short segments to stay fast; the maths does not depend on T


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_default_parameter_count_is_the_specs_section_9():
    model = build_model("mpaf_cnn", 4)
    # section 9, counted on the spec's Appendix A sketch, component by component
    assert count(model.ms) == 24_936
    assert count(model.lld) == 91_608
    assert count(model.ffs) == 136_520
    assert count(model.lstms) == 1_249_280
    assert count(model.classifier) == 1_284
    assert count(model) == 1_503_628


def test_parameter_formulas_of_section_9_for_other_sizes():
    c, f, t, d_in, h, k = 8, 32, 120, 48, 64, 6
    model = build_model("mpaf_cnn", k, ms_channels=c, n_mels=f, lld_channels=f, frames=t, n_lld=d_in,
                        lstm_hidden=h)
    mpam_2d = lambda cin: 34 * cin * c + 4 * c + (cin * c + 2 * c if cin != c else 0) + 2 * c * f + t  # noqa: E731
    mpam_1d = lambda cin: 8 * cin * f + 4 * f + (cin * f + 2 * f if cin != f else 0) + 2 * f + t   # noqa: E731
    d_a, d_b = c * f + 1, f + 1
    assert count(model.ms) == mpam_2d(1) + 2 * mpam_2d(c)
    assert count(model.lld) == mpam_1d(d_in) + 2 * mpam_1d(f)
    assert count(model.ffs) == 2 * d_a + 2 * d_b + 2 * d_a * d_b + d_a + d_b
    assert count(model.lstms) == 2 * (4 * h * (d_a + d_b + h) + 8 * h)
    assert count(model.classifier) == (2 * h + f) * k + k


def test_segment_shapes_and_branch_outputs():
    model = build_model("mpaf_cnn", 4).eval()
    for valid in ((200, 200), (200, 64)):
        out = model(batch_for(model, batch=2, frames=200, valid=valid))["logits"]
        assert out.shape == (2, 4) and torch.isfinite(out).all()


def test_frame_attention_is_equations_1_to_5():
    torch.manual_seed(0)
    attention = FrameAttention(6, enabled=True, softmax_over="key", residual=False)
    m = torch.randn(2, 6, 9)
    x, tdgr = attention(m, torch.ones(2, 9, dtype=torch.bool))
    q, k = m.transpose(1, 2) @ attention.w_q, m.transpose(1, 2) @ attention.w_k         # [B, T]
    a = torch.softmax(q[:, :, None] * k[:, None, :], dim=-1)                           # Q K^T, rows
    torch.testing.assert_close(x, torch.einsum("bij,bdj->bdi", a, m))                   # X = A M
    torch.testing.assert_close(tdgr, (q + k) / 2)


@pytest.mark.parametrize("mode, axis", [("literal", 0), ("standard", 1)])
def test_ffs_maps_are_normalised_on_the_axis_of_their_reading(mode, axis):
    # literal: A_1 [T1, T2] is normalised over T1, so its columns sum to 1; standard: its rows
    cfg = MPAFCNNConfig(ffs_mode=mode)
    torch.manual_seed(0)
    ffs = FineGrainedFusion(5, 3, cfg)
    mask = torch.arange(12)[None, :] < torch.tensor([12, 8])[:, None]
    x_a, x_b = torch.randn(2, 12, 5) * mask[..., None], torch.randn(2, 12, 3) * mask[..., None]
    a_1, a_2 = ffs.maps(x_a, x_b, mask)
    assert a_1.shape == a_2.shape == (2, 12, 12)
    for a in (a_1[1], a_2[1]):                      # the segment with 8 valid frames
        torch.testing.assert_close(a.sum(axis)[:8], torch.ones(8))
        normalised_over_padding = a[8:, :] if axis == 0 else a[:, 8:]
        assert not normalised_over_padding.any()    # padded frames get no weight
    other = a_1[0].sum(1 - axis)
    assert not torch.allclose(other, torch.ones(12))   # the other axis need not sum to 1


SWITCHES = [{name: value} for name, values in CHOICES.items() for value in values[1:]
            if (name, value) != ("combine", "sum")] + [
    {"combine": "sum", "ms_channels": 1},            # d_a = d_b = 65: the only way a sum is defined
    {"combine": "sum", "ms_channels": 1, "lstm": "separate"},
    {"mpam": False}, {"attention": False}, {"attention_residual": True}, {"tdgr": False},
    {"global_features": False}, {"ffs": False}, {"ffs_layernorm": True}, {"ms_freq_pool": 4},
    {"fdgr_reduce": "linear", "lld_channels": 32}, {"n_lld": 48}, {"layers": 1},
    {"branches": "ms", "fdgr_reduce": "linear"}, {"branches": "lld", "ffs": False, "tdgr_source": "all"},
]


@pytest.mark.parametrize("options", SWITCHES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_every_switch_trains_and_ignores_padding_and_batch(options):
    torch.manual_seed(0)
    model = build_model("mpaf_cnn", 3, frames=FRAMES, **options)
    data = batch_for(model, batch=3, frames=FRAMES, valid=[FRAMES, 31, 7])
    model.train()
    loss = torch.nn.functional.cross_entropy(model(data)["logits"], torch.tensor([0, 1, 2]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0

    model.eval()
    together = model(data)["logits"]
    noisy = {k: v.clone() for k, v in data.items()}
    for s in model.streams:
        noisy[s][1, 31:] = 50.0                      # padding content must not matter
    torch.testing.assert_close(model(noisy)["logits"], together, atol=1e-5, rtol=1e-5)
    for i in range(3):                              # nor what else is in the batch
        alone = model({k: v[i:i + 1] for k, v in data.items()})["logits"][0]
        torch.testing.assert_close(alone, together[i], atol=1e-5, rtol=1e-5)


def test_ablations_remove_what_they_say():
    full = build_model("mpaf_cnn", 4)
    assert build_model("mpaf_cnn", 4, branches="ms").lld is None                     # M2
    plain = build_model("mpaf_cnn", 4, mpam=False)             # M4: no attention vectors, no TDGR, no G
    assert not any("w_q" in n or "w_time" in n for n, _ in plain.named_parameters())
    assert plain.classifier.in_features == 256 and plain.ffs.w_y1.in_features == 64
    assert build_model("mpaf_cnn", 4, tdgr=False).ffs.w_y1.in_features == 64        # M7
    assert build_model("mpaf_cnn", 4, global_features=False).classifier.in_features == 256   # M8
    assert build_model("mpaf_cnn", 4, ffs=False).ffs is None                          # M9
    assert build_model("mpaf_cnn", 4, branches="lld").streams == ("lld",)            # M3
    assert count(full) > count(plain)


@pytest.mark.parametrize("options, message", [
    ({"ffs_mode": "columns"}, "ffs_mode must be one of literal, standard, not 'columns'"),
    ({"lld_channels": 32}, "FDGR (64) and CDGR (32) are added, so they must be equally long"),
    ({"combine": "sum"}, "combine=sum needs both fused streams equally wide, got [1025, 65]"),
    ({"ms_freq_pool": 3}, "ms_freq_pool (3) must divide n_mels (64)"),
    ({"layers": 0}, "layers must be >= 1"),
])
def test_impossible_configs_are_named(options, message):
    with pytest.raises(ModelConfigError) as err:
        build_model("mpaf_cnn", 4, **options)
    assert message in str(err.value)


def test_inputs_of_the_wrong_length_or_width_are_named():
    model = build_model("mpaf_cnn", 4)
    with pytest.raises(ModelConfigError, match="built for 200-frame segments .* got 150; set model.frames"):
        model(batch_for(model, batch=1, frames=150))
    data = batch_for(model, batch=1, frames=200)
    data["lld"] = data["lld"][..., :40]
    with pytest.raises(ModelConfigError, match="stream 'lld' has 40 dims per frame .* expects 42; set model.n_lld"):
        model(data)


def test_every_config_field_is_documented():
    source = inspect.getsource(MPAFCNNConfig)
    for field in dataclasses.fields(MPAFCNNConfig):
        line = next(text for text in source.splitlines() if text.strip().startswith(f"{field.name}:"))
        assert "#" in line, f"{field.name} has no comment saying what it is"
