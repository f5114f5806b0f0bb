"""A new corpus needs only a CSV and a thin run.sh (egs/README.md, 'Adding a corpus')."""
from recipes import assert_folds_done, copy_recipe, run_recipe, tiny_args
from replicas import write_wav

RUN_SH = """#!/usr/bin/env bash
cd "$(dirname "$0")"
corpus=mycorpus
protocol=loso
mycorpus_root=
import_csv=true
corpus_source="our lab's recordings"

. ../TEMPLATE/ser.sh
"""


def test_a_csv_and_a_thin_run_sh_make_a_recipe(tmp_path):
    copy_recipe(tmp_path, "emodb")
    recipe = tmp_path / "egs" / "mycorpus"
    recipe.mkdir()
    (recipe / "run.sh").write_text(RUN_SH)
    (recipe / "run.sh").chmod(0o755)
    audio = tmp_path / "lab"
    rows = ["path,label,speaker"]
    for spk in ("ann", "bob", "cat"):
        for i, label in enumerate(["calm", "angry"] * 3):
            write_wav(audio / "wav" / f"{spk}_{i}.wav")
            rows.append(f"wav/{spk}_{i}.wav,{label},{spk}")
    (audio / "list.csv").write_text("\n".join(rows) + "\n")
    run_recipe(recipe, "--mycorpus_root", audio / "list.csv", "--nj", "1",
               "--train_args", tiny_args(1))
    exp = recipe / "exp" / "loso" / "crnn"
    assert_folds_done(exp, 3)
    assert "corpus: `mycorpus`" in (exp / "RESULTS.md").read_text()
    assert (recipe / "data" / "all" / "labels.yaml").read_text().count("calm") >= 1
    result = run_recipe(tmp_path / "egs" / "mycorpus", "--stage", "1", "--stop_stage", "1", check=False)
    assert result.returncode == 0 and "already made" in result.stderr
