"""`sertk results dev --losses`: how each fold's training went on dev, from its epoch history in last.pt.

The question it answers is what limits a run, measured without test data: a fold whose dev loss was
lowest in its first epochs while its training loss fell towards zero memorised its training speakers;
a fold whose best dev score came in its last epochs had more to learn. One table per run: the epochs
run, the best dev score of train.select's metric and its epoch, the lowest dev loss and its epoch, and
the dev and training losses at the best epoch and at the last one. Like `sertk results dev`, it reads
training's records only, never a decode dir.
"""
import math
from pathlib import Path
from typing import List, Optional

from sertk.config.schema import SELECT_METRICS
from sertk.gridrecord import GRID_FILE, best_point, read_grid_record
from sertk.results_dev import DevTableError, markdown_table, read_last, run_folds

HEADER = ["fold", "epochs run", "best dev {metric} (epoch)", "lowest dev loss (epoch)",
          "dev loss at best / last", "train loss at best / last"]


def fit_tables(exp_dirs: List[Path]) -> str:
    """One markdown table per run in `exp_dirs` (each a model's exp dir or one fold's)."""
    return "\n\n".join(_run_table(Path(d)) for d in exp_dirs)


def _run_table(exp_dir: Path) -> str:
    rows, metrics = [], set()
    for number, fold_dir in run_folds(exp_dir).items():
        state = _training_state(fold_dir)
        if state is None:
            rows.append([str(number), "not started"] + [""] * (len(HEADER) - 2))
            continue
        metrics.add(SELECT_METRICS[state["config"]["train"].get("select", "ua")])
        rows.append([str(number)] + _fold_cells(state))
    header = [h.format(metric=" / ".join(sorted(metrics)) or "score") for h in HEADER]
    return f"{exp_dir}:\n\n" + markdown_table(header, rows)


def _training_state(fold_dir: Path) -> Optional[dict]:
    """The fold's last.pt; for a grid, that of the chosen point (or, while the grid runs, the best so far)."""
    if (fold_dir / GRID_FILE).is_file():
        best = best_point(read_grid_record(fold_dir / GRID_FILE, DevTableError)["points"])
        if best is None:
            return None
        fold_dir = fold_dir / str(best["dir"])
    return read_last(fold_dir)


def _fold_cells(state: dict) -> List[str]:
    # epochs with both losses (a record from before sertk logged them has none: its loss cells are "-")
    history = {h["epoch"]: h for h in state.get("history", []) if "dev_loss" in h and "train_loss" in h}
    run = f"{state['epoch']} of {state['config']['train']['epochs']}" + ("" if state.get("finished") else ", running")
    refit = state["config"]["train"].get("refit_epochs") is not None   # trained on dev: no dev figures
    best_cell = f"{100 * state['best_ua']:.2f} ({state['best_epoch']})" if state["best_epoch"] and not refit else "-"
    if not history:
        return [run, best_cell, "-", "-", "-"]
    last, best = history[max(history)], history.get(state["best_epoch"])
    finite = [h for h in history.values() if math.isfinite(h["dev_loss"])]    # a diverged epoch's nan is no minimum
    lowest = min(finite, key=lambda h: (h["dev_loss"], h["epoch"])) if finite else None
    lowest_cell = f"{lowest['dev_loss']:.3f} ({lowest['epoch']})" if lowest else "-"

    def at_best_and_last(key: str) -> str:
        return f"{best[key]:.3f} / {last[key]:.3f}" if best else f"- / {last[key]:.3f}"
    return [run, best_cell, lowest_cell, at_best_and_last("dev_loss"), at_best_and_last("train_loss")]
