"""`sertk` that dies right after rank 0 has written last.pt of epoch STOP_AFTER_EPOCH: an interrupted
distributed run (torchrun then stops the other processes), for the resume test."""
import os
import sys

from sertk.cli import main
from sertk.train import trainer

STOP = int(os.environ["STOP_AFTER_EPOCH"])
real_save = trainer.save_checkpoint


def save_then_die(path, state):
    real_save(path, state)
    if path.name == "last.pt" and state["epoch"] == STOP:
        sys.exit(9)


trainer.save_checkpoint = save_then_die
main()
