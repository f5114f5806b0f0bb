"""`sertk infer`'s table: one row per recording (or chunk), as CSV or JSON.

Columns, always in this order: id, path, chunk (empty for whole recordings), start, end (seconds), label,
then p_<class> for every class in the model's class order, then note. Every input the model gave no decision
for has a row too, after the decided ones: its label, times and posteriors empty, its note "skipped: <why>"
(unreadable, too short, silent, no speech). A decided row's note is empty, or says what is wrong with its
file short of a skip ("truncated: ..."). JSON holds the decided rows (posteriors as a class -> probability
mapping, "note" where there is one) plus the model, the settings and the skipped inputs with their reasons.

An existing --out is replaced only when it is such a table (its CSV header, or its JSON layout): anything else
there is somebody's file, and is refused before any work.
"""
import csv
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from sertk.errors import SertkError
from sertk.fsutil import atomic_write_text, check_file_replaceable
from sertk.inference.inputs import Skip
from sertk.inference.run import InferResult, Row

FORMATS = {".csv": "csv", ".json": "json"}
DIGITS = 6


def output_format(path: Optional[Path]) -> str:
    if path is None:
        return "csv"
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SertkError(f"--out {path}: the file name must end in {' or '.join(FORMATS)} (that picks the format)")
    return fmt


def check_output(path: Optional[Path]) -> None:
    """Raise `OutputError` (sertk.fsutil) when `path` exists and is not a table `sertk infer` wrote."""
    if path is not None:
        check_file_replaceable(path, "a table written by sertk infer", _is_infer_table,
                               "move it away or give another --out")


def _is_infer_table(path: Path) -> bool:
    """Whether `path` holds infer's CSV (its header line, a note column or, as older sertk wrote it, none)
    or its JSON (an object with the model, classes, rows and skipped inputs)."""
    if output_format(path) == "json":
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        return isinstance(doc, dict) and "model" in doc and \
            all(isinstance(doc.get(key), list) for key in ("classes", "rows", "skipped"))
    with open(path, "rb") as f:
        line = f.read(1 << 16).split(b"\n", 1)[0].decode("utf-8")
    names = next(csv.reader([line]), [])
    fixed = columns(())[:-1]     # id ... label
    probs = names[len(fixed):]
    if probs and probs[-1] == "note":
        probs = probs[:-1]
    return names[:len(fixed)] == fixed and bool(probs) and all(p.startswith("p_") for p in probs)


def columns(classes: Sequence[str]) -> List[str]:
    return ["id", "path", "chunk", "start", "end", "label"] + [f"p_{c}" for c in classes] + ["note"]


def csv_text(rows: Sequence[Row], classes: Sequence[str], skips: Sequence[Skip] = ()) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns(classes))
    for r in rows:
        writer.writerow([r.id, r.path, "" if r.chunk is None else r.chunk, f"{r.start:.3f}", f"{r.end:.3f}",
                         r.decision.label] + [f"{p:.{DIGITS}f}" for p in r.decision.posteriors] + [r.note])
    for s in skips:
        writer.writerow([s.id, s.path, "", "", "", ""] + [""] * len(classes) + [f"skipped: {s.reason}"])
    return buf.getvalue()


def json_text(result: InferResult, classes: Sequence[str], header: Dict[str, Any]) -> str:
    doc = {**header, "classes": list(classes),
           "rows": [{"id": r.id, "path": r.path, "chunk": r.chunk, "start": round(r.start, 3),
                     "end": round(r.end, 3), "label": r.decision.label,
                     "posteriors": {c: round(float(p), DIGITS) for c, p in zip(classes, r.decision.posteriors)},
                     **({"note": r.note} if r.note else {})}
                    for r in result.rows],
           "skipped": [{"id": s.id, "path": s.path, "reason": s.reason} for s in result.skips]}
    return json.dumps(doc, indent=1) + "\n"


def write_output(path: Optional[Path], result: InferResult, classes: Sequence[str], header: Dict[str, Any]) -> str:
    """The table as text; written atomically to `path`, or returned for stdout when `path` is None."""
    fmt = output_format(path)
    text = csv_text(result.rows, classes, result.skips) if fmt == "csv" else json_text(result, classes, header)
    if path is not None:
        check_output(Path(path))
        atomic_write_text(Path(path), text)
    return text
