"""Kaldi text tables: one `<key> <value>` per line, sorted by key in C-locale (code point) order."""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Tuple

from sertk.errors import DataDirError
from sertk.fsutil import atomic_write_text

TABLE_ENCODING = "utf-8-sig"   # how Kaldi-style text files are read: UTF-8, with or without a byte-order mark


@dataclass(frozen=True)
class Entry:
    key: str
    value: str
    line: int


def parse_table(path: Path) -> Tuple[List[Entry], List[Tuple[int, str]]]:
    """Read every line of `path`; return the entries and (line, message) for malformed lines.

    The value is the rest of the line after the first run of whitespace, so a wav.scp path
    may contain spaces, as in Kaldi.
    """
    entries, bad = [], []
    # undecodable bytes become lone surrogates, so one bad line is reported instead of the whole
    # read failing with a UnicodeDecodeError; a UTF-8 byte-order mark (Windows editors) is not part of the first key
    with open(path, encoding=TABLE_ENCODING, errors="surrogateescape") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not _is_utf8(line):
                bad.append((lineno, "not valid UTF-8 text"))
                continue
            if not line:
                bad.append((lineno, "empty line"))
                continue
            parts = line.split(None, 1)
            if len(parts) < 2:
                bad.append((lineno, f"'{parts[0]}' has no value"))
                continue
            entries.append(Entry(parts[0], parts[1].strip(), lineno))
    return entries, bad


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_table(path: Path, one_word: bool = False) -> Dict[str, str]:
    """Read a table strictly: any malformed line or duplicate key raises `DataDirError`. `one_word`: each
    value must be a single word (`<utt> <class>`), so a line with a third field is an error, not a value."""
    entries, bad = parse_table(path)
    if bad:
        lineno, msg = bad[0]
        raise DataDirError(f"{path}:{lineno}: {msg}")
    table: Dict[str, str] = {}
    for e in entries:
        if e.key in table:
            raise DataDirError(f"{path}:{e.line}: duplicate id '{e.key}'")
        if one_word and len(e.value.split()) > 1:
            raise DataDirError(f"{path}:{e.line}: expected two fields '<id> <value>', got "
                               f"{1 + len(e.value.split())}: '{e.key} {e.value}'")
        table[e.key] = e.value
    return table


def format_table(items: Iterable[Tuple[str, str]]) -> str:
    return "".join(f"{k} {v}\n" for k, v in sorted(items))


def write_table(path: Path, table: Mapping[str, str]) -> None:
    atomic_write_text(path, format_table(table.items()))


def invert_utt2spk(utt2spk: Mapping[str, str]) -> Dict[str, List[str]]:
    """spk2utt as Kaldi builds it: speakers sorted, their utterances sorted."""
    spk2utt: Dict[str, List[str]] = {}
    for utt in sorted(utt2spk):
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    return dict(sorted(spk2utt.items()))
