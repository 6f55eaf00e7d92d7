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
import re
import unicodedata

import numpy as np

KEEP_POLICIES = ("first", "largest", "aesthetic", "random")
_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = re.compile(r"^[\W_]+|[\W_]+$", re.UNICODE)


def normalize_caption(text: str | None) -> str:
    if text is None:
        return ""
    t = unicodedata.normalize("NFKC", text).casefold()
    t = _SPACE.sub(" ", t).strip()
    return _EDGE_PUNCT.sub("", t)


def risk(size: np.ndarray, distinct: np.ndarray) -> np.ndarray:
    size = np.asarray(size, np.float64)
    distinct = np.asarray(distinct, np.float64)
    d = np.minimum(1.0, np.log(np.maximum(size, 1)) / np.log(64))
    u = np.where(size > 1, 1.0 - (distinct - 1) / np.maximum(size - 1, 1), 0.0)
    return (d * (0.25 + 0.75 * u)).astype(np.float32)


def distinct_captions(labels: np.ndarray, captions: list[str | None], text_emb: np.ndarray | None = None,
                      near: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster: distinct normalised captions, and distinct near-identical caption groups (greedy, by
    caption embedding similarity >= `near`; equal to the exact count without embeddings)."""
    n_clusters = int(labels.max()) + 1 if len(labels) else 0
    norm = [normalize_caption(c) for c in captions]
    exact = np.ones(n_clusters, np.int64)  # a singleton has one caption
    nearc = np.ones(n_clusters, np.int64)
    sizes = np.bincount(labels, minlength=n_clusters)
    multi = np.flatnonzero(sizes[labels] > 1)  # only duplicated rows need a look
    order = multi[np.argsort(labels[multi], kind="stable")]
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for members in np.split(order, bounds) if len(order) else []:
        c = labels[members[0]]
        uniq = {norm[m]: m for m in members}
        exact[c] = len(uniq)
        if text_emb is None or len(uniq) == 1:
            nearc[c] = len(uniq)
            continue
        reps: list[np.ndarray] = []
        for m in uniq.values():
            v = text_emb[m]
            if not any(float(v @ r) >= near for r in reps):
                reps.append(v)
        nearc[c] = len(reps)
    return exact, nearc


def representatives(labels: np.ndarray, policy: str, seed: int, keys: list[str],
                    area: np.ndarray | None = None, aesthetic: np.ndarray | None = None) -> np.ndarray:
    """One representative per cluster (bool mask). Ties and `random` are decided by hashes of the keys, so the
    choice does not depend on shard order or worker count."""
    n = len(labels)
    tiebreak = np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{k}".encode(), digest_size=8).digest(), "big")
                         for k in keys], dtype=np.uint64) if policy == "random" else np.arange(n, dtype=np.uint64)
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
