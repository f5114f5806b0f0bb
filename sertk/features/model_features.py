"""What a model's features are: the part of a dump's feature config (features.yaml) that decides what the
streams a model reads hold. Training records it in the checkpoint; decode and pack check a dump against it,
so a model never reads features computed differently from those it learned on (another n_mels, hop,
frontend or encoder under the same stream name would otherwise pass whenever the width happens to match).
The dump's info section (utterance counts, checksums) describes the data, not the features, and is left
out: a model decodes another corpus's dump made with the same config.
"""
import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Set

from sertk.errors import FeatureError
from sertk.features.storage import SCP_FILE, read_dump_config
from sertk.features.streams import DUMP_INFO_KEY
from sertk.yamlutil import dotted_differences


def streams_with_grids(doc: Dict[str, Any], streams: Iterable[str]) -> Set[str]:
    """`streams` and the LLD streams whose frame grid their windows follow (segment-level streams)."""
    windows = (doc.get(DUMP_INFO_KEY) or {}).get("windows") or {}
    streams = set(streams)
    return streams | {w["grid"] for s, w in windows.items() if s in streams}


def model_feature_config(doc: Dict[str, Any], streams: Iterable[str]) -> Dict[str, Any]:
    """A dump's feature config (`doc`, as read from features.yaml) cut down to `streams` and their grids."""
    keep = streams_with_grids(doc, streams)
    features = {k: v for k, v in doc.items() if k not in ("streams", DUMP_INFO_KEY)}
    features["streams"] = {s: spec for s, spec in (doc.get("streams") or {}).items() if s in keep}
    return features


def check_model_features(recorded: Optional[Dict[str, Any]], doc: Dict[str, Any], streams: Iterable[str],
                         dump_dir: Path, model: str) -> None:
    """A `FeatureError` if the dump's config (`doc`) computes the model's streams otherwise than
    `recorded` (the checkpoint's record; None: a checkpoint from before sertk recorded it, not checked)."""
    if recorded is None:
        return
    diffs = dotted_differences(recorded, model_feature_config(doc, streams))
    if diffs:
        shown = "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
        raise FeatureError(f"{dump_dir}: its features differ from those {model} was trained on ({shown}); "
                           "give the dump the model was trained on, or extract one with its feature config")


def dump_fingerprint(dump_dir: Path, streams: Iterable[str]) -> str:
    """SHA-256 of what `streams` of a dump are: their feature config, the utterances and audio it was
    extracted from (the dump's utt_checksum), and each utterance's ark file name, offset and the ark's size
    (from feats.scp; the arks themselves are not read). A decode dir records it, so a decode is redone, not
    skipped, when asked with another dump or after the dump was extracted again otherwise. Folder names are
    left out: a dump that is moved (or the repository) keeps its fingerprint."""
    dump_dir = Path(dump_dir)
    doc = read_dump_config(dump_dir)
    info = doc.get(DUMP_INFO_KEY) or {}
    digest = hashlib.sha256(json.dumps([model_feature_config(doc, streams), info.get("utt_checksum")],
                                       sort_keys=True, default=str).encode())
    for stream in sorted(streams_with_grids(doc, streams)):
        scp = dump_dir / stream / SCP_FILE
        if not scp.is_file():
            raise FeatureError(f"{dump_dir}: no stream {stream!r} in this dump")
        sizes = {}
        for line in scp.read_text(encoding="utf-8").splitlines():
            utt, _, location = line.partition(" ")
            ark, _, offset = location.strip().rpartition(":")
            if ark not in sizes:
                sizes[ark] = Path(ark).stat().st_size if Path(ark).is_file() else -1
            digest.update(f"{stream} {utt} {Path(ark).name}:{offset} {sizes[ark]}\n".encode())
    return digest.hexdigest()
