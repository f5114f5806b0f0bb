"""Every config value checked when the config is loaded (sertk.config.schema: CHECKS, the model options
by type and meaning, COMBINATIONS), `--device` checked against the machine, a failed `sertk train` that
leaves no exp dir behind where there was none, and dumps that do not fit the model or are damaged (train and
decode: one line)."""
import dataclasses
import logging
import logging.handlers
import shutil
import typing

import numpy as np
import pytest
import torch
import yaml

from helpers import emodb_loso
from recipes import REPO
from sertk.data.datadir import DataDir
from sertk.device import check_device
from sertk.errors import DeviceError
from sertk.features.extract import extract_features
from sertk.features.storage import ArkWriter, load_feats, write_stream_index
from sertk.models import available_models, model_class
from sertk.train import optim
from sertk.train import trainer as trainer_module
from sertk.config.loading import ConfigError, check_config, load_config, with_new_defaults
from sertk.config.schema import (CHECKS, DEFAULTS, OPTIMIZERS, SCHEDULERS, SELECT_METRICS, FeatureSettingError,
                                       model_option_check)

TINY = ["model.name=crnn", "model.n_mels=16", "model.channels=[4,8]", "model.lstm_hidden=8",
        "model.attention_hidden=8", "train.epochs=1", "train.batch_size=4", "segments.length=0.3",
        "segments.hop=0.1", "features.tag=tiny"]
FEATURES = {"sample_rate": 16000, "streams": {"logmel": {"type": "logmel", "n_mels": 16}}}


# --- values at load time ------------------------------------------------------------------------

BAD_SETTINGS = [
    ("optim.lr=-1", "optim.lr must be a number > 0, not -1.0"),
    ("optim.lr=0", "optim.lr must be a number > 0"),
    ("optim.lr=.nan", "optim.lr must be a number > 0, not nan"),
    ("optim.lr=.inf", "optim.lr must be a number > 0, not inf"),
    ("model.dropout=2", r"model.dropout must be in \[0, 1\), not 2.0"),
    ("model.dropout=-0.1", r"model.dropout must be in \[0, 1\)"),
    ("train.epochs=", "train.epochs must be an integer >= 1, not null"),
    ("train.epochs=0", "train.epochs must be an integer >= 1, not 0"),
    ("train.epochs=-1", "train.epochs must be an integer >= 1, not -1"),
    ("train.epochs=1.5", "config key 'train.epochs' expects a int"),
    ("scheduler.name=bogus", "scheduler.name must be one of none, step, multistep, exponential, plateau, cosine, "
                             "warmup_cosine, not 'bogus'"),
    ("train.batch_size=0", "train.batch_size must be an integer >= 1"),
    ("train.patience=0", "train.patience must be an integer >= 1"),
    ("train.seed=-3", "train.seed must be an integer from 0 to 4294967295"),
    ("train.seed=4294967296", "train.seed must be an integer from 0 to 4294967295"),
    ("train.grad_clip=-1", "train.grad_clip must be a number >= 0"),
    ("train.num_workers=-1", r"train.num_workers must be an integer >= 0 or null \(auto\)"),
    ("train.select=wa", "train.select must be one of ua, wa_ua, not 'wa'"),
    ("train.amp=", "train.amp must be auto, true or false, not null"),
    ("train.amp=1", "train.amp must be auto, true or false, not 1"),
    ("features.cmvn=bogus", "features.cmvn must be one of global, speaker, none"),
    ("features.tag=", "features.tag must be a non-empty name"),
    ("features.tag=a b", "features.tag must be a non-empty name without spaces"),
    ("features.tag=../x", "features.tag must be a non-empty name without spaces or '/'"),
    ("features.clip=0", "features.clip must be a positive number of standard deviations or null"),
    ("features.speaker_min_rows=0", "features.speaker_min_rows must be an integer >= 1"),
    ("segments.length=0", "segments.length must be a number of seconds > 0 and <= 600 or null"),
    ("segments.length=100000", "segments.length must be a number of seconds > 0 and <= 600 or null"),   # ms for s
    ("segments.length=1e308", "segments.length must be a number of seconds > 0 and <= 600 or null"),
    ("segments.hop=-1", "segments.hop must be a number of seconds > 0 and <= 600"),
    ("segments.hop=", "segments.hop must be a number of seconds > 0 and <= 600, not null"),
    ("segments.tail=start", "segments.tail must be one of end, drop"),
    ("segments.train_windows=middle", "segments.train_windows must be one of all, center, not 'middle'"),
    ("loss.gender_weight=1", r"loss.gender_weight must be in \[0, 1\)"),
    ("loss.center_weight=-1", "loss.center_weight must be a number >= 0"),
    ("loss.center_lr=0.1", "loss.center_lr 0.1 scales the center-loss gradients, so it needs loss.center_weight > 0"),
    ("optim.name=rmsprop", "optim.name must be one of adam, adamw, sgd, lbfgs"),
    ("optim.max_iter=0", "optim.max_iter must be an integer >= 1, not 0"),
    ("optim.history_size=", "optim.history_size must be an integer >= 1, not null"),
    ("optim.weight_decay=-1e-3", "optim.weight_decay must be a number >= 0"),
    ("optim.betas=[0.9]", r"optim.betas must be null or two numbers in \[0, 1\) for adam or adamw"),
    ("optim.betas=[0.9, 1.0]", r"optim.betas must be null or two numbers in \[0, 1\)"),
    ("scheduler.step_size=0", "scheduler.step_size must be an integer >= 1"),
    ("scheduler.gamma=0", "scheduler.gamma must be a number > 0"),
    ("scheduler.milestones=[0, 2]", "scheduler.milestones must be a list of epochs >= 1"),
    ("scheduler.factor=1", r"scheduler.factor must be in \(0, 1\)"),
    ("scheduler.min_lr_ratio=1.5", r"min_lr_ratio in \[0, 1\]"),
    ("scheduler.warmup_epochs=-1", "scheduler.warmup_epochs must be an integer >= 0"),
    ("augment.time_masks=-1", "augment.time_masks must be an integer >= 0"),
    ("decode.rule=median", "decode.rule must be one of"),
    ("model.lstm_hidden=0", "model.lstm_hidden must be an integer >= 1, not 0"),
    ("model.channels=[4, x]", "model.channels must be a list, each item an integer >= 1, not \\[4, 'x'\\]"),
    ("model.channels=[4, 0]", "model.channels must be a list, each item an integer >= 1"),
    ("model.stream=", "model.stream must be a non-empty string, not null"),
    ("train=", "config section 'train' must be a mapping of its keys, not null"),
    ("train=5", r"config key 'train' is a section: it expects a mapping of its keys \(epochs, batch_size"),
    ("model.name=[a]", "model.name must be a model's name, not \\['a'\\]"),
    ("optim.lr=._", "config key 'optim.lr' expects a float like 0.001, got '._'"),   # was a float() traceback
    ("optim={lr: 1.0e-4}", r"--set optim: optim is a section; set its keys one by one, e.g. --set optim.lr=\.\.\."),
]


@pytest.mark.parametrize("setting, message", BAD_SETTINGS, ids=[s for s, _ in BAD_SETTINGS])
def test_bad_values_fail_at_load(setting, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, TINY + [setting])


@pytest.mark.parametrize("settings, message", [
    (["scheduler.name=multistep"], "scheduler.milestones must be a list of epochs >= 1 for multistep, not \\[\\]"),
    (["optim.name=sgd", "optim.betas=[0.9, 0.99]"], r"optim.betas .* \(optim.name sgd takes none\)"),
    (["segments.length=null", "segments.train_hop=0.5"], "segments.train_hop 0.5 needs windows"),
    (["optim.name=lbfgs", "optim.betas=[0.9, 0.99]"], r"optim.betas .* \(optim.name lbfgs takes none\)"),
    (["optim.name=lbfgs", "train.amp=false", "train.grad_clip=5"], "optim.name lbfgs takes no gradient clipping"),
    (["optim.name=lbfgs", "train.grad_clip=0", "train.amp=auto"], "optim.name lbfgs trains in float32: set train.amp=false"),
])
def test_combinations_fail_at_load(settings, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, TINY + settings)


def test_features_settings_are_feature_errors_too():
    from sertk.errors import FeatureError
    with pytest.raises(FeatureError, match="features.clip must be a positive number"):
        load_config(None, TINY + ["features.clip=-1"])
    with pytest.raises(FeatureSettingError):
        load_config(None, TINY + ["features.cmvn=z"])


def test_values_in_files_and_grids_are_checked_too(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: crnn, dropout: 1.5}\n")
    with pytest.raises(ConfigError, match=r"model.dropout must be in \[0, 1\), not 1.5"):
        load_config(path)
    path.write_text("model: {name: crnn}\ntrain: {epochs: }\n")
    with pytest.raises(ConfigError, match="train.epochs must be an integer >= 1, not null"):
        load_config(path)
    path.write_text("model: [crnn]\n")
    with pytest.raises(ConfigError, match="model must be a mapping of the model's name and options"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"grid: optim.lr must be a number > 0, not -1.0"):
        load_config(None, TINY, ["optim.lr=[1e-3, -1]"])
    with pytest.raises(ConfigError, match=r"grid: model.dropout must be in \[0, 1\), not 2.0"):
        load_config(None, TINY, ["model.dropout=[0.1, 2]"])
    with pytest.raises(ConfigError, match=r"grid: point optim.name=sgd: optim.betas must be null"):
        load_config(None, TINY + ["optim.betas=[0.9, 0.99]"], ["optim.name=[adam, sgd]"])
    # a value the grid replaces is not the base config's: a base that only the grid fixes is fine
    config = load_config(None, TINY + ["scheduler.name=multistep"], ["scheduler.milestones=[[1], [2]]"])
    assert config["grid"] == {"scheduler.milestones": [[1], [2]]}


def test_a_set_of_a_grid_key_and_a_bad_grid_are_refused_by_config_get_too(tmp_path, sertk_cli, user_error):
    """`config get` of a key outside model. (the recipe's check before stage 0) checks the grid as train does; a
    --set of a key the grid varies would be ignored by every point."""
    conf = tmp_path / "g.yaml"
    conf.write_text("model: {name: crnn}\ngrid:\n  optim.lr: [1.0e-3, 3.0e-4]\n")
    assert "grid: unknown config key 'optim.lrr'" in user_error(
        sertk_cli("config", "get", conf, "features.tag", "--grid", "optim.lrr=[1]"))
    assert "grid: config key 'train.seed' expects a int like 0, got 1.5" in user_error(
        sertk_cli("config", "get", conf, "features.tag", "--grid", "train.seed=[1.5]"))
    assert user_error(sertk_cli("config", "show", conf, "--set", "optim.lr=-1")).startswith(
        "--set optim.lr: optim.lr is in the grid ([0.001, 0.0003])")
    taken_out = sertk_cli("config", "get", conf, "optim.lr", "--set", "optim.lr=0.01", "--grid", "optim.lr=")
    assert taken_out.exit_code == 0 and taken_out.output.strip() == "0.01"
    model = sertk_cli("config", "get", conf, "model")   # the whole section, as config show gives it
    assert model.exit_code == 0 and "lstm_hidden:" in model.output and "dropout:" in model.output


def test_good_values_pass_and_ints_become_floats():
    config = load_config(None, TINY + ["optim.lr=1", "features.clip=3", "train.num_workers=null", "train.grad_clip=0",
                                       "segments.length=null", "optim.betas=[0, 0.5]", "train.min_epochs=0",
                                       "model.dropout=0", "scheduler.name=multistep", "scheduler.milestones=[1, 5]"])
    assert config["optim"]["lr"] == 1.0 and isinstance(config["optim"]["lr"], float)
    assert config["features"]["clip"] == 3 and config["train"]["num_workers"] is None


def test_every_shipped_config_loads():
    paths = sorted((REPO / "egs").glob("*/conf/models/*.yaml"))
    assert len(paths) > 10
    for path in paths:
        assert load_config(path)["model"]["name"], path


def test_the_table_covers_every_setting_and_agrees_with_the_trainer():
    keys = {f"{s}.{k}" for s, section in DEFAULTS.items() if s not in ("model", "grid") for k in section}
    assert set(CHECKS) == keys
    assert trainer_module.SELECT_METRICS is SELECT_METRICS     # one table of dev metrics
    params = [torch.nn.Parameter(torch.zeros(1))]
    assert set(OPTIMIZERS) == set(optim.OPTIMIZERS) and set(SCHEDULERS) == set(optim.SCHEDULERS)
    for name in OPTIMIZERS:
        optim.build_optimizer({**DEFAULTS["optim"], "name": name}, params)
    optimizer = torch.optim.SGD(params, lr=0.1)
    for name in SCHEDULERS:
        optim.build_schedule({**DEFAULTS["scheduler"], "name": name, "milestones": [1]}, optimizer, 3)


def test_every_model_option_gets_a_check_that_its_default_passes():
    for model in available_models():
        cls = model_class(model).Config
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            check = model_option_check(f.name, hints[f.name])
            default = getattr(cls(), f.name)
            assert default is None and check.null is not None or check.ok(default), (model, f.name, check.wants)


def test_rates_and_sizes_by_name():
    assert model_option_check("classifier_dropout", float).wants == "in [0, 1)"
    assert model_option_check("drop_path", float).wants == "in [0, 1)"
    assert model_option_check("heads", int).wants == "an integer >= 1"
    assert model_option_check("word_tokens", int).wants == "an integer >= 0"
    assert not model_option_check("layer", typing.Optional[typing.Union[int, str]]).ok(1.5)
    assert model_option_check("layer", typing.Optional[typing.Union[int, str]]).ok(-2)
    # unknown options: refused by name, from --set and from files
    with pytest.raises(ConfigError, match="unknown config key 'model.nope'"):
        load_config(None, ["model.name=crnn", "model.nope=1"])


def test_check_config_of_a_resolved_config():
    config = load_config(None, TINY)
    old = with_new_defaults({k: v for k, v in config.items() if k != "augment"})
    assert check_config(old) == config
    config["optim"]["lr"] = 1
    assert isinstance(check_config(config)["optim"]["lr"], float)
    for change, message in [
        (lambda c: c.update(extra={}), "unknown config section 'extra'"),
        (lambda c: c["train"].update(epoch=3), "unknown config key 'train.epoch'"),
        (lambda c: c["model"].update(depth=3), "unknown config key 'model.depth'"),
        (lambda c: c.update(segments=[1]), "config section 'segments' must be a mapping of its keys, not \\[1\\]"),
        (lambda c: c["decode"].update(rule=None), "decode.rule must be one of .*, not null"),
        (lambda c: c["model"].update(name=3), "model.name must be a model's name, not 3"),
        (lambda c: c["train"].pop("epochs"), "config key 'train.epochs' is missing"),
    ]:
        broken = load_config(None, TINY)
        change(broken)
        with pytest.raises(ConfigError, match=message):
            check_config(broken)


# --- the command line: one line, nothing read or written -----------------------------------------

@pytest.fixture
def train_dirs(tmp_path):
    """(config file, fold dir, feats dir): empty folders, so any read of them would fail differently."""
    conf = tmp_path / "crnn.yaml"
    conf.write_text("model: {name: crnn}\n")
    (tmp_path / "fold").mkdir()
    (tmp_path / "dump").mkdir()
    return conf, tmp_path / "fold", tmp_path / "dump"


@pytest.mark.parametrize("setting, message", [
    ("optim.lr=-1", "optim.lr must be a number > 0"),
    ("model.dropout=2", r"model.dropout must be in [0, 1)"),
    ("train.epochs=", "train.epochs must be an integer >= 1, not null"),
    ("train.epochs=0", "train.epochs must be an integer >= 1, not 0"),
    ("train.epochs=-1", "train.epochs must be an integer >= 1, not -1"),
    ("scheduler.name=bogus", "scheduler.name must be one of"),
])
def test_train_and_config_show_give_one_line_and_leave_nothing(setting, message, train_dirs, tmp_path, sertk_cli,
                                                               user_error):
    conf, fold, dump = train_dirs
    exp = tmp_path / "exp" / "crnn" / "fold1"
    assert message in user_error(sertk_cli("train", "--config", conf, "--fold-dir", fold, "--feats", dump,
                                           "--exp", exp, "--set", setting))
    assert not (tmp_path / "exp").exists()
    assert message in user_error(sertk_cli("config", "show", conf, "--set", setting))
    # config get reads a key outside model. without the models (no torch: the recipe calls it every run),
    # so a model option is checked when a model key is read
    key = setting.partition("=")[0] if setting.startswith("model.") else "train.epochs"
    assert message in user_error(sertk_cli("config", "get", conf, key, "--set", setting))


def test_devices_are_checked_against_the_machine(train_dirs, tmp_path, sertk_cli, user_error, monkeypatch):
    conf, fold, dump = train_dirs
    exp = tmp_path / "exp"

    def run(device):
        return user_error(sertk_cli("train", "--config", conf, "--fold-dir", fold, "--feats", dump, "--exp", exp,
                                    "--device", device))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "--device cuda: CUDA is not available" in run("cuda")
    assert "--device cuda:0: CUDA is not available" in run("cuda:0")
    assert "--device 'gpu' is not a device; give cpu, cuda or cuda:N" in run("gpu")
    assert "is not a device" in run("cpu:1")
    assert "is not a device" in run("")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert "--device cuda:3: this machine has 1 CUDA device(s), cuda:0" in run("cuda:3")
    assert check_device("cuda:0") == "cuda:0" and check_device("cpu") == "cpu"
    assert not exp.exists()
    with pytest.raises(DeviceError):
        check_device("tpu")


def test_decode_checks_its_device_too(tmp_path, sertk_cli, user_error, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "CUDA is not available" in user_error(sertk_cli("decode", "--exp", tmp_path, "--data", tmp_path, "--feats",
                                                           tmp_path, "--out", tmp_path / "d", "--device", "cuda"))
    assert not (tmp_path / "d").exists()


@pytest.fixture(scope="module")
def fold_and_dump(tmp_path_factory):
    base = emodb_loso(tmp_path_factory.mktemp("checks"), speakers=("03", "08", "09"), texts=("a01",), emotions="WA")
    extract_features(base / "all", FEATURES, base / "dump")
    return base / "loso" / "fold1", base / "dump"


def _tiny_crnn(tmp_path):
    """A crnn config, the --set options that make it tiny, and an exp dir not made yet."""
    conf = tmp_path / "c.yaml"
    conf.write_text("model: {name: crnn}\n")
    return conf, [a for s in TINY for a in ("--set", s)], tmp_path / "exp" / "crnn" / "fold1"


def _train_args(conf, fold, dump, exp, *extra):
    return ("train", "--config", conf, "--fold-dir", fold, "--feats", dump, "--exp", exp, *extra)


def test_a_run_that_fails_while_setting_up_leaves_no_exp_dir(fold_and_dump, tmp_path, sertk_cli, user_error):
    fold, dump = fold_and_dump
    conf, sets, exp = _tiny_crnn(tmp_path)
    # the model reads a stream the dump does not hold: found once the features are read
    message = user_error(sertk_cli(*_train_args(conf, fold, dump, exp, *sets, "--set", "model.stream=nope")))
    assert "nope" in message and not (tmp_path / "exp").exists()
    # a grid writes EXP/grid.yaml before its first point fails the same way
    message = user_error(sertk_cli(*_train_args(conf, fold, dump, exp, *sets, "--set", "model.stream=nope",
                                               "--grid", "optim.lr=[1e-3, 1e-2]")))
    assert "nope" in message and not (tmp_path / "exp").exists()
    # an exp dir that was there before stays, with what it held
    exp.mkdir(parents=True)
    (exp / "train.log").write_text("an earlier run\n")
    user_error(sertk_cli(*_train_args(conf, fold, dump, exp, *sets, "--set", "model.stream=nope")))
    assert (exp / "train.log").read_text() == "an earlier run\n"
    # a good run still writes its exp dir, train.log from its first line
    fresh = tmp_path / "fresh"
    result = sertk_cli(*_train_args(conf, fold, dump, fresh, *sets))
    assert result.exit_code == 0, result.output
    assert (fresh / "best.pt").is_file() and (fresh / "config.yaml").is_file()
    assert "train segments" in (fresh / "train.log").read_text()


# --- dumps that do not fit the model, or are damaged: one line, and no exp dir or decode dir left -----

def test_a_model_wider_than_the_dump_is_one_line_before_anything_is_written(fold_and_dump, tmp_path, sertk_cli,
                                                                            user_error):
    fold, dump = fold_and_dump
    conf, sets, exp = _tiny_crnn(tmp_path)
    message = user_error(sertk_cli(*_train_args(conf, fold, dump, exp, *sets, "--set", "model.n_mels=64")))
    assert message.startswith(f"{dump}: stream 'logmel' has 16 values per frame, but model crnn reads 64; ")
    assert "set to 16" in message and not (tmp_path / "exp").exists()
    # a dump that does not record its widths (brought from Kaldi, or older): the model finds it in its first
    # batch, with the exp dir made by then, and the run still leaves none
    bare = tmp_path / "bare"
    shutil.copytree(dump, bare)
    doc = yaml.safe_load((bare / "features.yaml").read_text())
    del doc["dump"]["dims"]
    (bare / "features.yaml").write_text(yaml.safe_dump(doc))
    message = user_error(sertk_cli(*_train_args(conf, fold, bare, exp, *sets, "--set", "model.n_mels=64")))
    assert message == "crnn expects 64 mel bands, got 16; set model.n_mels to the width of the features"
    assert not (tmp_path / "exp").exists()


@pytest.fixture(scope="module")
def trained_tiny(fold_and_dump, tmp_path_factory):
    """A crnn trained for one epoch on fold_and_dump's 16-band dump."""
    fold, dump = fold_and_dump
    exp = tmp_path_factory.mktemp("trained") / "fold1"
    trainer_module.train(load_config(None, TINY), fold, dump, exp)
    return exp


def test_decoding_a_dump_of_another_width_is_one_line(fold_and_dump, trained_tiny, tmp_path, sertk_cli, user_error):
    fold, dump = fold_and_dump
    wide = tmp_path / "dump20"
    extract_features(dump.parent / "all", {"sample_rate": 16000, "streams": {"logmel": {"type": "logmel",
                                                                                          "n_mels": 20}}}, wide)
    out = tmp_path / "decode_test"
    message = user_error(sertk_cli("decode", "--exp", trained_tiny, "--data", fold / "test", "--feats", wide,
                                   "--out", out, "--device", "cpu"))
    assert message.startswith(f"{wide}: stream 'logmel' has 20 values per frame, but model crnn reads 16; ")
    assert not out.exists()


def _damaged_copy(dump, dest, utt: str, damage: str):
    """A copy of the 16-band `dump` at `dest` with `utt`'s features damaged: its matrix cut in the middle (and all
    after it gone), its scp offset past the end of the ark, or a NaN among its values."""
    feats = {u: np.array(x) for u, x in load_feats(dump, "logmel").items()}
    shutil.copytree(dump, dest)
    if damage == "nan":
        feats[utt][1, 3] = np.nan
    for old in (dest / "logmel").glob("feats.*.ark"):
        old.unlink()
    with ArkWriter(dest / "logmel" / "feats.1.ark") as ark:
        for u in sorted(feats):
            ark.write(u, feats[u])
    entries = [(u, name, offset + (10 ** 8 if damage == "offset" and u == utt else 0), n)
               for u, name, offset, n in ark.entries]
    write_stream_index(dest / "logmel", dest / "logmel", entries)
    if damage == "cut":
        offset = next(offset for u, _, offset, _ in entries if u == utt)
        path = dest / "logmel" / "feats.1.ark"
        path.write_bytes(path.read_bytes()[:offset + 40])
    return dest


@pytest.mark.parametrize("damage, says", [
    ("cut", "no whole Kaldi matrix at offset"), ("offset", "is past the end of the ark"),
    ("nan", "has 1 non-finite value(s) (NaN or Inf)")])
def test_a_damaged_dump_is_one_line_naming_the_utterance(damage, says, fold_and_dump, trained_tiny, tmp_path,
                                                         sertk_cli, user_error):
    """Train and decode used to end in kaldiio's AssertionError, or in NaN losses and posteriors."""
    fold, dump = fold_and_dump
    conf = tmp_path / "c.yaml"
    conf.write_text("model: {name: crnn}\n")
    sets = [a for s in TINY for a in ("--set", s)]
    for part, command in (("train", "train"), ("test", "decode")):
        utt = DataDir.load(fold / part).utts[0]   # one the command reads
        damaged = _damaged_copy(dump, tmp_path / f"dump_{part}", utt, damage)
        out = tmp_path / "exp" / f"{part}_out"
        args = (_train_args(conf, fold, damaged, out, *sets) if command == "train" else
                ("decode", "--exp", trained_tiny, "--data", fold / part, "--feats", damaged, "--out", out,
                 "--device", "cpu"))
        message = user_error(sertk_cli(*args))
        assert message.startswith(f"{damaged / 'logmel' / 'feats.scp'}: utterance '{utt}' "), message
        assert says in message and "extract the features again" in message, message
        assert not (tmp_path / "exp").exists()


def test_what_is_logged_while_setting_up_goes_into_train_log(monkeypatch, tmp_path):
    """The exp dir is made once the run is set up; records logged before it exists open its train.log."""
    seen = {}

    class Run:
        def __init__(self, config, fold_dir, dump_dir, exp_dir, device, ranks):
            seen["exists while setting up"] = exp_dir.exists()
            logging.getLogger("sertk.train.trainer").warning("a warning while setting up")
            if config.get("fail"):
                raise ConfigError("refused while setting up")

        def fit(self):
            logging.getLogger("sertk.train.trainer").info("training")
            return "summary"

    monkeypatch.setattr(trainer_module, "_Run", Run)
    exp = tmp_path / "exp"
    assert trainer_module.train({}, tmp_path, tmp_path, exp) == "summary"
    assert seen == {"exists while setting up": False}
    lines = (exp / "train.log").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == ["WARNING a warning while setting up", "INFO training"]
    with pytest.raises(ConfigError):
        trainer_module.train({"fail": True}, tmp_path, tmp_path, tmp_path / "other")
    assert not (tmp_path / "other").exists()
    assert not [h for h in logging.getLogger("sertk").handlers if isinstance(h, logging.handlers.MemoryHandler)]
