"""Running a recipe (egs/<corpus>/run.sh) in a throw-away copy of the recipe tree."""
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
CORPORA = Path(os.environ.get("SERTK_CORPORA", REPO.parent / "shared" / "corpora"))


def tiny_args(epochs: int) -> str:
    """--train_args for a crnn small enough for recipe tests to train in seconds. float32: on a CPU with native
    bf16, `amp: auto`'s autocast costs a tiny model seconds of kernel set-up per new batch shape (a one-epoch
    fold: 10 s against 7), and the same precision on every machine keeps these runs alike (bf16 has its
    own tests: test_precision.py)."""
    return (f"--set train.epochs={epochs} --set train.batch_size=8 --set model.channels=[4,8] "
            "--set model.lstm_hidden=8 --set model.attention_hidden=8 --set train.amp=false")


TINY = tiny_args(2)
ONE_EPOCH = tiny_args(1)
# ssl_probe on the real Whisper-base, one epoch, one grid point: the recipe's pretrained-encoder path
PROBE = ("--model", "ssl_probe", "--stage", "2", "--train_args",
         "--set train.epochs=1 --grid model.layer=[all] --grid optim.weight_decay=")


def copy_recipe(tmp_path: Path, corpus: str) -> Path:
    """A copy of egs/<corpus>, egs/TEMPLATE and tools, so runs never write into the repository."""
    for part in (f"egs/{corpus}", "egs/TEMPLATE", "tools"):
        shutil.copytree(REPO / part, tmp_path / part,
                        ignore=shutil.ignore_patterns("data", "dump", "exp", "downloads", "kept"))
    return tmp_path / "egs" / corpus


def private_tmp(folder: Path) -> Path:
    """`folder/tmp`, made: TMPDIR for a test's subprocesses, so that what they leave in it (torchrun leaves a
    `torchelastic_*` folder per run) goes with the test's tmp_path, not into the machine's /tmp."""
    tmp = Path(folder) / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


def run_recipe(recipe: Path, *args, check: bool = True, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    """./run.sh ARGS in `recipe`, with this interpreter's `sertk` first on PATH (and `env` added)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TMPDIR": str(private_tmp(recipe.parent.parent)), **(env or {})}
    result = subprocess.run(["./run.sh", *map(str, args)], cwd=recipe, capture_output=True, text=True, env=env)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_sertk(cwd: Path, *args) -> subprocess.CompletedProcess:
    """The `sertk` command of this interpreter, run in `cwd`; it must succeed."""
    result = subprocess.run([str(Path(sys.executable).parent / "sertk"), *map(str, args)], cwd=cwd,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def assert_folds_done(exp: Path, folds: int) -> None:
    """Every fold trained, decoded with the dev-selected checkpoint, scored and packed; RESULTS.md written."""
    import yaml
    for k in range(1, folds + 1):
        fold = exp / f"fold{k}"
        assert (fold / "best.pt").is_file() and (fold / "train.log").is_file()
        assert (fold / "decode_test" / "scoring" / "metrics.json").is_file()
        assert yaml.safe_load((fold / "decode_test" / "decode.yaml").read_text())["checkpoint"] == "best.pt"
        assert (fold / "model.sertk").is_file()
    assert not (exp / f"fold{folds + 1}").exists()
    assert (exp / "RESULTS.md").is_file() and (exp / "metrics.json").is_file()


def run_real_fold1(recipe: Path, corpus: str, protocol: str, train_args: str) -> Path:
    """Fold 1 of the real corpus in ../shared/corpora through decoding (skips when it is absent);
    returns exp/<protocol>/crnn/fold1."""
    import pytest
    root = CORPORA / corpus
    if not root.is_dir():
        pytest.skip(f"real corpus not available: {root} is absent")
    run_recipe(recipe, f"--{corpus}_root", root, "--folds", "1", "--stop_stage", "4", "--train_args", train_args)
    return recipe / "exp" / protocol / "crnn" / "fold1"


def assert_packed_model_decides_as_decoded(fold: Path, test_dir: Path) -> None:
    """`sertk infer` with the fold's packed model (stage 6) on its test wav.scp gives the decoder's
    posteriors and decisions (stage 4)."""
    import json

    import numpy as np
    from click.testing import CliRunner

    from sertk.cli import main
    from sertk.decode import read_decode_dir
    from sertk.inference.pack_file import read_meta
    out = fold / "infer_test.json"
    result = CliRunner().invoke(main, ["-q", "infer", str(fold / "model.sertk"), str(test_dir / "wav.scp"),
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    decoded = read_decode_dir(fold / "decode_test")
    doc = json.loads(out.read_text())
    rows = doc["rows"]
    if read_meta(fold / "model.sertk")["features"].get("preprocess"):   # what the model's preprocessing did is told
        assert doc["preprocess"]["utterances"] == len(rows)
    assert [r["id"] for r in rows] == decoded.utts
    rule = decoded.default_rule
    for r in rows:
        assert r["label"] == decoded.hyp[rule][r["id"]]
        np.testing.assert_allclose([r["posteriors"][c] for c in decoded.classes], decoded.post[rule][r["id"]],
                                   atol=1e-5)


def probe_through_stage_6(recipe, whisper_base_folder, monkeypatch):
    """Stages 2-6 of ssl_probe on the data dirs a crnn run of the same recipe copy prepared: the corpus's
    features for every utterance, then fold 1 only (the crnn run went through every fold; each further fold
    would cost only process start-ups), scored as a result with four or five folds missing."""
    monkeypatch.setenv("SERTK_CACHE", str(whisper_base_folder.parent.parent))
    run_recipe(recipe, "--nj", "1", *PROBE, "--folds", "1")
    exp = recipe / "exp" / "loso_session" / "ssl_probe"
    assert_folds_done(exp, 1)
    assert "scored 1; **missing: fold2" in (exp / "RESULTS.md").read_text()
