"""Real EmoDB and RAVDESS from ../shared/corpora (skipped with a reason when absent)."""
import os
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from sertk.cli import main
from sertk.data.datadir import DataDir

CORPORA = Path(os.environ.get("SERTK_CORPORA", Path(__file__).resolve().parents[2] / "shared" / "corpora"))


def corpus_root(name: str) -> Path:
    root = CORPORA / name
    if not root.is_dir():
        pytest.skip(f"real corpus not available: {root} is absent (set SERTK_CORPORA to its folder)")
    return root


def sertk(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def prepare_and_check(tmp_path, corpus, protocols):
    data = tmp_path / "all"
    sertk("data", "prepare", corpus, "--root", corpus_root(corpus), "--out", data)
    assert "OK" in sertk("data", "validate", data)
    for protocol in protocols:
        sertk("data", "folds", data, "--protocol", protocol, "--out", tmp_path / protocol)
        assert "OK" in sertk("data", "check", tmp_path / protocol)
    return DataDir.load(data)


def test_emodb(tmp_path):
    dd = prepare_and_check(tmp_path, "emodb", ["loso", "random_kfold"])
    assert len(dd.utts) == 535 and len(dd.speakers) == 10
    raw = Counter(dd.tables["utt2lab_raw"].values())
    assert raw == {"W": 127, "L": 81, "E": 46, "A": 69, "F": 71, "T": 62, "N": 79}
    assert Counter(dd.tables["utt2gen"].values()) == {"f": 302, "m": 233}


def test_ravdess(tmp_path):
    # RAVDESS ships two byte-identical files of Actor_07 (repetitions 1 and 2 of happy statement 2): random_kfold
    # keeps them in one part, so `data check` (which compares decoded samples across splits) passes
    dd = prepare_and_check(tmp_path, "ravdess", ["actor6", "loso", "random_kfold"])
    check = sertk("data", "check", tmp_path / "random_kfold")
    assert "'ravdess_07-03-01-03-01-02-01-07'" in check and "'ravdess_07-03-01-03-01-02-02-07'" in check  # warned
    assert len(dd.utts) == 1440 and len(dd.speakers) == 24 and len(dd.labels.classes) == 8
    assert set(Counter(dd.utt2spk.values()).values()) == {60}
    assert Counter(dd.utt2emo.values())["neutral"] == 96
    assert Counter(dd.tables["utt2intensity"].values()) == {"normal": 768, "strong": 672}
