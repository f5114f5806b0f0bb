"""`sertk results keep`: the record of a protocol run's finished folds, without their checkpoints.

A fold's record (its config, environment, training log and epoch history, dev choice and decoded test set)
is small text; its checkpoints are not. A protocol run that spans machines, or sessions that do not keep
exp/ (one fold pair per session, say), keeps the record of every finished and decoded fold somewhere
lasting, and copies them back beside the folds trained later, so that `sertk results collect` pools all of
them. last.pt's bookkeeping (everything but the tensors) goes into `last.yaml`, which the results readers
take where last.pt is absent (sertk.results_dev.read_last). A kept fold cannot be trained on or decoded again.

Nothing is overwritten: a destination file that differs from what would be written stops the command before
it writes anything (one line); identical files are left as they are, so keeping again is harmless. The one
file brought up to date is a kept train.log that the fold's own has only grown since (a recipe's rerun over
finished folds logs a 'skipping' line into each).
"""
import filecmp
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Tuple

import yaml

from sertk.errors import SertkError
from sertk.fsutil import atomic_write_text, atomic_write_with, owned_by
from sertk.results_dev import KEPT_LAST, LAST, find_fold_dirs, read_last

DECODE_TEST = "decode_test"
# last.pt's keys that are not tensors: what a record reader needs (sertk.train.trainer._Run._full_state)
KEPT_STATE_KEYS = ("epoch", "best_ua", "best_epoch", "bad_epochs", "history", "finished", "config", "classes",
                   "fold_checksums", "sertk_version", "autocast")
# checkpoints, packs, TensorBoard event files, pictures the scoring draws again, locks and temp files
_left_out = owned_by(("*.pt", "model.sertk", "tensorboard", "*.png", ".lock", ".*.tmp"))


class KeepError(SertkError):
    """A fold record that cannot be kept (or would overwrite something different)."""


def kept_state(state: dict) -> dict:
    """last.pt's bookkeeping, without its tensors, as plain values."""
    return {k: state[k] for k in KEPT_STATE_KEYS if k in state}


def _run_states(fold_dir: Path) -> Dict[PurePosixPath, dict]:
    """Every training run under the fold (the fold itself, a grid's points), by its path inside the fold."""
    runs = {}
    for folder, _dirs, files in os.walk(fold_dir):
        if LAST in files or KEPT_LAST in files:
            state = read_last(Path(folder))
            runs[PurePosixPath(Path(folder).relative_to(fold_dir).as_posix())] = state
    return runs


def why_not_kept(fold_dir: Path, runs: Dict[PurePosixPath, dict]) -> Optional[str]:
    """None when the fold (its runs: _run_states) is finished and its test set decoded; else the reason."""
    if not runs:
        return "no training run"
    unfinished = [("" if str(rel) == "." else f"{rel}: ") + f"epoch {state.get('epoch')}"
                  for rel, state in runs.items() if not state.get("finished")]
    if unfinished:
        return f"still training ({', '.join(unfinished)})"
    if not (fold_dir / DECODE_TEST / "decode.yaml").is_file():
        return f"test set not decoded yet (no {DECODE_TEST}/decode.yaml)"
    return None


def _fold_files(fold_dir: Path, states: Dict[PurePosixPath, dict]
                ) -> List[Tuple[PurePosixPath, Optional[Path], Optional[str]]]:
    """(path inside the fold, file to copy, or text to write) for every file of the fold's record; `states`:
    its runs' last.pt states (_run_states), already read."""
    out = []
    for folder, dirs, files in os.walk(fold_dir):
        rel_dir = PurePosixPath(Path(folder).relative_to(fold_dir).as_posix())
        dirs[:] = sorted(d for d in dirs if not _left_out(PurePosixPath(d)))
        for name in sorted(files):
            if name == LAST:
                text = yaml.safe_dump(kept_state(states[rel_dir]), sort_keys=False, allow_unicode=True)
                out.append((rel_dir / KEPT_LAST, None, text))
            elif name == KEPT_LAST and LAST in files:
                continue   # a restored twin beside a live last.pt: the last.pt is the record
            elif not _left_out(PurePosixPath(name)):
                out.append((rel_dir / name, Path(folder) / name, None))
    return out


def _differs(dest: Path, source: Optional[Path], text: Optional[str]) -> bool:
    if source is not None:
        return not filecmp.cmp(source, dest, shallow=False)
    return dest.read_text(encoding="utf-8") != text


def _grown_log(target: Path, source: Optional[Path]) -> bool:
    """A kept train.log that the fold's own has only added lines to since (a recipe rerun over finished folds
    logs 'training already finished; skipping' into each): the same record, longer; it is brought up to date."""
    if target.name != "train.log" or source is None:
        return False
    kept, now = target.read_bytes(), source.read_bytes()
    return len(now) > len(kept) and now.startswith(kept)


def keep_folds(src: Path, dest: Path) -> Dict[int, str]:
    """Copy the record of every finished, decoded fold<k> of `src` to `dest`/fold<k>; fold -> what happened."""
    src, dest = Path(src), Path(dest)
    folds = find_fold_dirs(src)
    if not folds:
        raise KeepError(f"{src}: no fold<k> dirs: give a model's exp dir (exp/<protocol>/<model>)")
    if dest.resolve() == src.resolve():
        raise KeepError(f"{dest}: is the exp dir itself; give another destination")
    if src.resolve() in dest.resolve().parents:   # the records would land among the folds they are copied from
        raise KeepError(f"{dest}: is inside the exp dir {src}; give a destination outside it")
    plan, outcome, grown = [], {}, set()
    for k, fold_dir in folds.items():
        runs = _run_states(fold_dir)
        reason = why_not_kept(fold_dir, runs)
        if reason is not None:
            outcome[k] = f"not kept: {reason}"
            continue
        for rel, source, text in _fold_files(fold_dir, runs):
            target = dest / fold_dir.name / rel
            if target.is_file() and _grown_log(target, source):
                grown.add(target)
            elif target.is_dir() or (target.exists() and _differs(target, source, text)):
                raise KeepError(f"{target}: exists and differs from fold {k}'s record in {src}; nothing was "
                                "written (move it away, or keep into another folder)")
            plan.append((target, source, text))
        outcome[k] = "kept"
    for target, source, text in plan:   # every conflict was found above: from here on nothing is overwritten
        if target.exists() and target not in grown:
            continue
        if source is not None:   # through a temp file, so a cut copy leaves no half file to clash with later
            atomic_write_with(target, lambda tmp, source=source: shutil.copyfile(source, tmp))
        else:
            atomic_write_text(target, text)
    if not plan:
        reasons = "; ".join(f"fold{k}: {what.split(': ', 1)[1]}" for k, what in outcome.items())
        raise KeepError(f"{src}: no fold is finished and decoded ({reasons}); nothing kept")
    return outcome
