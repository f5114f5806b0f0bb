"""IEMOCAP preparation on a generated replica of the release layout."""
import logging
from collections import Counter

import pytest
import yaml
from helpers import prepare_valid
from replicas_licensed import iemocap_utt, make_iemocap

from sertk.data.corpora import iemocap, prepare_corpus
from sertk.data.table import read_table
from sertk.errors import AudioError, CorpusError

# per session: 12 labelled utterances, 9 in the 4-class set (xxx and fru are dropped)
N_UTTS = 45
CLASS_COUNTS = {"neutral": 10, "happiness": 15, "anger": 10, "sadness": 10}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return make_iemocap(tmp_path_factory.mktemp("iemocap"))


def prepare(root, out, **options):
    return prepare_valid("iemocap", root, out, **options)


def test_counts_ids_and_tables(release, tmp_path):
    out = tmp_path / "data"
    report = prepare(release, out)
    utt2emo = read_table(out / "utt2emo")
    assert len(utt2emo) == N_UTTS
    assert Counter(utt2emo.values()) == CLASS_COUNTS
    speakers = {f"iemocap_Ses0{n}{g}" for n in range(1, 6) for g in "FM"}
    assert set(read_table(out / "utt2spk").values()) == speakers
    assert report.dropped == Counter({"fru": 10, "xxx": 5})
    assert report.skipped == Counter({"macOS ._ file": 10})  # one per dialog

    # the speaker is the last field's letter, not the marker-wearer after Ses01
    male = "iemocap_Ses01M-Ses01F_impro01_M003"
    female = "iemocap_Ses01F-Ses01M_script01_1_F001"
    assert iemocap_utt("Ses01F_impro01_M003") == male
    assert read_table(out / "utt2spk")[male] == "iemocap_Ses01M"
    assert read_table(out / "utt2spk")[female] == "iemocap_Ses01F"
    assert read_table(out / "utt2gen")[male] == "m" and read_table(out / "utt2gen")[female] == "f"
    assert read_table(out / "utt2sess")[male] == "Ses01"
    assert read_table(out / "utt2sess")[iemocap_utt("Ses05M_script01_1_M000")] == "Ses05"
    assert read_table(out / "utt2lab_raw")[male] == "hap"
    assert read_table(out / "utt2lab_raw")[female] == "exc" and utt2emo[female] == "happiness"
    assert read_table(out / "wav.scp")[male].endswith("Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_M003.wav")
    # gender agrees with the speaker id everywhere
    gen, spk = read_table(out / "utt2gen"), read_table(out / "utt2spk")
    assert all(gen[u] == spk[u][-1].lower() for u in spk)


def test_parent_of_release_is_accepted(release, tmp_path):
    report = prepare(release.parent, tmp_path / "data")
    assert len(report.datadir.utts) == N_UTTS


def test_improvised_only(release, tmp_path):
    out = tmp_path / "data"
    report = prepare(release, out, improvised_only=True)
    utts = read_table(out / "wav.scp")
    assert len(utts) == 25
    assert all("_impro" in u for u in utts)
    assert report.skipped["scripted dialog (improvised_only)"] == 25


def test_drop_exc(release, tmp_path):
    out = tmp_path / "data"
    report = prepare(release, out, drop_exc=True)
    assert "exc" not in read_table(out / "utt2lab_raw").values()
    assert len(read_table(out / "utt2emo")) == N_UTTS - 10
    assert report.dropped["exc"] == 10
    saved = yaml.safe_load((out / "labels.yaml").read_text())
    assert saved["map"]["exc"] == "drop" and saved["map"]["hap"] == "happiness"


def test_count_warning_on_complete_release(release, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="sertk.data.corpora.iemocap"):
        prepare(release, tmp_path / "data")
    info = [r for r in caplog.records if r.levelno == logging.INFO]
    assert any("neu 10, hap+exc 15, ang 10, sad 10 (total 45)" in r.getMessage() for r in info)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "total 45" in warnings[0] and "neu 1708, hap+exc 1636, ang 1103, sad 1084 (total 5531)" in warnings[0]


def test_no_count_warning_when_counts_match(release, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(iemocap, "PUBLISHED_COUNTS", {"neu": 10, "hap+exc": 15, "ang": 10, "sad": 10})
    with caplog.at_level(logging.INFO, logger="sertk.data.corpora.iemocap"):
        prepare(release, tmp_path / "data")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("options", [{"improvised_only": True}, {"drop_exc": True}])
def test_no_count_warning_for_a_subset(release, tmp_path, caplog, options):
    with caplog.at_level(logging.INFO, logger="sertk.data.corpora.iemocap"):
        prepare(release, tmp_path / "data", **options)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_missing_sessions_are_warned_of_not_the_counts(tmp_path, caplog):
    release = make_iemocap(tmp_path / "rel", sessions=(1, 2))
    with caplog.at_level(logging.INFO, logger="sertk.data.corpora.iemocap"):
        report = prepare(release, tmp_path / "data")
    assert len(report.datadir.utts) == 18
    assert any("total 18" in r.getMessage() for r in caplog.records)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"{release} lacks Session3, Session4, Session5: 2 of the 5 sessions prepared; loso_session "
                        "on them is not the full corpus's 5-fold protocol"]


def test_missing_audio(tmp_path, caplog):
    release = make_iemocap(tmp_path / "rel")
    wav = release / "Session2/sentences/wav/Ses02F_impro01/Ses02F_impro01_M001.wav"
    wav.unlink()
    with pytest.raises(AudioError, match="Ses02F_impro01_M001.wav"):
        prepare_corpus("iemocap", release, tmp_path / "data")
    assert not (tmp_path / "data").exists()
    with caplog.at_level(logging.INFO, logger="sertk.data.corpora.iemocap"):
        report = prepare(release, tmp_path / "data", skip_bad_audio=True)
    assert report.skipped["missing or unreadable audio"] == 1
    assert len(report.datadir.utts) == N_UTTS - 1
    # an incomplete set of audio says nothing about the release's counts
    assert not [r for r in caplog.records if r.name.endswith("iemocap") and r.levelno >= logging.WARNING]


def test_malformed_summary_line_names_file_and_line(tmp_path):
    release = make_iemocap(tmp_path / "rel", sessions=(1,))
    path = release / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    lines = path.read_text().splitlines(keepends=True)
    target = next(i for i, line in enumerate(lines) if "_M001\t" in line)
    lines[target] = "[12.5 - ]\tSes01F_impro01_M001\tsad\n"
    path.write_text("".join(lines))
    with pytest.raises(CorpusError, match=rf"Ses01F_impro01\.txt:{target + 1}: summary line does not parse"):
        prepare_corpus("iemocap", release, tmp_path / "data")


def test_utterance_of_another_dialog_is_an_error(tmp_path):
    release = make_iemocap(tmp_path / "rel", sessions=(1,))
    path = release / "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"
    path.write_text(path.read_text().replace("Ses01F_impro01_F000", "Ses02F_impro01_F000"))
    with pytest.raises(CorpusError, match=r"Ses01F_impro01\.txt:3: utterance name 'Ses02F_impro01_F000'"):
        prepare_corpus("iemocap", release, tmp_path / "data")


def test_wrong_root(tmp_path):
    (tmp_path / "somewhere").mkdir()
    with pytest.raises(CorpusError, match="no Session1..Session5 folders"):
        prepare_corpus("iemocap", tmp_path / "somewhere", tmp_path / "data")


def test_missing_emoevaluation_folder(tmp_path):
    (tmp_path / "rel" / "Session1" / "sentences").mkdir(parents=True)
    with pytest.raises(CorpusError, match=r"EmoEvaluation: folder is missing"):
        prepare_corpus("iemocap", tmp_path / "rel", tmp_path / "data")


def test_failure_leaves_output_unchanged(tmp_path):
    release = make_iemocap(tmp_path / "rel", sessions=(1,))
    out = tmp_path / "data"
    out.mkdir()
    (out / "marker").write_text("previous run\n")
    path = release / "Session1/dialog/EmoEvaluation/Ses01M_script01_1.txt"
    path.write_text(path.read_text() + "[oops]\n")
    with pytest.raises(CorpusError):
        prepare_corpus("iemocap", release, out)
    assert [p.name for p in out.iterdir()] == ["marker"]
    assert (out / "marker").read_text() == "previous run\n"
