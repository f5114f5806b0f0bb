"""The `sertk` command: help everywhere, version, and one-line errors that change nothing."""
import click
import pytest
from click.testing import CliRunner

from replicas import make_emodb
from sertk import __version__
from sertk.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def all_commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, prefix + (name,))


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("path", list(all_commands(main)), ids=" ".join)
def test_every_command_has_help(path):
    result = run(*path, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output


@pytest.fixture
def emodb_root(tmp_path):
    return make_emodb(tmp_path / "emodb", speakers=["03", "08", "09"], texts=["a01"])


def test_prepare_validate_folds_check(tmp_path, emodb_root):
    result = run("data", "prepare", "emodb", "--root", emodb_root, "--out", tmp_path / "X")
    assert result.exit_code == 0, result.output
    assert "emodb: 21 utterances, 3 speakers, 7 classes" in result.output
    assert "skipped 1: not an EmoDB wav name" in result.output
    assert ["total"] + ["3"] * 7 + ["21"] in [line.split() for line in result.output.splitlines()]
    result = run("data", "validate", tmp_path / "X")
    assert result.exit_code == 0 and "OK (21 utterances, 3 speakers, 7 classes)" in result.output
    result = run("data", "folds", tmp_path / "X", "--protocol", "loso", "--out", tmp_path / "Y")
    assert result.exit_code == 0 and "3 folds, speaker-independent" in result.output
    result = run("data", "check", tmp_path / "Y")
    assert result.exit_code == 0 and "OK: in every fold" in result.output


def test_check_warns_of_a_class_missing_from_a_split(tmp_path, emodb_root):
    """Speaker 08 without anger: fold 1's dev (08) cannot weigh anger in its choice, fold 2's test UA leaves it out."""
    for wav in (emodb_root / "wav").glob("08*W*.wav"):
        wav.unlink()
    run("data", "prepare", "emodb", "--root", emodb_root, "--out", tmp_path / "X")
    run("data", "folds", tmp_path / "X", "--protocol", "loso", "--out", tmp_path / "Y")
    result = run("data", "check", tmp_path / "Y")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("WARNING: ")]
    assert warnings == [
        "WARNING: fold1/dev has no anger: the fold's dev scores, which choose its checkpoint (and any grid point), "
        "average the other 6 classes",
        "WARNING: fold2/test has no anger: the fold's own UA and macro-F1 average the other 6 classes (pooled "
        "scores cover every class)",
        "WARNING: fold3/train has no anger: the model never trains on it"]   # 3 speakers: 08 alone trains fold 3
    # and training on fold 1 says so in its log
    from helpers import LOGMEL16, TINY_CRNN
    from sertk.config.loading import load_config
    from sertk.features.extract import extract_features
    from sertk.train.trainer import train
    extract_features(tmp_path / "X", LOGMEL16, tmp_path / "dump")
    train(load_config(None, TINY_CRNN + ["train.epochs=1"]), tmp_path / "Y" / "fold1", tmp_path / "dump",
          tmp_path / "exp")
    assert ("dev has no anger: the dev UA that chooses the checkpoint averages the other 6 classes"
            in (tmp_path / "exp" / "train.log").read_text())


def test_a_corpus_registered_in_scanners_gets_a_prepare_command(tmp_path, emodb_root, monkeypatch):
    """egs/README.md's 'Adding a corpus': a preparer registered in SCANNERS is enough, no CLI code."""
    from sertk.data import corpora
    from sertk.data.labels import default_label_map

    def scan(root):
        """My corpus: EmoDB files under another name."""
        return corpora.emodb.scan(root)
    monkeypatch.setitem(corpora.SCANNERS, "my_corpus", scan)
    labels = tmp_path / "labels.yaml"
    default_label_map("emodb").save(labels)
    assert "my_corpus" in run("data", "prepare", "--help").output
    help_text = run("data", "prepare", "my_corpus", "--help").output
    assert "My corpus: EmoDB files under another name." in help_text and "--skip-bad-audio" in help_text
    result = run("data", "prepare", "my_corpus", "--root", emodb_root, "--out", tmp_path / "X", "--labels", labels)
    assert result.exit_code == 0, result.output
    assert "my_corpus: 21 utterances, 3 speakers, 7 classes" in result.output
    assert run("data", "prepare", "nope", "--root", emodb_root, "--out", tmp_path / "Y").exit_code == 2


def error_line(result):
    lines = [line for line in result.output.splitlines() if line.startswith("sertk: error:")]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def untouched(out):
    return [p.name for p in out.iterdir()] == ["utt2fold"] and (out / "utt2fold").read_text() == "x"


@pytest.fixture
def out(tmp_path):
    """An earlier output the commands may replace: utt2fold belongs to data dirs (utt2*) and protocol dirs."""
    path = tmp_path / "out"
    path.mkdir()
    (path / "utt2fold").write_text("x")
    return path


def test_missing_audio_in_wav_scp(tmp_path, emodb_root, out):
    run("data", "prepare", "emodb", "--root", emodb_root, "--out", tmp_path / "X")
    wav_scp = tmp_path / "X" / "wav.scp"
    lines = wav_scp.read_text().splitlines()
    lines[1] = lines[1].split()[0] + " /no/such/file.wav"
    wav_scp.write_text("\n".join(lines) + "\n")
    assert "wav.scp:2: audio file /no/such/file.wav does not exist" in \
        error_line(run("data", "folds", tmp_path / "X", "--protocol", "loso", "--out", out))
    assert untouched(out)
    result = run("data", "validate", tmp_path / "X")
    assert "wav.scp:2: /no/such/file.wav: no such audio file" in result.output
    assert "1 problem(s)" in error_line(result)


def test_corrupt_wav(emodb_root, out):
    (emodb_root / "wav" / "08a01Ta.wav").write_bytes(b"RIFF\x00\x00junk")
    line = error_line(run("data", "prepare", "emodb", "--root", emodb_root, "--out", out))
    assert "08a01Ta.wav: not a readable audio file" in line and "--skip-bad-audio" in line
    assert untouched(out)


def test_unmapped_label(tmp_path, emodb_root, out):
    labels = tmp_path / "labels.yaml"
    labels.write_text("classes: [anger, rest]\nmap: {W: anger, L: rest, E: rest, A: rest, F: rest, T: rest}\n")
    line = error_line(run("data", "prepare", "emodb", "--root", emodb_root, "--out", out, "--labels", labels))
    assert "raw label 'N' is not in the label map" in line
    assert untouched(out)


def test_wrong_root(tmp_path, out):
    line = error_line(run("data", "prepare", "ravdess", "--root", tmp_path, "--out", out))
    assert "no Actor_XX folders found" in line
    assert untouched(out)


def test_options_for_another_protocol_are_refused(tmp_path, emodb_root):
    run("data", "prepare", "emodb", "--root", emodb_root, "--out", tmp_path / "X")
    line = error_line(run("data", "folds", tmp_path / "X", "--protocol", "loso", "--out", tmp_path / "Y",
                          "--num-folds", "3"))
    assert "--num-folds does not apply to loso" in line


def test_import_csv(tmp_path, emodb_root):
    csv_path = tmp_path / "c.csv"
    csv_path.write_text(f"path,label,speaker\n{emodb_root}/wav/03a01Wa.wav,angry,a\n"
                        f"{emodb_root}/wav/08a01Ta.wav,sad,b\n")
    result = run("data", "import", "--csv", csv_path, "--out", tmp_path / "D", "--corpus", "mine")
    assert result.exit_code == 0 and "mine: 2 utterances, 2 speakers, 2 classes" in result.output


def test_a_folder_that_is_not_a_data_dir_is_never_replaced(tmp_path, emodb_root):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    line = error_line(run("data", "prepare", "emodb", "--root", emodb_root, "--out", home))
    assert "holds 'thesis.tex', which a data dir does not contain; refusing to replace the folder" in line
    assert (home / "thesis.tex").read_text() == "years of work"


def test_rerunning_replaces_an_earlier_output(tmp_path, emodb_root):
    for _ in range(2):
        result = run("data", "prepare", "emodb", "--root", emodb_root, "--out", tmp_path / "X")
        assert result.exit_code == 0, result.output
    run("data", "folds", tmp_path / "X", "--protocol", "loso", "--out", tmp_path / "Y")
    result = run("data", "folds", tmp_path / "X", "--protocol", "loso", "--out", tmp_path / "Y")
    assert result.exit_code == 0 and "3 folds" in result.output
    (tmp_path / "Y" / "fold1" / "notes.txt").write_text("x")  # not something `data folds` wrote: kept
    line = error_line(run("data", "folds", tmp_path / "X", "--protocol", "loso", "--out", tmp_path / "Y"))
    assert "holds 'fold1/notes.txt', which a protocol dir does not contain" in line
    assert (tmp_path / "Y" / "fold1" / "notes.txt").read_text() == "x"
    protocol_out = error_line(run("data", "folds", tmp_path / "X", "--protocol", "loso", "--out", tmp_path / "X" / ".."))
    assert "would replace the input" in protocol_out


def test_split_default_folder_and_rerun(tmp_path, emodb_root):
    run("data", "prepare", "emodb", "--root", emodb_root, "--out", tmp_path / "X")
    for _ in range(2):
        result = run("data", "split", tmp_path / "X", "2")
        assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "X" / "split2").iterdir()) == ["1", "2"]


def test_an_output_holding_an_input_is_refused(tmp_path, emodb_root):
    run("data", "prepare", "emodb", "--root", emodb_root, "--out", tmp_path / "D")
    run("data", "split", tmp_path / "D", "2")
    line = error_line(run("data", "subset", tmp_path / "D" / "split2" / "1", tmp_path / "D", "--first", "3"))
    assert "would replace the input" in line
    assert (tmp_path / "D" / "split2" / "1" / "wav.scp").is_file()
