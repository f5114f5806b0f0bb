"""ESERNet (sertk/models/esernet.py) against its spec (shared/specs/esernet.md): parameter counts of
section 9, the shapes of 3.2 and 3.5, the attention of Eqs. 6-8 written out, frame masking (3.1),
every switch, and batch / padding invariance of the variants."""
import math

import pytest
import torch

from helpers import batch_for
from sertk.models import ModelConfigError, build_model
from sertk.models.esernet import CombinedBlock, HierarchicalLayer, RelationshipPathway, merge_bins, word_assignment
from sertk.models.esernet_cue import sample_frame_mask
from sertk.models.transformer import PostNormLayer


def _count(module):
    return sum(p.numel() for p in module.parameters())


def _model(num_classes=4, **cfg):
    torch.manual_seed(0)
    return build_model("esernet", num_classes, **cfg)


def _batch(model, frames=120, valid=None, batch=3, seed=0):
    return batch_for(model, batch=batch, frames=frames, valid=valid, seed=seed)


# --- spec section 9 ---------------------------------------------------------------------------------

def test_parameter_counts_are_the_specs_section_9():
    model = _model()
    assert _count(PostNormLayer(128, 8, 512, 0.1, 0.1)) == 198_272          # one post-LN layer
    path = model.path
    assert _count(path) == 12 * 198_272 + 3 * (128 * 128 + 128 + 256) + 10 * 128 + 256 == 2_431_104   # ≈ 2.43 M
    assert _count(model.cue) == 256 + 4 * 198_272 + 128 * 128 + 128 == 809_856                          # ≈ 0.81 M
    assert _count(model.classifier) == 256 * 128 + 128 + 128 * 4 + 4                                    # ≈ 0.03 M
    assert _count(model) == 3_274_372                                        # ≈ 3.3 M (spec 9), 0.8 % off
    assert abs(_count(model) - 3.3e6) / 3.3e6 < 0.10
    assert _count(_model(7)) == 3_274_372 + 3 * 129                          # EmoDB's 7 classes


def test_the_wide_preset_is_the_specs_9_4_million():
    model = _model(widths=[128, 256, 256, 256])
    assert abs(_count(model.path) - 8.5e6) / 8.5e6 < 0.05                   # spec: relationship ≈ 8.5 M
    assert abs(_count(model) - 9.4e6) / 9.4e6 < 0.05                        # total ≈ 9.4 M


# --- shapes (3.2, 3.5) ------------------------------------------------------------------------------

def test_the_hierarchy_of_3_5():
    model = _model()
    path = model.path
    shapes = []
    for merge in path.merges:
        merge.register_forward_hook(lambda m, i, out: shapes.append(tuple(out[0].shape)))
    model.eval()
    model(_batch(model, frames=800))
    assert shapes == [(3, 160, 128), (3, 32, 128), (3, 10, 128)]           # 50, 250, 800 ms tokens
    assert path.n_words == 10 and tuple(path.words.shape) == (10, 128)
    assert [len(s) for s in path.steps] == [2, 2, 4] and len(path.utterance) == 4
    assert [s[0].window for s in path.steps] == [5, 9, 9]


@pytest.mark.parametrize("frames", [1, 7, 50, 333, 800])
def test_logits_for_any_length_up_to_max_frames(frames):
    model = _model(7)
    model.eval()
    assert model(_batch(model, frames=frames))["logits"].shape == (3, 7)


def test_longer_than_max_frames_is_refused():
    model = _model(max_frames=100)
    with pytest.raises(ModelConfigError, match="at most model.max_frames = 100 frames, got 120"):
        model(_batch(model, frames=120))


def test_merge_bins_are_windows_or_adaptive_bins():
    assert merge_bins(800, 5.0)[:2] == [(0, 5), (5, 10)] and len(merge_bins(800, 5.0)) == 160
    adaptive = merge_bins(32, 800 / 250)                                    # 3.2 tokens: 10 bins, not 10 of 3
    assert len(adaptive) == 10 and adaptive[0] == (0, 4) and adaptive[-1] == (28, 32)
    assert all(b[0] < b[1] for b in adaptive) and {t for s, e in adaptive for t in range(s, e)} == set(range(32))
    assert merge_bins(32, 1000 / 250) == [(s, s + 4) for s in range(0, 32, 4)]    # SpeechFormer++'s 1000 ms: 4


def test_word_assignment_segment_and_proportional():
    assert word_assignment(800, 10, "segment").tolist() == [j // 80 for j in range(800)]
    seg = word_assignment(32, 10, "segment")                                # L = ceil(32 / 10) = 4: words 8, 9 empty
    assert seg.tolist() == [j // 4 for j in range(32)]
    prop = word_assignment(32, 10, "proportional")                          # z(j) = ceil(j 10 / 32), 1-based
    assert prop.tolist() == [math.ceil(j * 10 / 32) - 1 for j in range(1, 33)]
    assert set(prop.tolist()) == set(range(10))


def test_a_combined_block_averages_valid_tokens_only():
    block = CombinedBlock(merge_bins(10, 5.0), 10, 4, 4)
    x = torch.randn(1, 10, 4)
    valid = torch.tensor([[True] * 7 + [False] * 3])
    pooled, pooled_valid, _ = block(x, valid, torch.zeros(1, 2, 4))
    expected = block.norm(block.proj(torch.stack([x[0, :5].mean(0), x[0, 5:7].mean(0)])))
    torch.testing.assert_close(pooled[0], expected)
    assert pooled_valid.tolist() == [[True, True]]


# --- Eqs. 6-8, written out ---------------------------------------------------------------------------

def _reference_layer(layer, x, valid, words, assign, split):
    """The word and object encoders token by token (spec 3.2 pseudocode), one head at a time."""
    q, k, v = (t[0] for t in layer.attn.heads_of(x))            # [H, N, d]
    qw, kw, vw = (t[0] for t in layer.attn.heads_of(words))
    heads, n, d = q.shape
    n_words = words.shape[1]
    r = layer.window // 2
    word_out = torch.zeros(heads, n_words, d)
    frame_out = torch.zeros(heads, n, d)
    for h in range(heads):
        for j in range(n_words):
            members = [i for i in range(n) if assign[i] == j and valid[0, i]]
            keys = torch.stack([kw[h, j]] + [k[h, i] for i in members])
            values = torch.stack([vw[h, j]] + [v[h, i] for i in members])
            word_out[h, j] = torch.softmax(keys @ qw[h, j] / math.sqrt(d), 0) @ values
        for i in range(n):
            if not valid[0, i]:
                continue
            window = [t for t in range(i - r, i + r + 1) if 0 <= t < n and valid[0, t]]
            own = word_out[h, assign[i]]
            s_word = own @ q[h, i] / math.sqrt(d)
            s_win = torch.stack([k[h, t] @ q[h, i] for t in window]) / math.sqrt(d)
            if split:   # the word weight normalised over the valid frames of the word's segment
                segment = [t for t in range(n) if assign[t] == assign[i] and valid[0, t]]
                seg_scores = torch.stack([word_out[h, assign[i]] @ q[h, t] for t in segment]) / math.sqrt(d)
                a_word = torch.exp(s_word - torch.logsumexp(seg_scores, 0))
                a_win = torch.softmax(s_win, 0)
            else:
                a = torch.softmax(torch.cat([s_word[None], s_win]), 0)
                a_word, a_win = a[0], a[1:]
            frame_out[h, i] = a_word * own + a_win @ torch.stack([v[h, t] for t in window])
    return layer.attn.merge(frame_out[None]), layer.attn.merge(word_out[None])


@pytest.mark.parametrize("split", [False, True])
def test_hierarchical_layer_computes_eqs_6_to_8(split):
    torch.manual_seed(1)
    layer = HierarchicalLayer(8, 2, 16, 0.0, 0.0, window=3, split_softmax=split).eval()
    n, n_words = 11, 3
    x, words = torch.randn(1, n, 8), torch.randn(1, n_words, 8)
    valid = torch.tensor([[True] * 9 + [False] * 2])
    assign = word_assignment(n, n_words, "segment")
    frames, words_out = layer.attend(x, valid, words, assign)
    ref_frames, ref_words = _reference_layer(layer, x, valid, words, assign, split)
    torch.testing.assert_close(words_out, ref_words, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(frames[:, :9], ref_frames[:, :9], atol=1e-5, rtol=1e-5)


# --- frame masking (3.1) ----------------------------------------------------------------------------

def test_frame_masks_hide_about_alpha_in_spans_never_padding():
    torch.manual_seed(0)
    valid = torch.zeros(200, 800, dtype=torch.bool)
    lengths = torch.randint(100, 801, (200,))
    for i, n in enumerate(lengths.tolist()):
        valid[i, :n] = True
    hidden = sample_frame_mask(valid, 0.15, 7)
    assert not (hidden & ~valid).any()
    rate = hidden.sum(1).float() / lengths
    assert 0.10 < rate.mean() < 0.16                                       # overlapping spans hide a little less
    starts = hidden[:, 1:] & ~hidden[:, :-1]
    runs = hidden.sum() / (starts.sum() + hidden[:, 0].sum())
    assert runs >= 7                                                        # spans of 7 frames (merged when they touch)
    short = torch.tensor([[True, True, False], [True, False, False]])
    tiny = sample_frame_mask(short, 0.15, 7)
    assert tiny[0].sum() == 1 and tiny[1].sum() == 0                       # never every frame of an utterance


def test_masking_runs_in_training_only_and_feeds_the_mse():
    model = _model()
    batch = _batch(model, valid=[120, 60, 30])
    model.train()
    out = model(batch)
    assert out["reconstruction"].shape == (3, 120, 128) and out["reconstruction_mask"].any()
    assert not (out["reconstruction_mask"] & ~batch["mask"]).any()
    torch.testing.assert_close(out["reconstruction_target"], batch["logmel"])
    model.eval()
    assert set(model(batch)) == {"logits"}


def test_hidden_frames_are_replaced_by_the_mask_embedding():
    model = _model(dropout=0.0, attn_dropout=0.0)
    model.train()                                                           # masking on; no dropout to differ
    batch = _batch(model, valid=[120, 120, 120])
    torch.manual_seed(5)
    first = model.cue(batch["logmel"], batch["mask"])
    noisy = batch["logmel"].clone()
    noisy[first["reconstruction_mask"]] = 50.0                             # change only what was hidden
    torch.manual_seed(5)
    again = model.cue(noisy, batch["mask"])
    assert torch.equal(first["reconstruction_mask"], again["reconstruction_mask"])
    torch.testing.assert_close(again["cue"], first["cue"])
    torch.testing.assert_close(again["reconstruction"], first["reconstruction"])


# --- switches -----------------------------------------------------------------------------------------

SWITCHES = [
    {}, {"fusion": "shared_stem"}, {"fusion": "none"}, {"cue_pathway": False}, {"backbone": "standard"},
    {"backbone": "standard", "fusion": "shared_stem"}, {"word_softmax": "split"}, {"word_assignment": "proportional"},
    {"cue_residual": False}, {"cue_key_mask": False}, {"cue_positions": False}, {"widths": [128, 256, 256, 256]},
    {"merge_ms": [50.0, 250.0, 1000.0]}, {"ffn_ratio": 0.5}, {"word_tokens": 4},
]


@pytest.mark.parametrize("switch", SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "default")
def test_every_switch_trains_forward_and_backward(switch):
    model = _model(5, **switch)
    model.train()
    batch = _batch(model, frames=160, valid=[160, 90, 41])
    out = model(batch)
    loss = torch.nn.functional.cross_entropy(out["logits"], torch.tensor([0, 1, 2]))
    if "reconstruction" in out:
        loss = loss + (out["reconstruction"] - out["reconstruction_target"]).square().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_shared_stem_trains_step_one_through_the_reconstruction():
    model = _model(fusion="shared_stem")
    assert _count(model.cue) == 256 + 2 * 198_272 + 128 * 128 + 128       # 2 own layers after Step I's 2
    model.train()
    out = model(_batch(model))
    (out["reconstruction"] - out["reconstruction_target"]).square().mean().backward()
    assert model.path.steps[0][0].attn.qkv.weight.grad.abs().sum() > 0
    assert model.path.utterance[0].attn.qkv.weight.grad is None           # only the stem is shared


@pytest.mark.parametrize("switch", [{"word_softmax": "split"}, {"word_assignment": "proportional"},
                                    {"fusion": "shared_stem"}, {"backbone": "standard"},
                                    {"merge_ms": [50.0, 250.0, 1000.0]}], ids=str)
def test_variants_do_not_depend_on_batch_or_padding(switch):
    model = _model(5, **switch)
    model.eval()
    batch = _batch(model, frames=300, valid=[300, 161, 37, 5], batch=4)
    together = model(batch)["logits"]
    for i in range(4):
        n = int(batch["mask"][i].sum())
        alone = model({k: v[i:i + 1, :n] if v.dim() > 1 else v[i:i + 1] for k, v in batch.items()})["logits"]
        torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=1e-5)
    padded = {k: torch.nn.functional.pad(v, (0, 0, 0, 200)) if k == "logmel" else v for k, v in batch.items()}
    padded["mask"] = torch.nn.functional.pad(batch["mask"], (0, 200))
    torch.testing.assert_close(model(padded)["logits"], together, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("options, message", [
    ({"fusion": "sum"}, "fusion must be one of late_concat, shared_stem, none"),
    ({"windows": [5, 9]}, r"windows needs one value per step \(3"),
    ({"windows": [4, 9, 9]}, "windows odd"),
    ({"widths": [128, 128, 128]}, "widths needs 4 values"),
    ({"heads": 7}, r"divide into 7 heads"),
    ({"merge_ms": [50.0, 40.0, 800.0]}, "must grow"),
    ({"mask_rate": 1.0}, r"mask_rate must be in \[0, 1\)"),
    ({"fusion": "shared_stem", "cue_depth": 1}, "cue_depth must be >= 2"),
    ({"fusion": "shared_stem", "cue_pathway": False}, "needs cue_pathway true"),
    ({"cue_heads": 3}, "cue_heads 3"),
])
def test_bad_options_are_named(options, message):
    with pytest.raises(ModelConfigError, match=message):
        _model(**options)


def test_relationship_pathway_keeps_positions_on_the_max_frames_grid():
    # the bins and word segments of a 120-frame input are those of the 800-frame grid, not of 120
    path = RelationshipPathway(_model().cfg)
    assert path.assign0[:120].tolist() == [j // 80 for j in range(120)]
    assert path.merges[2].member.shape == (10, 32)


# --- esernet_swin (spec 3.6, not the paper's method) ------------------------------------------------

SWIN_SMALL = dict(image_size=32, patch_size=2, embed_dim=16, swin_depths=[2, 2], swin_heads=[2, 4], window_size=4)


def test_swin_variant_is_swin_t_plus_the_cue_pathway():
    torch.manual_seed(0)
    model = build_model("esernet_swin", 4)
    assert _count(model.swin) == 27_519_354                         # timm's swin_tiny_patch4_window7_224, no head
    assert _count(model.cue) == 809_856                             # the same cue pathway as esernet
    assert _count(model.classifier) == (768 + 128) * 128 + 128 + 128 * 4 + 4
    assert _count(model) == 28_444_542


def test_swin_images_are_each_utterances_valid_frames_only():
    from sertk.models.esernet_swin import spectrogram_images
    torch.manual_seed(0)
    x = torch.randn(2, 50, 8)
    valid = torch.zeros(2, 50, dtype=torch.bool)
    valid[0, :30], valid[1] = True, True
    images = spectrogram_images(x, valid, 16, 3)
    assert images.shape == (2, 3, 16, 16)
    noisy = x.clone()
    noisy[0, 30:] = 1e3                                             # padding never reaches the image
    torch.testing.assert_close(spectrogram_images(noisy, valid, 16, 3), images)
    alone = spectrogram_images(x[:1, :30], valid[:1, :30], 16, 3)   # nor does the batch's longest length
    torch.testing.assert_close(alone[0], images[0])
    # mel bins run up the image's rows, frames across its columns
    ramp = torch.arange(8.0).expand(1, 16, 8)
    image = spectrogram_images(ramp, torch.ones(1, 16, dtype=torch.bool), 8, 1)[0, 0]
    torch.testing.assert_close(image[:, 0], torch.arange(8.0))
    torch.testing.assert_close(image[0], torch.zeros(8))


@pytest.mark.parametrize("options", [dict(fusion="none"), dict(cue_pathway=False)])
def test_swin_switches_train_forward_and_backward(options):
    torch.manual_seed(0)
    model = build_model("esernet_swin", 4, **SWIN_SMALL, **options)
    model.train()
    out = model(_batch(model, frames=60, valid=[60, 41, 7]))
    assert out["logits"].shape == (3, 4)
    out["logits"].sum().backward()
    assert all(p.grad is not None for p in model.swin.parameters())


@pytest.mark.parametrize("options, message", [
    (dict(window_size=5), "esernet_swin: "),
    (dict(fusion="shared_stem"), "fusion"),
    (dict(swin_depths=[2, 2], swin_heads=[3]), "esernet_swin: "),
])
def test_bad_swin_options_are_named(options, message):
    with pytest.raises(ModelConfigError, match=message):
        build_model("esernet_swin", 4, **{**SWIN_SMALL, **options})
