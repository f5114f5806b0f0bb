"""The published models through the recipes: every recipe finds each model's config, and each
model trains for one epoch, decodes and scores on a generated corpus with its own training set-up."""
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from recipes import REPO, assert_folds_done, assert_packed_model_decides_as_decoded, copy_recipe, run_recipe
from replicas import make_emodb, write_wav
from sertk.models import build_model
from sertk.config.loading import load_config

SEED_MODELS = sorted(p.stem for p in (REPO / "egs" / "TEMPLATE" / "conf" / "models").glob("*.yaml")
                     if p.stem != "crnn")
RECIPES = {"emodb": "loso", "ravdess": "actor6", "iemocap": "loso_session", "msp_improv": "loso_session"}


@pytest.mark.parametrize("model", SEED_MODELS)
@pytest.mark.parametrize("corpus", sorted(RECIPES))
def test_every_recipe_has_a_config_for_the_model(corpus, model, tmp_path):
    recipe = copy_recipe(tmp_path, corpus)
    result = run_recipe(recipe, "--stage", "7", "--model", model)     # resolves conf/models and conf/features only
    assert result.returncode == 0 and result.stderr == "" and not (recipe / "exp").exists()


MPAF_SETUP = {  # the paper's training set-up (spec section 4) and decision rule (section 5)
    "optim.name": "adam", "optim.lr": 1e-4, "train.batch_size": 16, "train.epochs": 50,
    "train.class_weighted": False, "segments.length": 2.0, "segments.hop": 0.4, "decode.rule": "mean",
    "features.tag": "mpaf", "model.n_mels": 64, "model.n_lld": 42, "model.frames": 200}


def _assert_config(name, setup):
    config = load_config(REPO / "egs" / "TEMPLATE" / "conf" / "models" / f"{name}.yaml")
    for key, value in setup.items():
        section, option = key.split(".")
        assert config[section][option] == value, key


def _train_one_epoch(tmp_path, model, corpus):
    """Every fold of the recipe on `corpus`, one epoch with the model's own config; checks the folds,
    the parameter count in train.log and that the config the recipe trained with is the model's."""
    recipe = copy_recipe(tmp_path, "emodb")
    run_recipe(recipe, "--emodb_root", corpus, "--nj", "1", "--model", model, "--train_args", "--set train.epochs=1")
    exp = recipe / "exp" / "loso" / model
    assert_folds_done(exp, 3)
    assert_packed_model_decides_as_decoded(exp / "fold1", recipe / "data" / "loso" / "fold1" / "test")
    classes = torch.load(exp / "fold1" / "best.pt", weights_only=True)["classes"]
    params = sum(p.numel() for p in build_model(model, len(classes)).parameters())
    assert f" {params} parameters" in (exp / "fold1" / "train.log").read_text()
    trained = yaml.safe_load((exp / "fold1" / "config.yaml").read_text())
    assert trained["train"]["epochs"] == 1
    return recipe, exp, trained


def test_mpaf_cnn_config_is_the_papers_set_up():
    _assert_config("mpaf_cnn", MPAF_SETUP)


def test_mpaf_cnn_trains_one_epoch_through_the_recipe(tmp_path):
    corpus = make_emodb(tmp_path / "corpus", speakers=["03", "08", "09"], texts=["a01"], emotions="WLAN")
    write_wav(corpus / "wav" / "03a01Wa.wav", seconds=2.9)   # 291 frames: windows at 0, 40, 80 and 91
    recipe, exp, trained = _train_one_epoch(tmp_path, "mpaf_cnn", corpus)
    dump = yaml.safe_load((recipe / "dump" / "mpaf" / "features.yaml").read_text())
    assert sorted(dump["streams"]) == ["lld", "logmel"]
    segments = [line.split()[1] for k in (1, 2, 3)
                for line in (exp / f"fold{k}" / "decode_test" / "seg2utt").read_text().splitlines()]
    assert sum(utt.endswith("03a01Wa") for utt in segments) == 4
    assert trained["optim"]["lr"] == 1e-4


SD_CAFF_SETUP = {  # spec section 4 (training) and 5 (one 6 s clip, argmax)
    "optim.name": "adam", "optim.lr": 5e-4, "optim.weight_decay": 1e-6, "train.batch_size": 32,
    "train.epochs": 30, "train.class_weighted": False, "train.grad_clip": 0.0, "loss.gender_weight": 0.3,
    "loss.center_weight": 0.15, "loss.center_lr": 0.1, "scheduler.name": "multistep",
    "scheduler.milestones": [11, 21], "scheduler.gamma": 0.1, "segments.length": None, "decode.rule": "mean",
    "features.tag": "sd_caff", "features.cmvn": "none", "model.n_mfcc": 60, "model.stream_deltas": 1,
    "model.dynamic_inputs": ["mfcc", "delta"], "model.lstm_hidden": 1024, "model.bidirectional": False}


def test_sd_caff_config_is_the_papers_set_up():
    _assert_config("sd_caff", SD_CAFF_SETUP)


def test_sd_caff_trains_one_epoch_through_the_recipe(tmp_path):
    corpus = make_emodb(tmp_path / "corpus", speakers=["03", "08", "09"], texts=["a01"], emotions="WLAN")
    # 8.8 s of tones and short pauses: longer than 6 s whatever the silence remover keeps, so it is cut
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    parts = [x for f in range(200, 1000, 100) for x in (0.4 * np.sin(2 * np.pi * f * t), np.zeros(1600))]
    sf.write(str(corpus / "wav" / "03a01Wa.wav"), np.concatenate(parts) + 0.002 * rng.standard_normal(8 * 17600),
             16000, subtype="PCM_16")
    recipe, exp, _ = _train_one_epoch(tmp_path, "sd_caff", corpus)
    dump = yaml.safe_load((recipe / "dump" / "sd_caff" / "features.yaml").read_text())
    assert dump["dump"]["dims"] == {"mfcc": 120} and dump["dump"]["preprocess"]["cut"] == 1
    frames = {int(line.split()[1]) for line in (recipe / "dump" / "sd_caff" / "mfcc" / "utt2num_frames")
              .read_text().splitlines()}
    assert frames == {251}                                    # every clip is 6 s: 1 + 96000 // 384
    for k in (1, 2, 3):                                       # one segment per utterance
        decoded = (exp / f"fold{k}" / "decode_test" / "seg2utt").read_text().splitlines()
        assert len(decoded) == len({line.split()[1] for line in decoded})


STRL_SER_SETUP = {  # spec section 4 (training) and 5 (mean of the segment posteriors)
    "optim.name": "adam", "optim.lr": 1e-3, "optim.weight_decay": 1e-6, "train.batch_size": 128,
    "train.epochs": 150, "train.patience": 150, "train.class_weighted": False, "scheduler.name": "exponential",
    "scheduler.gamma": 0.95, "segments.length": 2.0, "segments.hop": 1.0, "decode.rule": "mean",
    "features.tag": "is10_2s", "features.cmvn": "global", "model.heads": 8, "model.freq_kernel": 7,
    "model.time_kernel": 5, "model.fusion": "sequence"}


def test_strl_ser_config_is_the_papers_set_up():
    _assert_config("strl_ser", STRL_SER_SETUP)


def test_strl_ser_trains_one_epoch_through_the_recipe(tmp_path):
    pytest.importorskip("opensmile", reason="the opensmile extra is not installed (pip install -e '.[dev]')")
    corpus = make_emodb(tmp_path / "corpus", speakers=["03", "08", "09"], texts=["a01"], emotions="WLAN")
    write_wav(corpus / "wav" / "03a01Wa.wav", seconds=2.9)   # 87 frames of 32 ms: windows at 0 and 28
    write_wav(corpus / "wav" / "08a01La.wav", seconds=0.1)   # shorter than two frames: padded, counted
    recipe, exp, trained = _train_one_epoch(tmp_path, "strl_ser", corpus)
    dump = yaml.safe_load((recipe / "dump" / "is10_2s" / "features.yaml").read_text())
    assert dump["dump"]["dims"] == {"is10_lld": 76, "is10_func": 1582}
    assert dump["dump"]["notes"]["is10_lld"] == {"padded_short": 1}
    segments = [line.split()[1] for k in (1, 2, 3)
                for line in (exp / f"fold{k}" / "decode_test" / "seg2utt").read_text().splitlines()]
    assert sum(utt.endswith("03a01Wa") for utt in segments) == 2
    assert trained["scheduler"]["name"] == "exponential" and trained["features"]["clip"] == 10.0


ESERNET_SETUP = {  # spec section 4 (training) and 5 (one 8 s segment per utterance, mean over longer ones)
    "optim.name": "adamw", "optim.lr": 5e-4, "optim.betas": [0.9, 0.98], "optim.weight_decay": 0.01,
    "train.batch_size": 32, "train.epochs": 120, "train.patience": 20, "train.select": "wa_ua",
    "train.class_weighted": False, "train.grad_clip": 1.0, "loss.reconstruction_weight": 0.5,
    "scheduler.name": "warmup_cosine", "scheduler.warmup_epochs": 5, "scheduler.min_lr_ratio": 0.01,
    "segments.length": 8.0, "segments.hop": 4.0, "segments.train_windows": "center", "decode.rule": "mean",
    "features.tag": "esernet", "features.cmvn": "global", "model.n_mels": 128, "model.max_frames": 800,
    "model.mask_rate": 0.15, "model.fusion": "late_concat", "augment.specaugment": False}


def test_esernet_config_is_the_specs_set_up():
    _assert_config("esernet", ESERNET_SETUP)
    emodb = load_config(REPO / "egs" / "emodb" / "conf" / "models" / "esernet.yaml")
    assert emodb["train"]["epochs"] == 150                   # the spec's EmoDB default; the rest shared
    shared = load_config(REPO / "egs" / "TEMPLATE" / "conf" / "models" / "esernet.yaml")
    assert {k: v for k, v in emodb.items() if k != "train"} == {k: v for k, v in shared.items() if k != "train"}
    swin = load_config(REPO / "egs" / "TEMPLATE" / "conf" / "models" / "esernet_swin.yaml")
    assert swin["model"]["name"] == "esernet_swin" and swin["optim"] == shared["optim"]


def test_esernet_trains_one_epoch_through_the_recipe(tmp_path):
    corpus = make_emodb(tmp_path / "corpus", speakers=["03", "08", "09"], texts=["a01"], emotions="WLAN")
    write_wav(corpus / "wav" / "03a01Wa.wav", seconds=9.5)   # 951 frames: longer than the 8 s segment
    recipe, exp, trained = _train_one_epoch(tmp_path, "esernet", corpus)
    dump = yaml.safe_load((recipe / "dump" / "esernet" / "features.yaml").read_text())
    assert dump["dump"]["dims"] == {"logmel": 128} and dump["streams"]["logmel"]["scale"] == "db"
    segments = [line.split()[1] for k in (1, 2, 3)
                for line in (exp / f"fold{k}" / "decode_test" / "seg2utt").read_text().splitlines()]
    assert sum(utt.endswith("03a01Wa") for utt in segments) == 2   # decoded: windows at 0 and the end (151)
    train_log = (exp / "fold2" / "train.log").read_text()           # fold 2 trains on speaker 03's long file
    assert " 4 train segments (4 utts)" in train_log                 # ... as its centre 8 s only (all: 5)
    assert trained["loss"]["reconstruction_weight"] == 0.5 and "(WA + UA) / 2" in train_log


MSFPN_SETUP = {  # spec section 4 (training) and 5 (whole utterances, one decision each)
    "optim.name": "adam", "optim.lr": 1e-5, "optim.betas": [0.9, 0.999], "optim.weight_decay": 0.0,
    "scheduler.name": "none", "train.batch_size": 32, "train.bucket": True, "train.epochs": 100,
    "train.patience": 10, "train.select": "ua", "train.class_weighted": False, "train.grad_clip": 5.0,
    "segments.length": None, "decode.rule": "mean", "augment.specaugment": False,
    "features.tag": "hubert_large", "features.cmvn": "none", "model.stream": "ssl", "model.input_dim": 1024}


def test_msfpn_configs_are_the_specs_set_up():
    _assert_config("msfpn", MSFPN_SETUP)
    logmel = load_config(REPO / "egs" / "TEMPLATE" / "conf" / "models" / "msfpn_logmel.yaml")
    shared = load_config(REPO / "egs" / "TEMPLATE" / "conf" / "models" / "msfpn.yaml")
    assert {k: v for k, v in logmel.items() if k not in ("model", "features")} == \
        {k: v for k, v in shared.items() if k not in ("model", "features")}          # same training set-up
    assert (logmel["model"]["stream"], logmel["model"]["input_dim"], logmel["model"]["input_projection"],
            logmel["features"]["tag"]) == ("logmel", 80, True, "msfpn_logmel")
    features = yaml.safe_load((REPO / "egs" / "TEMPLATE" / "conf" / "features" / "hubert_large.yaml").read_text())
    assert features["streams"]["ssl"] == {"type": "ssl", "model": "facebook/hubert-large-ll60k", "layer": -1}


def test_msfpn_trains_one_epoch_on_an_ssl_stream_through_the_recipe(tmp_path):
    pytest.importorskip("transformers", reason="the ssl extra is not installed (pip install -e '.[dev]')")
    from ssl_encoders import save_encoder
    corpus = make_emodb(tmp_path / "corpus", speakers=["03", "08", "09"], texts=["a01"], emotions="WLAN")
    encoder = save_encoder("hubert", tmp_path / "hubert")
    recipe = copy_recipe(tmp_path, "emodb")
    (recipe / "conf" / "features").mkdir(parents=True, exist_ok=True)   # the recipe's own copy points at it
    (recipe / "conf" / "features" / "hubert_large.yaml").write_text(yaml.safe_dump(
        {"sample_rate": 16000, "streams": {"ssl": {"type": "ssl", "model": str(encoder), "layer": -1}}}))
    run_recipe(recipe, "--emodb_root", corpus, "--nj", "1", "--model", "msfpn", "--folds", "1", "--train_args",
               "--set train.epochs=1 --set model.input_dim=16 --set model.widths=[32,16,16]")
    exp = recipe / "exp" / "loso" / "msfpn"
    assert (exp / "fold1" / "decode_test" / "scoring" / "metrics.json").is_file()
    assert_packed_model_decides_as_decoded(exp / "fold1", recipe / "data" / "loso" / "fold1" / "test")
    assert "scored 1" in (exp / "RESULTS.md").read_text()
    dump = yaml.safe_load((recipe / "dump" / "hubert_large" / "features.yaml").read_text())
    assert dump["dump"]["dims"] == {"ssl": 16} and dump["dump"]["frame_shift"] == {"ssl": 0.02}
    train_log = (exp / "fold1" / "train.log").read_text()
    assert " 4 train segments (4 utts)" in train_log                     # whole utterances, one segment each
    segments = (exp / "fold1" / "decode_test" / "seg2utt").read_text().splitlines()
    assert len(segments) == 4


def test_ssl_probe_runs_every_stage_on_the_real_whisper_base_with_a_dev_grid(whisper_base_folder, tmp_path,
                                                                             monkeypatch):
    """The recipe's ssl_probe: the named encoder from sertk's cache (SERTK_CACHE), pooled statistics per
    utterance, a 2-point grid chosen on dev in every fold, RESULTS.md naming each fold's choice, packs that
    name the encoder and decide as decoded."""
    monkeypatch.setenv("SERTK_CACHE", str(whisper_base_folder.parent.parent))
    corpus = make_emodb(tmp_path / "corpus", speakers=["03", "08", "09"], texts=["a01"], emotions="WLAN")
    recipe = copy_recipe(tmp_path, "emodb")
    run_recipe(recipe, "--emodb_root", corpus, "--nj", "1", "--model", "ssl_probe", "--train_args",
               "--set train.epochs=2 --grid model.layer=[all,-1] --grid optim.weight_decay=")
    exp = recipe / "exp" / "loso" / "ssl_probe"
    assert_folds_done(exp, 3)
    assert_packed_model_decides_as_decoded(exp / "fold1", recipe / "data" / "loso" / "fold1" / "test")
    dump = yaml.safe_load((recipe / "dump" / "whisper_base_stats" / "features.yaml").read_text())["dump"]
    assert dump["dims"] == {"whisper_stats": 7 * 2 * 512} and dump["levels"] == {"whisper_stats": "utterance"}
    grid = yaml.safe_load((exp / "fold1" / "grid.yaml").read_text())
    assert [p["values"]["model.layer"] for p in grid["points"]] == ["all", -1]
    results = (exp / "RESULTS.md").read_text()
    assert "Dev-selected hyper-parameters" in results and "model.layer" in results
    from sertk.inference.pack_file import read_meta
    encoders = read_meta(exp / "fold1" / "model.sertk")["features"]["dump"]["encoders"]
    assert encoders == {"whisper_stats": {"name": "whisper-base",
                                          "sha256": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"}}
