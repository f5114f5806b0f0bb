"""Decoding: a trained model's segment posteriors over a data dir, voted into utterance decisions, written
to a decode dir (the contract with scoring).

    voting.py     voting rules: an utterance's segment posteriors -> its distribution and decision
    decodedir.py  the decode dir: writing, reading, what it owns
    restore.py    a trained model rebuilt from its config and weights
    forward.py    the model's forward pass over a segment dataset: posteriors per segment, by utterance
    decoder.py    one data dir decoded with an exp dir's checkpoint (test hygiene, class maps)
    cli.py        `sertk decode`

The names below are the numpy-only part, so scoring and `sertk config get` import the package without
torch; the torch modules (restore, forward, decoder) are imported by their own names.
"""
from sertk.decode.decodedir import (DecodeDir, group_segments, is_decode_dir, owns_decode_dir, read_decode_dir,
                                    write_decode_dir)
from sertk.decode.voting import DEFAULT_RULE, LOG_FLOOR, VOTING_RULES, decide, vote

__all__ = ["DEFAULT_RULE", "DecodeDir", "LOG_FLOOR", "VOTING_RULES", "decide", "group_segments", "is_decode_dir",
           "owns_decode_dir", "read_decode_dir", "vote", "write_decode_dir"]
