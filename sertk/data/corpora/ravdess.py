"""RAVDESS, audio-only speech part (`Audio_Speech_Actors_01-24.zip`).

Layout: `<root>/Actor_01/03-01-05-01-02-01-01.wav`. Name fields: modality (03 audio-only),
vocal channel (01 speech), emotion, intensity (01 normal, 02 strong), statement, repetition,
actor (odd male, even female). Only `03-01-*` files are used; anything else is skipped with a
count. Codes the release does not use (intensity, statement or repetition other than 01/02, a strong
neutral, an actor other than its folder's) are refused: a renamed file would otherwise take a wrong label.
Ids: speaker `ravdess_01`, utterance `ravdess_01-03-01-05-01-02-01-01`. Raw label: the emotion code;
intensity goes to `utt2intensity`.
"""
import re
from collections import Counter
from pathlib import Path

from sertk.data.prepare import Scan, Utterance
from sertk.errors import CorpusError

NAME = re.compile(r"^(?P<mod>\d\d)-(?P<chan>\d\d)-(?P<emo>\d\d)-(?P<int>\d\d)"
                  r"-(?P<stmt>\d\d)-(?P<rep>\d\d)-(?P<actor>\d\d)\.wav$")
ACTOR_DIR = re.compile(r"^Actor_(\d\d)$")
INTENSITY = {"01": "normal", "02": "strong"}


def scan(root: Path) -> Scan:
    root = Path(root)
    actor_dirs = sorted(p for p in root.iterdir() if p.is_dir() and ACTOR_DIR.match(p.name)) if root.is_dir() else []
    if not actor_dirs:
        raise CorpusError(f"{root}: no Actor_XX folders found (expected the RAVDESS speech release, "
                          "<root>/Actor_01/03-01-01-01-01-01-01.wav)")
    utterances, skipped = [], Counter()
    for folder in actor_dirs:
        actor = ACTOR_DIR.match(folder.name).group(1)
        for path in sorted(folder.iterdir()):
            m = NAME.match(path.name)
            if not m or m["mod"] != "03" or m["chan"] != "01":
                skipped["not an audio-only speech file (03-01-*.wav)"] += 1
                continue
            if m["actor"] != actor:
                raise CorpusError(f"{path}: actor {m['actor']} in the name but the file is in {folder.name}")
            if m["int"] not in INTENSITY:
                raise CorpusError(f"{path}: intensity code {m['int']} is not 01 or 02")
            if m["int"] == "02" and m["emo"] == "01":
                raise CorpusError(f"{path}: intensity 02 (strong) with emotion 01 (neutral); RAVDESS records neutral "
                                  "at normal intensity only (a renamed file?)")
            for field, what in (("stmt", "statement"), ("rep", "repetition")):
                if m[field] not in ("01", "02"):
                    raise CorpusError(f"{path}: {what} code {m[field]} is not 01 or 02")
            speaker = f"ravdess_{actor}"
            utterances.append(Utterance(
                utt=f"{speaker}-{path.stem}", speaker=speaker, path=path, raw_label=m["emo"],
                gender="m" if int(actor) % 2 else "f",
                extra={"utt2intensity": INTENSITY[m["int"]]}))
    return Scan(utterances, skipped)
