"""`sertk data validate`: every problem of a data dir, each with its file and line.

The data dir is the contract between recipe stages, so a problem found here is one a later
stage would otherwise hit as a crash or, worse, as a silently wrong result.

Audio is checked as hard as asked: not at all, that the files exist, that their headers open (the
default), or `samples`: every file decoded, so non-finite samples and decode errors are problems, and
files that decode but hold less than they should (truncated, shorter than one 25 ms analysis window,
digitally silent; see sertk.audio) are warnings, each named and counted.
"""
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from sertk.audio import audio_info, read_audio, silence_reason, too_short_reason
from sertk.data.labels import LABEL_MAP_FILE, LabelMap, load_label_map
from sertk.data.table import Entry, invert_utt2spk, parse_table
from sertk.errors import AudioError, LabelError

REQUIRED_FILES = ("wav.scp", "utt2spk", "spk2utt", "utt2emo")
GENDERS = ("f", "m")
# utt2dur and the audio header may differ by rounding and by container quirks
DURATION_TOLERANCE_S = 0.02
AUDIO_CHECKS = ("none", "exists", "header", "samples")


@dataclass(frozen=True)
class Problem:
    file: Path
    line: Optional[int]
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return f"{where}: {self.message}"


def per_utt_files(path: Path) -> List[str]:
    """Files keyed by utterance id: wav.scp, text and every utt2* file."""
    return sorted(p.name for p in path.iterdir()
                  if p.is_file() and (p.name in ("wav.scp", "text") or p.name.startswith("utt2")))


@dataclass
class Validation:
    problems: List[Problem] = field(default_factory=list)
    # audio='samples': files that decode but hold less than they should, each with its kind
    warnings: List[Problem] = field(default_factory=list)
    counts: Dict[str, int] = field(default_factory=dict)   # kind (truncated, too short, silent) -> files
    decoded: int = 0                                        # files decoded (audio='samples')


def validate_dir(path, labels: Optional[LabelMap] = None, audio: str = "header") -> List[Problem]:
    """All problems of the data dir at `path`; an empty list means it is clean.

    `labels` defaults to the dir's own labels.yaml. `audio` is how hard to look at wav.scp:
    'none', 'exists' (the files are there), 'header' (they open as audio) or 'samples' (every file is
    decoded; see `validate` for the warnings that level also finds).
    """
    return validate(path, labels, audio).problems


def validate(path, labels: Optional[LabelMap] = None, audio: str = "header",
             require_utterances: bool = False) -> Validation:
    """`validate_dir`'s problems, plus the warnings of audio='samples'. With `require_utterances` (the
    `sertk data validate` command), a data dir without a single utterance is a problem."""
    path = Path(path)
    if audio not in AUDIO_CHECKS:
        raise ValueError(f"audio must be one of {AUDIO_CHECKS}")
    if not path.is_dir():
        return Validation([Problem(path, None, "no such data directory")])
    v = _Validator(path)
    v.run(labels, audio)
    if require_utterances and "wav.scp" in v.entries and not v.entries["wav.scp"]:
        v.add("wav.scp", None, "no utterances: the data dir is empty")
    return Validation(v.problems, v.warnings, v.counts, v.decoded)


class _Validator:
    def __init__(self, path: Path):
        self.path = path
        self.problems: List[Problem] = []
        self.entries: Dict[str, List[Entry]] = {}
        self.warnings: List[Problem] = []
        self.counts: Dict[str, int] = {}
        self.decoded = 0

    def add(self, name: str, line: Optional[int], message: str) -> None:
        self.problems.append(Problem(self.path / name, line, message))

    def run(self, labels: Optional[LabelMap], audio: str) -> None:
        for name in REQUIRED_FILES:
            if not (self.path / name).is_file():
                self.add(name, None, "required file is missing")
        for name in per_utt_files(self.path) + [n for n in ("spk2utt", "segments") if (self.path / n).is_file()]:
            self.entries[name] = self._read_sorted_unique(name)
        if "wav.scp" not in self.entries:
            return
        utts = {e.key for e in self.entries["wav.scp"]}
        for name in per_utt_files(self.path):
            if name != "wav.scp":
                self._check_same_ids(name, utts)
        self._check_speakers()
        self._check_labels(labels)
        durations = self._check_audio(audio)
        self._check_utt2dur(durations)
        self._check_utt2gen()
        self._check_segments(utts, durations)

    def _read_sorted_unique(self, name: str) -> List[Entry]:
        entries, bad = parse_table(self.path / name)
        for line, msg in bad:
            self.add(name, line, msg)
        seen, unique, prev = set(), [], None
        for e in entries:
            if e.key in seen:
                self.add(name, e.line, f"duplicate id '{e.key}'")
                continue
            if prev is not None and e.key < prev:
                self.add(name, e.line, f"not sorted: '{e.key}' comes after '{prev}' (run 'sertk data fix')")
            seen.add(e.key)
            unique.append(e)
            prev = e.key
        return unique

    def _check_same_ids(self, name: str, utts: set) -> None:
        keys = set()
        for e in self.entries[name]:
            keys.add(e.key)
            if e.key not in utts:
                self.add(name, e.line, f"utterance '{e.key}' is not in wav.scp")
        missing = sorted(utts - keys)
        if missing:
            shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            self.add(name, None, f"{len(missing)} utterance(s) of wav.scp are missing here: {shown}")

    def _check_speakers(self) -> None:
        utt2spk = {e.key: e.value for e in self.entries.get("utt2spk", [])}
        for e in self.entries.get("utt2spk", []):
            if not e.key.startswith(e.value):
                self.add("utt2spk", e.line, f"utterance id '{e.key}' does not start with its speaker id '{e.value}'")
        if "spk2utt" not in self.entries:
            return
        expected = invert_utt2spk(utt2spk)
        listed = set()
        for e in self.entries["spk2utt"]:
            listed.add(e.key)
            want = expected.get(e.key)
            if want is None:
                self.add("spk2utt", e.line, f"speaker '{e.key}' has no utterance in utt2spk")
            elif e.value.split() != want:
                self.add("spk2utt", e.line, f"speaker '{e.key}' does not list the same utterances as utt2spk "
                         "(run 'sertk data fix' to rebuild spk2utt)")
        for spk in sorted(set(expected) - listed):
            self.add("spk2utt", None, f"speaker '{spk}' of utt2spk is missing here")

    def _check_labels(self, labels: Optional[LabelMap]) -> None:
        if "utt2emo" not in self.entries:
            return
        if labels is None:
            try:
                labels = load_label_map(self.path / LABEL_MAP_FILE)
            except LabelError as e:
                self.add(LABEL_MAP_FILE, None, f"cannot check utt2emo: {e}")
                return
        for e in self.entries["utt2emo"]:
            if e.value not in labels.classes:
                self.add("utt2emo", e.line,
                         f"class '{e.value}' is not in the label map's classes {list(labels.classes)}")
        emo = {e.key: e.value for e in self.entries["utt2emo"]}
        for e in self.entries.get("utt2lab_raw", []):
            try:
                cls = labels.map(e.value)
            except LabelError as err:
                self.add("utt2lab_raw", e.line, str(err))
                continue
            if cls is None:
                self.add("utt2lab_raw", e.line, f"raw label '{e.value}' is dropped by the label map, "
                         "yet the utterance is in the data dir")
            elif e.key in emo and emo[e.key] != cls:
                self.add("utt2lab_raw", e.line,
                         f"raw label '{e.value}' maps to '{cls}' but utt2emo says '{emo[e.key]}'")

    def _check_audio(self, audio: str) -> Dict[str, float]:
        durations: Dict[str, float] = {}
        if audio == "none":
            return durations
        for e in self.entries["wav.scp"]:
            if e.value.endswith("|"):
                self.add("wav.scp", e.line, "pipe commands are not supported; give the path of an audio file")
                continue
            if audio == "exists":
                if not Path(e.value).is_file():
                    self.add("wav.scp", e.line, f"audio file {e.value} does not exist")
                continue
            try:
                if audio == "header":
                    durations[e.key] = audio_info(e.value).duration
                    continue
                decoded = read_audio(e.value, target_sr=None)
            except AudioError as err:
                self.add("wav.scp", e.line, str(err))
                continue
            self.decoded += 1
            durations[e.key] = decoded.duration
            for kind, why in (("truncated", decoded.truncated), ("too short", too_short_reason(decoded.duration)),
                              ("silent", silence_reason(decoded.peak))):
                if why:
                    self.warnings.append(Problem(self.path / "wav.scp", e.line, f"{e.value}: {why}"))
                    self.counts[kind] = self.counts.get(kind, 0) + 1
        return durations

    def _check_utt2dur(self, durations: Dict[str, float]) -> None:
        for e in self.entries.get("utt2dur", []):
            try:
                dur = float(e.value)
            except ValueError:
                dur = math.nan
            if not (dur > 0 and math.isfinite(dur)):
                self.add("utt2dur", e.line, f"duration '{e.value}' is not a positive number of seconds")
            elif e.key in durations and abs(dur - durations[e.key]) > DURATION_TOLERANCE_S:
                self.add("utt2dur", e.line, f"says {dur:.3f} s but the audio lasts {durations[e.key]:.3f} s")

    def _check_utt2gen(self) -> None:
        for e in self.entries.get("utt2gen", []):
            if e.value not in GENDERS:
                self.add("utt2gen", e.line, f"gender '{e.value}' is not one of {list(GENDERS)}")

    def _check_segments(self, utts: set, durations: Dict[str, float]) -> None:
        known = dict(durations)
        for e in self.entries.get("utt2dur", []):
            try:
                known.setdefault(e.key, float(e.value))
            except ValueError:
                pass
        for e in self.entries.get("segments", []):
            fields = e.value.split()
            if len(fields) != 3:
                self.add("segments", e.line, "expected '<segment> <utterance> <start> <end>'")
                continue
            utt, start_s, end_s = fields
            try:
                start, end = float(start_s), float(end_s)
            except ValueError:
                self.add("segments", e.line, f"start '{start_s}' and end '{end_s}' must be seconds")
                continue
            if utt not in utts:
                self.add("segments", e.line, f"utterance '{utt}' is not in wav.scp")
            elif not (0 <= start < end):
                self.add("segments", e.line, f"segment [{start}, {end}] is empty or starts before 0")
            elif utt in known and end > known[utt] + DURATION_TOLERANCE_S:
                self.add("segments", e.line, f"segment ends at {end} s, after the end of '{utt}' ({known[utt]:.3f} s)")
