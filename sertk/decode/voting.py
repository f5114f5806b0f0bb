"""Voting rules: an utterance's segment posteriors -> its class distribution and decision. numpy only."""
from typing import Callable, Dict

import numpy as np

DEFAULT_RULE = "mean"
# log(0) would make one confident segment veto a class with -inf and turn ties into NaN; a floor
# keeps the veto strong (one zero costs ~28 nats) but finite
LOG_FLOOR = 1e-12


def _normalise(scores: np.ndarray) -> np.ndarray:
    total = scores.sum()
    return scores / total if total > 0 else np.full_like(scores, 1.0 / scores.size)


def _mean(seg_post: np.ndarray) -> np.ndarray:
    return _normalise(seg_post.mean(axis=0))


def _majority(seg_post: np.ndarray) -> np.ndarray:
    """Vote fractions: the share of segments whose argmax is each class."""
    counts = np.bincount(seg_post.argmax(axis=1), minlength=seg_post.shape[1])
    return counts / seg_post.shape[0]


def _logsum(seg_post: np.ndarray) -> np.ndarray:
    """Sum of log posteriors, i.e. the geometric mean, renormalised (max-shifted, so no underflow)."""
    logs = np.log(np.maximum(seg_post, LOG_FLOOR)).sum(axis=0)
    return _normalise(np.exp(logs - logs.max()))


def _max(seg_post: np.ndarray) -> np.ndarray:
    return _normalise(seg_post.max(axis=0))


_RULES: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": _mean, "majority": _majority, "logsum": _logsum, "max": _max}
VOTING_RULES = tuple(_RULES)


def _as_seg_post(seg_post) -> np.ndarray:
    post = np.asarray(seg_post, dtype=np.float64)
    if post.ndim == 1:  # one segment
        post = post[None, :]
    if post.ndim != 2 or post.shape[0] == 0 or post.shape[1] == 0:
        raise ValueError(f"segment posteriors must be [segments, classes] with both > 0, got shape {post.shape}")
    if not np.all(np.isfinite(post)) or np.any(post < 0):
        raise ValueError("segment posteriors must be finite and non-negative")
    return post


def check_rule(rule: str) -> None:
    if rule not in _RULES:
        raise ValueError(f"unknown voting rule '{rule}'; known: {', '.join(VOTING_RULES)}")


def vote(seg_post, rule: str = DEFAULT_RULE) -> np.ndarray:
    """The utterance distribution [C] (sums to 1) from its segment posteriors [S, C] under `rule`.

    mean: mean posterior. majority: the fraction of segments voting for each class (argmax).
    logsum: geometric mean of the posteriors, renormalised. max: per-class max, renormalised.
    """
    check_rule(rule)
    return _RULES[rule](_as_seg_post(seg_post))


def decide(seg_post, rule: str = DEFAULT_RULE) -> int:
    """The class index the utterance gets under `rule`: the argmax of `vote`.

    Ties (the usual case for majority with an even number of segments) go to the tied class
    with the highest mean posterior, then to the earlier class.
    """
    post = _as_seg_post(seg_post)
    scores = vote(post, rule)
    tied = np.flatnonzero(scores == scores.max())
    if len(tied) == 1:
        return int(tied[0])
    mean = _mean(post)
    return int(tied[np.argmax(mean[tied])])
