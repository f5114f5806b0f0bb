"""Waveform preprocessing (sertk.features.preprocess): silence removal and the fixed length, alone and
in feature extraction."""
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from replicas import write_wav
from sertk.data.datadir import DataDir
from sertk.errors import FeatureError
from sertk.features.cli import features
from sertk.features.extract import extract_features
from sertk.features.preprocess import (PreprocessConfig, PreprocessStats, fix_length, parse_preprocess, preprocess,
                                       remove_silence_energy_zcr)
from sertk.features.storage import load_feats, num_frames, read_dump_config
from sertk.features.streams import parse_config

SR = 16000


def _speech_with_pauses(seed=0):
    """0.5 s of faint noise, 1 s of tone, 0.5 s noise, 1 s of another tone, 0.5 s noise: 2 s "voiced"."""
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    noise = lambda n: 0.002 * rng.standard_normal(n)   # noqa: E731
    tone = lambda f: 0.4 * np.sin(2 * np.pi * f * t) + noise(SR)   # noqa: E731
    return np.concatenate([noise(SR // 2), tone(200), noise(SR // 2), tone(330), noise(SR // 2)]).astype(np.float32)


def test_fix_length_pads_at_the_end_or_keeps_the_start():
    y = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(fix_length(y, 8), [1, 2, 3, 4, 5, 0, 0, 0])
    np.testing.assert_array_equal(fix_length(y, 3), [1, 2, 3])


def test_energy_zcr_remover_keeps_the_voiced_runs():
    y = _speech_with_pauses()
    config = PreprocessConfig(silence="energy_zcr")
    kept = remove_silence_energy_zcr(y, config)
    # two runs of 1 s; a frame whose window touches a tone is voiced, and step 5 of spec 2.4 reaches
    # from one hop before that frame's window to its end, so a run can grow by 2048 + 2560 samples
    assert 2 * SR <= len(kept) <= 2 * SR + 2 * (2048 + 2560)
    tone_1 = y[SR // 2:SR // 2 + SR]
    start = int(np.flatnonzero(np.isin(kept, tone_1[:100]))[0])
    assert start <= 2048                                     # the first run starts at the first tone
    assert np.abs(kept).max() == pytest.approx(np.abs(y).max())


def test_energy_zcr_remover_keeps_audio_without_a_complete_run_and_counts_it():
    # a pause, then speech up to the end: a run starts but never ends, which the released code
    # (spec 2.4 step 6) treats as no run found and keeps whole
    pause_then_speech = _speech_with_pauses()[:SR + SR // 2]
    stats = PreprocessStats()
    out = preprocess(pause_then_speech, PreprocessConfig(silence="energy_zcr"), SR, stats)
    np.testing.assert_array_equal(out, pause_then_speech)
    assert (stats.utts, stats.kept_whole, stats.silence_samples) == (1, 1, 0)


def test_split_remover_drops_digital_silence():
    y = np.concatenate([np.zeros(SR), _speech_with_pauses()[SR // 2:SR // 2 + SR], np.zeros(SR)]).astype(np.float32)
    kept = preprocess(y, PreprocessConfig(silence="split", silence_frame=1024, silence_hop=256), SR)
    assert SR <= len(kept) <= SR + 2 * 1024


def test_fixed_length_after_silence_removal_is_counted():
    stats = PreprocessStats()
    config = PreprocessConfig(silence="energy_zcr", fixed_length=1.5)
    long = preprocess(_speech_with_pauses(), config, SR, stats)
    short = preprocess(_speech_with_pauses(1)[:SR], config, SR, stats)
    assert len(long) == len(short) == 24000
    summary = stats.summary(SR)
    assert (summary["utterances"], summary["padded"], summary["cut"]) == (2, 1, 1)
    assert summary["silence_removed_seconds"] > 0.5 and 0.5 <= summary["cut_seconds"] <= 1.1   # 2-2.58 s kept


@pytest.mark.parametrize("doc, message", [
    ({"silence": "vad"}, "silence must be one of none, energy_zcr, split"),
    ({"silences": "split"}, r"unknown option\(s\) silences"),
    ({"fixed_length": "6s"}, "fixed_length: expected a number or null"),
    ({"fixed_length": 0.0}, "at least one sample"),
    ({"silence_hop": 4096}, "silence_hop <= silence_frame"),
    ({"silence_frame": 2.5}, "integer number of samples"),
    ("split", "expected a mapping"),
])
def test_bad_preprocess_options_are_clear_errors(doc, message):
    with pytest.raises(FeatureError, match=message):
        parse_preprocess(doc, SR)


def test_configs_without_preprocessing_resolve_as_before():
    doc = {"sample_rate": SR, "streams": {"m": {"type": "mfcc"}}}
    assert "preprocess" not in parse_config(doc).to_dict()
    resolved = parse_config({**doc, "preprocess": {"fixed_length": 6}}).to_dict()
    assert resolved["preprocess"]["fixed_length"] == 6.0
    assert parse_config(yaml.safe_load(yaml.safe_dump(resolved))).to_dict() == resolved


def test_extraction_preprocesses_every_stream_and_reports_it(emodb_dir, tmp_path):
    dd = DataDir.load(emodb_dir, audio="none")
    for i, utt in enumerate(dd.utts):
        write_wav(dd.tables["wav.scp"][utt], seconds=[0.2, 0.45, 0.9][i % 3], seed=i)
    doc = {"sample_rate": SR, "preprocess": {"silence": "energy_zcr", "fixed_length": 0.5},
           "streams": {"mfcc": {"type": "mfcc", "n_mfcc": 13, "deltas": 1, "delta_axis": "coefficient"},
                       "zcr": {"type": "zcr"}}}
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump(doc))
    out = tmp_path / "dump"
    result = CliRunner().invoke(features, ["extract", str(emodb_dir), str(out), "--conf", str(conf)])
    assert result.exit_code == 0, result.output
    for stream in ("mfcc", "zcr"):
        assert set(num_frames(out, stream).values()) == {1 + 8000 // 160}   # every clip is 0.5 s
    info = read_dump_config(out)["dump"]["preprocess"]
    seconds = sum([0.2, 0.45, 0.9][i % 3] for i in range(len(dd.utts)))
    assert info["utterances"] == len(dd.utts) and info["input_seconds"] == pytest.approx(seconds, abs=1e-3)
    assert info["cut"] >= 1 and info["padded"] >= 1 and info["padded"] + info["cut"] <= len(dd.utts)
    assert info["silence_removed_seconds"] > 0
    assert "preprocess: " in result.output and f"{info['cut']} cut to the fixed length" in result.output
    assert next(iter(load_feats(out, "mfcc").values())).shape[1] == 26
    again = extract_features(emodb_dir, doc, out)
    assert again.skipped and again.preprocess == info
