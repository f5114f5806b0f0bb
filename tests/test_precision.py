"""train.amp: auto picks bfloat16 autocast only where the hardware computes it natively, true/false force it,
the choice is recorded (environment.yaml, last.pt) and a resumed run keeps the precision it began with."""
import pytest
import torch
import yaml

from helpers import TINY_CRNN, interrupt_training_after, logmel_loso
from sertk.train import precision
from sertk.config.loading import load_config
from sertk.train.precision import LEGACY_TRUE, autocast_dtype, precision_record
from sertk.train.trainer import train

TINY = TINY_CRNN + ["train.epochs=2", "train.patience=10"]


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: ("fpu", "avx2", "avx512f", "avx512_bf16"))


@pytest.fixture
def plain_cpu(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: ("fpu", "avx2"))


def test_auto_follows_the_cpu_flags(bf16_cpu):
    assert autocast_dtype("auto", "cpu") is torch.bfloat16
    assert precision_record("auto", "cpu") == {"autocast": "bfloat16", "why": "auto: the CPU has avx512_bf16"}


def test_auto_keeps_float32_on_a_cpu_without_native_bf16(plain_cpu):
    assert autocast_dtype("auto", "cpu") is None
    assert precision_record("auto", "cpu")["autocast"] == "none (float32)"
    assert autocast_dtype(True, "cpu") is torch.bfloat16      # forced
    assert autocast_dtype(False, "cpu") is None
    assert autocast_dtype(LEGACY_TRUE, "cpu") is None          # the old meaning of true: a GPU only


def test_a_gpu_record_says_what_its_float32_was(monkeypatch):
    # torch's defaults are left alone; the record says whether cuDNN convolutions and matmuls may use TF32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    assert precision_record(False, "cuda") == {"autocast": "none (float32)", "why": "train.amp: false",
                                               "tf32": {"cudnn_convolutions": True, "matmul": False}}
    assert precision_record("auto", "cuda:1")["why"] == "auto: GPU"
    assert "tf32" not in precision_record(False, "cpu")


def test_amx_counts_as_native(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: ("amx_bf16", "amx_tile"))
    assert precision.native_bf16_cpu_flags() == ("amx_bf16",)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return logmel_loso(tmp_path_factory.mktemp("precision"))


def run(setup, exp, *extra):
    train(load_config(None, TINY + list(extra)), setup / "loso" / "fold1", setup / "dump", exp)
    return torch.load(exp / "last.pt", weights_only=False)


def test_the_choice_is_recorded_and_bf16_really_trains_differently(setup, tmp_path, bf16_cpu):
    auto = run(setup, tmp_path / "auto")
    fp32 = run(setup, tmp_path / "fp32", "train.amp=false")
    assert auto["autocast"] == "bfloat16" and fp32["autocast"] is None
    env = yaml.safe_load((tmp_path / "auto" / "environment.yaml").read_text())
    assert env["precision"] == {"autocast": "bfloat16", "why": "auto: the CPU has avx512_bf16"}
    assert env["device"] == "cpu"
    assert yaml.safe_load((tmp_path / "fp32" / "environment.yaml").read_text())["precision"]["autocast"] == \
        "none (float32)"
    # the bf16 forward changes the gradients, so the weights part after a step
    assert any(not torch.equal(auto["model"][k], fp32["model"][k]) for k in auto["model"])


def test_a_resumed_run_keeps_its_precision_on_another_machine(setup, tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: ("avx512_bf16",))
    straight = run(setup, tmp_path / "straight")
    interrupt_training_after(1, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(setup, tmp_path / "cut")
    monkeypatch.undo()
    monkeypatch.setattr(precision, "cpu_flags", lambda: ())       # resumed where auto would mean float32
    resumed = run(setup, tmp_path / "cut")
    assert resumed["autocast"] == "bfloat16"
    assert all(torch.equal(straight["model"][k], resumed["model"][k]) for k in straight["model"])


@pytest.mark.parametrize("old_amp", [True, False])
def test_a_cpu_run_begun_before_auto_resumes_in_float32(old_amp, setup, tmp_path, monkeypatch, bf16_cpu):
    """Before `auto`, true meant bf16 on a GPU only: a CPU run begun with true or false goes on in float32
    under the new default, although auto would choose bf16 on this CPU."""
    fp32 = run(setup, tmp_path / "fp32", "train.amp=false")
    interrupt_training_after(1, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(setup, tmp_path / "old", "train.amp=false")
    # make last.pt look as an older sertk wrote it: amp true, no record of the resolved precision
    last = torch.load(tmp_path / "old" / "last.pt", weights_only=False)
    last["config"]["train"]["amp"] = old_amp
    del last["autocast"]
    torch.save(last, tmp_path / "old" / "last.pt")
    monkeypatch.undo()
    monkeypatch.setattr(precision, "cpu_flags", lambda: ("avx512_bf16",))
    resumed = run(setup, tmp_path / "old")                         # amp: auto (the default)
    assert resumed["autocast"] is None
    assert all(torch.equal(fp32["model"][k], resumed["model"][k]) for k in fp32["model"])
