"""Candidate near-duplicate pairs, thresholded on cosine similarity: (i, j, sim) with i < j, plus each row's top-1.

  knn_pairs        k nearest neighbours of every row through a FAISS index (exact or IVF)
  partition_pairs  SemDeDup: spherical k-means on a sample, every row assigned to its `n_assign` nearest
                   centroids, then dense similarity blocks inside each partition at BLAS speed
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import faiss
import numpy as np

from curate.dedup import index as idx
from curate.dedup.vectors import EmbeddingSet


@dataclass
class Pairs:
    i: np.ndarray  # int64, i < j
    j: np.ndarray
    sim: np.ndarray  # float32
    nn: np.ndarray  # int64: each row's most similar other row (-1 if none seen)
    nn_sim: np.ndarray  # float32

    def above(self, threshold: float) -> Pairs:
        m = self.sim >= threshold
        return Pairs(self.i[m], self.j[m], self.sim[m], self.nn, self.nn_sim)


def hub_scored(pairs: Pairs, n: int, k: int = 5, beta: float = 1.0, floor: float = 0.5,
               strong: float = 0.97) -> Pairs:
    """Hubness-corrected scores: s'(i, j) = s(i, j) - beta * (b_i + b_j) / 2, where b_i is the mean similarity
    of row i to its k most similar other rows among the candidate pairs (a row with fewer than k candidates
    counts the missing ones at `floor`, the candidates' lower bound). An image that resembles many others (a
    screenshot frame, a meme template, a dense region of clip-art) gets a high b and must be much closer to
    a neighbour to link, as in the score normalisation of the DISC21 copy-detection entries. Pairs at or above
    `strong` keep their raw similarity, so near-identical copies link however large their cluster is (in a
    cluster of 1,000 copies every member is a hub). nn / nn_sim stay raw."""
    if len(pairs.i) == 0:
        return pairs
    src = np.concatenate([pairs.i, pairs.j])
    sim = np.concatenate([pairs.sim, pairs.sim]).astype(np.float64)
    order = np.lexsort((-sim, src))
    src, sim = src[order], sim[order]
    start = np.searchsorted(src, src, side="left")
    top = (np.arange(len(src)) - start) < k
    total = np.bincount(src[top], weights=sim[top], minlength=n)
    count = np.bincount(src[top], minlength=n)
    b = (total + (k - count) * floor) / k
    adjusted = pairs.sim - beta * (b[pairs.i] + b[pairs.j]) / 2
    scored = np.where(pairs.sim >= strong, pairs.sim, adjusted).astype(np.float32)
    return Pairs(pairs.i, pairs.j, scored, pairs.nn, pairs.nn_sim)


def _unique_edges(i: np.ndarray, j: np.ndarray, s: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    code = lo.astype(np.int64) * n + hi
    order = np.argsort(code, kind="stable")
    code, s = code[order], s[order]
    keep = np.ones(len(code), bool)
    keep[1:] = code[1:] != code[:-1]
    code, s = code[keep], s[keep]
    return code // n, code % n, s.astype(np.float32)


def knn_pairs(emb: EmbeddingSet, index: faiss.Index, k: int, threshold: float, block: int = 16384) -> Pairs:
    n = emb.n
    nn = np.full(n, -1, np.int64)
    nn_sim = np.full(n, -np.inf, np.float32)
    ii, jj, ss = [], [], []
    for start, data in emb.iter_blocks():
        for b in range(0, len(data), block):
            q = data[b : b + block]
            sims, ids = idx.search(index, q, k + 1)
            rows = np.arange(start + b, start + b + len(q))[:, None]
            valid = (ids >= 0) & (ids != rows)
            # top-1 other than itself
            masked = np.where(valid, sims, -np.inf)
            best = masked.argmax(axis=1)
            nn[rows[:, 0]] = np.where(np.isfinite(masked.max(axis=1)), ids[np.arange(len(q)), best], -1)
            nn_sim[rows[:, 0]] = masked.max(axis=1)
            hit = valid & (sims >= threshold)
            r, c = np.nonzero(hit)
            ii.append(rows[r, 0])
            jj.append(ids[r, c])
            ss.append(sims[r, c])
    i, j, s = (np.concatenate(x) if x else np.zeros(0, t) for x, t in ((ii, np.int64), (jj, np.int64), (ss, np.float32)))
    i, j, s = _unique_edges(i, j, s, n)
    return Pairs(i, j, s, nn, nn_sim)


# Partitions hold about ROWS_PER_PARTITION rows each (times n_assign): the dense cost per row is then the same at
# 12M rows as at 1M (sqrt(N) partitions would make each row's cost grow as sqrt(N)).
ROWS_PER_PARTITION = 1000
# Above this many centroids, rows are assigned through two levels (coarse cells, then the fine centroids of a
# row's best cells), so assignment costs ~sqrt(nlist) dot products per row instead of nlist.
TWO_LEVEL_FROM = 4096


def partitions(emb: EmbeddingSet, nlist: int = 0, n_assign: int = 2, train_per_centroid: int = 100,
               seed: int = 0, two_level_from: int = TWO_LEVEL_FROM) -> list[np.ndarray]:
    """SemDeDup's plan: spherical k-means on a sample, every row assigned (shard by shard) to its `n_assign`
    nearest centroids; returns the sorted global rows of each partition with at least 2 members."""
    n = emb.n
    nlist = nlist or max(1, int(np.sqrt(n)), n // ROWS_PER_PARTITION)
    nlist = min(nlist, max(1, n // 39))
    if nlist >= two_level_from:
        assign = _assign_two_level(emb, nlist, n_assign, seed)
    else:
        km = faiss.Kmeans(emb.dim, nlist, niter=10, spherical=True, seed=seed, verbose=False)
        km.train(idx.sample_rows(emb, min(n, max(20_000, train_per_centroid * nlist)), seed))
        assign = np.empty((n, min(n_assign, nlist)), np.int32)
        for start, block in emb.iter_blocks():
            _, a = km.index.search(block, assign.shape[1])
            assign[start : start + len(block)] = a
    part_of = assign.reshape(-1)
    rows_of = np.repeat(np.arange(n, dtype=np.int64), assign.shape[1])
    del assign
    order = np.argsort(part_of, kind="stable")
    part_of, rows_of = part_of[order], rows_of[order]
    del order
    bounds = np.flatnonzero(np.diff(part_of)) + 1
    unassigned = part_of[0] < 0 if len(part_of) else False
    del part_of
    return [np.sort(m) for m in np.split(rows_of, bounds)[int(unassigned):] if len(m) >= 2]


def _assign_two_level(emb: EmbeddingSet, nlist: int, n_assign: int, seed: int, probes: int = 2,
                      train_per_centroid: int = 40) -> np.ndarray:
    """Each row's `n_assign` nearest fine centroids (N x n_assign int32), searched among the fine centroids of
    its `probes` nearest coarse cells: about sqrt(nlist) coarse cells, each split by a k-means of its own
    share of one sample (kept as float16: 40 rows per centroid)."""
    coarse_n = max(1, int(np.sqrt(nlist)))
    sample = idx.sample_rows(emb, min(emb.n, train_per_centroid * nlist), seed).astype(np.float16)
    km = faiss.Kmeans(emb.dim, coarse_n, niter=10, spherical=True, seed=seed, verbose=False)
    km.train(sample[np.random.default_rng(seed).choice(len(sample), min(len(sample), 100 * coarse_n), replace=False)]
             .astype(np.float32))
    coarse = km.index
    cell_of = np.concatenate([coarse.search(sample[k : k + 65536].astype(np.float32), 1)[1][:, 0]
                              for k in range(0, len(sample), 65536)])
    fine = []
    for cell in range(coarse_n):
        members = sample[cell_of == cell].astype(np.float32)
        k = max(1, min(round(nlist * len(members) / len(sample)), len(members) // 39))
        if len(members) <= k:
            cents = members if len(members) else coarse.reconstruct_n(cell, 1)
        else:
            sub = faiss.Kmeans(emb.dim, k, niter=10, spherical=True, seed=seed, verbose=False)
            sub.train(members)
            cents = sub.centroids
        fine.append(np.ascontiguousarray(cents, np.float32))
    del sample
    # the fine centroids, listed under their nearest coarse cell: an IVF search with nprobe probes is the
    # two-level lookup, in faiss's C++ on all cores
    ivf = faiss.IndexIVFFlat(coarse, emb.dim, coarse_n, faiss.METRIC_INNER_PRODUCT)
    ivf.add(np.concatenate(fine))
    ivf.nprobe = min(probes, coarse_n)
    width = min(n_assign, ivf.ntotal)
    assign = np.empty((emb.n, width), np.int32)
    for start, block in emb.iter_blocks():
        assign[start : start + len(block)] = ivf.search(block, width)[1]  # -1: fewer centroids in its cells
    return assign


@dataclass
class PartitionResult:
    """One partition's thresholded pairs (as codes i * n + j, i < j) and its rows' best match inside it."""

    codes: np.ndarray
    sims: np.ndarray
    rows: np.ndarray
    nn: np.ndarray
    nn_sim: np.ndarray


# OpenBLAS's sgemm sums in an order that depends on its thread count (0.3.31: up to 5e-5 apart on 512-d rows),
# so a Dask worker (one thread) and the local loop (all cores) would report different similarities. The matmul
# only proposes: candidates within SLACK of the threshold or of a row's best are re-scored by `pair_dots`.
SLACK = 1e-3


def pair_dots(x: np.ndarray, r: np.ndarray, c: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """x[r[k]] . x[c[k]] for every k, in numpy's own loop (not BLAS): the same bits whatever the thread count.
    In chunks: a partition holding a planted group of 1,000 copies has 500k candidate pairs, and gathering
    both sides at once took 2 GB (the peak RSS of a 1M-row dedup) and most of the partition's time."""
    out = np.empty(len(r), np.float32)
    for k in range(0, len(r), chunk):
        out[k : k + chunk] = np.einsum("ij,ij->i", x[r[k : k + chunk]], x[c[k : k + chunk]])
    return out


def _nonzero_rows(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.nonzero of a sparse 2-D mask, scanning only the rows that hold a True (np.nonzero over a whole
    4096 x 12000 block costs several times the comparison that made it)."""
    counts = np.count_nonzero(mask, axis=1)
    rows = np.flatnonzero(counts)
    if len(rows) == len(mask):
        return np.nonzero(mask)
    _, c = np.nonzero(mask[rows])
    return np.repeat(rows, counts[rows]), c


def partition_block(x: np.ndarray, members: np.ndarray, n: int, threshold: float,
                    row_block: int = 4096) -> PartitionResult:
    """Dense similarities inside one partition: `x` holds the float32 vectors of the sorted global rows
    `members`. A pure function of its inputs whatever the BLAS thread count, so a Dask task computes exactly
    what the local loop does: the matmul proposes, `pair_dots` scores what is reported."""
    codes, ss = [], []
    nn = np.full(len(members), -1, np.int64)
    nn_sim = np.full(len(members), -np.inf, np.float32)
    for r0 in range(0, len(members), row_block):
        sims = x[r0 : r0 + row_block] @ x.T
        local = np.arange(r0, r0 + len(sims))
        sims[np.arange(len(sims)), local] = -np.inf  # not itself
        # each row's best: every column near the row's maximum, re-scored; ties go to the lower column
        best = sims.argmax(axis=1)
        near = sims >= (sims[np.arange(len(sims)), best] - SLACK)[:, None]
        tied = np.count_nonzero(near, axis=1) > 1  # rare: only those rows are scanned for their near-ties
        r_tie, c_tie = _nonzero_rows(near[tied])
        one = np.flatnonzero(~tied)
        r = np.concatenate([one, np.flatnonzero(tied)[r_tie]])
        c = np.concatenate([best[one], c_tie])
        exact = pair_dots(x, local[r], c)
        order = np.lexsort((c, -exact, r))
        first = order[np.r_[True, r[order][1:] != r[order][:-1]]]
        nn[local[r[first]]] = members[c[first]]
        nn_sim[local[r[first]]] = exact[first]
        r, c = _nonzero_rows(sims >= threshold - SLACK)
        keep = c > local[r]  # members are sorted, so c > r means j > i
        r, c = r[keep], c[keep]
        exact = pair_dots(x, local[r], c)
        hit = exact >= threshold
        codes.append(members[local[r[hit]]] * n + members[c[hit]])
        ss.append(exact[hit])
    return PartitionResult(np.concatenate(codes), np.concatenate(ss).astype(np.float32), members, nn, nn_sim)


def merge_partitions(results: Iterable[PartitionResult], n: int) -> Pairs:
    """The global pair list (each pair once) and each row's best match over all its partitions."""
    nn = np.full(n, -1, np.int64)
    nn_sim = np.full(n, -np.inf, np.float32)
    codes, ss = [], []
    for res in results:
        better = res.nn_sim > nn_sim[res.rows]
        nn[res.rows[better]] = res.nn[better]
        nn_sim[res.rows[better]] = res.nn_sim[better]
        codes.append(res.codes)
        ss.append(res.sims)
    code = np.concatenate(codes) if codes else np.zeros(0, np.int64)
    del codes
    sim = np.concatenate(ss) if ss else np.zeros(0, np.float32)
    del ss
    code, first = np.unique(code, return_index=True)
    sim = sim[first]
    return Pairs(code // n, code % n, sim.astype(np.float32), nn, nn_sim)


def partition_pairs(emb: EmbeddingSet, threshold: float, nlist: int = 0, n_assign: int = 2,
                    train_per_centroid: int = 100, seed: int = 0, row_block: int = 4096,
                    batch_rows: int = 65536) -> Pairs:
    """SemDeDup-style exact pairs inside k-means partitions (rows near a border sit in `n_assign` partitions).

    Memory: a k-means sample of `train_per_centroid` rows per centroid (at least 20k), the assignment (N x
    n_assign int32), about `batch_rows` rows' vectors at a time, read from the memory-mapped shards (never all
    N x d), and the pairs found as 12 bytes each (pair code + similarity)."""
    parts = partitions(emb, nlist, n_assign, train_per_centroid, seed)

    def blocks() -> Iterator[PartitionResult]:
        for batch in _batches(parts, batch_rows):
            rows = np.unique(np.concatenate(batch))
            x = partition_vectors(emb, rows)
            for members in batch:
                yield partition_block(x[np.searchsorted(rows, members)], members, emb.n, threshold, row_block)

    return merge_partitions(blocks(), emb.n)


def _batches(parts: list[np.ndarray], batch_rows: int) -> Iterator[list[np.ndarray]]:
    """Consecutive partitions, about `batch_rows` rows at a time: their rows are read in one pass over the
    shards (at 12M rows in 120 shards, one memory map per shard per partition was 14% of the time)."""
    batch, rows = [], 0
    for members in parts:
        if batch and rows + len(members) > batch_rows:
            yield batch
            batch, rows = [], 0
        batch.append(members)
        rows += len(members)
    if batch:
        yield batch


def partition_vectors(emb: EmbeddingSet, members: np.ndarray) -> np.ndarray:
    """One partition's rows read from the embedding shards, through float16 (what embed writes) to float32:
    the local loop and a Dask task read them alike, so both give the same pairs."""
    return emb.gather(members, np.float16).astype(np.float32)


def _partition_task(emb: EmbeddingSet, index: int, members: np.ndarray, threshold: float) -> tuple[int, PartitionResult]:
    """One Dask task: read the partition's rows from the shared embedding shards, then `partition_block`."""
    return index, partition_block(partition_vectors(emb, members), members, emb.n, threshold)


def partition_pairs_dask(emb: EmbeddingSet, threshold: float, nlist: int = 0, n_assign: int = 2, seed: int = 0,
                         scheduler: str | None = None, workers: int = 1) -> Pairs:
    """The same pairs as `partition_pairs`, with one Dask task per partition (k-means and the assignment run
    here: they read the vectors once, shard by shard); embeddings must be readable from every worker."""
    import dataclasses

    import pyarrow as pa

    from curate.engines.dask import map_tasks

    parts = partitions(emb, nlist, n_assign, seed=seed)
    light = dataclasses.replace(emb, metadata=pa.table({}))  # tasks need paths and offsets, not the metadata
    calls = [(light, i, members, threshold) for i, members in enumerate(parts)]
    keys = [f"curate-dedup-partition-{i:06d}" for i in range(len(parts))]
    done = dict(map_tasks(_partition_task, calls, keys, scheduler, workers))
    return merge_partitions((done[i] for i in range(len(parts))), emb.n)
