"""From thresholded pairs to duplicate clusters.

  components      single linkage: connected components of the threshold graph (transitive chains merge)
  mutual          only edges that are among both ends' `k` most similar neighbours (or near-identical, >= 0.97),
                  then components: a template overlay that makes many unrelated images similar links few of them
                  mutually, while large groups of copies stay whole
  leader          star clustering: the best-connected unassigned row leads a cluster of its unassigned
                  neighbours; every member is within the threshold of its leader, so nothing chains
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from curate.dedup.vectors import index_type

LINKAGES = ("components", "mutual", "leader")


Edges = Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]  # (i, j, score) chunks of an edge list
EdgeSource = Callable[[], Edges]  # a fresh pass over the edges each call (an array's slices, or pair files)


def components(n: int, i: np.ndarray, j: np.ndarray, chunk: int = 1 << 22,
               keep: np.ndarray | None = None) -> np.ndarray:
    """Cluster label per row; labels are numbered by each cluster's first row (deterministic). `keep` (a mask
    over the edges) selects edges chunk by chunk, without a copy of the whole edge list per threshold."""
    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(i), chunk):
            a, b = i[start : start + chunk], j[start : start + chunk]
            if keep is not None:
                a, b = a[keep[start : start + chunk]], b[keep[start : start + chunk]]
            yield a, b

    return components_of(n, chunks())


def components_of(n: int, edges: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Connected components of edges that arrive in chunks (arrays, or pair files read one at a time).

    Union-find (hook each edge's larger root under its smaller, then point every row straight at its root):
    memory is the n parents and one chunk of edges. scipy's connected_components builds a sparse matrix of all
    edges: at 12M rows and 117M pairs the run reached 11.7 GB in it."""
    parent = np.arange(n, dtype=index_type(n))
    for a, b in edges:
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
    rank = np.cumsum(parent == np.arange(n, dtype=parent.dtype), dtype=parent.dtype) - 1
    return rank[parent]


def row_topk(n: int, edges: Edges, k: int) -> np.ndarray:
    """Each row's k highest edge scores, best first (n x k float32; -inf where a row has fewer than k edges),
    merged chunk by chunk: what mutual linkage and hub scores need of every row, without every edge at once."""
    top = np.full((n, k), -np.inf, np.float32)
    for i, j, s in edges:
        if not len(i):
            continue
        src = np.concatenate([i, j])
        val = np.concatenate([s, s]).astype(np.float32)
        order = np.lexsort((-val, src))
        src, val = src[order], val[order]
        rank = np.arange(len(src)) - np.searchsorted(src, src, side="left")
        best = rank < k
        src, val, rank = src[best], val[best], rank[best]
        rows, at = np.unique(src, return_inverse=True)
        both = np.full((len(rows), 2 * k), -np.inf, np.float32)
        both[:, :k] = top[rows]
        both[at, k + rank] = val
        top[rows] = -np.sort(-both, axis=1)[:, :k]
    return top


def canonical(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..C-1 in order of each cluster's first row."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse]


def mutual_mask(i: np.ndarray, j: np.ndarray, sim: np.ndarray, k: int, n: int | None = None) -> np.ndarray:
    """Edges whose ends each rank the other among their k most similar neighbours. Ranks count only strictly more
    similar neighbours, so a group of identical copies (all ties) stays fully linked: an edge ranks below k at
    a row exactly when its score is at least the row's k-th best."""
    if len(i) == 0:
        return np.zeros(0, bool)
    n = int(max(i.max(), j.max())) + 1 if n is None else n
    kth = row_topk(n, iter([(i, j, sim)]), k)[:, k - 1]
    return (sim >= kth[i]) & (sim >= kth[j])


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
        m = mutual_mask(i, j, sim, mutual_k, n) | (sim >= strong)
        return components(n, i[m], j[m])
    if linkage == "leader":
        return leader(n, i, j, sim)
    raise ValueError(f"unknown linkage {linkage!r}; one of {LINKAGES}")


def link_edges(n: int, edges: EdgeSource, threshold: float, linkage: str, mutual_k: int = 3,
               strong: float = STRONG) -> np.ndarray:
    """`link` over the edges scoring at least `threshold`, read in chunks from `edges` (one pass for components,
    two for mutual: each row's k-th best, then the union-find). Leader linkage needs every edge at once."""
    def above() -> Edges:
        for i, j, s in edges():
            m = s >= threshold
            yield i[m], j[m], s[m]

    if linkage == "components":
        return components_of(n, ((i, j) for i, j, _ in above()))
    if linkage == "mutual":
        kth = row_topk(n, above(), mutual_k)[:, mutual_k - 1]
        return components_of(n, ((i[m], j[m]) for i, j, s in above()
                                 for m in [((s >= kth[i]) & (s >= kth[j])) | (s >= strong)]))
    if linkage == "leader":
        parts = list(above())
        return leader(n, *(np.concatenate([p[c] for p in parts]) if parts else np.zeros(0, np.int64)
                           for c in range(3)))
    raise ValueError(f"unknown linkage {linkage!r}; one of {LINKAGES}")
