"""tools/parse_options.sh: Kaldi's option rules, checked through bash."""
import subprocess
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parents[1] / "tools" / "parse_options.sh"
SCRIPT = f"""
stage=0; stop_stage=100; train_args=""; use_amp=false
help_message="Usage: run.sh [--stage N]"
. {TOOL}
echo "stage=$stage stop_stage=$stop_stage train_args=[$train_args] use_amp=$use_amp rest=[$*]"
"""


def parse(*args):
    return subprocess.run(["bash", "-c", SCRIPT, "run.sh", *args], capture_output=True, text=True)


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
