"""Training in several processes under torchrun (DistributedDataParallel).

`sertk train` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); without it, it is one
process and nothing here does anything. Under torchrun:

- `train.batch_size` is the global batch: every process makes the same shuffled batches a single
  process would (same seeds), and each batch is cut into one piece per process. Every segment of
  an epoch's batches is seen by exactly one process, none twice (torch's DistributedSampler pads
  with repeats), and the set is that of a one-process run, so results stay comparable.
- a piece of whole utterances is padded to the whole batch's longest (`pad_to_batch_longest`), not only
  to its own, so what sees the padding (BatchNorm, SpecAugment) sees what it would in one process;
- SpecAugment bands are drawn for the whole batch on every process (same generator) and each piece
  takes its rows', so a segment is masked as a single process would mask it;
- BatchNorm layers normalise with the statistics of the whole batch, over all processes
  (`train.sync_batchnorm`: torch's SyncBatchNorm on GPUs, `GlobalBatchNorm` on CPUs, where torch has none);
- each process's loss is scaled by its share of the batch, so DDP's mean over processes is the
  batch mean; the weighted emotion cross-entropy divides by the whole batch's weight total
  (`piece_weight_total`), so class and utterance weights act as in one batch (the auxiliary terms,
  means over their own pieces, are exact when the pieces are alike);
- dev posteriors are computed on one slice per process and gathered, so every process takes the
  same early-stopping, scheduler and best-checkpoint decisions;
- only rank 0 writes (checkpoints, TensorBoard, train.log, config.yaml).
"""
import contextlib
import gc
import os
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_autograd
from torch import nn

from sertk.errors import SertkError

DDP_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def piece(self, batch: Sequence[int]) -> List[int]:
        """This process's contiguous piece of a global batch (pieces differ in size by at most one)."""
        return [batch[i] for i in self.rows(len(batch))]

    def rows(self, size: int) -> List[int]:
        """The positions of this process's piece in a batch of `size`."""
        return [int(i) for i in np.array_split(np.arange(size), self.world)[self.rank]]

    def share(self, piece: int, batch: int) -> float:
        """The factor that makes the mean over processes of per-piece mean losses the batch mean."""
        return self.world * piece / batch

    def slice(self, n: int) -> range:
        """This process's contiguous part of n items (for evaluation)."""
        bounds = np.linspace(0, n, self.world + 1).round().astype(int)
        return range(bounds[self.rank], bounds[self.rank + 1])


def ranks_from_environment() -> Ranks:
    """The ranks torchrun gave this process; one process when it was not started by torchrun."""
    present = [k for k in DDP_ENV if k in os.environ]
    if not present:
        return Ranks()
    if len(present) < len(DDP_ENV):
        raise SertkError(f"{', '.join(present)} set without {', '.join(k for k in DDP_ENV if k not in present)}; "
                         "start distributed training with torchrun")
    try:
        ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    except ValueError:
        raise SertkError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)") from None
    if not 0 <= ranks.rank < ranks.world:
        raise SertkError(f"RANK {ranks.rank} is not in 0..WORLD_SIZE-1 ({ranks.world})")
    return ranks


def process_device(ranks: Ranks, device: str) -> str:
    """The device of this process: under torchrun with CUDA, the GPU of its local rank."""
    if not ranks.distributed or not device.startswith("cuda"):
        return device
    if device != "cuda":
        raise SertkError(f"--device {device}: under torchrun give --device cuda; each process takes the GPU of "
                         "its LOCAL_RANK")
    if ranks.local_rank >= torch.cuda.device_count():
        raise SertkError(f"LOCAL_RANK {ranks.local_rank} but this node has {torch.cuda.device_count()} GPU(s); "
                         "start no more processes per node than there are GPUs")
    torch.cuda.set_device(ranks.local_rank)
    return f"cuda:{ranks.local_rank}"


_kept = False   # inside keep_group(): stop() leaves the group to the next training in this process


def start(ranks: Ranks, device: str) -> None:
    """Join the process group (NCCL on GPUs, gloo on CPUs); the rendezvous comes from torchrun."""
    if ranks.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")


def finish(ranks: Ranks) -> None:
    """After a training that ended well on every process: collect what still refers to the group, then wait
    for the others, so that stop() tears the group down with no collective in flight and nothing of it left to
    free later. Freeing a gloo group's last work objects after destroy_process_group, in the main thread that
    holds the GIL, can deadlock with its worker threads (pytorch/pytorch#75097, #179291): a rank of sertk's
    two-process tests hung there twice in CI (2026-12-04 and -05), its stack at the end of train()."""
    if ranks.distributed and dist.is_initialized():
        gc.collect()
        dist.barrier()


def release(ranks: Ranks, error: BaseException) -> None:
    """After a training that failed in this process: what its traceback holds (the model, gloo work) is freed
    before stop() destroys the group, as finish() does; no barrier, the other processes may be gone."""
    if ranks.distributed and dist.is_initialized():
        traceback.clear_frames(error.__traceback__)   # the frames still running are skipped
        gc.collect()


def stop(ranks: Ranks) -> None:
    if ranks.distributed and dist.is_initialized() and not _kept:
        dist.destroy_process_group()


@contextlib.contextmanager
def keep_group(ranks: Ranks, device: str):
    """One process group for several trainings in one process (a grid, sertk.train.grid): joined before the
    first, left after the last. Leaving and joining again in between is unsafe: torchrun's store keeps the
    old group's keys, so a process can read another's old address and fail to connect."""
    global _kept
    if not ranks.distributed:
        yield
        return
    start(ranks, process_device(ranks, device))
    _kept = True
    try:
        yield
    finally:
        _kept = False
        stop(ranks)


def backend_name(ranks: Ranks) -> str:
    return dist.get_backend() if ranks.distributed and dist.is_initialized() else "none"


class PieceSampler:
    """A batch sampler yielding this process's piece of each batch of `batches` (a batch sampler or
    list of index lists, identical on every process). With `frames` (index -> the item's length), the
    longest item of each whole batch is queued in `longest`, in the order the pieces are yielded, so the
    training loop can pad its piece as the whole batch is padded (`pad_to_batch_longest`); the loader
    asks for pieces in order, ahead of the loop when it prefetches."""

    def __init__(self, batches: Iterable[List[int]], ranks: Ranks, frames: Optional[Callable[[int], int]] = None):
        self.batches, self.ranks, self.frames = batches, ranks, frames
        self.longest: Deque[int] = deque()

    def __iter__(self) -> Iterator[List[int]]:
        for batch in self.batches:
            if self.frames is not None:
                self.longest.append(max(self.frames(i) for i in batch))
            yield self.ranks.piece(batch)

    def __len__(self) -> int:
        return len(self.batches)


def pad_to_batch_longest(batch: Dict[str, torch.Tensor], keys: Sequence[str], longest: int) -> Dict[str, torch.Tensor]:
    """A piece of whole utterances (each padded by `collate` to the piece's longest) padded on to the whole
    batch's `longest`, with zeros (the mask with False), as one process pads the batch: what sees the padding
    (BatchNorm statistics, SpecAugment's band positions, drawn over the batch's length) then sees what it
    would in one process. `keys`: the tensors with a time axis (dim 1)."""
    length = batch["mask"].shape[1]
    if longest <= length:
        return batch
    out = dict(batch)
    for key in keys:
        x = batch[key]
        out[key] = torch.cat([x, x.new_zeros((x.shape[0], longest - length) + tuple(x.shape[2:]))], dim=1)
    return out


def all_sum(values: Sequence[float], ranks: Ranks) -> List[float]:
    """The sum over processes of each value (float64 on the CPU: gloo and NCCL both take it)."""
    if not ranks.distributed:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.cpu().tolist()


def piece_weight_total(ranks: Ranks, global_batch: int):
    """For SegmentLoss under torchrun: (a piece's weight sum, its size) -> the whole batch's weight sum over
    all processes x the piece's share of the batch, so that the piece's weighted mean, scaled by
    `Ranks.share` and averaged by DDP, is exactly the whole batch's weighted mean."""
    def total(piece_sum: torch.Tensor, piece: int) -> torch.Tensor:
        batch_sum = piece_sum.detach().clone()
        dist.all_reduce(batch_sum)
        return batch_sum * piece / global_batch
    return total


def gather_rows(rows: np.ndarray, ranks: Ranks) -> np.ndarray:
    """Every process's rows, in rank order, on every process."""
    if not ranks.distributed:
        return rows
    parts: List = [None] * ranks.world
    dist.all_gather_object(parts, rows)
    return np.concatenate([p for p in parts if len(p)]) if any(len(p) for p in parts) else rows


def broadcast_buffers(module: torch.nn.Module, ranks: Ranks) -> None:
    """Rank 0's buffers (BatchNorm running statistics) everywhere: each process updated its own with
    its piece of the last batch, and evaluation must use the state rank 0 saves."""
    if ranks.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, 0)


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        dist.barrier()


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm for gloo (CPU) process groups whose training statistics are the whole batch's over all
    processes, as torch's SyncBatchNorm (CUDA only) does: the sums go through a differentiable all-reduce,
    so gradients flow back to every process's inputs. Same parameters and buffers as the layer it replaces,
    so checkpoints load into the plain model."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {x.dim()}-D)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        dtype, x = x.dtype, x.float()   # bf16 under autocast: its sums and counts would round (3003 -> 3008)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype)
        total, n = dist_autograd.all_reduce(torch.cat([x.sum(dims), count])).split([x.shape[1], 1])
        mean = total / n
        centred = x - mean.view(shape)
        var = dist_autograd.all_reduce((centred * centred).sum(dims)) / n   # two passes: no cancellation
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean)
                self.running_var.mul_(1 - momentum).add_(momentum * var * n / (n - 1).clamp(min=1))
        y = centred / torch.sqrt(var.view(shape) + self.eps)
        return (y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y).to(dtype)


def sync_batchnorm(module: nn.Module, device: str) -> nn.Module:
    """`module` with every BatchNorm layer normalising over the whole distributed batch."""
    if device.startswith("cuda"):
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _to_global(module)


def _to_global(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        layer = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        layer.load_state_dict(module.state_dict())
        layer.train(module.training)
        return layer
    for name, child in module.named_children():
        setattr(module, name, _to_global(child))
    return module
