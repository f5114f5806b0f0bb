"""The decode dir: segment posteriors and their votes, the contract between decoding and scoring.

A decode dir (e.g. `exp/loso/crnn/fold1/decode_test/`) holds:

    post_seg            <seg> p_1 ... p_C        posteriors in label-map class order, sorted by id
    seg2utt             <seg> <utt>
    votes/<rule>/post   <utt> p_1 ... p_C        for every voting rule
    votes/<rule>/hyp    <utt> <class name>
    post, hyp           copies of the default rule's files (what a user reads first)
    classes             class names in column order, one per line
    decode.yaml         what was decoded (checkpoint, data dir, rule, ...), as the decoder says

This module needs numpy only, so scoring never imports torch.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import yaml

from sertk.data.table import format_table, read_table
from sertk.decode.voting import DEFAULT_RULE, VOTING_RULES, check_rule, decide, vote
from sertk.errors import ScoreError
from sertk.fsutil import atomic_output_dir, owned_by, sha256_file
from sertk.yamlutil import read_yaml_file

NUMBER_FORMAT = "%.6g"


@dataclass
class DecodeDir:
    path: Path
    classes: List[str]
    seg_post: Dict[str, np.ndarray]        # seg -> [C]
    seg2utt: Dict[str, str]
    post: Dict[str, Dict[str, np.ndarray]]  # rule -> utt -> [C]
    hyp: Dict[str, Dict[str, str]]          # rule -> utt -> class name
    info: dict

    @property
    def rules(self) -> List[str]:
        return list(self.hyp)

    @property
    def default_rule(self) -> str:
        rule = self.info.get("rule", DEFAULT_RULE)
        return rule if rule in self.hyp else self.rules[0]

    @property
    def utts(self) -> List[str]:
        return sorted(set(self.seg2utt.values()))


def group_segments(seg_post: Mapping[str, np.ndarray], seg2utt: Mapping[str, str]) -> Dict[str, np.ndarray]:
    """utt -> its segments' posteriors stacked [S, C] (segments in id order)."""
    missing = sorted(set(seg_post) ^ set(seg2utt))
    if missing:
        raise ValueError(f"{len(missing)} segment(s) are in only one of seg_post and seg2utt, e.g. '{missing[0]}'")
    rows: Dict[str, List[np.ndarray]] = {}
    for seg in sorted(seg_post):
        rows.setdefault(seg2utt[seg], []).append(np.asarray(seg_post[seg], dtype=np.float64))
    return {utt: np.stack(rows[utt]) for utt in sorted(rows)}


def _format_post(post: Mapping[str, np.ndarray]) -> str:
    return format_table((k, " ".join(NUMBER_FORMAT % p for p in v)) for k, v in post.items())


def _write_votes(folder: Path, post: Mapping[str, np.ndarray], hyp: Mapping[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "post").write_text(_format_post(post), encoding="utf-8")
    (folder / "hyp").write_text(format_table(hyp.items()), encoding="utf-8")


# A decode dir: what write_decode_dir writes, plus what `sertk score` and the recipe's scoring add to it.
_VOTE_FILES = ("post", "hyp")
# (score.py's SCORING_DIR: score.py reads decode dirs, so the name is spelled here, not imported)
owns_decode_dir = owned_by(("post_seg", "seg2utt", "classes", "decode.yaml", "score.txt", "scoring/metrics.json",
                            "scoring/confusion.txt", "scoring/confusion.png", "scoring/.*.tmp") + _VOTE_FILES
                           + tuple(f"votes/{rule}/{name}" for rule in VOTING_RULES for name in _VOTE_FILES))


def is_decode_dir(path) -> bool:
    return (Path(path) / "post_seg").is_file()


def write_decode_dir(out_dir, seg_post: Dict[str, np.ndarray], seg2utt: Dict[str, str], classes: Sequence[str],
                     info: dict, default_rule: str = DEFAULT_RULE) -> None:
    """Vote every utterance under every rule and write the decode dir atomically (replacing one there)."""
    check_rule(default_rule)
    classes = list(classes)
    if not seg_post:
        raise ValueError("no segments to write")
    by_utt = group_segments(seg_post, seg2utt)
    for seg, p in seg_post.items():
        if np.shape(p) != (len(classes),):
            raise ValueError(f"segment '{seg}' has posterior shape {np.shape(p)}, expected ({len(classes)},)")
    with atomic_output_dir(out_dir, "decode dir", owns_decode_dir) as tmp:
        (tmp / "post_seg").write_text(_format_post(seg_post), encoding="utf-8")
        (tmp / "seg2utt").write_text(format_table(seg2utt.items()), encoding="utf-8")
        (tmp / "classes").write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")
        for rule in VOTING_RULES:
            post = {u: vote(p, rule) for u, p in by_utt.items()}
            hyp = {u: classes[decide(p, rule)] for u, p in by_utt.items()}
            _write_votes(tmp / "votes" / rule, post, hyp)
            if rule == default_rule:
                _write_votes(tmp, post, hyp)
        doc = {**info, "rule": info.get("rule", default_rule)}
        (tmp / "decode.yaml").write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")


def _read_post(path: Path, num_classes: int) -> Dict[str, np.ndarray]:
    post = {}
    for key, value in read_table(path).items():
        try:
            row = np.array([float(x) for x in value.split()])
        except ValueError:
            raise ScoreError(f"{path}: '{key}' has a value that is not a number") from None
        if row.shape != (num_classes,) or not np.all(np.isfinite(row)):
            raise ScoreError(f"{path}: '{key}' has {row.size} value(s), expected {num_classes} finite posteriors")
        post[key] = row
    return post


def _read_classes(path: Path) -> List[str]:
    classes = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not classes or len(set(classes)) != len(classes):
        raise ScoreError(f"{path}: needs one distinct class name per line")
    return classes


def _require(path: Path) -> Path:
    if not path.is_file():
        raise ScoreError(f"{path}: missing; is {path.parent} a decode dir written by 'sertk decode'?")
    return path


def _read_info(path: Path) -> dict:
    if not path.is_file():
        return {}
    return read_yaml_file(path, ScoreError)


def read_decode_dir(path) -> DecodeDir:
    """Read a decode dir; missing files and malformed lines raise `ScoreError` naming the file."""
    path = Path(path)
    if not path.is_dir():
        raise ScoreError(f"{path}: no such decode dir")
    classes = _read_classes(_require(path / "classes"))
    seg_post = _read_post(_require(path / "post_seg"), len(classes))
    seg2utt = read_table(_require(path / "seg2utt"))
    odd = sorted(set(seg_post) ^ set(seg2utt))
    if odd:
        raise ScoreError(f"{path}: {len(odd)} segment(s) are in only one of post_seg and seg2utt, e.g. '{odd[0]}'")
    post, hyp = {}, {}
    for rule in _rules_present(path):
        post[rule] = _read_post(_require(path / "votes" / rule / "post"), len(classes))
        hyp[rule] = read_table(_require(path / "votes" / rule / "hyp"))
    if not hyp:
        raise ScoreError(f"{path}: no votes/<rule>/ folders (known rules: {', '.join(VOTING_RULES)})")
    return DecodeDir(path, classes, seg_post, seg2utt, post, hyp, _read_info(path / "decode.yaml"))


def _rules_present(path: Path) -> List[str]:
    """The known rules first, in their order, then any other rule a decoder wrote."""
    votes = path / "votes"
    found = {p.name for p in votes.iterdir() if p.is_dir()} if votes.is_dir() else set()
    return [r for r in VOTING_RULES if r in found] + sorted(found - set(VOTING_RULES))


def decoded_with_current_checkpoint(exp_dir: Path, info: Mapping) -> Optional[bool]:
    """Whether a decode dir's record (`info`, its decode.yaml) names the checkpoint `exp_dir` holds now, by
    SHA-256; None when that cannot be told (no checkpoint there, as in a kept record, or no recorded hash)."""
    name, recorded = info.get("checkpoint"), info.get("checkpoint_sha256")
    path = Path(exp_dir) / Path(str(name)).name if name else None
    if not recorded or path is None or not path.is_file():
        return None
    return sha256_file(path) == recorded
