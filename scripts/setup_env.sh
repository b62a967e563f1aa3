#!/usr/bin/env bash
# Creates (or refreshes) a virtual environment and installs the library with its dev extra. Idempotent.
#   bash scripts/setup_env.sh            # .venv: exactly the versions in uv.lock (what CI proved)
#   bash scripts/setup_env.sh newest     # .venv-newest: locks/requirements-newest.txt (the top of pyproject's ranges)
#   bash scripts/setup_env.sh oldest     # .venv-oldest: locks/requirements-oldest.txt (each direct dependency's floor)
# (newest/oldest: installed exactly from the committed locks/requirements-<kind>.txt; bash scripts/refresh_locks.sh
#  re-resolves them against today's index, which is how a new release gets tested: commit the result when green)
# uv itself (pinned below) is installed into .tools/ with pip when it is not there yet.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
UV_VERSION=0.13.9
KIND=${1:-locked}

if [ ! -x .tools/bin/uv ] || [ "$(.tools/bin/uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  "$PYTHON" -m venv .tools
  .tools/bin/python -m pip install -q "uv==$UV_VERSION"
fi
UV=.tools/bin/uv

case "$KIND" in
  locked)
    VENV=.venv
    # --frozen: install what uv.lock says, never re-resolve (a fresh machine next month gets the same set)
    "$UV" sync --quiet --frozen --extra dev --python "$PYTHON"
    ;;
  newest|oldest)
    VENV=.venv-$KIND
    # a new environment every time: nothing from an earlier install may hide a broken bound
    rm -rf "$VENV"
    "$UV" venv --quiet --python "$PYTHON" "$VENV"
    # the committed resolution, never today's index: the same versions on every machine until refresh_locks.sh
    LOCK="locks/requirements-$KIND.txt"
    "$UV" pip sync --quiet --python "$VENV/bin/python" "$LOCK"
    "$UV" pip install --quiet --python "$VENV/bin/python" --no-deps -e .
    ;;
  *)
    echo "setup_env.sh: unknown environment '$KIND' (use locked, newest or oldest)" >&2
    exit 2
    ;;
esac

"$VENV/bin/python" - <<'PY'
import torch, torchvision, transformers  # noqa: F401  (fails loudly if the pair is mismatched)
print(f"environment ready: torch {torch.__version__}, torchvision {torchvision.__version__}, transformers {transformers.__version__}")
PY
