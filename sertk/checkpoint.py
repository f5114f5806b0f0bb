"""Checkpoints: written atomically, read with `weights_only=True` (no pickled code runs on load).

Everything stored is a tensor, a number, a string, or a list/dict of those.
"""
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from sertk.errors import SertkError
from sertk.fsutil import atomic_write_with


class CheckpointError(SertkError):
    """A checkpoint is missing or cannot be read."""


def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    atomic_write_with(path, lambda tmp: torch.save(state, tmp))


# what a checkpoint's atomic write leaves when its process is killed mid-write (a session's end, a lost job):
# `.last.pt.<random>.tmp`, up to the checkpoint's size, in the run's folder (and in grid points' folders)
STALE_TEMP_GLOBS = (".*.pt.*.tmp", "grid/*/.*.pt.*.tmp")


def remove_stale_checkpoint_temps(exp_dir: Path) -> Tuple[int, int]:
    """Remove the half-written checkpoint temp files of killed runs in `exp_dir`; (files, bytes) removed.
    Only for a caller that holds the exp dir's lock: then no other process is writing one."""
    files = size = 0
    for pattern in STALE_TEMP_GLOBS:
        for tmp in Path(exp_dir).glob(pattern):
            if tmp.is_file() and not tmp.is_symlink():
                size += tmp.stat().st_size
                tmp.unlink()
                files += 1
    return files, size


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
