#!/usr/bin/env bash
# Train on a SLURM cluster, mmseg's way: one srun task per GPU, each running tools/train.py --launcher slurm.
#   tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args...]
# WORK_DIR is taken when the 4th argument does not start with '-'.
# Env: GPUS (tasks in all, default 4), GPUS_PER_NODE (default: GPUS, at most 4), CPUS_PER_TASK (default 5),
# SRUN_ARGS (extra srun options, e.g. "--quotatype=auto --time=24:00:00"), PYTHON (default: .venv/bin/python
# when present, else python). Rank 0's node is read with scontrol; set MASTER_ADDR/MASTER_PORT to override
# (default port 29500). Without CUDA the tasks train on CPU over gloo (ditask_mm/engine/distributed.py).
set -eo pipefail
if [[ $# -lt 3 ]]; then
  echo "usage: $0 PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py args...]" >&2
  echo "  env: GPUS=4 GPUS_PER_NODE=min(GPUS,4) CPUS_PER_TASK=5 SRUN_ARGS='' PYTHON=python" >&2
  exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
WORK_DIR_ARGS=()
if [[ $# -gt 0 && "$1" != -* ]]; then
  WORK_DIR_ARGS=(--work-dir "$1")
  shift
fi
# the srun call and its defaults: tools/slurm_srun.sh
exec bash "$(dirname "$0")/slurm_srun.sh" "$PARTITION" "$JOB_NAME" train.py "$CONFIG" --launcher slurm \
    "${WORK_DIR_ARGS[@]}" "$@"
