"""`sertk data fix`: repair what can be repaired, keep a backup of every file it changes.

Like Kaldi's fix_data_dir.sh: sort, drop duplicate lines, keep only utterances present in every
per-utterance file, rebuild spk2utt. Conflicting duplicates (one id, two values) cannot be
resolved, so those utterances are dropped and counted. The originals go to `.backup/<time>/`.
"""
import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List

from sertk.data.table import format_table, invert_utt2spk, parse_table
from sertk.data.validate import per_utt_files
from sertk.errors import DataDirError
from sertk.fsutil import atomic_write_text

log = logging.getLogger(__name__)


@dataclass
class FixReport:
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> utterances dropped
    changed: List[str] = field(default_factory=list)   # files rewritten
    backup: Path = None


def fix_dir(path) -> FixReport:
    path = Path(path)
    for name in ("wav.scp", "utt2spk"):
        # without utt2spk, spk2utt would be rebuilt empty: refuse rather than destroy it
        if not (path / name).is_file():
            raise DataDirError(f"{path}: no {name}, cannot fix this data dir")
    report = FixReport()
    tables: Dict[str, Dict[str, str]] = {}
    conflicted = set()
    # wav.scp first, so an utterance without audio is counted as 'missing from wav.scp'
    for name in sorted(per_utt_files(path), key=lambda n: n != "wav.scp"):
        tables[name], bad = _read_lenient(path / name, report)
        conflicted |= bad
    all_ids = set().union(*tables.values())
    keep = set(all_ids) - conflicted
    if conflicted:
        report.dropped["same id with two different values in one file"] += len(conflicted)
    for name, table in tables.items():
        missing = keep - set(table)
        if missing:
            report.dropped[f"missing from {name}"] += len(missing)
            keep -= missing
    if not keep:   # an empty data dir is no repair: say why, change nothing
        why = "; ".join(f"{n} {reason}" for reason, n in sorted(report.dropped.items())) or "no file lists an utterance"
        raise DataDirError(f"{path}: fixing would drop every utterance ({why}); nothing changed")
    new_text = {name: format_table((u, v) for u, v in t.items() if u in keep) for name, t in tables.items()}
    utt2spk = {u: v for u, v in tables.get("utt2spk", {}).items() if u in keep}
    new_text["spk2utt"] = "".join(f"{s} {' '.join(us)}\n" for s, us in invert_utt2spk(utt2spk).items())
    if (path / "segments").is_file():
        segs, seg_conflicts = _read_lenient(path / "segments", report)
        if seg_conflicts:
            log.warning("%s: dropping %d segment(s) listed twice with different values, e.g. '%s'",
                        path / "segments", len(seg_conflicts), sorted(seg_conflicts)[0])
        new_text["segments"] = format_table((s, v) for s, v in segs.items()
                                            if s not in seg_conflicts and v.split()[0] in keep)
    _write_changed(path, new_text, report)
    report.kept = len(keep)
    return report


def _read_lenient(path: Path, report: FixReport):
    """The table with identical duplicate lines collapsed; also the ids whose values conflict."""
    entries, bad = parse_table(path)
    for lineno, msg in bad:
        log.warning("%s:%d: dropping malformed line (%s)", path, lineno, msg)
    table: Dict[str, str] = {}
    conflicted = set()
    for e in entries:
        if e.key in table and table[e.key] != e.value:
            conflicted.add(e.key)
        table.setdefault(e.key, e.value)
    return table, conflicted


def _write_changed(path: Path, new_text: Dict[str, str], report: FixReport) -> None:
    # compare bytes: a file with undecodable lines must be rewritten, not crash the comparison
    changed = [name for name, text in new_text.items()
               if not (path / name).is_file() or (path / name).read_bytes() != text.encode("utf-8")]
    if not changed:
        return
    odd = [name for name in changed if (path / name).exists() and not (path / name).is_file()]
    if odd:   # checked before the backup folder is made: nothing written
        raise DataDirError(f"{path / odd[0]}: not a file (a folder?); move it away and run the fix again")
    backup = path / ".backup" / time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while backup.exists():  # two fixes in one second must not overwrite each other's backup
        backup = backup.with_name(f"{backup.name.split('.')[0]}.{n}")
        n += 1
    backup.mkdir(parents=True)
    for name in changed:
        if (path / name).is_file():
            shutil.copy2(path / name, backup / name)
        atomic_write_text(path / name, new_text[name])
    report.changed, report.backup = changed, backup
