"""STRL-SER against its spec (shared/specs/strl_ser.md): parameter counts (section 9), CNN shapes (3.1),
the attention pooling (Eqs. 6-7) and fusion (Eqs. 17-21) written out, switches, padding invariance and
bad options."""
import math

import pytest
import torch
from torch import nn

from helpers import batch_for
from sertk.models import ModelConfigError, build_model
from sertk.models import strl_ser
from sertk.models.strl_ser import CHOICES, STRLSERConfig

IEMOCAP, RAVDESS = {}, {"time_kernel": 3}


def count(*modules):
    return sum(p.numel() for m in modules for p in m.parameters())


def segments(model, batch=2, frames=59, valid=None, seed=0):
    """A batch of 59-frame segments; the functionals stream is one row per segment ([B, 1582])."""
    out = batch_for(model, batch=batch, frames=frames, valid=valid, seed=seed)
    assert out[model.cfg.hsf_stream].shape == (batch, 1582)
    return out


def randomize_bn(model, seed=0):
    """Non-trivial eval-mode batch-norm (so a padded column left non-zero after a BN would show)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t, lo, hi in ((m.running_mean, -0.5, 0.5), (m.running_var, 0.5, 2.0),
                              (m.weight.data, 0.5, 1.5), (m.bias.data, -0.5, 0.5)):
                t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)
    return model.eval()


# --- section 9: parameter counts ----------------------------------------------------------------

@pytest.mark.parametrize("classes, options, parallel, classifier, total", [
    (4, IEMOCAP, 288, 1_028, 981_892),
    (8, RAVDESS, 256, 2_056, 982_888),
])
def test_parameter_counts_are_the_specs_section_9(classes, options, parallel, classifier, total):
    model = build_model("strl_ser", classes, **options)
    sp = model.spatial
    counts = {"parallel": count(sp.freq_conv, sp.time_conv), "blocks": count(sp.blocks),
              "attention": count(sp.attention), "projection": count(model.spatial_proj),
              "bilstm": count(model.bilstm), "utterance": count(model.utterance), "mha": count(model.fusion),
              "classifier": count(model.classifier), "total": count(model)}
    assert counts == {"parallel": parallel, "blocks": 55_728, "attention": 432, "projection": 110_848,
                      "bilstm": 210_944, "utterance": 405_248, "mha": 197_376, "classifier": classifier,
                      "total": total}
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")   # nothing else


@pytest.mark.parametrize("heads, total", [(1, 808_292), (2, 833_092), (4, 882_692), (8, 981_892),
                                          (16, 1_180_292), (32, 1_577_092)])
def test_parameter_count_grows_with_the_heads(heads, total):
    assert count(build_model("strl_ser", 4, heads=heads)) == total


# --- section 3.1 shapes and the output ----------------------------------------------------------

@pytest.mark.parametrize("frames, options, expected", [
    (59, IEMOCAP, [(48, 38, 29), (48, 19, 14), (48, 9, 7)]),
    (40, RAVDESS, [(48, 38, 20), (48, 19, 10), (48, 9, 5)]),
])
def test_cnn_shapes_are_section_3_1(frames, options, expected):
    model = build_model("strl_ser", 4, **options).eval()
    shapes = []
    hooks = [b.register_forward_hook(lambda m, i, o: shapes.append(tuple(o[0].shape[1:])))
             for b in model.spatial.blocks]
    x = model.spatial(torch.randn(2, frames, 76), torch.full((2,), frames))
    for h in hooks:
        h.remove()
    assert shapes == expected and x.shape == (2, 432)


@pytest.mark.parametrize("frames", [1, 7, 40, 59, 100])
def test_logits_shape_for_several_segment_lengths(frames):
    model = build_model("strl_ser", 5).eval()
    assert model.streams == ("is10_lld", "is10_func")
    assert model.stream_dims == {"is10_lld": 76, "is10_func": 1582} and model.fixed_frames is None
    batch = segments(model, batch=3, frames=frames)
    assert batch["is10_lld"].shape == (3, frames, 76) and batch["is10_func"].shape == (3, 1582)
    assert batch["mask"].dtype == torch.bool and batch["mask"].shape == (3, frames)
    logits = model(batch)["logits"]
    assert logits.shape == (3, 5) and torch.isfinite(logits).all()


# --- switches -----------------------------------------------------------------------------------

def _switch_settings():
    defaults = STRLSERConfig()
    for name, values in CHOICES.items():
        for value in values:
            if value != getattr(defaults, name) and name != "pool":
                yield {name: value}
    for fusion in CHOICES["fusion"]:
        yield {"pool": "flatten", "frames": 40, "fusion": fusion}
    yield {"parallel_bn_relu": False}
    yield {"lstm_layers": 2}
    yield {"heads": 1}
    yield {"heads": 16}
    yield {"freq_kernel": 3, "time_kernel": 3}


@pytest.mark.parametrize("options", list(_switch_settings()), ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_every_switch_builds_and_runs_forward_and_backward(options):
    torch.manual_seed(0)
    model = build_model("strl_ser", 4, **options)
    assert model.fixed_frames == (40 if options.get("pool") == "flatten" else None)
    out = model(segments(model, batch=3, frames=40, valid=[40, 23, 40]))
    assert out["logits"].shape == (3, 4)
    out["logits"].square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())


# --- padding and batch independence (8.15) ------------------------------------------------------

@pytest.mark.parametrize("tokens", CHOICES["cnn_att_tokens"])
@pytest.mark.parametrize("fusion", CHOICES["fusion"])
def test_posteriors_do_not_depend_on_padding_or_batch(fusion, tokens):
    torch.manual_seed(0)
    model = randomize_bn(build_model("strl_ser", 4, fusion=fusion, cnn_att_tokens=tokens))
    padded = segments(model, batch=3, frames=59, valid=[59, 37, 50], seed=1)
    alone = {k: v[1:2, :37] if v.dim() > 1 and k != "is10_func" else v[1:2] for k, v in padded.items()}
    full = segments(model, batch=5, frames=59, seed=2)
    with torch.no_grad():
        pairs = [(model(padded)["logits"][1:2], model(alone)["logits"]),
                 (model(full)["logits"][3:4], model({k: v[3:4] for k, v in full.items()})["logits"])]
    for batched, single in pairs:
        torch.testing.assert_close(batched.softmax(-1), single.softmax(-1), atol=1e-5, rtol=0)
        # logits too: at initialisation the posteriors are near uniform and would hide small differences
        torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


# --- training -----------------------------------------------------------------------------------

def test_overfits_a_small_batch():
    torch.manual_seed(0)
    model = build_model("strl_ser", 4)
    batch = segments(model, batch=8, frames=20, seed=3)
    labels = torch.arange(8) % 4
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(60):
        loss = nn.functional.cross_entropy(model(batch)["logits"], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > 1.0                                            # about log 4 at the start
    model.eval()
    with torch.no_grad():
        logits = model(batch)["logits"]
    assert (logits.argmax(1) == labels).all()
    assert nn.functional.cross_entropy(logits, labels).item() < 0.05


# --- bad options --------------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({"fusion": "concat"}, "fusion must be one of sequence, broadcast, feature_dim"),
    ({"time_kernel": 4}, "time_kernel must be odd"),
    ({"freq_kernel": 6}, "freq_kernel must be odd"),
    ({"pool": "flatten"}, "pool flatten needs model.frames"),
    ({"utt_dim": 128}, "utt_dim must be 2 x lstm_hidden = 256"),
    ({"cnn_att_tokens": "channel"}, "cnn_att_tokens must be one of"),
])
def test_bad_options_are_named(options, message):
    with pytest.raises(ModelConfigError, match=message):
        build_model("strl_ser", 4, **options)


def test_streams_of_the_wrong_width_are_an_error():
    model = build_model("strl_ser", 4).eval()
    batch = segments(model, batch=2, frames=20)
    for stream, width in (("is10_lld", 75), ("is10_func", 1581)):
        bad = dict(batch, **{stream: batch[stream][..., :width]})
        with pytest.raises(ModelConfigError, match="streams have"):
            model(bad)
    framewise = dict(batch, is10_func=batch["is10_func"][:, None].expand(-1, 20, -1))
    with pytest.raises(ModelConfigError, match=r"is10_func as \[B, 1582\] \(one row per segment\)"):
        model(framewise)
    flatten = build_model("strl_ser", 4, pool="flatten", frames=40).eval()
    with pytest.raises(ModelConfigError, match="built for 40-frame segments, got 20"):
        flatten(batch)


# --- Eqs. 6-7 and 17-21 written out -------------------------------------------------------------

def _spatial_tokens(model, lld, lengths):
    """X' of the last block as time tokens [B, T3, 432], and X~ from the branch."""
    captured = []
    hook = model.spatial.blocks[-1].register_forward_hook(lambda m, i, o: captured.append(o[0]))
    x_tilde = model.spatial(lld, lengths)
    hook.remove()
    x = captured[0]
    b, c, f, t = x.shape
    return x.permute(0, 3, 1, 2).reshape(b, t, c * f), x_tilde


def test_attention_pooling_is_equations_6_and_7(monkeypatch):
    torch.manual_seed(0)
    model = randomize_bn(build_model("strl_ser", 4))
    alphas = []
    real = strl_ser.masked_softmax
    monkeypatch.setattr(strl_ser, "masked_softmax", lambda *a, **k: alphas.append(real(*a, **k)) or alphas[-1])
    lld = torch.randn(2, 59, 76)
    tokens, x_tilde = _spatial_tokens(model, lld, torch.tensor([59, 59]))
    w = model.spatial.attention.weight.squeeze(0)                     # w in R^432
    alpha = torch.softmax(tokens @ w, dim=1)                          # Eq. 6, over the 7 time columns
    assert tokens.shape == (2, 7, 432)
    torch.testing.assert_close(alphas[-1], alpha)
    torch.testing.assert_close(x_tilde, (alpha[..., None] * tokens).sum(1))   # Eq. 7
    # 30 valid frames leave 15 -> 7 -> 3 valid columns: the other 4 get no weight
    tokens, x_tilde = _spatial_tokens(model, lld, torch.tensor([59, 30]))
    a = alphas[-1]
    assert (a[1, 3:] == 0).all() and (a[0] > 0).all()
    torch.testing.assert_close(a[1, :3], torch.softmax(tokens[1, :3] @ w, dim=0))
    torch.testing.assert_close(x_tilde[1], a[1, :3] @ tokens[1, :3])


def test_fusion_is_equations_17_to_21():
    torch.manual_seed(0)
    model = randomize_bn(build_model("strl_ser", 4))
    batch = segments(model, batch=2, frames=59, seed=4)
    lld, hsf = batch["is10_lld"], batch["is10_func"]
    with torch.no_grad():
        x_tilde = model.spatial(lld, torch.tensor([59, 59]))
        h, _ = model.bilstm(lld)                                      # full segments: no packing needed
        s = torch.cat([model.spatial_proj(x_tilde)[:, None], h, model.utterance(hsf)[:, None]], 1)   # [B, 61, 256]
        s_t, f = s.transpose(1, 2), model.fusion
        heads = []
        for i in range(8):
            part = slice(32 * i, 32 * (i + 1))
            q, k, v = (nn.functional.conv1d(s_t, p.weight[part], p.bias[part]) for p in (f.q, f.k, f.v))   # [B, 32, L]
            a = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(32), dim=-1)   # [B, L, L]
            heads.append(a @ v.transpose(1, 2))                                # O_i [B, L, 32]
        o_hat = torch.cat(heads, -1)                                           # Eq. 21
        assert o_hat.shape == (2, 61, 256)
        torch.testing.assert_close(f(s, None), o_hat, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model(batch)["logits"], model.classifier(o_hat.mean(1)), atol=1e-5, rtol=1e-4)
