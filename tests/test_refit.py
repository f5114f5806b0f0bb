"""`sertk refit` (sertk.train.refit, train.refit_epochs): a fold's dev choice trained again on train + dev, and
the recipe's --refit true."""

import pytest
import torch
import yaml

from helpers import emodb_loso, interrupt_training_after, module_cli as cli
from recipes import TINY, copy_recipe, run_recipe
from replicas import make_emodb
from sertk.checkpoint import load_checkpoint
from sertk.config.loading import ConfigError, load_config
from sertk.data.datadir import DataDir
from sertk.features.extract import extract_features
from sertk.fsutil import sha256_file
from sertk.results import collect
from sertk.results_dev import dev_table
from sertk.train.refit import refit
from sertk.train.trainer import train

FEATURES = {"sample_rate": 16000, "streams": {"logmel": {"type": "logmel", "n_mels": 16}}}
CONFIG = """\
model: {name: crnn, n_mels: 16, channels: [4, 8], lstm_hidden: 8, attention_hidden: 8}
segments: {length: 0.3, hop: 0.1}
train: {epochs: 4, batch_size: 4, patience: 10, amp: false}
optim: {lr: 0.01}
scheduler: {name: cosine}
"""





@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = emodb_loso(tmp_path_factory.mktemp("refit"))
    extract_features(base / "all", FEATURES, base / "dump")
    (base / "conf.yaml").write_text(CONFIG)
    source = base / "exp" / "crnn" / "fold1"
    result = cli("train", "--config", base / "conf.yaml", "--fold-dir", base / "loso" / "fold1", "--feats",
                 base / "dump", "--exp", source, "--device", "cpu")
    assert result.exit_code == 0, result.output
    return base, source


def refit_args(base, source, exp):
    return ("refit", source, "--fold-dir", base / "loso" / "fold1", "--feats", base / "dump", "--exp", exp,
            "--device", "cpu")


@pytest.fixture(scope="module")
def refitted(setup):
    base, source = setup
    exp = base / "exp" / "crnn_refit" / "fold1"
    result = cli(*refit_args(base, source, exp))
    assert result.exit_code == 0, result.output
    return exp


def test_a_refit_trains_on_train_and_dev_for_the_epochs_dev_chose(setup, refitted):
    base, source = setup
    chosen = load_checkpoint(source / "best.pt")
    last = load_checkpoint(refitted / "last.pt")
    best = load_checkpoint(refitted / "best.pt")
    n = chosen["epoch"]
    assert last["finished"] and last["epoch"] == n and best["epoch"] == n and best["dev"] is None
    assert last["config"]["train"]["refit_epochs"] == n
    for key, value in last["model"].items():   # best.pt is the model after the last epoch
        torch.testing.assert_close(best["model"][key], value)
    # every segment of train and dev was trained on: the history counts them, and no dev score is kept
    fold = base / "loso" / "fold1"
    utts = DataDir.load(fold / "train").utts + DataDir.load(fold / "dev").utts
    source_state = load_checkpoint(source / "last.pt")
    assert all(set(h) & {"dev_loss", "dev_wa", "dev_ua"} == set() for h in last["history"])
    assert last["history"][0]["train_segments"] > source_state["history"][0]["train_segments"]
    assert f"({len(utts)} utts), no dev set" in (refitted / "train.log").read_text()
    record = yaml.safe_load((refitted / "refit.yaml").read_text())
    assert record["source_best_sha256"] == sha256_file(source / "best.pt") and record["best_epoch"] == n
    assert record["dev_score"] == pytest.approx(source_state["best_ua"])


def test_a_refit_follows_the_first_epochs_of_the_same_schedule_and_resumes(setup, tmp_path, monkeypatch):
    base, _ = setup
    fold, dump = base / "loso" / "fold1", base / "dump"
    full = train(load_config(base / "conf.yaml"), fold, dump, tmp_path / "full")
    assert full.epochs_run == 4
    two = load_config(base / "conf.yaml", ["train.refit_epochs=2"])
    interrupt_training_after(1, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(two, fold, dump, tmp_path / "two")
    monkeypatch.undo()
    assert not (tmp_path / "two" / "best.pt").exists()   # nothing is kept before the last epoch
    train(two, fold, dump, tmp_path / "two")
    assert "resuming after epoch 1" in (tmp_path / "two" / "train.log").read_text()
    rates = [[h["lr"] for h in load_checkpoint(tmp_path / d / "last.pt")["history"]] for d in ("full", "two")]
    assert rates[1] == pytest.approx(rates[0][:2]) and rates[0][1] < rates[0][0]   # a cosine, not restarted


def test_dev_tables_and_results_show_the_choice_a_refit_retrained(setup, refitted, tmp_path):
    base, source = setup
    table = dev_table([source, refitted])
    state = load_checkpoint(source / "last.pt")
    assert f"{100 * state['best_ua']:.2f} (epoch {state['best_epoch']} of {state['best_epoch']})" in table
    assert "refit on train + dev of" in table
    out = cli("decode", "--exp", refitted, "--data", base / "loso" / "fold1" / "test", "--feats", base / "dump",
              "--out", refitted / "decode_test", "--protocol-dir", base / "loso")
    assert out.exit_code == 0, out.output
    assert yaml.safe_load((refitted / "decode_test" / "decode.yaml").read_text())["checkpoint"] == "best.pt"
    result = collect(refitted.parent)
    text = (refitted.parent / "RESULTS.md").read_text()
    assert "- final model: a refit in 1 fold(s) (`sertk refit`)" in text and str(source.parent) in text
    assert result["per_fold"][0]["dev"]["point"].startswith("refit on train + dev")
    packed = cli("pack", refitted, "--feats", base / "dump")
    assert packed.exit_code == 0, packed.output
    info = cli("pack", "--info", refitted / "model.sertk")
    assert "refit: trained on train + dev for the" in info.output and "dev (checkpoint choice)" not in info.output
    losses = cli("results", "dev", "--losses", refitted)
    assert losses.exit_code == 0 and "-100" not in losses.output, losses.output


def test_a_refit_resumes_and_refuses_what_it_cannot_refit(setup, tmp_path, monkeypatch, sertk_cli, user_error):
    base, source = setup
    fold, dump = base / "loso" / "fold1", base / "dump"
    exp = tmp_path / "refit"
    interrupt_training_after(1, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        refit(source, fold, dump, exp)
    monkeypatch.undo()
    assert load_checkpoint(exp / "last.pt")["epoch"] == 1 and (exp / "refit.yaml").is_file()
    result = cli(*refit_args(base, source, exp))   # resumes (or finds a one-epoch refit finished)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(exp / "last.pt")["finished"]

    unfinished = tmp_path / "unfinished"
    interrupt_training_after(1, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(base / "conf.yaml"), fold, dump, unfinished)
    monkeypatch.undo()

    def check(*args):
        return user_error(sertk_cli(*args))
    assert "its training has not finished (epoch 1 of at most 4)" in check(*refit_args(base, unfinished, tmp_path / "a"))
    assert "is itself a refit" in check(*refit_args(base, exp, tmp_path / "b"))
    assert "that is the run to refit" in check(*refit_args(base, source, source))
    assert "no finished training run here" in check(*refit_args(base, tmp_path, tmp_path / "c"))
    # another source's refit dir is refused, and nothing is left where the refused runs had no dir
    other = tmp_path / "other"
    train(load_config(base / "conf.yaml", ["train.seed=1"]), fold, dump, other)
    assert "holds the refit of another model" in check(*refit_args(base, other, exp))
    assert "holds another training run" in check(*refit_args(base, source, other))
    assert not (other / "refit.yaml").exists()
    # another fold than the source's: its choice may have been made on that fold's test speaker
    assert "loso/fold2: not the fold" in check("refit", source, "--fold-dir", base / "loso" / "fold2", "--feats", dump,
                                               "--exp", tmp_path / "d")
    # other features than the source's: dev chose its epochs on those
    hop = {"sample_rate": 16000, "streams": {"logmel": {"type": "logmel", "n_mels": 16, "hop_length": 0.02}}}
    extract_features(base / "all", hop, tmp_path / "dump_hop")
    assert "its features differ from those the run in" in check(
        "refit", source, "--fold-dir", fold, "--feats", tmp_path / "dump_hop", "--exp", tmp_path / "f")
    assert not any((tmp_path / d).exists() for d in ("a", "b", "c", "d", "f"))
    # train.refit_epochs is the refit's: sertk train refuses it, and a refit's dir
    assert "train.refit_epochs is set by sertk refit" in check(
        "train", "--config", base / "conf.yaml", "--fold-dir", fold, "--feats", dump, "--exp", tmp_path / "e",
        "--set", "train.refit_epochs=1")
    assert "holds a refit" in check("train", "--config", base / "conf.yaml", "--fold-dir", fold, "--feats", dump,
                                    "--exp", exp)


def test_a_grids_choice_is_refitted_with_the_chosen_point(setup, tmp_path, sertk_cli):
    base, _ = setup
    fold, dump = base / "loso" / "fold1", base / "dump"
    grid = tmp_path / "grid"
    result = sertk_cli("train", "--config", base / "conf.yaml", "--fold-dir", fold, "--feats", dump, "--exp", grid,
                       "--set", "train.epochs=2", "--grid", "model.lstm_hidden=[4,6]")
    assert result.exit_code == 0, result.output
    chosen = yaml.safe_load((grid / "grid.yaml").read_text())["chosen"]
    result = sertk_cli(*refit_args(base, grid, tmp_path / "refit"))
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((tmp_path / "refit" / "config.yaml").read_text())
    assert config["model"]["lstm_hidden"] == chosen["values"]["model.lstm_hidden"] and config["grid"] == {}
    assert config["train"]["refit_epochs"] == chosen["best_epoch"]
    assert yaml.safe_load((tmp_path / "refit" / "refit.yaml").read_text())["point"].startswith("grid point")


@pytest.mark.parametrize("sets, message", [
    (["train.refit_epochs=5"], "train.refit_epochs 5 is more than the 4 epochs of train.epochs"),
    (["train.refit_epochs=2", "scheduler.name=plateau"], "scheduler plateau steps on dev UA"),
    (["train.refit_epochs=0"], "train.refit_epochs must be an integer >= 1"),
])
def test_bad_refit_settings_fail_at_load(setup, sets, message):
    base, _ = setup
    with pytest.raises(ConfigError, match=message):
        load_config(base / "conf.yaml", sets)


def test_refit_epochs_cannot_vary_in_a_grid(setup):
    base, _ = setup
    with pytest.raises(ConfigError, match="train.refit_epochs cannot vary in a grid"):
        load_config(base / "conf.yaml", [], ["train.refit_epochs=[1, 2]"])


def test_recipe_refit_tests_and_packs_the_refitted_model(tmp_path):
    recipe = copy_recipe(tmp_path, "emodb")
    corpus = make_emodb(tmp_path / "corpus", speakers=["03", "08", "09"], texts=["a01"])
    run_recipe(recipe, "--emodb_root", corpus, "--nj", "1", "--folds", "1", "--refit", "true", "--train_args", TINY)
    chosen, final = recipe / "exp" / "loso" / "crnn" / "fold1", recipe / "exp" / "loso" / "crnn_refit" / "fold1"
    assert (chosen / "decode_dev").is_dir() and not (chosen / "decode_test").exists()   # dev: the chosen run's
    assert (final / "decode_test" / "scoring" / "metrics.json").is_file() and (final / "model.sertk").is_file()
    assert not (final / "decode_dev").exists()
    assert load_checkpoint(final / "best.pt")["epoch"] == load_checkpoint(chosen / "best.pt")["epoch"]
    assert "- final model: a refit in 1 fold(s)" in (final.parent / "RESULTS.md").read_text()
