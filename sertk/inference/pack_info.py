"""`sertk pack --info`: what a packed model's description says, as lines for a reader."""
from pathlib import Path
from typing import Any, Dict, Optional

from sertk.envinfo import resume_entries
from sertk.features.streams import DUMP_INFO_KEY


def info_text(meta: Dict[str, Any], path: Optional[Path] = None) -> str:
    """What `sertk pack --info` prints: the model, its inputs, where it came from and how it scored."""
    config, src = meta["config"], meta["source"]
    features = {k: v for k, v in meta["features"].items() if k != DUMP_INFO_KEY}
    lines = [f"packed model: {path}" if path else "packed model",
             f"model: {meta['model']}",
             f"classes ({len(meta['classes'])}, posterior column order): {', '.join(meta['classes'])}",
             f"features: tag {config['features']['tag']}, sample rate {features.get('sample_rate')} Hz, streams "
             + ", ".join(f"{s} ({spec.get('type')}, dim {meta['features'][DUMP_INFO_KEY]['dims'].get(s)})"
                         for s, spec in features["streams"].items()),
             f"normalisation: {meta['normalization']['mode']}",
             f"segments: {_segments_text(config['segments'])}; voting rule: {config['decode']['rule']}",
             f"source: {src['exp_dir']} ({src['checkpoint']}, epoch {src['epoch']}, sha256 "
             f"{src['checkpoint_sha256'][:12]}...)",
             f"packed: {meta['created']} with sertk {meta['sertk_version']}"]
    card = meta.get("protocol")
    if card:
        fold = card.get("fold") or {}
        lines.append(f"protocol: {card.get('corpus')} {card['protocol']} ({card.get('description', '')}); "
                     f"fold {fold.get('fold')} of {card['num_folds']}: test speakers "
                     f"{_speakers_text(fold.get('test_speakers', []))}, dev speakers "
                     f"{_speakers_text(fold.get('dev_speakers', []))}")
        lines.append(f"dev policy: {card.get('dev_policy')}; speaker-independent: "
                     f"{'yes' if card.get('speaker_independent') else 'no'}")
    else:
        lines.append("protocol: unknown (no protocol card)")
    refit_epochs = config["train"].get("refit_epochs")
    if refit_epochs:   # the dev speakers above were trained on
        lines.append(f"refit: trained on train + dev for the {refit_epochs} epoch(s) dev chose (sertk refit); "
                     "no held-out dev score")
    dev, test = meta["metrics"].get("dev"), meta["metrics"].get("test")
    if dev:
        lines.append(f"dev (checkpoint choice): WA {100 * dev['wa']:.2f}, UA {100 * dev['ua']:.2f}")
    lines.append(f"test ({test['num_utts']} utterances, rule {test['rule']}): WA {100 * test['wa']:.2f}, "
                 f"UA {100 * test['ua']:.2f}, macro-F1 {100 * test['macro_f1']:.2f}" if test else "test: not scored")
    env = meta.get("environment") or {}
    if env:
        later = [h for h in dict.fromkeys(str(r.get("git_hash")) for r in resume_entries(env))
                 if h != str(env.get("git_hash"))]
        lines.append(f"trained on: {env.get('cpu') or ''} {env.get('gpu') or 'no GPU'}, torch {env.get('torch')}, "
                     f"git {env.get('git_hash')}".replace("  ", " ") + (f", resumed under {', '.join(later)}" if later else ""))
    return "\n".join(lines)


def _speakers_text(speakers: Any) -> str:
    """A fold's speakers: a list, or 'mixed' (a speaker-dependent protocol)."""
    return speakers if isinstance(speakers, str) else ", ".join(speakers)


def _segments_text(seg: Dict[str, Any]) -> str:
    if seg.get("length") is None:
        return "whole utterances"
    return f"{seg['length']} s windows every {seg['hop']} s"
