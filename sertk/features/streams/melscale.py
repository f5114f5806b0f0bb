"""librosa's mel filterbank (`librosa.filters.mel`) in numpy alone, equal to it to the bit.

Importing librosa.filters loads scipy.signal and numba: 1.6 s of every stage-2 process on a 2-core CPU,
five times the 0.3 s that EmoDB's log-mel takes to compute (benchmarks/features.py --processes). The
formulas are librosa 0.11's (Slaney's mel scale, or HTK's; Slaney's area normalisation or none);
tests/test_streams.py compares the two.
"""
import warnings
from typing import Optional

import numpy as np

# Slaney's scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above it
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz, htk: bool = False) -> np.ndarray:
    hz = np.asanyarray(hz, dtype=float)
    if htk:
        return 2595.0 * np.log10(1.0 + hz / 700.0)
    mels = hz / _F_SP
    log_part = hz >= _MIN_LOG_HZ
    return np.where(log_part, _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP, mels)


def mel_to_hz(mels, htk: bool = False) -> np.ndarray:
    mels = np.asanyarray(mels, dtype=float)
    if htk:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    return np.where(mels >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (mels - _MIN_LOG_MEL)), _F_SP * mels)


def mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: Optional[float] = None,
                   htk: bool = False, norm: Optional[str] = "slaney") -> np.ndarray:
    """[n_mels, 1 + n_fft // 2] float32 triangular filters, as librosa.filters.mel(...) returns them."""
    weights, mel_f = _triangles(sr, n_fft, n_mels, fmin, fmax, htk)
    if norm == "slaney":   # constant energy per channel
        weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    elif norm is not None:
        raise ValueError(f"norm must be 'slaney' or None, not {norm!r}")
    if _empty(weights, mel_f):
        warnings.warn("Empty filters detected in mel frequency basis. Some channels will produce empty responses. "
                      "Try increasing your sampling rate (and fmax) or reducing n_mels.", stacklevel=2)
    return weights


def empty_filters(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: Optional[float] = None,
                  htk: bool = False) -> int:
    """How many of the filters cover no FFT bin (those `mel_filterbank` warns of, as librosa does): too many
    mel bands for the FFT's resolution between fmin and fmax. Their channels would be constant."""
    return _empty(*_triangles(sr, n_fft, n_mels, fmin, fmax, htk))


def _triangles(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: Optional[float], htk: bool):
    """The filters before area normalisation, and the n_mels + 2 edge frequencies they are made from."""
    if fmax is None:
        fmax = sr / 2.0
    weights = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin, htk), hz_to_mel(fmax, htk), n_mels + 2), htk)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    for i in range(n_mels):
        # each filter rises from its lower neighbour's centre and falls to its upper neighbour's
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    return weights, mel_f


def _empty(weights: np.ndarray, mel_f: np.ndarray) -> int:
    """librosa's test: a filter that starts above 0 Hz and is zero everywhere."""
    return int(np.count_nonzero(~((mel_f[:-2] == 0) | (weights.max(axis=1) > 0))))
