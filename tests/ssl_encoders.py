"""Tiny randomly initialised speech encoders saved like hub checkpoints (no weights are downloaded)."""
from pathlib import Path

import torch

CONV = dict(conv_dim=(8,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2))
SMALL = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
             num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)


def save_encoder(kind: str, path: Path, do_normalize=True) -> Path:
    """hubert (layer-norm front end), wav2vec2 (group-norm front end) or wavlm in `path`, with a
    preprocessor_config.json (None: without one). Returns `path`."""
    import transformers
    torch.manual_seed(0)
    config_cls, model_cls = {"hubert": ("HubertConfig", "HubertModel"), "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
                             "wavlm": ("WavLMConfig", "WavLMModel")}[kind]
    norm = {"feat_extract_norm": "layer", "do_stable_layer_norm": True} if kind != "wav2vec2" else \
        {"feat_extract_norm": "group", "do_stable_layer_norm": False}
    config = getattr(transformers, config_cls)(**CONV, **SMALL, **norm)
    getattr(transformers, model_cls)(config).save_pretrained(path)
    if do_normalize is not None:
        transformers.Wav2Vec2FeatureExtractor(do_normalize=do_normalize).save_pretrained(path)
    return Path(path)


def save_whisper(path: Path) -> Path:
    import transformers
    torch.manual_seed(0)
    config = transformers.WhisperConfig(d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                                        num_mel_bins=80, max_target_positions=16)
    transformers.WhisperModel(config).save_pretrained(path)
    transformers.WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    return Path(path)
