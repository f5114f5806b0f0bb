"""One training process per experiment dir at a time.

Two `sertk train` (or `sertk refit`) processes on one --exp would both write last.pt, best.pt and train.log:
a recipe started twice, a Slurm job resubmitted while the first still runs. The first holds an exclusive
`flock` on EXP/.lock while it trains; a second is refused at once with one line naming the holder. The
kernel drops the lock when the holder exits, however it exits (a killed run leaves no stale lock to clear),
and the file itself stays: removing a lock file that another process may have just opened would let two
processes hold "the" lock. Where `fcntl` does not exist (not a POSIX system) nothing is locked.
"""
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sertk.errors import OutputError

try:
    import fcntl
except ImportError:   # not POSIX: no locking
    fcntl = None

LOCK_FILE = ".lock"


class ExpDirBusy(OutputError):
    """Another process is training in this experiment dir."""


@contextmanager
def exp_dir_lock(exp_dir: Path, take: bool = True) -> Iterator[None]:
    """Hold EXP/.lock (made with EXP when missing) while the body runs; `ExpDirBusy` when another process
    holds it. `take=False` (torchrun ranks other than 0, whose rank 0 holds it) does nothing."""
    if not take or fcntl is None:
        yield
        return
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(exp_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise ExpDirBusy(f"{exp_dir} is being trained by {holder}; wait for it to finish, or stop it and "
                             "run the command again (it resumes from last.pt)") from None
        os.ftruncate(fd, 0)   # who holds it, for the message above
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()} since "
                      f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
