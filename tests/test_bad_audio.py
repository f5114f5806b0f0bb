"""Audio that decodes but holds less than it should (issue 24): a truncated file, a 10 ms file, digital silence.
`sertk infer` skips the too short and silent ones with a reason and decides the truncated one with a note;
`sertk features extract` extracts them all and counts each kind; and bad audio (missing, not audio, NaN) is
listed whole in one run instead of stopping at the first file."""
import csv
import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from replicas import make_emodb, speech_like, write_wav
from sertk.audio import MIN_SECONDS, read_audio, samples_digest, silence_reason, too_short_reason, truncation
from sertk.data.corpora import prepare_corpus
from sertk.data.protocols import make_folds
from sertk.features.extract import extract_features, min_audio_seconds
from sertk.features.streams import parse_config
from sertk.inference.pack import pack_experiment
from sertk.config.loading import load_config
from sertk.train.trainer import train

FEATURES = {"sample_rate": 16000, "streams": {"logmel": {"type": "logmel", "n_mels": 16}}}


def cut_in_half(path) -> Path:
    """Keep the header and the first half of the bytes: a copy cut off mid-transfer."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:len(data) // 2])
    return Path(path)


def wav_of(data_dir: Path):
    return dict(line.split(None, 1) for line in (data_dir / "wav.scp").read_text().splitlines())


# --- sertk.audio --------------------------------------------------------------------------------

@pytest.mark.parametrize("name, options", [("a.wav", {}), ("b.aiff", {}), ("c.wav", {"endian": "BIG"})])
def test_a_truncated_file_says_how_much_is_missing(tmp_path, name, options):
    path = tmp_path / name
    sf.write(str(path), speech_like(1.0), 16000, subtype="PCM_16", **options)
    assert read_audio(path).truncated is None
    audio = read_audio(cut_in_half(path))
    assert audio.duration == pytest.approx(0.5, abs=0.01)        # libsndfile reads it as far as it goes
    assert audio.truncated.startswith("truncated: the header promises ")
    assert "(about 1.00 s) but the file holds " in audio.truncated and "(0.50 s)" in audio.truncated


def test_a_streamed_header_and_other_formats_are_not_truncated(tmp_path):
    path = write_wav(tmp_path / "s.wav", seconds=0.5)
    data = bytearray(path.read_bytes())
    at = data.index(b"data")
    data[at + 4:at + 8] = struct.pack("<I", 0xFFFFFFFF)              # size left open by a streaming writer
    path.write_bytes(bytes(data))
    assert read_audio(path).truncated is None and read_audio(path).duration == pytest.approx(0.5)
    sf.write(str(tmp_path / "f.flac"), speech_like(0.5), 16000)
    assert truncation(tmp_path / "f.flac", 0.5) is None


def test_bytes_that_look_like_mp3_are_not_said_to_be_missing(tmp_path):
    """libsndfile's MP3 probe gives up on such bytes with "File does not exist or is not a regular file"."""
    from sertk.audio import audio_info
    from sertk.errors import AudioError
    fake = tmp_path / "fake.wav"
    fake.write_bytes(bytes([0xFF, 0xFB]) + bytes(range(256)) * 8)
    with pytest.raises(AudioError) as e:
        audio_info(fake)
    assert str(e.value).startswith(f"{fake}: not a readable audio file (") and "does not exist" not in str(e.value)
    with pytest.raises(AudioError, match="no such audio file"):
        audio_info(tmp_path / "gone.wav")


def test_too_short_and_silent_reasons():
    assert MIN_SECONDS == 0.025
    assert too_short_reason(0.01) == ("too short: 10.0 ms, under one 25 ms analysis window (no complete frame of "
                                      "signal)")
    assert too_short_reason(0.025) is None
    assert too_short_reason(0.03, 0.05).startswith("too short: 30.0 ms, under one 50 ms")
    assert silence_reason(0.0) == "silent: every sample is zero (digital silence)"
    assert silence_reason(3e-5) == "silent: peak level -90 dBFS, below -80 dBFS"
    assert silence_reason(1e-3) is None


def test_channels_that_cancel_out_are_said_to(tmp_path):
    """Anti-phase stereo (left = -right) mixes to silence: the reason says why, not just 'silent'."""
    from sertk.audio import read_audio, unusable_reason
    wave = speech_like(0.5)
    sf.write(str(tmp_path / "anti.wav"), np.stack([wave, -wave], axis=1), 16000, subtype="FLOAT")
    reason = unusable_reason(read_audio(tmp_path / "anti.wav"))
    assert reason.startswith("silent once its channels are averaged to mono: they cancel out (a channel peaks at ")
    assert reason.endswith("the mono mix is all zero); give one channel")
    sf.write(str(tmp_path / "zeros.wav"), np.zeros((8000, 2)), 16000)
    assert unusable_reason(read_audio(tmp_path / "zeros.wav")) == "silent: every sample is zero (digital silence)"


def test_the_minimum_is_one_analysis_window_of_the_features():
    assert min_audio_seconds(parse_config(FEATURES)) == 0.025
    long = {"sample_rate": 16000, "streams": {"m": {"type": "mfcc", "win_length": 0.064, "n_fft": 1024}}}
    assert min_audio_seconds(parse_config(long)) == 0.064


def test_samples_digest_sees_the_same_audio_in_another_container(tmp_path):
    wav = write_wav(tmp_path / "a.wav", seconds=0.3)
    samples, sr = sf.read(str(wav), dtype="int16")
    sf.write(str(tmp_path / "b.flac"), samples, sr)
    write_wav(tmp_path / "c.wav", seconds=0.3, seed=7)
    assert samples_digest(wav) == samples_digest(tmp_path / "b.flac") != samples_digest(tmp_path / "c.wav")


# --- sertk features extract ---------------------------------------------------------------------

@pytest.fixture
def conf(tmp_path) -> Path:
    path = tmp_path / "features.yaml"
    path.write_text(yaml.safe_dump(FEATURES))
    return path


def test_extract_counts_truncated_short_and_silent_files(emodb_dir, conf, sertk_cli, tmp_path):
    wav = wav_of(emodb_dir)
    cut_in_half(wav["emodb_03-03a01Aa"])
    sf.write(wav["emodb_08-08a01Aa"], np.full(160, 0.2), 16000)        # 10 ms
    sf.write(wav["emodb_09-09a01Aa"], np.zeros(4800), 16000)           # digital silence
    tone = 0.2 * np.sin(np.arange(2400) / 3)
    sf.write(wav["emodb_10-10a01Aa"], tone, 8000)                        # telephone rate: upsampled
    sf.write(wav["emodb_10-10a01Ea"], tone, 8000)
    result = sertk_cli("features", "extract", emodb_dir, tmp_path / "dump", "--conf", conf, "--device", "cpu")
    assert result.exit_code == 0, result.output
    counted = ["  audio files: 1 truncated (the header promises more audio than the file holds; extracted as far as "
               "it goes)",
               "  audio files: 1 too short (under one 25 ms analysis window; extracted, zero-padded by the frontends)",
               "  audio files: 1 silent (digital silence: peak below -80 dBFS; extracted)",
               "  audio files: 2 recorded below 16000 Hz (upsampled, nothing in the band above half their rate; "
               "extracted)"]
    for line in counted:
        assert line in result.stdout.splitlines(), result.stdout
    assert f"sertk: warning: {wav['emodb_03-03a01Aa']}: truncated: the header promises" in result.stderr
    assert (f"sertk: warning: {wav['emodb_08-08a01Aa']}: too short: 10.0 ms, under one 25 ms analysis window (no "
            "complete frame of signal) (utterance emodb_08-08a01Aa)") in result.stderr
    assert f"{wav['emodb_09-09a01Aa']}: audio is all zeros (digital silence)" in result.stderr
    doc = yaml.safe_load((tmp_path / "dump" / "features.yaml").read_text())
    assert "sertk: warning: 2 file(s) upsampled; the first: " in result.stderr   # one line for all of them
    assert "recorded at 8000 Hz, below the model's 16000 Hz" in result.stderr
    assert doc["dump"]["utterances"] == 28 and sorted(doc["dump"]["audio"].values()) == [1, 1, 1, 2]
    again = sertk_cli("features", "extract", emodb_dir, tmp_path / "dump", "--conf", conf, "--device", "cpu")
    assert "up to date" in again.stdout and counted[2] in again.stdout       # the counts stay in the summary


def _break_files(emodb_dir):
    """Three kinds of bad audio, in three speakers' files; (utt, message fragment) in utterance order."""
    wav = wav_of(emodb_dir)
    Path(wav["emodb_03-03a01Ea"]).unlink()
    Path(wav["emodb_08-08a01Ta"]).write_bytes(b"RIFF not really a wav file")
    x = np.full(4800, 0.1, np.float32)
    x[7] = np.nan
    sf.write(wav["emodb_10-10a01Wa"], x, 16000, subtype="FLOAT")
    return [("emodb_03-03a01Ea", f"{wav['emodb_03-03a01Ea']}: no such audio file"),
            ("emodb_08-08a01Ta", f"{wav['emodb_08-08a01Ta']}: not a readable audio file"),
            ("emodb_10-10a01Wa", f"{wav['emodb_10-10a01Wa']}: audio contains non-finite samples (NaN or Inf)")]


@pytest.mark.parametrize("nj, utt2dur", [(1, True), (1, False), (2, True)])
def test_extract_lists_every_bad_file_in_one_run(emodb_dir, conf, sertk_cli, user_error, tmp_path, nj, utt2dur):
    bad = _break_files(emodb_dir)
    if not utt2dur:
        (emodb_dir / "utt2dur").unlink()          # durations from the headers: the missing file fails there
    result = sertk_cli("features", "extract", emodb_dir, tmp_path / "dump", "--conf", conf, "--device", "cpu",
                       "--nj", nj)
    message = user_error(result)
    assert message.startswith(bad[0][1])
    assert bad[1][1] in message and bad[2][1] in message
    assert message.endswith("(3 of 28 audio file(s) cannot be used, so no dump was written; each is logged above)")
    for utt, fragment in bad:
        assert f"sertk: warning: bad audio of {utt}: {fragment}" in result.stderr
    assert not (tmp_path / "dump").exists()


def test_extract_names_the_first_three_and_counts_the_rest(emodb_dir, conf, sertk_cli, user_error, tmp_path):
    wav = wav_of(emodb_dir)
    for utt in sorted(wav)[:5]:
        Path(wav[utt]).write_bytes(b"")
    message = user_error(sertk_cli("features", "extract", emodb_dir, tmp_path / "dump", "--conf", conf,
                                   "--device", "cpu"))
    assert message.count("not a readable audio file") == 3
    assert "; and 2 more (5 of 28 audio file(s) cannot be used" in message


def test_a_split_job_lists_the_bad_files_of_its_speakers(emodb_dir, conf, sertk_cli, user_error, tmp_path):
    bad = _break_files(emodb_dir)
    args = ["features", "extract", emodb_dir, tmp_path / "dump", "--conf", conf, "--device", "cpu", "--nj", "2",
            "--batch-size", "7"]                  # one speaker per block: jobs of two speakers each
    # blocks of equal length go 03 -> job 1, 08 -> job 2, 09 -> job 1, 10 -> job 2
    first = user_error(sertk_cli(*args, "--job", 1))
    assert first == f"{bad[0][1]} (1 of 14 audio file(s) cannot be used, so no dump was written)"
    second = user_error(sertk_cli(*args, "--job", 2))
    assert second.startswith(bad[1][1]) and bad[2][1] in second
    assert second.endswith("(2 of 14 audio file(s) cannot be used, so no dump was written; each is logged above)")
    assert not list(tmp_path.glob("dump.split2/job*/done.json"))
    assert "has not finished" in user_error(sertk_cli(*args, "--merge"))


# --- sertk infer --------------------------------------------------------------------------------

TINY = ["model.name=crnn", "model.n_mels=16", "model.channels=[4,8]", "model.lstm_hidden=8",
        "model.attention_hidden=8", "train.epochs=1", "train.batch_size=4", "segments.length=0.3",
        "segments.hop=0.1", "features.tag=tiny"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("bad_audio_model")
    root = make_emodb(base / "emodb", speakers=["03", "08", "09"], texts=["a01"], emotions="WLA")
    make_folds(prepare_corpus("emodb", root, base / "all").datadir, "loso", base / "loso")
    extract_features(base / "all", FEATURES, base / "dump")
    exp = base / "exp" / "fold1"
    train(load_config(None, TINY), base / "loso" / "fold1", base / "dump", exp)
    pack_experiment(exp, base / "model.sertk", base / "dump")
    return base / "model.sertk"


def test_infer_skips_short_and_silent_inputs_and_notes_truncated_ones(model, sertk_cli, tmp_path):
    good = write_wav(tmp_path / "good.wav", seconds=1.0)
    cut = write_wav(tmp_path / "cut.wav", seconds=1.0)
    cut_in_half(cut)
    sf.write(str(tmp_path / "short.wav"), np.full(160, 0.2), 16000)                  # 10 ms
    sf.write(str(tmp_path / "zeros.wav"), np.zeros(16000), 16000)                    # digital silence
    sf.write(str(tmp_path / "hush.wav"), np.full(16000, 3e-5, np.float32), 16000, subtype="FLOAT")   # -90 dBFS
    inputs = [good, cut, tmp_path / "short.wav", tmp_path / "zeros.wav", tmp_path / "hush.wav"]
    result = sertk_cli("infer", model, *inputs, "--device", "cpu")
    assert result.exit_code == 3, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["id"] for r in rows] == [str(p) for p in inputs]
    assert rows[0]["label"] and rows[0]["note"] == ""
    assert rows[1]["label"] and rows[1]["note"].startswith("truncated: the header promises 32000 bytes of audio")
    assert rows[2]["label"] == "" and rows[2]["note"] == ("skipped: too short: 10.0 ms, under one 25 ms analysis "
                                                          "window (no complete frame of signal)")
    assert rows[3]["label"] == "" and rows[3]["note"] == "skipped: silent: every sample is zero (digital silence)"
    assert rows[4]["note"] == "skipped: silent: peak level -90 dBFS, below -80 dBFS"
    assert f"sertk: warning: skipped {tmp_path / 'short.wav'}: too short: 10.0 ms" in result.stderr
    assert f"sertk: warning: {cut}: truncated: the header promises" in result.stderr
    assert "3 input(s) skipped (1 too short, 2 silent); 1 truncated file(s) decided on what they hold" in result.stderr

    as_json = sertk_cli("-q", "infer", model, *inputs, "--device", "cpu", "--out", tmp_path / "r.json")
    assert as_json.exit_code == 3
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [r["id"] for r in doc["rows"]] == [str(good), str(cut)] and "note" in doc["rows"][1]
    assert [s["reason"].split(":")[0] for s in doc["skipped"]] == ["too short", "silent", "silent"]


def test_infer_notes_audio_recorded_below_the_models_rate(model, sertk_cli, tmp_path):
    """8 kHz audio is decided upsampled, but the model never saw audio without its 4-8 kHz band: a note on its
    rows, a warning and a count, exit 0 (it is not skipped)."""
    wide = write_wav(tmp_path / "wide.wav", seconds=1.0)
    samples, rate = sf.read(str(wide), dtype="float32")
    sf.write(str(tmp_path / "narrow.wav"), samples[::2], rate // 2)
    result = sertk_cli("infer", model, wide, tmp_path / "narrow.wav", "--device", "cpu")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    band = ("recorded at 8000 Hz, below the model's 16000 Hz: nothing above 4000 Hz, where the model was trained "
            "on audio up to 8000 Hz")
    assert rows[0]["note"] == "" and rows[1]["label"] and rows[1]["note"] == band
    assert f"sertk: warning: {tmp_path / 'narrow.wav'}: {band}" in result.stderr
    assert "1 file(s) recorded below the model's 16000 Hz, decided upsampled" in result.stderr


def test_infer_with_nothing_usable_is_one_error(model, sertk_cli, user_error, tmp_path):
    sf.write(str(tmp_path / "zeros.wav"), np.zeros(16000), 16000)
    assert user_error(sertk_cli("infer", model, tmp_path / "zeros.wav", "--device", "cpu")) == \
        "no results: all 1 input(s) were skipped"
