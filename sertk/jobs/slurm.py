"""The Slurm backend: each job is one `sbatch --wait` (so its exit status comes back), with the options of
a YAML file (the recipes' conf/slurm.yaml):

    sbatch:              # every job: long sbatch options without the --; null leaves one out, true is a bare flag
      time: "1-00:00:00"
      cpus-per-task: 2
    gpu:                 # added to jobs that ask for GPUs; {gpus} is how many
      gres: "gpu:{gpus}"
    kinds:               # per kind of job (sertk jobs run --kind), over the options above
      train: {time: "2-00:00:00"}

The job's output goes to its log (sbatch --output); the log's first and last lines say what ran, where,
and how it ended.
"""
import shlex
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from sertk.jobs.spec import Job, JobError, Outcome, check_logs
from sertk.yamlutil import read_yaml_file

SECTIONS = ("sbatch", "gpu", "kinds")


def read_slurm_config(path: Optional[Path]) -> Dict[str, Any]:
    """The checked options file (empty when there is none)."""
    if path is None:
        return {}
    doc = read_yaml_file(Path(path), JobError) or {}
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise JobError(f"{path}: unknown section(s) {unknown}; the sections are {', '.join(SECTIONS)}")
    for name, options in [("sbatch", doc.get("sbatch")), ("gpu", doc.get("gpu"))] + \
            [(f"kinds.{k}", v) for k, v in (doc.get("kinds") or {}).items()]:
        if options is not None and (not isinstance(options, dict) or
                                    any(isinstance(v, (dict, list)) for v in options.values())):
            raise JobError(f"{path}: {name} must map sbatch option names to single values")
    return doc


def sbatch_options(config: Dict[str, Any], kind: Optional[str], gpus: int) -> List[str]:
    """The sbatch options of a job of `kind` asking for `gpus` GPUs."""
    options: Dict[str, Any] = dict(config.get("sbatch") or {})
    if gpus:
        options.update({k: str(v).replace("{gpus}", str(gpus)) for k, v in (config.get("gpu") or {}).items()})
    if kind is not None:
        options.update((config.get("kinds") or {}).get(kind) or {})
    out = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        out.append(f"--{key}" if value is True else f"--{key}={value}")
    return out


def wrapped(job: Job) -> str:
    """The job's shell script: the command between a header and a footer like the local backend's."""
    # sbatch runs it with /bin/sh, which may have no $SECONDS: date +%s times it
    return ("echo \"# \"" + shlex.quote(job.command) + "; "
            "echo \"# started at $(date '+%F %T') on $(hostname) (slurm job ${SLURM_JOB_ID:-?})\"; start=$(date +%s); "
            f"{job.command}; status=$?; "
            "echo \"# ended with exit status $status after $(( $(date +%s) - start )) s at $(date '+%F %T')\"; "
            "exit $status")


def sbatch_argv(job: Job, name: str, options: Sequence[str]) -> List[str]:
    log = str(job.log.resolve()).replace("%", "%%")   # Slurm expands %j, %x ... in the name; %% is a %
    return ["sbatch", "--parsable", "--wait", f"--job-name={name}", f"--output={log}",
            *options, f"--wrap={wrapped(job)}"]


def run_slurm(jobs: Sequence[Job], config: Dict[str, Any], name: str, kind: Optional[str] = None,
              gpus: int = 0, max_jobs: Optional[int] = None) -> List[Outcome]:
    """Submit every job (at most `max_jobs` in the queue at once) and wait for all of them."""
    if shutil.which("sbatch") is None:
        raise JobError("the slurm backend needs sbatch, which is not on PATH here; use the local backend "
                       "(backend=local in cmd.sh) or run on a Slurm login node")
    options = sbatch_options(config, kind, gpus)
    check_logs(jobs)   # sbatch --output truncates the log
    for job in jobs:
        job.log.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max(1, min(max_jobs or len(jobs), len(jobs)))) as pool:
        return list(pool.map(lambda job: _submit(job, name, options), jobs))


def _submit(job: Job, name: str, options: Sequence[str]) -> Outcome:
    start = time.monotonic()
    proc = subprocess.run(sbatch_argv(job, name, options), capture_output=True, text=True)
    submitted = proc.stdout.strip().split(";")[0]
    if not submitted.isdigit():   # refused at submission: no job id, no log
        reason = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"sbatch exit status {proc.returncode}"
        return Outcome(job, proc.returncode or 1, f"sbatch refused it: {reason}")
    if proc.returncode != 0 and not job.log.exists():
        return Outcome(job, proc.returncode, f"slurm job {submitted} ended (exit status {proc.returncode}) after "
                                             f"{time.monotonic() - start:.0f} s without writing its log")
    return Outcome(job, proc.returncode)
