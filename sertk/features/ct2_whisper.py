"""A CTranslate2 (faster-whisper) Whisper folder read straight into `transformers`' WhisperEncoder.

The file itself is read by sertk.features.ct2_model_bin (no ctranslate2 runtime needed); this module
maps its `encoder/*` variables, converted to float32, into the Hugging Face module. Quantised weights
(int8 or int16 with a `<name>_scale` beside them, as `ct2-transformers-converter --quantization int8...`
writes them) are dequantised (`weight / scale`, per output row for int8).

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

The encoder is run by sertk.features.whisper_encoder (`whisper_hidden_states`, `whisper_log_mel`).
"""
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from sertk.errors import FeatureError
from sertk.features.ct2_model_bin import (
    ct2_model_bin,
    is_ct2_whisper_folder,
    read_ct2_index,
    read_ct2_tensor,
    read_index_variables,
)
from sertk.features.whisper_encoder import (
    import_transformers,
    whisper_feature_extractor,
    whisper_hidden_states,
    whisper_log_mel,
)

# the public face of a CTranslate2 Whisper folder: sertk.features.streams.ssl and encoder_cache import the
# reader's and the runner's names from here too (listed, so that they count as used)
__all__ = ["Ct2Whisper", "build_whisper_encoder", "ct2_encoder_state_dict", "ct2_whisper_dims", "read_ct2_whisper",
           "is_ct2_whisper_folder", "whisper_hidden_states", "whisper_log_mel"]


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
    raw = {k[len("encoder/"):]: v for k, v in read_index_variables(index, "encoder/").items()}
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


def build_whisper_encoder(state: Dict[str, torch.Tensor], dims: Dict[str, Any]):
    """A frozen float32 WhisperEncoder holding `state` (strict load: every parameter given exactly once)."""
    transformers = import_transformers()
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
        heads = int(read_ct2_tensor(f, index.path, index.lookup("encoder/num_heads")).reshape(-1)[0])
    return {"d_model": conv1[0], "layers": len(layers), "heads": heads, "n_mels": conv1[1],
            "ffn_dim": ffn[0], "max_frames": pos[0]}


def read_ct2_whisper(folder) -> Ct2Whisper:
    """The encoder of the CTranslate2 Whisper model in `folder` (or the model.bin itself), with its
    feature extractor. Raises FeatureError, one line naming the file, for anything it cannot read."""
    model = ct2_model_bin(folder)
    state, dims = ct2_encoder_state_dict(model)
    encoder = build_whisper_encoder(state, dims)
    return Ct2Whisper(encoder=encoder, feature_extractor=whisper_feature_extractor(dims["n_mels"]),
                      d_model=dims["d_model"], layers=dims["layers"], heads=dims["heads"], n_mels=dims["n_mels"],
                      max_frames=dims["max_positions"], ffn_dim=dims["ffn_dim"],
                      stored_dtype=dims["stored_dtype"], folder=model.parent)
