#!/usr/bin/env bash
# The quickstart: set up .venv, then render synthetic LMDBs, fine-tune a reduced DiG on CPU, evaluate it and
# read sample images. Extra arguments go to `train_ocr quickstart` (e.g. --model both, train.num_train_epochs=2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/train_ocr quickstart "$@"
