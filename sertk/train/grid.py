"""Hyper-parameters chosen on dev, per fold: every point of the config's grid trained, the best kept.

`sertk train --exp E` with a grid of more than one point (sertk.config.loading: `grid:` and `--grid`)
trains each point in this process into its own exp dir, `E/grid/<k>_<values>/` (config: the base
config with the point's values set and the grid emptied; resumable from its own last.pt, a finished
point skipped), then picks the point with the best dev score (train.select; ties: the earliest point).
Test data is never read. E then becomes the chosen point's exp dir for everything downstream: its
best.pt, config.yaml, environment.yaml and train.log are copied into E (atomically, best.pt last),
so `sertk decode --exp E`, `sertk pack E` and the recipe's later stages work as after a plain run.
E holds no last.pt: the points resume from their own.

`E/grid.yaml` records the base config, the grid, every point's values, dir, dev score and best epoch,
and `chosen` (null until every point is trained). A point whose training loss goes non-finite is recorded
as `diverged` (its reason) and left out of the choice; the others go on. It is written when the grid starts and when it
ends, so the same command in the same E resumes the grid (the points resume or skip themselves), a
finished grid is skipped (E's copies made again if they were removed), and another config or grid
in that E is refused, as is a plain run there (or a grid in a plain run's E). Under torchrun every
process trains every point together, in one process group, and only rank 0 writes grid.yaml and copies.

A grid of one point is a plain run in E (its values set), with no grid dir.
"""
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import yaml

from sertk.fsutil import atomic_write_text, atomic_write_with, sha256_file
from sertk.config.loading import ConfigError, grid_points, point_config, point_text, with_new_defaults
from sertk.gridrecord import GRID_FILE, best_point, read_grid_record
from sertk.results_dev import REFIT_FILE
from sertk.train.distributed import Ranks, keep_group, ranks_from_environment
from sertk.train.expdir import GRID_DIR, check_exp_dir
from sertk.train.extend import config_change_text
from sertk.train.folddata import check_trained_inputs
from sertk.train.trainer import TrainingDiverged, TrainSummary, train

log = logging.getLogger(__name__)

# what E takes from the chosen point; best.pt last, as the recipe takes E/best.pt for a finished model
CHOSEN_FILES = ("config.yaml", "environment.yaml", "train.log", "best.pt")
_SLUG_MAX = 60


@dataclass
class GridOutcome:
    points: List[Dict[str, Any]]     # grid.yaml's points: values, dir, dev_score, best_epoch, epochs_run
    chosen: Dict[str, Any]           # grid.yaml's chosen: point, values, dir, dev_score, best_epoch, best_sha256
    metric: str
    skipped: bool                    # the grid had finished before: nothing was trained


def train_experiment(config: Dict[str, Any], fold_dir: Path, dump_dir: Path, exp_dir: Path, device: str = "cpu",
                     ranks: Optional[Ranks] = None, report: Callable[[str], None] = log.info):
    """`sertk train`: a plain run (TrainSummary) when the grid has one point, else every point and the
    choice (GridOutcome). `report` gets one line per point and the choice (rank 0 only)."""
    ranks = ranks or ranks_from_environment()
    exp_dir = Path(exp_dir)
    check_exp_dir(exp_dir)
    if config["train"]["refit_epochs"] is not None:   # it trains on dev: only a refit of a dev choice may
        raise ConfigError("train.refit_epochs is set by sertk refit (it trains on dev, so nothing could be chosen "
                          "there); run sertk refit on a finished run instead")
    if (exp_dir / REFIT_FILE).is_file():
        raise ConfigError(f"{exp_dir} holds a refit ({REFIT_FILE}); give sertk train a new exp dir")
    points = grid_points(config["grid"])
    if len(points) == 1:
        if (exp_dir / GRID_FILE).is_file():
            raise ConfigError(f"{exp_dir} holds a grid run ({GRID_FILE}); a plain run needs its own exp dir: "
                              "give a new one or remove it")
        return train(point_config(config, points[0]), fold_dir, dump_dir, exp_dir, device, ranks)
    return train_grid(config, fold_dir, dump_dir, exp_dir, device, ranks, report)


def point_dir_name(number: int, point: Dict[str, Any], total: int) -> str:
    """`<k>_<values>`: k from 1, zero-padded so the dirs list in order, then each key's last part and value,
    e.g. `03_lr0.001_channels8-16`."""
    parts = [f"{key.rpartition('.')[2]}{_value_slug(value)}" for key, value in point.items()]
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "-", "_".join(parts)).strip("-")[:_SLUG_MAX].rstrip("-_")
    return f"{number:0{len(str(total))}d}_{slug}"


def _value_slug(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "-".join(_value_slug(v) for v in value)
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value) if isinstance(value, float) else str(value)


def train_grid(config: Dict[str, Any], fold_dir: Path, dump_dir: Path, exp_dir: Path, device: str,
               ranks: Ranks, report: Callable[[str], None] = log.info) -> GridOutcome:
    exp_dir = Path(exp_dir)
    say = report if ranks.main else (lambda line: None)
    grid_file = exp_dir / GRID_FILE
    # every process decides from the files as they were before this run wrote anything (rank 0 writes the
    # same config into grid.yaml first, so a process that reads it late decides alike)
    previous = read_grid_record(grid_file, ConfigError) if grid_file.is_file() else None
    if previous is not None:
        before = with_new_defaults(previous.get("config") or {})
        if before != config or list(before.get("grid") or {}) != list(config["grid"]):   # the key order too
            changed = config_change_text(before, config) or "the grid's key order"
            raise ConfigError(f"{exp_dir} was trained with another config or grid ({changed}); give a new exp dir or "
                              f"remove it (compare {grid_file})")
        if previous.get("chosen"):
            chosen = previous["chosen"]
            if ranks.main and not (exp_dir / "best.pt").is_file() and (exp_dir / chosen["dir"] / "best.pt").is_file():
                _adopt(exp_dir / chosen["dir"], exp_dir)   # E's copy was removed: the chosen point's again
            for checkpoint in (exp_dir / "best.pt", exp_dir / chosen["dir"] / "best.pt"):
                if checkpoint.is_file():   # finished on this fold and these features, or the command is another's
                    check_trained_inputs(checkpoint, Path(fold_dir), Path(dump_dir),
                                         "give that fold and dump, or a new exp dir")
                    break
            say(f"{exp_dir}: grid already finished; chose point {chosen['point']} of {len(previous['points'])} "
                f"({point_text(chosen['values'])}), best dev {previous['metric']} {chosen['dev_score']:.4f}; skipping")
            return GridOutcome(previous["points"], chosen, previous["metric"], True)
    elif (exp_dir / "last.pt").is_file():
        raise ConfigError(f"{exp_dir} holds a plain run (last.pt); a grid needs its own exp dir: give a new one "
                          "or remove it")
    points = grid_points(config["grid"])
    names = [point_dir_name(i + 1, p, len(points)) for i, p in enumerate(points)]
    record = {"grid": config["grid"], "metric": None, "chosen": None,
              "points": [{"point": i + 1, "values": p, "dir": f"{GRID_DIR}/{name}", "dev_score": None,
                          "best_epoch": None, "epochs_run": None} for i, (p, name) in enumerate(zip(points, names))],
              "config": config}
    if ranks.main:
        _write_grid(grid_file, record)
    with keep_group(ranks, device):   # under torchrun: one process group for all points
        for entry, point in zip(record["points"], points):
            try:
                summary: TrainSummary = train(point_config(config, point), fold_dir, dump_dir,
                                              exp_dir / entry["dir"], device, ranks)
            except TrainingDiverged as e:   # not a choice: the others go on (a rerun diverges again, alike)
                entry["diverged"] = str(e)
                if ranks.main:
                    _write_grid(grid_file, record)
                say(f"[{entry['point']}/{len(points)}] {exp_dir / entry['dir']}: {point_text(point)}: diverged ({e}); "
                    "left out of the choice")
                continue
            entry.update(dev_score=float(summary.best_dev_score), best_epoch=summary.best_epoch,
                         epochs_run=summary.epochs_run)
            record["metric"] = summary.metric
            if ranks.main:   # each point's score as it comes: `sertk results dev` shows the best so far
                _write_grid(grid_file, record)
            say(f"[{entry['point']}/{len(points)}] {exp_dir / entry['dir']}: {point_text(point)}: best dev "
                f"{summary.metric} {summary.best_dev_score:.4f} at epoch {summary.best_epoch} "
                f"({summary.epochs_run} epochs)")
    best = best_point(record["points"])   # every point is trained here, but for diverged ones; ties: the earliest
    if best is None:
        raise ConfigError(f"{exp_dir}: every point of the grid diverged (the training loss went non-finite; "
                          f"see {grid_file}); lower optim.lr or change the grid, in a new exp dir")
    chosen_dir = exp_dir / best["dir"]
    chosen = {"point": best["point"], "values": best["values"], "dir": best["dir"], "dev_score": best["dev_score"],
              "best_epoch": best["best_epoch"], "best_sha256": None}
    if ranks.main:
        _adopt(chosen_dir, exp_dir)
        if (exp_dir / "best.pt").is_file():   # none only if no epoch improved on dev (a guard: train.epochs >= 1 is checked on loading)
            chosen["best_sha256"] = sha256_file(exp_dir / "best.pt")
        record["chosen"] = chosen
        _write_grid(grid_file, record)
    say(f"{exp_dir}: chose point {best['point']} of {len(points)} ({point_text(best['values'])}), best dev "
        f"{record['metric']} {best['dev_score']:.4f} at epoch {best['best_epoch']}; its best.pt, config.yaml, "
        f"environment.yaml and train.log copied into {exp_dir}")
    return GridOutcome(record["points"], chosen, record["metric"], False)


def _write_grid(path: Path, record: Dict[str, Any]) -> None:
    header = ("# sertk train: the hyper-parameter grid of this exp dir, each point trained in its dir and scored "
              "on dev;\n# chosen: the point whose best.pt, config.yaml, environment.yaml and train.log are this "
              "dir's (null until all are trained);\n# config: the base config (with the grid) this dir was "
              "trained with\n")
    atomic_write_text(path, header + yaml.dump(record, Dumper=_PlainDumper, sort_keys=False))


class _PlainDumper(yaml.SafeDumper):
    """Every value written out where it stands (no &anchors and *aliases for repeated objects)."""

    def ignore_aliases(self, data) -> bool:
        return True


def _adopt(chosen_dir: Path, exp_dir: Path) -> None:
    """The chosen point's files copied into E, each atomically, best.pt last."""
    for name in CHOSEN_FILES:
        if (chosen_dir / name).is_file():
            atomic_write_with(exp_dir / name, lambda tmp, src=chosen_dir / name: shutil.copyfile(src, tmp))
