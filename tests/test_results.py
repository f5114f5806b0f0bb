"""`collect` over a synthetic exp tree of 3 folds: pooled vs mean +- std by hand, missing folds, RESULTS.md."""
import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from sertk.cli import SertkGroup
from sertk.data.datadir import DataDir
from sertk.data.labels import LabelMap
from sertk.data.protocols import make_folds
from sertk.envinfo import environment, environment_markdown, git_hash
from sertk.errors import ScoreError, SertkError
from sertk.results import collect, find_fold_dirs, mean_std
from sertk.score_cli import results
from helpers import write_utt_segments

LABELS = LabelMap(("a", "b"), {"A": "a", "B": "b"}, "toy")
# per speaker (= loso test fold): reference and hypothesis of each utterance
FOLDS = {
    "s1": ("abab", "abab"),      # WA 1,   UA 1,   F1 1
    "s2": ("abab", "aaaa"),      # WA 1/2, UA 1/2, F1 (2/3 + 0)/2
    "s3": ("aaaaab", "aaaaaa"),  # WA 5/6, UA 1/2, F1 (10/11 + 0)/2
}
P = {"a": [0.9, 0.1], "b": [0.1, 0.9]}


def toy_data() -> DataDir:
    tables = {n: {} for n in ("wav.scp", "utt2spk", "utt2emo")}
    for spk, (ref, _) in FOLDS.items():
        for i, cls in enumerate(ref):
            utt = f"{spk}-{i:03d}"
            tables["wav.scp"][utt], tables["utt2spk"][utt], tables["utt2emo"][utt] = f"/nowhere/{utt}.wav", spk, cls
    return DataDir(tables, LABELS)


def segments(spk: str):
    """Two segments per utterance, both for the hypothesis; in fold 1 the second segment
    leans weakly the other way, so fold 1 is half right at segment level and right by every rule."""
    _, hyp = FOLDS[spk]
    other = {"a": [0.4, 0.6], "b": [0.6, 0.4]}
    return {f"{spk}-{i:03d}": [P[h], other[h] if spk == "s1" else P[h]] for i, h in enumerate(hyp)}


@pytest.fixture
def exp_tree(tmp_path):
    return toy_exp_tree(tmp_path)


def toy_exp_tree(tmp_path: Path) -> Path:
    """protocol dir (loso over s1..s3) and exp/loso/toy/fold{1,2,3}/decode_test."""
    protocol_dir = tmp_path / "data" / "loso"
    make_folds(toy_data(), "loso", protocol_dir, corpus="toy")
    model_dir = tmp_path / "exp" / "loso" / "toy"
    for k, spk in enumerate(FOLDS, start=1):
        info = {"checkpoint": f"{model_dir}/fold{k}/best.pt", "protocol_dir": str(protocol_dir),
                "features": "fbank80", "rule": "mean"}
        write_utt_segments(model_dir / f"fold{k}" / "decode_test", segments(spk), ["a", "b"], info)
    (model_dir / "fold1" / "environment.yaml").write_text(yaml.safe_dump({"python": "3.11.9", "gpu": "H100"}))
    return model_dir


def test_pooled_and_mean_std_by_hand(exp_tree):
    res = collect(exp_tree)
    assert res["folds"] == ["fold1", "fold2", "fold3"] and res["missing_folds"] == []
    pooled = res["pooled"]["utterance/mean"]  # confusion [[9, 0], [3, 2]] over 14 utterances
    assert pooled["confusion"] == [[9, 0], [3, 2]] and pooled["num_utts"] == 14
    assert pooled["wa"] == pytest.approx(11 / 14)
    assert pooled["ua"] == pytest.approx((1 + 2 / 5) / 2)
    assert pooled["macro_f1"] == pytest.approx((6 / 7 + 4 / 7) / 2)
    stats = res["fold_mean_std"]["utterance/mean"]
    assert stats["wa"]["mean"] == pytest.approx(7 / 9)
    assert stats["wa"]["std"] == pytest.approx(math.sqrt(21) / 18)  # sample std: deviations 2/9, -5/18, 1/18
    assert stats["ua"]["mean"] == pytest.approx(2 / 3) and stats["ua"]["std"] == pytest.approx(math.sqrt(1 / 12))
    assert stats["macro_f1"]["mean"] == pytest.approx((1 + 1 / 3 + 5 / 11) / 3)
    assert stats["wa"]["num_folds"] == 3
    # every rule agrees here; segment level: 4/8 + 4/8 + 5/6 of 12 -> 18 of 28
    for rule in ("majority", "logsum", "max"):
        assert res["pooled"][f"utterance/{rule}"]["confusion"] == [[9, 0], [3, 2]]
    assert res["pooled"]["segment"]["wa"] == pytest.approx(18 / 28)
    assert res["fold_mean_std"]["segment"]["wa"]["mean"] == pytest.approx((0.5 + 0.5 + 10 / 12) / 3)
    assert [f["utterance/mean"]["wa"] for f in res["per_fold"]] == pytest.approx([1, 0.5, 5 / 6])
    assert (exp_tree / "fold2" / "decode_test" / "scoring" / "metrics.json").is_file()


def test_results_md_and_metrics_json(exp_tree):
    res = collect(exp_tree)
    md = (exp_tree / "RESULTS.md").read_text()
    sections = ["# RESULTS: toy on loso", "## Protocol card", "## Environment (scoring)", "## Environment (training",
                "## Summary", "## Per fold", "## Pooled confusion matrix"]
    positions = [md.index(s) for s in sections]
    assert positions == sorted(positions)
    for text in ("corpus: `toy`", "protocol: `loso`", "speaker-independent: yes", "classes (2): a, b",
                 "folds: 3; scored 3", "voting rule: `mean`", "features: `fbank80`", "dev set: one training speaker",
                 "python version: `", "pytorch version: `", "Git hash: `", "GPU: `H100`",
                 "| utterance | mean (default) | 78.57 | 70.00 | 71.43 | 77.78 ± 25.46 | 66.67 ± 28.87 |",
                 "| segment | - | 64.29 |", "| fold2 | s2 | 4 | 50.00 | 50.00 | 33.33 |",
                 "ref \\ hyp"):
        assert text in md, text
    saved = json.loads((exp_tree / "metrics.json").read_text())
    assert saved["pooled"]["utterance/mean"]["wa"] == pytest.approx(11 / 14)
    assert saved["fold_mean_std"] == json.loads(json.dumps(res["fold_mean_std"]))
    assert (exp_tree / "confusion.png").is_file()


def test_missing_fold_is_reported_not_silently_averaged(exp_tree, caplog):
    (exp_tree / "fold2" / "decode_test" / "post_seg").unlink()
    with caplog.at_level(logging.WARNING, logger="sertk"):
        res = collect(exp_tree)
    assert res["folds"] == ["fold1", "fold3"] and res["missing_folds"] == ["fold2"]
    assert "1 of 3 fold(s)" in caplog.text and "fold2" in caplog.text
    assert res["pooled"]["utterance/mean"]["confusion"] == [[7, 0], [1, 2]]
    assert res["fold_mean_std"]["utterance/mean"]["wa"]["num_folds"] == 2
    md = (exp_tree / "RESULTS.md").read_text()
    assert "**missing: fold2**" in md and "Missing folds not included: fold2" in md
    assert "| fold2 | s2 | missing |" in md


def test_a_fold_the_card_names_but_without_a_dir_is_missing(exp_tree):
    shutil.rmtree(exp_tree / "fold3")
    assert collect(exp_tree)["missing_folds"] == ["fold3"]


def test_no_decoded_fold_is_an_error(tmp_path):
    (tmp_path / "fold1").mkdir()
    with pytest.raises(ScoreError, match="no fold<k>/decode_test/ decode dirs"):
        collect(tmp_path)


def test_a_decode_test_of_other_data_than_the_fold_s_test_set_is_refused(exp_tree):
    """A dev set (or an edited test set) decoded into decode_test must not be scored as the test result."""
    decode_yaml = exp_tree / "fold1" / "decode_test" / "decode.yaml"
    info = yaml.safe_load(decode_yaml.read_text())
    protocol_dir = Path(info["protocol_dir"])
    decode_yaml.write_text(yaml.safe_dump({**info, "data_dir": str(protocol_dir / "fold1" / "dev")}))
    with pytest.raises(ScoreError, match=r"fold1/decode_test: decoded .*fold1/dev, which is not fold 1's test set "
                                         r"\(.*; decode the fold's test dir into it"):
        collect(exp_tree)
    decode_yaml.write_text(yaml.safe_dump({**info, "data_dir": str(protocol_dir / "fold1" / "test")}))
    assert collect(exp_tree)["folds"] == ["fold1", "fold2", "fold3"]
    utt2emo = protocol_dir / "fold1" / "test" / "utt2emo"
    utt2emo.write_text(utt2emo.read_text().replace("s1-001 b", "s1-001 a"))   # a label changed after the folds
    with pytest.raises(ScoreError, match=r"fold1/test, fold 1's test set, changed after the folds were made .*: "
                                         r"sertk data check .* says what"):
        collect(exp_tree)
    (protocol_dir / "protocol.yaml").unlink()   # no card: nothing to compare with, scored as before (warned)
    assert collect(exp_tree)["folds"] == ["fold1", "fold2", "fold3"]


def test_a_decode_test_of_a_checkpoint_the_fold_no_longer_holds_is_refused(exp_tree):
    """Trained again after its test decode: dev chose another best.pt, and the old decode is not its result."""
    import hashlib
    fold = exp_tree / "fold1"
    (fold / "best.pt").write_bytes(b"weights of the run that was decoded")
    decode_yaml = fold / "decode_test" / "decode.yaml"
    info = yaml.safe_load(decode_yaml.read_text())
    digest = hashlib.sha256(b"weights of the run that was decoded").hexdigest()
    decode_yaml.write_text(yaml.safe_dump({**info, "checkpoint": "best.pt", "checkpoint_sha256": digest,
                                           "checkpoint_epoch": 3}))
    assert collect(exp_tree)["folds"] == ["fold1", "fold2", "fold3"]
    (fold / "best.pt").write_bytes(b"weights of a later training")
    with pytest.raises(ScoreError, match=r"fold1/decode_test: decoded with checkpoint [0-9a-f]{12} \(epoch 3\), but "
                                         r".*fold1/best.pt is another now"):
        collect(exp_tree)
    (fold / "best.pt").unlink()   # a kept record: no checkpoints, taken as kept
    assert collect(exp_tree)["folds"] == ["fold1", "fold2", "fold3"]


def test_a_fold_decoded_before_its_training_finished_makes_the_result_partial(exp_tree):
    from sertk.results_md import card_markdown, summary_markdown
    result = collect(exp_tree)
    assert "partial" not in summary_markdown(result).lower() and "partial" not in card_markdown(result).lower()
    result["per_fold"][1]["dev"] = {"metric": "ua", "score": 0.5, "best_epoch": 2, "epochs_run": 2, "finished": False}
    assert "**Partial: fold2 had not finished training when decoded; not a final result.**" in summary_markdown(result)
    assert "**partial: fold2 not finished training**" in card_markdown(result)


def test_folds_trained_with_different_configs_are_said_to_be(exp_tree, caplog):
    """One pooled number from folds trained otherwise (a patience raised on one) is a mixture: say so."""
    for k, patience in ((1, 10), (2, 10), (3, 20)):
        (exp_tree / f"fold{k}" / "config.yaml").write_text(yaml.safe_dump(
            {"model": {"name": "toy"}, "train": {"patience": patience, "refit_epochs": k}}))
    with caplog.at_level(logging.WARNING, logger="sertk"):
        result = collect(exp_tree)
    assert result["config_differences"] == {"train.patience": {"fold1": 10, "fold2": 10, "fold3": 20}}
    assert "trained with different configs (train.patience)" in caplog.text
    assert ("- **the folds were trained with different configs** (beside any grid's choices): `train.patience` "
            "fold1 10, fold2 10, fold3 20") in (exp_tree / "RESULTS.md").read_text()


def test_decode_yaml_must_say_what_to_score_against(tmp_path):
    write_utt_segments(tmp_path / "fold1" / "decode_test", {"u": [P["a"]]}, ["a", "b"], {})
    with pytest.raises(ScoreError, match="names neither 'data_dir' nor 'protocol_dir'"):
        collect(tmp_path)


def test_folds_sort_numerically(tmp_path):
    for name in ("fold10", "fold2", "fold1", "folded", "fold9"):
        (tmp_path / name).mkdir()
    assert list(find_fold_dirs(tmp_path)) == [1, 2, 9, 10]
    (tmp_path / "fold01").mkdir()                          # fold 1 twice: one would be ignored
    with pytest.raises(SertkError, match=r"fold01 and fold1 are both fold 1; keep one"):
        find_fold_dirs(tmp_path)


def test_a_test_utterance_scored_in_two_folds_is_refused(exp_tree):
    """fold2's decode_test made from fold1's test set, by hand without --protocol-dir: pooled twice before."""
    shutil.rmtree(exp_tree / "fold2" / "decode_test")
    shutil.copytree(exp_tree / "fold1" / "decode_test", exp_tree / "fold2" / "decode_test")
    decode_yaml = exp_tree / "fold2" / "decode_test" / "decode.yaml"
    info = yaml.safe_load(decode_yaml.read_text())
    protocol_dir = info.pop("protocol_dir")
    decode_yaml.write_text(yaml.safe_dump({**info, "data_dir": f"{protocol_dir}/fold1/test"}))
    with pytest.raises(ScoreError, match=r"fold2/decode_test: utterance s1-000 is scored in fold1 too"):
        collect(exp_tree)


def test_mean_std_uses_sample_std_and_none_for_one_fold():
    assert mean_std([0.5, 1.0])["std"] == pytest.approx(np.std([0.5, 1.0], ddof=1))
    assert mean_std([0.7]) == {"mean": 0.7, "std": None, "num_folds": 1}


def test_cli_collect_prints_the_summary(exp_tree):
    result = CliRunner().invoke(SertkGroup(commands={"results": results}), ["results", "collect", str(exp_tree)])
    assert result.exit_code == 0, result.output
    assert "| utterance | mean (default) | 78.57 |" in result.output and "RESULTS.md" in result.output


def _png(path: Path, **save) -> bytes:
    """A small PNG drawn by Pillow (`save`: its PNG options, e.g. dpi), as a user's picture or an older
    collect's confusion.png (Pillow's plain PNG, no text)."""
    from PIL import Image
    Image.new("RGB", (8, 8), "red").save(path, format="PNG", **save)
    return path.read_bytes()


def test_collect_refuses_a_file_it_did_not_write_and_writes_nothing(exp_tree, sertk_cli, user_error):
    collect(exp_tree)
    ours = {name: (exp_tree / name).read_bytes() for name in ("RESULTS.md", "metrics.json", "confusion.png")}
    theirs = {"RESULTS.md": b"# My results\n\nnotes from the lab meeting\n",
              "metrics.json": b'{"ua": 0.61, "note": "by hand"}\n',
              "confusion.png": _png(exp_tree / "photo.png", dpi=(72, 72))}
    for name, text in theirs.items():
        shutil.rmtree(exp_tree / "fold1" / "decode_test" / "scoring", ignore_errors=True)
        for own, data in ours.items():
            (exp_tree / own).write_bytes(data)
        (exp_tree / name).write_bytes(text)
        message = user_error(sertk_cli("results", "collect", exp_tree))
        verb = "drawn" if name.endswith(".png") else "written"
        assert message == (f"{exp_tree / name}: exists and is not a {name} {verb} by sertk results collect; "
                           "refusing to replace it (move it away, then collect again)")
        assert (exp_tree / name).read_bytes() == text
        assert all((exp_tree / own).read_bytes() == data for own, data in ours.items() if own != name)
        assert not (exp_tree / "fold1" / "decode_test" / "scoring").exists()   # refused before any scoring
    # a plain Pillow PNG is an older collect's picture only beside collect's own metrics.json
    plain = _png(exp_tree / "confusion.png")
    (exp_tree / "RESULTS.md").unlink()
    (exp_tree / "metrics.json").unlink()
    assert "confusion.png: exists and is not a confusion.png" in user_error(sertk_cli("results", "collect", exp_tree))
    assert (exp_tree / "confusion.png").read_bytes() == plain


def test_collect_replaces_what_it_wrote_before_and_what_older_sertk_wrote(exp_tree, sertk_cli):
    from sertk.fsutil import png_software
    assert sertk_cli("results", "collect", exp_tree).exit_code == 0
    assert png_software(exp_tree / "confusion.png") == "sertk results collect"
    again = sertk_cli("results", "collect", exp_tree)     # recipes run stage 5 again and again
    assert again.exit_code == 0, again.output
    # as sertk wrote them before confusion.png said what drew it: a plain Pillow PNG
    _png(exp_tree / "confusion.png")
    assert png_software(exp_tree / "confusion.png") is None
    (exp_tree / "RESULTS.md").write_text("# RESULTS: toy on loso\n\n## Protocol card\n\n## Summary\n")
    legacy = sertk_cli("results", "collect", exp_tree)
    assert legacy.exit_code == 0, legacy.output
    assert png_software(exp_tree / "confusion.png") == "sertk results collect"
    assert "## Per fold" in (exp_tree / "RESULTS.md").read_text()


def test_environment_record():
    env = environment()
    assert env["python"].count(".") == 2 and env["sertk"] and env["numpy"] == np.__version__
    assert set(env) >= {"date", "platform", "cpu", "gpu", "torch", "librosa", "git_hash", "command"}
    assert env["git_hash"] is None or len(env["git_hash"]) == 40
    assert git_hash() == env["git_hash"]
    md = environment_markdown({"python": "3.11", "gpu": None, "extra": 1}, "Environment")
    assert md == "## Environment\n\n- python version: `3.11`\n- GPU: `none`\n- extra: `1`\n"


def test_relative_paths_in_decode_yaml_and_a_single_fold(tmp_path):
    """Recipes write paths relative to egs/<corpus>/; protocol_dir may also name protocol.yaml itself."""
    make_folds(toy_data(), "loso", tmp_path / "data" / "loso", corpus="toy")
    model_dir = tmp_path / "exp" / "loso" / "toy"
    info = {"data_dir": "data/loso/fold2/test", "protocol_dir": "data/loso/protocol.yaml"}
    write_utt_segments(model_dir / "fold2" / "decode_test", segments("s2"), ["a", "b"], info)
    res = collect(model_dir)
    assert res["folds"] == ["fold2"] and res["missing_folds"] == ["fold1", "fold3"]
    assert res["card"]["corpus"] == "toy"
    assert res["fold_mean_std"]["utterance/mean"]["wa"] == {"mean": 0.5, "std": None, "num_folds": 1}
    assert "| utterance | mean (default) | 50.00 | 50.00 | 33.33 | 50.00 | 50.00 | 33.33 | 4 |" in \
        (model_dir / "RESULTS.md").read_text()
