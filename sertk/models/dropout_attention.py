"""Attention with dropout on the attention weights, computed fast on a CPU (MultiHeadAttention's training path).

Why: on a CPU, F.scaled_dot_product_attention has no fused kernel for dropout_p > 0 and falls back to its
plain ("math") path, 4-10x slower than the fused kernel at T = 800: one bernoulli_ draw per weight, a float
mask applied in separate passes over [B, H, T, T], and the weights, the float mask and the dropped weights
all kept for backward. `dropout_attention` computes the same function, softmax(q k^T / sqrt(d) + key mask)
times an i.i.d. keep mask / (1 - p), times v, and the same gradients, with
- 16 random bits per weight: 64-bit draws viewed as int16 and compared to a threshold (4x fewer draws than
  bernoulli_). The drop rate is p rounded to a multiple of 1/65536 (at most 7.6e-6 off) and the keep scale
  1 / (1 - that rate), so the expected output stays exactly the no-dropout one;
- the comparison written straight into a float buffer (bool masks take slow, non-vectorised CPU paths);
- blocks of heads x queries of about FAST_BLOCK weights, so that a block's scores, mask and dropped weights
  stay in cache. Only the softmax weights are kept for backward, which runs the same blocks and draws each
  block's bits again from its seed (as fast as keeping them, with a third less memory);
- the blocks shared out to torch.get_num_threads() threads that each run single-threaded ops: thousands of
  small ops would otherwise each wait at an OpenMP barrier, which costs whole scheduler time slices when
  another process holds a core. Each task draws from its own generator, seeded from one draw of torch's
  global one, so the masks follow torch.manual_seed and not the thread count or the scheduling.
Inputs in bfloat16 / float16 (autocast) are computed in float32, as SDPA's math path does on a CPU.
"""
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Optional

import torch

FAST_CPU_DROPOUT_ATTENTION = True   # False: MultiHeadAttention always calls F.scaled_dot_product_attention
FAST_BLOCK = 1 << 18                # weights per block: 1 MiB of float32 scores
_LEVELS = 1 << 16                   # int16 values
_POOL: list = [0, 0, None]          # [process id, threads, ThreadPoolExecutor]


def _drop_levels(p: float) -> int:
    """The drop rate in 1/65536: a weight is dropped where its random int16 < _drop_levels(p) - 32768."""
    return round(p * _LEVELS)


def keep_scale(p: float) -> float:
    """1 / (1 - p') for the drop rate p' = round(65536 p) / 65536 that dropout_attention uses."""
    return _LEVELS / (_LEVELS - _drop_levels(p))


def dropout_bits(shape, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Uniform random int16 of `shape`, 4 per 64-bit draw of `generator` (default: torch's global one). The
    full int64 range is asked for: a plain int64 random_() leaves every word's top bit 0."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None, generator=generator)
    return words.view(torch.int16)[:n].view(shape)


def keep_mask(bits: torch.Tensor, p: float) -> torch.Tensor:
    """The keep mask (bool) that `bits` stand for at drop rate p: i.i.d. Bernoulli(1 - p') for dropout_bits."""
    return bits >= _drop_levels(p) - _LEVELS // 2


def bits_for(keep: torch.Tensor) -> torch.Tensor:
    """int16 bits that give the keep mask `keep` at any drop rate 0 < p' < 1 (to replay a given mask)."""
    return torch.where(keep, _LEVELS // 2 - 1, -_LEVELS // 2).to(torch.int16)


def use_dropout_attention(q: torch.Tensor, p: float) -> bool:
    """Whether MultiHeadAttention takes dropout_attention: dropout on (and not rounded to 0 or 1) on a CPU."""
    return q.device.type == "cpu" and 0 < _drop_levels(p) < _LEVELS and \
        q.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _tasks(bh: int, tq: int, tk: int):
    """Work units (heads, [query slices]): a group of heads and its blocks of about FAST_BLOCK weights, each a
    contiguous [g, c, tk] slice. A task alone writes its heads' outputs and gradients."""
    if tq * tk >= FAST_BLOCK:
        c = max(1, FAST_BLOCK // tk)
        chunks = [slice(i, min(i + c, tq)) for i in range(0, tq, c)]
        return [(slice(h, h + 1), chunks) for h in range(bh)]
    g = max(1, FAST_BLOCK // (tq * tk))
    return [(slice(h, min(h + g, bh)), [slice(0, tq)]) for h in range(0, bh, g)]


def _pool(workers: int) -> ThreadPoolExecutor:
    """A pool of at least `workers` threads, new in a forked child (its parent's threads are not there)."""
    if _POOL[0] != os.getpid() or _POOL[1] < workers:
        _POOL[:] = [os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="sertk-attention")]
    return _POOL[2]


def _run_tasks(fn, n_tasks: int) -> None:
    """fn(t) for t in range(n_tasks) on this thread and torch.get_num_threads() - 1 pool threads, each running
    single-threaded ops (torch's thread count is 1 meanwhile, which a pool thread takes up the first time it
    asks; restored after). Each task's outputs are its own, so the order does not matter."""
    threads = min(torch.get_num_threads(), n_tasks)
    todo, lock = iter(range(n_tasks)), threading.Lock()

    def work():
        torch.get_num_threads()      # settles a pool thread's own count (1) before any op reads it
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            while True:
                with lock:
                    t = next(todo, None)
                if t is None:
                    return
                fn(t)

    if threads <= 1:
        work()
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        futures = [_pool(threads - 1).submit(work) for _ in range(threads - 1)]
        try:
            work()
        finally:
            wait(futures)
        for future in futures:
            future.result()
    finally:
        torch.set_num_threads(before)


def _task_bits(bits: Optional[torch.Tensor], seed: int, t: int, h: slice, tq: int, tk: int) -> torch.Tensor:
    """Task t's random int16 [heads, tq, tk]: its slice of the given `bits`, or drawn from seed + t."""
    if bits is not None:
        return bits[h]
    return dropout_bits((h.stop - h.start, tq, tk), torch.Generator().manual_seed(seed + t))


class _DropoutAttention(torch.autograd.Function):
    """q, k, v [BH, T, d] (float32/64, contiguous), bias [BH, 1, Tk] additive key mask or None, bits
    [BH, Tq, Tk] int16 (a given mask) or None (drawn), p (0: no dropout), dead [BH] bool or None (heads of
    sequences with no valid key); returns [BH, Tq, d]. Keeps the softmax weights (and the bits' seed)."""

    @staticmethod
    def forward(ctx, q, k, v, bias, bits, p, dead):
        bh, tq, d = q.shape
        tk = k.shape[1]
        qs = q * d ** -0.5
        kt = k.transpose(1, 2)
        weights = torch.empty(bh, tq, tk, dtype=q.dtype)
        out = torch.empty(bh, tq, d, dtype=q.dtype)
        drop = _drop_levels(p) > 0
        threshold = _drop_levels(p) - _LEVELS // 2
        tasks = _tasks(bh, tq, tk)
        seed = int(torch.randint(0, 2 ** 62, ())) if drop and bits is None else 0

        def task(t):
            h, chunks = tasks[t]
            if drop:
                mine = _task_bits(bits, seed, t, h, tq, tk)
                kept_buf = torch.empty((h.stop - h.start) * (chunks[0].stop - chunks[0].start) * tk, dtype=q.dtype)
            for i in chunks:
                s = torch.bmm(qs[h, i], kt[h], out=weights[h, i])
                if bias is not None:   # (baddbmm would first copy the broadcast bias into s: slower)
                    s.add_(bias[h])
                torch._softmax(s, -1, False, out=s)
                if drop:
                    kept = kept_buf[:s.numel()].view(s.shape)
                    torch.ge(mine[:, i], threshold, out=kept)
                    s = kept.mul_(s)
                torch.bmm(s, v[h], out=out[h, i])

        _run_tasks(task, len(tasks))
        if drop:
            out.mul_(keep_scale(p))
        if dead is not None:   # sequences with no valid key: zero weights and output, as SDPA gives
            weights[dead] = 0
            out[dead] = 0
        ctx.save_for_backward(qs, k, v, weights)
        ctx.p, ctx.tasks, ctx.bits, ctx.seed = p, tasks, bits, seed
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        qs, k, v, weights = ctx.saved_tensors
        p, tasks, bits, seed = ctx.p, ctx.tasks, ctx.bits, ctx.seed
        bh, tq, d = qs.shape
        tk = k.shape[1]
        drop = _drop_levels(p) > 0
        threshold = _drop_levels(p) - _LEVELS // 2
        grad = grad.contiguous() * keep_scale(p) if drop else grad.contiguous()
        dq, dk, dv = torch.empty_like(qs), torch.zeros_like(k), torch.zeros_like(v)
        vt = v.transpose(1, 2)

        def task(t):
            h, chunks = tasks[t]
            size = (h.stop - h.start) * (chunks[0].stop - chunks[0].start) * tk
            buf = torch.empty(size, dtype=qs.dtype)
            if drop:
                mine, kept_buf = _task_bits(bits, seed, t, h, tq, tk), torch.empty(size, dtype=qs.dtype)
            for i in chunks:
                w, g = weights[h, i], grad[h, i]
                dw = buf[:w.numel()].view(w.shape)
                if drop:
                    kept = kept_buf[:w.numel()].view(w.shape)
                    torch.ge(mine[:, i], threshold, out=kept)
                    dv[h].baddbmm_(torch.mul(kept, w, out=dw).transpose(1, 2), g)
                    torch.bmm(g, vt[h], out=dw).mul_(kept)
                else:
                    dv[h].baddbmm_(w.transpose(1, 2), g)
                    torch.bmm(g, vt[h], out=dw)
                torch._softmax_backward_data(dw, w, -1, w.dtype, grad_input=dw)
                torch.bmm(dw, k[h], out=dq[h, i])
                dk[h].baddbmm_(dw.transpose(1, 2), qs[h, i])

        _run_tasks(task, len(tasks))
        return dq.mul_(d ** -0.5), dk, dv, None, None, None, None


def dropout_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor, p: float,
                      bits: Optional[torch.Tensor] = None) -> torch.Tensor:
    """F.scaled_dot_product_attention(q, k, v, attn_mask=key_valid[:, None, None, :], dropout_p=p) for q
    [B, H, Tq, d], k, v [B, H, Tk, d], key_valid [B, Tk] bool, computed in blocks on a CPU (see above).
    `bits` [B, H, Tq, Tk] int16 replace the random draw (bits_for(keep) replays a keep mask); p = 0: no
    dropout. A sequence with no valid key gets zero output and gradients, as from SDPA."""
    b, heads, tq, d = q.shape
    tk = k.shape[2]
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    flat = lambda t: t.to(work).reshape(b * heads, t.shape[2], d).contiguous()   # noqa: E731
    bias = dead = None
    if not bool(key_valid.all()):
        bias = torch.zeros(b, tk, dtype=work).masked_fill_(~key_valid, torch.finfo(work).min)
        bias = bias[:, None, None, :].expand(b, heads, 1, tk).reshape(b * heads, 1, tk)
        empty = ~key_valid.any(1)
        if bool(empty.any()):
            dead = empty[:, None].expand(b, heads).reshape(-1)
    if bits is not None:
        bits = bits.reshape(b * heads, tq, tk).contiguous()
    with torch.autocast("cpu", enabled=False):
        out = _DropoutAttention.apply(flat(q), flat(k), flat(v), bias, bits, p, dead)
    return out.view(b, heads, tq, d).to(q.dtype)
