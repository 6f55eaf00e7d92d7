"""Recaption throughput: captions/s per operation, and the whole command against a plain read-and-write of the
same shards, in one run. `python -m bench.recaption --n 200000` prints one JSON object.

Each configuration runs --repeat times, alternating with the copy it is compared with (input in the page cache,
the stage's per-process caches emptied before each run); medians are reported, and every run's seconds."""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

WORDS = ("red blue old small large wooden modern vintage cat dog house car tree beach city night street flower "
         "portrait photo of a the with on in at by near sunset mountain lake river woman man child table chair "
         "kitchen garden snow rain summer winter autumn spring bridge tower boat train road field").split()


def make_dedup_dir(root: Path, n: int, shards: int = 4, seed: int = 0) -> Path:
    """A `curate dedup` output in the documented schemas (samples/ with all 16 columns, clusters.parquet, as
    `curate dedup` writes them) with LAION-like captions; 10% of rows in duplicate clusters of ~4."""
    from curate.dedup.count import cluster_captions, risk
    from curate.dedup.rows import write_clusters
    from curate.stages.dedup import ROWS_SCHEMA

    if (root / "clusters.parquet").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)
    (root / "samples").mkdir(parents=True)
    cluster = np.arange(n)
    dup = rng.choice(n, n // 10, replace=False)
    cluster[dup] = dup % (n // 40)  # groups of ~4
    cluster = np.unique(cluster, return_inverse=True)[1]  # numbered 0.. as dedup numbers them
    sizes = np.bincount(cluster)[cluster]
    _, first, which = np.unique(cluster, return_index=True, return_inverse=True)
    leader = first[which]  # each cluster's first row represents it
    rep = leader == np.arange(n)
    keys = np.array([f"k{i}" for i in range(n)], object)
    caps = [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 14)))) for _ in range(n)]
    dup_of = np.where(~rep, keys[leader], None)
    nearest = np.where(~rep, keys[leader], keys[(np.arange(n) + 1) % n])
    for s, part in enumerate(np.array_split(np.arange(n), shards)):
        m = len(part)
        table = pa.table({
            "key": keys[part].tolist(), "shard": np.full(m, s, np.int64), "caption": [caps[i] for i in part],
            "cluster_id": cluster[part].astype(np.int64), "dup_count": sizes[part].astype(np.int64),
            "nearest_key": nearest[part].tolist(), "nearest_sim": rng.uniform(0.3, 0.99, m).astype(np.float32),
            "is_representative": rep[part], "keep": np.ones(m, bool), "duplicate_of": dup_of[part].tolist(),
            "duplicate_sim": np.where(rep[part], np.nan, rng.uniform(0.8, 0.99, m)).astype(np.float32),
            "cluster_captions": sizes[part].astype(np.int64), "cluster_same_caption": np.zeros(m, bool),
            "memorization_risk": risk(sizes[part], sizes[part]).astype(np.float32),
            "corpus_key": pa.nulls(m, pa.string()), "corpus_sim": np.full(m, np.nan, np.float32),
        }, schema=ROWS_SCHEMA)
        pq.write_table(table, root / "samples" / f"{s:05d}.parquet", compression="zstd")
    size = np.bincount(cluster)
    write_clusters(cluster, size, first, size, cluster_captions(cluster, pa.array(caps)),
                   pa.array(keys.tolist(), pa.string()), str(root / "clusters.parquet"))
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--data", default="bench/.data")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each configuration (the median counts)")
    args = ap.parse_args()
    from curate.captions import ops, vocab
    from curate.captions.wordnet import wordnet
    from curate.stages import recaption

    root = make_dedup_dir(Path(args.data) / f"dedup-samples-{args.n}", args.n)
    from curate.captions import batch, pool

    table = pq.read_table(root / "samples" / "00000.parquet")
    column, keys = table.column("caption").combine_chunks(), table.column("key").combine_chunks()
    caps = column.to_pylist()[:20000]
    ctx = {"wordnet": wordnet(), "vocab": vocab.load("wordnet")}
    per_op = {}
    for op in ops.OPS:
        if op == "paraphrase":  # per caption (WordNet lookups), over 20k captions, as the stage runs it
            part, part_keys = column.slice(0, len(caps)), keys.slice(0, len(caps))
            t = time.perf_counter()
            pool.apply_op(op, part, part_keys, batch.key_hashes(part_keys), 0, ctx, 0)
            per_op[op] = round(len(caps) / (time.perf_counter() - t), 1)
        else:  # whole columns, as the stage runs them (one shard of the input); the median of 3 runs (the first
            # op timed used to pay the process's first large allocations: rt read 0.31M/s, 0.7M/s warm)
            secs = []
            for _ in range(3):
                t = time.perf_counter()
                pool.apply_op(op, column, keys, batch.key_hashes(keys), 0, ctx, 0)
                secs.append(time.perf_counter() - t)
            per_op[op] = round(len(column) / statistics.median(secs), 1)

    out = Path(tempfile.mkdtemp(prefix="curate-bench-recaption-"))
    shards = sorted((root / "samples").glob("*.parquet"))
    for p in shards:  # the page cache holds the input for every timed run alike
        p.read_bytes()
    try:
        # baseline: read every shard and write it back, same library, same compression; one process, and one
        # thread per shard pair for the 2-worker comparison (pyarrow releases the GIL)
        def copy(paths: list[Path], dest: Path) -> None:
            for p in paths:
                pq.write_table(pq.read_table(p, use_threads=False), dest / p.name, compression="zstd")

        def timed_copy(threads: int) -> float:
            dest = out / "copy"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            t = time.perf_counter()
            if threads == 1:
                copy(shards, dest)
            else:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(threads) as ex:
                    list(ex.map(lambda part: copy(part, dest), [shards[i::threads] for i in range(threads)]))
            return time.perf_counter() - t

        def timed_stage(opts: dict, workers: int) -> float:
            _cold_caches()
            dest = out / "stage"
            shutil.rmtree(dest, ignore_errors=True)
            t = time.perf_counter()
            recaption.run(recaption.Options(dedup=str(root), output=str(dest), **opts, progress=False, workers=workers))
            return time.perf_counter() - t

        def timed_io(made: list[pa.Table]) -> float:
            from curate.io.parquet import read_table, write_table

            dest = out / "io"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            t = time.perf_counter()
            for p, table in zip(shards, made, strict=True):
                read_table(str(p), columns=list(recaption.INPUT_COLUMNS))
                write_table(table, str(dest / p.name), plain=list(recaption.PLAIN_COLUMNS))
            return time.perf_counter() - t

        results = {}
        copies: dict[int, list[float]] = {1: [], 2: []}
        insertions = {"ops": ["rt", "cwr", "rna"]}
        for name, opts, workers in (
                ("insertions_duplicates", insertions, 1),
                ("insertions_duplicates_2_workers", insertions, 2),
                ("default_duplicates", {}, 1),
                ("one_insertion_all", {**insertions, "target": "all", "pool_size": 2}, 1),
                ("one_insertion_all_2_workers", {**insertions, "target": "all", "pool_size": 2}, 2),
                ("insertions_all", {**insertions, "target": "all"}, 1)):
            runs, base = [], []
            for _ in range(args.repeat):  # alternate, so drifts of a shared machine hit both alike
                base.append(timed_copy(workers))
                runs.append(timed_stage(opts, workers))
            copies[workers] += base
            secs, ref = statistics.median(runs), statistics.median(base)
            results[name] = {"seconds": round(secs, 2), "seconds_all": [round(x, 2) for x in runs],
                             "plain_copy_s": round(ref, 2), "captions_per_s": round(args.n / secs, 1),
                             "workers": workers, "ratio_to_plain_copy": round(secs / ref, 2)}
            if name == "insertions_duplicates":  # the stage's own reading and writing, nothing computed
                made = [pq.read_table(p) for p in sorted((out / "stage" / "captions").glob("*.parquet"))]
                runs, base = [], []
                for _ in range(args.repeat):
                    base.append(timed_copy(1))
                    runs.append(timed_io(made))
                secs, ref = statistics.median(runs), statistics.median(base)
                results["io_only_insertions_duplicates"] = {
                    "seconds": round(secs, 2), "seconds_all": [round(x, 2) for x in runs], "plain_copy_s": round(ref, 2),
                    "workers": 1, "ratio_to_plain_copy": round(secs / ref, 2),
                    "what": "read the stage's input columns and write its captions shards (made by the run above)"}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"n": args.n, "repeat": args.repeat, "captions_per_s_per_op_one_core": per_op,
                      "plain_copy_s": round(statistics.median(copies[1]), 2),
                      "plain_copy_2_threads_s": round(statistics.median(copies[2]), 2),
                      "stage": results}))


def _cold_caches() -> None:
    """Forget what an earlier run in this process loaded (WordNet's word list, the vocabulary as Arrow, the
    global step's tables), so each timed run pays what a fresh `curate recaption` pays, imports aside."""
    from curate.captions import ops, wordnet
    from curate.stages import recaption

    wordnet.single_word_lemmas.cache_clear()
    ops._ARROW.clear()
    recaption._context.cache_clear()
    recaption._cluster_captions.cache_clear()


if __name__ == "__main__":
    main()
