"""`sertk jobs run`: one command line, one job per JOB value, on the local or the slurm backend."""
from pathlib import Path
from typing import Optional, Tuple

import click

from sertk.cli_types import existing_file


@click.group()
def jobs() -> None:
    """Run a recipe's parallel jobs locally or on Slurm (the recipes' cmd.sh picks the backend)."""


@jobs.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--backend", type=click.Choice(["local", "slurm"]), default="local", show_default=True,
              help="local: a process pool on this machine; slurm: one sbatch job each.")
@click.option("--max-jobs", type=click.IntRange(min=1),
              help="Jobs running at once [default: local: all of them; slurm: all in the queue].")
@click.option("--gpus", default=0, show_default=True, type=click.IntRange(min=0), help="GPUs each job needs.")
@click.option("--jobs-per-gpu", default=1, show_default=True, type=click.IntRange(min=1),
              help="Local backend: running jobs that share the same GPUs (small models leave a GPU mostly idle).")
@click.option("--procs-per-job", default=1, show_default=True, type=click.IntRange(min=1),
              help="Local backend: processes each job runs (torchrun ranks), which share the job's cores.")
@click.option("--kind", help="Kind of job (e.g. extract, train): picks its section of the Slurm options file.")
@click.option("--name", default="sertk", show_default=True, help="Slurm job name.")
@click.option("--slurm-conf", type=existing_file,
              help="Slurm options (YAML: sbatch, gpu, kinds; see sertk/jobs/slurm.py).")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True)
def run(backend: str, max_jobs: Optional[int], gpus: int, jobs_per_gpu: int, procs_per_job: int,
        kind: Optional[str], name: str, slurm_conf: Optional[Path], args: Tuple[str, ...]) -> None:
    """Run ARGS = [JOB=1:N | JOB=a,b,c] LOG [--] COMMAND..., one job per JOB value, JOB replaced in LOG and
    COMMAND (Kaldi's run.pl syntax). Every job's output goes to its own LOG. The exit status is 0 when every
    job succeeded; otherwise each failed job is named with its log and the log's last lines.

    \b
      sertk jobs run JOB=1:4 dump/log/extract.JOB.log -- sertk features extract data/all dump/x --conf c.yaml --nj 4 --job JOB
      sertk jobs run --backend slurm --slurm-conf conf/slurm.yaml --gpus 1 JOB=1,3 exp/log/train.JOB.log -- sertk train ...
    """
    from sertk.jobs.spec import JOB_LIKE, JOB_RANGE, JobError, check_outcomes, job_values, make_jobs
    rest = list(args)
    values = None
    if rest and JOB_RANGE.match(rest[0]):
        values = job_values(JOB_RANGE.match(rest.pop(0)).group(1))
    if not rest:
        raise click.UsageError("give a log path and a command: [JOB=1:N] LOG -- COMMAND...")
    log = rest.pop(0)
    if JOB_LIKE.match(log):   # FOO=1:4, or a second JOB=...: not a log path (it would be written as one)
        raise click.UsageError(f"{log}: only one range, named JOB, is taken (JOB=1:N or JOB=a,b), then the log path")
    if rest and rest[0] == "--":
        rest.pop(0)
    batch = make_jobs(values, log, rest)
    if backend == "local":
        if slurm_conf is not None:
            raise JobError("--slurm-conf is for the slurm backend")
        from sertk.jobs.local import run_local
        outcomes = run_local(batch, max_jobs or len(batch), gpus, jobs_per_gpu, procs_per_job)
    else:
        if jobs_per_gpu != 1:
            raise JobError("--jobs-per-gpu is for the local backend (Slurm gives each job its own GPUs)")
        from sertk.jobs.slurm import read_slurm_config, run_slurm
        outcomes = run_slurm(batch, read_slurm_config(slurm_conf), name, kind, gpus, max_jobs)
    check_outcomes(outcomes)
    click.echo(f"{len(batch)} job(s) finished ({backend}); logs: {batch[0].log}" +
               (f" ... {batch[-1].log}" if len(batch) > 1 else ""))
