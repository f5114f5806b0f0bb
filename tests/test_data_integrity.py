"""Wrong data that used to pass silently (issue 24): `sertk data check` finds audio shared between splits (same
file or same samples, whatever the speaker ids say) and labels or wav paths changed after the folds were made;
`sertk data validate` refuses an empty data dir and, with `--audio samples`, decodes every file."""
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from replicas import write_wav
from sertk.data.check import check_protocol
from sertk.data.cross import class_mapping_from_dict, make_cross_protocol
from sertk.data.datadir import DataDir
from sertk.data.protocols import SPLITS, Fold, fold_checksum


def _csv_corpus(tmp_path, sertk_cli, extra_rows=(), speakers=("ann", "bob", "cat")):
    """A data dir imported from a CSV: two files per speaker (calm, angry), plus `extra_rows`."""
    rows = ["path,label,speaker"]
    for spk in speakers:
        for label in ("calm", "angry"):
            write_wav(tmp_path / "wav" / f"{spk}_{label}.wav")
            rows.append(f"wav/{spk}_{label}.wav,{label},{spk}")
    (tmp_path / "list.csv").write_text("\n".join(rows + list(extra_rows)) + "\n")
    result = sertk_cli("data", "import", "--csv", tmp_path / "list.csv", "--out", tmp_path / "all")
    assert result.exit_code == 0, result.output
    return tmp_path / "all"


def _loso(sertk_cli, data: Path, out: Path) -> Path:
    result = sertk_cli("data", "folds", data, "--protocol", "loso", "--out", out)
    assert result.exit_code == 0, result.output
    return out


def _problems(result):
    return [line[len("PROBLEM: "):] for line in result.stdout.splitlines() if line.startswith("PROBLEM: ")]


# --- the same audio in two splits ---------------------------------------------------------------

def test_one_wav_under_two_speakers_is_a_leak_named_in_every_fold(tmp_path, sertk_cli, user_error):
    data = _csv_corpus(tmp_path, sertk_cli, ["wav/ann_calm.wav,calm,bob"])   # ann's file, also as bob's
    protocol = _loso(sertk_cli, data, tmp_path / "loso")
    result = sertk_cli("data", "check", protocol)
    assert user_error(result) == f"{protocol}: 3 problem(s)"
    wav = (tmp_path / "wav" / "ann_calm.wav").resolve()
    assert _problems(result) == [
        f"fold1: the same audio is in dev and test (1 case(s)): 'bob-ann_calm' (dev, speaker bob) and "
        f"'ann-ann_calm' (test, speaker ann): same file {wav}",
        f"fold2: the same audio is in train and test (1 case(s)): 'ann-ann_calm' (train, speaker ann) and "
        f"'bob-ann_calm' (test, speaker bob): same file {wav}",
        f"fold3: the same audio is in train and dev (1 case(s)): 'bob-ann_calm' (train, speaker bob) and "
        f"'ann-ann_calm' (dev, speaker ann): same file {wav}"]
    # the path alone finds it too
    assert len(_problems(sertk_cli("data", "check", protocol, "--audio", "paths"))) == 3


def test_a_copy_under_another_name_and_format_is_found_by_its_samples(tmp_path, sertk_cli, user_error):
    samples, sr = sf.read(str(write_wav(tmp_path / "wav" / "ann_calm.wav")), dtype="int16")
    (tmp_path / "copy").mkdir()
    sf.write(str(tmp_path / "copy" / "x.flac"), samples, sr)              # ann's audio, as cat's FLAC
    data = _csv_corpus(tmp_path, sertk_cli, ["copy/x.flac,calm,cat"])
    protocol = _loso(sertk_cli, data, tmp_path / "loso")
    result = sertk_cli("data", "check", protocol)
    user_error(result)
    problems = _problems(result)
    assert len(problems) == 3 and all("same samples" in p for p in problems)
    assert problems[0] == ("fold1: the same audio is in train and test (1 case(s)): 'cat-x' (train, speaker cat) and "
                           "'ann-ann_calm' (test, speaker ann): same samples")
    assert "audio: 7 file(s) compared across splits by same path or same decoded samples (sha1)" in result.stdout
    # comparing paths only misses it, and says that it compared paths only
    paths = sertk_cli("data", "check", protocol, "--audio", "paths")
    assert paths.exit_code == 0 and "same path only (--audio paths)" in paths.stdout


def test_identical_audio_inside_one_split_is_a_warning(tmp_path, sertk_cli):
    shutil.copy(write_wav(tmp_path / "wav" / "ann_calm.wav"), tmp_path / "ann_again.wav")
    data = _csv_corpus(tmp_path, sertk_cli, ["ann_again.wav,calm,ann"])   # same speaker: always one split
    result = sertk_cli("data", "check", _loso(sertk_cli, data, tmp_path / "loso"))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARNING: ")]
    assert warnings == ["WARNING: 1 group(s) of identical audio, each inside one split of a fold (no leak between "
                        "splits, but each counts more than once): 'ann-ann_again' (speaker ann) = 'ann-ann_calm' "
                        "(speaker ann) (same samples)"]
    assert result.stdout.splitlines()[-1].startswith("OK: in every fold")


def test_a_clean_protocol_reports_what_its_audio_check_did(emodb_dir, sertk_cli, tmp_path):
    result = sertk_cli("data", "check", _loso(sertk_cli, emodb_dir, tmp_path / "loso"))
    assert result.exit_code == 0, result.output
    assert "audio: 28 file(s) compared across splits by same path or same decoded samples (sha1)" in result.stdout
    assert "WARNING" not in result.stdout and "PROBLEM" not in result.stdout


# --- labels and paths changed after the folds were made -----------------------------------------

def _set(path: Path, utt: str, value: str) -> None:
    lines = [f"{utt} {value}" if line.split(None, 1)[0] == utt else line
             for line in path.read_text().splitlines()]
    path.write_text("\n".join(lines) + "\n")


def test_a_flipped_test_label_is_named_by_fold_and_split(emodb_dir, sertk_cli, tmp_path, user_error):
    protocol = _loso(sertk_cli, emodb_dir, tmp_path / "loso")
    test = protocol / "fold2" / "test"
    utt = DataDir.load(test).utts[0]                      # emodb_08-08a01Aa: fear (raw A)
    _set(test / "utt2emo", utt, "anger")                  # flipped, and its raw label with it, so the dir validates
    _set(test / "utt2lab_raw", utt, "W")
    assert check_protocol(protocol).problems == [
        "fold2/test: its utterance ids, speakers, classes, audio paths or segments are not what 'sertk data folds' "
        "wrote (checksum mismatch: a label, a wav path or the list was changed); rerun 'sertk data folds' if the "
        "change is meant"]
    assert user_error(sertk_cli("data", "check", protocol)) == f"{protocol}: 1 problem(s)"


def test_a_test_wav_pointed_at_another_speakers_file(emodb_dir, sertk_cli, tmp_path, user_error):
    protocol = _loso(sertk_cli, emodb_dir, tmp_path / "loso")
    test, train = DataDir.load(protocol / "fold1" / "test"), DataDir.load(protocol / "fold1" / "train")
    utt, other = test.utts[0], train.utts[0]
    _set(protocol / "fold1" / "test" / "wav.scp", utt, train.tables["wav.scp"][other])
    result = sertk_cli("data", "check", protocol)
    user_error(result)
    problems = _problems(result)
    assert problems[0].startswith("fold1/test: its utterance ids, speakers, classes, audio paths or segments")
    assert any(p.startswith("fold1: the same audio is in train and test (1 case(s)): "
                            f"'{other}' (train, speaker emodb_09) and '{utt}' (test, speaker emodb_03): same file")
               for p in problems)


def test_an_edited_card_checksum_is_a_problem(emodb_dir, sertk_cli, tmp_path):
    protocol = _loso(sertk_cli, emodb_dir, tmp_path / "loso")
    card = yaml.safe_load((protocol / "protocol.yaml").read_text())
    card["checksum"] = "sha256:" + "0" * 64
    (protocol / "protocol.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    assert check_protocol(protocol).problems == [
        f"{protocol / 'protocol.yaml'}: the card's checksum does not match its folds' checksums (the card was edited)"]


def test_the_card_holds_a_checksum_per_split(emodb_dir, sertk_cli, tmp_path):
    protocol = _loso(sertk_cli, emodb_dir, tmp_path / "loso")
    card = yaml.safe_load((protocol / "protocol.yaml").read_text())
    assert card["checksum"].startswith("sha256:") and len(card["folds"]) == 4
    sums = [entry["checksums"] for entry in card["folds"]]
    assert all(sorted(s) == ["dev", "test", "train"] for s in sums)
    assert len({s["test"] for s in sums} | {s["train"] for s in sums}) == 8
    # loso: fold k's dev speaker is fold k+1's test speaker, the same list with the same labels and paths
    assert [s["dev"] for s in sums] == [s["test"] for s in sums[1:] + sums[:1]]


def _old_style(protocol: Path) -> None:
    """Rewrite the card as 'sertk data folds' wrote it before the checksum covered labels and paths."""
    card = yaml.safe_load((protocol / "protocol.yaml").read_text())
    for entry in card["folds"]:
        del entry["checksums"]
    card["checksum"] = fold_checksum([Fold(*(DataDir.load(protocol / f"fold{k}" / s).utts for s in SPLITS))
                                      for k in range(1, card["num_folds"] + 1)])
    (protocol / "protocol.yaml").write_text(yaml.safe_dump(card, sort_keys=False))


def test_an_older_card_is_verified_by_ids_with_a_warning(emodb_dir, sertk_cli, tmp_path):
    protocol = _loso(sertk_cli, emodb_dir, tmp_path / "loso")
    _old_style(protocol)
    result = sertk_cli("data", "check", protocol)
    assert result.exit_code == 0, result.output
    assert (f"WARNING: {protocol / 'protocol.yaml'}: the card predates the checksum over labels and audio paths, so "
            "only the fold lists' utterance ids were verified; rerun 'sertk data folds' (or 'sertk data cross') to "
            "protect labels and paths too") in result.stdout
    # its ids are still verified
    shutil.rmtree(protocol / "fold1" / "dev")
    shutil.copytree(protocol / "fold2" / "dev", protocol / "fold1" / "dev")
    assert any("do not match the card's checksum" in p for p in check_protocol(protocol).problems)


def test_cross_corpus_protocols_get_the_full_checksum(emodb_dir, tmp_path, sertk_cli):
    dd = DataDir.load(emodb_dir)
    src, tgt = dd.select_speakers(["emodb_03", "emodb_08", "emodb_09"]), dd.select_speakers(["emodb_10"])
    mapping = class_mapping_from_dict({"source": "emodb", "target": "emodb", "classes": list(dd.labels.classes)}, "m")
    card = make_cross_protocol(src, tgt, mapping, tmp_path / "cross")
    assert "checksums" in card["folds"][0]
    assert check_protocol(tmp_path / "cross").problems == []


# --- sertk data validate ------------------------------------------------------------------------

def test_a_dir_of_empty_files_is_an_error(tmp_path, sertk_cli, user_error):
    data = tmp_path / "empty"
    data.mkdir()
    for name in ("wav.scp", "utt2spk", "spk2utt", "utt2emo"):
        (data / name).write_text("")
    (data / "labels.yaml").write_text(yaml.safe_dump({"classes": ["a", "b"], "map": {"a": "a", "b": "b"}}))
    result = sertk_cli("data", "validate", data)
    assert f"{data / 'wav.scp'}: no utterances: the data dir is empty" in result.stdout
    assert user_error(result) == f"{data}: 1 problem(s)"


def _nan_wav(path: Path) -> None:
    x = np.full(4800, 0.1, np.float32)
    x[100] = np.nan
    sf.write(str(path), x, 16000, subtype="FLOAT")


def test_validate_samples_decodes_every_file_and_says_so(emodb_dir, sertk_cli, user_error):
    ok = sertk_cli("data", "validate", emodb_dir, "--audio", "samples")
    assert ok.exit_code == 0, ok.output
    assert ok.stdout == (f"{emodb_dir}: OK (28 utterances, 4 speakers, 7 classes; audio samples checked: 28 file(s) "
                         "decoded, 0 truncated, 0 too short, 0 silent)\n")
    wav = dict(line.split(None, 1) for line in (emodb_dir / "wav.scp").read_text().splitlines())
    _nan_wav(Path(wav["emodb_08-08a01Fa"]))
    assert sertk_cli("data", "validate", emodb_dir).exit_code == 0      # the header is fine: NaN passes
    result = sertk_cli("data", "validate", emodb_dir, "--audio", "samples")
    assert result.stdout.splitlines() == [
        f"{emodb_dir / 'wav.scp'}:10: {wav['emodb_08-08a01Fa']}: audio contains non-finite samples (NaN or Inf)"]
    assert user_error(result) == (f"{emodb_dir}: 1 problem(s); audio samples checked: 27 file(s) decoded, "
                                  "0 truncated, 0 too short, 0 silent")


def test_validate_samples_warns_on_truncated_short_and_silent_files(emodb_dir, sertk_cli):
    wav = dict(line.split(None, 1) for line in (emodb_dir / "wav.scp").read_text().splitlines())
    cut = Path(wav["emodb_03-03a01Aa"])
    cut.write_bytes(cut.read_bytes()[:5000])                                  # header says 0.3 s
    sf.write(wav["emodb_03-03a01Ea"], np.zeros(4800), 16000)                  # digital silence
    sf.write(wav["emodb_03-03a01Fa"], np.full(160, 0.2), 16000)               # 10 ms
    (emodb_dir / "utt2dur").unlink()                                          # durations changed on purpose
    result = sertk_cli("data", "validate", emodb_dir, "--audio", "samples")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"warning: {emodb_dir / 'wav.scp'}:1: {cut}: truncated: the header promises 9600 "
                               "bytes of audio (about 0.30 s) but the file holds 4956 (0.15 s)")
    assert lines[1] == f"warning: {emodb_dir / 'wav.scp'}:2: {wav['emodb_03-03a01Ea']}: silent: every sample is zero " \
                       "(digital silence)"
    assert lines[2].startswith(f"warning: {emodb_dir / 'wav.scp'}:3: {wav['emodb_03-03a01Fa']}: too short: 10.0 ms")
    assert lines[3].endswith("audio samples checked: 28 file(s) decoded, 1 truncated, 1 too short, 1 silent)")


@pytest.mark.parametrize("audio", ["none", "exists", "header", "samples"])
def test_every_audio_level_refuses_an_empty_dir(tmp_path, sertk_cli, audio, emodb_dir):
    empty = tmp_path / "e"
    DataDir.load(emodb_dir).select([]).save(empty)
    result = sertk_cli("data", "validate", empty, "--audio", audio)
    assert result.exit_code == 1 and "no utterances: the data dir is empty" in result.stdout
