"""What `sertk infer` reads: audio files, directories of them (recursively) and Kaldi wav.scp files.

Every input becomes a `Recording` (an id and a path) or a `Skip` (an id, a path and the reason), so
nothing the user named is dropped without a word. Ids are the paths as given (a directory's files: the
directory as given joined with the file's path inside it), or a wav.scp's utterance ids.
"""
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import soundfile as sf

from sertk.data.table import read_table
from sertk.errors import SertkError

# extensions soundfile (libsndfile) reads, and the usual other spellings of them
AUDIO_EXTENSIONS = frozenset({f".{ext.lower()}" for ext in sf.available_formats()}
                             | {".aif", ".oga", ".opus", ".wave"})
SCP_SUFFIX = ".scp"


@dataclass(frozen=True)
class Recording:
    id: str
    path: Path
    speaker: Optional[str] = None     # from utt2spk / --speaker-pattern; None: its own speaker


@dataclass(frozen=True)
class Skip:
    id: str
    path: str
    reason: str


def is_audio_name(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def expand_inputs(args: Sequence[str]) -> Tuple[List[Recording], List[Skip]]:
    """Recordings in the order given (a directory's files sorted), and what could not be used."""
    found: List[Recording] = []
    skips: List[Skip] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and is_audio_name(p))
            if not files:
                skips.append(Skip(arg, arg, f"no audio files under this directory (looked for "
                                            f"{', '.join(sorted(AUDIO_EXTENSIONS))})"))
            found += [Recording(str(p), p) for p in files]
        elif path.is_file() and path.suffix == SCP_SUFFIX:
            recordings, bad = read_wav_scp(path)
            found += recordings
            skips += bad
        elif path.is_file():
            found.append(Recording(arg, path))
        else:
            skips.append(Skip(arg, arg, "no such file or directory"))
    return _unique(found, skips)


def read_wav_scp(path: Path) -> Tuple[List[Recording], List[Skip]]:
    """`<id> <path>` lines; speakers from an utt2spk beside it. Pipes and ark specifiers are skipped:
    sertk reads audio files only."""
    table = read_table(path)
    utt2spk_path = path.parent / "utt2spk"
    utt2spk = read_table(utt2spk_path) if utt2spk_path.is_file() else {}
    recordings, skips = [], []
    for utt, value in table.items():
        if value.endswith("|") or re.match(r"^\w+:", value) and not Path(value).exists():
            skips.append(Skip(utt, value, f"{path}: not an audio file path (pipes and ark specifiers are not "
                                          "supported; give the audio files)"))
        else:
            recordings.append(Recording(utt, Path(value), utt2spk.get(utt)))
    return recordings, skips


def _unique(found: List[Recording], skips: List[Skip]) -> Tuple[List[Recording], List[Skip]]:
    seen: Dict[str, Recording] = {}
    for rec in found:
        if rec.id in seen:
            skips.append(Skip(rec.id, str(rec.path), f"id given twice (first: {seen[rec.id].path})"))
        else:
            seen[rec.id] = rec
    return list(seen.values()), skips


def assign_speakers(recordings: List[Recording], utt2spk: Optional[Dict[str, str]] = None,
                    pattern: Optional[str] = None) -> Tuple[List[Recording], int]:
    """Speakers from an utt2spk table (by id), else from `pattern` (a regex searched in the id: its first
    group, or the whole match), else the one a recording came with (a wav.scp's utt2spk); (recordings, how
    many found no speaker and stay their own)."""
    regex = None
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as e:
            raise SertkError(f"--speaker-pattern {pattern!r}: not a regular expression ({e})") from None
    out, unmatched = [], 0
    for rec in recordings:
        speaker = rec.speaker
        if utt2spk is not None and rec.id in utt2spk:
            speaker = utt2spk[rec.id]
        elif regex is not None:
            m = regex.search(rec.id)
            # no match: the speaker it had (a utt2spk beside its wav.scp) stays
            speaker = (m.group(1) if m.groups() else m.group(0)) if m else rec.speaker
        if speaker is None and (utt2spk is not None or regex is not None):
            unmatched += 1
        out.append(Recording(rec.id, rec.path, speaker))
    return out, unmatched
