"""Results of one model on one protocol: every fold scored, pooled and averaged, in RESULTS.md.

`collect(exp/<protocol>/<model>)` scores each `fold<k>/decode_test/` against its test data dir,
then reports two summaries of the folds:

- pooled: all folds' test predictions together (the confusion matrices summed), one number each;
- mean +- std over folds: the sample standard deviation (ddof=1); with one fold, std is null.

A fold without a decode dir is listed as missing (and logged as a warning); the summaries then
cover fewer folds, and RESULTS.md says so next to them.

A fold whose hyper-parameters were chosen on dev by a grid (`fold<k>/grid.yaml`, sertk.train.grid)
has its choice recorded: `dev_selection` in metrics.json and a "Dev-selected hyper-parameters" table
in RESULTS.md (fold, chosen values, dev score, points tried). The test scores are those of the chosen
point, as for any fold.

Each fold's `decode.yaml` says what to score against: `data_dir` (the test data dir), or else
`protocol_dir` (then `<protocol_dir>/fold<k>/test`). `protocol_dir` also gives the protocol card.
Relative paths are tried from the current folder, then from each folder above the decode dir
(recipes write them relative to `egs/<corpus>/`).

The folds are scored, pooled and averaged by sertk.results_folds; RESULTS.md is written by
sertk.results_md; this module writes the outputs, the pooled confusion picture among them.
"""
import json
from pathlib import Path

from sertk.fsutil import atomic_write_text
from sertk.results_folds import (
    DECODE_SUBDIR,
    ENV_FILE,
    SUMMARY_KEYS,
    collect_scores,
    find_fold_dirs,
    mean_std,
    resolve_path,
)
from sertk.results_md import results_markdown, summary_markdown
from sertk.score_picture import save_confusion_png

# the public face of `sertk results`: sertk.score_cli, sertk.inference.pack and the tests import these from
# here (listed, so that the re-exported ones count as used)
__all__ = ["DECODE_SUBDIR", "ENV_FILE", "RESULTS_FILE", "SUMMARY_KEYS", "collect", "find_fold_dirs", "mean_std",
           "resolve_path", "results_markdown", "summary_markdown", "write_results"]

RESULTS_FILE = "RESULTS.md"


def collect(model_exp_dir, write: bool = True) -> dict:
    """Score every fold of `exp/<protocol>/<model>/`, pool and average; write RESULTS.md and metrics.json."""
    result = collect_scores(model_exp_dir)
    if write:
        write_results(Path(model_exp_dir), result)
    return result


def write_results(model_exp_dir: Path, result: dict) -> None:
    default = result["pooled"][f"utterance/{result['default_rule']}"]
    save_confusion_png(default["confusion"], default["classes"], model_exp_dir / "confusion.png",
                       title=f"{result['model']} on {result['protocol']}: pooled, rule {result['default_rule']}")
    atomic_write_text(model_exp_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(model_exp_dir / RESULTS_FILE, results_markdown(result))
