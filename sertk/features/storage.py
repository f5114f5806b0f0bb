"""The feature dump on disk, Kaldi style, so Kaldi users can bring or take features as they are:

    <dump>/features.yaml              the resolved feature config, plus a `dump` section (utterances,
                                      a checksum of the utterance list, dims, frame shifts; for
                                      openSMILE streams also levels, frame windows, segment windows
                                      and notes, see sertk.features.reading.StreamLayout)
    <dump>/<stream>/feats.scp         <utt> <absolute path>/feats.<job>.ark:<offset>, sorted by utt
    <dump>/<stream>/feats.<job>.ark   Kaldi binary float32 matrices [num_frames, dim] (segment- and
                                      utterance-level streams: [windows, dim], [1, dim])
    <dump>/<stream>/utt2num_frames    <utt> <num_frames>

Readers use `load_feats` (lazy), `read_feats` (many utterances, each ark opened once) and `num_frames`; `extract` writes through `ArkWriter` and
`write_stream_index`.
"""
import struct
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Tuple

import kaldiio
import numpy as np
import yaml

from sertk.data.table import format_table, read_table
from sertk.errors import FeatureError
from sertk.fsutil import atomic_write_text, owned_by
from sertk.yamlutil import read_yaml_file

CONFIG_FILE = "features.yaml"
SCP_FILE = "feats.scp"
NUM_FRAMES_FILE = "utt2num_frames"

Entry = Tuple[str, str, int, int]   # (utt, ark file name, byte offset of the matrix, num_frames)


def ark_name(job: int) -> str:
    return f"feats.{job}.ark"


class ArkWriter:
    """Appends float32 [frames, dim] matrices to one ark file and remembers where each one is."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file = open(self.path, "wb")
        self.entries: List[Entry] = []

    def write(self, utt: str, array: np.ndarray) -> None:
        # kaldiio writes "<utt> " and then the matrix; scp offsets point at the matrix, as in Kaldi
        offset = self._file.tell() + len(f"{utt} ".encode("utf-8"))
        kaldiio.save_ark(self._file, {utt: np.ascontiguousarray(array, dtype=np.float32)})
        self.entries.append((utt, self.path.name, offset, int(array.shape[0])))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ArkWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_stream_index(stream_dir: Path, final_stream_dir: Path, entries: Iterable[Entry]) -> None:
    """feats.scp and utt2num_frames in `stream_dir`; scp paths point into `final_stream_dir`, where
    the dump will be once it is moved into place."""
    entries = list(entries)
    final = Path(final_stream_dir).resolve()
    (Path(stream_dir) / SCP_FILE).write_text(
        format_table((utt, f"{final / ark}:{offset}") for utt, ark, offset, _ in entries), encoding="utf-8")
    (Path(stream_dir) / NUM_FRAMES_FILE).write_text(
        format_table((utt, str(n)) for utt, _, _, n in entries), encoding="utf-8")


def write_dump_config(dump_dir: Path, doc: Dict[str, Any]) -> None:
    atomic_write_text(Path(dump_dir) / CONFIG_FILE, yaml.safe_dump(doc, sort_keys=False))


def read_dump_config(dump_dir) -> Dict[str, Any]:
    path = Path(dump_dir) / CONFIG_FILE
    if not path.is_file():
        raise FeatureError(f"{dump_dir}: not a feature dump (no {CONFIG_FILE})")
    return read_yaml_file(path, FeatureError)


# A feature dump: its config and, per stream folder, the index, the frame counts and the arks.
DUMP_FILES = (CONFIG_FILE, f"*/{SCP_FILE}", f"*/{NUM_FRAMES_FILE}", "*/feats.*.ark")
owns_feature_dump = owned_by(DUMP_FILES)


def is_feature_dump(path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def stream_dir(dump_dir, stream: str) -> Path:
    """The folder of `stream` in a dump; a `FeatureError` names the streams there if it is not one."""
    folder = Path(dump_dir) / stream
    if not (folder / SCP_FILE).is_file():
        have = sorted(p.parent.name for p in Path(dump_dir).glob(f"*/{SCP_FILE}"))
        raise FeatureError(f"{dump_dir}: no feature stream '{stream}' (streams: {', '.join(have) or 'none'})")
    return folder


def load_feats(dump_dir, stream: str) -> Mapping[str, np.ndarray]:
    """utt -> float32 [num_frames, dim], read from the ark only when an utterance is looked up."""
    return kaldiio.load_scp(str(stream_dir(dump_dir, stream) / SCP_FILE))


def read_feats(dump_dir, stream: str, utts: Sequence[str]) -> Dict[str, np.ndarray]:
    """utt -> float32 [num_frames, dim] for every one of `utts` (all present: see `feats_index`), read in
    (ark, offset) order with each ark opened once: front to back through the disk, not one open and seek
    per utterance. A matrix that cannot be read whole, or holds NaN or Inf, is a `FeatureError` naming the
    utterance (see `_read_matrix`)."""
    index = feats_index(dump_dir, stream)
    scp = stream_dir(dump_dir, stream) / SCP_FILE
    files: Dict[str, Any] = {}   # kaldiio's cache of open arks
    try:
        read = {utt: _read_matrix(scp, utt, index[utt], files)
                for utt in sorted(utts, key=lambda u: _ark_position(index[u]))}
    finally:
        for f in files.values():
            f.close()
    return {utt: read[utt] for utt in utts}   # in the caller's order: statistics sum in a fixed order


# what kaldiio raises on bytes that are not a whole Kaldi matrix (an `assert` on a short read, a header it cannot
# parse, an ark that is not there): a damaged dump, not a bug
_UNREADABLE = (AssertionError, EOFError, OSError, ValueError, IndexError, struct.error, NotImplementedError)
_REEXTRACT = "extract the features again (sertk features extract)"


def _read_matrix(scp: Path, utt: str, entry: str, files: Dict[str, Any]) -> np.ndarray:
    """The float32 [frames, dim] matrix `entry` (`<ark>:<offset>`) of `utt` in `scp`, checked: an ark cut short,
    an offset past its end, bytes that are no Kaldi matrix, or a value that is NaN or Inf (they would reach the
    loss and the posteriors) is a `FeatureError` naming the utterance, the scp and what to do."""
    try:
        x = np.asarray(kaldiio.load_mat(entry, fd_dict=files), dtype=np.float32)
    except _UNREADABLE as e:
        raise FeatureError(f"{scp}: utterance '{utt}' cannot be read from {entry.strip()} "
                           f"({_unreadable_why(entry, e)}); the dump is damaged: {_REEXTRACT}") from None
    if x.ndim != 2:
        raise FeatureError(f"{scp}: utterance '{utt}' at {entry.strip()} is an array of shape {x.shape}, not a "
                           f"[frames, dim] matrix; {_REEXTRACT}")
    if not np.isfinite(x).all():   # a pass over memory just read: small next to reading it
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        raise FeatureError(f"{scp}: utterance '{utt}' has {bad} non-finite value(s) (NaN or Inf) among its "
                           f"{x.size} features; the dump is damaged: {_REEXTRACT}, or fix the features you brought")
    return x


def _unreadable_why(entry: str, error: BaseException) -> str:
    path, offset = _ark_position(entry)
    if isinstance(error, FileNotFoundError):
        return f"no ark file {path}"
    try:
        size = Path(path).stat().st_size
    except OSError:
        size = None
    if size is not None and offset >= size:
        return f"offset {offset} is past the end of the ark, {size} bytes long"
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return f"no whole Kaldi matrix at offset {offset}: the ark is cut short or the offset is wrong"


def feats_index(dump_dir, stream: str) -> Dict[str, str]:
    """utt -> its feats.scp entry (`<ark path>:<offset>`)."""
    text = (stream_dir(dump_dir, stream) / SCP_FILE).read_text(encoding="utf-8")
    return dict(line.split(None, 1) for line in text.splitlines() if line.strip())


def _ark_position(entry: str) -> Tuple[str, int]:
    path, _, offset = entry.rstrip().rpartition(":")
    return (path, int(offset)) if offset.isdigit() else (entry, 0)


def num_frames(dump_dir, stream: str) -> Dict[str, int]:
    path = stream_dir(dump_dir, stream) / NUM_FRAMES_FILE
    table = read_table(path)
    try:
        return {utt: int(n) for utt, n in table.items()}
    except ValueError:
        raise FeatureError(f"{path}: frame counts must be integers") from None
