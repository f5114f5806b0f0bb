"""Small helpers shared by several test files."""
from pathlib import Path
from typing import Dict, Sequence

import numpy as np

from sertk.data.corpora import prepare_corpus
from sertk.data.validate import validate_dir
from sertk.decode import write_decode_dir


def prepare_valid(corpus: str, root: Path, out: Path, **options):
    """Prepare a replica and insist that the data dir it writes validates clean."""
    report = prepare_corpus(corpus, root, out, **options)
    assert validate_dir(out) == []
    return report


def write_utt_segments(out, utt_segments: Dict[str, Sequence[Sequence[float]]], classes, info=None, **kw):
    """A decode dir from utt -> its segments' posteriors (segments named `<utt>-s<j>`). Shared by the
    scoring and results tests."""
    seg_post = {f"{u}-s{j}": np.asarray(p, dtype=float) for u, segs in utt_segments.items()
                for j, p in enumerate(segs)}
    seg2utt = {f"{u}-s{j}": u for u, segs in utt_segments.items() for j in range(len(segs))}
    write_decode_dir(out, seg_post, seg2utt, classes, info if info is not None else {"checkpoint": "best.pt"}, **kw)
    return out
