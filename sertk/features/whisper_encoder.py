"""A `transformers` WhisperEncoder, whatever folder its weights came from: its log-mel front end and
running it on any number of mel frames.

`whisper_hidden_states` runs the encoder on any number of mel frames up to the model's window (the
Hugging Face forward insists on exactly 3000), and `whisper_log_mel` gives the mel input either padded
to that window or only as long as the audio.
"""
import inspect
from typing import List, Tuple

import numpy as np
import torch

from sertk.errors import FeatureError

SAMPLE_RATE = 16000
HOP_LENGTH = 160                   # mel frames every 10 ms; the encoder's stride-2 conv halves them
N_FFT = 400


def import_transformers():
    """transformers, imported only where an encoder is built (an optional dependency), else one error line."""
    try:
        import transformers
    except ImportError:
        raise FeatureError("a Whisper encoder needs transformers: pip install 'sertk[whisper]' "
                           "(or pip install transformers)") from None
    return transformers


def whisper_feature_extractor(n_mels: int):
    """The log-mel front end a Whisper encoder with `n_mels` bins expects (16 kHz, hop 160, n_fft 400, 30-s window)."""
    return import_transformers().WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=SAMPLE_RATE,
                                                         hop_length=HOP_LENGTH, n_fft=N_FFT, chunk_length=30)


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
