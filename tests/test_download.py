"""Stage 0 downloads: safe extraction and verification against the release manifest."""
import os
import re
import stat
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from sertk.data import download as download_module
from sertk.data.download import (
    MANIFESTS,
    SOURCES,
    DownloadError,
    download,
    fetch_corpus,
    safe_extract,
    verify_manifest,
)

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


@pytest.mark.parametrize("url", ["emodb.bilderbar.info/download/download.zip", "gopher://x/y.zip", "http://"])
def test_a_url_without_a_known_scheme_is_one_line_and_leaves_nothing(tmp_path, sertk_cli, user_error, url):
    dest = tmp_path / "new" / "downloads"
    msg = user_error(sertk_cli("data", "download", "emodb", "--dest", dest, "--url", url))
    assert msg.startswith(f"--url '{url}' is not an address sertk can download from: it must begin with http://")
    assert list(tmp_path.iterdir()) == []       # no temp file, and no --dest (nor parent) that it made
    with pytest.raises(DownloadError, match="is not an address"):
        download(url, tmp_path / "x.zip")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_download_removes_its_temp_and_the_empty_dest_it_made(tmp_path, sertk_cli, user_error):
    made = tmp_path / "made" / "downloads"
    msg = user_error(sertk_cli("data", "download", "emodb", "--dest", made, "--url", "file:///no/such/zip"))
    assert msg.startswith("cannot download file:///no/such/zip")
    assert list(tmp_path.iterdir()) == []
    # a --dest that existed before stays, empty or not; only the temp file goes
    kept = tmp_path / "kept"
    kept.mkdir()
    user_error(sertk_cli("data", "download", "emodb", "--dest", kept, "--url", "file:///no/such/zip"))
    assert kept.is_dir() and list(kept.iterdir()) == []
    (kept / "notes.txt").write_text("mine")
    user_error(sertk_cli("data", "download", "emodb", "--dest", kept / "sub", "--url", "file:///no/such/zip"))
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]
    # a failure after the download keeps the zip (and so the folder holding it)
    (tmp_path / "page.html").write_text("<html>moved</html>")
    msg = user_error(sertk_cli("data", "download", "emodb", "--dest", made, "--url", (tmp_path / "page.html").as_uri()))
    assert "not a readable zip archive" in msg
    assert sorted(p.name for p in made.iterdir()) == ["emodb.zip"]


def test_a_bad_zip_given_with_zip_leaves_no_empty_dest(tmp_path, sertk_cli, user_error):
    (tmp_path / "x.zip").write_text("html error page")
    msg = user_error(sertk_cli("data", "download", "emodb", "--dest", tmp_path / "d" / "e",
                               "--zip", tmp_path / "x.zip"))
    assert "not a readable zip archive" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.zip"]


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


def test_name_only_manifest_lines_check_presence(tmp_path):
    (tmp_path / "Actor_01").mkdir()
    (tmp_path / "Actor_01" / "a.wav").write_bytes(b"any content")
    manifest = tmp_path / "m.files"
    manifest.write_text("Actor_01/a.wav\nActor_01/b.wav\n")
    assert verify_manifest(tmp_path, manifest) == ["Actor_01/b.wav: missing"]


def test_ravdess_manifest_lists_the_speech_release():
    lines = (MANIFESTS / SOURCES["ravdess"].manifest).read_text().splitlines()
    assert len(lines) == len(set(lines)) == 1440
    for line in lines:
        m = re.fullmatch(r"Actor_(\d\d)/03-01-0[1-8]-0[12]-0[12]-0[12]-(\d\d)\.wav", line)
        assert m and m[1] == m[2], line


@pytest.fixture
def small_ravdess_source(tmp_path, monkeypatch):
    """SOURCES["ravdess"] pointing at a small manifest and the MD5 of a zip of a replica."""
    import hashlib
    from replicas import make_ravdess
    release = make_ravdess(tmp_path / "release", actors=[1], emotions=[1, 2])
    names = sorted(str(p.relative_to(release)) for p in release.rglob("03-01-*.wav"))
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "ravdess.files").write_text("".join(f"{n}\n" for n in names))
    archive = make_zip(tmp_path / "speech.zip", {n: (release / n).read_bytes() for n in names})
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    monkeypatch.setattr(download_module, "MANIFESTS", manifests)
    monkeypatch.setitem(SOURCES, "ravdess", replace(SOURCES["ravdess"], archive_md5=md5))
    return archive, names


def test_ravdess_zip_is_checked_by_md5_and_names(small_ravdess_source, tmp_path):
    archive, names = small_ravdess_source
    root = fetch_corpus("ravdess", tmp_path / "downloads", zip_path=archive)
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*.wav")) == names


def test_a_different_ravdess_zip_is_refused_before_extraction(small_ravdess_source, tmp_path):
    archive, names = small_ravdess_source
    other = make_zip(tmp_path / "other.zip", {names[0]: b"not the release"})
    with pytest.raises(DownloadError, match=r"MD5 differs from the official release's"):
        fetch_corpus("ravdess", tmp_path / "downloads", zip_path=other)
    assert not (tmp_path / "downloads" / "ravdess").exists()


def test_a_zip_missing_release_files_is_refused(small_ravdess_source, tmp_path, monkeypatch):
    import hashlib
    archive, names = small_ravdess_source
    partial = make_zip(tmp_path / "partial.zip", {names[0]: b"x"})
    monkeypatch.setitem(SOURCES, "ravdess",
                        replace(SOURCES["ravdess"], archive_md5=hashlib.md5(partial.read_bytes()).hexdigest()))
    missing = len(names) - 1
    with pytest.raises(DownloadError, match=rf"{missing} file\(s\) differ from the official release, e.g. {names[1]}: missing"):
        fetch_corpus("ravdess", tmp_path / "downloads", zip_path=partial)
