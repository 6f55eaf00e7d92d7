"""Candidate near-duplicate pairs, thresholded on cosine similarity: (i, j, sim) with i < j, plus each row's top-1.

  knn_pairs        k nearest neighbours of every row through a FAISS index (exact or IVF)
  partition_pairs  SemDeDup: spherical k-means on a sample, every row assigned to its `n_assign` nearest
                   centroids, then dense similarity blocks inside each partition at BLAS speed
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import faiss
import numpy as np

from curate.dedup import index as idx
from curate.dedup.link import row_topk
from curate.dedup.vectors import EmbeddingSet, index_type
from curate.errors import CurateError

if TYPE_CHECKING:
    from curate.dedup.spill import PairFiles


@dataclass
class Pairs:
    i: np.ndarray  # row numbers (int32 or int64), i < j
    j: np.ndarray
    sim: np.ndarray  # float32
    nn: np.ndarray  # int64: each row's most similar other row (-1 if none seen)
    nn_sim: np.ndarray  # float32

    def chunks(self, size: int = 1 << 22) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(i, j, sim) in slices of `size` pairs: the edge source `link.link_edges` reads."""
        for a in range(0, len(self.i), size):
            yield self.i[a : a + size], self.j[a : a + size], self.sim[a : a + size]

    def above(self, threshold: float) -> Pairs:
        m = self.sim >= threshold
        if m.all():  # no copy (117M pairs at 12M rows are 2.3 GB)
            return self
        return Pairs(self.i[m], self.j[m], self.sim[m], self.nn, self.nn_sim)


def hub_scored(pairs: Pairs | PairFiles, n: int, k: int = 5, beta: float = 1.0, floor: float = 0.5,
               strong: float = 0.97) -> Pairs | PairFiles:
    """Hubness-corrected scores: s'(i, j) = s(i, j) - beta * (b_i + b_j) / 2, where b_i is the mean similarity
    of row i to its k most similar other rows among the candidate pairs (a row with fewer than k candidates
    counts the missing ones at `floor`, the candidates' lower bound). An image that resembles many others (a
    screenshot frame, a meme template, a dense region of clip-art) gets a high b and must be much closer to
    a neighbour to link, as in the score normalisation of the DISC21 copy-detection entries. Pairs at or above
    `strong` keep their raw similarity, so near-identical copies link however large their cluster is (in a
    cluster of 1,000 copies every member is a hub). nn / nn_sim stay raw. Pairs held in files (the Dask
    engine's) get the scores as they are read."""
    top = row_topk(n, pairs.chunks(), k)
    found = np.isfinite(top)
    b = (np.where(found, top, 0).astype(np.float64).sum(axis=1) + (k - found.sum(axis=1)) * floor) / k
    del top, found

    def score(i: np.ndarray, j: np.ndarray, sim: np.ndarray) -> np.ndarray:
        return np.where(sim >= strong, sim, sim - beta * (b[i] + b[j]) / 2).astype(np.float32)

    if isinstance(pairs, Pairs):
        return Pairs(pairs.i, pairs.j, score(pairs.i, pairs.j, pairs.sim), pairs.nn, pairs.nn_sim)
    return dataclasses.replace(pairs, score=score)


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
# A row joins a partition after its best only when that centroid scores within ASSIGN_MARGIN of the best: a
# near-duplicate pair splits across a border only when both rows sit near it, and rows deep inside one partition
# (most of them) need no second copy. bench/.data 1M x 512, two-level plan: rows in partitions 2.0M -> 1.14M,
# dense block elements 4.06e9 -> 1.40e9, pairs at 0.95 all found (11,230,238 of 11,230,238) and every row's
# best match still found; margins 0.05 and 0.02 found all too.
ASSIGN_MARGIN = 0.1
# Above this many centroids, rows are assigned through two levels (coarse cells, then the fine centroids of a
# row's best cells), so assignment costs ~sqrt(nlist) dot products per row instead of nlist.
TWO_LEVEL_FROM = 4096


@dataclass
class Plan:
    """Which rows each partition holds: `parts` lists the sorted global rows of each partition with at least
    2 members, `ids` its centroid, and `assign` every row's `n_assign` centroids (-1: none)."""

    parts: list[np.ndarray]
    ids: np.ndarray
    assign: np.ndarray

    def owner(self, k: int) -> tuple[int, np.ndarray]:
        """What `partition_block` needs to report a pair only from the lowest partition both rows share."""
        return int(self.ids[k]), self.assign[self.parts[k]]


@dataclass
class Assigner:
    """Rows -> their partitions' centroids: a FAISS index over the centroids proposes `candidates` of them with
    their similarities, and the best `width` by similarity less the centroid's balancing `bias` are kept, after
    the first only those within `margin` of it. A row whose choice hangs on a difference below CLOSE is
    re-scored exactly first (numpy's own loop), so a one-thread Dask task places every row as the local engine
    on all cores does. Pickles (FAISS indexes do), so Dask tasks assign the rows of their own shards."""

    index: faiss.Index  # IndexFlatIP over the centroids, or the two-level IndexIVFFlat over the fine ones
    centroids: np.ndarray  # float32, in the index's id order
    bias: np.ndarray  # float32 per centroid
    width: int
    candidates: int
    margin: float

    @property
    def m(self) -> int:
        return len(self.centroids)

    def assign(self, block: np.ndarray) -> np.ndarray:
        """Each row's centroids (len(block) x width int32, -1 for none)."""
        d, i = _candidates(self, block)  # -1: fewer centroids in its cells
        return _top(d, i, self.bias, self.width, self.margin).astype(np.int32)


def partitions(emb: EmbeddingSet, nlist: int = 0, n_assign: int = 2, train_per_centroid: int = 100,
               seed: int = 0, two_level_from: int = TWO_LEVEL_FROM, margin: float = ASSIGN_MARGIN) -> Plan:
    """SemDeDup's plan: spherical k-means on a sample, every row assigned (shard by shard) to its nearest
    centroid and to up to `n_assign - 1` more that score within `margin` of it."""
    assigner = fit_assigner(emb, nlist, n_assign, train_per_centroid, seed, two_level_from, margin)
    n = emb.n
    assign = np.empty((n, assigner.width), np.int32)
    for start, block in emb.iter_blocks():
        assign[start : start + len(block)] = assigner.assign(block)
    part_of = assign.reshape(-1)
    rows_of = np.repeat(np.arange(n, dtype=np.int64), assign.shape[1])
    order = np.argsort(part_of, kind="stable")
    part_of, rows_of = part_of[order], rows_of[order]
    del order
    starts = np.r_[0, np.flatnonzero(np.diff(part_of)) + 1] if len(part_of) else np.zeros(0, np.int64)
    ids = part_of[starts]
    parts = np.split(rows_of, starts[1:])
    del part_of
    keep = [k for k, m in enumerate(parts) if len(m) >= 2 and ids[k] >= 0]
    return Plan([np.sort(parts[k]) for k in keep], ids[keep].astype(np.int64), assign)


def fit_assigner(emb: EmbeddingSet, nlist: int = 0, n_assign: int = 2, train_per_centroid: int = 100,
                 seed: int = 0, two_level_from: int = TWO_LEVEL_FROM, margin: float = ASSIGN_MARGIN) -> Assigner:
    """The centroids of the plan from a k-means of a sample: flat up to `two_level_from` centroids, else two
    levels (`_fit_two_level`)."""
    n = emb.n
    nlist = nlist or max(1, int(np.sqrt(n)), n // ROWS_PER_PARTITION)
    nlist = min(nlist, max(1, n // 39))
    if nlist >= two_level_from:
        return _fit_two_level(emb, nlist, n_assign, seed, margin=margin)
    km = _kmeans(idx.sample_rows(emb, min(n, max(20_000, train_per_centroid * nlist)), seed), nlist, seed)
    centroids = np.ascontiguousarray(km.centroids, np.float32)
    index = faiss.IndexFlatIP(emb.dim)
    index.add(centroids)
    width = min(n_assign, nlist)
    return Assigner(index, centroids, np.zeros(nlist, np.float32), width, min(width + 2, nlist), margin)


def _kmeans(x: np.ndarray, k: int, seed: int) -> faiss.Kmeans:
    """The spherical k-means every partition plan here uses, trained on the float32 rows `x`."""
    km = faiss.Kmeans(x.shape[1], k, niter=10, spherical=True, seed=seed, verbose=False)
    km.train(np.ascontiguousarray(x, np.float32))
    return km


def _fit_two_level(emb: EmbeddingSet, nlist: int, n_assign: int, seed: int, probes: int = 2,
                   train_per_centroid: int = 40, candidates: int = 8, balance: bool = True,
                   margin: float = ASSIGN_MARGIN) -> Assigner:
    """Rows go to their `n_assign` nearest fine centroids, searched among the fine centroids of their `probes`
    nearest coarse cells: about sqrt(nlist) coarse cells, each split by a k-means of its own share of one
    sample (kept as float16: 40 rows per centroid)."""
    coarse_n = max(1, int(np.sqrt(nlist)))
    sample = idx.sample_rows(emb, min(emb.n, train_per_centroid * nlist), seed, np.float16)
    pick = np.random.default_rng(seed).choice(len(sample), min(len(sample), 100 * coarse_n), replace=False)
    coarse = _kmeans(sample[pick], coarse_n, seed).index
    cell_of = np.concatenate([coarse.search(sample[k : k + 65536].astype(np.float32), 1)[1][:, 0]
                              for k in range(0, len(sample), 65536)])
    fine = []
    for cell in range(coarse_n):
        members = sample[cell_of == cell].astype(np.float32)
        k = max(1, min(round(nlist * len(members) / len(sample)), len(members) // 39))
        if len(members) <= k:
            cents = members if len(members) else coarse.reconstruct_n(cell, 1)
        elif k == 1:  # a k-means of one centroid is the normalised mean (faiss warns below 39 rows)
            cents = members.mean(axis=0, keepdims=True) / np.linalg.norm(members.mean(axis=0))
        else:
            cents = _kmeans(members, k, seed).centroids
        fine.append(np.ascontiguousarray(cents, np.float32))
    # the fine centroids, listed under their nearest coarse cell: an IVF search with nprobe probes is the
    # two-level lookup, in faiss's C++ on all cores
    centroids = np.concatenate(fine)
    ivf = faiss.IndexIVFFlat(coarse, emb.dim, coarse_n, faiss.METRIC_INNER_PRODUCT)
    ivf.add(centroids)
    ivf.nprobe = min(probes, coarse_n)
    width = min(n_assign, ivf.ntotal)
    n_cand = min(candidates, ivf.ntotal)
    assigner = Assigner(ivf, centroids, np.zeros(ivf.ntotal, np.float32), width, n_cand, margin)
    if balance:
        found = [_candidates(assigner, sample[a : a + 65536].astype(np.float32)) for a in range(0, len(sample), 65536)]
        assigner.bias = balancing_bias(np.concatenate([d for d, _ in found]), np.concatenate([i for _, i in found]),
                                       ivf.ntotal, width, margin)
    return assigner


# FAISS's similarities (BLAS or SIMD sums) differ from exact dots by ~1e-6, in bits that depend on the thread
# count; a choice between centroids that hangs on less than this is made on exact dots
CLOSE = 1e-4


def _candidates(assigner: Assigner, x: np.ndarray, rows: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Each row's candidate centroids and their similarities (-inf where none), `rows` at a time; exact for the
    rows whose choice is close (`_close`). Re-scoring every row gathered rows x candidates x d floats: ~100 s
    at 12M x 1280 with 8 candidates."""
    ds, ids = [], []
    for a in range(0, len(x), rows):
        q = np.ascontiguousarray(x[a : a + rows], np.float32)
        d, i = assigner.index.search(q, assigner.candidates)
        d = np.where(i >= 0, d, -np.inf).astype(np.float32)
        r = np.flatnonzero(_close(d, i, assigner.bias, assigner.width, assigner.margin))
        if len(r):
            exact = np.einsum("rd,rcd->rc", q[r], assigner.centroids[np.maximum(i[r], 0)])
            d[r] = np.where(i[r] >= 0, exact, -np.inf)
        ds.append(d)
        ids.append(i)
    return np.concatenate(ds), np.concatenate(ids)


def _close(d: np.ndarray, i: np.ndarray, bias: np.ndarray, width: int, margin: float) -> np.ndarray:
    """Rows whose `_top` choice changes with a change below CLOSE in a similarity: two of the best `width` + 1
    scores that close (which are kept, in which order), or a kept one that close to the best less `margin`."""
    score = -np.sort(-np.where(i >= 0, d - bias[np.maximum(i, 0)], -np.inf), axis=1)
    k = min(width + 1, score.shape[1])
    with np.errstate(invalid="ignore"):  # -inf - -inf: no centroid on either side, no choice
        close = (score[:, : k - 1] - score[:, 1:k] < CLOSE).any(axis=1)
        close |= (np.abs(score[:, 1:width] - (score[:, :1] - margin)) < CLOSE).any(axis=1)
    return close


def _top(d: np.ndarray, i: np.ndarray, bias: np.ndarray, width: int, margin: float = np.inf) -> np.ndarray:
    """The `width` best of each row's candidate centroids `i` by similarity `d` less the centroid's bias; after
    the best, only those within `margin` of it (-1 for the others)."""
    score = np.where(i >= 0, d - bias[np.maximum(i, 0)], -np.inf)
    order = np.argsort(-score, axis=1, kind="stable")[:, :width]
    top = np.take_along_axis(i, order, axis=1)
    ranked = np.take_along_axis(score, order, axis=1)
    top[:, 1:][ranked[:, 1:] < ranked[:, :1] - margin] = -1
    return top


def balancing_bias(d: np.ndarray, i: np.ndarray, m: int, width: int, margin: float = np.inf, iters: int = 40,
                   step: float = 0.002) -> np.ndarray:
    """A per-centroid penalty on similarity that evens out how many of the sample rows (similarities `d` to
    candidate centroids `i`) each of the `m` centroids gets among a row's `width` best.

    k-means on rows without clear clusters (one topic's rows split a dozen ways, as at 12M) leaves hubs:
    centroids that are nearest to far more rows than others; at 12M the partitions' row-weighted mean size was
    2.9x their mean, so the dense blocks cost 2.9x balanced ones. A penalty keeps each partition a convex
    region (near-duplicates still make the same choice) and moves rows on a border to the emptier side."""
    bias = np.zeros(m, np.float32)
    for _ in range(iters):
        top = _top(d, i, bias, width, margin)
        counts = np.bincount(top[top >= 0], minlength=m)
        target = counts.sum() / m
        bias += step * np.log((counts + 1) / (target + 1)).astype(np.float32)
    return bias


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
                    row_block: int = 4096, owner: tuple[int, np.ndarray] | None = None) -> PartitionResult:
    """Dense similarities inside one partition: `x` holds the float32 vectors of the sorted global rows
    `members`. A pure function of its inputs whatever the BLAS thread count, so a Dask task computes exactly
    what the local loop does: the matmul proposes, `pair_dots` scores what is reported.

    `owner` (this partition's centroid, the members' centroids: `Plan.owner`) keeps only the pairs whose lowest
    shared partition is this one, so each pair is reported once: a group of copies sits in the same two
    partitions, and at 12M rows the doubled pair list (235M codes) and its sort were most of the memory."""
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
        if owner is not None:
            mine = _lowest_shared(owner[1][local[r]], owner[1][c]) == owner[0]
            r, c = r[mine], c[mine]
        exact = pair_dots(x, local[r], c)
        hit = exact >= threshold
        codes.append(members[local[r[hit]]] * n + members[c[hit]])
        ss.append(exact[hit])
    return PartitionResult(np.concatenate(codes), np.concatenate(ss).astype(np.float32), members, nn, nn_sim)


def _lowest_shared(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per pair, the lowest centroid in both rows' assignments (rows of `a` and `b`, -1 entries ignored)."""
    same = (a[:, :, None] == b[:, None, :]) & (a[:, :, None] >= 0)
    big = np.iinfo(np.int64).max
    return np.where(same, a[:, :, None].astype(np.int64), big).min(axis=(1, 2))


def keep_better(nn: np.ndarray, nn_sim: np.ndarray, at: np.ndarray, best: np.ndarray, sim: np.ndarray) -> None:
    """Rows `at` (distinct) take the match `best` where its similarity `sim` is strictly higher than what they
    hold: over results taken in partition order, each row keeps the first best. The local merge, a Dask batch
    and the merge of the batches' files all break ties by this one rule, so their outputs agree."""
    better = sim > nn_sim[at]
    nn[at[better]], nn_sim[at[better]] = best[better], sim[better]


def merge_partitions(results: Iterable[PartitionResult], n: int, chunk: int = 1 << 22) -> Pairs:
    """The global pair list and each row's best match over all its partitions. Each pair comes from one
    partition only (`partition_block`'s `owner`), so the list is concatenated, in partition order, not sorted
    and deduplicated: at 12M rows (117M pairs) that sort took 2 GB more.

    The partitions' pairs (tens of kB each) are packed into chunks of ~`chunk` pairs as they come: arrays that
    small live on the C heap, which keeps their pages once they are freed, so holding them all until the end
    left 1.4 GB of freed heap in the RSS at 12M rows, through the linking that follows."""
    nn = np.full(n, -1, np.int64)
    nn_sim = np.full(n, -np.inf, np.float32)
    chunks: list[tuple[np.ndarray, np.ndarray]] = []
    pending: list[tuple[np.ndarray, np.ndarray]] = []
    held = 0
    for res in results:
        keep_better(nn, nn_sim, res.rows, res.nn, res.nn_sim)
        pending.append((res.codes, res.sims))
        held += len(res.codes)
        if held >= chunk:
            chunks.append((np.concatenate([c for c, _ in pending]), np.concatenate([s for _, s in pending])))
            pending, held = [], 0
    if pending:
        chunks.append((np.concatenate([c for c, _ in pending]), np.concatenate([s for _, s in pending])))
    del pending
    # filled while the chunks are let go: the pairs are held once, not the list and its copy at once; rows as
    # int32 below 2^31 rows (12 bytes a pair, not 20: 1.4 GB at 12M rows and 117M pairs, not 2.3)
    total = sum(len(c) for c, _ in chunks)
    i, j, sim = np.empty(total, index_type(n)), np.empty(total, index_type(n)), np.empty(total, np.float32)
    at = 0
    chunks.reverse()
    while chunks:
        code, ss = chunks.pop()
        i[at : at + len(code)], j[at : at + len(code)], sim[at : at + len(code)] = code // n, code % n, ss
        at += len(code)
    return Pairs(i, j, sim, nn, nn_sim)


def partition_pairs(emb: EmbeddingSet, threshold: float, nlist: int = 0, n_assign: int = 2,
                    train_per_centroid: int = 100, seed: int = 0, row_block: int = 4096,
                    batch_rows: int = 65536, spill: str | None = None, spill_budget: int | None = None) -> Pairs:
    """SemDeDup-style exact pairs inside k-means partitions (rows near a border sit in `n_assign` partitions).

    Memory: a k-means sample of `train_per_centroid` rows per centroid (at least 20k), the assignment (N x
    n_assign int32), about `batch_rows` rows' vectors at a time, read from the memory-mapped shards (never all
    N x d), and the pairs found as 12 bytes each (pair code + similarity). With `spill` (a folder), each batch's
    rows are first copied into a file of their own in one sequential pass over the shards (`spill_batches`):
    when the vectors outgrow the page cache (12M x 1280 float16 is 30.7 GB), reading each batch's rows from
    the shards is a random read per row (~570 s of a 2160 s run)."""
    plan = partitions(emb, nlist, n_assign, train_per_centroid, seed)
    bounds = batch_bounds([len(m) for m in plan.parts], batch_rows)

    def blocks() -> Iterator[PartitionResult]:
        files: dict[int, str] = {}
        for batch, (a, b) in enumerate(bounds):
            rows = np.unique(np.concatenate(plan.parts[a:b]))
            if spill and batch not in files:  # the next round of batches, copied out in one pass
                files = spill_batches(emb, plan, bounds, batch, spill, spill_budget)
            x = read_spilled(emb, files[batch], len(rows)) if spill else partition_vectors(emb, rows)
            for k in range(a, b):
                members = plan.parts[k]
                yield partition_block(x[np.searchsorted(rows, members)], members, emb.n, threshold, row_block,
                                      plan.owner(k))

    return merge_partitions(blocks(), emb.n)


def spill_needed(emb: EmbeddingSet, memory: int | None = None) -> bool:
    """Whether the embeddings (as stored) take more than half of this machine's memory, so that the partitions'
    rows would be read from disk rather than from the page cache (a machine's total, not what is free now: the
    choice, and so the run, does not depend on what else is running)."""
    if memory is None:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    stored = sum(os.path.getsize(p) for p in emb.emb_paths)
    return stored > memory // 2


def spill_batches(emb: EmbeddingSet, plan: Plan, bounds: list[tuple[int, int]], first: int, folder: str,
                  budget: int | None = None) -> dict[int, str]:
    """Batches from `first` on, as many as `budget` bytes hold (half the machine's memory: the disk they take at
    once), their rows (sorted, once each, as stored) appended to `folder/{batch}.rows` in one sequential pass over
    the embed shards; returns {batch: file}. At 12M x 1280 (2.1 placements a row: 64 GB of batch rows), five
    such passes of ~20 s each on this project's 2-core machines."""
    os.makedirs(folder, exist_ok=True)
    if budget is None:
        budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    row_bytes = emb.dim * 2 if emb.kind == "float" else emb.dim // 8
    last, held = first, 0
    while last < len(bounds):
        size = sum(len(plan.parts[k]) for k in range(*bounds[last])) * row_bytes
        if last > first and held + size > budget:
            break
        held += size
        last += 1
    batch_of = np.full(int(plan.ids.max()) + 1 if len(plan.ids) else 0, -1, np.int64)
    for b in range(first, last):
        batch_of[plan.ids[bounds[b][0] : bounds[b][1]]] = b
    files = {b: os.path.join(folder, f"{b:06d}.rows") for b in range(first, last)}
    for path in files.values():
        open(path, "wb").close()
    width = plan.assign.shape[1]
    for s, path in enumerate(emb.emb_paths):
        start, end = int(emb.offsets[s]), int(emb.offsets[s + 1])
        a = plan.assign[start:end].reshape(-1).astype(np.int64)
        placed = (a >= 0) & (a < len(batch_of))
        batch = np.full(len(a), -1, np.int64)
        batch[placed] = batch_of[a[placed]]
        local = np.repeat(np.arange(end - start, dtype=np.int64), width)
        code = np.unique(batch[batch >= 0] * (end - start) + local[batch >= 0])  # by batch, then row; once each
        if not len(code):
            continue
        rows = np.asarray(np.load(path, mmap_mode="r"))  # the shard, read once, in order
        which, at = code // (end - start), code % (end - start)
        cuts = np.flatnonzero(np.diff(which)) + 1
        for part, b in zip(np.split(at, cuts), which[np.r_[0, cuts]].tolist(), strict=True):
            with open(files[b], "ab") as f:
                f.write(np.ascontiguousarray(rows[part]).tobytes())
    return files


def read_spilled(emb: EmbeddingSet, path: str, count: int) -> np.ndarray:
    """A batch's rows from its spill file (then removed), through float16 to float32 as `partition_vectors`
    reads them from the shards (the transform, if any, applied alike)."""
    from curate.dedup.vectors import _npy_layout

    st = os.stat(emb.emb_paths[0])
    _, dtype, shape = _npy_layout(emb.emb_paths[0], st.st_size, st.st_mtime_ns)
    raw = np.fromfile(path, dtype).reshape(-1, *shape[1:])
    os.remove(path)
    if len(raw) != count:
        raise CurateError(f"{path}: {len(raw)} rows spilled, {count} expected (was it changed during the run?)")
    out = np.empty(raw.shape, np.float16)
    out[:] = emb.transform(raw) if emb.transform is not None and emb.kind == "float" else raw
    return out.astype(np.float32)


def batch_bounds(sizes: list[int], batch_rows: int) -> list[tuple[int, int]]:
    """Runs [a, b) of consecutive partitions, about `batch_rows` rows at a time (by their `sizes`): their rows
    are read in one pass over the shards (at 12M rows in 120 shards, one memory map per shard per partition
    was 14% of the time)."""
    bounds, first, rows = [], 0, 0
    for k, size in enumerate(sizes):
        if k > first and rows + size > batch_rows:
            bounds.append((first, k))
            first, rows = k, 0
        rows += size
    if first < len(sizes):
        bounds.append((first, len(sizes)))
    return bounds


def partition_vectors(emb: EmbeddingSet, members: np.ndarray) -> np.ndarray:
    """One partition's rows read from the embedding shards, through float16 (what embed writes) to float32:
    the local loop and a Dask task read them alike, so both give the same pairs."""
    return emb.gather(members, np.float16).astype(np.float32)
