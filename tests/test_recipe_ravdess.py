"""egs/ravdess/run.sh: actor6 on a generated RAVDESS-like release, cross-corpus to EmoDB, one real fold."""
import pytest
import yaml

from recipes import ONE_EPOCH, assert_folds_done, copy_recipe, run_real_fold1, run_recipe, tiny_args
from replicas import make_emodb, make_ravdess


@pytest.fixture
def recipe(tmp_path):
    return copy_recipe(tmp_path, "ravdess")


def test_generated_release_through_stage_5(recipe, tmp_path):
    release = make_ravdess(tmp_path / "release", emotions=[1, 2, 5, 8])
    run_recipe(recipe, "--ravdess_root", release, "--nj", "1", "--train_args", ONE_EPOCH)
    assert_folds_done(recipe / "exp" / "actor6" / "crnn", 6)
    card = yaml.safe_load((recipe / "data" / "actor6" / "protocol.yaml").read_text())
    assert card["folds"][0]["test_speakers"] == [f"ravdess_{a:02d}" for a in (1, 2, 3, 4)]
    assert card["classes"] == ["neutral", "calm", "happiness", "sadness", "anger", "fear", "disgust", "surprise"]


def test_cross_corpus_to_emodb(recipe, tmp_path):
    release = make_ravdess(tmp_path / "release", actors=range(1, 7))
    emodb = make_emodb(tmp_path / "emodb", speakers=["03", "08"], texts=["a01"])
    run_recipe(recipe, "--ravdess_root", release, "--cross_corpus", "emodb", "--cross_root", emodb, "--nj", "1",
               "--train_args", ONE_EPOCH)
    exp = recipe / "exp" / "cross_emodb" / "crnn"
    assert_folds_done(exp, 1)
    results = (exp / "RESULTS.md").read_text()
    assert "protocol: `cross_corpus`: cross-corpus: train on ravdess, test on all of emodb" in results
    assert "emodb (target): 2 utterance(s) of classes outside the shared set left out (boredom 2)" in results
    hyp = (exp / "fold1" / "decode_test" / "hyp").read_text().split()
    assert len(hyp) == 2 * 12 and set(hyp[1::2]) <= {"anger", "happiness", "sadness", "fear", "disgust", "neutral"}
    assert (recipe / "dump" / "emodb_logmel64" / "logmel" / "feats.scp").is_file()


def test_cross_corpus_needs_a_mapping_and_a_root(recipe, tmp_path):
    result = run_recipe(recipe, "--cross_corpus", "iemocap", check=False)
    assert result.returncode == 1 and "no class mapping conf/cross/ravdess_to_iemocap.yaml" in result.stderr
    release = make_ravdess(tmp_path / "release", actors=range(1, 3), emotions=[5])
    result = run_recipe(recipe, "--stage", "1", "--ravdess_root", release, "--cross_corpus", "emodb", check=False)
    assert result.returncode == 1 and "--cross_root PATH is required" in result.stderr.splitlines()[-1]
    # a licensed target: stage 0 cannot download it and says so in one line
    (recipe / "conf" / "cross").mkdir(parents=True)
    (recipe / "conf" / "cross" / "ravdess_to_iemocap.yaml").write_text(
        "source: ravdess\ntarget: iemocap\nclasses: [anger]\n")
    result = run_recipe(recipe, "--ravdess_root", release, "--cross_corpus", "iemocap", check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and lines[-1].startswith("./run.sh: error: --cross_root PATH is required: "
                                                           "iemocap could not be downloaded (")
    assert not any(line.startswith("Usage:") for line in lines)
    result = run_recipe(recipe, "--protocol", "loso", "--cross_corpus", "emodb", check=False)
    assert result.returncode == 1 and "--protocol loso and --cross_corpus exclude each other" in result.stderr


def test_one_real_fold_for_a_few_epochs(recipe):
    # the small model keeps this real-data run (1440 files, 960 training utterances) to about a minute
    fold = run_real_fold1(recipe, "ravdess", "actor6", tiny_args(3))
    assert (fold / "decode_test" / "hyp").read_text().count("\n") == 240   # actors 1-4, 60 files each
    log = (fold / "train.log").read_text()
    assert "960 utts" in log and "epoch 3:" in log
