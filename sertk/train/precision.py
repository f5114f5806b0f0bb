"""Which precision a training step computes in: `train.amp` resolved for the device at hand.

    auto   bfloat16 autocast where the hardware computes bfloat16 natively: a CUDA GPU that supports it,
           or a CPU with AMX or AVX512-BF16 (its oneDNN kernels then run bf16 matrix products at up to
           twice the float32 rate); float32 elsewhere, where emulated bf16 would only be slower.
    true   bfloat16 autocast on any device (forced).
    false  float32.

Only the training step's forward (and so its backward) runs under autocast; weights, optimizer state,
dev evaluation and decoding stay float32. On a CUDA GPU "float32" is torch's default, which sertk leaves as
it is: cuDNN convolutions may compute in TF32 (Ampere and newer), matrix products do not; environment.yaml
records both switches (`tf32`), so a GPU run says what its float32 was.

Runs started before `auto` existed wrote `amp: true`, which then meant "bf16 on a GPU, float32 on a CPU":
`LEGACY_TRUE` keeps them resuming as they began.
"""
from pathlib import Path
from typing import Optional, Tuple, Union

import torch

AMP_CHOICES = ("auto", True, False)
NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
LEGACY_TRUE = "legacy_true"   # the resolved meaning of `amp: true` in a checkpoint older than `auto`


def cpu_flags() -> Tuple[str, ...]:
    """The CPU's feature flags (Linux /proc/cpuinfo), or () where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("flags"):
                return tuple(line.split(":", 1)[1].split())
    except OSError:
        pass
    return ()


def native_bf16_cpu_flags() -> Tuple[str, ...]:
    """The flags of this CPU that mean native bfloat16 arithmetic (empty: none)."""
    flags = set(cpu_flags())
    return tuple(f for f in NATIVE_BF16_CPU_FLAGS if f in flags)


def autocast_dtype(amp: Union[str, bool], device: str) -> Optional[torch.dtype]:
    """torch.bfloat16 when the training step should autocast on `device`, else None (float32)."""
    cuda = device.startswith("cuda")
    if amp is False:
        return None
    if amp is True:
        return torch.bfloat16
    if amp == LEGACY_TRUE:
        return torch.bfloat16 if cuda else None
    if cuda:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if native_bf16_cpu_flags() else None


def precision_record(amp: Union[str, bool], device: str) -> dict:
    """What environment.yaml says about the step's precision, and why."""
    dtype = autocast_dtype(amp, device)
    why = {True: "forced (train.amp: true)", False: "train.amp: false",
           LEGACY_TRUE: "train.amp: true of a run older than amp: auto (bf16 on a GPU only)"}.get(amp)
    if why is None:
        flags = native_bf16_cpu_flags()
        why = ("auto: GPU" if device.startswith("cuda") else
               f"auto: the CPU has {', '.join(flags)}" if flags else "auto: the CPU has no native bf16")
    record = {"autocast": "bfloat16" if dtype is not None else "none (float32)", "why": why}
    if device.startswith("cuda"):
        record["tf32"] = {"cudnn_convolutions": bool(torch.backends.cudnn.allow_tf32),
                          "matmul": bool(torch.backends.cuda.matmul.allow_tf32)}
    return record
