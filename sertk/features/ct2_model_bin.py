"""The CTranslate2 (faster-whisper) model.bin reader: its index, and its variables as stored.

A faster-whisper folder holds `model.bin` (every weight, in CTranslate2's own binary format) and
`config.json`. This module parses `model.bin` itself, so the ctranslate2 runtime is not needed:

    model.bin (binary version 6, little-endian, as ctranslate2/specs/model_spec.py `_serialize` writes it)
        uint32 version | string spec name ("WhisperSpec") | uint32 spec revision | uint32 variable count
        per variable: string name | uint8 rank | rank x uint32 dims | uint8 dtype id | uint32 byte count | data
        uint32 alias count | per alias: string alias | string target
    string = uint16 length (the trailing NUL included) | UTF-8 bytes | NUL
    dtype ids: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16

Only the index is read in full (by seeking past the data); of the data, only the variables asked for are
read (sertk.features.ct2_whisper asks for `encoder/*`: Whisper-base 41 of 145 MB), in their stored dtype.
"""
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from sertk.errors import FeatureError

MODEL_BIN = "model.bin"
CONFIG_JSON = "config.json"
BINARY_VERSION = 6                 # the layout above; CTranslate2 3.x and 4.x write it
SPEC_NAME = "WhisperSpec"
MAX_RANK = 8

# dtype id -> (name, torch dtype, bytes per item); the order of ctranslate2's DataType enum
DTYPES: Dict[int, Tuple[str, torch.dtype, int]] = {
    0: ("float32", torch.float32, 4),
    1: ("int8", torch.int8, 1),
    2: ("int16", torch.int16, 2),
    3: ("int32", torch.int32, 4),
    4: ("float16", torch.float16, 2),
    5: ("bfloat16", torch.bfloat16, 2),
}
FLOAT_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Ct2Variable:
    """One entry of the model.bin index: where its data lies in the file."""
    name: str
    shape: Tuple[int, ...]
    dtype: str
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Ct2Index:
    path: Path
    version: int
    spec: str
    revision: int
    variables: Dict[str, Ct2Variable]
    aliases: Dict[str, str]

    def lookup(self, name: str) -> Optional[Ct2Variable]:
        """The variable `name` stands for (an alias resolved), or None."""
        return self.variables.get(self.aliases.get(name, name))


class _Reader:
    """Reads the little-endian scalars and strings of model.bin, with a clear error at the file's end."""

    def __init__(self, f, path: Path, size: int):
        self.f, self.path, self.size = f, path, size

    def error(self, problem: str) -> FeatureError:
        return FeatureError(f"{self.path}: {problem}")

    def read(self, n: int, what: str) -> bytes:
        pos = self.f.tell()
        if pos + n > self.size:
            raise self.error(f"truncated at byte {self.size}: {what} at byte {pos} needs {n} bytes "
                             "(an incomplete copy or download?)")
        return self.f.read(n)

    def room(self, count: int, min_bytes: int, what: str) -> None:
        """A count read from the file is refused when that many entries of at least `min_bytes` cannot fit in
        the bytes left (a corrupt count would otherwise run a long loop to a confusing error)."""
        left = self.size - self.f.tell()
        if count * min_bytes > left:
            raise self.error(f"truncated at byte {self.size}, or corrupt: {count} {what} cannot fit in the "
                             f"{left} bytes left after byte {self.f.tell()}")

    def unpack(self, fmt: str, what: str):
        return struct.unpack("<" + fmt, self.read(struct.calcsize("<" + fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("H", f"the length of {what}")
        pos = self.f.tell()
        raw = self.read(n, what)
        if n == 0 or raw[-1] != 0:
            raise self.error(f"corrupt at byte {pos}: {what} is not a NUL-terminated string")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise self.error(f"corrupt at byte {pos}: {what} is not UTF-8 text") from None


def ct2_model_bin(path) -> Path:
    """`path` itself when it is a file, else the model.bin inside the folder `path`."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FeatureError(f"{path}: no such CTranslate2 model folder")
    model = path / MODEL_BIN
    if not model.is_file():
        raise FeatureError(f"{path}: no {MODEL_BIN} (a CTranslate2 Whisper folder holds {MODEL_BIN} and {CONFIG_JSON})")
    return model


def read_ct2_index(path) -> Ct2Index:
    """Parse and check the index of a CTranslate2 model.bin (a file, or the folder holding it) without
    reading any variable's data."""
    path = ct2_model_bin(path)
    size = path.stat().st_size
    if size == 0:
        raise FeatureError(f"{path}: empty file (0 bytes), not a CTranslate2 model")
    with open(path, "rb") as f:
        r = _Reader(f, path, size)
        version = r.unpack("I", "the binary version")
        if version != BINARY_VERSION:
            if 1 <= version < BINARY_VERSION:
                why = f"an old CTranslate2 binary version {version}; convert the model again with a current CTranslate2"
            elif BINARY_VERSION < version < 100:
                why = f"CTranslate2 binary version {version}, newer than this reader knows ({BINARY_VERSION})"
            else:
                why = "not a CTranslate2 model file (its first 4 bytes are no known binary version)"
            raise r.error(f"{why}")
        spec = r.string("the model spec name")
        if spec != SPEC_NAME:
            raise r.error(f"a CTranslate2 {spec or 'model without a spec name'}, not a Whisper model ({SPEC_NAME})")
        revision = r.unpack("I", "the spec revision")
        count = r.unpack("I", "the variable count")
        r.room(count, 9, "variables")   # smallest entry: 2-byte length + NUL name, rank, dtype, byte count
        variables: Dict[str, Ct2Variable] = {}
        for i in range(count):
            name = r.string(f"the name of variable {i + 1} of {count}")
            rank = r.unpack("B", f"the rank of {name}")
            if rank > MAX_RANK:
                raise r.error(f"corrupt: variable {name} has rank {rank}")
            shape = tuple(r.unpack("I", f"the shape of {name}") for _ in range(rank))
            dtype_id = r.unpack("B", f"the dtype of {name}")
            if dtype_id not in DTYPES:
                raise r.error(f"corrupt: variable {name} has unknown dtype id {dtype_id}")
            dtype, _, item = DTYPES[dtype_id]
            nbytes = r.unpack("I", f"the byte count of {name}")
            expected = math.prod(shape) * item
            if nbytes != expected:
                raise r.error(f"corrupt: variable {name} holds {nbytes} bytes, but its shape {list(shape)} "
                              f"of {dtype} needs {expected}")
            offset = f.tell()
            if offset + nbytes > size:
                raise r.error(f"truncated at byte {size}: variable {name} needs bytes {offset}..{offset + nbytes} "
                              "(an incomplete copy or download?)")
            if name in variables:
                raise r.error(f"corrupt: variable {name} appears twice")
            variables[name] = Ct2Variable(name, shape, dtype, offset, nbytes)
            f.seek(nbytes, 1)
        n_aliases = r.unpack("I", "the alias count")
        r.room(n_aliases, 6, "aliases")   # smallest entry: two NUL-only strings with their lengths
        aliases: Dict[str, str] = {}
        for i in range(n_aliases):
            alias = r.string(f"alias {i + 1} of {n_aliases}")
            target = r.string(f"the target of alias {alias}")
            if target not in variables:
                raise r.error(f"corrupt: alias {alias} names {target}, which is not a variable")
            aliases[alias] = target
        if f.tell() != size:
            raise r.error(f"corrupt: {size - f.tell()} unexpected bytes after the model's end at byte {f.tell()} "
                          "(parts joined in the wrong order, or a damaged file?)")
    return Ct2Index(path, version, spec, revision, variables, aliases)


def read_ct2_tensor(f, path: Path, var: Ct2Variable) -> torch.Tensor:
    """The data of `var`, as stored (dtype and shape), from the open model.bin `f` at `path`."""
    _, torch_dtype, _ = next(v for v in DTYPES.values() if v[0] == var.dtype)
    if var.nbytes == 0:
        return torch.zeros(var.shape, dtype=torch_dtype)
    data = bytearray(var.nbytes)   # writable and owned: the tensor is a view of it
    f.seek(var.offset)
    if f.readinto(data) != var.nbytes:
        raise FeatureError(f"{path}: truncated while reading {var.name} (did the file change meanwhile?)")
    return torch.frombuffer(data, dtype=torch_dtype).reshape(var.shape)


def read_ct2_variables(path, prefix: str = "encoder/") -> Dict[str, torch.Tensor]:
    """The variables whose name starts with `prefix` (aliases under it too), as stored (dtype and shape),
    read from a CTranslate2 model.bin (a file, or the folder holding it)."""
    return read_index_variables(read_ct2_index(path), prefix)


def read_index_variables(index: Ct2Index, prefix: str) -> Dict[str, torch.Tensor]:
    """`read_ct2_variables` for an index already read."""
    names = [n for n in list(index.variables) + list(index.aliases) if n.startswith(prefix)]
    out: Dict[str, torch.Tensor] = {}
    with open(index.path, "rb") as f:
        for name in sorted(names, key=lambda n: index.lookup(n).offset):
            out[name] = read_ct2_tensor(f, index.path, index.lookup(name))
    return out


def _head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def is_ct2_whisper_folder(path) -> bool:
    """True for a folder with model.bin and config.json whose model.bin starts like a CTranslate2
    WhisperSpec (any binary version: `ct2_whisper.read_ct2_whisper` then says if it cannot read that version)."""
    path = Path(path)
    if not (path.is_dir() and (path / MODEL_BIN).is_file() and (path / CONFIG_JSON).is_file()):
        return False
    name = SPEC_NAME.encode() + b"\0"
    head = _head(path / MODEL_BIN, 6 + len(name))
    if len(head) < 6 + len(name):
        return False
    version, length = struct.unpack("<IH", head[:6])
    return 1 <= version < 100 and length == len(name) and head[6:] == name

