"""Experiment configs: what every key is, takes and defaults to (`schema`), a config file loaded with
`base:` inheritance, `--set` and `--grid` and checked whole (`loading`), and `sertk config` (`cli`).

Training, decoding and inference all read these configs, so they sit below those packages; nothing here
imports torch unless a model's options are checked (`load_config(..., models=True)`, the default).
"""
