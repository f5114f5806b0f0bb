"""egs/iemocap and egs/msp_improv on generated replicas of their release layouts."""
import pytest
import yaml

from recipes import assert_folds_done, copy_recipe, run_recipe, tiny_args
from replicas_licensed import make_iemocap, make_msp_improv

ONE_EPOCH = tiny_args(1)
# ssl_probe on the real Whisper-base, one epoch, one grid point: the recipe's pretrained-encoder path
PROBE = ("--model", "ssl_probe", "--stage", "2", "--train_args",
         "--set train.epochs=1 --grid model.layer=[all] --grid optim.weight_decay=")


def _probe_through_stage_6(recipe, whisper_base_folder, monkeypatch, folds):
    """Stages 2-6 of ssl_probe on the data dirs a crnn run of the same recipe copy prepared."""
    monkeypatch.setenv("SERTK_CACHE", str(whisper_base_folder.parent.parent))
    run_recipe(recipe, "--nj", "1", *PROBE)
    assert_folds_done(recipe / "exp" / "loso_session" / "ssl_probe", folds)


@pytest.fixture
def iemocap(tmp_path):
    return copy_recipe(tmp_path, "iemocap")


@pytest.fixture
def msp_improv(tmp_path):
    return copy_recipe(tmp_path, "msp_improv")


def test_iemocap_replica_through_stage_5(iemocap, tmp_path, whisper_base_folder, monkeypatch):
    release = make_iemocap(tmp_path / "corpus")
    run_recipe(iemocap, "--iemocap_root", release, "--nj", "1", "--train_args", ONE_EPOCH)
    assert_folds_done(iemocap / "exp" / "loso_session" / "crnn", 5)
    card = yaml.safe_load((iemocap / "data" / "loso_session" / "protocol.yaml").read_text())
    assert card["classes"] == ["neutral", "happiness", "anger", "sadness"]
    raw = (iemocap / "data" / "all" / "utt2lab_raw").read_text()
    emo = dict(line.split() for line in (iemocap / "data" / "all" / "utt2emo").read_text().splitlines())
    exc = [line.split()[0] for line in raw.splitlines() if line.endswith(" exc")]
    assert exc and {emo[u] for u in exc} == {"happiness"}   # excited merged into happiness
    _probe_through_stage_6(iemocap, whisper_base_folder, monkeypatch, 5)


def test_iemocap_improvised_only_and_loso_speaker(iemocap, tmp_path):
    release = make_iemocap(tmp_path / "corpus")
    run_recipe(iemocap, "--iemocap_root", release, "--improvised_only", "true", "--stop_stage", "1")
    impro = (iemocap / "data" / "all_impro" / "wav.scp").read_text().splitlines()
    assert impro and all("_impro" in line.split()[0] for line in impro)
    assert (iemocap / "data" / "loso_session_impro" / "protocol.yaml").is_file()
    assert not (iemocap / "data" / "all").exists()
    run_recipe(iemocap, "--iemocap_root", release, "--protocol", "loso_speaker", "--stop_stage", "1")
    card = yaml.safe_load((iemocap / "data" / "loso_speaker" / "protocol.yaml").read_text())
    assert card["num_folds"] == 10
    assert card["folds"][0]["test_speakers"] == ["iemocap_Ses01F"]
    assert card["folds"][0]["dev_speakers"] == ["iemocap_Ses01M"]
    result = run_recipe(iemocap, "--improvised_only", "maybe", check=False)
    assert result.returncode == 1 and "--improvised_only takes true or false" in result.stderr


def test_iemocap_excited_only_drops_plain_happy(iemocap, tmp_path):
    release = make_iemocap(tmp_path / "corpus")
    run_recipe(iemocap, "--iemocap_root", release, "--excited_only", "true", "--improvised_only", "true",
               "--stop_stage", "1")
    data = iemocap / "data" / "all_impro_exc"
    raw = dict(line.split() for line in (data / "utt2lab_raw").read_text().splitlines())
    emo = dict(line.split() for line in (data / "utt2emo").read_text().splitlines())
    assert "hap" not in raw.values() and {emo[u] for u, r in raw.items() if r == "exc"} == {"happiness"}
    assert (iemocap / "data" / "loso_session_impro_exc" / "protocol.yaml").is_file()


def test_msp_improv_replica_through_stage_5(msp_improv, tmp_path, whisper_base_folder, monkeypatch):
    release = make_msp_improv(tmp_path / "corpus", sessions=range(1, 7))
    run_recipe(msp_improv, "--msp_improv_root", release, "--nj", "1", "--train_args", ONE_EPOCH)
    assert_folds_done(msp_improv / "exp" / "loso_session" / "crnn", 6)
    _probe_through_stage_6(msp_improv, whisper_base_folder, monkeypatch, 6)


@pytest.mark.parametrize("corpus, expected", [
    ("iemocap", "Session1 .. Session5"),
    ("msp_improv", "Evaluation.txt and Audio/"),
])
def test_missing_root_stops_at_stage_1_saying_where_to_get_it(tmp_path, corpus, expected):
    recipe = copy_recipe(tmp_path, corpus)
    result = run_recipe(recipe, check=False)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("./run.sh: error: --" + corpus + "_root PATH is required") and "licensed" in last
    assert expected in last and "[stage 0]" in result.stderr and not (recipe / "data").exists()


@pytest.mark.parametrize("corpus, wrong, expected", [
    ("iemocap", "nowhere", "nowhere: corpus root does not exist"),
    ("iemocap", ".", "no Session1..Session5 folders found"),
    ("msp_improv", ".", "no Evaluation.txt or Evalution.txt found"),
])
def test_wrong_root_stops_at_stage_1_with_one_line(tmp_path, corpus, wrong, expected):
    recipe = copy_recipe(tmp_path, corpus)
    result = run_recipe(recipe, f"--{corpus}_root", tmp_path / wrong, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "[stage 1] preparing data/all" in lines[-2] and lines[-1].startswith("sertk: error: ")
    assert expected in lines[-1] and "Traceback" not in result.stderr
    assert not (recipe / "data" / "all").exists()
