"""sertk's GPU paths, each against the CPU: training on a GPU (the precision it records, checkpoints that load
on a CPU, resuming an interrupted run), `sertk decode` and `sertk infer` on a GPU, feature extraction on a GPU.

On a machine with a CUDA GPU: `python -m pytest -q -n 0 tests/test_cuda.py`. Elsewhere these tests are skipped. The
environment variable SERTK_TEST_GPU names the device that plays the GPU (default `cuda`; `cuda:1` picks
another GPU); `SERTK_TEST_GPU=cpu` runs every check with the CPU in its place, CPU against CPU, to check the
tests themselves on a machine without a GPU.
"""
import os

import numpy as np
import pytest
import torch
import yaml

from helpers import batch_for, interrupt_training_after
from replicas import write_wav
from sertk.decode import read_decode_dir
from sertk.decode.decoder import decode_data_dir
from sertk.experiment import build_configured_model, load_checkpoint
from sertk.features.extract import extract_features
from sertk.features.storage import load_feats
from sertk.train.trainer import train
from test_inference import posteriors, read_csv
from test_train import config, setup, trained  # noqa: F401  (fixtures: a generated corpus, its dump, a CPU-trained crnn)

GPU = os.environ.get("SERTK_TEST_GPU", "cuda")
ON_CUDA = GPU.startswith("cuda")
pytestmark = pytest.mark.skipif(ON_CUDA and not torch.cuda.is_available(),
                                reason="needs a CUDA GPU: sertk's GPU paths against the CPU "
                                       "(SERTK_TEST_GPU=cpu runs them on the CPU instead)")

GPU_RUN = ("train.epochs=2", "train.amp=auto")   # test_train's tiny crnn, two epochs, the precision sertk picks
LOGMEL = {"sample_rate": 16000, "streams": {   # natural-log mels with deltas, and ESERNet's dB mels
    "logmel": {"type": "logmel", "n_mels": 40, "deltas": 2},
    "logmel_db": {"type": "logmel", "n_mels": 128, "fmax": 8000.0, "scale": "db", "top_db": 80.0}}}


@pytest.fixture(scope="module")
def gpu_exp(setup, tmp_path_factory):  # noqa: F811
    """test_train's tiny crnn trained on the GPU for 2 epochs, cut right after epoch 1 had written last.pt (as
    the end of a session would cut it) and run again: (exp dir, the second run's TrainSummary)."""
    exp, fold, dump = tmp_path_factory.mktemp("gpu") / "fold1", setup / "loso" / "fold1", setup / "dump"
    with pytest.MonkeyPatch.context() as patch:
        interrupt_training_after(1, patch)
        with pytest.raises(KeyboardInterrupt):
            train(config(*GPU_RUN), fold, dump, exp, device=GPU)
    assert not load_checkpoint(exp / "last.pt")["finished"]
    return exp, train(config(*GPU_RUN), fold, dump, exp, device=GPU)


@pytest.fixture
def strict_float32(monkeypatch):
    """GPU float32 without TF32: torch's default lets cuDNN convolutions round their inputs to TF32 (10-bit
    mantissa), which moves posteriors by ~1e-3; without it the GPU must give the CPU's numbers to 1e-4."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)


def tensors(node):
    """Every tensor in a checkpoint's nested dicts and lists."""
    if isinstance(node, torch.Tensor):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from tensors(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from tensors(value)


# --- training -----------------------------------------------------------------------------------

def test_gpu_training_records_bf16_autocast_and_why(gpu_exp):
    exp, _ = gpu_exp
    env = yaml.safe_load((exp / "environment.yaml").read_text())
    if ON_CUDA:   # every GPU sertk is lent (H200) computes bf16 natively
        assert env["precision"]["autocast"] == "bfloat16" and env["precision"]["why"] == "auto: GPU"
        assert set(env["precision"]["tf32"]) == {"cudnn_convolutions", "matmul"}
        assert env["gpu"] and torch.cuda.get_device_name(0) in env["gpu"] and env["device"] == GPU
    else:
        assert env["precision"]["why"].startswith("auto: the CPU has")
    # last.pt keeps the precision the run began with, so that a resume elsewhere keeps it too
    bf16 = env["precision"]["autocast"] == "bfloat16"
    assert load_checkpoint(exp / "last.pt")["autocast"] == ("bfloat16" if bf16 else None)


def test_gpu_checkpoints_load_and_run_on_the_cpu(gpu_exp):
    exp, _ = gpu_exp
    for name in ("best.pt", "last.pt"):
        state = load_checkpoint(exp / name)   # sertk's reader: weights_only, map_location cpu
        assert {t.device.type for t in tensors(state)} == {"cpu"}, name
        model = build_configured_model(state["config"], len(state["classes"]))
        model.load_state_dict(state["model"])   # strict: every weight there, none left over
        with torch.no_grad():
            logits = model.eval()(batch_for(model, batch=2, frames=30))["logits"]
        assert logits.shape == (2, 7) and torch.isfinite(logits).all(), name
    assert load_checkpoint(exp / "last.pt")["optimizer"]["state"], "no optimizer state to resume with"


def test_interrupted_gpu_training_resumes_after_its_last_epoch(gpu_exp):
    exp, summary = gpu_exp
    assert summary.resumed_from == 1 and summary.epochs_run == 2
    log = (exp / "train.log").read_text()
    assert f"{exp}: resuming after epoch 1" in log
    # epoch 1 was trained once, before the cut; the second run trained epoch 2 only
    assert log.count("epoch 1: train loss") == 1 and log.count("epoch 2: train loss") == 1
    last = load_checkpoint(exp / "last.pt")
    assert last["finished"] and [h["epoch"] for h in last["history"]] == [1, 2]


# --- decoding and inference ---------------------------------------------------------------------

def test_decoding_on_the_gpu_gives_the_cpu_posteriors(setup, trained, tmp_path, strict_float32):  # noqa: F811
    """The checkpoint's normalization state is read with numpy: decoding on a GPU once failed on it."""
    data, dump = setup / "loso" / "fold1" / "dev", setup / "dump"
    decode_data_dir(trained, data, dump, tmp_path / "cpu")
    decode_data_dir(trained, data, dump, tmp_path / "gpu", device=GPU)
    cpu, gpu = read_decode_dir(tmp_path / "cpu").seg_post, read_decode_dir(tmp_path / "gpu").seg_post
    assert cpu.keys() == gpu.keys() and len(cpu) > 1
    for seg in cpu:
        np.testing.assert_allclose(gpu[seg], cpu[seg], atol=1e-4, rtol=0)


def test_infer_on_the_gpu_gives_the_cpu_posteriors_and_labels(gpu_exp, setup, sertk_cli, tmp_path,  # noqa: F811
                                                             strict_float32):
    exp, _ = gpu_exp
    model = tmp_path / "model.sertk"
    packing = sertk_cli("pack", exp, "--feats", setup / "dump", "-o", model)
    assert packing.exit_code == 0, packing.output
    wavs = [write_wav(tmp_path / "a.wav", seconds=1.0, freq=180.0),
            write_wav(tmp_path / "b.wav", seconds=2.3, freq=310.0)]

    def infer(device):
        result = sertk_cli("-q", "infer", model, *wavs, "--device", device)
        assert result.exit_code == 0, result.output
        return read_csv(result.stdout)
    on_cpu, on_gpu = infer("cpu"), infer(GPU)
    assert [r["id"] for r in on_gpu] == [r["id"] for r in on_cpu] == [str(w) for w in wavs]
    for cpu_row, gpu_row in zip(on_cpu, on_gpu):
        np.testing.assert_allclose(posteriors(gpu_row), posteriors(cpu_row), atol=1e-4, rtol=0)
        assert gpu_row["label"] == cpu_row["label"]


# --- feature extraction -------------------------------------------------------------------------

def test_gpu_feature_extraction_gives_the_cpu_log_mels(setup, tmp_path):  # noqa: F811
    """atol 1e-3: cuFFT and the CPU FFT round float32 differently, about 1e-6 of a frame's energy; the log turns
    that into an absolute error (x 4.34 in dB) that stays far below 1e-3 wherever the power is not tiny, and
    tiny powers are held up by the log offset (1e-6) or the 80 dB floor below each utterance's peak."""
    extract_features(setup / "all", LOGMEL, tmp_path / "cpu", device="cpu")
    report = extract_features(setup / "all", LOGMEL, tmp_path / "gpu", device=GPU)
    assert report.device == GPU and not report.skipped
    for stream in LOGMEL["streams"]:
        cpu, gpu = load_feats(tmp_path / "cpu", stream), load_feats(tmp_path / "gpu", stream)
        assert list(gpu) == list(cpu) and len(cpu) == report.utts
        for utt in cpu:
            np.testing.assert_allclose(np.asarray(gpu[utt]), np.asarray(cpu[utt]), atol=1e-3, rtol=0,
                                       err_msg=f"{stream} {utt}")
