"""The end of a feature extraction: bad audio fails it (every bad file counted), the jobs' arks are indexed,
and features.yaml and the report are written; and the report of a dump already up to date.
"""
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from sertk.audio import SILENCE_PEAK
from sertk.errors import AudioError, FeatureError
from sertk.features import storage
from sertk.features.extract_jobs import BAND_LIMITED, SILENT, TOO_SHORT, TRUNCATED, JobResult, min_audio_seconds
from sertk.features.preprocess import PreprocessStats
from sertk.features.streams import DUMP_INFO_KEY, FeatureConfig, parse_config

# bad audio named in the error line (all of them are logged)
BAD_AUDIO_SHOWN = 3
# audio that decodes but holds less than it should: counted in features.yaml under dump.audio, and in the
# report's notes under "audio files" (printed like a stream's notes; stream names hold no space)
AUDIO_INFO_KEY = "audio"
AUDIO_NOTES = "audio files"

log = logging.getLogger(__name__)


@dataclass
class StreamReport:
    name: str
    utts: int
    frames: int
    dim: int
    frame_shift: float        # seconds
    compute_seconds: float    # summed over jobs; a spectrogram shared by streams counts for the first


@dataclass
class ExtractReport:
    out_dir: Path
    skipped: bool             # the dump was already up to date
    utts: int
    audio_seconds: float
    streams: List[StreamReport]
    nj: int = 1               # jobs actually run (no more than there are batches)
    device: str = "cpu"
    load_seconds: float = 0.0   # reading, resampling and preprocessing audio, summed over jobs
    setup_seconds: float = 0.0  # checking config and data dir, planning, building the frontends
    wall_seconds: float = 0.0   # everything, set-up included
    preprocess: Optional[Dict[str, Any]] = None   # PreprocessStats.summary when the config preprocesses
    notes: Optional[Dict[str, Dict[str, int]]] = None   # stream -> what its module counted (non-zero only)
    merged: bool = False        # made from separately run jobs (sertk.features.split): no wall-clock times


# --- bad and deficient audio -------------------------------------------------------------------

def fail_on_bad_audio(header_bad: Dict[str, str], results: Sequence[JobResult], total: int,
                      utts: Optional[Sequence[str]] = None) -> None:
    """Raise one AudioError counting every bad file (of `utts`, default all) found by the header read and the
    jobs, naming the first few; when there are several, each one is logged first."""
    wanted = None if utts is None else set(utts)
    bad = {u: why for u, why in header_bad.items() if wanted is None or u in wanted}
    for r in results:
        bad.update((u, why) for u, why in r.bad_audio)
    if not bad:
        return
    if len(bad) > 1:
        for utt in sorted(bad):
            log.warning("bad audio of %s: %s", utt, bad[utt])
    shown = "; ".join(bad[u] for u in sorted(bad)[:BAD_AUDIO_SHOWN])
    more = f"; and {len(bad) - BAD_AUDIO_SHOWN} more" if len(bad) > BAD_AUDIO_SHOWN else ""
    logged = "; each is logged above" if len(bad) > 1 else ""
    # the first file's own message leads, so a single bad file reads as it always did
    raise AudioError(f"{shown}{more} ({len(bad)} of {total} audio file(s) cannot be used, so no dump was "
                     f"written{logged})")


def log_audio_issues(results: Sequence[JobResult]) -> None:
    band_limited: List[str] = []
    for utt, kind, why in sorted(i for r in results for i in r.audio_issues):
        if kind == SILENT and "every sample is zero" in why:
            continue   # load_audio has said so already (where it decoded the file)
        if kind == BAND_LIMITED:   # often a whole corpus (telephone audio): one line, not one per file
            band_limited.append(why)
            continue
        log.warning("%s (utterance %s)", why, utt)
    if band_limited:
        log.warning("%d file(s) upsampled; the first: %s", len(band_limited), band_limited[0])


def audio_notes(results: Sequence[JobResult], cfg: FeatureConfig) -> Dict[str, int]:
    """What the summary and features.yaml count under AUDIO_NOTES (non-zero only)."""
    text = {TRUNCATED: "truncated (the header promises more audio than the file holds; extracted as far as it goes)",
            TOO_SHORT: f"too short (under one {1000 * min_audio_seconds(cfg):.0f} ms analysis window; extracted, "
                       "zero-padded by the frontends)",
            SILENT: f"silent (digital silence: peak below {20 * math.log10(SILENCE_PEAK):.0f} dBFS; extracted)",
            BAND_LIMITED: f"recorded below {cfg.sample_rate} Hz (upsampled, nothing in the band above half their rate; "
                          "extracted)"}
    counts: Dict[str, int] = {}
    for r in results:
        for _, kind, _ in r.audio_issues:
            counts[text[kind]] = counts.get(text[kind], 0) + 1
    return counts


# --- finishing ----------------------------------------------------------------------------------

def finish_dump(tmp: Path, out_dir: Path, cfg: FeatureConfig, results: List[JobResult], checksum: str) -> ExtractReport:
    """Index the jobs' arks and write features.yaml into the temp dump `tmp` (to become `out_dir`); the report."""
    audio_seconds = sum(r.samples for r in results) / cfg.sample_rate
    reports = []
    for name in cfg.streams:
        entries = [e for r in results for e in r.entries[name]]
        storage.write_stream_index(tmp / name, out_dir / name, entries)
        reports.append(StreamReport(name, len(entries), sum(e[3] for e in entries), results[0].dims[name],
                                    cfg.streams[name].hop_samples(cfg.sample_rate) / cfg.sample_rate,
                                    sum(r.stream_seconds[name] for r in results)))
    doc = cfg.to_dict()
    doc[DUMP_INFO_KEY] = {"utterances": reports[0].utts, "utt_checksum": checksum,
                          "audio_seconds": round(audio_seconds, 3),
                          "dims": {r.name: r.dim for r in reports},
                          "frame_shift": {r.name: r.frame_shift for r in reports},
                          "ark_bytes": {name: {ark.name: ark.stat().st_size
                                               for ark in sorted((tmp / name).glob("*.ark"))} for name in cfg.streams}}
    doc[DUMP_INFO_KEY].update(stream_layout(cfg))
    notes = _stream_notes(results)
    if notes:
        doc[DUMP_INFO_KEY]["notes"] = notes
    counted = audio_notes(results, cfg)
    if counted:
        doc[DUMP_INFO_KEY][AUDIO_INFO_KEY] = counted
    summary = None
    if cfg.preprocess.active:
        stats = PreprocessStats()
        for r in results:
            stats.add(r.preprocess)
        summary = doc[DUMP_INFO_KEY]["preprocess"] = stats.summary(cfg.sample_rate)
    storage.write_dump_config(tmp, doc)
    return ExtractReport(out_dir, False, reports[0].utts, audio_seconds, reports,
                         load_seconds=sum(r.load_seconds for r in results), preprocess=summary,
                         notes=_with_audio_notes(notes, counted))


def _damaged_ark(out_dir: Path, cfg: FeatureConfig, recorded: Optional[Dict[str, Dict[str, int]]]) -> Optional[str]:
    """Why a dump's arks are not the ones it was written with (missing, or another size than recorded), else None.
    Dumps written before the sizes were recorded are checked for the arks their index names."""
    for name in cfg.streams:
        if recorded is not None:
            expected = recorded.get(name) or {}
        else:
            scp = out_dir / name / storage.SCP_FILE
            if not scp.is_file():
                return f"stream {name}: no {storage.SCP_FILE}"
            expected = {Path(entry.rstrip().rpartition(":")[0]).name: None
                        for entry in storage.feats_index(out_dir, name).values()}
        for ark, size in expected.items():
            path = out_dir / name / ark
            if not path.is_file():
                return f"stream {name}: {ark} is missing"
            if size is not None and path.stat().st_size != size:
                return f"stream {name}: {ark} is {path.stat().st_size} bytes, written as {size} (damaged)"
    return None


def _with_audio_notes(notes: Optional[Dict[str, Dict[str, int]]], counted: Optional[Dict[str, int]]):
    """The report's notes: the streams' counts and, under AUDIO_NOTES, the audio's (printed alike)."""
    return {**(notes or {}), AUDIO_NOTES: counted} if counted else notes


def stream_layout(cfg: FeatureConfig) -> Dict[str, Any]:
    """What a reader needs beyond the frame shift (only written when some stream needs it, so dumps of
    torch streams read as before): levels other than frame, non-centred frame windows, segment windows,
    layers stored side by side."""
    sr = cfg.sample_rate
    layout: Dict[str, Any] = {}
    levels = {n: s.level for n, s in cfg.streams.items() if s.level != "frame"}
    windows = {n: s.window_length(sr) for n, s in cfg.streams.items() if s.window_length(sr) is not None}
    segment_windows = {n: s.windows_info(sr) for n, s in cfg.streams.items() if s.windows_info(sr) is not None}
    layers = {n: s.stacked_layers(sr) for n, s in cfg.streams.items() if s.stacked_layers(sr) is not None}
    for key, value in (("levels", levels), ("frame_window", windows), ("windows", segment_windows),
                       ("layers", layers)):
        if value:
            layout[key] = value
    return layout


def _stream_notes(results: List[JobResult]) -> Dict[str, Dict[str, int]]:
    """Counts summed over jobs, only the non-zero ones."""
    notes: Dict[str, Dict[str, int]] = {}
    for r in results:
        for name, counts in r.stream_counts.items():
            for key, n in counts.items():
                if n:
                    notes.setdefault(name, {}).setdefault(key, 0)
                    notes[name][key] += n
    return notes


def up_to_date_report(out_dir: Path, cfg: FeatureConfig, checksum: str) -> Optional[ExtractReport]:
    """The report of an existing dump made with the same config from the same utterances, else None."""
    if not storage.is_feature_dump(out_dir):
        return None
    try:
        doc = storage.read_dump_config(out_dir)
        info = doc.get(DUMP_INFO_KEY) or {}
        # parsed again, so options added since the dump was made compare at their defaults
        same = (parse_config({k: v for k, v in doc.items() if k != DUMP_INFO_KEY}).to_dict() == cfg.to_dict()
                and info.get("utt_checksum") == checksum)
        if not same:
            return None
        damaged = _damaged_ark(out_dir, cfg, info.get("ark_bytes"))
        if damaged:
            log.warning("%s: %s; extracting again", out_dir, damaged)
            return None
        streams = [StreamReport(name, len(n), sum(n.values()), int(info["dims"][name]),
                                float(info["frame_shift"][name]), 0.0)
                   for name, n in ((name, storage.num_frames(out_dir, name)) for name in cfg.streams)]
    except (FeatureError, KeyError, TypeError, ValueError):
        return None   # damaged or from an older layout: rebuild
    return ExtractReport(out_dir, True, int(info["utterances"]), float(info["audio_seconds"]), streams,
                         preprocess=info.get("preprocess"),
                         notes=_with_audio_notes(info.get("notes"), info.get(AUDIO_INFO_KEY)))
