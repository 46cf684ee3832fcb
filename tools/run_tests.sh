#!/usr/bin/env bash
# README command 2: set up .venv (idempotent), lint, and run the test suite.
# flake8 (settings in .flake8) runs first; any finding stops here, before pytest.
# Arguments go to pytest (e.g. a test path, -k NAME).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tools/setup_env.sh"
cd "$ROOT"
LINT_PATHS=(ditask_mm tools tests configs setup.py)
if ! lint="$("$ROOT/.venv/bin/python" -m flake8 "${LINT_PATHS[@]}" 2>&1)"; then
  echo "$lint" >&2
  echo "[run_tests] flake8 failed on ${LINT_PATHS[*]} (settings: .flake8, see docs/development.md);" \
       "fix the findings above, then rerun" >&2
  exit 1
fi
echo "[run_tests] flake8: clean"
exec "$ROOT/.venv/bin/python" -m pytest tests -q "$@"
