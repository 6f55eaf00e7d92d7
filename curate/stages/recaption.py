"""`curate recaption`: diversify captions where duplication makes memorisation likely.

Reads a `curate dedup` output. A global step takes the caption lists of dedup's duplicate clusters
(clusters.parquet: kept and dropped members) and, for `--vocab dataset`, the dataset's words; then every samples
shard becomes `captions/{i}.parquet` (schemas/captions.yaml) through the shard executor: the multi-caption pool
(MC), whose first entry is the caption to use, and how each entry was made; plus `cluster_texts/{i}.parquet`,
the duplicate clusters' normalised texts the report is computed from. Targeted samples (`--target`) get a pool;
the others keep their caption.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import __version__, optspec, schemas
from curate.captions import batch, sources
from curate.captions import pool as pools
from curate.captions import vocab as vocabs
from curate.config import RecaptionOptions
from curate.errors import CurateError, SchemaError
from curate.executor import Shard, ShardOutput, execution, output_lock, run_stage
from curate.io import fs
from curate.io.parquet import read_table, write_table
from curate.optspec import ensure_valid

Options = RecaptionOptions  # this stage's options (curate/config.py)
STAGE = "recaption"

CAPTIONS_SCHEMA = pa.schema([
    ("key", pa.string()), ("shard", pa.int64()), ("cluster_id", pa.int64()), ("dup_count", pa.int64()),
    ("targeted", pa.bool_()), ("original_caption", pa.string()), ("captions", pa.list_(pa.string())),
    ("ops", pa.list_(pa.dictionary(pa.int8(), pa.string()))), ("changed", pa.bool_()),
])

INPUT_COLUMNS = ("key", "shard", "caption", "cluster_id", "dup_count", "memorization_risk")  # of samples/
PLAIN_COLUMNS = ("key", "cluster_id", "original_caption", "captions")  # (nearly) unique values


@functools.cache
def _context(work: str, vocab_name: str, k: int, n: int, rc_n: int, multiword: bool, needs_wordnet: bool,
             _stamp: object = None) -> dict:
    """Loaded once per process: WordNet (paraphrase) and the vocabulary (rt, rc)."""
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
def _cluster_captions(work: str, _stamp: object = None) -> tuple[np.ndarray, pa.Array, pa.Array]:
    """(sorted cluster ids, their caption lists, the same normalised) of the clusters with more than one
    distinct caption, as the global step wrote them (`_stamp` names that file): read once per process."""
    return _sorted_lists(read_table(fs.join(work, "cluster_captions.parquet")))


def _sorted_lists(table: pa.Table) -> tuple[np.ndarray, pa.Array, pa.Array]:
    ids = table.column("cluster_id").to_numpy()
    if np.any(ids[1:] < ids[:-1]):  # dedup numbers clusters in order: sorted already
        table = table.sort_by("cluster_id")
        ids = table.column("cluster_id").to_numpy()
    return ids, table.column("captions").combine_chunks(), table.column("norms").combine_chunks()


def _lists_for(cluster_id: np.ndarray, work: str) -> tuple[pa.Array | None, pa.Array | None]:
    """The caption lists (and normalised lists) of these rows' clusters: list views into the global step's
    table, so no caption is copied."""
    table = fs.join(work, "cluster_captions.parquet")
    ids, lists, norms = _cluster_captions(work, fs.stamp(table))
    if len(ids) == 0:
        return None, None
    pos = np.clip(np.searchsorted(ids, cluster_id), 0, len(ids) - 1)
    none = pa.array(ids[pos] != cluster_id)
    offsets = lists.offsets.to_numpy()
    start, size = pa.array(offsets[pos]), pa.array(offsets[pos + 1] - offsets[pos])
    return (pa.ListViewArray.from_arrays(start, size, lists.values, mask=none),
            pa.ListViewArray.from_arrays(start, size, norms.values, mask=none))


def recaption_shard(shard: Shard, out: ShardOutput, opts: RecaptionOptions) -> dict[str, Any]:
    """One samples shard -> captions/{i}.parquet, as whole-column operations (no Python loop per caption
    except for paraphrase, which looks words up in WordNet), and cluster_texts/{i}.parquet for the report."""
    work = fs.join(shard.output_root, "_work")
    ctx = _context(work, opts.vocab, opts.k, opts.n, opts.rc_n, opts.multiword,
                   "paraphrase" in opts.ops, fs.stamp(fs.join(work, "vocab.txt")))
    t = read_table(shard.input, columns=list(INPUT_COLUMNS))
    keys, captions = t.column("key").combine_chunks(), t.column("caption").combine_chunks()
    cluster_id = t.column("cluster_id").to_numpy()
    dup_count = t.column("dup_count").to_numpy()
    risk = t.column("memorization_risk").to_numpy(zero_copy_only=False)
    targeted = pools.targeted_mask(opts.target, keys, opts.seed, dup_count, risk)
    lists, norms = _lists_for(cluster_id[targeted], work)
    extra, model_stats = [], {}
    if opts.caption_model or opts.paraphrase_model:
        at = pa.array(np.flatnonzero(targeted))
        extra, model_stats = sources.model_entries(opts, keys.take(at).to_pylist(),
                                                   t.column("shard").take(at).to_pylist(),
                                                   captions.take(at).to_pylist())
    pool, made, normalised = pools.build_pools(captions, keys, opts.seed, lists, opts.ops, opts.pool_size,
                                               ctx, targeted, norms, clean_lists=True, extra=extra)
    # the caption to use differs from the original exactly when it is a variant: a variant's normalised text is
    # never its row's own (the pools are distinct), and a mate's caption is never first
    changed = pools.changed(made)
    table = pa.table({"key": keys, "shard": t.column("shard"), "cluster_id": t.column("cluster_id"),
                      "dup_count": t.column("dup_count"), "targeted": pa.array(targeted),
                      "original_caption": captions, "captions": pool, "ops": made, "changed": changed},
                     schema=CAPTIONS_SCHEMA)
    if extra:  # which model made the caption_model / paraphrase_model entries
        table = table.replace_schema_metadata({"curate.models": json.dumps(sources.models_used(opts))})
    write_table(table, out.path(f"captions/{shard.name}.parquet"), plain=list(PLAIN_COLUMNS))
    write_table(_cluster_texts(cluster_id, dup_count, pool, made, normalised, work),
                out.path(f"cluster_texts/{shard.name}.parquet"), plain=["cluster_id", "text", "before"])
    out.advance(len(t))
    first = np.flatnonzero(changed)[:12]
    examples = table.select(["key", "original_caption", "captions"]).take(pa.array(first, pa.int64())).to_pylist()
    return {"rows_in": len(t), "rows_out": len(t), "rows_rejected": 0, "changed": int(changed.sum()),
            "targeted": int(targeted.sum()), "empty_caption": int((~batch.not_blank(captions)).sum()),
            "pool_entries_by_op": pools.entries_by_op(made), "models": model_stats,
            "examples": [{"key": e["key"], "before": e["original_caption"], "after": e["captions"][0],
                          "pool": e["captions"]} for e in examples]}


CLUSTER_TEXTS_SCHEMA = pa.schema([("cluster_id", pa.int64()), ("listed", pa.int32()), ("text", pa.string()),
                                  ("before", pa.int64()), ("after", pa.bool_()), ("in_pool", pa.bool_())])


def _cluster_texts(cluster_id: np.ndarray, dup_count: np.ndarray, pool: pa.Array, made: pa.Array,
                   normalised: pools.Normalised, work: str) -> pa.Table:
    """The report's view of a shard's duplicate-cluster rows (schemas/cluster_texts.yaml): each cluster's
    distinct normalised texts, how many rows had it as their caption, whether a row uses it now (the pool's
    first entry) and whether a pool holds it. A text of the cluster's caption list (dedup's clusters.parquet) is
    named by its place in the list (`listed`), the others (variants, captions of clusters without a list, the
    empty text) by the text itself: mates' captions, most of the entries, are neither copied nor hashed again.
    A null caption (an empty pool) counts as the empty text."""
    rows = np.flatnonzero(np.asarray(dup_count) > 1)
    lengths = pc.list_value_length(pool).to_numpy(zero_copy_only=False).astype(np.int64)[rows]
    starts = pool.offsets.to_numpy()[:-1].astype(np.int64)[rows]
    first = np.repeat(starts, lengths)
    entry = first + batch.within(lengths)
    cid = np.asarray(cluster_id, np.int64)[rows]
    entry_cid = np.repeat(cid, lengths)
    listed = normalised.places(entry)
    text = batch._strings(normalised.lookup(entry))  # null where named by its place
    alone = np.flatnonzero(~normalised.known(entry))
    if len(alone):  # pools that did not grow (the row's caption alone): normalised and placed here
        norm = batch.normalize(pool.values.take(pa.array(entry[alone])))
        listed[alone] = _places(entry_cid[alone], norm, work)
        unlisted = listed[alone] < 0
        mask = np.zeros(len(entry), bool)
        mask[alone[unlisted]] = True
        text = pc.replace_with_mask(text, pa.array(mask), norm.filter(pa.array(unlisted)))
    original = pools.how_codes(made)[entry] == pools.HOW.index("original")
    empty = cid[lengths == 0]
    table = pa.table({
        "cluster_id": np.concatenate([entry_cid, empty]),
        "listed": np.concatenate([listed, np.full(len(empty), -1, np.int32)]),
        "text": pa.concat_arrays([text, pa.repeat(pa.scalar("", pa.large_string()), len(empty))]).cast(pa.string()),
        "before": np.concatenate([original, np.ones(len(empty), bool)]).astype(np.int64),
        "after": np.concatenate([entry == first, np.ones(len(empty), bool)]),
        "in_pool": np.concatenate([np.ones(len(entry), bool), np.zeros(len(empty), bool)]),
    })
    return _distinct_texts(table)


def _places(cluster_id: np.ndarray, norms: pa.Array, work: str) -> np.ndarray:
    """Each normalised text's place in its cluster's caption list, -1 where it is not there (or no list)."""
    _, lists = _lists_for(cluster_id, work)
    place = np.full(len(cluster_id), -1, np.int32)
    if lists is None:
        return place
    row, flat, places, values = pools.list_entries(lists)
    hit = pools.is_own(values.take(pa.array(flat)), norms, row)
    place[row[hit]] = places[hit]  # lists hold each normalised text once
    return place


def _distinct_texts(table: pa.Table) -> pa.Table:
    """One row per (cluster_id, listed, text): rows summed, flags or-ed."""
    t = table.group_by(["cluster_id", "listed", "text"], use_threads=False).aggregate(
        [("before", "sum"), ("after", "any"), ("in_pool", "any")])
    return t.rename_columns({"before_sum": "before", "after_any": "after", "in_pool_any": "in_pool"}).select(
        CLUSTER_TEXTS_SCHEMA.names).cast(CLUSTER_TEXTS_SCHEMA)


def _global_pass(dedup_dir: str, work: str, vocab_name: str) -> int:
    """Under _work/: the caption lists of dedup's clusters with two or more distinct captions (clusters.parquet,
    kept and dropped members) with their normalised texts, and for `--vocab dataset` the dataset's words.
    Returns the number of sample rows. dedup writes each list without blank captions and with each normalised
    text once (schemas/dedup_clusters.yaml); the pools count on that."""
    fs.ensure_dir(work)
    path = fs.join(dedup_dir, "clusters.parquet")
    if not fs.exists(path):
        raise CurateError(f"{dedup_dir}: no clusters.parquet; is it a curate dedup output?")
    if "captions" not in pq.read_schema(fs.url_to_fs(path)[1]).names:
        raise CurateError(f"{path}: no captions column (an older curate wrote it); rerun curate dedup")
    t = read_table(path, columns=["cluster_id", "captions"])
    t = t.filter(pc.fill_null(pc.greater_equal(pc.list_value_length(t.column("captions")), 2), False))
    lists = t.column("captions").combine_chunks()
    norms = pa.ListArray.from_arrays(lists.offsets, batch.normalize(lists.values).cast(pa.string()))
    table = pa.table({"cluster_id": t.column("cluster_id"), "captions": lists, "norms": norms})
    path = fs.join(work, "cluster_captions.parquet")
    fs.write_parquet_atomic(table, path, compression="none")  # read back by each shard task
    samples = fs.list_shards(fs.join(dedup_dir, "samples"))
    if vocab_name == "dataset":  # the only use of every caption at once: samples/ and drops/
        drops = fs.list_shards(fs.join(dedup_dir, "drops")) if fs.exists(fs.join(dedup_dir, "drops")) else []
        words = vocabs.dataset_words([c for p in samples + drops
                                      for c in read_table(p, columns=["caption"]).column("caption").to_pylist()])
        fs.write_text_atomic(fs.join(work, "vocab.txt"), "\n".join(words))
    return sum(pq.read_metadata(fs.url_to_fs(p)[1]).num_rows for p in samples)


def run(opts: RecaptionOptions) -> dict[str, Any]:
    """The stage, holding its output's lock from the global step to the report (executor.output_lock)."""
    ensure_valid(opts)
    with output_lock(opts.output):
        return _run(opts)


def _run(opts: RecaptionOptions) -> dict[str, Any]:
    dedup_dir, output = opts.dedup, opts.output
    if "paraphrase" in opts.ops or opts.vocab == "wordnet":
        from curate.captions.wordnet import corpus_root

        corpus_root()  # fails here, with the install hint, before any shard starts
    inputs = fs.list_shards(fs.join(dedup_dir, "samples"))
    fs.ensure_dir(output)
    work = fs.join(output, "_work")
    total = _global_pass(dedup_dir, work, opts.vocab)
    try:
        stats = run_stage(STAGE, recaption_shard, inputs, output, opts, rows_total=total, **execution(opts))
    finally:
        _cluster_captions.cache_clear()  # a pipeline goes on in this process (export, train): not kept for it
    report = build_report(output, stats, opts)
    fs.write_json_atomic(fs.join(output, "report.json"), report)
    return report


def build_report(output: str, stats: list[dict[str, Any]], opts: RecaptionOptions) -> dict[str, Any]:
    """report.json and report.html from the shards' stats and their cluster_texts/ (never the caption shards)."""
    from curate.report import html

    parts = []
    for p in fs.list_shards(fs.join(output, "cluster_texts")):
        t = read_table(p)
        try:
            schemas.validate(t.schema, "cluster_texts", source=p)
        except SchemaError as err:  # a resumed run whose earlier shards an older curate wrote
            raise SchemaError(f"{err}; rerun with --overwrite") from None
        parts.append(t.select(CLUSTER_TEXTS_SCHEMA.names).cast(CLUSTER_TEXTS_SCHEMA))
    texts = _distinct_texts(pa.concat_tables(parts) if parts else CLUSTER_TEXTS_SCHEMA.empty_table())
    cid = texts.column("cluster_id").to_numpy()
    before_rows = texts.column("before").to_numpy()

    clusters, which = np.unique(cid, return_inverse=True)  # one sort for the three counts

    def distinct(flag: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cluster ids, rows, distinct texts) over the texts where `flag`."""
        counts = np.bincount(which[flag], minlength=len(clusters))
        rows = np.bincount(which[flag], before_rows[flag], len(clusters)).astype(np.int64)
        some = counts > 0
        return clusters[some], rows[some], counts[some]

    before = distinct(before_rows > 0)
    after = distinct(texts.column("after").to_numpy(zero_copy_only=False))
    in_pools = distinct(texts.column("in_pool").to_numpy(zero_copy_only=False))
    keep = before[0][before[1] > 1]  # clusters with 2 or more rows here
    n_dup = len(keep)

    def over(agg: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        return agg[2][np.isin(agg[0], keep)]

    same_before = int((over(before) == 1).sum())
    same_after = int((over(after) == 1).sum())
    dup_clusters = range(n_dup)

    def mean(agg: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
        return round(float(over(agg).sum()) / n_dup, 3) if n_dup else 0.0

    op_counts: Counter[str] = Counter()
    model_counts: Counter[str] = Counter()
    for s in stats:
        op_counts.update(s.get("pool_entries_by_op", {}))
        model_counts.update(s.get("models", {}))
    examples = [e for s in sorted(stats, key=lambda s: s["index"]) for e in s.get("examples", [])][:12]
    report = {
        "samples": sum(s["rows_in"] for s in stats), "changed": sum(s.get("changed", 0) for s in stats),
        "targeted": sum(s.get("targeted", 0) for s in stats),
        "empty_captions": sum(s.get("empty_caption", 0) for s in stats),
        "duplicate_clusters": len(dup_clusters),
        "distinct_captions_per_duplicate_cluster": {"before": mean(before), "after": mean(after),
                                                    "in_pools": mean(in_pools)},
        "same_image_same_caption_clusters": {"before": same_before, "after": same_after,
                                             "share_before": round(same_before / len(dup_clusters), 4) if dup_clusters else 0.0,
                                             "share_after": round(same_after / len(dup_clusters), 4) if dup_clusters else 0.0},
        "pool_entries_by_op": dict(op_counts.most_common()),
        "models": {"made_by": sources.models_used(opts), **dict(sorted(model_counts.items()))},
        "options": optspec.recorded(opts), "examples": examples,
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
