"""Dedup at scale: 1,000,000 L2-normalised 512-d float16 vectors with planted near-duplicate groups.

Reports, from one run on one machine: curate dedup's wall time and peak RSS (the CLI in its own process),
pair recall and precision at threshold 0.95 against the exact answer (IndexFlatIP range search over every
row for a sample of queries), and the IVF range-search baseline (nlist 1000, nprobe 8) timed on a subset of
queries and scaled to all of them, as the ratio to beat.

`python -m bench.dedup --n 1000000` prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.cli_run import run_curate


def make_vectors(root: Path, n: int, dim: int, seed: int = 0, dup_share: float = 0.05) -> dict:
    """Topic-clustered base vectors (like real embeddings, not uniform noise) plus planted groups of 2..1000
    perturbed copies with a long tail of sizes; written in `curate embed`'s layout, 10 shards."""
    marker = root / "truth.json"
    if marker.exists():
        return json.loads(marker.read_text())
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_dup_rows = int(n * dup_share)
    sizes = []
    while sum(sizes) < n_dup_rows:
        sizes.append(int(min(1000, max(2, rng.zipf(1.8)))))
    sizes[-1] -= sum(sizes) - n_dup_rows
    if sizes[-1] < 2:
        sizes.pop()
    n_base = n - sum(sizes)
    topics = rng.standard_normal((1000, dim)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    (root / "img_emb").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(exist_ok=True)
    shard_rows = int(np.ceil(n / 10))
    group_of = np.full(n, -1, np.int64)
    # rows are generated shard by shard to keep memory small; group members are spread over the order
    perm = rng.permutation(n)
    sources = rng.choice(n_base, size=len(sizes), replace=False)
    noise = rng.uniform(0.002, 0.008, size=len(sizes))
    member_of = {}  # final row -> (group, source base row)
    pos = n_base
    for g, size in enumerate(sizes):
        for _ in range(size):
            member_of[int(perm[pos])] = g
            pos += 1
    base_rows = perm[:n_base]
    base_index = np.empty(n, np.int64)
    base_index[base_rows] = np.arange(n_base)
    is_source = np.full(n_base, -1, np.int64)
    is_source[sources] = np.arange(len(sizes))

    def base_vector(b: int, local_rng: np.random.Generator) -> np.ndarray:
        r = np.random.default_rng(seed * 1_000_003 + b)
        v = 0.75 * topics[r.integers(1000)] + 0.66 * r.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
        return v / np.linalg.norm(v)

    for s in range(10):
        rows = np.arange(s * shard_rows, min(n, (s + 1) * shard_rows))
        out = np.empty((len(rows), dim), np.float32)
        for k, r in enumerate(rows.tolist()):
            if r in member_of:
                g = member_of[r]
                src = base_vector(int(sources[g]), rng)
                v = src + noise[g] * rng.standard_normal(dim).astype(np.float32)
                out[k] = v / np.linalg.norm(v)
                group_of[r] = g
            else:
                b = int(base_index[r])
                out[k] = base_vector(b, rng)
                if is_source[b] >= 0:
                    group_of[r] = is_source[b]
        np.save(root / "img_emb" / f"img_emb_{s:05d}.npy", out.astype(np.float16))
        pq.write_table(pa.table({"key": [f"v{r}" for r in rows], "shard": np.full(len(rows), s, np.int64),
                                 "caption": [None] * len(rows)}), root / "metadata" / f"metadata_{s:05d}.parquet")
    (root / "manifest.json").write_text(json.dumps({"model": "synthetic", "dim": dim, "kind": "float"}))
    truth = {"n": n, "groups": len(sizes), "largest": max(sizes), "dup_rows": int(sum(sizes))}
    np.save(root / "group_of.npy", group_of)
    marker.write_text(json.dumps(truth))
    return truth


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--baseline-queries", type=int, default=20000)
    ap.add_argument("--data", default="bench/.data")
    args = ap.parse_args()
    import faiss

    from curate.dedup.vectors import open_embeddings

    root = Path(args.data) / f"vectors-{args.n}-{args.dim}"
    t = time.perf_counter()
    truth = make_vectors(root, args.n, args.dim)
    gen_s = time.perf_counter() - t

    out = Path(tempfile.mkdtemp(prefix="curate-bench-dedup-"))
    curate_s, peak_mb = run_curate("dedup", str(root), str(out / "dd"), "--threshold", str(args.threshold),
                                   "--mode", "partition", "--linkage", "components", "--no-save-index",
                                   "--no-progress")
    report = json.loads((out / "dd" / "report.json").read_text())

    # curate's pairs: rows in the same cluster (components at the threshold = the transitive closure of pairs)
    import pyarrow.parquet as pq

    cluster = pq.ParquetDataset(str(out / "dd" / "samples")).read(columns=["key", "cluster_id"])
    key_to_cluster = dict(zip(cluster.column("key").to_pylist(), cluster.column("cluster_id").to_numpy(), strict=True))
    shutil.rmtree(out, ignore_errors=True)

    # exact answer on a sample of queries: half from planted groups, half uniform
    emb = open_embeddings(str(root))
    x = emb.load_all(np.float16)
    group_of = np.load(root / "group_of.npy")
    rng = np.random.default_rng(1)
    in_groups = np.flatnonzero(group_of >= 0)
    q = np.unique(np.concatenate([rng.choice(in_groups, args.queries // 2, replace=False),
                                  rng.choice(args.n, args.queries // 2, replace=False)]))
    flat = faiss.IndexFlatIP(args.dim)
    for b in range(0, args.n, 100_000):
        flat.add(x[b : b + 100_000].astype(np.float32))
    t = time.perf_counter()
    lims, dist, ids = flat.range_search(x[q].astype(np.float32), args.threshold)
    exact_s = time.perf_counter() - t
    keys = [f"v{r}" for r in range(args.n)]
    true_pairs = found = 0
    for a, qi in enumerate(q.tolist()):
        nb = ids[lims[a] : lims[a + 1]]
        nb = nb[nb != qi]
        true_pairs += len(nb)
        found += int(sum(key_to_cluster[keys[j]] == key_to_cluster[keys[qi]] for j in nb.tolist()))
    # precision: same-cluster pairs of the sampled queries whose exact similarity is below the threshold
    members: dict[int, list[int]] = {}
    for r, c in enumerate(cluster.column("cluster_id").to_numpy().tolist()):
        members.setdefault(c, []).append(r)
    key_rows = {k: i for i, k in enumerate(cluster.column("key").to_pylist())}
    pred_pairs = below = 0
    for qi in q.tolist():
        c = key_to_cluster[keys[qi]]
        others = [int(cluster.column("key")[m].as_py()[1:]) for m in members[c]] if len(members[c]) > 1 else []
        others = [o for o in others if o != qi]
        if others:
            sims = x[others].astype(np.float32) @ x[qi].astype(np.float32)
            pred_pairs += len(others)
            below += int((sims < args.threshold - 1e-3).sum())
    _ = key_rows

    # baseline: IVF range search (nlist 1000, nprobe 8) over a subset of queries, scaled to all N
    quant = faiss.IndexFlatIP(args.dim)
    nlist = min(1000, max(1, args.n // 40))  # faiss wants >= 39 training points per list
    ivf = faiss.IndexIVFFlat(quant, args.dim, nlist, faiss.METRIC_INNER_PRODUCT)
    t = time.perf_counter()
    ivf.train(x[rng.choice(args.n, min(args.n, 100_000), replace=False)].astype(np.float32))
    for b in range(0, args.n, 100_000):
        ivf.add(x[b : b + 100_000].astype(np.float32))
    ivf_build_s = time.perf_counter() - t
    ivf.nprobe = 8
    bq = rng.choice(args.n, args.baseline_queries, replace=False)
    t = time.perf_counter()
    ivf.range_search(x[bq].astype(np.float32), args.threshold)
    ivf_query_s = time.perf_counter() - t
    ivf_total_s = ivf_build_s + ivf_query_s * args.n / args.baseline_queries

    print(json.dumps({
        "n": args.n, "dim": args.dim, "threshold": args.threshold, "planted": truth,
        "generate_s": round(gen_s, 1),
        "curate_dedup_wall_s": round(curate_s, 1), "curate_dedup_peak_rss_mb": round(peak_mb, 1),
        "pair_recall": round(found / true_pairs, 4) if true_pairs else None,
        "pair_precision": round(1 - below / pred_pairs, 4) if pred_pairs else None,
        "exact_pairs_in_sample": true_pairs, "sample_queries": len(q), "exact_range_search_s": round(exact_s, 1),
        "ivf_baseline_s_estimated": round(ivf_total_s, 1), "ivf_baseline_queries_timed": args.baseline_queries,
        "speedup_vs_ivf_baseline": round(ivf_total_s / curate_s, 2),
        "duplicates_marked": report["duplicates_marked"], "duplicate_clusters": report["duplicate_clusters"],
    }))


if __name__ == "__main__":
    main()
