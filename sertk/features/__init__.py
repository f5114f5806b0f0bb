"""Features (stage 2): frame-level streams computed in torch, stored as Kaldi ark/scp, and CMVN.

- `streams`:   stream configs (dataclasses with the defaults) and the torch modules that compute them,
               one module per family (sertk.features.streams.FAMILIES)
- `extract`:   data dir -> feature dump (batched, parallel jobs, atomic, skipped when up to date)
- `storage`:   the dump's on-disk layout; `load_feats` / `num_frames` for readers
- `cmvn`:      global (train-only) and per-speaker mean/variance normalisation
- `reading`:   a model's view of a dump: the layout of its streams, those streams in memory, normalised
- `dataset`:   segment datasets: those features cut into the windows a model reads (training, decoding,
               inference)

Submodules are imported where they are used, so `import sertk.features` stays cheap.
"""

# the normalisation modes (sertk.features.cmvn), here so that reading a config needs no torch
CMVN_MODES = ("global", "speaker", "none")
