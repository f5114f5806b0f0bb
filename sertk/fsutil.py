"""Atomic file and directory output: readers never see a half-written result."""
import contextlib
import fnmatch
import hashlib
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

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


@contextlib.contextmanager
def naming_the_output(path: Path) -> Iterator[None]:
    """An OSError in the block (making a temp file beside `path`: a read-only or special folder such as /proc)
    names `path`, the output the user gave, not the temp file's name they never chose."""
    try:
        yield
    except OSError as e:
        raise type(e)(e.errno, e.strerror, str(path)) from None


def atomic_write_with(path: Path, write: Callable[[str], None]) -> None:
    """`write(temp_path)` fills a temp file in `path`'s folder, which then replaces `path` (mode as open()
    would give it); on any failure the temp file is removed and `path` left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with naming_the_output(path):
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


# does this kind of output write the entry at this relative path (True: an empty folder)?
Owns = Callable[[PurePosixPath, bool], bool]


def owned_by(patterns: Iterable[str]) -> Owns:
    """An `Owns` test from relative-path patterns, matched part by part with fnmatch ('fold*/train/wav.scp');
    an empty folder is owned when it is a leading part of a pattern."""
    split = [tuple(PurePosixPath(p).parts) for p in patterns]

    def owns(rel: PurePosixPath, is_empty_dir: bool = False) -> bool:
        parts = rel.parts
        for pattern in split:
            n = len(parts)
            if (n == len(pattern) or (is_empty_dir and n < len(pattern))) and \
                    all(fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pattern)):
                return True
        return False
    return owns


def glob_escape(name: str) -> str:
    """`name` as an `owned_by` pattern that matches only itself."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def foreign_entry(path: Path, owns: Owns) -> Optional[str]:
    """The first entry under `path` (files, links and empty folders, in name order) that `owns` does not
    claim: something a command writing this kind of output did not make, and must not delete."""
    def walk(folder: Path, rel: PurePosixPath) -> Optional[str]:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            child = rel / entry.name
            if entry.is_dir(follow_symlinks=False):
                if any(os.scandir(entry.path)):
                    found = walk(Path(entry.path), child)
                    if found:
                        return found
                elif not owns(child, True):
                    return f"{child}/"
            elif not owns(child, False):
                return str(child)
        return None
    return walk(Path(path), PurePosixPath())


def check_replaceable(path: Path, kind: str, owns: Optional[Owns]) -> None:
    """Raise `OutputError` unless `path` is absent, an empty folder, or a folder holding only what a `kind`
    writes: a command replaces only what it made (a mistyped --out must not delete somebody's files)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir() or path.is_symlink():
        raise OutputError(f"{path}: exists and is not a {kind} folder; refusing to replace it "
                          "(remove it or choose another output)")
    found = foreign_entry(path, owns or owned_by(()))
    if found:
        raise OutputError(f"{path}: holds '{found}', which a {kind} does not contain; refusing to replace "
                          "the folder (move that away or choose another output)")


@contextlib.contextmanager
def atomic_output_dir(path: Path, kind: str = "output dir", owns: Optional[Owns] = None) -> Iterator[Path]:
    """Yield an empty temp dir that replaces `path` only if the block finishes.

    On any exception the temp dir is removed and `path` is left exactly as it was, so a failed
    command never leaves a half-built data dir behind. An existing `path` is replaced whole, so
    everything in it must be what this `kind` of output writes (`owns`, see `check_replaceable`);
    that is checked before the block runs and again before the swap.
    """
    path = Path(path).resolve()
    check_replaceable(path, kind, owns)
    path.parent.mkdir(parents=True, exist_ok=True)
    with naming_the_output(path):
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, new_dir_mode())
    try:
        yield tmp
        check_replaceable(path, kind, owns)     # a file may have appeared there while we worked
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


def check_file_replaceable(path: Path, kind: str, owned: Callable[[Path], bool],
                           hint: str = "move it away or choose another output") -> None:
    """Raise `OutputError` unless `path` is absent or a file that `owned(path)` recognises as `kind` (an output
    sertk wrote there before): a command replaces only what it made, never somebody's file that happens to
    have the name it was given. `owned` reads the file; a file it cannot read is not ours."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    try:
        ours = path.is_file() and owned(path)
    except (OSError, ValueError, RecursionError):    # unreadable, or not what it should hold
        ours = False
    if not ours:
        raise OutputError(f"{path}: exists and is not {kind}; refusing to replace it ({hint})")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_SOFTWARE = "Software"    # the PNG text key that names the program which wrote a picture


def png_chunks(path: Path) -> Optional[List[Tuple[bytes, bytes]]]:
    """(type, data) of every chunk of the PNG file `path`, up to IEND; the data of text chunks (tEXt) only,
    empty for the others. None when `path` is not a well-formed PNG."""
    chunks = []
    with open(path, "rb") as f:
        if f.read(8) != PNG_SIGNATURE:
            return None
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            size, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind == b"tEXt":
                data = f.read(size)
                if len(data) < size:
                    return None
            else:
                data = b""
                f.seek(size, os.SEEK_CUR)
            if len(f.read(4)) < 4:    # the CRC
                return None
            chunks.append((kind, data))
            if kind == b"IEND":
                return chunks


def png_software(path: Path) -> Optional[str]:
    """The Software text of the PNG file `path` (what wrote it, when it says), else None."""
    for kind, data in png_chunks(path) or ():
        key, _, value = data.partition(b"\0")
        if kind == b"tEXt" and key.decode("latin-1") == PNG_SOFTWARE:
            return value.decode("latin-1")
    return None


@contextlib.contextmanager
def removing_new_folders(path: Path) -> Iterator[None]:
    """On any exception in the block, `path` and the parents of it that did not exist before the block are
    removed again where they are empty, innermost first: a failed command leaves no empty folder it made
    behind, and never removes a folder that existed before it, nor one holding anything."""
    path = Path(path)
    missing = [p for p in (path, *path.parents) if not p.exists() and not p.is_symlink()]
    try:
        yield
    except BaseException:
        for folder in missing:
            try:
                folder.rmdir()
            except OSError:     # not empty (or not ours to remove): it and its parents stay
                break
        raise


def sha256_file(path: Path) -> str:
    return file_digest(path, "sha256")


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
