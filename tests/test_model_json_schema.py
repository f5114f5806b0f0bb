"""A packed model's description (sertk-model.json) checked when it is read (sertk.inference.pack_check: check_meta,
check_fit): crafted variants give `sertk pack --info` and `sertk infer` one line naming the key, never a
traceback; the weights must fit the model the description builds."""
import copy
import json
import zipfile

import pytest

from helpers import LOGMEL16, TINY_CRNN
from replicas import make_emodb
from sertk.data.corpora import prepare_corpus
from sertk.data.protocols import make_folds
from sertk.decode.decoder import decode_data_dir
from sertk.features.extract import extract_features
from sertk.inference.pack import pack_experiment
from sertk.inference.pack_check import check_meta
from sertk.inference.pack_file import read_meta, read_pack
from sertk.inference.pack_schema import META_SCHEMA
from sertk.inference.packed import META_MEMBER, WEIGHTS_MEMBER, PackError
from sertk.config.loading import load_config
from sertk.train.trainer import train

TINY = TINY_CRNN + ["train.epochs=1", "features.tag=tiny", "features.cmvn=speaker"]


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """(the pack's description, its weights' bytes, a wav to decide on): a fold trained, decoded and packed."""
    base = tmp_path_factory.mktemp("schema")
    root = make_emodb(base / "emodb", speakers=["03", "08", "09"], texts=["a01"], emotions="WA")
    make_folds(prepare_corpus("emodb", root, base / "all").datadir, "loso", base / "loso")
    extract_features(base / "all", LOGMEL16, base / "dump")
    exp = base / "exp" / "fold1"
    train(load_config(None, TINY), base / "loso" / "fold1", base / "dump", exp)
    for part in ("dev", "test"):
        decode_data_dir(exp, base / "loso" / "fold1" / part, base / "dump", exp / f"decode_{part}",
                        protocol_dir=base / "loso")
    pack_experiment(exp, base / "model.sertk")
    with zipfile.ZipFile(base / "model.sertk") as zf:
        meta, weights = json.loads(zf.read(META_MEMBER)), zf.read(WEIGHTS_MEMBER)
    assert meta["protocol"] and meta["metrics"]["test"] and meta["environment"]   # every section to vary
    return meta, weights, sorted((root / "wav").glob("*.wav"))[0]


def repack(path, meta, weights, text=None):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(META_MEMBER, text if text is not None else json.dumps(meta))
        zf.writestr(WEIGHTS_MEMBER, weights)
    return path


def changed(meta, key, value=None, drop=False):
    """A copy of `meta` with the dotted `key` set to `value` (or taken out)."""
    out = copy.deepcopy(meta)
    *parents, last = key.split(".")
    node = out
    for part in parents:
        node = node[part]
    if drop:
        del node[last]
    else:
        node[last] = value
    return out


# (key, value or DROP, what the one line says); the examples first
DROP = object()
CRAFTED = [
    ("format_version", "1", "'format_version' must be the integer 1, not \"1\""),
    ("classes", "anger", "'classes' must be a non-empty list of distinct names, not \"anger\""),
    ("classes", [], "'classes' must be a non-empty list"),
    ("classes", ["anger", "anger"], "'classes' must be a non-empty list of distinct names"),
    ("classes", DROP, "'classes' is missing"),
    ("config", DROP, "'config' is missing"),
    ("config", [], "'config' must be a mapping"),
    ("config.model", ["crnn"], "'config.model' must be a mapping"),
    ("config.model.name", None, "'config.model.name' must be a non-empty string, not null"),
    ("config.segments", None, "config: config section 'segments' must be a mapping of its keys, not null"),
    ("config.segments.hop", "0.1", "config: config key 'segments.hop' expects a float like 1.0, got '0.1'"),
    ("config.decode", [], "config: config section 'decode' must be a mapping of its keys, not []"),
    ("config.decode.rule", None, "config: decode.rule must be one of"),
    ("config.model.dropout", 2, r"config: model.dropout must be in [0, 1), not 2.0"),
    ("config.model.lstm_hidden", "8", "config: config key 'model.lstm_hidden' expects a int"),
    ("config.model.lstm_hidden", DROP, "weights.pt does not fit the model sertk-model.json describes (config.model, "
                                       "7 classes): lstm.weight_ih_l0 is (32, 32), the model's (256, 32)"),
    ("config.model.n_mels", DROP, "'features.dump.dims.logmel' is 16, but the model of config.model reads 64 per row"),
    ("model", "esernet", "'model' must be the model of config.model.name ('crnn')"),
    ("features", DROP, "'features' is missing"),
    ("features", [], "'features' must be a mapping"),
    ("features.streams", None, "'features.streams' must be a mapping of stream names to streams, not null"),
    ("features.streams.logmel", [], "'features.streams.logmel' must be a mapping of type"),
    ("features.streams.logmel.type", ["logmel"], "'features.streams.logmel.type' must be a non-empty string"),
    ("features.streams.logmel.n_mels", "16", "features: streams.logmel.n_mels"),
    ("features.streams.logmel.n_mels", DROP, "'features.dump.dims.logmel' is 16, but features.streams.logmel gives "
                                             "64 per frame"),
    ("features.sample_rate", "16000", "features: sample_rate must be a positive integer"),
    ("features.dump", None, "'features.dump' must be a mapping"),
    ("features.dump.frame_shift", {}, "'features.dump.frame_shift' has no stream logmel, which the model reads"),
    ("features.dump.frame_shift.logmel", 0, "'features.dump.frame_shift.logmel' must be a number > 0 (seconds per "
                                            "frame), not 0"),
    ("features.dump.dims.logmel", 15, "'normalization.streams.logmel.fallback.mean' must be 15 numbers "
                                      "(features.dump.dims.logmel)"),
    ("normalization", None, "'normalization' must be a mapping"),
    ("normalization.mode", "bogus", "'normalization.mode' must be one of global, speaker, none, not \"bogus\""),
    ("normalization.streams", [], "'normalization.streams' must be a mapping of streams to statistics"),
    ("normalization.streams.logmel.mode", "global", "'normalization.streams.logmel.mode' must be normalization.mode"),
    ("normalization.streams.logmel.min_rows", "10", "'normalization.streams.logmel.min_rows' must be an integer >= 1"),
    ("normalization.streams.logmel.fallback.mean", [1.0], "'normalization.streams.logmel.fallback.mean' must be 16 "
                                                         "numbers (features.dump.dims.logmel)"),
    ("normalization.streams.logmel.fallback.var", None, "'normalization.streams.logmel.fallback.mean' must be null "
                                                        "exactly when var is null"),
    ("normalization.streams.logmel.fallback.count", "93", "'normalization.streams.logmel.fallback.count' must be "
                                                          "an integer >= 0"),
    ("normalization.streams.logmel.fallback.eps", DROP, "'normalization.streams.logmel.fallback.eps' is missing"),
    ("source", None, "'source' must be a mapping"),
    ("source.checkpoint_sha256", 1, "'source.checkpoint_sha256' must be 64 hex digits, not 1"),
    ("source.exp_dir", DROP, "'source.exp_dir' is missing"),
    ("source.epoch", "1", "'source.epoch' must be null or an integer >= 0"),
    ("metrics", [], "'metrics' must be a mapping"),
    ("metrics.dev", "x", "'metrics.dev' must be null or a mapping of wa, ua, not \"x\""),
    ("metrics.test.ua", "0.5", "'metrics.test.ua' must be a number in [0, 1], not \"0.5\""),
    ("metrics.test.num_utts", DROP, "'metrics.test.num_utts' is missing"),
    ("protocol", "loso", "'protocol' must be null or a mapping of protocol, num_folds"),
    ("protocol.num_folds", DROP, "'protocol.num_folds' is missing"),
    ("protocol.fold", [1], "'protocol.fold' must be null or a mapping of fold, test_speakers"),
    ("protocol.fold.test_speakers", "emodb_03", "'protocol.fold.test_speakers' must be a list of speakers or "
                                                "'mixed'"),
    ("protocol.fold.dev_speakers", [1], "'protocol.fold.dev_speakers' must be a list of speakers or 'mixed', "
                                        "not [1]"),
    ("environment", "x", "'environment' must be null or a mapping, not \"x\""),
    ("created", None, "'created' must be a string, not null"),
    ("sertk_version", DROP, "'sertk_version' is missing"),
]


@pytest.mark.parametrize("key, value, message", CRAFTED, ids=[f"{k}={'DROP' if v is DROP else v!r}"
                                                             for k, v, _ in CRAFTED])
def test_crafted_descriptions_give_one_line_naming_the_key(key, value, message, packed, tmp_path, sertk_cli,
                                                           user_error):
    meta, weights, wav = packed
    model = repack(tmp_path / "m.sertk", changed(meta, key, None if value is DROP else value, drop=value is DROP),
                   weights)
    out = tmp_path / "out.csv"
    said = user_error(sertk_cli("infer", model, wav, "--out", out))
    assert message in said and str(model) in said
    assert not out.exists()
    info = sertk_cli("pack", "--info", model)
    if "weights.pt" in message or "the model of config.model reads" in message or "which the model reads" in message \
            or "gives 64 per frame" in message:
        assert info.exit_code == 0, info.output   # the description alone is sound: only the weights disagree
    else:
        assert user_error(info) == said


def test_the_valid_pack_and_its_other_normalisations_are_read(packed, tmp_path, sertk_cli):
    meta, weights, wav = packed
    fallback = meta["normalization"]["streams"]["logmel"]["fallback"]
    variants = {
        "speaker": meta,
        "global": {**changed(meta, "config.features.cmvn", "global"),
                   "normalization": {"mode": "global", "clip": 3.0, "streams": {"logmel": fallback}}},
        "none": {**changed(meta, "config.features.cmvn", "none"),
                 "normalization": {"mode": "none", "clip": None, "streams": {"logmel": {"mode": "none"}}}},
        "no protocol, scores or environment": {**meta, "protocol": None, "metrics": {"dev": None, "test": None},
                                               "environment": None},
        "a speaker-dependent protocol": changed(changed(meta, "protocol.fold.test_speakers", "mixed"),
                                                "protocol.fold.dev_speakers", "mixed"),
        # written before some config keys existed: they take their defaults
        "older config": changed(changed(meta, "config.augment", drop=True), "config.train.select", drop=True),
    }
    for name, variant in variants.items():
        model = repack(tmp_path / f"{name}.sertk", variant, weights)
        for args in (("pack", "--info", model), ("-q", "infer", model, wav)):
            result = sertk_cli(*args)
            assert result.exit_code == 0, (name, result.output)
    assert read_pack(tmp_path / "older config.sertk").config["train"]["select"] == "ua"
    assert "test speakers mixed, dev speakers mixed" in sertk_cli("pack", "--info",
                                                                  tmp_path / "a speaker-dependent protocol.sertk").stdout


def test_not_json_numbers_and_damaged_text_are_refused(packed, tmp_path, sertk_cli, user_error):
    meta, weights, wav = packed
    text = json.dumps(changed(meta, "metrics.test.ua", float("nan")))
    assert "NaN" in text
    model = repack(tmp_path / "nan.sertk", meta, weights, text=text)
    message = user_error(sertk_cli("pack", "--info", model))
    assert "damaged packed model (ValueError reading sertk-model.json)" in message
    model = repack(tmp_path / "cut.sertk", meta, weights, text=json.dumps(meta)[:-10])
    assert "damaged packed model" in user_error(sertk_cli("infer", model, wav))
    model = repack(tmp_path / "list.sertk", meta, weights, text="[1, 2]")
    assert "is not a sertk model description" in user_error(sertk_cli("pack", "--info", model))
    deep = "[" * 100000 + "]" * 100000
    model = repack(tmp_path / "deep.sertk", meta, weights, text=deep)
    assert "damaged packed model" in user_error(sertk_cli("pack", "--info", model))


def test_a_newer_format_is_still_named_as_such(packed, tmp_path, sertk_cli, user_error):
    meta, weights, _ = packed
    model = repack(tmp_path / "new.sertk", {**meta, "format_version": 2, "classes": "whatever"}, weights)
    assert "packed with a newer sertk (format 2" in user_error(sertk_cli("pack", "--info", model))


def test_weights_that_do_not_fit_are_refused_by_name(packed, tmp_path):
    import io
    import torch
    meta, weights, _ = packed
    state = torch.load(io.BytesIO(weights), weights_only=True)
    for change, message in [
        (lambda s: s.pop("out.weight"), "no tensor out.weight"),
        (lambda s: s.update(extra=torch.zeros(1)), "a tensor extra the model does not have"),
        (lambda s: s.update({"out.bias": torch.zeros(3)}), r"out.bias is \(3,\), the model's \(7,\)"),
    ]:
        broken = dict(state)
        change(broken)
        buf = io.BytesIO()
        torch.save(broken, buf)
        with pytest.raises(PackError, match=message):
            read_pack(repack(tmp_path / "w.sertk", meta, buf.getvalue()))


def test_check_meta_is_the_one_check_of_both_readers(packed, tmp_path):
    meta, weights, _ = packed
    model = repack(tmp_path / "m.sertk", meta, weights)
    assert read_meta(model) == check_meta(meta, model) == read_pack(model).meta
    assert META_SCHEMA.problem(meta, "") is None
    with pytest.raises(PackError, match="'classes' must be"):
        check_meta({**meta, "classes": {"anger": 0}}, model)
