"""Feature streams against librosa, batching, the dump on disk (kaldiio), skipping, atomicity, errors.

Tolerances (float32 torch vs librosa's numpy/scipy): log-mel 1e-4 absolute (log domain); MFCC and
its deltas 2e-3 absolute on values of a few hundred; log-mel deltas 1e-4; ZCR 1e-6; energy 1e-5
relative. Batched vs one-by-one and nj=2 vs nj=1 must agree to float32 rounding.
"""
import warnings
from pathlib import Path

import click
import kaldiio
import librosa
import numpy as np
import pytest
import scipy.signal
import torch
import yaml
from click.testing import CliRunner

from replicas import write_wav
from sertk.audio import load_audio
from sertk.cli import SertkGroup
from sertk.data.datadir import DataDir
from sertk.errors import AudioError, DeviceError, FeatureError, OutputError
from sertk.features import extract_jobs
from sertk.features.cli import features
from sertk.features.extract import extract_features, plan_batches
from sertk.features.storage import load_feats, num_frames
from sertk.features.streams import build_frontend, build_frontends, parse_config, parse_stream
from sertk.features.streams.spectral import LogMelConfig, MfccConfig

SR = 16000
N_FFT, WIN, HOP = 512, 400, 160
STFT = dict(n_fft=N_FFT, win_length=WIN, hop_length=HOP, center=True, pad_mode="constant")
# 300 samples is shorter than n_fft; 700 gives 5 frames (< delta width 9); 100 gives a single frame
LENGTHS = (300, 1600, 4000, 8321, 16000)

CONFIG = {
    "sample_rate": SR,
    "streams": {
        "logmel": {"type": "logmel", "n_mels": 40, "deltas": 2},
        "lld": {"type": "concat", "parts": [{"type": "zcr"}, {"type": "energy"}, {"type": "log_energy"},
                                            {"type": "mfcc", "n_mfcc": 13, "deltas": 2}]},
    },
}


def _signal(n: int, seed: int, silent_from: float = 1.0) -> np.ndarray:
    """A tone plus noise; the part after `silent_from` (fraction) is digital silence, so top_db bites."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    y = 0.3 * np.sin(2 * np.pi * (180 + 40 * seed) * t) + 0.05 * rng.standard_normal(n)
    y[int(n * silent_from):] = 0.0
    return y.astype(np.float32)


@pytest.fixture(scope="module")
def signals():
    ys = [_signal(n, i) for i, n in enumerate(LENGTHS)]
    ys.append(_signal(12000, 7, silent_from=0.3) * 0.01)   # quiet, mostly silent: its own top_db floor
    return ys


def _batch(ys):
    lengths = torch.tensor([len(y) for y in ys])
    wave = torch.zeros(len(ys), int(lengths.max()))
    for i, y in enumerate(ys):
        wave[i, :len(y)] = torch.from_numpy(y)
    return wave, lengths


def _run(spec, ys):
    """Per utterance [frames, dim] arrays from one batched forward pass."""
    with torch.inference_mode():
        feats, frame_lengths = build_frontend(spec, SR)(*_batch(ys))
    return [feats[i, :n].numpy() for i, n in enumerate(frame_lengths.tolist())], feats, frame_lengths


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():   # librosa warns that n_fft exceeds a 300-sample signal
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _librosa_mel(y, n_mels):
    return _quiet(librosa.feature.melspectrogram, y=y, sr=SR, n_mels=n_mels, **STFT)


def _librosa_mfcc(y, n_mfcc, n_mels=64):
    return _quiet(librosa.feature.mfcc, y=y, sr=SR, n_mfcc=n_mfcc, n_mels=n_mels, **STFT).T


def _ref_energy(y, window=None):
    # the STFT window's span: frames of n_fft centred on f * hop, the window in the middle win samples
    frames = librosa.util.frame(np.pad(y.astype(np.float64), N_FFT // 2), frame_length=N_FFT, hop_length=HOP)
    lo = (N_FFT - WIN) // 2
    weights = 1.0 if window is None else scipy.signal.get_window(window, WIN, fftbins=True)[:, None]
    return ((weights * frames[lo:lo + WIN]) ** 2).sum(axis=0)[:, None]


# --- streams against librosa --------------------------------------------------------------------

def test_frame_count_and_padding_frames_are_zero(signals):
    utts, feats, frame_lengths = _run({"type": "logmel"}, signals)
    assert frame_lengths.tolist() == [1 + len(y) // HOP for y in signals]
    for i, n in enumerate(frame_lengths.tolist()):
        assert not feats[i, n:].any()


def test_logmel_matches_librosa(signals):
    utts, _, _ = _run({"type": "logmel", "n_mels": 64}, signals)
    for y, got in zip(signals, utts):
        ref = np.log(_librosa_mel(y, 64) + 1e-6).T
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_logmel_options_fmin_fmax_htk_hamming(signals):
    spec = {"type": "logmel", "n_mels": 32, "fmin": 50, "fmax": 7000, "htk": True, "window": "hamming",
            "log_offset": 1e-3}
    utts, _, _ = _run(spec, signals[:3])
    for y, got in zip(signals, utts):
        ref = _quiet(librosa.feature.melspectrogram, y=y, sr=SR, n_mels=32, fmin=50, fmax=7000, htk=True,
                     window="hamming", **STFT)
        np.testing.assert_allclose(got, np.log(ref + 1e-3).T, atol=1e-4, rtol=0)


def test_db_logmel_matches_librosa_power_to_db_per_utterance(signals):
    # ESERNet's input: 128 mels, 0-8 kHz, 10 log10(max(mel, 1e-10)) floored 80 dB below each utterance's peak
    spec = {"type": "logmel", "n_mels": 128, "fmax": 8000.0, "scale": "db", "amin": 1e-10, "top_db": 80.0}
    utts, _, _ = _run(spec, signals)
    for y, got in zip(signals, utts):
        ref = librosa.power_to_db(_quiet(librosa.feature.melspectrogram, y=y, sr=SR, n_mels=128, fmax=8000.0,
                                         **STFT), ref=1.0, amin=1e-10, top_db=80.0).T
        np.testing.assert_allclose(got, ref, atol=2e-3, rtol=0)
    alone, _, _ = _run(spec, signals[-1:])   # the quiet utterance: its own floor, next to loud ones or not
    np.testing.assert_allclose(alone[0], utts[-1], atol=1e-5, rtol=0)
    floored, _, _ = _run({**spec, "top_db": 20.0}, signals[-1:])
    assert floored[0].min() == pytest.approx(floored[0].max() - 20.0, abs=1e-4) and utts[-1].min() < floored[0].min()


def test_mfcc_matches_librosa_with_per_utterance_top_db(signals):
    utts, _, _ = _run({"type": "mfcc"}, signals)   # n_mfcc 40 from 64 mels
    for y, got in zip(signals, utts):
        np.testing.assert_allclose(got, _librosa_mfcc(y, 40), atol=2e-3, rtol=0)


def test_mfcc_top_db_uses_only_the_utterance_itself(signals):
    # the quiet utterance alone and next to loud ones: the same floor
    alone, _, _ = _run({"type": "mfcc"}, signals[-1:])
    batched, _, _ = _run({"type": "mfcc"}, signals)
    np.testing.assert_allclose(batched[-1], alone[0], atol=1e-4, rtol=0)


def test_zcr_matches_librosa(signals):
    utts, _, _ = _run({"type": "zcr"}, signals)
    for y, got in zip(signals, utts):
        ref = librosa.feature.zero_crossing_rate(y, frame_length=WIN, hop_length=HOP, center=True).T
        np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_energy_and_log_energy(signals):
    energy, _, _ = _run({"type": "energy"}, signals)
    log_energy, _, _ = _run({"type": "log_energy", "eps": 1e-6}, signals)
    for y, e, le in zip(signals, energy, log_energy):
        ref = _ref_energy(y)
        np.testing.assert_allclose(e, ref, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(le, np.log(ref + 1e-6), atol=1e-4, rtol=0)


def test_window_weighted_energy(signals):
    # short-time energy of Hamming-windowed frames (MPAF-CNN's LLD), and its log
    energy, _, _ = _run({"type": "energy", "weighted": True, "window": "hamming"}, signals)
    log_energy, _, _ = _run({"type": "log_energy", "weighted": True, "window": "hamming", "eps": 1e-10}, signals)
    for y, e, le in zip(signals, energy, log_energy):
        ref = _ref_energy(y, "hamming")
        assert e.shape == ref.shape
        np.testing.assert_allclose(e, ref, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(le, np.log(ref + 1e-10), atol=1e-3, rtol=0)
        assert (e <= _ref_energy(y) + 1e-9).all()   # a window <= 1 only takes energy away


def test_deltas_match_librosa(signals):
    utts, _, _ = _run({"type": "mfcc", "n_mfcc": 13, "deltas": 2}, signals)
    logmel, _, _ = _run({"type": "logmel", "n_mels": 40, "deltas": 1, "delta_width": 5}, signals)
    checked = 0
    for y, got, got_mel in zip(signals, utts, logmel):
        if len(got) < 9:
            continue   # librosa refuses width > frames; see test_deltas_of_short_utterances
        m = _librosa_mfcc(y, 13).T
        ref = np.concatenate([m, librosa.feature.delta(m), librosa.feature.delta(m, order=2)]).T
        np.testing.assert_allclose(got, ref, atol=2e-3, rtol=0)
        lm = np.log(_librosa_mel(y, 40) + 1e-6)
        np.testing.assert_allclose(got_mel, np.concatenate([lm, librosa.feature.delta(lm, width=5)]).T,
                                   atol=1e-4, rtol=0)
        checked += 1
    assert checked == 5


@pytest.mark.parametrize("n_samples", [100, 300, 700, 1280])   # 1, 2, 5 and 9 frames
def test_deltas_of_short_utterances(n_samples):
    """Fewer frames than the width: derivative of one polynomial fit over all frames (degree
    min(order, frames - 1)); with exactly `width` frames that is also what librosa computes."""
    y = _signal(n_samples, 3)
    (got,), _, _ = _run({"type": "logmel", "n_mels": 8, "deltas": 2}, [y])
    base, d1, d2 = got[:, :8], got[:, 8:16], got[:, 16:]
    t = np.arange(len(base))
    for order, delta in ((1, d1), (2, d2)):
        degree = min(order, len(base) - 1)
        ref = np.zeros_like(base, dtype=np.float64)
        if degree >= order:
            for d in range(base.shape[1]):
                poly = np.polyder(np.polyfit(t, base[:, d].astype(np.float64), degree), order)
                ref[:, d] = np.polyval(poly, t)
        np.testing.assert_allclose(delta, ref, atol=1e-4, rtol=0)
    if len(base) == 9:
        np.testing.assert_allclose(d1, librosa.feature.delta(base.T).T, atol=1e-4)


def test_batched_equals_one_by_one(signals):
    modules = build_frontends(parse_config(CONFIG))
    with torch.inference_mode():
        for module in modules.values():
            feats, lengths = module(*_batch(signals))
            for i, y in enumerate(signals):
                alone, n = module(*_batch([y]))
                assert int(n[0]) == int(lengths[i])
                np.testing.assert_allclose(feats[i, :lengths[i]].numpy(), alone[0].numpy(), rtol=1e-5, atol=1e-5)


def test_concat_stacks_parts_in_order(signals):
    utts, _, _ = _run(CONFIG["streams"]["lld"], signals[:2])
    zcr, _, _ = _run({"type": "zcr"}, signals[:2])
    mfcc, _, _ = _run({"type": "mfcc", "n_mfcc": 13, "deltas": 2}, signals[:2])
    assert utts[0].shape[1] == 1 + 1 + 1 + 39
    np.testing.assert_allclose(utts[1][:, :1], zcr[1])
    np.testing.assert_allclose(utts[1][:, 3:], mfcc[1], atol=1e-5)


# --- configs ------------------------------------------------------------------------------------

def test_defaults_are_documented_in_dataclasses():
    mel, mfcc = LogMelConfig(), MfccConfig()
    assert (mel.n_mels, mel.win_length, mel.hop_length, mel.n_fft, mel.fmin, mel.fmax, mel.window,
            mel.log_offset, mel.deltas, mel.delta_width) == (64, 0.025, 0.010, 512, 0.0, None, "hann", 1e-6, 0, 9)
    assert (mfcc.n_mfcc, mfcc.amin, mfcc.top_db) == (40, 1e-10, 80.0)


def test_resolved_config_round_trips():
    cfg = parse_config(CONFIG)
    resolved = cfg.to_dict()
    assert resolved["streams"]["logmel"]["n_fft"] == 512
    assert resolved["streams"]["lld"]["parts"][3]["n_mfcc"] == 13
    assert parse_config(yaml.safe_load(yaml.safe_dump(resolved))).to_dict() == resolved


@pytest.mark.parametrize("doc, message", [
    ({"streams": {"a": {"type": "logmel", "n_mel": 40}}}, r"streams\.a: unknown option\(s\) n_mel for type 'logmel'"),
    ({"streams": {"a": {"type": "fbank"}}}, r"streams\.a: unknown stream type 'fbank'"),
    ({"streams": {"a": {"n_mels": 40}}}, r"a mapping with a 'type'"),
    ({"streams": {"a": {"type": "mfcc", "deltas": 3}}}, r"deltas must be 0, 1 or 2"),
    ({"streams": {"a": {"type": "mfcc", "delta_width": 4}}}, r"delta_width must be an odd number"),
    ({"streams": {"a": {"type": "logmel", "n_mels": "64"}}}, r"streams\.a\.n_mels: expected int, got '64'"),
    ({"streams": {"a": {"type": "logmel", "n_fft": 256}}}, r"n_fft \(256\) must be >= win_length"),
    ({"streams": {"a": {"type": "mfcc", "n_mfcc": 80}}}, r"n_mfcc must be in 1\.\.n_mels"),
    ({"streams": {"a": {"type": "logmel", "fmax": 9000}}}, r"fmax <= sample_rate / 2"),
    ({"streams": {"a": {"type": "logmel", "window": "kaiser"}}}, r"window must be one of hann, hamming"),
    ({"streams": {"a": {"type": "logmel", "scale": "ln"}}}, r"scale must be one of log, db, not 'ln'"),
    ({"streams": {"a": {"type": "logmel", "scale": "db", "top_db": -1.0}}}, r"top_db must be >= 0 or null"),
    ({"streams": {"a": {"type": "concat", "parts": [{"type": "zcr", "hop_length": 0.02}, {"type": "energy"}]}}},
     r"all parts must share hop_length"),
    ({"streams": {"a": {"type": "concat", "parts": [{"type": "zcr", "bogus": 1}]}}},
     r"streams\.a\.parts\[0\]: unknown option\(s\) bogus"),
    ({"streams": {}}, r"'streams' must be a non-empty mapping"),
    ({"sample_rate": 16000, "stream": {}}, r"unknown key\(s\) stream"),
    ({"sample_rate": "16k", "streams": {"a": {"type": "zcr"}}}, r"sample_rate must be a positive integer"),
    ({"sample_rate": 100, "streams": {"a": {"type": "zcr"}}}, r"sample_rate 100 Hz is below 8000 Hz"),
    ({"streams": {"a": {"type": "logmel", "n_mels": 2000}}},
     r"n_mels \(2000\) must be <= the 257 FFT bins of n_fft 512; lower n_mels or raise n_fft"),
    ({"streams": {"a": {"type": "mfcc", "n_mels": 200}}},   # fewer than the bins, but the lowest filters fall between two
     r"n_mels \(200\) is too many for n_fft 512 between fmin and fmax \(0-8000 Hz\): 2 mel filter\(s\) would cover"),
    ({"sample_rate": 8000, "streams": {"a": {"type": "logmel", "fmax": 6000.0}}}, r"fmax <= sample_rate / 2 \(4000\)"),
    ({"streams": {"a/b": {"type": "zcr"}}}, r"stream name 'a/b'"),
])
def test_bad_configs_are_clear_errors(doc, message):
    with pytest.raises(FeatureError, match=message):
        parse_config(doc)


def test_the_most_mel_bands_without_an_empty_filter_pass():
    from sertk.features.streams.melscale import empty_filters
    assert parse_config({"streams": {"a": {"type": "logmel", "n_mels": 195}}}).streams["a"].n_mels == 195
    assert empty_filters(SR, 512, 195) == 0 and empty_filters(SR, 512, 196) == 1   # where librosa starts to warn
    assert parse_config({"sample_rate": 8000, "streams": {"a": {"type": "logmel", "n_mels": 64}}}).sample_rate == 8000


def test_parse_stream_accepts_parsed_config():
    cfg = parse_stream({"type": "mfcc", "n_mfcc": 13}, SR)
    assert parse_stream(cfg, SR) == cfg


# --- extraction to a dump -----------------------------------------------------------------------

@pytest.fixture
def feat_data(emodb_dir):
    """The EmoDB replica data dir with varied durations (one shorter than n_fft, several below the
    delta width) and utt2dur to match."""
    dd = DataDir.load(emodb_dir, audio="none")
    durations = {}
    for i, utt in enumerate(dd.utts):
        seconds = [0.0125, 0.04, 0.3, 0.55, 0.1, 0.21][i % 6]
        write_wav(dd.tables["wav.scp"][utt], seconds=seconds, seed=i, freq=150.0 + 10 * i)
        durations[utt] = f"{seconds:.4f}"
    (emodb_dir / "utt2dur").write_text("".join(f"{u} {d}\n" for u, d in sorted(durations.items())))
    return emodb_dir


def _arrays(dump, stream):
    return {utt: np.array(x) for utt, x in load_feats(dump, stream).items()}


def test_dump_layout_and_kaldiio_round_trip(feat_data, tmp_path):
    out = tmp_path / "dump"
    report = extract_features(feat_data, CONFIG, out, batch_size=4)
    dd = DataDir.load(feat_data)
    assert not report.skipped and report.utts == len(dd.utts) == 28
    modules = build_frontends(parse_config(CONFIG))
    for name, module in modules.items():
        scp = (out / name / "feats.scp").read_text().splitlines()
        assert [line.split()[0] for line in scp] == dd.utts            # sorted by utterance
        assert all(str(out.resolve() / name / "feats.1.ark:") in line for line in scp)
        counts = num_frames(out, name)
        feats = dict(kaldiio.load_scp(str(out / name / "feats.scp")))   # plain kaldiio, as a Kaldi user would
        for utt in dd.utts:
            y = load_audio(dd.tables["wav.scp"][utt], SR)
            with torch.inference_mode():
                ref, n = module(*_batch([y]))
            assert feats[utt].dtype == np.float32 and feats[utt].shape == (1 + len(y) // HOP, module.dim)
            assert counts[utt] == feats[utt].shape[0] == int(n[0])
            np.testing.assert_allclose(feats[utt], ref[0].numpy(), rtol=1e-5, atol=1e-5)
    doc = yaml.safe_load((out / "features.yaml").read_text())
    assert doc["streams"] == parse_config(CONFIG).to_dict()["streams"]
    assert doc["dump"]["dims"] == {"logmel": 120, "lld": 42} and doc["dump"]["utterances"] == 28
    assert doc["dump"]["frame_shift"] == {"logmel": 0.01, "lld": 0.01}
    assert {s.name: (s.utts, s.dim) for s in report.streams} == {"logmel": (28, 120), "lld": (28, 42)}


def test_two_jobs_give_the_same_arrays(feat_data, tmp_path):
    extract_features(feat_data, CONFIG, tmp_path / "nj1", nj=1, batch_size=4)
    report = extract_features(feat_data, CONFIG, tmp_path / "nj2", nj=2, batch_size=4)
    assert report.nj == 2
    for name in CONFIG["streams"]:
        assert sorted((tmp_path / "nj2" / name).glob("feats.*.ark")) == \
            [tmp_path / "nj2" / name / "feats.1.ark", tmp_path / "nj2" / name / "feats.2.ark"]
        one, two = _arrays(tmp_path / "nj1", name), _arrays(tmp_path / "nj2", name)
        assert one.keys() == two.keys()
        for utt in one:
            np.testing.assert_array_equal(one[utt], two[utt])


def test_rerun_skips_and_changes_rebuild(feat_data, tmp_path):
    out = tmp_path / "dump"
    extract_features(feat_data, CONFIG, out)
    ark = out / "logmel" / "feats.1.ark"
    stamp = ark.stat().st_mtime_ns
    again = extract_features(feat_data, CONFIG, out)
    assert again.skipped and again.utts == 28 and ark.stat().st_mtime_ns == stamp
    assert {s.name: s.dim for s in again.streams} == {"logmel": 120, "lld": 42}

    changed = {**CONFIG, "streams": {"logmel": {"type": "logmel", "n_mels": 20}}}
    rebuilt = extract_features(feat_data, changed, out)
    assert not rebuilt.skipped and sorted(p.name for p in out.iterdir()) == ["features.yaml", "logmel"]
    assert next(iter(load_feats(out, "logmel").values())).shape[1] == 20

    dd = DataDir.load(feat_data)
    write_wav(dd.tables["wav.scp"][dd.utts[0]], seconds=0.2, seed=99)   # new audio under the same path
    assert not extract_features(feat_data, changed, out).skipped

    dd.select(dd.utts[:10]).save(tmp_path / "fewer")
    fewer = extract_features(tmp_path / "fewer", changed, out)
    assert not fewer.skipped and len(num_frames(out, "logmel")) == 10


def test_failure_midway_leaves_the_existing_dump_unchanged(feat_data, tmp_path, monkeypatch):
    out = tmp_path / "dump"
    extract_features(feat_data, CONFIG, out, batch_size=4)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    calls = []

    def failing_load(path, sr):
        calls.append(path)
        if len(calls) > 10:
            raise RuntimeError("disk went away")
        return load_audio(path, sr), sr

    monkeypatch.setattr(extract_jobs, "load_audio_and_rate", failing_load)   # where the jobs read audio
    changed = {**CONFIG, "streams": {"logmel": {"type": "logmel", "n_mels": 20}}}
    with pytest.raises(RuntimeError, match="disk went away"):
        extract_features(feat_data, changed, out, batch_size=4)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".dump")] == []   # no temp dirs left


def test_corrupt_audio_stops_naming_the_file(feat_data, tmp_path):
    dd = DataDir.load(feat_data)
    bad = dd.tables["wav.scp"][dd.utts[5]]
    Path(bad).write_bytes(b"RIFF not really a wav file")
    with pytest.raises(AudioError, match=rf"{bad}: not a readable audio file"):
        extract_features(feat_data, CONFIG, tmp_path / "dump")
    assert not (tmp_path / "dump").exists()


def test_missing_audio_without_utt2dur_names_the_file(feat_data, tmp_path):
    dd = DataDir.load(feat_data)
    missing = dd.tables["wav.scp"][dd.utts[3]]
    (feat_data / "utt2dur").unlink()
    Path(missing).unlink()
    with pytest.raises(AudioError, match=rf"{missing}: no such audio file"):
        extract_features(feat_data, CONFIG, tmp_path / "dump")
    assert not (tmp_path / "dump").exists()


def test_refuses_to_replace_a_folder_that_is_not_a_dump(feat_data, tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="holds .notes.txt., which a feature dump does not contain"):
        extract_features(feat_data, CONFIG, tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error(feat_data, tmp_path):
    with pytest.raises(DeviceError, match="--device cuda: CUDA is not available"):
        extract_features(feat_data, CONFIG, tmp_path / "dump", device="cuda")
    with pytest.raises(DeviceError, match="is not a device; give cpu, cuda or cuda:N"):
        extract_features(feat_data, CONFIG, tmp_path / "dump", device="gpu")


def test_unknown_stream_in_dump(feat_data, tmp_path):
    extract_features(feat_data, CONFIG, tmp_path / "dump")
    with pytest.raises(FeatureError, match=r"no feature stream 'mfcc' \(streams: lld, logmel\)"):
        load_feats(tmp_path / "dump", "mfcc")


# --- damaged dumps: one FeatureError naming the utterance, never kaldiio's AssertionError ---------

def _small_dump(folder: Path, arrays) -> Path:
    """A dump of one stream 's' holding `arrays` (utt -> [frames, dim]) in one ark, written as extract writes it."""
    from sertk.features.storage import ArkWriter, write_dump_config, write_stream_index
    (folder / "s").mkdir(parents=True)
    with ArkWriter(folder / "s" / "feats.1.ark") as ark:
        for utt in sorted(arrays):
            ark.write(utt, arrays[utt])
    write_stream_index(folder / "s", folder / "s", ark.entries)
    write_dump_config(folder, {"sample_rate": SR, "streams": {}, "dump": {"dims": {"s": 4}}})
    return folder


def _damage_scp(dump: Path, utt: str, entry: str) -> None:
    scp = dump / "s" / "feats.scp"
    scp.write_text("".join(f"{u} {entry if u == utt else e}\n" for u, e in
                           (line.split() for line in scp.read_text().splitlines())))


@pytest.fixture
def small_dump(tmp_path):
    rng = np.random.default_rng(0)
    return _small_dump(tmp_path / "dump", {u: rng.standard_normal((30, 4)).astype(np.float32) for u in "abc"})


def test_a_good_dump_reads_in_the_callers_order(small_dump):
    from sertk.features.storage import read_feats
    read = read_feats(small_dump, "s", ["c", "a"])
    assert list(read) == ["c", "a"]
    np.testing.assert_array_equal(read["a"], kaldiio.load_scp(str(small_dump / "s" / "feats.scp"))["a"])


def test_an_ark_cut_short_or_an_offset_past_its_end_names_the_utterance(small_dump):
    from sertk.features.storage import feats_index, read_feats
    ark = small_dump / "s" / "feats.1.ark"
    scp = small_dump / "s" / "feats.scp"
    index = feats_index(small_dump, "s")
    size = ark.stat().st_size
    _damage_scp(small_dump, "a", f"{ark}:{size + 1000}")
    with pytest.raises(FeatureError, match=rf"^{scp}: utterance 'a' cannot be read from {ark}:{size + 1000} \(offset "
                                           rf"{size + 1000} is past the end of the ark, {size} bytes long\); the dump "
                                           r"is damaged: extract the features again \(sertk features extract\)$"):
        read_feats(small_dump, "s", ["a", "b"])
    _damage_scp(small_dump, "a", index["a"])
    b_offset = int(index["b"].rpartition(":")[2])
    ark.write_bytes(ark.read_bytes()[:b_offset + 40])   # b's matrix cut in the middle, c's gone
    with pytest.raises(FeatureError, match=rf"utterance 'b' cannot be read from {ark}:{b_offset} \(no whole Kaldi "
                                           rf"matrix at offset {b_offset}: the ark is cut short or the offset is wrong\)"):
        read_feats(small_dump, "s", ["a", "b"])
    assert list(read_feats(small_dump, "s", ["a"])) == ["a"]   # what is whole still reads
    _damage_scp(small_dump, "a", f"{ark}:0")   # the utterance id, not a matrix
    with pytest.raises(FeatureError, match=r"utterance 'a' cannot be read .* \(no whole Kaldi matrix at offset 0:"):
        read_feats(small_dump, "s", ["a"])
    ark.unlink()
    with pytest.raises(FeatureError, match=rf"utterance 'a' cannot be read from {ark}:0 \(no ark file {ark}\)"):
        read_feats(small_dump, "s", ["a"])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_features_that_are_not_finite_name_the_utterance_and_the_dump(bad, tmp_path):
    from sertk.features.storage import read_feats
    good = np.zeros((5, 4), dtype=np.float32)
    broken = good.copy()
    broken[2, 1:3] = bad
    dump = _small_dump(tmp_path / "dump", {"a": good, "b": broken})
    with pytest.raises(FeatureError, match=rf"^{dump / 's' / 'feats.scp'}: utterance 'b' has 2 non-finite value\(s\) "
                                           r"\(NaN or Inf\) among its 20 features; the dump is damaged"):
        read_feats(dump, "s", ["a", "b"])
    assert list(read_feats(dump, "s", ["a"])) == ["a"]


# --- CLI ----------------------------------------------------------------------------------------

def _conf_file(tmp_path, doc=CONFIG):
    path = tmp_path / "features.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_times_real_time_keeps_two_figures_below_ten():
    from sertk.features.cli import _times_real_time
    assert [_times_real_time(4.5, s) for s in (23.49, 4.0, 0.45, 0.01, 0.0)] == ["0.19x", "1.1x", "10x", "450x", "-"]


def test_cli_extract_prints_per_stream_summary_then_skips(feat_data, tmp_path):
    args = ["extract", str(feat_data), str(tmp_path / "dump"), "--conf", str(_conf_file(tmp_path)),
            "--device", "cpu", "--batch-size", "8"]
    result = CliRunner().invoke(features, args)
    assert result.exit_code == 0, result.output
    assert "28 utterances" in result.output and "device cpu, nj 1" in result.output
    frames = sum(num_frames(tmp_path / "dump", "logmel").values())
    assert f"logmel: 28 utts, {frames} frames, dim 120, " in result.output
    assert f"lld: 28 utts, {frames} frames, dim 42, " in result.output
    assert "x real time" in result.output and "audio loading" in result.output and "set-up" in result.output
    again = CliRunner().invoke(features, args)
    assert again.exit_code == 0 and "up to date (same config and utterances), skipped" in again.output
    # a damaged ark is extracted again, not reused (reading it would say: extract again)
    ark = next((tmp_path / "dump" / "lld").glob("*.ark"))
    size = ark.stat().st_size
    with open(ark, "r+b") as f:
        f.truncate(size // 2)
    rebuilt = CliRunner().invoke(features, args)
    assert rebuilt.exit_code == 0 and "skipped" not in rebuilt.output and ark.stat().st_size == size
    ark.unlink()
    assert "skipped" not in CliRunner().invoke(features, args).output and ark.stat().st_size == size
    # a dump from before the sizes were recorded is checked for what its index names, and rebuilt without one
    doc = yaml.safe_load((tmp_path / "dump" / "features.yaml").read_text())
    del doc["dump"]["ark_bytes"]
    (tmp_path / "dump" / "features.yaml").write_text(yaml.safe_dump(doc))
    assert "up to date" in CliRunner().invoke(features, args).output
    (tmp_path / "dump" / "lld" / "feats.scp").unlink()
    rebuilt = CliRunner().invoke(features, args)
    assert rebuilt.exit_code == 0 and "up to date" not in rebuilt.output
    assert (tmp_path / "dump" / "lld" / "feats.scp").is_file()


def _sertk(*args):
    """The features group under the sertk error handling, as `sertk features ...` runs it."""
    root = SertkGroup("sertk", commands={"features": features})
    return CliRunner().invoke(root, ["features", *map(str, args)])


def test_cli_bad_config_is_one_line(feat_data, tmp_path, user_error):
    conf = _conf_file(tmp_path, {"streams": {"x": {"type": "fbank"}}})
    message = user_error(_sertk("extract", feat_data, tmp_path / "dump", "--conf", conf))
    assert message == f"{conf}: streams.x: unknown stream type 'fbank'; known: logmel, mfcc, energy, " \
                      "log_energy, zcr, concat, opensmile_lld, opensmile_functionals, ssl, ssl_stats"


@pytest.mark.parametrize("doc, message", [
    ({"streams": {"a": {"type": "logmel", "hop_length": float("nan")}}}, "hop_length must be a finite number, not nan"),
    ({"streams": {"a": {"type": "logmel", "win_length": float("inf")}}}, "win_length must be a finite number, not inf"),
    ({"sample_rate": 100, "streams": {"a": {"type": "logmel"}}}, "sample_rate 100 Hz is below 8000 Hz"),
    ({"streams": {"a": {"type": "logmel", "n_mels": 2000}}}, "n_mels (2000) must be <= the 257 FFT bins"),
    ({"streams": {"a": {"type": "logmel", "n_mels": 220}}}, "n_mels (220) is too many for n_fft 512"),
])
def test_cli_feature_config_out_of_range_is_one_line_without_a_warning(doc, message, feat_data, tmp_path, user_error):
    """They used to be accepted silently (sample_rate) or print librosa's multi-line empty-filter warning."""
    conf = _conf_file(tmp_path, doc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a warning would be an exception here, not the user error below
        assert message in user_error(_sertk("extract", feat_data, tmp_path / "dump", "--conf", conf))
    assert not (tmp_path / "dump").exists()


def test_cli_audio_error_is_one_line(feat_data, tmp_path, user_error):
    dd = DataDir.load(feat_data)
    bad = dd.tables["wav.scp"][dd.utts[0]]
    Path(bad).write_bytes(b"garbage")
    message = user_error(_sertk("extract", feat_data, tmp_path / "dump", "--conf", _conf_file(tmp_path)))
    assert message.startswith(f"{bad}: not a readable audio file")
    assert not (tmp_path / "dump").exists()


def test_features_group_is_a_click_group():
    assert isinstance(features, click.Group) and "extract" in features.commands


def test_batches_are_sorted_by_length_and_capped():
    durations = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 30.0, "e": 0.5}
    assert plan_batches(durations, 2, 10.0) == [["e", "a"], ["b", "c"], ["d"]]
    assert plan_batches(durations, 8, 5.0) == [["e", "a"], ["b"], ["c"], ["d"]]


# --- SD-CAFF's front-end options: reflect padding, deltas across coefficients, chained deltas ------

SD_CAFF_MFCC = {"type": "mfcc", "n_mfcc": 20, "n_mels": 128, "n_fft": 2048, "win_length": 0.048,
                "hop_length": 0.024, "pad_mode": "reflect"}


def test_reflect_padding_matches_librosa_per_utterance(signals):
    # 300 and 700 samples are shorter than n_fft / 2: numpy's reflection folds back again
    utts, _, _ = _run(SD_CAFF_MFCC, signals)
    for y, got in zip(signals, utts):
        ref = _quiet(librosa.feature.mfcc, y=y, sr=SR, n_mfcc=20, n_fft=2048, win_length=768, hop_length=384,
                     pad_mode="reflect").T
        np.testing.assert_allclose(got, ref, atol=2e-3, rtol=0)


def test_coefficient_axis_and_chained_deltas_match_librosa(signals):
    spec = {**SD_CAFF_MFCC, "deltas": 2, "delta_axis": "coefficient", "delta_chain": True}
    chained, _, _ = _run(spec, signals)
    direct, _, _ = _run({**spec, "delta_chain": False}, signals)
    for y, got, got_direct in zip(signals, chained, direct):
        m = _quiet(librosa.feature.mfcc, y=y, sr=SR, n_mfcc=20, n_fft=2048, win_length=768, hop_length=384,
                   pad_mode="reflect")
        d = librosa.feature.delta(m, axis=-2)
        np.testing.assert_allclose(got, np.concatenate([m, d, librosa.feature.delta(d, axis=-2)]).T, atol=2e-3)
        np.testing.assert_allclose(got_direct[:, 40:], librosa.feature.delta(m, axis=-2, order=2).T, atol=2e-3)


def test_new_front_end_options_are_checked():
    for option, message in (({"pad_mode": "edge"}, "pad_mode must be one of constant, reflect"),
                            ({"delta_axis": "freq"}, "delta_axis must be one of time, coefficient")):
        with pytest.raises(FeatureError, match=message):
            parse_config({"streams": {"a": {"type": "mfcc", **option}}})
