"""bench/vectors.py and bench/dedup.py's exact check: the planted groups are what the dedup benchmark scores
against, so they must be real (copies close to their source, other rows not), and the check must fail on wrong
clusters."""

from __future__ import annotations

import numpy as np

from bench.dedup import exact_check
from bench.vectors import make_vectors
from curate.dedup.vectors import open_embeddings


def test_planted_groups_are_near_copies_spread_over_shards_and_the_check_catches_wrong_clusters(tmp_path):
    truth = make_vectors(tmp_path / "v", 6000, 64, shard_rows=1000)
    assert truth["groups"] > 5 and truth["dup_rows"] == 300
    emb = open_embeddings(str(tmp_path / "v"))
    assert emb.n == 6000 and len(emb.emb_paths) == 6
    group_of = np.load(tmp_path / "v" / "group_of.npy")
    x = emb.load_all(np.float16).astype(np.float32)
    assert np.allclose(np.linalg.norm(x, axis=1), 1, atol=2e-3)
    members = np.flatnonzero(group_of == 0)
    # copies are spread over the row order: every group of 10 or more touches at least 3 of the 6 shards
    big = [g for g in range(truth["groups"]) if (group_of == g).sum() >= 10]
    assert big and all(len(np.unique(np.flatnonzero(group_of == g) // 1000)) >= 3 for g in big)
    sims = x @ x.T
    same = (group_of[:, None] == group_of[None, :]) & (group_of[:, None] >= 0)
    np.fill_diagonal(same, False)
    assert sims[same].min() > 0.95
    off = ~same
    np.fill_diagonal(off, False)
    assert sims[off].max() < 0.95
    # the same set again is read from its marker, unchanged
    assert make_vectors(tmp_path / "v", 6000, 64, shard_rows=1000) == truth

    # exact_check: the planted groups as clusters are perfect; merging two groups costs precision, splitting
    # one costs recall
    cluster_of = np.where(group_of >= 0, group_of, 10_000 + np.arange(6000))
    q = np.flatnonzero((group_of >= 0) & (group_of <= 1))
    perfect = exact_check(emb, q, cluster_of, 0.95, cols=700)
    assert perfect["true_pairs"] > 0 and perfect["found"] == perfect["true_pairs"]
    assert perfect["below"] == 0 and perfect["pred_pairs"] == perfect["true_pairs"]
    merged = exact_check(emb, q, np.where(group_of == 1, 0, cluster_of), 0.95)
    assert merged["below"] > 0
    split = cluster_of.copy()
    split[members[: len(members) // 2]] = -5
    assert exact_check(emb, members[:1], split, 0.95)["found"] < exact_check(emb, members[:1], cluster_of, 0.95)["found"]
