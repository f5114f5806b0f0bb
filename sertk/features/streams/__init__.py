"""Feature streams: what a feature config's streams are and the torch modules that compute them.

A stream is an `nn.Module` with `forward(wave [B, T] float32, lengths [B] int64) ->
(feats [B, frames, dim], frame_lengths [B])`. Every torch stream puts frames on the same grid: frame f is
centred on sample f * hop (center=True with zero padding, as librosa >= 0.10), so an utterance of
T samples has 1 + T // hop frames and streams with the same hop can be stacked frame by frame.

Batching never changes an utterance's valid frames: zero padding after an utterance is what
center=True padding would add anyway, and everything per utterance (MFCC top_db, ZCR edges,
delta edges) uses that utterance's own length. Frames past an utterance's length are zero.

Each stream type has a config dataclass whose defaults are the documented defaults; a YAML
stream spec is checked against it (unknown keys, types and values are a `FeatureError`):

    sample_rate: 16000
    streams:
      logmel: {type: logmel, n_mels: 64, win_length: 0.025, hop_length: 0.010}
      lld: {type: concat, parts: [{type: zcr}, {type: energy}, {type: log_energy},
                                  {type: mfcc, n_mfcc: 13, deltas: 2}]}

One module per family (`FAMILIES`, imported in the order their types are listed in messages), each registering
its config classes with `registry.register_stream` and each config building its own module (`build(ctx)`):
- `spectral`:  logmel, mfcc (one STFT and filterbank shared by the streams that have the same)
- `frames`:    energy, log_energy, zcr
- `concat`:    torch streams with the same hop stacked frame by frame
- `opensmile`: opensmile_lld, opensmile_functionals (openSMILE is imported only when they run)
- `ssl`:       ssl, a frozen pretrained encoder's hidden states (transformers only when it runs)
- `ssl_stats`: ssl_stats, pooled statistics of those hidden states
Shared by all: `base` (config and module base classes), `registry` (type names, parsing, building) and
`deltas` (librosa.feature.delta for any torch stream).
"""
import importlib

from sertk.features.streams.base import Stream, StreamConfig
from sertk.features.streams.registry import (DUMP_INFO_KEY, STREAM_TYPES, BuildContext, FeatureConfig, build_frontend,
                                             build_frontends, parse_config, parse_stream, register_stream,
                                             stream_to_dict)

# the stream families, imported (so registered, and listed in messages) in this order
FAMILIES = ("spectral", "frames", "concat", "opensmile", "ssl", "ssl_stats")
for _family in FAMILIES:
    importlib.import_module(f"{__name__}.{_family}")

__all__ = ["DUMP_INFO_KEY", "FAMILIES", "STREAM_TYPES", "BuildContext", "FeatureConfig", "Stream", "StreamConfig",
           "build_frontend", "build_frontends", "parse_config", "parse_stream", "register_stream", "stream_to_dict"]
