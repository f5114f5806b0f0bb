"""EmoDB, RAVDESS and CSV preparers on generated replicas of their release layouts."""
import logging
import re

import pytest

from replicas import make_emodb, make_ravdess, write_wav
from sertk.data.corpora import import_csv, prepare_corpus
from sertk.data.labels import LabelMap
from sertk.data.prepare import class_count_table
from sertk.data.table import read_table
from sertk.data.validate import validate_dir
from sertk.errors import AudioError, CorpusError, LabelError


def test_emodb_ids_labels_and_gender(tmp_path):
    root = make_emodb(tmp_path / "emodb", speakers=["03", "08"], texts=["a01", "b02"])
    report = prepare_corpus("emodb", root, tmp_path / "data")
    dd = report.datadir
    assert len(dd.utts) == 2 * 2 * 7 and dd.speakers == ["emodb_03", "emodb_08"]
    assert dd.utt2emo["emodb_03-03a01Fa"] == "happiness"
    assert dd.tables["utt2lab_raw"]["emodb_08-08b02Wa"] == "W"
    assert dd.tables["utt2gen"]["emodb_03-03a01Fa"] == "m" and dd.tables["utt2gen"]["emodb_08-08a01Fa"] == "f"
    assert report.skipped == {"not an EmoDB wav name (like 03a01Fa.wav)": 1}
    assert validate_dir(tmp_path / "data") == []
    on_disk = read_table(tmp_path / "data" / "utt2dur")
    assert float(on_disk["emodb_03-03a01Fa"]) == pytest.approx(0.3, abs=1e-3)


def test_emodb_accepts_the_wav_folder_itself(tmp_path):
    root = make_emodb(tmp_path / "emodb", speakers=["03"], texts=["a01"])
    assert len(prepare_corpus("emodb", root / "wav", tmp_path / "data").datadir.utts) == 7


def test_emodb_wrong_root(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no EmoDB wav files found"):
        prepare_corpus("emodb", tmp_path / "empty", tmp_path / "data")
    with pytest.raises(CorpusError, match="does not exist"):
        prepare_corpus("emodb", tmp_path / "missing", tmp_path / "data")


def test_ravdess_skips_song_and_keeps_intensity(tmp_path):
    root = make_ravdess(tmp_path / "rav", actors=[1, 2], emotions=range(1, 9))
    report = prepare_corpus("ravdess", root, tmp_path / "data")
    dd = report.datadir
    assert len(dd.utts) == 2 * 15 and dd.speakers == ["ravdess_01", "ravdess_02"]
    assert report.skipped == {"not an audio-only speech file (03-01-*.wav)": 2}
    utt = "ravdess_02-03-01-05-02-01-01-02"
    assert dd.utt2emo[utt] == "anger" and dd.tables["utt2intensity"][utt] == "strong"
    assert dd.tables["utt2gen"][utt] == "f" and dd.tables["utt2gen"]["ravdess_01-03-01-05-02-01-01-01"] == "m"
    assert validate_dir(tmp_path / "data") == []


def test_ravdess_file_in_the_wrong_actor_folder(tmp_path):
    root = make_ravdess(tmp_path / "rav", actors=[1], emotions=[1], with_song=False)
    write_wav(root / "Actor_01" / "03-01-01-01-01-01-02.wav")
    with pytest.raises(CorpusError, match="actor 02 in the name but the file is in Actor_01"):
        prepare_corpus("ravdess", root, tmp_path / "data")


@pytest.mark.parametrize("name, message", [
    ("03-01-01-02-01-01-01.wav", "intensity 02 (strong) with emotion 01 (neutral)"),
    ("03-01-05-01-03-01-01.wav", "statement code 03 is not 01 or 02"),
    ("03-01-05-01-01-00-01.wav", "repetition code 00 is not 01 or 02"),
    ("03-01-05-03-01-01-01.wav", "intensity code 03 is not 01 or 02")])
def test_ravdess_codes_outside_the_release_are_refused(tmp_path, name, message):
    root = make_ravdess(tmp_path / "rav", actors=[1], emotions=[1, 5], with_song=False)
    write_wav(root / "Actor_01" / name)
    with pytest.raises(CorpusError, match=re.escape(message)):
        prepare_corpus("ravdess", root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_class_count_table(tmp_path):
    root = make_emodb(tmp_path / "emodb", speakers=["03", "08"], texts=["a01"], emotions="WWA")
    table = class_count_table(prepare_corpus("emodb", root, tmp_path / "data").datadir).splitlines()
    assert table[0].split() == ["speaker", "anger", "boredom", "disgust", "fear", "happiness", "sadness",
                                "neutral", "total"]
    # WWA: the two W files of a speaker share a name, so each speaker has one anger and one fear file
    assert table[1].split() == ["emodb_03", "1", "0", "0", "1", "0", "0", "0", "2"]
    assert table[-1].split() == ["total", "2", "0", "0", "2", "0", "0", "0", "4"]


def test_failures_leave_the_output_untouched(tmp_path):
    root = make_emodb(tmp_path / "emodb", speakers=["03"], texts=["a01"])
    out = tmp_path / "data"
    out.mkdir()
    (out / "marker").write_text("keep me")
    (root / "wav" / "03a01Fa.wav").write_bytes(b"not audio at all")
    with pytest.raises(AudioError, match="03a01Fa.wav: not a readable audio file"):
        prepare_corpus("emodb", root, out)
    two = LabelMap(("anger", "boredom"), {"W": "anger", "L": "boredom"})
    with pytest.raises(LabelError, match="raw label '.' is not in the label map"):
        prepare_corpus("emodb", root, out, labels=two)
    assert [p.name for p in out.iterdir()] == ["marker"] and (out / "marker").read_text() == "keep me"


def test_skip_bad_audio_counts(tmp_path, caplog):
    root = make_emodb(tmp_path / "emodb", speakers=["03"], texts=["a01"])
    (root / "wav" / "03a01Fa.wav").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="sertk"):
        report = prepare_corpus("emodb", root, tmp_path / "data", skip_bad_audio=True)
    assert len(report.datadir.utts) == 6 and report.skipped["missing or unreadable audio"] == 1
    assert "03a01Fa.wav" in caplog.text


def test_label_map_drop_is_counted(tmp_path):
    root = make_emodb(tmp_path / "emodb", speakers=["03"], texts=["a01"])
    lm = LabelMap(("anger", "other"), {"W": "anger", "L": "other", "E": "drop", "A": "drop", "F": "other",
                                       "T": "other", "N": "other"})
    report = prepare_corpus("emodb", root, tmp_path / "data", labels=lm)
    assert report.dropped == {"E": 1, "A": 1} and len(report.datadir.utts) == 5
    assert validate_dir(tmp_path / "data") == []


def write_csv(tmp_path, rows, header="path,label,speaker,session,gender"):
    path = tmp_path / "corpus.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def test_csv_import(tmp_path):
    for name in ("a", "b", "c"):
        write_wav(tmp_path / "audio" / f"{name}.wav")
    csv_path = write_csv(tmp_path, ["audio/a.wav,happy,spk 1,s1,F", "audio/b.wav,sad,spk 1,s1,female",
                                    f"{tmp_path}/audio/c.wav,happy,spk2,s2,m"])
    report = import_csv(csv_path, tmp_path / "data", corpus="mine")
    dd = report.datadir
    assert dd.labels.classes == ("happy", "sad") and dd.labels.corpus == "mine"
    assert dd.utts == ["spk2-c", "spk_1-a", "spk_1-b"]
    assert dd.tables["utt2gen"] == {"spk_1-a": "f", "spk_1-b": "f", "spk2-c": "m"}
    assert dd.tables["utt2sess"]["spk2-c"] == "s2"
    assert validate_dir(tmp_path / "data") == []


@pytest.mark.parametrize("rows, header, message", [
    (["a.wav,happy"], "path,label", r"missing column\(s\) \['speaker'\]"),
    (["a.wav,,spk1,,"], None, r"corpus.csv:2: empty 'label'"),
    (["a.wav,happy,spk1,,q"], None, r"corpus.csv:2: gender 'q'"),
    # an unquoted comma in a field: every column after it would shift (the speaker became 'Smith')
    (["a.wav,happy,Smith, John"], "path,label,speaker", r"corpus.csv:2: 4 fields, the header has 3 \(quote a field"),
    (["a.wav,happy"], "path,label,speaker", r"corpus.csv:2: 2 fields, the header has 3$"),
    (["a.wav,happy,s1"], "Path,Label,Speaker", r"missing column\(s\) .* in the header \['Path', 'Label', 'Speaker'\]"
                                               r".*; column names are lower case"),
    (["a.wav;happy;s1"], "path;label;speaker", r"; the separator is a comma"),
    (["a.wav,happy,s1"], "file,emotion,speaker", r"nkululeko's file/emotion columns are path/label here"),
    (["a.wav,happy,s1,x"], "path,label,speaker,label", r"column 'label' is in the header twice"),
    (["a.wav,0.0,1.5,happy,s1"], "path,start,end,label,speaker", r"columns start and end give segment times"),
])
def test_csv_errors(tmp_path, rows, header, message):
    write_wav(tmp_path / "a.wav")
    with pytest.raises(CorpusError, match=message):
        import_csv(write_csv(tmp_path, rows, header or "path,label,speaker,session,gender"), tmp_path / "data")


def test_csv_as_spreadsheets_write_them(tmp_path, caplog):
    """Trailing separators (unnamed columns, empty surplus fields), an optional last column left off, a duration
    column, a quoted record over two lines, blank lines before the header: all imported as before."""
    for name in ("a", "b", "c"):
        write_wav(tmp_path / f"{name}.wav")
    rows = ["a.wav,h,s1,,", "b.wav,s,s1,,,", "c.wav,h,s2"]
    report = import_csv(write_csv(tmp_path, rows, "path,label,speaker,,"), tmp_path / "d1")   # trailing separators
    assert report.datadir.utts == ["s1-a", "s1-b", "s2-c"]
    rows = ["a.wav,h,s1,2.5,loud", "b.wav,s,s1,1.0"]
    report = import_csv(write_csv(tmp_path, rows, "path,label,speaker,duration,notes"), tmp_path / "d2")
    assert len(report.datadir.utts) == 2
    (tmp_path / "corpus.csv").write_text('\n\npath,label,speaker,notes\na.wav,h,s1,"two\nlines"\n'
                                         'b.wav,h,s1,x\na.wav,s,s1,dup\n')
    # lines of the records' first lines (the quoted record spans 4-5)
    with pytest.raises(CorpusError, match=r"corpus.csv:7: utterance id 's1-a' is line 4's too"):
        import_csv(tmp_path / "corpus.csv", tmp_path / "d3")
    rows = ["a.wav,h,s1", "b.wav,H,s2", "c.wav,s,s2"]
    with caplog.at_level(logging.WARNING, logger="sertk"):   # a label map given: 'H' and 'h' are one class there
        import_csv(write_csv(tmp_path, rows, "path,label,speaker"), tmp_path / "d4",
                   labels=LabelMap(("happy", "sad"), {"h": "happy", "H": "happy", "s": "sad"}, "toy"))
    assert "differ only in case" not in caplog.text


def test_csv_unknown_genders_are_left_out_not_refused(tmp_path, caplog):
    for name in ("a", "b"):
        write_wav(tmp_path / f"{name}.wav")
    with caplog.at_level(logging.WARNING, logger="sertk"):
        report = import_csv(write_csv(tmp_path, ["a.wav,h,s1,,female", "b.wav,s,s1,,unknown"]), tmp_path / "data")
    assert "utt2gen" not in report.datadir.tables
    assert "leaving out utt2gen: only 1 of 2 utterances have it" in caplog.text


def test_csv_duplicate_ids_and_an_id_column(tmp_path, caplog):
    write_wav(tmp_path / "x" / "a.wav")
    write_wav(tmp_path / "y" / "a.wav")
    with pytest.raises(CorpusError, match=r"corpus.csv:3: utterance id 'spk1-a' is line 2's too .*give the CSV a "
                                          "utt_id column"):
        import_csv(write_csv(tmp_path, ["x/a.wav,h,spk1,,", "y/a.wav,s,spk1,,"]), tmp_path / "data")
    # folders per class with the same file names: a utt_id column tells them apart; 'H' and 'h' are warned of
    csv_path = write_csv(tmp_path, ["x/a.wav,h,spk1,x_a", "y/a.wav,H,spk1,y_a"], "path,label,speaker,utt_id")
    with caplog.at_level(logging.WARNING, logger="sertk"):
        report = import_csv(csv_path, tmp_path / "data")
    assert report.datadir.utts == ["spk1-x_a", "spk1-y_a"]
    assert "labels that differ only in case are different classes: H / h" in caplog.text


def test_csv_missing_audio_names_it(tmp_path):
    write_wav(tmp_path / "here.wav")
    with pytest.raises(AudioError, match=r"gone\.wav: no such audio file"):
        import_csv(write_csv(tmp_path, ["gone.wav,h,spk1,,", "here.wav,s,spk1,,"]), tmp_path / "data")
