"""Checkpoints: written atomically, read with `weights_only=True` (no pickled code runs on load).

Everything stored is a tensor, a number, a string, or a list/dict of those.
"""
import os
import tempfile
from pathlib import Path
from typing import Any, Dict

import torch

from sertk.errors import SertkError
from sertk.fsutil import new_file_mode


class CheckpointError(SertkError):
    """A checkpoint is missing or cannot be read."""


def save_checkpoint(path: Path, state: Dict[str, Any]) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, device: str = "cpu") -> Dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated file, foreign pickle: say which file, not a traceback
        # torch's own message suggests weights_only=False, which would run code from the file
        raise CheckpointError(f"{path}: cannot read checkpoint: damaged, or not written by sertk "
                              f"({e.__class__.__name__})") from None
