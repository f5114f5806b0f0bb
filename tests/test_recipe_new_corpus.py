"""A new corpus needs only a CSV and a thin run.sh (egs/README.md, 'Adding a corpus'); here a TESS-sized one
(2 speakers), which only loso_dev_share can test speaker-independently."""
from recipes import assert_folds_done, copy_recipe, run_recipe, tiny_args
from replicas import write_wav

RUN_SH = """#!/usr/bin/env bash
cd "$(dirname "$0")"
corpus=mycorpus
protocol=loso_dev_share
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
    for spk in ("ann", "bob"):
        for i, label in enumerate(["calm", "angry"] * 3):
            write_wav(audio / "wav" / f"{spk}_{i}.wav")
            rows.append(f"wav/{spk}_{i}.wav,{label},{spk}")
    (audio / "list.csv").write_text("\n".join(rows) + "\n")
    run_recipe(recipe, "--mycorpus_root", audio / "list.csv", "--nj", "1",
               "--train_args", tiny_args(1))
    exp = recipe / "exp" / "loso_dev_share" / "crnn"
    assert_folds_done(exp, 2)          # trained on one speaker (dev: a share of its files), tested on the other
    card = (recipe / "data" / "loso_dev_share" / "protocol.yaml").read_text()
    assert "dev_from_training_speakers: true" in card
    assert "corpus: `mycorpus`" in (exp / "RESULTS.md").read_text()
    assert (recipe / "data" / "all" / "labels.yaml").read_text().count("calm") >= 1
    result = run_recipe(tmp_path / "egs" / "mycorpus", "--stage", "1", "--stop_stage", "1", check=False)
    assert result.returncode == 0 and "already made" in result.stderr
    # the CSV edited after stage 1 (a label changed): refused, not ignored
    again = ("--mycorpus_root", audio / "list.csv", "--stage", "1", "--stop_stage", "1")
    assert "already made" in run_recipe(recipe, *again).stderr
    listing = (audio / "list.csv").read_text()
    (audio / "list.csv").write_text(listing.replace("wav/ann_0.wav,calm", "wav/ann_0.wav,angry"))
    result = run_recipe(recipe, *again, check=False)
    assert result.returncode == 1 and result.stderr.splitlines()[-1].startswith(
        "./run.sh: error: data/all was imported from ") and "(another or an edited CSV)" in result.stderr
