import logging

import numpy as np
import pytest
import soundfile as sf

from replicas import write_wav
from sertk.audio import audio_info, load_audio
from sertk.errors import AudioError


def test_mono_16k_file_loads_unchanged(tmp_path):
    path = write_wav(tmp_path / "a.wav", seconds=0.5, sr=16000)
    x = load_audio(path, 16000)
    ref, _ = sf.read(str(path), dtype="float32")
    assert x.dtype == np.float32 and x.ndim == 1
    np.testing.assert_array_equal(x, ref)


def test_stereo_is_averaged(tmp_path):
    left = np.linspace(-0.5, 0.5, 1600, dtype=np.float32)
    right = np.full(1600, 0.25, dtype=np.float32)
    sf.write(str(tmp_path / "s.wav"), np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav", 16000), (left + right) / 2, atol=1e-7)


def test_resampling_keeps_duration_and_frequency(tmp_path):
    sr, f0 = 44100, 440.0
    t = np.arange(sr) / sr
    sf.write(str(tmp_path / "t.wav"), 0.5 * np.sin(2 * np.pi * f0 * t), sr, subtype="FLOAT")
    x = load_audio(tmp_path / "t.wav", 16000)
    assert abs(len(x) - 16000) <= 1
    peak_hz = np.argmax(np.abs(np.fft.rfft(x))) * 16000 / len(x)
    assert abs(peak_hz - f0) < 2


def test_flac_is_read(tmp_path):
    sf.write(str(tmp_path / "a.flac"), np.zeros(800) + 0.1, 8000)
    assert len(load_audio(tmp_path / "a.flac", 16000)) == 1600


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: no such audio file"):
        load_audio(tmp_path / "nope.wav")


def test_non_audio_file(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"RIFF garbage, not a wav")
    with pytest.raises(AudioError, match=r"x\.wav: not a readable audio file"):
        load_audio(tmp_path / "x.wav")
    with pytest.raises(AudioError, match="not a readable audio file"):
        audio_info(tmp_path / "x.wav")


def test_zero_length_file(tmp_path):
    sf.write(str(tmp_path / "z.wav"), np.zeros(0), 16000)
    with pytest.raises(AudioError, match="zero length"):
        load_audio(tmp_path / "z.wav")


def test_non_finite_samples(tmp_path):
    x = np.zeros(100, dtype=np.float32)
    x[10] = np.nan
    sf.write(str(tmp_path / "n.wav"), x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="non-finite"):
        load_audio(tmp_path / "n.wav")


def test_all_zero_file_warns_but_loads(tmp_path, caplog):
    sf.write(str(tmp_path / "s.wav"), np.zeros(160), 16000)
    with caplog.at_level(logging.WARNING, logger="sertk"):
        x = load_audio(tmp_path / "s.wav")
    assert len(x) == 160 and "all zeros" in caplog.text


def test_info_reports_duration(tmp_path):
    info = audio_info(write_wav(tmp_path / "a.wav", seconds=0.25, sr=8000, channels=2))
    assert (info.sample_rate, info.channels, info.num_frames) == (8000, 2, 2000)
    assert info.duration == pytest.approx(0.25)
