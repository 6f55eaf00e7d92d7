#!/usr/bin/env bash
# make demo: the main job end to end on the bundled/generated sample.
# sample -> download -> embed -> dedup -> recaption -> export -> train (tiny, a few steps) -> audit.
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
kill $server 2>/dev/null || true

$CURATE embed "$OUT/images" "$OUT/emb" --text-model minilm --no-progress
$CURATE dedup "$OUT/emb" "$OUT/dedup" --images "$OUT/images" --no-progress
$CURATE dedup "$OUT/emb" "$OUT/dedup" --images "$OUT/images" --no-progress >/dev/null  # rerun: resumes, nothing redone
$CURATE recaption "$OUT/dedup" "$OUT/recaption" --no-progress
$CURATE export "$OUT/images" "$OUT/train" --dedup "$OUT/dedup" --captions "$OUT/recaption" --no-progress
$CURATE train "$OUT/train" "$OUT/model" --model tiny --steps ${DEMO_TRAIN_STEPS:-30} --mitigations rt,gn --no-progress
$CURATE audit "$OUT/audit" --model "$OUT/model/final" --train "$OUT/train" --prompts 8
.venv/bin/python - "$OUT" <<'PY'
import json, sys
import pyarrow.parquet as pq
from curate.dedup.evaluate import pair_scores
out = sys.argv[1]
truth = {r["key"]: r["source_key"] for r in pq.read_table(f"{out}/sample/truth.parquet").to_pylist() if r["source_key"]}
rows = pq.ParquetDataset(f"{out}/dedup/samples").read().to_pylist()
print("demo: planted copies vs the sample's ground truth:", pair_scores({r["key"]: r["cluster_id"] for r in rows}, truth))
PY
echo "demo: outputs under $OUT/: images/ (downloaded tars + rejects), emb/, dedup/, recaption/, train/ (training"
echo "      tars), model/ (checkpoints + final pipeline), audit/; open the report.html files in dedup/, recaption/, audit/"
