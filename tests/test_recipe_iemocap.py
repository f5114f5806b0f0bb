"""egs/iemocap on a generated replica of its release layout (tests/replicas_licensed.py)."""
import pytest
import yaml

from recipes import ONE_EPOCH, assert_folds_done, copy_recipe, probe_through_stage_6, run_recipe
from replicas_licensed import make_iemocap


@pytest.fixture
def iemocap(tmp_path):
    return copy_recipe(tmp_path, "iemocap")


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
    probe_through_stage_6(iemocap, whisper_base_folder, monkeypatch)


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
