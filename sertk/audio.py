"""Audio loading: any file soundfile reads -> float32 mono at a target rate.

Every failure raises `AudioError` naming the file and the problem, so a bad file in a corpus
is reported once, clearly, instead of surfacing later as NaN losses or a shape error.

Files that decode but hold less than they should are not errors; `read_audio` says what is wrong with
them and each command counts them in its summary:
- truncated: a WAV (RIFF/RIFX) or AIFF whose header promises more audio bytes than the file holds (a copy
  cut off mid-transfer). libsndfile reads such a file as far as it goes without a word, so the header is
  parsed here. (Truncated FLAC/OGG fail to decode and raise `AudioError`; an MP3 states no length of its own,
  so one cut short decodes as far as it goes, unnoticed.)
- too short: under `MIN_SECONDS`, one 25 ms analysis window (see `too_short_reason`).
- silent: the decoded mono mix never reaches `SILENCE_PEAK` (-80 dBFS), i.e. digital silence.
"""
import hashlib
import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import soundfile as sf
import soxr

from sertk.errors import AudioError

log = logging.getLogger(__name__)

# Shorter than one analysis window holds no complete frame of signal: every frame of the default
# log-mel/MFCC frontends (25 ms windows) and a wav2vec2/HuBERT frame (400 samples at 16 kHz) is then mostly
# zero padding, and a model still gives such input a confident-looking label. Feature configs with
# longer windows raise the bar to their longest window (sertk.features.extract.min_audio_seconds).
MIN_SECONDS = 0.025
# Digital silence: the largest |sample| of the mono mix is below -80 dBFS. Dithered silence of a 16-bit
# file peaks at 1-3 steps (-90 to -80 dBFS); any speech recording, with its room noise, peaks far above it.
SILENCE_PEAK = 1e-4


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    num_frames: int
    channels: int

    @property
    def duration(self) -> float:
        return self.num_frames / self.sample_rate


def _refuse_headerless(path: Path) -> None:
    # soundfile opens a *.raw name as headerless RAW, which needs the rate and encoding given (TypeError
    # otherwise); nothing in such a file says them, so it is refused rather than guessed
    if path.suffix.lower() == ".raw":
        raise AudioError(f"{path}: headerless RAW audio (the file does not say its sample rate or encoding); "
                         "convert it to WAV or FLAC")


def audio_info(path) -> AudioInfo:
    """Read only the header; raise `AudioError` if the file is missing, not audio or empty."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    _refuse_headerless(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: not a readable audio file ({_reason(e, path)})") from None
    if info.frames <= 0:
        raise AudioError(f"{path}: audio file has zero length")
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))


@dataclass(frozen=True)
class Audio:
    """A decoded file: float32 mono at `sample_rate`, and what is wrong with it short of an error."""
    samples: np.ndarray
    sample_rate: int
    peak: float                       # the largest |sample| of the mono mix (before resampling)
    truncated: Optional[str] = None   # why the file holds less than its header says; None: it does not
    source_rate: Optional[int] = None  # the file's own sample rate, before resampling
    channel_peak: Optional[float] = None   # the largest |sample| of any channel (None: as `peak`)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def silent(self) -> bool:
        return self.peak < SILENCE_PEAK


def read_audio(path, target_sr: Optional[int] = 16000) -> Audio:
    """Decode the file (channels averaged, resampled to `target_sr`; None: kept at the file's rate); raise
    `AudioError` if it cannot be used at all (missing, not audio, empty, non-finite samples). Logs nothing:
    callers count and report truncated, too short and silent files (see `unusable_reason`)."""
    path = Path(path)
    audio_info(path)  # same checks and messages as the header read
    try:
        samples, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: not a readable audio file ({_reason(e, path)})") from None
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: audio file has zero length")
    if not np.isfinite(samples).all():
        raise AudioError(f"{path}: audio contains non-finite samples (NaN or Inf)")
    mono = samples.mean(axis=1, dtype=np.float32)
    peak = float(np.abs(mono).max())
    truncated = truncation(path, samples.shape[0] / sr)
    if target_sr is not None and sr != target_sr:
        mono = soxr.resample(mono, sr, target_sr, quality="HQ").astype(np.float32, copy=False)
    return Audio(mono, target_sr or sr, peak, truncated, int(sr), float(np.abs(samples).max()))


def band_limit_reason(source_rate: Optional[int], model_rate: int) -> Optional[str]:
    """For audio recorded below the model's rate: what its upsampled copy lacks (a model decides on it all the
    same, but it never saw audio without that band); None otherwise."""
    if source_rate is None or source_rate >= model_rate:
        return None
    return (f"recorded at {source_rate} Hz, below the model's {model_rate} Hz: nothing above {source_rate // 2} Hz, "
            f"where the model was trained on audio up to {model_rate // 2} Hz")


def load_audio(path, target_sr: int = 16000) -> np.ndarray:
    """Return the file as a 1-D float32 array at `target_sr`, channels averaged (an all-zero file is logged
    as a warning; `read_audio` says more, for callers that count)."""
    return load_audio_and_rate(path, target_sr)[0]


def load_audio_and_rate(path, target_sr: int = 16000) -> Tuple[np.ndarray, int]:
    """`load_audio`'s array, and the rate the file was recorded at."""
    audio = read_audio(path, target_sr)
    if not audio.samples.any():
        log.warning("%s: audio is all zeros (digital silence)", path)
    return audio.samples, audio.source_rate


def samples_digest(path) -> str:
    """sha1 of the decoded samples (float32, as soundfile gives them, all channels) and the channel count:
    equal for copies of the same audio whatever the container, file name or header; `AudioError` if the file
    cannot be decoded. About 0.2 ms per second of 16 kHz 16-bit audio from a warm page cache, most of it
    decoding (RAVDESS's 1440 files, 89 min: 0.9 s)."""
    path = Path(path)
    _refuse_headerless(path)
    try:
        samples, _ = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: not a readable audio file ({_reason(e, path)})") from None
    h = hashlib.sha1(f"{samples.shape[1]}\n".encode())
    h.update(np.ascontiguousarray(samples).tobytes())
    return h.hexdigest()


def too_short_reason(duration: float, min_seconds: float = MIN_SECONDS) -> Optional[str]:
    if duration < min_seconds:
        return (f"too short: {1000 * duration:.1f} ms, under one {1000 * min_seconds:.0f} ms analysis window "
                "(no complete frame of signal)")
    return None


def silence_reason(peak: float) -> Optional[str]:
    if peak == 0:
        return "silent: every sample is zero (digital silence)"
    if peak < SILENCE_PEAK:
        return f"silent: peak level {20 * math.log10(peak):.0f} dBFS, below {20 * math.log10(SILENCE_PEAK):.0f} dBFS"
    return None


def unusable_reason(audio: Audio, min_seconds: float = MIN_SECONDS) -> Optional[str]:
    """Why a model's decision on this audio would mean nothing (too short, then silent), else None."""
    silent = silence_reason(audio.peak)
    if silent and audio.channel_peak is not None and audio.channel_peak >= SILENCE_PEAK:
        # each channel is sound, their average is not: channels in opposite phase (a wiring or export fault)
        silent = (f"silent once its channels are averaged to mono: they cancel out (a channel peaks at "
                  f"{20 * math.log10(audio.channel_peak):.0f} dBFS, the mono mix "
                  + (f"at {20 * math.log10(audio.peak):.0f} dBFS)" if audio.peak > 0 else "is all zero)")
                  + "; give one channel")
    return too_short_reason(audio.duration, min_seconds) or silent


def truncation(path, seconds_read: float) -> Optional[str]:
    """For a WAV (RIFF/RIFX) or AIFF file whose audio chunk is shorter than its header says: how much is
    missing; None for a complete file, another format, or a header that leaves the size open (streamed
    WAVs write 0 or 0xFFFFFFFF)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            size = Path(path).stat().st_size
            found = _wav_data_chunk(f, head) if head[8:12] == b"WAVE" else _aiff_data_chunk(f, head)
    except (OSError, struct.error):
        return None
    if found is None:
        return None
    declared, start = found
    held = size - start
    if declared in (0, 0xFFFFFFFF) or declared <= held:
        return None
    promised = seconds_read * declared / held if held > 0 else float("nan")
    return (f"truncated: the header promises {declared} bytes of audio (about {promised:.2f} s) but the file "
            f"holds {max(held, 0)} ({seconds_read:.2f} s); read as far as it goes")


def _wav_data_chunk(f, head: bytes):
    """(declared size of the 'data' chunk, where its bytes start) of a RIFF/RIFX WAVE file, else None."""
    order = {b"RIFF": "<", b"RIFX": ">"}.get(head[:4])
    if order is None:
        return None   # RF64 keeps its sizes in a ds64 chunk; libsndfile reads those itself
    return _find_chunk(f, order, b"data", 12)


def _aiff_data_chunk(f, head: bytes):
    """The same for the 'SSND' chunk of an AIFF/AIFC file (its 8-byte offset/block header counted as audio
    bytes on both sides, so the comparison is unchanged)."""
    if head[:4] != b"FORM" or head[8:12] not in (b"AIFF", b"AIFC"):
        return None
    return _find_chunk(f, ">", b"SSND", 12)


def _find_chunk(f, order: str, wanted: bytes, pos: int):
    while True:
        f.seek(pos)
        header = f.read(8)
        if len(header) < 8:
            return None
        chunk, size = header[:4], struct.unpack(order + "I", header[4:])[0]
        if chunk == wanted:
            return size, pos + 8
        pos += 8 + size + (size & 1)   # chunks are padded to an even size


def _reason(e: Exception, path: Path) -> str:
    # libsndfile messages start with the path again; keep only the reason
    msg = str(e).strip()
    msg = msg.split(": ", 1)[-1] if msg.startswith("Error opening") else msg
    if "does not exist or is not a regular file" in msg and path.is_file():   # libsndfile's words for bytes its
        return "its format is not recognised"   # MP3 probe gave up on (a file that does exist)
    return msg
