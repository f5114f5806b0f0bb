"""EmoDB (Berlin Database of Emotional Speech).

Layout: `<root>/wav/03a01Fa.wav` (the release's `wav/` folder; the folder itself is accepted as
root too). File name: speaker (2 digits), text code (3), emotion letter (German initial), version.
Ids: speaker `emodb_03`, utterance `emodb_03-03a01Fa`. Raw label: the emotion letter.
"""
import logging
import re
from collections import Counter
from pathlib import Path

from sertk.data.prepare import Scan, Utterance
from sertk.errors import CorpusError

log = logging.getLogger(__name__)

NAME = re.compile(r"^(?P<spk>\d\d)(?P<text>[a-z]\d\d)(?P<emo>[A-Z])(?P<version>[a-z])\.wav$")
GENDER = {"03": "m", "10": "m", "11": "m", "12": "m", "15": "m",
          "08": "f", "09": "f", "13": "f", "14": "f", "16": "f"}


def wav_dir(root: Path) -> Path:
    root = Path(root)
    for cand in (root / "wav", root):
        if cand.is_dir() and any(NAME.match(p.name) for p in cand.iterdir()):
            return cand
    raise CorpusError(f"{root}: no EmoDB wav files found in {root / 'wav'} or {root} "
                      "(expected names like 03a01Fa.wav)")


def scan(root: Path) -> Scan:
    folder = wav_dir(root)
    utterances, skipped = [], Counter()
    for path in sorted(folder.iterdir()):
        m = NAME.match(path.name)
        if not m:
            skipped["not an EmoDB wav name (like 03a01Fa.wav)"] += 1
            continue
        spk = m["spk"]
        if spk not in GENDER:
            log.warning("%s: speaker %s is not one of EmoDB's ten speakers; skipped", path, spk)
            skipped["unknown speaker"] += 1
            continue
        speaker = f"emodb_{spk}"
        utterances.append(Utterance(utt=f"{speaker}-{path.stem}", speaker=speaker, path=path,
                                    raw_label=m["emo"], gender=GENDER[spk]))
    return Scan(utterances, skipped)
