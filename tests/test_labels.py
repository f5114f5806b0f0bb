import pytest

from sertk.data.labels import LabelMap, default_label_map, load_label_map
from sertk.errors import LabelError


def write(tmp_path, text):
    path = tmp_path / "labels.yaml"
    path.write_text(text)
    return path


def test_maps_and_drops(tmp_path):
    lm = load_label_map(write(tmp_path, "classes: [a, b]\nmap: {x: a, y: b, z: drop}\n"))
    assert (lm.map("x"), lm.map("y"), lm.map("z")) == ("a", "b", None)
    assert lm.index("b") == 1


def test_unmapped_label_is_named(tmp_path):
    lm = load_label_map(write(tmp_path, "classes: [a, b]\nmap: {x: a, y: b}\n"))
    with pytest.raises(LabelError, match="raw label 'q' is not in the label map"):
        lm.map("q")


def test_case_sensitive_with_hint(tmp_path):
    lm = load_label_map(write(tmp_path, "classes: [a, b]\nmap: {Neu: a, Ang: b}\n"))
    with pytest.raises(LabelError, match="case-sensitively; the map has 'Neu'"):
        lm.map("neu")


@pytest.mark.parametrize("text, message", [
    ("classes: [a, c]\nmap: {01: a, x: c}\n", "quote it"),         # YAML reads 01 as the integer 1
    ("classes: [a, c]\nmap: {x: b, y: c}\n", "not in classes"),
    ("classes: [a]\nmap: {x: a, y: a}\n", r"one class \(a\); a classifier needs at least 2"),
    ("classes: ['', a]\nmap: {x: '', y: a}\n", "class '' must be a non-empty name without spaces"),
    ("classes: [an g, a]\nmap: {x: an g, y: a}\n", "class 'an g' must be a non-empty name without spaces"),
    ("classes: [a, b]\nmap: {x: a}\n", r"no raw label maps to class\(es\) \['b'\]"),
    ("classes: [a, a]\nmap: {x: a}\n", "twice"),
    ("classes: [drop]\nmap: {x: drop}\n", "reserved"),
    ("map: {x: a}\n", "needs 'classes'"),
    ("classes: [a\n", "not a valid YAML"),
])
def test_bad_maps_are_refused(tmp_path, text, message):
    with pytest.raises(LabelError, match=message):
        load_label_map(write(tmp_path, text))


def test_missing_file(tmp_path):
    with pytest.raises(LabelError, match="no such label map"):
        load_label_map(tmp_path / "none.yaml")


def test_round_trip_keeps_order_and_corpus(tmp_path):
    lm = LabelMap(("z", "a"), {"2": "z", "1": "a", "0": "drop"}, "mine")
    lm.save(tmp_path / "l.yaml")
    back = load_label_map(tmp_path / "l.yaml")
    assert back.classes == ("z", "a") and back.mapping == lm.mapping and back.corpus == "mine"


@pytest.mark.parametrize("corpus, n", [("emodb", 7), ("ravdess", 8), ("iemocap", 4), ("msp_improv", 4)])
def test_default_maps_load(corpus, n):
    lm = default_label_map(corpus)
    assert len(lm.classes) == n and lm.corpus == corpus


def test_iemocap_default_merges_excited():
    lm = default_label_map("iemocap")
    assert lm.map("exc") == lm.map("hap") == "happiness"
    assert lm.map("fru") is None and lm.map("xxx") is None


def test_binary_file_is_a_clear_error(tmp_path):
    path = tmp_path / "labels.yaml"
    path.write_bytes(b"classes: [\xff\xfe]\n")
    with pytest.raises(LabelError, match="not a valid YAML text file"):
        load_label_map(path)
