"""Exceptions for user-facing problems.

Library code raises these with a message that names the file (and line) and the problem;
the CLI prints the message on one line and exits non-zero. Anything else is a bug.
"""


class SertkError(Exception):
    """A problem with the user's input or environment, explained in the message."""


class AudioError(SertkError):
    """An audio file is missing, unreadable, empty or holds non-finite samples."""


class DataDirError(SertkError):
    """A Kaldi-style data directory is malformed or inconsistent."""


class LabelError(SertkError):
    """A label map is malformed, or a raw label has no mapping."""


class CorpusError(SertkError):
    """A corpus release is not laid out as its preparer expects."""


class ProtocolError(SertkError):
    """An evaluation protocol cannot be built, or a fold layout breaks its promises."""


class OutputError(SertkError):
    """An output path exists and is not something sertk may replace."""


class ScoreError(SertkError):
    """Decoder output and references cannot be scored together (missing, extra or unknown entries)."""


class FeatureError(SertkError):
    """A feature config is invalid, or a feature dump is missing or does not match what is asked."""


class DeviceError(SertkError):
    """A --device that is not a device, or one this machine (or this build of torch) does not have."""
