"""Cross-corpus class mappings: loading, relabelling, posterior collapsing, the cross protocol."""
from pathlib import Path

import numpy as np
import pytest
import yaml

from replicas import make_emodb, make_ravdess
from sertk.data.check import check_protocol
from sertk.data.corpora import prepare_corpus
from sertk.data.cross import (
    class_mapping_from_dict,
    collapse,
    default_dev_speakers,
    load_class_mapping,
    make_cross_protocol,
    relabel,
)
from sertk.data.datadir import DataDir
from sertk.data.protocols import load_card
from sertk.errors import LabelError, ProtocolError

REPO = Path(__file__).resolve().parents[1]
SHIPPED_MAPS = sorted((REPO / "egs" / "TEMPLATE" / "conf" / "cross").glob("*.yaml"))
RAV_TO_EMO = {"source": "ravdess", "target": "emodb",
              "classes": ["anger", "happiness", "sadness", "fear", "disgust", "neutral"],
              "source_map": {"calm": "drop", "surprise": "drop"}, "target_map": {"boredom": "drop"}}


def mapping(**changes):
    return class_mapping_from_dict({**RAV_TO_EMO, **changes}, "test map")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    base = tmp_path_factory.mktemp("cross")
    rav = prepare_corpus("ravdess", make_ravdess(base / "rav", actors=range(1, 7)), base / "rav_all").datadir
    emo = prepare_corpus("emodb", make_emodb(base / "emo", speakers=["03", "08"], texts=["a01"]),
                         base / "emo_all").datadir
    return rav, emo


@pytest.mark.parametrize("path", SHIPPED_MAPS, ids=lambda p: p.stem)
def test_shipped_mappings_fit_the_default_label_maps(path):
    from sertk.data.labels import default_label_map
    m = load_class_mapping(path)
    assert path.stem == f"{m.source}_to_{m.target}"
    for side in ("source", "target"):
        m.check(side, list(default_label_map(getattr(m, side)).classes), side)


@pytest.mark.parametrize("changes, message", [
    ({"source_map": {}}, "source class 'calm' is neither one of the shared classes"),
    ({"source_map": {"calm": "drop", "surprise": "drop", "boredom": "drop"}}, "source_map names 'boredom'"),
    ({"classes": ["anger", "joy"]}, "source class 'neutral' is neither one of the shared classes"),
    ({"classes": ["anger", "joy"], "source_map": {c: "drop" for c in ("neutral", "calm", "happiness", "sadness",
                                                                      "fear", "disgust", "surprise")}},
     r"no class of ravdess .* maps to shared class\(es\) \['joy'\]"),
    ({"target_map": {"boredom": "sleepy"}}, "maps 'boredom' to 'sleepy', which is neither a shared class"),
    ({"classes": ["anger", "anger"]}, "must not repeat a class"),
])
def test_mapping_mistakes_are_named(corpora, changes, message):
    rav, emo = corpora
    with pytest.raises(LabelError, match=message):
        m = mapping(**changes)
        relabel(rav, m, "source", "ravdess")
        relabel(emo, m, "target", "emodb")


def test_a_mapping_the_wrong_way_round_is_named(corpora):
    rav, emo = corpora
    with pytest.raises(LabelError, match="holds corpus 'emodb', but test map expects source corpus 'ravdess' "
                                         r"\(is the mapping the wrong way round\?\)"):
        relabel(emo, mapping(), "source", "emodb dir")


def test_missing_keys_and_files(tmp_path):
    with pytest.raises(LabelError, match="a class mapping needs 'target'"):
        class_mapping_from_dict({"source": "a", "classes": ["x"]}, "m")
    with pytest.raises(LabelError, match="no such class mapping"):
        load_class_mapping(tmp_path / "nope.yaml")


def test_relabel_drops_and_counts_and_keeps_raw_labels_mapped(corpora):
    rav, _ = corpora
    out, dropped = relabel(rav, mapping(), "source", "ravdess")
    assert dict(dropped) == {"calm": 6 * 2, "surprise": 6 * 2}
    assert len(out.utts) == len(rav.utts) - 24
    assert set(out.utt2emo.values()) == set(RAV_TO_EMO["classes"])
    assert out.labels.classes == tuple(RAV_TO_EMO["classes"])
    assert out.labels.map("02") is None and out.labels.map("05") == "anger"
    # the original data dir is untouched
    assert "calm" in rav.utt2emo.values()


def test_relabel_can_merge_classes(corpora):
    rav, _ = corpora
    merged = mapping(classes=["anger", "happiness", "sadness", "fear", "disgust", "neutral"],
                     source_map={"calm": "neutral", "surprise": "drop"})
    out, dropped = relabel(rav, merged, "source", "ravdess")
    calm = [u for u, c in rav.utt2emo.items() if c == "calm"]
    assert {out.utt2emo[u] for u in calm} == {"neutral"} and dict(dropped) == {"surprise": 12}


def test_collapse_sums_merged_classes_and_renormalises():
    m = class_mapping_from_dict({"source": "a", "target": "b", "classes": ["x", "y"],
                                 "source_map": {"x2": "x", "z": "drop"}}, "m")
    post = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.0, 0.5, 0.0]], dtype=np.float32)   # x, x2, y, z
    out = collapse(post, ["x", "x2", "y", "z"], m)
    np.testing.assert_allclose(out, [[0.5, 0.5], [0.5, 0.5]], rtol=1e-6)
    assert out.dtype == np.float32
    with pytest.raises(LabelError, match="source_map names 'z', which is not a class of the model"):
        collapse(post, ["x", "x2", "y", "w"], m)


def test_cross_protocol_trains_on_source_and_tests_on_all_of_target(corpora, tmp_path):
    rav, emo = corpora
    card = make_cross_protocol(rav, emo, mapping(), tmp_path / "cross")
    assert card["protocol"] == "cross_corpus" and card["num_folds"] == 1
    assert card["dropped"] == {"source": {"calm": 12, "surprise": 12}, "target": {"boredom": 2}}
    fold = tmp_path / "cross" / "fold1"
    train, dev, test = (DataDir.load(fold / s) for s in ("train", "dev", "test"))
    assert dev.speakers == ["ravdess_06"] and "ravdess_06" not in train.speakers
    assert test.speakers == emo.speakers and len(test.utts) == len(emo.utts) - 2
    assert train.labels.classes == test.labels.classes == tuple(RAV_TO_EMO["classes"])
    assert check_protocol(tmp_path / "cross").problems == []
    assert load_card(tmp_path / "cross")["tests_every_utterance"] is False


def test_cross_protocol_refusals(corpora, tmp_path):
    rav, emo = corpora
    with pytest.raises(ProtocolError, match="share speaker"):
        make_cross_protocol(rav, rav, class_mapping_from_dict({**RAV_TO_EMO, "target": "ravdess",
                                                                "target_map": RAV_TO_EMO["source_map"]},
                                                               "m"), tmp_path / "x")
    with pytest.raises(ProtocolError, match=r"dev speaker\(s\) \['ravdess_99'\] are not speakers"):
        make_cross_protocol(rav, emo, mapping(), tmp_path / "x", dev_speakers=["ravdess_99"])
    assert not (tmp_path / "x").exists()


def test_default_dev_speakers():
    assert default_dev_speakers([f"s{i:02d}" for i in range(24)]) == ["s20", "s21", "s22", "s23"]
    assert default_dev_speakers(["a", "b"]) == ["b"]
    with pytest.raises(ProtocolError, match="at least 2 speakers"):
        default_dev_speakers(["a"])
    # with genders, the end of each gender's list in turn: MSP-IMPROV's F06 and M06, not the men M05 and M06
    msp = [f"msp_improv_{g}{i:02d}" for g in "FM" for i in range(1, 7)]
    genders = {s: s[-3].lower() for s in msp}
    assert default_dev_speakers(msp) == ["msp_improv_M05", "msp_improv_M06"]
    assert default_dev_speakers(msp, genders) == ["msp_improv_F06", "msp_improv_M06"]
    ravdess = [f"ravdess_{i:02d}" for i in range(1, 25)]   # odd actors male: the same four as without genders
    assert default_dev_speakers(ravdess, {s: "mf"[int(s[-2:]) % 2 == 0] for s in ravdess}) == ravdess[-4:]


def test_cli_writes_the_protocol_and_reports_drops(corpora, tmp_path, sertk_cli):
    rav, emo = corpora
    rav.save(tmp_path / "rav")
    emo.save(tmp_path / "emo")
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(RAV_TO_EMO))
    result = sertk_cli("data", "cross", tmp_path / "rav", tmp_path / "emo", "--map", tmp_path / "map.yaml",
                       "--out", tmp_path / "cross", "--dev-speakers", "ravdess_01,ravdess_02")
    assert "ravdess (source): 24 utterance(s) of classes outside the shared set left out (calm 12, surprise 12)" \
        in result.output
    assert "dev: 2 held-out ravdess speaker(s): ravdess_01, ravdess_02" in result.output
    result = sertk_cli("data", "check", tmp_path / "cross")
    assert "every test utterance is tested exactly once" in result.output


@pytest.mark.parametrize("field, text, message", [
    ("source", "{ravdess: 1}", "'source' must be the name of the source corpus (as in its labels.yaml), not a mapping"),
    ("target", "[emodb]", "'target' must be the name of the target corpus (as in its labels.yaml), not a list"),
    ("target", "2005", "'target' must be the name of the target corpus (as in its labels.yaml), not 2005"),
    ("source", "", "'source' must be the name of the source corpus (as in its labels.yaml), not empty"),
    ("classes", "anger", "'classes' must be a non-empty list of class names, not 'anger'"),
    ("classes", "[]", "'classes' must be a non-empty list of class names, not an empty list"),
    ("classes", "[anger, yes]", "'classes' must list class names, but item 2 is True (quote a name"),
    ("source_map", "[calm, surprise]", "'source_map' must map source classes to shared classes or 'drop', not a list"),
    ("target_map", "drop", "'target_map' must map target classes to shared classes or 'drop', not 'drop'"),
    ("source_maps", "{calm: drop}", "unknown key 'source_maps' (a class mapping has source, target, classes, "
                                    "source_map, target_map)"),
])
def test_map_file_fields_of_the_wrong_type_are_one_line(tmp_path, sertk_cli, user_error, field, text, message):
    """`source: {a: b}` once gave "{'a': 'b'} (...) holds corpus ..., but ... expects source corpus '{'a': 'b'}'"."""
    doc = {**RAV_TO_EMO, "source_map": {"calm": "drop"}}
    doc.pop(field, None)
    path = tmp_path / "map.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False) + f"{field}: {text}\n")
    with pytest.raises(LabelError) as e:
        load_class_mapping(path)
    assert str(e.value).startswith(f"{path}: {message}"), str(e.value)
    # the command stops at the map, before reading the data dirs or writing anything
    (tmp_path / "src").mkdir()
    assert user_error(sertk_cli("data", "cross", tmp_path / "src", tmp_path / "src", "--map", path,
                                "--out", tmp_path / "cross")).startswith(f"{path}: {message}")
    assert not (tmp_path / "cross").exists()


def test_a_decode_record_with_a_mapping_of_the_wrong_shape_is_named():
    with pytest.raises(LabelError, match=r"^decode.yaml: class_map: a class mapping must be a mapping of source, "
                                         r"target, classes, source_map, target_map, not a list$"):
        class_mapping_from_dict(["ravdess", "emodb"], "decode.yaml: class_map")
