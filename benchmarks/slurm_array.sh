#!/bin/bash
# One fastamp sweep over a SLURM job array: each array task trains its shard of the runs on one GPU, all writing to
# one output folder on a shared filesystem; a last job rebuilds the tables from the records.
#
#   sbatch benchmarks/slurm_array.sh                    # 12 tasks: cifar10-lt's 84 runs, 7 each
#   sbatch --array=0-83 benchmarks/slurm_array.sh       # one run per task (any N: --shard reads it)
#   sbatch --dependency=afterany:<jobid> --wrap "fastamp report --out $OUT"   # or let the last line below do it
#
# A task that is requeued or rerun resumes its runs from their last epoch and skips finished ones. Locks name the
# host and process that trains a run; a node that died leaves runs that another task takes over once their heartbeat
# is older than --lock-timeout (30 min). Edit the paths (DATA, OUT) and the partition/account lines for your cluster.
#SBATCH --job-name=fastamp-cifar10-lt
#SBATCH --array=0-11
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=24:00:00
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail

DATA=${DATA:-$HOME/data/cifar-10-python.tar.gz}   # CIFAR-10: folder, archive or pickles
OUT=${OUT:-$HOME/fastamp_runs/cifar10-lt}        # on a filesystem every node sees

# shard i of N (--shard auto reads the same variables, and also arrays that do not start at 0)
status=0
srun fastamp bench --preset cifar10-lt --data "$DATA" \
    --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}" --out "$OUT" || status=$?

# Tables of whatever is finished so far ("k of 84 planned runs"); the last task to end writes the complete ones.
fastamp report --out "$OUT" > /dev/null
exit $status
