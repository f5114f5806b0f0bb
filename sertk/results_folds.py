"""The folds of one model on one protocol scored, then pooled and averaged: the result dict that
sertk.results writes (RESULTS.md, metrics.json, confusion.png). See sertk.results for the rules.
"""
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from sertk.data.cross import dropped_text
from sertk.data.protocols import CARD_FILE, load_card, test_split_mismatch
from sertk.decode import is_decode_dir
from sertk.decode.decodedir import decoded_with_current_checkpoint
from sertk.envinfo import ENV_FILE, environment
from sertk.errors import ProtocolError, ScoreError, SertkError
from sertk.gridrecord import GRID_FILE, read_grid_record
from sertk.results_dev import dev_record, find_fold_dirs, read_refit_record
from sertk.results_training import fold_training
from sertk.score import SEGMENT, metrics_from_confusion, read_label_file, score_decode_dir
from sertk.yamlutil import flat_keys, read_yaml_file

logger = logging.getLogger(__name__)

DECODE_SUBDIR = "decode_test"
SUMMARY_KEYS = (("wa", "WA"), ("ua", "UA"), ("macro_f1", "macro-F1"))
STD_RULE = "sample standard deviation over folds (ddof=1); null with a single fold"


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
    data_dir = _data_dir_of(decode_dir, info, number)
    protocol_dir = _protocol_dir_of(decode_dir, info)
    wrong = test_split_mismatch(protocol_dir, number, data_dir) if protocol_dir is not None else None
    if wrong:
        raise ScoreError(f"{decode_dir}: decoded {wrong}")
    _check_decoded_checkpoint(fold_dir, decode_dir, info)
    score = score_decode_dir(decode_dir, data_dir)
    return FoldScore(number, fold_dir, score, info)


def _check_decoded_checkpoint(fold_dir: Path, decode_dir: Path, info: dict) -> None:
    """The test decode was made with the checkpoint the fold holds now: a run trained again (or on) after its
    test decode has another best.pt, which dev chose; the old decode is not its result. Kept records (no
    checkpoints) are taken as kept."""
    if decoded_with_current_checkpoint(fold_dir, info) is False:
        raise ScoreError(f"{decode_dir}: decoded with checkpoint {info['checkpoint_sha256'][:12]} (epoch "
                         f"{info.get('checkpoint_epoch')}), but {fold_dir / Path(str(info['checkpoint'])).name} is "
                         "another now (trained again since); its test set must be decoded again (sertk decode "
                         "--retest), or the old checkpoint restored")


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


def _check_disjoint_tests(folds: Sequence[FoldScore]) -> None:
    """No utterance is scored in two folds: pooling them would count it twice (a fold's decode_test made from
    another fold's test set, where decode.yaml names no protocol dir to check it against)."""
    seen: Dict[str, str] = {}
    for f in folds:
        for utt in read_label_file(f.exp_dir / DECODE_SUBDIR / "hyp"):
            if utt in seen:
                raise ScoreError(f"{f.exp_dir / DECODE_SUBDIR}: utterance {utt} is scored in {seen[utt]} too; each "
                                 "test utterance belongs to one fold (was another fold's test set decoded here?)")
            seen[utt] = f.name


def _pool_left_out(folds: Sequence[FoldScore], pooled: Dict[str, dict]) -> None:
    """Cross-corpus decodes through a class map: the utterances their scoring left out, all folds together,
    as a note of the pooled utterance-level scores (each fold's own notes say its share)."""
    counts = [f.score["left_out"] for f in folds if f.score.get("left_out") is not None]
    if not counts:
        return
    total: Counter = Counter()
    for c in counts:
        total.update(c)
    for level, m in pooled.items():
        if level != SEGMENT:
            m["notes"].append(f"cross-corpus, through the decodes' class map: {dropped_text(dict(total))}")


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


def _record_of(fold: FoldScore, read: Callable[[Path], Optional[dict]], what: str) -> Optional[dict]:
    """A record training wrote, read from the fold's exp dir (its dev selection: sertk.results_dev.dev_record;
    how it trained: sertk.results_training.fold_training); None, with a warning, if it is unreadable, so one
    damaged file does not stop the collect."""
    try:
        return read(fold.exp_dir)
    except SertkError as e:
        logger.warning(f"{e}; the fold's {what} is left out")
        return None


def refit_source(fold_dir: Path) -> Optional[Path]:
    """The dev-selected run a refit fold retrained (its refit.yaml's source); None for any other fold."""
    record = read_refit_record(fold_dir, ScoreError)
    return Path(record["source"]) if record is not None else None


def dev_selection(number: int, fold_dir: Path) -> Optional[dict]:
    """The hyper-parameters the fold's grid chose on dev (None: the fold had no grid); for a refit, give the
    run it retrained."""
    path = fold_dir / GRID_FILE
    if not path.is_file():
        return None
    doc = read_grid_record(path, ScoreError)
    points, chosen = doc["points"], doc["chosen"]
    out = {"fold": f"fold{number}", "grid_file": str(path), "grid": doc["grid"], "metric": doc.get("metric"),
           "points": len(points), "diverged": sum(bool(p.get("diverged")) for p in points), "chosen": None,
           "point": None, "dev_score": None, "best_epoch": None, "dir": None}
    if chosen is not None:   # null: the grid has not finished
        out.update(chosen=chosen.get("values"), point=chosen.get("point"), dev_score=chosen.get("dev_score"),
                   best_epoch=chosen.get("best_epoch"), dir=str(fold_dir / str(chosen.get("dir"))))
    return out


# --- all folds --------------------------------------------------------------------------------------


def collect_scores(model_exp_dir) -> dict:
    """Score every fold of `exp/<protocol>/<model>/` (each fold's scoring/ written), pool and average."""
    model_exp_dir = Path(model_exp_dir)
    if not model_exp_dir.is_dir():
        raise ScoreError(f"{model_exp_dir}: no such experiment dir")
    fold_dirs = find_fold_dirs(model_exp_dir)
    folds = [score_fold(k, d) for k, d in fold_dirs.items() if is_decode_dir(d / DECODE_SUBDIR)]
    if not folds:
        raise ScoreError(f"{model_exp_dir}: no fold<k>/{DECODE_SUBDIR}/ decode dirs to collect "
                         f"({len(fold_dirs)} fold dir(s) found)")
    classes, rules = _check_same_classes(folds), _common_rules(folds)
    _check_disjoint_tests(folds)
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
        "per_fold": [{"fold": f.name, "decode_dir": f.score["decode_dir"], "dev": _record_of(f, dev_record, "dev score"),
                      "training": _record_of(f, fold_training, "training record"),
                      **{level: _short(ms[i]) for level, ms in levels.items()}} for i, f in enumerate(folds)],
        "environment": environment(),
        "training_environment": _environment_of(folds[0]),
        "training_environment_file": str(folds[0].exp_dir / ENV_FILE),
    }
    _pool_left_out(folds, result["pooled"])
    sources = {k: refit_source(d) for k, d in fold_dirs.items()}   # a refit's dev choice is its source's
    selection = [s for k, d in fold_dirs.items() if (s := dev_selection(k, sources[k] or d)) is not None]
    if selection:
        result["dev_selection"] = selection
    refits = {f"fold{k}": str(source) for k, source in sources.items() if source is not None}
    if refits:
        result["refit_sources"] = refits
    # per fold by design: a grid's choices, and a refit's epoch count (its source's best epoch)
    differing = config_differences(folds, {key for s in selection for key in s["grid"]} | {"train.refit_epochs"})
    if differing:
        logger.warning(f"{model_exp_dir}: the folds were trained with different configs "
                       f"({', '.join(sorted(differing))}); RESULTS.md lists them")
        result["config_differences"] = differing
    return result


def config_differences(folds: Sequence[FoldScore], grid_keys: set) -> Dict[str, Dict[str, Any]]:
    """key -> {fold: value} for every config key whose value is not the same in all folds' config.yaml, beside
    the keys a grid chose per fold: one pooled result from folds trained otherwise (a patience raised on some
    folds, a flag set for a rerun) is a mixture the reader must be told of."""
    configs = {}
    for f in folds:
        path = f.exp_dir / "config.yaml"
        if path.is_file():
            configs[f.name] = flat_keys(read_yaml_file(path, ScoreError) or {}, lists=False)
    keys = sorted(set().union(*configs.values())) if configs else []
    return {key: {name: config.get(key) for name, config in configs.items()} for key in keys
            if key not in grid_keys and len({repr(config.get(key)) for config in configs.values()}) > 1}
