"""Scoring: WA, UA, macro-F1, per-class numbers and confusion matrices (text; the PNG: sertk.score_picture).

Every number is a function of the confusion matrix, so pooling folds is summing their matrices
(`metrics_from_confusion(sum of matrices)`). Numbers are fractions in [0, 1] in JSON and
percentages in the text a person reads.

    score_decode_dir(decode_dir, data_dir)  -> <decode_dir>/scoring/{metrics.json,confusion.txt,confusion.png}
    score_files(hyp, ref)                   -> the same numbers for plain Kaldi-style `<utt> <class>` files
    score_hyp_against_data(hyp, data_dir)   -> a plain hyp file against a data dir's utt2emo and labels.yaml
"""
import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from sertk.data.cross import class_mapping_from_dict, dropped_text, relabel
from sertk.data.datadir import DataDir
from sertk.data.labels import load_label_map
from sertk.data.table import read_table
from sertk.decode import DecodeDir, read_decode_dir
from sertk.errors import ScoreError
from sertk.fsutil import atomic_write_text
from sertk.score_picture import save_confusion_png

SCORING_DIR = "scoring"
SEGMENT = "segment"


# --- metrics ----------------------------------------------------------------------------------


def confusion(ref: Sequence[int], hyp: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts [C, C]: rows are the reference class, columns the hypothesis."""
    ref, hyp = np.asarray(ref, dtype=np.int64), np.asarray(hyp, dtype=np.int64)
    if ref.shape != hyp.shape or ref.ndim != 1:
        raise ValueError(f"ref and hyp must be 1-D and of the same length, got {ref.shape} and {hyp.shape}")
    if ref.size and (min(ref.min(), hyp.min()) < 0 or max(ref.max(), hyp.max()) >= num_classes):
        raise ValueError(f"class indices must be in [0, {num_classes})")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (ref, hyp), 1)
    return cm


def metrics(ref: Sequence[int], hyp: Sequence[int], classes: Sequence[str]) -> dict:
    """WA, UA, macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    See `metrics_from_confusion` for the rules on classes that are absent or never predicted.
    """
    return metrics_from_confusion(confusion(ref, hyp, len(classes)), classes)


def metrics_from_confusion(cm, classes: Sequence[str]) -> dict:
    """All numbers from a confusion matrix (rows = reference, columns = hypothesis).

    - wa: accuracy over all items.
    - ua: mean recall over the classes *present in the reference* (balanced accuracy). A class
      with no reference item has recall null and is left out of UA and macro-F1, so a test fold
      that lacks a class is not charged a 0 for it; its false alarms still lower the other
      classes' recall.
    - macro_f1: mean F1 over the same classes as UA.
    - a class that is never predicted has precision 0 (not NaN), F1 0, and a note says so.
    """
    cm = np.asarray(cm, dtype=np.int64)
    classes = list(classes)
    if cm.shape != (len(classes), len(classes)):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {len(classes)} classes")
    total = int(cm.sum())
    if total == 0:
        raise ScoreError("nothing to score: no reference items")
    per_class, notes = {}, []
    for i, name in enumerate(classes):
        per_class[name] = _class_numbers(cm, i)
        if per_class[name]["support"] == 0:
            notes.append(f"class '{name}' is absent from the reference: recall and F1 are null, "
                         "and it is left out of UA and macro-F1")
        elif per_class[name]["predicted"] == 0:
            notes.append(f"class '{name}' is never predicted: its precision is set to 0")
    present = [c for c in classes if per_class[c]["support"] > 0]
    return {
        "num_utts": total,
        "wa": float(np.trace(cm)) / total,
        "ua": float(np.mean([per_class[c]["recall"] for c in present])),
        "macro_f1": float(np.mean([per_class[c]["f1"] for c in present])),
        "classes": classes,
        "per_class": per_class,
        "confusion": cm.tolist(),
        "notes": notes,
    }


def _class_numbers(cm: np.ndarray, i: int) -> dict:
    correct, support, predicted = int(cm[i, i]), int(cm[i].sum()), int(cm[:, i].sum())
    precision = correct / predicted if predicted else 0.0
    if not support:
        return {"precision": precision, "recall": None, "f1": None, "support": 0, "predicted": predicted}
    recall = correct / support
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": support, "predicted": predicted}


# --- text -------------------------------------------------------------------------------------


def pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def confusion_text(cm, classes: Sequence[str]) -> str:
    """The matrix as aligned text: one row per reference class, one column per hypothesis class."""
    cm = np.asarray(cm)
    corner = "ref \\ hyp"
    label_w = max(len(corner), *(len(c) for c in classes))
    col_w = max(max(len(c) for c in classes), len(str(int(cm.max()) if cm.size else 0)))
    lines = [f"{corner:<{label_w}}  " + "  ".join(f"{c:>{col_w}}" for c in classes)]
    for name, row in zip(classes, cm, strict=True):
        lines.append(f"{name:<{label_w}}  " + "  ".join(f"{int(n):>{col_w}}" for n in row))
    return "\n".join(lines) + "\n"


def per_class_text(m: dict) -> str:
    """Precision, recall, F1 (percent) and support of every class, aligned."""
    w = max(len("class"), *(len(c) for c in m["classes"]))
    lines = [f"{'class':<{w}}  {'prec':>6}  {'recall':>6}  {'F1':>6}  {'support':>7}"]
    for name in m["classes"]:
        c = m["per_class"][name]
        lines.append(f"{name:<{w}}  {pct(c['precision']):>6}  {pct(c['recall']):>6}  {pct(c['f1']):>6}  "
                     f"{c['support']:>7}")
    return "\n".join(lines) + "\n"


def summary_text(result: dict) -> str:
    """WA/UA/macro-F1 (percent) per voting rule and at segment level, as `score_decode_dir` returns them."""
    rows = [("utterance", f"{rule}{'*' if rule == result['default_rule'] else ''}", m)
            for rule, m in result["utterance"].items()]
    if SEGMENT in result:
        rows.append((SEGMENT, "-", result[SEGMENT]))
    lines = [f"{'level':<9}  {'rule':<9}  {'WA':>6}  {'UA':>6}  {'F1':>6}  {'N':>6}"]
    lines += [f"{level:<9}  {rule:<9}  {pct(m['wa']):>6}  {pct(m['ua']):>6}  {pct(m['macro_f1']):>6}  "
              f"{m['num_utts']:>6}" for level, rule, m in rows]
    return "\n".join(lines) + "\n(* default rule; WA/UA/F1 in percent; F1 = macro-F1)\n"


# --- scoring outputs ----------------------------------------------------------------------------


def check_same_items(have, want, have_name: str, want_name: str) -> None:
    """Both sides must hold the same ids; the error says how many are missing or extra and names one."""
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing:
        raise ScoreError(f"{have_name}: {len(missing)} utterance(s) of {want_name} are missing, e.g. '{missing[0]}'")
    if extra:
        raise ScoreError(f"{have_name}: {len(extra)} utterance(s) are not in {want_name}, e.g. '{extra[0]}'")


def class_indices(labels: Mapping[str, str], classes: Sequence[str], where: str,
                  classes_from: str = "") -> Dict[str, int]:
    """id -> class index; a class name not in `classes` is an error naming `where` (and, in words,
    `classes_from`: where the known classes come from)."""
    index = {c: i for i, c in enumerate(classes)}
    for key, name in labels.items():
        if name not in index:
            raise ScoreError(f"{where}: '{key}' has class '{name}', which is not one of {list(classes)}"
                             + (f" ({classes_from})" if classes_from else ""))
    return {key: index[name] for key, name in labels.items()}


def score_labels(hyp: Mapping[str, str], ref: Mapping[str, str], classes: Sequence[str],
                 hyp_name: str, ref_name: str, classes_from: str = "") -> dict:
    """Metrics of hypothesis class names against reference class names, matched by id."""
    check_same_items(hyp, ref, hyp_name, ref_name)
    h = class_indices(hyp, classes, hyp_name, classes_from)
    r = class_indices(ref, classes, ref_name, classes_from)
    keys = sorted(ref)
    return metrics([r[k] for k in keys], [h[k] for k in keys], classes)


def _segment_metrics(dec: DecodeDir, utt2emo: Mapping[str, str]) -> dict:
    """Each segment's argmax against its utterance's label."""
    seg_hyp = {seg: dec.classes[int(np.argmax(p))] for seg, p in dec.seg_post.items()}
    seg_ref = {seg: utt2emo[dec.seg2utt[seg]] for seg in dec.seg_post}
    return score_labels(seg_hyp, seg_ref, dec.classes, str(dec.path / "post_seg"), "its utterances' labels")


def score_decode_dir(decode_dir, data_dir, write: bool = True) -> dict:
    """Score every voting rule (utterance level) and the segments of a decode dir against a data dir.

    Writes `<decode_dir>/scoring/metrics.json`, `confusion.txt` and `confusion.png` (default rule).
    """
    dec = read_decode_dir(decode_dir)
    dd = reference_dir(data_dir)
    left_out = None
    if dec.info.get("class_map"):  # decoded through a cross-corpus mapping: score on the shared classes
        mapping = class_mapping_from_dict(dec.info["class_map"], f"{dec.path / 'decode.yaml'}: class_map")
        dd, dropped = relabel(dd, mapping, "target", str(data_dir))
        left_out = dropped_text(dropped)
    if sorted(dd.labels.classes) != sorted(dec.classes):
        raise ScoreError(f"{dec.path / 'classes'}: classes {dec.classes} differ from those of "
                         f"{data_dir}/labels.yaml {list(dd.labels.classes)}")
    check_same_items(dec.utts, dd.utts, str(dec.path), str(data_dir))
    utterance = {rule: score_labels(hyp, dd.utt2emo, dec.classes, str(dec.path / "votes" / rule / "hyp"),
                                    str(Path(data_dir) / "utt2emo"))
                 for rule, hyp in dec.hyp.items()}
    result = {"decode_dir": str(dec.path), "data_dir": str(data_dir), "classes": dec.classes,
              "default_rule": dec.default_rule, "utterance": utterance,
              SEGMENT: _segment_metrics(dec, dd.utt2emo)}
    if left_out is not None:
        result["left_out"] = dict(dropped)   # class -> utterances, for RESULTS.md's pooled count
        for m in utterance.values():
            m["notes"].append(f"cross-corpus, through the decode's class map: {left_out}")
    if write:
        write_scoring(dec.path / SCORING_DIR, result)
    return result


def write_scoring(out_dir: Path, result: dict) -> None:
    """metrics.json, and confusion.txt/.png of the default rule, into `out_dir`."""
    m = result["utterance"][result["default_rule"]]
    atomic_write_text(out_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(out_dir / "confusion.txt", confusion_text(m["confusion"], m["classes"]))
    save_confusion_png(m["confusion"], m["classes"], out_dir / "confusion.png",
                       title=f"{result['decode_dir']} ({result['default_rule']})")


def reference_dir(data_dir) -> DataDir:
    """The data dir a system's output is scored against: its utt2emo are the references and its labels.yaml
    the known classes, in their order (a hypothesis outside them is an error)."""
    return DataDir.load(data_dir, audio="none")  # scoring needs the labels, not the audio


def read_label_file(path) -> Dict[str, str]:
    """A Kaldi-style `<utt> <class>` file: exactly two fields a line."""
    path = Path(path)
    if not path.is_file():
        raise ScoreError(f"{path}: no such file")
    table = read_table(path, one_word=True)
    if not table:
        raise ScoreError(f"{path}: empty")
    return table


def score_files(hyp_path, ref_path, labels_path=None) -> dict:
    """Score plain `<utt> <class>` files from any system.

    The classes (and their order) come from `labels_path` (a labels.yaml) when given, otherwise they are
    the classes of the reference, sorted; a hypothesis class outside them is an error (a typo or a stray
    column must not be scored as a class of its own), so a system that may predict a class the
    reference lacks is scored with `labels_path`.
    """
    hyp, ref = read_label_file(hyp_path), read_label_file(ref_path)
    if labels_path:
        classes, classes_from = list(load_label_map(labels_path).classes), f"the classes of {labels_path}"
    else:
        classes = sorted(set(ref.values()))
        classes_from = (f"the classes of {ref_path}; give --labels LABELS.yaml to score a class the reference "
                        "lacks")
    return score_labels(hyp, ref, classes, str(hyp_path), str(ref_path), classes_from)


def score_hyp_against_data(hyp_path, data_dir) -> dict:
    """Score a plain `<utt> <class>` file against a data dir: its utt2emo, and the classes of its labels.yaml
    (as a decode dir is scored)."""
    hyp, dd = read_label_file(hyp_path), reference_dir(data_dir)
    return score_labels(hyp, dd.utt2emo, list(dd.labels.classes), str(hyp_path), str(Path(data_dir) / "utt2emo"),
                        f"the classes of {dd.labels.source}")
