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
GPUS=${GPUS:-4}
GPUS_PER_NODE=${GPUS_PER_NODE:-$(( GPUS < 4 ? GPUS : 4 ))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python )}

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
set -x
# SRUN_ARGS is split on spaces on purpose: it holds several srun options
# shellcheck disable=SC2086
exec srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    "$PYTHON" -u "$ROOT/tools/test.py" "$CONFIG" "$CHECKPOINT" --launcher slurm "$@"
