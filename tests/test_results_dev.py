"""`sertk results dev`: each fold's dev selection of several runs side by side, from training's records only."""
from pathlib import Path

import pytest
import torch
import yaml

from sertk.checkpoint import save_checkpoint
from sertk.results import collect
from sertk.results_dev import dev_table, fold_dev_score
from test_results import toy_exp_tree


def write_last(fold_dir: Path, best: float, best_epoch: int, epoch: int, epochs: int = 50, finished: bool = True,
               select: str = "ua") -> None:
    fold_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(fold_dir / "last.pt", {
        "epoch": epoch, "best_ua": best, "best_epoch": best_epoch, "finished": finished,
        "history": [{"epoch": e, "dev_ua": 0.1} for e in range(1, epoch + 1)],
        "config": {"train": {"epochs": epochs, "select": select}}, "model": {"w": torch.zeros(3)}})


def write_grid(fold_dir: Path, scores, chosen: bool) -> None:
    fold_dir.mkdir(parents=True, exist_ok=True)
    points = [{"point": i + 1, "values": {"optim.lr": lr}, "dir": f"grid/{i + 1:02d}", "dev_score": s,
               "best_epoch": 2 if s is not None else None, "epochs_run": 5 if s is not None else None}
              for i, (lr, s) in enumerate(scores)]
    done = [p for p in points if p["dev_score"] is not None]
    (fold_dir / "grid.yaml").write_text(yaml.safe_dump({
        "grid": {"optim.lr": [lr for lr, _ in scores]}, "metric": "UA", "points": points,
        "chosen": max(done, key=lambda p: p["dev_score"]) if chosen else None,
        "config": {"train": {"epochs": 5}}}))


@pytest.fixture
def two_runs(tmp_path):
    """A spec run (folds 1-3, fold 3 still training) and a variant (folds 1-2 and a grid on fold 3)."""
    spec, variant = tmp_path / "exp" / "spec", tmp_path / "exp" / "variant"
    write_last(spec / "fold1", 0.6255, 45, 50)
    write_last(spec / "fold2", 0.8082, 10, 50)
    write_last(spec / "fold3", 0.70, 9, 18, finished=False)
    write_last(variant / "fold1", 0.70, 30, 50)
    write_last(variant / "fold2", 0.75, 12, 50)
    write_grid(variant / "fold3", [(1e-3, 0.5), (1e-4, 0.8), (1e-5, None)], chosen=False)
    # a decode dir of garbage: the table must not read it (it never opens a decode dir)
    (spec / "fold1" / "decode_test").mkdir()
    (spec / "fold1" / "decode_test" / "decode.yaml").write_text("{not yaml")
    return spec, variant


def test_table_shows_each_fold_and_the_mean_of_the_folds_every_run_finished(two_runs):
    spec, variant = two_runs
    lines = dev_table([spec, variant]).splitlines()
    assert lines[0] == f"| fold | {spec} (dev UA) | {variant} (dev UA) |"
    assert lines[2] == "| 1 | 62.55 (epoch 45 of 50) | 70.00 (epoch 30 of 50) |"
    assert lines[3] == "| 2 | 80.82 (epoch 10 of 50) | 75.00 (epoch 12 of 50) |"
    # fold 3: still training in the spec run, a grid half done in the variant: both left out of the mean
    assert lines[4] == ("| 3 | 70.00 (epoch 9 of 18 so far, max 50) | 80.00 (epoch 2 of 5 so far, max 5), "
                        "grid point 2 of 3: optim.lr=0.0001 |")
    assert lines[5] == "| mean, folds 1,2 | 71.69 | 72.50 |"


def test_a_finished_grid_and_a_metric_other_than_ua(tmp_path):
    write_grid(tmp_path / "g" / "fold1", [(1e-3, 0.5), (1e-4, 0.8)], chosen=True)
    score = fold_dev_score(tmp_path / "g" / "fold1")
    assert (score.score, score.finished, score.point) == (0.8, True, "grid point 2 of 2: optim.lr=0.0001")
    write_last(tmp_path / "e" / "fold1", 0.75, 20, 40, epochs=40, select="wa_ua")
    table = dev_table([tmp_path / "e"])
    assert "(dev (WA + UA) / 2)" in table.splitlines()[0]
    assert table.splitlines()[-1] == "| mean, folds 1 | 75.00 |"


def test_one_fold_dir_given_alone_and_a_fold_not_started(tmp_path):
    write_last(tmp_path / "devcheck" / "fold2", 0.5, 3, 10, epochs=10)
    (tmp_path / "run" / "fold2").mkdir(parents=True)                  # made, nothing trained yet
    write_last(tmp_path / "run" / "fold1", 0.6, 3, 10, epochs=10)
    lines = dev_table([tmp_path / "devcheck" / "fold2", tmp_path / "run"]).splitlines()
    assert lines[2] == "| 1 | - | 60.00 (epoch 3 of 10) |"
    assert lines[3] == "| 2 | 50.00 (epoch 3 of 10) | not started |"
    assert lines[4] == "| mean | no fold finished in every run |  |"


def test_cli_prints_the_table_and_refuses_a_dir_without_a_run(two_runs, tmp_path, sertk_cli, user_error):
    spec, variant = two_runs
    result = sertk_cli("results", "dev", spec, variant)
    assert result.exit_code == 0, result.output
    assert "| mean, folds 1,2 | 71.69 | 72.50 |" in result.output
    (tmp_path / "empty").mkdir()
    assert "not a training run's exp dir" in user_error(sertk_cli("results", "dev", tmp_path / "empty"))
    (spec / "fold2" / "last.pt").write_bytes(b"damaged")
    assert "cannot read checkpoint" in user_error(sertk_cli("results", "dev", spec))
    (variant / "fold3" / "grid.yaml").write_text("points: 3\n")
    assert "not a grid record" in user_error(sertk_cli("results", "dev", variant))


def test_results_md_gives_each_folds_dev_score_beside_its_test_scores(tmp_path, caplog):
    model_dir = toy_exp_tree(tmp_path)                   # the scoring tests' three toy folds
    write_last(model_dir / "fold1", 0.9, 4, 10, epochs=10)
    write_last(model_dir / "fold2", 0.75, 2, 3, epochs=10, finished=False, select="wa_ua")
    (model_dir / "fold3" / "last.pt").write_bytes(b"damaged")
    res = collect(model_dir)
    assert [f["dev"] and f["dev"]["score"] for f in res["per_fold"]] == [0.9, 0.75, None]
    assert "cannot read checkpoint" in caplog.text                       # a warning, not a failed collect
    md = (model_dir / "RESULTS.md").read_text()
    assert "| dev (WA + UA) / 2 / UA (best epoch of epochs run) |" in md
    assert md.count("| 90.00 (4 of 10) |") == 1 and "| 75.00 (2 of 3), unfinished |" in md
    assert next(line for line in md.splitlines() if line.startswith("| fold3")).endswith(" - |")
    training = md[md.index("## Training per fold"):md.index("## Pooled confusion")]
    assert "| fold1 |" in training and "| fold3 |" not in training   # its training record is left out too, and said
    assert "the fold's training record is left out" in caplog.text


def write_history(fold_dir: Path, losses, best_epoch: int, epochs: int = 10, finished: bool = True) -> None:
    """last.pt with an epoch history: `losses` one (train loss, dev loss) per epoch run."""
    fold_dir.mkdir(parents=True, exist_ok=True)
    history = [{"epoch": e, "train_loss": t, "dev_loss": d, "dev_wa": 0.5, "dev_ua": 0.5}
               for e, (t, d) in enumerate(losses, start=1)]
    save_checkpoint(fold_dir / "last.pt", {
        "epoch": len(losses), "best_ua": 0.8, "best_epoch": best_epoch, "finished": finished, "history": history,
        "config": {"train": {"epochs": epochs, "select": "ua"}}, "model": {"w": torch.zeros(3)}})


def test_losses_show_where_dev_loss_was_lowest_and_the_losses_at_the_best_and_last_epoch(tmp_path, sertk_cli):
    from sertk.results_fit import fit_tables
    run = tmp_path / "exp" / "mpaf"
    write_history(run / "fold1", [(1.4, 0.9), (0.8, 0.7), (0.3, 0.8), (0.05, 1.9)], best_epoch=3)
    write_history(run / "fold2", [(1.2, 1.1), (0.9, 1.3)], best_epoch=1, finished=False)
    (run / "fold3").mkdir()
    # a grid fold: the chosen point's (the best dev score's) history, not another point's
    write_grid(run / "fold4", [(1e-3, 0.5), (1e-4, 0.8)], chosen=True)
    write_history(run / "fold4" / "grid" / "01", [(9.0, 9.0)], best_epoch=1)
    write_history(run / "fold4" / "grid" / "02", [(1.0, 0.6), (0.5, 0.4)], best_epoch=2)
    lines = fit_tables([run]).splitlines()
    assert lines[2].startswith("| fold | epochs run | best dev UA (epoch) | lowest dev loss (epoch) |")
    assert lines[4] == "| 1 | 4 of 10 | 80.00 (3) | 0.700 (2) | 0.800 / 1.900 | 0.300 / 0.050 |"
    assert lines[5] == "| 2 | 2 of 10, running | 80.00 (1) | 1.100 (1) | 1.100 / 1.300 | 1.200 / 0.900 |"
    assert lines[6] == "| 3 | not started |  |  |  |  |"
    assert lines[7] == "| 4 | 2 of 10 | 80.00 (2) | 0.400 (2) | 0.400 / 0.400 | 0.500 / 0.500 |"
    write_last(run / "fold5", 0.7, 2, 3)                  # a history without losses: no numbers made up
    write_history(run / "fold6", [(2.0, float("nan")), (1.0, 0.9)], best_epoch=2)   # a nan is no minimum
    lines = fit_tables([run]).splitlines()
    assert lines[8] == "| 5 | 3 of 50 | 70.00 (2) | - | - | - |"
    assert lines[9] == "| 6 | 2 of 10 | 80.00 (2) | 0.900 (2) | 0.900 / 0.900 | 1.000 / 1.000 |"
    result = sertk_cli("results", "dev", "--losses", run / "fold1")
    assert result.exit_code == 0 and "| 1 | 4 of 10 | 80.00 (3) |" in result.output, result.output
