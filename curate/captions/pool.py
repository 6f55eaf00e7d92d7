"""Multi-caption pools (MC) and which samples get them (targeting by duplication), over whole Arrow columns.

A targeted sample's pool: its own caption, then its cluster's other captions, then variants of its own caption
made by operations drawn uniformly from `op_names` (seeded by key and attempt), each entry kept only when no
earlier entry has the same normalised text, until `pool_size` entries or 4 x pool_size attempts. One caption is
then picked from the pool (uniform, seeded by key) as the one to use when a single caption is wanted.
Untargeted samples keep `[caption]`; a null caption gets an empty pool, an empty or blank one `[caption]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.captions import batch, ops

TARGETS = ("all", "duplicates", "risk")


def targeted_mask(target: str, keys: pa.Array | np.ndarray, seed: int, dup_count: np.ndarray,
                  risk: np.ndarray) -> np.ndarray:
    """all: every row; duplicates: rows in clusters of 2 or more; risk: with probability = memorization_risk."""
    if target == "all":
        return np.ones(len(dup_count), bool)
    if target == "duplicates":
        return np.asarray(dup_count) > 1
    if target == "risk":
        return batch.uniform(batch.streams(keys, seed, "target")) < np.nan_to_num(np.asarray(risk, np.float64))
    raise ValueError(f"unknown target {target!r}; one of {TARGETS}")


def apply_op(op: str, captions: pa.Array, keys: pa.Array, hashes: np.ndarray, seed: int, context: dict[str, Any],
             variant: int, only: np.ndarray | None = None, tokens: batch.Tokens | None = None) -> pa.Array:
    """One operation over a caption column (rows outside `only` unchanged); paraphrase runs per row (WordNet).
    `tokens`: the column's `batch.Tokens`, when the caller already has them."""
    stream = batch.streams(hashes, seed, op, variant)
    if op == "rt":
        return batch.rt(captions, stream, ops.arrow_vocab(context["vocab"]), n=context.get("n", 2), only=only,
                        tokens=tokens)
    if op == "cwr":
        return batch.cwr(captions, stream, n=context.get("n", 2), only=only, tokens=tokens)
    if op == "rna":
        return batch.rna(captions, stream, only=only, tokens=tokens)
    if op == "rc":
        dataset = context.get("captions") or None
        return batch.rc(captions, stream, ops.arrow_vocab(context.get("vocab", ())),
                        ops.arrow_vocab(dataset) if dataset else None, n=context.get("rc_n", 4), only=only,
                        tokens=tokens)
    if op == "paraphrase":
        rows = np.flatnonzero(only) if only is not None else np.arange(len(captions))
        caps = captions.take(pa.array(rows)).to_pylist()
        ks = keys.take(pa.array(rows)).to_pylist()
        out = [ops.paraphrase(c, k, seed, context["wordnet"], k=context.get("k", 2),
                              multiword=context.get("multiword", False), variant=variant) for c, k in zip(caps, ks, strict=True)]
        mask = np.zeros(len(captions), bool)
        mask[rows] = True
        return pc.replace_with_mask(batch._strings(captions), pa.array(mask), pa.array(out, pa.large_string()))
    raise ValueError(f"unknown caption operation {op!r}; one of {', '.join(ops.OPS)}")


def _not_blank(values: pa.Array) -> np.ndarray:
    return pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0), False).to_numpy(
        zero_copy_only=False)


def build_pools(captions: pa.Array, keys: pa.Array, seed: int, cluster_captions: pa.Array | None,
                op_names: Sequence[str], pool_size: int, context: dict[str, Any],
                targeted: np.ndarray) -> tuple[pa.Array, pa.Array, pa.Array]:
    """(pools, how each entry was made, the caption to use) for every row; `cluster_captions` is a list
    column (null where the cluster has no other captions). The work runs on the rows whose pool can grow
    (targeted, with a word) only, so its cost follows the targeted share; the others keep `[caption]`."""
    caps = batch._strings(captions)
    n = len(caps)
    grow = np.asarray(targeted, bool) & _not_blank(caps) & (pool_size > 1)
    rows = pa.array(np.flatnonzero(grow))
    if len(rows):
        sub_pools, sub_how, sub_use = _grow_pools(
            caps.take(rows), batch._strings(keys).take(rows), seed,
            cluster_captions.take(rows) if cluster_captions is not None else None, op_names, pool_size, context)
    else:
        sub_pools = sub_how = pa.array([], pa.list_(pa.string()))
        sub_use = pa.array([], pa.string())
    count = np.where(caps.is_null().to_numpy(zero_copy_only=False), 0, 1).astype(np.int64)
    sub_count = pc.list_value_length(sub_pools).to_numpy().astype(np.int64)
    count[grow] = sub_count
    start = np.cumsum(count) - count
    source = np.empty(int(count.sum()), np.int64)  # into [caps..., the grown pools' entries...]
    alone = np.flatnonzero(~grow & (count == 1))
    source[start[alone]] = alone
    grown_start = np.repeat(start[grow], sub_count)
    within = np.arange(len(grown_start)) - np.repeat(np.cumsum(sub_count) - sub_count, sub_count)
    source[grown_start + within] = n + np.arange(len(grown_start))
    at = pa.array(source)
    offsets = pa.array(np.concatenate([[0], np.cumsum(count)]).astype(np.int32))
    pools = pa.ListArray.from_arrays(offsets, pa.concat_arrays(
        [caps.cast(pa.string()), pc.list_flatten(sub_pools)]).take(at))
    original = pa.repeat(pa.scalar("original", pa.string()), n)
    how = pa.ListArray.from_arrays(offsets, pa.concat_arrays([original, pc.list_flatten(sub_how)]).take(at))
    use = pc.replace_with_mask(caps.cast(pa.string()), pa.array(grow), sub_use)
    return pools, how, use


def _grow_pools(caps: pa.LargeStringArray, keys: pa.Array, seed: int, cluster_captions: pa.Array | None,
                op_names: Sequence[str], pool_size: int,
                context: dict[str, Any]) -> tuple[pa.Array, pa.Array, pa.Array]:
    """`build_pools` for rows that all get a pool (targeted, each with at least one word)."""
    keys = batch._strings(keys)
    n = len(caps)
    hashes = batch.key_hashes(keys)
    tokens = batch.Tokens(caps)  # split once, shared by every operation and attempt
    grow = tokens.active  # every row here; kept as a mask for the operations' `only`
    count = np.ones(n, np.int64)
    empty = pa.nulls(n, pa.large_string())
    cols = [caps] + [empty] * (pool_size - 1)
    made = [pa.repeat(pa.scalar("original", pa.large_string()), n)] + [empty] * (pool_size - 1)
    norms = [batch.normalize(caps)] + [empty] * (pool_size - 1)

    def offer(cand: pa.Array, label: pa.Array | str, rows: np.ndarray) -> None:
        """Append cand[r] to row r's pool where r is in `rows`, the pool has room and no entry has its text."""
        nonlocal count
        ok = rows & grow & (count < pool_size) & _not_blank(cand)
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            return
        at = pa.array(idx)
        sub, norm = cand.take(at), batch.normalize(cand.take(at))
        fresh = np.ones(len(idx), bool)
        for j in range(pool_size):
            same = pc.fill_null(pc.equal(norm, norms[j].take(at)), False).to_numpy(zero_copy_only=False)
            fresh &= ~(same & (count[idx] > j))
        idx, sub, norm = idx[fresh], sub.filter(pa.array(fresh)), norm.filter(pa.array(fresh))
        lab = (pa.array([label] * len(idx), pa.large_string()) if isinstance(label, str)
               else label.take(pa.array(idx)))
        slot = count[idx]
        for j in range(1, pool_size):
            here = slot == j
            if not here.any():
                continue
            mask = np.zeros(n, bool)
            mask[idx[here]] = True
            m, pick = pa.array(mask), pa.array(here)
            cols[j] = pc.replace_with_mask(cols[j], m, sub.filter(pick))
            norms[j] = pc.replace_with_mask(norms[j], m, norm.filter(pick))
            made[j] = pc.replace_with_mask(made[j], m, lab.filter(pick))
        count[idx] += 1

    if cluster_captions is not None and pool_size > 1:
        lengths = pc.fill_null(pc.list_value_length(cluster_captions), 0).to_numpy().astype(np.int64)
        flat = batch._strings(pc.list_flatten(cluster_captions))
        starts = np.cumsum(lengths) - lengths
        j = 0
        while True:
            has = (lengths > j) & grow & (count < pool_size)
            if not has.any():
                break
            idx = pa.array(np.where(has, starts + j, 0), mask=~has)
            offer(flat.take(idx), "cluster", has)
            j += 1

    for attempt in range(4 * pool_size):
        need = grow & (count < pool_size)
        if not need.any() or not op_names:
            break
        which = batch.draw(batch.streams(hashes, seed, "pool", attempt), 0, len(op_names))
        cand, labels = empty, empty
        for o, op in enumerate(op_names):
            rows = need & (which == o)
            if rows.any():
                variant = apply_op(op, caps, keys, hashes, seed, context, attempt, only=rows, tokens=tokens)
                cand = pc.if_else(pa.array(rows), variant, cand)
                labels = pc.if_else(pa.array(rows), pa.scalar(op, pa.large_string()), labels)
        offer(cand, labels, need)

    picked = batch.draw(batch.streams(hashes, seed, "pick"), 0, np.maximum(count, 1))
    use = caps
    for j in range(1, pool_size):
        use = pc.if_else(pa.array((picked == j) & (count > j)), cols[j], use)
    order = (np.arange(pool_size)[None, :] * n + np.arange(n)[:, None])[np.arange(pool_size)[None, :] < count[:, None]]
    offsets = pa.array(np.concatenate([[0], np.cumsum(count)]).astype(np.int32))
    pools = pa.ListArray.from_arrays(offsets, pa.concat_arrays(cols).cast(pa.string()).take(pa.array(order)))
    how = pa.ListArray.from_arrays(offsets, pa.concat_arrays(made).cast(pa.string()).take(pa.array(order)))
    return pools, how, use.cast(pa.string())


def build_pool(caption: str | None, key: str, seed: int, cluster_captions: Sequence[str], op_names: Sequence[str],
               pool_size: int, context: dict[str, Any], targeted: bool = True) -> tuple[list[str], list[str]]:
    """One sample's (pool, how each entry was made): `build_pools` on a one-row column."""
    clusters = pa.array([list(cluster_captions) or None], pa.list_(pa.string()))
    pools, how, _ = build_pools(pa.array([caption], pa.string()), pa.array([key]), seed, clusters, op_names,
                                pool_size, context, np.array([targeted]))
    return pools[0].as_py(), how[0].as_py()
