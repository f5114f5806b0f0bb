"""Metrics on hand-computed cases, confusion text and pictures, scoring decode dirs and plain files."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from sertk.cli import SertkGroup
from sertk.data.datadir import DataDir
from sertk.decode import VOTING_RULES
from sertk.errors import ScoreError
from sertk.score import confusion, confusion_text, metrics, score_decode_dir, score_files
from sertk.score_picture import confusion_image, save_confusion_png
from sertk.score_cli import results, score
from helpers import write_utt_segments

# how the `sertk` group would carry these commands: SertkError -> one-line error
cli = SertkGroup(commands={"score": score, "results": results})


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# --- metrics ------------------------------------------------------------------------------------


def test_imbalanced_classes_make_wa_and_ua_differ():
    ref = [0] * 8 + [1] * 2
    hyp = [0] * 8 + [0, 1]
    m = metrics(ref, hyp, ["a", "b"])
    assert m["num_utts"] == 10
    assert m["wa"] == pytest.approx(0.9)
    assert m["ua"] == pytest.approx((1.0 + 0.5) / 2)
    a, b = m["per_class"]["a"], m["per_class"]["b"]
    assert (a["precision"], a["recall"], a["support"]) == (pytest.approx(8 / 9), 1.0, 8)
    assert (b["precision"], b["recall"], b["support"]) == (1.0, 0.5, 2)
    assert a["f1"] == pytest.approx(16 / 17) and b["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((16 / 17 + 2 / 3) / 2)
    assert m["confusion"] == [[8, 0], [1, 1]] and m["notes"] == []


def test_class_never_predicted_has_precision_zero_and_a_note():
    m = metrics([0, 0, 1, 1], [0, 0, 0, 0], ["a", "b"])
    b = m["per_class"]["b"]
    assert (b["precision"], b["recall"], b["f1"], b["predicted"]) == (0.0, 0.0, 0.0, 0)
    assert m["ua"] == 0.5 and m["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert not any(np.isnan(v) for v in (m["wa"], m["ua"], m["macro_f1"]))
    assert m["notes"] == ["class 'b' is never predicted: its precision is set to 0"]


def test_class_absent_from_reference_is_null_and_left_out_of_ua():
    m = metrics([0, 0, 1, 1], [0, 2, 1, 1], ["a", "b", "c"])
    c = m["per_class"]["c"]
    assert (c["recall"], c["f1"], c["support"], c["predicted"], c["precision"]) == (None, None, 0, 1, 0.0)
    assert m["ua"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert m["wa"] == pytest.approx(0.75)
    assert "class 'c' is absent from the reference" in m["notes"][0]
    json.dumps(m)  # nulls, not NaN, so the JSON is valid


def test_confusion_rows_are_reference_columns_hypothesis():
    cm = confusion([0, 0, 1], [1, 1, 1], 2)
    assert cm.tolist() == [[0, 2], [0, 1]]
    lines = confusion_text(cm, ["anger", "sadness"]).splitlines()
    assert lines[0].split() == ["ref", "\\", "hyp", "anger", "sadness"]
    assert lines[1].split() == ["anger", "0", "2"] and lines[2].split() == ["sadness", "0", "1"]
    assert len({len(line) for line in lines}) == 1  # aligned


def test_metrics_refuse_nothing_and_bad_indices():
    with pytest.raises(ScoreError, match="nothing to score"):
        metrics([], [], ["a"])
    with pytest.raises(ValueError, match="same length"):
        metrics([0, 1], [0], ["a", "b"])
    with pytest.raises(ValueError, match="indices"):
        metrics([0, 2], [0, 1], ["a", "b"])


# --- pictures -----------------------------------------------------------------------------------

EMO = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]


def test_confusion_png_is_a_valid_image_of_plausible_size(tmp_path):
    cm = np.arange(49).reshape(7, 7) * 3
    path = tmp_path / "scoring" / "confusion.png"
    save_confusion_png(cm, EMO, path, title="fold1 (mean)")
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "RGB"
        assert 7 * 30 < img.width < 2000 and 7 * 30 < img.height < 2000
        pixels = np.asarray(img)
    np.testing.assert_array_equal(pixels, confusion_image(cm, EMO, title="fold1 (mean)"))
    assert [p.name for p in path.parent.iterdir()] == ["confusion.png"]  # no temp files left


def test_confusion_image_is_hwc_uint8_and_shades_by_row():
    img = confusion_image([[9, 1], [0, 0]], ["a", "b"])
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 3  # shading and text, not a blank picture


# --- decode dir against data dir ----------------------------------------------------------------


def peaked(k: int, num: int = 7, p: float = 0.7):
    row = np.full(num, (1 - p) / (num - 1))
    row[k] = p
    return row


def decode_emodb(emodb_dir, out, drop=(), extra=()):
    """A decode dir for emodb_dir: two segments per utterance; every 4th utterance is wrong
    (class + 1), and its second segment alone is right."""
    dd = DataDir.load(emodb_dir, audio="none")
    segs = {}
    for i, utt in enumerate(dd.utts):
        true = dd.labels.index(dd.utt2emo[utt])
        hyp = (true + 1) % 7 if i % 4 == 0 else true
        segs[utt] = [peaked(hyp, p=0.9), peaked(hyp if hyp == true else true, p=0.4)]
    for utt in drop:
        del segs[utt]
    for utt in extra:
        segs[utt] = [peaked(0)]
    return write_utt_segments(out, segs, list(dd.labels.classes), {"data_dir": str(emodb_dir)}), dd


def test_score_decode_dir_every_rule_and_segments(emodb_dir, tmp_path):
    out, dd = decode_emodb(emodb_dir, tmp_path / "decode_test")
    assert len(dd.utts) == 28
    result = score_decode_dir(out, emodb_dir)
    assert list(result["utterance"]) == list(VOTING_RULES) and result["default_rule"] == "mean"
    for rule in VOTING_RULES:  # 7 of 28 utterances wrong under every rule
        assert result["utterance"][rule]["wa"] == pytest.approx(21 / 28), rule
        assert result["utterance"][rule]["num_utts"] == 28
    seg = result["segment"]  # 56 segments: the 7 wrong utterances have one right segment each
    assert seg["num_utts"] == 56 and seg["wa"] == pytest.approx(49 / 56)
    scoring = out / "scoring"
    assert json.loads((scoring / "metrics.json").read_text())["utterance"]["mean"]["wa"] == pytest.approx(0.75)
    assert (scoring / "confusion.txt").read_text() == confusion_text(result["utterance"]["mean"]["confusion"], EMO)
    with Image.open(scoring / "confusion.png") as img:
        assert img.format == "PNG"


def test_decode_dir_missing_utterances_is_an_error(emodb_dir, tmp_path):
    dd = DataDir.load(emodb_dir, audio="none")
    out, _ = decode_emodb(emodb_dir, tmp_path / "d", drop=dd.utts[:2])
    with pytest.raises(ScoreError, match=f"2 utterance\\(s\\) of {emodb_dir} are missing, e.g. '{dd.utts[0]}'"):
        score_decode_dir(out, emodb_dir)
    assert not (out / "scoring").exists()


def test_decode_dir_extra_utterances_is_an_error(emodb_dir, tmp_path, user_error):
    out, _ = decode_emodb(emodb_dir, tmp_path / "d", extra=["zz-stray"])
    with pytest.raises(ScoreError, match="1 utterance\\(s\\) are not in .*, e.g. 'zz-stray'"):
        score_decode_dir(out, emodb_dir)
    msg = user_error(run("score", out, "--data", emodb_dir))
    assert "'zz-stray'" in msg


def test_unknown_hyp_class_is_an_error(emodb_dir, tmp_path):
    out, _ = decode_emodb(emodb_dir, tmp_path / "d")
    hyp = out / "votes" / "max" / "hyp"
    hyp.write_text(hyp.read_text().replace(" anger\n", " rage\n", 1))
    with pytest.raises(ScoreError, match=r"votes/max/hyp: '.*' has class 'rage', which is not one of"):
        score_decode_dir(out, emodb_dir)


def test_decode_classes_must_match_the_data_dir(emodb_dir, tmp_path):
    out, _ = decode_emodb(emodb_dir, tmp_path / "d")
    (out / "classes").write_text("\n".join(EMO[:6] + ["calm"]) + "\n")
    with pytest.raises(ScoreError, match="differ from those of"):
        score_decode_dir(out, emodb_dir)


def test_cli_scores_a_decode_dir(emodb_dir, tmp_path):
    out, _ = decode_emodb(emodb_dir, tmp_path / "d")
    result = run("score", out, "--data", emodb_dir)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.split()[:3] == ["utterance", "mean*", "75.00"] for line in lines)
    assert any(line.split()[:3] == ["segment", "-", "87.50"] for line in lines)
    assert "ref \\ hyp" in result.output and "scoring" in lines[-1]


def test_cli_needs_decode_dir_and_data_or_hyp_and_ref(emodb_dir):
    assert run("score").exit_code == 2
    assert run("score", emodb_dir).exit_code == 2
    assert run("score", "--hyp", emodb_dir / "utt2emo").exit_code == 2


# --- plain files --------------------------------------------------------------------------------


def test_score_plain_files(tmp_path):
    (tmp_path / "ref").write_text("u1 ang\nu2 ang\nu3 sad\nu4 neu\n")
    (tmp_path / "hyp").write_text("u1 ang\nu2 sad\nu3 sad\nu4 neu\n")
    m = score_files(tmp_path / "hyp", tmp_path / "ref")
    assert m["classes"] == ["ang", "neu", "sad"]  # seen classes, sorted
    assert m["wa"] == 0.75 and m["ua"] == pytest.approx((0.5 + 1 + 1) / 3)
    result = run("score", "--hyp", tmp_path / "hyp", "--ref", tmp_path / "ref")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("WA 75.00  UA 83.33")


def test_score_plain_files_with_a_label_map(emodb_dir, tmp_path, user_error):
    ref = emodb_dir / "utt2emo"
    m = score_files(ref, ref, emodb_dir / "labels.yaml")
    assert m["classes"] == EMO and m["wa"] == 1.0
    (tmp_path / "hyp").write_text(ref.read_text().replace("anger", "rage", 1))
    msg = user_error(run("score", "--hyp", tmp_path / "hyp", "--ref", ref, "--labels", emodb_dir / "labels.yaml"))
    assert msg.startswith(f"{tmp_path / 'hyp'}: ") and "has class 'rage'" in msg
    (tmp_path / "short").write_text("".join(ref.read_text().splitlines(keepends=True)[1:]))
    msg = user_error(run("score", "--hyp", tmp_path / "short", "--ref", ref))
    assert "1 utterance(s) of" in msg and "are missing" in msg


@pytest.mark.parametrize("ref_args", [("--ref", "ref"), ("--data", "data")])
def test_a_hyp_line_with_a_third_field_is_an_error_not_a_class(emodb_dir, tmp_path, user_error, ref_args):
    """`u1 anger 0.91` (a score column) must not become the class 'anger 0.91' and score WA 0."""
    (tmp_path / "ref").write_bytes((emodb_dir / "utt2emo").read_bytes())
    lines = (emodb_dir / "utt2emo").read_text().splitlines(keepends=True)
    (tmp_path / "hyp").write_text(lines[0] + lines[1].rstrip("\n") + " 0.91\n" + "".join(lines[2:]))
    option, name = ref_args
    msg = user_error(run("score", "--hyp", tmp_path / "hyp", option, tmp_path / name if name == "ref" else emodb_dir))
    assert msg.startswith(f"{tmp_path / 'hyp'}:2: expected two fields"), msg
    assert msg.endswith(f"got 3: '{lines[1].strip()} 0.91'"), msg


def test_a_hyp_class_outside_the_known_classes_is_an_error(emodb_dir, tmp_path, user_error):
    (tmp_path / "ref").write_text("u1 anger\nu2 sadness\nu3 anger\n")
    (tmp_path / "hyp").write_text("u1 anger\nu2 banana\nu3 anger\n")
    # without --labels the known classes are the reference's
    msg = user_error(run("score", "--hyp", tmp_path / "hyp", "--ref", tmp_path / "ref"))
    assert msg.startswith(f"{tmp_path / 'hyp'}: 'u2' has class 'banana', which is not one of ['anger', 'sadness']")
    assert f"the classes of {tmp_path / 'ref'}; give --labels" in msg
    # a class the reference lacks but the label map has is scored with --labels
    (tmp_path / "hyp").write_text("u1 anger\nu2 fear\nu3 anger\n")
    assert "'fear'" in user_error(run("score", "--hyp", tmp_path / "hyp", "--ref", tmp_path / "ref"))
    m = score_files(tmp_path / "hyp", tmp_path / "ref", emodb_dir / "labels.yaml")
    assert m["classes"] == EMO and m["per_class"]["fear"]["predicted"] == 1 and m["wa"] == pytest.approx(2 / 3)
    # against a data dir: the classes of its labels.yaml, as a decode dir is scored
    hyp = tmp_path / "hyp_dd"
    hyp.write_text((emodb_dir / "utt2emo").read_text().replace("anger", "banana", 1))
    msg = user_error(run("score", "--hyp", hyp, "--data", emodb_dir))
    assert msg.startswith(f"{hyp}: ") and "has class 'banana'" in msg
    assert msg.endswith(f"(the classes of {emodb_dir / 'labels.yaml'})"), msg


def test_score_a_hyp_file_against_a_data_dir(emodb_dir, tmp_path):
    utt2emo = (emodb_dir / "utt2emo").read_text()
    (tmp_path / "hyp").write_bytes(b"\xef\xbb\xbf" + utt2emo.replace("\n", "\r\n").encode())   # BOM, CRLF: fine
    result = run("score", "--hyp", tmp_path / "hyp", "--data", emodb_dir)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("WA 100.00  UA 100.00")
    assert result.output.splitlines()[1].split()[0] == "class" and result.output.splitlines()[2].split()[0] == EMO[0]
    # --labels belongs to --ref: the data dir has its own
    assert run("score", "--hyp", tmp_path / "hyp", "--data", emodb_dir, "--labels", emodb_dir / "labels.yaml"
               ).exit_code == 2
    assert run("score", "--hyp", tmp_path / "hyp", "--data", emodb_dir, "--ref", emodb_dir / "utt2emo").exit_code == 2
