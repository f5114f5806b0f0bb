"""`sertk refit`: a fold's dev-chosen set-up trained again on train + dev, its final model kept.

After `sertk train --exp E` has chosen on dev (E/best.pt: the best epoch; after a grid, E/config.yaml is the
chosen point's config), `refit(E, fold_dir, dump_dir, O)` trains E's config from scratch in O on the fold's
train and dev data together for E's best epoch count: the first N epochs of the same schedule
(`train.refit_epochs: N`, so a cosine or step schedule is where it was at E's best epoch), with no early
stopping and nothing chosen; O/best.pt is the model after epoch N. The dev speakers, whose data chose the
set-up, now also train the final model (as scikit-learn's refit after a grid search); the test set, decoded
once with O's model, still plays no part in any choice. The fold must be E's (its train and dev lists are
checked against those E/best.pt records): on another fold, E's choice would have been made on a speaker that
fold may test. O/refit.yaml records what was refitted: E, its dev choice, E/best.pt's SHA-256 (which a rerun
must match: O resumes from its last.pt like any run), the fold and the dump.
"""
from pathlib import Path
from typing import Any, Dict, Optional

import yaml

from sertk.config.loading import ConfigError, check_config, with_new_defaults
from sertk.decode.decoder import DEV_SELECTED
from sertk.fsutil import atomic_write_text, sha256_file
from sertk.gridrecord import GRID_FILE
from sertk.results_dev import REFIT_FILE, fold_dev_score, read_refit_record
from sertk.train.distributed import Ranks, ranks_from_environment
from sertk.train.expdir import check_exp_dir
from sertk.train.folddata import check_trained_inputs
from sertk.train.trainer import TrainSummary, train
from sertk.yamlutil import read_yaml_file


def refit_record(source: Path, fold_dir: Path, dump_dir: Path) -> Dict[str, Any]:
    """What O/refit.yaml says of the finished dev-selected run `source`: its dev choice and best.pt's digest,
    and the fold and dump the refit trains on."""
    if read_refit_record(source, ConfigError) is not None:
        raise ConfigError(f"{source}: is itself a refit (nothing was chosen on dev there); give the run it refitted")
    score = fold_dev_score(source)
    if score is None or not (source / DEV_SELECTED).is_file():
        raise ConfigError(f"{source}: no finished training run here (no {DEV_SELECTED}); train it with sertk train "
                          "first")
    if not score.finished:
        raise ConfigError(f"{source}: its training has not finished (epoch {score.epochs_run} of at most "
                          f"{score.epochs}); a refit needs the epoch count dev chose, so finish it first")
    return {"source": str(source.resolve()), "best_epoch": score.best_epoch, "dev_score": score.score,
            "metric": score.metric, "point": score.point, "source_best_sha256": sha256_file(source / DEV_SELECTED),
            "fold_dir": str(Path(fold_dir).resolve()), "feats": str(Path(dump_dir).resolve())}


def check_same_inputs(source: Path, fold_dir: Path, dump_dir: Path) -> None:
    """A refit on another fold than its source's would reuse a choice made on that fold's dev speaker (in
    rotating protocols, another fold's test speaker), and on other features a choice made on these: the fold
    lists and the dump's features must be those source's best.pt records."""
    check_trained_inputs(source / DEV_SELECTED, fold_dir, dump_dir, "give that run's --fold-dir and --feats")


def refit_config(source: Path, best_epoch: int) -> Dict[str, Any]:
    """`source`'s config (the chosen point's, after a grid) set to train on train + dev for `best_epoch` epochs."""
    config = with_new_defaults(read_yaml_file(source / "config.yaml", ConfigError))
    if config.get("train", {}).get("refit_epochs") is not None:
        raise ConfigError(f"{source / 'config.yaml'}: sets train.refit_epochs, so it trained on dev; give a run "
                          "chosen on dev")
    config["train"]["refit_epochs"] = best_epoch
    return check_config(config)


def refit(source: Path, fold_dir: Path, dump_dir: Path, exp_dir: Path, device: str = "cpu",
          ranks: Optional[Ranks] = None) -> TrainSummary:
    """Train `source`'s dev-chosen set-up on `fold_dir`'s train + dev into `exp_dir` (see the module)."""
    source, exp_dir = Path(source), Path(exp_dir)
    ranks = ranks or ranks_from_environment()
    if exp_dir.resolve() == source.resolve():
        raise ConfigError(f"{exp_dir}: that is the run to refit; give the refit its own --exp")
    check_exp_dir(exp_dir)
    record = refit_record(source, fold_dir, dump_dir)
    config = refit_config(source, record["best_epoch"])
    check_same_inputs(source, Path(fold_dir), Path(dump_dir))
    before = read_refit_record(exp_dir, ConfigError)
    if before is not None:
        if before["source_best_sha256"] != record["source_best_sha256"]:
            raise ConfigError(f"{exp_dir} holds the refit of another model ({before['source']}, best.pt "
                              f"{str(before['source_best_sha256'])[:12]}); give a new --exp or remove it")
    elif any((exp_dir / name).exists() for name in ("last.pt", "best.pt", GRID_FILE)):
        raise ConfigError(f"{exp_dir} holds another training run; give the refit a new --exp")
    elif ranks.main:   # before training, so that a run stopped half-way resumes only from the same source
        exp_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(exp_dir / REFIT_FILE, yaml.safe_dump(record, sort_keys=False))
    return train(config, fold_dir, dump_dir, exp_dir, device, ranks)
