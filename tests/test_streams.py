"""The stream package (sertk.features.streams): one module per family, each config building its own module,
importable from any of its modules first, with no import cycle and no module over 400 lines."""
import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sertk.features.streams import FAMILIES, STREAM_TYPES, BuildContext, StreamConfig, build_frontends, parse_config

PACKAGE = Path(__file__).resolve().parents[1] / "sertk" / "features" / "streams"
ORDER = ["logmel", "mfcc", "energy", "log_energy", "zcr", "concat", "opensmile_lld", "opensmile_functionals", "ssl",
         "ssl_stats"]


def test_families_register_every_type_in_order():
    assert FAMILIES == ("spectral", "frames", "concat", "opensmile", "ssl", "ssl_stats")
    assert list(STREAM_TYPES) == ORDER
    for name, cls in STREAM_TYPES.items():   # no isinstance chain: each type says how it is built
        assert cls.build is not StreamConfig.build, name
        assert cls.__module__.rsplit(".", 1)[-1] in FAMILIES, name


@pytest.mark.parametrize("module", ["registry", "concat", "ssl_stats"])
def test_any_module_imports_first(module):
    code = (f"import sertk.features.streams.{module}\n"
            "from sertk.features.streams import STREAM_TYPES\nprint(','.join(STREAM_TYPES))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [",".join(ORDER)]


def _imports(path: Path):
    """The sertk.features modules `path` imports when it runs (TYPE_CHECKING blocks left out)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.ImportFrom) and node.module.startswith("sertk.features"):
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("sertk.features"))


def test_no_import_cycle_and_small_modules():
    root = PACKAGE.parents[1]
    modules = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (root / "features").rglob("*.py")}
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    done, path = set(), []

    def visit(m):
        assert m not in path, f"import cycle: {' -> '.join(path[path.index(m):] + [m])}"
        if m not in done:
            path.append(m)
            for n in graph[m]:
                visit(n)
            path.pop()
            done.add(m)
    for m in graph:
        visit(m)
    for p in PACKAGE.glob("*.py"):
        assert len(p.read_text().splitlines()) <= 400, p.name


def test_streams_with_the_same_stft_share_it():
    cfg = parse_config({"sample_rate": 16000, "streams": {
        "logmel": {"type": "logmel", "n_mels": 40}, "mfcc": {"type": "mfcc", "n_mels": 40, "n_mfcc": 13},
        "lld": {"type": "concat", "parts": [{"type": "zcr"}, {"type": "mfcc", "n_mels": 40, "deltas": 1}]},
        "wide": {"type": "logmel", "n_mels": 64}}})
    built = build_frontends(cfg)
    assert built["logmel"].mel is built["mfcc"].mel is built["lld"].parts[1].base.mel
    assert built["wide"].mel is not built["logmel"].mel and built["wide"].mel.power is built["logmel"].mel.power
    ctx = BuildContext(16000, cfg.streams)
    assert ctx.build(cfg.streams["lld"]).dim == 1 + 2 * 40


@pytest.mark.parametrize("sr, n_fft, n_mels, fmin, fmax, htk, norm", [
    (16000, 512, 64, 0.0, None, False, "slaney"), (16000, 400, 80, 0.0, 8000.0, False, "slaney"),
    (16000, 512, 128, 20.0, 7600.0, True, None), (22050, 1024, 40, 300.0, None, True, "slaney"),
    (8000, 256, 13, 0.0, 4000.0, False, None)])
def test_mel_filterbank_equals_librosas_to_the_bit(sr, n_fft, n_mels, fmin, fmax, htk, norm):
    import librosa
    from sertk.features.streams.melscale import mel_filterbank
    want = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk, norm=norm)
    got = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, htk, norm)
    assert got.dtype == want.dtype == np.float32 and np.array_equal(got, want)


def test_too_many_mels_warn_of_empty_filters_as_librosa_does():
    from sertk.features.streams.melscale import mel_filterbank
    with pytest.warns(UserWarning, match="Empty filters detected"):
        mel_filterbank(8000, 128, 128)
