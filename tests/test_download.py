"""Stage 0 downloads: safe extraction and verification against the release manifest."""
import os
import stat
import zipfile
from pathlib import Path

import pytest

from sertk.data.download import DownloadError, download, fetch_corpus, safe_extract, verify_manifest

CORPORA = Path(os.environ.get("SERTK_CORPORA", Path(__file__).resolve().parents[2] / "shared" / "corpora"))


def make_zip(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt", "C:/evil.txt"])
def test_members_outside_the_target_are_refused(tmp_path, name):
    archive = make_zip(tmp_path / "x.zip", {"ok.txt": "fine", name: "bad"})
    with pytest.raises(DownloadError, match="points outside the target folder"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_symlinks_are_refused(tmp_path):
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w") as z:
        info = zipfile.ZipInfo("link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        z.writestr(info, "/etc/passwd")
    with pytest.raises(DownloadError, match="symbolic link"):
        safe_extract(archive, tmp_path / "out")


def test_not_a_zip(tmp_path):
    (tmp_path / "x.zip").write_text("html error page")
    with pytest.raises(DownloadError, match="not a readable zip archive"):
        safe_extract(tmp_path / "x.zip", tmp_path / "out")


def test_manifest_names_missing_and_changed_files(tmp_path):
    (tmp_path / "wav").mkdir()
    (tmp_path / "wav" / "a.wav").write_bytes(b"abc")
    (tmp_path / "wav" / "b.wav").write_bytes(b"changed")
    abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    manifest = tmp_path / "m.sha256"
    manifest.write_text(f"{abc}  wav/a.wav\n{abc}  wav/b.wav\n{abc}  wav/c.wav\n")
    assert verify_manifest(tmp_path, manifest) == ["wav/b.wav: checksum differs", "wav/c.wav: missing"]


def test_unreachable_url_is_a_clear_error(tmp_path):
    with pytest.raises(DownloadError, match="cannot download file:///no/such/zip.*download it yourself"):
        download("file:///no/such/zip", tmp_path / "x.zip")
    assert list(tmp_path.iterdir()) == []


def emodb_wav():
    wav = CORPORA / "emodb" / "wav"
    if not wav.is_dir():
        pytest.skip(f"real corpus not available: {wav} is absent")
    return wav


def zip_release(wav: Path, path: Path, tamper: bool = False) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for f in sorted(wav.iterdir()):
            data = f.read_bytes()
            if tamper and f.name == "03a01Fa.wav":
                data = data[:-2] + b"\x00\x01"
            z.writestr(f"wav/{f.name}", data)
        z.writestr("erkennung.txt", "release notes")
    return path


def test_real_emodb_zip_verifies_and_reruns_are_skipped(tmp_path):
    archive = zip_release(emodb_wav(), tmp_path / "download.zip")
    root = fetch_corpus("emodb", tmp_path / "downloads", zip_path=archive)
    assert root == tmp_path / "downloads" / "emodb" and len(list((root / "wav").iterdir())) == 535
    archive.unlink()  # a verified corpus is not extracted again
    assert fetch_corpus("emodb", tmp_path / "downloads", zip_path=None) == root


def test_tampered_emodb_zip_is_refused(tmp_path):
    archive = zip_release(emodb_wav(), tmp_path / "download.zip", tamper=True)
    with pytest.raises(DownloadError, match=r"1 file\(s\) differ from the official release, e.g. wav/03a01Fa.wav"):
        fetch_corpus("emodb", tmp_path / "downloads", zip_path=archive)
    assert not (tmp_path / "downloads" / "emodb").exists()
