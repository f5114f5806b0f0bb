"""ESERNet training-step speed: seconds per step (forward, both losses, backward, AdamW) of the default
model on a batch of segments, by segment length, with and without attention dropout, and with dropout
on the old attention path.

    python benchmarks/esernet_step.py [--batch-size 32] [--frames 300,500,800] [--repeat 3] [--device cpu]
                                      [--threads N] [--bf16]

Why it exists: the cue pathway attends over all frames of the 8 s segment, and on a CPU torch's
scaled_dot_product_attention with dropout falls back to its plain path, which materialises the
[batch, heads, T, T] weights and a dropout mask over them; this prints what that costs, so a
training run's epoch time can be estimated from its batches before it is started. MultiHeadAttention
now takes sertk.models.dropout_attention there instead (blockwise, cheaper masks); the
"old path" column is the same step with FAST_CPU_DROPOUT_ATTENTION off (SDPA's plain path) and
"old/new" its ratio to the first column. Inputs are random (the cost does not depend on the values).
Each figure is the median of --repeat steps after a warm-up; --bf16 runs the forward under bfloat16
autocast, as `train.amp: auto` does where the hardware has it.
"""
import argparse
import platform

import torch

from sertk.envinfo import cpu_model
from sertk.models import build_model, dropout_attention
from sertk.models.esernet_cue import ReconstructionObjective
from sertk.train.loss import SegmentLoss
from sertk.train.precision import native_bf16_cpu_flags
from step_timer import step_seconds


def esernet_step(attn_dropout: float, batch_size: int, frames: int, repeat: int, device: str,
                 fast: bool = True, bf16: bool = False) -> float:
    """`fast` False: attention with dropout through F.scaled_dot_product_attention (the old path)."""
    dropout_attention.FAST_CPU_DROPOUT_ATTENTION = fast
    torch.manual_seed(0)
    model = build_model("esernet", 7, attn_dropout=attn_dropout).to(device)
    objective = ReconstructionObjective(SegmentLoss(), reconstruction_weight=0.5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.98), weight_decay=0.01)
    batch = {"logmel": torch.randn(batch_size, frames, 128, device=device),
             "mask": torch.ones(batch_size, frames, dtype=torch.bool, device=device),
             "label": torch.randint(0, 7, (batch_size,), device=device),
             "index": torch.arange(batch_size, device=device)}
    try:
        return step_seconds(model, objective, optimizer, batch, repeat, device, bf16)
    finally:
        dropout_attention.FAST_CPU_DROPOUT_ATTENTION = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--frames", default="300,500,800", help="segment lengths in frames (10 ms each)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast in the forward pass")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    frames = [int(f) for f in args.frames.split(",")]
    print(f"esernet training step, batch {args.batch_size}; torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, {args.device} ({cpu_model() or platform.machine()}; native bf16 CPU flags: "
          f"{', '.join(native_bf16_cpu_flags()) or 'none'}), "
          f"{'bfloat16 autocast' if args.bf16 else 'float32'}; median of {args.repeat}")
    print(f"{'frames':>6}  {'attn dropout 0.1 (s)':>20}  {'attn dropout 0 (s)':>18}  {'ratio':>5}  "
          f"{'dropout 0.1, old path (s)':>25}  {'old/new':>7}")
    for t in frames:
        with_drop = esernet_step(0.1, args.batch_size, t, args.repeat, args.device, bf16=args.bf16)
        without = esernet_step(0.0, args.batch_size, t, args.repeat, args.device, bf16=args.bf16)
        old = esernet_step(0.1, args.batch_size, t, args.repeat, args.device, fast=False, bf16=args.bf16)
        print(f"{t:>6}  {with_drop:>20.2f}  {without:>18.2f}  {with_drop / without:>5.1f}  "
              f"{old:>25.2f}  {old / with_drop:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
