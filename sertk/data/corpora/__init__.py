"""Corpus preparers: one module per release layout, each returning a `Scan`.

`prepare_corpus` is the one path from a release folder to a data dir on disk.
"""
from pathlib import Path
from typing import Callable, Dict, Optional

from sertk.data.corpora import csv_import, emodb, iemocap, msp_improv, ravdess
from sertk.data.labels import LabelMap, default_label_map
from sertk.data.prepare import PrepareReport, Scan, build_datadir
from sertk.errors import CorpusError

SCANNERS: Dict[str, Callable[..., Scan]] = {
    "emodb": emodb.scan,
    "iemocap": iemocap.scan,
    "msp_improv": msp_improv.scan,
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
    return _build_and_save(scan, labels or default_label_map(corpus), out, skip_bad_audio)


def import_csv(csv_path, out, labels: Optional[LabelMap] = None, corpus: Optional[str] = None,
               skip_bad_audio: bool = False) -> PrepareReport:
    """`sertk data import`: a data dir from a `path,label,speaker[,session,gender]` CSV."""
    scan = csv_import.scan(Path(csv_path))
    return _build_and_save(scan, labels or csv_import.identity_label_map(scan, corpus), out, skip_bad_audio)


def _build_and_save(scan: Scan, labels: LabelMap, out, skip_bad_audio: bool) -> PrepareReport:
    report = build_datadir(scan, labels, skip_bad_audio=skip_bad_audio)
    report.datadir.save(out)
    return report
