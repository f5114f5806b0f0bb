"""Atomic file and directory output: readers never see a half-written result."""
import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from sertk.errors import OutputError


_UMASK = os.umask(0)
os.umask(_UMASK)


def new_file_mode() -> int:
    """The mode open() gives a new file (mkstemp's temp files are 0600, private to their owner)."""
    return 0o666 & ~_UMASK


def new_dir_mode() -> int:
    """The mode mkdir() gives a new folder (mkdtemp's are 0700)."""
    return 0o777 & ~_UMASK


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temp file in the same folder and a rename."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and a rename."""
    atomic_write_with(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_with(path: Path, write: Callable[[str], None]) -> None:
    """`write(temp_path)` fills a temp file in `path`'s folder, which then replaces `path` (mode as open()
    would give it); on any failure the temp file is removed and `path` left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_output_dir(path: Path, kind: str = "output dir",
                      replaceable: Callable[[Path], bool] = lambda p: False) -> Iterator[Path]:
    """Yield an empty temp dir that replaces `path` only if the block finishes.

    On any exception the temp dir is removed and `path` is left exactly as it was, so a failed
    command never leaves a half-built data dir behind. An existing `path` is replaced whole, so it
    must be empty or pass `replaceable` (be the same `kind` of output): a mistyped --out must not
    delete somebody's folder.
    """
    path = Path(path).resolve()
    if path.exists() and not (path.is_dir() and (not any(path.iterdir()) or replaceable(path))):
        raise OutputError(f"{path}: exists and is not a {kind}; refusing to replace it "
                          "(remove it or choose another output)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, new_dir_mode())
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if path.exists():
        old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
        os.rmdir(old)
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
