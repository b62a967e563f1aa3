#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv and installs the library with
# its dev extra. Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch and torchvision are installed together so that their builds match (a CPU-only torch with the
# index's torchvision fails at import: "operator torchvision::nms does not exist").
python -m pip install -q -e ".[dev]"
python - <<'PY'
import torch, torchvision, transformers  # noqa: F401  (fails loudly if the pair is mismatched)
print(f"environment ready: torch {torch.__version__}, torchvision {torchvision.__version__}, transformers {transformers.__version__}")
PY
