"""The trainer's parts on their own: the optimizer and schedule tables (sertk.train.optim), the epoch reporter
(sertk.train.reporter), the objective built from config (sertk.train.loss.build_objective) and how an epoch
draws its batches (sertk.train.folddata)."""
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sertk.models import build_model
from sertk.train import reporter as reporter_module
from sertk.config.loading import ConfigError, load_config, model_options
from sertk.config.schema import DEFAULTS, OPTIMIZERS, SCHEDULERS
from sertk.train.distributed import Ranks
from sertk.train.folddata import epoch_batches, loader_options
from sertk.train.loss import Objective, build_objective
from sertk.train.optim import DEV_UA, EPOCH, build_optimizer, build_schedule
from sertk.train.optim import SCHEDULERS as SCHEDULER_KINDS
from sertk.train.reporter import METRICS, EpochSpeed, Reporter, epoch_line

TINY = ["model.name=crnn", "model.n_mels=16", "model.channels=[4,8]", "model.lstm_hidden=8",
        "model.attention_hidden=8", "train.epochs=1", "train.batch_size=4", "segments.length=0.3",
        "segments.hop=0.1"]


def schedule(name, **options):
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(params, lr=1.0)
    made = build_schedule({**DEFAULTS["scheduler"], "name": name, **options}, optimizer, 4)
    optimizer.step()   # an epoch's training comes first (torch warns of a schedule stepped before it)
    return optimizer, made


# --- optimizers and schedules ----------------------------------------------------------------------

def test_the_tables_are_the_names_the_config_takes():
    assert tuple(SCHEDULER_KINDS) == SCHEDULERS
    assert {name for name, kind in SCHEDULER_KINDS.items() if kind.steps_on == DEV_UA} == {"plateau"}
    assert all(kind.steps_on in (EPOCH, DEV_UA) for kind in SCHEDULER_KINDS.values())
    for name in OPTIMIZERS:
        build_optimizer({**DEFAULTS["optim"], "name": name}, [torch.nn.Parameter(torch.zeros(1))])


def test_betas_reach_the_optimizer():
    optimizer = build_optimizer({**DEFAULTS["optim"], "name": "adamw", "betas": [0.8, 0.9]},
                                [torch.nn.Parameter(torch.zeros(1))])
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.9)


def test_lbfgs_with_weight_decay_reaches_the_regularised_optimum():
    """A linear softmax classifier fitted by full-batch L-BFGS: at the result the gradient of mean CE +
    wd / 2 ||params||^2 vanishes (the optimum of a strictly convex objective); without the decay term it
    would be the unregularised optimum, whose gradient here is wd x params, far from 0."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=generator)
    y = (x[:, 0] + 0.5 * torch.randn(60, generator=generator) > 0).long() + (x[:, 1] > 1).long()
    head = torch.nn.Linear(5, 3)
    wd = 0.05
    optimizer = build_optimizer({**DEFAULTS["optim"], "name": "lbfgs", "lr": 1.0, "weight_decay": wd,
                                 "max_iter": 50}, head.parameters())
    calls = []

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y)
        loss.backward()
        calls.append(loss.item())
        return loss
    for _ in range(4):
        optimizer.step(closure)
    assert len(calls) > 4                      # several evaluations per step (line search)
    head.zero_grad()
    objective = torch.nn.functional.cross_entropy(head(x), y) + wd / 2 * sum(p.square().sum() for p in head.parameters())
    objective.backward()
    assert max(float(p.grad.abs().max()) for p in head.parameters()) < 1e-4
    assert head.weight.detach().abs().max().item() > 0.1   # a real fit, not a collapse to zero


def test_epoch_kinds_step_every_epoch_and_plateau_on_dev_ua():
    optimizer, step = schedule("step", step_size=1, gamma=0.5)
    step.step(0.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    optimizer, plateau = schedule("plateau", factor=0.5, patience=0)
    plateau.step(0.9)          # an improvement: the rate stays
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.0)
    plateau.step(0.5)          # dev UA went down (mode max): halved at once with patience 0
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)


def test_no_scheduler_is_a_constant_rate_with_no_state():
    optimizer, none = schedule("none")
    none.step(0.3)
    assert optimizer.param_groups[0]["lr"] == 1.0 and none.state_dict() is None
    none.load_state_dict(None)


def test_a_schedule_resumes_from_its_state():
    optimizer, first = schedule("multistep", milestones=[2], gamma=0.1)
    for _ in range(2):
        first.step(0.0)
    again_optimizer, again = schedule("multistep", milestones=[2], gamma=0.1)
    again.load_state_dict(first.state_dict())
    again_optimizer.load_state_dict(optimizer.state_dict())
    assert again_optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    assert again.state_dict() == first.state_dict()


# --- the reporter ----------------------------------------------------------------------------------

STATS = {"train_loss": 1.23456, "dev_loss": 0.5, "dev_wa": 0.25, "dev_ua": 0.125, "lr": 1e-3,
         "segments_per_second": 123.4, "data_wait_share": 0.056, "confusion": [[1, 0], [1, 1]]}


def test_the_epoch_line_is_as_train_log_always_had_it():
    old = ("epoch %d: train loss %.4f, dev loss %.4f, dev WA %.4f, dev UA %.4f, lr %.2e, %.0f segments/s "
           "(%.0f%% waiting for data)%s" % (3, 1.23456, 0.5, 0.25, 0.125, 1e-3, 123.4, 100 * 0.056, " *best*"))
    assert epoch_line(3, STATS, best=True) == old
    assert epoch_line(3, STATS) == old.removesuffix(" *best*")


def test_a_new_metric_is_one_entry(monkeypatch, tmp_path, caplog):
    monkeypatch.setitem(METRICS, "dev_f1", ("dev/f1", "dev F1 {dev_f1:.2f}"))
    written = []

    class Writer:
        def add_scalar(self, tag, value, step):
            written.append((tag, value, step))

        def add_image(self, *args, **kwargs):
            written.append(("image", args[0]))

    report = Reporter(tmp_path, Ranks(), ["a", "b"])
    report.writer = Writer()
    with caplog.at_level(logging.INFO, logger="sertk"):
        report.epoch(2, {**STATS, "dev_f1": 0.5})
    assert ("dev/f1", 0.5, 2) in written and written[-1] == ("image", "dev/confusion")
    assert caplog.messages[-1].endswith("waiting for data), dev F1 0.50")


def test_only_rank_0_writes_tensorboard(tmp_path):
    with Reporter(tmp_path / "other", Ranks(1, 2), ["a", "b"]) as report:
        assert report.writer is None
        report.epoch(1, STATS)
    assert not (tmp_path / "other").exists()
    with Reporter(tmp_path / "main", Ranks(0, 2), ["a", "b"]) as report:
        report.epoch(1, STATS)
    assert list((tmp_path / "main").glob("events.out.tfevents.*"))


def test_epoch_speed_record_and_stats():
    speed = EpochSpeed(started=0.0, seconds=2.0, wait=0.5, segments=10, loss=0.75)
    assert speed.record() == {"seconds": 2.0, "train_segments": 10, "segments_per_second": 5.0,
                              "data_wait_share": 0.25}
    assert speed.stats() == {"train_loss": 0.75, "segments_per_second": 5.0, "data_wait_share": 0.25}
    assert set(speed.stats()) <= set(reporter_module.METRICS)


# --- the objective ---------------------------------------------------------------------------------

class TrainSet:
    """Utterance u1 of class 0 in one segment; u2 and u3 of class 1 in two segments each."""
    labels = {"u1": 0, "u2": 1, "u3": 1}
    segments = [SimpleNamespace(utt=u) for u in ("u1", "u2", "u2", "u3", "u3")]

    @staticmethod
    def utterance_shares():
        return np.array([1.0, 0.5, 0.5, 0.5, 0.5], dtype=np.float32)


def crnn_and_config(*extra):
    config = load_config(None, TINY + list(extra))
    return build_model("crnn", 2, **model_options(config)), config


def test_the_objective_follows_the_config():
    model, config = crnn_and_config("train.utterance_weighted=true")
    objective = build_objective(config, model, TrainSet(), 2)
    assert isinstance(objective, Objective) and not list(objective.parameters())
    torch.testing.assert_close(objective.emotion.class_weights, torch.tensor([1.5, 0.75]))
    torch.testing.assert_close(objective.emotion.segment_weights, torch.tensor([1.0, 0.5, 0.5, 0.5, 0.5]))
    model, config = crnn_and_config("train.class_weighted=false")
    assert build_objective(config, model, TrainSet(), 2).emotion.class_weights is None


@pytest.mark.parametrize("utterance_weighted", [False, True])
def test_class_weights_give_every_class_the_same_share_of_the_loss(utterance_weighted):
    """The weights count what the loss weighs: segments, or utterances when each utterance's segments share
    one weight. (Counted over utterances for a per-segment loss, a class of longer utterances weighed more.)"""
    model, config = crnn_and_config(f"train.utterance_weighted={str(utterance_weighted).lower()}")
    loss = build_objective(config, model, TrainSet(), 2).emotion
    labels = torch.tensor([TrainSet.labels[s.utt] for s in TrainSet.segments])
    per_segment = loss.class_weights[labels] * (loss.segment_weights if utterance_weighted else 1.0)
    shares = torch.stack([per_segment[labels == c].sum() for c in (0, 1)])
    torch.testing.assert_close(shares[0], shares[1])


@pytest.mark.parametrize("setting, message", [
    ("loss.gender_weight=0.3", "model crnn has no gender head; set loss.gender_weight=0"),
    ("loss.center_weight=0.1", "model crnn gives no center-loss embedding; set loss.center_weight=0"),
    ("loss.reconstruction_weight=0.2", "model crnn rebuilds no masked frames; set loss.reconstruction_weight=0"),
])
def test_the_objective_needs_the_heads_it_reads(setting, message):
    model, config = crnn_and_config(setting)
    with pytest.raises(ConfigError, match=message):
        build_objective(config, model, TrainSet(), 2)


# --- an epoch's batches ----------------------------------------------------------------------------

class Lengths:
    def __init__(self, lengths):
        self.lengths = lengths

    def __len__(self):
        return len(self.lengths)

    def frames(self, i):
        return self.lengths[i]


def test_epoch_batches_drop_a_last_short_batch_unless_it_is_the_only_one():
    data = Lengths([5, 3, 8, 1, 9, 2, 7])
    batches, seeded = epoch_batches(data, 3, False, torch.Generator().manual_seed(0))
    assert seeded and [len(b) for b in batches] == [3, 3]
    buckets, seeded = epoch_batches(data, 3, True, torch.Generator().manual_seed(0))
    assert not seeded and [len(b) for b in buckets] == [3, 3] and len({i for b in buckets for i in b}) == 6
    whole, _ = epoch_batches(data, 10, False, torch.Generator().manual_seed(0))
    assert [sorted(b) for b in whole] == [list(range(7))]


def test_loader_options():
    assert loader_options(None, "cpu", Ranks()) == {"num_workers": 0, "pin_memory": False}
    assert loader_options(2, "cpu", Ranks()) == {"num_workers": 2, "pin_memory": False, "prefetch_factor": 4}
    assert loader_options(None, "cuda:0", Ranks())["pin_memory"]
