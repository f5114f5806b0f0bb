"""Trainer and decoder on a tiny generated corpus: resume, hygiene, logging, invariance."""
import math

import numpy as np
import pytest
import torch
import yaml

from helpers import emodb_loso, interrupt_training_after
from replicas import make_emodb, write_wav
from sertk.data.corpora import prepare_corpus
from sertk.data.datadir import DataDir
from sertk.data.protocols import make_folds
from sertk.decode import read_decode_dir
from sertk.decode.decoder import DecodeError, decode_data_dir
from sertk.errors import FeatureError
from sertk.features.extract import extract_features
from sertk.features.reading import Normalization, load_streams
from sertk.config.loading import ConfigError, load_config
from sertk.train.optim import warmup_cosine
from sertk.train.trainer import train

FEATURES = {"sample_rate": 16000, "streams": {
    "logmel": {"type": "logmel", "n_mels": 16},
    "mfcc": {"type": "mfcc", "n_mfcc": 10, "n_mels": 16, "deltas": 1, "delta_axis": "coefficient"}}}
TINY = ["model.name=crnn", "model.n_mels=16", "model.channels=[4,8]", "model.lstm_hidden=8",
        "model.attention_hidden=8", "train.epochs=3", "train.batch_size=4", "segments.length=0.3",
        "segments.hop=0.1", "train.patience=10"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = emodb_loso(tmp_path_factory.mktemp("train"))
    extract_features(base / "all", FEATURES, base / "dump")
    return base


# SD-CAFF's set-up in miniature: whole utterances, joint loss with gender and centers, multistep LR
SD_TINY = ["model.name=sd_caff", "model.n_mfcc=10", "model.lstm_hidden=16", "model.lstm_pool=8",
           "model.channels=[4,4,8,8,8]", "model.inter_channels=4", "features.tag=x", "features.cmvn=none",
           "segments.length=null", "train.epochs=3", "train.batch_size=4", "loss.gender_weight=0.3",
           "loss.center_weight=0.15", "loss.center_lr=0.1", "scheduler.name=multistep", "scheduler.milestones=[2]",
           "scheduler.gamma=0.1", "optim.weight_decay=1e-6", "train.grad_clip=0.0"]


# full-batch L-BFGS: several closure calls per step and its history in last.pt
LBFGS_TINY = TINY + ["optim.name=lbfgs", "optim.lr=1", "optim.max_iter=4", "optim.history_size=3",
                     "optim.weight_decay=1e-3", "train.batch_size=100000", "train.grad_clip=0", "train.amp=false"]


def config(*extra):
    return load_config(None, TINY + list(extra))


@pytest.mark.parametrize("options", [TINY, SD_TINY, LBFGS_TINY], ids=["crnn", "sd_caff", "lbfgs"])
def test_interrupted_and_resumed_equals_uninterrupted(options, setup, tmp_path, monkeypatch):
    fold, dump = setup / "loso" / "fold1", setup / "dump"
    train(load_config(None, options), fold, dump, tmp_path / "straight")

    interrupt_training_after(2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        train(load_config(None, options), fold, dump, tmp_path / "resumed")
    monkeypatch.undo()
    summary = train(load_config(None, options), fold, dump, tmp_path / "resumed")
    assert summary.resumed_from == 2 and summary.epochs_run == 3
    straight, resumed = (torch.load(tmp_path / name / "last.pt", weights_only=True) for name in ("straight", "resumed"))
    for part in ("model", "objective"):   # the objective holds the center-loss centers
        for name in straight[part]:
            torch.testing.assert_close(straight[part][name], resumed[part][name], rtol=0, atol=0)
    assert straight["history"][-1]["train_loss"] == resumed["history"][-1]["train_loss"]


def test_joint_loss_training_of_whole_utterances(setup, tmp_path):
    fold, dump, exp = setup / "loso" / "fold1", setup / "dump", tmp_path / "exp"
    train(load_config(None, SD_TINY), fold, dump, exp)
    state = torch.load(exp / "last.pt", weights_only=True)
    assert sorted(state["objective"]) == ["centers.emotion.centers", "centers.gender.centers"]
    assert state["objective"]["centers.emotion.centers"].shape == (7, 7)   # EmoDB's 7 classes, 7-d embeddings
    # milestone 2: epochs 1-2 train at 1e-3, epoch 3 at 1e-4 (the history has each epoch's own rate)
    assert [h["lr"] for h in state["history"]] == pytest.approx([1e-3, 1e-3, 1e-4])
    log = (exp / "train.log").read_text()
    train_utts = len(DataDir.load(fold / "train").utts)
    assert f"{train_utts} train segments ({train_utts} utts)" in log   # one segment per utterance
    out = tmp_path / "decode_test"
    decode_data_dir(exp, fold / "test", dump, out)
    decoded = read_decode_dir(out)
    assert sorted(decoded.seg2utt.values()) == sorted(DataDir.load(fold / "test").utts)


@pytest.mark.parametrize("options, message", [
    (["loss.gender_weight=0.3"], "model crnn has no gender head; set loss.gender_weight=0"),
    (["loss.center_weight=0.1"], "model crnn gives no center-loss embedding; set loss.center_weight=0"),
    (["loss.gender_weight=1.0"], r"loss.gender_weight must be in \[0, 1\)"),
    (["scheduler.name=multistep"], "scheduler.milestones must be a list of epochs"),
    (["scheduler.name=warmup_cosine", "scheduler.warmup_epochs=-1"], "scheduler.warmup_epochs must be an integer >= 0"),
    (["scheduler.name=warmup_cosine", "scheduler.min_lr_ratio=1.5"], r"min_lr_ratio in \[0, 1\]"),
    (["loss.reconstruction_weight=0.5"], "model crnn rebuilds no masked frames; set loss.reconstruction_weight=0"),
    (["loss.reconstruction_weight=1.0"], r"loss.reconstruction_weight must be in \[0, 1\)"),
    (["optim.betas=[0.9]"], "optim.betas must be null or two numbers in \\[0, 1\\) for adam or adamw"),
    (["optim.name=sgd", "optim.betas=[0.9,0.99]"], "optim.betas must be null or two numbers"),
    (["train.select=wa"], "train.select must be one of ua, wa_ua, not 'wa'"),
    (["segments.train_windows=middle"], "segments.train_windows must be one of all, center, not 'middle'"),
])
def test_objective_and_scheduler_settings_are_checked(options, message, setup, tmp_path):
    with pytest.raises(ConfigError, match=message):
        train(config(*options), setup / "loso" / "fold1", setup / "dump", tmp_path / "exp")


def test_warmup_cosine_climbs_then_falls_to_the_floor():
    factor = warmup_cosine(2, 0.1, 6)
    # warm-up 1/2, 1; then a cosine over the 3 remaining steps: 1 at epoch 3, 0.1 at the last (6)
    expected = [0.5, 1.0, 1.0, 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 3)),
                0.1 + 0.9 * 0.5 * (1 + math.cos(2 * math.pi / 3)), 0.1]
    assert [factor(done) for done in range(6)] == pytest.approx(expected)
    assert factor(10) == pytest.approx(0.1)          # past the end it stays at the floor
    short = warmup_cosine(5, 0.0, 2)  # a run shorter than the warm-up is all warm-up
    assert [short(done) for done in range(2)] == pytest.approx([0.2, 0.4])


def test_esernet_training_options_reach_the_run(setup, tmp_path):
    """warmup_cosine, AdamW betas, the (WA + UA) / 2 checkpoint rule and centre-cropped training windows."""
    fold, dump, exp = setup / "loso" / "fold1", setup / "dump", tmp_path / "exp"
    summary = train(config("scheduler.name=warmup_cosine", "scheduler.warmup_epochs=1", "scheduler.min_lr_ratio=0.5",
                           "optim.name=adamw", "optim.betas=[0.8,0.9]", "train.select=wa_ua",
                           "segments.train_windows=center"), fold, dump, exp)
    state = torch.load(exp / "last.pt", weights_only=True)
    assert [h["lr"] for h in state["history"]] == pytest.approx([1e-3, 1e-3, 5e-4])
    assert state["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.9)
    scores = [(h["dev_wa"] + h["dev_ua"]) / 2 for h in state["history"]]
    assert summary.metric == "(WA + UA) / 2" and summary.best_dev_score == pytest.approx(max(scores))
    assert summary.best_epoch == scores.index(max(scores)) + 1
    train_utts = len(DataDir.load(fold / "train").utts)   # one centre window per training utterance
    assert f"{train_utts} train segments ({train_utts} utts)" in (exp / "train.log").read_text()


def test_exponential_lr_and_clipped_normalisation(setup, tmp_path):
    fold, dump, exp = setup / "loso" / "fold1", setup / "dump", tmp_path / "exp"
    train(config("scheduler.name=exponential", "scheduler.gamma=0.5", "features.clip=0.5"), fold, dump, exp)
    state = torch.load(exp / "last.pt", weights_only=True)
    assert [h["lr"] for h in state["history"]] == pytest.approx([1e-3, 5e-4, 2.5e-4])   # x gamma every epoch
    best = torch.load(exp / "best.pt", weights_only=True)
    assert best["normalization"]["clip"] == 0.5
    norm = Normalization.from_state_dict(best["normalization"], {}, DataDir.load(fold / "test"))
    x = np.linspace(-100, 100, 16 * 9, dtype=np.float32).reshape(9, 16)   # 16 mels
    out = norm.apply("logmel", "u", x)
    assert out.min() == -0.5 and out.max() == 0.5
    with pytest.raises(FeatureError, match="features.clip must be a positive number"):
        train(config("features.clip=-1"), fold, dump, tmp_path / "bad")


def test_the_gender_task_needs_utt2gen(setup, tmp_path):
    import shutil
    fold = tmp_path / "fold"
    shutil.copytree(setup / "loso" / "fold1", fold)
    (fold / "train" / "utt2gen").unlink()
    with pytest.raises(ConfigError, match="needs utt2gen"):
        train(load_config(None, SD_TINY), fold, setup / "dump", tmp_path / "exp")


def test_a_run_killed_before_its_first_last_pt_starts_again_and_says_so(setup, tmp_path, monkeypatch):
    from sertk.train import trainer as trainer_module
    fold, dump, exp = setup / "loso" / "fold1", setup / "dump", tmp_path / "exp"
    real_save = trainer_module.save_checkpoint

    def killed_writing_last_pt(path, state):   # best.pt of epoch 1 written, the process killed in last.pt's write
        if path.name == "last.pt":
            raise KeyboardInterrupt
        real_save(path, state)
    monkeypatch.setattr(trainer_module, "save_checkpoint", killed_writing_last_pt)
    with pytest.raises(KeyboardInterrupt):
        train(config(), fold, dump, exp)
    monkeypatch.undo()
    assert (exp / "best.pt").is_file() and not (exp / "last.pt").exists()
    summary = train(config(), fold, dump, exp)
    assert summary.resumed_from is None and summary.epochs_run == 3
    log = (exp / "train.log").read_text()
    assert log.count("epoch 1: train loss") == 2   # the stopped run's line, then the new run's
    assert ("best.pt but no last.pt (a run stopped before its first epoch's checkpoint was written): training from "
            "epoch 1, and best.pt will be replaced") in log.split("epoch 1: train loss")[1]
    assert torch.load(exp / "best.pt", weights_only=True)["epoch"] == summary.best_epoch


def test_a_finished_run_is_skipped_and_a_changed_config_refused(setup, tmp_path):
    fold, dump, exp = setup / "loso" / "fold1", setup / "dump", tmp_path / "exp"
    first = train(config(), fold, dump, exp)
    stamp = (exp / "last.pt").stat().st_mtime_ns
    again = train(config(), fold, dump, exp)
    assert (again.best_epoch, again.best_dev_score) == (first.best_epoch, first.best_dev_score)
    assert (exp / "last.pt").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="trained with another config"):
        train(config("optim.lr=0.1"), fold, dump, exp)


def test_a_run_from_before_new_config_keys_resumes(setup, tmp_path):
    fold, dump, exp = setup / "loso" / "fold1", setup / "dump", tmp_path / "exp"
    train(config("train.epochs=1"), fold, dump, exp)
    state = torch.load(exp / "last.pt", weights_only=True)
    del state["config"]["loss"], state["config"]["scheduler"]["milestones"], state["objective"]
    state["config"]["train"]["epochs"], state["finished"] = 2, False
    torch.save(state, exp / "last.pt")                      # as an older sertk wrote it, unfinished
    summary = train(config("train.epochs=2"), fold, dump, exp)
    assert summary.resumed_from == 1 and summary.epochs_run == 2


def test_utterance_weighted_training_changes_the_loss_it_follows(tmp_path):
    root = make_emodb(tmp_path / "emodb", speakers=["03", "08", "09"], texts=["a01"], emotions="WLA")
    write_wav(root / "wav" / "09a01Wa.wav", seconds=1.2)     # one long training utterance: many segments
    dd = prepare_corpus("emodb", root, tmp_path / "all").datadir
    make_folds(dd, "loso", tmp_path / "loso")
    extract_features(tmp_path / "all", FEATURES, tmp_path / "dump")
    fold, dump = tmp_path / "loso" / "fold1", tmp_path / "dump"
    # without class weights: with them, one utterance per class, both weightings give each class (= each
    # utterance) a third of the loss (class weights count what the loss weighs, segments or utterances)
    train(config("train.epochs=1", "train.class_weighted=false"), fold, dump, tmp_path / "plain")
    train(config("train.epochs=1", "train.class_weighted=false", "train.utterance_weighted=true"), fold, dump,
          tmp_path / "weighted")
    history = [torch.load(tmp_path / name / "last.pt", weights_only=True)["history"][0]["train_loss"]
               for name in ("plain", "weighted")]
    assert history[0] != pytest.approx(history[1])


def test_a_fixed_length_model_refuses_another_segment_length(setup, tmp_path):
    # mpaf_cnn's time weights are sized by its frames; 0.3 s segments are 30 frames, not 20
    mpaf = ["model.name=mpaf_cnn", "model.branches=ms", "model.n_mels=16", "model.fdgr_reduce=linear",
            "model.frames=20", "train.epochs=1", "segments.length=0.3"]
    with pytest.raises(ConfigError, match="mpaf_cnn takes 20-frame segments, but segments.length 0.3 s is 30 "
                                          r"frames of 0.01 s; set model.frames=30"):
        train(load_config(None, mpaf), setup / "loso" / "fold1", setup / "dump", tmp_path / "exp")
    summary = train(load_config(None, mpaf[:-3] + ["model.frames=30", "train.epochs=1", "segments.length=0.3"]),
                    setup / "loso" / "fold1", setup / "dump", tmp_path / "exp2")
    assert summary.epochs_run == 1


def test_exp_dir_contents_and_tensorboard(setup, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    exp = tmp_path / "exp"
    train(config(), setup / "loso" / "fold1", setup / "dump", exp)
    for name in ("config.yaml", "environment.yaml", "train.log", "best.pt", "last.pt"):
        assert (exp / name).is_file(), name
    best = torch.load(exp / "best.pt", weights_only=True)
    assert best["classes"] == ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]
    events = EventAccumulator(str(exp / "tensorboard")).Reload()
    assert {"train/loss", "dev/loss", "dev/wa", "dev/ua", "lr"} <= set(events.Tags()["scalars"])
    assert "dev/confusion" in events.Tags()["images"]
    assert len(events.Scalars("dev/ua")) == 3
    assert "epoch 3: train loss" in (exp / "train.log").read_text()


def test_global_cmvn_sees_training_utterances_only(setup):
    train_dd = DataDir.load(setup / "loso" / "fold1" / "train")
    test_dd = DataDir.load(setup / "loso" / "fold1" / "test")
    feats = load_streams(setup / "dump", ["logmel"], train_dd.utts + test_dd.utts)
    norm = Normalization.fit("global", feats, train_dd)
    frames = np.concatenate([feats["logmel"][u] for u in train_dd.utts])
    normalised = np.concatenate([norm.apply("logmel", u, feats["logmel"][u]) for u in train_dd.utts])
    np.testing.assert_allclose(normalised.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(normalised.std(0), 1, atol=1e-3)
    assert not np.allclose(frames.mean(0), np.concatenate([feats["logmel"][u] for u in test_dd.utts]).mean(0))


@pytest.fixture(scope="module")
def trained(setup, tmp_path_factory):
    exp = tmp_path_factory.mktemp("exp") / "fold1"
    train(config(), setup / "loso" / "fold1", setup / "dump", exp)
    return exp


def test_test_set_is_decoded_once_with_the_dev_selected_checkpoint(setup, trained, tmp_path):
    from sertk.fsutil import new_dir_mode, new_file_mode
    for name in ("best.pt", "last.pt", "config.yaml"):   # written atomically, with open()'s mode, not mkstemp's 0600
        assert (trained / name).stat().st_mode & 0o777 == new_file_mode()
    for folder in (setup / "all", setup / "dump", setup / "loso"):   # made atomically, not left at mkdtemp's 0700
        assert folder.stat().st_mode & 0o777 == new_dir_mode()
    test, dump, out = setup / "loso" / "fold1" / "test", setup / "dump", tmp_path / "decode_test"
    decode_data_dir(trained, test, dump, out)
    assert read_decode_dir(out).info["checkpoint"] == "best.pt"
    assert "already decoded" in decode_data_dir(trained, test, dump, out)
    with pytest.raises(DecodeError, match="decode it with the dev-selected best.pt, not last.pt"):
        decode_data_dir(trained, test, dump, tmp_path / "other", checkpoint="last.pt")
    decode_data_dir(trained, test, dump, tmp_path / "other", checkpoint="last.pt", retest=True)
    # the model changes (e.g. it was retrained): decoding test again needs the explicit flag
    best = torch.load(trained / "best.pt", weights_only=True)
    best["epoch"] = 99
    torch.save(best, trained / "best.pt")
    with pytest.raises(DecodeError, match="already decoded with another checkpoint"):
        decode_data_dir(trained, test, dump, out)
    decode_data_dir(trained, test, dump, out, retest=True)
    dev_out = tmp_path / "decode_dev"
    decode_data_dir(trained, setup / "loso" / "fold1" / "dev", dump, dev_out, checkpoint="last.pt")


def test_a_dump_computed_otherwise_is_refused_by_decode_and_pack(setup, trained, tmp_path):
    """Same stream name and width, another hop: decode and pack say so, where they used to go on silently."""
    from sertk.inference.pack import pack_experiment
    recorded = torch.load(trained / "best.pt", weights_only=True)["features"]
    assert recorded["sample_rate"] == 16000 and list(recorded["streams"]) == ["logmel"]   # the model's stream only
    other = {"sample_rate": 16000, "streams": {"logmel": {"type": "logmel", "n_mels": 16, "hop_length": 0.02}}}
    extract_features(setup / "all", other, tmp_path / "dump_hop20")
    out = tmp_path / "decode_dev"
    with pytest.raises(FeatureError, match=r"dump_hop20: its features differ from those the model in .* was "
                                           r"trained on \(streams.logmel.hop_length: 0.01 -> 0.02\)"):
        decode_data_dir(trained, setup / "loso" / "fold1" / "dev", tmp_path / "dump_hop20", out)
    assert not out.exists()
    with pytest.raises(FeatureError, match="streams.logmel.hop_length: 0.01 -> 0.02"):
        pack_experiment(trained, tmp_path / "m.sertk", feats_dir=tmp_path / "dump_hop20")
    assert not (tmp_path / "m.sertk").exists()
    # a checkpoint from before sertk recorded its features is not checked
    old = torch.load(trained / "best.pt", weights_only=True)
    del old["features"]
    old_exp = tmp_path / "old_exp"
    old_exp.mkdir()
    torch.save(old, old_exp / "best.pt")
    decode_data_dir(old_exp, setup / "loso" / "fold1" / "dev", tmp_path / "dump_hop20", out)
    # a run resumed (here: extended) on such a dump stops before training
    import shutil
    shutil.copytree(trained, tmp_path / "resumed")
    with pytest.raises(FeatureError, match=r"differ from those the run in .*resumed was trained on"):
        train(config("train.epochs=4"), setup / "loso" / "fold1", tmp_path / "dump_hop20", tmp_path / "resumed")


def test_a_run_resumes_only_on_the_fold_it_began_on(setup, trained, tmp_path):
    """A fold dir made again with other lists (or another fold's) would train the rest of the run on other
    speakers: refused before any feature is read, last.pt untouched."""
    import shutil
    shutil.copytree(trained, tmp_path / "resumed")
    before = (tmp_path / "resumed" / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"loso/fold2: not the fold the run in .*resumed began on \(its train and "
                                          r"dev list differs from the one in .*last.pt\); give that fold"):
        train(config("train.epochs=4"), setup / "loso" / "fold2", setup / "dump", tmp_path / "resumed")
    from sertk.data.ops import subset
    remade = tmp_path / "fold1_remade"                     # fold 1 with one dev utterance fewer
    shutil.copytree(setup / "loso" / "fold1" / "train", remade / "train")
    dev = DataDir.load(setup / "loso" / "fold1" / "dev")
    subset(dev, utt_list=dev.utts[1:]).save(remade / "dev")
    with pytest.raises(ConfigError, match=r"\(its dev list differs"):
        train(config("train.epochs=4"), remade, setup / "dump", tmp_path / "resumed")
    assert (tmp_path / "resumed" / "last.pt").read_bytes() == before


def test_a_dev_set_that_repeats_training_utterances_is_refused(setup, tmp_path):
    """Dev picks the checkpoint: dev made of training utterances (or their audio under other ids) would pick the
    run that memorised them."""
    import shutil
    from sertk.data.ops import subset
    fold = tmp_path / "fold1"
    shutil.copytree(setup / "loso" / "fold1" / "train", fold / "train")
    shutil.copytree(setup / "loso" / "fold1" / "train", fold / "dev")
    with pytest.raises(ConfigError, match=r"fold1: dev repeats \d+ training utterance\(s\) or their audio"):
        train(config(), fold, setup / "dump", tmp_path / "exp")
    assert not (tmp_path / "exp").exists()
    train_dd = DataDir.load(fold / "train")
    renamed = subset(train_dd, utt_list=train_dd.utts[:2])   # the same audio under other ids
    renamed.tables = {name: {f"{renamed.utt2spk[u]}-copy-{u}": v for u, v in table.items()}
                      for name, table in renamed.tables.items()}
    shutil.rmtree(fold / "dev")
    renamed.save(fold / "dev")
    with pytest.raises(ConfigError, match=r"dev repeats 2 training utterance\(s\) or their audio \(e.g. emodb_\d+-copy-"):
        train(config(), fold, setup / "dump", tmp_path / "exp")


def test_a_decode_is_redone_with_another_dump_and_skipped_with_a_moved_one(setup, trained, tmp_path):
    import shutil
    from pathlib import Path
    dev, test, dump = setup / "loso" / "fold1" / "dev", setup / "loso" / "fold1" / "test", setup / "dump"
    decode_data_dir(trained, dev, dump, tmp_path / "dev")
    decode_data_dir(trained, test, dump, tmp_path / "test")
    shutil.copytree(dump, tmp_path / "moved")   # the same features, another folder: nothing to redo
    assert "already decoded" in decode_data_dir(trained, dev, tmp_path / "moved", tmp_path / "dev")
    # the same config extracted again from other audio files (copies, here): decoded again, test with --retest
    shutil.copytree(setup / "all", tmp_path / "all2")
    (tmp_path / "wav").mkdir()
    lines = []
    for line in (tmp_path / "all2" / "wav.scp").read_text().splitlines():
        utt, path = line.split(maxsplit=1)
        lines.append(f"{utt} {shutil.copy(path, tmp_path / 'wav' / Path(path).name)}")
    (tmp_path / "all2" / "wav.scp").write_text("\n".join(lines) + "\n")
    extract_features(tmp_path / "all2", FEATURES, tmp_path / "other")
    assert "already decoded" not in decode_data_dir(trained, dev, tmp_path / "other", tmp_path / "dev")
    assert "already decoded" in decode_data_dir(trained, dev, tmp_path / "other", tmp_path / "dev")
    with pytest.raises(DecodeError, match="already decoded with other features; decoding it again needs --retest"):
        decode_data_dir(trained, test, tmp_path / "other", tmp_path / "test")
    decode_data_dir(trained, test, tmp_path / "other", tmp_path / "test", retest=True)
    # a decode dir from before sertk recorded a fingerprint: compared by its dump folder
    info_path = tmp_path / "dev" / "decode.yaml"
    info = yaml.safe_load(info_path.read_text())
    del info["features"]["fingerprint"]
    info_path.write_text(yaml.safe_dump(info))
    assert "already decoded" in decode_data_dir(trained, dev, tmp_path / "other", tmp_path / "dev")
    assert "already decoded" not in decode_data_dir(trained, dev, dump, tmp_path / "dev")


def test_the_same_out_twice_in_one_decode_call_is_refused(setup, trained, tmp_path):
    from click.testing import CliRunner
    from sertk.cli import main
    fold = setup / "loso" / "fold1"
    result = CliRunner().invoke(main, ["decode", "--exp", str(trained), "--feats", str(setup / "dump"),
                                       "--data", str(fold / "test"), "--out", str(tmp_path / "o"),
                                       "--data", str(fold / "dev"), "--out", str(tmp_path / "x" / ".." / "o")])
    assert result.exit_code == 2 and "each --data needs its own --out" in result.output
    assert not (tmp_path / "o").exists()


def test_the_test_set_of_a_model_still_training_waits(setup, trained, tmp_path):
    import shutil
    from click.testing import CliRunner
    from sertk.cli import main
    exp = tmp_path / "exp"
    shutil.copytree(trained, exp)
    last = torch.load(exp / "last.pt", weights_only=True)
    last["finished"] = False   # as at the end of any epoch before the last: training goes on (or resumes)
    torch.save(last, exp / "last.pt")
    fold = setup / "loso" / "fold1"
    with pytest.raises(DecodeError, match=rf"{exp} is still training \(epoch {last['epoch']}\): decode its test set "
                                          "once training has finished"):
        decode_data_dir(exp, fold / "test", setup / "dump", tmp_path / "test")
    decode_data_dir(exp, fold / "dev", setup / "dump", tmp_path / "dev")   # dev: a look at the model so far
    result = CliRunner().invoke(main, ["decode", "--skip-unfinished", "--exp", str(exp), "--feats", str(setup / "dump"),
                                       "--data", str(fold / "test"), "--out", str(tmp_path / "test")])
    assert result.exit_code == 0 and f"{exp}: still training (epoch {last['epoch']}); not decoded" in result.output
    assert not (tmp_path / "test").exists()
    decode_data_dir(exp, fold / "test", setup / "dump", tmp_path / "test", retest=True)
    # stopped between best.pt and last.pt of its first epoch: a new start trains from scratch, best.pt will change
    first = tmp_path / "first"
    shutil.copytree(trained, first)
    (first / "last.pt").unlink()
    with pytest.raises(DecodeError, match=r"still training \(stopped in its first epoch \(best.pt, no last.pt\)\)"):
        decode_data_dir(first, fold / "test", setup / "dump", tmp_path / "test_first")
    # in its first epoch (config.yaml and train.log, no checkpoint): the recipe's stage 4 goes on to other folds
    starting = tmp_path / "starting"
    starting.mkdir()
    for name in ("config.yaml", "train.log"):
        shutil.copy(trained / name, starting / name)
    result = CliRunner().invoke(main, ["decode", "--skip-unfinished", "--exp", str(starting), "--feats",
                                       str(setup / "dump"), "--data", str(fold / "test"), "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert f"{starting}: still training (in its first epoch (no checkpoint yet)); not decoded" in result.output


def test_posteriors_do_not_depend_on_batch_size(setup, trained, tmp_path):
    data, dump = setup / "loso" / "fold1" / "dev", setup / "dump"
    decode_data_dir(trained, data, dump, tmp_path / "b1", batch_size=1)
    decode_data_dir(trained, data, dump, tmp_path / "b64", batch_size=64)
    one, many = read_decode_dir(tmp_path / "b1").seg_post, read_decode_dir(tmp_path / "b64").seg_post
    assert one.keys() == many.keys() and len(one) > 1
    for seg in one:
        np.testing.assert_allclose(one[seg], many[seg], atol=1e-5)


def test_another_corpus_is_decoded_and_scored_through_a_class_map(trained, tmp_path):
    from replicas import make_ravdess
    from sertk.data.cross import class_mapping_from_dict
    from sertk.score import score_decode_dir

    rav = make_ravdess(tmp_path / "rav", actors=[1, 2], emotions=[1, 5, 6, 8])
    prepare_corpus("ravdess", rav, tmp_path / "rav_all")
    extract_features(tmp_path / "rav_all", FEATURES, tmp_path / "rav_dump")
    doc = {"source": "emodb", "target": "ravdess", "classes": ["anger", "fear"],
           "source_map": {c: "drop" for c in ("boredom", "disgust", "happiness", "sadness", "neutral")},
           "target_map": {c: "drop" for c in ("neutral", "calm", "happiness", "sadness", "disgust", "surprise")}}
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(doc))
    args = (trained, tmp_path / "rav_all", tmp_path / "rav_dump")
    with pytest.raises(DecodeError, match="give a class mapping with --class-map"):
        decode_data_dir(*args, tmp_path / "plain")
    out = tmp_path / "cross"
    decode_data_dir(*args, out, class_map=tmp_path / "map.yaml")
    dec = read_decode_dir(out)
    assert dec.classes == ["anger", "fear"]
    rav_dd = DataDir.load(tmp_path / "rav_all")
    kept = sorted(u for u, c in rav_dd.utt2emo.items() if c in ("anger", "fear"))
    assert dec.utts == kept and dec.info["class_map"]["dropped"] == {"neutral": 2, "surprise": 4}
    for p in dec.seg_post.values():
        assert p.shape == (2,) and p.sum() == pytest.approx(1, abs=1e-5)
    assert dec.info["class_map"]["model_classes"] == ["anger", "boredom", "disgust", "fear", "happiness",
                                                      "sadness", "neutral"]
    assert "already decoded" in decode_data_dir(*args, out, class_map=tmp_path / "map.yaml")
    doc["target_map"]["neutral"] = "fear"
    (tmp_path / "map2.yaml").write_text(yaml.safe_dump(doc))
    assert "already decoded" not in decode_data_dir(*args, out, class_map=tmp_path / "map2.yaml")
    assert read_decode_dir(out).info["class_map"]["dropped"] == {"surprise": 4}   # a changed mapping: decoded again
    decode_data_dir(*args, out, class_map=tmp_path / "map.yaml")
    result = score_decode_dir(out, tmp_path / "rav_all")
    assert result["utterance"]["mean"]["num_utts"] == len(kept)
    assert any("6 utterance(s) of classes outside the shared set left out" in n
               for n in result["utterance"]["mean"]["notes"])
    class_mapping_from_dict(dec.info["class_map"], "decode.yaml")   # the record is a usable mapping
    # RESULTS.md says what was left out, all folds together (its pooled notes lost the folds' counts)
    import shutil
    from sertk.results import collect
    fold = tmp_path / "exp" / "cross" / "fold1"
    shutil.copytree(trained, fold, ignore=shutil.ignore_patterns("decode_*", ".lock"))
    shutil.copytree(out, fold / "decode_test")
    collect(fold.parent)
    assert ("- note: cross-corpus, through the decodes' class map: 6 utterance(s) of classes outside the shared set "
            "left out (neutral 2, surprise 4)") in (fold.parent / "RESULTS.md").read_text()


def test_length_batches_shuffle_similar_lengths_and_drop_only_the_last_short_one():
    from sertk.train.data import BUCKET_POOL, length_batches
    lengths = list(np.random.default_rng(0).integers(1, 500, size=4 * BUCKET_POOL * 3 + 5))
    runs = [length_batches(lengths, 4, torch.Generator().manual_seed(s), drop_last=True) for s in (0, 0, 1)]
    assert runs[0] == runs[1] and runs[0] != runs[2]                   # seeded, and reshuffled per seed
    flat = sorted(i for b in runs[0] for i in b)
    assert len(flat) == len(set(flat)) == len(lengths) - 1 and all(len(b) == 4 for b in runs[0])
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in runs[0]])
    assert spread < 60                                                  # random batches of 4: about 250
    kept = length_batches(lengths, 4, torch.Generator().manual_seed(0), drop_last=False)
    assert sorted(i for b in kept for i in b) == list(range(len(lengths)))


def test_length_batches_leave_out_random_utterances_not_the_longest():
    """EmoDB fold 1's 428 training utterances fit one pool: the short batch cut after sorting held the
    12 longest, so those were never trained on. The ones left out now are random, others each epoch."""
    from sertk.train.data import length_batches
    lengths = list(np.random.default_rng(0).integers(50, 450, size=428))
    generator = torch.Generator().manual_seed(0)
    seen, left_out = set(), []
    for _ in range(30):
        batches = length_batches(lengths, 32, generator, drop_last=True)
        assert len(batches) == 13 and all(len(b) == 32 for b in batches)
        epoch = {i for b in batches for i in b}
        seen |= epoch
        left_out.append(set(range(428)) - epoch)
    assert seen == set(range(428))                                      # every utterance trained on
    longest = set(np.argsort(lengths)[-12:].tolist())
    assert sum(out == longest for out in left_out) == 0 and len({frozenset(o) for o in left_out}) == 30


def test_whole_utterances_are_padded_to_the_batch_not_the_data_set(setup):
    from sertk.features.dataset import SegmentDataset, collate
    dd = DataDir.load(setup / "loso" / "fold1" / "train")
    feats = {"logmel": {u: np.ones((10 + 7 * i, 3), dtype=np.float32) for i, u in enumerate(dd.utts)}}
    ds = SegmentDataset(dd, feats, None, None, lambda s, u, x: x, list(dd.labels.classes))
    sizes = [ds.frames(i) for i in range(len(ds))]
    assert [ds[i]["logmel"].shape[0] for i in range(len(ds))] == sizes
    shortest = sorted(range(len(ds)), key=sizes.__getitem__)[:2]
    batch = collate([ds[i] for i in shortest])
    assert batch["logmel"].shape[1] == max(sizes[i] for i in shortest) < ds.length
    assert batch["mask"].sum(1).tolist() == [sizes[i] for i in shortest]


def test_bucketed_training_runs_and_changes_the_batches(setup, tmp_path):
    fold, dump = setup / "loso" / "fold1", setup / "dump"
    plain = train(config("segments.length=null", "train.epochs=1"), fold, dump, tmp_path / "plain")
    bucketed = train(config("segments.length=null", "train.epochs=1", "train.bucket=true"), fold, dump,
                     tmp_path / "bucket")
    assert plain.epochs_run == bucketed.epochs_run == 1
    a, b = (torch.load(tmp_path / d / "last.pt", weights_only=True)["model"] for d in ("plain", "bucket"))
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_one_decode_command_decodes_several_data_dirs(setup, trained, tmp_path, sertk_cli):
    fold, dump = setup / "loso" / "fold1", setup / "dump"
    result = sertk_cli("decode", "--exp", trained, "--feats", dump, "--data", fold / "dev", "--out", tmp_path / "d",
                       "--data", fold / "test", "--out", tmp_path / "t", "--device", "cpu")
    assert result.exit_code == 0, result.output
    for part, out in (("dev", "d"), ("test", "t")):
        decode_data_dir(trained, fold / part, dump, tmp_path / f"alone_{part}")
        assert read_decode_dir(tmp_path / out).hyp == read_decode_dir(tmp_path / f"alone_{part}").hyp
    result = sertk_cli("decode", "--exp", trained, "--feats", dump, "--data", fold / "dev", "--data", fold / "test",
                       "--out", tmp_path / "x")
    assert result.exit_code == 2 and "give one --out per --data (2 --data, 1 --out)" in result.output   # usage error


def test_loader_workers_give_the_same_training_and_bad_counts_are_refused(setup, tmp_path):
    fold, dump = setup / "loso" / "fold1", setup / "dump"
    runs = [train(config("train.epochs=1", f"train.num_workers={n}"), fold, dump, tmp_path / f"w{n}") for n in (0, 2)]
    states = [torch.load(tmp_path / f"w{n}" / "last.pt", weights_only=True) for n in (0, 2)]
    for name, tensor in states[0]["model"].items():
        torch.testing.assert_close(states[1]["model"][name], tensor, rtol=0, atol=0)
    assert runs[0].best_dev_score == runs[1].best_dev_score
    epoch = states[1]["history"][0]
    assert epoch["train_segments"] > 0 and epoch["segments_per_second"] > 0 and 0 <= epoch["data_wait_share"] < 1
    with pytest.raises(ConfigError, match="train.num_workers"):
        train(config("train.num_workers=-1"), fold, dump, tmp_path / "bad")


def test_channels_last_layout_trains_the_same_and_loads_into_a_plain_model(setup, tmp_path, monkeypatch):
    from sertk.train import trainer
    fold, dump = setup / "loso" / "fold1", setup / "dump"
    runs = {}
    for layout in (True, False):
        monkeypatch.setattr(trainer, "CHANNELS_LAST", layout)
        train(config("train.amp=false", "train.epochs=2"), fold, dump, tmp_path / str(layout))
        runs[layout] = torch.load(tmp_path / str(layout) / "last.pt", weights_only=False)
    conv = next(name for name, value in runs[True]["model"].items() if value.dim() == 4 and value.shape[1] > 1)
    assert runs[True]["model"][conv].is_contiguous(memory_format=torch.channels_last)   # crnn says channels_last
    assert not runs[True]["model"][conv].is_contiguous() and runs[False]["model"][conv].is_contiguous()
    for a, b in zip(runs[True]["history"], runs[False]["history"]):   # only the summation order differs
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["dev_loss"] == pytest.approx(b["dev_loss"], rel=1e-4)
    out = tmp_path / "decoded"
    decode_data_dir(tmp_path / "True", fold / "dev", dump, out)   # the checkpoint loads into a plain model
    assert len(read_decode_dir(out).utts) == len(DataDir.load(fold / "dev").utts)
