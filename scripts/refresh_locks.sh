#!/usr/bin/env bash
# Re-resolves CI's newest and oldest environments against today's index into locks/requirements-{newest,oldest}.txt.
#   bash scripts/refresh_locks.sh && CI=true bash .ci/run     # then commit locks/ if green
# newest: the highest versions pyproject's ranges allow; oldest: the lowest version of each direct dependency.
# Nothing installs from the index without a committed lock: this is the one step that asks it what is new.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh >/dev/null
for kind in newest oldest; do
  resolution=$([ "$kind" = newest ] && echo highest || echo lowest-direct)
  .tools/bin/uv pip compile --quiet --python .venv/bin/python --resolution "$resolution" --extra dev pyproject.toml \
    -o "locks/requirements-$kind.txt"
  echo "locks/requirements-$kind.txt: $(grep -c '==' "locks/requirements-$kind.txt") pinned packages"
done
