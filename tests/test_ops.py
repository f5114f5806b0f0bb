"""Data dir operations (subset, combine, split) and the DataDir model they share (load, select, save)."""
import os
from collections import Counter
from pathlib import Path

import pytest
import yaml

from sertk.data.datadir import DataDir
from sertk.data.labels import LabelMap, load_label_map
from sertk.data.ops import combine, merge_label_maps, read_id_list, split_by_speaker, subset
from sertk.data.table import read_table
from sertk.data.validate import validate_dir
from sertk.errors import DataDirError

N_UTTS = 28
SPEAKERS = ["emodb_03", "emodb_08", "emodb_09", "emodb_10"]
FIRST = "emodb_03-03a01Aa"


# --- helpers ------------------------------------------------------------------------------------

def utts_of(d: Path):
    return list(read_table(d / "wav.scp"))


def files_of(d: Path):
    return sorted(p.name for p in d.iterdir() if p.is_file())


def snapshot(d: Path):
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def add_segments(d: Path, utts):
    """Two segments per utterance: <utt>-1 [0, 0.1] and <utt>-2 [0.1, 0.2]."""
    rows = [f"{u}-{i} {u} {0.1 * (i - 1):.2f} {0.1 * i:.2f}" for u in sorted(utts) for i in (1, 2)]
    (d / "segments").write_text("".join(f"{r}\n" for r in rows))


def edit_labels(d: Path, fn):
    doc = yaml.safe_load((d / "labels.yaml").read_text())
    fn(doc)
    (d / "labels.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def assert_clean_copy_of(out: Path, src: Path, utts):
    """`out` validates, holds exactly `utts`, every file of `src` and the same label map; its values
    are those of `src`."""
    assert validate_dir(out) == []
    assert utts_of(out) == sorted(utts)
    assert files_of(out) == files_of(src)
    assert (out / "labels.yaml").read_text() == (src / "labels.yaml").read_text()
    for name in files_of(src):
        if name not in ("labels.yaml", "spk2utt", "segments"):
            src_table = read_table(src / name)
            assert read_table(out / name) == {u: src_table[u] for u in utts}, name


def same_map(a: LabelMap, b: LabelMap) -> bool:
    return (a.classes, a.mapping, a.corpus) == (b.classes, b.mapping, b.corpus)


def leftovers(parent: Path):
    """Temp dirs an atomic write would leave behind in `parent` if it failed to clean up."""
    return [p.name for p in parent.iterdir() if p.name.startswith(".") and p.name.endswith((".tmp", ".old"))]


# --- subset -------------------------------------------------------------------------------------

def test_subset_by_utt_list(emodb_dir, tmp_path, sertk_cli):
    src_utts = utts_of(emodb_dir)
    chosen = [src_utts[3], src_utts[0], src_utts[17], src_utts[27]]
    add_segments(emodb_dir, src_utts[:5])
    id_list = tmp_path / "ids"
    id_list.write_text(f"{chosen[0]}\n\n{chosen[1]} extra fields are ignored\n  {chosen[2]}\n{chosen[3]}\n{chosen[0]}\n")
    out = tmp_path / "sub"
    result = sertk_cli("data", "subset", emodb_dir, out, "--utt-list", id_list)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{out}: 4 utterances, 3 speakers\n"
    assert_clean_copy_of(out, emodb_dir, chosen)
    assert "utt2gen" in files_of(out) and "utt2lab_raw" in files_of(out) and "utt2dur" in files_of(out)
    assert read_table(out / "segments") == {f"{u}-{i}": f"{u} {0.1 * (i - 1):.2f} {0.1 * i:.2f}"
                                            for u in (src_utts[0], src_utts[3]) for i in (1, 2)}
    assert read_table(out / "spk2utt") == {"emodb_03": f"{src_utts[0]} {src_utts[3]}",
                                           "emodb_09": src_utts[17], "emodb_10": src_utts[27]}


def test_subset_by_speakers(emodb_dir, tmp_path, sertk_cli):
    out = tmp_path / "sub"
    result = sertk_cli("data", "subset", emodb_dir, out, "--speakers", "emodb_10,emodb_03")
    assert result.exit_code == 0, result.output
    expected = [u for u in utts_of(emodb_dir) if u.startswith(("emodb_03-", "emodb_10-"))]
    assert len(expected) == 14
    assert_clean_copy_of(out, emodb_dir, expected)
    assert list(read_table(out / "spk2utt")) == ["emodb_03", "emodb_10"]


@pytest.mark.parametrize("option, n", [("--first", 5), ("--last", 5), ("--first", 1), ("--last", N_UTTS)])
def test_subset_first_and_last_in_sorted_order(emodb_dir, tmp_path, sertk_cli, option, n):
    out = tmp_path / "sub"
    result = sertk_cli("data", "subset", emodb_dir, out, option, n)
    assert result.exit_code == 0, result.output
    src_utts = utts_of(emodb_dir)
    assert_clean_copy_of(out, emodb_dir, src_utts[:n] if option == "--first" else src_utts[-n:])


def test_subset_library_keeps_labels_and_segments(emodb_dir):
    add_segments(emodb_dir, [FIRST, "emodb_08-08a01Aa"])
    dd = DataDir.load(emodb_dir)
    part = subset(dd, speakers=["emodb_08"])
    assert part.labels == dd.labels
    assert part.segments == {"emodb_08-08a01Aa-1": "emodb_08-08a01Aa 0.00 0.10",
                             "emodb_08-08a01Aa-2": "emodb_08-08a01Aa 0.10 0.20"}
    assert set(part.tables) == set(dd.tables) and part.speakers == ["emodb_08"]


@pytest.mark.parametrize("args, message", [
    (["--speakers", "emodb_03,emodb_99"], "1 speaker id(s) are not in the data dir: emodb_99"),
    (["--speakers", ","], "the speaker list is empty; nothing to select"),
    ([], "give exactly one of --utt-list, --speakers, --first, --last"),
    (["--first", "2", "--last", "2"], "give exactly one of --utt-list, --speakers, --first, --last"),
    (["--speakers", "emodb_03", "--first", "1"], "give exactly one of --utt-list, --speakers, --first, --last"),
    (["--first", "0"], "N must be between 1 and the number of utterances (28), got 0"),
    (["--last", "-3"], "N must be between 1 and the number of utterances (28), got -3"),
    (["--first", "29"], "N must be between 1 and the number of utterances (28), got 29"),
])
def test_subset_user_mistakes(emodb_dir, tmp_path, sertk_cli, user_error, args, message):
    out = tmp_path / "sub"
    assert user_error(sertk_cli("data", "subset", emodb_dir, out, *args)) == message
    assert not out.exists() and leftovers(tmp_path) == []


def test_subset_unknown_utterances_are_named(emodb_dir, tmp_path, sertk_cli, user_error):
    id_list = tmp_path / "ids"
    id_list.write_text(f"{FIRST}\nnope-2\nnope-1\n")
    message = user_error(sertk_cli("data", "subset", emodb_dir, tmp_path / "sub", "--utt-list", id_list))
    assert message == "2 utterance id(s) are not in the data dir: nope-1, nope-2"
    many = [f"nope-{i}" for i in range(7)]
    with pytest.raises(DataDirError, match=r"7 utterance id\(s\) are not in the data dir: nope-0, .*nope-4, \.\.\.$"):
        subset(DataDir.load(emodb_dir), utt_list=many)


def test_subset_empty_utt_list(emodb_dir, tmp_path, sertk_cli, user_error):
    id_list = tmp_path / "ids"
    id_list.write_text("\n  \n")
    message = user_error(sertk_cli("data", "subset", emodb_dir, tmp_path / "sub", "--utt-list", id_list))
    assert message == "the utterance list is empty; nothing to select"


def test_subset_refuses_to_overwrite_its_source(emodb_dir, sertk_cli, user_error):
    before = snapshot(emodb_dir)
    for out in (emodb_dir, emodb_dir / ".", emodb_dir.parent / ".." / emodb_dir.parent.name / "data"):
        message = user_error(sertk_cli("data", "subset", emodb_dir, out, "--first", "3"))
        assert message.startswith(f"{out}: the output would replace the input")
    assert snapshot(emodb_dir) == before


def test_subset_refuses_an_output_that_contains_its_source(emodb_dir, emodb_replica, sertk_cli, user_error):
    before, release = snapshot(emodb_dir), snapshot(emodb_replica / "wav")
    message = user_error(sertk_cli("data", "subset", emodb_dir, emodb_dir.parent, "--first", "3"))
    assert message.startswith(f"{emodb_dir.parent}: the output would replace the input {emodb_dir}")
    assert snapshot(emodb_dir) == before and snapshot(emodb_replica / "wav") == release


def test_subset_replaces_an_existing_data_dir_whole(emodb_dir, tmp_path, sertk_cli):
    out = tmp_path / "sub"
    assert sertk_cli("data", "subset", emodb_dir, out, "--first", "5").exit_code == 0
    (out / "utt2stale").write_text("x y\n")
    assert sertk_cli("data", "subset", emodb_dir, out, "--first", "3").exit_code == 0
    assert "utt2stale" not in files_of(out) and len(utts_of(out)) == 3 and validate_dir(out) == []


def test_subset_into_an_existing_empty_dir(emodb_dir, tmp_path, sertk_cli):
    (tmp_path / "sub").mkdir()
    assert sertk_cli("data", "subset", emodb_dir, tmp_path / "sub", "--first", "3").exit_code == 0
    assert validate_dir(tmp_path / "sub") == []


def test_subset_of_an_invalid_source(emodb_dir, tmp_path, sertk_cli, user_error):
    (emodb_dir / "utt2gen").write_text((emodb_dir / "utt2gen").read_text().replace(" m\n", " x\n", 1))
    message = user_error(sertk_cli("data", "subset", emodb_dir, tmp_path / "sub", "--first", "3"))
    assert message.startswith(f"{emodb_dir / 'utt2gen'}:1: gender 'x' is not one of")
    assert not (tmp_path / "sub").exists()


def test_read_id_list(tmp_path):
    path = tmp_path / "ids"
    path.write_text("a x y\n\n b\nc\n")
    assert read_id_list(path) == ["a", "b", "c"]
    with pytest.raises(DataDirError, match="no such id list"):
        read_id_list(tmp_path / "nope")
    path.write_bytes(b"a\n\xff\xfe\n")
    with pytest.raises(DataDirError, match="not valid UTF-8"):
        read_id_list(path)
    path.write_bytes(b"\xef\xbb\xbfa\r\nb\r\n")     # saved by a Windows editor: a byte-order mark is not an id
    assert read_id_list(path) == ["a", "b"]


# --- combine ------------------------------------------------------------------------------------

@pytest.fixture
def two_dirs(make_emodb_datadir):
    """Two disjoint data dirs: emodb_03, emodb_08 in a/data and emodb_09, emodb_10 in b/data."""
    return make_emodb_datadir("a", speakers=["03", "08"])[1], make_emodb_datadir("b", speakers=["09", "10"])[1]


def test_combine_two_disjoint_dirs(two_dirs, tmp_path, sertk_cli):
    a, b = two_dirs
    add_segments(a, utts_of(a)[:2])
    add_segments(b, utts_of(b)[-1:])
    out = tmp_path / "all"
    result = sertk_cli("data", "combine", out, a, b)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{out}: {N_UTTS} utterances, 4 speakers\n" and result.stderr == ""
    assert validate_dir(out) == []
    assert utts_of(out) == sorted(utts_of(a) + utts_of(b))
    assert files_of(out) == files_of(a)
    for name in ("wav.scp", "utt2spk", "utt2emo", "utt2gen", "utt2dur", "utt2lab_raw", "segments"):
        assert read_table(out / name) == {**read_table(a / name), **read_table(b / name)}, name
    assert list(read_table(out / "spk2utt")) == SPEAKERS
    assert same_map(load_label_map(out / "labels.yaml"), load_label_map(a / "labels.yaml"))


def test_combine_duplicate_utterance_ids_name_both_sources(make_emodb_datadir, tmp_path, sertk_cli, user_error):
    a = make_emodb_datadir("a", speakers=["03", "08"])[1]
    b = make_emodb_datadir("b", speakers=["08", "09"])[1]
    out = tmp_path / "all"
    message = user_error(sertk_cli("data", "combine", out, a, b))
    assert message == f"utterance id 'emodb_08-08a01Aa' is in both {a} and {b}"
    assert not out.exists() and leftovers(tmp_path) == []


def test_combine_duplicate_segment_ids_name_both_sources(two_dirs):
    a, b = two_dirs
    (a / "segments").write_text(f"seg-1 {utts_of(a)[0]} 0.00 0.10\n")
    (b / "segments").write_text(f"seg-1 {utts_of(b)[0]} 0.00 0.10\n")
    with pytest.raises(DataDirError, match=f"segment id 'seg-1' is in both {a} and {b}"):
        combine([DataDir.load(a), DataDir.load(b)], [str(a), str(b)])


def test_combine_refuses_different_class_lists(two_dirs, tmp_path, sertk_cli, user_error):
    a, b = two_dirs
    edit_labels(b, lambda doc: doc["classes"].reverse())  # same classes, other order: still different
    assert validate_dir(b) == []
    message = user_error(sertk_cli("data", "combine", tmp_path / "all", a, b))
    assert message.startswith(f"{b} has classes ['neutral', ")
    assert message.endswith("combined dirs need one class list in one order")
    assert not (tmp_path / "all").exists()


def test_combine_leaves_out_a_file_only_some_sources_have(two_dirs, tmp_path, sertk_cli):
    a, b = two_dirs
    (b / "utt2gen").unlink()
    out = tmp_path / "all"
    result = sertk_cli("data", "combine", out, a, b)
    assert result.exit_code == 0, result.output
    assert result.stderr == "sertk: warning: leaving out utt2gen: not every source dir has it\n"
    assert "utt2gen" not in files_of(out) and "utt2dur" in files_of(out)
    assert validate_dir(out) == [] and len(utts_of(out)) == N_UTTS


def test_combine_merges_label_maps(two_dirs, tmp_path, sertk_cli):
    a, b = two_dirs
    edit_labels(a, lambda doc: doc["map"].update({"X": "drop"}))
    edit_labels(b, lambda doc: doc["map"].update({"Wut": "anger"}))
    out = tmp_path / "all"
    assert sertk_cli("data", "combine", out, a, b).exit_code == 0
    merged = load_label_map(out / "labels.yaml")
    own = load_label_map(a / "labels.yaml")
    assert merged.classes == own.classes and merged.corpus == "emodb"
    assert merged.mapping == {**own.mapping, "X": "drop", "Wut": "anger"}
    assert validate_dir(out) == []


def test_combine_refuses_a_raw_label_mapped_two_ways(two_dirs, tmp_path, sertk_cli, user_error):
    a, b = two_dirs
    edit_labels(a, lambda doc: doc["map"].update({"X": "drop"}))
    edit_labels(b, lambda doc: doc["map"].update({"X": "anger"}))
    message = user_error(sertk_cli("data", "combine", tmp_path / "all", a, b))
    assert message == f"raw label 'X' maps to 'drop' in one source and 'anger' in {b}"


def test_merge_label_maps_names_the_corpora():
    one = LabelMap(("a", "b"), {"x": "a", "y": "b"}, "c1")
    two = LabelMap(("a", "b"), {"x": "a", "z": "b"}, "c2")
    merged = merge_label_maps([one, two], ["d1", "d2"])
    assert merged.corpus == "c1+c2" and merged.mapping == {"x": "a", "y": "b", "z": "b"}
    assert merge_label_maps([one, one], ["d1", "d2"]).corpus == "c1"


def test_combine_refuses_its_own_sources_as_output(two_dirs, sertk_cli, user_error):
    a, b = two_dirs
    before = snapshot(b)
    assert user_error(sertk_cli("data", "combine", b, a, b)).startswith(f"{b}: the output would replace the input")
    assert snapshot(b) == before


def test_combine_of_nothing_and_of_an_invalid_source(two_dirs, tmp_path, sertk_cli, user_error):
    a, b = two_dirs
    with pytest.raises(DataDirError, match="nothing to combine"):
        combine([], [])
    (b / "utt2spk").unlink()
    message = user_error(sertk_cli("data", "combine", tmp_path / "all", a, b))
    assert message.startswith(f"{b / 'utt2spk'}: required file is missing")


def test_combine_needs_a_source(tmp_path, sertk_cli):
    result = sertk_cli("data", "combine", tmp_path / "all")
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)


# --- split --------------------------------------------------------------------------------------

SIZES = {"s1": 7, "s2": 5, "s3": 4, "s4": 3, "s5": 3, "s6": 1}


def synthetic_dir(sizes=SIZES) -> DataDir:
    utts = {f"{spk}-u{i:02d}": spk for spk, n in sizes.items() for i in range(n)}
    labels = LabelMap(("a", "b"), {"A": "a", "B": "b"})
    return DataDir({"wav.scp": {u: f"/x/{u}.wav" for u in utts}, "utt2spk": dict(utts),
                    "utt2emo": {u: "ab"[i % 2] for i, u in enumerate(utts)}}, labels)


def check_split(dd: DataDir, parts, n: int):
    assert len(parts) == n
    speakers = [set(p.speakers) for p in parts]
    assert all(speakers) and sum(map(len, speakers)) == len(set().union(*speakers)) == len(dd.speakers)
    counts = Counter(u for p in parts for u in p.utts)
    assert set(counts) == set(dd.utts) and set(counts.values()) == {1}
    sizes = [len(p.utts) for p in parts]
    largest = max(len(us) for us in dd.spk2utt.values())
    assert max(sizes) - min(sizes) <= largest, sizes
    for p in parts:
        assert set(p.tables) == set(dd.tables) and same_map(p.labels, dd.labels)
        assert set(p.utt2spk.values()) <= set(p.speakers)


@pytest.mark.parametrize("n", range(1, len(SIZES) + 1))
def test_split_by_speaker_properties(n):
    dd = synthetic_dir()
    parts = split_by_speaker(dd, n)
    check_split(dd, parts, n)
    assert [p.utts for p in split_by_speaker(dd, n)] == [p.utts for p in parts]  # deterministic


def test_split_balances_by_utterance_count():
    parts = split_by_speaker(synthetic_dir(), 2)
    assert sorted(len(p.utts) for p in parts) == [11, 12]
    # largest speakers first, each to the part with fewest utterances so far
    parts = split_by_speaker(synthetic_dir(), 3)
    assert [p.speakers for p in parts] == [["s1", "s6"], ["s2", "s5"], ["s3", "s4"]]


@pytest.mark.parametrize("n", [0, -1, 7])
def test_split_into_an_impossible_number_of_parts(n):
    with pytest.raises(DataDirError, match=f"cannot split 6 speaker\\(s\\) into {n} parts"):
        split_by_speaker(synthetic_dir(), n)


def test_cli_split_default_output(emodb_dir, sertk_cli):
    result = sertk_cli("data", "split", emodb_dir, 2)
    assert result.exit_code == 0, result.output
    out = emodb_dir / "split2"
    assert result.stdout == f"{out}: 1: 14 utts, 2: 14 utts\n"
    assert sorted(p.name for p in out.iterdir()) == ["1", "2"]
    src = DataDir.load(emodb_dir)
    parts = [DataDir.load(out / str(i)) for i in (1, 2)]
    check_split(src, parts, 2)
    for i in (1, 2):
        assert validate_dir(out / str(i)) == []
        assert files_of(out / str(i)) == files_of(emodb_dir)
    assert validate_dir(emodb_dir) == []  # the split folder inside does not disturb the source


def test_cli_split_custom_output_and_rerun(emodb_dir, tmp_path, sertk_cli):
    out = tmp_path / "parts"
    assert sertk_cli("data", "split", emodb_dir, 4, "--out", out).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["1", "2", "3", "4"]
    assert [DataDir.load(out / str(i)).speakers for i in range(1, 5)] == [[s] for s in SPEAKERS]
    assert sertk_cli("data", "split", emodb_dir, 3, "--out", out).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["1", "2", "3"]  # replaced, not merged
    check_split(DataDir.load(emodb_dir), [DataDir.load(out / str(i)) for i in (1, 2, 3)], 3)


@pytest.mark.parametrize("n", ["5", "0"])
def test_cli_split_into_too_many_parts(emodb_dir, sertk_cli, user_error, n):
    assert user_error(sertk_cli("data", "split", emodb_dir, n)) == f"cannot split 4 speaker(s) into {n} parts"
    assert not (emodb_dir / f"split{n}").exists() and leftovers(emodb_dir) == []


# --- DataDir: load, select, save ----------------------------------------------------------------

def test_load_round_trips_through_save(emodb_dir, tmp_path):
    add_segments(emodb_dir, [FIRST])
    dd = DataDir.load(emodb_dir)
    assert len(dd.utts) == N_UTTS and dd.speakers == SPEAKERS and len(dd.labels.classes) == 7
    assert set(dd.tables) == {"wav.scp", "utt2spk", "utt2emo", "utt2gen", "utt2dur", "utt2lab_raw"}
    dd.save(tmp_path / "copy")
    assert snapshot(tmp_path / "copy") == snapshot(emodb_dir)


def test_load_raises_the_first_problem(emodb_dir):
    (emodb_dir / "utt2gen").write_text("".join(line.replace(" m", " x", 1) if i == 0 else line
                                               for i, line in enumerate(open(emodb_dir / "utt2gen"))))
    (problem,) = validate_dir(emodb_dir, audio="exists")
    with pytest.raises(DataDirError) as e:
        DataDir.load(emodb_dir)
    assert str(e.value).startswith(str(problem))


def test_load_raises_the_first_problem_with_a_hint_when_there_are_more(emodb_dir):
    (emodb_dir / "utt2gen").write_text("".join(line.split()[0] + " x\n" for line in open(emodb_dir / "utt2gen")))
    problems = validate_dir(emodb_dir, audio="exists")
    assert len(problems) == N_UTTS
    with pytest.raises(DataDirError) as e:
        DataDir.load(emodb_dir)
    assert str(e.value) == f"{problems[0]} (and {N_UTTS - 1} more problem(s); run 'sertk data validate {emodb_dir}')"


def test_load_checks_that_audio_exists(emodb_dir, emodb_replica):
    (emodb_replica / "wav" / "03a01Aa.wav").unlink()
    with pytest.raises(DataDirError, match="wav.scp:1: audio file .* does not exist"):
        DataDir.load(emodb_dir)
    assert len(DataDir.load(emodb_dir, audio="none").utts) == N_UTTS


def test_load_with_a_label_map_override(emodb_dir, tmp_path):
    edit_labels(emodb_dir, lambda doc: doc["classes"].remove("fear"))  # now broken
    with pytest.raises(DataDirError, match="labels.yaml"):
        DataDir.load(emodb_dir)
    override = LabelMap(("anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"),
                        {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness",
                         "T": "sadness", "N": "neutral"}, "emodb")
    assert DataDir.load(emodb_dir, labels=override).labels == override


def test_select(emodb_dir):
    add_segments(emodb_dir, [FIRST, "emodb_08-08a01Aa"])
    dd = DataDir.load(emodb_dir)
    part = dd.select([FIRST])
    assert part.utts == [FIRST] and list(part.segments) == [f"{FIRST}-1", f"{FIRST}-2"]
    assert all(list(t) == [FIRST] for t in part.tables.values())
    assert dd.select_speakers(["emodb_09"]).speakers == ["emodb_09"]
    with pytest.raises(DataDirError, match="1 utterance\\(s\\) are not in the data dir, e.g. 'nope'"):
        dd.select([FIRST, "nope"])
    assert len(dd.utts) == N_UTTS  # select does not change the original


def _failing_write_into(monkeypatch):
    """DataDir.write_into writes one file, then fails as a full disk would."""

    def write_one_then_fail(self, path):
        (path / "wav.scp").write_text("half written\n")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DataDir, "write_into", write_one_then_fail)


def test_save_is_atomic_over_an_existing_dir(emodb_dir, tmp_path, monkeypatch):
    dd = DataDir.load(emodb_dir).select(utts_of(emodb_dir)[:3])
    out = tmp_path / "out"
    DataDir.load(emodb_dir).save(out)
    before = snapshot(out)
    _failing_write_into(monkeypatch)
    with pytest.raises(OSError):
        dd.save(out)
    assert snapshot(out) == before and validate_dir(out) == []
    assert leftovers(tmp_path) == []


def test_save_failure_creates_nothing(emodb_dir, tmp_path, monkeypatch):
    dd = DataDir.load(emodb_dir)
    _failing_write_into(monkeypatch)
    with pytest.raises(OSError):
        dd.save(tmp_path / "new")
    assert not (tmp_path / "new").exists() and leftovers(tmp_path) == []


def test_cli_write_failure_is_one_line_and_leaves_the_output_alone(emodb_dir, tmp_path, monkeypatch, sertk_cli,
                                                                   user_error):
    out = tmp_path / "sub"
    assert sertk_cli("data", "subset", emodb_dir, out, "--first", "5").exit_code == 0
    before = snapshot(out)
    _failing_write_into(monkeypatch)
    assert user_error(sertk_cli("data", "subset", emodb_dir, out, "--first", "3")) == "No space left on device"
    assert snapshot(out) == before and leftovers(tmp_path) == []


def test_save_writes_spk2utt_from_utt2spk(tmp_path):
    dd = synthetic_dir({"s2": 1, "s1": 2})
    dd.save(tmp_path / "d")
    assert (tmp_path / "d" / "spk2utt").read_text() == "s1 s1-u00 s1-u01\ns2 s2-u00\n"
    assert not (tmp_path / "d" / "segments").exists()
    assert os.listdir(tmp_path) == ["d"]
