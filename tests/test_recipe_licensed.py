"""egs/iemocap and egs/msp_improv without their licensed corpus: one line that says where to get it.
The runs on generated replicas of their release layouts: test_recipe_iemocap.py, test_recipe_msp_improv.py."""
import pytest

from recipes import copy_recipe, run_recipe


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
