"""Reading CTranslate2 (faster-whisper) Whisper folders into transformers' WhisperEncoder.

A tiny synthetic model.bin, written here in CTranslate2's binary layout, checks the reader, the weight
mapping and every kind of damage; the real Whisper-base (the `whisper-base` named encoder from its
registry packages, in .[dev]) is compared with the Hugging Face forward, with a hand computation from
the raw variables and with ctranslate2's own encoder.
"""
import math
import struct
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the Whisper encoder needs transformers (pip install -e '.[dev]')")

from sertk.errors import FeatureError  # noqa: E402
from sertk.features.ct2_model_bin import is_ct2_whisper_folder, read_ct2_index, read_ct2_variables  # noqa: E402
from sertk.features.ct2_whisper import ct2_whisper_dims, read_ct2_whisper  # noqa: E402
from sertk.features.whisper_encoder import whisper_hidden_states, whisper_log_mel  # noqa: E402

F = torch.nn.functional
SR = 16000
DTYPE_IDS = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3,
             np.dtype(np.float16): 4}

# the tiny model: d_model 8, 2 layers, 2 heads, 4 mel bins, ffn 16, 6 encoder positions (12 mel frames)
D, LAYERS, HEADS, MELS, FFN, POS = 8, 2, 2, 4, 16, 6


# ---------------------------------------------------------------------------------------------------
# writing CTranslate2 model.bin files


def _string(s: str) -> bytes:
    raw = s.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _variable(name: str, value: np.ndarray, nbytes: Optional[int] = None) -> bytes:
    value = np.ascontiguousarray(value)
    data = value.tobytes()
    return (_string(name) + struct.pack("<B", value.ndim) + b"".join(struct.pack("<I", d) for d in value.shape)
            + struct.pack("<B", DTYPE_IDS[value.dtype]) + struct.pack("<I", len(data) if nbytes is None else nbytes)
            + data)


def ct2_bytes(variables: Dict[str, np.ndarray], aliases: Dict[str, str] = None, version: int = 6,
              spec: str = "WhisperSpec", nbytes: Dict[str, int] = None) -> bytes:
    """A model.bin as ctranslate2's ModelSpec._serialize writes it (variables sorted by name)."""
    aliases, nbytes = aliases or {}, nbytes or {}
    out = [struct.pack("<I", version), _string(spec), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    out += [_variable(n, variables[n], nbytes.get(n)) for n in sorted(variables)]
    out.append(struct.pack("<I", len(aliases)))
    out += [_string(a) + _string(t) for a, t in aliases.items()]
    return b"".join(out)


def tiny_variables(seed: int = 0, dtype=np.float32) -> Dict[str, np.ndarray]:
    """Random weights of the tiny Whisper (a nonzero key bias included: it must not matter), plus some
    decoder variables, which the reader must skip."""
    rng = np.random.default_rng(seed)

    def w(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(dtype)

    v = {"encoder/conv1/weight": w(D, MELS, 3), "encoder/conv1/bias": w(D),
         "encoder/conv2/weight": w(D, D, 3), "encoder/conv2/bias": w(D),
         "encoder/position_encodings/encodings": w(POS, D),
         "encoder/layer_norm/gamma": 1 + w(D, scale=0.1), "encoder/layer_norm/beta": w(D, scale=0.1),
         "encoder/num_heads": np.array(HEADS, dtype=np.int16),
         "decoder/embeddings/weight": w(11, D), "decoder/num_heads": np.array(HEADS, dtype=np.int16)}
    for k in range(LAYERS):
        p = f"encoder/layer_{k}/"
        v.update({p + "self_attention/layer_norm/gamma": 1 + w(D, scale=0.1),
                  p + "self_attention/layer_norm/beta": w(D, scale=0.1),
                  p + "self_attention/linear_0/weight": w(3 * D, D), p + "self_attention/linear_0/bias": w(3 * D),
                  p + "self_attention/linear_1/weight": w(D, D), p + "self_attention/linear_1/bias": w(D),
                  p + "ffn/layer_norm/gamma": 1 + w(D, scale=0.1), p + "ffn/layer_norm/beta": w(D, scale=0.1),
                  p + "ffn/linear_0/weight": w(FFN, D), p + "ffn/linear_0/bias": w(FFN),
                  p + "ffn/linear_1/weight": w(D, FFN), p + "ffn/linear_1/bias": w(D)})
    return v


def write_folder(folder: Path, data: bytes, config: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.bin").write_bytes(data)
    if config:
        (folder / "config.json").write_text("{}\n")
    return folder


def reference_states(v: Dict[str, torch.Tensor], mel: torch.Tensor) -> List[torch.Tensor]:
    """Whisper's encoder computed by hand from the raw CTranslate2 variables (names without `encoder/`),
    in float64, the key bias included; the same list as whisper_hidden_states."""
    v = {k: t.double() for k, t in v.items()}
    heads = int(v["num_heads"])
    d = v["conv1/weight"].shape[0]
    dh = d // heads

    def ln(x, p):
        return F.layer_norm(x, (d,), v[p + "gamma"], v[p + "beta"], eps=1e-5)

    x = F.gelu(F.conv1d(mel.double(), v["conv1/weight"], v["conv1/bias"], padding=1))
    x = F.gelu(F.conv1d(x, v["conv2/weight"], v["conv2/bias"], stride=2, padding=1)).transpose(1, 2)
    h = x + v["position_encodings/encodings"][:x.shape[1]]
    states = [h]
    n_layers = len({k.split("/")[0] for k in v if k.startswith("layer_") and not k.startswith("layer_norm")})
    for k in range(n_layers):
        p = f"layer_{k}/"
        y = ln(h, p + "self_attention/layer_norm/")
        qkv = y @ v[p + "self_attention/linear_0/weight"].T + v[p + "self_attention/linear_0/bias"]
        q, key, val = qkv.split(d, -1)
        split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, dh).transpose(1, 2)   # noqa: E731
        att = torch.softmax(split(q) @ split(key).transpose(-1, -2) / math.sqrt(dh), dim=-1) @ split(val)
        att = att.transpose(1, 2).reshape(h.shape)
        h = h + att @ v[p + "self_attention/linear_1/weight"].T + v[p + "self_attention/linear_1/bias"]
        y = ln(h, p + "ffn/layer_norm/")
        y = F.gelu(y @ v[p + "ffn/linear_0/weight"].T + v[p + "ffn/linear_0/bias"])
        h = h + y @ v[p + "ffn/linear_1/weight"].T + v[p + "ffn/linear_1/bias"]
        states.append(h)
    states[-1] = ln(h, "layer_norm/")
    return states


def one_line_error(excinfo, *needles: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, message
    return message


# ---------------------------------------------------------------------------------------------------
# the tiny synthetic model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    variables = tiny_variables()
    folder = write_folder(tmp_path_factory.mktemp("tiny_ct2"),
                          ct2_bytes(variables, aliases={"decoder/projection/weight": "decoder/embeddings/weight"}))
    return folder, variables, read_ct2_whisper(folder)


def test_tiny_round_trip(tiny):
    folder, variables, model = tiny
    assert is_ct2_whisper_folder(folder)
    assert (model.d_model, model.layers, model.heads, model.n_mels, model.ffn_dim, model.max_frames) == \
        (D, LAYERS, HEADS, MELS, FFN, POS)
    assert model.stored_dtype == "float32" and model.folder == folder
    assert ct2_whisper_dims(folder) == {"d_model": D, "layers": LAYERS, "heads": HEADS, "n_mels": MELS,
                                        "ffn_dim": FFN, "max_frames": POS}
    enc = model.encoder
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    assert all(p.dtype == torch.float32 for p in enc.parameters())
    assert model.feature_extractor.feature_size == MELS and model.feature_extractor.hop_length == 160
    sd = enc.state_dict()
    qkv_w = variables["encoder/layer_1/self_attention/linear_0/weight"]
    qkv_b = variables["encoder/layer_1/self_attention/linear_0/bias"]
    np.testing.assert_array_equal(sd["layers.1.self_attn.q_proj.weight"].numpy(), qkv_w[:D])
    np.testing.assert_array_equal(sd["layers.1.self_attn.k_proj.weight"].numpy(), qkv_w[D:2 * D])
    np.testing.assert_array_equal(sd["layers.1.self_attn.v_proj.weight"].numpy(), qkv_w[2 * D:])
    np.testing.assert_array_equal(sd["layers.1.self_attn.v_proj.bias"].numpy(), qkv_b[2 * D:])
    np.testing.assert_array_equal(sd["embed_positions.weight"].numpy(),
                                  variables["encoder/position_encodings/encodings"])
    np.testing.assert_array_equal(sd["layers.0.fc2.weight"].numpy(), variables["encoder/layer_0/ffn/linear_1/weight"])
    np.testing.assert_array_equal(sd["layer_norm.bias"].numpy(), variables["encoder/layer_norm/beta"])

    # only the encoder's variables are read; the index knows the rest, aliases resolved
    raw = read_ct2_variables(folder)
    assert set(raw) == {k for k in variables if k.startswith("encoder/")}
    index = read_ct2_index(folder / "model.bin")
    assert index.lookup("decoder/projection/weight").name == "decoder/embeddings/weight"

    g = torch.Generator().manual_seed(0)
    mel = torch.randn(1, MELS, 2 * POS, generator=g)
    with torch.inference_mode():
        ours = whisper_hidden_states(enc, mel)
        hf = enc(mel, output_hidden_states=True).hidden_states
        assert len(ours) == len(hf) == LAYERS + 1
        for a, b in zip(ours, hf):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
        # a shorter input (odd T: ceil(T/2) frames) against the hand computation, key bias and all
        raw = {k[len("encoder/"):]: t for k, t in raw.items()}
        for t in (1, 5, 2 * POS):
            ours = whisper_hidden_states(enc, mel[..., :t])
            ref = reference_states(raw, mel[..., :t])
            assert [s.shape for s in ours] == [(1, (t + 1) // 2, D)] * (LAYERS + 1)
            for a, b in zip(ours, ref):
                torch.testing.assert_close(a.double(), b, atol=1e-5, rtol=0)
        with pytest.raises(FeatureError, match="takes 1 to 12"):
            whisper_hidden_states(enc, torch.zeros(1, MELS, 2 * POS + 1))
        with pytest.raises(FeatureError, match=r"\[batch, 4, frames\]"):
            whisper_hidden_states(enc, torch.zeros(1, MELS + 1, 4))


def test_tiny_float16_and_int8(tmp_path):
    """Half-precision weights are widened; int8 weights with their per-row scales (as
    `ct2-transformers-converter --quantization int8` writes them) are dequantised."""
    variables = tiny_variables(seed=1)
    half = {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in variables.items()}
    model = read_ct2_whisper(write_folder(tmp_path / "half", ct2_bytes(half)))
    assert model.stored_dtype == "float16"
    np.testing.assert_array_equal(model.encoder.state_dict()["conv2.weight"].numpy(),
                                  half["encoder/conv2/weight"].astype(np.float32))

    quant = dict(variables)
    for k in [k for k in variables if k.endswith("/weight") and k.startswith("encoder/layer_")]:
        w = variables[k].reshape(variables[k].shape[0], -1)
        scale = (127.0 / np.abs(w).max(axis=1)).astype(np.float32)
        quant[k] = np.rint(w * scale[:, None]).astype(np.int8).reshape(variables[k].shape)
        quant[k + "_scale"] = scale
    model = read_ct2_whisper(write_folder(tmp_path / "int8", ct2_bytes(quant)))
    assert model.stored_dtype == "float32+int8"
    got = model.encoder.state_dict()["layers.0.fc1.weight"].numpy()
    want = variables["encoder/layer_0/ffn/linear_0/weight"]
    step = np.abs(want).max(axis=1, keepdims=True) / 127
    assert np.all(np.abs(got - want) <= step / 2 + 1e-7)

    del quant["encoder/layer_1/ffn/linear_1/weight_scale"]
    with pytest.raises(FeatureError) as e:
        read_ct2_whisper(write_folder(tmp_path / "noscale", ct2_bytes(quant)))
    one_line_error(e, "encoder/layer_1/ffn/linear_1/weight is int8 without", "noscale")


def _damaged(kind: str) -> Tuple[bytes, str]:
    """A damaged model.bin of the tiny model and a phrase its error must hold."""
    v = tiny_variables()
    good = ct2_bytes(v)
    if kind == "truncated_data":
        return good[:len(good) // 2], f"truncated at byte {len(good) // 2}"
    if kind == "truncated_header":
        return good[:30], "truncated at byte 30"
    if kind == "truncated_aliases":
        return good[:-2], f"truncated at byte {len(good) - 2}"
    if kind == "not_ct2":
        return b"\x7fELF" + good[4:], "not a CTranslate2 model"
    if kind == "newer_version":
        return ct2_bytes(v, version=7), "binary version 7, newer than this reader knows (6)"
    if kind == "older_version":
        return ct2_bytes(v, version=3), "old CTranslate2 binary version 3"
    if kind == "other_spec":
        return ct2_bytes(v, spec="TransformerSpec"), "a CTranslate2 TransformerSpec, not a Whisper model"
    if kind == "missing_variable":
        del v["encoder/layer_1/ffn/linear_1/bias"]
        return ct2_bytes(v), "no variable encoder/layer_1/ffn/linear_1/bias"
    if kind == "missing_top":
        del v["encoder/num_heads"]
        return ct2_bytes(v), "no variable encoder/num_heads"
    if kind == "bad_shape":
        v["encoder/conv2/weight"] = v["encoder/conv2/weight"][:, :, :2].copy()
        return ct2_bytes(v), "encoder/conv2/weight has shape [8, 8, 2], expected [8, 8, 3]"
    if kind == "bad_heads":
        v["encoder/num_heads"] = np.array(3, dtype=np.int16)
        return ct2_bytes(v), "num_heads is 3, which does not divide d_model 8"
    if kind == "byte_count":
        return (ct2_bytes(v, nbytes={"encoder/conv1/bias": 31}),
                "variable encoder/conv1/bias holds 31 bytes, but its shape [8] of float32 needs 32")
    if kind == "unexpected_variable":
        v["encoder/layer_0/ffn/linear_2/weight"] = v["encoder/layer_0/ffn/linear_1/weight"]
        return ct2_bytes(v), "unexpected variable encoder/layer_0/ffn/linear_2/weight"
    if kind == "trailing_bytes":
        return good + b"\0\0\0", "3 unexpected bytes after the model's end"
    if kind == "empty":
        return b"", "empty file (0 bytes)"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["truncated_data", "truncated_header", "truncated_aliases", "not_ct2",
                                  "newer_version", "older_version", "other_spec", "missing_variable",
                                  "missing_top", "bad_shape", "bad_heads", "byte_count", "unexpected_variable",
                                  "trailing_bytes", "empty"])
def test_damaged_model_bin(tmp_path, kind):
    data, phrase = _damaged(kind)
    folder = write_folder(tmp_path / kind, data)
    with pytest.raises(FeatureError) as e:
        read_ct2_whisper(folder)
    one_line_error(e, str(folder / "model.bin"), phrase)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(FeatureError) as e:
        read_ct2_whisper(tmp_path / "absent")
    one_line_error(e, "no such CTranslate2 model folder")
    hf_like = tmp_path / "hf"
    hf_like.mkdir()
    (hf_like / "config.json").write_text("{}")
    (hf_like / "model.safetensors").write_bytes(b"x")
    with pytest.raises(FeatureError) as e:
        read_ct2_whisper(hf_like)
    one_line_error(e, str(hf_like), "no model.bin")
    assert not is_ct2_whisper_folder(hf_like)

    good = ct2_bytes(tiny_variables())
    assert is_ct2_whisper_folder(write_folder(tmp_path / "ok", good))
    assert not is_ct2_whisper_folder(write_folder(tmp_path / "noconfig", good, config=False))
    assert not is_ct2_whisper_folder(write_folder(tmp_path / "empty", b""))
    other = ct2_bytes(tiny_variables(), spec="TransformerSpec")
    assert not is_ct2_whisper_folder(write_folder(tmp_path / "other", other))
    assert not is_ct2_whisper_folder(tmp_path / "ok" / "model.bin")   # a folder, not the file


def test_log_mel(tiny):
    extractor = read_ct2_whisper(tiny[0]).feature_extractor
    t = np.arange(int(2.345 * SR)) / SR
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 2 * t))).astype(np.float32)
    padded = whisper_log_mel(audio, extractor, pad_to_window=True)
    own = whisper_log_mel(audio, extractor, pad_to_window=False)
    assert padded.shape == (1, MELS, 3000) and padded.dtype == torch.float32
    assert own.shape == (1, MELS, len(audio) // 160)
    # the same frames, but the last, whose window reaches past the audio (reflected vs zeros)
    torch.testing.assert_close(own[..., :-1], padded[..., :own.shape[-1] - 1], atol=1e-6, rtol=0)
    assert whisper_log_mel(audio[:250], extractor, pad_to_window=False).shape == (1, MELS, 2)
    assert whisper_log_mel(np.zeros(30 * SR, np.float32), extractor, pad_to_window=False).shape == (1, MELS, 3000)
    with pytest.raises(FeatureError, match="at most 480000 samples"):
        whisper_log_mel(np.zeros(30 * SR + 1, np.float32), extractor, pad_to_window=True)
    with pytest.raises(FeatureError, match="mono"):
        whisper_log_mel(np.zeros((2, 1000), np.float32), extractor, pad_to_window=True)


# ---------------------------------------------------------------------------------------------------
# the real Whisper-base


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced, amplitude-modulated harmonic signal with a little noise (deterministic)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(120 + 40 * np.sin(2 * np.pi * 0.5 * t)) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 20)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) ** 2
    return (0.1 * x + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def whisper_base(whisper_base_folder):
    return read_ct2_whisper(whisper_base_folder)


@pytest.fixture(scope="module")
def mel30(whisper_base):
    return whisper_log_mel(speech_like(5.0), whisper_base.feature_extractor, pad_to_window=True)


def test_whisper_base_matches_hf_forward(whisper_base, mel30):
    m = whisper_base
    assert (m.d_model, m.layers, m.heads, m.n_mels, m.ffn_dim, m.max_frames, m.stored_dtype) == \
        (512, 6, 8, 80, 2048, 1500, "float16")
    assert ct2_whisper_dims(m.folder) == {"d_model": 512, "layers": 6, "heads": 8, "n_mels": 80, "ffn_dim": 2048,
                                          "max_frames": 1500}
    with torch.inference_mode():
        ours = whisper_hidden_states(m.encoder, mel30)
        hf = m.encoder(mel30, output_hidden_states=True)
    assert len(ours) == len(hf.hidden_states) == 7
    for a, b in zip(ours, hf.hidden_states):
        assert a.shape == (1, 1500, 512)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours[-1], hf.last_hidden_state, atol=1e-5, rtol=0)


def test_whisper_base_short_input_by_hand(whisper_base, whisper_base_folder):
    """A 2-s input (200 mel frames, 100 encoder frames) against the encoder computed by hand in float64
    (measured: max |diff| 4.3e-5 at the last state, values up to ~24)."""
    mel = whisper_log_mel(speech_like(2.0, seed=3), whisper_base.feature_extractor, pad_to_window=False)
    assert mel.shape == (1, 80, 200)
    raw = {k[len("encoder/"):]: t for k, t in read_ct2_variables(whisper_base_folder).items()}
    with torch.inference_mode():
        ours = whisper_hidden_states(whisper_base.encoder, mel)
        ref = reference_states(raw, mel)
    for a, b in zip(ours, ref):
        assert a.shape == (1, 100, 512)
        torch.testing.assert_close(a.double(), b, atol=2e-4, rtol=0)


def test_whisper_base_matches_ctranslate2(whisper_base, whisper_base_folder, mel30):
    """ctranslate2's own encoder on the same folder (float32 compute on the float16-stored weights).
    Measured on x86-64 (torch 2.13, ctranslate2 4.8): max |diff| 3.5e-4 (values up to ~24) for the
    30-s window and 3.9e-4 for a 5-s input; asserted with a ~5x margin."""
    ctranslate2 = pytest.importorskip("ctranslate2", reason="ctranslate2 (in .[dev]) compares our encoder with its own")
    ct2 = ctranslate2.models.Whisper(str(whisper_base_folder), device="cpu", compute_type="float32")
    short = whisper_log_mel(speech_like(5.0), whisper_base.feature_extractor, pad_to_window=False)
    for mel in (mel30, short):
        with torch.inference_mode():
            ours = whisper_hidden_states(whisper_base.encoder, mel)[-1].numpy()
        theirs = np.asarray(ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy()))))
        assert theirs.shape == ours.shape
        diff = np.abs(theirs - ours).max()
        corr = np.corrcoef(theirs.ravel(), ours.ravel())[0, 1]
        assert diff < 2e-3, diff
        assert corr > 0.9999, corr
