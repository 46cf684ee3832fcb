#!/usr/bin/env bash
# README command 1: set up .venv (idempotent) and run the main job.
#
# Today the main job checks the environment and benchmarks the adapter layers
# on Swin-T's matrix shapes (CPU). Training and evaluating on a generated
# PASCAL_MT dataset joins it when the backbone, segmentor, datasets and tools
# land (see docs/roadmap.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
PY="$ROOT/.venv/bin/python"
OUT="$ROOT/work_dirs/main"
mkdir -p "$OUT"
echo "== environment =="
"$PY" tools/check_env.py 2>/dev/null
echo
echo "== adapter benchmark (Swin-T shapes, 10% of a batch of 8 at 448², CPU) =="
"$PY" tools/benchmarks/bench_adapters.py --device cpu --token-scale 0.1 --iters 3 \
    --json "$OUT/bench_adapters.json" 2> >(grep -v -e INFO -e warn >&2) | tee "$OUT/bench_adapters.md"
echo
echo "Results: $OUT/bench_adapters.md and $OUT/bench_adapters.json"
