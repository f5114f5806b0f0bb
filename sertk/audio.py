"""Audio loading: any file soundfile reads -> float32 mono at a target rate.

Every failure raises `AudioError` naming the file and the problem, so a bad file in a corpus
is reported once, clearly, instead of surfacing later as NaN losses or a shape error.
"""
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from sertk.errors import AudioError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    num_frames: int
    channels: int

    @property
    def duration(self) -> float:
        return self.num_frames / self.sample_rate


def audio_info(path) -> AudioInfo:
    """Read only the header; raise `AudioError` if the file is missing, not audio or empty."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: not a readable audio file ({_reason(e)})") from None
    if info.frames <= 0:
        raise AudioError(f"{path}: audio file has zero length")
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))


def load_audio(path, target_sr: int = 16000) -> np.ndarray:
    """Return the file as a 1-D float32 array at `target_sr`, channels averaged."""
    path = Path(path)
    audio_info(path)  # same checks and messages as the header read
    try:
        samples, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: not a readable audio file ({_reason(e)})") from None
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: audio file has zero length")
    if not np.isfinite(samples).all():
        raise AudioError(f"{path}: audio contains non-finite samples (NaN or Inf)")
    mono = samples.mean(axis=1, dtype=np.float32)
    if not mono.any():
        log.warning("%s: audio is all zeros (digital silence)", path)
    if sr != target_sr:
        mono = soxr.resample(mono, sr, target_sr, quality="HQ").astype(np.float32, copy=False)
    return mono


def _reason(e: Exception) -> str:
    # libsndfile messages start with the path again; keep only the reason
    msg = str(e).strip()
    return msg.split(": ", 1)[-1] if msg.startswith("Error opening") else msg
