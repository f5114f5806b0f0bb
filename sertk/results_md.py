"""RESULTS.md of one model on one protocol, from the result dict of sertk.results_folds.collect_scores."""
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from sertk.data.cross import dropped_text
from sertk.envinfo import RESUMED, environment_markdown
from sertk.results_dev import markdown_table
from sertk.results_folds import DECODE_SUBDIR, SUMMARY_KEYS
from sertk.results_training import training_markdown
from sertk.score import SEGMENT, confusion_text, pct, per_class_text


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return markdown_table(header, rows) + "\n"


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
    if unfinished_folds(result):
        text += f"; **partial: {', '.join(unfinished_folds(result))} not finished training**"
    return text


def unfinished_folds(result: dict) -> List[str]:
    """Scored folds whose training had not finished (decoded with --retest while it went on, or stopped)."""
    return [f["fold"] for f in result["per_fold"] if f.get("dev") and not f["dev"]["finished"]]


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
    if result.get("refit_sources"):
        refits = result["refit_sources"]
        lines.append(f"- final model: a refit in {len(refits)} fold(s) (`sertk refit`): the set-up and the epoch count "
                     f"dev chose in {_common_parent(list(refits.values()))}, trained again on train + dev; "
                     "its last epoch decoded on test")
    if result.get("config_differences"):
        lines.append("- **the folds were trained with different configs** (beside any grid's choices): " + "; ".join(
            f"`{key}` " + ", ".join(f"{fold} {_show(value)}" for fold, value in values.items())
            for key, values in result["config_differences"].items()))
    if result.get("dev_selection"):
        folds = [s["fold"] for s in result["dev_selection"]]
        lines.append(f"- hyper-parameters: chosen on dev by a grid in {len(folds)} fold(s) ({', '.join(folds)}); "
                     "see Dev-selected hyper-parameters")
    if card:
        lines += [f"- fold lists checksum: `{card['checksum']}`", f"- card: {card['card_file']}"]
    return "\n".join(lines) + "\n"


def _common_parent(paths: List[str]) -> str:
    """`dir/fold<k>` for paths that all sit in dir, else the paths."""
    parents = {str(Path(p).parent) for p in paths}
    return f"{parents.pop()}/fold<k>" if len(parents) == 1 else ", ".join(paths)


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
            "folds, sample std (ddof=1). UA (mean per-class recall) and macro-F1 average the classes present in the "
            "reference: a fold whose test set lacks a class scores the others. Segment level: each segment's argmax "
            "against its utterance's label.")
    if result["missing_folds"]:
        note += f" **Missing folds not included: {', '.join(result['missing_folds'])}.**"
    if unfinished_folds(result):
        note += (f" **Partial: {', '.join(unfinished_folds(result))} had not finished training when decoded; "
                 "not a final result.**")
    return _md_table(header, rows) + "\n" + note + "\n"


def per_fold_markdown(result: dict) -> str:
    rule = f"utterance/{result['default_rule']}"
    speakers = {f"fold{f['fold']}": ", ".join(f["test_speakers"]) if isinstance(f["test_speakers"], list)
                else str(f["test_speakers"]) for f in (result["card"] or {}).get("folds", [])}
    dev_metrics = sorted({f["dev"]["metric"] for f in result["per_fold"] if f.get("dev")})
    header = ["fold", "test speakers", "utts"] + [f"{n}" for _, n in SUMMARY_KEYS] + \
             ["segments"] + [f"seg {n}" for _, n in SUMMARY_KEYS] + \
             [f"dev {' / '.join(dev_metrics) or 'score'} (best epoch of epochs run)"]
    rows = {}
    for f in result["per_fold"]:
        utt, seg = f[rule], f[SEGMENT]
        rows[f["fold"]] = ([f["fold"], speakers.get(f["fold"], "-"), str(utt["num_utts"])] +
                           [pct(utt[k]) for k, _ in SUMMARY_KEYS] + [str(seg["num_utts"])] +
                           [pct(seg[k]) for k, _ in SUMMARY_KEYS] + [_dev_text(f.get("dev"))])
    for name in result["missing_folds"]:
        rows[name] = [name, speakers.get(name, "-")] + ["missing"] * (len(header) - 2)
    ordered = [rows[k] for k in sorted(rows, key=lambda name: int(name[len("fold"):]))]
    return _md_table(header, ordered) + (f"\nUtterance level with rule `{result['default_rule']}`; percent. The dev "
                                         "score is the one that chose the checkpoint decoded on test.\n")


def _dev_text(dev: Optional[dict]) -> str:
    """A fold's dev selection as `score (best epoch of epochs run)`; - without a training record."""
    if not dev:
        return "-"
    text = f"{pct(dev['score'])} ({dev['best_epoch']} of {dev['epochs_run']})"
    return text if dev["finished"] else text + ", unfinished"


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
             pct(s["dev_score"]) if s["dev_score"] is not None else "-",
             str(s["points"]) + (f" ({s['diverged']} diverged)" if s.get("diverged") else "")] for s in selection]
    return "\n".join(lines) + "\n\n" + _md_table(["fold", "chosen values", f"dev {metric}", "points tried"], rows) + \
        "\nDev score: percent, of the chosen point's best.pt (its best epoch).\n"


def results_markdown(result: dict) -> str:
    pooled = result["pooled"][f"utterance/{result['default_rule']}"]
    training_env = result["training_environment"]
    parts = [f"# RESULTS: {result['model']} on {result['protocol']}\n", card_markdown(result),
             environment_markdown(result["environment"], "Environment (scoring)")]
    if training_env is not None:   # where it started; its resumes are in the training table
        title = f"Environment (training: {result['training_environment_file']})"
        parts.append(environment_markdown({k: v for k, v in training_env.items() if k != RESUMED}, title))
    parts += ["## Summary\n", summary_markdown(result),
              "## Per fold\n", per_fold_markdown(result)]
    training = training_markdown(result["per_fold"])
    if training:
        parts += ["## Training per fold\n", training]
    if result.get("dev_selection"):
        parts += ["## Dev-selected hyper-parameters\n", dev_selection_markdown(result)]
    parts += [f"## Pooled confusion matrix (utterance level, rule `{result['default_rule']}`)\n",
              "Rows: reference; columns: hypothesis. Picture: confusion.png.\n",
              "```\n" + confusion_text(pooled["confusion"], pooled["classes"]) + "```\n",
              "```\n" + per_class_text(pooled) + "```\n"]
    parts += [f"- note: {n}" for n in pooled["notes"]]
    return "\n".join(parts).rstrip("\n") + "\n"
