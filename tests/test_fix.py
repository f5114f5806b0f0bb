"""`sertk data fix`: sort, deduplicate, drop what cannot be kept, rebuild spk2utt, keep backups."""
import logging
import random
import re
from pathlib import Path

import pytest

from sertk.data import fix as fix_module
from sertk.data.fix import fix_dir
from sertk.data.table import invert_utt2spk, read_table
from sertk.data.validate import validate_dir
from sertk.errors import DataDirError

N_UTTS = 28
FIRST = "emodb_03-03a01Aa"


def lines(d: Path, name: str):
    return (d / name).read_text(encoding="utf-8").splitlines()


def write_lines(d: Path, name: str, new):
    (d / name).write_text("".join(f"{line}\n" for line in new), encoding="utf-8")


def snapshot(d: Path):
    """Every file of the data dir (not the backups) -> its bytes."""
    return {p.name: p.read_bytes() for p in d.iterdir() if p.is_file()}


def backups(d: Path):
    return sorted((d / ".backup").iterdir()) if (d / ".backup").is_dir() else []


def spk2utt_text(d: Path) -> str:
    return "".join(f"{s} {' '.join(us)}\n" for s, us in invert_utt2spk(read_table(d / "utt2spk")).items())


def assert_fixed_and_clean(d: Path, before, report):
    """The backup holds exactly the changed files, each equal to its original; the dir validates."""
    assert report.backup is not None and report.backup.parent == d / ".backup"
    assert sorted(p.name for p in report.backup.iterdir()) == sorted(n for n in report.changed if n in before)
    for name in report.changed:
        if name in before:
            assert (report.backup / name).read_bytes() == before[name], name
    assert validate_dir(d) == []
    assert (d / "spk2utt").read_text() == spk2utt_text(d)


# --- a clean dir is left alone ------------------------------------------------------------------

def test_clean_dir_has_nothing_to_fix(emodb_dir, sertk_cli):
    before = snapshot(emodb_dir)
    report = fix_dir(emodb_dir)
    assert (report.kept, report.changed, report.backup, dict(report.dropped)) == (N_UTTS, [], None, {})
    assert snapshot(emodb_dir) == before and not (emodb_dir / ".backup").exists()
    result = sertk_cli("data", "fix", emodb_dir)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"nothing to fix\n{emodb_dir}: {N_UTTS} utterances\n"
    assert not (emodb_dir / ".backup").exists()


# --- what it repairs ----------------------------------------------------------------------------

def test_sorts_every_file(emodb_dir):
    before = snapshot(emodb_dir)
    rng = random.Random(0)
    for name in ("utt2emo", "wav.scp", "spk2utt"):
        shuffled = lines(emodb_dir, name)
        rng.shuffle(shuffled)
        write_lines(emodb_dir, name, shuffled)
    damaged = snapshot(emodb_dir)
    assert validate_dir(emodb_dir, audio="none") != []
    report = fix_dir(emodb_dir)
    assert report.kept == N_UTTS and not report.dropped
    assert sorted(report.changed) == ["spk2utt", "utt2emo", "wav.scp"]
    assert snapshot(emodb_dir) == before  # sorted back to exactly what prepare wrote
    assert_fixed_and_clean(emodb_dir, damaged, report)


def test_collapses_identical_duplicates(emodb_dir):
    old = lines(emodb_dir, "wav.scp")
    write_lines(emodb_dir, "wav.scp", [*old, old[0], old[5]])
    old_gen = lines(emodb_dir, "utt2gen")
    write_lines(emodb_dir, "utt2gen", [old_gen[0], *old_gen])
    damaged = snapshot(emodb_dir)
    report = fix_dir(emodb_dir)
    assert report.kept == N_UTTS and not report.dropped
    assert sorted(report.changed) == ["utt2gen", "wav.scp"]
    assert lines(emodb_dir, "wav.scp") == old and lines(emodb_dir, "utt2gen") == old_gen
    assert_fixed_and_clean(emodb_dir, damaged, report)


def test_drops_utterances_missing_from_any_file_with_counts(emodb_dir, sertk_cli):
    wav = lines(emodb_dir, "wav.scp")
    gone_audio = wav[9].split()[0]
    write_lines(emodb_dir, "wav.scp", wav[:9] + wav[10:])
    gen = lines(emodb_dir, "utt2gen")
    gone_gen = [gen[2].split()[0], gen[20].split()[0]]
    write_lines(emodb_dir, "utt2gen", gen[:2] + gen[3:20] + gen[21:])
    write_lines(emodb_dir, "utt2emo", [*lines(emodb_dir, "utt2emo"), "emodb_10-10a01Zz anger"])  # only here
    damaged = snapshot(emodb_dir)
    result = sertk_cli("data", "fix", emodb_dir)
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert out[:2] == ["dropped 2 utterance(s): missing from utt2gen", "dropped 2 utterance(s): missing from wav.scp"]
    assert out[-1] == f"{emodb_dir}: {N_UTTS - 3} utterances"
    kept = set(read_table(emodb_dir / "wav.scp"))
    assert len(kept) == N_UTTS - 3 and not kept & {gone_audio, *gone_gen, "emodb_10-10a01Zz"}
    for name in ("utt2spk", "utt2emo", "utt2gen", "utt2lab_raw", "utt2dur"):
        assert set(read_table(emodb_dir / name)) == kept, name
    (backup,) = backups(emodb_dir)
    assert f"originals in {backup}" in out[2]
    for name in ("wav.scp", "utt2gen", "utt2emo", "spk2utt", "utt2spk"):
        assert (backup / name).read_bytes() == damaged[name]
    assert validate_dir(emodb_dir) == []


def test_drops_conflicting_duplicates(emodb_dir):
    emo = lines(emodb_dir, "utt2emo")
    write_lines(emodb_dir, "utt2emo", [emo[0], f"{FIRST} anger", *emo[1:]])
    dur = lines(emodb_dir, "utt2dur")
    other = dur[4].split()[0]
    write_lines(emodb_dir, "utt2dur", [*dur[:5], f"{other} 9.9", *dur[5:]])
    damaged = snapshot(emodb_dir)
    report = fix_dir(emodb_dir)
    assert dict(report.dropped) == {"same id with two different values in one file": 2}
    assert report.kept == N_UTTS - 2
    for name in ("wav.scp", "utt2spk", "utt2emo", "utt2dur", "utt2gen", "utt2lab_raw"):
        assert not {FIRST, other} & set(read_table(emodb_dir / name)), name
    assert FIRST not in (emodb_dir / "spk2utt").read_text()
    assert_fixed_and_clean(emodb_dir, damaged, report)


def test_drops_malformed_lines_with_a_warning(emodb_dir, caplog):
    gen = lines(emodb_dir, "utt2gen")
    write_lines(emodb_dir, "utt2gen", [gen[0], gen[1].split()[0], "", *gen[2:]])
    with caplog.at_level(logging.WARNING, logger="sertk"):
        report = fix_dir(emodb_dir)
    assert dict(report.dropped) == {"missing from utt2gen": 1} and report.kept == N_UTTS - 1
    assert f"{emodb_dir / 'utt2gen'}:2: dropping malformed line" in caplog.text
    assert f"{emodb_dir / 'utt2gen'}:3: dropping malformed line" in caplog.text
    assert validate_dir(emodb_dir) == []


def test_invalid_utf8_line_is_dropped_not_a_crash(emodb_dir):
    data = (emodb_dir / "utt2gen").read_bytes().split(b"\n")
    data[1] = data[1][:-1] + b"\xff"
    (emodb_dir / "utt2gen").write_bytes(b"\n".join(data))
    report = fix_dir(emodb_dir)
    assert dict(report.dropped) == {"missing from utt2gen": 1}
    assert validate_dir(emodb_dir) == []


@pytest.mark.parametrize("damage", ["missing", "wrong", "unsorted"])
def test_rebuilds_spk2utt(emodb_dir, damage):
    good = (emodb_dir / "spk2utt").read_text()
    if damage == "missing":
        (emodb_dir / "spk2utt").unlink()
    elif damage == "wrong":
        write_lines(emodb_dir, "spk2utt", ["emodb_03 emodb_08-08a01Aa", "emodb_99 x"])
    else:
        rows = [line.split() for line in reversed(lines(emodb_dir, "spk2utt"))]
        write_lines(emodb_dir, "spk2utt", [" ".join([spk, *reversed(utts)]) for spk, *utts in rows])
    damaged = snapshot(emodb_dir)
    report = fix_dir(emodb_dir)
    assert report.changed == ["spk2utt"] and report.kept == N_UTTS
    assert (emodb_dir / "spk2utt").read_text() == good
    assert_fixed_and_clean(emodb_dir, damaged, report)


def test_spk2utt_follows_dropped_utterances(emodb_dir):
    wav = lines(emodb_dir, "wav.scp")
    write_lines(emodb_dir, "wav.scp", wav[:7] + wav[14:])  # all of emodb_08 has no audio entry
    fix_dir(emodb_dir)
    spk2utt = read_table(emodb_dir / "spk2utt")
    assert list(spk2utt) == ["emodb_03", "emodb_09", "emodb_10"]
    assert validate_dir(emodb_dir) == []


def test_filters_and_sorts_segments(emodb_dir, caplog):
    utt2 = lines(emodb_dir, "wav.scp")[1].split()[0]
    wav = lines(emodb_dir, "wav.scp")
    write_lines(emodb_dir, "wav.scp", wav[1:])  # FIRST loses its audio entry and is dropped
    segs = [f"{utt2}-2 {utt2} 0.10 0.20", f"{FIRST}-1 {FIRST} 0.00 0.10", f"{utt2}-1 {utt2} 0.00 0.10",
            f"{utt2}-1 {utt2} 0.00 0.10",                                    # identical duplicate
            "zz-1 emodb_99-x 0.00 0.10",                                     # unknown utterance
            f"{utt2}-3 {utt2} 0.20 0.30", f"{utt2}-3 {utt2} 0.20 0.25"]      # conflicting duplicate
    write_lines(emodb_dir, "segments", segs)
    damaged = snapshot(emodb_dir)
    with caplog.at_level(logging.WARNING, logger="sertk"):
        report = fix_dir(emodb_dir)
    assert lines(emodb_dir, "segments") == [f"{utt2}-1 {utt2} 0.00 0.10", f"{utt2}-2 {utt2} 0.10 0.20"]
    assert "segments" in report.changed and (report.backup / "segments").read_bytes() == damaged["segments"]
    assert f"dropping 1 segment(s) listed twice with different values, e.g. '{utt2}-3'" in caplog.text
    assert_fixed_and_clean(emodb_dir, damaged, report)


def test_crlf_line_ends_are_rewritten_as_lf(emodb_dir):
    good = (emodb_dir / "utt2emo").read_bytes()
    (emodb_dir / "utt2emo").write_bytes(good.replace(b"\n", b"\r\n"))
    report = fix_dir(emodb_dir)
    assert report.changed == ["utt2emo"] and (emodb_dir / "utt2emo").read_bytes() == good


def test_text_file_is_fixed_like_the_others(emodb_dir):
    wav = lines(emodb_dir, "wav.scp")
    write_lines(emodb_dir, "text", [f"{line.split()[0]} ein Satz" for line in reversed(wav[:-1])])
    report = fix_dir(emodb_dir)
    assert dict(report.dropped) == {"missing from text": 1}
    assert lines(emodb_dir, "text") == [f"{line.split()[0]} ein Satz" for line in wav[:-1]]
    assert validate_dir(emodb_dir) == []


# --- backups and idempotence ----------------------------------------------------------------------

def test_second_run_has_nothing_to_fix_and_writes_no_backup(emodb_dir, sertk_cli):
    old = lines(emodb_dir, "utt2emo")
    write_lines(emodb_dir, "utt2emo", [*reversed(old), old[3]])
    damaged = snapshot(emodb_dir)
    first = sertk_cli("data", "fix", emodb_dir)
    assert first.exit_code == 0, first.output
    (backup,) = backups(emodb_dir)
    assert re.fullmatch(r"\d{8}-\d{6}", backup.name)  # .backup/<YYYYmmdd-HHMMSS>/
    assert first.stdout.splitlines()[0] == f"rewrote utt2emo; originals in {backup}"
    assert sorted(p.name for p in backup.iterdir()) == ["utt2emo"]
    assert (backup / "utt2emo").read_bytes() == damaged["utt2emo"]
    fixed = snapshot(emodb_dir)
    second = sertk_cli("data", "fix", emodb_dir)
    assert second.exit_code == 0 and second.stdout.splitlines()[0] == "nothing to fix"
    assert backups(emodb_dir) == [backup] and snapshot(emodb_dir) == fixed
    assert validate_dir(emodb_dir) == []


def test_a_folder_where_a_table_should_be_is_one_line_and_nothing_written(emodb_dir, sertk_cli, user_error):
    (emodb_dir / "spk2utt").unlink()
    (emodb_dir / "spk2utt").mkdir()
    assert user_error(sertk_cli("data", "fix", emodb_dir)) == \
        f"{emodb_dir / 'spk2utt'}: not a file (a folder?); move it away and run the fix again"
    assert not (emodb_dir / ".backup").exists()


def test_two_fixes_in_one_second_keep_both_backups(emodb_dir, monkeypatch):
    monkeypatch.setattr(fix_module.time, "strftime", lambda fmt: "20240101-000000")
    write_lines(emodb_dir, "utt2emo", list(reversed(lines(emodb_dir, "utt2emo"))))
    first = fix_dir(emodb_dir)
    first_original = (first.backup / "utt2emo").read_bytes()
    write_lines(emodb_dir, "utt2gen", list(reversed(lines(emodb_dir, "utt2gen"))))
    second = fix_dir(emodb_dir)
    write_lines(emodb_dir, "utt2dur", list(reversed(lines(emodb_dir, "utt2dur"))))
    third = fix_dir(emodb_dir)
    assert [b.name for b in (first.backup, second.backup, third.backup)] == \
        ["20240101-000000", "20240101-000000.1", "20240101-000000.2"]
    assert (first.backup / "utt2emo").read_bytes() == first_original
    assert [p.name for p in second.backup.iterdir()] == ["utt2gen"]
    assert [p.name for p in third.backup.iterdir()] == ["utt2dur"]


def test_backup_dir_does_not_disturb_validation(emodb_dir):
    write_lines(emodb_dir, "utt2emo", list(reversed(lines(emodb_dir, "utt2emo"))))
    fix_dir(emodb_dir)
    assert backups(emodb_dir) and validate_dir(emodb_dir) == []


# --- what it refuses --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["wav.scp", "utt2spk"])
def test_refuses_a_dir_without_wav_scp_or_utt2spk(emodb_dir, sertk_cli, user_error, name):
    (emodb_dir / name).unlink()
    before = snapshot(emodb_dir)
    with pytest.raises(DataDirError, match=f"no {name}"):
        fix_dir(emodb_dir)
    assert user_error(sertk_cli("data", "fix", emodb_dir)) == f"{emodb_dir}: no {name}, cannot fix this data dir"
    assert snapshot(emodb_dir) == before and not (emodb_dir / ".backup").exists()


@pytest.mark.parametrize("damage, why", [
    ({"utt2spk": ""}, f"{N_UTTS} missing from utt2spk"),
    ({"utt2emo": "no_such_utt anger\n"}, f"{N_UTTS} missing from utt2emo; 1 missing from wav.scp"),
    ({name: "" for name in ("wav.scp", "utt2spk", "utt2emo", "utt2gen", "utt2dur", "utt2lab_raw")},
     "no file lists an utterance"),
])
def test_refuses_to_drop_every_utterance(emodb_dir, sertk_cli, user_error, damage, why):
    """A fix that would leave a 0-utterance data dir is refused, and the dir is left as it was."""
    for name, text in damage.items():
        if (emodb_dir / name).is_file():
            (emodb_dir / name).write_text(text, encoding="utf-8")
    before = snapshot(emodb_dir)
    with pytest.raises(DataDirError, match="would drop every utterance"):
        fix_dir(emodb_dir)
    assert user_error(sertk_cli("data", "fix", emodb_dir)) == \
        f"{emodb_dir}: fixing would drop every utterance ({why}); nothing changed"
    assert snapshot(emodb_dir) == before and not (emodb_dir / ".backup").exists()


def test_cli_fix_of_a_missing_dir_is_a_usage_error(tmp_path, sertk_cli):
    result = sertk_cli("data", "fix", tmp_path / "nope")
    assert result.exit_code == 2 and "does not exist" in result.output
    assert isinstance(result.exception, SystemExit)
