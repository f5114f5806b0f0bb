"""Kaldi text tables: parsing with line numbers, strict reading, C-locale sorted writing."""
import pytest

from sertk.data.table import Entry, format_table, invert_utt2spk, parse_table, read_table, write_table
from sertk.errors import DataDirError


def write(path, text):
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def test_parse_keeps_line_numbers_and_the_rest_of_the_line_as_value(tmp_path):
    path = write(tmp_path / "wav.scp", "u1 /data/a b/c.wav\n  u2\t/x.wav  \nu3 one two  three\n")
    entries, bad = parse_table(path)
    assert bad == []
    assert entries == [Entry("u1", "/data/a b/c.wav", 1), Entry("u2", "/x.wav", 2),
                       Entry("u3", "one two  three", 3)]


def test_parse_reports_malformed_lines_and_keeps_going(tmp_path):
    path = write(tmp_path / "utt2emo", "u1 anger\n\nu2\nu3 sadness\n   \n")
    entries, bad = parse_table(path)
    assert [(e.key, e.line) for e in entries] == [("u1", 1), ("u3", 4)]
    assert bad == [(2, "empty line"), (3, "'u2' has no value"), (5, "empty line")]


def test_parse_accepts_crlf_and_a_missing_final_newline(tmp_path):
    path = write(tmp_path / "utt2spk", "u1 s1\r\nu2 s2")
    entries, bad = parse_table(path)
    assert bad == [] and [(e.key, e.value) for e in entries] == [("u1", "s1"), ("u2", "s2")]


def test_parse_reports_invalid_utf8_as_a_bad_line_instead_of_crashing(tmp_path):
    path = write(tmp_path / "utt2spk", b"u1 s1\nu2 \xff\xfe\nu3 s3\n")
    entries, bad = parse_table(path)
    assert [e.key for e in entries] == ["u1", "u3"]
    assert bad == [(2, "not valid UTF-8 text")]


def test_parse_keeps_non_ascii_utf8(tmp_path):
    path = write(tmp_path / "text", "u1 Grüße aus Köln\n")
    assert parse_table(path)[0] == [Entry("u1", "Grüße aus Köln", 1)]


def test_a_utf8_byte_order_mark_is_not_part_of_the_first_key(tmp_path):
    path = write(tmp_path / "utt2spk", b"\xef\xbb\xbfu1 s1\r\nu2 s2\r\n")
    assert parse_table(path) == ([Entry("u1", "s1", 1), Entry("u2", "s2", 2)], [])
    assert read_table(path) == {"u1": "s1", "u2": "s2"}


def test_a_data_dir_whose_tables_start_with_a_byte_order_mark_loads(emodb_dir, sertk_cli):
    """Every Kaldi-style table (wav.scp, utt2spk, utt2emo, ...) is read through parse_table."""
    from sertk.data.datadir import DataDir
    from sertk.data.validate import per_utt_files
    want = DataDir.load(emodb_dir, audio="none")
    for name in [*per_utt_files(emodb_dir), "spk2utt"]:
        (emodb_dir / name).write_bytes(b"\xef\xbb\xbf" + (emodb_dir / name).read_bytes())
    result = sertk_cli("data", "validate", emodb_dir)
    assert result.exit_code == 0, result.output
    got = DataDir.load(emodb_dir, audio="none")
    assert got.tables == want.tables and got.utts == want.utts


def test_a_value_of_one_word_is_enforced_when_asked(tmp_path):
    path = write(tmp_path / "hyp", "u1 anger\nu2 anger 0.91\n")
    assert read_table(path) == {"u1": "anger", "u2": "anger 0.91"}
    with pytest.raises(DataDirError) as e:
        read_table(path, one_word=True)
    assert str(e.value) == f"{path}:2: expected two fields '<id> <value>', got 3: 'u2 anger 0.91'"


def test_read_table_returns_a_dict(tmp_path):
    path = write(tmp_path / "utt2spk", "u1 s1\nu2 s2\n")
    assert read_table(path) == {"u1": "s1", "u2": "s2"}


@pytest.mark.parametrize("text, where, message", [
    ("u1 s1\nu2\n", ":2:", "'u2' has no value"),
    ("u1 s1\n\nu2 s2\n", ":2:", "empty line"),
    ("u1 s1\nu2 s2\nu1 s1\n", ":3:", "duplicate id 'u1'"),
    (b"u1 s1\n\xff s2\n", ":2:", "not valid UTF-8"),
])
def test_read_table_is_strict_and_names_file_and_line(tmp_path, text, where, message):
    path = write(tmp_path / "utt2spk", text)
    with pytest.raises(DataDirError) as e:
        read_table(path)
    assert str(e.value).startswith(f"{path}{where} ") and message in str(e.value)


def test_format_table_sorts_by_code_point_like_lc_all_c():
    # a locale-aware sort would put 'a' before 'Z' and ignore the punctuation
    items = [("b", "1"), ("a_1", "2"), ("Z", "3"), ("a-1", "4"), ("a", "5"), ("a1", "6")]
    assert format_table(items) == "Z 3\na 5\na-1 4\na1 6\na_1 2\nb 1\n"


def test_format_table_sorts_non_ascii_by_utf8_bytes():
    keys = ["é", "z", "ä", "Ω", "a"]
    out = format_table((k, "v") for k in keys)
    assert [line.split()[0] for line in out.splitlines()] == sorted(keys, key=lambda k: k.encode("utf-8"))


def test_format_table_of_nothing_is_empty():
    assert format_table([]) == ""


def test_write_table_round_trips_and_leaves_no_temp_file(tmp_path):
    table = {"u2": "/a b.wav", "u1": "/c.wav", "u10": "/d.wav"}
    path = tmp_path / "wav.scp"
    write_table(path, table)
    assert path.read_text() == "u1 /c.wav\nu10 /d.wav\nu2 /a b.wav\n"
    assert read_table(path) == table
    assert [p.name for p in tmp_path.iterdir()] == ["wav.scp"]


def test_write_table_replaces_an_existing_file(tmp_path):
    path = write(tmp_path / "utt2spk", "old junk\n")
    write_table(path, {"u1": "s1"})
    assert path.read_text() == "u1 s1\n"


def test_invert_utt2spk_sorts_speakers_and_their_utterances():
    utt2spk = {"s2-b": "s2", "s1-b": "s1", "s2-a": "s2", "s1-a": "s1", "s10-a": "s10"}
    spk2utt = invert_utt2spk(utt2spk)
    assert list(spk2utt) == ["s1", "s10", "s2"]
    assert spk2utt == {"s1": ["s1-a", "s1-b"], "s10": ["s10-a"], "s2": ["s2-a", "s2-b"]}


def test_invert_utt2spk_of_nothing():
    assert invert_utt2spk({}) == {}
