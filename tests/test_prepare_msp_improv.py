"""MSP-IMPROV preparation on a generated replica of the release layout."""
from collections import Counter

import pytest
from helpers import prepare_valid
from replicas_licensed import make_msp_improv

from sertk.audio import audio_info
from sertk.data.corpora import prepare_corpus
from sertk.data.table import read_table
from sertk.errors import AudioError, CorpusError

# two sessions, two speakers each, six clips per speaker of which O and X are dropped
N_UTTS = 16
CLASS_COUNTS = {"neutral": 4, "happiness": 4, "anger": 4, "sadness": 4}
UTT = "msp_improv_F01-MSP-IMPROV-S01A-F01-R-FF01"
PARTNER = "msp_improv_M01-MSP-IMPROV-S01A-F01-P-MF01"   # M01 talking in F01's scenario


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return make_msp_improv(tmp_path_factory.mktemp("msp"))


def prepare(root, out, **options):
    return prepare_valid("msp_improv", root, out, **options)


def append(path, text):
    path.write_text(path.read_text() + text)


def test_counts_ids_and_tables(release, tmp_path):
    out = tmp_path / "data"
    report = prepare(release, out)
    utt2emo = read_table(out / "utt2emo")
    assert len(utt2emo) == N_UTTS
    assert Counter(utt2emo.values()) == CLASS_COUNTS
    assert set(read_table(out / "utt2spk").values()) == {"msp_improv_F01", "msp_improv_M01",
                                                   "msp_improv_F02", "msp_improv_M02"}
    assert report.dropped == Counter({"O": 4, "X": 4})
    assert report.skipped == Counter()

    # sentence S01A was elicited as angry, but this clip's consensus label is neutral
    assert read_table(out / "utt2spk")[UTT] == "msp_improv_F01"
    assert read_table(out / "utt2lab_raw")[UTT] == "N" and utt2emo[UTT] == "neutral"
    assert read_table(out / "utt2target")[UTT] == "A"
    assert read_table(out / "utt2rectype")[UTT] == "R"
    assert read_table(out / "utt2gen")[UTT] == "f"
    assert read_table(out / "utt2gen")["msp_improv_M02-MSP-IMPROV-S03S-M02-T-MF01"] == "m"
    assert read_table(out / "utt2sess")["msp_improv_M02-MSP-IMPROV-S03S-M02-T-MF01"] == "session2"
    assert read_table(out / "utt2actor")[UTT] == "F01"
    # the speaker is who talks (the turn's first letter), not the actor the scenario was written for
    assert read_table(out / "utt2spk")[PARTNER] == "msp_improv_M01" and read_table(out / "utt2gen")[PARTNER] == "m"
    assert read_table(out / "utt2actor")[PARTNER] == "F01" and read_table(out / "utt2sess")[PARTNER] == "session1"
    assert read_table(out / "utt2emo")[PARTNER] == "anger"
    assert Counter(read_table(out / "utt2spk").values()) == {s: 4 for s in ("msp_improv_F01", "msp_improv_M01",
                                                                           "msp_improv_F02", "msp_improv_M02")}
    assert set(read_table(out / "utt2rectype").values()) == set("PRST")
    wav = read_table(out / "wav.scp")[UTT]
    assert wav.endswith("Audio/session1/S01A/R/MSP-IMPROV-S01A-F01-R-FF01.wav")
    assert audio_info(wav).sample_rate == 44100


def test_audio_folder_in_root_and_misspelt_evaluation(tmp_path):
    root = make_msp_improv(tmp_path / "rel", audio_subdir=False, evaluation_name="Evalution.txt")
    out = tmp_path / "data"
    prepare(root, out)
    assert len(read_table(out / "utt2emo")) == N_UTTS
    assert read_table(out / "wav.scp")[UTT].endswith("rel/session1/S01A/R/MSP-IMPROV-S01A-F01-R-FF01.wav")


def test_a_byte_order_mark_and_a_cut_evaluation_txt_lose_nothing_unsaid(tmp_path):
    root = make_msp_improv(tmp_path / "rel")
    evaluation = root / "Evaluation.txt"
    text = evaluation.read_text()
    evaluation.write_text("\ufeff" + text, encoding="utf-8")       # saved by an editor with a BOM
    assert len(prepare(root, tmp_path / "bom").datadir.utts) == N_UTTS   # its first clip line was passed over
    clip_lines = [i for i, line in enumerate(text.splitlines()) if line.startswith("UTD-IMPROV-")]
    evaluation.write_text("\n".join(text.splitlines()[:clip_lines[len(clip_lines) // 2]]) + "\n")   # cut in half
    report = prepare(root, tmp_path / "cut")
    unlabelled = len(clip_lines) - len(clip_lines) // 2           # one audio file per clip line in the replica
    assert report.skipped == Counter({"audio file with no label line in Evaluation.txt": unlabelled})


def test_duplicate_line_with_same_label_is_used_once(tmp_path):
    root = make_msp_improv(tmp_path / "rel", sessions=(1,))
    append(root / "Evaluation.txt", "UTD-IMPROV-S01A-F01-R-FF01.avi;N;A:2.0; V:3.0; D:3.0 ; N:5.0;\n")
    report = prepare(root, tmp_path / "data")
    assert len(report.datadir.utts) == 8
    assert report.skipped == Counter({"duplicate line in Evaluation.txt": 1})


def test_duplicate_line_with_other_label_is_an_error(tmp_path):
    root = make_msp_improv(tmp_path / "rel", sessions=(1,))
    n_lines = len((root / "Evaluation.txt").read_text().splitlines())
    append(root / "Evaluation.txt", "UTD-IMPROV-S01A-F01-R-FF01.avi; H; A:2.0; V:3.0; D:3.0 ; N:5.0;\n")
    # the clip's first line is the second clip block: 1 clip line + 2 evaluator lines + blank
    with pytest.raises(CorpusError, match=rf"Evaluation\.txt:{n_lines + 1}: clip UTD-IMPROV-S01A-F01-R-FF01 "
                                          r"is labelled 'H' here but 'N' on line 5"):
        prepare_corpus("msp_improv", root, tmp_path / "data")


def test_malformed_clip_line_names_file_and_line(tmp_path):
    root = make_msp_improv(tmp_path / "rel", sessions=(1,))
    n_lines = len((root / "Evaluation.txt").read_text().splitlines())
    append(root / "Evaluation.txt", "UTD-IMPROV-S01A-F01.avi; A; A:3.0;\n")
    with pytest.raises(CorpusError, match=rf"Evaluation\.txt:{n_lines + 1}: clip line does not parse"):
        prepare_corpus("msp_improv", root, tmp_path / "data")


def test_a_clip_name_without_a_turn_is_an_error(tmp_path):
    root = make_msp_improv(tmp_path / "rel", sessions=(1,))
    append(root / "Evaluation.txt", "UTD-IMPROV-S01A-F01-R-01.avi; A; A:3.0;\n")
    with pytest.raises(CorpusError, match=r"clip line does not parse .* the last name field a turn such as FM01"):
        prepare_corpus("msp_improv", root, tmp_path / "data")


def test_missing_label_field_is_an_error(tmp_path):
    root = make_msp_improv(tmp_path / "rel", sessions=(1,))
    append(root / "Evaluation.txt", "UTD-IMPROV-S06N-F01-P-FM01.avi\n")
    with pytest.raises(CorpusError, match="clip line does not parse"):
        prepare_corpus("msp_improv", root, tmp_path / "data")


def test_missing_audio(tmp_path):
    root = make_msp_improv(tmp_path / "rel", sessions=(1,))
    (root / "Audio/session1/S02H/S/MSP-IMPROV-S02H-M01-S-MF01.wav").unlink()
    with pytest.raises(AudioError, match="MSP-IMPROV-S02H-M01-S-MF01.wav"):
        prepare_corpus("msp_improv", root, tmp_path / "data")
    report = prepare(root, tmp_path / "data", skip_bad_audio=True)
    assert report.skipped == Counter({"missing or unreadable audio": 1})
    assert len(report.datadir.utts) == 7


def test_wrong_root(tmp_path):
    (tmp_path / "somewhere").mkdir()
    with pytest.raises(CorpusError, match=r"no Evaluation.txt or Evalution.txt found"):
        prepare_corpus("msp_improv", tmp_path / "somewhere", tmp_path / "data")


def test_no_audio_folders(tmp_path):
    root = make_msp_improv(tmp_path / "rel", sessions=(1,))
    (root / "Audio").rename(root / "audio_elsewhere")
    with pytest.raises(CorpusError, match="no session1..session6 audio folders"):
        prepare_corpus("msp_improv", root, tmp_path / "data")


def test_failure_leaves_output_unchanged(tmp_path):
    root = make_msp_improv(tmp_path / "rel", sessions=(1,))
    out = tmp_path / "data"
    out.mkdir()
    (out / "marker").write_text("previous run\n")
    append(root / "Evaluation.txt", "UTD-IMPROV-S01A-F01-R-FF01.avi; S; A:2.0;\n")
    with pytest.raises(CorpusError):
        prepare_corpus("msp_improv", root, out)
    assert [p.name for p in out.iterdir()] == ["marker"]
    assert (out / "marker").read_text() == "previous run\n"
