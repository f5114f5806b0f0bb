"""Stage 0: fetch a public corpus, extract it safely, verify every file against a manifest.

The manifests in `corpora/manifests/` hold the SHA-256 of every file the preparer reads, taken
from a copy byte-identical to the official release; a download that does not match is refused,
file by file. Extraction refuses absolute paths, `..`, links and implausibly large archives.
"""
import logging
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional

from sertk.errors import SertkError
from sertk.fsutil import atomic_output_dir, sha256_file

log = logging.getLogger(__name__)

MANIFESTS = Path(__file__).resolve().parent / "corpora" / "manifests"
MAX_UNPACKED_BYTES = 20 * 2**30


class DownloadError(SertkError):
    """A download, extraction or verification that failed."""


@dataclass(frozen=True)
class Source:
    url: str
    manifest: str      # file in MANIFESTS: "<sha256>  <path relative to the corpus root>"
    licence: str


SOURCES: Dict[str, Source] = {
    "emodb": Source("http://emodb.bilderbar.info/download/download.zip", "emodb.sha256",
                    "free for research (TU Berlin); cite Burkhardt et al., Interspeech 2005"),
}


def fetch_corpus(corpus: str, dest: Path, url: Optional[str] = None, zip_path: Optional[Path] = None) -> Path:
    """Return the verified corpus root `dest/<corpus>`, downloading and extracting it if needed."""
    if corpus not in SOURCES:
        raise DownloadError(f"no download for '{corpus}'; downloadable: {', '.join(SOURCES)}")
    source, dest = SOURCES[corpus], Path(dest)
    root = dest / corpus
    if root.is_dir() and not verify_manifest(root, MANIFESTS / source.manifest):
        log.info("%s: already downloaded and verified", root)
        return root
    if zip_path is None:
        zip_path = dest / f"{corpus}.zip"
        if not zip_path.is_file():
            download(url or source.url, zip_path)
    log.info("extracting %s (licence: %s)", zip_path, source.licence)
    with atomic_output_dir(root, f"{corpus} download", lambda p: True) as tmp:
        safe_extract(Path(zip_path), tmp)
        problems = verify_manifest(tmp, MANIFESTS / source.manifest)
        if problems:
            raise DownloadError(f"{zip_path}: {len(problems)} file(s) differ from the official release, "
                                f"e.g. {problems[0]}; remove the zip and download again")
    return root


def download(url: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s", url)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, tmp)
        except (urllib.error.URLError, OSError) as e:
            Path(tmp.name).unlink(missing_ok=True)
            raise DownloadError(f"cannot download {url} ({getattr(e, 'reason', e)}); download it yourself "
                                f"and pass its zip or extracted folder") from None
    Path(tmp.name).replace(path)


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


def verify_manifest(root: Path, manifest: Path) -> List[str]:
    """Problems ('<file>: missing' or '<file>: checksum differs'); empty when every file matches."""
    problems = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        digest, rel = line.split(None, 1)
        path = Path(root) / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{rel}: checksum differs")
    return problems

