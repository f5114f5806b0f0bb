"""MSP-IMPROV.

Labels: `<root>/Evaluation.txt` (some copies spell it `Evalution.txt`). Each clip line,
`UTD-IMPROV-S01A-F01-P-FM01.avi; A; A:3.0; V:2.5; D:2.0 ; N:4.0;`, gives the consensus label
in its second `;`-separated field (A, H, S, N, or O other / X no agreement); the per-evaluator
lines that follow it and blank lines are ignored. A clip listed twice with the same label is
used once (counted as skipped); with different labels it is an error.

Audio: `<root>/Audio/session1/S01A/P/MSP-IMPROV-S01A-F01-P-FM01.wav`, or the same without
`Audio/` (the session folders directly in the root); `UTD-IMPROV-X` in Evaluation.txt names the
clip `MSP-IMPROV-X`. Name fields: `S01A` sentence 01 elicited with target emotion A (the
target, not the label); `F01` the actor the scenario was written for (session 1's female actor);
`P` the recording type (R read, T target sentence, S improvisation, P natural interaction between
takes); `FM01` the turn: the talker's gender (F), the other actor's (M; read clips FF or MM), an index.

The speaker is the one who talks: the turn's first letter with the session number (`MF03` in session
1 is M01), not the scenario's actor. Both actors talk in improvisations and between takes, and the
names say so: in the full list of the release's 8,166 clip names (a public copy: ihp-lab's
Speaker-Invariant-Domain-Adversarial-Neural-Networks, dataset/MSP-Improv/all.csv) read clips are only
`F0n-R-FF` / `M0n-R-MM` and target-sentence clips only `F0n-T-FM` / `M0n-T-MF`, where one actor alone
speaks, while `S` and `P` clips of either actor hold both `FM` and `MF` turns (3,283 clips, 40 %, are
`F0n-..-MF` or `M0n-..-FM`). Taking the actor field as the speaker (as some toolkits do) puts the
partner's turns under the actor: a dev speaker would share a voice with training, and
speaker-level folds would leak. No official description of the fields was available to check.

Ids: speaker `msp_improv_M01`, utterance `msp_improv_M01-MSP-IMPROV-S01A-F01-P-MF01`; session
`session1` (utt2sess). Raw label: the consensus letter. Extra files: utt2rectype (P/R/S/T),
utt2target (the elicitation target letter) and utt2actor (the scenario's actor, e.g. F01). The
release's 44.1 kHz audio is resampled on loading.
"""
import re
from collections import Counter
from pathlib import Path
from typing import Dict, List, Tuple

from sertk.data.prepare import Scan, Utterance
from sertk.errors import CorpusError

EVALUATION_FILES = ("Evaluation.txt", "Evalution.txt")
CLIP_PREFIX = "UTD-IMPROV-"
CLIP = re.compile(r"^(?P<name>UTD-IMPROV-(?P<sentence>S\d\d(?P<target>[A-Z]))-(?P<actor>[FM](?P<sess>\d\d))"
                  r"-(?P<rectype>[PRST])-(?P<turn>(?P<talker>[FM])[FM]\d+))(?:\.avi)?$")
LABEL = re.compile(r"^[A-Za-z]+$")
SESSION_DIR = re.compile(r"^session\d+$")


def evaluation_file(root: Path) -> Path:
    for name in EVALUATION_FILES:
        if (root / name).is_file():
            return root / name
    raise CorpusError(f"{root}: no {' or '.join(EVALUATION_FILES)} found (expected the MSP-IMPROV "
                      "release root, holding Evaluation.txt and Audio/session1/...)")


def audio_dir(root: Path) -> Path:
    for cand in (root / "Audio", root):
        if cand.is_dir() and any(p.is_dir() and SESSION_DIR.match(p.name) for p in cand.iterdir()):
            return cand
    raise CorpusError(f"{root}: no session1..session6 audio folders found in {root / 'Audio'} or {root} "
                      "(expected Audio/session1/S01A/P/MSP-IMPROV-S01A-F01-P-FM01.wav)")


def scan(root: Path) -> Scan:
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root}: not a folder (expected the MSP-IMPROV release root)")
    labels, skipped = read_labels(evaluation_file(root))
    audio = audio_dir(root)
    utterances = [_utterance(audio, m, label) for m, label in labels]
    # audio that no label line names (a cut or older Evaluation.txt) is counted, not passed over in silence
    labelled = {u.path.name for u in utterances}
    unlabelled = sum(1 for wav in audio.glob("session*/*/*/MSP-IMPROV-*.wav") if wav.name not in labelled)
    if unlabelled:
        skipped[f"audio file with no label line in {evaluation_file(root).name}"] += unlabelled
    return Scan(utterances, skipped)


def read_labels(path: Path) -> Tuple[List[Tuple[re.Match, str]], Counter]:
    """(parsed clip name, consensus label) per clip, and the duplicate lines skipped."""
    found: Dict[str, Tuple[re.Match, str, int]] = {}  # clip -> (parsed name, label, line)
    skipped = Counter()
    for lineno, m, label in _clip_lines(path):
        clip = clip_name(m)
        if clip in found:
            first_label, first_line = found[clip][1:]
            if first_label != label:
                raise CorpusError(f"{path}:{lineno}: clip {m['name']} is labelled '{label}' here but "
                                  f"'{first_label}' on line {first_line}")
            skipped[f"duplicate line in {path.name}"] += 1
            continue
        found[clip] = (m, label, lineno)
    if not found:
        raise CorpusError(f"{path}: no clip lines (starting with {CLIP_PREFIX}) found")
    return [(m, label) for m, label, _ in found.values()], skipped


def _clip_lines(path: Path) -> List[Tuple[int, re.Match, str]]:
    lines = []
    text = path.read_text(encoding="utf-8-sig", errors="replace")   # -sig: a byte-order mark hid line 1
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.startswith(CLIP_PREFIX):
            continue  # evaluator detail or blank
        fields = [f.strip() for f in line.split(";")]
        m = CLIP.match(fields[0])
        if not m or len(fields) < 2 or not LABEL.match(fields[1]):
            raise CorpusError(f"{path}:{lineno}: clip line does not parse (expected "
                              "'UTD-IMPROV-S01A-F01-P-FM01.avi; <label>; A:..; V:..; D:..; N:..;', the last name "
                              "field a turn such as FM01)")
        lines.append((lineno, m, fields[1]))
    return lines


def clip_name(m: re.Match) -> str:
    """The audio's name for a clip: Evaluation.txt's UTD-IMPROV-X is MSP-IMPROV-X."""
    return f"MSP-IMPROV-{m['sentence']}-{m['actor']}-{m['rectype']}-{m['turn']}"


def _utterance(audio: Path, m: re.Match, label: str) -> Utterance:
    clip = clip_name(m)
    speaker = f"msp_improv_{m['talker']}{m['sess']}"   # who talks, not whose scenario (module docstring)
    session = f"session{int(m['sess'])}"
    # a missing wav is left to build_datadir, which raises or skips it with a count
    path = audio / session / m["sentence"] / m["rectype"] / f"{clip}.wav"
    return Utterance(utt=f"{speaker}-{clip}", speaker=speaker, path=path, raw_label=label,
                     gender=m["talker"].lower(), session=session,
                     extra={"utt2rectype": m["rectype"], "utt2target": m["target"], "utt2actor": m["actor"]})
