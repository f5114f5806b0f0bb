"""Kaldi-style data directories: the contract between recipe stages (GUIDE section 3)."""
