"""Any other corpus, from a CSV with columns `path,label,speaker` and optional `session,gender,utt_id`.

Relative paths are taken relative to the CSV's folder. Ids: speaker `<speaker>` as given
(whitespace becomes '_'), utterance `<speaker>-<utt_id>`, the utt_id column's value or else the file stem
(give `utt_id` where two of a speaker's files share a stem, e.g. `ann/angry/01.wav` and `ann/calm/01.wav`).
The raw label is the `label` column; without a label map, each distinct label becomes its own class, in
sorted order (labels that differ only in case are warned of: they are two classes). Other columns are
ignored (and columns without a name, a spreadsheet's trailing separators), but segment times (`start` and
`end`) are refused: import takes whole files. A row with a non-empty field past the header's columns, or
one that ends before a required column, is an error naming its line (an unquoted comma inside a field
shifts every column after it); missing trailing optional fields are empty.
"""
import codecs
import csv
import io
import logging
import re
from pathlib import Path
from typing import Dict, List, Optional

from sertk.data.labels import LabelMap
from sertk.data.prepare import Scan, Utterance
from sertk.errors import CorpusError

log = logging.getLogger(__name__)

REQUIRED = ("path", "label", "speaker")
SEGMENT_COLUMNS = ("start", "end")   # segment times together: a data dir's `segments`, not made here
GENDERS = {"f": "f", "female": "f", "w": "f", "m": "m", "male": "m"}
# genders utt2gen cannot hold (it knows f and m): read as an empty cell, which leaves utt2gen out with a warning
UNKNOWN_GENDERS = {"u", "unknown", "other", "x", "na", "n/a", "none", "-"}


def _id(text: str) -> str:
    return re.sub(r"\s+", "_", text.strip())


def scan(csv_path: Path) -> Scan:
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise CorpusError(f"{csv_path}: no such CSV file")
    text = read_csv_text(csv_path)
    if not text.strip():
        raise CorpusError(f"{csv_path}: empty file; need a header line {','.join(REQUIRED)}[,session,gender,utt_id] "
                          "and a row per utterance")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(fields for fields in reader if any(f.strip() for f in fields))   # blank lines before it skipped
        columns = _header(header, csv_path)
        utterances, lines, read = [], {}, reader.line_num   # utterance id -> the line its record starts on
        for fields in reader:
            start, read = read + 1, reader.line_num
            if not any(f.strip() for f in fields):
                continue   # a blank line
            row = _row(fields, columns, f"{csv_path}:{start}")
            utterances.append(_utterance(row, csv_path, start))
            first = lines.setdefault(utterances[-1].utt, start)
            if first != start:
                fix = ("give each row its own utt_id" if "utt_id" in columns else
                       "give the CSV a utt_id column to tell them apart")
                raise CorpusError(f"{csv_path}:{start}: utterance id '{utterances[-1].utt}' is line {first}'s too "
                                  f"(same speaker and {'utt_id' if 'utt_id' in columns else 'file stem'}); {fix}")
    except csv.Error as e:
        raise CorpusError(f"{csv_path}:{reader.line_num}: not a readable CSV line ({e})") from None
    if not utterances:
        raise CorpusError(f"{csv_path}: no rows, only the header")
    return Scan(utterances)


def _header(fields: List[str], csv_path: Path) -> List[str]:
    """The header's column names; an empty name (a spreadsheet's trailing separators) is a column ignored."""
    columns = [c.strip() for c in fields]
    named = [c for c in columns if c]
    missing = [c for c in REQUIRED if c not in named]
    if missing:
        case_only = any(c.lower() in REQUIRED and c not in REQUIRED for c in named)
        hint = ("; column names are lower case" if case_only else
                "; the separator is a comma" if len(named) == 1 and any(d in named[0] for d in ";\t") else
                "; nkululeko's file/emotion columns are path/label here" if {"file", "emotion"} & set(named) else "")
        raise CorpusError(f"{csv_path}: missing column(s) {missing} in the header {named}; need "
                          f"{list(REQUIRED)}, optional session, gender, utt_id{hint}")
    repeated = sorted({c for c in named if named.count(c) > 1})
    if repeated:
        raise CorpusError(f"{csv_path}: column {repeated[0]!r} is in the header twice")
    if all(c in named for c in SEGMENT_COLUMNS):
        raise CorpusError(f"{csv_path}: columns start and end give segment times, which import does not take (it "
                          "reads whole files); cut the segments into files, or write the data dir's segments file")
    return columns


def _row(fields: List[str], columns: List[str], where: str) -> Dict[str, str]:
    """The row by column name. Missing trailing fields are empty, and surplus ones may be (a spreadsheet's
    trailing separators); a surplus field with text, or a row that ends before a required column, is an error
    (an unquoted comma inside a field shifts every column after it)."""
    surplus = [f for f in fields[len(columns):] if f.strip()]
    if surplus or any(columns.index(c) >= len(fields) for c in REQUIRED):
        raise CorpusError(f"{where}: {len(fields)} fields, the header has {len(columns)}"
                          + (" (quote a field that holds a comma)" if surplus else ""))
    return {k: v.strip() for k, v in zip(columns, fields) if k}


def warn_of_case_twins(labels: List[str], where: str) -> None:
    """'Angry' and 'angry' are two classes to an identity map: likely one, spelt twice."""
    by_lower: Dict[str, List[str]] = {}
    for label in labels:
        by_lower.setdefault(label.lower(), []).append(label)
    twins = [" / ".join(group) for group in by_lower.values() if len(group) > 1]
    if twins:
        log.warning("%s: labels that differ only in case are different classes: %s (give a label map, or spell "
                    "them alike)", where, "; ".join(twins))


def read_csv_text(path: Path) -> str:
    """The file as text: UTF-8, with or without a byte-order mark; anything else is a CorpusError naming the
    line and byte offset of the first byte that is not UTF-8 (a CSV saved as Latin-1 or Windows-1252)."""
    data = path.read_bytes()
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise CorpusError(f"{path}: the file is UTF-16 (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CorpusError(f"{path}:{line}: the byte 0x{data[e.start]:02x} at offset {e.start} is not UTF-8; save the "
                          "CSV as UTF-8") from None
    if "\x00" in text:
        at = data.index(b"\x00")
        line = data.count(b"\n", 0, at) + 1
        raise CorpusError(f"{path}:{line}: the byte at offset {at} is a NUL; not a text file")
    return text


def _utterance(row: dict, csv_path: Path, lineno: int) -> Utterance:
    where = f"{csv_path}:{lineno}"
    for col in REQUIRED:
        if not row.get(col):
            raise CorpusError(f"{where}: empty '{col}'")
    path = Path(row["path"])
    if not path.is_absolute():
        path = csv_path.parent / path
    gender = None
    if row.get("gender") and row["gender"].lower() not in UNKNOWN_GENDERS:
        gender = GENDERS.get(row["gender"].lower())
        if gender is None:
            raise CorpusError(f"{where}: gender '{row['gender']}' is not one of f, m, female, male (or unknown, "
                              "other: left out)")
    speaker = _id(row["speaker"])
    stem = _id(row["utt_id"]) if row.get("utt_id") else _id(path.stem)
    return Utterance(utt=f"{speaker}-{stem}", speaker=speaker, path=path, raw_label=row["label"],
                     gender=gender, session=_id(row["session"]) if row.get("session") else None)


def identity_label_map(scan_result: Scan, corpus: Optional[str]) -> LabelMap:
    """Each distinct raw label is a class of its own, in sorted order."""
    labels = sorted({u.raw_label for u in scan_result.utterances})
    warn_of_case_twins(labels, "the CSV's identity label map")
    return LabelMap(tuple(labels), {lab: lab for lab in labels}, corpus, "identity map of the CSV's labels")
