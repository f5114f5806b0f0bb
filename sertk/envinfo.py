"""The environment record of a run (ESPnet's RESULTS.md "Environments" block): versions, git hash, devices.

Versions are read from package metadata, so recording them never imports librosa; torch is
imported only to ask for the GPU name.

A training run writes its record to `environment.yaml` when it starts (`write_run_environment`), and adds
one entry under `resumed` each time it is resumed from last.pt or trained on (`add_resume`): a run that
spans sessions may continue under another commit or on another machine, and its RESULTS.md lists every
commit each fold trained under (sertk.results_training).
"""
import datetime
import logging
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import List, Mapping, Optional

import yaml

import sertk
from sertk.fsutil import atomic_write_text

ENV_FILE = "environment.yaml"
RESUMED = "resumed"   # environment.yaml's list of resumes: each one's epoch and RESUME_KEYS of its environment
RESUME_KEYS = ("date", "cpu", "gpu", "device", "torch", "git_hash", "git_dirty", "command")
logger = logging.getLogger(__name__)
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


def cpu_model() -> Optional[str]:
    """The CPU's model name (/proc/cpuinfo), for environment records and the benchmarks' machine line."""
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
        "cpu": cpu_model(),
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


def resume_entries(env: Mapping) -> List[dict]:
    """An environment record's resumes (add_resume's entries), in order; anything there that is not one is
    left out, so a damaged record never stops a reader."""
    resumes = env.get(RESUMED)
    return [r for r in resumes if isinstance(r, dict)] if isinstance(resumes, list) else []


def write_run_environment(exp_dir: Path, env: Mapping) -> None:
    """A new run's environment.yaml."""
    atomic_write_text(Path(exp_dir) / ENV_FILE, yaml.safe_dump(dict(env), sort_keys=False))


def add_resume(exp_dir: Path, after_epoch: int, env: Mapping) -> None:
    """Add to environment.yaml that the run went on after `after_epoch` in `env` (a run from before
    environment.yaml existed gets one holding only this entry)."""
    path = Path(exp_dir) / ENV_FILE
    try:
        record = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        record = e
    if not isinstance(record, dict):   # not sertk's record: left as it is, and said
        logger.warning(f"{path}: not an environment record ({record}); this resume is not recorded in it")
        return
    entry = {"after_epoch": int(after_epoch), **{k: env.get(k) for k in RESUME_KEYS}}
    record[RESUMED] = resume_entries(record) + [entry]
    atomic_write_text(path, yaml.safe_dump(record, sort_keys=False))
