"""What users hand sertk, damaged on purpose: from valid inputs, seeded variants of a packed model's
sertk-model.json (types swapped, keys dropped, values nulled, bytes flipped; the zip's bytes too), of an import
CSV (columns dropped, bytes flipped, other encodings, cut short) and of a data dir (lines cut, files emptied or
removed, bytes flipped). `sertk pack --info` / `sertk infer`, `sertk data import` and `sertk data validate` must
exit 0 or give one `sertk: error:` line (never a traceback, never an uncaught exception), and write nothing
where they fail. The CSV cases the issue names come first, as plain tests."""
import codecs
import copy
import hashlib
import json
import random
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from replicas import make_emodb
from sertk.data.corpora import prepare_corpus
from sertk.inference.pack import features_from_config, make_meta
from sertk.inference.pack_file import write_pack
from sertk.inference.packed import META_MEMBER, WEIGHTS_MEMBER
from sertk.models import build_model
from sertk.config.loading import load_config, model_options

SEED = 24
TINY = ["model.name=crnn", "model.n_mels=16", "model.channels=[4,8]", "model.lstm_hidden=8",
        "model.attention_hidden=8", "segments.length=0.3", "segments.hop=0.1", "features.tag=tiny",
        "features.cmvn=speaker"]
FEATURES = {"sample_rate": 16000, "streams": {"logmel": {"type": "logmel", "n_mels": 16}}}
CLASSES = ["anger", "boredom", "neutral"]


# --- inputs -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Tuple[Path, Path]:
    """(an EmoDB replica's wav folder, its prepared data dir)."""
    base = tmp_path_factory.mktemp("fuzz")
    root = make_emodb(base / "emodb", speakers=["03", "08", "09"], texts=["a01"], emotions="WLN")
    prepare_corpus("emodb", root, base / "data")
    return root / "wav", base / "data"


@pytest.fixture(scope="module")
def pack(tmp_path_factory) -> Tuple[Dict, bytes]:
    """A packed model's description and weights, made as `sertk pack` makes them (an untrained tiny crnn,
    speaker normalisation with its fallback, a protocol card, scores and an environment)."""
    config = load_config(None, TINY)
    model = build_model("crnn", len(CLASSES), **model_options(config))
    fallback = {"mode": "global", "norm_vars": True, "eps": 1e-8, "var_floor": 1e-10, "count": 90,
                "mean": [float(i) / 10 for i in range(16)], "var": [1.0 + i / 100 for i in range(16)]}
    normalization = {"mode": "speaker", "clip": None,
                     "streams": {"logmel": {"mode": "speaker", "min_rows": 10, "fallback": fallback}}}
    meta = make_meta(config, CLASSES, features_from_config(FEATURES), normalization,
                     source={"exp_dir": "/exp/fold1", "checkpoint": "best.pt", "checkpoint_sha256": "ab" * 32,
                             "epoch": 3, "feature_dump": "/dump/tiny", "trained_with_sertk": "0.1.0"},
                     protocol={"protocol": "loso", "description": "leave one speaker out", "corpus": "emodb",
                               "num_folds": 3, "speaker_independent": True, "dev_policy": "next speaker",
                               "fold": {"fold": 1, "test_speakers": ["emodb_03"], "dev_speakers": ["emodb_08"],
                                        "num_utts": {"train": 3, "dev": 3, "test": 3}}},
                     metrics={"dev": {"wa": 0.5, "ua": 0.5, "loss": 1.2},
                              "test": {"rule": "mean", "num_utts": 3, "wa": 0.4, "ua": 0.4, "macro_f1": 0.3,
                                       "data_dir": "/data/test"}},
                     environment={"python": "3.11", "cpu": "x", "gpu": None, "torch": "2", "git_hash": "abc"})
    path = tmp_path_factory.mktemp("pack") / "model.sertk"
    write_pack(path, meta, model.state_dict())
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read(META_MEMBER)), zf.read(WEIGHTS_MEMBER)


def _zip(path: Path, meta_bytes: bytes, weights: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(META_MEMBER, meta_bytes, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr(WEIGHTS_MEMBER, weights)
    return path


# --- variants -----------------------------------------------------------------------------------

def _paths(node, prefix=()) -> Iterator[tuple]:
    """Every key path of a JSON document (of a list, its first and last items)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list) and node:
        for i in sorted({0, len(node) - 1}):
            yield prefix + (i,)
            yield from _paths(node[i], prefix + (i,))


def _swapped(value, rng: random.Random):
    """`value` as another JSON type."""
    if isinstance(value, bool):
        options = ["true", 1, None, [value]]
    elif isinstance(value, int):
        options = [str(value), float(value) + 0.5, [value], True, {"v": value}]
    elif isinstance(value, float):
        options = [str(value), [value], True, {}]
    elif isinstance(value, str):
        options = [1, [value], {value: value}, True, ""]
    elif isinstance(value, list):
        options = [{}, "x", 0, {"0": value[0]} if value else None]
    elif isinstance(value, dict):
        options = [[], "x", list(value.values()), 1]
    else:
        options = [0, "x", {}, []]
    return rng.choice(options)


def json_variants(meta: Dict, rng: random.Random) -> List[Tuple[str, bytes]]:
    """(what was done, the description's bytes): each key dropped, nulled and swapped, then bytes flipped."""
    out = []
    for path in _paths(meta):
        for op in ("drop", "null", "swap", "swap"):
            doc = copy.deepcopy(meta)
            node = doc
            for part in path[:-1]:
                node = node[part]
            if op == "drop":
                node.pop(path[-1])
            else:
                node[path[-1]] = None if op == "null" else _swapped(node[path[-1]], rng)
            out.append((f"{op} {'.'.join(map(str, path))}", json.dumps(doc).encode()))
    text = json.dumps(meta, indent=1).encode()
    for i in range(60):
        out.append((f"bytes flipped {i}", _flipped(text, rng, rng.randint(1, 3))))
    return out


def _flipped(data: bytes, rng: random.Random, count: int) -> bytes:
    out = bytearray(data)
    for _ in range(count):
        at = rng.randrange(len(out))
        # a digit, a quote, a bracket, a non-ASCII or NUL byte, or any byte
        out[at] = rng.choice([rng.choice(b'0123456789"{}[],:-.e \n'), rng.randrange(0x80, 0x100), 0,
                              rng.randrange(256)])
    return bytes(out)


def csv_variants(good: str, rng: random.Random) -> List[Tuple[str, bytes]]:
    lines = good.splitlines()
    header = lines[0].split(",")
    out = [("valid", good.encode()), ("byte-order mark", codecs.BOM_UTF8 + good.encode()),
           ("CRLF", good.replace("\n", "\r\n").encode()), ("empty", b""), ("blank", b" \n\n"),
           ("byte-order mark only", codecs.BOM_UTF8), ("header only", (lines[0] + "\n").encode()),
           ("no header", "\n".join(lines[1:]).encode()), ("utf-16", good.encode("utf-16")),
           ("latin-1 label", good.replace(",W,", ",Ärger,").encode("latin-1")),
           ("cp1252 quotes", good.replace(",W,", ",\u201cW\u201d,").encode("cp1252")),
           ("utf-8 label", good.replace(",W,", ",Ärger,").encode()),
           ("NUL", good[:40].encode() + b"\x00" + good[40:].encode()),
           ("a row twice", (good + lines[1] + "\n").encode()),
           ("a short row", (good + lines[1].rsplit(",", 3)[0] + "\n").encode()),
           ("a long row", (good + lines[1] + ",x,y\n").encode()),
           ("an open quote", (good + '"' + lines[1] + "\n").encode())]
    for col in range(len(header)):
        dropped = "\n".join(",".join(f for i, f in enumerate(line.split(",")) if i != col) for line in lines) + "\n"
        out.append((f"column {header[col]} dropped", dropped.encode()))
    data = good.encode()
    for i in range(25):
        out.append((f"bytes flipped {i}", _flipped(data, rng, rng.randint(1, 3))))
    for i in range(8):
        out.append((f"cut {i}", data[:rng.randrange(len(data))]))
    return out


def datadir_variants(data: Path, rng: random.Random) -> List[Tuple[str, Dict[str, bytes]]]:
    """(what was done, file name -> new content, None: removed) for a data dir's files."""
    files = sorted(p.name for p in data.iterdir() if p.is_file())
    out = []
    for name in files:
        content = (data / name).read_bytes()
        lines = content.splitlines(keepends=True)
        k = rng.randrange(len(lines))
        cut = lines[k][:rng.randrange(1, max(2, len(lines[k]) - 1))].rstrip(b"\n") + b"\n"
        out += [(f"{name} emptied", {name: b""}), (f"{name} removed", {name: None}),
                (f"{name} line {k + 1} cut", {name: b"".join(lines[:k] + [cut] + lines[k + 1:])}),
                (f"{name} line {k + 1} twice", {name: b"".join(lines[:k + 1] + lines[k:])}),
                (f"{name} lines reversed", {name: b"".join(reversed(lines))}),
                (f"{name} last newline gone", {name: content.rstrip(b"\n")}),
                (f"{name} a non-UTF-8 byte", {name: content[:5] + b"\xe9" + content[5:]})]
        for i in range(3):
            out.append((f"{name} bytes flipped {i}", {name: _flipped(content, rng, rng.randint(1, 3))}))
    return out


# --- the checks ---------------------------------------------------------------------------------

# the parts of a description `sertk infer` reads beyond what `sertk pack --info` does (and flipped bytes: anywhere)
INFER_READS = ("config", "features", "normalization", "classes", "model", "source", "format", "flipped")


@pytest.fixture(autouse=True)
def _one_thread():
    """Hundreds of tiny forward passes: one thread each is faster, and steadier on a busy machine."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _clean_exit(result, what: str, user_error) -> bool:
    """True for exit 0 (or 3: results written, some inputs skipped); a one-line user error otherwise."""
    if result.exit_code in (0, 3) and (result.exception is None or isinstance(result.exception, SystemExit)):
        return True
    try:
        user_error(result)
    except AssertionError as e:
        raise AssertionError(f"{what}: {e}\n{result.output}\n{result.exception!r}") from None
    return False


def _tree(folder: Path) -> Dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_model_descriptions(pack, corpus, tmp_path, sertk_cli, user_error):
    meta, weights = pack
    wav = sorted(corpus[0].glob("*.wav"))[0]
    rng = random.Random(SEED)
    variants = json_variants(meta, rng)
    assert len(variants) > 300
    model, out = tmp_path / "m.sertk", tmp_path / "out.csv"
    accepted = rejected = 0
    for name, text in variants:
        _zip(model, text, weights)
        before = _tree(tmp_path)
        ok = _clean_exit(sertk_cli("pack", "--info", model), f"pack --info, {name}", user_error)
        assert _tree(tmp_path) == before, name
        # infer on the descriptions --info takes that change what infer reads (the rest only change what --info
        # prints), and on samples of the others (the same check refuses them)
        if rng.random() < (0.8 if ok and name.split(" ", 1)[1].startswith(INFER_READS) else 0.1 if ok else 0.05):
            inferred = _clean_exit(sertk_cli("-q", "infer", model, wav, "--out", out), f"infer, {name}", user_error)
            assert out.exists() == inferred, name
            out.unlink(missing_ok=True)
        accepted, rejected = accepted + ok, rejected + (not ok)
    assert accepted > 20 and rejected > 200   # the variants reach both outcomes


def test_damaged_pack_files(pack, corpus, tmp_path, sertk_cli, user_error):
    meta, weights = pack
    wav = sorted(corpus[0].glob("*.wav"))[0]
    good = _zip(tmp_path / "good.sertk", json.dumps(meta).encode(), weights).read_bytes()
    head = good.index(WEIGHTS_MEMBER.encode())   # the description's deflated bytes come first
    rng = random.Random(SEED + 1)
    model, out = tmp_path / "m.sertk", tmp_path / "out.csv"
    for i in range(200):
        if i % 5 == 0:
            data = good[:rng.randrange(len(good))]
        else:   # half the flips where the description is
            data = _flipped(good[:head], rng, rng.randint(1, 4)) + good[head:] if i % 2 else \
                _flipped(good, rng, rng.randint(1, 4))
        model.write_bytes(data)
        ok = _clean_exit(sertk_cli("pack", "--info", model), f"pack --info, zip {i}", user_error)
        if ok or rng.random() < 0.1:
            inferred = _clean_exit(sertk_cli("-q", "infer", model, wav, "--out", out), f"infer, zip {i}", user_error)
            assert out.exists() == inferred
            out.unlink(missing_ok=True)


def _good_csv(wavs: Path) -> str:
    rows = ["path,label,speaker,session,gender"]
    for wav in sorted(wavs.glob("*.wav")):
        rows.append(f"{wav.name},{wav.stem[5]},spk{wav.stem[:2]},s1,{'f' if wav.stem[:2] == '08' else 'm'}")
    return "\n".join(rows) + "\n"


def test_csv_imports(corpus, tmp_path, sertk_cli, user_error):
    wavs = corpus[0]
    rng = random.Random(SEED + 2)
    csv_path = wavs / "corpus.csv"    # relative paths: beside the audio
    for i, (name, data) in enumerate(csv_variants(_good_csv(wavs), rng)):
        csv_path.write_bytes(data)
        out = tmp_path / f"out{i}"
        ok = _clean_exit(sertk_cli("data", "import", "--csv", csv_path, "--out", out), f"import, {name}", user_error)
        assert out.exists() == ok, name
        if name in ("valid", "byte-order mark", "CRLF", "utf-8 label"):
            assert ok, name


def test_data_dirs(corpus, tmp_path, sertk_cli, user_error):
    data = corpus[1]
    rng = random.Random(SEED + 3)
    for name, changes in datadir_variants(data, rng):
        variant = tmp_path / "data"
        if variant.exists():
            import shutil
            shutil.rmtree(variant)
        variant.mkdir()
        for p in data.iterdir():
            content = changes.get(p.name, p.read_bytes()) if p.name in changes else p.read_bytes()
            if content is not None:
                (variant / p.name).write_bytes(content)
        before = _tree(variant)
        _clean_exit(sertk_cli("data", "validate", variant), f"validate, {name}", user_error)
        assert _tree(variant) == before, name


# --- the CSV cases of the issue ----------------------------------------------------------------

@pytest.fixture
def csv_file(corpus):
    wavs = corpus[0]
    path = wavs / "probe.csv"
    yield path, _good_csv(wavs)
    path.unlink(missing_ok=True)


def test_a_csv_with_a_byte_that_is_not_utf8_names_the_line_and_offset(csv_file, tmp_path, sertk_cli, user_error):
    path, good = csv_file
    text = good.replace(",W,", ",Ärger,", 1)
    path.write_bytes(text.encode("latin-1"))
    offset = text.encode("latin-1").index(b"\xc4")
    line = text[:text.index("Ä")].count("\n") + 1
    message = user_error(sertk_cli("data", "import", "--csv", path, "--out", tmp_path / "out"))
    assert message == (f"{path}:{line}: the byte 0xc4 at offset {offset} is not UTF-8; save the CSV as UTF-8")
    assert not (tmp_path / "out").exists()
    path.write_bytes(good.encode("utf-16"))
    assert "is UTF-16" in user_error(sertk_cli("data", "import", "--csv", path, "--out", tmp_path / "out"))


@pytest.mark.parametrize("name, data, message", [
    ("empty", b"", "empty file; need a header line path,label,speaker"),
    ("header only", b"path,label,speaker\n", "no rows, only the header"),
    ("missing columns", b"path,label\nx.wav,W\n", "missing column(s) ['speaker']"),
    ("NUL", b"path,label,speaker\nx.wav,W,\x00\n", "the byte at offset 27 is a NUL"),
])
def test_bad_csvs_are_one_line(name, data, message, csv_file, tmp_path, sertk_cli, user_error):
    path, _ = csv_file
    path.write_bytes(data)
    assert message in user_error(sertk_cli("data", "import", "--csv", path, "--out", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_csv_with_a_byte_order_mark_and_crlf_imports(csv_file, tmp_path, sertk_cli):
    path, good = csv_file
    path.write_bytes(codecs.BOM_UTF8 + good.replace("\n", "\r\n").encode())
    result = sertk_cli("data", "import", "--csv", path, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "out" / "wav.scp").read_text().splitlines()) == 9
