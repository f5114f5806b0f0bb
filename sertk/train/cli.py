"""`sertk train` and `sertk config` (`sertk decode` is sertk.decode.cli's)."""
import shutil
from pathlib import Path
from typing import List, Optional, Tuple

import click
import yaml

# the config module imports the model registry (torch): imported when a command runs

config_path = click.Path(exists=True, dir_okay=False, path_type=Path)
existing_dir = click.Path(exists=True, file_okay=False, path_type=Path)
overrides = click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                         help="Override a config key, e.g. --set optim.lr=1e-4 (repeatable).")
grid_option = click.option("--grid", "grids", multiple=True, metavar="KEY=[V1,V2]",
                           help="Try these values of KEY on dev: replaces or adds KEY in the config's grid "
                                "(a scalar is one value; KEY= takes KEY out). Repeatable.")


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


@click.command()
@click.option("--config", "config_file", required=True, type=config_path,
              help="Experiment YAML (conf/models/<model>.yaml).")
@click.option("--fold-dir", required=True, type=existing_dir, help="Protocol fold with train/ and dev/ data dirs.")
@click.option("--feats", required=True, type=existing_dir, help="Feature dump dir (dump/<tag>).")
@click.option("--exp", "exp_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
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
    import logging
    from sertk.device import pick_device
    from sertk.errors import SertkError
    from sertk.train.config import load_config
    from sertk.train.distributed import ranks_from_environment
    from sertk.train.grid import train_experiment
    from sertk.train.trainer import TrainSummary
    ranks = ranks_from_environment()
    if not ranks.main:   # rank 0 speaks for the run
        for handler in logging.getLogger("sertk").handlers:
            handler.setLevel(max(handler.level, logging.WARNING))
    device = pick_device(device)
    config = load_config(config_file, sets, grids)   # every value checked: nothing is read or written before
    # a failure leaves no exp dir where there was none (unless training got as far as a checkpoint)
    missing = [p for p in (exp_dir, *exp_dir.parents) if not p.exists()]
    try:
        outcome = train_experiment(config, fold_dir, feats, exp_dir, device, ranks, report=click.echo)
    except (SertkError, OSError):
        if ranks.main:
            _remove_new_exp_dir(exp_dir, missing)
        raise
    if ranks.main and isinstance(outcome, TrainSummary):
        click.echo(f"{exp_dir}: best dev {outcome.metric} {outcome.best_dev_score:.4f} at epoch {outcome.best_epoch} "
                   f"({outcome.epochs_run} epochs)")


@click.group("config")
def config_group() -> None:
    """Show resolved experiment configs."""


@config_group.command()
@click.argument("config_file", type=config_path)
@overrides
@grid_option
def show(config_file: Path, sets: Tuple[str], grids: Tuple[str]) -> None:
    """Print the fully resolved config (defaults, model defaults, file, overrides), its grid included; a grid of
    several points is followed by a comment listing them."""
    from sertk.train.config import grid_points, load_config, point_text
    config = load_config(config_file, sets, grids)
    click.echo(yaml.safe_dump(config, sort_keys=False), nl=False)
    points = grid_points(config["grid"])
    if len(points) > 1:
        click.echo(f"# grid: {len(points)} points, each trained and scored on dev (sertk train):")
        for i, point in enumerate(points, start=1):
            click.echo(f"#   {i}: {point_text(point)}")


@config_group.command()
@click.argument("config_file", type=config_path)
@click.argument("key")
@overrides
@grid_option
def get(config_file: Path, key: str, sets: Tuple[str], grids: Tuple[str]) -> None:
    """Print one key of the resolved config, e.g. `features.tag` (for shell recipes). A key outside `model.`
    is read without importing the model or torch (the model's options are checked by `config show` and
    `sertk train`)."""
    from sertk.train.config import get_key, load_config
    value = get_key(load_config(config_file, sets, grids, models=key.startswith("model.")), key)
    click.echo(value if not isinstance(value, (dict, list)) else yaml.safe_dump(value).strip())
