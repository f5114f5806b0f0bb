"""The published models through the recipes: every recipe finds each model's config, and each
model trains for one epoch, decodes and scores on a generated corpus with its own training set-up."""
import pytest
import torch
import yaml

from recipes import REPO, assert_folds_done, copy_recipe, run_recipe
from replicas import make_emodb, write_wav
from sertk.models import build_model
from sertk.train.config import load_config

SEED_MODELS = sorted(p.stem for p in (REPO / "egs" / "TEMPLATE" / "conf" / "models").glob("*.yaml")
                     if p.stem != "crnn")
RECIPES = {"emodb": "loso", "ravdess": "actor6", "iemocap": "loso_session", "msp_improv": "loso_session"}


@pytest.mark.parametrize("model", SEED_MODELS)
@pytest.mark.parametrize("corpus", sorted(RECIPES))
def test_every_recipe_has_a_config_for_the_model(corpus, model, tmp_path):
    recipe = copy_recipe(tmp_path, corpus)
    run_recipe(recipe, "--stage", "6", "--model", model)     # resolves conf/models and conf/features only
    assert (recipe / "exp" / RECIPES[corpus] / model / "run.sh").is_file()


MPAF_SETUP = {  # the paper's training set-up (spec section 4) and decision rule (section 5)
    "optim.name": "adam", "optim.lr": 1e-4, "train.batch_size": 16, "train.epochs": 50,
    "train.class_weighted": False, "segments.length": 2.0, "segments.hop": 0.4, "decode.rule": "mean",
    "features.tag": "mpaf", "model.n_mels": 64, "model.n_lld": 42, "model.frames": 200}


def test_mpaf_cnn_config_is_the_papers_set_up():
    config = load_config(REPO / "egs" / "TEMPLATE" / "conf" / "models" / "mpaf_cnn.yaml")
    for key, value in MPAF_SETUP.items():
        section, name = key.split(".")
        assert config[section][name] == value, key


def test_mpaf_cnn_trains_one_epoch_through_the_recipe(tmp_path):
    recipe = copy_recipe(tmp_path, "emodb")
    corpus = make_emodb(tmp_path / "corpus", speakers=["03", "08", "09"], texts=["a01"], emotions="WLAN")
    write_wav(corpus / "wav" / "03a01Wa.wav", seconds=2.9)   # 291 frames: windows at 0, 40, 80 and 91
    run_recipe(recipe, "--emodb_root", corpus, "--nj", "1", "--model", "mpaf_cnn",
               "--train_args", "--set train.epochs=1")
    exp = recipe / "exp" / "loso" / "mpaf_cnn"
    assert_folds_done(exp, 3)
    dump = yaml.safe_load((recipe / "dump" / "mpaf" / "features.yaml").read_text())
    assert sorted(dump["streams"]) == ["lld", "logmel"]
    segments = [line.split()[1] for k in (1, 2, 3)
                for line in (exp / f"fold{k}" / "decode_test" / "seg2utt").read_text().splitlines()]
    assert sum(utt.endswith("03a01Wa") for utt in segments) == 4
    classes = torch.load(exp / "fold1" / "best.pt", weights_only=True)["classes"]
    params = sum(p.numel() for p in build_model("mpaf_cnn", len(classes)).parameters())
    assert f" {params} parameters" in (exp / "fold1" / "train.log").read_text()
    trained = yaml.safe_load((exp / "fold1" / "config.yaml").read_text())
    assert trained["train"]["epochs"] == 1 and trained["optim"]["lr"] == 1e-4
