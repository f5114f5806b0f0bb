"""egs/msp_improv on a generated replica of its release layout (tests/replicas_licensed.py)."""
import pytest

from recipes import ONE_EPOCH, assert_folds_done, copy_recipe, probe_through_stage_6, run_recipe
from replicas_licensed import make_msp_improv


@pytest.fixture
def msp_improv(tmp_path):
    return copy_recipe(tmp_path, "msp_improv")


def test_msp_improv_replica_through_stage_5(msp_improv, tmp_path, whisper_base_folder, monkeypatch):
    release = make_msp_improv(tmp_path / "corpus", sessions=range(1, 7))
    run_recipe(msp_improv, "--msp_improv_root", release, "--nj", "1", "--train_args", ONE_EPOCH)
    assert_folds_done(msp_improv / "exp" / "loso_session" / "crnn", 6)
    probe_through_stage_6(msp_improv, whisper_base_folder, monkeypatch)
