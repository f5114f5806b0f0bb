"""Training: experiment configs, fold data, the trainer loop, checkpoints (GUIDE section 6); decoding is sertk.decode."""
