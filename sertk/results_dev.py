"""`sertk results dev`: the dev scores that chose each fold's checkpoint, several runs side by side.

A model's variants (a config option, a normalisation, a schedule) are compared on dev, never on test.
This reads only what training wrote, each fold's `last.pt` (its epoch history and best dev score) or,
for a fold trained with a grid, its `grid.yaml` (for a refit, `refit.yaml`: the choice it retrained); it
never opens a decode dir, so comparing runs with it cannot look at test data. It works while the runs are
still training: an unfinished fold shows its best so far and is left out of the mean, which is taken over the
folds that every run has finished.
"""
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Type

from sertk.config.schema import SELECT_METRICS
from sertk.errors import SertkError
from sertk.gridrecord import GRID_FILE, best_point, read_grid_record
from sertk.yamlutil import read_yaml_file

LAST = "last.pt"
KEPT_LAST = "last.yaml"     # last.pt without its tensors, in a fold record kept without checkpoints (results_keep)
REFIT_FILE = "refit.yaml"   # a refit's record of the dev-selected run it retrained (sertk.train.refit)
REFIT_KEYS = ("source", "best_epoch", "dev_score", "metric", "point", "source_best_sha256")
_FOLD_RE = re.compile(r"fold(\d+)$")


class DevTableError(SertkError):
    """A path given to `sertk results dev` that holds no training run."""


@dataclass(frozen=True)
class DevScore:
    """One fold's dev selection: the best score of its train.select metric and when it came."""
    score: float           # 0-1, of `metric`
    metric: str            # "UA" or "(WA + UA) / 2"
    best_epoch: int
    epochs_run: int
    epochs: int            # train.epochs of the config: the most it may run
    finished: bool
    point: Optional[str] = None    # a grid's chosen point (its values), None for a plain run

    def cell(self) -> str:
        where = f"epoch {self.best_epoch} of {self.epochs_run}"
        if not self.finished:
            where += f" so far, max {self.epochs}"
        text = f"{100 * self.score:.2f} ({where})"
        return text + (f", {self.point}" if self.point else "")


def find_fold_dirs(model_exp_dir: Path) -> Dict[int, Path]:
    """fold number -> `fold<k>/` dir, in numeric order (fold10 after fold9)."""
    found: Dict[int, Path] = {}
    for p in sorted(Path(model_exp_dir).iterdir()):
        m = _FOLD_RE.fullmatch(p.name) if p.is_dir() else None
        if m is None:
            continue
        k = int(m.group(1))
        if k in found:   # fold1 and fold01: one would be read, the other ignored, whichever the listing gave last
            raise SertkError(f"{model_exp_dir}: {found[k].name} and {p.name} are both fold {k}; keep one")
        found[k] = p
    return dict(sorted(found.items()))


def fold_dev_score(fold_dir: Path) -> Optional[DevScore]:
    """The dev selection of one fold's exp dir; None when its training has not started. A refit's is the
    selection it retrained (its refit.yaml), finished once the refit is."""
    if (fold_dir / GRID_FILE).is_file():
        return _grid_dev_score(fold_dir)
    state = read_last(fold_dir)
    refit = read_refit_record(fold_dir)
    if refit is not None:
        return _refit_dev_score(refit, state)
    if state is None:
        return None
    train_cfg = state["config"]["train"]
    return DevScore(state["best_ua"], SELECT_METRICS[train_cfg.get("select", "ua")], state["best_epoch"],
                    state["epoch"], train_cfg["epochs"], bool(state.get("finished")))


def read_refit_record(fold_dir: Path, error: Type[Exception] = DevTableError) -> Optional[dict]:
    """`fold_dir`'s refit.yaml (sertk.train.refit writes it), checked; None when the fold is not a refit."""
    path = Path(fold_dir) / REFIT_FILE
    if not path.is_file():
        return None
    record = read_yaml_file(path, error)
    missing = [k for k in REFIT_KEYS if k not in record]
    if missing:
        raise error(f"{path}: not a refit record (no {', '.join(missing)})")
    return record


def _refit_dev_score(record: dict, state: Optional[dict]) -> DevScore:
    epochs = record["best_epoch"]
    where = f"refit on train + dev of {record['source']}" + (f" ({record['point']})" if record["point"] else "")
    return DevScore(record["dev_score"], record["metric"], epochs, state["epoch"] if state else 0, epochs,
                    bool(state and state.get("finished")), where)


def has_training_state(run_dir: Path) -> bool:
    """Does the dir hold a training run's state: its last.pt, or a kept record's last.yaml?"""
    return (run_dir / LAST).is_file() or (run_dir / KEPT_LAST).is_file()


def read_last(fold_dir: Path) -> Optional[dict]:
    """The fold's last.pt, its tensors memory-mapped, not read; where only a kept record of the run is left
    (sertk.results_keep), its last.yaml: the same without tensors. None when there is neither."""
    if not (fold_dir / LAST).is_file():
        if (fold_dir / KEPT_LAST).is_file():
            return read_yaml_file(fold_dir / KEPT_LAST, DevTableError)
        return None
    from sertk.checkpoint import load_checkpoint   # torch: not imported with the CLI (sertk config get must not)
    return load_checkpoint(fold_dir / LAST, mmap=True)


def dev_record(fold_dir: Path) -> Optional[dict]:
    """fold_dev_score as plain values (metrics.json, RESULTS.md); None when the fold holds no training record."""
    score = fold_dev_score(fold_dir)
    return asdict(score) if score is not None else None


def _grid_dev_score(fold_dir: Path) -> Optional[DevScore]:
    """A grid's choice (or, while it runs, its best point so far) from grid.yaml."""
    grid = read_grid_record(fold_dir / GRID_FILE, DevTableError)
    best = best_point(grid["points"])
    if best is None:
        return None
    values = ", ".join(f"{k}={v}" for k, v in best["values"].items())
    epochs = grid.get("config", {}).get("train", {}).get("epochs", best.get("epochs_run", best["best_epoch"]))
    return DevScore(best["dev_score"], grid.get("metric", "UA"), best["best_epoch"],
                    best.get("epochs_run", best["best_epoch"]), epochs, grid.get("chosen") is not None,
                    f"grid point {best['point']} of {len(grid['points'])}: {values}")


def run_folds(exp_dir: Path) -> Dict[int, Path]:
    """fold number -> exp dir: a model's `fold<k>/` dirs, or `exp_dir` itself if it is one fold's run."""
    exp_dir = Path(exp_dir)
    folds = find_fold_dirs(exp_dir) if exp_dir.is_dir() else {}
    if folds:
        return folds
    if any((exp_dir / name).is_file() for name in (LAST, KEPT_LAST, GRID_FILE, REFIT_FILE)):
        named = _FOLD_RE.fullmatch(exp_dir.name)
        return {int(named.group(1)) if named else 1: exp_dir}
    raise DevTableError(f"{exp_dir}: no fold<k> dirs and no {LAST}, {KEPT_LAST}, {GRID_FILE} or {REFIT_FILE}: "
                        "not a training run's exp dir")


def dev_table(exp_dirs: List[Path]) -> str:
    """A markdown table: one row per fold, one column per run, then the mean over the folds all runs finished."""
    runs = {str(d): {k: fold_dev_score(f) for k, f in run_folds(d).items()} for d in exp_dirs}
    folds = sorted(set().union(*runs.values()))
    metrics = {name: {s.metric for s in scores.values() if s} for name, scores in runs.items()}
    header = ["fold"] + [f"{name} (dev {' / '.join(sorted(m)) or 'score'})" for name, m in metrics.items()]
    rows = [[str(k)] + [(s.cell() if (s := scores.get(k)) else "not started" if k in scores else "-")
                        for scores in runs.values()] for k in folds]
    common = [k for k in folds if all((s := scores.get(k)) is not None and s.finished for scores in runs.values())]
    if common:
        rows.append([f"mean, folds {','.join(map(str, common))}"] +
                    [f"{100 * sum(scores[k].score for k in common) / len(common):.2f}" for scores in runs.values()])
    else:
        rows.append(["mean", "no fold finished in every run"] + [""] * (len(runs) - 1))
    return markdown_table(header, rows)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table, no newline after it (also RESULTS.md's tables, sertk.results_md)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
