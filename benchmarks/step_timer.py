"""Seconds per training step (forward, loss, backward, optimizer step) of a model on one batch: the
median of `repeat` steps after a warm-up. Shared by the per-model step benchmarks."""
import statistics
import time
from typing import Callable, Dict

import torch


def step_seconds(model: torch.nn.Module, loss_fn: Callable[[Dict, Dict], torch.Tensor], optimizer,
                 batch: Dict[str, torch.Tensor], repeat: int, device: str) -> float:
    model.train()
    times = []
    for _ in range(repeat + 1):   # the first is a warm-up
        start = time.perf_counter()
        loss = loss_fn(model(batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])
