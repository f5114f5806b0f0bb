"""SD-CAFF against its spec (shared/specs/sd_caff.md): parameter counts, equations, switches, and the
multi-task objective it trains with."""
import itertools

import pytest
import torch
from torch import nn

from helpers import batch_for
from sertk.models import ModelConfigError, build_model
from sertk.models import sd_caff as sd_caff_module
from sertk.models.sd_caff import (CHOICES, CenterLoss, CrossAFF, DyReLUB, SDCAFFConfig, SDCAFFObjective,
                                  parameter_counts)
from sertk.train.loss import SegmentLoss

SMALL = {"lstm_hidden": 32, "lstm_pool": 8, "channels": [4, 8, 8, 8, 16], "inter_channels": 4}
DD = {"stream_deltas": 2, "dynamic_inputs": ["mfcc", "delta", "delta2"]}   # the released code's 180-d input


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("options, expected", [
    ({}, {"cnn": 227_554, "lstm": 4_694_016, "cross_aff": 26_112, "heads": 2_316, "total": 4_949_998}),
    ({"bidirectional": True}, {"lstm": 2_596_864, "total": 2_852_846}),
    (DD, {"lstm": 4_939_776, "total": 5_195_758}),
    ({"dynamic_combine": "weighted_sum"}, {"lstm": 4_448_256}),
    ({"architecture": "cnn"}, {"total": 229_102}),
    ({"architecture": "lstm", **DD}, {"total": 4_952_077}),
    ({"architecture": "concat", **DD}, {"total": 5_169_646}),
])
def test_parameter_counts_are_the_specs_section_9(options, expected):
    # section 9 counts trainable parameters for 4 classes; its 20 center values live in the loss here
    model = build_model("sd_caff", 4, **options)
    counts = {**parameter_counts(model), "total": count(model)}
    assert {k: counts[k] for k in expected} == expected


def test_static_branch_shapes_are_section_3_1():
    model = build_model("sd_caff", 4).eval()
    x = torch.randn(2, 1, 60, 251)
    mask = torch.ones(2, 251, dtype=torch.bool)
    shapes = []
    for layer in model.static.layers:
        x, mask = layer(x, mask)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(8, 58, 249), (32, 58, 249), (64, 29, 124), (96, 14, 62), (128, 7, 31)]
    assert mask.shape == (2, 31) and mask.all()


@pytest.mark.parametrize("frames", [10, 64, 251, 400])
def test_output_shapes_for_several_lengths(frames):
    model = build_model("sd_caff", 7, **SMALL).eval()
    out = model(batch_for(model, batch=3, frames=frames))
    assert out["logits"].shape == (3, 7) and out["gender_logits"].shape == (3, 2)
    assert out["center_embedding"].shape == (3, 7) and out["gender_center_embedding"].shape == (3, 2)
    assert out["embedding"].shape == (3, 16 + 8) and torch.isfinite(out["logits"]).all()


def test_too_short_or_wrongly_sized_input_is_a_clear_error():
    model = build_model("sd_caff", 4, **SMALL)
    with pytest.raises(ModelConfigError, match="at least 10 frames"):
        model(batch_for(model, batch=2, frames=9))
    with pytest.raises(ModelConfigError, match="stream_deltas"):
        model({"mfcc": torch.randn(2, 50, 180), "mask": torch.ones(2, 50, dtype=torch.bool)})


@pytest.mark.parametrize("options, message", [
    ({"architecture": "transformer"}, "architecture must be one of"),
    ({"dynamic_inputs": ["delta2"]}, "dynamic_inputs"),
    ({"dynamic_inputs": []}, "dynamic_inputs"),
    ({"dynamic_combine": "weighted_sum", "dynamic_weights": [1.0]}, "one weight per dynamic input"),
    ({"bidirectional": True, "lstm_hidden": 33}, "odd"),
    ({"lstm_pool": 2048}, "lstm_pool"),
    ({"dropout": 1.0}, "dropout"),
    ({"first_padding": 2}, "first_padding"),
    ({"n_mfcc": 9}, r"9 MFCC rows are too few for the CNN's 3 2x2 pools \(it needs n_mfcc >= 10\)"),
])
def test_bad_options_are_named(options, message):
    with pytest.raises(ModelConfigError, match=message):
        build_model("sd_caff", 4, **options)


def _switch_settings():
    """Each alternative of every switch, one at a time, on the small model."""
    defaults = SDCAFFConfig()
    for name, values in CHOICES.items():
        for value in values:
            if value != getattr(defaults, name):
                yield {name: value}
    for name in ("bidirectional", "gender_head", "center_heads"):
        yield {name: not getattr(defaults, name)}
    yield {"first_padding": 1}
    yield {"center_dim": 3}
    yield DD
    yield {**DD, "dynamic_combine": "weighted_sum", "dynamic_weights": [0.5, 0.3, 0.2]}
    yield {"dynamic_inputs": ["delta"]}


@pytest.mark.parametrize("options", list(_switch_settings()), ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_every_switch_builds_and_runs_forward_and_backward(options):
    model = build_model("sd_caff", 4, **{**SMALL, **options})
    out = model(batch_for(model, batch=3, frames=40, valid=[40, 25, 40]))
    loss = sum(v.float().square().mean() for v in out.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert ("gender_logits" in out) == model.cfg.gender_head
    assert ("center_embedding" in out) == model.cfg.center_heads


def test_dyrelu_b_starts_as_relu_and_uses_the_valid_frames_only():
    act = DyReLUB(8, reduction=4, k=2)
    assert count(act) == 8 * 2 + 2 + 2 * 32 + 32          # C -> C/4 -> 4C, biases included
    nn.init.zeros_(act.fc2.weight)
    nn.init.zeros_(act.fc2.bias)                           # theta = 0: a = [1, 0], b = [0, 0]
    x = torch.randn(2, 8, 5, 7)
    torch.testing.assert_close(act(x, torch.ones(2, 7, dtype=torch.bool)), torch.relu(x))
    torch.manual_seed(0)
    act = DyReLUB(8, reduction=4, k=2)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    noisy = x.clone()
    noisy[1, :, :, 4:] = 50.0
    torch.testing.assert_close(act(x, mask)[1, :, :, :4], act(noisy, mask)[1, :, :, :4])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_dyrelu_b_is_the_max_of_its_k_lines(k):
    torch.manual_seed(k)
    act = DyReLUB(8, reduction=4, k=k)
    nn.init.normal_(act.fc2.weight)                        # coefficients far from the ReLU start
    x, mask = torch.randn(3, 8, 5, 7), torch.ones(3, 7, dtype=torch.bool)
    from sertk.models.pooling import masked_time_mean
    theta = 2 * torch.sigmoid(act.fc2(torch.relu(act.fc1(masked_time_mean(x, mask))))) - 1
    coefs = theta.view(3, 8, 2 * k) * act.lambdas + act.init
    lines = x.unsqueeze(2) * coefs[..., :k, None, None] + coefs[..., k:, None, None]    # [B, C, K, H, T]
    torch.testing.assert_close(act(x, mask), lines.amax(dim=2))


def test_masked_time_mean_averages_the_valid_frames_only():
    from sertk.models.pooling import masked_time_mean
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    full = torch.ones(2, 6, dtype=torch.bool)
    torch.testing.assert_close(masked_time_mean(x, full), x.mean(dim=(2, 3)))   # no padding: the plain mean
    mask = full.clone()
    mask[1, 2:] = False
    torch.testing.assert_close(masked_time_mean(x, mask)[1], x[1, :, :, :2].mean(dim=(1, 2)))
    torch.testing.assert_close(masked_time_mean(x, mask)[0], x[0].mean(dim=(1, 2)))


@pytest.mark.parametrize("k", [2, 3])
def test_dyrelu_b_gives_the_amax_forms_values_and_gradients(k, monkeypatch):
    """The ReLU form (K = 2) and the line-at-a-time max (K > 2) against the [B, C, K, H, T] amax that sertk
    trained with before (sd_caff.DYRELU_MAX = "amax", benchmarks/train.py's old path), in float64: away from
    exact ties of two lines the same function, so the same values and gradients."""
    torch.manual_seed(k)
    act = DyReLUB(8, reduction=4, k=k).double()
    nn.init.normal_(act.fc2.weight)
    x, mask = torch.randn(3, 8, 5, 7, dtype=torch.float64), torch.ones(3, 7, dtype=torch.bool)
    mask[0, 5:] = False
    grad_out = torch.randn(3, 8, 5, 7, dtype=torch.float64)

    def run():
        xx = x.clone().requires_grad_()
        y = act(xx, mask)
        params = [xx] + list(act.parameters())
        return y.detach(), torch.autograd.grad(y, params, grad_out)
    new_y, new_grads = run()
    monkeypatch.setattr(sd_caff_module, "DYRELU_MAX", "amax")
    old_y, old_grads = run()
    torch.testing.assert_close(new_y, old_y)
    for new, old in zip(new_grads, old_grads):
        torch.testing.assert_close(new, old)


def test_cross_aff_is_equations_5_to_7():
    torch.manual_seed(0)
    fusion = CrossAFF(128, 64, 32).eval()
    for m in fusion.modules():                              # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x_s, x_d = torch.randn(2, 128, 7, 31), torch.randn(2, 64, 1, 251)
    gap = nn.AdaptiveAvgPool2d(1)
    g_s = fusion.static_global(gap(x_s))                    # the other branch's channel count
    g_d = fusion.dynamic_global(gap(x_d))
    assert g_s.shape == (2, 64, 1, 1) and g_d.shape == (2, 128, 1, 1)
    w_s = torch.sigmoid(fusion.static_local(x_s) + g_d)
    w_d = torch.sigmoid(fusion.dynamic_local(x_d) + g_s)
    expected = torch.cat([gap(x_s * w_s).flatten(1), gap(x_d * w_d).flatten(1)], dim=1)
    z = fusion(x_s, torch.ones(2, 31, dtype=torch.bool), x_d, torch.ones(2, 251, dtype=torch.bool))
    torch.testing.assert_close(z, expected)


def test_lstm_pooling_averages_hidden_units_not_time():
    model = build_model("sd_caff", 4).eval()
    x = torch.randn(2, 251, 120)
    pooled, _ = model.dynamic(x, torch.ones(2, 251, dtype=torch.bool))
    out, _ = model.dynamic.lstm(x)
    assert pooled.shape == (2, 251, 64)
    torch.testing.assert_close(pooled, out.view(2, 251, 64, 16).mean(-1), atol=1e-6, rtol=1e-5)


def test_dynamic_input_concatenates_or_weights_the_blocks():
    x = torch.randn(2, 12, 180)
    concat = build_model("sd_caff", 4, **SMALL, **DD)
    torch.testing.assert_close(concat._dynamic_input(x), x)
    weighted = build_model("sd_caff", 4, **SMALL, stream_deltas=1, dynamic_combine="weighted_sum")
    x = x[..., :120]
    torch.testing.assert_close(weighted._dynamic_input(x), 0.7 * x[..., :60] + 0.3 * x[..., 60:])


# --- the objective -------------------------------------------------------------------------------

def _outputs(batch=6, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {"logits": torch.randn(batch, classes, generator=g), "gender_logits": torch.randn(batch, 2, generator=g),
           "center_embedding": torch.randn(batch, classes, generator=g),
           "gender_center_embedding": torch.randn(batch, 2, generator=g)}
    labels = {"label": torch.arange(batch) % classes, "gender": torch.tensor([0, 1, 1, -1, 0, 1][:batch]),
              "index": torch.arange(batch)}
    return out, labels


def test_objective_without_auxiliary_parts_is_the_segment_loss():
    out, batch = _outputs()
    objective = SDCAFFObjective(SegmentLoss(), 4)
    assert not list(objective.parameters())
    torch.testing.assert_close(objective(out, batch), nn.functional.cross_entropy(out["logits"], batch["label"]))


def test_objective_is_the_joint_loss_of_equation_8():
    torch.manual_seed(0)
    out, batch = _outputs()
    objective = SDCAFFObjective(SegmentLoss(), 4, gender_weight=0.3, center_weight=0.15,
                                center_dims={"emotion": 4, "gender": 2})
    c_e, c_g = objective.centers["emotion"].centers, objective.centers["gender"].centers
    assert c_e.shape == (4, 4) and c_g.shape == (2, 2)
    ce = nn.functional.cross_entropy(out["logits"], batch["label"])
    center = ((out["center_embedding"] - c_e[batch["label"]]) ** 2).sum(1).mean()
    known = batch["gender"] >= 0                             # an utterance without utt2gen is skipped
    ce_g = nn.functional.cross_entropy(out["gender_logits"][known], batch["gender"][known])
    center_g = ((out["gender_center_embedding"][known] - c_g[batch["gender"][known]]) ** 2).sum(1).mean()
    expected = 0.7 * (ce + 0.15 * center) + 0.3 * (ce_g + 0.15 * center_g)
    torch.testing.assert_close(objective(out, batch), expected)


def test_center_learning_rate_scales_only_the_emotion_centers():
    out, batch = _outputs()
    objective = SDCAFFObjective(SegmentLoss(), 4, gender_weight=0.3, center_weight=0.15,
                                center_dims={"emotion": 4, "gender": 2})
    objective(out, batch).backward()
    before = {k: c.centers.grad.clone() for k, c in objective.centers.items()}
    objective.scale_center_gradients(0.1, 5e-4)
    torch.testing.assert_close(objective.centers["emotion"].centers.grad, before["emotion"] * 0.1 / (0.15 * 5e-4))
    torch.testing.assert_close(objective.centers["gender"].centers.grad, before["gender"])


def test_center_loss_clamps_and_ignores_unlabelled():
    loss = CenterLoss(2, 3)
    with torch.no_grad():
        loss.centers.copy_(torch.tensor([[0.0, 0, 0], [1.0, 1, 1]]))
    e = torch.tensor([[0.0, 0, 0], [1.0, 1, 2], [5.0, 5, 5]])
    assert loss(e, torch.tensor([0, 1, -1])).item() == pytest.approx((1e-12 + 1.0) / 2)


def test_overfits_a_small_batch_with_the_joint_loss():
    torch.manual_seed(0)
    model = build_model("sd_caff", 4, **SMALL)
    batch = batch_for(model, batch=8, frames=40)
    batch.update(label=torch.arange(8) % 4, gender=torch.arange(8) // 4, index=torch.arange(8))
    objective = model.objective(SegmentLoss(), {"gender_weight": 0.3, "center_weight": 0.15, "center_lr": None})
    opt = torch.optim.Adam(itertools.chain(model.parameters(), objective.parameters()), lr=3e-3)
    model.train()
    for _ in range(60):
        loss = objective(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    out = model(batch)
    assert (out["logits"].argmax(1) == batch["label"]).all()
    assert (out["gender_logits"].argmax(1) == batch["gender"]).all()

