"""Stage 0: fetch a public corpus, extract it safely, verify it against the official release.

The manifests in `corpora/manifests/` list every file the preparer reads. Where we hold a copy
byte-identical to the release (EmoDB) each line carries the file's SHA-256 and a download that
does not match is refused, file by file. Where we do not (our RAVDESS copy is resampled), the
archive itself is checked against the MD5 its publisher lists, and the manifest gives names only,
so a truncated or wrong archive is still refused. Extraction refuses absolute paths, `..`, links
and implausibly large archives.
"""
import http.client
import logging
import shutil
import stat
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Tuple

from sertk.errors import SertkError
from sertk.fsutil import (atomic_output_dir, atomic_write_with, file_digest, glob_escape, owned_by,
                          removing_new_folders, sha256_file)

log = logging.getLogger(__name__)

MANIFESTS = Path(__file__).resolve().parent / "corpora" / "manifests"
MAX_UNPACKED_BYTES = 20 * 2**30


class DownloadError(SertkError):
    """A download, extraction or verification that failed."""


@dataclass(frozen=True)
class Source:
    url: str
    manifest: str      # file in MANIFESTS: "<sha256>  <path>" or just "<path>" (relative to the corpus root)
    licence: str
    archive_md5: Optional[str] = None   # as the publisher lists it


SOURCES: Dict[str, Source] = {
    "emodb": Source("http://emodb.bilderbar.info/download/download.zip", "emodb.sha256",
                    "free for research (TU Berlin); cite Burkhardt et al., Interspeech 2005"),
    # Zenodo record 1188976, the audio-only speech part; the MD5 is the one Zenodo lists
    "ravdess": Source("https://zenodo.org/record/1188976/files/Audio_Speech_Actors_01-24.zip", "ravdess.files",
                      "CC BY-NC-SA 4.0; cite Livingstone & Russo, PLoS ONE 13(5): e0196391, 2018",
                      archive_md5="bc696df654c87fed845eb13823edef8a"),
}


def fetch_corpus(corpus: str, dest: Path, url: Optional[str] = None, zip_path: Optional[Path] = None) -> Path:
    """Return the verified corpus root `dest/<corpus>`, downloading and extracting it if needed."""
    if corpus not in SOURCES:
        raise DownloadError(f"no download for '{corpus}'; downloadable: {', '.join(SOURCES)}")
    source, dest = SOURCES[corpus], Path(dest)
    if url is not None:
        check_url(url)
    root = dest / corpus
    if root.is_dir() and not verify_manifest(root, MANIFESTS / source.manifest):
        log.info("%s: already downloaded and verified", root)
        return root
    with removing_new_folders(dest):   # a failure leaves no empty --dest behind that it made
        if zip_path is None:
            zip_path = dest / f"{corpus}.zip"
            if not zip_path.is_file():
                download(url or source.url, zip_path)
        if source.archive_md5 and file_digest(Path(zip_path), "md5") != source.archive_md5:
            raise DownloadError(f"{zip_path}: MD5 differs from the official release's ({source.archive_md5}); "
                                "remove it and download again")
        log.info("extracting %s (licence: %s)", zip_path, source.licence)
        release = owned_by(manifest_paths(MANIFESTS / source.manifest) + zip_member_paths(Path(zip_path)))
        with atomic_output_dir(root, f"{corpus} release", release) as tmp:
            safe_extract(Path(zip_path), tmp)
            problems = verify_manifest(tmp, MANIFESTS / source.manifest)
            if problems:
                raise DownloadError(f"{zip_path}: {len(problems)} file(s) differ from the official release, "
                                    f"e.g. {problems[0]}; remove the zip and download again")
    return root


URL_SCHEMES = ("http", "https", "ftp", "file")


def check_url(url: str) -> None:
    """`url` must be an address urllib can open: a scheme it knows, then the rest."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in URL_SCHEMES or not rest:
        hint = f" (e.g. http://{url})" if not sep else ""
        raise DownloadError(f"--url '{url}' is not an address sertk can download from: it must begin with "
                            f"{', '.join(s + '://' for s in URL_SCHEMES)}{hint}")


def download(url: str, path: Path) -> None:
    """`url` saved as `path`, through a temp file beside it that no failure leaves behind."""
    check_url(url)
    log.info("downloading %s", url)

    def fetch(tmp: str) -> None:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out)
        except (OSError, ValueError, http.client.HTTPException) as e:   # URLError is an OSError
            raise DownloadError(f"cannot download {url} ({getattr(e, 'reason', None) or e}); download it "
                                "yourself and pass its zip or extracted folder") from None
    atomic_write_with(path, fetch)


def safe_extract(zip_path: Path, out: Path) -> None:
    """Extract `zip_path` into `out`, refusing any member that would land outside it."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DownloadError(f"{zip_path}: not a readable zip archive ({e})") from None
    with archive:
        members = archive.infolist()
        if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
            raise DownloadError(f"{zip_path}: unpacks to more than {MAX_UNPACKED_BYTES >> 30} GiB; refusing")
        for m in members:
            name = PurePosixPath(m.filename.replace("\\", "/"))
            if name.is_absolute() or ".." in name.parts or (name.parts and ":" in name.parts[0]):
                raise DownloadError(f"{zip_path}: member '{m.filename}' points outside the target folder; refusing")
            if stat.S_ISLNK(m.external_attr >> 16):
                raise DownloadError(f"{zip_path}: member '{m.filename}' is a symbolic link; refusing")
        archive.extractall(out)


def manifest_paths(manifest: Path) -> Tuple[str, ...]:
    return tuple(glob_escape(line.split(None, 1)[-1]) for line in manifest.read_text(encoding="utf-8").splitlines()
                 if line.strip())


def zip_member_paths(zip_path: Path) -> Tuple[str, ...]:
    """The archive's member paths, as patterns (an unreadable archive has none: extraction says why)."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            return tuple(glob_escape(m.filename.replace("\\", "/").rstrip("/")) for m in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        return ()


def verify_manifest(root: Path, manifest: Path) -> List[str]:
    """Problems ('<file>: missing' or '<file>: checksum differs'); empty when every file matches."""
    problems = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        fields = line.split(None, 1)
        digest, rel = fields if len(fields) == 2 else (None, fields[0])
        path = Path(root) / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif digest is not None and sha256_file(path) != digest:
            problems.append(f"{rel}: checksum differs")
    return problems
