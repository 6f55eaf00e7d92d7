"""`curate recaption`: diversify captions where duplication makes memorisation likely.

Reads a `curate dedup` output. One global pass collects each cluster's captions (kept and dropped rows) and,
for `--vocab dataset`, the dataset's words; then every samples shard becomes `captions/{i}.parquet`
(schemas/captions.yaml) through the shard executor: the caption to use, the multi-caption pool (MC), and how
each pool entry was made. Targeted samples (`--target`) get a pool; the others keep their caption.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate import __version__
from curate.captions import pool as pools
from curate.captions import vocab as vocabs
from curate.captions.ops import OPS
from curate.dedup.count import normalize_caption
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
def _context(work: str, vocab_name: str, k: int, n: int, rc_n: int, multiword: bool, needs_wordnet: bool) -> dict:
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
    return ctx


@functools.cache
def _cluster_captions(work: str) -> dict[int, list[str]]:
    table = read_table(fs.join(work, "cluster_captions.parquet"))
    return dict(zip(table.column("cluster_id").to_pylist(), table.column("captions").to_pylist(), strict=True))


def recaption_shard(shard: Shard, out: ShardOutput, options: dict[str, Any]) -> dict[str, Any]:
    opts = options
    work = fs.join(shard.output_root, "_work")
    ctx = _context(work, opts["vocab"], opts["k"], opts["n"], opts["rc_n"], opts["multiword"],
                   "paraphrase" in opts["ops"])
    clusters = _cluster_captions(work)
    rows = read_table(shard.input).to_pylist()
    out_rows = []
    counts: Counter[str] = Counter()
    for r in rows:
        key, caption = r["key"], r.get("caption")
        targeted = pools.is_targeted(opts["target"], key, opts["seed"], r["dup_count"], r["memorization_risk"])
        if caption is None or not caption.strip():
            counts["empty_caption"] += 1
            pool, made = ([] if caption is None else [caption]), ([] if caption is None else ["original"])
            use = caption
        elif targeted:
            others = [c for c in clusters.get(r["cluster_id"], []) if c != caption]
            pool, made = pools.build_pool(caption, key, opts["seed"], others, opts["ops"], opts["pool_size"], ctx)
            use = pool[pools.pick(pool, key, opts["seed"])]
        else:
            pool, made, use = [caption], ["original"], caption
        changed = use != caption
        counts["changed"] += int(changed)
        counts["targeted"] += int(targeted)
        out_rows.append({"key": key, "shard": r["shard"], "cluster_id": r["cluster_id"], "dup_count": r["dup_count"],
                         "targeted": targeted, "original_caption": caption, "caption": use, "captions": pool,
                         "ops": made, "changed": changed})
        out.advance(1)
    write_table(pa.Table.from_pylist(out_rows, schema=CAPTIONS_SCHEMA), out.path(f"captions/{shard.name}.parquet"))
    return {"rows_in": len(rows), "rows_out": len(out_rows), "rows_rejected": 0, **dict(counts)}


def _global_pass(dedup_dir: str, work: str, vocab_name: str) -> int:
    """Cluster caption lists (kept and dropped members) and the dataset vocabulary, written under _work/."""
    fs.ensure_dir(work)
    per_cluster: dict[int, dict[str, str]] = defaultdict(dict)
    all_captions: list[str | None] = []
    paths = fs.list_shards(fs.join(dedup_dir, "samples"))
    if fs.exists(fs.join(dedup_dir, "drops")):
        paths += fs.list_shards(fs.join(dedup_dir, "drops"))
    n = 0
    for path in paths:  # the documented tables: samples/ (and drops/ with --action drop)
        t = read_table(path, columns=["cluster_id", "caption"])
        for cid, cap in zip(t.column("cluster_id").to_pylist(), t.column("caption").to_pylist(), strict=True):
            n += 1
            if vocab_name == "dataset":  # only then are all captions needed at once
                all_captions.append(cap)
            if cap and cap.strip():
                per_cluster[cid].setdefault(normalize_caption(cap), cap)
    multi = {c: sorted(v.values()) for c, v in per_cluster.items() if len(v) > 1}
    table = pa.table({"cluster_id": pa.array(list(multi), pa.int64()),
                      "captions": pa.array(list(multi.values()), pa.list_(pa.string()))})
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
        from curate.captions.wordnet import wordnet

        wordnet()  # fails here, with the install hint, before any shard starts
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
    rows = table.to_pylist()
    before: dict[int, set[str]] = defaultdict(set)
    after: dict[int, set[str]] = defaultdict(set)
    pool_sets: dict[int, set[str]] = defaultdict(set)
    for r in rows:
        if r["dup_count"] > 1:
            before[r["cluster_id"]].add(normalize_caption(r["original_caption"]))
            after[r["cluster_id"]].add(normalize_caption(r["caption"]))
            pool_sets[r["cluster_id"]].update(normalize_caption(c) for c in r["captions"])
    members = Counter(r["cluster_id"] for r in rows)
    dup_clusters = [c for c in before if members[c] > 1]
    same_before = sum(1 for c in dup_clusters if len(before[c]) == 1)
    same_after = sum(1 for c in dup_clusters if len(after[c]) == 1)

    def mean(per_cluster: dict[int, set[str]]) -> float:
        return round(sum(len(per_cluster[c]) for c in dup_clusters) / len(dup_clusters), 3) if dup_clusters else 0.0

    op_counts = Counter(op for r in rows for op in r["ops"])
    examples = [{"key": r["key"], "before": r["original_caption"], "after": r["caption"], "pool": r["captions"]}
                for r in rows if r["changed"]][:12]
    report = {
        "samples": len(rows), "changed": sum(r["changed"] for r in rows),
        "targeted": sum(s.get("targeted", 0) for s in stats),
        "empty_captions": sum(s.get("empty_caption", 0) for s in stats),
        "duplicate_clusters": len(dup_clusters),
        "distinct_captions_per_duplicate_cluster": {"before": mean(before), "after": mean(after),
                                                    "in_pools": mean(pool_sets)},
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
