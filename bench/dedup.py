"""Dedup at scale: N L2-normalised float16 vectors (512-d, or 1280-d like effnet-lite0) with planted
near-duplicate groups (bench/vectors.py), up to the research's 12M rows.

Reports, from one run on one machine: curate dedup's wall time and peak RSS (the CLI in its own process; with
`--engine dask` that is the driver's, the workers being processes of their own), pair recall and precision at
threshold 0.95 against the exact answer (every row scanned, shard by shard, for a sample of queries), and, up to
2M rows, the IVF range-search baseline (nlist 1000, nprobe 8) timed on a subset of queries and scaled to all of
them, as the ratio to beat (beyond that its float32 index alone outgrows this machine).

`python -m bench.dedup --n 1000000` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bench.cli_run import run_curate
from bench.vectors import make_vectors

if TYPE_CHECKING:
    from curate.dedup.vectors import EmbeddingSet


def cluster_by_row(samples: Path, n: int) -> np.ndarray:
    """Each row's cluster_id from the samples shards (keys are v<row>)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.ParquetDataset(str(samples)).read(columns=["key", "cluster_id"])
    rows = pc.cast(pc.utf8_slice_codeunits(table.column("key"), 1), "int64").to_numpy()
    out = np.full(n, -1, np.int64)
    out[rows] = table.column("cluster_id").to_numpy()
    if (out < 0).any():
        raise SystemExit(f"bench.dedup: {int((out < 0).sum())} rows missing from {samples}")
    return out


def exact_check(emb: EmbeddingSet, q: np.ndarray, cluster_of: np.ndarray, threshold: float,
                cols: int = 25_000) -> dict:
    """Exact pairs of the query rows (every row scanned, shard by shard, in float32) against curate's clusters:
    recall = exact pairs that share a cluster; precision = same-cluster pairs whose similarity is at the
    threshold (less 1e-3 for float16 rounding)."""
    xq = emb.gather(q, np.float16).astype(np.float32)
    cq = cluster_of[q]
    true_pairs = found = pred_pairs = below = 0
    for start, block in emb.iter_blocks(np.float32):
        for c0 in range(0, len(block), cols):
            part = block[c0 : c0 + cols]
            rows = np.arange(start + c0, start + c0 + len(part))
            sims = xq @ part.T
            other = rows[None, :] != q[:, None]
            same = (cluster_of[rows][None, :] == cq[:, None]) & other
            near = (sims >= threshold) & other
            true_pairs += int(near.sum())
            found += int((near & same).sum())
            pred_pairs += int(same.sum())
            below += int((same & (sims < threshold - 1e-3)).sum())
    return {"true_pairs": true_pairs, "found": found, "pred_pairs": pred_pairs, "below": below}


def ivf_baseline(emb: EmbeddingSet, n: int, dim: int, threshold: float, queries: int,
                 rng: np.random.Generator) -> float:
    """IVF range search (nlist 1000, nprobe 8): build + a subset of queries scaled to all N, in seconds."""
    import faiss

    quant = faiss.IndexFlatIP(dim)
    nlist = min(1000, max(1, n // 40))  # faiss wants >= 39 training points per list
    ivf = faiss.IndexIVFFlat(quant, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    t = time.perf_counter()
    ivf.train(emb.gather(np.sort(rng.choice(n, min(n, 100_000), replace=False)), np.float32))
    for _, block in emb.iter_blocks(np.float32):
        ivf.add(block)
    build_s = time.perf_counter() - t
    ivf.nprobe = 8
    bq = np.sort(rng.choice(n, queries, replace=False))
    xq = emb.gather(bq, np.float32)
    t = time.perf_counter()
    ivf.range_search(xq, threshold)
    return build_s + (time.perf_counter() - t) * n / queries


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--baseline-queries", type=int, default=-1, help="-1: 20000 up to 2M rows, else none")
    ap.add_argument("--engine", default="local", choices=["local", "dask"])
    ap.add_argument("--workers", type=int, default=2, help="--engine dask: local worker processes")
    ap.add_argument("--shard-rows", type=int, default=100_000, help="rows per embed shard of the generated set")
    ap.add_argument("--data", default="bench/.data")
    args = ap.parse_args()

    from curate.dedup.vectors import open_embeddings

    shards = "" if args.shard_rows == 100_000 else f"-{args.shard_rows}"
    root = Path(args.data) / f"planted-{args.n}-{args.dim}{shards}"
    t = time.perf_counter()
    truth = make_vectors(root, args.n, args.dim, shard_rows=args.shard_rows)
    gen_s = time.perf_counter() - t

    # the dedup output (1-2 GB of samples at 12M rows) goes beside the cached vectors, not into /tmp
    out = Path(tempfile.mkdtemp(prefix="curate-bench-dedup-", dir=args.data))
    engine = ["--engine", "dask", "--workers", str(args.workers)] if args.engine == "dask" else []
    try:
        curate_s, peak_mb = run_curate("dedup", str(root), str(out / "dd"), "--score", "raw",
                                       "--threshold", str(args.threshold),
                                       "--mode", "partition", "--linkage", "components", "--no-save-index",
                                       "--no-progress", *engine)
        report = json.loads((out / "dd" / "report.json").read_text())
        # curate's pairs: rows in one cluster (components at the threshold = the transitive closure of pairs)
        cluster_of = cluster_by_row(out / "dd" / "samples", args.n)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    emb = open_embeddings(str(root))
    group_of = np.load(root / "group_of.npy")
    rng = np.random.default_rng(1)
    in_groups = np.flatnonzero(group_of >= 0)
    q = np.unique(np.concatenate([rng.choice(in_groups, args.queries // 2, replace=False),
                                  rng.choice(args.n, args.queries // 2, replace=False)]))
    t = time.perf_counter()
    check = exact_check(emb, q, cluster_of, args.threshold)
    exact_s = time.perf_counter() - t
    baseline_queries = args.baseline_queries if args.baseline_queries >= 0 else (20000 if args.n <= 2_000_000 else 0)
    result = {
        "n": args.n, "dim": args.dim, "threshold": args.threshold, "engine": args.engine, "planted": truth,
        "generate_s": round(gen_s, 1),
        "curate_dedup_wall_s": round(curate_s, 1), "curate_dedup_peak_rss_mb": round(peak_mb, 1),
        "pair_recall": round(check["found"] / check["true_pairs"], 4) if check["true_pairs"] else None,
        "pair_precision": round(1 - check["below"] / check["pred_pairs"], 4) if check["pred_pairs"] else None,
        "exact_pairs_in_sample": check["true_pairs"], "sample_queries": len(q), "exact_scan_s": round(exact_s, 1),
        "duplicates_marked": report["duplicates_marked"], "duplicate_clusters": report["duplicate_clusters"],
    }
    if args.engine == "dask":
        result["workers"] = args.workers
        result["driver_peak_rss_mb"] = result["curate_dedup_peak_rss_mb"]
    if baseline_queries:
        ivf_s = ivf_baseline(emb, args.n, args.dim, args.threshold, baseline_queries, rng)
        result.update({"ivf_baseline_s_estimated": round(ivf_s, 1), "ivf_baseline_queries_timed": baseline_queries,
                       "speedup_vs_ivf_baseline": round(ivf_s / curate_s, 2)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
