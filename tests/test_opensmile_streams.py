"""openSMILE streams (IS10 LLDs at STRL-SER's framing, per-segment functionals) and what the trainer
does with segment- and utterance-level streams."""
import sys

import numpy as np
import pytest
import yaml

from replicas import write_wav
from sertk.data.datadir import DataDir
from sertk.data.ops import subset
from sertk.errors import FeatureError, SertkError
from sertk.features.dataset import SegmentDataset
from sertk.features.extract import extract_features
from sertk.features.reading import StreamLayout
from sertk.features.segments import SegmentConfig, segment_bounds
from sertk.features.storage import load_feats, read_dump_config
from sertk.features.streams import parse_config

opensmile = pytest.importorskip("opensmile", reason="the opensmile extra is not installed (pip install -e '.[dev]')")

LLD = {"type": "opensmile_lld", "feature_set": "IS10", "frame_length": 0.128, "frame_shift": 0.032}
CONFIG = {"sample_rate": 16000, "streams": {
    "is10_lld": LLD,
    "is10_func": {"type": "opensmile_functionals", "span": "segment", "grid": "is10_lld",
                  "segment_length": 2.0, "segment_hop": 1.0, "tail": "end"},
    "is10_utt": {"type": "opensmile_functionals", "span": "utterance"}}}
SECONDS = [0.1, 0.5, 1.4, 2.0, 2.9, 3.5]   # shorter than two frames, one window, exactly one, several


@pytest.fixture
def smile_data(emodb_dir):
    dd = DataDir.load(emodb_dir, audio="none")
    utts = dd.utts[:len(SECONDS)]
    for i, (utt, seconds) in enumerate(zip(utts, SECONDS)):
        write_wav(dd.tables["wav.scp"][utt], seconds=seconds, seed=i, freq=120.0 + 40 * i)
    data = emodb_dir.parent / "smile_data"
    subset(dd, first=len(SECONDS)).save(data)
    (data / "utt2dur").unlink(missing_ok=True)
    return data, dict(zip(utts, SECONDS))


@pytest.fixture
def smile_dump(smile_data, tmp_path_factory):
    data, seconds = smile_data
    out = tmp_path_factory.mktemp("smile") / "dump"
    report = extract_features(data, CONFIG, out, nj=1)
    return data, seconds, out, report


@pytest.mark.parametrize("seconds,frames", [(1.2, 34), (1.4, 40), (1.6, 47), (1.8, 53), (2.0, 59), (2.2, 65)])
def test_segment_frames_of_uncentred_frames_are_the_spec_table(seconds, frames):
    """spec 2.3: T = floor((L - 0.128) / 0.032) + 1 (Tables 10 and 11; 53, not the printed 57)."""
    assert SegmentConfig(seconds, seconds / 2).frames(0.032, 0.128)[0] == frames
    assert SegmentConfig(seconds, seconds / 2).frames(0.032)[0] == round(seconds / 0.032)   # centred frames


def test_lld_frames_dims_and_columns(smile_dump):
    data, seconds, out, report = smile_dump
    lld = load_feats(out, "is10_lld")
    for utt, s in seconds.items():
        n = max(int(s * 16000), 2048 + 512)              # the 0.1 s utterance is padded to two frames
        assert lld[utt].shape == (1 + (n - 2048) // 512, 76)
    exact = {s: lld[u].shape[0] for u, s in seconds.items()}
    assert exact[1.4] == 40 and exact[2.0] == 59          # spec 8.3: the paper's shapes
    info = read_dump_config(out)["dump"]
    assert info["dims"] == {"is10_lld": 76, "is10_func": 1582, "is10_utt": 1582}
    assert info["frame_window"] == {"is10_lld": 0.128}
    assert info["levels"] == {"is10_func": "segment", "is10_utt": "utterance"}
    assert info["windows"] == {"is10_func": {"grid": "is10_lld", "length": 59, "hop": 31, "tail": "end"}}
    assert info["notes"] == {"is10_lld": {"padded_short": 1}, "is10_func": {"padded_short": 1},
                             "is10_utt": {"padded_short": 1}}
    assert [s.name for s in report.streams] == ["is10_lld", "is10_func", "is10_utt"]


def test_lld_columns_are_is10_lld_then_deltas():
    from sertk.features.streams.opensmile import LLD_LEVEL, OpensmileLldConfig, lld_config_file
    smile = opensmile.Smile(feature_set=str(lld_config_file(OpensmileLldConfig(), 16000)), feature_level=LLD_LEVEL)
    names = smile.feature_names
    assert len(names) == 76 and names[0] == "pcm_loudness_sma" and names[38] == "pcm_loudness_sma_de"
    assert names[32:38] == ["F0finEnv_sma", "voicingFinalUnclipped_sma", "F0final_sma", "jitterLocal_sma",
                            "jitterDDP_sma", "shimmerLocal_sma"]


def test_functionals_follow_the_segment_windows(smile_dump):
    """Row k is IS10 (opensmile's own FeatureSet.IS10) over the audio of window k's LLD frames."""
    data, seconds, out, _ = smile_dump
    func, whole = load_feats(out, "is10_func"), load_feats(out, "is10_utt")
    lld = load_feats(out, "is10_lld")
    reference = opensmile.Smile(opensmile.FeatureSet.IS10, opensmile.FeatureLevel.Functionals)
    wav = DataDir.load(data, audio="none").tables["wav.scp"]
    for utt in seconds:
        bounds = segment_bounds(lld[utt].shape[0], 59, 31, "end")
        assert func[utt].shape == (len(bounds), 1582) and whole[utt].shape == (1, 1582)
    utt = next(u for u, s in seconds.items() if s == 3.5)
    bounds = segment_bounds(lld[utt].shape[0], 59, 31, "end")
    assert bounds == [(0, 59), (31, 90), (47, 106)]           # 106 frames: hop 31, then one aligned to the end
    import soundfile as sf
    audio = sf.read(wav[utt], dtype="float32")[0]
    for k, (s, e) in enumerate(bounds):
        expected = reference.process_signal(audio[s * 512:(e - 1) * 512 + 2048], 16000).to_numpy()[0]
        np.testing.assert_allclose(func[utt][k], expected, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(whole[utt][0], reference.process_signal(audio, 16000).to_numpy()[0],
                               rtol=1e-4, atol=1e-3)


def test_the_dataset_gives_each_segment_its_window_row(smile_dump):
    data, seconds, out, _ = smile_dump
    dd = DataDir.load(data)
    streams = ["is10_lld", "is10_func", "is10_utt"]
    layout = StreamLayout.read(out, streams)
    assert layout.frames(SegmentConfig(2.0, 1.0)) == (59, 31)
    feats = {s: {u: np.array(x) for u, x in load_feats(out, s).items()} for s in streams}
    ds = SegmentDataset(dd, feats, 59, 31, lambda s, u, x: x, list(dd.labels.classes), levels=layout.levels)
    utt = next(u for u, s in seconds.items() if s == 3.5)
    items = [ds[i] for i, seg in enumerate(ds.segments) if seg.utt == utt]
    assert len(items) == 3
    for k, item in enumerate(items):
        assert item["is10_lld"].shape == (59, 76) and item["is10_func"].shape == (1582,)
        np.testing.assert_array_equal(item["is10_func"], feats["is10_func"][utt][k])
        np.testing.assert_array_equal(item["is10_utt"], feats["is10_utt"][utt][0])


def test_segments_other_than_the_functionals_windows_are_refused(smile_dump):
    _, _, out, _ = smile_dump
    layout = StreamLayout.read(out, ["is10_lld", "is10_func"])
    for seg in (SegmentConfig(2.0, 0.5), SegmentConfig(1.4, 1.0), SegmentConfig(2.0, 1.0, "drop"),
                SegmentConfig(None, 1.0)):
        with pytest.raises(FeatureError, match="stream 'is10_func' holds a row per window of 59 frames every 31"):
            layout.frames(seg)
    assert StreamLayout.read(out, ["is10_lld", "is10_utt"]).frames(SegmentConfig(1.4, 0.7)) == (40, 22)
    vectors = StreamLayout.read(out, ["is10_utt"])   # vectors only: one segment per utterance
    assert vectors.vectors_only and vectors.frames(SegmentConfig(None, 1.0)) == (None, None)
    with pytest.raises(FeatureError, match="set segments.length: null"):
        vectors.frames(SegmentConfig(1.4, 0.7))


def test_centre_cropped_training_is_refused_with_segment_level_streams(smile_dump):
    from sertk.config.loading import ConfigError
    from sertk.train.folddata import train_windows
    _, _, out, _ = smile_dump
    with pytest.raises(ConfigError, match=r"cuts windows that the segment-level stream\(s\) \['is10_func'\] hold"):
        train_windows({"train_windows": "center"}, StreamLayout.read(out, ["is10_lld", "is10_func"]))
    assert train_windows({"train_windows": "center"}, StreamLayout.read(out, ["is10_lld", "is10_utt"])) == "center"


def test_a_model_that_reads_a_stream_at_another_level_is_refused(smile_dump):
    from sertk.models import build_model
    _, _, out, _ = smile_dump
    StreamLayout.read(out, ["is10_lld", "is10_func"]).check_model(build_model("strl_ser", 4))
    with pytest.raises(FeatureError, match="model strl_ser reads 'is10_lld' as one vector per segment, but "
                                           "this dump holds it as frame-level rows"):
        StreamLayout.read(out, ["is10_lld", "is10_lld"]).check_model(build_model("strl_ser", 4, hsf_stream="is10_lld"))
    with pytest.raises(FeatureError, match="model crnn reads 'is10_func' as frames, but this dump holds it as "
                                           "segment-level rows"):
        StreamLayout.read(out, ["is10_func", "is10_lld"]).check_model(build_model("crnn", 4, stream="is10_func"))


def test_a_window_row_count_that_does_not_match_is_an_error(smile_dump):
    data, seconds, out, _ = smile_dump
    dd = DataDir.load(data)
    feats = {s: {u: np.array(x) for u, x in load_feats(out, s).items()} for s in ("is10_lld", "is10_func")}
    utt = next(u for u, s in seconds.items() if s == 3.5)
    feats["is10_func"][utt] = feats["is10_func"][utt][:2]
    with pytest.raises(SertkError, match=f"'{utt}': stream 'is10_func' has 2 segment-level row"):
        SegmentDataset(dd, feats, 59, 31, lambda s, u, x: x, list(dd.labels.classes),
                       levels={"is10_func": "segment"})


@pytest.mark.parametrize("stream,message", [
    ({**LLD, "feature_set": "IS09"}, "feature_set must be one of IS10"),
    ({**LLD, "deltas": 1}, "their own deltas"),
    ({**LLD, "frame_shift": 0.2}, "frame_length >= frame_shift"),
    ({"type": "concat", "parts": [LLD]}, "parts must be torch streams"),
    ({"type": "opensmile_functionals", "grid": "nope"}, "grid 'nope' must name an opensmile_lld stream"),
    ({"type": "opensmile_functionals", "span": "turn"}, "span must be one of segment, utterance"),
    ({"type": "opensmile_functionals", "grid": "is10_lld", "segment_length": 0.1},
     "at least one frame"),
])
def test_bad_stream_options_are_config_errors(stream, message):
    with pytest.raises(FeatureError, match=message):
        parse_config({"streams": {"is10_lld": LLD, "x": stream}})


def test_without_opensmile_the_error_says_how_to_install_it(smile_data, tmp_path, monkeypatch, user_error):
    monkeypatch.setitem(sys.modules, "opensmile", None)      # import opensmile raises ImportError
    for nj in (1, 2):
        with pytest.raises(FeatureError, match=r"need the opensmile package.*pip install 'sertk\[opensmile\]'"):
            extract_features(smile_data[0], {"streams": {"is10_lld": LLD}}, tmp_path / "dump", nj=nj)
        assert not (tmp_path / "dump").exists()
    parse_config(CONFIG)                                       # configs still parse and compare
    from click.testing import CliRunner
    from sertk.cli import main
    conf = tmp_path / "is10.yaml"
    conf.write_text(yaml.safe_dump(CONFIG))
    message = user_error(CliRunner().invoke(main, ["features", "extract", str(smile_data[0]), str(tmp_path / "d"),
                                                   "--conf", str(conf), "--nj", "2"]))
    assert message.startswith("openSMILE streams need the opensmile package")


def test_the_recipe_configs_parse(tmp_path):
    from recipes import REPO
    for name, seconds, frames in (("is10_2s", 2.0, 59), ("is10_1.4s", 1.4, 40)):
        doc = yaml.safe_load((REPO / "egs" / "TEMPLATE" / "conf" / "features" / f"{name}.yaml").read_text())
        streams = parse_config(doc).streams
        assert streams["is10_func"].segment_length == seconds
        assert streams["is10_func"].windows_info(16000)["length"] == frames
        assert streams["is10_lld"].dim == 76 and streams["is10_func"].dim == 1582
