"""Label maps (`labels.yaml`): every raw corpus label -> a class, or `drop`.

    corpus: emodb                 # optional, names the corpus in protocol cards
    classes: [anger, boredom]     # order = posterior column order everywhere
    map: {W: anger, L: boredom, X: drop}

Raw labels match case-sensitively; an unmapped raw label is an error that names it.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple

import yaml

from sertk.errors import LabelError
from sertk.fsutil import atomic_write_text
from sertk.yamlutil import read_yaml_file

DROP = "drop"
LABEL_MAP_FILE = "labels.yaml"
_DEFAULTS_DIR = Path(__file__).resolve().parent / "corpora" / "labels"


@dataclass(frozen=True)
class LabelMap:
    classes: Tuple[str, ...]
    mapping: Dict[str, str] = field(hash=False)
    corpus: Optional[str] = None
    source: str = "<label map>"

    def __post_init__(self):
        where = self.source
        if not self.classes:
            raise LabelError(f"{where}: 'classes' is empty")
        for cls in self.classes:   # a class is one field of utt2emo, decodes and score tables
            if not isinstance(cls, str) or not cls or any(ch.isspace() for ch in cls):
                raise LabelError(f"{where}: class {cls!r} must be a non-empty name without spaces")
        if len(set(self.classes)) != len(self.classes):
            raise LabelError(f"{where}: 'classes' lists a class twice")
        if DROP in self.classes:
            raise LabelError(f"{where}: '{DROP}' is reserved and cannot be a class")
        for raw, cls in self.mapping.items():
            if cls != DROP and cls not in self.classes:
                raise LabelError(
                    f"{where}: raw label '{raw}' maps to '{cls}', which is not in classes "
                    f"{list(self.classes)} (use '{DROP}' to discard it)")
        unused = [c for c in self.classes if c not in self.mapping.values()]
        if unused:
            raise LabelError(f"{where}: no raw label maps to class(es) {unused}")
        if len(self.classes) < 2:
            raise LabelError(f"{where}: one class ({self.classes[0]}); a classifier needs at least 2")

    def map(self, raw: str) -> Optional[str]:
        """The class of `raw`, or None when the map drops it."""
        try:
            cls = self.mapping[raw]
        except KeyError:
            raise LabelError(self._unmapped_message(raw)) from None
        return None if cls == DROP else cls

    def index(self, cls: str) -> int:
        return self.classes.index(cls)

    def with_mapping(self, raw: str, target: str) -> "LabelMap":
        """A copy in which `raw` maps to `target` (a class or `drop`)."""
        mapping = dict(self.mapping)
        mapping[raw] = target
        return LabelMap(self.classes, mapping, self.corpus, self.source)

    def to_yaml(self) -> str:
        doc = {"classes": list(self.classes), "map": dict(self.mapping)}
        if self.corpus:
            doc = {"corpus": self.corpus, **doc}
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)

    def save(self, path: Path) -> None:
        atomic_write_text(path, self.to_yaml())

    def _unmapped_message(self, raw: str) -> str:
        msg = f"raw label '{raw}' is not in the label map {self.source}"
        near = [k for k in self.mapping if k.lower() == raw.lower()]
        if near:
            msg += f" (labels match case-sensitively; the map has '{near[0]}')"
        else:
            msg += f" (known raw labels: {sorted(self.mapping)}); add it, mapped to a class or '{DROP}'"
        return msg


def load_label_map(path) -> LabelMap:
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: no such label map")
    return label_map_from_dict(read_yaml_file(path, LabelError, mapping=False), source=str(path))


def label_map_from_dict(doc, source: str) -> LabelMap:
    if not isinstance(doc, dict) or "classes" not in doc or "map" not in doc:
        raise LabelError(f"{source}: a label map needs 'classes' (a list) and 'map' (raw -> class)")
    classes, mapping = doc["classes"], doc["map"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise LabelError(f"{source}: 'classes' must be a list of names")
    if not isinstance(mapping, dict):
        raise LabelError(f"{source}: 'map' must be a mapping raw label -> class")
    for raw, cls in mapping.items():
        # YAML turns 01 into 1 and no into False: refuse rather than map the wrong string
        if not isinstance(raw, str):
            raise LabelError(f"{source}: raw label {raw!r} is not a string; quote it in the YAML (e.g. '01')")
        if not isinstance(cls, str):
            raise LabelError(f"{source}: raw label '{raw}' maps to {cls!r}; quote the class name")
    corpus = doc.get("corpus")
    return LabelMap(tuple(classes), dict(mapping), str(corpus) if corpus else None, source)


def default_label_map(corpus: str) -> LabelMap:
    """The label map a corpus preparer uses when none is given."""
    path = _DEFAULTS_DIR / f"{corpus}.yaml"
    if not path.is_file():
        raise LabelError(f"no default label map for corpus '{corpus}'")
    return load_label_map(path)
