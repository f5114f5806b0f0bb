"""How each fold of a model was trained, for RESULTS.md: the code, the machine, the epochs and their time.

A protocol run may span sessions, machines and commits (a fold resumed from last.pt after a break). The
record a reader needs to trust a row is per fold: every commit the fold trained under (environment.yaml:
the one it started with and one per resume, sertk.envinfo.add_resume), whether any of them had
uncommitted changes, the device and precision, the epochs run and how long they took (last.pt's history:
each epoch's training pass, and, for runs trained since it was recorded, the whole epoch with dev scoring).
A fold trained with a grid counts every point it trained. Nothing here reads a decode dir.
"""
import statistics
from pathlib import Path
from typing import List, Optional, Sequence

from sertk.envinfo import ENV_FILE, RESUMED, resume_entries
from sertk.errors import ScoreError
from sertk.gridrecord import GRID_FILE, read_grid_record
from sertk.results_dev import has_training_state, markdown_table, read_last
from sertk.yamlutil import read_yaml_file

SHORT_HASH = 7


def _run_dirs(fold_dir: Path) -> List[Path]:
    """The exp dirs that trained the fold: itself, or each point of its grid."""
    if (fold_dir / GRID_FILE).is_file():
        points = read_grid_record(fold_dir / GRID_FILE, ScoreError)["points"]
        return [fold_dir / str(p["dir"]) for p in points if has_training_state(fold_dir / str(p["dir"]))]
    return [fold_dir] if has_training_state(fold_dir) else []


def _environments(run_dir: Path) -> List[dict]:
    """The run's start environment, then one per resume (each with its `after_epoch`)."""
    path = run_dir / ENV_FILE
    env = read_yaml_file(path, ScoreError) if path.is_file() else {}   # a mapping, or a one-line ScoreError
    start = {k: v for k, v in env.items() if k != RESUMED}
    return ([start] if start else []) + resume_entries(env)


def _complete_sum(values: Sequence[Optional[float]]) -> Optional[float]:
    """The sum; None when a value is missing (an epoch or a fold from before it was recorded) or there is none."""
    return float(sum(values)) if values and all(v is not None for v in values) else None


def fold_training(fold_dir: Path) -> Optional[dict]:
    """The fold's training record (see the module doc); None when the fold holds no training run."""
    runs = _run_dirs(Path(fold_dir))
    if not runs:
        return None
    envs = [env for run in runs for env in _environments(run)]
    lasts = [read_last(run) or {} for run in runs]
    history = [epoch for last in lasts for epoch in last.get("history", [])]
    commits = list(dict.fromkeys(str(e["git_hash"])[:SHORT_HASH] for e in envs if e.get("git_hash")))
    rates = [e["segments_per_second"] for e in history if e.get("segments_per_second") is not None]
    first = envs[0] if envs else {}
    return {
        "runs": len(runs),
        "commits": commits,
        "uncommitted": any(bool(e.get("git_dirty")) for e in envs),
        "resumes": sum(1 for e in envs if "after_epoch" in e),
        "device": first.get("device"),
        "cpu": first.get("cpu"),
        "gpu": first.get("gpu"),
        "autocast": (first.get("precision") or {}).get("autocast"),
        # code from before resumes were recorded wrote no epoch_seconds: a resume by it may be missing above
        "resumes_complete": bool(history) and all("epoch_seconds" in epoch for epoch in history),
        "epochs": len(history),
        "finished": all(last.get("finished", True) for last in lasts),   # (checkpoints before the flag: finished)
        "train_seconds": _complete_sum([epoch.get("seconds") for epoch in history]),
        "epoch_seconds": _complete_sum([epoch.get("epoch_seconds") for epoch in history]),
        "median_segments_per_second": statistics.median(rates) if rates else None,
    }


def _precision_text(autocast: Optional[str]) -> str:
    """environment.yaml's autocast record: a dtype, or none (written 'none (float32)' by some versions)."""
    return "float32" if not autocast or str(autocast).startswith("none") else str(autocast)


def _minutes(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f}"


def _device_text(t: dict) -> str:
    machine = t["gpu"] if str(t["device"] or "").startswith("cuda") else t["cpu"]
    return f"{t['device'] or '-'} ({machine})" if machine else str(t["device"] or "-")


def training_markdown(per_fold: Sequence[dict]) -> str:
    """The "Training per fold" table and its totals; empty when no fold holds a training record."""
    folds = [(f["fold"], f["training"]) for f in per_fold if f.get("training")]
    if not folds:
        return ""
    header = ["fold", "code (commits)", "uncommitted changes", "device", "precision", "epochs",
              "training minutes", "epoch minutes (with dev)", "median segments/s"]
    rows = [[name, (", ".join(f"`{c}`" for c in t["commits"]) or "-") + ("" if t["resumes_complete"] else " *"),
             "yes" if t["uncommitted"] else "no",
             _device_text(t), _precision_text(t["autocast"]),
             str(t["epochs"]) + (f" ({t['runs']} grid points)" if t["runs"] > 1 else "")
             + ("" if t.get("finished", True) else " (still training)"),
             _minutes(t["train_seconds"]), _minutes(t["epoch_seconds"]),
             "-" if t["median_segments_per_second"] is None else f"{t['median_segments_per_second']:.1f}"]
            for name, t in folds]
    trainings = [t for _, t in folds]
    total = _complete_sum([t["train_seconds"] for t in trainings])
    epoch_total = _complete_sum([t["epoch_seconds"] for t in trainings])
    resumed = sum(t["resumes"] for t in trainings)
    note = ("Code: the commit each fold started under, then any other it was resumed under (environment.yaml; "
            f"{resumed} resume(s) recorded; *: trained at least partly by code that recorded neither resumes nor "
            "epoch minutes, so a resume may be missing). Training minutes: the epochs' training passes (last.pt's "
            "history); epoch minutes add dev scoring. Folds trained side by side overlap in wall time.")
    if total is not None:
        training_still = sum(not t.get("finished", True) for t in trainings)
        so_far = f" ({training_still} still training: so far)" if training_still else ""
        note += f" Summed over the {len(trainings)} folds{so_far}: {total / 60:.1f} training minutes"
        note += f", {epoch_total / 60:.1f} epoch minutes." if epoch_total is not None else "."
    return markdown_table(header, rows) + "\n" + note + "\n"
