"""run_lstm: the padded-batch path gives what torch's packed sequences give (outputs, final states,
gradients), for every LSTM shape the models build."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sertk.models.sequence import run_lstm


def packed_reference(lstm, x, mask):
    lengths = mask.sum(1).clamp(min=1)
    out, (h_n, _) = lstm(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    directions = 2 if lstm.bidirectional else 1
    return out, torch.cat(list(h_n[-directions:]), dim=-1)


def batch(lengths, frames=12, dims=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), frames, dims, generator=generator)
    mask = torch.arange(frames)[None] < torch.tensor(lengths)[:, None]
    return x, mask


def outputs_and_gradients(runner, lstm, x, mask):
    lstm.zero_grad()
    x = x.clone().requires_grad_()
    out, final = runner(lstm, x, mask)
    weights = torch.linspace(-1, 1, out.shape[-1])            # a loss that weighs every unit differently
    ((out * weights).sum() + (final * weights).sum() * 3).backward()
    return out.detach(), final.detach(), x.grad, {n: p.grad.clone() for n, p in lstm.named_parameters()}


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("lengths", [[12, 12, 12], [12, 7, 1, 12, 3], [5, 12, 2]])
def test_padded_path_equals_packed_sequences(bidirectional, layers, lengths):
    torch.manual_seed(1)
    lstm = nn.LSTM(5, 4, num_layers=layers, batch_first=True, bidirectional=bidirectional)
    x, mask = batch(lengths)
    ours = outputs_and_gradients(run_lstm, lstm, x, mask)
    reference = outputs_and_gradients(packed_reference, lstm, x, mask)
    for got, want in zip(ours[:3], reference[:3]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for name, grad in reference[3].items():
        torch.testing.assert_close(ours[3][name], grad, rtol=1e-5, atol=1e-6)
    assert not ours[0][~mask].any()                             # padded frames are zero, as packed gives them


def test_padded_frames_do_not_matter():
    torch.manual_seed(2)
    lstm = nn.LSTM(5, 4, batch_first=True, bidirectional=True)
    x, mask = batch([12, 6, 9])
    noisy = x.masked_fill(~mask[..., None], 100.0)
    for a, b in zip(run_lstm(lstm, x, mask), run_lstm(lstm, noisy, mask)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_under_bfloat16_autocast_it_stays_close_to_float32_packed():
    torch.manual_seed(3)
    lstm = nn.LSTM(16, 8, batch_first=True, bidirectional=True)
    x, mask = batch([20, 11, 20, 4], frames=20, dims=16)
    want_out, want_final = packed_reference(lstm, x, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, final = run_lstm(lstm, x, mask)
    torch.testing.assert_close(out.float(), want_out, rtol=0, atol=0.05)
    torch.testing.assert_close(final.float(), want_final, rtol=0, atol=0.05)


def test_the_old_path_switch_packs_every_lstm(monkeypatch):
    from sertk.models import sequence
    torch.manual_seed(4)
    lstm = nn.LSTM(5, 4, batch_first=True, bidirectional=True)
    x, mask = batch([12, 6, 9])
    monkeypatch.setattr(sequence, "PADDED_LSTM", False)
    for got, want in zip(run_lstm(lstm, x, mask), packed_reference(lstm, x, mask)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
