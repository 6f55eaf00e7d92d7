"""From thresholded pairs to duplicate clusters.

  components      single linkage: connected components of the threshold graph (transitive chains merge)
  mutual          only edges that are among both ends' `k` most similar neighbours (or near-identical, >= 0.97),
                  then components: a template overlay that makes many unrelated images similar links few of them
                  mutually, while large groups of copies stay whole
  leader          star clustering: the best-connected unassigned row leads a cluster of its unassigned
                  neighbours; every member is within the threshold of its leader, so nothing chains
"""

from __future__ import annotations

import numpy as np

LINKAGES = ("components", "mutual", "leader")


def components(n: int, i: np.ndarray, j: np.ndarray, chunk: int = 1 << 22,
               keep: np.ndarray | None = None) -> np.ndarray:
    """Cluster label per row; labels are numbered by each cluster's first row (deterministic).

    Union-find over the edges in chunks (hook each edge's larger root under its smaller, then point every row
    straight at its root): memory is the n parents and one chunk of edges. scipy's connected_components
    builds a sparse matrix of all edges: at 12M rows and 117M pairs the run reached 11.7 GB in it. `keep` (a mask over the edges) selects
    edges chunk by chunk, without a copy of the whole edge list per threshold."""
    parent = np.arange(n, dtype=np.int64)
    for start in range(0, len(i), chunk):
        a, b = i[start : start + chunk], j[start : start + chunk]
        if keep is not None:
            a, b = a[keep[start : start + chunk]], b[keep[start : start + chunk]]
        while True:
            ra, rb = parent[a], parent[b]
            differ = ra != rb
            if not differ.any():
                break
            a, b, ra, rb = a[differ], b[differ], ra[differ], rb[differ]
            np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
            while True:  # every row straight to its root
                up = parent[parent]
                if np.array_equal(up, parent):
                    break
                parent = up
    # every root is its component's lowest row (a root is only ever hooked under a lower one), so numbering
    # the roots in row order is `canonical`, without its sort (0.5 GB more at 12M rows)
    rank = np.cumsum(parent == np.arange(n)) - 1
    return rank[parent]


def canonical(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..C-1 in order of each cluster's first row."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse]


def mutual_mask(i: np.ndarray, j: np.ndarray, sim: np.ndarray, k: int) -> np.ndarray:
    """Edges whose ends each rank the other among their k most similar neighbours. Ranks count only strictly more
    similar neighbours, so a group of identical copies (all ties) stays fully linked."""
    if len(i) == 0:
        return np.zeros(0, bool)
    src = np.concatenate([i, j])
    s = np.concatenate([sim, sim])
    edge = np.concatenate([np.arange(len(i)), np.arange(len(i))])
    order = np.lexsort((-s, src))  # by source, most similar first
    src_sorted, s_sorted = src[order], s[order]
    # competition rank within each source: position of the first entry with the same similarity
    new_group = np.r_[True, src_sorted[1:] != src_sorted[:-1]]
    new_value = new_group | np.r_[True, s_sorted[1:] != s_sorted[:-1]]
    pos = np.arange(len(order))
    group_start = np.maximum.accumulate(np.where(new_group, pos, 0))
    value_start = np.maximum.accumulate(np.where(new_value, pos, 0))
    rank = np.empty(len(order), np.int64)
    rank[order] = value_start - group_start
    ok = np.zeros(len(i), np.int64)
    np.add.at(ok, edge, (rank < k).astype(np.int64))
    return ok == 2


def leader(n: int, i: np.ndarray, j: np.ndarray, sim: np.ndarray) -> np.ndarray:
    """Greedy star clustering, leaders taken by degree (ties: earlier row)."""
    degree = np.bincount(np.concatenate([i, j]), minlength=n)
    src = np.concatenate([i, j])
    dst = np.concatenate([j, i])
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    ptr = np.searchsorted(src, np.arange(n + 1))
    labels = np.arange(n, dtype=np.int64)  # rows without an edge lead themselves
    assigned = degree == 0
    linked = np.flatnonzero(degree > 0)
    for node in linked[np.lexsort((linked, -degree[linked]))].tolist():
        if assigned[node]:
            continue
        assigned[node] = True
        nb = dst[ptr[node] : ptr[node + 1]]
        nb = nb[~assigned[nb]]
        labels[nb] = node
        assigned[nb] = True
    return canonical(labels)


STRONG = 0.97  # edges at least this similar always link (mutual): near-identical copies are never template chains


def link(n: int, i: np.ndarray, j: np.ndarray, sim: np.ndarray, linkage: str, mutual_k: int = 3,
         strong: float = STRONG, keep: np.ndarray | None = None) -> np.ndarray:
    """Cluster labels from the edges (i, j, sim), or from those `keep` selects."""
    if linkage == "components":
        return components(n, i, j, keep=keep)
    if keep is not None:
        i, j, sim = i[keep], j[keep], sim[keep]
    if linkage == "mutual":
        m = mutual_mask(i, j, sim, mutual_k) | (sim >= strong)
        return components(n, i[m], j[m])
    if linkage == "leader":
        return leader(n, i, j, sim)
    raise ValueError(f"unknown linkage {linkage!r}; one of {LINKAGES}")
