"""Duplicate counts, caption uniformity, the memorisation-risk score and the keep policy (pure functions).

memorization_risk (documented in schemas/dedup_samples.yaml), for a sample in a cluster of `size` members
with `c` distinct captions (after normalisation, or near-identical groups when caption embeddings are given):

    d = min(1, ln(size) / ln(64))          duplication: 0 for a unique image, 1 at 64 copies or more
    u = 1 - (c - 1) / (size - 1)           caption uniformity: 1 when every copy has the same caption
    risk = d * (0.25 + 0.75 * u)           in [0, 1]

The research this follows: replicated images were duplicated ~34x on average (d = 0.85), and a duplicated
image that always carries the same caption is memorised far more than one with varied captions, though
varied captions do not remove the risk entirely (hence the 0.25 floor).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

KEEP_POLICIES = ("first", "largest", "aesthetic", "random")


def risk(size: np.ndarray, distinct: np.ndarray) -> np.ndarray:
    size = np.asarray(size, np.float64)
    distinct = np.asarray(distinct, np.float64)
    d = np.minimum(1.0, np.log(np.maximum(size, 1)) / np.log(64))
    u = np.where(size > 1, 1.0 - (distinct - 1) / np.maximum(size - 1, 1), 0.0)
    return (d * (0.25 + 0.75 * u)).astype(np.float32)


@dataclass
class CaptionCounts:
    """Per cluster: distinct captions exactly (after normalisation), with near-identical ones merged, and the
    distinct captions themselves (clusters of two or more; null for the others)."""

    exact: np.ndarray
    near: np.ndarray
    lists: pa.Array


def cluster_captions(labels: np.ndarray, captions: pa.Array | list[str | None], text_emb: np.ndarray | None = None,
                     near: float = 0.95, rows: np.ndarray | None = None, sizes: np.ndarray | None = None) -> CaptionCounts:
    """Each cluster's captions, normalised once (`captions.batch.normalize`, the normaliser recaption's pools
    use, so both stages count alike) over the rows of clusters with two or more members only.

    exact: distinct normalised texts (null counts as empty); near: greedy groups by caption-embedding
    similarity >= `near` (= exact without embeddings); lists: the first caption of each normalised text in
    row order, blank and null ones left out, sorted (what recaption offers to the members' pools).
    `captions` (and `text_emb`) hold every row's, or, with `rows` (the sorted rows of the clusters with two or
    more members), only those rows': what dedup reads from the shards at 12M rows. `sizes` (the clusters'
    sizes, with `rows`) spares recounting them: at 8M rows each recount is ~90 MB of temporaries."""
    from curate.captions import batch

    n_clusters = int(labels.max()) + 1 if len(labels) else 0
    if sizes is not None and rows is not None:
        multi = rows  # the caller's: the rows of the clusters of two or more
    else:
        sizes = np.bincount(labels, minlength=n_clusters).astype(labels.dtype)  # per cluster, as narrow as labels
        multi = np.flatnonzero(sizes[labels] > 1)
    if rows is None:
        texts = batch._strings(captions).take(pa.array(multi)).cast(pa.string())
        text_emb = text_emb[multi] if text_emb is not None else None
    else:
        if not np.array_equal(rows, multi):
            raise ValueError("cluster_captions: rows must be the rows of the clusters with two or more members")
        texts = batch._strings(captions).cast(pa.string())
    codes = batch.text_codes(texts)
    lm = labels[multi]
    firsts = batch.first_of(lm, codes)  # positions in multi of the first row of each (cluster, caption)
    # per cluster (about one per row): filled from the multi-member clusters' counts, no full-length temporaries
    exact = np.ones(n_clusters, sizes.dtype)
    found, per = np.unique(lm[firsts], return_counts=True)
    exact[found] = per
    nearc = exact.copy()
    if text_emb is not None and len(firsts):
        order = firsts[np.argsort(lm[firsts], kind="stable")]
        for members in np.split(order, np.flatnonzero(np.diff(lm[order])) + 1):
            if len(members) < 2:
                continue
            reps: list[np.ndarray] = []
            for m in members:
                v = text_emb[m]
                if not any(float(v @ r) >= near for r in reps):
                    reps.append(v)
            nearc[lm[members[0]]] = len(reps)
    words = np.flatnonzero(batch.not_blank(texts))
    listed = words[batch.first_of(lm[words], codes[words])]
    t = pa.table({"cluster": lm[listed], "caption": texts.take(pa.array(listed))}).sort_by(
        [("cluster", "ascending"), ("caption", "ascending")])
    counts = np.zeros(n_clusters, np.int32)
    found, per = np.unique(t.column("cluster").to_numpy(), return_counts=True)
    counts[found] = per
    offsets = np.zeros(n_clusters + 1, np.int32)
    np.cumsum(counts, out=offsets[1:])
    del counts
    lists = pa.ListArray.from_arrays(pa.array(offsets), t.column("caption").combine_chunks().cast(pa.string()),
                                     mask=pa.array(sizes < 2))
    return CaptionCounts(exact, nearc, lists)


def representatives(labels: np.ndarray, policy: str, seed: int, keys: list[str] | pa.Array | None,
                    area: np.ndarray | None = None, aesthetic: np.ndarray | None = None) -> np.ndarray:
    """One representative per cluster (bool mask). Ties and `random` are decided by hashes of the keys, so the
    choice does not depend on shard order or worker count."""
    n = len(labels)
    tiebreak = np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{k}".encode(), digest_size=8).digest(), "big")
                         for k in (keys.to_pylist() if isinstance(keys, pa.Array) else keys)], dtype=np.uint64) \
        if policy == "random" else np.arange(n, dtype=np.uint64)
    if policy == "first" or policy == "random":
        score = np.zeros(n)
    elif policy == "largest":
        score = -np.nan_to_num(np.asarray(area, np.float64), nan=-1.0) if area is not None else np.zeros(n)
    elif policy == "aesthetic":
        score = -np.nan_to_num(np.asarray(aesthetic, np.float64), nan=-np.inf) if aesthetic is not None else np.zeros(n)
    else:
        raise ValueError(f"unknown keep policy {policy!r}; one of {KEEP_POLICIES}")
    order = np.lexsort((tiebreak, score, labels))
    first = np.ones(n, bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    rep = np.zeros(n, bool)
    rep[order[first]] = True
    return rep
