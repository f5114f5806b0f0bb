"""sertk: a speech-emotion-recognition toolkit with Kaldi-style data dirs and recipes."""

__version__ = "0.1.0"


def __getattr__(name):
    # `from sertk import Inferencer` without making `import sertk` (the CLI's first import) load torch
    if name == "Inferencer":
        from sertk.inference.inferencer import Inferencer
        return Inferencer
    raise AttributeError(f"module 'sertk' has no attribute '{name}'")
