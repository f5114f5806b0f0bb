"""Hyper-parameters chosen on dev: the config's grid, `sertk train` over its points, the choice downstream."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from helpers import kept_logger, module_cli as cli
from recipes import private_tmp
from replicas import make_emodb
from sertk.data.corpora import prepare_corpus
from sertk.data.protocols import make_folds
from sertk.decode import read_decode_dir
from sertk.features.extract import extract_features
from sertk.fsutil import sha256_file
from sertk.results import collect
from sertk.config.loading import ConfigError, grid_points, load_config, point_config
from sertk.train.grid import point_dir_name

FEATURES = {"sample_rate": 16000, "streams": {"logmel": {"type": "logmel", "n_mels": 16}}}
CONFIG = """\
model: {name: crnn, n_mels: 16, channels: [4, 8], lstm_hidden: 8, attention_hidden: 8}
segments: {length: 0.3, hop: 0.1}
train: {epochs: 2, batch_size: 4}
grid:
  optim.lr: [1.0e-3, 3.0e-2]
  model.lstm_hidden: [4, 8]
"""


def write(path, text):
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("grid")
    root = make_emodb(base / "emodb", speakers=["03", "08", "09"], texts=["a01", "b02"], emotions="WLA")
    make_folds(prepare_corpus("emodb", root, base / "all").datadir, "loso", base / "loso")
    extract_features(base / "all", FEATURES, base / "dump")
    write(base / "conf.yaml", CONFIG)
    return base


def train_args(setup, exp, *extra):
    return ("train", "--config", setup / "conf.yaml", "--fold-dir", setup / "loso" / "fold1", "--feats",
            setup / "dump", "--exp", exp, "--device", "cpu", *extra)


@pytest.fixture(scope="module")
def grid_run(setup):
    exp = setup / "exp" / "loso" / "crnn" / "fold1"
    result = cli(*train_args(setup, exp))
    assert result.exit_code == 0, result.output
    return exp, result


# --- the config's grid --------------------------------------------------------------------------


def test_grid_of_a_file_and_of_the_command_line(tmp_path):
    path = write(tmp_path / "c.yaml", CONFIG)
    config = load_config(path)
    assert config["grid"] == {"optim.lr": [1e-3, 3e-2], "model.lstm_hidden": [4, 8]}
    # the Cartesian product in the keys' order, the last key varying fastest
    assert grid_points(config["grid"]) == [{"optim.lr": a, "model.lstm_hidden": b}
                                           for a in (1e-3, 3e-2) for b in (4, 8)]
    point = point_config(config, {"optim.lr": 3e-2, "model.lstm_hidden": 4})
    assert point["optim"]["lr"] == 3e-2 and point["model"]["lstm_hidden"] == 4 and point["grid"] == {}
    assert config["model"]["lstm_hidden"] == 8                       # the base config is left as it was
    # --grid replaces a key (keeping its place), adds one (a scalar is one value, ints become floats), takes one out
    config = load_config(path, ["train.epochs=1"], ["optim.lr=[1, 0.1]", "train.seed=3", "model.lstm_hidden="])
    assert config["grid"] == {"optim.lr": [1.0, 0.1], "train.seed": [3]}
    assert isinstance(config["grid"]["optim.lr"][0], float) and config["train"]["epochs"] == 1
    # list-valued settings take a list of lists; the default is no grid, one plain run
    config = load_config(None, ["model.name=crnn"], ["model.channels=[[4, 8], [8, 16]]"])
    assert config["grid"] == {"model.channels": [[4, 8], [8, 16]]}
    assert load_config(None, ["model.name=crnn"])["grid"] == {} == load_config(path, ["grid={}"])["grid"]
    assert len(grid_points({})) == 1


@pytest.mark.parametrize("grid, message", [
    ("{optim.lrr: [1]}", r"grid: unknown config key 'optim.lrr' \(known under optim: betas, history_size, lr, max_iter, name"),
    ("{optm.lr: [1]}", "grid: unknown config key 'optm.lr' .known: augment"),
    ("{optim.lr: [fast]}", "grid: config key 'optim.lr' expects a float like 0.001, got 'fast'"),
    ("{train.bucket: [1]}", "expects a bool"),
    ("{train.amp: [1]}", "train.amp must be auto, true or false, not 1"),
    ("{model.name: [crnn]}", "model.name cannot vary in a grid .each model has its own options"),
    ("{features.tag: [a, b]}", "features.tag cannot vary in a grid .all points read the one feature dump"),
    ("{grid: [1]}", "grid cannot vary in a grid"),
    ("{optim: [1]}", "optim is a section; a grid key names one setting"),
    ("{optim.lr: 0.1}", r"optim.lr must be a list of values, e.g. \[0.1\]"),
    ("{optim.lr: []}", "optim.lr has no values"),
    ("{optim.lr: [1, 1.0]}", "optim.lr lists 1.0 twice"),
    ("[optim.lr]", "grid must be a mapping of config keys to lists of values"),
    ("{model.lstm_hidden: [8, fast]}", "expects a int"),
])
def test_bad_grids_fail_at_load(tmp_path, grid, message):
    path = write(tmp_path / "c.yaml", f"model: {{name: crnn}}\ngrid: {grid}\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_bad_grid_options_fail_at_load():
    with pytest.raises(ConfigError, match="unknown config key 'optim.lrr'"):
        load_config(None, ["model.name=crnn"], ["optim.lrr=[1, 2]"])
    with pytest.raises(ConfigError, match=r"--grid 'optim.lr' is not of the form key.sub=\[v1, v2\]"):
        load_config(None, ["model.name=crnn"], ["optim.lr"])
    with pytest.raises(ConfigError, match=r"grid keys are set with --grid KEY=\[v1,v2\]"):
        load_config(None, ["model.name=crnn", "grid.optim.lr=[1]"])


def test_point_dir_names_sort_and_say_the_values():
    assert point_dir_name(3, {"optim.lr": 1e-3, "model.channels": [8, 16]}, 12) == "03_lr0.001_channels8-16"
    assert point_dir_name(1, {"model.layer": -1, "features.clip": None, "train.amp": True}, 2) == \
        "1_layer-1_clipnull_amptrue"
    assert point_dir_name(2, {"augment.name": "a b/c"}, 9) == "2_namea-b-c"


def test_config_show_lists_the_points(setup, user_error):
    result = cli("config", "show", setup / "conf.yaml", "--grid", "train.seed=[0, 1]")
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.stdout)
    assert shown["grid"] == {"optim.lr": [1e-3, 3e-2], "model.lstm_hidden": [4, 8], "train.seed": [0, 1]}
    assert "# grid: 8 points" in result.stdout
    assert "#   8: optim.lr=0.03 model.lstm_hidden=8 train.seed=1" in result.stdout
    assert "unknown config key 'optim.lrr'" in user_error(cli("config", "show", setup / "conf.yaml",
                                                              "--grid", "optim.lrr=[1]"))


# --- training the grid ---------------------------------------------------------------------------


def test_a_2x2_grid_trains_every_point_and_keeps_the_best_on_dev(grid_run):
    exp, result = grid_run
    record = yaml.safe_load((exp / "grid.yaml").read_text())
    points = record["points"]
    assert [p["values"] for p in points] == grid_points(record["grid"])
    assert [p["dir"] for p in points] == ["grid/1_lr0.001_lstm_hidden4", "grid/2_lr0.001_lstm_hidden8",
                                          "grid/3_lr0.03_lstm_hidden4", "grid/4_lr0.03_lstm_hidden8"]
    for p in points:
        point_exp = exp / p["dir"]
        for name in ("best.pt", "last.pt", "config.yaml", "train.log"):
            assert (point_exp / name).is_file(), (p["dir"], name)
        config = yaml.safe_load((point_exp / "config.yaml").read_text())
        assert config["grid"] == {} and config["optim"]["lr"] == p["values"]["optim.lr"]
        assert config["model"]["lstm_hidden"] == p["values"]["model.lstm_hidden"]
        assert 0 <= p["dev_score"] <= 1 and 1 <= p["best_epoch"] <= p["epochs_run"] == 2
        assert f"[{p['point']}/4] {exp / p['dir']}: optim.lr=" in result.stdout
    scores = [p["dev_score"] for p in points]
    chosen = record["chosen"]
    assert chosen["point"] == scores.index(max(scores)) + 1          # the best, the earliest of equals
    assert chosen["values"] == points[chosen["point"] - 1]["values"] and record["metric"] == "UA"
    # E is the chosen point's exp dir downstream: best.pt, config.yaml, environment.yaml, train.log
    chosen_dir = exp / chosen["dir"]
    assert sha256_file(exp / "best.pt") == sha256_file(chosen_dir / "best.pt") == chosen["best_sha256"]
    for name in ("config.yaml", "environment.yaml", "train.log"):
        assert (exp / name).read_bytes() == (chosen_dir / name).read_bytes()
    assert not (exp / "last.pt").exists()
    assert sorted(p.name for p in exp.iterdir()) == [".lock", "best.pt", "config.yaml", "environment.yaml", "grid",
                                                     "grid.yaml", "train.log"]
    assert f"{exp}: chose point {chosen['point']} of 4" in result.stdout
    assert yaml.safe_load((exp / "grid.yaml").read_text())["config"] == load_config(exp.parents[3] / "conf.yaml")


def test_the_chosen_model_is_decoded_packed_and_its_choice_collected(setup, grid_run):
    exp, _ = grid_run
    fold = setup / "loso" / "fold1"
    result = cli("decode", "--exp", exp, "--feats", setup / "dump", "--protocol-dir", setup / "loso", "--device",
                 "cpu", "--data", fold / "dev", "--out", exp / "decode_dev", "--data", fold / "test", "--out",
                 exp / "decode_test")
    assert result.exit_code == 0, result.output
    record = yaml.safe_load((exp / "grid.yaml").read_text())
    assert read_decode_dir(exp / "decode_test").info["checkpoint_sha256"] == record["chosen"]["best_sha256"]
    packed = cli("pack", exp)
    assert packed.exit_code == 0 and (exp / "model.sertk").is_file(), packed.output
    results = collect(exp.parent)
    [selection] = results["dev_selection"]
    assert selection["fold"] == "fold1" and selection["points"] == 4 and selection["metric"] == "UA"
    assert selection["chosen"] == record["chosen"]["values"]
    assert selection["dev_score"] == pytest.approx(record["chosen"]["dev_score"])
    assert results["per_fold"][0]["fold"] == "fold1"
    md = (exp.parent / "RESULTS.md").read_text()
    chosen = " ".join(f"`{k}={v}`" for k, v in record["chosen"]["values"].items())
    assert "## Dev-selected hyper-parameters" in md
    assert f"| fold1 | {chosen} | {100 * record['chosen']['dev_score']:.2f} | 4 |" in md
    assert "- grid: `optim.lr` in [0.001, 0.03]; `model.lstm_hidden` in [4, 8]" in md
    assert "- hyper-parameters: chosen on dev by a grid in 1 fold(s) (fold1)" in md


def stamps_of_run_files(exp):
    """Every file's mtime but the lock's (each command that trains in E records itself in E/.lock)."""
    return {p: p.stat().st_mtime_ns for p in exp.rglob("*") if p.is_file() and p.name != ".lock"}


def test_a_rerun_skips_and_another_grid_or_run_in_that_dir_is_refused(setup, grid_run, user_error):
    exp, _ = grid_run
    stamps = stamps_of_run_files(exp)
    again = cli(*train_args(setup, exp))
    assert again.exit_code == 0 and "grid already finished; chose point" in again.stdout, again.output
    assert stamps_of_run_files(exp) == stamps
    saved = (exp / "best.pt").read_bytes()
    (exp / "best.pt").unlink()                               # E's copy lost: the same command puts it back
    assert cli(*train_args(setup, exp)).exit_code == 0 and (exp / "best.pt").read_bytes() == saved
    stamps = stamps_of_run_files(exp)
    message = user_error(cli(*train_args(setup, exp, "--grid", "optim.lr=[1.0e-3, 1.0e-1]")))
    assert message == f"{exp} was trained with another config or grid (grid.optim.lr: [0.001, 0.03] -> [0.001, 0.1]); " \
                      f"give a new exp dir or remove it (compare {exp / 'grid.yaml'})"
    assert "trained with another config or grid" in user_error(cli(*train_args(setup, exp, "--set", "train.seed=1")))
    message = user_error(cli(*train_args(setup, exp, "--grid", "optim.lr=", "--grid", "model.lstm_hidden=")))
    assert message.endswith("holds a grid run (grid.yaml); a plain run needs its own exp dir: give a new one or "
                            "remove it")
    assert stamps_of_run_files(exp) == stamps
    # a finished grid given another fold or other features: refused as a plain run refuses them
    other_fold = list(train_args(setup, exp))
    other_fold[other_fold.index("--fold-dir") + 1] = setup / "loso" / "fold2"
    assert "loso/fold2: not the fold" in user_error(cli(*other_fold))
    hop = {"sample_rate": 16000, "streams": {"logmel": {"type": "logmel", "n_mels": 16, "hop_length": 0.02}}}
    extract_features(setup / "all", hop, setup / "dump_hop")
    other_feats = list(train_args(setup, exp))
    other_feats[other_feats.index("--feats") + 1] = setup / "dump_hop"
    assert "its features differ from those the run in" in user_error(cli(*other_feats))
    assert stamps_of_run_files(exp) == stamps


def test_a_diverging_point_is_left_out_of_the_choice(setup, tmp_path, user_error):
    """A point whose loss goes non-finite used to stop the grid at every rerun (its settings cannot change in E)."""
    sets = ("--grid", "model.lstm_hidden=", "--set", "optim.name=sgd", "--set", "train.grad_clip=0", "--set",
            "train.class_weighted=false", "--set", "train.epochs=1")
    result = cli(*train_args(setup, tmp_path / "E", "--grid", "optim.lr=[1.0e-3, 1.0e+30]", *sets))
    assert result.exit_code == 0, result.output
    assert "[2/2]" in result.stdout and "diverged (epoch 1: the training loss is not finite" in result.stdout
    record = yaml.safe_load((tmp_path / "E" / "grid.yaml").read_text())
    assert record["chosen"]["point"] == 1 and record["points"][1]["dev_score"] is None
    assert record["points"][1]["diverged"].startswith("epoch 1: the training loss is not finite")
    again = cli(*train_args(setup, tmp_path / "E", "--grid", "optim.lr=[1.0e-3, 1.0e+30]", *sets))
    assert again.exit_code == 0 and "grid already finished; chose point 1" in again.stdout
    # the grid is finished: its diverged point (config.yaml and train.log, no checkpoint) is not "still training"
    decoded = cli("decode", "--skip-unfinished", "--exp", tmp_path / "E", "--data", setup / "loso" / "fold1" / "test",
                  "--feats", setup / "dump", "--out", tmp_path / "E" / "decode_test")
    assert decoded.exit_code == 0 and "still training" not in decoded.output, decoded.output
    assert (tmp_path / "E" / "decode_test" / "decode.yaml").is_file()
    from sertk.results_folds import dev_selection
    assert dev_selection(1, tmp_path / "E")["diverged"] == 1                # RESULTS.md: "2 (1 diverged)"
    message = user_error(cli(*train_args(setup, tmp_path / "F", "--grid", "optim.lr=[1.0e+30, 1.0e+31]", *sets)))
    assert message.startswith(f"{tmp_path / 'F'}: every point of the grid diverged")


def test_an_interrupted_grid_resumes_and_a_one_point_grid_is_a_plain_run(setup, grid_run, tmp_path, user_error):
    exp, _ = grid_run
    copy = tmp_path / "fold1"
    shutil.copytree(exp, copy, ignore=shutil.ignore_patterns("decode_*", "model.sertk"))
    record = yaml.safe_load((copy / "grid.yaml").read_text())
    record["chosen"] = None                                  # as left by a run stopped before its choice
    (copy / "grid.yaml").write_text(yaml.safe_dump(record, sort_keys=False))
    (copy / "best.pt").unlink()
    resumed = cli(*train_args(setup, copy))
    assert resumed.exit_code == 0, resumed.output
    assert sha256_file(copy / "best.pt") == sha256_file(exp / "best.pt")
    assert yaml.safe_load((copy / "grid.yaml").read_text())["chosen"]["point"] == record["points"][0]["point"] + \
        [p["dev_score"] for p in record["points"]].index(max(p["dev_score"] for p in record["points"]))
    # one point: a plain run in E, the point's values set
    plain = tmp_path / "plain"
    result = cli(*train_args(setup, plain, "--grid", "optim.lr=3.0e-2", "--grid", "model.lstm_hidden=[4]",
                             "--set", "train.epochs=1"))
    assert result.exit_code == 0, result.output
    assert (plain / "last.pt").is_file() and not (plain / "grid").exists() and not (plain / "grid.yaml").exists()
    config = torch.load(plain / "last.pt", weights_only=True)["config"]
    assert config["optim"]["lr"] == 3e-2 and config["model"]["lstm_hidden"] == 4 and config["grid"] == {}
    message = user_error(cli(*train_args(setup, plain)))
    assert message == f"{plain} holds a plain run (last.pt); a grid needs its own exp dir: give a new one or remove it"


def test_a_point_stopped_between_its_first_best_pt_and_last_pt_trains_again(setup, tmp_path):
    """A kill between a point's first two writes: the rerun trains that point from epoch 1 (it was refused as 'a
    point of the grid' whose choice a longer run would change)."""
    exp = tmp_path / "E"
    args = train_args(setup, exp, "--set", "train.epochs=1", "--grid", "model.lstm_hidden=")
    assert cli(*args).exit_code == 0
    record = yaml.safe_load((exp / "grid.yaml").read_text())
    point = exp / record["points"][1]["dir"]
    (point / "last.pt").unlink()
    (exp / "grid.yaml").write_text(yaml.safe_dump({**record, "chosen": None}, sort_keys=False))
    (exp / "best.pt").unlink()
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert (point / "last.pt").is_file() and yaml.safe_load((exp / "grid.yaml").read_text())["chosen"] is not None


def test_each_points_score_is_recorded_as_it_comes(setup, tmp_path, monkeypatch):
    """A grid stopped after its first point: grid.yaml already holds that point's dev score (what `sertk results
    dev` shows while a grid runs), the others none, and no choice."""
    from sertk.results_dev import fold_dev_score
    from sertk.train import grid
    real_train, calls = grid.train, []

    def train_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train(*args, **kwargs)
    monkeypatch.setattr(grid, "train", train_then_stop)
    config = load_config(setup / "conf.yaml", ["train.epochs=1"])
    with kept_logger(), pytest.raises(KeyboardInterrupt):
        grid.train_experiment(config, setup / "loso" / "fold1", setup / "dump", tmp_path / "fold1")
    record = yaml.safe_load((tmp_path / "fold1" / "grid.yaml").read_text())
    scores = [p["dev_score"] for p in record["points"]]
    assert scores[0] is not None and scores[1:] == [None] * 3 and record["chosen"] is None
    assert fold_dev_score(tmp_path / "fold1").score == scores[0]


def test_a_grid_under_torchrun_shares_one_process_group(setup, tmp_path):
    """Two gloo processes train every point together (one process group for the whole grid: leaving and
    joining again between points can connect to the old group's addresses); rank 0 alone writes."""
    exp = tmp_path / "ddp"
    args = train_args(setup, exp, "--set", "train.epochs=1", "--grid", "model.lstm_hidden=", "--grid",
                      "optim.lr=[1.0e-3, 3.0e-2]")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "sertk", *map(str, args)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(private_tmp(tmp_path))})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("chose point") == 1 and done.stdout.count("[2/2]") == 1
    record = yaml.safe_load((exp / "grid.yaml").read_text())
    assert sha256_file(exp / "best.pt") == record["chosen"]["best_sha256"]
    for p in record["points"]:
        log = (exp / p["dir"] / "train.log").read_text()
        assert log.count("epoch 1: train loss") == 1 and "2 processes" in log
