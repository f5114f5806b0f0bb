"""Data dir operations with one job each, like Kaldi's utils/: subset, combine, split."""
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from sertk.data.datadir import DataDir
from sertk.data.labels import LabelMap
from sertk.data.table import TABLE_ENCODING
from sertk.errors import DataDirError

log = logging.getLogger(__name__)


def read_id_list(path) -> List[str]:
    """Ids from a file, one per line (the first field; Kaldi lists may carry more)."""
    path = Path(path)
    if not path.is_file():
        raise DataDirError(f"{path}: no such id list")
    try:
        text = path.read_text(encoding=TABLE_ENCODING)
    except UnicodeDecodeError:
        raise DataDirError(f"{path}: not a text file of ids (not valid UTF-8)") from None
    return [line.split()[0] for line in text.splitlines() if line.strip()]


def subset(dd: DataDir, utt_list: Optional[Sequence[str]] = None, speakers: Optional[Sequence[str]] = None,
           first: Optional[int] = None, last: Optional[int] = None) -> DataDir:
    """Exactly one selector: utterance ids, speaker ids, or the first/last N utterances in sorted order."""
    chosen = [name for name, v in (("utt_list", utt_list), ("speakers", speakers), ("first", first), ("last", last))
              if v is not None]
    if len(chosen) != 1:
        raise DataDirError("give exactly one of --utt-list, --speakers, --first, --last")
    if utt_list is not None:
        _require_known(utt_list, set(dd.utts), "utterance")
        return dd.select(utt_list)
    if speakers is not None:
        _require_known(speakers, set(dd.speakers), "speaker")
        return dd.select_speakers(speakers)
    n = first if first is not None else last
    if n <= 0 or n > len(dd.utts):
        raise DataDirError(f"N must be between 1 and the number of utterances ({len(dd.utts)}), got {n}")
    return dd.select(dd.utts[:n] if first is not None else dd.utts[-n:])


def _require_known(ids: Sequence[str], known: set, what: str) -> None:
    if not ids:  # an empty list file or --speakers ',' is a mistake, not a request for an empty dir
        raise DataDirError(f"the {what} list is empty; nothing to select")
    unknown = sorted(set(ids) - known)
    if unknown:
        shown = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise DataDirError(f"{len(unknown)} {what} id(s) are not in the data dir: {shown}")


def combine(dirs: Sequence[DataDir], names: Sequence[str]) -> DataDir:
    """One data dir holding all utterances of `dirs`; ids must not repeat across them."""
    if not dirs:
        raise DataDirError("nothing to combine")
    labels = merge_label_maps([d.labels for d in dirs], names)
    common = set.intersection(*(set(d.tables) for d in dirs))
    for name in sorted(set.union(*(set(d.tables) for d in dirs)) - common):
        log.warning("leaving out %s: not every source dir has it", name)
    owner: Dict[str, str] = {}
    seg_owner: Dict[str, str] = {}
    tables: Dict[str, Dict[str, str]] = {name: {} for name in common}
    segments: Dict[str, str] = {}
    for dd, src in zip(dirs, names):
        for utt in dd.utts:
            if utt in owner:
                raise DataDirError(f"utterance id '{utt}' is in both {owner[utt]} and {src}")
            owner[utt] = src
        for name in common:
            tables[name].update(dd.tables[name])
        for seg, value in dd.segments.items():
            if seg in seg_owner:
                raise DataDirError(f"segment id '{seg}' is in both {seg_owner[seg]} and {src}")
            seg_owner[seg] = src
            segments[seg] = value
    return DataDir(tables, labels, segments)


def merge_label_maps(maps: Sequence[LabelMap], names: Sequence[str]) -> LabelMap:
    """The union of several maps over one class list; a raw label may not map two ways."""
    first = maps[0]
    mapping = dict(first.mapping)
    for lm, src in zip(maps[1:], names[1:]):
        if lm.classes != first.classes:
            raise DataDirError(f"{src} has classes {list(lm.classes)} but {names[0]} has {list(first.classes)}; "
                               "combined dirs need one class list in one order")
        for raw, cls in lm.mapping.items():
            if mapping.setdefault(raw, cls) != cls:
                raise DataDirError(f"raw label '{raw}' maps to '{mapping[raw]}' in one source and '{cls}' in {src}")
    corpora = {lm.corpus for lm in maps}
    corpus = first.corpus if len(corpora) == 1 else "+".join(sorted(c or "?" for c in corpora))
    return LabelMap(first.classes, mapping, corpus, "combined label map")


def split_by_speaker(dd: DataDir, num_parts: int) -> List[DataDir]:
    """N parts with no speaker in two parts, balanced by utterance count (largest speakers first)."""
    speakers = dd.spk2utt
    if not 1 <= num_parts <= len(speakers):
        raise DataDirError(f"cannot split {len(speakers)} speaker(s) into {num_parts} parts")
    parts: List[List[str]] = [[] for _ in range(num_parts)]
    sizes = [0] * num_parts
    for spk in sorted(speakers, key=lambda s: (-len(speakers[s]), s)):
        i = sizes.index(min(sizes))
        parts[i].append(spk)
        sizes[i] += len(speakers[spk])
    return [dd.select_speakers(p) for p in parts]
