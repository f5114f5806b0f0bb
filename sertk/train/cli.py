"""`sertk train` (`sertk config` is sertk.config.cli's, `sertk decode` sertk.decode.cli's)."""
import shutil
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import click

from sertk.cli_types import dir_path, existing_dir, existing_file
from sertk.config.cli import grid_option, overrides

# the trainer and the config loader import the model registry (torch): imported when the command runs


def _ranks_with_rank_0_speaking():
    """This process's place in a torchrun job (one process without torchrun); below rank 0, only warnings."""
    import logging
    from sertk.train.distributed import ranks_from_environment
    ranks = ranks_from_environment()
    if not ranks.main:
        for handler in logging.getLogger("sertk").handlers:
            handler.setLevel(max(handler.level, logging.WARNING))
    return ranks


def _remove_new_exp_dir(exp_dir: Path, missing: List[Path]) -> None:
    """After a failed `sertk train`: the exp dir, and the folders made for it, removed when they did not exist
    before the command (`missing`: those of exp_dir and its parents, innermost first) and no training made
    a checkpoint there (a run that got that far resumes from it); parents only when empty."""
    if not missing or not exp_dir.is_dir() or any(exp_dir.rglob("*.pt")):
        return
    shutil.rmtree(exp_dir, ignore_errors=True)
    for folder in missing[1:]:
        try:
            folder.rmdir()
        except OSError:
            return


def _remove_stale_temps(exp_dir: Path) -> None:
    """A run killed while writing last.pt left its temp file (up to the checkpoint's size); the lock is held, so
    no other process is writing one: remove it, and say so."""
    import logging
    from sertk.checkpoint import remove_stale_checkpoint_temps
    files, size = remove_stale_checkpoint_temps(exp_dir)
    if files:
        logging.getLogger("sertk").info("%s: removed %d half-written checkpoint temp file(s) (%.1f MB) that a "
                                        "killed run left", exp_dir, files, size / 1e6)


def _train_in(exp_dir: Path, ranks, run: Callable[[], Any]) -> Any:
    """`run()` with exp_dir locked against a second training process (sertk.train.exp_lock); a failure leaves
    no exp dir where there was none (unless training got as far as a checkpoint). A folder no sertk run made
    is refused before anything (the lock file included) is written into it."""
    from sertk.errors import SertkError
    from sertk.train.exp_lock import exp_dir_lock
    from sertk.train.expdir import check_exp_dir
    missing = [p for p in (exp_dir, *exp_dir.parents) if not p.exists()]
    check_exp_dir(exp_dir)
    with exp_dir_lock(exp_dir, take=ranks.main):
        if ranks.main:
            _remove_stale_temps(exp_dir)
        try:
            return run()
        except (SertkError, OSError):
            if ranks.main:
                _remove_new_exp_dir(exp_dir, missing)
            raise


@click.command()
@click.option("--config", "config_file", required=True, type=existing_file,
              help="Experiment YAML (conf/models/<model>.yaml).")
@click.option("--fold-dir", required=True, type=existing_dir, help="Protocol fold with train/ and dev/ data dirs.")
@click.option("--feats", required=True, type=existing_dir, help="Feature dump dir (dump/<tag>).")
@click.option("--exp", "exp_dir", required=True, type=dir_path,
              help="Experiment dir.")
@click.option("--device", help="cpu, cuda or cuda:N [default: cuda if available].")
@overrides
@grid_option
def train(config_file: Path, fold_dir: Path, feats: Path, exp_dir: Path, device: Optional[str],
          sets: Tuple[str], grids: Tuple[str]) -> None:
    """Train one model on one fold; best.pt by dev UA (train.select), resumable from last.pt.

    With a grid (the config's `grid:` and --grid) of several points, every point is trained into
    EXP/grid/<k>_<values>/ and the best on dev is chosen: EXP/grid.yaml records them, and the chosen
    point's best.pt, config.yaml, environment.yaml and train.log are copied into EXP.

    Under `torchrun --nproc_per_node N -m sertk train ...` it trains in N processes (DistributedDataParallel;
    gloo on CPUs, NCCL on GPUs, each process on the GPU of its local rank); train.batch_size is then the
    batch of all processes together, and only rank 0 writes."""
    from sertk.device import pick_device
    from sertk.config.loading import load_config
    from sertk.train.grid import train_experiment
    from sertk.train.trainer import TrainSummary
    ranks = _ranks_with_rank_0_speaking()
    device = pick_device(device)
    config = load_config(config_file, sets, grids)   # every value checked: nothing is read or written before
    outcome = _train_in(exp_dir, ranks, lambda: train_experiment(config, fold_dir, feats, exp_dir, device, ranks,
                                                                 report=click.echo))
    if ranks.main and isinstance(outcome, TrainSummary):
        click.echo(f"{exp_dir}: best dev {outcome.metric} {outcome.best_dev_score:.4f} at epoch {outcome.best_epoch} "
                   f"({outcome.epochs_run} epochs)")


@click.command()
@click.argument("source", type=existing_dir)
@click.option("--fold-dir", required=True, type=existing_dir,
              help="The fold SOURCE was trained on (its train/ and dev/ data dirs).")
@click.option("--feats", required=True, type=existing_dir, help="Feature dump dir (dump/<tag>).")
@click.option("--exp", "exp_dir", required=True, type=dir_path, help="Experiment dir of the refit (not SOURCE).")
@click.option("--device", help="cpu, cuda or cuda:N [default: cuda if available].")
def refit(source: Path, fold_dir: Path, feats: Path, exp_dir: Path, device: Optional[str]) -> None:
    """Train the set-up dev chose in SOURCE again on train + dev; its final model is EXP's best.pt.

    SOURCE is a finished `sertk train` run (a plain run or a grid's choice): its config.yaml is trained from
    scratch on the fold's train and dev data together for SOURCE's best epoch count (train.refit_epochs:
    the first N epochs of the same schedule), with no early stopping and no choice, and EXP/best.pt is the
    model after the last epoch; decode the test set with `sertk decode --exp EXP`. EXP/refit.yaml records
    SOURCE, its dev choice and the SHA-256 of its best.pt; EXP resumes from its last.pt like any run."""
    from sertk.device import pick_device
    from sertk.train.refit import refit as refit_run
    ranks = _ranks_with_rank_0_speaking()
    device = pick_device(device)
    summary = _train_in(exp_dir, ranks, lambda: refit_run(source, fold_dir, feats, exp_dir, device, ranks))
    if ranks.main:
        click.echo(f"{exp_dir}: refit of {source} on train + dev for the {summary.epochs_run} epoch(s) dev chose "
                   "there; best.pt is the model after the last")
