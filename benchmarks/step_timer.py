"""Seconds per training step (forward, loss, backward, optimizer step) of a model on one batch: the
median of `repeat` steps after a warm-up, the forward in float32 or under bfloat16 autocast (as the trainer's
`train.amp`). Shared by the per-model step benchmarks."""
import contextlib
import statistics
import time
from typing import Callable, Dict

import torch


def step_seconds(model: torch.nn.Module, loss_fn: Callable[[Dict, Dict], torch.Tensor], optimizer,
                 batch: Dict[str, torch.Tensor], repeat: int, device: str, bf16: bool = False) -> float:
    model.train()
    times = []
    for _ in range(repeat + 1):   # the first is a warm-up
        start = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            out = model(batch)
        loss = loss_fn(out, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])
