"""The model contract (sertk.models.base): every registered model is a SERModel declaring what it reads, a
new model is one class (plus its config) that trains through the trainer with its own auxiliary loss, and the
registry refuses a class outside the contract."""
from dataclasses import dataclass
from typing import List

import pytest
import torch
from torch import nn

from helpers import emodb_loso
from sertk.features.extract import extract_features
from sertk.models import _REGISTRY, Objective, SERModel, available_models, build_model, model_class, register
from sertk.models.sequence import masked_mean
from sertk.config.loading import DEFAULTS, load_config
from sertk.train.loss import SegmentLoss
from sertk.train.trainer import train

# models too heavy for CPU tests at their defaults, built small (as tests/test_models.py does)
SMALL = {"esernet_swin": dict(image_size=32, patch_size=2, embed_dim=16, swin_depths=[2, 2], swin_heads=[2, 4],
                              window_size=4),
         "msfpn": dict(input_dim=24, widths=[32, 16, 16], lstm_hidden=16, fc_hidden=16)}


@pytest.mark.parametrize("name", available_models())
def test_every_registered_model_keeps_the_contract(name):
    cls = model_class(name)
    assert issubclass(cls, SERModel) and cls.name == name
    torch.manual_seed(0)
    model = build_model(name, 4, **SMALL.get(name, {}))
    streams = model.streams
    assert isinstance(streams, tuple) and streams and all(isinstance(s, str) and s for s in streams)
    assert set(model.stream_dims) == set(streams) and all(isinstance(d, int) and d > 0
                                                          for d in model.stream_dims.values())
    assert set(model.vector_streams) <= set(streams)
    for frames in (model.fixed_frames, model.max_frames):
        assert frames is None or isinstance(frames, int) and frames > 0
    assert model.tasks[0] == "emotion" and set(model.tasks) <= {"emotion", "gender", "reconstruction"}
    assert set(model.center_dims) <= set(model.tasks)
    assert isinstance(model.objective(SegmentLoss(), DEFAULTS["loss"]), Objective)


def test_register_refuses_a_class_outside_the_contract():
    class Plain(nn.Module):
        Config = ToyConfig

    with pytest.raises(TypeError, match="model 'plain': Plain must subclass sertk.models.base.SERModel"):
        register("plain")(Plain)

    class NoConfig(SERModel):
        pass

    with pytest.raises(TypeError, match="needs a Config dataclass"):
        register("no_config")(NoConfig)
    assert "plain" not in available_models() and "no_config" not in available_models()


# --- a new model: one class and its config ------------------------------------------------------------

@dataclass
class ToyConfig:
    stream: str = "logmel"
    n_mels: int = 16
    hidden: int = 8
    pull: float = 0.0   # its own auxiliary loss's weight: a model option, as loss.* holds the trainer's


class PullObjective(Objective):
    """The emotion loss + pull x the mean squared distance of the utterance embeddings to a learned target."""
    seen_rates: List[float] = []

    def __init__(self, emotion, width: int, pull: float):
        super().__init__(emotion)
        self.pull = pull
        self.target = nn.Parameter(torch.zeros(width))

    def forward(self, out, batch):
        return self.emotion_loss(out, batch) + self.pull * (out["embedding"].float() - self.target).square().mean()

    def after_backward(self, lr: float) -> None:
        PullObjective.seen_rates.append(lr)


class Toy(SERModel):
    Config = ToyConfig

    def __init__(self, num_classes: int, cfg: ToyConfig):
        super().__init__()
        self.cfg = cfg
        self.streams = (cfg.stream,)
        self.stream_dims = {cfg.stream: cfg.n_mels}
        self.frame = nn.Linear(cfg.n_mels, cfg.hidden)
        self.out = nn.Linear(cfg.hidden, num_classes)

    def forward(self, batch):
        embedding = masked_mean(torch.tanh(self.frame(batch[self.cfg.stream])), batch["mask"])
        return {"logits": self.out(embedding), "embedding": embedding}

    def objective(self, emotion, loss):
        return PullObjective(emotion, self.cfg.hidden, self.cfg.pull)


@pytest.fixture
def toy():
    register("contract_toy")(Toy)
    yield "contract_toy"
    del _REGISTRY["contract_toy"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    base = emodb_loso(tmp_path_factory.mktemp("contract"))
    extract_features(base / "all", {"sample_rate": 16000, "streams": {"logmel": {"type": "logmel", "n_mels": 16}}},
                     base / "dump")
    return base


def test_a_new_model_trains_with_its_own_auxiliary_loss(toy, corpus, tmp_path):
    fold, dump = corpus / "loso" / "fold1", corpus / "dump"
    options = [f"model.name={toy}", "train.epochs=2", "train.batch_size=4", "segments.length=0.3",
               "segments.hop=0.1", "train.amp=false", "optim.lr=0.01"]
    states = {}
    for pull in (0.0, 5.0):
        PullObjective.seen_rates.clear()
        train(load_config(None, options + [f"model.pull={pull}"]), fold, dump, tmp_path / str(pull))
        states[pull] = torch.load(tmp_path / str(pull) / "last.pt", weights_only=True)
        assert PullObjective.seen_rates and set(PullObjective.seen_rates) == {0.01}   # after every backward
    plain, pulled = states[0.0], states[5.0]
    # the objective's parameter trains with the model's optimizer and is saved as last.pt's "objective" state
    assert list(pulled["objective"]) == ["target"] and pulled["objective"]["target"].abs().sum() > 0
    assert torch.equal(plain["objective"]["target"], torch.zeros(8))   # weight 0: no gradient reaches it
    # the auxiliary loss changes training: other weights, another training loss
    assert not torch.equal(plain["model"]["frame.weight"], pulled["model"]["frame.weight"])
    assert plain["history"][0]["train_loss"] != pulled["history"][0]["train_loss"]
