"""openSMILE feature streams (the `opensmile` extra: pip install 'sertk[opensmile]').

    is10_lld:  {type: opensmile_lld, feature_set: IS10, frame_length: 0.128, frame_shift: 0.032}
    is10_func: {type: opensmile_functionals, feature_set: IS10, span: segment, grid: is10_lld,
                segment_length: 2.0, segment_hop: 1.0}

opensmile_lld: the set's low-level descriptors per frame, then (lld_deltas) its own delta regression
(IS10: 38 + 38 = 76 dims, in openSMILE's column order), computed with a copy of the set's config whose
framers are set to frame_length / frame_shift. openSMILE frames are not centred: frame f covers samples
[f * shift, f * shift + length), so n samples give 1 + (n - length) // shift frames (Kaldi's snip-edges).

opensmile_functionals: the set's functionals (IS10: 1582), stored as rows beside the frames:
- span utterance: one row, over the whole utterance;
- span segment: one row per segment window, in the order `segments.segment_bounds` gives the windows of
  the `grid` stream's frames, each over exactly the audio those frames cover. The dump records the
  windows, and training and decoding refuse a model whose segments cut other windows.

openSMILE cannot frame audio shorter than two frames: such an utterance is zero-padded to two frames
and counted. Non-finite values (none seen with IS10 so far) are set to 0 and counted. The counts are
in features.yaml (dump.notes) and printed by `sertk features extract`.
openSMILE's licence excludes commercial use; these streams are the only part of sertk that needs it.
"""
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

import numpy as np
import torch

from sertk.errors import FeatureError
from sertk.features.streams.base import Stream, StreamConfig, check_option, stack_rows
from sertk.features.streams.registry import register_stream
from sertk.features.segments import TAILS, SegmentConfig, SegmentError, segment_bounds

if TYPE_CHECKING:
    from sertk.features.streams.registry import BuildContext

INSTALL_HINT = "pip install 'sertk[opensmile]' (or pip install opensmile)"
SPANS = ("segment", "utterance")
# span utterance: shorter audio is padded to this (IS10 gives no functionals for 62 ms, a vector for 128 ms)
UTTERANCE_MIN_SECONDS = 0.16


@dataclass(frozen=True)
class FeatureSet:
    config: str                  # path inside opensmile's config folder
    framers: Tuple[str, ...]     # the cFramer sections that frame the LLDs
    lld_dim: int                 # LLDs without deltas
    functionals_dim: int


# IS10_paraling_compat is what opensmile.FeatureSet.IS10 runs (numerically the original IS10 set)
FEATURE_SETS = {"IS10": FeatureSet("is09-13/IS10_paraling_compat.conf", ("fr25", "fr40"), 38, 1582)}


def _check_feature_set(name: str, where: str) -> None:
    check_option(name in FEATURE_SETS, where, f"feature_set must be one of {', '.join(FEATURE_SETS)}, not '{name}'")


@register_stream("opensmile_lld")
@dataclass
class OpensmileLldConfig(StreamConfig):
    feature_set: str = "IS10"
    concatenable = False
    # seconds, for every framer of the set (IS10 itself frames its spectral LLDs at 25 ms and its pitch at
    # 60 ms, every 10 ms); the default is STRL-SER's 128 ms Hamming frames every 32 ms
    frame_length: float = 0.128
    frame_shift: float = 0.032
    lld_deltas: bool = True       # append the set's own LLD deltas (IS10: lld_de)

    def check(self, sample_rate: int, where: str) -> None:
        super().check(sample_rate, where)
        _check_feature_set(self.feature_set, where)
        check_option(self.deltas == 0, where, "openSMILE LLDs come with their own deltas (lld_deltas); deltas must be 0")
        win, shift = self.samples(sample_rate)
        check_option(shift >= 1 and win >= shift, where, "need frame_length >= frame_shift >= one sample")

    def samples(self, sample_rate: int) -> Tuple[int, int]:
        return int(round(self.frame_length * sample_rate)), int(round(self.frame_shift * sample_rate))

    def hop_samples(self, sample_rate: int) -> int:
        return self.samples(sample_rate)[1]

    def window_length(self, sample_rate: int) -> Optional[float]:
        return self.samples(sample_rate)[0] / sample_rate

    @property
    def dim(self) -> int:
        return FEATURE_SETS[self.feature_set].lld_dim * (2 if self.lld_deltas else 1)

    def build(self, ctx: "BuildContext") -> Stream:
        return OpensmileLld(self, ctx.sample_rate)


@register_stream("opensmile_functionals")
@dataclass
class OpensmileFunctionalsConfig(StreamConfig):
    feature_set: str = "IS10"
    concatenable = False
    span: str = "segment"          # segment: one row per segment window | utterance: one row
    grid: str = "is10_lld"         # span segment: the opensmile_lld stream whose frames the windows cut
    segment_length: float = 2.0    # span segment: the model's segments.length / hop / tail (seconds)
    segment_hop: float = 1.0
    tail: str = "end"

    def __post_init__(self):
        self._grid: Optional[OpensmileLldConfig] = None   # set by resolve

    def check(self, sample_rate: int, where: str) -> None:
        super().check(sample_rate, where)
        _check_feature_set(self.feature_set, where)
        check_option(self.deltas == 0, where, "functionals take no deltas; deltas must be 0")
        check_option(self.span in SPANS, where, f"span must be one of {', '.join(SPANS)}, not '{self.span}'")
        check_option(self.tail in TAILS, where, f"tail must be one of {', '.join(TAILS)}, not '{self.tail}'")
        check_option(self.segment_length > 0 and self.segment_hop > 0, where,
                 "segment_length and segment_hop must be > 0")

    def resolve(self, streams: Dict[str, StreamConfig], sample_rate: int, where: str) -> None:
        """Find the grid stream (span segment) and check that the windows cut at least one frame."""
        self._grid = None
        if self.span == "utterance":
            return
        grid = streams.get(self.grid)
        check_option(isinstance(grid, OpensmileLldConfig), where,
                 f"grid '{self.grid}' must name an opensmile_lld stream of this config (streams: {', '.join(streams)})")
        self._grid = grid
        try:
            self.window_frames(sample_rate)
        except SegmentError as e:
            raise FeatureError(f"{where}: {e}") from None

    @property
    def level(self) -> str:
        return self.span

    def hop_samples(self, sample_rate: int) -> int:
        return self._grid.hop_samples(sample_rate) if self.span == "segment" else 0

    def window_frames(self, sample_rate: int) -> Tuple[int, int]:
        """(length, hop) of the segment windows in grid frames."""
        win, shift = self._grid.samples(sample_rate)
        seg = SegmentConfig(self.segment_length, self.segment_hop, self.tail)
        return seg.frames(shift / sample_rate, win / sample_rate)

    def windows_info(self, sample_rate: int) -> Optional[Dict]:
        if self.span != "segment":
            return None
        length, hop = self.window_frames(sample_rate)
        return {"grid": self.grid, "length": length, "hop": hop, "tail": self.tail}

    @property
    def dim(self) -> int:
        return FEATURE_SETS[self.feature_set].functionals_dim

    def build(self, ctx: "BuildContext") -> Stream:
        return OpensmileFunctionals(self, ctx.sample_rate)


# --- modules ------------------------------------------------------------------------------------

def _opensmile():
    try:
        import opensmile
    except ImportError:
        raise FeatureError(f"openSMILE streams need the opensmile package, which is not installed: {INSTALL_HINT}") \
            from None
    return opensmile


class _SmileStream(Stream):
    """Runs openSMILE on each utterance of a batch (on CPU, whatever the device) and pads the rows."""

    def __init__(self, dim: int, hop: int, sample_rate: int, min_samples: int):
        _opensmile()   # fail before any work (and in this process, not in a worker) when it is missing
        super().__init__(dim, hop)
        self.sample_rate, self.min_samples = sample_rate, min_samples
        self.counts = {"padded_short": 0, "nonfinite_values": 0}
        self._smile = None

    def make_smile(self):
        raise NotImplementedError

    def rows(self, audio: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        wave_np = wave.detach().cpu().numpy()
        outputs = []
        for i, n in enumerate(lengths.tolist()):
            audio = wave_np[i, :n]
            if n < self.min_samples:   # openSMILE frames nothing: pad to two frames, counted
                audio = np.pad(audio, (0, self.min_samples - n))
                self.counts["padded_short"] += 1
            outputs.append(torch.tensor(self.rows(audio)))   # a copy: pandas may hand back a read-only array
        feats, counts = stack_rows(outputs, self.dim)
        return feats.to(wave.device), counts.to(wave.device)

    def smile_rows(self, audio: np.ndarray) -> np.ndarray:
        if self._smile is None:
            self._smile = self.make_smile()
        values = self._smile.process_signal(audio, self.sample_rate).to_numpy(dtype=np.float32)
        bad = ~np.isfinite(values)
        if bad.any():
            self.counts["nonfinite_values"] += int(bad.sum())
            values[bad] = 0.0
        return values

    def __getstate__(self):   # workers build their own openSMILE instance
        state = self.__dict__.copy()
        state["_smile"] = None
        return state


class OpensmileLld(_SmileStream):
    def __init__(self, config: OpensmileLldConfig, sample_rate: int):
        win, shift = config.samples(sample_rate)
        super().__init__(config.dim, shift, sample_rate, win + shift)
        self.config, self.win, self.shift = config, win, shift

    def make_smile(self):
        opensmile = _opensmile()
        return opensmile.Smile(feature_set=str(lld_config_file(self.config, self.sample_rate)),
                               feature_level=LLD_LEVEL if self.config.lld_deltas else "lld")

    def rows(self, audio: np.ndarray) -> np.ndarray:
        values = self.smile_rows(audio)
        expected = 1 + (len(audio) - self.win) // self.shift
        if len(values) != expected:   # the snip-edges count every window computation relies on
            raise FeatureError(f"openSMILE gave {len(values)} frames for {len(audio)} samples, expected {expected} "
                               f"(frames of {self.win} samples every {self.shift}); unsupported opensmile version?")
        return values


class OpensmileFunctionals(_SmileStream):
    def __init__(self, config: OpensmileFunctionalsConfig, sample_rate: int):
        grid = config._grid
        win, shift = grid.samples(sample_rate) if grid is not None else (0, 0)
        min_samples = win + shift if grid is not None else int(UTTERANCE_MIN_SECONDS * sample_rate)
        super().__init__(config.dim, config.hop_samples(sample_rate), sample_rate, min_samples)
        self.config, self.win, self.shift = config, win, shift
        self.window_frames = config.window_frames(sample_rate) if grid is not None else None

    def make_smile(self):
        opensmile = _opensmile()
        return opensmile.Smile(feature_set=opensmile.FeatureSet[self.config.feature_set],
                               feature_level=opensmile.FeatureLevel.Functionals)

    def spans(self, n_samples: int) -> List[Tuple[int, int]]:
        """[start, end) samples of each window: the audio its grid frames cover."""
        if self.window_frames is None:
            return [(0, n_samples)]
        frames = 1 + (n_samples - self.win) // self.shift
        length, hop = self.window_frames
        return [(s * self.shift, (e - 1) * self.shift + self.win)
                for s, e in segment_bounds(frames, length, hop, self.config.tail)]

    def rows(self, audio: np.ndarray) -> np.ndarray:
        return np.concatenate([self.smile_rows(audio[a:b]) for a, b in self.spans(len(audio))])


# --- the LLD config: a copy of the set's config with its framers re-set ----------------------------

LLD_LEVEL = "sertk_lld_with_deltas"
_FRAMER_KEY = r"(\[{name}:cFramer\][^\[]*?\n\s*{key}\s*=\s*)[^\n;]*"


def lld_config_text(config: OpensmileLldConfig, sample_rate: int) -> str:
    opensmile = _opensmile()
    fs = FEATURE_SETS[config.feature_set]
    source = Path(opensmile.__file__).parent / "core" / "config" / fs.config
    if not source.is_file():
        raise FeatureError(f"the installed opensmile has no {fs.config}; {INSTALL_HINT}")
    text = source.read_text()
    win, shift = config.samples(sample_rate)
    for framer in fs.framers:
        for key, value in (("frameSize", win / sample_rate), ("frameStep", shift / sample_rate)):
            text, n = re.subn(_FRAMER_KEY.format(name=framer, key=key), lambda m: f"{m.group(1)}{value!r}", text)
            if n != 1:
                raise FeatureError(f"{source}: no {key} in framer section [{framer}:cFramer]; unsupported opensmile "
                                   "version")
    # one level with the LLDs and their deltas, in openSMILE's column order (LLDs, then deltas)
    return text + (f"\n[componentInstances:cComponentManager]\ninstance[{LLD_LEVEL}].type=cVectorConcat\n"
                   f"[{LLD_LEVEL}:cVectorConcat]\nreader.dmLevel = lld;lld_de\nwriter.dmLevel = {LLD_LEVEL}\n"
                   "includeSingleElementFields = 1\n")


def lld_config_file(config: OpensmileLldConfig, sample_rate: int) -> Path:
    """The edited config, written once per content into the temp dir (openSMILE reads configs from files)."""
    text = lld_config_text(config, sample_rate)
    path = Path(tempfile.gettempdir()) / f"sertk-opensmile-{hashlib.sha1(text.encode()).hexdigest()[:16]}.conf"
    if not path.is_file():
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".conf")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return path
