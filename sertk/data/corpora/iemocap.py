"""IEMOCAP (`IEMOCAP_full_release`).

Layout: `<root>/Session1/dialog/EmoEvaluation/Ses01F_impro01.txt` holds one summary line per
utterance, `[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5000, 2.5000, 2.5000]`,
among header (`%`), evaluator (`C-E2:`, `A-E3:`) and blank lines, which are ignored. Only the
.txt files directly in EmoEvaluation/ are read (its Categorical/, Attribute/... subfolders are
not); macOS `._*` files are skipped with a count. Audio:
`<root>/Session1/sentences/wav/<dialog>/<utterance>.wav`, `<dialog>` being the EmoEvaluation
file's stem. The folder holding `IEMOCAP_full_release/` is accepted as root too.

Speaker: the session plus the gender letter starting the utterance name's last field; the letter
after `Ses01` names the actor who wore the motion-capture markers, not the speaker. So
`Ses01F_impro01_M003` is session 1's male actor. Ids: speaker `iemocap_Ses01M`, utterance
`iemocap_Ses01M-Ses01F_impro01_M003`; session `Ses01` (utt2sess). Raw label: the category
field (`neu`, `hap`, `exc`, `xxx`, ...).

Options: `improvised_only` keeps the `_impro` dialogs; `drop_exc` drops excited instead of
merging it into happy (the default label map's choice).
"""
import functools
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

from sertk.data.prepare import BAD_AUDIO, PrepareReport, Scan, Utterance
from sertk.errors import CorpusError

log = logging.getLogger(__name__)

RELEASE_DIR = "IEMOCAP_full_release"
SESSIONS = (1, 2, 3, 4, 5)
SUMMARY = re.compile(r"^\[\s*(?P<start>\d+(?:\.\d*)?)\s*-\s*(?P<end>\d+(?:\.\d*)?)\s*\]\s+"
                     r"(?P<name>\S+)\s+(?P<cat>[A-Za-z]+)\s+\[[^\]]*\]\s*$")
UTT_NAME = re.compile(r"^Ses(?P<sess>\d\d)[FM]_.+_(?P<gen>[FM])\d+$")
# raw-label groups of the usual 4-class set and their counts in the full release
COUNT_GROUPS = {"neu": ("neu",), "hap+exc": ("hap", "exc"), "ang": ("ang",), "sad": ("sad",)}
PUBLISHED_COUNTS = {"neu": 1708, "hap+exc": 1636, "ang": 1103, "sad": 1084}


def release_dir(root: Path) -> Path:
    root = Path(root)
    for cand in (root, root / RELEASE_DIR):
        if any((cand / f"Session{n}").is_dir() for n in SESSIONS):
            return cand
    raise CorpusError(f"{root}: no Session1..Session5 folders found in {root} or {root / RELEASE_DIR} "
                      "(expected the IEMOCAP release, <root>/Session1/dialog/EmoEvaluation/*.txt)")


def scan(root: Path, improvised_only: bool = False, drop_exc: bool = False) -> Scan:
    release = release_dir(root)
    sessions = [n for n in SESSIONS if (release / f"Session{n}").is_dir()]
    absent = [f"Session{n}" for n in SESSIONS if n not in sessions]
    if absent:   # prepared all the same (a partial copy for a trial), but its folds are not IEMOCAP's five
        log.warning("%s lacks %s: %d of the %d sessions prepared; loso_session on them is not the full corpus's "
                    "5-fold protocol", release, ", ".join(absent), len(sessions), len(SESSIONS))
    utterances, skipped = [], Counter()
    for n in sessions:
        for path in _evaluation_files(release / f"Session{n}", skipped):
            dialog = path.stem
            found = [_utterance(release / f"Session{n}", n, dialog, name, cat)
                     for name, cat in _summary_lines(path, n, dialog)]
            if improvised_only and "_impro" not in dialog:
                skipped["scripted dialog (improvised_only)"] += len(found)
                continue
            utterances.extend(found)
    complete = sessions == list(SESSIONS) and not improvised_only
    return Scan(utterances, skipped,
                label_overrides={"exc": "drop"} if drop_exc else {},
                post_check=functools.partial(check_counts, complete=complete))


def _evaluation_files(session_dir: Path, skipped: Counter) -> List[Path]:
    folder = session_dir / "dialog" / "EmoEvaluation"
    if not folder.is_dir():
        raise CorpusError(f"{folder}: folder is missing (expected the label files "
                          f"{session_dir.name}/dialog/EmoEvaluation/*.txt)")
    files = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix == ".txt"):
        if path.name.startswith("._"):  # macOS resource forks, not label files
            skipped["macOS ._ file"] += 1
        else:
            files.append(path)
    if not files:
        raise CorpusError(f"{folder}: no label files (*.txt) found")
    return files


def _summary_lines(path: Path, session: int, dialog: str) -> List[Tuple[str, str]]:
    """(utterance name, category) of every summary line; other lines are evaluator detail."""
    found = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.startswith("["):
            continue
        m = SUMMARY.match(line)
        if not m:
            raise CorpusError(f"{path}:{lineno}: summary line does not parse (expected "
                              "'[start - end]<TAB>utterance<TAB>category<TAB>[val, act, dom]')")
        name = m["name"]
        n = UTT_NAME.match(name)
        # the dialog prefix locates the audio, the session prefix the speaker: both must agree
        if not n or not name.startswith(dialog + "_") or int(n["sess"]) != session:
            raise CorpusError(f"{path}:{lineno}: utterance name '{name}' does not belong to dialog "
                              f"'{dialog}' of Session{session} (expected {dialog}_F000 or {dialog}_M000 style)")
        found.append((name, m["cat"]))
    return found


def _utterance(session_dir: Path, session: int, dialog: str, name: str, category: str) -> Utterance:
    letter = UTT_NAME.match(name)["gen"]
    sess = f"Ses{session:02d}"
    speaker = f"iemocap_{sess}{letter}"
    # a missing wav is left to build_datadir, which raises or skips it with a count
    path = session_dir / "sentences" / "wav" / dialog / f"{name}.wav"
    return Utterance(utt=f"{speaker}-{name}", speaker=speaker, path=path, raw_label=category,
                     gender=letter.lower(), session=sess)


def raw_counts(report: PrepareReport) -> Dict[str, int]:
    raw = Counter(report.datadir.tables["utt2lab_raw"].values())
    return {group: sum(raw[r] for r in labels) for group, labels in COUNT_GROUPS.items()}


def check_counts(report: PrepareReport, complete: bool) -> None:
    """Log the 4-class raw-label counts; warn when a complete release does not give the published ones."""
    counts = raw_counts(report)
    log.info("IEMOCAP raw label counts in the data dir: %s", _format_counts(counts))
    # only comparable when every session, every utterance with audio and all four groups are in
    kept_all = not any(report.dropped[r] for labels in COUNT_GROUPS.values() for r in labels)
    if complete and kept_all and not report.skipped[BAD_AUDIO] and counts != PUBLISHED_COUNTS:
        log.warning("IEMOCAP counts differ from the full release's: got %s, published %s; "
                    "is the release incomplete or modified?",
                    _format_counts(counts), _format_counts(PUBLISHED_COUNTS))


def _format_counts(counts: Dict[str, int]) -> str:
    parts = ", ".join(f"{group} {counts[group]}" for group in COUNT_GROUPS)
    return f"{parts} (total {sum(counts.values())})"
