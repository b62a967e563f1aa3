#!/usr/bin/env bash
# Sets up an environment (scripts/setup_env.sh) and runs the test suite on CPU.
#   bash scripts/run_tests.sh                  # the fast suite on the locked versions (uv.lock)
#   bash scripts/run_tests.sh --slow           # only the slow checks (multi-process accelerate runs, ...)
#   bash scripts/run_tests.sh --env newest     # the fast suite on the newest versions pyproject allows today
#   bash scripts/run_tests.sh --env oldest     # ... on the lowest version of each direct dependency
# Further arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
KIND=locked
MARKS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --slow) MARKS=(-m slow); shift ;;
    --env) KIND=$2; shift 2 ;;
    *) break ;;
  esac
done
bash scripts/setup_env.sh "$KIND"
VENV=.venv
[ "$KIND" = locked ] || VENV=.venv-$KIND
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$VENV/bin/python" -m pytest -q "${MARKS[@]}" "$@"
