"""A CTranslate2 (faster-whisper) Whisper folder read straight into `transformers`' WhisperEncoder.

A faster-whisper folder holds `model.bin` (every weight, in CTranslate2's own binary format) and
`config.json`. This module parses `model.bin` itself, so the ctranslate2 runtime is not needed:

    model.bin (binary version 6, little-endian, as ctranslate2/specs/model_spec.py `_serialize` writes it)
        uint32 version | string spec name ("WhisperSpec") | uint32 spec revision | uint32 variable count
        per variable: string name | uint8 rank | rank x uint32 dims | uint8 dtype id | uint32 byte count | data
        uint32 alias count | per alias: string alias | string target
    string = uint16 length (the trailing NUL included) | UTF-8 bytes | NUL
    dtype ids: 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16

Only the index is read in full (by seeking past the data); of the data, only the `encoder/*` variables
are read (Whisper-base: 41 of 145 MB), converted to float32. Quantised weights (int8 or int16 with a
`<name>_scale` beside them, as `ct2-transformers-converter --quantization int8...` writes them) are
dequantised (`weight / scale`, per output row for int8).

The CTranslate2 encoder variables map onto the Hugging Face module like this (d = d_model):

    encoder/conv1/{weight,bias}, encoder/conv2/...       conv1, conv2
    encoder/position_encodings/encodings [P, d]          embed_positions.weight (an nn.Embedding)
    encoder/layer_norm/{gamma,beta}                      layer_norm.{weight,bias}
    encoder/num_heads (int16 scalar)                     config.encoder_attention_heads
    encoder/layer_K/self_attention/layer_norm            layers.K.self_attn_layer_norm
    encoder/layer_K/self_attention/linear_0 [3d, d]      layers.K.self_attn.{q,k,v}_proj (stacked in that order)
    encoder/layer_K/self_attention/linear_1              layers.K.self_attn.out_proj
    encoder/layer_K/ffn/layer_norm                       layers.K.final_layer_norm
    encoder/layer_K/ffn/linear_0, linear_1               layers.K.fc1, fc2

The key projection has no bias in Whisper (the converter writes zeros there); whatever is stored in
that slice is dropped, which changes nothing: a bias on the keys adds the same q.b to every score of a
query, and softmax ignores a constant shift.

`whisper_hidden_states` runs the encoder on any number of mel frames up to the model's window (the
Hugging Face forward insists on exactly 3000), and `whisper_log_mel` gives the mel input either padded
to that window or only as long as the audio.
"""
import inspect
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
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

SAMPLE_RATE = 16000
HOP_LENGTH = 160                   # mel frames every 10 ms; the encoder's stride-2 conv halves them
N_FFT = 400


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


@dataclass
class Ct2Whisper:
    """A CTranslate2 Whisper model's encoder as a frozen float32 `transformers` WhisperEncoder."""
    encoder: Any                 # transformers WhisperEncoder, eval mode, requires_grad False
    feature_extractor: Any       # transformers WhisperFeatureExtractor matching n_mels (16 kHz, hop 160)
    d_model: int
    layers: int
    heads: int
    n_mels: int
    max_frames: int              # encoder frames in one window (Whisper: 1500 = 30 s)
    ffn_dim: int
    stored_dtype: str            # the dtype of the weights in model.bin (float16 for faster-whisper's)
    folder: Path


# ---------------------------------------------------------------------------------------------------
# model.bin parsing


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


def _model_bin(path) -> Path:
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
    path = _model_bin(path)
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


def _read_tensor(f, path: Path, var: Ct2Variable) -> torch.Tensor:
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
    return _read_variables(read_ct2_index(path), prefix)


def _read_variables(index: Ct2Index, prefix: str) -> Dict[str, torch.Tensor]:
    names = [n for n in list(index.variables) + list(index.aliases) if n.startswith(prefix)]
    out: Dict[str, torch.Tensor] = {}
    with open(index.path, "rb") as f:
        for name in sorted(names, key=lambda n: index.lookup(n).offset):
            out[name] = _read_tensor(f, index.path, index.lookup(name))
    return out


# ---------------------------------------------------------------------------------------------------
# the encoder

_LAYER_KEYS = {   # CTranslate2 name under encoder/layer_K/ -> Hugging Face name under layers.K.
    "self_attention/layer_norm/gamma": "self_attn_layer_norm.weight",
    "self_attention/layer_norm/beta": "self_attn_layer_norm.bias",
    "self_attention/linear_1/weight": "self_attn.out_proj.weight",
    "self_attention/linear_1/bias": "self_attn.out_proj.bias",
    "ffn/layer_norm/gamma": "final_layer_norm.weight",
    "ffn/layer_norm/beta": "final_layer_norm.bias",
    "ffn/linear_0/weight": "fc1.weight",
    "ffn/linear_0/bias": "fc1.bias",
    "ffn/linear_1/weight": "fc2.weight",
    "ffn/linear_1/bias": "fc2.bias",
}
_FUSED_QKV = ("self_attention/linear_0/weight", "self_attention/linear_0/bias")
_TOP_KEYS = {
    "conv1/weight": "conv1.weight", "conv1/bias": "conv1.bias",
    "conv2/weight": "conv2.weight", "conv2/bias": "conv2.bias",
    "position_encodings/encodings": "embed_positions.weight",
    "layer_norm/gamma": "layer_norm.weight", "layer_norm/beta": "layer_norm.bias",
}


def _float_weights(raw: Dict[str, torch.Tensor], path: Path) -> Tuple[Dict[str, torch.Tensor], str]:
    """Encoder variables (without the `encoder/` prefix) as float32, quantised ones dequantised; the
    stored dtype of the weights."""
    out: Dict[str, torch.Tensor] = {}
    stored = set()
    for name, value in raw.items():
        if name == "num_heads" or (name.endswith("_scale") and name[:-len("_scale")] in raw):
            continue
        scale = raw.get(name + "_scale")
        if value.dtype in (torch.int8, torch.int16):
            if scale is None:
                raise FeatureError(f"{path}: encoder/{name} is {str(value.dtype)[6:]} without the "
                                   f"encoder/{name}_scale to dequantise it; not a model this reader knows")
            scale = scale.float()
            if value.dtype == torch.int8:   # one scale per output row (conv weights flattened per row)
                if scale.shape != (value.shape[0],):
                    raise FeatureError(f"{path}: encoder/{name}_scale has shape {list(scale.shape)}, "
                                       f"expected [{value.shape[0]}]")
                w = value.float().reshape(value.shape[0], -1) / scale[:, None]
                value = w.reshape(value.shape)
            else:                           # int16: one scale for the whole tensor
                if scale.numel() != 1:
                    raise FeatureError(f"{path}: encoder/{name}_scale has shape {list(scale.shape)}, expected a scalar")
                value = value.float() / scale.reshape(())
            stored.add(str(raw[name].dtype)[6:])
        elif value.is_floating_point():
            stored.add(str(value.dtype)[6:])
            value = value.float()
        else:
            raise FeatureError(f"{path}: encoder/{name} is {str(value.dtype)[6:]}, expected floating-point weights")
        out[name] = value
    return out, "+".join(sorted(stored))


def _check_shape(path: Path, name: str, value: torch.Tensor, shape: Tuple[int, ...]) -> None:
    if tuple(value.shape) != tuple(shape):
        raise FeatureError(f"{path}: encoder/{name} has shape {list(value.shape)}, expected {list(shape)} "
                           "(a Whisper encoder's variables must agree with each other)")


def ct2_encoder_state_dict(path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """The Hugging Face WhisperEncoder state dict (float32) of a CTranslate2 Whisper model.bin, and the
    dimensions read from it: d_model, layers, heads, n_mels, ffn_dim, max_positions, stored_dtype."""
    index = read_ct2_index(path)
    path = index.path
    raw = {k[len("encoder/"):]: v for k, v in _read_variables(index, "encoder/").items()}
    for key in list(_TOP_KEYS) + ["num_heads"]:
        if key not in raw:
            raise FeatureError(f"{path}: no variable encoder/{key}; not a complete Whisper model")
    layer_ids = set()
    for key in raw:
        m = re.match(r"layer_(\d+)/", key)
        if m:
            layer_ids.add(int(m.group(1)))
    n_layers = len(layer_ids)
    if n_layers == 0 or layer_ids != set(range(n_layers)):
        raise FeatureError(f"{path}: the encoder layers are not numbered 0..N-1 (found {sorted(layer_ids)})")

    heads_var = raw["num_heads"]
    if heads_var.numel() != 1 or heads_var.is_floating_point():
        raise FeatureError(f"{path}: encoder/num_heads is not an integer scalar")
    heads = int(heads_var.reshape(()))

    weights, stored_dtype = _float_weights(raw, path)
    known = set(_TOP_KEYS) | {f"layer_{k}/{s}" for k in range(n_layers) for s in list(_LAYER_KEYS) + list(_FUSED_QKV)}
    unexpected = sorted(set(weights) - known)
    if unexpected:
        raise FeatureError(f"{path}: unexpected variable encoder/{unexpected[0]} "
                           f"({len(unexpected)} in all); not a Whisper encoder this reader knows")
    missing = sorted(known - set(weights), key=lambda k: (len(k), k))
    if missing:
        raise FeatureError(f"{path}: no variable encoder/{missing[0]} ({len(missing)} missing in all); "
                           "not a complete Whisper model")

    conv1 = weights["conv1/weight"]
    if conv1.dim() != 3:
        raise FeatureError(f"{path}: encoder/conv1/weight has shape {list(conv1.shape)}, expected [d_model, n_mels, 3]")
    d, n_mels = conv1.shape[0], conv1.shape[1]
    pos = weights["position_encodings/encodings"]
    if pos.dim() != 2 or pos.shape[0] < 1:
        raise FeatureError(f"{path}: encoder/position_encodings/encodings has shape {list(pos.shape)}, "
                           "expected [positions, d_model]")
    ffn = weights["layer_0/ffn/linear_0/weight"]
    ffn_dim = ffn.shape[0] if ffn.dim() == 2 else -1
    if heads < 1 or d % heads:
        raise FeatureError(f"{path}: encoder/num_heads is {heads}, which does not divide d_model {d}")
    expected = {"conv1/weight": (d, n_mels, 3), "conv1/bias": (d,), "conv2/weight": (d, d, 3), "conv2/bias": (d,),
                "position_encodings/encodings": (pos.shape[0], d), "layer_norm/gamma": (d,), "layer_norm/beta": (d,)}
    per_layer = {"self_attention/layer_norm/gamma": (d,), "self_attention/layer_norm/beta": (d,),
                 "self_attention/linear_0/weight": (3 * d, d), "self_attention/linear_0/bias": (3 * d,),
                 "self_attention/linear_1/weight": (d, d), "self_attention/linear_1/bias": (d,),
                 "ffn/layer_norm/gamma": (d,), "ffn/layer_norm/beta": (d,),
                 "ffn/linear_0/weight": (ffn_dim, d), "ffn/linear_0/bias": (ffn_dim,),
                 "ffn/linear_1/weight": (d, ffn_dim), "ffn/linear_1/bias": (d,)}
    for k in range(n_layers):
        expected.update({f"layer_{k}/{s}": shape for s, shape in per_layer.items()})
    for name, shape in expected.items():
        _check_shape(path, name, weights[name], shape)

    state: Dict[str, torch.Tensor] = {}

    def put(key: str, value: torch.Tensor) -> None:
        assert key not in state, key   # every parameter filled exactly once
        state[key] = value.clone(memory_format=torch.contiguous_format)   # its own storage, not a slice of qkv

    for ct2, hf in _TOP_KEYS.items():
        put(hf, weights[ct2])
    for k in range(n_layers):
        for ct2, hf in _LAYER_KEYS.items():
            put(f"layers.{k}.{hf}", weights[f"layer_{k}/{ct2}"])
        w = weights[f"layer_{k}/self_attention/linear_0/weight"]
        b = weights[f"layer_{k}/self_attention/linear_0/bias"]
        put(f"layers.{k}.self_attn.q_proj.weight", w[:d])
        put(f"layers.{k}.self_attn.k_proj.weight", w[d:2 * d])
        put(f"layers.{k}.self_attn.v_proj.weight", w[2 * d:])
        put(f"layers.{k}.self_attn.q_proj.bias", b[:d])
        put(f"layers.{k}.self_attn.v_proj.bias", b[2 * d:])   # b[d:2d], the key bias: see the module doc
    dims = {"d_model": d, "layers": n_layers, "heads": heads, "n_mels": n_mels, "ffn_dim": ffn_dim,
            "max_positions": pos.shape[0], "stored_dtype": stored_dtype}
    return state, dims


def _transformers():
    try:
        import transformers
    except ImportError:
        raise FeatureError("a Whisper encoder needs transformers: pip install 'sertk[whisper]' "
                           "(or pip install transformers)") from None
    return transformers


def build_whisper_encoder(state: Dict[str, torch.Tensor], dims: Dict[str, Any]):
    """A frozen float32 WhisperEncoder holding `state` (strict load: every parameter given exactly once)."""
    transformers = _transformers()
    config = transformers.WhisperConfig(
        num_mel_bins=dims["n_mels"], d_model=dims["d_model"],
        encoder_layers=dims["layers"], encoder_attention_heads=dims["heads"], encoder_ffn_dim=dims["ffn_dim"],
        decoder_layers=dims["layers"], decoder_attention_heads=dims["heads"], decoder_ffn_dim=dims["ffn_dim"],
        max_source_positions=dims["max_positions"], activation_function="gelu",
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, encoder_layerdrop=0.0)
    # built on the meta device (no random initialisation of weights that are overwritten at once), then
    # given the real tensors
    from transformers.models.whisper.modeling_whisper import WhisperEncoder   # not exported at the top level
    with torch.device("meta"):
        encoder = WhisperEncoder(config)
    try:
        encoder.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:   # a mismatch between this reader and the installed transformers
        raise FeatureError(f"cannot load the CTranslate2 Whisper weights into transformers "
                           f"{transformers.__version__}'s WhisperEncoder: {str(e).splitlines()[0]}") from None
    meta = [n for n, t in list(encoder.named_parameters()) + list(encoder.named_buffers()) if t.is_meta]
    if meta:
        raise FeatureError(f"transformers {transformers.__version__}'s WhisperEncoder has tensors this reader "
                           f"does not fill: {', '.join(meta[:3])}")
    return encoder.float().eval().requires_grad_(False)


def whisper_feature_extractor(n_mels: int):
    """The log-mel front end a Whisper encoder with `n_mels` bins expects (16 kHz, hop 160, n_fft 400, 30-s window)."""
    return _transformers().WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=SAMPLE_RATE,
                                                   hop_length=HOP_LENGTH, n_fft=N_FFT, chunk_length=30)


def _head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def is_ct2_whisper_folder(path) -> bool:
    """True for a folder with model.bin and config.json whose model.bin starts like a CTranslate2
    WhisperSpec (any binary version: `read_ct2_whisper` then says if it cannot read that version)."""
    path = Path(path)
    if not (path.is_dir() and (path / MODEL_BIN).is_file() and (path / CONFIG_JSON).is_file()):
        return False
    name = SPEC_NAME.encode() + b"\0"
    head = _head(path / MODEL_BIN, 6 + len(name))
    if len(head) < 6 + len(name):
        return False
    version, length = struct.unpack("<IH", head[:6])
    return 1 <= version < 100 and length == len(name) and head[6:] == name


def ct2_whisper_dims(folder) -> Dict[str, int]:
    """d_model, layers, heads, n_mels, ffn_dim, max_frames of a CTranslate2 Whisper model from its index
    alone (no weights read, no transformers import): for sizing a stream before loading the encoder.
    `read_ct2_whisper` checks the model in full."""
    index = read_ct2_index(folder)

    def shape(name: str) -> Tuple[int, ...]:
        var = index.lookup("encoder/" + name)
        if var is None:
            raise FeatureError(f"{index.path}: no variable encoder/{name}; not a complete Whisper model")
        return var.shape

    conv1, pos, ffn = shape("conv1/weight"), shape("position_encodings/encodings"), shape("layer_0/ffn/linear_0/weight")
    shape("num_heads")
    layers = {int(m.group(1)) for n in list(index.variables) + list(index.aliases)
              for m in [re.match(r"encoder/layer_(\d+)/", n)] if m}
    if len(conv1) != 3 or len(pos) != 2 or len(ffn) != 2:
        raise FeatureError(f"{index.path}: encoder/conv1/weight {list(conv1)}, position_encodings {list(pos)} or "
                           f"ffn/linear_0/weight {list(ffn)} do not have a Whisper encoder's ranks")
    with open(index.path, "rb") as f:
        heads = int(_read_tensor(f, index.path, index.lookup("encoder/num_heads")).reshape(-1)[0])
    return {"d_model": conv1[0], "layers": len(layers), "heads": heads, "n_mels": conv1[1],
            "ffn_dim": ffn[0], "max_frames": pos[0]}


def read_ct2_whisper(folder) -> Ct2Whisper:
    """The encoder of the CTranslate2 Whisper model in `folder` (or the model.bin itself), with its
    feature extractor. Raises FeatureError, one line naming the file, for anything it cannot read."""
    model = _model_bin(folder)
    state, dims = ct2_encoder_state_dict(model)
    encoder = build_whisper_encoder(state, dims)
    return Ct2Whisper(encoder=encoder, feature_extractor=whisper_feature_extractor(dims["n_mels"]),
                      d_model=dims["d_model"], layers=dims["layers"], heads=dims["heads"], n_mels=dims["n_mels"],
                      max_frames=dims["max_positions"], ffn_dim=dims["ffn_dim"],
                      stored_dtype=dims["stored_dtype"], folder=model.parent)


# ---------------------------------------------------------------------------------------------------
# running it


def _layer_call(layer):
    """Call one WhisperEncoderLayer as WhisperEncoder.forward does, in transformers 4.x (hidden_states,
    attention_mask, layer_head_mask, output_attentions -> a tuple) and 5.x (hidden_states,
    attention_mask -> a tensor)."""
    takes_head_mask = "layer_head_mask" in inspect.signature(layer.forward).parameters

    def call(h: torch.Tensor) -> torch.Tensor:
        out = layer(h, None, layer_head_mask=None) if takes_head_mask else layer(h, None)
        return out[0] if isinstance(out, tuple) else out
    return call


def whisper_hidden_states(encoder, mel: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """The encoder's hidden states for `mel` [batch, n_mels, T], any 1 <= T <= 2 x max positions (3000).

    Returns layers + 1 tensors [batch, ceil(T / 2), d_model], as the Hugging Face forward's
    `output_hidden_states=True` gives them (transformers 4.x and 5.x alike): [0] the input of the first
    layer (conv1-gelu-conv2(stride 2)-gelu plus the first ceil(T/2) positional embeddings), [i] the output
    of layer i, and the last one after the final layer norm. No attention mask (Whisper has none): for
    T = 3000 it is the Hugging Face forward; for a shorter T it is the encoder run on those frames only,
    which is not the first frames of the 30-s window's output (attention sees the whole input).
    Gradients are not switched off here: call it under torch.inference_mode() for features.
    """
    if mel.dim() != 3 or mel.shape[1] != encoder.conv1.in_channels:
        raise FeatureError(f"Whisper encoder input must be [batch, {encoder.conv1.in_channels}, frames], "
                           f"got {list(mel.shape)}")
    limit = encoder.embed_positions.num_embeddings * encoder.conv1.stride[0] * encoder.conv2.stride[0]
    if not 1 <= mel.shape[-1] <= limit:
        raise FeatureError(f"Whisper encoder input has {mel.shape[-1]} mel frames; it takes 1 to {limit} "
                           f"({limit // 100} s): cut longer audio into pieces")
    x = torch.nn.functional.gelu(encoder.conv1(mel))
    x = torch.nn.functional.gelu(encoder.conv2(x)).permute(0, 2, 1)
    h = x + encoder.embed_positions.weight[:x.shape[1]]
    states: List[torch.Tensor] = [h]
    for layer in encoder.layers:
        h = _layer_call(layer)(h)
        states.append(h)
    states[-1] = encoder.layer_norm(h)
    return tuple(states)


def whisper_log_mel(audio: np.ndarray, extractor, pad_to_window: bool) -> torch.Tensor:
    """Whisper's log-mel of mono float32 16-kHz `audio`: [1, n_mels, T] (float32).

    pad_to_window=True: the standard input, zero-padded to the 30-s window (T = 3000).
    pad_to_window=False: only the audio's own frames, T = len(audio) // 160 (the extractor's centred STFT
    has len // 160 + 1 frames and Whisper drops the last); they run to ceil(T / 2) encoder frames, one per
    320 samples. These frames equal the padded ones except the last (whose window reaches past the audio:
    reflected here, zeros there) and, rarely, where the clamp at (max - 8) differs because the loudest
    frame is that last one. Audio shorter than one FFT window (400 samples) is zero-padded to it (T = 2).
    Audio longer than the window is an error: cut it into 30-s pieces first.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise FeatureError(f"Whisper log-mel takes mono audio [samples], got shape {list(audio.shape)}")
    window = extractor.n_samples
    if len(audio) > window:
        raise FeatureError(f"Whisper log-mel takes at most {window} samples ({window // extractor.sampling_rate} s), "
                           f"got {len(audio)}: cut longer audio into pieces")
    if not pad_to_window and len(audio) < extractor.n_fft:
        audio = np.pad(audio, (0, extractor.n_fft - len(audio)))
    feats = extractor(audio, sampling_rate=extractor.sampling_rate, return_tensors="pt",
                      padding="max_length" if pad_to_window else "longest").input_features
    return feats.to(torch.float32)
