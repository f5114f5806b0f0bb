"""Checkpoints: written atomically, read with `weights_only=True` (no pickled code runs on load).

Everything stored is a tensor, a number, a string, or a list/dict of those.
"""
from pathlib import Path
from typing import Any, Dict

import torch

from sertk.errors import SertkError
from sertk.fsutil import atomic_write_with


class CheckpointError(SertkError):
    """A checkpoint is missing or cannot be read."""


def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    atomic_write_with(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path, device: str = "cpu", mmap: bool = False) -> Dict[str, Any]:
    """The checkpoint's state; with `mmap`, its tensors are mapped from the file, not read (for reading the
    small fields of a big checkpoint)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except Exception as e:  # truncated file, foreign pickle: say which file, not a traceback
        # torch's own message suggests weights_only=False, which would run code from the file
        raise CheckpointError(f"{path}: cannot read checkpoint: damaged, or not written by sertk "
                              f"({e.__class__.__name__})") from None
