"""Multi-caption pools (MC) and which samples get them (targeting by duplication)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from curate.captions import ops
from curate.dedup.count import normalize_caption

TARGETS = ("all", "duplicates", "risk")


def is_targeted(target: str, key: str, seed: int, dup_count: int, risk: float) -> bool:
    if target == "all":
        return True
    if target == "duplicates":
        return dup_count > 1
    if target == "risk":  # probability grows with the sample's memorisation risk
        return ops.rng_for(seed, key, "target").random() < risk
    raise ValueError(f"unknown target {target!r}; one of {TARGETS}")


def build_pool(caption: str | None, key: str, seed: int, cluster_captions: Sequence[str], op_names: Sequence[str],
               pool_size: int, context: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(captions, how each was made): the sample's own caption, its cluster's other captions, then generated
    variants of its own caption (each op drawn uniformly from `op_names`) until `pool_size` distinct ones."""
    if caption is None or not caption.strip():
        return ([] if caption is None else [caption]), ([] if caption is None else ["original"])
    pool, made = [caption], ["original"]
    seen = {normalize_caption(caption)}
    for other in cluster_captions:
        if len(pool) >= pool_size:
            break
        if other and other.strip() and normalize_caption(other) not in seen:
            seen.add(normalize_caption(other))
            pool.append(other)
            made.append("cluster")
    attempt = 0
    while len(pool) < pool_size and op_names and attempt < 4 * pool_size:
        rng = ops.rng_for(seed, key, "pool", attempt)
        op = op_names[rng.randrange(len(op_names))]
        variant = ops.apply(op, caption, key, seed, context, variant=attempt)
        attempt += 1
        if variant and variant.strip() and normalize_caption(variant) not in seen:
            seen.add(normalize_caption(variant))
            pool.append(variant)
            made.append(op)
    return pool, made


def pick(pool: Sequence[str], key: str, seed: int) -> int:
    """Which pool entry a sample uses when one caption is wanted (uniform, seeded by key)."""
    return ops.rng_for(seed, key, "pick").randrange(len(pool)) if pool else 0
