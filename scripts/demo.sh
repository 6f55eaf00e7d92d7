#!/usr/bin/env bash
# make demo: the main job end to end on the bundled/generated sample.
# sample -> download -> embed -> dedup -> recaption -> export -> train (tiny, a few steps) -> audit.
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 NLTK_DATA="$PWD/.data/nltk_data"
OUT=demo  # pipelines/demo.yaml's root
CURATE=.venv/bin/curate

bash scripts/install_debian_photos.sh
# a fresh run each time: an earlier demo made with other options would (rightly) refuse to be resumed
rm -rf "$OUT"
# pipelines/demo.yaml holds the whole run: sample, a local server, download, embed, dedup, recaption, export,
# a 30-step tiny train and the audit
$CURATE run pipelines/demo.yaml
$CURATE run pipelines/demo.yaml >/dev/null  # rerun: shard stages skip finished shards, train resumes
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
echo "      tars), model/ (checkpoints + final pipeline), audit/; the run report: $OUT/report.html (and run.json),"
echo "      which links the stage reports in dedup/, recaption/ and audit/"
