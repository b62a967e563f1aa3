#!/usr/bin/env bash
# Sets up .venv (if needed) and runs the test suite on CPU.
#   bash scripts/run_tests.sh           # the fast suite (what CI runs)
#   bash scripts/run_tests.sh --slow    # only the slow checks (multi-process accelerate runs, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "${1:-}" = "--slow" ]; then
  shift
  exec python -m pytest -m slow -q "$@"
fi
exec python -m pytest -q "$@"
