"""Shared fixtures: generated EmoDB replicas and prepared data dirs, and a clean `sertk` logger.

Building a replica and preparing it costs a few hundred milliseconds, so each configuration is
built once per session into a cache and every test gets its own copy (tests may damage it freely).
"""
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Dict, Sequence, Tuple

import pytest
import torch
from click.testing import CliRunner, Result

from replicas import EMODB_EMOTIONS, make_emodb
from sertk.cli import main
from sertk.data.corpora import prepare_corpus

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest.ini runs the suite in one worker per core (pytest-xdist): each worker, and the sertk commands its
    # tests start, computes on one thread, so that the workers do not fight over the cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    torch.set_num_threads(1)

# 4 speakers x 1 text x 7 emotions = 28 utterances; speakers of both genders
EMODB_TEST_SPEAKERS = ("03", "08", "09", "10")
EMODB_TEST_TEXTS = ("a01",)


@pytest.fixture(scope="session")
def slurm(tmp_path_factory) -> Dict[str, str]:
    """A private single-node Slurm cluster for the session (tests/slurm_cluster.py): the environment
    (SLURM_CONF) its clients need; the test is skipped, with the reason, where it cannot be started."""
    from slurm_cluster import start_cluster, stop_cluster
    base = tmp_path_factory.mktemp("slurm")
    env, why = start_cluster(base)
    if env is None:
        pytest.skip(why)
    yield env
    stop_cluster(base)


@pytest.fixture(autouse=True)
def _restore_sertk_logger():
    """The CLI reconfigures the 'sertk' logger (own handler, no propagation), which would hide
    records from `caplog` in every later test; put it back after each test."""
    logger = logging.getLogger("sertk")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    logger.handlers[:], logger.propagate, logger.level = saved[0], saved[1], saved[2]


@pytest.fixture(scope="session")
def _emodb_cache(tmp_path_factory) -> Callable[..., Path]:
    """Key -> a cached folder holding `emodb/` (the release) and `data/` (its prepared data dir)."""
    cache: Dict[Tuple, Path] = {}

    def get(speakers: Sequence[str], texts: Sequence[str], emotions: str) -> Path:
        key = (tuple(speakers), tuple(texts), emotions)
        if key not in cache:
            base = tmp_path_factory.mktemp("emodb_cache")
            root = make_emodb(base / "emodb", speakers=speakers, texts=texts, emotions=emotions)
            prepare_corpus("emodb", root, base / "data")
            cache[key] = base
        return cache[key]

    return get


def _copy_data(base: Path, root: Path, data: Path) -> Path:
    """Copy the cached data dir to `data`, its wav.scp pointing at the release copy `root`."""
    shutil.copytree(base / "data", data)
    wav_scp = data / "wav.scp"
    old, new = str((base / "emodb").resolve()), str(Path(root).resolve())
    wav_scp.write_text(wav_scp.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    return data


@pytest.fixture
def make_emodb_datadir(_emodb_cache, tmp_path) -> Callable[..., Tuple[Path, Path]]:
    """Factory: `make_emodb_datadir(name, speakers=..., texts=..., emotions=...)` -> (release, data dir),
    both private copies under `tmp_path/name/`."""

    def make(name: str = "emodb", speakers: Sequence[str] = EMODB_TEST_SPEAKERS,
             texts: Sequence[str] = EMODB_TEST_TEXTS, emotions: str = EMODB_EMOTIONS) -> Tuple[Path, Path]:
        base = _emodb_cache(speakers, texts, emotions)
        root = Path(shutil.copytree(base / "emodb", tmp_path / name / "emodb"))
        return root, _copy_data(base, root, tmp_path / name / "data")

    return make


@pytest.fixture
def emodb_replica(_emodb_cache, tmp_path) -> Path:
    """A private copy of a small EmoDB release (4 speakers, 1 text, 7 emotions) at tmp_path/emodb."""
    base = _emodb_cache(EMODB_TEST_SPEAKERS, EMODB_TEST_TEXTS, EMODB_EMOTIONS)
    shutil.copytree(base / "emodb", tmp_path / "emodb")
    return tmp_path / "emodb"


@pytest.fixture
def emodb_dir(_emodb_cache, emodb_replica, tmp_path) -> Path:
    """A clean data dir prepared from `emodb_replica` (its wav.scp points into that copy), at tmp_path/data."""
    base = _emodb_cache(EMODB_TEST_SPEAKERS, EMODB_TEST_TEXTS, EMODB_EMOTIONS)
    return _copy_data(base, emodb_replica, tmp_path / "data")


@pytest.fixture
def sertk_cli() -> Callable[..., Result]:
    """`sertk_cli("data", "validate", path)`: run the `sertk` command in-process (arguments may be
    paths); the result has exit_code, stdout, stderr and output (both, interleaved)."""

    def run(*args) -> Result:
        return CliRunner().invoke(main, [str(a) for a in args])

    return run


@pytest.fixture
def user_error() -> Callable[[Result], str]:
    """`user_error(result)`: assert the command failed as a user mistake should (exit status 1,
    no traceback, exactly one `sertk: error: ...` line, last on stderr) and return its message."""

    def check(result: Result) -> str:
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit), f"not a user error: {result.exception!r}"
        assert "Traceback" not in result.output
        errors = [line for line in result.stderr.splitlines() if line.startswith("sertk: error: ")]
        assert len(errors) == 1 and result.stderr.rstrip("\n").endswith(errors[0]), result.stderr
        return errors[0][len("sertk: error: "):]

    return check


@pytest.fixture(scope="session")
def whisper_base_folder(tmp_path_factory) -> Path:
    """The named encoder `whisper-base` (CTranslate2 Whisper-base) joined once per session from its registry
    packages into a private cache (`<root>/encoders/whisper-base`, root = the folder's grandparent); the
    test is skipped, with the reason, where the packages are not installed (they are in `.[dev]`)."""
    from sertk.features.encoder_cache import named_encoder, packages_missing, resolve_named_encoder
    missing = packages_missing("whisper-base")
    if missing:
        pytest.skip(f"needs the registry packages {named_encoder('whisper-base').distributions} "
                    f"({', '.join(missing)} not installed): pip install -e '.[dev]'")
    return resolve_named_encoder("whisper-base", root=tmp_path_factory.mktemp("sertk_cache"))
