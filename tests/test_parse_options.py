"""tools/parse_options.sh: Kaldi's option rules, checked through bash; only declared options are options."""
import subprocess
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "parse_options.sh"
SCRIPT = f"""
stage=0; stop_stage=100; train_args=""; use_amp=false
undeclared=kept
script_options=(stage stop_stage train_args use_amp)
help_message="Usage: run.sh [--stage N]"
. {TOOL}
echo "stage=$stage stop_stage=$stop_stage train_args=[$train_args] use_amp=$use_amp rest=[$*]"
"""


def parse(*args, script=SCRIPT):
    return subprocess.run(["bash", "-c", script, "run.sh", *args], capture_output=True, text=True)


def test_defaults_and_positionals():
    out = parse("a", "b")
    assert out.returncode == 0
    assert out.stdout.strip() == "stage=0 stop_stage=100 train_args=[] use_amp=false rest=[a b]"


def test_dash_and_underscore_and_equals_forms():
    out = parse("--stage", "3", "--stop-stage=4", "--train_args", "--set optim.lr=1e-4", "--use-amp", "true", "x")
    assert out.stdout.strip() == "stage=3 stop_stage=4 train_args=[--set optim.lr=1e-4] use_amp=true rest=[x]"


def test_double_dash_ends_options():
    assert parse("--", "--stage", "3").stdout.strip().endswith("rest=[--stage 3]")


@pytest.mark.parametrize("args, message", [
    (["--nope", "1"], "unknown option --nope"),
    (["--stage"], "option --stage needs a value"),
    (["--use-amp", "yes"], "--use_amp takes true or false, not 'yes'"),
    (["--config", "/no/such/file"], "config file /no/such/file does not exist"),
])
def test_errors(args, message):
    out = parse(*args)
    assert out.returncode == 1 and message in out.stderr and out.stdout == ""


def test_config_file(tmp_path):
    conf = tmp_path / "c.sh"
    conf.write_text("stage=7\n")
    assert parse("--config", str(conf), "--stop_stage", "9").stdout.startswith("stage=7 stop_stage=9")


def test_help():
    out = parse("--help")
    assert out.returncode == 0 and out.stdout.strip() == "Usage: run.sh [--stage N]"


@pytest.mark.parametrize("name", ["PATH", "undeclared", "help_message", "script_options", "HOME", "_po_name"])
def test_a_variable_of_the_script_is_not_an_option(name):
    # Kaldi's parser takes any existing variable: `--PATH /x` would have emptied the script's PATH
    out = parse(f"--{name}", "/x")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == f"run.sh: unknown option --{name} (run with --help)\n"


def test_a_script_must_declare_its_options():
    out = parse("--stage", "1", script=f"stage=0\n. {TOOL}\necho stage=$stage")
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip() == "run.sh: parse_options.sh: declare the options in script_options=(...) before sourcing it"
    out = parse(script=f"stage=0; script_options=(stage nj)\n. {TOOL}\necho stage=$stage")
    assert out.returncode == 1 and "option nj is declared but has no default" in out.stderr


def test_config_values_are_literal_and_only_set_options(tmp_path):
    conf = tmp_path / "c.sh"
    conf.write_text("# a comment\n\nstage=4  # why\ntrain_args=\"--set a=1 $(touch pwned)\"\nuse_amp='true'\n")
    out = subprocess.run(["bash", "-c", SCRIPT, "run.sh", "--config", str(conf)], capture_output=True, text=True,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "stage=4 stop_stage=100 train_args=[--set a=1 $(touch pwned)] use_amp=true rest=[]"
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("text, message", [
    ("stage=1\nPATH=/x\n", "config file {conf}, line 2: unknown option --PATH (run with --help)"),
    ("use_amp=yes\n", "config file {conf}, line 1: --use_amp takes true or false, not 'yes'"),
    ("if true; then stage=3; fi\n", "config file {conf}, line 1: not a name=value line"),
])
def test_config_errors(tmp_path, text, message):
    conf = tmp_path / "c.sh"
    conf.write_text(text)
    out = parse("--config", str(conf))
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr == f"run.sh: {message.format(conf=conf)}\n"
