"""Synthetic embeddings with planted near-duplicate groups, in `curate embed`'s layout, generated shard by shard.

Topic-clustered base vectors (like real embeddings, not uniform noise) plus planted groups of 2..1000 perturbed
copies of one base row with a long tail of sizes; copies are spread over the whole row order. Every step is
vectorised over a shard, so 12M x 1280 rows take minutes, and memory holds one shard plus O(N) small integers.
`group_of.npy` gives each row's planted group (-1 for none; a group's source row counts as a member).
Each row carries a caption drawn from the 1,000 real LAION captions in ../shared/data when they are there (else
a generated one of LAION's mean length), so the driver's text costs what it costs on LAION.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TOPICS = 1000
LAION_CAPTIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "laion_captions_1k.parquet"


def caption_pool(rng: np.random.Generator) -> tuple[list[str], str]:
    """Captions to draw rows' captions from, and where they came from."""
    if LAION_CAPTIONS.exists():
        import pyarrow.parquet as pq

        table = pq.read_table(LAION_CAPTIONS)
        column = next((c for c in ("caption", "TEXT", "text") if c in table.column_names), None)
        pool = [c for c in table.column(column).to_pylist() if c] if column else []
        if pool:
            return pool, "laion_captions_1k"
    words = ["photo", "of", "a", "vintage", "red", "car", "parked", "near", "the", "beach", "at", "sunset", "with",
             "mountains", "in", "background", "poster", "print", "wall", "art", "canvas", "modern", "style"]
    return [" ".join(rng.choice(words, size=int(rng.integers(4, 18)))) for _ in range(1000)], "generated"


def group_sizes(n: int, rng: np.random.Generator, dup_share: float) -> list[int]:
    n_dup_rows = int(n * dup_share)
    sizes: list[int] = []
    total = 0
    while total < n_dup_rows:
        sizes.append(int(min(1000, max(2, rng.zipf(1.8)))))
        total += sizes[-1]
    if sizes:
        sizes[-1] -= total - n_dup_rows
        if sizes[-1] < 2:
            sizes.pop()
    return sizes


def make_vectors(root: Path, n: int, dim: int, seed: int = 0, dup_share: float = 0.05,
                 shard_rows: int = 100_000) -> dict:
    """Write (once; `truth.json` marks a finished set) `n` L2-normalised float16 rows of width `dim` under
    `root`: img_emb/img_emb_NNNNN.npy + metadata/metadata_NNNNN.parquet (key v<row>) + manifest.json."""
    marker = root / "truth.json"
    if marker.exists():
        return json.loads(marker.read_text())
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    pool, pool_source = caption_pool(np.random.default_rng([seed, 0]))
    sizes = group_sizes(n, rng, dup_share)
    groups = len(sizes)
    n_base = n - sum(sizes)
    topics = rng.standard_normal((TOPICS, dim)).astype(np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    perm = rng.permutation(n)
    base_rows, copy_rows = perm[:n_base], perm[n_base:]
    del perm
    topic_of = np.full(n, -1, np.int16)  # base rows' topic; -1 marks a copy
    topic_of[base_rows] = rng.integers(TOPICS, size=n_base)
    group_of = np.full(n, -1, np.int32)
    group_of[copy_rows] = np.repeat(np.arange(groups, dtype=np.int32), sizes)
    sources = base_rows[rng.choice(n_base, size=groups, replace=False)] if groups else np.zeros(0, np.int64)
    group_of[sources] = np.arange(groups, dtype=np.int32)
    del base_rows, copy_rows
    noise = rng.uniform(0.002, 0.008, size=groups).astype(np.float32)
    src = (0.75 * topics[topic_of[sources]]
           + 0.66 * rng.standard_normal((groups, dim)).astype(np.float32) / np.sqrt(dim))
    src /= np.linalg.norm(src, axis=1, keepdims=True)

    (root / "img_emb").mkdir(parents=True, exist_ok=True)
    (root / "metadata").mkdir(exist_ok=True)
    for s, a in enumerate(range(0, n, shard_rows)):
        b = min(n, a + shard_rows)
        srng = np.random.default_rng([seed, s + 1])
        t, g = topic_of[a:b], group_of[a:b]
        out = srng.standard_normal((b - a, dim), dtype=np.float32)
        base = t >= 0
        out[base] = 0.75 * topics[t[base]] + (0.66 / np.sqrt(dim)) * out[base]
        copy = ~base
        out[copy] = src[g[copy]] + noise[g[copy]][:, None] * out[copy]
        source = base & (g >= 0)
        out[source] = src[g[source]]
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        np.save(root / "img_emb" / f"img_emb_{s:05d}.npy", out.astype(np.float16))
        pq.write_table(pa.table({"key": [f"v{r}" for r in range(a, b)], "shard": np.full(b - a, s, np.int64),
                                 "caption": [pool[c] for c in srng.integers(len(pool), size=b - a)]}),
                       root / "metadata" / f"metadata_{s:05d}.parquet")
    (root / "manifest.json").write_text(json.dumps({"model": "synthetic", "dim": dim, "kind": "float"}))
    np.save(root / "group_of.npy", group_of)
    truth = {"n": n, "dim": dim, "groups": groups, "largest": max(sizes, default=0), "dup_rows": int(sum(sizes)),
             "shard_rows": shard_rows, "captions": pool_source}
    marker.write_text(json.dumps(truth))
    return truth
