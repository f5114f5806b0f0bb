"""What every experiment-config key is and what it takes: the defaults and the checks, as tables.

`DEFAULTS` holds every section and key (a key not in it is a typo, an error); `CHECKS` says per key what it
takes (type, choices, range, whether null means something); `model_option_check` says it for the model's
options by their declared types and by what their names mean (sizes >= 1, rates in [0, 1)); `COMBINATIONS`
are the rules over several keys. sertk.config.loading applies them when a config is loaded or checked.

Kept apart from the loading so that a new key or check is one entry here; nothing here imports the models
(nor torch): the model's own defaults and checks are read from its Config by sertk.config.loading.
"""
import math
import typing
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from sertk.decode import VOTING_RULES
from sertk.errors import FeatureError, SertkError
from sertk.features import CMVN_MODES
from sertk.features.segments import TAILS, TRAIN_WINDOWS


class ConfigError(SertkError):
    """A config file or override that cannot be applied."""


class FeatureSettingError(ConfigError, FeatureError):
    """A `features.*` setting out of range: a config error, and one the feature code refuses too."""


DEFAULTS: Dict[str, Any] = {
    "model": {"name": None},
    # tag: the feature config conf/features/<tag>.yaml and dump/<tag>/ the recipe uses;
    # cmvn: global | speaker | none, global statistics from the fold's train part only;
    # clip: normalised values are cut to +-clip (null: not cut); speaker_min_rows / speaker_min_utts: cmvn
    # speaker gives a speaker with fewer rows (frames; vectors of pooled streams) or fewer utterances the
    # training data's statistics (sertk.features.cmvn)
    "features": {"tag": "logmel64", "cmvn": "global", "clip": None, "speaker_min_rows": 10, "speaker_min_utts": 3},
    # seconds; length null: no windows, one segment per utterance; train_hop defaults to hop;
    # tail: end (a last window aligned to the end) | drop; train_windows: all | center (training reads only
    # the centre window of a longer utterance; dev and decoding read all)
    "segments": {"length": 2.0, "hop": 1.0, "train_hop": None, "tail": "end", "train_windows": "all"},
    # select: the dev metric that picks best.pt and drives early stopping: ua | wa_ua (the mean of WA and UA);
    # bucket: batches of segments of similar length (whole utterances pad less), still shuffled;
    # batch_size: the whole batch, cut into one piece per process under torchrun (sertk.train.distributed);
    # num_workers: data-loader processes, null: 0 on the CPU, up to 4 per process on a GPU (pinned memory);
    # sync_batchnorm: under torchrun, BatchNorm statistics of the whole batch over all processes;
    # amp: auto (bfloat16 autocast of the training step where the hardware computes bf16 natively: a GPU, or a
    # CPU with AMX / AVX512-BF16) | true (bf16 anywhere) | false (float32); see sertk.train.precision
    # refit_epochs: null (train on train, best.pt chosen on dev) | N: train on train + dev for N epochs of the
    # schedule, nothing chosen, best.pt is the final model (`sertk refit` sets it: sertk.train.refit)
    "train": {"epochs": 40, "batch_size": 32, "seed": 0, "patience": 10, "min_epochs": 1,
              "class_weighted": True, "utterance_weighted": False, "grad_clip": 5.0, "amp": "auto", "select": "ua",
              "bucket": False, "num_workers": None, "sync_batchnorm": True, "refit_epochs": None},
    # multi-task loss (each model's objective hook, SERModel.objective; SD-CAFF's in sertk/models/sd_caff.py):
    # (1 - gender_weight) (CE + center_weight center) on emotion
    # + gender_weight (CE + center_weight center) on utt2gen; center_lr: SD-CAFF's center gradient scale;
    # reconstruction_weight r: (1 - r) x that + r x the MSE of the model's rebuilt masked frames (ESERNet)
    "loss": {"gender_weight": 0.0, "center_weight": 0.0, "center_lr": None, "reconstruction_weight": 0.0},
    # betas: Adam / AdamW betas, null: torch's (0.9, 0.999); lbfgs (full batch, for heads on fixed vectors):
    # max_iter iterations per step, history_size past updates kept (in last.pt too)
    "optim": {"name": "adam", "lr": 1.0e-3, "weight_decay": 0.0, "betas": None, "max_iter": 20, "history_size": 10},
    # step: x gamma every step_size epochs; multistep: x gamma after each epoch in milestones;
    # exponential: x gamma after every epoch; cosine: to 0 over the epochs; warmup_cosine: linear warm-up
    # over warmup_epochs, then cosine to lr x min_lr_ratio at the last epoch
    "scheduler": {"name": "none", "step_size": 10, "gamma": 0.5, "milestones": [], "factor": 0.5, "patience": 3,
                  "warmup_epochs": 0, "min_lr_ratio": 0.0},
    "augment": {"specaugment": False, "time_masks": 2, "time_width": 20, "freq_masks": 2, "freq_width": 8},
    "decode": {"rule": "mean"},
    # dotted config key -> the values to try, e.g. {"optim.lr": [1.0e-3, 1.0e-4]}: every combination is
    # trained and the best on dev (train.select) is kept (sertk.train.grid); {}: one plain run
    "grid": {},
}
# keys a grid may not vary: each model has its own options, and all points read the one feature dump
GRID_FIXED = {"grid": "it is the grid, not a setting",
              "model.name": "each model has its own options; run one experiment per model",
              "features.tag": "all points read the one feature dump given with --feats; run one experiment per "
                              "feature set",
              "train.refit_epochs": "a refit trains one chosen point on train + dev: `sertk refit` after the grid"}


# --- what every setting takes: one table, checked when a config is loaded -------------------------

@dataclass(frozen=True)
class Check:
    """What a setting takes: `ok(value)` for a value of the default's type (the type is checked first),
    `wants` says it in messages ("an integer >= 1"); `null`: what null means where null is allowed
    (`null_first`: said before the values, "null or two numbers ...")."""
    wants: str
    ok: Callable[[Any], bool] = lambda v: True
    null: Optional[str] = None
    null_first: bool = False


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(low: Optional[int] = None, null: Optional[str] = None, high: Optional[int] = None) -> Check:
    """An integer >= low (and < high)."""
    wants = (f"an integer from {low} to {high - 1}" if high is not None else
             "an integer" + (f" >= {low}" if low is not None else ""))
    return Check(wants, lambda v: _is_int(v) and (low is None or v >= low) and (high is None or v < high), null)


def number(wants: str, ok: Callable[[float], bool] = lambda v: True, null: Optional[str] = None) -> Check:
    """A finite number (an int counts) for which `ok` holds."""
    return Check(wants, lambda v: _is_number(v) and ok(v), null)


def positive(wants: str = "a number > 0", null: Optional[str] = None) -> Check:
    return number(wants, lambda v: v > 0, null)


# a window of more than 10 minutes is a unit slip (ms for s): every segment is padded to it, and 1e5 s asked
# for tens of GiB before anything said why
MAX_SEGMENT_SECONDS = 600.0


def seconds(null: Optional[str] = None) -> Check:
    return number(f"a number of seconds > 0 and <= {MAX_SEGMENT_SECONDS:g}", lambda v: 0 < v <= MAX_SEGMENT_SECONDS, null)


def interval(low: float, high: float, high_closed: bool = False) -> Check:
    """A number in [low, high) ([low, high] with high_closed)."""
    return number(f"in [{low:g}, {high:g}{']' if high_closed else ')'}",
                  lambda v: low <= v <= high if high_closed else low <= v < high)


def one_of(choices: Iterable[str]) -> Check:
    choices = tuple(choices)
    return Check(f"one of {', '.join(choices)}", lambda v: v in choices)


def folder_name() -> Check:
    """A name that is also a folder's (dump/<tag>): no spaces, no '/'."""
    return Check("a non-empty name without spaces or '/'", lambda v: isinstance(v, str) and bool(v) and
                 not any(c.isspace() or c in "/\\" for c in v) and v not in (".", ".."))


FLAG = Check("true or false", lambda v: isinstance(v, bool))
SEVERAL_TYPES = ("train.amp",)       # a word or a flag: CHECKS alone says what the key takes
SELECT_METRICS = {"ua": "UA", "wa_ua": "(WA + UA) / 2"}   # train.select: the dev score that picks best.pt
OPTIMIZERS = ("adam", "adamw", "sgd", "lbfgs")
SCHEDULERS = ("none", "step", "multistep", "exponential", "plateau", "cosine", "warmup_cosine")

CHECKS: Dict[str, Check] = {
    "features.tag": folder_name(),
    "features.cmvn": one_of(CMVN_MODES),
    "features.clip": positive("a positive number of standard deviations", null="not cut"),
    "features.speaker_min_rows": integer(1),
    "features.speaker_min_utts": integer(1),
    "segments.length": seconds(null="no windows, one segment per utterance"),
    "segments.hop": seconds(),
    "segments.train_hop": seconds(null="segments.hop"),
    "segments.tail": one_of(TAILS),
    "segments.train_windows": one_of(TRAIN_WINDOWS),
    "train.epochs": integer(1),
    "train.batch_size": integer(1),
    "train.seed": integer(0, high=2 ** 32),
    "train.patience": integer(1),
    "train.min_epochs": integer(0),
    "train.class_weighted": FLAG,
    "train.utterance_weighted": FLAG,
    "train.grad_clip": number("a number >= 0 (0: no clipping)", lambda v: v >= 0, null="no clipping"),
    "train.amp": Check("auto, true or false", lambda v: v == "auto" or isinstance(v, bool)),
    "train.select": one_of(SELECT_METRICS),
    "train.bucket": FLAG,
    "train.num_workers": integer(0, null="auto"),
    "train.sync_batchnorm": FLAG,
    "train.refit_epochs": integer(1, null="no refit: train on train, best.pt chosen on dev"),
    "loss.gender_weight": interval(0, 1),
    "loss.center_weight": number("a number >= 0", lambda v: v >= 0),
    "loss.center_lr": positive(null="the optimizer's rate"),
    "loss.reconstruction_weight": interval(0, 1),
    "optim.name": one_of(OPTIMIZERS),
    "optim.lr": positive(),
    "optim.weight_decay": number("a number >= 0", lambda v: v >= 0),
    "optim.betas": Check("two numbers in [0, 1) for adam or adamw",
                         lambda v: isinstance(v, list) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v),
                         null="torch's", null_first=True),
    "optim.max_iter": integer(1),
    "optim.history_size": integer(1),
    "scheduler.name": one_of(SCHEDULERS),
    "scheduler.step_size": integer(1),
    "scheduler.gamma": positive(),
    "scheduler.milestones": Check("a list of epochs >= 1", lambda v: isinstance(v, list) and
                                  all(_is_int(m) and m >= 1 for m in v)),
    "scheduler.factor": number("in (0, 1)", lambda v: 0 < v < 1),
    "scheduler.patience": integer(0),
    "scheduler.warmup_epochs": integer(0),
    "scheduler.min_lr_ratio": number("a number"),   # its range: COMBINATIONS, with warmup_epochs
    "augment.specaugment": FLAG,
    "augment.time_masks": integer(0),
    "augment.time_width": integer(0),
    "augment.freq_masks": integer(0),
    "augment.freq_width": integer(0),
    "decode.rule": one_of(VOTING_RULES),
}


def _warmup(c: Dict[str, Any]) -> Optional[str]:
    s = c["scheduler"]
    if not 0.0 <= s["min_lr_ratio"] <= 1.0:   # the wording sertk.train.trainer.warmup_cosine uses too
        return (f"scheduler.warmup_epochs must be an integer >= 0 and min_lr_ratio in [0, 1] "
                f"(got {s['warmup_epochs']}, {s['min_lr_ratio']})")
    return None


def _milestones(c: Dict[str, Any]) -> Optional[str]:
    s = c["scheduler"]
    if s["name"] == "multistep" and not s["milestones"]:
        return f"scheduler.milestones must be a list of epochs >= 1 for multistep, not {s['milestones']!r}"
    return None


def _betas(c: Dict[str, Any]) -> Optional[str]:
    o = c["optim"]
    if o["betas"] is not None and o["name"] not in ("adam", "adamw"):
        return (f"optim.betas must be null or two numbers in [0, 1) for adam or adamw, not {o['betas']!r} "
                f"(optim.name {o['name']} takes none)")
    return None


def _lbfgs(c: Dict[str, Any]) -> Optional[str]:
    # its line search compares the losses of several steps on one batch: a clipped gradient, or a loss that
    # bf16 rounds, would mislead it
    if c["optim"]["name"] != "lbfgs":
        return None
    if c["train"]["grad_clip"]:
        return f"optim.name lbfgs takes no gradient clipping: set train.grad_clip=0 (not {c['train']['grad_clip']})"
    if c["train"]["amp"] is not False:
        return f"optim.name lbfgs trains in float32: set train.amp=false (not {c['train']['amp']!r})"
    return None


def _center_lr(c: Dict[str, Any]) -> Optional[str]:
    if c["loss"]["center_lr"] is not None and c["loss"]["center_weight"] <= 0:
        return (f"loss.center_lr {c['loss']['center_lr']} scales the center-loss gradients, so it needs "
                "loss.center_weight > 0 (or center_lr null)")
    return None


def _train_hop(c: Dict[str, Any]) -> Optional[str]:
    if c["segments"]["length"] is None and c["segments"]["train_hop"] is not None:
        return (f"segments.train_hop {c['segments']['train_hop']} needs windows: segments.length is null "
                "(one segment per utterance); set train_hop to null")
    return None


def _refit(c: Dict[str, Any]) -> Optional[str]:
    t = c["train"]
    if t["refit_epochs"] is None:
        return None
    if t["refit_epochs"] > t["epochs"]:
        return f"train.refit_epochs {t['refit_epochs']} is more than the {t['epochs']} epochs of train.epochs"
    if c["scheduler"]["name"] == "plateau":   # it steps on the dev score, and a refit has no dev
        return "train.refit_epochs: scheduler plateau steps on dev UA, which a refit (trained on dev too) has not"
    return None


# rules over several keys: the keys each reads, and a function of the config giving the message of a broken rule
COMBINATIONS: List[Tuple[Tuple[str, ...], Callable[[Dict[str, Any]], Optional[str]]]] = [
    (("scheduler.warmup_epochs", "scheduler.min_lr_ratio"), _warmup),
    (("scheduler.name", "scheduler.milestones"), _milestones),
    (("optim.name", "optim.betas"), _betas),
    (("optim.name", "train.grad_clip", "train.amp"), _lbfgs),
    (("loss.center_lr", "loss.center_weight"), _center_lr),
    (("segments.length", "segments.train_hop"), _train_hop),
    (("train.refit_epochs", "train.epochs", "scheduler.name"), _refit),
]

# model options, checked by their declared types and what their names mean: integers are sizes, counts and
# depths (>= 1) but for these floors; an option ending in a rate's name is a probability in [0, 1)
MODEL_INT_FLOORS = {"word_tokens": 0, "input_projection": 0, "center_dim": 0, "first_padding": 0, "stream_deltas": 0}
MODEL_INDEXES = ("layer",)           # may be negative (from the end); the model checks the range
MODEL_RATES = ("dropout", "drop_path", "mask_rate", "drop_rate")
MODEL_POSITIVE = ("ffn_ratio", "frame_ms", "merge_ms")


def model_option_check(option: str, hint: Any) -> Check:
    """What model option `option`, declared with type `hint` in the model's Config, takes."""
    args = typing.get_args(hint)
    null = "the model's choice" if typing.get_origin(hint) is typing.Union and type(None) in args else None
    if null:
        hint = typing.Union[tuple(a for a in args if a is not type(None))] if len(args) > 2 else \
            next(a for a in args if a is not type(None))
    is_list = typing.get_origin(hint) in (list, List)
    item = typing.get_args(hint)[0] if is_list else hint
    if item is int and option not in MODEL_INDEXES:
        floor = MODEL_INT_FLOORS.get(option, 1)
        one = integer(floor)
    elif item is float and option.endswith(MODEL_RATES):
        one = interval(0, 1)
    elif item is float and option in MODEL_POSITIVE:
        one = positive()
    else:
        one = Check(_type_text(item), lambda v: _fits(v, item))
    if not is_list:
        return Check(one.wants, one.ok, null)
    return Check(f"a list, each item {one.wants}", lambda v: isinstance(v, list) and all(one.ok(x) for x in v), null)


def _fits(value: Any, hint: Any) -> bool:
    """`value` is of the declared type `hint` (int, float, str, bool, lists and unions of them)."""
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        return any(_fits(value, a) for a in typing.get_args(hint))
    if origin in (list, List):
        return isinstance(value, list) and all(_fits(v, typing.get_args(hint)[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return _is_number(value)
    if hint is str:
        return isinstance(value, str) and bool(value)
    return True   # a type this table does not know: the model checks it


def _type_text(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Union:
        return " or ".join(_type_text(a) for a in typing.get_args(hint))
    return {int: "an integer", float: "a number", str: "a non-empty string", bool: "true or false",
            type(None): "null"}.get(hint, str(hint))


def shown(value: Any) -> str:
    """A value as the messages show it: null, or its repr."""
    return "null" if value is None else repr(value)


def check_value(key: str, check: Check, value: Any) -> None:
    """Raise ConfigError (FeatureSettingError for features.*) when `value` is not what `check` takes."""
    if value is None:
        if check.null is not None:
            return
    elif check.ok(value):
        return
    error = FeatureSettingError if key.startswith("features.") else ConfigError
    raise error(f"{key} must be {wants_text(check)}, not {shown(value)}")


def wants_text(check: Check) -> str:
    """What a setting takes, in words: its values, and null where null means something."""
    if check.null is None:
        return check.wants
    if check.null_first:
        return f"null or {check.wants}"
    return f"{check.wants} or null ({check.null})"
