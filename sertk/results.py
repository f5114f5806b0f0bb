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
"""
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from sertk.data.cross import dropped_text
from sertk.data.protocols import CARD_FILE, load_card
from sertk.decode import is_decode_dir
from sertk.envinfo import environment, environment_markdown
from sertk.errors import ProtocolError, ScoreError
from sertk.fsutil import atomic_write_text
from sertk.score import (
    SEGMENT,
    confusion_text,
    metrics_from_confusion,
    pct,
    per_class_text,
    save_confusion_png,
    score_decode_dir,
)
from sertk.yamlutil import read_yaml_file

logger = logging.getLogger(__name__)

DECODE_SUBDIR = "decode_test"
RESULTS_FILE = "RESULTS.md"
ENV_FILE = "environment.yaml"
GRID_FILE = "grid.yaml"          # a fold's hyper-parameter grid and its choice on dev (sertk.train.grid)
SUMMARY_KEYS = (("wa", "WA"), ("ua", "UA"), ("macro_f1", "macro-F1"))
STD_RULE = "sample standard deviation over folds (ddof=1); null with a single fold"
_FOLD_RE = re.compile(r"fold(\d+)$")


@dataclass
class FoldScore:
    number: int
    exp_dir: Path
    score: dict        # what score_decode_dir returns
    info: dict         # the fold's decode.yaml

    @property
    def name(self) -> str:
        return f"fold{self.number}"


# --- finding and scoring folds ----------------------------------------------------------------------


def find_fold_dirs(model_exp_dir: Path) -> Dict[int, Path]:
    """fold number -> `fold<k>/` dir, in numeric order (fold10 after fold9)."""
    found = {int(m.group(1)): p for p in model_exp_dir.iterdir()
             if p.is_dir() and (m := _FOLD_RE.fullmatch(p.name))}
    return dict(sorted(found.items()))


def resolve_path(value: str, near: Path) -> Path:
    """`value` as given if it exists (absolute, or relative to the current folder), else relative to
    the first folder above `near` where it exists; unchanged if it exists nowhere."""
    path = Path(value)
    if path.is_absolute() or path.exists():
        return path
    for parent in near.resolve().parents:
        if (parent / path).exists():
            return parent / path
    return path


def _read_yaml(path: Path) -> dict:
    return read_yaml_file(path, ScoreError)


def _protocol_dir_of(decode_dir: Path, info: dict) -> Optional[Path]:
    """decode.yaml's `protocol_dir`, resolved; a path to the protocol.yaml itself is taken as its folder."""
    if not info.get("protocol_dir"):
        return None
    path = resolve_path(str(info["protocol_dir"]), decode_dir)
    return path.parent if path.is_file() else path


def _data_dir_of(decode_dir: Path, info: dict, fold: int) -> Path:
    if info.get("data_dir"):
        return resolve_path(str(info["data_dir"]), decode_dir)
    protocol_dir = _protocol_dir_of(decode_dir, info)
    if protocol_dir is not None:
        return protocol_dir / f"fold{fold}" / "test"
    raise ScoreError(f"{decode_dir}/decode.yaml: names neither 'data_dir' nor 'protocol_dir', "
                     "so there is no test data dir to score against")


def score_fold(number: int, fold_dir: Path) -> FoldScore:
    decode_dir = fold_dir / DECODE_SUBDIR
    info = _read_yaml(decode_dir / "decode.yaml") if (decode_dir / "decode.yaml").is_file() else {}
    score = score_decode_dir(decode_dir, _data_dir_of(decode_dir, info, number))
    return FoldScore(number, fold_dir, score, info)


def _check_same_classes(folds: Sequence[FoldScore]) -> List[str]:
    classes = folds[0].score["classes"]
    for f in folds[1:]:
        if f.score["classes"] != classes:
            raise ScoreError(f"{f.exp_dir / DECODE_SUBDIR}: classes {f.score['classes']} differ from "
                             f"{folds[0].name}'s {classes}; folds cannot be pooled")
    return classes


def _default_rule(folds: Sequence[FoldScore]) -> str:
    rules = {f.name: f.score["default_rule"] for f in folds}
    if len(set(rules.values())) > 1:
        logger.warning(f"the folds were decoded with different default rules ({rules}); "
                       f"the summary marks {folds[0].name}'s")
    return folds[0].score["default_rule"]


def _common_rules(folds: Sequence[FoldScore]) -> List[str]:
    rules = list(folds[0].score["utterance"])
    return [r for r in rules if all(r in f.score["utterance"] for f in folds)]


# --- pooling and averaging --------------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> dict:
    values = np.asarray(values, dtype=np.float64)
    std = float(values.std(ddof=1)) if values.size > 1 else None
    return {"mean": float(values.mean()), "std": std, "num_folds": int(values.size)}


def _pool(per_fold: Sequence[dict], classes: List[str]) -> dict:
    return metrics_from_confusion(np.sum([m["confusion"] for m in per_fold], axis=0), classes)


def _fold_stats(per_fold: Sequence[dict]) -> dict:
    return {key: mean_std([m[key] for m in per_fold]) for key, _ in SUMMARY_KEYS}


def _short(m: dict) -> dict:
    return {"num_utts": m["num_utts"], **{key: m[key] for key, _ in SUMMARY_KEYS}}


def _levels(folds: Sequence[FoldScore], rules: List[str]) -> Dict[str, List[dict]]:
    """Level name ('utterance/<rule>' or 'segment') -> each fold's metrics at that level."""
    levels = {f"utterance/{rule}": [f.score["utterance"][rule] for f in folds] for rule in rules}
    levels[SEGMENT] = [f.score[SEGMENT] for f in folds]
    return levels


# --- the protocol card ------------------------------------------------------------------------------


def _load_card(fold: FoldScore) -> Optional[dict]:
    """The protocol card named by the fold's decode.yaml (`protocol_dir`), or None with a warning."""
    protocol_dir = _protocol_dir_of(fold.exp_dir / DECODE_SUBDIR, fold.info)
    if protocol_dir is None:
        return None
    try:
        card = load_card(protocol_dir)
    except ProtocolError as e:
        logger.warning(f"no protocol card: {e}")
        return None
    return {**card, "card_file": str(protocol_dir / CARD_FILE)}


def _environment_of(fold: FoldScore) -> Optional[dict]:
    path = fold.exp_dir / ENV_FILE
    return _read_yaml(path) if path.is_file() else None


def dev_selection(number: int, fold_dir: Path) -> Optional[dict]:
    """The hyper-parameters the fold's grid chose on dev (None: the fold had no grid)."""
    path = fold_dir / GRID_FILE
    if not path.is_file():
        return None
    doc = _read_yaml(path)
    points, chosen = doc.get("points"), doc.get("chosen")
    if not isinstance(points, list) or not isinstance(doc.get("grid"), dict) or \
            not (chosen is None or isinstance(chosen, dict)):
        raise ScoreError(f"{path}: not a grid record written by sertk train (grid, points, chosen)")
    out = {"fold": f"fold{number}", "grid_file": str(path), "grid": doc["grid"], "metric": doc.get("metric"),
           "points": len(points), "chosen": None, "point": None, "dev_score": None, "best_epoch": None,
           "dir": None}
    if chosen is not None:   # null: the grid has not finished
        out.update(chosen=chosen.get("values"), point=chosen.get("point"), dev_score=chosen.get("dev_score"),
                   best_epoch=chosen.get("best_epoch"), dir=str(fold_dir / str(chosen.get("dir"))))
    return out


# --- collect ----------------------------------------------------------------------------------------


def collect(model_exp_dir, write: bool = True) -> dict:
    """Score every fold of `exp/<protocol>/<model>/`, pool and average; write RESULTS.md and metrics.json."""
    model_exp_dir = Path(model_exp_dir)
    if not model_exp_dir.is_dir():
        raise ScoreError(f"{model_exp_dir}: no such experiment dir")
    fold_dirs = find_fold_dirs(model_exp_dir)
    folds = [score_fold(k, d) for k, d in fold_dirs.items() if is_decode_dir(d / DECODE_SUBDIR)]
    if not folds:
        raise ScoreError(f"{model_exp_dir}: no fold<k>/{DECODE_SUBDIR}/ decode dirs to collect "
                         f"({len(fold_dirs)} fold dir(s) found)")
    classes, rules = _check_same_classes(folds), _common_rules(folds)
    card = _load_card(folds[0])
    expected = set(fold_dirs) | set(range(1, int(card["num_folds"]) + 1) if card else ())
    missing = [f"fold{k}" for k in sorted(expected - {f.number for f in folds})]
    if missing:
        logger.warning(f"{model_exp_dir}: {len(missing)} of {len(expected)} fold(s) have no {DECODE_SUBDIR}/ "
                       f"({', '.join(missing)}); pooled and mean +- std cover the other {len(folds)}")
    levels = _levels(folds, rules)
    result = {
        "model_exp_dir": str(model_exp_dir),
        "model": model_exp_dir.resolve().name,
        "protocol": card["protocol"] if card else model_exp_dir.resolve().parent.name,
        "card": card,
        "decode_info": folds[0].info,
        "classes": classes,
        "default_rule": _default_rule(folds),
        "rules": rules,
        "folds": [f.name for f in folds],
        "missing_folds": missing,
        "std": STD_RULE,
        "pooled": {level: _pool(ms, classes) for level, ms in levels.items()},
        "fold_mean_std": {level: _fold_stats(ms) for level, ms in levels.items()},
        "per_fold": [{"fold": f.name, "decode_dir": f.score["decode_dir"],
                      **{level: _short(ms[i]) for level, ms in levels.items()}} for i, f in enumerate(folds)],
        "environment": environment(),
        "training_environment": _environment_of(folds[0]),
        "training_environment_file": str(folds[0].exp_dir / ENV_FILE),
    }
    selection = [s for k, d in fold_dirs.items() if (s := dev_selection(k, d)) is not None]
    if selection:
        result["dev_selection"] = selection
    if write:
        write_results(model_exp_dir, result)
    return result


def write_results(model_exp_dir: Path, result: dict) -> None:
    default = result["pooled"][f"utterance/{result['default_rule']}"]
    save_confusion_png(default["confusion"], default["classes"], model_exp_dir / "confusion.png",
                       title=f"{result['model']} on {result['protocol']}: pooled, rule {result['default_rule']}")
    atomic_write_text(model_exp_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
    atomic_write_text(model_exp_dir / RESULTS_FILE, results_markdown(result))


# --- markdown ---------------------------------------------------------------------------------------


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _pm(stat: dict) -> str:
    if stat["std"] is None:
        return pct(stat["mean"])
    return f"{pct(stat['mean'])} ± {pct(stat['std'])}"


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _fold_coverage(result: dict) -> str:
    total = len(result["folds"]) + len(result["missing_folds"])
    text = f"{total}; scored {len(result['folds'])}"
    if result["missing_folds"]:
        text += f"; **missing: {', '.join(result['missing_folds'])}** (no {DECODE_SUBDIR}/)"
    return text


def card_markdown(result: dict) -> str:
    card, info = result["card"], result["decode_info"]
    lines = ["## Protocol card", "",
             f"- model: `{result['model']}` ({result['model_exp_dir']})"]
    if card:
        lines += [f"- corpus: `{card.get('corpus', 'unknown')}`",
                  f"- protocol: `{card['protocol']}`" + (f": {card['description']}" if card.get("description") else ""),
                  f"- speaker-independent: {'yes' if card['speaker_independent'] else '**no** (speaker-dependent)'}",
                  f"- dev set: {card.get('dev_policy', 'not stated')}"]
        if card.get("class_map"):   # a cross-corpus protocol
            cmap, dropped = card["class_map"], card.get("dropped", {})
            lines += [f"- class mapping: {cmap.get('file', 'not recorded')}"] + [
                f"- {cmap[side]} ({side}): {dropped_text(dropped.get(side, {}))}"
                for side in ("source", "target")]
    else:
        lines += [f"- protocol: `{result['protocol']}` (from the exp dir path; no protocol card: "
                  "decode.yaml names no readable protocol_dir)"]
    lines += [f"- classes ({len(result['classes'])}): {', '.join(result['classes'])}",
              f"- folds: {_fold_coverage(result)}",
              f"- voting rule: `{result['default_rule']}` (default; all rules in the summary: "
              f"{', '.join(result['rules'])})",
              f"- features: `{_show(info['features'])}`" if "features" in info else "- features: not recorded"]
    if result.get("dev_selection"):
        folds = [s["fold"] for s in result["dev_selection"]]
        lines.append(f"- hyper-parameters: chosen on dev by a grid in {len(folds)} fold(s) ({', '.join(folds)}); "
                     "see Dev-selected hyper-parameters")
    if card:
        lines += [f"- fold lists checksum: `{card['checksum']}`", f"- card: {card['card_file']}"]
    return "\n".join(lines) + "\n"


def summary_markdown(result: dict) -> str:
    """Pooled and mean ± std over folds, per voting rule, utterance and segment level."""
    header = ["level", "rule"] + [f"{n} pooled" for _, n in SUMMARY_KEYS] + \
             [f"{n} mean ± std" for _, n in SUMMARY_KEYS] + ["N"]
    rows = []
    for level, pooled in result["pooled"].items():
        kind, _, rule = level.partition("/")
        stats = result["fold_mean_std"][level]
        rule_name = f"{rule} (default)" if rule == result["default_rule"] else rule or "-"
        rows.append([kind, rule_name] + [pct(pooled[k]) for k, _ in SUMMARY_KEYS] +
                    [_pm(stats[k]) for k, _ in SUMMARY_KEYS] + [str(pooled["num_utts"])])
    n = len(result["folds"])
    note = (f"Percent. Pooled: all test predictions of the {n} scored fold(s) together. Mean ± std: over those "
            "folds, sample std (ddof=1). Segment level: each segment's argmax against its utterance's label.")
    if result["missing_folds"]:
        note += f" **Missing folds not included: {', '.join(result['missing_folds'])}.**"
    return _md_table(header, rows) + "\n" + note + "\n"


def per_fold_markdown(result: dict) -> str:
    rule = f"utterance/{result['default_rule']}"
    speakers = {f"fold{f['fold']}": ", ".join(f["test_speakers"]) if isinstance(f["test_speakers"], list)
                else str(f["test_speakers"]) for f in (result["card"] or {}).get("folds", [])}
    header = ["fold", "test speakers", "utts"] + [f"{n}" for _, n in SUMMARY_KEYS] + \
             ["segments"] + [f"seg {n}" for _, n in SUMMARY_KEYS]
    rows = {}
    for f in result["per_fold"]:
        utt, seg = f[rule], f[SEGMENT]
        rows[f["fold"]] = ([f["fold"], speakers.get(f["fold"], "-"), str(utt["num_utts"])] +
                           [pct(utt[k]) for k, _ in SUMMARY_KEYS] + [str(seg["num_utts"])] +
                           [pct(seg[k]) for k, _ in SUMMARY_KEYS])
    for name in result["missing_folds"]:
        rows[name] = [name, speakers.get(name, "-")] + ["missing"] * (len(header) - 2)
    ordered = [rows[k] for k in sorted(rows, key=lambda name: int(name[len("fold"):]))]
    return _md_table(header, ordered) + f"\nUtterance level with rule `{result['default_rule']}`; percent.\n"


def _values_text(values: dict) -> str:
    return " ".join(f"`{k}={json.dumps(v)}`" for k, v in values.items()) or "-"


def dev_selection_markdown(result: dict) -> str:
    """The grid of each fold (grouped when folds share one) and the point each chose on dev."""
    selection = result["dev_selection"]
    metrics = sorted({s["metric"] for s in selection if s["metric"]})
    metric = " / ".join(metrics) or "score"
    grids: Dict[str, List[str]] = {}
    for s in selection:
        text = "; ".join(f"`{k}` in {json.dumps(v)}" for k, v in s["grid"].items())
        grids.setdefault(text, []).append(s["fold"])
    lines = [f"Each fold trained every point of its grid on its train part and kept the one with the best dev "
             f"{metric} (train.select); the test set played no part. The chosen point is the fold's model above.", ""]
    for text, names in grids.items():
        where = "" if len(grids) == 1 else f" ({', '.join(names)})"
        lines.append(f"- grid{where}: {text}")
    rows = [[s["fold"], _values_text(s["chosen"]) if s["chosen"] is not None else "not finished",
             pct(s["dev_score"]) if s["dev_score"] is not None else "-", str(s["points"])] for s in selection]
    return "\n".join(lines) + "\n\n" + _md_table(["fold", "chosen values", f"dev {metric}", "points tried"], rows) + \
        "\nDev score: percent, of the chosen point's best.pt (its best epoch).\n"


def results_markdown(result: dict) -> str:
    pooled = result["pooled"][f"utterance/{result['default_rule']}"]
    training_env = result["training_environment"]
    parts = [f"# RESULTS: {result['model']} on {result['protocol']}\n", card_markdown(result),
             environment_markdown(result["environment"], "Environment (scoring)")]
    if training_env is not None:
        title = f"Environment (training: {result['training_environment_file']})"
        parts.append(environment_markdown(training_env, title))
    parts += ["## Summary\n", summary_markdown(result),
              "## Per fold\n", per_fold_markdown(result)]
    if result.get("dev_selection"):
        parts += ["## Dev-selected hyper-parameters\n", dev_selection_markdown(result)]
    parts += [f"## Pooled confusion matrix (utterance level, rule `{result['default_rule']}`)\n",
              "Rows: reference; columns: hypothesis. Picture: confusion.png.\n",
              "```\n" + confusion_text(pooled["confusion"], pooled["classes"]) + "```\n",
              "```\n" + per_class_text(pooled) + "```\n"]
    parts += [f"- note: {n}" for n in pooled["notes"]]
    return "\n".join(parts).rstrip("\n") + "\n"
