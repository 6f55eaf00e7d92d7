"""Pair precision / recall / F1 of a clustering against ground truth (e.g. `curate sample`'s truth.parquet)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping


def _pairs_count(groups: Mapping[object, int]) -> int:
    return sum(c * (c - 1) // 2 for c in groups.values())


def pair_scores(predicted: Mapping[str, object], truth: Mapping[str, object]) -> dict[str, float]:
    """predicted: key -> cluster id; truth: key -> true group (source key). Keys outside both are ignored."""
    keys = [k for k in predicted if k in truth]
    pred = Counter(predicted[k] for k in keys)
    true = Counter(truth[k] for k in keys)
    both = Counter((predicted[k], truth[k]) for k in keys)
    tp = _pairs_count(both)
    n_pred, n_true = _pairs_count(pred), _pairs_count(true)
    precision = tp / n_pred if n_pred else 1.0
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "true_pairs": n_true, "predicted_pairs": n_pred}
