"""`curate dedup --engine dask` with a thin driver: the partition plan's rows and the pairs live in files under
the output's `_work/`, written by Dask tasks; the driver holds numbers per row (the best match, then the
union-find parents and labels), never every row's vector, text or pair.

  1. the driver fits the plan's centroids on a k-means sample (`pairs.fit_assigner`, as the local engine does)
  2. one task per embed shard assigns its rows: `_work/assign/{s}.npy` (rows x n_assign int32)
  3. the driver buckets those files into every partition's sorted rows: `_work/plan/members.npy`
  4. one task per batch of partitions (~65k rows) reads their rows' vectors from the shards, runs
     `pairs.partition_block` on each and writes its pairs and its rows' best matches: `_work/pairs/{b}.npz`
  5. the driver merges the best matches (in partition order, as `pairs.merge_partitions` does) and hands the
     files on as a `PairFiles`, which `link.link_edges` reads one file at a time

Every step is a pure function of its inputs, so the pairs are the local engine's bit for bit.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from curate.dedup.pairs import (
    Assigner,
    Pairs,
    batch_bounds,
    fit_assigner,
    keep_better,
    partition_block,
    partition_vectors,
)
from curate.dedup.vectors import EmbeddingSet, _read_rows, index_type
from curate.io import fs

Score = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass
class PairFiles:
    """Thresholded pairs held in npz files (i, j, sim; i < j), read one file at a time, with every row's best
    match (`nn`, `nn_sim`, as in `Pairs`). `score` rescores the pairs as they are read (`pairs.hub_scored`)."""

    paths: list[str]
    n: int
    nn: np.ndarray
    nn_sim: np.ndarray
    score: Score | None = None

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for path in self.paths:
            with np.load(path) as z:
                i, j, sim = z["i"], z["j"], z["sim"]
            yield i, j, sim if self.score is None else self.score(i, j, sim)

    def load(self) -> Pairs:
        """Every pair in memory (what `--templates` and leader linkage work on)."""
        parts = list(self.chunks())
        i, j, sim = (np.concatenate([p[c] for p in parts]) for c in range(3)) if parts else (
            np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
        return Pairs(i, j, sim, self.nn, self.nn_sim)


def work_dirs(work: str) -> dict[str, str]:
    return {name: fs.join(work, name) for name in ("assign", "plan", "pairs", "spill")}


def remove(work: str) -> None:
    """Drop the plan and pair files of a run (a killed run's are dropped when the next one starts)."""
    for path in work_dirs(work).values():
        shutil.rmtree(path, ignore_errors=True)


def dask_pairs(emb: EmbeddingSet, threshold: float, work: str, nlist: int = 0, n_assign: int = 2, seed: int = 0,
               scheduler: str | None = None, workers: int = 1, batch_rows: int = 65536) -> PairFiles:
    """The local engine's `partition_pairs`, as Dask tasks that write files under `work` (a folder every worker
    can write); see the module's docstring."""
    from curate.engines.dask import client_for, run_tasks

    assigner = fit_assigner(emb, nlist, n_assign, seed=seed)
    remove(work)
    for path in work_dirs(work).values():
        fs.ensure_dir(path)
    shards = range(len(emb.emb_paths))
    with client_for(scheduler, workers) as client:
        shared = client.scatter(assigner, broadcast=True)
        counts = np.zeros(assigner.m, np.int64)
        for c in run_tasks(client, _assign_task, [(emb, s, shared, work) for s in shards],
                           [f"curate-dedup-assign-{s:05d}" for s in shards]):
            counts += c
        ids, starts, ends = bucket(emb, work, counts)
        calls = [(emb, fs.join(work, "pairs", f"{b:06d}.npz"), ids[lo:hi], starts[lo:hi], ends[lo:hi], work,
                  threshold) for b, (lo, hi) in enumerate(batch_bounds((ends - starts).tolist(), batch_rows))]
        for _ in run_tasks(client, _pairs_task, calls, [f"curate-dedup-pairs-{b:06d}" for b in range(len(calls))]):
            pass
    paths = [c[1] for c in calls]
    nn, nn_sim = merge_best(paths, emb.n)
    return PairFiles(paths, emb.n, nn, nn_sim)


def _assign_path(work: str, s: int) -> str:
    return fs.join(work, "assign", f"{s:05d}.npy")


def _assign_task(emb: EmbeddingSet, s: int, assigner: Assigner, work: str) -> np.ndarray:
    """One embed shard's rows to their partitions (`_work/assign/{s}.npy`); returns rows per centroid."""
    assign = assigner.assign(emb.shard_block(s))
    fs.write_arrays_atomic(_assign_path(work, s), assign=assign)
    return np.bincount(assign[assign >= 0], minlength=assigner.m)


def bucket(emb: EmbeddingSet, work: str, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every partition's rows, in row order, one partition after another in centroid order, into
    `_work/plan/members.npy`, read back shard by shard from the assignment files. Returns the centroid, start and
    end of the partitions with two or more rows (the local `Plan.parts`). Memory: the members (4 bytes per
    placement) and one shard's assignment."""
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    members = np.empty(int(starts[-1]), index_type(emb.n))
    cursor = starts[:-1].copy()
    for s in range(len(emb.emb_paths)):
        a = np.load(_assign_path(work, s))
        rows = np.arange(emb.offsets[s], emb.offsets[s + 1], dtype=members.dtype)
        part, row = a.reshape(-1), np.repeat(rows, a.shape[1])
        ok = part >= 0
        part, row = part[ok], row[ok]
        order = np.argsort(part, kind="stable")  # rows stay in order within each partition
        part, row = part[order], row[order]
        members[cursor[part] + np.arange(len(part)) - np.searchsorted(part, part)] = row
        cursor += np.bincount(part, minlength=len(counts))
    fs.write_arrays_atomic(fs.join(work, "plan", "members.npy"), members=members)
    del members
    ids = np.flatnonzero(counts >= 2)
    return ids, starts[ids], starts[ids] + counts[ids]


def assignment_of(emb: EmbeddingSet, work: str, rows: np.ndarray) -> np.ndarray:
    """The assignment rows of `rows` (sorted global rows), read from the shards' assignment files."""
    cut = np.searchsorted(rows, emb.offsets)
    return np.concatenate([_read_rows(_assign_path(work, s), rows[int(cut[s]) : int(cut[s + 1])] - emb.offsets[s])
                           for s in range(len(emb.emb_paths))])


def _pairs_task(emb: EmbeddingSet, path: str, ids: np.ndarray, starts: np.ndarray, ends: np.ndarray, work: str,
                threshold: float) -> int:
    """One batch of partitions: their rows' vectors read once, `partition_block` on each partition in order, the
    pairs and the rows' best matches (the first best in partition order) into `path`. Returns the pair count."""
    every = np.load(fs.join(work, "plan", "members.npy"), mmap_mode="r")
    parts = [np.asarray(every[a:b], np.int64) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
    del every
    rows = np.unique(np.concatenate(parts))
    x = partition_vectors(emb, rows)
    own = assignment_of(emb, work, rows)
    codes, sims = [], []
    nn = np.full(len(rows), -1, np.int64)
    nn_sim = np.full(len(rows), -np.inf, np.float32)
    for centroid, members in zip(ids.tolist(), parts, strict=True):
        loc = np.searchsorted(rows, members)
        res = partition_block(x[loc], members, emb.n, threshold, owner=(centroid, own[loc]))
        codes.append(res.codes)
        sims.append(res.sims)
        keep_better(nn, nn_sim, loc, res.nn, res.nn_sim)
    code = np.concatenate(codes)
    index = index_type(emb.n)
    fs.write_arrays_atomic(path, i=(code // emb.n).astype(index), j=(code % emb.n).astype(index), sim=np.concatenate(sims),
          rows=rows, nn=nn, nn_sim=nn_sim)
    return len(code)


def merge_best(paths: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every row's best match over the batches, the first best in batch order (as `merge_partitions`)."""
    nn = np.full(n, -1, index_type(n))
    nn_sim = np.full(n, -np.inf, np.float32)
    for path in paths:
        with np.load(path) as z:
            keep_better(nn, nn_sim, z["rows"], z["nn"], z["nn_sim"])
    return nn, nn_sim
