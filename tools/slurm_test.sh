#!/usr/bin/env bash
# Evaluate a checkpoint on a SLURM cluster, mmseg's way: one srun task per GPU, each running
# tools/test.py --launcher slurm.
#   tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]
# Env: GPUS (tasks in all, default 4), GPUS_PER_NODE (default: GPUS, at most 4), CPUS_PER_TASK (default 5),
# SRUN_ARGS (extra srun options), PYTHON (default: .venv/bin/python when present, else python).
# Rank 0's node is read with scontrol; set MASTER_ADDR/MASTER_PORT to override (default port 29500).
set -eo pipefail
if [[ $# -lt 4 ]]; then
  echo "usage: $0 PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args...]" >&2
  echo "  env: GPUS=4 GPUS_PER_NODE=min(GPUS,4) CPUS_PER_TASK=5 SRUN_ARGS='' PYTHON=python" >&2
  exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
shift 4
# the srun call and its defaults: tools/slurm_srun.sh
exec bash "$(dirname "$0")/slurm_srun.sh" "$PARTITION" "$JOB_NAME" test.py "$CONFIG" "$CHECKPOINT" \
    --launcher slurm "$@"
