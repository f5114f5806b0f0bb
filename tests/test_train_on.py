"""Training a run on in its exp dir with train.epochs / train.patience raised (sertk.train.extend)."""
import shutil

import pytest
import torch
import yaml

from helpers import TINY_CRNN, logmel_loso
from sertk.config.loading import ConfigError, load_config
from sertk.decode.decoder import decode_data_dir
from sertk.train.refit import refit
from sertk.train.trainer import _Run, train

TINY = TINY_CRNN + ["scheduler.name=multistep", "scheduler.milestones=[2]", "scheduler.gamma=0.5"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return logmel_loso(tmp_path_factory.mktemp("train_on"))


def run(setup, exp, *options):
    return train(load_config(None, TINY + list(options)), setup / "loso" / "fold1", setup / "dump", exp)


def assert_same_run(a, b):
    first, second = (torch.load(exp / "last.pt", weights_only=True) for exp in (a, b))
    for name in first["model"]:
        torch.testing.assert_close(first["model"][name], second["model"][name], rtol=0, atol=0)
    assert [h["train_loss"] for h in first["history"]] == [h["train_loss"] for h in second["history"]]
    assert (first["epoch"], first["best_epoch"], first["finished"]) == (second["epoch"], second["best_epoch"], True)


@pytest.fixture
def flat_dev(monkeypatch):
    """Dev never improves after epoch 1, so early stopping fires after exactly `patience` more epochs."""
    evaluate = _Run._evaluate
    monkeypatch.setattr(_Run, "_evaluate", lambda self: {**evaluate(self), "score": 0.5})


SCHEDULES = {"multistep": [], "none": ["scheduler.name=none"], "step": ["scheduler.name=step", "scheduler.step_size=1"],
             "exponential": ["scheduler.name=exponential", "scheduler.gamma=0.7"],
             "plateau": ["scheduler.name=plateau", "scheduler.patience=0", "scheduler.factor=0.5"]}


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_more_epochs_train_on_to_the_run_of_that_many(setup, tmp_path, schedule):
    run(setup, tmp_path / "straight", "train.epochs=4", *schedule)
    short = run(setup, tmp_path / "on", "train.epochs=2", *schedule)
    assert short.epochs_run == 2
    config_before = (tmp_path / "on" / "config.yaml").read_text()
    longer = run(setup, tmp_path / "on", "train.epochs=4", *schedule)
    assert (longer.resumed_from, longer.epochs_run) == (2, 4)
    assert_same_run(tmp_path / "straight", tmp_path / "on")
    assert yaml.safe_load(config_before)["train"]["epochs"] == 2
    assert (tmp_path / "on" / "config.yaml").read_text() == (tmp_path / "straight" / "config.yaml").read_text()
    log = (tmp_path / "on" / "train.log").read_text()
    assert "train.epochs 2 -> 4 (the same run, trained on from last.pt)" in log and "training on after epoch 2" in log


def test_a_longer_patience_trains_an_early_stopped_run_on(setup, tmp_path, flat_dev):
    straight = run(setup, tmp_path / "straight", "train.epochs=10", "train.patience=3")
    assert straight.epochs_run == 4   # best at epoch 1, then 3 epochs without a better dev score
    assert run(setup, tmp_path / "on", "train.epochs=10", "train.patience=1").epochs_run == 2
    on = run(setup, tmp_path / "on", "train.epochs=10", "train.patience=3")
    assert (on.resumed_from, on.epochs_run, on.best_epoch) == (2, 4, 1)
    assert_same_run(tmp_path / "straight", tmp_path / "on")


def test_a_run_that_ran_all_its_epochs_stays_finished_under_a_longer_patience(setup, tmp_path):
    exp = tmp_path / "exp"
    run(setup, exp, "train.epochs=2", "train.patience=5")
    before = {name: (exp / name).read_bytes() for name in ("last.pt", "best.pt", "config.yaml")}
    again = run(setup, exp, "train.epochs=2", "train.patience=9")
    assert again.epochs_run == 2 and again.resumed_from is None
    assert before == {name: (exp / name).read_bytes() for name in before}
    assert "train.patience 5 -> 9 leaves the run finished" in (exp / "train.log").read_text()


@pytest.mark.parametrize("first, then, message", [
    (["train.epochs=3"], ["train.epochs=2"], "trained with train.epochs 3: a run cannot be cut to 2"),
    (["train.patience=4"], ["train.patience=2"], "trained with train.patience 4: a run cannot be cut to 2"),
    (["train.epochs=2"], ["train.epochs=3", "optim.lr=0.01"],
     r"was trained with another config \(optim.lr: 0.001 -> 0.01, train.epochs: 2 -> 3\)"),
    (["train.epochs=2", "scheduler.name=cosine"], ["train.epochs=3", "scheduler.name=cosine"],
     "scheduler cosine is shaped by train.epochs, so a run of 3 epochs is not the 2-epoch run trained on"),
    (["train.epochs=2", "scheduler.name=warmup_cosine", "scheduler.warmup_epochs=1"],
     ["train.epochs=3", "scheduler.name=warmup_cosine", "scheduler.warmup_epochs=1"],
     "scheduler warmup_cosine is shaped by train.epochs"),
], ids=["fewer-epochs", "shorter-patience", "other-change", "cosine", "warmup_cosine"])
def test_what_is_not_the_same_run_trained_on_is_refused_and_left_alone(setup, tmp_path, first, then, message):
    exp = tmp_path / "exp"
    run(setup, exp, *first)
    before = {p.name: p.read_bytes() for p in exp.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match=message):
        run(setup, exp, *then)
    assert before == {p.name: p.read_bytes() for p in exp.iterdir() if p.is_file()}


def test_a_decoded_run_is_not_trained_on_and_the_cli_says_so_in_one_line(setup, tmp_path, sertk_cli, user_error):
    exp = tmp_path / "exp"
    (setup / "conf.yaml").write_text(yaml.safe_dump({"features": {"tag": "x"}}))
    args = ("train", "--config", setup / "conf.yaml", "--fold-dir", setup / "loso" / "fold1", "--feats",
            setup / "dump", "--exp", exp, "--device", "cpu", *[a for o in TINY for a in ("--set", o)])
    assert sertk_cli(*args, "--set", "train.epochs=2").exit_code == 0
    result = sertk_cli("decode", "--exp", exp, "--data", setup / "loso" / "fold1" / "test", "--feats", setup / "dump",
                       "--out", exp / "decode_test")
    assert result.exit_code == 0, result.output
    assert user_error(sertk_cli(*args, "--set", "train.epochs=3")) == (
        f"{exp / 'decode_test'} was decoded with this run's best.pt; training on would change the model behind "
        "it: train the longer run in a new exp dir")
    assert torch.load(exp / "last.pt", weights_only=True)["epoch"] == 2


@pytest.mark.parametrize("made", ["decode", "pack", "grid point"])
def test_a_run_something_was_made_from_is_not_trained_on(setup, tmp_path, made):
    exp = tmp_path / "exp" / "grid" / "01_x" if made == "grid point" else tmp_path / "exp"
    run(setup, exp, "train.epochs=2")
    if made == "decode":   # any decode dir in E, whatever --out named it
        decode_data_dir(exp, setup / "loso" / "fold1" / "dev", setup / "dump", exp / "decode")
    elif made == "pack":
        (exp / "model.sertk").write_bytes(b"as sertk pack leaves it")
    else:
        (tmp_path / "exp" / "grid.yaml").write_text("chosen: 01_x\n")
    message = {"decode": "decode was decoded with this run's best.pt", "pack": "model.sertk was packed from",
               "grid point": "is a point of the grid in"}[made]
    with pytest.raises(ConfigError, match=message):
        run(setup, exp, "train.epochs=3")
    assert run(setup, exp, "train.epochs=2").epochs_run == 2   # the same config: skipped, as before
    assert torch.load(exp / "last.pt", weights_only=True)["epoch"] == 2


def test_config_yaml_of_a_train_on_stopped_before_rewriting_it_is_made_right_by_the_rerun(setup, tmp_path):
    run(setup, tmp_path / "on", "train.epochs=2")
    before = (tmp_path / "on" / "config.yaml").read_text()
    run(setup, tmp_path / "on", "train.epochs=3")
    (tmp_path / "on" / "config.yaml").write_text(before)   # as a kill between last.pt and config.yaml leaves it
    again = run(setup, tmp_path / "on", "train.epochs=3")      # finished: skipped, and the record made right
    assert again.epochs_run == 3 and yaml.safe_load((tmp_path / "on" / "config.yaml").read_text())["train"]["epochs"] == 3


def test_a_best_pt_without_last_pt_is_retrained_only_when_stopped_in_its_first_epoch(setup, tmp_path):
    exp = tmp_path / "exp"
    run(setup, exp, "train.epochs=3", "train.patience=10")
    best = torch.load(exp / "best.pt", weights_only=True)
    (exp / "last.pt").unlink()                                  # e.g. removed to save disk
    torch.save({**best, "epoch": 2}, exp / "best.pt")            # (as if dev had chosen epoch 2)
    with pytest.raises(ConfigError, match=r"last.pt is missing, but .*best.pt is epoch 2's: the run cannot be resumed"):
        run(setup, exp, "train.epochs=3", "train.patience=10")
    torch.save({**best, "epoch": 1}, exp / "best.pt")            # as a run stopped between its first two writes
    saved = (exp / "best.pt").read_bytes()
    with pytest.raises(ConfigError, match="holds the best.pt of a run with another config"):
        run(setup, exp, "train.epochs=3", "train.patience=10", "optim.lr=0.01")
    decode_data_dir(exp, setup / "loso" / "fold1" / "dev", setup / "dump", exp / "decode_dev")
    with pytest.raises(ConfigError, match="decode_dev was decoded with this run's best.pt"):
        run(setup, exp, "train.epochs=3", "train.patience=10")
    assert (exp / "best.pt").read_bytes() == saved
    shutil.rmtree(exp / "decode_dev")                             # nothing made from it: trained from epoch 1
    assert run(setup, exp, "train.epochs=3", "train.patience=10").epochs_run == 3


def test_a_finished_run_without_its_best_pt_is_not_said_to_be_finished(setup, tmp_path):
    run(setup, tmp_path / "exp", "train.epochs=2")
    (tmp_path / "exp" / "best.pt").unlink()
    with pytest.raises(ConfigError, match="training has finished, but its best.pt .* is missing"):
        run(setup, tmp_path / "exp", "train.epochs=2")


def test_an_epoch_reported_before_a_kill_is_in_tensorboard_once(setup, tmp_path, monkeypatch):
    """Killed after epoch 2's report but before its last.pt: the resumed run reports epoch 2 again."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from sertk.train import trainer as trainer_module
    real_save = trainer_module.save_checkpoint

    def die_before_last_of_epoch_2(path, state):
        if path.name == "last.pt" and state["epoch"] == 2:
            raise KeyboardInterrupt
        real_save(path, state)
    monkeypatch.setattr(trainer_module, "save_checkpoint", die_before_last_of_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run(setup, tmp_path / "exp", "train.epochs=3")
    monkeypatch.undo()
    run(setup, tmp_path / "exp", "train.epochs=3")
    events = EventAccumulator(str(tmp_path / "exp" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]


def test_the_refit_of_a_run_trained_on_is_the_same_refit(setup, tmp_path, flat_dev):
    source, refitted = tmp_path / "exp", tmp_path / "exp_refit"
    run(setup, source, "train.epochs=10", "train.patience=1")
    fold = setup / "loso" / "fold1"
    first = refit(source, fold, setup / "dump", refitted)
    stamp = (refitted / "last.pt").stat().st_mtime_ns
    assert run(setup, source, "train.epochs=10", "train.patience=3").epochs_run == 4   # best.pt still epoch 1's
    again = refit(source, fold, setup / "dump", refitted)
    assert (again.epochs_run, again.resumed_from) == (first.epochs_run, None) == (1, None)
    assert (refitted / "last.pt").stat().st_mtime_ns == stamp
