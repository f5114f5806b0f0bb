# Where this recipe's parallel jobs run: stage 2's feature-extraction jobs (--nj, one block of speakers
# each) and stage 3's folds (--fold_jobs at a time). `--backend` on the command line overrides it.
#   local: a process pool on this machine
#   slurm: one `sbatch` job each, with the options of conf/slurm.yaml (else ../TEMPLATE/conf/slurm.yaml)
backend=local
