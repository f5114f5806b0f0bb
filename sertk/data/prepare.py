"""From a corpus scan to a validated data dir: label mapping, audio checks, class-count table.

Corpus modules only read their release layout into `Utterance` records; everything they share
(mapping raw labels, reading durations, skipping bad audio with a count, writing atomically)
lives here.
"""
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

from sertk.audio import audio_info
from sertk.data.datadir import DataDir
from sertk.data.labels import LabelMap
from sertk.errors import AudioError, CorpusError

log = logging.getLogger(__name__)

BAD_AUDIO = "missing or unreadable audio"  # the skip reason for --skip-bad-audio


@dataclass
class Utterance:
    utt: str
    speaker: str
    path: Path
    raw_label: str
    gender: Optional[str] = None   # 'f' or 'm'
    session: Optional[str] = None
    extra: Dict[str, str] = field(default_factory=dict)  # other utt2* files, e.g. {"utt2intensity": "strong"}


@dataclass
class Scan:
    """What a corpus module found: utterances, and files it skipped counted by reason.

    `label_overrides` (raw -> class or drop) adjust the label map for corpus options such as
    IEMOCAP's --drop-exc; `post_check` may warn about the finished data dir (e.g. unexpected counts).
    """
    utterances: List[Utterance]
    skipped: Counter = field(default_factory=Counter)
    label_overrides: Dict[str, str] = field(default_factory=dict)
    post_check: Optional[Callable[["PrepareReport"], None]] = None


@dataclass
class PrepareReport:
    datadir: DataDir
    skipped: Counter        # reason -> count (files the scan skipped, bad audio skipped here)
    dropped: Counter        # raw label -> count, dropped by the label map


def build_datadir(scan: Scan, labels: LabelMap, skip_bad_audio: bool = False) -> PrepareReport:
    """Map labels, read audio headers and assemble the data dir; raise on any unhandled problem.

    Nothing is written here, so an error leaves the output untouched.
    """
    _check_unique(scan.utterances)
    for raw, target in scan.label_overrides.items():
        labels = labels.with_mapping(raw, target)
    skipped, dropped = Counter(scan.skipped), Counter()
    kept = []
    for u in scan.utterances:  # every label first: an unmapped label fails before any audio is read
        cls = labels.map(u.raw_label)
        if cls is None:
            dropped[u.raw_label] += 1
        else:
            kept.append((u, cls))
    tables: Dict[str, Dict[str, str]] = {n: {} for n in ("wav.scp", "utt2spk", "utt2emo", "utt2lab_raw", "utt2dur")}
    for u, cls in kept:
        try:
            dur = audio_info(u.path).duration
        except AudioError as e:
            if not skip_bad_audio:
                raise AudioError(f"{e} (pass --skip-bad-audio to skip such files with a count)") from None
            log.warning("skipping: %s", e)
            skipped[BAD_AUDIO] += 1
            continue
        tables["wav.scp"][u.utt] = str(Path(u.path).resolve())
        tables["utt2spk"][u.utt] = u.speaker
        tables["utt2emo"][u.utt] = cls
        tables["utt2lab_raw"][u.utt] = u.raw_label
        tables["utt2dur"][u.utt] = f"{dur:.4f}"
        for name, value in _optional_fields(u).items():
            tables.setdefault(name, {})[u.utt] = value
    if not tables["wav.scp"]:
        raise CorpusError("no utterance left after label mapping and audio checks; nothing to write")
    n = len(tables["wav.scp"])
    # a field only some utterances have would make an inconsistent data dir: leave it out
    for name in [k for k, t in tables.items() if len(t) != n]:
        log.warning("leaving out %s: only %d of %d utterances have it", name, len(tables[name]), n)
        del tables[name]
    report = PrepareReport(DataDir(tables, labels), skipped, dropped)
    if scan.post_check is not None:
        scan.post_check(report)
    return report


def _optional_fields(u: Utterance) -> Dict[str, str]:
    fields = dict(u.extra)
    if u.gender is not None:
        fields["utt2gen"] = u.gender
    if u.session is not None:
        fields["utt2sess"] = u.session
    return fields


def _check_unique(utterances: List[Utterance]) -> None:
    seen: Dict[str, Path] = {}
    for u in utterances:
        if not u.utt.startswith(u.speaker):
            raise CorpusError(f"{u.path}: utterance id '{u.utt}' does not start with speaker id '{u.speaker}'")
        if any(c.isspace() for c in u.utt + u.speaker):
            raise CorpusError(f"{u.path}: ids may not contain whitespace ('{u.utt}', '{u.speaker}')")
        if u.utt in seen:
            raise CorpusError(f"utterance id '{u.utt}' is given twice: {seen[u.utt]} and {u.path}")
        seen[u.utt] = u.path


def class_count_table(dd: DataDir) -> str:
    """Rows: speakers; columns: classes in label-map order; with totals."""
    classes = list(dd.labels.classes)
    counts = Counter((dd.utt2spk[u], dd.utt2emo[u]) for u in dd.utts)
    rows = [["speaker", *classes, "total"]]
    for spk in dd.speakers:
        row = [counts[(spk, c)] for c in classes]
        rows.append([spk, *map(str, row), str(sum(row))])
    totals = [sum(counts[(s, c)] for s in dd.speakers) for c in classes]
    rows.append(["total", *map(str, totals), str(sum(totals))])
    return format_rows(rows)


def format_rows(rows: List[List[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(r, widths))) for r in rows)
