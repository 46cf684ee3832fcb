#!/usr/bin/env bash
# Create or reuse .venv at the repo root and install the tested stack into it.
# Idempotent: a stamp of the pinned requirements and setup.py skips the install
# when nothing changed, so a second run takes about a second.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.ditask_mm_stamp"

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if command -v python3.11 >/dev/null 2>&1; then PY=python3.11; else PY=python3; fi
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[setup_env] creating $VENV with $($PY --version 2>&1)"
  "$PY" -m venv "$VENV"
fi

want="$(cat "$ROOT/requirements/pinned.txt" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" != "$have" ]]; then
  echo "[setup_env] installing the pinned stack (first run: a few minutes; torch is large)"
  # pip prints one harmless warning per package about an absent local index folder.
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q \
      -r "$ROOT/requirements/pinned.txt" 2>&1 | { grep -v "^WARNING: Location" || true; }
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps \
      --no-build-isolation -e "$ROOT" 2>&1 | { grep -v "^WARNING: Location" || true; }
  if ! check="$("$VENV/bin/python" -c "import ditask_mm, mmseg.models, mmpretrain.models, timm, flake8, torch.utils.tensorboard, torchjd.aggregation, cvxpy, qpsolvers, pyEdgeEval._lib, pyEdgeEval.preprocess" 2>&1)"; then
    echo "$check" >&2
    echo "[setup_env] import check failed" >&2
    exit 1
  fi
  echo "$want" > "$STAMP"
  echo "[setup_env] done"
else
  echo "[setup_env] $VENV is up to date"
fi
