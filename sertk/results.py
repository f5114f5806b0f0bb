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

Those three files are replaced only when an earlier collect wrote them: RESULTS.md by its heading and
sections, metrics.json by its keys, confusion.png by its PNG Software text (or, as sertk wrote it before it
had one, a bare Pillow PNG beside collect's metrics.json). Anything else under those names is somebody's
file: the command stops before it writes anything.
"""
import json
from pathlib import Path

from sertk.fsutil import atomic_write_text, check_file_replaceable, png_chunks, png_software
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
__all__ = ["DECODE_SUBDIR", "ENV_FILE", "RESULTS_FILE", "SUMMARY_KEYS", "check_results_outputs", "collect",
           "find_fold_dirs", "mean_std", "resolve_path", "results_markdown", "summary_markdown", "write_results"]

RESULTS_FILE = "RESULTS.md"
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion.png"
SOFTWARE = "sertk results collect"     # confusion.png's PNG Software text
# what every metrics.json collect wrote holds (sertk.results_folds.collect_scores)
_METRICS_KEYS = ("model_exp_dir", "model", "protocol", "default_rule", "pooled", "fold_mean_std", "per_fold")
_RESULTS_LINES = ("## Protocol card", "## Summary")   # below its first line, "# RESULTS: <model> on <protocol>"
_LEGACY_PNG = (b"IHDR", b"IDAT", b"IEND")   # the chunks of Pillow's plain PNG, as collect wrote it before


def collect(model_exp_dir, write: bool = True) -> dict:
    """Score every fold of `exp/<protocol>/<model>/`, pool and average; write RESULTS.md and metrics.json."""
    if write:
        check_results_outputs(Path(model_exp_dir))   # before the folds' scoring is written
    result = collect_scores(model_exp_dir)
    if write:
        write_results(Path(model_exp_dir), result)
    return result


def write_results(model_exp_dir: Path, result: dict) -> None:
    check_results_outputs(model_exp_dir)
    default = result["pooled"][f"utterance/{result['default_rule']}"]
    save_confusion_png(default["confusion"], default["classes"], model_exp_dir / CONFUSION_FILE,
                       title=f"{result['model']} on {result['protocol']}: pooled, rule {result['default_rule']}",
                       software=SOFTWARE)
    atomic_write_text(model_exp_dir / METRICS_FILE, json.dumps(result, indent=2) + "\n")
    atomic_write_text(model_exp_dir / RESULTS_FILE, results_markdown(result))


def check_results_outputs(model_exp_dir: Path) -> None:
    """Raise `OutputError` when RESULTS.md, metrics.json or confusion.png in `model_exp_dir` exists and is not
    what an earlier collect wrote (one line naming it)."""
    hint = "move it away, then collect again"
    check_file_replaceable(model_exp_dir / RESULTS_FILE, f"a {RESULTS_FILE} written by sertk results collect",
                           _is_results_md, hint)
    check_file_replaceable(model_exp_dir / METRICS_FILE, f"a {METRICS_FILE} written by sertk results collect",
                           _is_metrics_json, hint)
    check_file_replaceable(model_exp_dir / CONFUSION_FILE, f"a {CONFUSION_FILE} drawn by sertk results collect",
                           _is_confusion_png, hint)


def _is_results_md(path: Path) -> bool:
    lines = path.read_text(encoding="utf-8").splitlines()
    return bool(lines) and lines[0].startswith("# RESULTS: ") and all(line in lines for line in _RESULTS_LINES)


def _is_metrics_json(path: Path) -> bool:
    doc = json.loads(path.read_text(encoding="utf-8"))
    return isinstance(doc, dict) and all(key in doc for key in _METRICS_KEYS)


def _is_confusion_png(path: Path) -> bool:
    if png_software(path) == SOFTWARE:
        return True
    chunks = png_chunks(path)
    metrics = path.parent / METRICS_FILE
    return chunks is not None and {kind for kind, _ in chunks} == set(_LEGACY_PNG) and \
        chunks[0][0] == b"IHDR" and metrics.is_file() and _is_metrics_json(metrics)
