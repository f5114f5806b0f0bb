"""`sertk data ...`: prepare, validate, fix, subset, combine, split, folds, cross, check."""
import sys
from pathlib import Path
from typing import Optional, Tuple

import click

from sertk.cli_types import any_path, dir_path, existing_dir, existing_file
from sertk.data.check import check_protocol
from sertk.data.corpora import SCANNERS, import_csv, prepare_corpus
from sertk.data.cross import dropped_text, load_class_mapping, make_cross_protocol
from sertk.data.datadir import SPLIT_PART_FILES, DataDir, owns_data_dir
from sertk.data.download import SOURCES, fetch_corpus
from sertk.data.fix import fix_dir
from sertk.data.labels import load_label_map
from sertk.data.ops import combine, read_id_list, split_by_speaker, subset
from sertk.data.prepare import PrepareReport, class_count_table
from sertk.data.protocols import PROTOCOLS, make_folds, owns_protocol_dir
from sertk.data.validate import AUDIO_CHECKS, validate as validate_data
from sertk.errors import DataDirError, ProtocolError
from sertk.fsutil import atomic_output_dir, check_replaceable, owned_by


@click.group()
def data() -> None:
    """Kaldi-style data directories: prepare corpora, check and edit data dirs, make protocols."""


@data.command()
@click.argument("datadir", type=any_path)
@click.option("--labels", type=any_path,
              help="Label map to check against [default: DIR/labels.yaml].")
@click.option("--audio", type=click.Choice(AUDIO_CHECKS), default="header", show_default=True,
              help="How hard to check wav.scp: not at all, that files exist, that they open as audio, or "
                   "'samples': decode every file (non-finite samples are problems; truncated, too short and "
                   "silent files are warnings, counted).")
def validate(datadir: Path, labels: Optional[Path], audio: str) -> None:
    """List every problem of DATADIR with file and line; exit 0 only when it is clean (and not empty)."""
    label_map = load_label_map(labels) if labels else None
    checked = validate_data(datadir, labels=label_map, audio=audio, require_utterances=True)
    for p in checked.problems:
        click.echo(str(p))
    for w in checked.warnings:
        click.echo(f"warning: {w}")
    decoded = ""
    if audio == "samples":
        counts = ", ".join(f"{checked.counts.get(k, 0)} {k}" for k in ("truncated", "too short", "silent"))
        decoded = f"; audio samples checked: {checked.decoded} file(s) decoded, {counts}"
    if checked.problems:
        raise DataDirError(f"{datadir}: {len(checked.problems)} problem(s){decoded}")
    dd = DataDir.load(datadir, labels=label_map, audio="none")
    click.echo(f"{datadir}: OK ({len(dd.utts)} utterances, {len(dd.speakers)} speakers, "
               f"{len(dd.labels.classes)} classes{decoded})")


@data.command()
@click.argument("datadir", type=existing_dir)
def fix(datadir: Path) -> None:
    """Sort files, drop duplicates and utterances missing from any file, rebuild spk2utt.

    Every file that changes is first copied to DATADIR/.backup/<time>/.
    """
    report = fix_dir(datadir)
    for reason, n in sorted(report.dropped.items()):
        click.echo(f"dropped {n} utterance(s): {reason}")
    if report.changed:
        click.echo(f"rewrote {', '.join(report.changed)}; originals in {report.backup}")
    else:
        click.echo("nothing to fix")
    click.echo(f"{datadir}: {report.kept} utterances")


@data.command("subset")
@click.argument("src", type=existing_dir)
@click.argument("out", type=dir_path)
@click.option("--utt-list", type=existing_file,
              help="File of utterance ids, one per line.")
@click.option("--speakers", help="Comma-separated speaker ids.")
@click.option("--first", type=int, help="The first N utterances (sorted order).")
@click.option("--last", type=int, help="The last N utterances (sorted order).")
def subset_cmd(src: Path, out: Path, utt_list, speakers, first, last) -> None:
    """Write the part of SRC chosen by exactly one selector to OUT."""
    _check_output(out, [src])
    dd = DataDir.load(src)
    part = subset(dd, utt_list=read_id_list(utt_list) if utt_list else None,
                  speakers=[s for s in speakers.split(",") if s] if speakers else None, first=first, last=last)
    part.save(out)
    click.echo(f"{out}: {len(part.utts)} utterances, {len(part.speakers)} speakers")


@data.command("combine")
@click.argument("out", type=dir_path)
@click.argument("srcs", nargs=-1, required=True, type=existing_dir)
def combine_cmd(out: Path, srcs: Tuple[Path, ...]) -> None:
    """Combine the data dirs SRCS into OUT (utterance ids must not repeat)."""
    _check_output(out, srcs)
    combined = combine([DataDir.load(s) for s in srcs], [str(s) for s in srcs])
    combined.save(out)
    click.echo(f"{out}: {len(combined.utts)} utterances, {len(combined.speakers)} speakers")


@data.command("split")
@click.argument("src", type=existing_dir)
@click.argument("num_parts", type=int)
@click.option("--out", type=dir_path, help="Where the parts go [default: SRC/split<N>].")
def split_cmd(src: Path, num_parts: int, out: Optional[Path]) -> None:
    """Split SRC into NUM_PARTS data dirs by speaker (OUT/1 ... OUT/N), for parallel jobs."""
    out = out or src / f"split{num_parts}"
    owns_parts = owned_by(SPLIT_PART_FILES)
    check_replaceable(out, "split dir", owns_parts)
    parts = split_by_speaker(DataDir.load(src), num_parts)
    with atomic_output_dir(out, "split dir", owns_parts) as tmp:
        for i, part in enumerate(parts, start=1):
            (tmp / str(i)).mkdir()
            part.write_into(tmp / str(i))
    click.echo(f"{out}: " + ", ".join(f"{i}: {len(p.utts)} utts" for i, p in enumerate(parts, start=1)))


def _check_output(out: Path, srcs, kind: str = "data dir", owns=owns_data_dir) -> None:
    """Before any work: the output is replaced whole, so it must neither be an input nor hold one, nor hold
    anything that this kind of output does not (the write checks that again)."""
    for src in srcs:
        if Path(src).resolve().is_relative_to(out.resolve()):
            raise DataDirError(f"{out}: the output would replace the input {src}; choose another output")
    check_replaceable(out, kind, owns)


# --- corpus preparation -------------------------------------------------------------------------

class _PrepareGroup(click.Group):
    """The corpora with options of their own have a command below; every other preparer registered in
    `sertk.data.corpora.SCANNERS` gets a plain one (--root, --out, --labels, --skip-bad-audio), so that a new
    corpus needs no CLI code."""

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(SCANNERS))

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None and name in SCANNERS:
            command = _plain_prepare_command(name)
        return command


def _plain_prepare_command(corpus: str) -> click.Command:
    scanner = SCANNERS[corpus]
    about = (scanner.__doc__ or sys.modules[scanner.__module__].__doc__ or "").strip().split("\n")[0]

    def run(**kwargs) -> None:
        _run_prepare(corpus, **kwargs)
    return click.command(corpus, help=about or f"{corpus} from its release folder.")(_prepare_options(run))


@data.group(cls=_PrepareGroup)
def prepare() -> None:
    """Prepare a data dir from a corpus release: `sertk data prepare CORPUS --root PATH --out DIR`."""


def _prepare_options(fn):
    fn = click.option("--skip-bad-audio", is_flag=True,
                      help="Skip missing or unreadable audio files with a count instead of stopping.")(fn)
    fn = click.option("--labels", type=any_path,
                      help="Label map (labels.yaml) [default: the corpus's own].")(fn)
    fn = click.option("--out", required=True, type=dir_path, help="Data dir to write.")(fn)
    fn = click.option("--root", required=True, type=any_path, help="The corpus release folder.")(fn)
    return fn


def _run_prepare(corpus: str, root: Path, out: Path, labels: Optional[Path], skip_bad_audio: bool,
                 **options) -> None:
    _check_output(out, [])
    report = prepare_corpus(corpus, root, out, labels=load_label_map(labels) if labels else None,
                            skip_bad_audio=skip_bad_audio, **options)
    _print_report(corpus, out, report)


def _print_report(name: str, out: Path, report: PrepareReport) -> None:
    dd = report.datadir
    click.echo(f"{name}: {len(dd.utts)} utterances, {len(dd.speakers)} speakers, "
               f"{len(dd.labels.classes)} classes -> {out}")
    for reason, n in sorted(report.skipped.items()):
        click.echo(f"skipped {n}: {reason}")
    if report.dropped:
        click.echo("dropped by the label map: " + ", ".join(f"{raw} {n}" for raw, n in sorted(report.dropped.items())))
    click.echo(class_count_table(dd))


@prepare.command()
@_prepare_options
def emodb(**kwargs) -> None:
    """EmoDB from <root>/wav/*.wav (or the wav folder itself): 7 classes."""
    _run_prepare("emodb", **kwargs)


@prepare.command()
@_prepare_options
def ravdess(**kwargs) -> None:
    """RAVDESS speech from <root>/Actor_XX/03-01-*.wav: 8 classes, intensity in utt2intensity."""
    _run_prepare("ravdess", **kwargs)


@prepare.command()
@_prepare_options
@click.option("--improvised-only", is_flag=True, help="Keep only the improvised dialogs.")
@click.option("--drop-exc", is_flag=True, help="Drop 'excited' instead of merging it into happiness.")
def iemocap(**kwargs) -> None:
    """IEMOCAP from IEMOCAP_full_release/: 4 classes, excited merged into happiness."""
    _run_prepare("iemocap", **kwargs)


@prepare.command("msp_improv")
@_prepare_options
def msp_improv(**kwargs) -> None:
    """MSP-IMPROV from its release folder (Evaluation.txt + session audio): 4 classes."""
    _run_prepare("msp_improv", **kwargs)


@data.command("import")
@click.option("--csv", "csv_path", required=True, type=any_path,
              help="CSV with columns path,label,speaker and optional session,gender,utt_id (paths relative to "
                   "the CSV).")
@click.option("--out", required=True, type=dir_path, help="Data dir to write.")
@click.option("--labels", type=any_path, help="Label map [default: one class per distinct label].")
@click.option("--corpus", help="Corpus name for protocol cards.")
@click.option("--skip-bad-audio", is_flag=True, help="Skip missing or unreadable audio with a count.")
def import_cmd(csv_path: Path, out: Path, labels: Optional[Path], corpus: Optional[str], skip_bad_audio: bool) -> None:
    """Any other corpus: a data dir from a CSV file."""
    _check_output(out, [])
    report = import_csv(csv_path, out, labels=load_label_map(labels) if labels else None, corpus=corpus,
                        skip_bad_audio=skip_bad_audio)
    _print_report(corpus or csv_path.name, out, report)


@data.command()
@click.argument("corpus", type=click.Choice(sorted(SOURCES)))
@click.option("--dest", required=True, type=dir_path, help="Folder for the zip and the extracted corpus.")
@click.option("--url", help="Another address for the official zip (a mirror).")
@click.option("--zip", "zip_path", type=existing_file,
              help="Use this already downloaded zip.")
def download(corpus: str, dest: Path, url: Optional[str], zip_path: Optional[Path]) -> None:
    """Download a public corpus, extract it safely and verify every file; print its root."""
    click.echo(fetch_corpus(corpus, dest, url=url, zip_path=zip_path))


# --- protocols ----------------------------------------------------------------------------------

@data.command()
@click.argument("datadir", type=existing_dir)
@click.option("--protocol", required=True, type=click.Choice(list(PROTOCOLS)), help="The fold scheme.")
@click.option("--out", required=True, type=dir_path, help="Protocol dir to write.")
@click.option("--corpus", help="Corpus name for the card [default: from labels.yaml].")
@click.option("--num-folds", type=int, help="random_kfold only [default: 10].")
@click.option("--seed", type=int, help="random_kfold and loso_dev_share [default: 0].")
@click.option("--dev-share", type=float, help="loso_dev_share only: the share of each training speaker's "
              "utterances (per class) held out as dev [default: 0.2].")
def folds(datadir: Path, protocol: str, out: Path, corpus, num_folds, seed, dev_share) -> None:
    """Write utt2fold, fold<k>/{train,dev,test} and the protocol card protocol.yaml."""
    options = {k: v for k, v in (("num_folds", num_folds), ("seed", seed), ("dev_share", dev_share)) if v is not None}
    allowed = {"random_kfold": {"num_folds", "seed"}, "loso_dev_share": {"dev_share", "seed"}}.get(protocol, set())
    if set(options) - allowed:
        option = "--" + sorted(set(options) - allowed)[0].replace("_", "-")
        raise ProtocolError(f"{option} does not apply to {protocol} (--num-folds: random_kfold; --seed: random_kfold, "
                            "loso_dev_share; --dev-share: loso_dev_share)")
    _check_output(out, [datadir], "protocol dir", owns_protocol_dir)
    card = make_folds(DataDir.load(datadir), protocol, out, corpus=corpus, source=str(datadir.resolve()), **options)
    kind = ("speaker-DEPENDENT" if not card["speaker_independent"] else
            "test speakers unseen, dev from the training speakers" if card.get("dev_from_training_speakers")
            else "speaker-independent")
    click.echo(f"{out}: {protocol}, {card['num_folds']} folds, {kind}; dev: {card['dev_policy']}")


@data.command()
@click.argument("source_dir", type=existing_dir)
@click.argument("target_dir", type=existing_dir)
@click.option("--map", "map_path", required=True, type=any_path,
              help="Class mapping onto the shared classes (conf/cross/<source>_to_<target>.yaml).")
@click.option("--out", required=True, type=dir_path, help="Protocol dir to write.")
@click.option("--dev-speakers", help="Comma-separated source speakers for dev [default: the last sixth].")
@click.option("--verify", is_flag=True,
              help="Write nothing: check that OUT was made with this mapping (a recipe rerun after the mapping "
                   "file changed would otherwise keep the old protocol).")
def cross(source_dir: Path, target_dir: Path, map_path: Path, out: Path, dev_speakers: Optional[str],
          verify: bool) -> None:
    """A cross-corpus protocol: train and dev on SOURCE_DIR, test on all of TARGET_DIR.

    \b
    sertk data cross data/all data/emodb_all --map conf/cross/ravdess_to_emodb.yaml --out data/cross_emodb

    Both corpora are relabelled onto the mapping's shared classes; utterances of other classes are
    left out and counted. One fold, written like `sertk data folds` writes its folds.
    """
    mapping = load_class_mapping(map_path)
    if verify:
        from sertk.data.protocols import load_card
        made = {k: v for k, v in (load_card(out).get("class_map") or {}).items() if k != "file"}
        wanted = {k: v for k, v in mapping.to_dict().items() if k != "file"}
        if made != wanted:
            raise ProtocolError(f"{out} was made with another class mapping than {map_path} (now: classes "
                                f"{wanted['classes']}); remove {out} to make it again")
        click.echo(f"{out}: made with the mapping of {map_path}")
        return
    _check_output(out, [source_dir, target_dir], "protocol dir", owns_protocol_dir)
    card = make_cross_protocol(DataDir.load(source_dir), DataDir.load(target_dir), mapping, out,
                               dev_speakers=dev_speakers.split(",") if dev_speakers else None,
                               source_path=str(source_dir.resolve()), target_path=str(target_dir.resolve()))
    for side in ("source", "target"):
        click.echo(f"{getattr(mapping, side)} ({side}): {dropped_text(card['dropped'][side])}")
    n = card["folds"][0]["num_utts"]
    click.echo(f"{out}: {card['corpus']} on {list(mapping.classes)}: train {n['train']}, dev {n['dev']}, "
               f"test {n['test']} utterances; dev: {card['dev_policy']}")


@data.command()
@click.argument("protocol_dir", type=existing_dir)
@click.option("--audio", type=click.Choice(["samples", "paths"]), default="samples", show_default=True,
              help="How audio shared between splits is found: same path or same decoded samples (every file "
                   "is decoded once), or same path only.")
def check(protocol_dir: Path, audio: str) -> None:
    """Prove the folds of PROTOCOL_DIR are speaker-disjoint, share no audio between splits and still hold the
    labels and paths they were made with; print class counts per split."""
    report = check_protocol(protocol_dir, audio=audio)
    card = report.card
    click.echo(f"{card['protocol']} on {card.get('corpus', '?')}: {card['num_folds']} folds; "
               f"dev: {card.get('dev_policy', '?')}")
    click.echo(report.table)
    if report.audio:
        click.echo(report.audio)
    for w in report.warnings:
        click.echo(f"WARNING: {w}")
    for p in report.problems:
        click.echo(f"PROBLEM: {p}")
    if report.problems:
        raise ProtocolError(f"{protocol_dir}: {len(report.problems)} problem(s)")
    if not card.get("tests_every_utterance", True):
        click.echo("OK: train, dev and test share no speaker and no utterance; every test utterance is "
                   "tested exactly once")
    elif card["speaker_independent"] and card.get("dev_from_training_speakers"):
        click.echo("OK: in every fold, the test speaker is in neither train nor dev, dev is a share of the training "
                   "speakers' utterances (by design), no utterance is in two splits; every utterance is tested "
                   "exactly once")
    elif card["speaker_independent"]:
        click.echo("OK: in every fold, train, dev and test share no speaker and no utterance; "
                   "every utterance is tested exactly once")
    else:
        click.echo("OK (speaker-DEPENDENT protocol): speakers are shared between train, dev and test by design; "
                   "utterances are disjoint and every utterance is tested exactly once")
