"""Swin Transformer backbone (sertk/models/swin.py): the Swin-T parameter count against timm's,
shapes, the shifted-window attention against a token-by-token reference, batch invariance,
gradients, a small overfitting run, and the configuration errors."""
import pytest
import torch
from torch import nn

from sertk.models.swin import (SwinBackbone, SwinBlock, SwinConfig, relative_position_index,
                               shifted_window_mask)

SMALL = dict(img_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def analytic_count(cfg: SwinConfig) -> int:
    """Parameters of the architecture, layer by layer."""
    ln = lambda c: 2 * c                                                       # noqa: E731
    total = cfg.in_chans * cfg.embed_dim * cfg.patch_size ** 2 + cfg.embed_dim + ln(cfg.embed_dim)  # conv + LN
    res, c = cfg.img_size // cfg.patch_size, cfg.embed_dim
    for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
        m, hidden = min(res, cfg.window_size), int(c * cfg.mlp_ratio)
        block = (ln(c) + (c * 3 * c + 3 * c) + (c * c + c) + (2 * m - 1) ** 2 * heads   # LN, qkv, proj, bias table
                 + ln(c) + (c * hidden + hidden) + (hidden * c + c))                     # LN, MLP
        total += depth * block
        if i < len(cfg.depths) - 1:
            total += ln(4 * c) + 4 * c * 2 * c                                    # patch merging, no bias
            res, c = res // 2, 2 * c
    return total + ln(c)                                                          # final LN


@pytest.fixture(scope="module")
def swin_t():
    torch.manual_seed(0)
    return SwinBackbone(SwinConfig())


def test_swin_t_parameter_count_matches_timm(swin_t):
    # timm's swin_tiny_patch4_window7_224 has 28,288,354 parameters, of which its head is
    # Linear(768, 1000): 768 * 1000 + 1000 = 769,000. The analytic count agrees with the rest, which
    # pins two details: patch merging's Linear(4C, 2C) has no bias (with one, +1,344), and the last
    # stage (7x7 tokens = one 7x7 window, no shift) keeps its 13^2 x 24 relative position bias table.
    assert 28_288_354 - (768 * 1000 + 1000) == 27_519_354
    assert analytic_count(SwinConfig()) == 27_519_354
    assert count(swin_t) == 27_519_354
    assert swin_t.num_features == 768


def test_swin_t_layout(swin_t):
    blocks = [b for stage in swin_t.layers for b in stage.blocks]
    assert [b.shift for b in blocks] == [0, 3] * 5 + [0, 0]      # last stage: 7x7 = one window, no shift
    assert all(b.window_size == 7 for b in blocks)
    assert [b.resolution for b in blocks] == [56] * 2 + [28] * 2 + [14] * 6 + [7] * 2
    rates = [b.drop_path.p for b in blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)
    assert all(b > a for a, b in zip(rates, rates[1:]))                             # linear, increasing
    assert rates[1] - rates[0] == pytest.approx(0.2 / 11)


def test_swin_t_output_shape(swin_t):
    swin_t.eval()
    with torch.no_grad():
        out = swin_t(torch.randn(1, 3, 224, 224))      # the only 224x224 forward pass
    assert out.shape == (1, 768) and torch.isfinite(out).all()


def test_small_output_shape():
    model = SwinBackbone(SwinConfig(**SMALL))
    assert model.num_features == 32
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 32)


def test_relative_position_index_2x2():
    # offsets (dy, dx) + 1 index a 3x3 table row-major: index = 3 * (dy + 1) + (dx + 1)
    assert relative_position_index(2).tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]


def test_shifted_window_mask_4x4():
    # 4x4 map, 2x2 windows, shift 1: regions by bands rows/cols [0,2), [2,3), [3,4) -> labels 3*i + j;
    # tokens of each window in row-major order
    labels = [[0, 0, 0, 0], [1, 2, 1, 2], [3, 3, 6, 6], [4, 5, 7, 8]]
    expected = torch.tensor([[[0.0 if a == b else -100.0 for b in w] for a in w] for w in labels])
    mask = shifted_window_mask(4, 4, 2, 1)
    assert mask.shape == (4, 4, 4)
    assert torch.equal(mask, expected)
    assert torch.equal(mask[1], torch.tensor([[0, -100, 0, -100], [-100, 0, -100, 0]] * 2, dtype=torch.float))


def reference_block(block: SwinBlock, x: torch.Tensor) -> torch.Tensor:
    """The block computed token by token: a token attends to the tokens that share its window after
    the cyclic shift and lie at the same offset as before it (not brought together by wrapping)."""
    r, m, s, heads = block.resolution, block.window_size, block.shift, block.attn.heads
    c = x.shape[-1]
    d = c // heads
    q, k, v = block.attn.qkv(block.norm1(x[0])).view(r * r, 3, heads, d).unbind(1)
    table = block.attn.relative_position_bias_table
    pos = [(i, j) for i in range(r) for j in range(r)]
    rolled = [((i - s) % r, (j - s) % r) for i, j in pos]             # where torch.roll(-s) puts each token
    window = [(i // m, j // m) for i, j in rolled]
    out = torch.zeros(r * r, heads, d)
    for a in range(r * r):
        offsets = {b: (rolled[a][0] - rolled[b][0], rolled[a][1] - rolled[b][1]) for b in range(r * r)}
        keys = [b for b in range(r * r) if window[b] == window[a]
                and offsets[b] == (pos[a][0] - pos[b][0], pos[a][1] - pos[b][1])]
        for h in range(heads):
            logits = torch.stack([q[a, h] @ k[b, h] * d ** -0.5
                                  + table[(offsets[b][0] + m - 1) * (2 * m - 1) + offsets[b][1] + m - 1, h]
                                  for b in keys])
            out[a, h] = logits.softmax(0) @ v[keys, h]
    y = x[0] + block.attn.proj(out.reshape(r * r, c))
    return (y + block.mlp(block.norm2(y)))[None]


@pytest.mark.parametrize("resolution, m, shift", [(4, 2, 0), (4, 2, 1), (6, 3, 1), (8, 4, 2)])
def test_window_attention_matches_token_reference(resolution, m, shift):
    torch.manual_seed(0)
    block = SwinBlock(8, resolution, 2, m, shift, 0.0, SwinConfig()).eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_()    # make position biases matter
    x = torch.randn(1, resolution * resolution, 8)
    assert block.shift == shift
    torch.testing.assert_close(block(x), reference_block(block, x), atol=1e-5, rtol=1e-5)


def test_batch_invariance_eval():
    torch.manual_seed(0)
    model = SwinBackbone(SwinConfig(**SMALL, drop_path_rate=0.1, drop_rate=0.1)).eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        batched = model(images)
        alone = torch.cat([model(images[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)


def test_gradients_finite_and_nonzero():
    torch.manual_seed(0)
    model = SwinBackbone(SwinConfig(**SMALL, drop_path_rate=0.1)).train()
    model(torch.randn(4, 3, 32, 32)).pow(2).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_overfits_eight_images():
    torch.manual_seed(0)
    backbone = SwinBackbone(SwinConfig(**SMALL, drop_path_rate=0.0))
    model = nn.Sequential(backbone, nn.Linear(backbone.num_features, 4))
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(300):
        loss = nn.functional.cross_entropy(model(images), labels)
        if loss.item() < 0.05:
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        assert (model(images).argmax(1) == labels).all()
    assert loss.item() < 0.05


@pytest.mark.parametrize("options, message", [
    ({"img_size": 30}, "img_size 30 is not divisible by patch_size 4"),
    ({"img_size": 40, "patch_size": 2}, "stage 0 resolution 20x20 is not divisible by its window size 7"),
    ({"num_heads": [3, 6, 12]}, "depths and num_heads must have one entry per stage"),
    ({"num_heads": [5, 6, 12, 24]}, "stage 0 width 96 is not divisible by its 5 heads"),
    ({"img_size": 28}, "stage 0 resolution 7x7 is odd, so patch merging cannot halve it"),
])
def test_config_errors(options, message):
    with pytest.raises(ValueError, match=message):
        SwinBackbone(SwinConfig(**options))


@pytest.mark.parametrize("shape", [(1, 3, 28, 28), (1, 3, 32, 28), (1, 1, 32, 32), (3, 32, 32)])
def test_wrong_image_size(shape):
    model = SwinBackbone(SwinConfig(**SMALL))
    with pytest.raises(ValueError, match=r"expected images of shape \[B, 3, 32, 32\]"):
        model(torch.randn(*shape))
