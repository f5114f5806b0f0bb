"""MSFPN training-step speed and what length bucketing saves on a real corpus.

    python benchmarks/msfpn_step.py [--batch-size 32] [--frames 100,150,250] [--repeat 2] [--device cpu]
                                    [--bf16] [--attention blocks,offsets]
                                    [--dump egs/emodb/dump/msfpn_logmel --stream logmel]

1. Seconds per training step (forward, CE, backward, Adam) of the default model (67 M parameters) on a
   batch of whole utterances of each length (50 frames/s), for HuBERT-Large input (1024 dims) and for
   the log-mel frontend (80 bands through the 1x1 projection). Inputs are random: the cost does not
   depend on the values. Each figure is the median of --repeat steps after a warm-up. --bf16 runs the
   forward under bfloat16 autocast (as `train.amp: auto` does where the hardware has it); --attention
   times each form of the windowed attention (sertk.models.transformer.BANDED_ATTENTION: `blocks`, the
   default, or `offsets`, what sertk used before) in the same run.
2. With --dump: the frames an epoch computes (batch size x the batch's longest utterance, summed over
   batches) for the dump's utterances with shuffled batches and with `train.bucket` batches, and the
   frames actually there. MSFPN's cost grows about linearly with the padded frames, so the ratio is
   about the epoch-time saving.
"""
import argparse
import platform

import torch

from sertk.envinfo import cpu_model
from sertk.features.storage import load_feats
from sertk.models import build_model, transformer
from sertk.train.data import length_batches
from sertk.train.precision import native_bf16_cpu_flags
from step_timer import step_seconds


def msfpn_step(input_dim: int, projection: bool, batch_size: int, frames: int, repeat: int, device: str,
               bf16: bool) -> float:
    torch.manual_seed(0)
    model = build_model("msfpn", 7, stream="x", input_dim=input_dim, input_projection=projection).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    batch = {"x": torch.randn(batch_size, frames, input_dim, device=device),
             "mask": torch.ones(batch_size, frames, dtype=torch.bool, device=device),
             "label": torch.randint(0, 7, (batch_size,), device=device)}
    return step_seconds(model, lambda out, b: torch.nn.functional.cross_entropy(out["logits"].float(), b["label"]),
                        optimizer, batch, repeat, device, bf16)


def padded_frames(lengths, batches) -> int:
    return sum(len(b) * max(lengths[i] for i in b) for b in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--frames", default="100,150,250", help="utterance lengths in frames (20 ms each)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dump", help="a feature dump whose utterance lengths to batch")
    parser.add_argument("--stream", default="logmel")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast in the forward pass")
    parser.add_argument("--attention", default="blocks", help="comma-separated forms of the windowed attention")
    args = parser.parse_args()
    forms = [f for f in args.attention.split(",") if f]
    if not set(forms) <= {"blocks", "offsets"}:
        parser.error(f"--attention takes blocks and/or offsets, not {args.attention}")
    print(f"msfpn training step, batch {args.batch_size}; torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, {args.device} ({cpu_model() or platform.machine()}; native bf16 CPU flags: "
          f"{', '.join(native_bf16_cpu_flags()) or 'none'}), "
          f"{'bfloat16 autocast' if args.bf16 else 'float32'}; median of {args.repeat}")
    print(f"{'frames':>6}  {'attention':>9}  {'HuBERT 1024-d (s)':>17}  {'log-mel 80 + 1x1 (s)':>20}")
    for t in (int(f) for f in args.frames.split(",") if f):   # --frames "": the padding figures only
        for form in forms:
            transformer.BANDED_ATTENTION = form
            hubert = msfpn_step(1024, False, args.batch_size, t, args.repeat, args.device, args.bf16)
            logmel = msfpn_step(80, True, args.batch_size, t, args.repeat, args.device, args.bf16)
            print(f"{t:>6}  {form:>9}  {hubert:>17.2f}  {logmel:>20.2f}")
    if args.dump:
        lengths = [len(x) for _, x in sorted(load_feats(args.dump, args.stream).items())]
        g = torch.Generator().manual_seed(0)
        shuffled = torch.randperm(len(lengths), generator=g).tolist()
        plain = [shuffled[s:s + args.batch_size] for s in range(0, len(lengths), args.batch_size)]
        bucketed = length_batches(lengths, args.batch_size, g, drop_last=False)
        real, a, b = sum(lengths), padded_frames(lengths, plain), padded_frames(lengths, bucketed)
        print(f"{args.dump}: {len(lengths)} utterances, {real} frames; an epoch computes {a} frames with shuffled "
              f"batches ({a / real:.2f}x), {b} with bucketed batches ({b / real:.2f}x): {a / b:.2f}x fewer")


if __name__ == "__main__":
    main()
