"""Every row's dedup columns, from numbers per row and per cluster; keys and captions join them per shard.

The driver holds per row the cluster label and the best match (row and similarity), and per cluster its size,
representative row and distinct captions: int32 below 2^31 rows, about 24 bytes a row in all. `save` writes
them under `_work/rows/` and every row's key into `_work/keys.arrow` (one record batch per embed shard), and
`shard_table` builds one embed shard's rows from those files alone, so the Dask engine runs it as a task on any
worker. Keys, captions and vectors of other rows (a duplicate's representative, a row's nearest match) are read
from the files they are in, for the rows asked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.dedup import count
from curate.dedup.vectors import EmbeddingSet, _read_rows, index_type
from curate.io import fs
from curate.io.parquet import read_table

# one embed shard's dedup columns; `write_shard` adds its shard and caption columns from its metadata file
# (schemas/dedup_samples.yaml has the full table)
WORK_SCHEMA = pa.schema([
    ("key", pa.string()), ("cluster_id", pa.int64()), ("dup_count", pa.int64()),
    ("nearest_key", pa.string()), ("nearest_sim", pa.float32()), ("is_representative", pa.bool_()),
    ("keep", pa.bool_()), ("duplicate_of", pa.string()), ("duplicate_sim", pa.float32()),
    ("cluster_captions", pa.int64()), ("cluster_same_caption", pa.bool_()), ("memorization_risk", pa.float32()),
    ("corpus_key", pa.string()), ("corpus_sim", pa.float32()),
])
PER_ROW = ("labels", "nearest", "nearest_sim")
PER_CLUSTER = ("size", "rep", "distinct")
CORPUS = ("corpus", "corpus_sim", "corpus_dup")


@dataclass
class Clusters:
    """Per row (global order): `labels`, `nearest` (the most similar other row seen, -1 none), `nearest_sim`
    (NaN none); per cluster: `size`, `rep` (its representative row: the row itself when alone) and `distinct`
    (captions, near-identical ones merged). With `--against`: per row `corpus` (nearest row of the saved corpus
    index, -1 none), `corpus_sim` and `corpus_dup` (a duplicate of it: not kept, duplicate_of is its key)."""

    labels: np.ndarray
    nearest: np.ndarray
    nearest_sim: np.ndarray
    size: np.ndarray
    rep: np.ndarray
    distinct: np.ndarray
    corpus: np.ndarray | None = None
    corpus_sim: np.ndarray | None = None
    corpus_dup: np.ndarray | None = None

    def marked(self) -> int:
        """Rows not kept: every member but the representative, and the copies of a saved corpus."""
        n = len(self.labels)
        out = n - len(self.size)
        if self.corpus_dup is not None:
            out += int(np.count_nonzero(self.corpus_dup & (self.rep[self.labels] == np.arange(n))))
        return out


def cluster(emb: EmbeddingSet, labels: np.ndarray, nn: np.ndarray, nn_sim: np.ndarray, keep_policy: str,
            seed: int, caption_near: float) -> tuple[Clusters, count.CaptionCounts]:
    """The clusters' numbers from the labels and each row's best match (`labels`, `nn` and `nn_sim` are taken
    over, not copied: the caller lets go of them). Only rows of clusters with two or more members need captions,
    sizes, hashes of keys: those are read for them alone (at 12M rows, 5% of them in the synthetic benchmark)."""
    n = emb.n
    itype = index_type(n)
    labels = labels.astype(itype, copy=False)
    size = np.bincount(labels).astype(itype) if n else np.zeros(0, itype)
    multi = np.flatnonzero(size[labels] > 1)
    captions = (emb.read_column("caption", multi) if "caption" in emb.columns
                else pa.nulls(len(multi), pa.string()))
    caption_counts = count.cluster_captions(labels, captions, emb.gather_text(multi), caption_near, rows=multi,
                                            sizes=size)
    del captions
    area = aesthetic = None
    if keep_policy == "largest" and {"width", "height"} <= emb.columns:
        w, h = (pc.fill_null(emb.read_column(c, multi), 0).to_numpy(zero_copy_only=False).astype(np.float64)
                for c in ("width", "height"))
        area = w * h
    if keep_policy == "aesthetic":
        aesthetic = pc.cast(emb.read_column("aesthetic", multi), pa.float64()).to_numpy(zero_copy_only=False)
    keys = emb.read_column("key", multi) if keep_policy == "random" else None
    chosen = multi[count.representatives(labels[multi], keep_policy, seed, keys, area, aesthetic)]
    rep = np.empty(len(size), itype)
    rep[labels] = np.arange(n, dtype=itype)  # a row alone in its cluster represents it
    rep[labels[chosen]] = chosen
    del multi, chosen
    distinct = caption_counts.near.astype(itype)
    caption_counts.near = distinct
    caption_counts.exact = caption_counts.exact.astype(itype)
    nearest_sim = nn_sim.astype(np.float32, copy=False)  # taken over, not copied: NaN where no match was seen
    nearest_sim[np.isinf(nearest_sim)] = np.nan
    return Clusters(labels=labels, nearest=nn.astype(itype, copy=False), nearest_sim=nearest_sim, size=size, rep=rep,
                    distinct=distinct), caption_counts


class KeyFile:
    """Every row's key in one Arrow IPC file, one record batch per embed shard: `take` reads only the batches of
    the shards the rows fall in (a few MB each), so no process holds every key."""

    def __init__(self, path: str, offsets: np.ndarray) -> None:
        self.path, self.offsets = path, np.asarray(offsets, np.int64)

    @classmethod
    def write(cls, emb: EmbeddingSet, path: str) -> KeyFile:
        schema = pa.schema([("key", pa.string())])
        with fs.atomic_local(path) as tmp, pa.OSFile(tmp, "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for meta in emb.meta_paths:
                keys = pq.read_table(meta, columns=["key"]).column("key").cast(pa.string()).combine_chunks()
                writer.write_batch(pa.record_batch([keys], schema=schema))
        return cls(path, emb.offsets)

    def take(self, rows: np.ndarray) -> pa.Array:
        """Keys of `rows` (global rows in any order; null where a row is < 0)."""
        rows = np.asarray(rows, np.int64)
        valid = rows >= 0
        r = rows[valid]
        order = np.argsort(r, kind="stable")
        ordered = r[order]
        cut = np.searchsorted(ordered, self.offsets)
        parts = []
        with pa.OSFile(self.path) as f:
            reader = pa.ipc.open_file(f)
            for s in range(reader.num_record_batches):
                a, b = int(cut[s]), int(cut[s + 1])
                if a < b:
                    keys = reader.get_batch(s).column(0)
                    parts.append(keys.take(pa.array(ordered[a:b] - self.offsets[s])))
        got = pa.concat_arrays(parts) if parts else pa.array([], pa.string())
        at = np.empty(len(r), np.int64)
        at[order] = np.arange(len(r))
        position = np.zeros(len(rows), np.int64)
        position[valid] = at
        return got.take(pa.array(position, mask=~valid))


def save(clusters: Clusters, work: str) -> None:
    """The numbers `shard_table` reads, as .npy files under `work/rows/`."""
    for name in PER_ROW + PER_CLUSTER + (CORPUS if clusters.corpus is not None else ()):
        fs.write_arrays_atomic(fs.join(work, "rows", f"{name}.npy"), array=getattr(clusters, name))


def _slice(work: str, name: str, a: int, b: int) -> np.ndarray:
    return np.array(np.load(fs.join(work, "rows", f"{name}.npy"), mmap_mode="r")[a:b])


def _at(work: str, name: str, rows: np.ndarray) -> np.ndarray:
    """A per-cluster array's entries at `rows` (any order), by positioned reads of the distinct ones."""
    u, inverse = np.unique(rows, return_inverse=True)
    return _read_rows(fs.join(work, "rows", f"{name}.npy"), u)[inverse]


def shard_table(emb: EmbeddingSet, work: str, s: int, corpus_keys: str | None = None) -> pa.Table:
    """Embed shard `s`'s dedup columns (WORK_SCHEMA) from the files `save` and `KeyFile.write` left in `work`;
    the similarity of each duplicate to its representative is computed from the two rows' vectors.
    `corpus_keys`: the --against corpus's keys.parquet."""
    a, b = int(emb.offsets[s]), int(emb.offsets[s + 1])
    rows = np.arange(a, b, dtype=np.int64)
    labels, nearest, nearest_sim = (_slice(work, name, a, b) for name in PER_ROW)
    size, rep, distinct = (_at(work, name, labels) for name in PER_CLUSTER)
    is_rep = rep == rows
    leader = np.where(is_rep, -1, rep).astype(np.int64)
    dup_sim = np.full(b - a, np.nan, np.float32)
    dup = np.flatnonzero(~is_rep)
    if len(dup):
        x, lead = emb.gather(rows[dup]), emb.gather(leader[dup])
        if emb.kind == "bits":
            dup_sim[dup] = 1.0 - np.unpackbits(np.bitwise_xor(x, lead), axis=1).sum(axis=1) / emb.dim
        else:
            dup_sim[dup] = np.einsum("ij,ij->i", x, lead)
    keep = is_rep.copy()
    keys = KeyFile(fs.join(work, "keys.arrow"), emb.offsets)
    duplicate_of = keys.take(leader)
    corpus_key = pa.nulls(b - a, pa.string())
    corpus_sim = np.full(b - a, np.nan, np.float32)
    if corpus_keys is not None:
        corpus, corpus_sim, corpus_dup = (_slice(work, name, a, b) for name in CORPUS)
        every = read_table(corpus_keys).column("key").combine_chunks().cast(pa.string())
        corpus_key = every.take(pa.array(np.maximum(corpus, 0), mask=corpus < 0))
        keep[corpus_dup] = False
        dup_sim[corpus_dup] = corpus_sim[corpus_dup]
        duplicate_of = pc.if_else(pa.array(corpus_dup), corpus_key, duplicate_of)
    risk = count.risk(size, distinct)
    return pa.table({
        "key": keys.take(rows), "cluster_id": labels.astype(np.int64), "dup_count": size.astype(np.int64),
        "nearest_key": keys.take(nearest), "nearest_sim": nearest_sim,
        "is_representative": is_rep, "keep": keep, "duplicate_of": duplicate_of, "duplicate_sim": dup_sim,
        "cluster_captions": distinct.astype(np.int64), "cluster_same_caption": (size > 1) & (distinct == 1),
        "memorization_risk": risk, "corpus_key": corpus_key, "corpus_sim": corpus_sim,
    }, schema=WORK_SCHEMA)


def write_clusters(labels: np.ndarray, size: np.ndarray, rep: np.ndarray, distinct: np.ndarray,
                   captions: count.CaptionCounts, keys: pa.Array | KeyFile, path: str,
                   clusters_per_group: int = 1 << 18) -> None:
    """clusters.parquet (schemas/dedup_clusters.yaml) from per-row labels and per-cluster size, representative
    row and distinct captions: each cluster's caption counts, representative and member keys (in row order),
    written in groups of clusters, each group's members found by a scan of the labels, so that neither the
    members' keys nor a sort of every row are held at once."""
    n_clusters = len(size)
    schema = cluster_schema()
    with fs.atomic_local(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for c0 in range(0, max(n_clusters, 1), clusters_per_group):
            c1 = min(n_clusters, c0 + clusters_per_group)
            rows = np.flatnonzero((labels >= c0) & (labels < c1))
            rows = rows[np.argsort(labels[rows], kind="stable")]  # by cluster, each in row order
            offsets = np.concatenate([[0], np.cumsum(size[c0:c1], dtype=np.int64)]).astype(np.int32)
            part = pa.table({
                "cluster_id": np.arange(c0, c1, dtype=np.int64),
                "size": size[c0:c1].astype(np.int64),
                "captions_exact": captions.exact[c0:c1].astype(np.int64),
                "captions_distinct": distinct[c0:c1].astype(np.int64),
                "captions": captions.lists.slice(c0, c1 - c0),
                "same_caption": (size[c0:c1] > 1) & (distinct[c0:c1] == 1),
                "memorization_risk": count.risk(size[c0:c1], distinct[c0:c1]),
                "representative_key": keys.take(rep[c0:c1].astype(np.int64)),
                "keys": pa.ListArray.from_arrays(pa.array(offsets), keys.take(rows)),
            }, schema=schema)
            writer.write_table(part)


def cluster_schema() -> pa.Schema:
    return pa.schema([
        ("cluster_id", pa.int64()), ("size", pa.int64()), ("captions_exact", pa.int64()),
        ("captions_distinct", pa.int64()), ("captions", pa.list_(pa.string())), ("same_caption", pa.bool_()),
        ("memorization_risk", pa.float32()), ("representative_key", pa.string()), ("keys", pa.list_(pa.string())),
    ])
