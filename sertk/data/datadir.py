"""The in-memory data dir: per-utterance tables plus segments and the label map.

Everything that writes a data dir goes through `DataDir.save`, which writes atomically and
derives spk2utt, so no command can leave a dir whose spk2utt disagrees with utt2spk.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from sertk.data.labels import LABEL_MAP_FILE, LabelMap, load_label_map
from sertk.data.table import format_table, invert_utt2spk, read_table
from sertk.data.validate import per_utt_files, validate_dir
from sertk.errors import DataDirError
from sertk.fsutil import atomic_output_dir, owned_by


# What a data dir written by sertk holds: the per-utterance tables, spk2utt, segments, the label map, and
# `sertk data split`'s parts. Saving over a folder holding anything else is refused (see fsutil).
# prepared_with: how a recipe's stage 1 prepared the dir (its label options), and csv_source: the CSV it imported
# (path and content), so that a rerun with others is refused instead of ignored (egs/TEMPLATE/ser.sh)
DATA_FILES = ("wav.scp", "text", "utt2*", "spk2utt", "segments", LABEL_MAP_FILE, "prepared_with", "csv_source")
SPLIT_PART_FILES = tuple(f"[0-9]*/{name}" for name in DATA_FILES)
owns_data_dir = owned_by(DATA_FILES + tuple(f"split[0-9]*/{name}" for name in SPLIT_PART_FILES))


@dataclass
class DataDir:
    tables: Dict[str, Dict[str, str]]          # file name -> {utt: value}; wav.scp, utt2spk, utt2*...
    labels: Optional[LabelMap] = None
    segments: Dict[str, str] = field(default_factory=dict)  # seg -> "utt start end"

    @classmethod
    def load(cls, path, labels: Optional[LabelMap] = None, audio: str = "exists") -> "DataDir":
        """Load a data dir that must validate; the first problem is raised as `DataDirError`."""
        path = Path(path)
        problems = validate_dir(path, labels=labels, audio=audio)
        if problems:
            more = f"and {len(problems) - 1} more problem(s); " if len(problems) > 1 else ""
            raise DataDirError(f"{problems[0]} ({more}run 'sertk data validate {path}')")
        tables = {name: read_table(path / name) for name in per_utt_files(path)}
        segments = read_table(path / "segments") if (path / "segments").is_file() else {}
        if labels is None:
            labels = load_label_map(path / LABEL_MAP_FILE)
        return cls(tables, labels, segments)

    @property
    def utts(self) -> List[str]:
        return sorted(self.tables["wav.scp"])

    @property
    def utt2spk(self) -> Dict[str, str]:
        return self.tables["utt2spk"]

    @property
    def utt2emo(self) -> Dict[str, str]:
        return self.tables["utt2emo"]

    @property
    def spk2utt(self) -> Dict[str, List[str]]:
        return invert_utt2spk(self.utt2spk)

    @property
    def speakers(self) -> List[str]:
        return sorted(set(self.utt2spk.values()))

    def select(self, utts: Iterable[str]) -> "DataDir":
        """A data dir holding only `utts` (which must all be here), with their segments."""
        keep = set(utts)
        unknown = keep - set(self.tables["wav.scp"])
        if unknown:
            raise DataDirError(f"{len(unknown)} utterance(s) are not in the data dir, e.g. '{sorted(unknown)[0]}'")
        tables = {name: {u: v for u, v in t.items() if u in keep} for name, t in self.tables.items()}
        segments = {s: v for s, v in self.segments.items() if v.split()[0] in keep}
        return DataDir(tables, self.labels, segments)

    def select_speakers(self, speakers: Iterable[str]) -> "DataDir":
        keep = set(speakers)
        return self.select(u for u, s in self.utt2spk.items() if s in keep)

    def write_into(self, path: Path) -> None:
        """Write every file into the existing folder `path` (callers make it atomic)."""
        for name, table in self.tables.items():
            (path / name).write_text(format_table(table.items()), encoding="utf-8")
        (path / "spk2utt").write_text(
            "".join(f"{spk} {' '.join(utts)}\n" for spk, utts in self.spk2utt.items()), encoding="utf-8")
        if self.segments:
            (path / "segments").write_text(format_table(self.segments.items()), encoding="utf-8")
        if self.labels is not None:
            (path / LABEL_MAP_FILE).write_text(self.labels.to_yaml(), encoding="utf-8")

    def save(self, path) -> None:
        """Replace the data dir at `path` (if any) with this one, atomically."""
        with atomic_output_dir(path, "data dir", owns_data_dir) as tmp:
            self.write_into(tmp)
