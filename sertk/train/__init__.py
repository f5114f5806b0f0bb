"""Training, checkpoints and segment-posterior inference (GUIDE section 6)."""
