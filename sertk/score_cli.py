"""`sertk score` (one decode dir, or plain hyp/ref files) and `sertk results` (collect, keep, dev: all folds)."""
from pathlib import Path
from typing import Optional

import click

from sertk.cli_types import any_path, existing_dir
from sertk.results import DECODE_SUBDIR, RESULTS_FILE, collect, summary_markdown
from sertk.score import (
    SCORING_DIR,
    confusion_text,
    per_class_text,
    score_decode_dir,
    score_files,
    score_hyp_against_data,
    summary_text,
)


def _echo_metrics(m: dict) -> None:
    """Per-class numbers, the confusion matrix and any notes of one metrics dict."""
    click.echo(per_class_text(m))
    click.echo(confusion_text(m["confusion"], m["classes"]))
    for note in m["notes"]:
        click.echo(f"note: {note}")


@click.command("score")
@click.argument("decode_dir", required=False, type=any_path)
@click.option("--data", "data_dir", type=any_path,
              help="The data dir that was decoded (references in utt2emo, classes in labels.yaml).")
@click.option("--hyp", type=any_path, help="Plain hypothesis file, exactly `<utt> <class>` per line (any system).")
@click.option("--ref", type=any_path, help="Plain reference file, exactly `<utt> <class>` per line.")
@click.option("--labels", type=any_path,
              help="labels.yaml giving the classes and their order for --hyp/--ref [default: the classes of --ref].")
def score(decode_dir: Optional[Path], data_dir: Optional[Path], hyp: Optional[Path], ref: Optional[Path],
          labels: Optional[Path]) -> None:
    """Score DECODE_DIR against --data (every voting rule and the segments), or --hyp against --data or --ref.

    \b
    sertk score exp/loso/crnn/fold1/decode_test --data data/loso/fold1/test
    sertk score --hyp hyp --data data/loso/fold1/test
    sertk score --hyp hyp --ref ref [--labels labels.yaml]

    Decode dir scoring writes DECODE_DIR/scoring/{metrics.json,confusion.txt,confusion.png}. A hypothesis
    class outside the known classes is an error: those of the data dir's labels.yaml, of --labels, or else
    of --ref.
    """
    if decode_dir is not None:
        if data_dir is None or hyp or ref or labels:
            raise click.UsageError("DECODE_DIR needs --data DATA_DIR (and no --hyp/--ref/--labels)")
        result = score_decode_dir(decode_dir, data_dir)
        click.echo(summary_text(result))
        click.echo(f"utterance level, rule {result['default_rule']}:")
        _echo_metrics(result["utterance"][result["default_rule"]])
        click.echo(f"wrote {Path(result['decode_dir']) / SCORING_DIR}/")
    elif hyp is not None and (ref is None) != (data_dir is None) and (labels is None or ref is not None):
        m = score_files(hyp, ref, labels) if ref is not None else score_hyp_against_data(hyp, data_dir)
        click.echo(f"WA {100 * m['wa']:.2f}  UA {100 * m['ua']:.2f}  macro-F1 {100 * m['macro_f1']:.2f}  "
                   f"N {m['num_utts']}")
        _echo_metrics(m)
    else:
        raise click.UsageError("give DECODE_DIR --data DATA_DIR, --hyp FILE --data DATA_DIR, or --hyp FILE --ref FILE "
                               "[--labels LABELS.yaml]")


@click.group()
def results() -> None:
    """Results across the folds of a protocol."""


@results.command("collect")
@click.argument("model_exp_dir", type=existing_dir)
def collect_cmd(model_exp_dir: Path) -> None:
    """Score every MODEL_EXP_DIR/fold<k>/decode_test, pool and average over folds; write RESULTS.md.

    Also writes MODEL_EXP_DIR/metrics.json and confusion.png, and each fold's scoring/ dir.
    """
    result = collect(model_exp_dir)
    click.echo(summary_markdown(result))
    click.echo(f"wrote {model_exp_dir / RESULTS_FILE} ({len(result['folds'])} fold(s) of "
               f"{model_exp_dir}/fold*/{DECODE_SUBDIR})")


@results.command("keep")
@click.argument("model_exp_dir", type=existing_dir)
@click.argument("dest", type=any_path)
def keep_cmd(model_exp_dir: Path, dest: Path) -> None:
    """Copy the record of every finished, decoded fold of MODEL_EXP_DIR to DEST, without checkpoints.

    Each DEST/fold<k>/ gets the fold's config, environment, train.log, decode dirs, grid or refit record and,
    for its last.pt, last.yaml (the bookkeeping without tensors). Folds still training or not yet decoded are
    left out. Nothing is overwritten: a different file already in DEST stops the command before it writes.
    Copy kept folds back beside the ones trained later (`sertk results keep DEST MODEL_EXP_DIR`), then
    `sertk results collect MODEL_EXP_DIR` pools them all; a kept fold cannot be trained or decoded again.
    """
    from sertk.results_keep import keep_folds
    outcome = keep_folds(model_exp_dir, dest)
    for k, what in outcome.items():
        click.echo(f"fold{k}: {what}")
    click.echo(f"kept {sum(w == 'kept' for w in outcome.values())} of {len(outcome)} fold(s) in {dest}")


@results.command("dev")
@click.argument("exp_dirs", nargs=-1, required=True, type=existing_dir)
@click.option("--losses", is_flag=True,
              help="Instead: each run's folds one per row, with the lowest dev loss and the dev and training "
                   "losses at the best and the last epoch (what limits a run, on dev).")
def dev_cmd(exp_dirs, losses) -> None:
    """The best dev score of every fold of each run in EXP_DIRS, side by side, to choose between variants.

    Each EXP_DIR is a model's exp dir (its fold<k>/ dirs) or one fold's. Reads only training's records
    (last.pt, grid.yaml), never a decode dir: nothing here looks at test. Unfinished folds show their best
    so far and stay out of the mean, which covers the folds every run has finished.
    """
    if losses:
        from sertk.results_fit import fit_tables
        click.echo(fit_tables([Path(d) for d in exp_dirs]))
        return
    from sertk.results_dev import dev_table
    click.echo(dev_table([Path(d) for d in exp_dirs]))
