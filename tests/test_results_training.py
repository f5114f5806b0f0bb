"""Each fold's training record in RESULTS.md (sertk.results_training): the commits a fold trained under
(environment.yaml, its resumes included, sertk.envinfo.add_resume), device, precision, epochs and minutes."""
import logging

import pytest
import yaml

from helpers import TINY_CRNN, interrupt_training_after, logmel_loso
from sertk.checkpoint import save_checkpoint
from sertk.config.loading import load_config
from sertk.envinfo import RESUMED, add_resume
from sertk.errors import ScoreError
from sertk.results_training import fold_training, training_markdown
from sertk.train.trainer import train


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return logmel_loso(tmp_path_factory.mktemp("results_training"))


def test_a_resumed_run_records_its_resume_and_each_epoch_s_time(setup, tmp_path, monkeypatch):
    config = load_config(None, TINY_CRNN + ["train.epochs=3", "train.patience=10"])
    exp = tmp_path / "fold1"
    interrupt_training_after(1, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(config, setup / "loso" / "fold1", setup / "dump", exp)
    monkeypatch.undo()
    assert RESUMED not in yaml.safe_load((exp / "environment.yaml").read_text())
    train(config, setup / "loso" / "fold1", setup / "dump", exp)
    env = yaml.safe_load((exp / "environment.yaml").read_text())
    assert [entry["after_epoch"] for entry in env[RESUMED]] == [1]
    assert env[RESUMED][0]["device"] == "cpu" and "git_hash" in env[RESUMED][0]

    record = fold_training(exp)
    assert (record["epochs"], record["runs"], record["resumes"], record["resumes_complete"]) == (3, 1, 1, True)
    assert record["epoch_seconds"] >= record["train_seconds"] > 0   # the epoch adds dev scoring to the pass
    train(config, setup / "loso" / "fold1", setup / "dump", exp)   # finished: skipped, nothing recorded
    assert len(yaml.safe_load((exp / "environment.yaml").read_text())[RESUMED]) == 1


def _fake_run(exp, history, start, resumes=()):
    exp.mkdir(parents=True)
    (exp / "environment.yaml").write_text(yaml.safe_dump({**start, RESUMED: list(resumes)} if resumes else start))
    save_checkpoint(exp / "last.pt", {"epoch": len(history), "history": history})


def _epochs(n, seconds, rate, epoch_seconds=None):
    extra = {} if epoch_seconds is None else {"epoch_seconds": epoch_seconds}
    return [{"epoch": i + 1, "seconds": seconds, "segments_per_second": rate, **extra} for i in range(n)]


START = {"cpu": "Xeon", "gpu": None, "device": "cpu", "git_hash": "a" * 40, "git_dirty": False,
         "precision": {"autocast": "bfloat16"}}


def test_every_commit_a_fold_trained_under_is_listed_and_a_dirty_one_flagged(tmp_path):
    resumes = [{"after_epoch": 2, "git_hash": "b" * 40, "git_dirty": True, "device": "cpu"},
               {"after_epoch": 3, "git_hash": "a" * 40, "git_dirty": False, "device": "cpu"}]
    _fake_run(tmp_path / "fold1", _epochs(4, 30.0, 10.0, epoch_seconds=45.0), START, resumes)
    record = fold_training(tmp_path / "fold1")
    assert record["commits"] == ["aaaaaaa", "bbbbbbb"] and record["uncommitted"] and record["resumes"] == 2
    assert (record["train_seconds"], record["epoch_seconds"], record["autocast"]) == (120.0, 180.0, "bfloat16")

    table = training_markdown([{"fold": "fold1", "training": record}])
    row = next(line for line in table.splitlines() if line.startswith("| fold1"))
    assert row == "| fold1 | `aaaaaaa`, `bbbbbbb` | yes | cpu (Xeon) | bfloat16 | 4 | 2.0 | 3.0 | 10.0 |"
    assert "Summed over the 1 folds: 2.0 training minutes, 3.0 epoch minutes." in table


def test_a_run_from_before_the_records_says_a_resume_may_be_missing(tmp_path):
    _fake_run(tmp_path / "fold1", _epochs(2, 60.0, 5.0), {**START, "precision": {"autocast": None}})
    _fake_run(tmp_path / "fold2", _epochs(3, 60.0, 7.0, epoch_seconds=90.0), START)
    records = [{"fold": f"fold{k}", "training": fold_training(tmp_path / f"fold{k}")} for k in (1, 2)]
    assert not records[0]["training"]["resumes_complete"] and records[1]["training"]["resumes_complete"]
    table = training_markdown(records)
    assert "| fold1 | `aaaaaaa` * | no | cpu (Xeon) | float32 | 2 | 2.0 | - | 5.0 |" in table
    assert "Summed over the 2 folds: 5.0 training minutes." in table   # no epoch total when one fold lacks it


def test_a_fold_still_training_is_marked_and_float32_is_said_plainly(tmp_path):
    float32 = {**START, "precision": {"autocast": "none (float32)"}}   # as sertk.train.precision records it
    _fake_run(tmp_path / "fold1", _epochs(2, 60.0, 5.0, epoch_seconds=90.0), float32)
    save_checkpoint(tmp_path / "fold1" / "last.pt", {"epoch": 2, "history": _epochs(2, 60.0, 5.0, 90.0),
                                                     "finished": False})
    table = training_markdown([{"fold": "fold1", "training": fold_training(tmp_path / "fold1")}])
    assert "| fold1 | `aaaaaaa` | no | cpu (Xeon) | float32 | 2 (still training) | 2.0 | 3.0 | 5.0 |" in table
    assert "Summed over the 1 folds (1 still training: so far): 2.0 training minutes" in table


def test_a_grid_fold_counts_every_point_it_trained(tmp_path):
    fold = tmp_path / "fold1"
    for k in (1, 2):
        _fake_run(fold / "grid" / f"0{k}_x{k}", _epochs(k + 1, 30.0, 8.0 + k, epoch_seconds=30.0), START)
    (fold / "grid.yaml").write_text(yaml.safe_dump(
        {"grid": {"x": [1, 2]}, "metric": "UA", "chosen": None,
         "points": [{"point": k, "values": {"x": k}, "dir": f"grid/0{k}_x{k}", "dev_score": 0.5, "best_epoch": 1,
                     "epochs_run": k + 1} for k in (1, 2)]}))
    record = fold_training(fold)
    assert (record["runs"], record["epochs"], record["train_seconds"]) == (2, 5, 150.0)
    assert "| 5 (2 grid points) |" in training_markdown([{"fold": "fold1", "training": record}])


def test_a_damaged_environment_is_a_one_line_error_and_damaged_resumes_are_left_out(tmp_path):
    _fake_run(tmp_path / "fold1", _epochs(2, 60.0, 5.0, epoch_seconds=60.0), START,
              resumes=["not an entry", {"after_epoch": 1, "git_hash": "c" * 40}])
    assert fold_training(tmp_path / "fold1")["commits"] == ["aaaaaaa", "ccccccc"]
    (tmp_path / "fold1" / "environment.yaml").write_text("- a list\n")
    with pytest.raises(ScoreError, match="environment.yaml: expected a mapping"):
        fold_training(tmp_path / "fold1")


def test_a_fold_without_training_has_no_record_and_no_table(tmp_path):
    (tmp_path / "fold1").mkdir()
    assert fold_training(tmp_path / "fold1") is None
    assert training_markdown([{"fold": "fold1", "training": None}]) == ""


def test_an_environment_file_that_is_not_a_record_is_left_alone_and_said(tmp_path, caplog):
    (tmp_path / "environment.yaml").write_text("- a list, not sertk's record\n")
    with caplog.at_level(logging.WARNING, logger="sertk"):
        add_resume(tmp_path, 3, {"git_hash": "c" * 40})
    assert (tmp_path / "environment.yaml").read_text() == "- a list, not sertk's record\n"
    assert "not an environment record" in caplog.text and "this resume is not recorded" in caplog.text
