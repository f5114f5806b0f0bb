"""The environment record of a run (ESPnet's RESULTS.md "Environments" block): versions, git hash, devices.

Versions are read from package metadata, so recording them never imports librosa; torch is
imported only to ask for the GPU name.
"""
import datetime
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Mapping, Optional

import sertk

PACKAGES = ("torch", "numpy", "librosa")
# how the keys of `environment()` read in markdown; other keys (e.g. of a training record) as they are
_LABELS = {"date": "date", "python": "python version", "platform": "platform", "cpu": "CPU", "gpu": "GPU",
           "torch": "pytorch version", "numpy": "numpy version", "librosa": "librosa version",
           "sertk": "sertk version", "git_hash": "Git hash", "git_dirty": "uncommitted changes",
           "command": "command"}


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> Optional[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _gpu_name() -> Optional[str]:
    try:
        import torch
        if torch.cuda.is_available():
            return f"{torch.cuda.get_device_name(0)} (x{torch.cuda.device_count()})"
    except Exception:  # no torch, or a broken CUDA setup: the record says none rather than failing
        pass
    return None


def _git(*args: str) -> Optional[str]:
    # --no-optional-locks: a status query must not rewrite the index of a checkout someone is using
    try:
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(_checkout()), *args],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _checkout() -> Path:
    return Path(sertk.__file__).resolve().parent.parent


def git_hash() -> Optional[str]:
    """HEAD of the sertk checkout, or None when sertk is not installed from a git checkout.

    The checkout's top level must be the folder holding the `sertk` package, so a site-packages
    install inside some other repository does not report that repository's hash.
    """
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != _checkout():
        return None
    return _git("rev-parse", "HEAD")


def _git_dirty() -> Optional[bool]:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def environment() -> dict:
    """Date, python, platform, CPU, GPU (None if none), package versions, git hash and command line."""
    head = git_hash()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "gpu": _gpu_name(),
        **{name: _version(name) for name in PACKAGES},
        "sertk": sertk.__version__,
        "git_hash": head,
        "git_dirty": _git_dirty() if head else None,
        "command": shlex.join(sys.argv),
    }


def _show(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def environment_markdown(env: Mapping, title: str = "Environment") -> str:
    """An ESPnet-style block: a heading and one `- label: \\`value\\`` line per key."""
    lines = [f"## {title}", ""]
    lines += [f"- {_LABELS.get(k, k)}: `{_show(v)}`" for k, v in env.items()]
    return "\n".join(lines) + "\n"
