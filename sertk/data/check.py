"""`sertk data check`: prove a protocol dir keeps its promises, and show class counts per split.

Checked: every fold's splits are valid data dirs with no utterance in two splits; for a
speaker-independent protocol no speaker is in two splits; every utterance is tested in exactly
one fold, as utt2fold says; and the fold lists still match the card's checksum.
"""
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from sertk.data.datadir import DataDir
from sertk.data.prepare import format_rows
from sertk.data.protocols import SPLITS, Fold, fold_checksum, load_card
from sertk.data.table import read_table
from sertk.errors import SertkError


@dataclass
class CheckReport:
    card: dict
    problems: List[str] = field(default_factory=list)
    table: str = ""


def check_protocol(path) -> CheckReport:
    path = Path(path)
    card = load_card(path)
    report = CheckReport(card)
    folds, rows = [], [["fold", "split", "speakers", *card["classes"], "total"]]
    for k in range(1, card["num_folds"] + 1):
        try:
            dirs = {s: DataDir.load(path / f"fold{k}" / s) for s in SPLITS}
        except SertkError as e:
            report.problems.append(f"fold{k}: {e}")
            continue
        folds.append(Fold(*(dirs[s].utts for s in SPLITS)))
        report.problems += _disjointness_problems(k, dirs, card["speaker_independent"],
                                                  bool(card.get("dev_from_training_speakers")))
        for s in SPLITS:
            counts = Counter(dirs[s].utt2emo.values())
            rows.append([str(k), s, str(len(dirs[s].speakers)),
                         *(str(counts[c]) for c in card["classes"]), str(sum(counts.values()))])
    report.table = format_rows(rows)
    if len(folds) == card["num_folds"]:
        report.problems += _coverage_problems(path, folds, card.get("tests_every_utterance", True))
        if fold_checksum(folds) != card["checksum"]:
            report.problems.append(f"{path}: the fold lists do not match the card's checksum "
                                   "(a fold dir was changed after 'sertk data folds')")
    return report


def _disjointness_problems(k: int, dirs, speaker_independent: bool, dev_from_train: bool = False) -> List[str]:
    problems = []
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            shared = set(dirs[a].utts) & set(dirs[b].utts)
            if shared:
                problems.append(f"fold{k}: {len(shared)} utterance(s) are in both {a} and {b}, "
                                f"e.g. '{sorted(shared)[0]}'")
            shared_spk = set(dirs[a].speakers) & set(dirs[b].speakers)
            if dev_from_train and (a, b) == ("train", "dev"):
                continue            # loso_dev_share: dev is lent by the training speakers, as its card says
            if speaker_independent and shared_spk:
                problems.append(f"fold{k}: speaker(s) {sorted(shared_spk)} are in both {a} and {b}")
    return problems


def _coverage_problems(path: Path, folds: List[Fold], tests_every_utterance: bool) -> List[str]:
    problems = []
    tested = Counter(u for f in folds for u in f.test)
    twice = sorted(u for u, n in tested.items() if n > 1)
    if twice:
        problems.append(f"{len(twice)} utterance(s) are tested in more than one fold, e.g. '{twice[0]}'")
    everyone = set(folds[0].train) | set(folds[0].dev) | set(folds[0].test)
    for k, f in enumerate(folds, start=1):
        if set(f.train) | set(f.dev) | set(f.test) != everyone:
            problems.append(f"fold{k}: its splits do not hold the same utterances as fold1's")
    untested = everyone - set(tested)
    if untested and tests_every_utterance:   # a cross-corpus protocol tests only the target corpus
        problems.append(f"{len(untested)} utterance(s) are never tested, e.g. '{sorted(untested)[0]}'")
    utt2fold = read_table(path / "utt2fold") if (path / "utt2fold").is_file() else {}
    expected = {u: str(k) for k, f in enumerate(folds, start=1) for u in f.test}
    if utt2fold != expected:
        problems.append(f"{path / 'utt2fold'}: does not match the test sets of the fold dirs")
    return problems
