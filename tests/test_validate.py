"""`sertk data validate`: every problem kind, with file and line, through the library and the CLI.

The data dir of `emodb_dir` has 28 utterances, sorted: emodb_03-03a01{A,E,F,L,N,T,W}a on lines 1-7,
then emodb_08 (8-14), emodb_09 (15-21), emodb_10 (22-28); each file lasts 0.3 s.
"""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from sertk.data.labels import load_label_map
from sertk.data.validate import REQUIRED_FILES, Problem, validate_dir

N_UTTS = 28
FIRST = "emodb_03-03a01Aa"        # line 1 everywhere; raw label A = fear
LAST = "emodb_10-10a01Wa"         # line 28
LINE10 = "emodb_08-08a01Fa"       # line 10; audio 08a01Fa.wav


# --- helpers ------------------------------------------------------------------------------------

def lines(d: Path, name: str):
    return (d / name).read_text(encoding="utf-8").splitlines()


def write_lines(d: Path, name: str, new):
    (d / name).write_text("".join(f"{line}\n" for line in new), encoding="utf-8")


def set_value(d: Path, name: str, lineno: int, value: str):
    old = lines(d, name)
    old[lineno - 1] = f"{old[lineno - 1].split()[0]} {value}"
    write_lines(d, name, old)


def rename_utt(d: Path, old: str, new: str):
    for p in d.iterdir():
        if p.is_file() and p.name != "labels.yaml":
            p.write_text(p.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")


def audio_of(d: Path, utt: str) -> Path:
    return Path(dict(line.split(None, 1) for line in lines(d, "wav.scp"))[utt])


def summary(problems):
    return [(p.file.name, p.line, p.message) for p in problems]


def assert_problems(d: Path, problems, expected):
    """`expected`: (file name, line or None, message fragment) for each problem, in order."""
    got = summary(problems)
    assert len(got) == len(expected), "\n".join(map(str, problems))
    for p, (name, line, fragment) in zip(problems, expected):
        assert (p.file, p.line) == (d / name, line), str(p)
        assert fragment in p.message, str(p)


# --- a clean dir --------------------------------------------------------------------------------

@pytest.mark.parametrize("audio", ["none", "exists", "header"])
def test_clean_dir_has_no_problems(emodb_dir, audio):
    assert validate_dir(emodb_dir, audio=audio) == []


@pytest.mark.parametrize("audio", ["none", "exists", "header"])
def test_cli_clean_dir_exits_0_with_one_ok_line(emodb_dir, sertk_cli, audio):
    result = sertk_cli("data", "validate", emodb_dir, "--audio", audio)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{emodb_dir}: OK ({N_UTTS} utterances, 4 speakers, 7 classes)\n"
    assert result.stderr == ""


def test_clean_dir_with_segments_and_text(emodb_dir):
    write_lines(emodb_dir, "segments", [f"{FIRST}-1 {FIRST} 0.00 0.15", f"{FIRST}-2 {FIRST} 0.15 0.30"])
    write_lines(emodb_dir, "text", [f"{line.split()[0]} ein Satz" for line in lines(emodb_dir, "wav.scp")])
    assert validate_dir(emodb_dir) == []


def test_problem_str_names_file_and_line():
    assert str(Problem(Path("d/utt2spk"), 3, "bad")) == "d/utt2spk:3: bad"
    assert str(Problem(Path("d/spk2utt"), None, "bad")) == "d/spk2utt: bad"


def test_unknown_audio_level_is_refused(emodb_dir):
    with pytest.raises(ValueError):
        validate_dir(emodb_dir, audio="full")


# --- each problem kind --------------------------------------------------------------------------

def _unsorted(d):
    old = lines(d, "utt2emo")
    write_lines(d, "utt2emo", [old[1], old[0], *old[2:]])


def _duplicate(d):
    old = lines(d, "utt2spk")
    write_lines(d, "utt2spk", [*old[:3], old[2], *old[3:]])


def _missing_audio(d):
    audio_of(d, LINE10).unlink()


def _corrupt_audio(d):
    audio_of(d, LINE10).write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")


def _text_as_audio(d):
    audio_of(d, LINE10).write_text("this is not audio\n")


def _zero_length_wav(d):
    sf.write(str(audio_of(d, LINE10)), np.zeros(0, dtype=np.float32), 16000)


def _empty_audio_file(d):
    audio_of(d, LINE10).write_bytes(b"")


def _pipe_in_wav_scp(d):
    set_value(d, "wav.scp", 1, "sox in.wav -t wav - |")


def _spk2utt_mismatch(d):
    old = lines(d, "spk2utt")
    old[1] = " ".join(old[1].split()[:-1])  # emodb_08 loses its last utterance
    write_lines(d, "spk2utt", old)


def _speaker_missing_from_spk2utt(d):
    old = lines(d, "spk2utt")
    write_lines(d, "spk2utt", old[:2] + old[3:])


def _unknown_speaker_in_spk2utt(d):
    write_lines(d, "spk2utt", [*lines(d, "spk2utt"), "emodb_99 emodb_99-x"])


def _class_not_in_labels(d):
    (d / "utt2lab_raw").unlink()  # else the raw label would disagree with utt2emo too
    set_value(d, "utt2emo", 1, "contempt")


def _raw_label_disagrees(d):
    set_value(d, "utt2lab_raw", 1, "W")


def _raw_label_unmapped(d):
    set_value(d, "utt2lab_raw", 1, "Q")


def _id_not_starting_with_speaker(d):
    rename_utt(d, LAST, "x10-10a01Wa")  # still last in sorted order everywhere


def _segment_past_the_end(d):
    write_lines(d, "segments", [f"{FIRST}-1 {FIRST} 0.00 0.20", f"{FIRST}-2 {FIRST} 0.20 0.50"])


def _segment_of_unknown_utt(d):
    write_lines(d, "segments", [f"{FIRST}-1 {FIRST} 0.00 0.20", "zz-1 emodb_99-x 0.00 0.10"])


def _segment_malformed(d):
    write_lines(d, "segments", [f"s1 {FIRST} 0.1", f"s2 {FIRST} a b", f"s3 {FIRST} 0.2 0.1", f"s4 {FIRST} -0.1 0.1"])


def _utt2dur_disagrees(d):
    set_value(d, "utt2dur", 1, "1.0000")


def _utt2dur_not_a_duration(d):
    for i, bad in enumerate(["0", "-1", "abc", "nan", "inf"], start=1):
        set_value(d, "utt2dur", i, bad)


def _bad_gender(d):
    set_value(d, "utt2gen", 8, "female")


def _utt2_missing_some(d):
    old = lines(d, "utt2gen")
    write_lines(d, "utt2gen", old[:4] + old[5:])


def _only_in_utt2emo(d):
    write_lines(d, "utt2emo", [*lines(d, "utt2emo"), "emodb_10-10a01Zz anger"])


def _line_without_value(d):
    set_value(d, "utt2gen", 2, "")


def _invalid_utf8(d):
    data = (d / "utt2gen").read_bytes().split(b"\n")
    data[1] = data[1][:-1] + b"\xff"
    (d / "utt2gen").write_bytes(b"\n".join(data))


def _no_labels_yaml(d):
    (d / "labels.yaml").unlink()


def _bad_labels_yaml(d):
    (d / "labels.yaml").write_text("classes: [a, b]\nmap: {A: a}\n")


CASES = {
    "unsorted ids": (_unsorted, "none", [("utt2emo", 2, "not sorted: 'emodb_03-03a01Aa' comes after 'emodb_03-03a01Ea'")]),
    "duplicate ids": (_duplicate, "none", [("utt2spk", 4, "duplicate id 'emodb_03-03a01Fa'")]),
    "missing audio": (_missing_audio, "header", [("wav.scp", 10, "no such audio file")]),
    "missing audio, exists": (_missing_audio, "exists", [("wav.scp", 10, "does not exist")]),
    "corrupt audio": (_corrupt_audio, "header", [("wav.scp", 10, "not a readable audio file")]),
    "text file as audio": (_text_as_audio, "header", [("wav.scp", 10, "not a readable audio file")]),
    "zero-length wav": (_zero_length_wav, "header", [("wav.scp", 10, "zero length")]),
    "empty audio file": (_empty_audio_file, "header", [("wav.scp", 10, "not a readable audio file")]),
    "pipe in wav.scp": (_pipe_in_wav_scp, "exists", [("wav.scp", 1, "pipe commands are not supported")]),
    "utt2spk/spk2utt mismatch": (_spk2utt_mismatch, "none", [
        ("spk2utt", 2, "speaker 'emodb_08' does not list the same utterances as utt2spk")]),
    "speaker missing from spk2utt": (_speaker_missing_from_spk2utt, "none", [
        ("spk2utt", None, "speaker 'emodb_09' of utt2spk is missing here")]),
    "unknown speaker in spk2utt": (_unknown_speaker_in_spk2utt, "none", [
        ("spk2utt", 5, "speaker 'emodb_99' has no utterance in utt2spk")]),
    "class not in labels.yaml": (_class_not_in_labels, "none", [
        ("utt2emo", 1, "class 'contempt' is not in the label map's classes ['anger',")]),
    "raw label disagrees": (_raw_label_disagrees, "none", [
        ("utt2lab_raw", 1, "raw label 'W' maps to 'anger' but utt2emo says 'fear'")]),
    "raw label unmapped": (_raw_label_unmapped, "none", [("utt2lab_raw", 1, "raw label 'Q' is not in the label map")]),
    "id not starting with speaker": (_id_not_starting_with_speaker, "none", [
        ("utt2spk", 28, "utterance id 'x10-10a01Wa' does not start with its speaker id 'emodb_10'")]),
    "segment past the end (utt2dur)": (_segment_past_the_end, "none", [
        ("segments", 2, f"segment ends at 0.5 s, after the end of '{FIRST}' (0.300 s)")]),
    "segment past the end (audio)": (_segment_past_the_end, "header", [
        ("segments", 2, f"segment ends at 0.5 s, after the end of '{FIRST}' (0.300 s)")]),
    "segment of unknown utterance": (_segment_of_unknown_utt, "none", [
        ("segments", 2, "utterance 'emodb_99-x' is not in wav.scp")]),
    "malformed segments": (_segment_malformed, "none", [
        ("segments", 1, "expected '<segment> <utterance> <start> <end>'"),
        ("segments", 2, "start 'a' and end 'b' must be seconds"),
        ("segments", 3, "segment [0.2, 0.1] is empty or starts before 0"),
        ("segments", 4, "segment [-0.1, 0.1] is empty or starts before 0")]),
    "utt2dur disagrees with audio": (_utt2dur_disagrees, "header", [
        ("utt2dur", 1, "says 1.000 s but the audio lasts 0.300 s")]),
    "utt2dur not a duration": (_utt2dur_not_a_duration, "none", [
        ("utt2dur", i, f"duration '{v}' is not a positive number of seconds")
        for i, v in enumerate(["0", "-1", "abc", "nan", "inf"], start=1)]),
    "bad gender": (_bad_gender, "none", [("utt2gen", 8, "gender 'female' is not one of ['f', 'm']")]),
    "utt2 file missing some utterances": (_utt2_missing_some, "none", [
        ("utt2gen", None, "1 utterance(s) of wav.scp are missing here: emodb_03-03a01Na")]),
    "id only in utt2emo": (_only_in_utt2emo, "none", [
        ("utt2emo", 29, "utterance 'emodb_10-10a01Zz' is not in wav.scp")]),
    "line without value": (_line_without_value, "none", [
        ("utt2gen", 2, "'emodb_03-03a01Ea' has no value"),
        ("utt2gen", None, "1 utterance(s) of wav.scp are missing here: emodb_03-03a01Ea")]),
    "invalid UTF-8": (_invalid_utf8, "none", [
        ("utt2gen", 2, "not valid UTF-8 text"),
        ("utt2gen", None, "1 utterance(s) of wav.scp are missing here: emodb_03-03a01Ea")]),
    "no labels.yaml": (_no_labels_yaml, "none", [("labels.yaml", None, "cannot check utt2emo: ")]),
    "broken labels.yaml": (_bad_labels_yaml, "none", [("labels.yaml", None, "no raw label maps to class(es) ['b']")]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_problem_is_reported_with_file_and_line(emodb_dir, case):
    damage, audio, expected = CASES[case]
    damage(emodb_dir)
    assert_problems(emodb_dir, validate_dir(emodb_dir, audio=audio), expected)


@pytest.mark.parametrize("case", list(CASES))
def test_cli_lists_the_problems_and_fails(emodb_dir, sertk_cli, user_error, case):
    damage, audio, expected = CASES[case]
    damage(emodb_dir)
    result = sertk_cli("data", "validate", emodb_dir, "--audio", audio)
    assert user_error(result) == f"{emodb_dir}: {len(expected)} problem(s)"
    assert result.stdout.splitlines() == [str(p) for p in validate_dir(emodb_dir, audio=audio)]
    for name, line, fragment in expected:
        where = f"{emodb_dir / name}:{line}: " if line else f"{emodb_dir / name}: "
        assert any(out.startswith(where) and fragment in out for out in result.stdout.splitlines())


@pytest.mark.parametrize("name", REQUIRED_FILES)
def test_required_file_missing(emodb_dir, sertk_cli, user_error, name):
    (emodb_dir / name).unlink()
    problems = validate_dir(emodb_dir, audio="none")
    assert summary(problems)[0] == (name, None, "required file is missing")
    if name != "utt2spk":  # without utt2spk every spk2utt line is reported too
        assert len(problems) == 1
    result = sertk_cli("data", "validate", emodb_dir)
    user_error(result)
    assert f"{emodb_dir / name}: required file is missing" in result.stdout.splitlines()


def test_missing_utt2spk_also_flags_spk2utt(emodb_dir):
    (emodb_dir / "utt2spk").unlink()
    problems = summary(validate_dir(emodb_dir, audio="none"))
    assert problems[1:] == [("spk2utt", i, f"speaker '{s}' has no utterance in utt2spk")
                            for i, s in enumerate(["emodb_03", "emodb_08", "emodb_09", "emodb_10"], start=1)]


def test_no_such_dir(tmp_path, sertk_cli, user_error):
    assert summary(validate_dir(tmp_path / "nope")) == [("nope", None, "no such data directory")]
    result = sertk_cli("data", "validate", tmp_path / "nope")
    assert user_error(result) == f"{tmp_path / 'nope'}: 1 problem(s)"


def test_several_problems_are_all_listed(emodb_dir, sertk_cli, user_error):
    _unsorted(emodb_dir)
    _bad_gender(emodb_dir)
    _missing_audio(emodb_dir)
    _only_in_utt2emo(emodb_dir)
    _speaker_missing_from_spk2utt(emodb_dir)
    expected = [
        ("utt2emo", 2, "not sorted"),
        ("utt2emo", 29, "utterance 'emodb_10-10a01Zz' is not in wav.scp"),
        ("spk2utt", None, "speaker 'emodb_09' of utt2spk is missing here"),
        ("wav.scp", 10, "no such audio file"),
        ("utt2gen", 8, "gender 'female'"),
    ]
    assert_problems(emodb_dir, validate_dir(emodb_dir), expected)
    result = sertk_cli("data", "validate", emodb_dir)
    assert user_error(result) == f"{emodb_dir}: 5 problem(s)"
    assert len(result.stdout.splitlines()) == 5


def test_one_bad_line_does_not_hide_the_others(emodb_dir):
    for i in (3, 9, 27):
        set_value(emodb_dir, "utt2gen", i, "x")
    assert [p.line for p in validate_dir(emodb_dir, audio="none")] == [3, 9, 27]


# --- audio levels -------------------------------------------------------------------------------

@pytest.mark.parametrize("damage, found", [
    (_missing_audio, {"none": [], "exists": ["does not exist"], "header": ["no such audio file"]}),
    (_corrupt_audio, {"none": [], "exists": [], "header": ["not a readable audio file"]}),
    (_zero_length_wav, {"none": [], "exists": [], "header": ["zero length"]}),
    (_utt2dur_disagrees, {"none": [], "exists": [], "header": ["says 1.000 s"]}),
])
def test_audio_levels(emodb_dir, sertk_cli, damage, found):
    damage(emodb_dir)
    for audio, fragments in found.items():
        problems = validate_dir(emodb_dir, audio=audio)
        assert len(problems) == len(fragments) and all(f in p.message for p, f in zip(problems, fragments)), audio
        result = sertk_cli("data", "validate", emodb_dir, "--audio", audio)
        assert result.exit_code == (1 if fragments else 0), (audio, result.output)


def test_cli_default_audio_level_reads_headers(emodb_dir, sertk_cli, user_error):
    _corrupt_audio(emodb_dir)
    user_error(sertk_cli("data", "validate", emodb_dir))


def test_duration_within_tolerance_is_fine(emodb_dir):
    set_value(emodb_dir, "utt2dur", 1, "0.3150")
    assert validate_dir(emodb_dir) == []


def test_relative_audio_paths_are_relative_to_the_working_dir(emodb_dir, emodb_replica, monkeypatch):
    monkeypatch.chdir(emodb_replica)
    write_lines(emodb_dir, "wav.scp", [f"{line.split()[0]} wav/{Path(line.split()[1]).name}"
                                       for line in lines(emodb_dir, "wav.scp")])
    assert validate_dir(emodb_dir) == []
    monkeypatch.chdir(emodb_replica.parent)
    assert len(validate_dir(emodb_dir, audio="exists")) == N_UTTS


# --- label maps ---------------------------------------------------------------------------------

def _write_map(path: Path, doc) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _own_map(d: Path):
    return yaml.safe_load((d / "labels.yaml").read_text())


def test_labels_override_is_used_instead_of_the_dirs_own(emodb_dir, tmp_path):
    doc = _own_map(emodb_dir)
    doc["classes"].append("contempt")
    doc["map"]["C"] = "contempt"
    override = load_label_map(_write_map(tmp_path / "more.yaml", doc))
    set_value(emodb_dir, "utt2emo", 1, "contempt")
    set_value(emodb_dir, "utt2lab_raw", 1, "C")
    assert summary(validate_dir(emodb_dir, audio="none"))[0][:2] == ("utt2emo", 1)
    assert validate_dir(emodb_dir, labels=override, audio="none") == []


def test_cli_labels_override_finds_what_the_own_map_does_not(emodb_dir, tmp_path, sertk_cli, user_error):
    doc = _own_map(emodb_dir)
    doc["classes"].remove("happiness")
    doc["map"]["F"] = "drop"
    override = _write_map(tmp_path / "fewer.yaml", doc)
    result = sertk_cli("data", "validate", emodb_dir, "--labels", override, "--audio", "none")
    assert user_error(result) == f"{emodb_dir}: 8 problem(s)"
    out = result.stdout.splitlines()
    happy = [i for i, line in enumerate(lines(emodb_dir, "utt2emo"), start=1) if line.endswith(" happiness")]
    assert len(happy) == 4
    for i in happy:
        assert any(o.startswith(f"{emodb_dir / 'utt2emo'}:{i}: class 'happiness' is not in") for o in out)
        assert any(o.startswith(f"{emodb_dir / 'utt2lab_raw'}:{i}: raw label 'F' is dropped") for o in out)


def test_cli_labels_override_of_a_dir_without_its_own_map(emodb_dir, tmp_path, sertk_cli):
    doc = _own_map(emodb_dir)
    doc["classes"].reverse()
    override = _write_map(tmp_path / "reordered.yaml", doc)
    (emodb_dir / "labels.yaml").unlink()
    result = sertk_cli("data", "validate", emodb_dir, "--labels", override)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{emodb_dir}: OK ({N_UTTS} utterances, 4 speakers, 7 classes)\n"


def test_cli_labels_override_that_does_not_exist(emodb_dir, tmp_path, sertk_cli, user_error):
    message = user_error(sertk_cli("data", "validate", emodb_dir, "--labels", tmp_path / "nope.yaml"))
    assert message == f"{tmp_path / 'nope.yaml'}: no such label map"


def test_raw_label_dropped_by_the_map_yet_present(emodb_dir, tmp_path):
    doc = _own_map(emodb_dir)
    doc["map"]["X"] = "drop"
    set_value(emodb_dir, "utt2lab_raw", 1, "X")
    problems = validate_dir(emodb_dir, labels=load_label_map(_write_map(tmp_path / "x.yaml", doc)), audio="none")
    assert summary(problems) == [("utt2lab_raw", 1, "raw label 'X' is dropped by the label map, "
                                                    "yet the utterance is in the data dir")]
