"""Running a recipe's parallel work through the engine the user has: `sertk jobs run` (Kaldi's run.pl /
slurm.pl habit). One command line with JOB in it becomes one job per value of JOB; each writes its own
log. Backends: `local` (a process pool on this machine) and `slurm` (sbatch)."""
