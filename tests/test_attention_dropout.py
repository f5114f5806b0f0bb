"""The CPU path for attention with dropout (sertk/models/dropout_attention.py), which
MultiHeadAttention takes when training with attn_dropout > 0 on a CPU: without dropout it is SDPA; with a
given keep mask it is softmax, mask, matmul written out; its masks are i.i.d. Bernoulli(1 - p) and its
expected output the no-dropout one; padding stays finite and gets no weight."""
import math

import pytest
import torch
from torch.nn import functional as F

from sertk.models import dropout_attention as tr
from sertk.models.dropout_attention import bits_for, dropout_attention, keep_mask, keep_scale
from sertk.models.transformer import MultiHeadAttention

# small blocks: queries cut into chunks | several heads a block | one block for everything
BLOCKS = [7 * 37, 3 * 29 * 37, 1 << 30]


def _inputs(b=3, h=2, tq=29, tk=37, d=8, seed=0, dead=True):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, t, d, generator=g, dtype=torch.float64).float().requires_grad_()
               for t in (tq, tk, tk))
    key_valid = torch.ones(b, tk, dtype=torch.bool)
    key_valid[0, 30:] = False                      # a padded tail
    key_valid[1, ::3] = False                      # scattered hidden keys (the cue pathway's)
    if dead:
        key_valid[2] = False                       # a sequence with no valid key at all
    return q, k, v, key_valid


def _grads(fn, tensors, seed=1):
    for t in tensors:
        t.grad = None
    out = fn()
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)))
    return [out.detach()] + [t.grad.clone() for t in tensors]


def _reference(q, k, v, key_valid, keep, p):
    """softmax(q k^T / sqrt(d) + key mask) * keep / (1 - p) @ v, by explicit ops; 0 where no key is valid."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    alive = key_valid.any(1)[:, None, None, None]
    weights = torch.where(alive, torch.softmax(scores.masked_fill(~alive, 0.0), -1), 0.0)
    return (weights * keep / (1 - p)) @ v


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


# --- (a) no dropout: SDPA -----------------------------------------------------------------------------

@pytest.mark.parametrize("block", BLOCKS)
def test_without_dropout_it_is_sdpa_forward_and_backward(block, threads, monkeypatch):
    monkeypatch.setattr(tr, "FAST_BLOCK", block)
    q, k, v, key_valid = _inputs()
    ours = _grads(lambda: dropout_attention(q, k, v, key_valid, 0.0), (q, k, v))
    sdpa = _grads(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=key_valid[:, None, None, :]), (q, k, v))
    for a, b in zip(ours, sdpa):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert torch.get_num_threads() == threads       # the worker pool gives the thread count back


def test_the_module_uses_sdpa_in_eval_mode_and_with_dropout_0(monkeypatch):
    calls = []
    monkeypatch.setattr(tr, "dropout_attention", lambda *a, **k: calls.append(1))
    torch.manual_seed(0)
    x = torch.randn(2, 30, 16)
    key_valid = torch.ones(2, 30, dtype=torch.bool)
    key_valid[1, 20:] = False
    for module in (MultiHeadAttention(16, 4, 0.1).eval(), MultiHeadAttention(16, 4, 0.0).train()):
        q, k, v = module.heads_of(x)
        expected = module.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=key_valid[:, None, None, :]))
        torch.testing.assert_close(module(x, key_valid), expected, rtol=0, atol=0)
    assert not calls


def test_the_module_takes_the_fast_path_when_training_with_dropout(monkeypatch):
    module = MultiHeadAttention(16, 4, 0.1).train()
    x, key_valid = torch.randn(2, 30, 16), torch.ones(2, 30, dtype=torch.bool)
    calls = []
    real = tr.dropout_attention
    monkeypatch.setattr(tr, "dropout_attention", lambda *a: calls.append(a[-1]) or real(*a))
    module(x, key_valid)
    assert calls == [0.1]
    monkeypatch.setattr(tr, "FAST_CPU_DROPOUT_ATTENTION", False)   # the old path, for the benchmark
    module(x, key_valid)
    assert calls == [0.1]


# --- (b) with dropout: the written-out reference, given the keep mask ---------------------------------

@pytest.mark.parametrize("block", BLOCKS)
def test_a_given_keep_mask_gives_the_explicit_computation(block, threads, monkeypatch):
    monkeypatch.setattr(tr, "FAST_BLOCK", block)
    p = 0.25                                       # on the 1/65536 grid: keep scale exactly 1 / (1 - p)
    q, k, v, key_valid = _inputs(seed=3)
    keep = torch.rand(q.shape[:3] + (k.shape[2],), generator=torch.Generator().manual_seed(4)) >= p
    ours = _grads(lambda: dropout_attention(q, k, v, key_valid, p, bits=bits_for(keep)), (q, k, v))
    ref = _grads(lambda: _reference(q, k, v, key_valid, keep, p), (q, k, v))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    no_drop = dropout_attention(q, k, v, key_valid, 0.0)
    assert not torch.allclose(ours[0], no_drop, atol=1e-3)   # the mask was applied


@pytest.mark.parametrize("block", BLOCKS[:2])
def test_a_drawn_mask_is_the_same_in_forward_and_backward(block, threads, monkeypatch):
    """The mask depends on the seed and the shapes only: read it back (q = 0, v = identity), then the drawn
    run's output and gradients must be the explicit computation with that mask."""
    monkeypatch.setattr(tr, "FAST_BLOCK", block)
    p, (b, h, tq, tk) = 0.25, (3, 2, 29, 37)
    q, k, v, key_valid = _inputs(b, h, tq, tk, seed=6)
    zeros, eye, all_valid = torch.zeros(b, h, tq, tk), torch.eye(tk).expand(b, h, tk, tk), torch.ones(b, tk).bool()
    torch.manual_seed(11)
    out = dropout_attention(zeros, zeros[:, :, :1].expand(b, h, tk, tk), eye, all_valid, p)
    keep = (out * tk / keep_scale(p)).round().bool()
    torch.manual_seed(11)
    drawn = _grads(lambda: dropout_attention(q, k, v, key_valid, p), (q, k, v))
    ref = _grads(lambda: _reference(q, k, v, key_valid, keep, p), (q, k, v))
    for a, r in zip(drawn, ref):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


def test_bfloat16_inputs_are_computed_in_float32():
    q, k, v, key_valid = _inputs(dead=False)
    keep = torch.rand(q.shape[:3] + (k.shape[2],), generator=torch.Generator().manual_seed(5)) >= 0.25
    low = [t.detach().bfloat16() for t in (q, k, v)]
    out = dropout_attention(*low, key_valid, 0.25, bits=bits_for(keep))
    assert out.dtype == torch.bfloat16
    expected = _reference(*(t.float() for t in low), key_valid, keep, 0.25)
    torch.testing.assert_close(out.float(), expected, rtol=1e-2, atol=1e-2)


# --- (c) the masks: rate, independence, expectation ---------------------------------------------------

def _observed_keep(p, b=64, h=8, tq=16, seed=0):
    """The keep mask the fast path draws, read back through the attention: q = 0 gives every key weight
    1/16 and v = identity puts key j's dropped weight in output column j."""
    torch.manual_seed(seed)
    tk = d = 16
    q = torch.zeros(b, h, tq, d)
    k = torch.randn(b, h, tk, d)
    v = torch.eye(tk).expand(b, h, tk, d)
    out = dropout_attention(q, k, v, torch.ones(b, tk, dtype=torch.bool), p)
    kept = out * tk / keep_scale(p)
    torch.testing.assert_close(kept, kept.round(), rtol=0, atol=1e-5)   # every weight kept whole or dropped
    return kept.round().bool()


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_the_keep_rate_is_1_minus_p_in_every_lane(p, threads):
    kept = _observed_keep(p)
    n = kept.numel()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * sigma
    for lane in range(4):                          # 4 int16 from each 64-bit draw: none may be biased
        sub = kept[..., lane::4]
        assert abs(sub.float().mean().item() - (1 - p)) < 5 * math.sqrt(p * (1 - p) / sub.numel())
    # neighbours are independent: P(both kept) = (1 - p)^2
    both = (kept[..., :-1] & kept[..., 1:]).float().mean().item()
    assert abs(both - (1 - p) ** 2) < 5 * math.sqrt((1 - p) ** 2 * (1 - (1 - p) ** 2) / kept[..., 1:].numel())


def test_masks_follow_the_global_seed_not_the_thread_count():
    one = _observed_keep(0.1, seed=7)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = _observed_keep(0.1, seed=7)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
    assert not torch.equal(one, _observed_keep(0.1, seed=8))


def test_p_is_quantised_to_1_over_65536():
    assert keep_scale(0.25) == 1 / 0.75
    assert abs(1 / keep_scale(0.1) - 0.9) <= 2 ** -17
    bits = torch.arange(-2 ** 15, 2 ** 15).to(torch.int16)
    assert keep_mask(bits, 0.1).sum().item() / 2 ** 16 == pytest.approx(1 / keep_scale(0.1), rel=1e-12)
    keep = torch.rand(1000) < 0.5
    assert torch.equal(keep_mask(bits_for(keep), 0.1), keep) and torch.equal(keep_mask(bits_for(keep), 0.9), keep)


def test_the_expected_output_is_the_no_dropout_output():
    p, draws = 0.1, 1000
    q, k, v, key_valid = (t.detach() if t.dtype != torch.bool else t for t in _inputs(b=2, tq=5, tk=11, dead=False))
    exact = dropout_attention(q, k, v, key_valid, 0.0)
    torch.manual_seed(0)
    outs = torch.stack([dropout_attention(q, k, v, key_valid, p) for _ in range(draws)])
    mean, se = outs.mean(0), outs.std(0) / math.sqrt(draws)
    assert ((mean - exact).abs() <= 5 * se + 1e-6).all()
    assert ((outs - exact).abs().amax(0) > 0).all()          # yet single draws differ from it
    assert ((0.9 * exact - mean).abs() > 5 * se).any()       # (a missing 1 / (1 - p) would be seen)


# --- (d) padding -----------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.0, 0.1])
def test_padded_keys_get_no_weight_and_padding_stays_finite(p, threads, monkeypatch):
    monkeypatch.setattr(tr, "FAST_BLOCK", 7 * 16)
    b, h, tq, tk = 3, 2, 12, 16
    q = torch.randn(b, h, tq, tk, requires_grad=True)
    k = torch.randn(b, h, tk, tk, requires_grad=True)
    v = torch.eye(tk).repeat(b, h, 1, 1).requires_grad_()       # output column j: the weight of key j
    key_valid = torch.ones(b, tk, dtype=torch.bool)
    key_valid[0, 10:] = False
    key_valid[1, 1::2] = False
    key_valid[2] = False                                         # no valid key: output 0, as SDPA's
    out = dropout_attention(q, k, v, key_valid, p)
    assert (out.permute(0, 3, 1, 2)[~key_valid] == 0).all()    # padded keys: weight exactly 0
    assert (out[2] == 0).all() and out.isfinite().all()
    out.sum().backward()
    for t in (q, k, v):
        assert t.grad.isfinite().all()
    assert (k.grad.transpose(1, 2)[~key_valid] == 0).all() and (v.grad.transpose(1, 2)[~key_valid] == 0).all()
    assert (q.grad[2] == 0).all()


def test_training_with_a_padded_tail_is_finite():
    torch.manual_seed(0)
    module = MultiHeadAttention(16, 4, 0.1).train()
    x = torch.randn(3, 40, 16, requires_grad=True)
    key_valid = torch.ones(3, 40, dtype=torch.bool)
    key_valid[0, 25:] = False                                    # padded queries see only the valid keys
    key_valid[1] = False
    out = module(x, key_valid)
    out.sum().backward()
    assert out.isfinite().all() and x.grad.isfinite().all()
    assert all(p.grad.isfinite().all() for p in module.parameters())
