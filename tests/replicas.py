"""Generated stand-ins for corpus releases: real file names and layouts, short synthetic audio.

Tests never read real corpora unless they are marked as real-data tests.
"""
import zlib
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import soundfile as sf

EMODB_SPEAKERS = ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16")
EMODB_EMOTIONS = "WLEAFTN"


def write_wav(path: Path, seconds: float = 0.3, sr: int = 16000, channels: int = 1,
              freq: float = 220.0, seed: Optional[int] = None) -> Path:
    """A short tone plus noise, so every file is distinct and non-silent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed if seed is not None else zlib.crc32(path.name.encode()))
    t = np.arange(int(seconds * sr)) / sr
    mono = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    data = np.stack([mono] * channels, axis=1) if channels > 1 else mono
    sf.write(str(path), data.astype(np.float32), sr, subtype="PCM_16")
    return path


def make_emodb(root: Path, speakers: Iterable[str] = EMODB_SPEAKERS, emotions: str = EMODB_EMOTIONS,
               texts: Iterable[str] = ("a01", "b02")) -> Path:
    """`<root>/wav/03a01Fa.wav`...: one file per speaker x text x emotion, plus release clutter."""
    wav = Path(root) / "wav"
    for spk in speakers:
        for text in texts:
            for emo in emotions:
                write_wav(wav / f"{spk}{text}{emo}a.wav")
    (Path(root) / "erkennung.txt").write_text("release notes\n")
    (wav / "README").write_text("not audio\n")
    return Path(root)


def make_ravdess(root: Path, actors: Iterable[int] = range(1, 25), emotions: Iterable[int] = range(1, 9),
                 with_song: bool = True) -> Path:
    """`<root>/Actor_01/03-01-EE-II-SS-RR-01.wav`: the speech release's naming, 2 files per emotion
    (plus, optionally, a song file that must be skipped)."""
    root = Path(root)
    for actor in actors:
        folder = root / f"Actor_{actor:02d}"
        for emo in emotions:
            intensities = (1,) if emo == 1 else (1, 2)
            for intensity in intensities:
                write_wav(folder / f"03-01-{emo:02d}-{intensity:02d}-01-01-{actor:02d}.wav", seconds=0.2)
        if with_song:
            write_wav(folder / f"03-02-03-01-01-01-{actor:02d}.wav", seconds=0.2)
    return root



def speech_like(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced-sounding burst: a gliding harmonic tone with a 4 Hz syllable envelope (float32)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = rng.uniform(100, 220) * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    return (0.1 * voice * envelope).astype(np.float32)


def make_recording(path: Path, seconds: float, sr: int = 16000, seed: int = 0, max_burst: float = 6.0):
    """A recording of speech-like bursts (1 to `max_burst` s) between pauses (0.6 to 3 s) over faint noise;
    returns the bursts' (start, end) in seconds."""
    rng = np.random.default_rng(seed)
    parts, spans, n = [], [], 0
    while True:
        pause, burst = int(rng.uniform(0.6, 3.0) * sr), int(rng.uniform(1.0, max_burst) * sr)
        if (n + pause + burst) / sr > seconds - 0.6:
            break
        parts += [np.zeros(pause, np.float32), speech_like(burst / sr, sr, seed=len(spans))]
        spans.append(((n + pause) / sr, (n + pause + burst) / sr))
        n += pause + burst
    parts.append(np.zeros(int(seconds * sr) - n, np.float32))
    wave = np.concatenate(parts) + 1e-3 * rng.standard_normal(int(seconds * sr)).astype(np.float32)
    sf.write(str(path), wave, sr, subtype="PCM_16")
    return spans
