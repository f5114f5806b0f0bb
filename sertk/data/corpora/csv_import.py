"""Any other corpus, from a CSV with columns `path,label,speaker` and optional `session,gender`.

Relative paths are taken relative to the CSV's folder. Ids: speaker `<speaker>` as given
(whitespace becomes '_'), utterance `<speaker>-<file stem>`. The raw label is the `label` column;
without a label map, each distinct label becomes its own class, in sorted order.
"""
import codecs
import csv
import io
import re
from pathlib import Path
from typing import Optional

from sertk.data.labels import LabelMap
from sertk.data.prepare import Scan, Utterance
from sertk.errors import CorpusError

REQUIRED = ("path", "label", "speaker")
GENDERS = {"f": "f", "female": "f", "w": "f", "m": "m", "male": "m"}


def _id(text: str) -> str:
    return re.sub(r"\s+", "_", text.strip())


def scan(csv_path: Path) -> Scan:
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise CorpusError(f"{csv_path}: no such CSV file")
    text = read_csv_text(csv_path)
    if not text.strip():
        raise CorpusError(f"{csv_path}: empty file; need a header line {','.join(REQUIRED)}[,session,gender] "
                          "and a row per utterance")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise CorpusError(f"{csv_path}: missing column(s) {missing}; need {list(REQUIRED)}, "
                              "optional session, gender")
        utterances = []
        for row in reader:
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            utterances.append(_utterance(row, csv_path, reader.line_num))
    except csv.Error as e:
        raise CorpusError(f"{csv_path}:{reader.line_num}: not a readable CSV line ({e})") from None
    if not utterances:
        raise CorpusError(f"{csv_path}: no rows, only the header")
    return Scan(utterances)


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
    if row.get("gender"):
        gender = GENDERS.get(row["gender"].lower())
        if gender is None:
            raise CorpusError(f"{where}: gender '{row['gender']}' is not one of f, m, female, male")
    speaker = _id(row["speaker"])
    return Utterance(utt=f"{speaker}-{_id(path.stem)}", speaker=speaker, path=path, raw_label=row["label"],
                     gender=gender, session=_id(row["session"]) if row.get("session") else None)


def identity_label_map(scan_result: Scan, corpus: Optional[str]) -> LabelMap:
    """Each distinct raw label is a class of its own, in sorted order."""
    labels = sorted({u.raw_label for u in scan_result.utterances})
    return LabelMap(tuple(labels), {lab: lab for lab in labels}, corpus, "identity map of the CSV's labels")
