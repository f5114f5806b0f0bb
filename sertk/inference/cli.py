"""`sertk pack` and `sertk infer`: a trained model as one file, and that file run on new audio."""
import logging
from pathlib import Path
from typing import Optional, Tuple

import click

from sertk.cli_types import existing_dir, existing_file, existing_path, file_path
from sertk.decode import VOTING_RULES   # numpy only: the command line still starts without torch

log = logging.getLogger(__name__)

EXIT_SKIPPED = 3   # results written, but some inputs were skipped (each one logged with its reason)
DEFAULT_PACK = "model.sertk"


@click.command()
@click.argument("paths", nargs=-1, required=True, type=existing_path)
@click.option("-o", "--out", type=file_path,
              help=f"Packed model to write (one EXP_DIR only) [default: EXP_DIR/{DEFAULT_PACK}].")
@click.option("--feats", type=existing_dir,
              help="The feature dump the model was trained on [default: the one its decode dirs name].")
@click.option("--info", is_flag=True, help="The paths are packed models: print what they hold.")
@click.option("--skip-unfinished", is_flag=True,
              help="Pack nothing, and say so, for a fold still training or whose test set is not decoded with "
                   "its best.pt: the recipe's stage 6.")
def pack(paths: Tuple[Path], out: Optional[Path], feats: Optional[Path], info: bool, skip_unfinished: bool) -> None:
    """Pack a fold's dev-selected model (EXP_DIR = exp/<protocol>/<model>/fold<k>; several may be given) into
    one file: weights, config, labels, feature config, normalisation, protocol card and scores. With
    --info, describe packed models."""
    from sertk.inference.pack import pack_experiment
    from sertk.inference.pack_file import read_meta
    from sertk.inference.pack_info import info_text
    if info:
        if out is not None or feats is not None:
            raise click.UsageError("--info reads packed models; -o and --feats are for packing")
        click.echo("\n\n".join(info_text(read_meta(path), path) for path in paths))
        return
    if out is not None and len(paths) > 1:
        raise click.UsageError(f"-o names one file, but {len(paths)} exp dirs were given (each is packed into "
                               f"its own EXP_DIR/{DEFAULT_PACK} without -o)")
    for path in paths:
        why = _not_ready(path) if skip_unfinished else None
        if why:
            click.echo(f"{path}: {why}; not packed")
            continue
        click.echo(pack_experiment(path, out or path / DEFAULT_PACK, feats))


def _not_ready(exp_dir: Path) -> Optional[str]:
    """Why a fold is not a finished model with its test result yet, else None."""
    from sertk.decode.decodedir import decoded_with_current_checkpoint
    from sertk.decode.decoder import still_training
    from sertk.errors import SertkError
    from sertk.yamlutil import read_yaml_file
    training = still_training(exp_dir)
    if training:
        return f"still training ({', '.join(training)})"
    record = exp_dir / "decode_test" / "decode.yaml"
    if not record.is_file():
        return "its test set is not decoded yet (stage 4)"
    if not decoded_with_current_checkpoint(exp_dir, read_yaml_file(record, SertkError)):
        return "its test set was decoded with another checkpoint than its best.pt"
    return None


@click.command()
@click.argument("model", type=existing_file)
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", type=file_path,
              help="results.csv or results.json [default: CSV on stdout].")
@click.option("--vote", type=click.Choice(VOTING_RULES),
              help="Voting rule over a recording's windows [default: the model's].")
@click.option("--window", type=float, help="Model window length in seconds [default: the model's].")
@click.option("--hop", type=float, help="Model window hop in seconds [default: the model's, or half of --window].")
@click.option("--segment", type=click.Choice(["none", "vad", "fixed"]), default="none", show_default=True,
              help="none: a decision per file; vad: per speech chunk; fixed: per --max-chunk piece.")
@click.option("--vad", "vad_backend", type=click.Choice(["auto", "silero", "energy"]), default="auto",
              show_default=True, help="VAD for --segment vad (auto: silero when installed, else energy).")
@click.option("--min-chunk", type=float, default=0.5, show_default=True, help="Drop speech chunks shorter (s).")
@click.option("--max-chunk", type=float, default=10.0, show_default=True, help="Split chunks longer (s).")
@click.option("--min-silence", type=float, default=0.3, show_default=True,
              help="Pauses shorter than this (s) do not end a chunk.")
@click.option("--vad-threshold", type=float, default=0.5, show_default=True, help="Speech probability threshold.")
@click.option("--timeline", type=file_path,
              help="Draw the emotion timeline of the (one) input recording to this .png file.")
@click.option("--utt2spk", type=existing_file,
              help="Speakers by input id (Kaldi utt2spk), for models with speaker normalisation.")
@click.option("--speaker-pattern", metavar="REGEX",
              help="Speaker = this regex's first group (or match) in each input id, e.g. 'wav/(..)' for EmoDB.")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1),
              help="Model windows per batch.")
@click.option("--device", help="cpu, cuda or cuda:N [default: cuda if available].")
@click.pass_context
def infer(ctx, model: Path, inputs: Tuple[str], out: Optional[Path], vote: Optional[str], window: Optional[float],
          hop: Optional[float], segment: str, vad_backend: str, min_chunk: float, max_chunk: float,
          min_silence: float, vad_threshold: float, timeline: Optional[Path], utt2spk: Optional[Path],
          speaker_pattern: Optional[str], batch_size: int, device: Optional[str]) -> None:
    """Run a packed MODEL on INPUTS: audio files, directories (searched recursively) or wav.scp files.

    Writes one row per file (or per chunk with --segment) with the decided label and every class
    posterior. Unreadable inputs, and inputs a decision would mean nothing for (shorter than one analysis
    window, digitally silent, no speech found), are skipped: each gets a row saying why (CSV: the note column;
    JSON: "skipped"), a warning and a count, and the exit status is then 3. A truncated file is decided on
    what it holds, with a warning, a note on its rows and a count."""
    from sertk.data.table import read_table
    from sertk.errors import SertkError
    from sertk.inference.inferencer import Inferencer
    from sertk.inference.inputs import assign_speakers, expand_inputs
    from sertk.inference.output import check_output, output_format, write_output
    from sertk.inference.run import infer_recordings
    from sertk.inference.timeline import check_timeline
    from sertk.inference.vad import VadConfig

    output_format(out)   # a bad --out or --timeline (or somebody's file there) fails before any work
    check_output(out)
    if timeline is not None:
        check_timeline(timeline)
    # --min-chunk is the VAD's (shorter speech chunks dropped): fixed chunks keep every piece, whatever --max-chunk
    vad = VadConfig(vad_backend, vad_threshold, min_chunk if segment == "vad" else 0.0, max_chunk, min_silence)
    from sertk.device import check_device
    device = check_device(device) if device else None   # 'gpu', or cuda on a CPU-only torch: one line
    inf = Inferencer.from_file(model, device=device, batch_size=batch_size, rule=vote, window=window, hop=hop)
    recordings, skips = expand_inputs(inputs)
    if timeline is not None and len(recordings) != 1:
        raise SertkError(f"--timeline draws one recording, but the inputs hold {len(recordings)}")
    recordings, unmatched = assign_speakers(recordings, read_table(utt2spk) if utt2spk else None, speaker_pattern)
    if inf.normalization_mode == "speaker":
        known = sum(r.speaker is not None for r in recordings)
        log.info("the model normalises per speaker: %d of %d recording(s) have a speaker%s", known, len(recordings),
                 "" if known == len(recordings) else "; each of the others is its own speaker, normalised with "
                 "the training data's statistics where it has too few utterances or rows for statistics of its own "
                 "(the model's rule; --utt2spk / --speaker-pattern, or a utt2spk beside the wav.scp, give speakers)")
    elif unmatched or utt2spk or speaker_pattern:
        log.info("speakers are not used: the model's normalisation is '%s'", inf.normalization_mode)
    result = infer_recordings(inf, recordings, segment, vad, progress=not ctx.find_root().params.get("quiet"))
    result.skips = skips + result.skips
    for s in result.skips:
        log.warning("skipped %s: %s", s.id, s.reason)
    for s in result.truncated + result.band_limited:
        log.warning("%s: %s", s.id, s.reason)
    if not result.rows:
        raise SertkError(f"no results: all {len(recordings) + len(skips)} input(s) were skipped")
    header = {"model": str(model), "source": inf.packed.meta["source"]["exp_dir"], "rule": inf.rule,
              "segment": segment, "vad": result.vad_backend, "settings": _settings(inf, segment, vad)}
    if inf.features.preprocess.active:   # the model's own preprocessing (e.g. a fixed length) cuts by design: say so
        from sertk.features.cli import preprocess_lines
        header["preprocess"] = inf.preprocess_stats.summary(inf.sample_rate)
        for line in preprocess_lines(header["preprocess"]):
            log.info(line.strip())
    text = write_output(out, result, inf.classes, header)
    if out is None:
        click.echo(text, nl=False)
    if timeline is not None:
        from sertk.inference.timeline import draw_timeline
        draw_timeline(result.rows, inf.classes, result.audio_seconds, timeline, title=recordings[0].id)
    files = len({r.id for r in result.rows})
    log.info("%d row(s) for %d recording(s), %.1f s of audio%s%s; %d input(s) skipped%s%s%s", len(result.rows), files,
             result.audio_seconds, f" -> {out}" if out else "",
             f" ({result.dropped_chunks} chunk(s) shorter than {min_chunk} s dropped)" if result.dropped_chunks else "",
             len(result.skips), _skip_counts(result.skips),
             f"; {len(result.truncated)} truncated file(s) decided on what they hold" if result.truncated else "",
             f"; {len(result.band_limited)} file(s) recorded below the model's {inf.sample_rate} Hz, decided upsampled"
             if result.band_limited else "")
    if result.skips:
        ctx.exit(EXIT_SKIPPED)


def _settings(inf, segment: str, vad) -> dict:
    """What decided the rows beyond the model itself, so that a JSON table can be reproduced: the model
    windows (after --window / --hop), the chunking options of --segment, the speaker normalisation rule."""
    windows = inf.segments
    settings = {"window": windows.length, "hop": windows.hop if windows.length is not None else None,
                "tail": windows.tail, "normalization": inf.normalization_mode}
    if inf.normalization_mode == "speaker":
        # one value (features.speaker_min_utts) per stream; not recorded when 1 (and by packs from before the
        # rule, which apply 1: sertk.features.cmvn)
        values = {st.get("min_utts", 1) for st in inf.packed.normalization.get("streams", {}).values()}
        settings["speaker_min_utts"] = values.pop() if len(values) == 1 else sorted(values, key=str)
    if segment == "vad":
        settings["chunks"] = {"threshold": vad.threshold, "min_chunk": vad.min_chunk, "max_chunk": vad.max_chunk,
                              "min_silence": vad.min_silence, "pad": vad.pad}
    elif segment == "fixed":
        settings["chunks"] = {"max_chunk": vad.max_chunk}
    return settings


def _skip_counts(skips) -> str:
    """' (2 too short, 1 silent, 3 other)': the skips by kind, when any is too short or silent."""
    kinds = {"too short": 0, "silent": 0, "other": 0}
    for s in skips:
        kind = s.reason.split(":", 1)[0]
        kinds[kind if kind in kinds else "other"] += 1
    if not kinds["too short"] and not kinds["silent"]:
        return ""
    return " (" + ", ".join(f"{n} {kind}" for kind, n in kinds.items() if n) + ")"
