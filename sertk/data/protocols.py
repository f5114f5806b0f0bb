"""Evaluation protocols: named fold schemes with speaker-disjoint train / dev / test.

A protocol dir holds `utt2fold` (the fold in which each utterance is tested), `protocol.yaml`
(the card: corpus, classes, folds, dev policy, checksum of the fold lists) and
`fold<k>/{train,dev,test}/`, each a complete data dir.
"""
import hashlib
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import yaml

from sertk.data.datadir import DATA_FILES, DataDir
from sertk.errors import ProtocolError
from sertk.fsutil import atomic_output_dir, owned_by
from sertk.yamlutil import read_yaml_file

SPLITS = ("train", "dev", "test")
CARD_FILE = "protocol.yaml"


@dataclass
class Fold:
    train: List[str]
    dev: List[str]
    test: List[str]

    def split(self, name: str) -> List[str]:
        return getattr(self, name)


@dataclass(frozen=True)
class Protocol:
    build: Callable[..., List[Fold]]
    speaker_independent: bool        # no test speaker in train or dev
    dev_policy: str
    description: str
    dev_from_training_speakers: bool = False   # dev is a share of the training speakers' utterances


def _folds_from_groups(dd: DataDir, groups: List[List[str]], dev_of: Callable[[int], List[str]]) -> List[Fold]:
    """Fold k tests speaker group k, develops on `dev_of(k)` and trains on every other speaker."""
    folds = []
    for k, test_spk in enumerate(groups):
        dev_spk = dev_of(k)
        held = set(test_spk) | set(dev_spk)
        train_spk = [s for s in dd.speakers if s not in held]
        folds.append(Fold(*(_utts_of(dd, spk) for spk in (train_spk, dev_spk, test_spk))))
    return folds


def _utts_of(dd: DataDir, speakers: Sequence[str]) -> List[str]:
    spk2utt = dd.spk2utt
    return sorted(u for s in speakers for u in spk2utt[s])


def loso(dd: DataDir) -> List[Fold]:
    speakers = dd.speakers
    if len(speakers) < 3:
        raise ProtocolError(f"loso needs at least 3 speakers (test, dev, train), found {len(speakers)}")
    return _folds_from_groups(dd, [[s] for s in speakers], lambda k: [speakers[(k + 1) % len(speakers)]])


def _session_groups(dd: DataDir, protocol: str) -> List[List[str]]:
    """The speakers of each session (sessions sorted); a speaker in two sessions is an error."""
    if "utt2sess" not in dd.tables:
        raise ProtocolError(f"{protocol} needs utt2sess in the data dir")
    sess_of_spk: Dict[str, str] = {}
    for utt, spk in dd.utt2spk.items():
        sess = dd.tables["utt2sess"][utt]
        if sess_of_spk.setdefault(spk, sess) != sess:
            raise ProtocolError(f"speaker '{spk}' appears in sessions '{sess_of_spk[spk]}' and '{sess}'; "
                                f"{protocol} would leak that speaker into training")
    sessions = sorted(set(sess_of_spk.values()))
    if len(sessions) < 2:
        raise ProtocolError(f"{protocol} needs at least 2 sessions, found {len(sessions)}")
    return [sorted(s for s, x in sess_of_spk.items() if x == sess) for sess in sessions]


def loso_session(dd: DataDir) -> List[Fold]:
    groups = _session_groups(dd, "loso_session")

    def dev_of(k: int) -> List[str]:
        # one speaker of the next session, alternating which one, so the genders take turns
        nxt = groups[(k + 1) % len(groups)]
        return [nxt[k % len(nxt)]]
    return _folds_from_groups(dd, groups, dev_of)


def loso_speaker(dd: DataDir) -> List[Fold]:
    """Each speaker tested alone; the other speaker(s) of its session are dev, the other sessions train."""
    groups = _session_groups(dd, "loso_speaker")
    lonely = [g[0] for g in groups if len(g) < 2]
    if lonely:
        raise ProtocolError(f"loso_speaker needs two speakers per session for dev; speaker {lonely[0]} is alone "
                            "in its session")
    fold_groups = [[spk] for g in groups for spk in g]
    session_of = {spk: g for g in groups for spk in g}
    return _folds_from_groups(dd, fold_groups,
                              lambda k: [s for s in session_of[fold_groups[k][0]] if s != fold_groups[k][0]])


def actor6(dd: DataDir) -> List[Fold]:
    speakers = dd.speakers
    if len(speakers) != 24:
        raise ProtocolError(f"actor6 is RAVDESS's 6 folds of 4 actors and needs 24 actors, found {len(speakers)}")
    groups = [speakers[i:i + 4] for i in range(0, 24, 4)]
    return _folds_from_groups(dd, groups, lambda k: groups[(k + 1) % 6])


def loso_dev_share(dd: DataDir, dev_share: float = 0.2, seed: int = 0) -> List[Fold]:
    """Leave one speaker out for corpora too small to spare a dev speaker (TESS: 2, SAVEE: 4): dev is
    `dev_share` of each training speaker's utterances of each class, the same ones in every fold where that
    speaker trains. Test speakers stay unseen; dev is speaker-dependent, which the card says."""
    speakers = dd.speakers
    if len(speakers) < 2:
        raise ProtocolError(f"loso_dev_share needs at least 2 speakers (train, test), found {len(speakers)}")
    if not isinstance(dev_share, (int, float)) or not 0 < dev_share < 1:
        raise ProtocolError(f"--dev-share must be a fraction between 0 and 1, got {dev_share}")
    dev = _dev_share(dd, dev_share, seed)
    folds = []
    for test_spk in speakers:
        train_pool = _utts_of(dd, [s for s in speakers if s != test_spk])
        fold = Fold([u for u in train_pool if u not in dev], [u for u in train_pool if u in dev],
                    _utts_of(dd, [test_spk]))
        if not fold.dev:
            need = max(2, math.floor(0.5 / dev_share) + 1)   # round(share * n) >= 1 and one kept for training
            raise ProtocolError(f"loso_dev_share: no dev utterances when testing speaker '{test_spk}' (with "
                                f"--dev-share {dev_share}, a speaker lends one of a class to dev from {need} utterances "
                                "of it); raise --dev-share")
        folds.append(fold)
    return folds


def _dev_share(dd: DataDir, share: float, seed: int) -> set:
    """round(share x n) of every speaker x class group of n utterances (never all of them: one stays in train),
    drawn with a generator seeded by (seed, speaker, class), so a speaker lends the same utterances in every fold."""
    groups: Dict[tuple, List[str]] = {}
    for u in dd.utts:
        groups.setdefault((dd.utt2spk[u], dd.utt2emo[u]), []).append(u)
    dev = set()
    for (spk, cls), utts in sorted(groups.items()):
        random.Random(f"{seed}/{spk}/{cls}").shuffle(utts)
        dev.update(utts[:min(len(utts) - 1, round(share * len(utts)))])
    return dev


def random_kfold(dd: DataDir, num_folds: int = 10, seed: int = 0) -> List[Fold]:
    """Class-stratified random folds over utterances: speaker-dependent, for comparison with papers.
    Utterances with the same audio (same file, or the same decoded samples: RAVDESS ships such copies) are
    dealt as one, so a copy never lands in train while its twin is tested (`sertk data check` would refuse)."""
    if not 3 <= num_folds <= len(dd.utts):
        raise ProtocolError(f"random_kfold needs 3 <= num_folds <= {len(dd.utts)}, got {num_folds}")
    twin_of = _same_audio(dd)
    rng = random.Random(seed)
    parts: List[List[str]] = [[] for _ in range(num_folds)]
    dealt = 0
    for cls in dd.labels.classes:
        utts = sorted(u for u in dd.utts if dd.utt2emo[u] == cls and u not in twin_of)
        rng.shuffle(utts)
        for u in utts:  # deal round-robin, continuing across classes so parts stay equal in size
            parts[dealt % num_folds].append(u)
            dealt += 1
    part_of = {u: k for k, part in enumerate(parts) for u in part}
    for u, first in sorted(twin_of.items()):
        parts[part_of[first]].append(u)
    folds = []
    for k in range(num_folds):
        dev_k = (k + 1) % num_folds
        train = [u for j, p in enumerate(parts) if j not in (k, dev_k) for u in p]
        folds.append(Fold(sorted(train), sorted(parts[dev_k]), sorted(parts[k])))
    return folds


def _same_audio(dd: DataDir) -> Dict[str, str]:
    """Each utterance whose audio equals an earlier one's (sorted ids; same path, else same decoded samples)
    -> that earlier utterance. A file that cannot be decoded is compared by path only."""
    from sertk.audio import samples_digest      # decoding is only needed here
    from sertk.errors import AudioError
    first_of: Dict[str, str] = {}
    twin_of: Dict[str, str] = {}
    for u in dd.utts:
        path = dd.tables["wav.scp"][u]
        keys = [f"path:{Path(path).resolve()}"]
        try:
            keys.append(f"samples:{samples_digest(path)}")
        except (AudioError, OSError):
            pass
        first = next((first_of[k] for k in keys if k in first_of), None)
        if first is not None:
            twin_of[u] = twin_of.get(first, first)
        for k in keys:
            first_of.setdefault(k, u)
    return twin_of


PROTOCOLS: Dict[str, Protocol] = {
    "loso": Protocol(loso, True, "one training speaker, rotating: the speaker after the test speaker",
                     "leave one speaker out (EmoDB: 10 folds)"),
    "loso_session": Protocol(loso_session, True,
                             "one speaker of the next session, alternating between its speakers",
                             "leave one session out (IEMOCAP: 5 folds, MSP-IMPROV: 6)"),
    "loso_speaker": Protocol(loso_speaker, True, "the other speaker(s) of the test speaker's session",
                             "leave one speaker out, its session partner for dev (IEMOCAP: 10 folds)"),
    "actor6": Protocol(actor6, True, "the next group of 4 actors",
                       "RAVDESS: test actors 1-4, 5-8, ..., 21-24"),
    "loso_dev_share": Protocol(loso_dev_share, True,
                               "a share (--dev-share, default 0.2) of every training speaker's utterances per class",
                               "leave one speaker out for corpora with 2+ speakers (TESS, SAVEE); dev is "
                               "speaker-dependent", dev_from_training_speakers=True),
    "random_kfold": Protocol(random_kfold, False, "the next fold of the random partition",
                             "class-stratified random k-fold over utterances (speaker-dependent)"),
}


def fold_checksum(folds: Sequence[Fold]) -> str:
    """The fold lists' utterance ids only: the card's checksum before it covered labels and audio paths
    (`fill_checksums` replaces it when the protocol dir is written); kept to verify older cards."""
    h = hashlib.sha256()
    for k, fold in enumerate(folds, start=1):
        for split in SPLITS:
            h.update(f"fold{k} {split} {' '.join(fold.split(split))}\n".encode())
    return "sha256:" + h.hexdigest()


def split_checksum(dd: DataDir) -> str:
    """What a split decides about scores: each utterance's id, speaker, class and audio path, and the
    segments, so a flipped label or a wav path pointed at another file changes it."""
    h = hashlib.sha256()
    for u in dd.utts:
        h.update(f"{u}\t{dd.utt2spk[u]}\t{dd.utt2emo[u]}\t{dd.tables['wav.scp'][u]}\n"
                 .encode("utf-8", "surrogateescape"))
    for seg, value in sorted(dd.segments.items()):
        h.update(f"segment\t{seg}\t{value}\n".encode("utf-8", "surrogateescape"))
    return "sha256:" + h.hexdigest()


def combined_checksum(split_checksums: Sequence[Dict[str, str]]) -> str:
    """The card's `checksum`: one digest over every fold's split checksums."""
    h = hashlib.sha256()
    for k, sums in enumerate(split_checksums, start=1):
        for split in SPLITS:
            h.update(f"fold{k} {split} {sums[split]}\n".encode())
    return "sha256:" + h.hexdigest()


def fill_checksums(card: dict, folds: Sequence[Dict[str, DataDir]]) -> None:
    """Into the card (in place): each fold entry's `checksums` (split -> `split_checksum`) and the card's
    `checksum` over them. `sertk data check` recomputes both and names the fold and split that changed."""
    sums = [{split: split_checksum(parts[split]) for split in SPLITS} for parts in folds]
    for entry, fold_sums in zip(card.get("folds") or [], sums):
        entry["checksums"] = fold_sums
    card["checksum"] = combined_checksum(sums)


def make_folds(dd: DataDir, protocol: str, out, corpus: Optional[str] = None, source: str = "",
               **options) -> dict:
    """Build the protocol's folds and write the protocol dir atomically; return the card."""
    if protocol not in PROTOCOLS:
        raise ProtocolError(f"unknown protocol '{protocol}'; known: {', '.join(PROTOCOLS)}")
    proto = PROTOCOLS[protocol]
    folds = proto.build(dd, **options)
    card = _card(dd, protocol, proto, folds, corpus or dd.labels.corpus or "unknown", source, options)
    write_protocol_dir(out, [{s: dd.select(fold.split(s)) for s in SPLITS} for fold in folds], card)
    return card


# A protocol dir: the card, utt2fold, the recipe's `sertk data check` report and each fold's data dirs.
owns_protocol_dir = owned_by((CARD_FILE, "utt2fold", "check.txt")
                             + tuple(f"fold[0-9]*/{split}/{name}" for split in SPLITS for name in DATA_FILES))


def write_protocol_dir(out, folds: Sequence[Dict[str, DataDir]], card: dict) -> None:
    """Write `fold<k>/{train,dev,test}/`, `utt2fold` and the card into `out`, atomically."""
    with atomic_output_dir(out, "protocol dir", owns_protocol_dir) as tmp:
        for k, parts in enumerate(folds, start=1):
            for split in SPLITS:
                (tmp / f"fold{k}" / split).mkdir(parents=True)
                parts[split].write_into(tmp / f"fold{k}" / split)
        utt2fold = {u: str(k) for k, parts in enumerate(folds, start=1) for u in parts["test"].utts}
        (tmp / "utt2fold").write_text("".join(f"{u} {utt2fold[u]}\n" for u in sorted(utt2fold)), encoding="utf-8")
        fill_checksums(card, folds)   # over what is written: ids, speakers, labels, audio paths
        (tmp / CARD_FILE).write_text(yaml.safe_dump(card, sort_keys=False), encoding="utf-8")


def _card(dd: DataDir, name: str, proto: Protocol, folds: List[Fold], corpus: str, source: str,
          options: dict) -> dict:
    def speakers(utts):
        return sorted({dd.utt2spk[u] for u in utts})
    return {
        "protocol": name,
        "description": proto.description,
        "corpus": corpus,
        "source": source,
        "classes": list(dd.labels.classes),
        "num_folds": len(folds),
        "speaker_independent": proto.speaker_independent,
        "dev_policy": proto.dev_policy,
        "dev_from_training_speakers": proto.dev_from_training_speakers,
        "options": dict(options),
        "folds": [{"fold": k,
                   "test_speakers": speakers(f.test) if proto.speaker_independent else "mixed",
                   "dev_speakers": speakers(f.dev) if proto.speaker_independent else "mixed",
                   "num_utts": {s: len(f.split(s)) for s in SPLITS}}
                  for k, f in enumerate(folds, start=1)],
        "checksum": fold_checksum(folds),
    }


def test_split_mismatch(protocol_dir, fold: int, data_dir) -> Optional[str]:
    """Why `data_dir` is not fold `fold`'s test set of the protocol in `protocol_dir`, as it was when the folds
    were made, else None (also when there is no readable card: nothing to compare with): a dev set
    (or another fold's test set) decoded into decode_test would otherwise be scored as the test result.
    Compared by the card's checksum of that split (ids, speakers, labels, audio paths); cards written
    before it are compared by path. `protocol_dir` may name the card file itself."""
    protocol_dir = Path(protocol_dir)
    if protocol_dir.is_file():
        protocol_dir = protocol_dir.parent
    try:
        card = load_card(protocol_dir)
    except ProtocolError:   # collect and pack say the card is missing; the decode is scored as before
        return None
    entry = next((f for f in card.get("folds") or [] if isinstance(f, dict) and f.get("fold") == fold), None)
    if entry is None:
        return f"the protocol in {protocol_dir} has no fold {fold}"
    expected = (entry.get("checksums") or {}).get("test") if isinstance(entry.get("checksums"), dict) else None
    test_dir = Path(protocol_dir) / f"fold{fold}" / "test"
    if expected is None:
        same = Path(data_dir).resolve() == test_dir.resolve()
    else:
        same = split_checksum(DataDir.load(data_dir, audio="none")) == expected   # labels decide scores
    if same:
        return None
    if Path(data_dir).resolve() == test_dir.resolve():
        return (f"{data_dir}, fold {fold}'s test set, changed after the folds were made (its utterances, speakers, "
                f"labels or audio paths differ from the card's checksum): sertk data check {protocol_dir} says what")
    return (f"{data_dir}, which is not fold {fold}'s test set ({test_dir}: its utterances, speakers, labels or audio "
            "paths differ); decode the fold's test dir into it (sertk decode --retest)")


def load_card(path) -> dict:
    card_path = Path(path) / CARD_FILE
    if not card_path.is_file():
        raise ProtocolError(f"{path}: no {CARD_FILE}; is this a protocol dir made by 'sertk data folds'?")
    card = read_yaml_file(card_path, ProtocolError)
    for key in ("protocol", "num_folds", "speaker_independent", "checksum", "classes"):
        if not isinstance(card, dict) or key not in card:
            raise ProtocolError(f"{card_path}: the card has no '{key}'")
    # an edited card read as it stands would fail later as a traceback (range over a string, and so on)
    kinds = {"protocol": (str, "a name"), "num_folds": (int, "a whole number >= 1"),
             "speaker_independent": (bool, "true or false"), "checksum": (str, "a checksum"),
             "classes": (list, "a list of class names"), "folds": (list, "a list of fold entries")}
    for key, (kind, wants) in kinds.items():
        value = card.get(key, [])
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 1)):
            raise ProtocolError(f"{card_path}: '{key}' must be {wants}, not {value!r}")
    if not all(isinstance(c, str) for c in card["classes"]) or \
            not all(isinstance(f, dict) and isinstance(f.get("fold"), int) for f in card.get("folds", [])):
        raise ProtocolError(f"{card_path}: 'classes' must list names and 'folds' entries with a 'fold' number")
    return card
