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

