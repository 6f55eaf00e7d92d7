#!/usr/bin/env bash
# make demo: the main job end to end on the bundled/generated sample.
# Today: sample -> download -> summary; later stages extend this script's pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 NLTK_DATA="$PWD/.data/nltk_data"
PORT=${DEMO_PORT:-8765}
OUT=${DEMO_OUT:-demo}
CURATE=.venv/bin/curate

bash scripts/install_debian_photos.sh
$CURATE sample "$OUT/sample" --seed 0 --base-url "http://127.0.0.1:$PORT" --debian-root .data/debian

$CURATE serve "$OUT/sample" --port "$PORT" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  .venv/bin/python -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null && break
  sleep 0.2
done

# the sample server is on 127.0.0.1, which curate refuses by default
$CURATE download "$OUT/sample/input" "$OUT/images" --allow-private-network --timeout 5 --workers 2 --no-progress
echo "demo: outputs under $OUT/ (images/ holds webdataset tars, rejects/ the rows that did not download)"
