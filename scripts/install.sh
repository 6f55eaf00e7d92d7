#!/usr/bin/env bash
# make install: the venv, torch first (offline.md: never torch 2.13 with PyPI's torchvision), curate, data assets.
# Idempotent and quick when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export NO_ALBUMENTATIONS_UPDATE=1 PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "install: torch==2.14.1 torchvision==0.29.1"
  .venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
fi
stamp=.venv/.curate-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "install: curate[dev] and its dependencies"
  .venv/bin/pip install -q -e '.[dev]'
  touch "$stamp"
fi
bash scripts/install_wordnet.sh
