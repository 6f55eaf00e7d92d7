"""Every row's dedup columns from the cluster labels, held as numbers; keys and captions join them per shard.

At 12M rows a column of strings per row (keys of the nearest row and of the representative, captions) costs
0.2-0.7 GB each, so the driver holds numbers (row indices, counts, similarities) and every row's key once
(`EmbeddingSet.keys`); captions are read from the embed shards for the rows of clusters with two or more
members only, and `write_rows` turns row indices into keys one shard at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.dedup import count
from curate.dedup.vectors import EmbeddingSet
from curate.io import fs

# `_work/rows.parquet`: one row group per embed shard, in the embed shards' order; `write_shard` adds each
# shard's shard and caption columns from its metadata file (schemas/dedup_samples.yaml has the full table)
WORK_SCHEMA = pa.schema([
    ("key", pa.string()), ("cluster_id", pa.int64()), ("dup_count", pa.int64()),
    ("nearest_key", pa.string()), ("nearest_sim", pa.float32()), ("is_representative", pa.bool_()),
    ("keep", pa.bool_()), ("duplicate_of", pa.string()), ("duplicate_sim", pa.float32()),
    ("cluster_captions", pa.int64()), ("cluster_same_caption", pa.bool_()), ("memorization_risk", pa.float32()),
    ("corpus_key", pa.string()), ("corpus_sim", pa.float32()),
])


@dataclass
class Rows:
    """Per row, in the global row order. Row indices are -1 where there is none."""

    cluster_id: np.ndarray  # int64
    dup_count: np.ndarray  # int64: members of the row's cluster
    nearest: np.ndarray  # int64: the most similar other row seen
    nearest_sim: np.ndarray  # float32
    is_representative: np.ndarray  # bool
    keep: np.ndarray  # bool
    leader: np.ndarray  # int64: the cluster's representative (-1 on the representative)
    duplicate_sim: np.ndarray  # float32: similarity to `leader` (or to the corpus row, see `check_against`)
    cluster_captions: np.ndarray  # int64: distinct captions in the cluster
    memorization_risk: np.ndarray  # float32
    corpus: np.ndarray | None = None  # int64: nearest row of a saved corpus index (--against)
    corpus_sim: np.ndarray | None = None  # float32
    corpus_dup: np.ndarray | None = None  # bool: a duplicate of that corpus row (duplicate_of is its key)

    @property
    def cluster_same_caption(self) -> np.ndarray:
        return (self.dup_count > 1) & (self.cluster_captions == 1)


def cluster(emb: EmbeddingSet, labels: np.ndarray, nn: np.ndarray, nn_sim: np.ndarray, keep_policy: str,
            seed: int, caption_near: float) -> tuple[Rows, count.CaptionCounts]:
    """The rows' columns from cluster labels and each row's best match. Only rows of clusters with two or more
    members need captions, sizes, hashes of keys or similarities to a representative: those are read or
    computed for them alone (at 12M rows, 5% of them in the synthetic benchmark)."""
    n = emb.n
    size = np.bincount(labels)[labels] if n else np.zeros(0, np.int64)
    multi = np.flatnonzero(size > 1)
    captions = (emb.read_column("caption", multi) if "caption" in emb.columns
                else pa.nulls(len(multi), pa.string()))
    caption_counts = count.cluster_captions(labels, captions, emb.gather_text(multi), caption_near, rows=multi)
    del captions
    area = aesthetic = None
    if keep_policy == "largest" and {"width", "height"} <= emb.columns:
        w, h = (pc.fill_null(emb.read_column(c, multi), 0).to_numpy(zero_copy_only=False).astype(np.float64)
                for c in ("width", "height"))
        area = w * h
    if keep_policy == "aesthetic":
        aesthetic = pc.cast(emb.read_column("aesthetic", multi), pa.float64()).to_numpy(zero_copy_only=False)
    rep = np.ones(n, bool)  # a row alone in its cluster represents it
    rep[multi] = count.representatives(labels[multi], keep_policy, seed, emb.keys.take(pa.array(multi)), area,
                                       aesthetic)
    rep_row = np.zeros(int(labels.max()) + 1 if n else 0, np.int64)
    rep_row[labels[rep]] = np.flatnonzero(rep)
    leader = np.where(rep, -1, rep_row[labels])
    del rep_row
    # similarity of each duplicate to its cluster's representative (exact, from the vectors, in blocks)
    dup_sim = np.full(n, np.nan, np.float32)
    members = multi[~rep[multi]]
    for b in range(0, len(members), 65536):
        m = members[b : b + 65536]
        a, lead = emb.gather(m), emb.gather(leader[m])
        if emb.kind == "bits":
            dup_sim[m] = 1.0 - np.unpackbits(np.bitwise_xor(a, lead), axis=1).sum(axis=1) / emb.dim
        else:
            dup_sim[m] = np.einsum("ij,ij->i", a, lead)
    distinct = caption_counts.near[labels]
    rows = Rows(
        cluster_id=labels, dup_count=size, nearest=np.asarray(nn, np.int64),
        nearest_sim=np.where(np.isfinite(nn_sim), nn_sim, np.nan).astype(np.float32),
        is_representative=rep, keep=rep.copy(), leader=leader, duplicate_sim=dup_sim,
        cluster_captions=distinct, memorization_risk=count.risk(size, distinct),
    )
    return rows, caption_counts


def _keys_at(keys: pa.Array, rows: np.ndarray) -> pa.Array:
    """keys[rows], null where rows < 0."""
    return keys.take(pa.array(np.maximum(rows, 0), mask=rows < 0))


def shard_table(rows: Rows, emb: EmbeddingSet, a: int, b: int, corpus_keys: pa.Array | None) -> pa.Table:
    """Rows a..b-1 with their keys and the keys they point at."""
    keys = emb.keys.slice(a, b - a)
    duplicate_of = _keys_at(emb.keys, rows.leader[a:b])
    corpus_key = pa.nulls(b - a, pa.string())
    corpus_sim = np.full(b - a, np.nan, np.float32)
    if rows.corpus is not None and corpus_keys is not None:
        corpus_key = _keys_at(corpus_keys, rows.corpus[a:b])
        corpus_sim = rows.corpus_sim[a:b]
        duplicate_of = pc.if_else(pa.array(rows.corpus_dup[a:b]), corpus_key, duplicate_of)
    return pa.table({
        "key": keys, "cluster_id": rows.cluster_id[a:b], "dup_count": rows.dup_count[a:b],
        "nearest_key": _keys_at(emb.keys, rows.nearest[a:b]), "nearest_sim": rows.nearest_sim[a:b],
        "is_representative": rows.is_representative[a:b], "keep": rows.keep[a:b], "duplicate_of": duplicate_of,
        "duplicate_sim": rows.duplicate_sim[a:b], "cluster_captions": rows.cluster_captions[a:b],
        "cluster_same_caption": rows.cluster_same_caption[a:b], "memorization_risk": rows.memorization_risk[a:b],
        "corpus_key": corpus_key, "corpus_sim": corpus_sim,
    }, schema=WORK_SCHEMA)


def write_rows(rows: Rows, emb: EmbeddingSet, path: str, corpus_keys: pa.Array | None = None) -> None:
    """`_work/rows.parquet`, one row group per embed shard (uncompressed: read back once, then deleted)."""
    with fs.atomic_local(path) as tmp, pq.ParquetWriter(tmp, WORK_SCHEMA, compression="none") as writer:
        for s in range(len(emb.emb_paths)):
            a, b = int(emb.offsets[s]), int(emb.offsets[s + 1])
            writer.write_table(shard_table(rows, emb, a, b, corpus_keys), row_group_size=max(1, b - a))


def write_clusters(labels: np.ndarray, rep: np.ndarray, distinct: np.ndarray, risk: np.ndarray,
                   captions: count.CaptionCounts, keys: pa.Array, path: str, clusters_per_group: int = 1 << 20) -> None:
    """clusters.parquet (schemas/dedup_clusters.yaml) from per-row labels, representative mask, distinct
    captions and risk: each cluster's size, caption counts, representative and member keys, written in groups
    of clusters so that the members' keys are never all copied at once."""
    n_clusters = int(labels.max()) + 1 if len(labels) else 0
    size = np.bincount(labels, minlength=n_clusters)
    order = np.argsort(labels, kind="stable")  # each cluster's members in row order, clusters in id order
    ends = np.cumsum(size)
    rep_row = np.full(n_clusters, -1, np.int64)
    rep_row[labels[rep]] = np.flatnonzero(rep)
    first = order[ends - size] if n_clusters else np.zeros(0, np.int64)  # a member of each cluster
    distinct, risk = distinct[first], risk[first]
    schema = cluster_schema()
    with fs.atomic_local(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for c0 in range(0, max(n_clusters, 1), clusters_per_group):
            c1 = min(n_clusters, c0 + clusters_per_group)
            lo, hi = int(ends[c0 - 1]) if c0 else 0, int(ends[c1 - 1]) if c1 else 0
            offsets = np.concatenate([[0], np.cumsum(size[c0:c1])]).astype(np.int32)
            members = pa.ListArray.from_arrays(pa.array(offsets), keys.take(pa.array(order[lo:hi])))
            part = pa.table({
                "cluster_id": np.arange(c0, c1, dtype=np.int64),
                "size": size[c0:c1].astype(np.int64),
                "captions_exact": captions.exact[c0:c1].astype(np.int64),
                "captions_distinct": distinct[c0:c1].astype(np.int64),
                "captions": captions.lists.slice(c0, c1 - c0),
                "same_caption": (size[c0:c1] > 1) & (distinct[c0:c1] == 1),
                "memorization_risk": risk[c0:c1].astype(np.float32),
                "representative_key": _keys_at(keys, rep_row[c0:c1]),
                "keys": members,
            }, schema=schema)
            writer.write_table(part)


def cluster_schema() -> pa.Schema:
    return pa.schema([
        ("cluster_id", pa.int64()), ("size", pa.int64()), ("captions_exact", pa.int64()),
        ("captions_distinct", pa.int64()), ("captions", pa.list_(pa.string())), ("same_caption", pa.bool_()),
        ("memorization_risk", pa.float32()), ("representative_key", pa.string()), ("keys", pa.list_(pa.string())),
    ])
