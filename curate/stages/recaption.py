"""`curate recaption`: diversify captions where duplication makes memorisation likely.

Reads a `curate dedup` output. One global pass collects each cluster's captions (kept and dropped rows) and,
for `--vocab dataset`, the dataset's words; then every samples shard becomes `captions/{i}.parquet`
(schemas/captions.yaml) through the shard executor: the caption to use, the multi-caption pool (MC), and how
each pool entry was made. Targeted samples (`--target`) get a pool; the others keep their caption.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import __version__
from curate.captions import batch
from curate.captions import pool as pools
from curate.captions import vocab as vocabs
from curate.captions.ops import OPS
from curate.errors import CurateError
from curate.executor import Shard, ShardOutput, merge_options, run_stage
from curate.io import fs
from curate.io.parquet import read_table, write_table

STAGE = "recaption"
DEFAULT_OPTIONS: dict[str, Any] = {
    "ops": ["paraphrase", "rt", "cwr", "rna"],
    "pool_size": 5,
    "target": "duplicates",  # all | duplicates | risk
    "vocab": "wordnet",  # wordnet | dataset | clip
    "n": 2,  # words inserted by rt / cwr (the reference's 2)
    "k": 2,  # words replaced by paraphrase
    "rc_n": 4,  # tokens of rc's random caption (the reference's 4)
    "multiword": False,
    "seed": 0,
}

CAPTIONS_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.int64()), ("cluster_id", pa.int64()), ("dup_count", pa.int64()),
    ("targeted", pa.bool_()), ("original_caption", pa.string()), ("caption", pa.string()),
    ("captions", pa.list_(pa.string())), ("ops", pa.list_(pa.string())), ("changed", pa.bool_()),
])


@functools.cache
def _context(work: str, vocab_name: str, k: int, n: int, rc_n: int, multiword: bool, needs_wordnet: bool,
             _stamp: object = None) -> dict:
    """Loaded once per process: WordNet, the vocabulary, the dataset's captions (for rc)."""
    ctx: dict[str, Any] = {"k": k, "n": n, "rc_n": rc_n, "multiword": multiword}
    if needs_wordnet:
        from curate.captions.wordnet import wordnet

        ctx["wordnet"] = wordnet()
    dataset = None
    if vocab_name == "dataset":
        with open(fs.url_to_fs(fs.join(work, "vocab.txt"))[1], encoding="utf-8") as f:
            dataset = f.read().split("\n")
    ctx["vocab"] = vocabs.load(vocab_name, dataset)
    from curate.captions.ops import arrow_vocab

    arrow_vocab(ctx["vocab"])  # converted once per process
    return ctx


@functools.cache
def _cluster_captions(work: str, _stamp: object = None) -> tuple[np.ndarray, pa.Array]:
    """(sorted cluster ids, their caption lists) of the clusters with more than one distinct caption."""
    table = read_table(fs.join(work, "cluster_captions.parquet")).sort_by("cluster_id")
    return table.column("cluster_id").to_numpy(), table.column("captions").combine_chunks()


def _lists_for(cluster_id: np.ndarray, work: str) -> pa.Array | None:
    table = fs.join(work, "cluster_captions.parquet")
    ids, lists = _cluster_captions(work, fs.stamp(table))
    if len(ids) == 0:
        return None
    pos = np.clip(np.searchsorted(ids, cluster_id), 0, len(ids) - 1)
    hit = ids[pos] == cluster_id
    return lists.take(pa.array(pos, mask=~hit))


def recaption_shard(shard: Shard, out: ShardOutput, options: dict[str, Any]) -> dict[str, Any]:
    """One samples shard -> captions/{i}.parquet, as whole-column operations (no Python loop per caption
    except for paraphrase, which looks words up in WordNet)."""
    opts = options
    work = fs.join(shard.output_root, "_work")
    ctx = _context(work, opts["vocab"], opts["k"], opts["n"], opts["rc_n"], opts["multiword"],
                   "paraphrase" in opts["ops"], fs.stamp(fs.join(work, "vocab.txt")))
    t = read_table(shard.input, columns=["key", "shard", "caption", "cluster_id", "dup_count", "memorization_risk"])
    keys, captions = t.column("key").combine_chunks(), t.column("caption").combine_chunks()
    cluster_id = t.column("cluster_id").to_numpy()
    dup_count = t.column("dup_count").to_numpy()
    risk = t.column("memorization_risk").to_numpy(zero_copy_only=False)
    targeted = pools.targeted_mask(opts["target"], keys, opts["seed"], dup_count, risk)
    pool, made, use = pools.build_pools(captions, keys, opts["seed"], _lists_for(cluster_id, work), opts["ops"],
                                        opts["pool_size"], ctx, targeted)
    changed = pc.fill_null(pc.not_equal(use, captions), False)
    blank = ~pools._not_blank(captions)
    table = pa.table({"key": keys, "shard": t.column("shard"), "cluster_id": t.column("cluster_id"),
                      "dup_count": t.column("dup_count"), "targeted": pa.array(targeted),
                      "original_caption": captions, "caption": use, "captions": pool, "ops": made,
                      "changed": changed}, schema=CAPTIONS_SCHEMA)
    write_table(table, out.path(f"captions/{shard.name}.parquet"))
    out.advance(len(t))
    return {"rows_in": len(t), "rows_out": len(t), "rows_rejected": 0, "changed": int(pc.sum(changed).as_py() or 0),
            "targeted": int(targeted.sum()), "empty_caption": int(blank.sum())}


def _global_pass(dedup_dir: str, work: str, vocab_name: str) -> int:
    """Cluster caption lists (kept and dropped members) and the dataset vocabulary, written under _work/.
    A cluster's list: the first caption of each distinct normalised text, sorted; only clusters with two or more."""
    fs.ensure_dir(work)
    parts: list[pa.Table] = []
    all_captions: list[str | None] = []
    paths = fs.list_shards(fs.join(dedup_dir, "samples"))
    if fs.exists(fs.join(dedup_dir, "drops")):
        paths += fs.list_shards(fs.join(dedup_dir, "drops"))
    n = 0
    for path in paths:  # the documented tables: samples/ (and drops/ with --action drop)
        names = pq.read_schema(fs.url_to_fs(path)[1]).names
        t = read_table(path, columns=["cluster_id", "caption"] + (["dup_count"] if "dup_count" in names else []))
        n += t.num_rows
        if vocab_name == "dataset":  # only then are all captions needed at once
            all_captions += t.column("caption").to_pylist()
        if "dup_count" in names:  # only clusters of 2 or more have other captions (drops/ rows all do)
            t = t.filter(pc.greater(t.column("dup_count"), 1))
        t = t.select(["cluster_id", "caption"])
        parts.append(t.filter(pools._not_blank(t.column("caption").combine_chunks())))
    t = pa.concat_tables(parts) if parts else pa.table({"cluster_id": pa.array([], pa.int64()),
                                                        "caption": pa.array([], pa.string())})
    cluster = t.column("cluster_id").to_numpy()
    t = t.take(pa.array(batch.first_distinct(cluster, t.column("caption").combine_chunks()), pa.int64()))
    ids, counts = np.unique(t.column("cluster_id").to_numpy(), return_counts=True)
    t = t.filter(pc.is_in(t.column("cluster_id"), pa.array(ids[counts > 1]))).sort_by(
        [("cluster_id", "ascending"), ("caption", "ascending")])
    ids, counts = np.unique(t.column("cluster_id").to_numpy(), return_counts=True)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    table = pa.table({"cluster_id": pa.array(ids, pa.int64()),
                      "captions": pa.ListArray.from_arrays(offsets, t.column("caption").combine_chunks())})
    fs.write_parquet_atomic(table, fs.join(work, "cluster_captions.parquet"))
    if vocab_name == "dataset":
        fs.write_text_atomic(fs.join(work, "vocab.txt"), "\n".join(vocabs.dataset_words(all_captions)))
    return n


def run(dedup_dir: str, output: str, options: dict[str, Any], *, workers: int = 1, overwrite: bool = False,
        progress: bool = True, engine: str = "local",
        scheduler: str | None = None) -> dict[str, Any]:
    opts = merge_options(STAGE, DEFAULT_OPTIONS, options)
    bad = [o for o in opts["ops"] if o not in OPS]
    if bad:
        raise CurateError(f"--ops: unknown operation(s) {', '.join(bad)}; choose from {', '.join(OPS)}")
    if opts["target"] not in pools.TARGETS:
        raise CurateError(f"--target: one of {', '.join(pools.TARGETS)}")
    if "paraphrase" in opts["ops"] or opts["vocab"] == "wordnet":
        from curate.captions.wordnet import corpus_root

        corpus_root()  # fails here, with the install hint, before any shard starts
    inputs = fs.list_shards(fs.join(dedup_dir, "samples"))
    fs.ensure_dir(output)
    work = fs.join(output, "_work")
    total = _global_pass(dedup_dir, work, opts["vocab"])
    stats = run_stage(STAGE, recaption_shard, inputs, output, {**opts, "dedup": dedup_dir}, workers=workers,
                      overwrite=overwrite, progress=progress, rows_total=total, engine=engine, scheduler=scheduler)
    report = build_report(output, stats, opts)
    fs.write_json_atomic(fs.join(output, "report.json"), report)
    return report


def build_report(output: str, stats: list[dict[str, Any]], opts: dict[str, Any]) -> dict[str, Any]:
    from curate.report import html

    table = pq.ParquetDataset(fs.url_to_fs(fs.join(output, "captions"))[1]).read(
        columns=["key", "cluster_id", "dup_count", "original_caption", "caption", "captions", "changed", "ops"])
    dups = table.filter(pc.greater(table.column("dup_count"), 1))

    # per cluster: (ids, rows, distinct normalised texts); null counts as the empty caption
    cid = dups.column("cluster_id").to_numpy()
    before = batch.distinct_per_group(cid, dups.column("original_caption").combine_chunks())
    after = batch.distinct_per_group(cid, dups.column("caption").combine_chunks())
    pools_col = dups.column("captions").combine_chunks()
    in_pools = batch.distinct_per_group(cid[pc.list_parent_indices(pools_col).to_numpy()], pc.list_flatten(pools_col))
    keep = before[0][before[1] > 1]  # clusters with 2 or more rows here
    n_dup = len(keep)

    def over(agg: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        return agg[2][np.isin(agg[0], keep)]

    same_before = int((over(before) == 1).sum())
    same_after = int((over(after) == 1).sum())
    dup_clusters = range(n_dup)

    def mean(agg: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
        return round(float(over(agg).sum()) / n_dup, 3) if n_dup else 0.0

    counted = pc.value_counts(pc.list_flatten(table.column("ops"))).to_pylist()
    op_counts = Counter({c["values"]: c["counts"] for c in counted})
    changed = table.filter(table.column("changed"))
    examples = [{"key": r["key"], "before": r["original_caption"], "after": r["caption"], "pool": r["captions"]}
                for r in changed.slice(0, 12).to_pylist()]
    report = {
        "samples": table.num_rows, "changed": changed.num_rows,
        "targeted": sum(s.get("targeted", 0) for s in stats),
        "empty_captions": sum(s.get("empty_caption", 0) for s in stats),
        "duplicate_clusters": len(dup_clusters),
        "distinct_captions_per_duplicate_cluster": {"before": mean(before), "after": mean(after),
                                                    "in_pools": mean(in_pools)},
        "same_image_same_caption_clusters": {"before": same_before, "after": same_after,
                                             "share_before": round(same_before / len(dup_clusters), 4) if dup_clusters else 0.0,
                                             "share_after": round(same_after / len(dup_clusters), 4) if dup_clusters else 0.0},
        "pool_entries_by_op": dict(op_counts.most_common()), "options": opts, "examples": examples,
        "curate_version": __version__,
    }
    summary = html.table(["measure", "value"], [
        ("samples", report["samples"]), ("targeted", report["targeted"]), ("caption changed", report["changed"]),
        ("empty or null captions (kept as they are)", report["empty_captions"]),
        ("duplicate clusters", len(dup_clusters)),
        ("same image + same caption clusters, before", same_before),
        ("same image + same caption clusters, after", same_after),
        ("distinct captions per duplicate cluster, before", report["distinct_captions_per_duplicate_cluster"]["before"]),
        ("distinct captions per duplicate cluster, after", report["distinct_captions_per_duplicate_cluster"]["after"]),
        ("distinct captions per duplicate cluster, in the pools", report["distinct_captions_per_duplicate_cluster"]["in_pools"]),
    ])
    ex = html.table(["key", "before", "after", "pool"], [(e["key"], e["before"], e["after"], " | ".join(e["pool"]))
                                                          for e in examples])
    page = html.page("curate recaption report", [("Summary", summary), ("Pool entries by operation",
                     html.table(["operation", "entries"], list(op_counts.most_common()))), ("Examples", ex)])
    fs.write_text_atomic(fs.join(output, "report.html"), page)
    return report
