"""MSFPN (spec shared/specs/msfpn.md): section 9 parameter counts, pyramid shapes, the multi-window CSA
against dense masked attention, every switch, batch and padding invariance, bad options."""
import pytest
import torch
from torch.nn import functional as F

from helpers import batch_for
from sertk.models import ModelConfigError, build_model
from sertk.models.msfpn import LevelFusion, pool_mask
from sertk.models import transformer
from sertk.models.transformer import banded_attention

SMALL = dict(input_dim=12, widths=[16, 16, 8], fc_hidden=8, lstm_hidden=4)


def count(module):
    return sum(p.numel() for p in module.parameters())


def small(**options):
    torch.manual_seed(0)
    return build_model("msfpn", 4, **{**SMALL, **options})


def test_default_parameter_counts_are_the_specs_section_9():
    model = build_model("msfpn", 4)
    csa = sum(count(block.csa) for group in model.groups for block in group)
    rows = {"convs + BN": count(model.groups) - csa, "CSA": csa, "fusion": count(model.fusions),
            "top-down": count(model.up), "BiLSTMs": count(model.lstms), "classifier": count(model.head)}
    spec = {"convs + BN": 46.24e6, "CSA": 16.55e6, "fusion": 0.34e6, "top-down": 1.31e6, "BiLSTMs": 2.23e6,
            "classifier": 0.10e6}
    for name, value in spec.items():
        assert abs(rows[name] - value) <= 0.005e6, (name, rows[name])
    assert count(model) == 66_772_999                       # spec: about 66.8 M
    no_out = build_model("msfpn", 4, csa_out_proj=False)
    assert sum(count(b.csa) for g in no_out.groups for b in g) == pytest.approx(12.41e6, abs=0.005e6)
    logmel = build_model("msfpn", 7, input_dim=80, input_projection=True)
    assert count(logmel) - count(build_model("msfpn", 7)) == 80 * 1024 + 1024   # the 1x1 projection only


@pytest.mark.parametrize("frames", [1, 2, 3, 7, 50, 249])
def test_levels_halve_the_frames_and_logits_come_out(frames):
    model = small().eval()
    batch = batch_for(model, batch=2, frames=frames)
    masks, fused = model._bottom_up(batch["ssl"].transpose(1, 2), batch["mask"])
    t2 = -(-frames // 2)
    assert [m.shape[1] for m in masks] == [f.shape[2] for f in fused] == [frames, t2, -(-t2 // 2)]
    assert [f.shape[1] for f in fused] == [16, 16, 8]
    tops = model._top_down(fused, masks)
    assert [t.shape for t in tops] == [f.shape for f in fused]
    assert model(batch)["logits"].shape == (2, 4)


@pytest.mark.parametrize("how,block", [("blocks", 1), ("blocks", 3), ("blocks", 7), ("blocks", 32),
                                       ("offsets", None)])
def test_multi_window_attention_is_dense_attention_under_a_band_mask(how, block, monkeypatch):
    """Blocks of 1, 3 and 7 queries split 20 frames unevenly (the last block padded) and are narrower than
    the widest window; 32 holds them all."""
    monkeypatch.setattr(transformer, "BANDED_ATTENTION", how)
    torch.manual_seed(0)
    B, H, N, d = 2, 4, 20, 3
    q, k, v = (torch.randn(B, H, N, d, dtype=torch.float64, requires_grad=True) for _ in range(3))
    valid = torch.ones(B, N, dtype=torch.bool)
    valid[1, 13:] = False
    radius = torch.tensor([1, 3, 5, 7])
    out = banded_attention(q, k, v, valid, radius, **({"block": block} if block else {}))
    pos = torch.arange(N)
    band = (pos[:, None] - pos[None, :]).abs()[None] <= radius[:, None, None]       # [H, N, N]
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=band[None] & valid[:, None, None, :])
    torch.testing.assert_close(out[0], dense[0])
    torch.testing.assert_close(out[1, :, :13], dense[1, :, :13])                  # valid queries
    # and the gradients of what the valid queries give
    weight = torch.randn(B, H, N, d, dtype=torch.float64) * valid[:, None, :, None]
    grads = torch.autograd.grad((out * weight).sum(), (q, k, v))
    dense_grads = torch.autograd.grad((dense * weight).sum(), (q, k, v))
    for got, expected in zip(grads, dense_grads):
        torch.testing.assert_close(got, expected)


def test_masks_and_level_fusion():
    valid = torch.tensor([[True] * 5 + [False] * 3])
    assert pool_mask(valid).tolist() == [[True, True, True, False]]
    fusion = LevelFusion(4, 2, per_utterance=True)
    groups = [torch.randn(1, 4, 6) for _ in range(3)]
    mask = torch.ones(1, 6, dtype=torch.bool)
    out = fusion(groups, mask)
    f = torch.stack(groups, 1).transpose(2, 3)
    s = fusion.score(f).mean(2, keepdim=True)                    # one weight per group per utterance
    torch.testing.assert_close(out, (torch.softmax(s, 1) * f).sum(1).transpose(1, 2))


SWITCHES = [dict(forward_fusion="pre_add"), dict(forward_fusion="none"), dict(backward_fusion="attn_utt"),
            dict(backward_fusion="mean", topdown=False), dict(backward_fusion="none"), dict(lstm_inputs="G"),
            dict(rep_merge="sum"), dict(lstm_on_input=True), dict(use_csa=False), dict(csa_out_proj=False),
            dict(kernel_widths=[3]), dict(kernel_widths=[3, 3, 3]), dict(downsample_levels=[]),
            dict(downsample_levels=[3]), dict(input_projection=True), dict(csa_windows=[5], csa_heads_per_window=8)]


@pytest.mark.parametrize("options", SWITCHES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_every_switch_runs_and_is_batch_and_padding_invariant(options):
    model = small(**options)
    batch = batch_for(model, batch=3, frames=23, valid=[23, 9, 14])
    model.train()
    model(batch)["logits"].sum().backward()
    assert all(p.grad is not None for p in model.parameters())   # nothing built that the switch leaves unused
    model.eval()
    together = model(batch)["logits"]
    for i, n in enumerate([23, 9, 14]):
        alone = model({"ssl": batch["ssl"][i:i + 1, :n], "mask": batch["mask"][i:i + 1, :n]})["logits"]
        torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=1e-5)


def test_forward_fusion_wiring():
    """With forward_fusion none and G = the last group only, group X cannot reach the logits; with the
    default same-level addition it does (z_i = BZ_i(z_{i-1}) + y_i, y_i = BY_i(y_{i-1}) + x_i)."""
    for fusion, reaches in (("none", False), ("post_add", True), ("pre_add", True)):
        model = small(forward_fusion=fusion, backward_fusion="none", topdown=False).eval()
        batch = batch_for(model, batch=2, frames=11)
        before = model(batch)["logits"]
        with torch.no_grad():
            for p in model.groups[0].parameters():
                p.add_(0.5)
        changed = not torch.allclose(before, model(batch)["logits"])
        assert changed == reaches, fusion


def test_negative_inputs_and_downsampling_ignore_padding():
    """The max-pool never lets a padded zero win over negative values (pre_add feeds sums to the pool)."""
    model = small(input_projection=True, forward_fusion="pre_add").eval()
    batch = batch_for(model, batch=2, frames=9, valid=[9, 5])
    with torch.no_grad():
        batch["ssl"] = -batch["ssl"].abs() * batch["mask"][..., None]
        together = model(batch)["logits"]
        alone = model({"ssl": batch["ssl"][1:, :5], "mask": batch["mask"][1:, :5]})["logits"]
    torch.testing.assert_close(alone[0], together[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options, message", [
    (dict(forward_fusion="sideways"), "forward_fusion must be one of post_add, pre_add, none"),
    (dict(backward_fusion="max"), "backward_fusion must be one of"),
    (dict(lstm_inputs="E"), "lstm_inputs must be one of P, G"),
    (dict(rep_merge="max"), "rep_merge must be one of concat, sum"),
    (dict(kernel_widths=[4]), "must be odd"),
    (dict(csa_windows=[3, 6]), "must be odd"),
    (dict(downsample_levels=[1]), r"downsample_levels \[1\] must be levels 2..3"),
    (dict(widths=[12, 16, 8]), r"must divide into 8 CSA heads"),
    (dict(widths=[]), "need at least one value"),
    (dict(conv_dropout=1.0), r"conv_dropout must be in \[0, 1\)"),
    (dict(lstm_hidden=0), "lstm_hidden must be >= 1"),
    (dict(fusion_ratio=32), "leaves no attention width"),
])
def test_bad_options_are_named(options, message):
    with pytest.raises(ModelConfigError, match=message):
        small(**options)


def test_wrong_input_width_is_named():
    model = small()
    with pytest.raises(ModelConfigError, match="msfpn expects 12 dims per frame of 'ssl', got 5; set model.input_dim"):
        model({"ssl": torch.zeros(1, 4, 5), "mask": torch.ones(1, 4, dtype=torch.bool)})
