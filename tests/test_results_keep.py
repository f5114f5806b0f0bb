"""`sertk results keep`: finished folds' records without checkpoints, collected later beside newer folds."""
import shutil

import pytest
import yaml

from sertk.errors import OutputError
from sertk.results import collect
from sertk.results_keep import KeepError, keep_folds
from sertk.train.expdir import check_exp_dir
from test_results import toy_exp_tree
from test_results_dev import write_grid, write_last


@pytest.fixture
def run(tmp_path):
    """The toy protocol's three decoded folds: 1 and 2 finished, 3 still training; fold 1 with a run's binaries."""
    model_dir = toy_exp_tree(tmp_path)
    write_last(model_dir / "fold1", 0.9, 4, 10, epochs=10)
    write_last(model_dir / "fold2", 0.75, 2, 3, epochs=10)
    write_last(model_dir / "fold3", 0.5, 1, 2, epochs=10, finished=False)
    fold1 = model_dir / "fold1"
    (fold1 / "best.pt").write_bytes(b"weights")
    (fold1 / "model.sertk").write_bytes(b"pack")
    (fold1 / "tensorboard").mkdir()
    (fold1 / "tensorboard" / "events.out").write_bytes(b"events")
    (fold1 / "train.log").write_text("epoch 1 ...\n")
    return model_dir


def test_kept_folds_collect_as_the_run_did_after_its_exp_dir_is_gone(run, tmp_path):
    before = collect(run)
    outcome = keep_folds(run, tmp_path / "kept")
    assert outcome == {1: "kept", 2: "kept", 3: "not kept: still training (epoch 2)"}
    kept1 = tmp_path / "kept" / "fold1"
    assert not (tmp_path / "kept" / "fold3").exists()
    assert sorted(p.name for p in kept1.iterdir()) == ["decode_test", "environment.yaml", "last.yaml", "train.log"]
    state = yaml.safe_load((kept1 / "last.yaml").read_text())
    assert (state["best_ua"], state["best_epoch"], state["finished"], len(state["history"])) == (0.9, 4, True, 10)
    assert "model" not in state

    for k in (1, 2):   # the session ends: only the kept records are left of folds 1-2
        shutil.rmtree(run / f"fold{k}")
    assert keep_folds(tmp_path / "kept", run) == {1: "kept", 2: "kept"}
    after = collect(run)
    assert after["pooled"] == before["pooled"] and after["folds"] == before["folds"]
    assert [f["dev"] and f["dev"]["score"] for f in after["per_fold"]] == [0.9, 0.75, 0.5]
    training = (run / "RESULTS.md").read_text().split("## Training per fold")[1]
    assert "| fold1 |" in training and "| fold2 |" in training


def test_keeping_again_is_harmless_and_a_different_file_stops_it_before_it_writes(run, tmp_path, sertk_cli,
                                                                                    user_error):
    keep_folds(run, tmp_path / "kept")
    assert keep_folds(run, tmp_path / "kept")[1] == "kept"          # identical files: nothing to do, no error
    # a recipe rerun over finished folds logs a line into each train.log: the kept one is brought up to date
    log = run / "fold1" / "train.log"
    log.write_text(log.read_text() + "INFO fold1: training already finished; skipping\n")
    assert keep_folds(run, tmp_path / "kept")[1] == "kept"
    assert (tmp_path / "kept" / "fold1" / "train.log").read_text() == log.read_text()
    other = tmp_path / "other"
    (other / "fold1").mkdir(parents=True)
    (other / "fold1" / "train.log").write_text("somebody else's log\n")
    message = user_error(sertk_cli("results", "keep", run, other))
    assert message.startswith(f"{other / 'fold1' / 'train.log'}: exists and differs")
    assert (other / "fold1" / "train.log").read_text() == "somebody else's log\n"
    assert sorted(p.name for p in other.rglob("*")) == ["fold1", "train.log"]   # fold 2 was not written either

    done = sertk_cli("results", "keep", run, tmp_path / "third")
    assert done.exit_code == 0, done.output
    assert "fold3: not kept: still training (epoch 2)" in done.output and "kept 2 of 3 fold(s)" in done.output


def test_a_fold_still_training_or_not_decoded_is_not_kept(tmp_path, sertk_cli, user_error):
    model_dir = tmp_path / "exp" / "toy"
    write_last(model_dir / "fold1", 0.5, 1, 2, finished=False)
    write_last(model_dir / "fold2", 0.6, 3, 10)                      # finished, test not decoded
    message = user_error(sertk_cli("results", "keep", model_dir, tmp_path / "kept"))
    assert "fold1: still training (epoch 2); fold2: test set not decoded yet" in message
    assert not (tmp_path / "kept").exists()
    assert "no fold<k> dirs" in user_error(sertk_cli("results", "keep", model_dir / "fold1", tmp_path / "kept"))


def test_a_kept_fold_is_not_trained_into(run, tmp_path):
    keep_folds(run, tmp_path / "kept")
    with pytest.raises(OutputError, match="kept record of a finished run"):
        check_exp_dir(tmp_path / "kept" / "fold1")
    check_exp_dir(run / "fold1")      # a run's own dir, last.pt beside its last.yaml twin or not: fine


def test_a_grid_fold_keeps_every_point_s_bookkeeping(tmp_path):
    model_dir = toy_exp_tree(tmp_path)
    for k in (2, 3):
        shutil.rmtree(model_dir / f"fold{k}")
    fold = model_dir / "fold1"
    write_grid(fold, [(1e-3, 0.5), (1e-4, 0.8)], chosen=True)
    write_last(fold / "grid" / "01", 0.5, 2, 5, epochs=5)
    write_last(fold / "grid" / "02", 0.8, 2, 5, epochs=5, finished=False)
    with pytest.raises(KeepError, match=r"fold1: still training \(grid/02: epoch 5\)"):
        keep_folds(model_dir, tmp_path / "kept")
    write_last(fold / "grid" / "02", 0.8, 2, 5, epochs=5)
    keep_folds(model_dir, tmp_path / "kept")
    kept = tmp_path / "kept" / "fold1"
    assert sorted(str(p.relative_to(kept)) for p in kept.rglob("last.*")) == ["grid/01/last.yaml", "grid/02/last.yaml"]
    shutil.rmtree(fold)
    keep_folds(tmp_path / "kept", model_dir)
    res = collect(model_dir)
    assert res["per_fold"][0]["dev"]["score"] == 0.8 and "grid point 2 of 2" in res["per_fold"][0]["dev"]["point"]
    assert "| fold1 |" in (model_dir / "RESULTS.md").read_text().split("## Training per fold")[1]


def test_a_destination_inside_the_exp_dir_is_refused(run, sertk_cli, user_error):
    message = user_error(sertk_cli("results", "keep", run, run / "fold1"))
    assert message == f"{run / 'fold1'}: is inside the exp dir {run}; give a destination outside it"
    assert not (run / "fold1" / "fold1").exists()
