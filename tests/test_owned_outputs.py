"""A command replaces only what it made: every writing command refuses an output folder holding anything
its kind of output does not contain, with one line naming the first such entry, and leaves it all as it was;
a folder holding only an earlier output of the same kind is still replaced."""
import shutil
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from sertk.decode import write_decode_dir
from sertk.errors import OutputError
from sertk.fsutil import foreign_entry, glob_escape, owned_by
from sertk.train.expdir import owns_exp_dir

REPO = Path(__file__).resolve().parents[1]
LOGMEL = REPO / "egs" / "TEMPLATE" / "conf" / "features" / "logmel64.yaml"
CRNN = REPO / "egs" / "TEMPLATE" / "conf" / "models" / "crnn.yaml"


def test_owned_by_matches_part_by_part_and_empty_folders_by_their_leading_parts():
    owns = owned_by(("wav.scp", "utt2*", "fold[0-9]*/train/wav.scp"))
    assert owns(PurePosixPath("utt2emo"), False) and owns(PurePosixPath("fold3/train/wav.scp"), False)
    assert not owns(PurePosixPath("fold3/x/train/wav.scp"), False)     # '*' never spans a '/'
    assert not owns(PurePosixPath("fold3/train"), False)                 # a file named like a folder
    assert owns(PurePosixPath("fold3/train"), True) and not owns(PurePosixPath("notes"), True)
    assert owned_by((glob_escape("a[1]*.wav"),))(PurePosixPath("a[1]*.wav"), False)
    assert not owned_by((glob_escape("a[1]*.wav"),))(PurePosixPath("a1x.wav"), False)


def test_foreign_entry_names_the_first_unowned_file_link_or_empty_folder(tmp_path):
    owns = owned_by(("wav.scp", "split*/*/wav.scp"))
    (tmp_path / "split2" / "1").mkdir(parents=True)
    (tmp_path / "split2" / "1" / "wav.scp").write_text("x")
    (tmp_path / "wav.scp").write_text("x")
    assert foreign_entry(tmp_path, owns) is None
    (tmp_path / "split2" / "2").mkdir()                  # an empty part folder: something split writes
    assert foreign_entry(tmp_path, owns) is None
    (tmp_path / "Documents").mkdir()
    assert foreign_entry(tmp_path, owns) == "Documents/"
    (tmp_path / "Documents" / "thesis.txt").write_text("years of work")
    assert foreign_entry(tmp_path, owns) == "Documents/thesis.txt"
    shutil.rmtree(tmp_path / "Documents")
    (tmp_path / "split2" / "1" / "link").symlink_to(tmp_path / "wav.scp")
    assert foreign_entry(tmp_path, owns) == "split2/1/link"


@pytest.fixture
def protocol(emodb_dir, tmp_path, sertk_cli):
    out = tmp_path / "loso"
    assert sertk_cli("data", "folds", emodb_dir, "--protocol", "loso", "--out", out).exit_code == 0
    return out


def _plant(folder: Path, marker: str) -> Path:
    """`folder` holding the kind's own marker (what once made the old code replace it) and a user's file."""
    (folder / Path(marker).parent).mkdir(parents=True, exist_ok=True)
    (folder / marker).write_text("made by sertk\n")
    (folder / "Documents").mkdir()
    thesis = folder / "Documents" / "thesis.txt"
    thesis.write_text("years of work")
    return thesis


def _refused(result, user_error, folder: Path, thesis: Path, kind: str) -> None:
    line = user_error(result)
    assert f"holds 'Documents/thesis.txt', which {kind} does not contain" in line or \
        "holds 'Documents/thesis.txt', which no sertk run wrote" in line, line
    assert thesis.read_text() == "years of work"
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]   # no temp left


@pytest.mark.parametrize("command", ["subset", "combine", "split", "prepare", "import"])
def test_data_commands_refuse_a_data_dir_holding_a_users_files(command, emodb_dir, emodb_replica, tmp_path,
                                                                sertk_cli, user_error):
    out = tmp_path / "F"
    thesis = _plant(out, "1/wav.scp" if command == "split" else "wav.scp")
    csv = tmp_path / "list.csv"
    csv.write_text(f"path,label,speaker\n{emodb_replica}/wav/03a01Wa.wav,angry,a\n")
    args = {"subset": ("data", "subset", emodb_dir, out, "--first", 3),
            "combine": ("data", "combine", out, emodb_dir),
            "split": ("data", "split", emodb_dir, 2, "--out", out),
            "prepare": ("data", "prepare", "emodb", "--root", emodb_replica, "--out", out),
            "import": ("data", "import", "--csv", csv, "--out", out)}[command]
    kind = "a split dir" if command == "split" else "a data dir"
    _refused(sertk_cli(*args), user_error, out, thesis, kind)


def test_a_data_dir_that_sertk_wrote_is_replaced_with_its_split_parts(emodb_dir, tmp_path, sertk_cli):
    out = tmp_path / "F"
    assert sertk_cli("data", "combine", out, emodb_dir).exit_code == 0
    assert sertk_cli("data", "split", out, "2").exit_code == 0
    result = sertk_cli("data", "subset", emodb_dir, out, "--first", 3)
    assert result.exit_code == 0 and len((out / "wav.scp").read_text().splitlines()) == 3
    assert not (out / "split2").exists()


def test_data_folds_and_cross_refuse_a_protocol_dir_holding_a_users_files(emodb_dir, protocol, tmp_path,
                                                                          sertk_cli, user_error):
    thesis = _plant(protocol, "protocol.yaml")
    _refused(sertk_cli("data", "folds", emodb_dir, "--protocol", "loso", "--out", protocol), user_error,
             protocol, thesis, "a protocol dir")
    mapping = tmp_path / "map.yaml"
    mapping.write_text("source: emodb\ntarget: emodb\nclasses: [anger, boredom, disgust, fear, happiness, sadness, neutral]\n")
    _refused(sertk_cli("data", "cross", emodb_dir, emodb_dir, "--map", mapping, "--out", protocol), user_error,
             protocol, thesis, "a protocol dir")
    (thesis.parent / "thesis.txt").unlink()
    thesis.parent.rmdir()                  # the recipe's check.txt and every fold's data dirs are its own
    (protocol / "check.txt").write_text("OK\n")
    assert sertk_cli("data", "folds", emodb_dir, "--protocol", "loso", "--out", protocol).exit_code == 0


def test_features_extract_refuses_a_dump_holding_a_users_files(emodb_dir, tmp_path, sertk_cli, user_error):
    out = tmp_path / "dump"
    thesis = _plant(out, "features.yaml")
    _refused(sertk_cli("features", "extract", emodb_dir, out, "--conf", LOGMEL), user_error, out, thesis,
             "a feature dump")
    (thesis.parent / "thesis.txt").unlink()
    thesis.parent.rmdir()
    assert sertk_cli("features", "extract", emodb_dir, out, "--conf", LOGMEL).exit_code == 0
    assert sertk_cli("features", "extract", emodb_dir, out, "--conf", LOGMEL).exit_code == 0   # its own dump


def test_a_decode_dir_holding_a_users_files_is_refused(tmp_path):
    out = tmp_path / "decode_test"
    thesis = _plant(out, "post_seg")
    post = {"u1-0": [0.2, 0.8]}
    with pytest.raises(OutputError, match="holds 'Documents/thesis.txt', which a decode dir does not contain"):
        write_decode_dir(out, post, {"u1-0": "u1"}, ["anger", "neutral"], {})
    assert thesis.read_text() == "years of work"


def test_download_refuses_a_corpus_folder_holding_a_users_files(emodb_replica, tmp_path, sertk_cli, user_error):
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for wav in sorted((emodb_replica / "wav").glob("*.wav"))[:2]:
            z.write(wav, f"wav/{wav.name}")
    dest = tmp_path / "downloads"
    thesis = _plant(dest / "emodb", "wav/03a01Wa.wav")
    _refused(sertk_cli("data", "download", "emodb", "--zip", archive, "--dest", dest), user_error,
             dest / "emodb", thesis, "a emodb release")


def test_train_refuses_an_exp_dir_holding_a_users_files(emodb_dir, protocol, tmp_path, sertk_cli, user_error):
    exp = tmp_path / "exp"
    thesis = _plant(exp, "train.log")
    result = sertk_cli("train", "--config", CRNN, "--fold-dir", protocol / "fold1", "--feats", tmp_path,
                       "--exp", exp)
    _refused(result, user_error, exp, thesis, "")
    assert sorted(p.name for p in exp.iterdir()) == ["Documents", "train.log"]


def test_an_exp_dir_owns_its_runs_grid_points_decodes_and_pack():
    for rel in ("best.pt", "tensorboard/events.out.tfevents.1.host", "decode_test/scoring/confusion.png",
                "decode_dev/votes/mean/hyp", "grid/01_layerall/last.pt", "grid/01_layerall/decode_dev/post_seg",
                "model.sertk", ".last.pt.abc.tmp"):
        assert owns_exp_dir(PurePosixPath(rel), False), rel
    for rel in ("notes.txt", "grid/notes.txt", "decode_test/notes.txt", "tensorboard/sub/x"):
        assert not owns_exp_dir(PurePosixPath(rel), False), rel


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no file can be made")
def test_an_output_that_cannot_be_made_is_named_not_its_temp_file():
    from sertk.fsutil import atomic_output_dir, atomic_write_text
    with pytest.raises(OSError) as raised:
        atomic_write_text(Path("/proc/sertk-results.csv"), "x")
    assert raised.value.filename == "/proc/sertk-results.csv"
    with pytest.raises(OSError) as raised:
        with atomic_output_dir(Path("/proc/sertk-out")):
            pass
    assert raised.value.filename == "/proc/sertk-out"
