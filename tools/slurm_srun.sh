#!/usr/bin/env bash
# What tools/slurm_train.sh and tools/slurm_test.sh share: start one srun task per GPU, each running
# tools/TOOL with the given arguments (the callers add --launcher slurm).
#   tools/slurm_srun.sh PARTITION JOB_NAME TOOL [TOOL args...]
# Env: GPUS (tasks in all, default 4), GPUS_PER_NODE (default: GPUS, at most 4), CPUS_PER_TASK (default 5),
# SRUN_ARGS (extra srun options, split on spaces), PYTHON (default: .venv/bin/python when present, else python).
set -eo pipefail
PARTITION=$1
JOB_NAME=$2
TOOL=$3
shift 3
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
    "$PYTHON" -u "$ROOT/tools/$TOOL" "$@"
