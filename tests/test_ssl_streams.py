"""The `ssl` feature stream (frozen HuBERT / WavLM / wav2vec 2.0 / Whisper-encoder hidden states) on tiny
random encoders saved like hub checkpoints, and the learned layer sum any model gets on all-layers dumps."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers import emodb_loso
from replicas import make_emodb
from sertk.audio import load_audio
from sertk.data.corpora import prepare_corpus
from sertk.decode.decoder import decode_data_dir
from sertk.errors import FeatureError
from sertk.features.extract import extract_features, load_config as load_feature_config
from sertk.features.storage import load_feats, read_dump_config
from sertk.features.streams import build_frontends, parse_config
from sertk.models import build_model
from sertk.models.layer_sum import LayerSum, with_layer_sums
from sertk.config.loading import load_config
from sertk.train.trainer import train

transformers = pytest.importorskip("transformers", reason="the ssl extra is not installed (pip install -e '.[dev]')")
from ssl_encoders import save_encoder, save_whisper  # noqa: E402  (needs transformers)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    base = tmp_path_factory.mktemp("encoders")
    return {kind: save_encoder(kind, base / kind) for kind in ("hubert", "wav2vec2", "wavlm")} | {
        "whisper": save_whisper(base / "whisper"),
        "no_preprocessor": save_encoder("hubert", base / "bare", do_normalize=None)}


def stream(model, **options):
    config = parse_config({"sample_rate": 16000, "streams": {"ssl": {"type": "ssl", "model": str(model), **options}}})
    return build_frontends(config)["ssl"], config.streams["ssl"]


def reference(model_dir, audio, layer, normalize):
    """The encoder's hidden state for one utterance, straight from transformers."""
    model = transformers.AutoModel.from_pretrained(model_dir).eval()
    x = torch.as_tensor(audio)
    if normalize:
        x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
    with torch.no_grad():
        return model(x[None], output_hidden_states=True).hidden_states[layer][0]


@pytest.mark.parametrize("kind", ["hubert", "wav2vec2", "wavlm"])
def test_frames_are_the_encoders_hidden_states_whatever_the_batch(kind, encoders):
    module, config = stream(encoders[kind], layer=1)
    assert (module.hop, config.window_length(16000)) == (320, 0.025)   # 400-sample windows every 320: 50 frames/s
    g = torch.Generator().manual_seed(0)
    lengths = [16000, 5000, 401]
    wave = torch.zeros(3, 16000)
    for i, n in enumerate(lengths):
        wave[i, :n] = torch.randn(n, generator=g)
    with torch.inference_mode():
        feats, frames = module(wave, torch.tensor(lengths))
    assert frames.tolist() == [1 + (n - 400) // 320 for n in lengths] == [49, 15, 1]
    for i, n in enumerate(lengths):
        expected = reference(encoders[kind], wave[i, :n].numpy(), 1, normalize=True)
        torch.testing.assert_close(feats[i, :frames[i]], expected, atol=1e-5, rtol=1e-4)
        assert not feats[i, frames[i]:].any()


def test_layer_choice_normalisation_and_short_audio(encoders):
    audio = torch.randn(1, 4000) * 3 + 1
    last, _ = stream(encoders["hubert"])
    first, _ = stream(encoders["hubert"], layer=0, normalize=False)
    with torch.inference_mode():
        torch.testing.assert_close(last(audio, torch.tensor([4000]))[0][0],
                                   reference(encoders["hubert"], audio[0].numpy(), -1, True), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(first(audio, torch.tensor([4000]))[0][0],
                                   reference(encoders["hubert"], audio[0].numpy(), 0, False), atol=1e-5, rtol=1e-4)
        feats, frames = last(torch.randn(1, 399), torch.tensor([399]))   # under one window: padded, counted
    assert frames.tolist() == [1]
    assert last.counts["padded_to_one_frame"] == 1 and first.counts["padded_to_one_frame"] == 0
    bare, _ = stream(encoders["no_preprocessor"], normalize=True)        # normalize given: no extractor needed
    assert bare.info.normalize


def test_all_layers_are_stored_side_by_side_and_the_dump_says_how_many(encoders, tmp_path):
    root = make_emodb(tmp_path / "emodb", speakers=["03"], texts=["a01"], emotions="WL")
    data = tmp_path / "data"
    prepare_corpus("emodb", root, data)
    conf = {"sample_rate": 16000, "streams": {"ssl": {"type": "ssl", "model": str(encoders["wavlm"]),
                                                      "all_layers": True}}}
    report = extract_features(data, conf, tmp_path / "dump", nj=2)
    info = read_dump_config(tmp_path / "dump")["dump"]
    assert info["layers"] == {"ssl": 3} and info["dims"] == {"ssl": 48} and info["frame_window"] == {"ssl": 0.025}
    assert info["frame_shift"] == {"ssl": 0.02} and report.streams[0].dim == 48
    feats = load_feats(tmp_path / "dump", "ssl")
    one, _ = stream(encoders["wavlm"], layer=2)
    utt = sorted(feats)[0]
    wav_scp = dict(line.split(maxsplit=1) for line in (data / "wav.scp").read_text().splitlines())
    audio = torch.from_numpy(load_audio(wav_scp[utt], 16000))
    with torch.inference_mode():
        last = one(audio[None], torch.tensor([len(audio)]))[0][0].numpy()
    np.testing.assert_allclose(np.asarray(feats[utt])[:, 32:], last, atol=1e-5)   # layer 2 is the third block


def test_whisper_encoder_frames_and_30_second_pieces(encoders):
    module, config = stream(encoders["whisper"], all_layers=True)
    assert module.dim == 16 * 3 and config.window_length(16000) is None   # centred frames, every 320 samples
    lengths = [16000 * 31, 8000]
    wave = torch.randn(2, lengths[0])
    with torch.inference_mode():
        feats, frames = module(wave, torch.tensor(lengths))
        alone = module(wave[1:, :8000], torch.tensor([8000]))[0][0]
    assert frames.tolist() == [1550, 25]                                  # 30 s -> 1500, then 1 s -> 50
    torch.testing.assert_close(feats[1, :25], alone)


@pytest.mark.parametrize("options, message", [
    ({"layer": 3}, r"layer must be in -3\.\.2 .*2 layers"),
    ({"deltas": 1}, "take no deltas"),
    ({"model": " "}, "must name an encoder, a hub model or a local directory"),
])
def test_bad_options_are_named(options, message, encoders):
    with pytest.raises(FeatureError, match=message):
        stream(**{"model": encoders["hubert"], **options})


def test_what_cannot_be_read_is_explained(encoders, tmp_path, monkeypatch):
    with pytest.raises(FeatureError, match="takes 16000 Hz audio; set the feature config's sample_rate"):
        build_frontends(parse_config({"sample_rate": 8000, "streams": {"ssl": {"type": "ssl",
                                                                              "model": str(encoders["hubert"])}}}))
    with pytest.raises(FeatureError, match="no feature extractor config .* set normalize: true or false"):
        stream(encoders["no_preprocessor"])
    transformers.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                            intermediate_size=8).save_pretrained(tmp_path / "bert")
    with pytest.raises(FeatureError, match="is a bert model; ssl streams take HuBERT, WavLM, wav2vec 2.0"):
        stream(tmp_path / "bert")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeatureError, match="the directory does not hold a transformers checkpoint"):
        stream(tmp_path / "empty")
    # offline, as these machines are (the flag is read when huggingface_hub is imported: set it there too),
    # so the test never waits on the network
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FeatureError, match=r"'sertk-test/not-cached'.*cannot be downloaded here.*huggingface-cli "
                                           r"download sertk-test/not-cached"):
        stream("sertk-test/not-cached")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(FeatureError, match=r"need the transformers package.*pip install 'sertk\[ssl\]'"):
        stream(encoders["hubert"])


def test_layer_sum_is_a_softmax_weighted_sum_in_front_of_the_model():
    inner = build_model("crnn", 3, stream="ssl", n_mels=4, channels=[4], lstm_hidden=4, attention_hidden=4)
    assert with_layer_sums(inner, {"ssl": 1, "other": 5}) is inner
    model = with_layer_sums(inner, {"ssl": 3}).eval()
    assert isinstance(model, LayerSum) and model.stream_dims == {"ssl": 12} and model.streams == ("ssl",)
    with torch.no_grad():
        model.layer_logits["ssl"].copy_(torch.tensor([0.0, 1.0, 2.0]))
    x = torch.randn(2, 10, 3, 4)
    mask = torch.ones(2, 10, dtype=torch.bool)
    w = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
    expected = inner({"ssl": (x * w[:, None]).sum(2), "mask": mask})["logits"]
    torch.testing.assert_close(model({"ssl": x.flatten(2), "mask": mask})["logits"], expected)


def test_crnn_trains_and_decodes_on_an_all_layers_ssl_stream(encoders, tmp_path):
    emodb_loso(tmp_path, texts=["a01"])
    features = {"sample_rate": 16000, "streams": {"ssl": {"type": "ssl", "model": str(encoders["hubert"]),
                                                          "all_layers": True}}}
    extract_features(tmp_path / "all", features, tmp_path / "dump")
    config = load_config(None, ["model.name=crnn", "model.stream=ssl", "model.n_mels=16", "model.channels=[4]",
                                "model.lstm_hidden=4", "model.attention_hidden=4", "train.epochs=2",
                                "train.batch_size=2", "segments.length=null", "features.tag=ssl"])
    fold = tmp_path / "loso" / "fold1"
    train(config, fold, tmp_path / "dump", tmp_path / "exp")
    best = torch.load(tmp_path / "exp" / "best.pt", weights_only=True)
    logits = best["model"]["layer_logits.ssl"]
    assert logits.shape == (3,) and logits.abs().sum() > 0       # the layer weights were learned
    assert any(k.startswith("model.blocks.") for k in best["model"])
    decode_data_dir(tmp_path / "exp", fold / "test", tmp_path / "dump", tmp_path / "exp" / "decode_test")
    hyp = (tmp_path / "exp" / "decode_test" / "hyp").read_text().split("\n")
    assert len([h for h in hyp if h]) == 3
    written = yaml.safe_load((tmp_path / "exp" / "config.yaml").read_text())
    assert written["model"]["stream"] == "ssl"


def test_shipped_whisper_layers_conf_holds_every_state_and_its_last_is_whisper_base_confs(
        whisper_base_folder, monkeypatch, tmp_path):
    """conf/features/whisper_base_layers.yaml on the real Whisper-base: 7 states of 512 side by side per frame,
    and the last of them is the frame whisper_base.yaml stores (the last layer, after the final layer norm)."""
    monkeypatch.setenv("SERTK_CACHE", str(whisper_base_folder.parent.parent))
    root = make_emodb(tmp_path / "emodb", speakers=["03"], texts=["a01"], emotions="W")
    data = tmp_path / "data"
    prepare_corpus("emodb", root, data)
    confs = Path(__file__).resolve().parents[1] / "egs" / "TEMPLATE" / "conf" / "features"
    for name in ("whisper_base_layers", "whisper_base"):
        extract_features(data, load_feature_config(confs / f"{name}.yaml"), tmp_path / name)
    assert read_dump_config(tmp_path / "whisper_base_layers")["dump"]["layers"] == {"whisper": 7}
    layers, last = (load_feats(tmp_path / name, "whisper") for name in ("whisper_base_layers", "whisper_base"))
    (utt, frames), = layers.items()
    frames = np.asarray(frames)
    assert frames.shape[1] == 7 * 512 and len(frames) == len(last[utt]) > 0
    np.testing.assert_allclose(frames[:, 6 * 512:], np.asarray(last[utt]), atol=1e-5)
    assert not np.allclose(frames[:, 5 * 512:6 * 512], frames[:, 6 * 512:], atol=1e-2)   # another state
