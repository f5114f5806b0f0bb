"""Training under torchrun: 2 gloo processes on the CPU against one process, rank-0-only outputs, resume."""
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from recipes import private_tmp
from replicas import make_emodb, write_wav
from sertk.data.corpora import prepare_corpus
from sertk.data.datadir import DataDir
from sertk.data.protocols import make_folds
from sertk.errors import SertkError
from sertk.features.extract import extract_features
from sertk.train.data import spec_augment
from sertk.train.distributed import PieceSampler, Ranks, ranks_from_environment

FEATURES = {"sample_rate": 16000, "streams": {"logmel": {"type": "logmel", "n_mels": 16}}}
# a small crnn without dropout: BatchNorm (synced over the processes), SpecAugment (drawn for the whole
# batch) and the weighted loss (class weights from an unbalanced training set, and 1 / its utterance's
# segments per segment; normalised by the whole batch's weights) are all it draws or sums, so two processes must train what one trains, to float rounding
CONFIG = {"model": {"name": "crnn", "n_mels": 16, "channels": [4, 8], "lstm_hidden": 8, "attention_hidden": 8,
                    "dropout": 0.0},
          "train": {"epochs": 2, "batch_size": 4, "patience": 10, "utterance_weighted": True,
                    "amp": False},   # float32: bf16 rounding would exceed the tolerances below
          "augment": {"specaugment": True, "time_width": 5, "freq_width": 3},
          "segments": {"length": 0.3, "hop": 0.1}}
# relative, every epoch: float rounding (sums in another order), which Adam's normalised steps carry on. Most
# of the dev loss's share comes from parameters whose exact gradient is zero (the conv biases before a
# BatchNorm, the attention score's bias before its softmax): Adam turns their rounding noise into steps of the
# learning rate, which move BatchNorm's running means (measured 2026-12-06 on one thread: those biases 4e-3
# apart after 2 epochs, every other tensor within 1e-6; dev loss 1.4e-4 apart, training loss 5e-8)
TRAIN_LOSS_TOLERANCE, DEV_LOSS_TOLERANCE = 1e-5, 5e-4
RUN_TIMEOUT_S = 240   # a run takes 10-45 s; one rank once hung at exit (2026-12-04), which this catches


def test_pieces_of_a_batch_cover_it_once():
    for world in (1, 2, 3):
        for size in (world, 5, 8, 31):
            batch = list(range(100, 100 + size))
            pieces = [Ranks(r, world).piece(batch) for r in range(world)]
            assert sum(pieces, []) == batch and max(map(len, pieces)) - min(map(len, pieces)) <= 1
            assert sum(Ranks(r, world).share(len(p), size) for r, p in enumerate(pieces)) == pytest.approx(world)
        parts = [Ranks(r, world).slice(10) for r in range(world)]
        assert [i for p in parts for i in p] == list(range(10))
    batches = [[0, 1, 2, 3], [4, 5, 6, 7, 8]]
    assert list(PieceSampler(batches, Ranks(1, 2))) == [[2, 3], [7, 8]]
    sampler = PieceSampler(batches, Ranks(0, 2), frames=lambda i: 100 - 10 * i)   # item 0 longest, then 4
    assert list(sampler) == [[0, 1], [4, 5, 6]] and list(sampler.longest) == [100, 60]   # the whole batches


def test_a_piece_is_masked_as_its_rows_of_the_whole_batch():
    cfg = {"time_masks": 2, "time_width": 6, "freq_masks": 1, "freq_width": 3}
    whole = {"logmel": torch.ones(5, 40, 8)}
    spec_augment(whole, ["logmel"], cfg, torch.Generator().manual_seed(3))
    assert (whole["logmel"] == 0).any()
    for rank in range(2):
        rows = Ranks(rank, 2).rows(5)
        piece = {"logmel": torch.ones(len(rows), 40, 8)}
        spec_augment(piece, ["logmel"], cfg, torch.Generator().manual_seed(3), rows, 5)
        assert torch.equal(piece["logmel"], whole["logmel"][rows])


def test_batchnorm_layers_become_global_with_the_same_state():
    from torch import nn
    from sertk.train.distributed import GlobalBatchNorm, sync_batchnorm
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Sequential(nn.Flatten(), nn.BatchNorm1d(48)))
    plain(torch.randn(4, 1, 6, 6))   # some running statistics
    before = {k: v.clone() for k, v in plain.state_dict().items()}
    synced = sync_batchnorm(plain, "cpu")
    assert sum(isinstance(m, GlobalBatchNorm) for m in synced.modules()) == 2
    assert {k: v for k, v in synced.state_dict().items()}.keys() == before.keys()
    for key, value in synced.state_dict().items():
        assert torch.equal(value, before[key])
    x = torch.randn(5, 1, 6, 6)
    reference = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Sequential(nn.Flatten(), nn.BatchNorm1d(48)))
    reference.load_state_dict(before)
    for mode in (True, False):   # without a process group it is plain BatchNorm, in training and in eval
        torch.testing.assert_close(synced.train(mode)(x), reference.train(mode)(x))


def test_ranks_come_from_torchrun_environment(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert ranks_from_environment() == Ranks()
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SertkError, match="torchrun"):
        ranks_from_environment()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert ranks_from_environment() == Ranks(1, 2, 1)


@pytest.fixture(scope="module")
def fold(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    root = make_emodb(base / "emodb", speakers=["03", "08", "09"], texts=["a01", "b02"], emotions="WLA")
    for i, wav in enumerate(sorted((root / "wav").glob("*.wav"))):   # lengths differ: pieces pad differently
        write_wav(wav, seconds=0.3 + 0.04 * (i % 6))
    make_folds(prepare_corpus("emodb", root, base / "all").datadir, "loso", base / "loso")
    # fewer anger utterances in training: unequal class weights, which one process applies over the batch
    train_dir = base / "loso" / "fold1" / "train"
    train = DataDir.load(train_dir)
    dropped = [u for u in train.utts if train.utt2emo[u] == "anger"][:1]
    train.select([u for u in train.utts if u not in dropped]).save(train_dir)
    extract_features(base / "all", FEATURES, base / "dump")
    (base / "conf.yaml").write_text(yaml.safe_dump(CONFIG))
    # whole utterances of different lengths: each process's piece must be padded as the whole batch is
    (base / "conf_whole.yaml").write_text(yaml.safe_dump({**CONFIG, "train": {**CONFIG["train"], "epochs": 1},
                                                          "segments": {"length": None}}))
    return base


def _train(fold: Path, exp: Path, nproc: int = 0, entry=("-m", "sertk"), env=None, config="conf.yaml"):
    """`sertk train` on fold 1: in one plain process (nproc 0) or under torchrun with nproc gloo processes."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] \
        if nproc else [sys.executable]
    args = ["train", "--config", fold / config, "--fold-dir", fold / "loso" / "fold1", "--feats", fold / "dump",
            "--exp", exp, "--device", "cpu"]
    # a run that hangs is ended whole (torchrun and every rank: torchrun puts its ranks in sessions of their own)
    # and says where: SIGABRT makes each Python process print every thread's stack (faulthandler) before it dies
    with subprocess.Popen(launch + list(entry) + [str(a) for a in args], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONFAULTHANDLER": "1", "TMPDIR": str(private_tmp(exp.parent)),
                               **(env or {})}) as process:
        try:
            stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for pid in _descendants(process.pid) + [process.pid]:   # the ranks first, while torchrun waits
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGABRT)
            stdout, stderr = process.communicate()
            pytest.fail(f"a training run hung for {RUN_TIMEOUT_S} s; the stacks of its processes:\n{stderr[-20000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _descendants(pid: int):
    """Every process below `pid` (from /proc), children before grandchildren."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        children = parents.get(queue.pop(0), [])
        found += children
        queue += children
    return found


@pytest.fixture(scope="module")
def runs(fold):
    single, ddp = fold / "exp_single", fold / "exp_ddp"
    for exp, nproc in ((single, 0), (ddp, 2)):
        done = _train(fold, exp, nproc)
        assert done.returncode == 0, done.stderr[-3000:]
    return single, ddp, done


def _history(exp: Path):
    return torch.load(exp / "last.pt", weights_only=True)["history"]


def test_two_gloo_processes_match_one_process(runs):
    single, ddp, _ = runs
    one, two = _history(single), _history(ddp)
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=TRAIN_LOSS_TOLERANCE)
        assert b["dev_loss"] == pytest.approx(a["dev_loss"], rel=DEV_LOSS_TOLERANCE)
        assert (a["dev_wa"], a["dev_ua"]) == (b["dev_wa"], b["dev_ua"])
        assert a["train_segments"] == b["train_segments"] > 0   # the same segments, each once
        assert b["segments_per_second"] > 0 and 0 <= b["data_wait_share"] < 1


def test_whole_utterances_in_two_processes_match_one_process(fold):
    """Each piece is padded to the whole batch's longest utterance: BatchNorm statistics and SpecAugment's
    bands (drawn over the padded length) then match one process's (before: 4e-3 apart after one epoch)."""
    one, two = fold / "exp_whole_single", fold / "exp_whole_ddp"
    for exp, nproc in ((one, 0), (two, 2)):
        done = _train(fold, exp, nproc, config="conf_whole.yaml")
        assert done.returncode == 0, done.stderr[-3000:]
    (a,), (b,) = _history(one), _history(two)
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=TRAIN_LOSS_TOLERANCE)
    assert b["dev_loss"] == pytest.approx(a["dev_loss"], rel=DEV_LOSS_TOLERANCE)
    assert a["train_segments"] == b["train_segments"] == 4   # 5 training utterances, one batch of 4 (the last dropped)


def test_only_rank_zero_writes(runs):
    _, ddp, done = runs
    assert done.stdout.count("best dev UA") == 1
    log = (ddp / "train.log").read_text()
    assert log.count("epoch 1: train loss") == 1 and log.count("epoch 2: train loss") == 1 and "2 processes" in log
    assert len(list((ddp / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert yaml.safe_load((ddp / "environment.yaml").read_text())["distributed"] == {"processes": 2, "backend": "gloo"}
    assert sorted(p.name for p in ddp.iterdir()) == [".lock", "best.pt", "config.yaml", "environment.yaml", "last.pt",
                                                      "tensorboard", "train.log"]


def test_an_interrupted_distributed_run_resumes_to_the_same_weights(fold, runs):
    _, ddp, _ = runs
    exp = fold / "exp_ddp_resumed"
    died = _train(fold, exp, 2, entry=[str(Path(__file__).with_name("ddp_interrupted.py"))],
                  env={"STOP_AFTER_EPOCH": "1"})
    assert died.returncode != 0 and len(_history(exp)) == 1
    resumed = _train(fold, exp, 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after epoch 1" in (exp / "train.log").read_text()
    straight, again = (torch.load(e / "last.pt", weights_only=True) for e in (ddp, exp))
    assert again["finished"] and again["epoch"] == 2
    for name, tensor in straight["model"].items():
        torch.testing.assert_close(again["model"][name], tensor, rtol=0, atol=0)


def test_lbfgs_under_torchrun_is_refused_before_anything_distributed_is_built(fold):
    # no process group exists here: reaching DDP's construction would fail otherwise, not with this line
    from sertk.config.loading import ConfigError, load_config
    from sertk.train.trainer import _Run
    config = load_config(fold / "conf.yaml", ["optim.name=lbfgs", "train.grad_clip=0"])
    with pytest.raises(ConfigError, match="optim.name lbfgs trains in one process"):
        _Run(config, fold / "loso" / "fold1", fold / "dump", fold / "exp_lbfgs", "cpu", Ranks(0, 2))


def test_a_global_batch_smaller_than_the_processes_is_refused(fold):
    from sertk.config.loading import ConfigError, load_config
    from sertk.train.trainer import _Run
    config = load_config(fold / "conf.yaml", ["train.batch_size=1"])
    with pytest.raises(ConfigError, match="train.batch_size 1 is the global batch"):
        _Run(config, fold / "loso" / "fold1", fold / "dump", fold / "exp_small", "cpu", Ranks(0, 2))


def test_global_batchnorm_computes_its_statistics_in_float32(tmp_path):
    """Under bf16 autocast a layer's input is bf16: sums and the frame count kept in bf16 would round (a count of
    3003 is 3008 in bf16), so the normalised output would drift from one process's BatchNorm."""
    import torch.distributed as dist
    from sertk.train.distributed import GlobalBatchNorm
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        x = (torch.randn(7, 4, 429) + 20.0).bfloat16()     # 3003 frames per channel, far from zero mean
        layer = GlobalBatchNorm(4).train()
        y = layer(x)
        exact = x.double()
        exact = (exact - exact.mean((0, 2), keepdim=True)) / torch.sqrt(exact.var((0, 2), unbiased=False,
                                                                                  keepdim=True) + layer.eps)
        assert y.dtype == torch.bfloat16
        assert (y.double() - exact).abs().mean() < 4e-3                     # bf16 output rounding only
        torch.testing.assert_close(layer.running_mean.double(), 0.1 * exact.new_tensor(x.double().mean((0, 2))))
    finally:
        dist.destroy_process_group()
