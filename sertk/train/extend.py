"""Training a run on for longer, in its own exp dir: more epochs, or a longer early-stopping patience.

Every epoch starts from seeds derived from (seed, epoch) and last.pt holds the optimizer's and schedule's
state, so a run that stopped (early, or after its last epoch) is exactly the first part of the same run with
a longer patience, or with more epochs where the schedule does not depend on their number. `sertk train` on
the exp dir with only those values raised therefore trains on from last.pt (as ESPnet resumes with a larger
max_epoch), where any other change to the config is refused. Also refused: lowering a value (a shorter run
cannot be cut out of a longer one), more epochs under a schedule shaped by the epoch count (cosine,
warmup_cosine), a refit, and a run already decoded in its exp dir (decode_*/ came from the shorter run's
best.pt: training on would change the model behind that result, and after a test decode that is tuning on test).
"""
from pathlib import Path
from typing import Any, Dict, Tuple

from sertk.config.loading import ConfigError
from sertk.train.optim import SCHEDULERS

RAISABLE = ("epochs", "patience")   # train.* keys a run can be continued with, raised


def _without_raisable(config: Dict[str, Any]) -> Dict[str, Any]:
    return {**config, "train": {k: v for k, v in config["train"].items() if k not in RAISABLE}}


def raised_values(previous: Dict[str, Any], config: Dict[str, Any], exp_dir: Path) -> Dict[str, Tuple[Any, Any]]:
    """{key: (before, now)} for the train.* values `config` raises over `previous` (the config the run in
    exp_dir was trained with; both resolved); {} for the same config. ConfigError where `config` is not the
    same run trained on for longer."""
    if previous == config:
        return {}
    if _without_raisable(previous) != _without_raisable(config):
        raise ConfigError(f"{exp_dir} was trained with another config; give a new exp dir or remove it "
                          f"(compare {exp_dir / 'config.yaml'})")
    raised = {k: (previous["train"][k], config["train"][k]) for k in RAISABLE
              if previous["train"][k] != config["train"][k]}
    for key, (before, now) in raised.items():
        if now < before:
            raise ConfigError(f"{exp_dir} was trained with train.{key} {before}: a run cannot be cut to {now} in "
                              f"its exp dir (only raised, to train on); give a new exp dir")
    if config["train"]["refit_epochs"] is not None:
        raise ConfigError(f"{exp_dir} is a refit of {config['train']['refit_epochs']} epochs; train.epochs and "
                          "train.patience do not continue it: give a new exp dir")
    scheduler = config["scheduler"]["name"]
    if "epochs" in raised and SCHEDULERS[scheduler].shaped_by_epochs:
        before, now = raised["epochs"]
        raise ConfigError(f"{exp_dir}: scheduler {scheduler} is shaped by train.epochs, so a run of {now} epochs is "
                          f"not the {before}-epoch run trained on; give a new exp dir")
    decoded = sorted(p.name for p in exp_dir.glob("decode_*") if p.is_dir())
    if decoded:
        raise ConfigError(f"{exp_dir / decoded[0]} was decoded with this run's best.pt; training on would change "
                          "the model behind it: train the longer run in a new exp dir")
    return raised


def stops_at(state: Dict[str, Any], train_cfg: Dict[str, Any]) -> bool:
    """Whether a run at `state` (epoch, bad_epochs) is done under `train_cfg`: early stopped or at its last
    epoch (the trainer's own rule)."""
    early = state["bad_epochs"] >= train_cfg["patience"] and state["epoch"] >= train_cfg["min_epochs"]
    return early or state["epoch"] >= train_cfg["epochs"]
