from pathlib import Path

import pytest

from sertk.models import ModelConfigError
from sertk.config.loading import ConfigError, get_key, load_config


def write(tmp_path, text):
    (tmp_path / "c.yaml").write_text(text)
    return tmp_path / "c.yaml"


def test_defaults_model_defaults_file_and_overrides_in_that_order(tmp_path):
    path = write(tmp_path, "model: {name: crnn, dropout: 0.1}\noptim: {lr: 1e-3}\ntrain: {epochs: 5}\n")
    config = load_config(path, ["optim.lr=1e-4", "model.channels=[8, 16]", "train.epochs=7"])
    assert config["optim"]["lr"] == pytest.approx(1e-4) and isinstance(config["optim"]["lr"], float)
    assert config["model"]["channels"] == [8, 16] and config["model"]["dropout"] == 0.1
    assert config["train"]["epochs"] == 7 and config["train"]["batch_size"] == 32
    assert config["model"]["lstm_hidden"] == 64  # the model's own default
    assert get_key(config, "segments.length") == 2.0


def test_scientific_notation_in_files_is_a_number(tmp_path):
    config = load_config(write(tmp_path, "model: {name: crnn}\noptim: {lr: 5e-4}\n"))
    assert config["optim"]["lr"] == pytest.approx(5e-4)


def test_integers_are_decimal_in_configs_and_overrides(tmp_path):
    """YAML 1.1 reads 010 as octal 8, 0x10 as 16 and 1:30 as 90; in a config they are 10 and two strings."""
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: crnn}\ntrain: {seed: 010}\n")
    assert load_config(path, models=False)["train"]["seed"] == 10
    assert load_config(path, ["train.seed=010"], models=False)["train"]["seed"] == 10
    for value in ("0x10", "1:30"):
        with pytest.raises(ConfigError, match=f"config key 'train.seed' expects a int like 10, got '{value}'"):
            load_config(path, [f"train.seed={value}"], models=False)
    with pytest.raises(ConfigError, match="got '1:30.5'"):
        load_config(path, ["segments.length=1:30.5"], models=False)


def test_an_int_where_a_float_is_expected_becomes_a_float():
    assert load_config(None, ["model.name=crnn", "optim.lr=1"])["optim"]["lr"] == 1.0


@pytest.mark.parametrize("overrides, message", [
    (["model.name=crnn", "optim.lrr=1"], "unknown config key 'optim.lrr'"),
    (["model.name=crnn", "optim.lr=fast"], "expects a float"),
    (["model.name=crnn", "train.bucket=1"], "expects a bool"),
    (["model.name=crnn", "train.epochs"], "not of the form key.sub=value"),
    (["model.name=crnn", "model.nope=1"], "unknown config key 'model.nope'"),
    ([], "model.name is not set"),
])
def test_bad_overrides(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_unknown_model_and_unknown_file_key(tmp_path):
    with pytest.raises(ModelConfigError, match="unknown model 'nope'; available: crnn"):
        load_config(None, ["model.name=nope"])
    with pytest.raises(ConfigError, match="unknown key 'trian'"):
        load_config(write(tmp_path, "model: {name: crnn}\ntrian: {epochs: 3}\n"))
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "none.yaml")


def test_an_error_in_a_base_file_names_that_file(tmp_path):
    """It named the file that named the base, which does not hold the key."""
    (tmp_path / "base.yaml").write_text("model: {name: crnn}\ntrain: {epoch: 3}\n")
    (tmp_path / "typed.yaml").write_text("model: {name: crnn}\ntrain: {epochs: x}\n")
    for base, message in (("base.yaml", "unknown key 'train.epoch'"), ("typed.yaml", "'train.epochs' expects a int")):
        (tmp_path / "child.yaml").write_text(f"base: {base}\ntrain: {{batch_size: 4}}\n")
        with pytest.raises(ConfigError, match=f"^{tmp_path / base}: .*{message}"):
            load_config(tmp_path / "child.yaml", models=False)


def test_a_base_file_is_changed_by_the_file_that_names_it(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "m.yaml").write_text("model: {name: crnn, dropout: 0.1}\noptim: {lr: 1e-3}\n"
                                                "train: {epochs: 5, batch_size: 8}\n")
    path = write(tmp_path, "base: shared/m.yaml\ntrain: {epochs: 9}\nmodel: {dropout: 0.2}\n")
    config = load_config(path)
    assert config["train"] == {**config["train"], "epochs": 9, "batch_size": 8}
    assert config["model"]["dropout"] == 0.2 and config["optim"]["lr"] == 1e-3


@pytest.mark.parametrize("text, message", [
    ("base: missing.yaml\n", r"missing.yaml: no such config file \(the base of"),
    ("base: c.yaml\n", "leads back to itself"),
    ("base: [a.yaml]\n", "base must be the path of another config file"),
])
def test_bad_base_files(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, text))


def test_the_ravdess_strl_ser_config_changes_only_the_ravdess_set_up():
    from recipes import REPO
    shared = load_config(REPO / "egs" / "TEMPLATE" / "conf" / "models" / "strl_ser.yaml")
    ravdess = load_config(REPO / "egs" / "ravdess" / "conf" / "models" / "strl_ser.yaml")
    changed = {(section, key) for section in shared for key in shared[section]
               if shared[section][key] != ravdess[section][key]}
    assert changed == {("model", "time_kernel"), ("features", "tag"), ("segments", "length"), ("segments", "hop")}
    assert (ravdess["model"]["time_kernel"], ravdess["segments"]["length"], ravdess["segments"]["hop"]) == (3, 1.4, 0.7)


GET = ("import sys\nfrom sertk.cli import main\nsys.argv = ['sertk', 'config', 'get', {conf!r}, {key!r}]\n"
       "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\nprint('torch' in sys.modules, code)")


@pytest.mark.parametrize("key, value, torch_loaded", [("features.tag", "whisper_base", False),
                                                      ("model.input_projection", "64", True)])
def test_config_get_of_a_feature_key_does_not_import_torch(key, value, torch_loaded):
    """The recipe reads features.tag before every run: without the models (and torch) that is a fraction of
    a second; a model key still resolves the model's options."""
    import subprocess
    import sys
    conf = str(Path(__file__).resolve().parents[1] / "egs" / "TEMPLATE" / "conf" / "models" / "crnn_whisper.yaml")
    done = subprocess.run([sys.executable, "-c", GET.format(conf=conf, key=key)], capture_output=True, text=True)
    lines = done.stdout.split()
    assert lines == [value, str(torch_loaded), "0"], done.stdout + done.stderr


def test_config_get_without_the_model_still_checks_the_rest(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("model: {name: crnn, n_mels: 40}\nfeatures: {tag: mine}\n")
    light = load_config(conf, ["train.epochs=3"], models=False)
    assert light["model"] == {"name": "crnn", "n_mels": 40} and light["features"]["tag"] == "mine"
    assert light["train"]["epochs"] == 3
    with pytest.raises(ConfigError, match="features.cmvn must be one of"):
        load_config(conf, ["features.cmvn=bogus"], models=False)
    with pytest.raises(ConfigError, match="train.epochs must be an integer >= 1"):
        load_config(conf, ["train.epochs=0"], models=False)


@pytest.mark.parametrize("text, where, key", [
    ("model: {name: crnn}\ntrain:\n  epochs: 3\noptim: {lr: 1e-3}\ntrain:\n  epochs: 5\n", "c.yaml:5", "'train'"),
    ("model: {name: crnn}\ntrain:\n  epochs: 3\n  batch_size: 4\n  epochs: 5\n", "c.yaml:5", "'epochs'"),
    ("model: {name: crnn, name: crnn}\n", "c.yaml:1", "'name'"),
])
def test_a_key_given_twice_is_one_line_naming_file_line_and_key(tmp_path, text, where, key, sertk_cli, user_error):
    """PyYAML keeps the last of two equal keys and drops the other silently; sertk refuses, at any level."""
    path = write(tmp_path, text)
    message = user_error(sertk_cli("config", "get", path, "train.epochs"))
    assert message.startswith(f"{tmp_path / where}: duplicate key {key}"), message
    with pytest.raises(ConfigError, match="duplicate key"):
        load_config(path)


def test_a_key_given_twice_in_a_base_file_or_an_override_is_refused(tmp_path, sertk_cli, user_error):
    (tmp_path / "base.yaml").write_text("model: {name: crnn}\noptim: {lr: 1e-3}\noptim: {lr: 1e-4}\n")
    path = write(tmp_path, "base: base.yaml\ntrain: {epochs: 2}\n")
    message = user_error(sertk_cli("config", "show", path))
    assert message.startswith(f"{tmp_path / 'base.yaml'}:3: duplicate key 'optim' (first at line 2)"), message
    path = write(tmp_path, "model: {name: crnn}\n")
    message = user_error(sertk_cli("config", "show", path, "--set", "model.channels={a: 1, a: 2}"))
    assert message.endswith("the value gives key 'a' twice"), message
    # a merge key (<<) is not a repeated key: the mapping's own keys override the merged ones
    merged = write(tmp_path, "model: &m {name: crnn, dropout: 0.1}\nanchors: {<<: *m, dropout: 0.3}\n")
    from sertk.yamlutil import read_yaml_file
    assert read_yaml_file(merged, ConfigError)["anchors"] == {"name": "crnn", "dropout": 0.3}


def test_every_yaml_file_and_docs_example_of_the_repo_loads():
    """Refusing repeated keys must not refuse any YAML sertk ships, keeps or shows in its docs."""
    import re
    from recipes import REPO
    from sertk.yamlutil import load_yaml, read_yaml_file
    paths = [p for pattern in ("egs/*/conf/**/*.yaml", "egs/*/kept/**/*.yaml", "sertk/**/*.yaml")
             for p in sorted(REPO.glob(pattern))]
    assert len(paths) > 40
    for path in paths:
        read_yaml_file(path, ConfigError, mapping=False)
    blocks = [m.group(1) for md in sorted(REPO.glob("**/*.md")) if "exp" not in md.relative_to(REPO).parts
              for m in re.finditer(r"```ya?ml\n(.*?)```", md.read_text(encoding="utf-8"), re.S)]
    assert blocks
    for block in blocks:
        load_yaml(block)
