"""A private single-node Slurm cluster for tests: munged, slurmctld and slurmd started from Debian's
slurm-wlm and munge packages (installed by .ci/run when apt can), with their own key, sockets, ports and
state under a temp dir, stopped afterwards. `start_cluster` returns None with the reason when it cannot run."""
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _find(name: str) -> Optional[str]:
    return shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name,) if p.exists()), None)


def start_cluster(base: Path) -> Tuple[Optional[Dict[str, str]], str]:
    """(environment with SLURM_CONF, "") or (None, why not)."""
    missing = [d for d in DAEMONS if _find(d) is None]
    if missing:
        return None, f"Slurm is not installed here (no {', '.join(missing)}; apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return None, "starting a private slurmd needs root"
    base.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool", "log"):
        (base / sub).mkdir(exist_ok=True)
    key = base / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = base / "munge.sock"
    subprocess.run([_find("munged"), "--force", f"--socket={sock}", f"--key-file={key}",
                    f"--pid-file={base / 'munged.pid'}", f"--log-file={base / 'munged.log'}",
                    f"--seed-file={base / 'munge.seed'}"], check=True, capture_output=True)
    host = socket.gethostname()
    conf = base / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=sertktest", f"SlurmctldHost={host}", f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}", "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
        f"AuthInfo=socket={sock}", "CredType=cred/munge", f"StateSaveLocation={base / 'state'}",
        f"SlurmdSpoolDir={base / 'spool'}", f"SlurmctldPidFile={base / 'slurmctld.pid'}",
        f"SlurmdPidFile={base / 'slurmd.pid'}", f"SlurmctldLogFile={base / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={base / 'log' / 'slurmd.log'}", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "SchedulerType=sched/builtin",
        "ReturnToService=2", "MpiDefault=none", "JobCompType=jobcomp/none",
        "AccountingStorageType=accounting_storage/none",
        f"NodeName={host} CPUs={os.cpu_count() or 1} State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for daemon in ("slurmctld", "slurmd"):
        done = subprocess.run([_find(daemon), "-f", str(conf)], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            stop_cluster(base)
            return None, f"{daemon} did not start: {done.stderr.strip()[-300:]}"
    for _ in range(100):   # up to 20 s for the node to come up idle
        state = subprocess.run([_find("sinfo"), "-h", "-o", "%t"], env=env, capture_output=True, text=True)
        if state.stdout.strip() == "idle":
            return env, ""
        time.sleep(0.2)
    stop_cluster(base)
    return None, f"the Slurm node did not become idle (sinfo: {state.stdout.strip() or state.stderr.strip()})"


def stop_cluster(base: Path) -> None:
    for pid_file in ("slurmd.pid", "slurmctld.pid", "munged.pid"):
        try:
            os.kill(int((base / pid_file).read_text().split()[0]), 15)
        except (OSError, ValueError, IndexError):
            pass
