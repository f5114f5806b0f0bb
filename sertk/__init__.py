"""sertk: a speech-emotion-recognition toolkit with Kaldi-style data dirs and recipes."""

__version__ = "0.1.0"
