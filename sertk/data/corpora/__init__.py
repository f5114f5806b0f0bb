"""Corpus preparers: one module per release layout, each returning a `Scan`.

`prepare_corpus` is the one path from a release folder to a data dir on disk.
"""
from pathlib import Path
from typing import Callable, Dict, Optional

from sertk.data.corpora import emodb, ravdess
from sertk.data.labels import LabelMap, default_label_map
from sertk.data.prepare import PrepareReport, Scan, build_datadir
from sertk.errors import CorpusError

SCANNERS: Dict[str, Callable[..., Scan]] = {
    "emodb": emodb.scan,
    "ravdess": ravdess.scan,
}


def prepare_corpus(corpus: str, root, out, labels: Optional[LabelMap] = None,
                   skip_bad_audio: bool = False, **options) -> PrepareReport:
    """Scan the release at `root`, build the data dir and write it to `out` atomically."""
    if corpus not in SCANNERS:
        raise CorpusError(f"unknown corpus '{corpus}'; known: {', '.join(sorted(SCANNERS))}")
    root = Path(root)
    if not root.exists():
        raise CorpusError(f"{root}: corpus root does not exist")
    scan = SCANNERS[corpus](root, **options)
    report = build_datadir(scan, labels or default_label_map(corpus), skip_bad_audio=skip_bad_audio)
    report.datadir.save(out)
    return report
