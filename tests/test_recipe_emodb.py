"""egs/emodb/run.sh end to end: on a generated EmoDB-like corpus (always), and one real fold."""
import csv
import shutil
from pathlib import Path

import pytest
import yaml

from recipes import CORPORA, ONE_EPOCH, REPO, TINY, copy_recipe, run_real_fold1, run_recipe, run_sertk, tiny_args
from replicas import make_emodb
from sertk.decode import read_decode_dir
from sertk.inference.pack_file import read_meta


@pytest.fixture
def recipe(tmp_path):
    return copy_recipe(tmp_path, "emodb")


def test_generated_corpus_through_stage_6(recipe, tmp_path):
    corpus = make_emodb(tmp_path / "corpus", speakers=["03", "08", "09"], texts=["a01", "b02"])
    run_recipe(recipe, "--emodb_root", corpus, "--nj", "1", "--train_args", TINY)
    exp = recipe / "exp" / "loso" / "crnn"
    results = (exp / "RESULTS.md").read_text()
    assert "loso" in results and "emodb" in results
    for k in (1, 2, 3):
        fold = exp / f"fold{k}"
        assert (fold / "best.pt").is_file() and (fold / "last.pt").is_file() and (fold / "train.log").is_file()
        assert any((fold / "tensorboard").iterdir())
        for name in ("post_seg", "post", "hyp", "seg2utt"):
            assert (fold / "decode_test" / name).is_file()
        assert (fold / "decode_test" / "scoring" / "metrics.json").is_file()
        info = yaml.safe_load((fold / "decode_test" / "decode.yaml").read_text())
        assert info["checkpoint"] == "best.pt"
        packed = read_meta(fold / "model.sertk")   # stage 6
        assert packed["source"]["checkpoint_sha256"] == info["checkpoint_sha256"]
        assert packed["protocol"]["fold"]["fold"] == k and packed["metrics"]["test"]["num_utts"] > 0
    metrics = yaml.safe_load((exp / "metrics.json").read_text())
    assert metrics  # written beside RESULTS.md
    assert (exp / "run.sh").read_text().count("--emodb_root") == 1

    # a second run finds everything done and changes nothing
    before = {p: p.stat().st_mtime_ns for p in exp.rglob("*.pt")}
    rerun = run_recipe(recipe, "--emodb_root", corpus, "--nj", "1", "--train_args", TINY)
    assert "already" in rerun.stderr + rerun.stdout
    assert "already packed from this best.pt" in rerun.stdout
    assert {p: p.stat().st_mtime_ns for p in exp.rglob("*.pt")} == before


def test_scoring_while_folds_are_missing_lists_them(recipe, tmp_path):
    corpus = make_emodb(tmp_path / "corpus", speakers=["03", "08", "09"], texts=["a01"])
    run_recipe(recipe, "--emodb_root", corpus, "--nj", "1", "--train_args", tiny_args(1), "--folds", "1",
               "--stop_stage", "4")
    result = run_recipe(recipe, "--stage", "5")
    assert "fold 2 has no decode_test/ yet (stage 4); scoring the others" in result.stderr
    results = (recipe / "exp" / "loso" / "crnn" / "RESULTS.md").read_text()
    assert "scored 1; **missing: fold2, fold3**" in results


def test_a_protocol_over_two_sessions_that_do_not_keep_exp(recipe, tmp_path):
    """Fold 1 trained and kept (`sertk results keep`), exp/ lost; the next session restores it and runs the rest."""
    corpus = make_emodb(tmp_path / "corpus", speakers=["03", "08", "09"], texts=["a01"])
    run_recipe(recipe, "--emodb_root", corpus, "--nj", "1", "--train_args", ONE_EPOCH, "--folds", "1",
               "--stop_stage", "4")
    exp = recipe / "exp" / "loso" / "crnn"
    run_sertk(recipe, "results", "keep", "exp/loso/crnn", "kept/loso/crnn")
    decoded = (exp / "fold1" / "decode_test" / "post_seg").read_text()
    shutil.rmtree(recipe / "exp")

    run_sertk(recipe, "results", "keep", "kept/loso/crnn", "exp/loso/crnn")
    result = run_recipe(recipe, "--emodb_root", corpus, "--nj", "1", "--train_args", ONE_EPOCH)
    assert "fold 1 is a kept record without checkpoints (sertk results keep): no training" in result.stderr
    assert "fold 1 is a kept record without checkpoints (sertk results keep): no decoding" in result.stderr
    assert "fold 1 is a kept record without checkpoints (sertk results keep); not packed" in result.stderr
    assert (exp / "fold1" / "decode_test" / "post_seg").read_text() == decoded
    assert not (exp / "fold1" / "best.pt").exists()
    assert (exp / "fold2" / "model.sertk").is_file() and (exp / "fold3" / "model.sertk").is_file()
    results = (exp / "RESULTS.md").read_text()
    assert "folds: 3; scored 3" in results
    training = results.split("## Training per fold")[1].split("\n## ")[0]
    assert all(f"| fold{k} |" in training for k in (1, 2, 3))


def test_options_are_checked(recipe, tmp_path):
    result = run_recipe(recipe, "--no_such_option", "1", check=False)
    assert result.returncode == 1 and "unknown option --no_such_option" in result.stderr
    result = run_recipe(recipe, "--model", "nope", check=False)
    assert result.returncode == 1 and "no model config conf/models/nope.yaml" in result.stderr
    corpus = make_emodb(tmp_path / "corpus", speakers=["03", "08", "09"], texts=["a01"])
    run_recipe(recipe, "--emodb_root", corpus, "--stop_stage", "1")
    result = run_recipe(recipe, "--stage", "3", "--folds", "1,7", check=False)
    assert result.returncode == 1 and "--folds: '7' is not a fold of data/loso (1..3)" in result.stderr
    # a label map added after stage 1 ran would be ignored by the data it made: refused, nothing changed
    assert (recipe / "data" / "all" / "prepared_with").read_text() == ""
    run_sertk(recipe, "data", "validate", "data/all")                          # the record is the data dir's own
    before = (recipe / "data" / "all" / "utt2emo").read_text()
    (recipe / "conf" / "labels.yaml").write_text((REPO / "sertk/data/corpora/labels/emodb.yaml").read_text())
    result = run_recipe(recipe, "--emodb_root", corpus, "--stop_stage", "1", check=False)
    assert result.returncode == 1 and ("data/all was prepared with other label settings (then: no options; now: "
                                       "--labels conf/labels.yaml(sha256 ") in result.stderr
    assert "remove data/all and data/loso to prepare again" in result.stderr
    assert (recipe / "data" / "all" / "utt2emo").read_text() == before


def test_one_real_fold_for_a_few_epochs_then_packed_and_run_on_every_file(recipe):
    fold = run_real_fold1(recipe, "emodb", "loso", "--set train.epochs=2")
    test_utts = (recipe / "data" / "loso" / "fold1" / "test" / "wav.scp").read_text().count("\n")
    assert (fold / "decode_test" / "hyp").read_text().count("\n") == test_utts == 49
    assert "epoch 2:" in (fold / "train.log").read_text()
    # issue 10's acceptance: the packed model run on every EmoDB file decides as the recipe's decoder
    # (the same model decoding data/all, every speaker normalised with its own statistics)
    run_recipe(recipe, "--stage", "6", "--folds", "1")
    run_sertk(recipe, "decode", "--exp", fold, "--data", "data/all", "--feats", "dump/logmel64", "--out", "decode_all")
    wav = CORPORA / "emodb" / "wav"
    run_sertk(recipe, "-q", "infer", fold / "model.sertk", wav, "--speaker-pattern", r"/(\d\d)[a-z]\d\d",
              "--out", "infer.csv")
    decoded = read_decode_dir(recipe / "decode_all")
    hyp = {utt.split("-", 1)[-1]: label for utt, label in decoded.hyp["mean"].items()}
    with open(recipe / "infer.csv") as f:
        inferred = {Path(row["path"]).stem: row["label"] for row in csv.DictReader(f)}
    assert len(inferred) == len(hyp) == 535 and inferred == hyp


def _logs_ended_well(logs):
    logs = sorted(logs)
    assert logs and all("ended with exit status 0" in p.read_text() for p in logs), logs
    return logs


def test_scale_out_local_jobs_parallel_folds_and_two_process_training(recipe, tmp_path):
    corpus = make_emodb(tmp_path / "corpus", speakers=["03", "08", "09"], texts=["a01"])
    # batches of 4 utterances: every speaker is a block of its own, so both extraction jobs have work
    run_recipe(recipe, "--emodb_root", corpus, "--nj", "2", "--extract_args", "--batch-size 4", "--fold_jobs", "2",
               "--nproc", "2", "--folds", "1,2", "--stop_stage", "3", "--train_args", tiny_args(1))
    dump = recipe / "dump"
    assert len(_logs_ended_well((dump / "log").glob("logmel64.extract.*.log"))) == 2
    assert sorted(p.name for p in (dump / "logmel64" / "logmel").glob("*.ark")) == ["feats.1.ark", "feats.2.ark"]
    assert not list(dump.glob("*.split*"))
    exp = recipe / "exp" / "loso" / "crnn"
    assert [p.name for p in _logs_ended_well((exp / "log").glob("train.fold*.log"))] == \
        ["train.fold1.log", "train.fold2.log"]
    for k in (1, 2):
        assert yaml.safe_load((exp / f"fold{k}" / "environment.yaml").read_text())["distributed"]["processes"] == 2
        assert (exp / f"fold{k}" / "best.pt").is_file()
    assert not (exp / "fold3").exists()


def test_scale_out_on_slurm(slurm, recipe, tmp_path, monkeypatch):
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    (recipe / "conf" / "slurm.yaml").write_text("sbatch: {time: '0:30:00'}\nkinds: {train: {cpus-per-task: 1}}\n")
    corpus = make_emodb(tmp_path / "corpus", speakers=["03", "08", "09"], texts=["a01"])
    # stage 2's jobs go through sbatch (stage 3's take the same path: see the local scale-out test)
    run_recipe(recipe, "--emodb_root", corpus, "--backend", "slurm", "--nj", "2", "--extract_args", "--batch-size 4",
               "--stop_stage", "2")
    logs = _logs_ended_well((recipe / "dump" / "log").glob("logmel64.extract.*.log"))
    assert len(logs) == 2 and all("(slurm job" in p.read_text() for p in logs)
    assert sorted(p.name for p in (recipe / "dump" / "logmel64" / "logmel").glob("*.ark")) == \
        ["feats.1.ark", "feats.2.ark"]


def test_stage_2_of_a_small_corpus_is_one_in_process_pass(recipe, tmp_path):
    """--nj auto (the default): under split_hours of audio on the local backend, no jobs and no merge (each
    would pay a Python and torch start-up); a corpus over the limit is split into jobs of whole speakers."""
    corpus = make_emodb(tmp_path / "corpus", speakers=["03", "08", "09", "10"], texts=["a01"])
    run_recipe(recipe, "--emodb_root", corpus, "--stop_stage", "2")
    logs = recipe / "dump" / "log"
    assert not list(logs.glob("logmel64.extract.*.log")) if logs.is_dir() else True
    assert (recipe / "dump" / "logmel64" / "logmel" / "feats.scp").is_file()
    for scp in (recipe / "dump" / "logmel64").rglob("feats.scp"):
        scp.unlink()   # forces stage 2 to run again, now over the (zero-hour) limit
    run_recipe(recipe, "--emodb_root", corpus, "--stage", "2", "--stop_stage", "2", "--split_hours", "0")
    assert sorted(p.name for p in logs.glob("logmel64.extract.*.log")) == \
        [f"logmel64.extract.{k}.log" for k in (1, 2, 3, 4)]
