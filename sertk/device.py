"""`--device` of the commands that run torch (features extract, train, decode, infer), checked against this machine.

torch is imported when a device is checked, so a command line that imports this module still starts without it.
"""
import re
from typing import Optional

from sertk.errors import DeviceError


def pick_device(device: Optional[str]) -> str:
    """--device checked against this machine (cpu, cuda or cuda:N torch can use); None: cuda if available."""
    import torch
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return check_device(device)


def check_device(device: str) -> str:
    """`device` when it is cpu, or cuda / cuda:N that torch can use here; else a one-line DeviceError."""
    import torch
    found = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", device.strip())
    if found is None or (found.group(1) == "cpu" and found.group(2) is not None):
        raise DeviceError(f"--device {device!r} is not a device; give cpu, cuda or cuda:N")
    if found.group(1) == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is built without CUDA" if torch.version.cuda is None
                   else "no CUDA device is visible to this torch")
            raise DeviceError(f"--device {device}: CUDA is not available ({why}: torch {torch.__version__}); "
                              "use --device cpu")
        count = torch.cuda.device_count()
        if found.group(2) is not None and int(found.group(2)) >= count:
            raise DeviceError(f"--device {device}: this machine has {count} CUDA device(s), "
                              f"{'cuda:0' if count == 1 else f'cuda:0 to cuda:{count - 1}'}")
    return device.strip()
