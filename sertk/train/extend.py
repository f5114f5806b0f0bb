"""Training a run on for longer, in its own exp dir: more epochs, or a longer early-stopping patience.

Every epoch starts from seeds derived from (seed, epoch) and last.pt holds the optimizer's and schedule's
state, so a run that stopped (early, or after its last epoch) is exactly the first part of the same run with
a longer patience, or with more epochs where the schedule does not depend on their number. `sertk train` on
the exp dir with only those values raised therefore trains on from last.pt (as ESPnet resumes with a larger
max_epoch), where any other change to the config is refused. Also refused: lowering a value (a shorter run
cannot be cut out of a longer one) and more epochs under a schedule shaped by the epoch count (cosine,
warmup_cosine); and, once it would train, a run something was made from (a decode or a pack of its best.pt,
or a grid's choice among its points): training on would change the model behind that result, and after a
test decode that is tuning on test. A refit has no early stopping and trains refit_epochs: train.patience and
(where the schedule allows) train.epochs do not change it, so a refit of a run trained on is the same refit.
"""
from pathlib import Path
from typing import Any, Dict, Iterable, Tuple

from sertk.config.loading import ConfigError, with_new_defaults
from sertk.decode.decodedir import is_decode_dir
from sertk.gridrecord import GRID_FILE
from sertk.train.expdir import GRID_DIR, PACK_FILE
from sertk.train.optim import SCHEDULERS
from sertk.yamlutil import dotted_differences

RAISABLE = ("epochs", "patience")   # train.* keys a run can be continued with, raised


def _without(config: Dict[str, Any], keys: Iterable[str]) -> Dict[str, Any]:
    return {**config, "train": {k: v for k, v in config["train"].items() if k not in keys}}


def raised_values(previous: Dict[str, Any], config: Dict[str, Any], exp_dir: Path) -> Dict[str, Tuple[Any, Any]]:
    """{key: (before, now)} for the train.* values `config` raises over `previous` (the config the run in
    exp_dir was trained with; both resolved); {} for the same run. ConfigError where `config` is not the
    same run, or that run trained on for longer."""
    shaped = SCHEDULERS[config["scheduler"]["name"]].shaped_by_epochs
    if config["train"]["refit_epochs"] is not None:   # neither value reaches a refit's training
        ignored = ("patience",) if shaped else RAISABLE
        if _without(previous, ignored) == _without(config, ignored):
            return {}
    if previous == config:
        return {}
    if _without(previous, RAISABLE) != _without(config, RAISABLE) or config["train"]["refit_epochs"] is not None:
        raise ConfigError(f"{exp_dir} was trained with another config ({config_change_text(previous, config)}); give "
                          f"a new exp dir or remove it (compare {exp_dir / 'config.yaml'})")
    raised = {k: (previous["train"][k], config["train"][k]) for k in RAISABLE
              if previous["train"][k] != config["train"][k]}
    for key, (before, now) in raised.items():
        if now < before:
            raise ConfigError(f"{exp_dir} was trained with train.{key} {before}: a run cannot be cut to {now} in "
                              f"its exp dir (only raised, to train on); give a new exp dir")
    if "epochs" in raised and shaped:
        before, now = raised["epochs"]
        raise ConfigError(f"{exp_dir}: scheduler {config['scheduler']['name']} is shaped by train.epochs, so a run of "
                          f"{now} epochs is not the {before}-epoch run trained on; give a new exp dir")
    return raised


def check_nothing_made_from(exp_dir: Path, grid_choice: bool = True) -> None:
    """ConfigError where a result was made from the run in exp_dir, which training it on would leave stale:
    a decode, a pack, and (`grid_choice`) a grid's choice among its points."""
    decoded = sorted(p.name for p in exp_dir.glob("decode*") if is_decode_dir(p))
    if decoded:
        raise ConfigError(f"{exp_dir / decoded[0]} was decoded with this run's best.pt; training on would change "
                          "the model behind it: train the longer run in a new exp dir")
    if (exp_dir / PACK_FILE).is_file():
        raise ConfigError(f"{exp_dir / PACK_FILE} was packed from this run's best.pt; training on would change "
                          "the model behind it: train the longer run in a new exp dir")
    grid = exp_dir.parent.parent
    if grid_choice and exp_dir.parent.name == GRID_DIR and (grid / GRID_FILE).is_file():
        raise ConfigError(f"{exp_dir} is a point of the grid in {grid}, whose dev scores chose among its points; "
                          "train the longer grid in a new exp dir")


def config_change_text(before: Dict[str, Any], now: Dict[str, Any], shown: int = 3) -> str:
    """'optim.lr: 0.001 -> 0.01, ...': the first `shown` dotted keys whose values differ, and how many more."""
    changed = dotted_differences(before, now, lists=False)
    return ", ".join(changed[:shown]) + (f" and {len(changed) - shown} more" if len(changed) > shown else "")


def check_best_without_last(exp_dir: Path, config: Dict[str, Any], best: Dict[str, Any]) -> None:
    """A best.pt without a last.pt beside it is a run stopped between the two writes of its first epoch, which
    trains again from epoch 1 with the same config (`best`: that best.pt). Anything else would replace a model
    without a word: a later epoch's best.pt (last.pt was removed), another config's, or one a result was made
    from: ConfigError."""
    if best.get("epoch", 1) > 1:
        raise ConfigError(f"{exp_dir / 'last.pt'} is missing, but {exp_dir / 'best.pt'} is epoch {best['epoch']}'s: "
                          "the run cannot be resumed, and training again would replace that best.pt; give a new exp "
                          "dir, or remove this one to train it again")
    if best.get("config") is not None and with_new_defaults(best["config"]) != config:
        raise ConfigError(f"{exp_dir} holds the best.pt of a run with another config (and no last.pt); give a new exp "
                          "dir or remove it")
    # a grid's point stopped in its first epoch starts again like any run: the grid chooses once all are done
    check_nothing_made_from(exp_dir, grid_choice=False)


def early_stopped(state: Dict[str, Any], train_cfg: Dict[str, Any]) -> bool:
    """The trainer's early-stopping rule for a run at `state` (epoch, bad_epochs): patience epochs without a
    better dev score, once min_epochs have run."""
    return state["bad_epochs"] >= train_cfg["patience"] and state["epoch"] >= train_cfg["min_epochs"]


def stops_at(state: Dict[str, Any], train_cfg: Dict[str, Any]) -> bool:
    """Whether a run at `state` is done under `train_cfg`: early stopped or at its last epoch."""
    return early_stopped(state, train_cfg) or state["epoch"] >= train_cfg["epochs"]
