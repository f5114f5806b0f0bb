"""`sertk features ...`: extract frame-level feature streams into a Kaldi-style dump."""
from pathlib import Path
from typing import Optional

import click

from sertk.cli_types import dir_path, existing_dir, file_path

# extraction pulls in torch and librosa: imported when a command runs, so `sertk --help` stays fast


@click.group()
def features() -> None:
    """Feature streams (log-mel, MFCC, energy, ZCR, deltas; openSMILE LLDs and functionals; SSL encoder
    hidden states) stored as Kaldi ark/scp."""


@features.command()
@click.argument("data_dir", type=existing_dir)
@click.argument("out_dir", type=dir_path)
@click.option("--conf", required=True, type=file_path,
              help="Feature config (YAML): sample_rate and streams.")
@click.option("--nj", default=1, show_default=True, type=click.IntRange(min=1),
              help="Parallel jobs (processes); torch threads are shared out among them. With --job or --merge: "
                   "the number of separate jobs, one group of speakers each.")
@click.option("--job", type=click.IntRange(min=1),
              help="Run only job JOB of --nj (a job backend's task, see `sertk jobs run`); --merge makes the dump.")
@click.option("--merge", is_flag=True, help="Make the dump from the --nj finished --job runs.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N [default: cuda if available, else cpu].")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Utterances per batch (sorted by length, zero-padded) [default: 32].")
def extract(data_dir: Path, out_dir: Path, conf: Path, nj: int, job: Optional[int], merge: bool,
            device: Optional[str], batch_size: int) -> None:
    """Compute the streams of --conf for every utterance of DATA_DIR into OUT_DIR.

    OUT_DIR gets features.yaml (the resolved config) and, per stream, feats.scp, feats.<job>.ark and
    utt2num_frames. A dump already made with the same config from the same utterances is skipped;
    otherwise it is rebuilt whole, and only replaced when extraction succeeded.

    Split by speaker for a job backend: `--nj N --job K` for K = 1..N (each anywhere, in any order),
    then `--nj N --merge`; the dump is the same as one command's.
    """
    from sertk.features.extract import (
        DEFAULT_BATCH_SIZE,
        Request,
        default_device,
        extract_features,
        load_config,
    )
    if job is not None and merge:
        raise click.UsageError("--job and --merge exclude each other: run the jobs, then merge")
    device, batch_size = device or default_device(), batch_size or DEFAULT_BATCH_SIZE
    if job is None and not merge:
        report = extract_features(data_dir, load_config(conf), out_dir, nj=nj, device=device,
                                  batch_size=batch_size, source=str(conf))
    else:
        from sertk.features.split import extract_job, merge_jobs
        request = Request.make(data_dir, load_config(conf), out_dir, nj, device, batch_size, str(conf))
        if job is not None:
            click.echo(extract_job(request, nj, job))
            return
        report = merge_jobs(request, nj)
    for line in report_lines(report):
        click.echo(line)


def report_lines(report):
    if report.skipped:
        yield (f"{report.out_dir}: up to date (same config and utterances), skipped: "
               f"{report.utts} utterances, {report.audio_seconds:.1f} s of audio")
        for s in report.streams:
            yield f"  {s.name}: {s.utts} utts, {s.frames} frames, dim {s.dim}"
        yield from preprocess_lines(report.preprocess)
        yield from _note_lines(report.notes)
        return
    yield (f"{report.out_dir}: {report.utts} utterances, {report.audio_seconds:.1f} s of audio "
           f"(device {report.device}, nj {report.nj})")
    for s in report.streams:
        # summed over jobs, so divided by nj for a wall-clock estimate; a spectrogram shared by
        # streams (log-mel and MFCC) is timed with the first of them
        speed = _times_real_time(report.audio_seconds, s.compute_seconds / report.nj)
        yield f"  {s.name}: {s.utts} utts, {s.frames} frames, dim {s.dim}, {speed} real time"
    if report.merged:
        yield (f"  merged from {report.nj} separate jobs (audio loading {report.load_seconds:.2f} s summed over "
               "them; their logs have their times)")
        yield from preprocess_lines(report.preprocess)
        yield from _note_lines(report.notes)
        return
    extraction = report.wall_seconds - report.setup_seconds
    loading = f"audio loading {report.load_seconds:.2f} s" + (" summed over jobs" if report.nj > 1 else " of it")
    yield (f"  set-up {report.setup_seconds:.2f} s; extraction {extraction:.2f} s ({loading}), "
           f"{_times_real_time(report.audio_seconds, extraction)} real time")
    yield from preprocess_lines(report.preprocess)
    yield from _note_lines(report.notes)


NOTE_TEXT = {"padded_short": "utterance(s) shorter than two frames, zero-padded to two",   # openSMILE
             "padded_to_one_frame": "utterance(s) shorter than one encoder frame, zero-padded to one",   # ssl
             "nonfinite_values": "non-finite value(s) set to 0"}


def _note_lines(notes):
    for stream, counts in (notes or {}).items():
        for key, n in counts.items():
            yield f"  {stream}: {n} {NOTE_TEXT.get(key, key)}"


def preprocess_lines(summary):
    """What silence removal and the fixed length did: audio left out by design is counted, not silent."""
    if not summary:
        return
    yield (f"  preprocess: {summary['silence_removed_seconds']:.1f} s of silence removed from "
           f"{summary['input_seconds']:.1f} s; {summary['kept_whole']} kept whole (no voiced run found); "
           f"{summary['padded']} padded, {summary['cut']} cut to the fixed length "
           f"({summary['cut_seconds']:.1f} s left out)")


def _times_real_time(audio_seconds: float, seconds: float) -> str:
    """How many times real time, to two significant figures below 10 (a pretrained encoder on short
    utterances runs below real time: 0.19x, not 0x)."""
    if seconds <= 0:
        return "-"
    ratio = audio_seconds / seconds
    return f"{ratio:.0f}x" if ratio >= 9.95 else f"{ratio:.1f}x" if ratio >= 0.995 else f"{ratio:.2f}x"
