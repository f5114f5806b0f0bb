"""The packed model file: a zip of sertk-model.json and weights.pt (sertk.inference.packed), written
atomically; read checked.

Reading never unpickles arbitrary objects: the JSON is JSON, and the weights load with
`torch.load(weights_only=True)`, which accepts tensors and plain containers only.
"""
import io
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from sertk.fsutil import atomic_write_bytes
from sertk.inference.pack_check import check_fit, check_meta
from sertk.inference.packed import META_MEMBER, WEIGHTS_MEMBER, PackedModel, PackError


def write_pack(path: Path, meta: Dict[str, Any], weights: Dict[str, torch.Tensor]) -> None:
    weights_buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in weights.items()}, weights_buf)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(META_MEMBER, json.dumps(meta, indent=1, allow_nan=False), compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(WEIGHTS_MEMBER, weights_buf.getvalue(), compress_type=zipfile.ZIP_STORED)
    atomic_write_bytes(Path(path), buf.getvalue())


def _open(path: Path) -> zipfile.ZipFile:
    if not path.is_file():
        raise PackError(f"{path}: no such packed model")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise PackError(f"{path}: not a packed sertk model ({e})") from None
    names = set(zf.namelist())
    if not {META_MEMBER, WEIGHTS_MEMBER} <= names:
        zf.close()
        raise PackError(f"{path}: not a packed sertk model (no {META_MEMBER} / {WEIGHTS_MEMBER}); "
                        "make one with 'sertk pack EXP_DIR -o model.sertk'")
    return zf


def is_pack_file(path: Path) -> bool:
    """Whether `path` is a packed sertk model (a zip holding its two members), readable or damaged inside:
    what `sertk pack -o` may replace."""
    try:
        with zipfile.ZipFile(path) as zf:
            return {META_MEMBER, WEIGHTS_MEMBER} <= set(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def intact_description(path: Path) -> Optional[Dict[str, Any]]:
    """The unchecked description of the pack at `path` if every member's bytes are whole (their CRCs hold) and
    the description is a JSON object; None for a damaged pack. What `sertk pack -o` needs to decide whether
    the file there is its own to keep, to replace or to refuse."""
    try:
        with zipfile.ZipFile(path) as zf:
            if zf.testzip() is not None:
                return None
            meta = json.loads(zf.read(META_MEMBER).decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError,
            RecursionError, KeyError):
        return None
    return meta if isinstance(meta, dict) else None


def _read_meta(zf: zipfile.ZipFile, path: Path) -> Dict[str, Any]:
    try:
        meta = json.loads(zf.read(META_MEMBER).decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError,
            RecursionError) as e:   # bytes damaged (the deflated text, its CRC, its offsets), or not JSON
        what = "a zlib error" if isinstance(e, zlib.error) else e.__class__.__name__
        raise PackError(f"{path}: damaged packed model ({what} reading {META_MEMBER})") from None
    return check_meta(meta, path)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")   # sertk writes packs with allow_nan=False


def read_meta(path: Path) -> Dict[str, Any]:
    """The description only (no weights are read), checked (`check_meta`)."""
    path = Path(path)
    with _open(path) as zf:
        return _read_meta(zf, path)


def read_pack(path: Path) -> PackedModel:
    """The description (checked) and the weights, checked to fit the model the description builds."""
    path = Path(path)
    with _open(path) as zf:
        meta = _read_meta(zf, path)
        try:
            weights = torch.load(io.BytesIO(zf.read(WEIGHTS_MEMBER)), map_location="cpu", weights_only=True)
        except Exception as e:  # truncated, or not plain tensors: never fall back to full unpickling
            raise PackError(f"{path}: damaged packed model, its weights cannot be read "
                            f"({e.__class__.__name__})") from None
    packed = PackedModel(meta, weights, path)
    check_fit(packed)
    return packed
