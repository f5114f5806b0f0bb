"""Cross-corpus evaluation: two corpora's classes mapped onto the set they share.

A class mapping (`conf/cross/<source>_to_<target>.yaml`):

    source: ravdess                  # the corpus models are trained on
    target: emodb                    # the corpus they are tested on
    classes: [anger, happiness, sadness, fear, disgust, neutral]   # the shared set, column order
    source_map: {calm: drop, surprise: drop}   # each source class outside `classes`: a shared class or drop
    target_map: {boredom: drop}

A class named in `classes` maps to itself unless its side's map says otherwise. A class of either
corpus that is neither shared nor mapped is an error, so a mapping never drops data silently;
utterances of dropped classes are left out and counted.

Two uses: `relabel` a data dir onto the shared set (the cross-corpus protocol trains and tests on
relabelled dirs), and `collapse` a model's posteriors over its own classes onto the shared set
(decoding another corpus with a model trained on all of its corpus's classes).
"""
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from sertk.data.datadir import DataDir
from sertk.data.labels import DROP, LabelMap
from sertk.data.protocols import SPLITS, Fold, fold_checksum, write_protocol_dir
from sertk.errors import LabelError, ProtocolError
from sertk.yamlutil import read_yaml_file

SIDES = ("source", "target")
CROSS_PROTOCOL = "cross_corpus"


@dataclass(frozen=True)
class ClassMapping:
    source: str
    target: str
    classes: Tuple[str, ...]
    maps: Dict[str, Dict[str, str]] = field(hash=False)   # side -> {class: shared class or drop}
    path: str = "<class mapping>"

    def shared(self, side: str, cls: str) -> Optional[str]:
        """The shared class of `side`'s class `cls`, or None when the mapping drops it."""
        mapped = self.maps[side].get(cls, cls if cls in self.classes else None)
        if mapped is None:
            raise LabelError(f"{self.path}: {side} class '{cls}' is neither one of the shared classes "
                             f"{list(self.classes)} nor in {side}_map; map it to one of them or to '{DROP}'")
        return None if mapped == DROP else mapped

    def check(self, side: str, classes: Sequence[str], where: str) -> None:
        """Every class of `where` must resolve, and every shared class must come from one of them."""
        for cls in self.maps[side]:
            if cls not in classes:
                raise LabelError(f"{self.path}: {side}_map names '{cls}', which is not a class of {where} "
                                 f"{list(classes)}")
        reached = {self.shared(side, c) for c in classes}
        missing = [c for c in self.classes if c not in reached]
        if missing:
            raise LabelError(f"{self.path}: no class of {where} {list(classes)} maps to shared class(es) {missing}")

    def to_dict(self) -> dict:
        return {"source": self.source, "target": self.target, "classes": list(self.classes),
                "source_map": dict(self.maps["source"]), "target_map": dict(self.maps["target"]),
                "file": self.path}


def load_class_mapping(path) -> ClassMapping:
    path = Path(path)
    if not path.is_file():
        raise LabelError(f"{path}: no such class mapping")
    doc = read_yaml_file(path, LabelError)
    # a typo in a key (source_maps) would otherwise drop that map silently; decode.yaml's record of a mapping
    # holds more (model_classes, dropped) and is read by class_mapping_from_dict without this check
    unknown = [k for k in doc if k not in MAPPING_KEYS]
    if unknown:
        raise LabelError(f"{path}: unknown key {unknown[0]!r} (a class mapping has {', '.join(MAPPING_KEYS[:5])})")
    return class_mapping_from_dict(doc, str(path))


MAPPING_KEYS = ("source", "target", "classes", "source_map", "target_map", "file")   # file: as to_dict records it


def _kind(value) -> str:
    """What a wrong value is, for a message: its YAML kind, or the value itself when it is short."""
    if value is None:
        return "empty"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value) if len(repr(value)) <= 40 else f"a {type(value).__name__}"


def class_mapping_from_dict(doc: dict, where: str) -> ClassMapping:
    """A class mapping from its YAML document; every field of the wrong type is a `LabelError` naming it."""
    if not isinstance(doc, dict):
        raise LabelError(f"{where}: a class mapping must be a mapping of {', '.join(MAPPING_KEYS[:5])}, "
                         f"not {_kind(doc)}")
    for key in ("source", "target", "classes"):
        if key not in doc:
            raise LabelError(f"{where}: a class mapping needs '{key}'")
    for side in SIDES:
        if not isinstance(doc[side], str) or not doc[side].strip():
            raise LabelError(f"{where}: '{side}' must be the name of the {side} corpus (as in its labels.yaml), "
                             f"not {_kind(doc[side])}")
    classes = doc["classes"]
    if not isinstance(classes, list) or not classes:
        raise LabelError(f"{where}: 'classes' must be a non-empty list of class names, not "
                         f"{_kind(classes) if classes != [] else 'an empty list'}")
    for i, cls in enumerate(classes, start=1):
        if not isinstance(cls, str):
            raise LabelError(f"{where}: 'classes' must list class names, but item {i} is {_kind(cls)} "
                             "(quote a name YAML reads as a number or a boolean)")
    if len(set(classes)) != len(classes) or DROP in classes:
        raise LabelError(f"{where}: 'classes' must not repeat a class or name '{DROP}'")
    maps = {}
    for side in SIDES:
        side_map = doc.get(f"{side}_map")
        side_map = {} if side_map is None else side_map
        if not isinstance(side_map, dict):
            raise LabelError(f"{where}: '{side}_map' must map {side} classes to shared classes or '{DROP}', "
                             f"not {_kind(side_map)}")
        for cls, shared in side_map.items():
            if not isinstance(cls, str) or not isinstance(shared, str) or (shared != DROP and shared not in classes):
                raise LabelError(f"{where}: {side}_map maps {cls!r} to {shared!r}, which is neither a shared "
                                 f"class {classes} nor '{DROP}'")
        maps[side] = dict(side_map)
    return ClassMapping(doc["source"], doc["target"], tuple(classes), maps, where)


def relabel(dd: DataDir, mapping: ClassMapping, side: str, where: str) -> Tuple[DataDir, Counter]:
    """`dd` on the shared classes, and the count of utterances left out per original class."""
    corpus = getattr(mapping, side)
    if dd.labels.corpus and dd.labels.corpus != corpus:
        raise LabelError(f"{where} holds corpus '{dd.labels.corpus}', but {mapping.path} expects {side} corpus "
                         f"'{corpus}' (is the mapping the wrong way round?)")
    classes = list(dd.labels.classes)
    mapping.check(side, classes, where)
    new_class = {c: mapping.shared(side, c) for c in classes}
    dropped = Counter(c for c in dd.utt2emo.values() if new_class[c] is None)
    kept = dd.select(u for u, c in dd.utt2emo.items() if new_class[c] is not None)
    kept.tables["utt2emo"] = {u: new_class[c] for u, c in kept.utt2emo.items()}
    raw_map = {raw: DROP if c == DROP or new_class[c] is None else new_class[c]
               for raw, c in dd.labels.mapping.items()}
    kept.labels = LabelMap(mapping.classes, raw_map, dd.labels.corpus,
                           f"{dd.labels.source} through {mapping.path}")
    return kept, dropped


def collapse(posteriors: np.ndarray, model_classes: Sequence[str], mapping: ClassMapping) -> np.ndarray:
    """Posteriors over the model's (source) classes -> over the shared classes: the mass of source
    classes sharing a shared class is summed, dropped classes are left out, rows renormalised."""
    mapping.check("source", list(model_classes), "the model")
    matrix = np.zeros((len(model_classes), len(mapping.classes)), dtype=np.float64)
    for i, cls in enumerate(model_classes):
        shared = mapping.shared("source", cls)
        if shared is not None:
            matrix[i, mapping.classes.index(shared)] = 1.0
    out = posteriors.astype(np.float64) @ matrix
    out /= np.maximum(out.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    return out.astype(posteriors.dtype)


def speaker_genders(dd: DataDir) -> Optional[Dict[str, str]]:
    """Each speaker's gender from utt2gen, when every utterance has one and a speaker has only one; else None."""
    utt2gen = dd.tables.get("utt2gen")
    if not utt2gen or any(u not in utt2gen for u in dd.utts):
        return None
    genders: Dict[str, set] = {}
    for utt, spk in dd.utt2spk.items():
        genders.setdefault(spk, set()).add(utt2gen[utt])
    return {s: g.pop() for s, g in genders.items()} if all(len(g) == 1 for g in genders.values()) else None


def default_dev_speakers(speakers: Sequence[str], genders: Optional[Dict[str, str]] = None) -> List[str]:
    """About a sixth of the training corpus's speakers (at least one), the last in sorted order; with the
    speakers' `genders`, taken from the end of each gender's sorted list in turn, so that dev holds both
    where it can: RAVDESS actors 21-24, EmoDB 15 and 16, IEMOCAP session 5, MSP-IMPROV F06 and M06 (the last
    two in sorted order would be M05 and M06, two men)."""
    n = max(1, round(len(speakers) / 6))
    if n >= len(speakers):
        raise ProtocolError(f"the training corpus needs at least 2 speakers (train and dev), has {len(speakers)}")
    if not genders or any(s not in genders for s in speakers):
        return sorted(speakers)[-n:]
    by_gender = {g: sorted(s for s in speakers if genders[s] == g) for g in sorted(set(genders[s] for s in speakers))}
    chosen: List[str] = []
    while len(chosen) < n:
        for group in by_gender.values():
            if group and len(chosen) < n:
                chosen.append(group.pop())
    return sorted(chosen)


def make_cross_protocol(source: DataDir, target: DataDir, mapping: ClassMapping, out,
                        dev_speakers: Optional[Sequence[str]] = None,
                        source_path: str = "", target_path: str = "") -> dict:
    """One fold: train and dev on speakers of `source`, test on all of `target`, on the shared classes."""
    src, src_dropped = relabel(source, mapping, "source", f"{mapping.source} ({source_path or 'source'})")
    tgt, tgt_dropped = relabel(target, mapping, "target", f"{mapping.target} ({target_path or 'target'})")
    shared_spk = set(src.speakers) & set(tgt.speakers)
    if shared_spk:
        raise ProtocolError(f"source and target share speaker(s) {sorted(shared_spk)[:3]}: "
                            "cross-corpus testing needs two different corpora")
    shared_utt = set(src.utts) & set(tgt.utts)
    if shared_utt:
        raise ProtocolError(f"source and target share utterance id(s), e.g. '{sorted(shared_utt)[0]}'")
    dev_spk = list(dev_speakers) if dev_speakers else default_dev_speakers(src.speakers, speaker_genders(src))
    unknown = sorted(set(dev_spk) - set(src.speakers))
    if unknown:
        raise ProtocolError(f"dev speaker(s) {unknown} are not speakers of the source data dir "
                            f"(it has {src.speakers[0]} .. {src.speakers[-1]}) after relabelling")
    train_spk = [s for s in src.speakers if s not in set(dev_spk)]
    if not train_spk:
        raise ProtocolError("every source speaker is a dev speaker; nothing is left to train on")
    parts = {"train": src.select_speakers(train_spk), "dev": src.select_speakers(dev_spk), "test": tgt}
    fold = Fold(*(parts[s].utts for s in SPLITS))
    card = {
        "protocol": CROSS_PROTOCOL,
        "description": f"cross-corpus: train on {mapping.source}, test on all of {mapping.target}, "
                       f"on their {len(mapping.classes)} shared classes",
        "corpus": f"{mapping.source} -> {mapping.target}",
        "source": source_path,
        "target": target_path,
        "classes": list(mapping.classes),
        "num_folds": 1,
        "speaker_independent": True,
        "dev_policy": f"{len(dev_spk)} held-out {mapping.source} speaker(s): {', '.join(dev_spk)}",
        "tests_every_utterance": False,   # the source corpus trains, the target corpus tests
        "class_map": mapping.to_dict(),
        "dropped": {"source": dict(sorted(src_dropped.items())), "target": dict(sorted(tgt_dropped.items()))},
        "options": {},
        "folds": [{"fold": 1, "test_speakers": tgt.speakers, "dev_speakers": sorted(dev_spk),
                   "num_utts": {s: len(fold.split(s)) for s in SPLITS}}],
        "checksum": fold_checksum([fold]),
    }
    write_protocol_dir(out, [parts], card)
    return card


def dropped_text(dropped: Dict[str, int]) -> str:
    total = sum(dropped.values())
    detail = ", ".join(f"{c} {n}" for c, n in sorted(dropped.items()))
    return f"{total} utterance(s) of classes outside the shared set left out" + (f" ({detail})" if total else "")
