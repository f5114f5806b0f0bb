"""`sertk data check`: prove a protocol dir keeps its promises, and show class counts per split.

Checked: every fold's splits are valid data dirs with no utterance in two splits; for a
speaker-independent protocol no speaker is in two splits; no audio is in two splits of a fold, by
path or by content (speaker ids alone prove nothing when a corpus holds one recording under two
speakers, or two copies of it); every utterance is tested in exactly one fold, as utt2fold says; and
each split still matches the checksum the card holds for it (ids, speakers, classes, audio paths), so
a flipped label or a repointed wav path after 'sertk data folds' is caught and named.

Audio duplicates: the same file (same real path) or the same content (sha1 of the decoded samples,
sertk.audio.samples_digest: equal whatever the container, name or header) in two splits of a fold is a
problem, since the test (or dev) score then measures memory; identical audio inside one split only is a
warning, since it counts twice but leaks nothing. Each file is decoded once, about 0.2 ms per second of
16 kHz audio: `sertk data check` on RAVDESS's 1440 files (24 loso folds) took 4.6 s against 3.8 s with
`audio="paths"` (paths only), EmoDB's 535 files 1.3 s against 1.2 s. (The RAVDESS speech copy in
../shared/corpora holds one such pair, a warning: actor 07's 03-01-03-01-02-01-07 and 03-01-03-01-02-02-07,
two "repetitions" with the same samples.)
"""
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from sertk.audio import samples_digest
from sertk.data.datadir import DataDir
from sertk.data.prepare import format_rows
from sertk.data.protocols import CARD_FILE, SPLITS, Fold, combined_checksum, fold_checksum, load_card, split_checksum
from sertk.data.table import read_table
from sertk.errors import AudioError, SertkError

AUDIO_CHECKS = ("samples", "paths")
# what a class with no utterance in a split means for the scores (UA and macro-F1 average the classes present)
ABSENT_MEANS = {"train": "the model never trains on it",
                "dev": "the fold's dev scores, which choose its checkpoint (and any grid point), average the other {n} "
                       "classes",
                "test": "the fold's own UA and macro-F1 average the other {n} classes (pooled scores cover every "
                        "class)"}
SHOWN = 3   # duplicates named per message


@dataclass
class CheckReport:
    card: dict
    problems: List[str] = field(default_factory=list)
    table: str = ""
    warnings: List[str] = field(default_factory=list)
    audio: str = ""   # what the audio comparison looked at, for the summary


def check_protocol(path, audio: str = "samples") -> CheckReport:
    """`audio`: how duplicates are found: 'samples' (same path or same decoded samples) or 'paths'."""
    if audio not in AUDIO_CHECKS:
        raise ValueError(f"audio must be one of {AUDIO_CHECKS}")
    path = Path(path)
    card = load_card(path)
    report = CheckReport(card)
    folds, rows = [], [["fold", "split", "speakers", *card["classes"], "total"]]
    loaded: Dict[int, Dict[str, DataDir]] = {}
    for k in range(1, card["num_folds"] + 1):
        try:
            dirs = {s: DataDir.load(path / f"fold{k}" / s) for s in SPLITS}
        except SertkError as e:
            report.problems.append(f"fold{k}: {e}")
            continue
        loaded[k] = dirs
        folds.append(Fold(*(dirs[s].utts for s in SPLITS)))
        report.problems += _disjointness_problems(k, dirs, card["speaker_independent"],
                                                  bool(card.get("dev_from_training_speakers")))
        for s in SPLITS:
            counts = Counter(dirs[s].utt2emo.values())
            rows.append([str(k), s, str(len(dirs[s].speakers)),
                         *(str(counts[c]) for c in card["classes"]), str(sum(counts.values()))])
            absent = [c for c in card["classes"] if not counts[c]]
            if absent and counts:
                report.warnings.append(f"fold{k}/{s} has no {', '.join(absent)}: " + ABSENT_MEANS[s].format(
                    n=len(card["classes"]) - len(absent)))
    report.table = format_rows(rows)
    if len(folds) == card["num_folds"]:
        report.problems += _coverage_problems(path, folds, card.get("tests_every_utterance", True))
    report.problems += _checksum_problems(path, card, loaded, folds, report.warnings)
    report.problems += _duplicate_audio(loaded, audio, report)
    return report


def _split_checksums_of(card: dict) -> Optional[List[dict]]:
    """Each fold's split -> checksum from the card; None for a card written before they were kept."""
    entries = card.get("folds")
    if not isinstance(entries, list) or len(entries) != card["num_folds"]:
        return None
    sums = [e.get("checksums") if isinstance(e, dict) else None for e in entries]
    return sums if all(isinstance(x, dict) for x in sums) else None


def _checksum_problems(path: Path, card: dict, loaded: Dict[int, Dict[str, DataDir]], folds: List[Fold],
                       warnings: List[str]) -> List[str]:
    sums = _split_checksums_of(card)
    if sums is None:
        # A card from before the checksum covered labels and paths: its ids are verified and the rest is a
        # warning, not a failure. The ids still prove the fold layout (disjointness, coverage and duplicate
        # audio are checked on the fold dirs themselves), protocol dirs that experiments were already scored
        # on stay checkable as they are, and rerunning 'sertk data folds' on the same data dir rebuilds the
        # same folds (every protocol is deterministic or seeded) with the full checksum.
        if len(folds) != card["num_folds"]:
            return []
        if fold_checksum(folds) != card["checksum"]:
            return [f"{path}: the fold lists do not match the card's checksum "
                    "(a fold dir was changed after 'sertk data folds')"]
        warnings.append(f"{path / CARD_FILE}: the card predates the checksum over labels and audio paths, so "
                        "only the fold lists' utterance ids were verified; rerun 'sertk data folds' (or 'sertk "
                        "data cross') to protect labels and paths too")
        return []
    problems = []
    for k, dirs in sorted(loaded.items()):
        changed = [s for s in SPLITS if split_checksum(dirs[s]) != sums[k - 1].get(s)]
        for s in changed:
            problems.append(f"fold{k}/{s}: its utterance ids, speakers, classes, audio paths or segments are not "
                            "what 'sertk data folds' wrote (checksum mismatch: a label, a wav path or the list was "
                            "changed); rerun 'sertk data folds' if the change is meant")
    if not problems and len(loaded) == card["num_folds"] and combined_checksum(sums) != card["checksum"]:
        problems.append(f"{path / CARD_FILE}: the card's checksum does not match its folds' checksums "
                        "(the card was edited)")
    return problems


# --- the same audio in two places ---------------------------------------------------------------

Member = Tuple[str, str, str, str]   # (split, utterance, speaker, real path)


def _duplicate_audio(loaded: Dict[int, Dict[str, DataDir]], audio: str, report: CheckReport) -> List[str]:
    """Problems for audio in two splits of a fold; one warning for identical audio inside one split."""
    digests: Dict[str, Optional[str]] = {}   # real path -> sha1 of its samples (None: not decodable)
    problems: List[str] = []
    within: Dict[frozenset, List[Member]] = {}
    across: set = set()
    for k, dirs in sorted(loaded.items()):
        groups: Dict[Tuple[str, str], List[Member]] = {}
        for s in SPLITS:
            dd = dirs[s]
            for u in dd.utts:
                real = os.path.realpath(dd.tables["wav.scp"][u])
                key = ("path", real)
                if audio == "samples":
                    if real not in digests:
                        digests[real] = _digest(real, problems)
                    key = ("samples", digests[real]) if digests[real] else key
                groups.setdefault(key, []).append((s, u, dd.utt2spk[u], real))
        pairs: Dict[Tuple[str, str], List[Tuple[Member, Member]]] = {}
        for members in groups.values():
            if len(members) < 2:
                continue
            splits = [s for s in SPLITS if any(m[0] == s for m in members)]
            if len(splits) == 1:
                within.setdefault(frozenset(m[1] for m in members), members)
                continue
            across.update(m[1] for m in members)
            for i, a in enumerate(splits):
                for b in splits[i + 1:]:
                    # one utterance id in two splits is already a problem of its own (_disjointness_problems)
                    pair = next(((x, y) for x in members if x[0] == a for y in members if y[0] == b and y[1] != x[1]),
                                None)
                    if pair:
                        pairs.setdefault((a, b), []).append(pair)
        for (a, b), found in sorted(pairs.items(), key=lambda x: (SPLITS.index(x[0][0]), SPLITS.index(x[0][1]))):
            shown = "; ".join(_pair_text(x, y) for x, y in sorted(found, key=lambda p: p[0][1])[:SHOWN])
            more = f"; and {len(found) - SHOWN} more" if len(found) > SHOWN else ""
            problems.append(f"fold{k}: the same audio is in {a} and {b} ({len(found)} case(s)): {shown}{more}")
    inside = sorted((members for utts, members in within.items() if not utts & across), key=lambda m: m[0][1])
    if inside:
        shown = "; ".join(" = ".join(f"'{m[1]}' (speaker {m[2]})" for m in members[:SHOWN]) +
                          f" ({'same file' if len({m[3] for m in members}) == 1 else 'same samples'})"
                          for members in inside[:SHOWN])
        more = f"; and {len(inside) - SHOWN} more" if len(inside) > SHOWN else ""
        report.warnings.append(f"{len(inside)} group(s) of identical audio, each inside one split of a fold (no "
                               f"leak between splits, but each counts more than once): {shown}{more}")
    files = len({m for dirs in loaded.values() for dd in dirs.values() for m in dd.tables["wav.scp"].values()})
    how = "same path or same decoded samples (sha1)" if audio == "samples" else "same path only (--audio paths)"
    report.audio = f"audio: {files} file(s) compared across splits by {how}"
    return problems


def _digest(path: str, problems: List[str]) -> Optional[str]:
    try:
        return samples_digest(path)
    except AudioError as e:
        problems.append(f"{e} (cannot compare its samples)")
        return None


def _pair_text(x: Member, y: Member) -> str:
    same = f"same file {x[3]}" if x[3] == y[3] else "same samples"
    return f"'{x[1]}' ({x[0]}, speaker {x[2]}) and '{y[1]}' ({y[0]}, speaker {y[2]}): {same}"


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
