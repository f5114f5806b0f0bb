"""The local backend: the jobs as child processes of this one, at most `max_jobs` at a time."""
import os
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

from sertk.jobs.spec import Job, JobError, Outcome, check_logs, footer, header

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def run_local(jobs: Sequence[Job], max_jobs: int, gpus: int = 0, jobs_per_gpu: int = 1,
              procs_per_job: int = 1) -> List[Outcome]:
    """Run every job; each one's output goes to its log. With `gpus`, each running job gets its own GPUs
    (CUDA_VISIBLE_DEVICES), shared by `jobs_per_gpu` running jobs; without, the machine's cores are shared
    out (OMP_NUM_THREADS) unless set, over the running jobs and each job's `procs_per_job` processes
    (torchrun keeps a set OMP_NUM_THREADS for every rank it starts)."""
    check_logs(jobs)
    parallel = max(1, min(max_jobs, len(jobs)))
    slots = _gpu_slots(parallel, gpus, jobs_per_gpu) if gpus else [None] * parallel
    free, lock = list(range(parallel)), threading.Lock()
    threads = str(max(1, (os.cpu_count() or 1) // (parallel * procs_per_job)))
    running: Dict[int, subprocess.Popen] = {}

    def run(job: Job) -> Outcome:
        with lock:
            slot = free.pop()
        try:
            env = dict(os.environ)
            for var in THREAD_VARIABLES:
                env.setdefault(var, threads)
            if slots[slot] is not None:
                env["CUDA_VISIBLE_DEVICES"] = slots[slot]
            return _run_one(job, env, running)
        finally:
            with lock:
                free.append(slot)

    with ThreadPoolExecutor(parallel) as pool:
        futures = [pool.submit(run, job) for job in jobs]
        try:
            return [f.result() for f in futures]
        except BaseException:   # Ctrl-C: stop what runs, start nothing more
            for f in futures:
                f.cancel()
            for proc in list(running.values()):
                proc.send_signal(signal.SIGTERM)
            raise


def _run_one(job: Job, env: Dict[str, str], running: Dict[int, subprocess.Popen]) -> Outcome:
    job.log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(job.log, "w", encoding="utf-8") as log:
        log.write(header(job, socket.gethostname()))
        log.flush()
        try:
            proc = subprocess.Popen(job.argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        except OSError as e:
            log.write(f"could not start: {e}\n")
            return Outcome(job, 127, f"could not start {job.argv[0]}: {e.strerror or e}")
        running[proc.pid] = proc
        status = proc.wait()
        running.pop(proc.pid, None)
        log.write(footer(status, time.monotonic() - start))
    return Outcome(job, status)


def _gpu_slots(parallel: int, gpus: int, jobs_per_gpu: int = 1) -> List[Optional[str]]:
    """The GPU ids of each of `parallel` slots, `gpus` each, from CUDA_VISIBLE_DEVICES or nvidia-smi;
    `jobs_per_gpu` consecutive slots share the same GPUs (small models leave most of a GPU idle: one H200
    trained the ten folds of strl_ser_spk at once, beside other folds, in 3.0-3.2 min each)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip()]
    else:
        try:
            listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            listing = ""
        ids = [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]
    groups = -(-parallel // jobs_per_gpu)   # GPU groups needed: ceil(parallel / jobs_per_gpu)
    if groups * gpus > len(ids):
        raise JobError(f"{parallel} job(s) at a time of {gpus} GPU(s) each, {jobs_per_gpu} job(s) per GPU, need "
                       f"{groups * gpus} GPUs; this machine shows {len(ids)}; run fewer at a time (--max-jobs), "
                       "more per GPU (--jobs-per-gpu) or with fewer GPUs each")
    return [",".join(ids[(s // jobs_per_gpu) * gpus:(s // jobs_per_gpu + 1) * gpus]) for s in range(parallel)]
