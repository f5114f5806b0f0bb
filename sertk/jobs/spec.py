"""A batch of jobs: one command line and one log path with JOB in them, one job per JOB value.

A job's log is written from its start, as Kaldi's run.pl does, so that a recipe runs the same jobs again
under the same log names; an existing log is replaced only when it is empty or a log a sertk job wrote (its
header: `check_logs`), and anything else there stops the batch before any job runs."""
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from sertk.errors import SertkError
from sertk.fsutil import check_file_replaceable

JOB_RANGE = re.compile(r"^JOB=(.+)$")
# what run.pl would read as a range of another variable (FOO=1:4, FOO=a,b): never a log path here
JOB_LIKE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=[^/]*[:,][^/]*$")
TAIL_LINES = 10
STARTED = re.compile(r"# started at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d on ")   # `header`'s second line


class JobError(SertkError):
    """Jobs that could not be started, or that failed."""


@dataclass(frozen=True)
class Job:
    value: str          # what JOB stands for in this job
    argv: List[str]
    log: Path

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class Outcome:
    job: Job
    status: int                     # the command's exit status (negative: killed by that signal)
    reason: Optional[str] = None    # why it did not run at all (e.g. sbatch refused it)


def job_values(spec: str) -> List[str]:
    """JOB=1:4 -> 1 2 3 4; JOB=1,3,7 -> 1 3 7 (as strings, substituted into the command)."""
    if ":" in spec:
        first, _, last = spec.partition(":")
        if not (first.isdigit() and last.isdigit()) or int(first) > int(last):
            raise JobError(f"JOB={spec}: give a range FIRST:LAST of integers (FIRST <= LAST) or a list 1,3,5")
        return [str(v) for v in range(int(first), int(last) + 1)]
    values = [v for v in spec.split(",") if v]
    if not values or any(not re.fullmatch(r"[\w.-]+", v) for v in values):
        raise JobError(f"JOB={spec}: give a range FIRST:LAST or a comma-separated list of plain values")
    if len(set(values)) != len(values):
        raise JobError(f"JOB={spec}: a value is given twice (two jobs would write the same log)")
    return values


def make_jobs(values: Optional[Sequence[str]], log: str, argv: Sequence[str]) -> List[Job]:
    """One job per value, JOB replaced in the log path and in every argument; one job when `values` is None."""
    if not argv:
        raise JobError("no command to run (give it after the log path, e.g. ... LOG -- sertk ...)")
    if values is None:
        return [Job("", list(argv), Path(log))]
    if "JOB" not in log:
        raise JobError(f"the log path {log} has no JOB in it: every job needs its own log")
    return [Job(v, [a.replace("JOB", v) for a in argv], Path(log.replace("JOB", v))) for v in values]


def check_logs(jobs: Sequence[Job]) -> None:
    """Raise `OutputError` (sertk.fsutil) when a job's log exists and is not a log a sertk job wrote, before any
    job runs: a log is rewritten from its start (as Kaldi's run.pl does), so only our own may be there."""
    for job in jobs:
        check_file_replaceable(job.log, "a job log written by sertk jobs run", is_job_log,
                               "move it away or give another log path")


def is_job_log(path: Path) -> bool:
    """Whether `path` is empty or begins with the header both backends write (`header`, slurm.wrapped): the
    command on a '# ' line, then '# started at <date> <time> on <host>' (after the command's own lines, when
    an argument holds a newline)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16).decode("utf-8", errors="replace")
    return not head or (head.startswith("# ") and any(STARTED.match(line) for line in head.splitlines()[1:]))


def header(job: Job, where: str) -> str:
    return f"# {job.command}\n# started at {time.strftime('%F %T')} on {where}\n"


def footer(status: int, seconds: float) -> str:
    return f"# ended with exit status {status} after {seconds:.1f} s at {time.strftime('%F %T')}\n"


def check_outcomes(outcomes: Sequence[Outcome]) -> None:
    """Nothing when every job succeeded; else a JobError naming each failure, its log and the log's last lines."""
    failed = [o for o in outcomes if o.status != 0]
    if not failed:
        return
    lines = [f"{len(failed)} of {len(outcomes)} job(s) failed:"]
    for o in failed:
        name = f"job JOB={o.job.value}" if o.job.value else "the job"
        if o.reason:
            lines.append(f"  {name} did not run: {o.reason}")
            continue
        status = f"killed by signal {-o.status}" if o.status < 0 else f"exit status {o.status}"
        lines.append(f"  {name} failed ({status}); its log: {o.job.log}")
        lines.extend(f"    | {line}" for line in _tail(o.job.log))
    raise JobError("\n".join(lines))


def _tail(path: Path) -> List[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ["(no log was written)"]
    return [line for line in lines if not line.startswith("# ")][-TAIL_LINES:]
